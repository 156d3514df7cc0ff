//! The core's error type. Every variant is a reason to drop one packet, frame or document;
//! the relay's metrics (`lethe-node`'s `metrics::Reason::from_error`) name them.

use std::time::Duration;

/// What went wrong with one packet, frame, address or document.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("packet is {got} bytes, expected exactly {expected}")]
    WrongPacketSize { got: usize, expected: usize },
    #[error("message of {got} bytes does not fit one packet (at most {max})")]
    MessageTooLong { got: usize, max: usize },
    #[error("route has {got} hops, expected 1 to {max}")]
    BadRouteLength { got: usize, max: usize },
    #[error("route has {hops} hops but {delays} delays")]
    DelayCountMismatch { hops: usize, delays: usize },
    #[error("sphinx header failed its integrity check")]
    BadMac,
    #[error("packet was seen before (replay)")]
    Replay,
    #[error("sphinx packet version {got} is not supported")]
    UnsupportedVersion { got: u32 },
    #[error("sphinx group element is of low order (all-zero shared secret)")]
    LowOrderPoint,
    #[error("unknown sphinx routing flag {got}")]
    BadRoutingFlag { got: u8 },
    #[error("requested delay {requested:?} exceeds the cap of {cap:?}")]
    DelayTooLong { requested: Duration, cap: Duration },
    #[error("final payload is malformed (tampered on the way?)")]
    BadPayload,
    #[error("sphinx: {0}")]
    Sphinx(String),
    #[error("link frame version {got} is not supported (expected {expected})")]
    FrameVersion { got: u8, expected: u8 },
    #[error("unknown link frame kind {got}")]
    FrameKind { got: u8 },
    #[error("link frame of kind {kind} has length {len}, allowed {min}..={max}")]
    FrameLength {
        kind: u8,
        len: usize,
        min: usize,
        max: usize,
    },
    #[error("mix queue is full ({capacity} packets)")]
    QueueFull { capacity: usize },
    #[error("batch queue is full ({capacity} packets)")]
    BatchFull { capacity: usize },
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("bad signature on {what}")]
    BadSignature { what: &'static str },
    #[error("topology document has {valid} valid authority signatures, needs {threshold}")]
    NotEnoughSignatures { valid: usize, threshold: usize },
    #[error("topology document expired at unix time {valid_until} (now {now})")]
    Expired { valid_until: u64, now: u64 },
    #[error("topology has no usable {what}")]
    NoRoute { what: String },
    #[error("node {id} is not in the topology")]
    UnknownNode { id: String },
    #[error("invalid configuration value for {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}
