//! Lethe's packet type, over Lethe's own Sphinx backend ([`crate::sphinx`], aws-lc-rs
//! X25519), which follows `sphinx-packet` 0.8.0's wire format byte for byte (its tests keep
//! `sphinx-packet` as the reference). The backend stays behind this module.
//!
//! Every packet on the wire is exactly [`PACKET_SIZE`] bytes. A route is at most
//! [`MAX_ROUTE_LEN`] hops; in the deployed network it is always five: entry gateway, one mix
//! of each of the three layers, exit gateway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{CryptoRng, Rng};
use sphinx_packet::crypto::{PrivateKey, PublicKey};
use zeroize::Zeroize;

use crate::error::Constraint;
use crate::sphinx::{self, HopKey, Peeled, RouteHop};
use crate::surb::SurbId;
use crate::{ClientId, Error, Key32, NodeId};

/// Size of a Sphinx header (always sized for five hops).
pub const HEADER_SIZE: usize = sphinx::HEADER_LEN;
/// Size of the encrypted payload, padding overhead included.
pub const PAYLOAD_SIZE: usize = 2048;
/// Bytes the payload encoding needs for itself (zero prefix and padding marker).
pub const PAYLOAD_OVERHEAD: usize = sphinx::PAYLOAD_OVERHEAD;
/// The exact size of every packet on a link.
pub const PACKET_SIZE: usize = HEADER_SIZE + PAYLOAD_SIZE;
/// The longest message one packet carries.
pub const MAX_MESSAGE_LEN: usize = PAYLOAD_SIZE - PAYLOAD_OVERHEAD;
/// The most hops a route may have.
pub const MAX_ROUTE_LEN: usize = sphinx::MAX_HOPS;

/// One hop of a route as the sender needs it: who, and its Sphinx public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopSpec {
    /// The relay's identity (its Sphinx node address).
    pub id: NodeId,
    /// The relay's X25519 Sphinx key for the current epoch.
    pub sphinx_key: Key32,
}

/// A packet of exactly [`PACKET_SIZE`] bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet(Vec<u8>);

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Contents are never printed.
        write!(f, "Packet({} bytes)", self.0.len())
    }
}

impl Packet {
    /// Take ownership of `bytes`, which must be exactly [`PACKET_SIZE`] long.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Self, Error> {
        if bytes.len() != PACKET_SIZE {
            return Err(Error::WrongPacketSize {
                got: bytes.len(),
                expected: PACKET_SIZE,
            });
        }
        Ok(Packet(bytes))
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The wire bytes, owned.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

/// Draw one delay from an exponential distribution with the given mean, capped at `cap`.
/// This is the per-hop delay of a Poisson (continuous-time) mix.
pub fn sample_delay<R: Rng + ?Sized>(rng: &mut R, mean: Duration, cap: Duration) -> Duration {
    // A uniform in (0, 1]: 53 random bits, never zero, so ln() is finite.
    let u = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let secs = -mean.as_secs_f64() * u.ln();
    Duration::try_from_secs_f64(secs).unwrap_or(cap).min(cap)
}

/// A route of 1 to [`MAX_ROUTE_LEN`] hops with one delay per hop, or the error saying which
/// rule it breaks (for packets and SURBs alike).
pub(crate) fn check_route(route: &[HopSpec], delays: &[Duration]) -> Result<(), Error> {
    if route.is_empty() || route.len() > MAX_ROUTE_LEN {
        return Err(Error::BadRouteLength {
            got: route.len(),
            max: MAX_ROUTE_LEN,
        });
    }
    if delays.len() != route.len() {
        return Err(Error::DelayCountMismatch {
            hops: route.len(),
            delays: delays.len(),
        });
    }
    Ok(())
}

/// Build a forward packet carrying `message` along `route` to `destination`, with the given
/// per-hop delays (the last hop's delay is not used: it delivers). Every random byte comes
/// from `rng`: a seeded rng gives the same packet.
pub fn build_packet<R: Rng + CryptoRng + ?Sized>(
    rng: &mut R,
    route: &[HopSpec],
    destination: ClientId,
    delays: &[Duration],
    message: &[u8],
) -> Result<Packet, Error> {
    check_route(route, delays)?;
    if message.len() > MAX_MESSAGE_LEN {
        return Err(Error::MessageTooLong {
            got: message.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    let hops: Vec<RouteHop> = route
        .iter()
        .zip(delays)
        .map(|(h, d)| RouteHop {
            address: *h.id.as_bytes(),
            public_key: *h.sphinx_key.as_bytes(),
            delay_ns: duration_nanos(*d),
        })
        .collect();
    let bytes = sphinx::build(
        rng,
        &hops,
        destination.as_bytes(),
        &[0u8; 16],
        message,
        PAYLOAD_SIZE,
    )?;
    Packet::from_vec(bytes)
}

/// What one hop made of a packet.
#[derive(Debug)]
pub enum Processed {
    /// Hold for `delay`, then send `packet` to `next`.
    Forward {
        next: NodeId,
        delay: Duration,
        packet: Packet,
    },
    /// This relay is the last hop: hand `message` to the client `destination`.
    Deliver {
        destination: ClientId,
        message: Vec<u8>,
    },
    /// This relay is the last hop of a SURB reply (non-zero identifier): hand the
    /// identifier and the still-sealed payload ([`PAYLOAD_SIZE`] bytes) to the client
    /// `destination`, the SURB's creator, who alone can open it
    /// ([`crate::surb::SurbKey::recover`]).
    Reply {
        destination: ClientId,
        surb_id: SurbId,
        sealed: Vec<u8>,
    },
}

/// A relay's Sphinx key and its processing rules. Peeling runs on Lethe's own backend
/// ([`crate::sphinx`]), wire-compatible with `sphinx-packet`.
pub struct SphinxNode {
    /// `None` only if aws-lc refused the secret (it takes any 32 bytes); then every packet is
    /// dropped with [`Error::Invalid`].
    key: Option<HopKey>,
    public: Key32,
    /// The delay cap in nanoseconds; atomic so a driver can follow the directory's value
    /// while worker threads share the node.
    max_delay_ns: AtomicU64,
}

impl SphinxNode {
    /// A node with the given X25519 secret; packets asking for more than `max_delay` are
    /// refused.
    pub fn new(secret: [u8; 32], max_delay: Duration) -> Self {
        let mut secret = secret;
        let key = HopKey::new(&secret).ok();
        let public = sphinx_public_key(&secret);
        secret.zeroize();
        SphinxNode {
            key,
            public,
            max_delay_ns: AtomicU64::new(duration_nanos(max_delay)),
        }
    }

    /// The public key senders use to reach this node.
    pub fn public_key(&self) -> Key32 {
        self.public
    }

    /// The delay cap.
    pub fn max_delay(&self) -> Duration {
        Duration::from_nanos(self.max_delay_ns.load(Ordering::Relaxed))
    }

    /// Change the delay cap (when the directory publishes a new maximum).
    pub fn set_max_delay(&self, cap: Duration) {
        self.max_delay_ns
            .store(duration_nanos(cap), Ordering::Relaxed);
    }

    /// Peel one layer. `seen` is called with the packet's replay tag once the header's MAC
    /// has been checked, and must return `true` if the tag was seen before (then the packet
    /// is dropped as a replay). Cost: one X25519 for the shared secret and, for a forward
    /// hop, one for blinding.
    pub fn process(
        &self,
        packet: &[u8],
        seen: impl FnOnce(&[u8; 32]) -> bool,
    ) -> Result<Processed, Error> {
        if packet.len() != PACKET_SIZE {
            return Err(Error::WrongPacketSize {
                got: packet.len(),
                expected: PACKET_SIZE,
            });
        }
        let Some(key) = &self.key else {
            return Err(Error::Invalid {
                field: "sphinx secret",
                reason: Constraint::Backend,
            });
        };
        let max_delay_ns = self.max_delay_ns.load(Ordering::Relaxed);
        match key.peel(packet, max_delay_ns, seen)? {
            Peeled::Forward {
                next,
                delay_ns,
                packet,
            } => Ok(Processed::Forward {
                next: NodeId::from_bytes(next),
                delay: Duration::from_nanos(delay_ns),
                packet: Packet::from_vec(packet)?,
            }),
            Peeled::Final {
                destination,
                identifier,
                payload,
            } => {
                let destination = ClientId::from_bytes(destination);
                if let Some(surb_id) = SurbId::from_bytes(identifier) {
                    return Ok(Processed::Reply {
                        destination,
                        surb_id,
                        sealed: payload,
                    });
                }
                Ok(Processed::Deliver {
                    destination,
                    message: recover_plaintext(&payload)?,
                })
            }
        }
    }
}

/// The message inside a fully decrypted payload: 16 zero bytes, the message, a 1 byte, zeros.
fn recover_plaintext(payload: &[u8]) -> Result<Vec<u8>, Error> {
    let Some((zeros, rest)) = payload.split_at_checked(16) else {
        return Err(Error::BadPayload);
    };
    if zeros.iter().any(|b| *b != 0) {
        return Err(Error::BadPayload);
    }
    let Some(end) = rest.iter().rposition(|b| *b == 1) else {
        return Err(Error::BadPayload);
    };
    Ok(rest[..end].to_vec())
}

pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Derive the X25519 public key of a Sphinx secret.
pub fn sphinx_public_key(secret: &[u8; 32]) -> Key32 {
    Key32(PublicKey::from(&PrivateKey::from(*secret)).to_bytes())
}

/// Relays for tests: fresh Sphinx nodes and the route over them.
#[cfg(test)]
pub(crate) mod test_relays {
    use std::time::Duration;

    use rand::Rng;
    use rand::rngs::StdRng;

    use super::{HopSpec, SphinxNode};
    use crate::NodeId;

    pub(crate) struct TestNode {
        pub(crate) secret: [u8; 32],
        pub(crate) node: SphinxNode,
        pub(crate) id: NodeId,
    }

    /// `n` relays with secrets from `rng`, ids 1, 2, ...
    pub(crate) fn nodes(rng: &mut StdRng, n: usize) -> Vec<TestNode> {
        (0..n)
            .map(|i| {
                let mut secret = [0u8; 32];
                rng.fill_bytes(&mut secret);
                TestNode {
                    secret,
                    node: SphinxNode::new(secret, Duration::from_secs(10)),
                    id: NodeId::from_bytes([i as u8 + 1; 32]),
                }
            })
            .collect()
    }

    pub(crate) fn route(ns: &[TestNode]) -> Vec<HopSpec> {
        ns.iter()
            .map(|n| HopSpec {
                id: n.id,
                sphinx_key: n.node.public_key(),
            })
            .collect()
    }

    /// A replay check that has seen nothing.
    pub(crate) fn never(_: &[u8; 32]) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use crate::packet::test_relays::{never, nodes, route};

    #[test]
    fn five_hops_deliver_the_message_with_the_chosen_delays() {
        let mut rng = StdRng::seed_from_u64(1);
        let ns = nodes(&mut rng, 5);
        let delays: Vec<Duration> = (1..=5).map(|i| Duration::from_millis(i * 10)).collect();
        let dest = ClientId::from_bytes([42; 32]);
        let msg = b"hello across the mixnet".to_vec();
        let mut pkt = build_packet(&mut rng, &route(&ns), dest, &delays, &msg).unwrap();
        assert_eq!(pkt.as_bytes().len(), PACKET_SIZE);
        for (i, n) in ns.iter().enumerate() {
            match n.node.process(pkt.as_bytes(), never).unwrap() {
                Processed::Forward {
                    next,
                    delay,
                    packet,
                } => {
                    assert!(i < 4, "hop {i} should deliver");
                    assert_eq!(next, ns[i + 1].id);
                    assert_eq!(delay, delays[i]);
                    pkt = packet;
                }
                Processed::Deliver {
                    destination,
                    message,
                } => {
                    assert_eq!(i, 4);
                    assert_eq!(destination, dest);
                    assert_eq!(message, msg);
                    return;
                }
                Processed::Reply { .. } => panic!("a forward packet is not a reply"),
            }
        }
        panic!("never delivered");
    }

    #[test]
    fn the_injected_rng_chooses_the_whole_packet() {
        let mut rng = StdRng::seed_from_u64(3);
        let ns = nodes(&mut rng, 2);
        let d = [Duration::ZERO; 2];
        let dest = ClientId::from_bytes([1; 32]);
        let a = build_packet(&mut StdRng::seed_from_u64(9), &route(&ns), dest, &d, b"x").unwrap();
        let b = build_packet(&mut StdRng::seed_from_u64(9), &route(&ns), dest, &d, b"x").unwrap();
        let c = build_packet(&mut StdRng::seed_from_u64(10), &route(&ns), dest, &d, b"x").unwrap();
        assert_eq!(a, b);
        assert_ne!(a.as_bytes()[..32], c.as_bytes()[..32]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut rng = StdRng::seed_from_u64(2);
        let ns = nodes(&mut rng, 3);
        let d = [Duration::from_millis(1); 3];
        let dest = ClientId::from_bytes([1; 32]);
        let pkt = build_packet(&mut rng, &route(&ns), dest, &d, b"m").unwrap();
        let n = &ns[0].node;
        // wrong sizes
        for len in [0, 1, PACKET_SIZE - 1, PACKET_SIZE + 1, 10_000] {
            let bytes = vec![0u8; len];
            assert!(matches!(
                n.process(&bytes, never),
                Err(Error::WrongPacketSize { .. })
            ));
        }
        // random bytes of the right size
        let mut junk = vec![0u8; PACKET_SIZE];
        rng.fill_bytes(&mut junk);
        assert!(matches!(n.process(&junk, never), Err(Error::BadMac)));
        // a flipped header bit
        let mut flipped = pkt.as_bytes().to_vec();
        flipped[100] ^= 1;
        assert!(matches!(n.process(&flipped, never), Err(Error::BadMac)));
        // the wrong node
        assert!(matches!(
            ns[1].node.process(pkt.as_bytes(), never),
            Err(Error::BadMac)
        ));
        // replay
        assert!(matches!(
            n.process(pkt.as_bytes(), |_| true),
            Err(Error::Replay)
        ));
        // route and message limits
        assert!(build_packet(&mut rng, &[], dest, &[], b"m").is_err());
        assert!(build_packet(&mut rng, &route(&ns), dest, &d[..2], b"m").is_err());
        let long = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            build_packet(&mut rng, &route(&ns), dest, &d, &long),
            Err(Error::MessageTooLong { .. })
        ));
        let full = vec![0xffu8; MAX_MESSAGE_LEN];
        assert!(build_packet(&mut rng, &route(&ns), dest, &d, &full).is_ok());
    }

    #[test]
    fn delays_above_the_cap_are_refused() {
        let mut rng = StdRng::seed_from_u64(4);
        let ns = nodes(&mut rng, 2);
        let d = [Duration::from_secs(11), Duration::ZERO];
        let pkt = build_packet(
            &mut rng,
            &route(&ns),
            ClientId::from_bytes([1; 32]),
            &d,
            b"m",
        )
        .unwrap();
        assert!(matches!(
            ns[0].node.process(pkt.as_bytes(), never),
            Err(Error::DelayTooLong { .. })
        ));
        // the cap follows the directory
        ns[0].node.set_max_delay(Duration::from_secs(12));
        assert!(ns[0].node.process(pkt.as_bytes(), never).is_ok());
    }

    #[test]
    fn tampered_payload_is_caught_at_the_last_hop() {
        let mut rng = StdRng::seed_from_u64(5);
        let ns = nodes(&mut rng, 2);
        let d = [Duration::ZERO; 2];
        let pkt = build_packet(
            &mut rng,
            &route(&ns),
            ClientId::from_bytes([1; 32]),
            &d,
            b"m",
        )
        .unwrap();
        let mut bytes = pkt.into_vec();
        bytes[PACKET_SIZE - 5] ^= 0x40;
        let Processed::Forward { packet, .. } = ns[0].node.process(&bytes, never).unwrap() else {
            panic!("first hop forwards");
        };
        assert!(matches!(
            ns[1].node.process(packet.as_bytes(), never),
            Err(Error::BadPayload)
        ));
    }

    #[test]
    fn exponential_delays_have_the_requested_mean_and_cap() {
        let mut rng = StdRng::seed_from_u64(6);
        let mean = Duration::from_millis(20);
        let cap = Duration::from_millis(200);
        let n = 20_000;
        let samples: Vec<Duration> = (0..n).map(|_| sample_delay(&mut rng, mean, cap)).collect();
        let avg = samples.iter().map(|d| d.as_secs_f64()).sum::<f64>() / n as f64;
        assert!((avg - 0.020).abs() < 0.001, "mean {avg}");
        assert!(samples.iter().all(|d| *d <= cap));
        assert_eq!(sample_delay(&mut rng, Duration::ZERO, cap), Duration::ZERO);
    }
}
