//! Sender anonymity of a target message, computed from the relays' logs by walking back from
//! the target's last departure.
//!
//! The adversary watches every link. At an honest Poisson relay every packet in the pool is
//! equally likely to be the next to leave (exponential delays are memoryless and every packet
//! uses the same mean), so the packet leaving at departure `d` is the one that arrived at `a`
//! with probability `w(a) = 1/n_d * prod_j (1 - 1/n_j)` over the departures `j` between `a` and
//! `d` (`n` is the pool size just before a departure). At a batch relay it is any of the
//! round's `n` packets with probability `1/n`. At a corrupt relay it is known. The walk
//! repeats from each candidate arrival back to the previous hop's departure, down to the
//! packets' origins. The walk is run as a backward sweep in time: the weights reaching one
//! packet-hop from different later departures are added up before that packet-hop is expanded
//! once, so the cost is the number of distinct packet-hops reached, not the number of paths.
//! A relay's scan stops where the weight left falls below `epsilon`; the mass cut there is
//! counted as unresolved.

use std::collections::{BinaryHeap, HashMap};

use lethe_proto::Timestamp;

use crate::engine::{Simulation, TargetResult};

fn time_of(sim: &Simulation, p: u32, h: u8) -> Timestamp {
    sim.hop_time[(sim.pkts[p as usize].base + u32::from(h)) as usize]
}

/// One entry of a relay's log, in time order.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LogEv {
    /// Hop `hop` of packet `pkt` joined the pool.
    Arrive { pkt: u32, hop: u8 },
    /// A packet left; `n` packets were held just before (the round's size at a batch relay).
    Depart { n: u32 },
    /// A batch round starts leaving (its departures follow).
    Round,
}

/// Shannon entropy in bits of the distribution proportional to `masses` (zeros ignored).
pub fn entropy_bits(masses: &[f64]) -> f64 {
    let mut m: Vec<f64> = masses.iter().copied().filter(|x| *x > 0.0).collect();
    // A fixed summation order keeps results identical from run to run.
    m.sort_by(|a, b| a.total_cmp(b));
    let total: f64 = m.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    (-m.iter()
        .map(|x| {
            let p = x / total;
            p * p.log2()
        })
        .sum::<f64>())
    .max(0.0)
}

/// The anonymity of target packet `t`, if it was delivered.
pub(crate) fn target(
    sim: &Simulation,
    t: u32,
    clients: usize,
    epsilon: f64,
) -> Option<TargetResult> {
    let pkt = sim.pkts.get(t as usize)?;
    let last = pkt.hops.checked_sub(1)?;
    let dep = sim.hop_dep[(pkt.base + u32::from(last)) as usize];
    if dep == u32::MAX {
        return None;
    }
    let last_relay = sim.hop_relay[(pkt.base + u32::from(last)) as usize] as usize;
    let last_pool = match sim.relays[last_relay].log.get(dep as usize) {
        Some(LogEv::Depart { n }) => *n,
        _ => 0,
    };
    let mut origins: HashMap<u32, f64> = HashMap::new();
    let mut unresolved = 0.0;
    // Pending packet-hops (the packet as it leaves that hop) with their summed weight, and a
    // max-heap of their departure times: a packet-hop is expanded only after every later
    // departure that may be it.
    let mut pending: HashMap<(u32, u8), f64> = HashMap::new();
    let mut order: BinaryHeap<(Timestamp, u32, u8)> = BinaryHeap::new();
    pending.insert((t, last), 1.0);
    order.push((time_of(sim, t, last), t, last));
    let mut arrivals: Vec<(u32, u8, f64)> = Vec::new();
    while let Some((_, p, h)) = order.pop() {
        let Some(w) = pending.remove(&(p, h)) else {
            continue;
        };
        let k = &sim.pkts[p as usize];
        let i = (k.base + u32::from(h)) as usize;
        let relay = &sim.relays[sim.hop_relay[i] as usize];
        let d = sim.hop_dep[i] as usize;
        arrivals.clear();
        if relay.corrupt {
            arrivals.push((p, h, w));
        } else {
            let emitted = candidates(&relay.log, d, w, epsilon, &mut arrivals);
            unresolved += w * (1.0 - emitted).max(0.0);
        }
        for &(q, qh, qw) in &arrivals {
            if qh == 0 {
                *origins.entry(sim.pkts[q as usize].origin).or_insert(0.0) += qw;
            } else {
                let key = (q, qh - 1);
                match pending.get_mut(&key) {
                    Some(acc) => *acc += qw,
                    None => {
                        pending.insert(key, qw);
                        order.push((time_of(sim, q, qh - 1), q, qh - 1));
                    }
                }
            }
        }
    }
    // Condition on the target being a client's message: relay cover origins drop out; the
    // unresolved mass counts as one more possible sender.
    let mut masses: Vec<f64> = origins
        .iter()
        .filter(|(o, _)| (**o as usize) < clients)
        .map(|(_, m)| *m)
        .collect();
    masses.push(unresolved);
    Some(TargetResult {
        entropy_bits: entropy_bits(&masses),
        unresolved,
        last_pool,
        sender: pkt.origin,
    })
}

/// The arrivals that may be the packet leaving at log position `d`, with weight `w` times
/// their probability, appended to `out`; returns the total probability emitted.
fn candidates(log: &[LogEv], d: usize, w: f64, epsilon: f64, out: &mut Vec<(u32, u8, f64)>) -> f64 {
    let Some(LogEv::Depart { n }) = log.get(d) else {
        return 0.0;
    };
    // A batch round: the departures after a Round marker; its members are the arrivals
    // logged since the previous round.
    let mut i = d;
    while i > 0 && matches!(log[i - 1], LogEv::Depart { .. }) {
        i -= 1;
    }
    if i > 0 && matches!(log[i - 1], LogEv::Round) {
        let mut members = Vec::new();
        let mut j = i - 1;
        while j > 0 {
            j -= 1;
            match log[j] {
                LogEv::Arrive { pkt, hop } => members.push((pkt, hop)),
                _ => break,
            }
        }
        let m = members.len().max(1) as f64;
        for (pkt, hop) in members {
            out.push((pkt, hop, w / m));
        }
        return if out.is_empty() { 0.0 } else { 1.0 };
    }
    // A Poisson pool.
    let mut p = 1.0 / f64::from((*n).max(1));
    let mut emitted = 0.0;
    for e in log[..d].iter().rev() {
        match *e {
            LogEv::Depart { n } => {
                p *= 1.0 - 1.0 / f64::from(n.max(1));
                if w * p < epsilon {
                    break;
                }
            }
            LogEv::Arrive { pkt, hop } => {
                out.push((pkt, hop, w * p));
                emitted += p;
            }
            LogEv::Round => {}
        }
    }
    emitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_simple_distributions() {
        assert_eq!(entropy_bits(&[1.0]), 0.0);
        assert!((entropy_bits(&[0.25; 4]) - 2.0).abs() < 1e-12);
        assert!((entropy_bits(&[3.0, 3.0, 0.0]) - 1.0).abs() < 1e-12);
        assert_eq!(entropy_bits(&[]), 0.0);
    }

    #[test]
    fn poisson_weights_sum_to_one_over_the_whole_log() {
        // Pool: a, b arrive; one leaves (n=2); c arrives; one leaves (n=2): the second is
        // c with 1/2, a or b with 1/4 each.
        let log = vec![
            LogEv::Arrive { pkt: 0, hop: 0 },
            LogEv::Arrive { pkt: 1, hop: 0 },
            LogEv::Depart { n: 2 },
            LogEv::Arrive { pkt: 2, hop: 0 },
            LogEv::Depart { n: 2 },
        ];
        let mut out = Vec::new();
        let e = candidates(&log, 4, 1.0, 1e-12, &mut out);
        assert!((e - 1.0).abs() < 1e-12);
        assert_eq!(out, vec![(2, 0, 0.5), (1, 0, 0.25), (0, 0, 0.25)]);
    }

    #[test]
    fn batch_round_members_are_the_arrivals_since_the_last_round() {
        let log = vec![
            LogEv::Arrive { pkt: 0, hop: 0 },
            LogEv::Round,
            LogEv::Depart { n: 1 },
            LogEv::Arrive { pkt: 1, hop: 1 },
            LogEv::Arrive { pkt: 2, hop: 0 },
            LogEv::Round,
            LogEv::Depart { n: 2 },
            LogEv::Depart { n: 2 },
        ];
        let mut out = Vec::new();
        assert_eq!(candidates(&log, 7, 0.5, 1e-12, &mut out), 1.0);
        assert_eq!(out, vec![(2, 0, 0.25), (1, 1, 0.25)]);
    }
}
