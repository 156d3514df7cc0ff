//! Single-use reply blocks (SURBs), over `sphinx-packet` (named only here and in `packet`).
//!
//! A client that wants an answer without revealing its address prepares a [`Surb`] for a
//! route that ends at its own gateway ([`Surb::create`]), and keeps the [`SurbKey`]. The
//! SURB travels, [`SURB_SIZE`] bytes, inside a message to the replier (an exit service), who
//! turns it into an ordinary [`Packet`] carrying its reply ([`Surb::into_packet`]) and sends
//! it to the SURB's first hop. Relays process it like any packet; at the final hop the
//! payload is still sealed: only the creator's [`SurbKey`] opens it ([`SurbKey::recover`]).
//! The replier learns neither the route nor the recipient. Each SURB must be used once: a
//! second use is dropped as a replay by its first relay.
//!
//! SURBs use `sphinx-packet`'s single-seed version (260): the replier gets only the last
//! hop's payload key, so it cannot compute what the payload looks like at each hop.

use std::fmt;
use std::time::Duration;

use rand::{CryptoRng, Rng};
use sphinx_packet::constants::{IDENTIFIER_LENGTH, NODE_ADDRESS_LENGTH, PAYLOAD_KEY_SEED_SIZE};
use sphinx_packet::crypto::{PrivateKey, PublicKey};
use sphinx_packet::header::delays::Delay;
use sphinx_packet::payload::Payload;
use sphinx_packet::route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes};
use sphinx_packet::version::SINGLE_SEED_SURB_VERSION;
use sphinx_packet::{SURB, SURBMaterial, SurbReplyRecovery};

use crate::error::Defect;
use crate::packet::{HEADER_SIZE, MAX_MESSAGE_LEN, PAYLOAD_SIZE, check_route, duration_nanos};
use crate::{ClientId, Error, HopSpec, NodeId, Packet};

/// What was done with a SURB when `sphinx-packet` failed ([`Error::Surb`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SurbAction {
    /// [`Surb::create`].
    Build,
    /// [`Surb::from_bytes`].
    Parse,
    /// [`Surb::into_packet`].
    Use,
}

impl SurbAction {
    fn failed(self) -> impl FnOnce(sphinx_packet::Error) -> Error {
        move |e| Error::Surb {
            action: self,
            source: SurbError(e),
        }
    }
}

impl fmt::Display for SurbAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SurbAction::Build => "build",
            SurbAction::Parse => "parse",
            SurbAction::Use => "use",
        })
    }
}

/// `sphinx-packet`'s error, kept opaque so that crate stays named only here and in `packet`.
#[derive(Debug)]
pub struct SurbError(sphinx_packet::Error);

impl fmt::Display for SurbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SurbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The serialised size of a [`Surb`]: header, first hop, one payload key seed.
pub const SURB_SIZE: usize = HEADER_SIZE + NODE_ADDRESS_LENGTH + PAYLOAD_KEY_SEED_SIZE;

/// The identifier of a SURB, delivered in the clear to the final hop (the creator's
/// gateway) with the reply, so the creator can find the matching [`SurbKey`]. Never zero:
/// forward packets carry a zero identifier, which is how a gateway tells a reply apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SurbId([u8; IDENTIFIER_LENGTH]);

impl SurbId {
    /// From the 16 bytes found in a reply's header; `None` for all-zero (a forward packet).
    pub fn from_bytes(bytes: [u8; IDENTIFIER_LENGTH]) -> Option<SurbId> {
        (bytes != [0; IDENTIFIER_LENGTH]).then_some(SurbId(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; IDENTIFIER_LENGTH] {
        &self.0
    }
}

impl fmt::Debug for SurbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A short prefix: enough to correlate in debug logs, no more.
        write!(f, "SurbId({}..)", hex::encode(&self.0[..4]))
    }
}

/// A reply block: lets its holder send one packet to the creator without knowing who or
/// where the creator is.
pub struct Surb(SURB);

impl fmt::Debug for Surb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header and payload key are never printed.
        write!(f, "Surb({SURB_SIZE} bytes)")
    }
}

impl Surb {
    /// Create a SURB for `route` (the creator's own gateway last) to be delivered to client
    /// `recipient` (the creator), with one delay per hop (e.g. from
    /// [`crate::Topology::route_delays`]). The header secret and the identifier come from
    /// `rng`; the backend draws its header padding from its own thread rng.
    pub fn create<R: Rng + CryptoRng + ?Sized>(
        rng: &mut R,
        route: &[HopSpec],
        recipient: ClientId,
        delays: &[Duration],
    ) -> Result<(Surb, SurbKey), Error> {
        check_route(route, delays)?;
        let nodes: Vec<Node> = route
            .iter()
            .map(|h| {
                Node::new(
                    NodeAddressBytes::from_bytes(*h.id.as_bytes()),
                    PublicKey::from(*h.sphinx_key.as_bytes()),
                )
            })
            .collect();
        let delays: Vec<Delay> = delays
            .iter()
            .map(|d| Delay::new_from_nanos(duration_nanos(*d)))
            .collect();
        let mut id = [0u8; IDENTIFIER_LENGTH];
        while id == [0; IDENTIFIER_LENGTH] {
            rng.fill_bytes(&mut id);
        }
        let dest = Destination::new(
            DestinationAddressBytes::from_bytes(*recipient.as_bytes()),
            id,
        );
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let secret = PrivateKey::from(seed);
        let material = SURBMaterial::new(nodes, delays, dest, SINGLE_SEED_SURB_VERSION);
        let (surb, recovery) =
            SURB::new_recoverable(secret, material).map_err(SurbAction::Build.failed())?;
        Ok((Surb(surb), SurbKey(recovery)))
    }

    /// The first relay of the reply route: where the replier sends the packet.
    pub fn first_hop(&self) -> NodeId {
        NodeId::from_bytes(self.0.first_hop().to_bytes())
    }

    /// The wire form, exactly [`SURB_SIZE`] bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    /// Parse a SURB received inside a message; it must be exactly [`SURB_SIZE`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Surb, Error> {
        if bytes.len() != SURB_SIZE {
            return Err(Error::Malformed {
                what: "surb",
                detail: Defect::Length {
                    got: bytes.len(),
                    expected: SURB_SIZE,
                },
            });
        }
        SURB::from_bytes(bytes)
            .map(Surb)
            .map_err(SurbAction::Parse.failed())
    }

    /// Use the SURB (it is consumed): a packet of exactly [`crate::packet::PACKET_SIZE`]
    /// bytes carrying `message` (at most [`MAX_MESSAGE_LEN`] bytes), and the relay to send
    /// it to.
    pub fn into_packet(self, message: &[u8]) -> Result<(NodeId, Packet), Error> {
        if message.len() > MAX_MESSAGE_LEN {
            return Err(Error::MessageTooLong {
                got: message.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        let (packet, first) = self
            .0
            .use_surb(message, PAYLOAD_SIZE)
            .map_err(SurbAction::Use.failed())?;
        let mut bytes = packet.header.to_bytes();
        bytes.extend_from_slice(packet.payload.as_bytes());
        Ok((
            NodeId::from_bytes(first.to_bytes()),
            Packet::from_vec(bytes)?,
        ))
    }
}

/// What the creator of a [`Surb`] keeps to read the reply: every hop's payload key seed.
/// Zeroized on drop; never printed.
pub struct SurbKey(SurbReplyRecovery);

impl fmt::Debug for SurbKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SurbKey({:?}, [redacted])", self.id())
    }
}

impl SurbKey {
    /// The identifier of the SURB this key opens.
    pub fn id(&self) -> SurbId {
        SurbId(*self.0.identifier())
    }

    /// Open the sealed payload of a reply (the final hop's payload, [`PAYLOAD_SIZE`] bytes)
    /// and return the message the replier put in the SURB. A wrong key or a payload
    /// tampered with on the way is [`Error::BadPayload`].
    pub fn recover(&self, sealed_payload: &[u8]) -> Result<Vec<u8>, Error> {
        if sealed_payload.len() != PAYLOAD_SIZE {
            return Err(Error::Malformed {
                what: "sealed reply payload",
                detail: Defect::Length {
                    got: sealed_payload.len(),
                    expected: PAYLOAD_SIZE,
                },
            });
        }
        let payload = Payload::from_bytes(sealed_payload).map_err(|_| Error::BadPayload)?;
        self.0
            .recover_plaintext(payload)
            .map_err(|_| Error::BadPayload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Processed;
    use crate::packet::PACKET_SIZE;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use sphinx_packet::{ProcessedPacketData, SphinxPacket};

    use crate::packet::test_relays::{never, nodes, route};

    /// The final hop straight over the backend: peel the header, read the identifier and
    /// the still-sealed payload (what `SphinxNode::process` must return as a Reply).
    fn final_hop(secret: &[u8; 32], packet: &[u8]) -> (ClientId, [u8; 16], Vec<u8>) {
        let p = SphinxPacket::from_bytes(packet).unwrap();
        match p.process(&PrivateKey::from(*secret)).unwrap().data {
            ProcessedPacketData::FinalHop {
                destination,
                identifier,
                payload,
            } => (
                ClientId::from_bytes(destination.as_bytes()),
                identifier,
                payload.into_bytes(),
            ),
            ProcessedPacketData::ForwardHop { .. } => panic!("expected the final hop"),
        }
    }

    #[test]
    fn a_reply_crosses_five_relays_and_only_the_key_opens_it() {
        let mut rng = StdRng::seed_from_u64(1);
        let ns = nodes(&mut rng, 5);
        let me = ClientId::from_bytes([42; 32]);
        let delays: Vec<Duration> = (0..5).map(|i| Duration::from_millis(i * 3)).collect();
        let (surb, key) = Surb::create(&mut rng, &route(&ns), me, &delays).unwrap();

        // it travels as SURB_SIZE bytes inside a message
        let wire = surb.to_bytes();
        assert_eq!(wire.len(), SURB_SIZE);
        assert_eq!(SURB_SIZE, 396);
        let surb = Surb::from_bytes(&wire).unwrap();
        assert_eq!(surb.first_hop(), ns[0].id);

        let reply = vec![0xA5; MAX_MESSAGE_LEN];
        let (first, packet) = surb.into_packet(&reply).unwrap();
        assert_eq!(first, ns[0].id);
        assert_eq!(packet.as_bytes().len(), PACKET_SIZE);

        // the relays process it like any packet, with the creator's delays
        let mut pkt = packet;
        for (i, n) in ns[..4].iter().enumerate() {
            match n.node.process(pkt.as_bytes(), never).unwrap() {
                Processed::Forward {
                    next,
                    delay,
                    packet,
                } => {
                    assert_eq!(next, ns[i + 1].id);
                    assert_eq!(delay, delays[i]);
                    pkt = packet;
                }
                Processed::Deliver { .. } | Processed::Reply { .. } => {
                    panic!("hop {i} delivered early")
                }
            }
        }
        // The final hop sees a non-zero identifier and hands on the sealed payload.
        let Processed::Reply {
            destination,
            surb_id,
            sealed,
        } = ns[4].node.process(pkt.as_bytes(), never).unwrap()
        else {
            panic!("the final hop of a SURB reply gives Processed::Reply");
        };
        assert_eq!(destination, me);
        assert_eq!(surb_id, key.id());
        assert_eq!(sealed.len(), PAYLOAD_SIZE);
        // same as the raw backend's view
        let (dest, id, raw) = final_hop(&ns[4].secret, pkt.as_bytes());
        assert_eq!(dest, me);
        assert_eq!(SurbId::from_bytes(id), Some(key.id()));
        assert_eq!(raw, sealed);
        assert_eq!(key.recover(&sealed).unwrap(), reply);

        // another SURB's key does not open it, nor does a tampered payload
        let (_, other) = Surb::create(&mut rng, &route(&ns), me, &delays).unwrap();
        assert_ne!(other.id(), key.id());
        assert!(matches!(other.recover(&sealed), Err(Error::BadPayload)));
        let mut bad = sealed.clone();
        bad[100] ^= 1;
        assert!(matches!(key.recover(&bad), Err(Error::BadPayload)));
        assert!(key.recover(&sealed[1..]).is_err());
    }

    #[test]
    fn a_used_surb_replays_at_its_first_relay() {
        let mut rng = StdRng::seed_from_u64(2);
        let ns = nodes(&mut rng, 2);
        let (surb, _key) = Surb::create(
            &mut rng,
            &route(&ns),
            ClientId::from_bytes([1; 32]),
            &[Duration::ZERO; 2],
        )
        .unwrap();
        let wire = surb.to_bytes();
        let (_, a) = surb.into_packet(b"one").unwrap();
        let (_, b) = Surb::from_bytes(&wire)
            .unwrap()
            .into_packet(b"two")
            .unwrap();
        let mut tags = Vec::new();
        let mut tag_of = |p: &Packet| {
            ns[0]
                .node
                .process(p.as_bytes(), |t| {
                    tags.push(*t);
                    false
                })
                .unwrap();
        };
        tag_of(&a);
        tag_of(&b);
        assert_eq!(tags[0], tags[1], "same header, same replay tag");
    }

    #[test]
    fn the_injected_rng_chooses_the_secret_and_identifier() {
        let mut rng = StdRng::seed_from_u64(3);
        let ns = nodes(&mut rng, 3);
        let me = ClientId::from_bytes([1; 32]);
        let d = [Duration::ZERO; 3];
        let make = |seed| Surb::create(&mut StdRng::seed_from_u64(seed), &route(&ns), me, &d);
        let (a, ka) = make(9).unwrap();
        let (b, kb) = make(9).unwrap();
        let (c, kc) = make(10).unwrap();
        assert_eq!(ka.id(), kb.id());
        assert_ne!(ka.id(), kc.id());
        // the group element (first 32 bytes of the header) derives from the secret
        assert_eq!(a.to_bytes()[..32], b.to_bytes()[..32]);
        assert_ne!(a.to_bytes()[..32], c.to_bytes()[..32]);
        // nothing secret in Debug
        let shown = format!("{a:?} {ka:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&hex::encode(&a.to_bytes()[..8])));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut rng = StdRng::seed_from_u64(4);
        let ns = nodes(&mut rng, 3);
        let me = ClientId::from_bytes([1; 32]);
        let d = [Duration::ZERO; 3];
        assert!(matches!(
            Surb::create(&mut rng, &[], me, &[]),
            Err(Error::BadRouteLength { .. })
        ));
        assert!(matches!(
            Surb::create(&mut rng, &route(&ns), me, &d[..2]),
            Err(Error::DelayCountMismatch { .. })
        ));
        let (surb, _) = Surb::create(&mut rng, &route(&ns), me, &d).unwrap();
        assert!(matches!(
            surb.into_packet(&vec![0; MAX_MESSAGE_LEN + 1]),
            Err(Error::MessageTooLong { .. })
        ));
        for len in [0, 1, SURB_SIZE - 1, SURB_SIZE + 1] {
            assert!(Surb::from_bytes(&vec![0; len]).is_err());
        }
        assert_eq!(SurbId::from_bytes([0; 16]), None);
    }
}
