//! The link frame codec: how packets and control messages travel on long-lived QUIC streams.
//!
//! ```text
//! +---------+------+----------------+----------------+
//! | version | kind | length (u16 BE)| body (length)  |
//! +---------+------+----------------+----------------+
//!     1        1          2
//! ```
//! Version is [`FRAME_VERSION`]. A [`FrameKind::Packet`] body is exactly
//! [`PACKET_SIZE`](crate::packet::PACKET_SIZE) bytes; other kinds have their own bounds. A
//! frame that breaks these rules is an error and the stream carrying it is closed: after
//! garbage there is no way to find the next frame boundary.

use crate::Error;
use crate::packet::{PACKET_SIZE, PAYLOAD_SIZE};

/// The only frame version this code speaks.
pub const FRAME_VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 4;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A Sphinx packet, node to node or client to its gateway.
    Packet = 1,
    /// A delivered message, gateway to client.
    Message = 2,
    /// Client to gateway: deliver my messages on this connection (empty body).
    Subscribe = 3,
    /// A SURB reply, gateway to client: the SURB id ([`crate::surb::SurbId`], 16 bytes),
    /// then the still-sealed payload ([`PAYLOAD_SIZE`] bytes) for the client's `SurbKey`.
    Reply = 4,
    /// On a bidirectional stream, anyone to a relay: who are you? (empty body; a directory
    /// authority's liveness probe).
    Describe = 5,
    /// The answer to [`FrameKind::Describe`]: the relay's current signed descriptor (JSON of
    /// a `SignedDescriptor`), which proves the identity behind the pinned certificate.
    Descriptor = 6,
    /// Downstream cover, gateway to client ([`crate::downstream`]):
    /// [`DELIVERY_BODY_LEN`] bytes the client discards.
    Cover = 7,
}

/// Largest body of a [`FrameKind::Descriptor`] frame.
pub const MAX_DESCRIPTOR_FRAME: usize = 8 * 1024;

/// Body length of a [`FrameKind::Reply`] frame.
pub const REPLY_BODY_LEN: usize = 16 + PAYLOAD_SIZE;

/// Body length of every frame a gateway writes to a client: a [`FrameKind::Message`] is
/// padded with zeros to it (sealed messages are all [`crate::seal::SEALED_LEN`] bytes, so
/// the client knows where the message ends), a [`FrameKind::Reply`] has it, and a
/// [`FrameKind::Cover`] frame too, so that on the wire they differ in nothing.
pub const DELIVERY_BODY_LEN: usize = REPLY_BODY_LEN;

impl FrameKind {
    fn from_u8(b: u8) -> Result<Self, Error> {
        match b {
            1 => Ok(FrameKind::Packet),
            2 => Ok(FrameKind::Message),
            3 => Ok(FrameKind::Subscribe),
            4 => Ok(FrameKind::Reply),
            5 => Ok(FrameKind::Describe),
            6 => Ok(FrameKind::Descriptor),
            7 => Ok(FrameKind::Cover),
            got => Err(Error::FrameKind { got }),
        }
    }

    /// Allowed body lengths.
    pub fn length_bounds(self) -> (usize, usize) {
        match self {
            FrameKind::Packet => (PACKET_SIZE, PACKET_SIZE),
            FrameKind::Message => (0, DELIVERY_BODY_LEN),
            FrameKind::Subscribe => (0, 0),
            FrameKind::Reply => (REPLY_BODY_LEN, REPLY_BODY_LEN),
            FrameKind::Describe => (0, 0),
            FrameKind::Descriptor => (1, MAX_DESCRIPTOR_FRAME),
            FrameKind::Cover => (DELIVERY_BODY_LEN, DELIVERY_BODY_LEN),
        }
    }
}

/// A checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What follows.
    pub kind: FrameKind,
    /// Body length in bytes, within the kind's bounds.
    pub len: usize,
}

impl FrameHeader {
    /// Check the four header bytes.
    pub fn parse(b: [u8; HEADER_LEN]) -> Result<Self, Error> {
        if b[0] != FRAME_VERSION {
            return Err(Error::FrameVersion {
                got: b[0],
                expected: FRAME_VERSION,
            });
        }
        let kind = FrameKind::from_u8(b[1])?;
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        let (min, max) = kind.length_bounds();
        if len < min || len > max {
            return Err(Error::FrameLength {
                kind: b[1],
                len,
                min,
                max,
            });
        }
        Ok(FrameHeader { kind, len })
    }

    /// The four header bytes for a body of `len` bytes (checked against the kind's bounds).
    pub fn encode(kind: FrameKind, len: usize) -> Result<[u8; HEADER_LEN], Error> {
        let (min, max) = kind.length_bounds();
        if len < min || len > max {
            return Err(Error::FrameLength {
                kind: kind as u8,
                len,
                min,
                max,
            });
        }
        let l = u16::try_from(len).map_err(|_| Error::FrameLength {
            kind: kind as u8,
            len,
            min,
            max,
        })?;
        let [hi, lo] = l.to_be_bytes();
        Ok([FRAME_VERSION, kind as u8, hi, lo])
    }
}

/// A decoded frame borrowing its body.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What the body is.
    pub kind: FrameKind,
    /// The body.
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Append the encoded frame to `out`.
    pub fn encode(kind: FrameKind, body: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        out.extend_from_slice(&FrameHeader::encode(kind, body.len())?);
        out.extend_from_slice(body);
        Ok(())
    }

    /// Decode the first frame in `buf`: `Ok(None)` if more bytes are needed, otherwise the
    /// frame and how many bytes it used.
    pub fn decode(buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, Error> {
        let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = FrameHeader::parse(*h)?;
        let end = HEADER_LEN + header.len;
        match buf.get(HEADER_LEN..end) {
            Some(body) => Ok(Some((
                Frame {
                    kind: header.kind,
                    body,
                },
                end,
            ))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn round_trip_of_each_kind() {
        let mut out = Vec::new();
        let pkt = vec![7u8; PACKET_SIZE];
        Frame::encode(FrameKind::Packet, &pkt, &mut out).unwrap();
        Frame::encode(FrameKind::Message, b"hi", &mut out).unwrap();
        Frame::encode(FrameKind::Subscribe, b"", &mut out).unwrap();
        let reply = vec![9u8; REPLY_BODY_LEN];
        Frame::encode(FrameKind::Reply, &reply, &mut out).unwrap();
        let (f, n) = Frame::decode(&out).unwrap().unwrap();
        assert_eq!((f.kind, f.body), (FrameKind::Packet, &pkt[..]));
        let rest = &out[n..];
        let (f, m) = Frame::decode(rest).unwrap().unwrap();
        assert_eq!((f.kind, f.body), (FrameKind::Message, &b"hi"[..]));
        let (f, k) = Frame::decode(&rest[m..]).unwrap().unwrap();
        assert_eq!(f.kind, FrameKind::Subscribe);
        let (f, r) = Frame::decode(&rest[m + k..]).unwrap().unwrap();
        assert_eq!((f.kind, f.body), (FrameKind::Reply, &reply[..]));
        assert_eq!(m + k + r, rest.len());
        assert!(Frame::encode(FrameKind::Reply, b"short", &mut Vec::new()).is_err());
    }

    #[test]
    fn truncated_frames_ask_for_more() {
        let mut out = Vec::new();
        Frame::encode(FrameKind::Packet, &vec![1u8; PACKET_SIZE], &mut out).unwrap();
        for cut in [0, 1, 3, 4, 100, out.len() - 1] {
            assert_eq!(Frame::decode(&out[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(matches!(
            FrameHeader::parse([2, 1, 0, 0]),
            Err(Error::FrameVersion { got: 2, .. })
        ));
        assert!(matches!(
            FrameHeader::parse([1, 9, 0, 0]),
            Err(Error::FrameKind { got: 9 })
        ));
        // a packet frame of the wrong size
        let [hi, lo] = ((PACKET_SIZE - 1) as u16).to_be_bytes();
        assert!(matches!(
            FrameHeader::parse([1, 1, hi, lo]),
            Err(Error::FrameLength { .. })
        ));
        assert!(matches!(
            FrameHeader::parse([1, 3, 0, 1]),
            Err(Error::FrameLength { .. })
        ));
        assert!(Frame::encode(FrameKind::Packet, b"short", &mut Vec::new()).is_err());
        // Every frame a client receives has one size: cover too.
        assert!(Frame::encode(FrameKind::Cover, &[0; 10], &mut Vec::new()).is_err());
        assert!(Frame::encode(FrameKind::Cover, &[0; DELIVERY_BODY_LEN], &mut Vec::new()).is_ok());
        assert!(
            Frame::encode(
                FrameKind::Message,
                &vec![0; DELIVERY_BODY_LEN + 1],
                &mut Vec::new()
            )
            .is_err()
        );
    }

    #[test]
    fn random_bytes_never_panic_and_rarely_parse() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut parsed = 0;
        for _ in 0..10_000 {
            let mut buf = vec![0u8; (rng.next_u32() % 64) as usize];
            rng.fill_bytes(&mut buf);
            if let Ok(Some(_)) = Frame::decode(&buf) {
                parsed += 1;
            }
        }
        // a random header must hit version 1 (1/256) and a valid kind and length
        assert!(parsed < 20, "{parsed}");
    }
}
