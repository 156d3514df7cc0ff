//! The core's error type, [`Error`], and what a caller should do about one, [`ErrorKind`].
//! Most variants are a reason to drop one packet, frame or document; the relay's metrics
//! (`lethe-node`'s `metrics::Reason::from_error`) name them.

use std::time::Duration;

use crate::NodeId;
use crate::stream::StreamError;
use crate::surb::{SurbAction, SurbError};

/// What a caller should do about an [`Error`] ([`Error::kind`]).
///
/// The kind is the usual reading at the place the error is raised. A caller that knows
/// better overrides it: a key parsed from its own configuration file with
/// [`crate::Key32::parse_hex`] is a configuration error, though the same parser's error on a
/// document from the network is [`ErrorKind::Drop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bad input: a packet, frame, document, vote or upload from the network that is
    /// malformed, fails a check or breaks a rule (or a message or route handed in that can
    /// never be sent). Count it and drop it, answer "refused" where someone waits for an
    /// answer, and log it at debug level at most: anyone can send it. The same input fails
    /// the same way again.
    Drop,
    /// Input that was valid once but is outdated: older than the copy held, or past its
    /// lifetime (a replayed or reordered descriptor). Ignore it; the newer copy stands. Not a
    /// sign of a fault.
    Stale,
    /// Transient: a queue is full, the topology has no usable route or node yet, a document
    /// has expired. Drop this attempt and try again later (after the next topology fetch,
    /// or once the queue drains).
    Retry,
    /// A local configuration value or key is unusable. Tell the operator and do not start
    /// (or stop the feature); trying again will not help.
    Config,
}

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
    /// The X25519 backend refused a scalar derived from a packet or drawn at random (the
    /// relay's own key is [`Error::Invalid`] instead).
    #[error("the X25519 backend refused the {what}")]
    Backend { what: &'static str },
    /// `sphinx-packet` could not build, parse or use a SURB.
    #[error("cannot {action} a SURB: {source}")]
    Surb {
        action: SurbAction,
        #[source]
        source: SurbError,
    },
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
    /// Bytes or text that do not parse as `what`.
    #[error("malformed {what}: {detail}")]
    Malformed {
        what: &'static str,
        #[source]
        detail: Defect,
    },
    /// A document, vote or upload that parses but breaks a rule.
    #[error("{what} refused: {reason}")]
    Refused { what: &'static str, reason: Refusal },
    /// An upload that was valid once but is outdated.
    #[error("stale {what}: {why}")]
    Stale { what: &'static str, why: Staleness },
    #[error("bad signature on {what}")]
    BadSignature { what: &'static str },
    #[error("topology document has {valid} valid authority signatures, needs {threshold}")]
    NotEnoughSignatures { valid: usize, threshold: usize },
    #[error("topology document expired at unix time {valid_until} (now {now})")]
    Expired { valid_until: u64, now: u64 },
    #[error("topology has no usable {what}")]
    NoRoute { what: Missing },
    #[error("node {} is not in the topology", .id.short())]
    UnknownNode { id: NodeId },
    /// A local configuration value (or the relay's own key) that cannot be used.
    #[error("invalid configuration value for {field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: Constraint,
    },
}

impl Error {
    /// What the caller should do about this error (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::WrongPacketSize { .. }
            | Error::MessageTooLong { .. }
            | Error::BadRouteLength { .. }
            | Error::DelayCountMismatch { .. }
            | Error::BadMac
            | Error::Replay
            | Error::UnsupportedVersion { .. }
            | Error::LowOrderPoint
            | Error::BadRoutingFlag { .. }
            | Error::DelayTooLong { .. }
            | Error::BadPayload
            | Error::Backend { .. }
            | Error::Surb { .. }
            | Error::FrameVersion { .. }
            | Error::FrameKind { .. }
            | Error::FrameLength { .. }
            | Error::Malformed { .. }
            | Error::Refused { .. }
            | Error::BadSignature { .. }
            | Error::NotEnoughSignatures { .. } => ErrorKind::Drop,
            Error::Stale { .. } => ErrorKind::Stale,
            Error::QueueFull { .. }
            | Error::BatchFull { .. }
            | Error::Expired { .. }
            | Error::NoRoute { .. }
            | Error::UnknownNode { .. } => ErrorKind::Retry,
            Error::Invalid { .. } => ErrorKind::Config,
        }
    }
}

/// Why bytes or text do not parse ([`Error::Malformed`]).
#[derive(Debug, thiserror::Error)]
pub enum Defect {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Hex(#[from] hex::FromHexError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("{got} bytes, expected {expected}")]
    Length { got: usize, expected: usize },
    #[error("{got} bytes, at most {max}")]
    TooLong { got: usize, max: usize },
    /// Any other defect, said in words.
    #[error("{0}")]
    Other(&'static str),
}

/// The rule a document, vote or upload breaks ([`Error::Refused`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("sphinx_keys: needs 1 to {max} keys for distinct epochs")]
    SphinxKeys { max: usize },
    #[error("layer: a gateway has no layer")]
    GatewayLayer,
    #[error("layer: a mix needs a layer from 1 to {max}")]
    MixLayer { max: u8 },
    #[error("epoch_secs must be at least 1")]
    EpochSecs,
    #[error("max_delay_ms must be at least mean_delay_ms")]
    MaxDelay,
    #[error("node {} listed twice", .0.short())]
    ListedTwice(NodeId),
    #[error("node {} reuses another node's certificate", .0.short())]
    SharedCertificate(NodeId),
    #[error("published in the future (unix time {published}, now {now})")]
    InFuture { published: u64, now: u64 },
    #[error("conflicts with a different descriptor of the same time")]
    Conflict,
    #[error("directory is full ({max} relays)")]
    DirectoryFull { max: usize },
    #[error("certificate already used by another node")]
    CertificateTaken,
    #[error("signed by an authority not configured as a peer")]
    NotAPeer,
    #[error("two descriptors of one relay")]
    TwoDescriptors,
    #[error("for another network")]
    OtherNetwork,
    #[error("for round {round}, not the current round {current} or the one before")]
    NotCurrentRound { round: u64, current: u64 },
    #[error(
        "in directory format {got}, newer than the {supported} this software reads: upgrade it"
    )]
    NewerFormat { got: u32, supported: u32 },
}

/// Why an upload is outdated ([`Error::Stale`]); times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Staleness {
    #[error("published at {published}, older than the one held (published at {held})")]
    OlderThanHeld { published: u64, held: u64 },
    #[error("published at {published}, more than {lifetime_secs} s before now ({now})")]
    PastLifetime {
        published: u64,
        lifetime_secs: u64,
        now: u64,
    },
}

/// What the topology lacks for a route ([`Error::NoRoute`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("gateway")]
    Gateway,
    #[error("gateway with a key for epoch {epoch}")]
    GatewayKey { epoch: u64 },
    /// The caller's entry or exit gateway (`end`), or its key for `epoch`.
    #[error("{end} gateway {} with a key for epoch {epoch}", .id.short())]
    EndGateway {
        end: &'static str,
        id: NodeId,
        epoch: u64,
    },
    #[error("mix in layer {layer} with a key for epoch {epoch}")]
    Mix { layer: u8, epoch: u64 },
    #[error("loop: only mixes send mix loops")]
    NotAMix,
    #[error("loop: own key for epoch {epoch}")]
    OwnKey { epoch: u64 },
}

/// What is wrong with a configuration value ([`Error::Invalid`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Constraint {
    /// The rule the value breaks, in words.
    #[error("{0}")]
    Rule(&'static str),
    #[error("{got} is less than the {min} needed")]
    AtLeast { got: u64, min: u64 },
    #[error("{0} is not a finite rate >= 0")]
    NotARate(f64),
    #[error("refused by the X25519 backend")]
    Backend,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_says_what_to_do() {
        let key = crate::Key32::parse_hex("zz", "key").unwrap_err();
        assert!(matches!(
            key,
            Error::Malformed {
                detail: Defect::Hex(_),
                ..
            }
        ));
        let cases = [
            (Error::BadMac, ErrorKind::Drop),
            (Error::Replay, ErrorKind::Drop),
            (key, ErrorKind::Drop),
            (
                Error::Refused {
                    what: "vote",
                    reason: Refusal::NotAPeer,
                },
                ErrorKind::Drop,
            ),
            (
                Error::Stale {
                    what: "descriptor",
                    why: Staleness::OlderThanHeld {
                        published: 1,
                        held: 2,
                    },
                },
                ErrorKind::Stale,
            ),
            (Error::QueueFull { capacity: 1 }, ErrorKind::Retry),
            (
                Error::Expired {
                    valid_until: 1,
                    now: 2,
                },
                ErrorKind::Retry,
            ),
            (
                Error::NoRoute {
                    what: Missing::Gateway,
                },
                ErrorKind::Retry,
            ),
            (
                Error::Invalid {
                    field: "batch.capacity",
                    reason: Constraint::AtLeast { got: 1, min: 2 },
                },
                ErrorKind::Config,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
        }
    }

    #[test]
    fn messages_carry_their_detail_and_source() {
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        let e = Error::Malformed {
            what: "vote",
            detail: json.into(),
        };
        assert!(
            e.to_string().starts_with("malformed vote: expected value"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e = Error::NoRoute {
            what: Missing::Mix { layer: 2, epoch: 7 },
        };
        assert_eq!(
            e.to_string(),
            "topology has no usable mix in layer 2 with a key for epoch 7"
        );
    }
}
