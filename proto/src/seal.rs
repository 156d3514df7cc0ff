//! End-to-end encryption of a message to its recipient: HPKE (RFC 9180) in base mode with
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305, through the `hpke` crate.
//! A forward packet's message is sealed to the recipient's key before it enters the Sphinx
//! payload, so no relay, the recipient's gateway included, can read it.
//!
//! Every sealed message has the same length, [`SEALED_LEN`] (a whole packet's message), so
//! its length says nothing of what it holds:
//!
//! ```text
//! version u8 (=1) | enc (32: the sender's ephemeral X25519 key) | ciphertext + tag (16)
//! plaintext = length u16 | message | zero padding
//! ```
//!
//! The associated data is the version and the recipient's client id, so a gateway cannot
//! hand a sealed message to another of its clients. `enc` is fresh for every message: the
//! recipient recognises a sealed message it has already opened by it ([`Opened::tag`]).

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::rand_core::CryptoRng;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use crate::address::{ClientId, Key32, RecipientKey};
use crate::error::{Defect, Error};
use crate::packet::MAX_MESSAGE_LEN;

/// The sealed form's version byte.
pub const SEAL_VERSION: u8 = 1;
/// Every sealed message is this long: a whole packet's message.
pub const SEALED_LEN: usize = MAX_MESSAGE_LEN;
/// What sealing costs in bytes: version, `enc`, AEAD tag and the length prefix.
pub const SEAL_OVERHEAD: usize = 1 + ENC_LEN + TAG_LEN + 2;
/// The longest message that fits one sealed packet.
pub const MAX_SEALED_MESSAGE: usize = SEALED_LEN - SEAL_OVERHEAD;

const ENC_LEN: usize = 32;
const TAG_LEN: usize = 16;
const INFO: &[u8] = b"lethe end-to-end v1";

/// A recipient's secret key (zeroed when dropped).
pub struct RecipientSecret(Zeroizing<[u8; 32]>);

impl RecipientSecret {
    /// A fresh key pair.
    pub fn generate<R: CryptoRng>(rng: &mut R) -> RecipientSecret {
        let (sk, _) = X25519HkdfSha256::gen_keypair_with_rng(rng);
        let mut b = Zeroizing::new([0u8; 32]);
        b.copy_from_slice(&sk.to_bytes());
        RecipientSecret(b)
    }

    /// From its 32 bytes (as saved).
    pub fn from_bytes(b: [u8; 32]) -> RecipientSecret {
        RecipientSecret(Zeroizing::new(b))
    }

    /// Its 32 bytes, to save.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.0.clone()
    }

    /// The public key others seal to (part of the recipient's address).
    pub fn public(&self) -> Result<RecipientKey, Error> {
        let sk = self.hpke()?;
        let pk = X25519HkdfSha256::sk_to_pk(&sk);
        let mut b = [0u8; 32];
        b.copy_from_slice(&pk.to_bytes());
        Ok(RecipientKey(Key32(b)))
    }

    fn hpke(&self) -> Result<<X25519HkdfSha256 as Kem>::PrivateKey, Error> {
        <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(&self.0[..]).map_err(|_| {
            Error::Malformed {
                what: "recipient secret key",
                detail: Defect::Other("not an X25519 key"),
            }
        })
    }
}

fn aad(to: &ClientId) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = SEAL_VERSION;
    a[1..].copy_from_slice(to.as_bytes());
    a
}

/// Seal `msg` to the recipient `to` with key `key`: [`SEALED_LEN`] bytes.
pub fn seal<R: CryptoRng>(
    rng: &mut R,
    key: &RecipientKey,
    to: &ClientId,
    msg: &[u8],
) -> Result<Vec<u8>, Error> {
    if msg.len() > MAX_SEALED_MESSAGE {
        return Err(Error::MessageTooLong {
            got: msg.len(),
            max: MAX_SEALED_MESSAGE,
        });
    }
    let pk = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(key.as_bytes()).map_err(|_| {
        Error::Malformed {
            what: "recipient key",
            detail: Defect::Other("not an X25519 key"),
        }
    })?;
    let mut plain = Zeroizing::new(vec![0u8; MAX_SEALED_MESSAGE + 2]);
    plain[..2].copy_from_slice(&(msg.len() as u16).to_be_bytes());
    plain[2..2 + msg.len()].copy_from_slice(msg);
    let (enc, ct) =
        hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeS::Base,
            &pk,
            INFO,
            &plain,
            &aad(to),
            rng,
        )
        .map_err(|_| Error::Malformed {
            what: "recipient key",
            detail: Defect::Other("sealing to it failed"),
        })?;
    let mut out = Vec::with_capacity(SEALED_LEN);
    out.push(SEAL_VERSION);
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ct);
    debug_assert_eq!(out.len(), SEALED_LEN);
    Ok(out)
}

/// A message opened.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// The message.
    pub message: Vec<u8>,
    /// What identifies this sealed message (its `enc`): one seen before is a replay.
    pub tag: [u8; 32],
}

/// Open a sealed message addressed to client `me`, whose secret key is `secret`.
pub fn open(secret: &RecipientSecret, me: &ClientId, sealed: &[u8]) -> Result<Opened, Error> {
    let bad = |reason| Error::Malformed {
        what: "sealed message",
        detail: Defect::Other(reason),
    };
    if sealed.len() != SEALED_LEN {
        return Err(bad("wrong length"));
    }
    if sealed[0] != SEAL_VERSION {
        return Err(bad("unknown version"));
    }
    let enc_bytes = &sealed[1..1 + ENC_LEN];
    let enc = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(enc_bytes)
        .map_err(|_| bad("bad ephemeral key"))?;
    let sk = secret.hpke()?;
    let plain = Zeroizing::new(
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &enc,
            INFO,
            &sealed[1 + ENC_LEN..],
            &aad(me),
        )
        .map_err(|_| bad("does not open with this key (not for us, or tampered)"))?,
    );
    let len = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
    if len > MAX_SEALED_MESSAGE {
        return Err(bad("length out of range"));
    }
    let mut tag = [0u8; 32];
    tag.copy_from_slice(enc_bytes);
    Ok(Opened {
        message: plain[2..2 + len].to_vec(),
        tag,
    })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn only_the_recipient_opens_and_every_sealed_message_looks_alike() {
        let mut rng = StdRng::seed_from_u64(1);
        let alice = ClientId::from_bytes([1; 32]);
        let sk = RecipientSecret::generate(&mut rng);
        let pk = sk.public().unwrap();
        let short = seal(&mut rng, &pk, &alice, b"hi").unwrap();
        let long = seal(&mut rng, &pk, &alice, &[7u8; MAX_SEALED_MESSAGE]).unwrap();
        assert_eq!(short.len(), SEALED_LEN);
        assert_eq!(long.len(), SEALED_LEN, "the length does not show");
        assert!(!short.windows(2).any(|w| w == b"hi"));
        let o = open(&sk, &alice, &short).unwrap();
        assert_eq!(o.message, b"hi");
        assert_eq!(
            open(&sk, &alice, &long).unwrap().message,
            vec![7u8; MAX_SEALED_MESSAGE]
        );
        // Another key, another client id, a flipped bit: nothing opens.
        let other = RecipientSecret::generate(&mut rng);
        assert!(open(&other, &alice, &short).is_err());
        assert!(open(&sk, &ClientId::from_bytes([2; 32]), &short).is_err());
        let mut t = short.clone();
        t[100] ^= 1;
        assert!(open(&sk, &alice, &t).is_err());
        // Each sealing is fresh: the same message twice gives two tags.
        let again = seal(&mut rng, &pk, &alice, b"hi").unwrap();
        assert_ne!(open(&sk, &alice, &again).unwrap().tag, o.tag);
        // Too long to seal.
        assert!(matches!(
            seal(&mut rng, &pk, &alice, &[0u8; MAX_SEALED_MESSAGE + 1]),
            Err(Error::MessageTooLong { .. })
        ));
        // A saved secret gives the same public key.
        let back = RecipientSecret::from_bytes(*sk.to_bytes());
        assert_eq!(back.public().unwrap(), pk);
    }
}
