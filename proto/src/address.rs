//! Identifiers: 32-byte keys written as hex, node ids, client ids and the address a client
//! publishes so that others can send to it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;
use crate::error::Defect;

/// 32 bytes, written as 64 lowercase hex digits in documents and configs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Key32(pub [u8; 32]);

impl Key32 {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Full hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parse 64 hex digits; `what` names the value in the error.
    pub fn parse_hex(s: &str, what: &'static str) -> Result<Self, Error> {
        let bytes = hex::decode(s.trim()).map_err(|e| Error::Malformed {
            what,
            detail: e.into(),
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|v: Vec<u8>| Error::Malformed {
            what,
            detail: Defect::Length {
                got: v.len(),
                expected: 32,
            },
        })?;
        Ok(Key32(arr))
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl fmt::Display for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Key32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Key32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Key32::parse_hex(&s, "32-byte hex key").map_err(serde::de::Error::custom)
    }
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Key32);

        impl $name {
            /// From raw bytes.
            pub const fn from_bytes(b: [u8; 32]) -> Self {
                $name(Key32(b))
            }
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0 .0
            }
            /// A short prefix for human-facing logs of public identifiers.
            pub fn short(&self) -> String {
                hex::encode(&self.0 .0[..6])
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Key32::parse_hex(s, $what).map($name)
            }
        }
    };
}

id_type!(
    /// A relay's identity: its Ed25519 public key. Also its Sphinx node address.
    NodeId,
    "node id"
);
id_type!(
    /// A client's identity on its gateway: BLAKE3 of the client's TLS certificate. Also the
    /// Sphinx destination address of packets for that client.
    ClientId,
    "client id"
);

id_type!(
    /// A recipient's public key for end-to-end encryption (X25519, see [`crate::seal`]):
    /// part of its address.
    RecipientKey,
    "recipient key"
);

impl ClientId {
    /// The destination of drop cover packets: the exit gateway discards what is addressed to
    /// it (no client has this id: a client id is a hash of its certificate).
    pub const DROP: ClientId = ClientId::from_bytes([0; 32]);

    /// Whether this is [`ClientId::DROP`].
    pub fn is_drop(&self) -> bool {
        *self == ClientId::DROP
    }
}

/// Where to send a message: the recipient's id, the key messages to it are sealed to, and
/// its gateway. Written `CLIENT.KEY@GATEWAY`, all three in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ClientAddress {
    /// The recipient.
    pub client: ClientId,
    /// Its key: only it can open what is sealed to it ([`crate::seal`]).
    pub key: RecipientKey,
    /// The gateway that delivers to it (the exit of every route to it).
    pub gateway: NodeId,
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.client, self.key, self.gateway)
    }
}

impl FromStr for ClientAddress {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (who, gateway) = s.trim().split_once('@').ok_or(Error::Malformed {
            what: "client address",
            detail: Defect::Other("expected CLIENT.KEY@GATEWAY"),
        })?;
        // The form before end-to-end encryption had no key: nothing could be sealed to it.
        let (client, key) = who.split_once('.').ok_or(Error::Malformed {
            what: "client address",
            detail: Defect::Other(
                "this address has no encryption key (the old CLIENT@GATEWAY form); addresses \
                 are now CLIENT.KEY@GATEWAY, as `lethe-client address` prints them",
            ),
        })?;
        Ok(ClientAddress {
            client: client.parse()?,
            key: key.parse()?,
            gateway: gateway.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trips_and_rejects_garbage() {
        let a = ClientAddress {
            client: ClientId::from_bytes([7; 32]),
            key: RecipientKey::from_bytes([8; 32]),
            gateway: NodeId::from_bytes([9; 32]),
        };
        let s = a.to_string();
        assert_eq!(s.len(), 64 + 1 + 64 + 1 + 64);
        assert_eq!(s.parse::<ClientAddress>().ok(), Some(a));
        assert!("abc".parse::<ClientAddress>().is_err());
        assert!(
            format!("{}.{}@zz", a.client, a.key)
                .parse::<ClientAddress>()
                .is_err()
        );
        assert!("00.00@00".parse::<ClientAddress>().is_err());
        // The old form (no key) is refused with a message naming the new one.
        let old = format!("{}@{}", a.client, a.gateway);
        let e = old.parse::<ClientAddress>().unwrap_err().to_string();
        assert!(e.contains("CLIENT.KEY@GATEWAY"), "{e}");
    }

    #[test]
    fn keys_serialize_as_hex() {
        let k = Key32([0xab; 32]);
        let json = serde_json::to_string(&k).unwrap_or_default();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        let back: Key32 = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, k);
        assert!(serde_json::from_str::<Key32>("\"abcd\"").is_err());
    }
}
