//! Which relays a client should route around, judged from its own loop cover.
//!
//! A client's loop packets cross one mix of each layer and come back to it. When a relay
//! dies or drops packets, the loops through it stop coming back while the loops through
//! its siblings still do. [`RelayHealth`] keeps the recent loop outcomes (the route, and
//! whether the loop came back in time) and names the **suspects**: relays whose loops are
//! mostly lost while at least half the loops that avoid them return.
//!
//! Blame is explained away one relay at a time: the relay with the worst loss is named
//! first, then loops through it are set aside before the next is judged. So a mix that is
//! merely on the same loops as a dead one (in another layer) is not blamed for its losses.
//! When nearly every loop is lost, whatever the route (the client's own link or gateway is
//! down, or the whole network is overloaded), nobody is named: avoiding relays would not
//! help, and would only narrow the client's routes.
//!
//! Route choice ([`crate::Topology::choose_route_avoiding`]) leaves suspects out of real
//! packets and SURBs, but loops keep using every relay, so a relay that comes back is seen
//! again and stops being a suspect. Naming suspects is the client's own judgement and never
//! leaves it. (An adversary who drops a client's packets at chosen relays can steer its
//! routes this way; the Loopix paper discusses the same trade-off. Suspicion lasts only as
//! long as the evidence, [`HealthConfig::window`].)

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use crate::{NodeId, Timestamp};

/// Thresholds of [`RelayHealth`].
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    /// Outcomes older than this are forgotten.
    pub window: Duration,
    /// Most outcomes kept (the oldest go first).
    pub max_outcomes: usize,
    /// A relay is judged on its most recent loops, at most this many...
    pub recent: u32,
    /// ...and at least this many.
    pub min_samples: u32,
    /// A suspect lost at least this share of its recent loops...
    pub suspect_loss: f64,
    /// ...while the most recent loops that avoid it (and every earlier suspect; twice
    /// [`HealthConfig::recent`] of them) lost at most this share.
    pub background_loss: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            window: Duration::from_secs(60),
            max_outcomes: 512,
            recent: 8,
            min_samples: 4,
            suspect_loss: 0.75,
            background_loss: 0.5,
        }
    }
}

#[derive(Clone, Debug)]
struct Outcome {
    key: u64,
    at: Timestamp,
    relays: Vec<NodeId>,
    delivered: bool,
}

/// Recent loop outcomes and the relays they point at. Sans-IO: time is passed in.
#[derive(Clone, Debug)]
pub struct RelayHealth {
    config: HealthConfig,
    outcomes: VecDeque<Outcome>,
    suspects: BTreeSet<NodeId>,
}

impl Default for RelayHealth {
    fn default() -> Self {
        RelayHealth::new(HealthConfig::default())
    }
}

impl RelayHealth {
    /// No outcomes yet, nobody suspected.
    pub fn new(config: HealthConfig) -> Self {
        RelayHealth {
            config,
            outcomes: VecDeque::new(),
            suspects: BTreeSet::new(),
        }
    }

    /// Record whether the loop `key` (any number unique to that loop) through `route` came
    /// back. Recording the same key again replaces its outcome (a loop judged lost that
    /// comes back late). Returns true when the suspects changed.
    pub fn record(&mut self, now: Timestamp, key: u64, route: &[NodeId], delivered: bool) -> bool {
        if let Some(o) = self.outcomes.iter_mut().find(|o| o.key == key) {
            o.delivered = delivered;
        } else {
            let mut relays = route.to_vec();
            relays.sort_unstable();
            relays.dedup();
            self.outcomes.push_back(Outcome {
                key,
                at: now,
                relays,
                delivered,
            });
            while self.outcomes.len() > self.config.max_outcomes {
                self.outcomes.pop_front();
            }
        }
        self.expire_only(now);
        self.judge()
    }

    /// Forget outcomes that left the window. Returns true when the suspects changed.
    pub fn expire(&mut self, now: Timestamp) -> bool {
        if self.expire_only(now) {
            self.judge()
        } else {
            false
        }
    }

    fn expire_only(&mut self, now: Timestamp) -> bool {
        let before = self.outcomes.len();
        while self
            .outcomes
            .front()
            .is_some_and(|o| now.saturating_duration_since(o.at) > self.config.window)
        {
            self.outcomes.pop_front();
        }
        self.outcomes.len() != before
    }

    /// The relays to route around now.
    pub fn suspects(&self) -> &BTreeSet<NodeId> {
        &self.suspects
    }

    /// Whether `id` is a suspect.
    pub fn is_suspect(&self, id: &NodeId) -> bool {
        self.suspects.contains(id)
    }

    /// Outcomes currently kept.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Whether no outcome is kept.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    fn judge(&mut self) -> bool {
        let mut suspects = BTreeSet::new();
        loop {
            // Loops that avoid every suspect named so far.
            let clear: Vec<&Outcome> = self
                .outcomes
                .iter()
                .filter(|o| !o.relays.iter().any(|r| suspects.contains(r)))
                .collect();
            let relays: BTreeSet<NodeId> = clear
                .iter()
                .flat_map(|o| o.relays.iter().copied())
                .collect();
            let recent = self.config.recent as usize;
            let mut worst: Option<(NodeId, f64, u64)> = None;
            for id in relays {
                // Its most recent loops, and as many more of those that avoid it.
                let (mut n, mut lost, mut others, mut others_lost) = (0u64, 0u64, 0u64, 0u64);
                for o in clear.iter().rev() {
                    if o.relays.contains(&id) {
                        if n < recent as u64 {
                            n += 1;
                            lost += u64::from(!o.delivered);
                        }
                    } else if others < 2 * recent as u64 {
                        others += 1;
                        others_lost += u64::from(!o.delivered);
                    }
                    if n >= recent as u64 && others >= 2 * recent as u64 {
                        break;
                    }
                }
                if n < u64::from(self.config.min_samples) {
                    continue;
                }
                let loss = lost as f64 / n as f64;
                if loss < self.config.suspect_loss {
                    continue;
                }
                // The loops that avoid this relay must mostly come back, or it is not to
                // blame (everything is being lost).
                if others < u64::from(self.config.min_samples)
                    || others_lost as f64 / others as f64 > self.config.background_loss
                {
                    continue;
                }
                if worst.is_none_or(|(_, l, k)| loss > l || (loss == l && lost > k)) {
                    worst = Some((id, loss, lost));
                }
            }
            match worst {
                Some((id, _, _)) => {
                    suspects.insert(id);
                }
                None => break,
            }
        }
        let changed = suspects != self.suspects;
        self.suspects = suspects;
        changed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_duration(Duration::from_millis(ms))
    }

    /// Loops over gateway 0 and mixes {1,2} x {3,4} x {5,6}, one per 100 ms, alternating
    /// mixes so each combination occurs; `dead` relays lose every loop through them.
    fn feed(h: &mut RelayHealth, from: u64, n: u64, dead: &[u8]) -> bool {
        let mut changed = false;
        for k in from..from + n {
            let route = [
                id(0),
                id(1 + (k % 2) as u8),
                id(3 + ((k / 2) % 2) as u8),
                id(5 + ((k / 4) % 2) as u8),
                id(0),
            ];
            let delivered = !route.iter().any(|r| dead.contains(&r.as_bytes()[0]));
            changed |= h.record(at(k * 100), k, &route, delivered);
        }
        changed
    }

    #[test]
    fn a_dead_mix_is_named_and_only_it() {
        let mut h = RelayHealth::default();
        assert!(!feed(&mut h, 0, 40, &[]));
        assert!(h.suspects().is_empty());
        assert!(feed(&mut h, 40, 40, &[4]));
        assert_eq!(
            h.suspects().iter().copied().collect::<Vec<_>>(),
            vec![id(4)]
        );
        // mixes on the same lost loops (other layers) and the gateway are not blamed
        assert!(!h.is_suspect(&id(1)) && !h.is_suspect(&id(6)) && !h.is_suspect(&id(0)));
    }

    #[test]
    fn two_dead_mixes_in_different_layers_are_both_named() {
        let mut h = RelayHealth::default();
        feed(&mut h, 0, 80, &[2, 5]);
        assert!(h.is_suspect(&id(2)) && h.is_suspect(&id(5)));
        assert_eq!(h.suspects().len(), 2);
    }

    #[test]
    fn when_everything_is_lost_nobody_is_named() {
        let mut h = RelayHealth::default();
        feed(&mut h, 0, 80, &[0]);
        assert!(h.suspects().is_empty());
        // nor when most loops are lost whatever the route (overload): 2 of 3 lost
        let mut h = RelayHealth::default();
        for k in 0..90u64 {
            let route = [id(0), id(1 + (k % 2) as u8), id(3), id(5), id(0)];
            h.record(at(k * 100), k, &route, k % 3 == 0);
        }
        assert!(h.suspects().is_empty());
    }

    #[test]
    fn too_few_loops_name_nobody() {
        let mut h = RelayHealth::default();
        feed(&mut h, 0, 3, &[4]);
        assert!(h.suspects().is_empty());
    }

    #[test]
    fn a_relay_that_comes_back_is_cleared_once_the_evidence_ages() {
        let mut h = RelayHealth::default();
        feed(&mut h, 0, 80, &[4]);
        assert!(h.is_suspect(&id(4)));
        // it works again: fresh loops through it return, the old losses leave the window
        feed(&mut h, 80, 700, &[]);
        assert!(h.suspects().is_empty());
        // and outcomes are bounded
        assert!(h.len() <= HealthConfig::default().max_outcomes);
    }

    #[test]
    fn expiry_alone_clears_a_suspect() {
        let mut h = RelayHealth::default();
        feed(&mut h, 0, 80, &[4]);
        assert!(h.is_suspect(&id(4)));
        assert!(h.expire(at(80 * 100 + 61_000)));
        assert!(h.suspects().is_empty() && h.is_empty());
    }

    #[test]
    fn a_late_return_replaces_the_loss() {
        let mut h = RelayHealth::default();
        let route = [id(0), id(1), id(3), id(5), id(0)];
        for k in 0..8 {
            h.record(at(k), k, &route, false);
        }
        assert_eq!(h.len(), 8);
        for k in 0..8 {
            h.record(at(100 + k), k, &route, true);
        }
        assert_eq!(h.len(), 8);
        assert!(h.suspects().is_empty());
    }
}
