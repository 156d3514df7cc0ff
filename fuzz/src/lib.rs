//! Fixtures shared by the fuzz targets and by `examples/seeds.rs`: fixed keys (so a seed
//! built once stays valid for the target), signing of arbitrary text the way the project
//! signs descriptors, documents and votes, and a one-hop Sphinx header with a valid MAC around
//! routing data chosen by the fuzzer (what any sender who knows a relay's public key can do).

use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use lethe_proto::sphinx::{ALPHA_LEN, BETA_LEN, EXPANDED_INFO, MAC_LEN};
use lethe_proto::topology::identity_public_key;
use lethe_proto::{Key32, SphinxNode};
use sha2::Sha256;
use sphinx_packet::crypto::{PrivateKey as DalekSecret, PublicKey as DalekPublic};

/// The X25519 Sphinx secret of the relay the `sphinx` and `surb` targets feed.
pub const RELAY_SPHINX_SECRET: [u8; 32] = [0x11; 32];
/// The delay cap of that relay.
pub const RELAY_MAX_DELAY: Duration = Duration::from_secs(10);
/// The Ed25519 secret of the one directory authority the `topology` and `vote` targets trust.
pub const AUTHORITY_SECRET: [u8; 32] = [0x22; 32];
/// The Ed25519 identity secret of the relay whose descriptors the seeds hold.
pub const RELAY_IDENTITY_SECRET: [u8; 32] = [0x33; 32];
/// "Now" for the `topology` target (seed documents are valid until 2_000).
pub const NOW_UNIX: u64 = 1_000;

/// Domain prefixes of the signatures (copied from proto/src/topology.rs and consensus.rs,
/// where they are private).
pub const DESCRIPTOR_DOMAIN: &[u8] = b"lethe descriptor v1\0";
pub const VOTE_DOMAIN: &[u8] = b"lethe-vote-v1\0";

/// The relay of the `sphinx` and `surb` targets.
pub fn relay() -> SphinxNode {
    SphinxNode::new(RELAY_SPHINX_SECRET, RELAY_MAX_DELAY)
}

/// The authority key list of the `topology` and `vote` targets.
pub fn authority_keys() -> Vec<Key32> {
    vec![identity_public_key(&AUTHORITY_SECRET)]
}

/// Hex Ed25519 signature of `domain || text` by `secret`.
pub fn sign_text(secret: &[u8; 32], domain: &[u8], text: &str) -> String {
    let mut m = domain.to_vec();
    m.extend_from_slice(text.as_bytes());
    let sig = SigningKey::from_bytes(secret).sign(&m);
    let bytes = sig.to_bytes();
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

type Aes128Ctr = ctr::Ctr64BE<aes::Aes128>;

/// A Sphinx packet for the relay with secret `relay_secret`: ephemeral secret `eph`, the
/// routing data `routing` (at most [`BETA_LEN`] bytes, zero-padded; the relay decrypts it
/// back to exactly these bytes) under a valid MAC, then `payload` as is.
pub fn craft_packet(
    relay_secret: &[u8; 32],
    eph: [u8; 32],
    routing: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    use ctr::cipher::{KeyIvInit, StreamCipher};

    let relay_public = DalekPublic::from(&DalekSecret::from(*relay_secret));
    let eph = DalekSecret::from(eph);
    let alpha = DalekPublic::from(&eph);
    let shared = eph.diffie_hellman(&relay_public);
    let mut keys = [0u8; 288];
    // Cannot fail: 288 bytes is far below HKDF-SHA256's limit.
    let _ = Hkdf::<Sha256>::new(Some(&[]), shared.as_bytes()).expand(EXPANDED_INFO, &mut keys);
    let mut beta = [0u8; BETA_LEN];
    let n = routing.len().min(BETA_LEN);
    beta[..n].copy_from_slice(&routing[..n]);
    let mut stream_key = [0u8; 16];
    stream_key.copy_from_slice(&keys[0..16]);
    Aes128Ctr::new(&stream_key.into(), &[0u8; 16].into()).apply_keystream(&mut beta);
    let mut gamma = [0u8; MAC_LEN];
    if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&keys[16..32]) {
        mac.update(&beta);
        gamma.copy_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
    }
    let mut p = Vec::with_capacity(ALPHA_LEN + MAC_LEN + BETA_LEN + payload.len());
    p.extend_from_slice(alpha.as_bytes());
    p.extend_from_slice(&gamma);
    p.extend_from_slice(&beta);
    p.extend_from_slice(payload);
    p
}
