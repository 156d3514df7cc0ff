//! Lethe's own Sphinx packets: [`HopKey::peel`] for relays and [`build`] for senders,
//! wire-compatible with `sphinx-packet` 0.8.0 (its packets peel here, ours peel there, SURB
//! replies built with it cross this code) and faster: every X25519 runs on aws-lc-rs
//! (assembly field arithmetic) instead of x25519-dalek, and headers are handled in
//! fixed-size buffers instead of boxed intermediate types.
//!
//! # The format, as a relay sees it
//!
//! A packet is a header followed by the payload:
//!
//! ```text
//! header  = alpha (32, X25519 group element) | gamma (16, MAC) | beta (300, routing info)
//! payload = Lioness(ChaCha20, keyed BLAKE2b-256) block, every byte after the header
//! ```
//!
//! Per hop, with the relay's secret `x`:
//!
//! 1. `s = X25519(x, alpha)`; a low-order `alpha` gives `s = 0`, which is refused.
//! 2. `k = HKDF-SHA256(salt = "", ikm = s, info = EXPANDED_INFO)`, 288 bytes:
//!    `[0..16]` AES-128 stream key, `[16..32]` MAC key, `[32..48]` payload key seed (the first
//!    bytes of a legacy 192-byte payload key), `[224..256]` blinding factor, `[256..288]`
//!    replay tag.
//! 3. `gamma` must equal HMAC-SHA256(MAC key, beta) truncated to 16 bytes.
//! 4. The replay tag is checked (by the caller's filter).
//! 5. `beta || 0^60` is XORed with AES-128-CTR (zero IV, 64-bit big-endian counter). The first
//!    44 bytes are this hop's routing data: a flag (1 forward, 2 final), a version of three
//!    bytes (`0`, then a big-endian `u16`; 260 is the current one), then for a forward hop the
//!    next address (32) and delay (`u64` nanoseconds, big-endian), for the final hop the
//!    destination (32) and a SURB identifier (16). For a forward hop, the next 16 bytes are
//!    the next `gamma` and the remaining 300 the next `beta`.
//! 6. The payload key is HKDF-SHA256(salt = PAYLOAD_SALT, ikm = seed, info = PAYLOAD_INFO),
//!    192 bytes; one Lioness decryption removes this hop's layer.
//! 7. A forward hop's next `alpha` is `X25519(blinding factor, alpha)` (clamped like any
//!    X25519 scalar).
//!
//! Only version 260 (sphinx-packet's current version) is accepted; legacy versions derived
//! their payload keys differently and are refused with a typed error like any other.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use chacha20::ChaCha20;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use lioness_rs::Lioness;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::Error;
use crate::error::Constraint;

/// Size of an X25519 group element (`alpha`).
pub const ALPHA_LEN: usize = 32;
/// Size of the truncated header MAC (`gamma`).
pub const MAC_LEN: usize = 16;
/// Size of one hop's routing data (flag, version, address, delay).
pub const HOP_DATA_LEN: usize = 1 + VERSION_LEN + 32 + 8;
/// Size of the encrypted routing information (`beta`), room for five hops.
pub const BETA_LEN: usize = (HOP_DATA_LEN + MAC_LEN) * 5;
/// Size of a Sphinx header.
pub const HEADER_LEN: usize = ALPHA_LEN + MAC_LEN + BETA_LEN;
/// Bytes of the version field.
const VERSION_LEN: usize = 3;
/// The one routing-information version a relay accepts (sphinx-packet's `CURRENT_VERSION`).
pub const VERSION: u16 = 260;
/// Routing flag of a forward hop.
const FORWARD: u8 = 1;
/// Routing flag of the final hop.
const FINAL: u8 = 2;

/// HKDF info for the per-hop key expansion (a legacy constant of the format).
pub const EXPANDED_INFO: &[u8] =
    b"Dwste mou enan moxlo arketa makru kai ena upomoxlio gia na ton topothetisw kai tha kinisw thn gh.";
/// HKDF salt for the payload key.
pub const PAYLOAD_SALT: &[u8] = b"sphinx-payload-key-V01-CS01-HKDF:SHA256-SALT";
/// HKDF info for the payload key.
pub const PAYLOAD_INFO: &[u8] = b"sphinx-payload-key-V01-CS01-HKDF:SHA256-INFO";

const STREAM_KEY: std::ops::Range<usize> = 0..16;
const MAC_KEY: std::ops::Range<usize> = 16..32;
const PAYLOAD_SEED: std::ops::Range<usize> = 32..48;
const BLINDING: std::ops::Range<usize> = 224..256;
const REPLAY_TAG: std::ops::Range<usize> = 256..288;
const EXPANDED_LEN: usize = 288;
const PAYLOAD_KEY_LEN: usize = 192;

type PayloadCipher = Lioness<ChaCha20, Blake2bMac<U32>>;
type Aes128Ctr = ctr::Ctr64BE<aes::Aes128>;

/// What one hop made of a packet, before Lethe's own interpretation. `Debug` shows no
/// contents.
pub enum Peeled {
    /// Send `packet` (header and payload, as long as the input) to `next` after `delay_ns`.
    Forward {
        next: [u8; 32],
        delay_ns: u64,
        packet: Vec<u8>,
    },
    /// This hop is the last: `payload` is the payload with this hop's layer removed.
    Final {
        destination: [u8; 32],
        identifier: [u8; 16],
        payload: Vec<u8>,
    },
}

impl std::fmt::Debug for Peeled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peeled::Forward { packet, .. } => write!(f, "Forward({} bytes)", packet.len()),
            Peeled::Final { payload, .. } => write!(f, "Final({} bytes)", payload.len()),
        }
    }
}

/// A relay's X25519 key, held by aws-lc (which wipes it when freed).
pub struct HopKey {
    key: PrivateKey,
}

impl HopKey {
    /// The key for the X25519 secret `secret`.
    pub fn new(secret: &[u8; 32]) -> Result<Self, Error> {
        let key = PrivateKey::from_private_key(&X25519, secret).map_err(|_| Error::Invalid {
            field: "sphinx secret",
            reason: Constraint::Backend,
        })?;
        Ok(HopKey { key })
    }

    /// Peel one layer off `packet` (a header followed by a payload of at least 33 bytes).
    ///
    /// `max_delay_ns` caps the delay a forward hop may ask for. `seen` gets the replay tag
    /// once the MAC has been checked and returns `true` for a replay. Errors are typed and
    /// nothing here panics on any input.
    pub fn peel(
        &self,
        packet: &[u8],
        max_delay_ns: u64,
        seen: impl FnOnce(&[u8; 32]) -> bool,
    ) -> Result<Peeled, Error> {
        let (Some(alpha), Some(gamma), Some(beta), Some(payload)) = (
            packet.get(..ALPHA_LEN),
            packet.get(ALPHA_LEN..ALPHA_LEN + MAC_LEN),
            packet.get(ALPHA_LEN + MAC_LEN..HEADER_LEN),
            packet.get(HEADER_LEN..),
        ) else {
            return Err(Error::WrongPacketSize {
                got: packet.len(),
                expected: HEADER_LEN + 33,
            });
        };
        // Lioness needs more than one 32-byte half block.
        if payload.len() <= 32 {
            return Err(Error::WrongPacketSize {
                got: packet.len(),
                expected: HEADER_LEN + 33,
            });
        }

        let shared = Zeroizing::new(x25519(&self.key, alpha)?);
        let keys = expand(&shared[..])?;

        if verify_slices_are_equal(&header_mac(&keys, beta)?, gamma).is_err() {
            return Err(Error::BadMac);
        }

        let mut replay_tag = [0u8; 32];
        replay_tag.copy_from_slice(&keys[REPLAY_TAG]);
        if seen(&replay_tag) {
            return Err(Error::Replay);
        }

        // beta, padded with one hop's worth of zeros, under this hop's keystream.
        let mut routing = keystream(&keys);
        for (r, b) in routing.iter_mut().zip(beta) {
            *r ^= b;
        }

        let flag = routing[0];
        if flag != FORWARD && flag != FINAL {
            return Err(Error::BadRoutingFlag { got: flag });
        }
        let version = [routing[1], routing[2], routing[3]];
        if version != [0, (VERSION >> 8) as u8, VERSION as u8] {
            return Err(Error::UnsupportedVersion {
                got: u32::from_be_bytes([0, version[0], version[1], version[2]]),
            });
        }
        let mut address = [0u8; 32];
        address.copy_from_slice(&routing[4..36]);

        if flag == FINAL {
            let mut identifier = [0u8; 16];
            identifier.copy_from_slice(&routing[36..52]);
            let mut payload = payload.to_vec();
            decrypt_payload(&keys, &mut payload)?;
            return Ok(Peeled::Final {
                destination: address,
                identifier,
                payload,
            });
        }

        let mut delay = [0u8; 8];
        delay.copy_from_slice(&routing[36..44]);
        let delay_ns = u64::from_be_bytes(delay);
        if delay_ns > max_delay_ns {
            return Err(Error::DelayTooLong {
                requested: std::time::Duration::from_nanos(delay_ns),
                cap: std::time::Duration::from_nanos(max_delay_ns),
            });
        }

        let blinding =
            PrivateKey::from_private_key(&X25519, &keys[BLINDING]).map_err(|_| Error::Backend {
                what: "sphinx blinding factor",
            })?;
        let next_alpha = x25519(&blinding, alpha)?;

        let mut next = Vec::with_capacity(packet.len());
        next.extend_from_slice(&next_alpha);
        next.extend_from_slice(&routing[HOP_DATA_LEN..]);
        next.extend_from_slice(payload);
        decrypt_payload(&keys, &mut next[HEADER_LEN..])?;
        Ok(Peeled::Forward {
            next: address,
            delay_ns,
            packet: next,
        })
    }
}

/// One hop of a route, for [`build`].
#[derive(Clone, Copy, Debug)]
pub struct RouteHop {
    /// The address the previous hop forwards to (unused for the first hop).
    pub address: [u8; 32],
    /// The hop's X25519 public key.
    pub public_key: [u8; 32],
    /// How long the hop holds the packet (unused for the last hop, which delivers).
    pub delay_ns: u64,
}

/// The most hops a header has room for.
pub const MAX_HOPS: usize = 5;
/// Payload bytes the encoding needs for itself: 16 leading zeros and the end marker.
pub const PAYLOAD_OVERHEAD: usize = 17;

/// Build a packet of [`HEADER_LEN`] + `payload_len` bytes carrying `message` along `route` to
/// `destination` (with SURB `identifier`), at version [`VERSION`]. Every random byte (the
/// packet's secret, then the final hop's padding) comes from `rng`, so a seeded rng gives
/// the same packet. Cost: `n(n+1)/2` X25519 for `n` hops.
pub fn build<R: rand::Rng + rand::CryptoRng + ?Sized>(
    rng: &mut R,
    route: &[RouteHop],
    destination: &[u8; 32],
    identifier: &[u8; 16],
    message: &[u8],
    payload_len: usize,
) -> Result<Vec<u8>, Error> {
    let n = route.len();
    if n == 0 || n > MAX_HOPS {
        return Err(Error::BadRouteLength {
            got: n,
            max: MAX_HOPS,
        });
    }
    let max = payload_len.saturating_sub(PAYLOAD_OVERHEAD);
    if payload_len <= 32 || message.len() > max {
        return Err(Error::MessageTooLong {
            got: message.len(),
            max,
        });
    }

    // The packet's secret and its group element.
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut secret[..]);
    let first = PrivateKey::from_private_key(&X25519, &secret[..]).map_err(|_| Error::Backend {
        what: "sphinx packet secret",
    })?;
    let alpha = first
        .compute_public_key()
        .map_err(|_| Error::LowOrderPoint)?;

    // Each hop's shared secret: its public key times the packet secret and every earlier
    // hop's blinding factor (n(n+1)/2 multiplications in all).
    let mut scalars = vec![first];
    let mut keys = Vec::with_capacity(n);
    for (i, hop) in route.iter().enumerate() {
        let mut acc = hop.public_key;
        for scalar in &scalars {
            acc = x25519(scalar, &acc)?;
        }
        let k = expand(&acc)?;
        acc.zeroize();
        if i + 1 < n {
            let b = PrivateKey::from_private_key(&X25519, &k[BLINDING]).map_err(|_| {
                Error::Backend {
                    what: "sphinx blinding factor",
                }
            })?;
            scalars.push(b);
        }
        keys.push(k);
    }
    let streams: Vec<[u8; BETA_LEN + SLOT]> = keys.iter().map(|k| keystream(k)).collect();

    // The filler: what hops 0..n-1 will append as they peel, as the last hop will see it.
    let mut filler = Vec::with_capacity(SLOT * (n - 1));
    for (i, stream) in streams[..n - 1].iter().enumerate() {
        filler.extend_from_slice(&[0u8; SLOT]);
        let tail = &stream[BETA_LEN + SLOT - SLOT * (i + 1)..];
        for (f, s) in filler.iter_mut().zip(tail) {
            *f ^= s;
        }
    }

    // The last hop's routing information: flag, version, destination, identifier, random
    // padding, encrypted; then the filler; then its MAC.
    let [v0, v1] = VERSION.to_be_bytes();
    let mut beta = [0u8; BETA_LEN];
    let head = BETA_LEN - filler.len();
    beta[0] = FINAL;
    beta[1..4].copy_from_slice(&[0, v0, v1]);
    beta[4..36].copy_from_slice(destination);
    beta[36..52].copy_from_slice(identifier);
    rng.fill_bytes(&mut beta[52..head]);
    for (b, s) in beta[..head].iter_mut().zip(&streams[n - 1][..head]) {
        *b ^= s;
    }
    beta[head..].copy_from_slice(&filler);
    let mut gamma = header_mac(&keys[n - 1], &beta)?;

    // Forward hops, from the inside out.
    for i in (0..n - 1).rev() {
        let mut plain = [0u8; BETA_LEN];
        plain[0] = FORWARD;
        plain[1..4].copy_from_slice(&[0, v0, v1]);
        plain[4..36].copy_from_slice(&route[i + 1].address);
        plain[36..44].copy_from_slice(&route[i].delay_ns.to_be_bytes());
        plain[44..60].copy_from_slice(&gamma);
        plain[60..].copy_from_slice(&beta[..BETA_LEN - SLOT]);
        for ((b, p), s) in beta.iter_mut().zip(&plain).zip(&streams[i][..BETA_LEN]) {
            *b = p ^ s;
        }
        gamma = header_mac(&keys[i], &beta)?;
    }

    let mut packet = Vec::with_capacity(HEADER_LEN + payload_len);
    packet.extend_from_slice(alpha.as_ref());
    packet.extend_from_slice(&gamma);
    packet.extend_from_slice(&beta);
    // The payload: 16 zeros, the message, a 1, zeros; then one Lioness layer per hop, the
    // last hop's innermost.
    packet.extend_from_slice(&[0u8; 16]);
    packet.extend_from_slice(message);
    packet.push(1);
    packet.resize(HEADER_LEN + payload_len, 0);
    for k in keys.iter().rev() {
        payload_cipher(k)?
            .encrypt_block(&mut packet[HEADER_LEN..])
            .map_err(|_| Error::BadPayload)?;
    }
    Ok(packet)
}

/// Bytes of one hop's slot in the routing information: its data and the next MAC.
const SLOT: usize = HOP_DATA_LEN + MAC_LEN;

/// The 360-byte AES-128-CTR keystream of a hop's stream key.
fn keystream(keys: &[u8; EXPANDED_LEN]) -> [u8; BETA_LEN + SLOT] {
    let mut out = [0u8; BETA_LEN + SLOT];
    let mut key = [0u8; 16];
    key.copy_from_slice(&keys[STREAM_KEY]);
    Aes128Ctr::new(&key.into(), &[0u8; 16].into()).apply_keystream(&mut out);
    key.zeroize();
    out
}

/// gamma: HMAC-SHA256 of `beta` under a hop's MAC key, truncated.
fn header_mac(keys: &[u8; EXPANDED_LEN], beta: &[u8]) -> Result<[u8; MAC_LEN], Error> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&keys[MAC_KEY]).map_err(|_| Error::BadMac)?;
    mac.update(beta);
    let tag = mac.finalize().into_bytes();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&tag[..MAC_LEN]);
    Ok(out)
}

/// `X25519(key, point)`; an all-zero result (a low-order point) is refused.
fn x25519(key: &PrivateKey, point: &[u8]) -> Result<[u8; 32], Error> {
    agreement::agree(
        key,
        UnparsedPublicKey::new(&X25519, point),
        Error::LowOrderPoint,
        |s| {
            let mut out = [0u8; 32];
            if s.len() != out.len() {
                return Err(Error::LowOrderPoint);
            }
            out.copy_from_slice(s);
            Ok(out)
        },
    )
}

/// The 288 bytes of per-hop keys from a shared secret.
fn expand(shared: &[u8]) -> Result<Zeroizing<[u8; EXPANDED_LEN]>, Error> {
    let mut out = Zeroizing::new([0u8; EXPANDED_LEN]);
    Hkdf::<Sha256>::new(Some(&[]), shared)
        .expand(EXPANDED_INFO, &mut out[..])
        .map_err(|_| Error::BadMac)?;
    Ok(out)
}

/// Remove this hop's Lioness layer from `payload` in place.
fn decrypt_payload(keys: &[u8; EXPANDED_LEN], payload: &mut [u8]) -> Result<(), Error> {
    payload_cipher(keys)?
        .decrypt_block(payload)
        .map_err(|_| Error::BadPayload)
}

/// A hop's Lioness cipher, keyed from its payload key seed.
fn payload_cipher(keys: &[u8; EXPANDED_LEN]) -> Result<PayloadCipher, Error> {
    let mut key = Zeroizing::new([0u8; PAYLOAD_KEY_LEN]);
    Hkdf::<Sha256>::new(Some(PAYLOAD_SALT), &keys[PAYLOAD_SEED])
        .expand(PAYLOAD_INFO, &mut key[..])
        .map_err(|_| Error::BadPayload)?;
    PayloadCipher::new_from_slice(&key[..]).map_err(|_| Error::BadPayload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{PACKET_SIZE, PAYLOAD_SIZE};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use sphinx_packet::crypto::{PrivateKey as DalekSecret, PublicKey as DalekPublic};
    use sphinx_packet::header::delays::Delay;
    use sphinx_packet::payload::Payload;
    use sphinx_packet::route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes};
    use sphinx_packet::version::Version;
    use sphinx_packet::{
        ProcessedPacketData, SURBMaterial, SphinxPacket, SphinxPacketBuilder, constants,
    };

    const NO_CAP: u64 = u64::MAX;

    fn never(_: &[u8; 32]) -> bool {
        false
    }

    struct Relay {
        secret: [u8; 32],
        key: HopKey,
        node: Node,
    }

    fn relays(rng: &mut StdRng, n: usize) -> Vec<Relay> {
        (0..n)
            .map(|i| {
                let mut secret = [0u8; 32];
                rng.fill_bytes(&mut secret);
                let public = DalekPublic::from(&DalekSecret::from(secret));
                Relay {
                    secret,
                    key: HopKey::new(&secret).unwrap(),
                    node: Node::new(NodeAddressBytes::from_bytes([i as u8 + 10; 32]), public),
                }
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn sphinx_build(
        rng: &mut StdRng,
        rs: &[Relay],
        delays: &[u64],
        dest: [u8; 32],
        id: [u8; 16],
        msg: &[u8],
        payload_size: usize,
        version: Version,
    ) -> Vec<u8> {
        let route: Vec<Node> = rs.iter().map(|r| r.node.clone()).collect();
        let delays: Vec<Delay> = delays.iter().map(|d| Delay::new_from_nanos(*d)).collect();
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let initial = DalekSecret::from(seed);
        SphinxPacketBuilder::new()
            .with_payload_size(payload_size)
            .with_version(version)
            .with_initial_secret(&initial)
            .build_packet(
                msg,
                &route,
                &Destination::new(DestinationAddressBytes::from_bytes(dest), id),
                &delays,
            )
            .unwrap()
            .to_bytes()
    }

    /// A one-hop packet with hand-made routing data and a valid MAC: for inputs
    /// sphinx-packet refuses to build (bad flags, version bytes).
    fn craft(node_secret: &[u8; 32], routing: &[u8], payload: &[u8]) -> Vec<u8> {
        let node_public = DalekPublic::from(&DalekSecret::from(*node_secret));
        let eph = DalekSecret::from([7u8; 32]);
        let alpha = DalekPublic::from(&eph);
        let shared = eph.diffie_hellman(&node_public);
        let keys = expand(shared.as_bytes()).unwrap();
        let mut beta = [0u8; BETA_LEN];
        beta[..routing.len()].copy_from_slice(routing);
        let mut sk = [0u8; 16];
        sk.copy_from_slice(&keys[STREAM_KEY]);
        Aes128Ctr::new(&sk.into(), &[0u8; 16].into()).apply_keystream(&mut beta);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&keys[MAC_KEY]).unwrap();
        mac.update(&beta);
        let gamma = mac.finalize().into_bytes();
        let mut p = alpha.as_bytes().to_vec();
        p.extend_from_slice(&gamma[..MAC_LEN]);
        p.extend_from_slice(&beta);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn the_format_constants_are_sphinx_packets() {
        assert_eq!(HEADER_LEN, sphinx_packet::header::HEADER_SIZE);
        assert_eq!(HOP_DATA_LEN, constants::NODE_META_INFO_SIZE);
        assert_eq!(EXPANDED_INFO, constants::EXPANDED_SHARED_SECRET_HKDF_INFO);
        assert!(constants::EXPANDED_SHARED_SECRET_HKDF_SALT.is_empty());
        assert_eq!(PAYLOAD_SALT, constants::PAYLOAD_KEY_HKDF_SALT);
        assert_eq!(PAYLOAD_INFO, constants::PAYLOAD_KEY_HKDF_INFO);
        assert_eq!(PAYLOAD_KEY_LEN, constants::PAYLOAD_KEY_SIZE);
        assert_eq!(EXPANDED_LEN, constants::EXPANDED_SHARED_SECRET_LENGTH);
        assert_eq!(MAX_HOPS, constants::MAX_PATH_LENGTH);
        assert_eq!(
            PAYLOAD_OVERHEAD,
            sphinx_packet::payload::PAYLOAD_OVERHEAD_SIZE
        );
        assert_eq!(BETA_LEN + SLOT, constants::STREAM_CIPHER_OUTPUT_LENGTH);
        assert_eq!(VERSION, sphinx_packet::version::CURRENT_VERSION.value());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn aws_lc_x25519_matches_x25519_dalek(scalar in any::<[u8; 32]>(), point in any::<[u8; 32]>()) {
            let dalek = DalekSecret::from(scalar).diffie_hellman(&DalekPublic::from(point));
            let key = PrivateKey::from_private_key(&X25519, &scalar).unwrap();
            match x25519(&key, &point) {
                Ok(ours) => prop_assert_eq!(&ours, dalek.as_bytes()),
                Err(e) => {
                    prop_assert!(matches!(e, Error::LowOrderPoint));
                    prop_assert_eq!(dalek.as_bytes(), &[0u8; 32]);
                }
            }
        }

        /// (a) Packets built by sphinx-packet: ours and sphinx-packet agree at every hop on
        /// the next packet's bytes, next hop, delay, and at the end on the destination,
        /// identifier and payload.
        #[test]
        fn sphinx_packet_packets_peel_identically(
            seed in any::<u64>(),
            hops in 1usize..=5,
            msg_len in 0usize..=(PAYLOAD_SIZE - 17),
            small in any::<bool>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let rs = relays(&mut rng, hops);
            let delays: Vec<u64> = (0..hops).map(|_| rng.next_u64() >> rng.random_range(0..64)).collect();
            let payload_size = if small { 1024 } else { PAYLOAD_SIZE };
            let msg: Vec<u8> = (0..msg_len.min(payload_size - 17)).map(|_| rng.random()).collect();
            let mut dest = [0u8; 32];
            rng.fill_bytes(&mut dest);
            let id: [u8; 16] = rng.random();
            let mut bytes = sphinx_build(&mut rng, &rs, &delays, dest, id, &msg, payload_size, Version(VERSION));
            for (i, r) in rs.iter().enumerate() {
                let theirs = SphinxPacket::from_bytes(&bytes).unwrap().process(&DalekSecret::from(r.secret)).unwrap();
                let mut tags = Vec::new();
                let ours = r.key.peel(&bytes, NO_CAP, |t| { tags.push(*t); false }).unwrap();
                prop_assert_eq!(tags.len(), 1);
                match (ours, theirs.data) {
                    (Peeled::Forward { next, delay_ns, packet }, ProcessedPacketData::ForwardHop { next_hop_packet, next_hop_address, delay }) => {
                        prop_assert!(i + 1 < hops);
                        prop_assert_eq!(next, next_hop_address.to_bytes());
                        prop_assert_eq!(next, rs[i + 1].node.address.to_bytes());
                        prop_assert_eq!(delay_ns, delay.to_nanos());
                        prop_assert_eq!(delay_ns, delays[i]);
                        prop_assert_eq!(&packet, &next_hop_packet.to_bytes());
                        bytes = packet;
                    }
                    (Peeled::Final { destination, identifier, payload }, ProcessedPacketData::FinalHop { destination: d, identifier: id2, payload: p }) => {
                        prop_assert_eq!(i + 1, hops);
                        prop_assert_eq!(destination, d.as_bytes());
                        prop_assert_eq!(destination, dest);
                        prop_assert_eq!(identifier, id2);
                        prop_assert_eq!(identifier, id);
                        prop_assert_eq!(&payload[..], p.as_bytes());
                        prop_assert_eq!(p.recover_plaintext().unwrap(), msg.clone());
                    }
                    _ => prop_assert!(false, "ours and sphinx-packet disagree on the hop kind at hop {}", i),
                }
            }
        }
    }

    fn our_route(rs: &[Relay], delays: &[u64]) -> Vec<RouteHop> {
        rs.iter()
            .zip(delays)
            .map(|(r, d)| RouteHop {
                address: r.node.address.to_bytes(),
                public_key: *r.node.pub_key.as_bytes(),
                delay_ns: *d,
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// (b) Packets built by our path are processed by sphinx-packet at every hop, and
        /// share the group element and the payload with sphinx-packet's packet from the same
        /// secret (the header differs only through the final hop's random padding).
        #[test]
        fn our_packets_are_processed_by_sphinx_packet(
            seed in any::<u64>(),
            hops in 1usize..=5,
            msg_len in 0usize..=(PAYLOAD_SIZE - PAYLOAD_OVERHEAD),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let rs = relays(&mut rng, hops);
            let delays: Vec<u64> = (0..hops).map(|_| rng.next_u64() >> rng.random_range(0..64)).collect();
            let msg: Vec<u8> = (0..msg_len).map(|_| rng.random()).collect();
            let dest: [u8; 32] = rng.random();
            let id: [u8; 16] = rng.random();
            let packet_seed = rng.next_u64();
            let ours = build(&mut StdRng::seed_from_u64(packet_seed), &our_route(&rs, &delays), &dest, &id, &msg, PAYLOAD_SIZE).unwrap();
            prop_assert_eq!(ours.len(), PACKET_SIZE);
            let again = build(&mut StdRng::seed_from_u64(packet_seed), &our_route(&rs, &delays), &dest, &id, &msg, PAYLOAD_SIZE).unwrap();
            prop_assert_eq!(&ours, &again);
            let theirs = sphinx_build(&mut StdRng::seed_from_u64(packet_seed), &rs, &delays, dest, id, &msg, PAYLOAD_SIZE, Version(VERSION));
            prop_assert_eq!(&ours[..ALPHA_LEN], &theirs[..ALPHA_LEN]);
            prop_assert_eq!(&ours[HEADER_LEN..], &theirs[HEADER_LEN..]);

            let mut bytes = ours;
            for (i, r) in rs.iter().enumerate() {
                let processed = SphinxPacket::from_bytes(&bytes).unwrap().process(&DalekSecret::from(r.secret)).unwrap();
                prop_assert_eq!(processed.version, Version(VERSION));
                match processed.data {
                    ProcessedPacketData::ForwardHop { next_hop_packet, next_hop_address, delay } => {
                        prop_assert!(i + 1 < hops);
                        prop_assert_eq!(next_hop_address.to_bytes(), rs[i + 1].node.address.to_bytes());
                        prop_assert_eq!(delay.to_nanos(), delays[i]);
                        let next = next_hop_packet.to_bytes();
                        // and our own peel agrees
                        match r.key.peel(&bytes, NO_CAP, never).unwrap() {
                            Peeled::Forward { packet, .. } => prop_assert_eq!(&packet, &next),
                            Peeled::Final { .. } => prop_assert!(false, "ours delivered early"),
                        }
                        bytes = next;
                    }
                    ProcessedPacketData::FinalHop { destination, identifier, payload } => {
                        prop_assert_eq!(i + 1, hops);
                        prop_assert_eq!(destination.as_bytes(), dest);
                        prop_assert_eq!(identifier, id);
                        prop_assert_eq!(payload.recover_plaintext().unwrap(), msg.clone());
                    }
                }
            }
        }
    }

    #[test]
    fn building_refuses_bad_routes_and_messages() {
        let mut rng = StdRng::seed_from_u64(14);
        let rs = relays(&mut rng, 6);
        let route = our_route(&rs, &[0; 6]);
        let ok = |r: &[RouteHop], len: usize| {
            build(
                &mut StdRng::seed_from_u64(1),
                r,
                &[1; 32],
                &[0; 16],
                &vec![7; len],
                1024,
            )
        };
        assert!(ok(&route[..5], 1024 - PAYLOAD_OVERHEAD).is_ok());
        assert!(matches!(
            ok(&route[..0], 1),
            Err(Error::BadRouteLength { got: 0, .. })
        ));
        assert!(matches!(
            ok(&route, 1),
            Err(Error::BadRouteLength { got: 6, .. })
        ));
        assert!(matches!(
            ok(&route[..2], 1024 - PAYLOAD_OVERHEAD + 1),
            Err(Error::MessageTooLong { .. })
        ));
        // A low-order key in the route (a broken directory entry) is refused, not used.
        let mut bad = route[..3].to_vec();
        bad[1].public_key = [0; 32];
        assert!(matches!(ok(&bad, 1), Err(Error::LowOrderPoint)));
    }

    #[test]
    fn the_replay_tag_is_sphinx_packets() {
        let mut rng = StdRng::seed_from_u64(11);
        let rs = relays(&mut rng, 3);
        let bytes = sphinx_build(
            &mut rng,
            &rs,
            &[1, 2, 3],
            [1; 32],
            [2; 16],
            b"tag",
            PAYLOAD_SIZE,
            Version(VERSION),
        );
        let theirs = SphinxPacket::from_bytes(&bytes).unwrap();
        let ess = theirs
            .header
            .compute_expanded_shared_secret(&DalekSecret::from(rs[0].secret));
        let mut ours = None;
        rs[0]
            .key
            .peel(&bytes, NO_CAP, |t| {
                ours = Some(*t);
                false
            })
            .unwrap();
        assert_eq!(ours.as_ref(), Some(ess.replay_tag()));
    }

    /// (c) A reply built from a sphinx-packet SURB crosses our backend and its creator reads it.
    #[test]
    fn sphinx_packet_surb_replies_cross_our_backend() {
        let mut rng = StdRng::seed_from_u64(12);
        for hops in 1..=5 {
            let rs = relays(&mut rng, hops);
            let route: Vec<Node> = rs.iter().map(|r| r.node.clone()).collect();
            let delays: Vec<Delay> = (0..hops as u64).map(Delay::new_from_millis).collect();
            let dest = Destination::new(DestinationAddressBytes::from_bytes([5; 32]), [6; 16]);
            let (surb, recovery) = SURBMaterial::new(route, delays.clone(), dest, Version(VERSION))
                .construct_recoverable_SURB()
                .unwrap();
            let msg = format!("a reply over {hops} hops").into_bytes();
            let (packet, first) = surb.use_surb(&msg, PAYLOAD_SIZE).unwrap();
            assert_eq!(first, rs[0].node.address);
            let mut bytes = packet.to_bytes();
            assert_eq!(bytes.len(), PACKET_SIZE);
            for (i, r) in rs.iter().enumerate() {
                match r.key.peel(&bytes, NO_CAP, never).unwrap() {
                    Peeled::Forward {
                        next,
                        delay_ns,
                        packet,
                    } => {
                        assert_eq!(next, rs[i + 1].node.address.to_bytes());
                        assert_eq!(delay_ns, delays[i].to_nanos());
                        bytes = packet;
                    }
                    Peeled::Final {
                        destination,
                        identifier,
                        payload,
                    } => {
                        assert_eq!(i + 1, hops);
                        assert_eq!(destination, [5; 32]);
                        assert_eq!(identifier, [6; 16]);
                        let payload = Payload::from_bytes(&payload).unwrap();
                        assert_eq!(recovery.recover_plaintext(payload).unwrap(), msg);
                    }
                }
            }
        }
    }

    /// (d) Bad input of every kind: a typed error, never a panic.
    #[test]
    fn bad_packets_get_typed_errors() {
        let mut rng = StdRng::seed_from_u64(13);
        let rs = relays(&mut rng, 2);
        let good = sphinx_build(
            &mut rng,
            &rs,
            &[1_000, 0],
            [1; 32],
            [0; 16],
            b"m",
            PAYLOAD_SIZE,
            Version(VERSION),
        );
        let key = &rs[0].key;
        assert!(key.peel(&good, NO_CAP, never).is_ok());

        // Every header byte matters: gamma and beta through the MAC, alpha through the
        // shared secret (or as a low-order point).
        for i in 0..HEADER_LEN {
            let mut p = good.clone();
            p[i] ^= 0x10;
            let e = key.peel(&p, NO_CAP, never).unwrap_err();
            assert!(
                matches!(e, Error::BadMac | Error::LowOrderPoint),
                "byte {i}: {e:?}"
            );
        }
        // The wrong relay.
        assert!(matches!(
            rs[1].key.peel(&good, NO_CAP, never),
            Err(Error::BadMac)
        ));
        // Replays are reported after the MAC check, and only then.
        assert!(matches!(
            key.peel(&good, NO_CAP, |_| true),
            Err(Error::Replay)
        ));
        let mut junk = good.clone();
        junk[60] ^= 1;
        let mut asked = false;
        let _ = key.peel(&junk, NO_CAP, |_| {
            asked = true;
            true
        });
        assert!(!asked);
        // Delay above the cap.
        assert!(matches!(
            key.peel(&good, 999, never),
            Err(Error::DelayTooLong { .. })
        ));
        assert!(key.peel(&good, 1_000, never).is_ok());
        // Truncated input.
        for len in [0, 31, 32, 47, HEADER_LEN, HEADER_LEN + 32] {
            assert!(matches!(
                key.peel(&good[..len], NO_CAP, never),
                Err(Error::WrongPacketSize { .. })
            ));
        }
        // Low-order alphas: the identity, the points of order 2, 4 and 8, and non-canonical
        // encodings of some of them (with and without the ignored top bit).
        let p = {
            let mut p = [0xffu8; 32];
            p[0] = 0xed;
            p[31] = 0x7f;
            p
        };
        let mut p_plus_1 = p;
        p_plus_1[0] = 0xee;
        let mut p_minus_1 = p;
        p_minus_1[0] = 0xec;
        let mut one = [0u8; 32];
        one[0] = 1;
        let order8a =
            hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
                .unwrap();
        let order8b =
            hex::decode("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157")
                .unwrap();
        let mut lows: Vec<Vec<u8>> = vec![
            vec![0; 32],
            one.to_vec(),
            p.to_vec(),
            p_plus_1.to_vec(),
            p_minus_1.to_vec(),
            order8a,
            order8b,
        ];
        for l in lows.clone() {
            let mut high = l;
            high[31] |= 0x80;
            lows.push(high);
        }
        for low in lows {
            let mut pk = good.clone();
            pk[..32].copy_from_slice(&low);
            assert!(
                matches!(key.peel(&pk, NO_CAP, never), Err(Error::LowOrderPoint)),
                "{}",
                hex::encode(&low)
            );
        }
        // An older version built by sphinx-packet, MAC and all.
        let old = sphinx_build(
            &mut rng,
            &rs,
            &[0, 0],
            [1; 32],
            [0; 16],
            b"m",
            PAYLOAD_SIZE,
            Version(259),
        );
        assert!(matches!(
            key.peel(&old, NO_CAP, never),
            Err(Error::UnsupportedVersion { got: 259 })
        ));
        // Hand-made routing data with valid MACs: unknown flags, a set leading version byte.
        let payload = vec![0u8; PAYLOAD_SIZE];
        for flag in [0u8, 3, 0xff] {
            let p = craft(&rs[0].secret, &[flag, 0, 1, 4], &payload);
            assert!(matches!(
                key.peel(&p, NO_CAP, never),
                Err(Error::BadRoutingFlag { got }) if got == flag
            ));
        }
        let p = craft(&rs[0].secret, &[2, 1, 1, 4], &payload);
        assert!(matches!(
            key.peel(&p, NO_CAP, never),
            Err(Error::UnsupportedVersion { got: 0x01_01_04 })
        ));
        let p = craft(&rs[0].secret, &[2, 0, 1, 4], &payload);
        assert!(matches!(
            key.peel(&p, NO_CAP, never),
            Ok(Peeled::Final { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let mut rng = StdRng::seed_from_u64(1);
            let rs = relays(&mut rng, 1);
            let _ = rs[0].key.peel(&bytes, NO_CAP, never);
        }
    }
}
