//! `lethe-bench hop`: the cost of one forward hop, three ways, in one run.
//!
//! - **ours**: `SphinxNode::process` with the replay filter, exactly what a relay's worker
//!   thread runs per packet (size check, MAC, replay tag, peel, delay cap, next packet), on
//!   Lethe's own backend (`lethe_proto::sphinx`, aws-lc-rs X25519);
//! - **sphinx-packet**: the reference implementation's own `SphinxPacket::from_bytes` +
//!   `process` (x25519-dalek);
//! - **floor**: the work no implementation of this packet format can skip, on the fastest
//!   primitives in the dependency tree: two variable-base X25519 multiplications through
//!   aws-lc-rs (shared secret with a stored key; blinding with a key built per packet, as the
//!   blinding factor is new each time), the HKDF expansions, the header MAC, the
//!   routing-information keystream and one Lioness pass over the payload.
//!
//! Rounds alternate the three and the report takes each one's median, so drift in clock
//! speed hits all alike. Then `ours` runs on 1..=N threads sharing one replay filter, as in
//! a relay, for throughput against cores.

use std::sync::{Arc, Mutex};

use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
use hkdf::Hkdf;
use std::time::{Duration, Instant};

use lethe_proto::packet::{HopSpec, build_packet, sphinx_public_key};
use lethe_proto::{ClientId, NodeId, ReplayFilter, SphinxNode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sphinx_packet::SphinxPacket;
use sphinx_packet::crypto::{PrivateKey, PublicKey, generate_pseudorandom_bytes};
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
    /// One X25519 through x25519-dalek (sphinx-packet's).
    pub x25519_ns: f64,
    /// One X25519 through aws-lc-rs with a stored key (ours).
    pub x25519_aws_lc_ns: f64,
    pub ours_over_sphinx_packet: f64,
    /// Median over all chunks of ours / sphinx-packet on the same 50 packets, timed back to
    /// back: less moved by other processes' bursts than the ratio of the round medians.
    pub ours_over_sphinx_packet_paired: f64,
    pub ours_over_floor: f64,
    pub sphinx_packet_over_floor: f64,
    pub threads: Vec<ThreadPoint>,
    /// Building one 5-hop packet (sender side), us: ours (`build_packet`) and sphinx-packet's
    /// builder, medians of alternating batches.
    pub create5_ours_us: f64,
    pub create5_sphinx_packet_us: f64,
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

/// X25519 through aws-lc-rs; `None` for a low-order point.
fn agree(key: &agreement::PrivateKey, point: &[u8]) -> Option<[u8; 32]> {
    agreement::agree(key, UnparsedPublicKey::new(&X25519, point), (), |s| {
        let mut out = [0u8; 32];
        if s.len() != 32 {
            return Err(());
        }
        out.copy_from_slice(s);
        Ok(out)
    })
    .ok()
}

/// Two variable-base scalar multiplications (aws-lc-rs) and the symmetric work of one hop.
/// Total ns for the floor, for one x25519-dalek X25519 and for one aws-lc-rs X25519 per
/// packet, over `packets`.
fn floor(sk: &PrivateKey, secret: &[u8; 32], packets: &[Vec<u8>]) -> anyhow::Result<[f64; 3]> {
    let key = agreement::PrivateKey::from_private_key(&X25519, secret)
        .map_err(|e| anyhow::anyhow!("aws-lc refused the key: {e}"))?;
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
    let xa_ns = time_total(|| {
        for p in packets {
            match agree(&key, &p[..32]) {
                Some(s) => sink ^= s[0],
                None => failed = true,
            }
        }
    });
    let ns = time_total(|| {
        for p in packets {
            // DH with the node key plus the HKDF expansion (header parsing is a copy).
            let Some(shared) = agree(&key, &p[..32]) else {
                failed = true;
                continue;
            };
            let mut ess = [0u8; 288];
            if Hkdf::<sha2::Sha256>::new(Some(&[]), &shared)
                .expand(
                    sphinx_packet::constants::EXPANDED_SHARED_SECRET_HKDF_INFO,
                    &mut ess,
                )
                .is_err()
            {
                failed = true;
                continue;
            }
            let mac = sphinx_packet::crypto::compute_keyed_hmac::<sha2::Sha256>(
                &ess[16..32],
                &p[32 + 16..32 + header_len],
            );
            let ks = generate_pseudorandom_bytes(&[7; 16], &[0; 16], header_len + 64);
            let blinded = agreement::PrivateKey::from_private_key(&X25519, &ess[224..256])
                .ok()
                .and_then(|b| agree(&b, &p[..32]));
            let mut seed = [0u8; 16];
            seed.copy_from_slice(&ess[32..48]);
            let key = derive_payload_key(&seed);
            let payload = Payload::from_bytes(&p[lethe_proto::packet::HEADER_SIZE..]);
            match (mac, payload, blinded) {
                (Ok(m), Ok(pl), Some(b)) => match pl.unwrap(key) {
                    Ok(pl) => {
                        sink ^= m.into_bytes()[0] ^ ks[0] ^ b[0] ^ pl.as_bytes()[0];
                    }
                    Err(_) => failed = true,
                },
                _ => failed = true,
            }
        }
    });
    anyhow::ensure!(!failed, "floor computation failed");
    std::hint::black_box(sink);
    Ok([ns, x_ns, xa_ns])
}

/// A replay filter as a relay holds it in steady state: every page of both generations
/// already mapped. A fresh filter is zeroed memory the kernel maps on first touch, so
/// without this the timed packets would each pay one or two page faults (1-5 us in a VM)
/// that a running relay pays once, in its first few ten thousand packets.
fn warm_filter() -> anyhow::Result<ReplayFilter> {
    let mut filter = ReplayFilter::new([9; 32], 4_000_000, 1e-6)?;
    // Random tags, none of them a packet's: 80k cover the 4400 pages of a generation
    // (coupon collector: about 37k) and fill 2% of its capacity.
    let mut rng = StdRng::seed_from_u64(77);
    let mut tag = [0u8; 32];
    for _ in 0..80_000 {
        rng.fill_bytes(&mut tag);
        filter.check_and_insert(&tag);
    }
    Ok(filter)
}

/// us to build one 5-hop packet, ours and sphinx-packet's, over `n` packets in alternating
/// batches of 20.
fn creation(n: usize) -> anyhow::Result<(f64, f64)> {
    use sphinx_packet::header::delays::Delay;
    use sphinx_packet::route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes};
    let route: Vec<HopSpec> = (0..5u8)
        .map(|i| HopSpec {
            id: NodeId::from_bytes([i + 1; 32]),
            sphinx_key: sphinx_public_key(&[i + 11; 32]),
        })
        .collect();
    let nodes: Vec<Node> = route
        .iter()
        .map(|h| {
            Node::new(
                NodeAddressBytes::from_bytes(*h.id.as_bytes()),
                PublicKey::from(*h.sphinx_key.as_bytes()),
            )
        })
        .collect();
    let delays = [Duration::from_millis(1); 5];
    let sp_delays = [Delay::new_from_millis(1); 5];
    let dest = Destination::new(DestinationAddressBytes::from_bytes([4; 32]), [0; 16]);
    let mut rng = StdRng::seed_from_u64(5);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut failed = false;
    for _ in 0..n.div_ceil(20) {
        ours.push(
            time_total(|| {
                for _ in 0..20 {
                    let p = build_packet(
                        &mut rng,
                        &route,
                        ClientId::from_bytes([4; 32]),
                        &delays,
                        b"bench",
                    );
                    failed |= p.is_err();
                    std::hint::black_box(p.ok());
                }
            }) / 20e3,
        );
        theirs.push(
            time_total(|| {
                for _ in 0..20 {
                    let mut seed = [0u8; 32];
                    rng.fill_bytes(&mut seed);
                    let secret = PrivateKey::from(seed);
                    let p = sphinx_packet::SphinxPacketBuilder::new()
                        .with_payload_size(lethe_proto::packet::PAYLOAD_SIZE)
                        .with_initial_secret(&secret)
                        .build_packet(b"bench", &nodes, &dest, &sp_delays);
                    failed |= p.is_err();
                    std::hint::black_box(p.ok());
                }
            }) / 20e3,
        );
    }
    anyhow::ensure!(!failed, "building a packet failed");
    Ok((median(&ours), median(&theirs)))
}

fn threaded(fx: &Fixture, threads: usize) -> anyhow::Result<f64> {
    let node = Arc::new(SphinxNode::new(fx.secret, Duration::from_secs(10)));
    let filter = Arc::new(Mutex::new(warm_filter()?));
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
    let (mut o, mut s, mut f, mut x, mut xa) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    progress.set_length((rounds + 4) as u64);
    progress.set_message("timing a hop");
    let sk = PrivateKey::from(fx.secret);
    let node = SphinxNode::new(fx.secret, Duration::from_secs(10));
    let n = fx.packets.len() as f64;
    let mut paired = Vec::new();
    for _ in 0..rounds {
        // A fresh (warm) filter each round: every packet is new to it.
        let mut filter = warm_filter()?;
        let (mut to, mut ts, mut tf, mut tx, mut txa) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for chunk in fx.packets.chunks(CHUNK) {
            let cs = sphinx_packet_process(&sk, chunk)?;
            let co = ours(&node, &mut filter, chunk)?;
            paired.push(ratio(co, cs));
            ts += cs;
            to += co;
            let [fl, xx, xxa] = floor(&sk, &fx.secret, chunk)?;
            tf += fl;
            tx += xx;
            txa += xxa;
        }
        o.push(to / n);
        s.push(ts / n);
        f.push(tf / n);
        x.push(tx / n);
        xa.push(txa / n);
        progress.inc(1);
    }
    let (ours_ns, sp_ns, floor_ns) = (median(&o), median(&s), median(&f));
    progress.set_message("creation");
    let (create5_ours_us, create5_sphinx_packet_us) = creation(200)?;
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
        x25519_aws_lc_ns: median(&xa),
        ours_over_sphinx_packet: ratio(ours_ns, sp_ns),
        ours_over_sphinx_packet_paired: median(&paired),
        ours_over_floor: ratio(ours_ns, floor_ns),
        sphinx_packet_over_floor: ratio(sp_ns, floor_ns),
        threads,
        create5_ours_us,
        create5_sphinx_packet_us,
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
            r.ours_ns > 0.0
                && r.sphinx_packet_ns > 0.0
                && r.floor_ns > 0.0
                && r.x25519_ns > 0.0
                && r.x25519_aws_lc_ns > 0.0
        );
        assert!(r.ours_over_sphinx_packet > 0.0);
        assert!(r.ours_over_sphinx_packet_paired > 0.0);
        assert!(r.create5_ours_us > 0.0 && r.create5_sphinx_packet_us > 0.0);
        assert!(r.threads.len() >= 2);
        assert_eq!(r.threads[0].threads, 1);
        assert_eq!(r.threads[0].speedup, 1.0);
    }
}
