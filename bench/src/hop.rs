//! `lethe-bench hop`: the cost of one forward hop, three ways, in one run.
//!
//! - **ours**: `SphinxNode::process` with the replay filter, exactly what a relay's worker
//!   thread runs per packet (size check, MAC, replay tag, peel, delay cap, next packet);
//! - **sphinx-packet**: the backend's own `SphinxPacket::from_bytes` + `process`;
//! - **floor**: the work no implementation of this packet format can skip: two variable-base
//!   X25519 multiplications (shared secret, blinding), the HKDF expansions, the header MAC,
//!   the routing-information keystream and one Lioness pass over the payload.
//!
//! Rounds alternate the three and the report takes each one's median, so drift in clock
//! speed hits all alike. Then `ours` runs on 1..=N threads sharing one replay filter, as in
//! a relay, for throughput against cores.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lethe_proto::packet::{HopSpec, build_packet, sphinx_public_key};
use lethe_proto::{ClientId, NodeId, ReplayFilter, SphinxNode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sphinx_packet::SphinxPacket;
use sphinx_packet::crypto::{PrivateKey, PublicKey, generate_pseudorandom_bytes};
use sphinx_packet::header::SphinxHeader;
use sphinx_packet::payload::Payload;
use sphinx_packet::payload::key::derive_payload_key;

use crate::stats::{median, ratio};

/// Results of `hop`.
#[derive(Debug, Serialize)]
pub struct HopReport {
    pub packets: usize,
    pub rounds: usize,
    pub ours_ns: f64,
    pub sphinx_packet_ns: f64,
    pub floor_ns: f64,
    pub x25519_ns: f64,
    pub ours_over_sphinx_packet: f64,
    pub ours_over_floor: f64,
    pub sphinx_packet_over_floor: f64,
    pub threads: Vec<ThreadPoint>,
}

/// Throughput of our hop on `threads` threads.
#[derive(Debug, Serialize)]
pub struct ThreadPoint {
    pub threads: usize,
    pub packets_per_sec: f64,
    pub speedup: f64,
}

struct Fixture {
    secret: [u8; 32],
    packets: Vec<Vec<u8>>,
}

fn fixture(n: usize, seed: u64) -> anyhow::Result<Fixture> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let route = [
        HopSpec {
            id: NodeId::from_bytes([1; 32]),
            sphinx_key: sphinx_public_key(&secret),
        },
        HopSpec {
            id: NodeId::from_bytes([2; 32]),
            sphinx_key: sphinx_public_key(&[3; 32]),
        },
    ];
    let delays = [Duration::from_millis(1), Duration::ZERO];
    let mut packets = Vec::with_capacity(n);
    for _ in 0..n {
        let p = build_packet(
            &mut rng,
            &route,
            ClientId::from_bytes([4; 32]),
            &delays,
            b"bench",
        )?;
        packets.push(p.into_vec());
    }
    Ok(Fixture { secret, packets })
}

fn time_total(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64
}

/// Packets per interleaving chunk: small enough that a change in the machine's speed hits
/// the three paths alike, large enough that timer overhead does not matter.
const CHUNK: usize = 50;

/// Total ns for our relay path over `packets`.
fn ours(node: &SphinxNode, filter: &mut ReplayFilter, packets: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut ok = 0usize;
    let ns = time_total(|| {
        for p in packets {
            if node.process(p, |t| filter.check_and_insert(t)).is_ok() {
                ok += 1;
            }
        }
    });
    anyhow::ensure!(ok == packets.len(), "only {ok} packets processed");
    Ok(ns)
}

/// Total ns for sphinx-packet's own parse and process over `packets`.
fn sphinx_packet_process(sk: &PrivateKey, packets: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut ok = 0usize;
    let ns = time_total(|| {
        for p in packets {
            if let Ok(pkt) = SphinxPacket::from_bytes(p)
                && pkt.process(sk).is_ok()
            {
                ok += 1;
            }
        }
    });
    anyhow::ensure!(ok == packets.len(), "only {ok} packets processed");
    Ok(ns)
}

/// Two variable-base scalar multiplications and the symmetric work of one hop.
/// Total ns for the floor, and for one X25519 per packet, over `packets`.
fn floor(sk: &PrivateKey, packets: &[Vec<u8>]) -> anyhow::Result<(f64, f64)> {
    let blind = PrivateKey::from([5u8; 32]);
    let header_len = lethe_proto::packet::HEADER_SIZE - 32;
    let mut sink = 0u8;
    let x_ns = time_total(|| {
        for p in packets {
            let mut alpha = [0u8; 32];
            alpha.copy_from_slice(&p[..32]);
            let s = sk.diffie_hellman(&PublicKey::from(alpha));
            sink ^= s.as_bytes()[0];
        }
    });
    let mut failed = false;
    let ns = time_total(|| {
        for p in packets {
            let mut alpha = [0u8; 32];
            alpha.copy_from_slice(&p[..32]);
            // DH with the node key plus the HKDF expansion (header parsing is a copy).
            let Ok(header) = SphinxHeader::from_bytes(&p[..lethe_proto::packet::HEADER_SIZE])
            else {
                failed = true;
                continue;
            };
            let ess = header.compute_expanded_shared_secret(sk);
            let mac = sphinx_packet::crypto::compute_keyed_hmac::<sha2::Sha256>(
                &ess.replay_tag()[..16],
                &p[32 + 16..32 + header_len],
            );
            let ks = generate_pseudorandom_bytes(&[7; 16], &[0; 16], header_len + 64);
            let blinded = blind.diffie_hellman(&PublicKey::from(alpha));
            let key = derive_payload_key(ess.payload_key_seed());
            let payload = Payload::from_bytes(&p[lethe_proto::packet::HEADER_SIZE..]);
            match (mac, payload) {
                (Ok(m), Ok(pl)) => match pl.unwrap(key) {
                    Ok(pl) => {
                        sink ^=
                            m.into_bytes()[0] ^ ks[0] ^ blinded.as_bytes()[0] ^ pl.as_bytes()[0];
                    }
                    Err(_) => failed = true,
                },
                _ => failed = true,
            }
        }
    });
    anyhow::ensure!(!failed, "floor computation failed");
    std::hint::black_box(sink);
    Ok((ns, x_ns))
}

fn threaded(fx: &Fixture, threads: usize) -> anyhow::Result<f64> {
    let node = Arc::new(SphinxNode::new(fx.secret, Duration::from_secs(10)));
    let filter = Arc::new(Mutex::new(ReplayFilter::new([9; 32], 4_000_000, 1e-6)?));
    let chunk = fx.packets.len().div_ceil(threads);
    let t = Instant::now();
    std::thread::scope(|s| {
        for part in fx.packets.chunks(chunk) {
            let node = node.clone();
            let filter = filter.clone();
            s.spawn(move || {
                for p in part {
                    let _ = node.process(p, |t| {
                        filter
                            .lock()
                            .map(|mut f| f.check_and_insert(t))
                            .unwrap_or(true)
                    });
                }
            });
        }
    });
    Ok(fx.packets.len() as f64 / t.elapsed().as_secs_f64())
}

/// Run the hop benchmark on `packets` pre-built packets, `rounds` times each.
pub fn run(
    packets: usize,
    rounds: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<HopReport> {
    progress.set_message("building packets");
    let fx = fixture(packets, 1)?;
    let (mut o, mut s, mut f, mut x) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    progress.set_length((rounds + 4) as u64);
    progress.set_message("timing a hop");
    let sk = PrivateKey::from(fx.secret);
    let node = SphinxNode::new(fx.secret, Duration::from_secs(10));
    let n = fx.packets.len() as f64;
    for _ in 0..rounds {
        // A fresh filter each round: every packet is new to it.
        let mut filter = ReplayFilter::new([9; 32], 4_000_000, 1e-6)?;
        let (mut to, mut ts, mut tf, mut tx) = (0.0, 0.0, 0.0, 0.0);
        for chunk in fx.packets.chunks(CHUNK) {
            ts += sphinx_packet_process(&sk, chunk)?;
            to += ours(&node, &mut filter, chunk)?;
            let (fl, xx) = floor(&sk, chunk)?;
            tf += fl;
            tx += xx;
        }
        o.push(to / n);
        s.push(ts / n);
        f.push(tf / n);
        x.push(tx / n);
        progress.inc(1);
    }
    let (ours_ns, sp_ns, floor_ns) = (median(&o), median(&s), median(&f));
    progress.set_message("threads");
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut threads = Vec::new();
    let mut base = 0.0;
    for t in 1..=cores.max(2) {
        let pps = threaded(&fx, t)?;
        if t == 1 {
            base = pps;
        }
        threads.push(ThreadPoint {
            threads: t,
            packets_per_sec: pps,
            speedup: ratio(pps, base),
        });
        progress.inc(1);
    }
    Ok(HopReport {
        packets,
        rounds,
        ours_ns,
        sphinx_packet_ns: sp_ns,
        floor_ns,
        x25519_ns: median(&x),
        ours_over_sphinx_packet: ratio(ours_ns, sp_ns),
        ours_over_floor: ratio(ours_ns, floor_ns),
        sphinx_packet_over_floor: ratio(sp_ns, floor_ns),
        threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_run_measures_all_three() {
        // Timings of a debug build on 30 packets say nothing; the bench's own figures come
        // from release runs (BENCHMARKS.md). This checks that every path processes every
        // packet (run() fails otherwise) and the report is complete.
        let r = run(30, 1, &indicatif::ProgressBar::hidden()).unwrap();
        assert!(
            r.ours_ns > 0.0 && r.sphinx_packet_ns > 0.0 && r.floor_ns > 0.0 && r.x25519_ns > 0.0
        );
        assert!(r.ours_over_sphinx_packet > 0.0);
        assert!(r.threads.len() >= 2);
        assert_eq!(r.threads[0].threads, 1);
        assert_eq!(r.threads[0].speedup, 1.0);
    }
}
