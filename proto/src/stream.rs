//! Reliable, ordered streams over the mixnet, sans-IO (the shape of quinn-proto: the driver
//! passes `now` in, asks [`Sender::poll_transmit`] what to send and [`Sender::poll_timeout`]
//! when to wake up; nothing here reads a clock or does I/O).
//!
//! A stream is a sequence of [`Chunk`]s, each numbered and each fitting one packet's message
//! ([`crate::packet::MAX_MESSAGE_LEN`]): `Open` (the client's, with the SOCKS target; the
//! exit's, without, meaning "connected"), `Data`, then `Fin` or `Reset` (with a SOCKS reply
//! code). The [`Receiver`] delivers them in order exactly once and answers with an
//! [`AckFrame`]: everything below a cumulative point, plus selective ranges above it, so one
//! ack acknowledges many chunks, each individually. The [`Sender`] retransmits a chunk when
//! its timer (RFC 6298 style: SRTT, RTTVAR, exponential backoff, capped) expires, keeps at
//! most `window` chunks in flight, and ends with a [`Verdict`]: every chunk acknowledged, or
//! the stream failed after `max_retries` retransmissions of one chunk. Nothing is lost
//! silently.
//!
//! # Wire format of a chunk (all integers big-endian)
//!
//! ```text
//! version u8 (=1) | kind u8 | flags u8 | stream u64 | seq u32 | surbs u8
//! [ack, if flags & 1: cumulative u32 | n u8 | n x (first u32, last u32)]
//! [body: Open with target (flags & 2): SOCKS ATYP ADDR PORT
//!        Data: len u16, bytes
//!        Reset: SOCKS REP code u8]
//! surbs x SURB_SIZE bytes
//! ```
//!
//! Kinds: 0 ack only (no sequence number of its own), 1 open, 2 data, 3 fin, 4 reset. The
//! SURBs are opaque here: the client attaches some to its chunks so that the exit can answer
//! ([`crate::surb::Surb::from_bytes`] reads them). [`max_data_len`] says how much data fits
//! beside a given number of SURBs.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::Timestamp;
use crate::packet::MAX_MESSAGE_LEN;
use crate::socks::{Parsed, Reply, SocksError, TargetAddr};
use crate::surb::SURB_SIZE;

mod connection;
pub use connection::{
    ABORT_COPIES, ABORT_REPEAT, Connection, ConnectionConfig, End, FAIL_GRACE, Outbox, STALL_GRACE,
};

/// The chunk format's version byte.
pub const CHUNK_VERSION: u8 = 1;
/// Fixed part of every chunk.
pub const CHUNK_HEADER_LEN: usize = 16;
/// Most selective ranges in one [`AckFrame`].
pub const MAX_ACK_RANGES: usize = 16;
/// Largest encoded ack block.
pub const MAX_ACK_LEN: usize = 4 + 1 + 8 * MAX_ACK_RANGES;
/// Most SURBs one chunk can carry (with no data and no ack).
pub const MAX_SURBS: usize = (MAX_MESSAGE_LEN - CHUNK_HEADER_LEN) / SURB_SIZE;

const FLAG_ACK: u8 = 1;
const PARKED: Timestamp = Timestamp::from_nanos(u64::MAX);
const FLAG_TARGET: u8 = 2;

/// Data bytes that fit in one data chunk that carries `surbs` SURBs and a full-size ack
/// (zero if the SURBs leave no room).
pub const fn max_data_len(surbs: usize) -> usize {
    MAX_MESSAGE_LEN
        .saturating_sub(CHUNK_HEADER_LEN + MAX_ACK_LEN + 2)
        .saturating_sub(surbs * SURB_SIZE)
}

/// Data bytes that fit in one data chunk sealed to its recipient ([`crate::seal`]: the
/// proxy's chunks to the exit) that carries `surbs` SURBs and a full-size ack.
pub const fn max_sealed_data_len(surbs: usize) -> usize {
    max_data_len(surbs).saturating_sub(crate::seal::SEAL_OVERHEAD)
}

/// Identifies a stream between one client and one exit (chosen at random by the client).
pub type StreamId = u64;

/// A malformed chunk, or a misuse of a stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("chunk truncated: needs {need} bytes, has {got}")]
    Truncated { need: usize, got: usize },
    #[error("chunk version {got} is not supported (expected {CHUNK_VERSION})")]
    Version { got: u8 },
    #[error("unknown chunk kind {got}")]
    Kind { got: u8 },
    #[error("unknown chunk flags {got:#04x} for kind {kind}")]
    Flags { kind: u8, got: u8 },
    #[error("ack has {got} ranges, at most {max}")]
    TooManyRanges { got: usize, max: usize },
    #[error("ack range {first}..={last} is empty or below the cumulative point {cumulative}")]
    BadRange {
        first: u32,
        last: u32,
        cumulative: u32,
    },
    #[error("open target: {0}")]
    Target(#[from] SocksError),
    #[error("reset code {got:#04x} is not a SOCKS reply")]
    ReplyCode { got: u8 },
    #[error("chunk has {got} trailing bytes")]
    Trailing { got: usize },
    #[error("chunk of {got} bytes exceeds the message size {max}")]
    TooLong { got: usize, max: usize },
    #[error("the stream is already finished or reset")]
    Closed,
    #[error("invalid stream configuration: {reason}")]
    Config { reason: &'static str },
}

/// What a numbered chunk carries.
#[derive(Clone, PartialEq, Eq)]
pub enum Body {
    /// Open the stream: the client's names the target, the exit's (no target) confirms the
    /// connection.
    Open(Option<TargetAddr>),
    /// Stream bytes.
    Data(Vec<u8>),
    /// The sender's half of the stream ended normally.
    Fin,
    /// The stream ended with an error, as a SOCKS reply code.
    Reset(Reply),
}

impl Body {
    fn kind(&self) -> u8 {
        match self {
            Body::Open(_) => 1,
            Body::Data(_) => 2,
            Body::Fin => 3,
            Body::Reset(_) => 4,
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither stream bytes nor the target are printed.
        match self {
            Body::Open(t) => write!(f, "Open(target: {})", t.is_some()),
            Body::Data(d) => write!(f, "Data({} bytes)", d.len()),
            Body::Fin => f.write_str("Fin"),
            Body::Reset(r) => write!(f, "Reset({r:?})"),
        }
    }
}

/// Acknowledgement: every sequence number below `cumulative`, and each inclusive range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckFrame {
    /// All chunks with `seq < cumulative` were received.
    pub cumulative: u32,
    /// Inclusive ranges above `cumulative` also received (at most [`MAX_ACK_RANGES`]).
    pub ranges: Vec<(u32, u32)>,
}

impl AckFrame {
    /// Whether `seq` is acknowledged.
    pub fn covers(&self, seq: u32) -> bool {
        seq < self.cumulative || self.ranges.iter().any(|&(a, b)| a <= seq && seq <= b)
    }

    fn encoded_len(&self) -> usize {
        5 + 8 * self.ranges.len()
    }
}

/// One unit on the wire: a numbered body, an ack, or both, plus attached SURBs.
#[derive(Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The stream.
    pub stream: StreamId,
    /// Sequence number of `body` (ignored, zero, when there is none).
    pub seq: u32,
    /// The numbered content; `None` for an ack-only chunk.
    pub body: Option<Body>,
    /// An ack for the opposite direction, piggy-backed.
    pub ack: Option<AckFrame>,
    /// Opaque SURBs of [`SURB_SIZE`] bytes each.
    pub surbs: Vec<Vec<u8>>,
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("stream", &self.stream)
            .field("seq", &self.seq)
            .field("body", &self.body)
            .field("ack", &self.ack)
            .field("surbs", &self.surbs.len())
            .finish()
    }
}

impl Chunk {
    /// An ack-only chunk.
    pub fn ack_only(stream: StreamId, ack: AckFrame) -> Chunk {
        Chunk {
            stream,
            seq: 0,
            body: None,
            ack: Some(ack),
            surbs: Vec::new(),
        }
    }

    /// The encoded size.
    pub fn encoded_len(&self) -> usize {
        CHUNK_HEADER_LEN
            + self.ack.as_ref().map_or(0, AckFrame::encoded_len)
            + match &self.body {
                None | Some(Body::Fin) | Some(Body::Open(None)) => 0,
                Some(Body::Open(Some(t))) => t.encoded_len(),
                Some(Body::Data(d)) => 2 + d.len(),
                Some(Body::Reset(_)) => 1,
            }
            + SURB_SIZE * self.surbs.len()
    }

    /// Encode; fails if the chunk would not fit one packet's message, has neither body nor
    /// ack, or has more than [`MAX_ACK_RANGES`] ranges or a SURB of the wrong size.
    pub fn encode(&self) -> Result<Vec<u8>, StreamError> {
        // An ack-only chunk without an ack would not decode: refuse it here too.
        if self.body.is_none() && self.ack.is_none() {
            return Err(StreamError::Flags { kind: 0, got: 0 });
        }
        let len = self.encoded_len();
        if len > MAX_MESSAGE_LEN {
            return Err(StreamError::TooLong {
                got: len,
                max: MAX_MESSAGE_LEN,
            });
        }
        let mut flags = 0;
        if self.ack.is_some() {
            flags |= FLAG_ACK;
        }
        if matches!(self.body, Some(Body::Open(Some(_)))) {
            flags |= FLAG_TARGET;
        }
        let mut out = Vec::with_capacity(len);
        out.push(CHUNK_VERSION);
        out.push(self.body.as_ref().map_or(0, Body::kind));
        out.push(flags);
        out.extend_from_slice(&self.stream.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        // fits: SURB_SIZE * surbs <= len <= MAX_MESSAGE_LEN, so surbs < 256
        out.push(u8::try_from(self.surbs.len()).unwrap_or(u8::MAX));
        if let Some(ack) = &self.ack {
            if ack.ranges.len() > MAX_ACK_RANGES {
                return Err(StreamError::TooManyRanges {
                    got: ack.ranges.len(),
                    max: MAX_ACK_RANGES,
                });
            }
            out.extend_from_slice(&ack.cumulative.to_be_bytes());
            out.push(u8::try_from(ack.ranges.len()).unwrap_or(u8::MAX));
            for &(a, b) in &ack.ranges {
                out.extend_from_slice(&a.to_be_bytes());
                out.extend_from_slice(&b.to_be_bytes());
            }
        }
        match &self.body {
            None | Some(Body::Fin) | Some(Body::Open(None)) => {}
            Some(Body::Open(Some(t))) => t.encode(&mut out),
            Some(Body::Data(d)) => {
                // fits: d.len() < MAX_MESSAGE_LEN < 65536
                out.extend_from_slice(&u16::try_from(d.len()).unwrap_or(u16::MAX).to_be_bytes());
                out.extend_from_slice(d);
            }
            Some(Body::Reset(r)) => out.push(r.code()),
        }
        for s in &self.surbs {
            if s.len() != SURB_SIZE {
                return Err(StreamError::Truncated {
                    need: SURB_SIZE,
                    got: s.len(),
                });
            }
            out.extend_from_slice(s);
        }
        Ok(out)
    }

    /// Decode exactly one chunk from a message; trailing bytes are an error.
    pub fn decode(buf: &[u8]) -> Result<Chunk, StreamError> {
        let mut r = ReadBuf { buf, pos: 0 };
        let version = r.u8()?;
        if version != CHUNK_VERSION {
            return Err(StreamError::Version { got: version });
        }
        let kind = r.u8()?;
        let flags = r.u8()?;
        let allowed = if kind == 1 {
            FLAG_ACK | FLAG_TARGET
        } else {
            FLAG_ACK
        };
        if kind > 4 {
            return Err(StreamError::Kind { got: kind });
        }
        if flags & !allowed != 0 || (kind == 0 && flags & FLAG_ACK == 0) {
            return Err(StreamError::Flags { kind, got: flags });
        }
        let stream = u64::from_be_bytes(r.array()?);
        let seq = u32::from_be_bytes(r.array()?);
        let nsurbs = usize::from(r.u8()?);
        let ack = if flags & FLAG_ACK != 0 {
            let cumulative = u32::from_be_bytes(r.array()?);
            let n = usize::from(r.u8()?);
            if n > MAX_ACK_RANGES {
                return Err(StreamError::TooManyRanges {
                    got: n,
                    max: MAX_ACK_RANGES,
                });
            }
            let mut ranges = Vec::with_capacity(n);
            for _ in 0..n {
                let first = u32::from_be_bytes(r.array()?);
                let last = u32::from_be_bytes(r.array()?);
                if first > last || first <= cumulative {
                    return Err(StreamError::BadRange {
                        first,
                        last,
                        cumulative,
                    });
                }
                ranges.push((first, last));
            }
            Some(AckFrame { cumulative, ranges })
        } else {
            None
        };
        let body = match kind {
            0 => None,
            1 if flags & FLAG_TARGET != 0 => match TargetAddr::decode(r.rest())? {
                Parsed::Complete { value, consumed } => {
                    r.pos += consumed;
                    Some(Body::Open(Some(value)))
                }
                Parsed::NeedMore => {
                    return Err(StreamError::Truncated {
                        need: buf.len() + 1,
                        got: buf.len(),
                    });
                }
            },
            1 => Some(Body::Open(None)),
            2 => {
                let n = usize::from(u16::from_be_bytes(r.array()?));
                Some(Body::Data(r.take(n)?.to_vec()))
            }
            3 => Some(Body::Fin),
            _ => {
                let code = r.u8()?;
                Some(Body::Reset(
                    Reply::from_code(code).ok_or(StreamError::ReplyCode { got: code })?,
                ))
            }
        };
        let mut surbs = Vec::with_capacity(nsurbs.min(MAX_SURBS));
        for _ in 0..nsurbs {
            surbs.push(r.take(SURB_SIZE)?.to_vec());
        }
        if r.pos != buf.len() {
            return Err(StreamError::Trailing {
                got: buf.len() - r.pos,
            });
        }
        Ok(Chunk {
            stream,
            seq,
            body,
            ack,
            surbs,
        })
    }
}

struct ReadBuf<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ReadBuf<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StreamError> {
        let end = self.pos.saturating_add(n);
        let s = self.buf.get(self.pos..end).ok_or(StreamError::Truncated {
            need: end,
            got: self.buf.len(),
        })?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, StreamError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StreamError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

/// Tuning of a [`Sender`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderConfig {
    /// Most chunks sent and not yet acknowledged.
    pub window: usize,
    /// Retransmissions of one chunk before the stream is declared failed.
    pub max_retries: u32,
    /// Retransmission timeout before any RTT sample.
    pub initial_rto: Duration,
    /// Lower bound of the retransmission timeout.
    pub min_rto: Duration,
    /// Upper bound of the retransmission timeout (backoff stops here).
    pub max_rto: Duration,
    /// Data bytes per chunk (see [`max_data_len`]).
    pub max_data: usize,
    /// Slow start: chunks in flight before the first ack (the allowance then grows by one
    /// for each chunk acknowledged, up to `window`); `None` sends the whole window at once.
    /// A peer that does not answer (offline: its gateway keeps what arrives in a bounded
    /// mailbox) then gets only this many chunks and their retransmissions.
    pub initial_window: Option<usize>,
}

impl Default for SenderConfig {
    /// Values for a five-hop route with mixing delays of tens of milliseconds per hop.
    fn default() -> Self {
        SenderConfig {
            window: 32,
            max_retries: 6,
            initial_rto: Duration::from_secs(3),
            min_rto: Duration::from_millis(500),
            max_rto: Duration::from_secs(60),
            max_data: max_data_len(0),
            initial_window: None,
        }
    }
}

impl SenderConfig {
    fn validate(&self) -> Result<(), StreamError> {
        let reason = if self.window == 0 {
            "window must be at least 1"
        } else if self
            .initial_window
            .is_some_and(|w| w == 0 || w > self.window)
        {
            "initial_window must be 1..=window"
        } else if self.max_data == 0 || self.max_data > max_data_len(0) {
            "max_data must be 1..=max_data_len(0)"
        } else if self.min_rto.is_zero() || self.min_rto > self.max_rto {
            "need 0 < min_rto <= max_rto"
        } else {
            return Ok(());
        };
        Err(StreamError::Config { reason })
    }
}

/// The outcome of a stream's sending half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every chunk, up to and including `Fin` or `Reset`, was acknowledged.
    Delivered,
    /// Chunk `seq` was sent `1 + retries` times without an acknowledgement.
    Failed { seq: u32, retries: u32 },
}

/// RFC 6298 round-trip estimate.
#[derive(Clone, Debug)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min: Duration,
    max: Duration,
}

impl RttEstimator {
    fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial.clamp(min, max),
            min,
            max,
        }
    }

    /// Smoothed round-trip time, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Round-trip variation.
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// The current retransmission timeout (backoff included).
    pub fn rto(&self) -> Duration {
        self.rto
    }

    fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + r) / 8);
            }
        }
        let s = self.srtt.unwrap_or(r);
        self.rto = (s + self.rttvar * 4).clamp(self.min, self.max);
    }

    fn back_off(&mut self) {
        self.rto = self.rto.saturating_mul(2).min(self.max);
    }
}

struct InFlight {
    body: Body,
    last_sent: Timestamp,
    deadline: Timestamp,
    retries: u32,
    /// The timer was armed while the timeout was backed off.
    backed_off: bool,
}

/// The sending half of a stream.
pub struct Sender {
    stream: StreamId,
    config: SenderConfig,
    next_seq: u32,
    open: Option<Option<TargetAddr>>,
    unsent: VecDeque<u8>,
    close: Option<Body>,
    closed: bool,
    in_flight: BTreeMap<u32, InFlight>,
    retransmit: VecDeque<u32>,
    rtt: RttEstimator,
    last_backoff: Option<Timestamp>,
    failed: Option<Verdict>,
    /// Data bytes the peer acknowledged so far.
    acked_bytes: u64,
    /// Chunks allowed in flight now (slow start up to the window).
    allowance: usize,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("stream", &self.stream)
            .field("next_seq", &self.next_seq)
            .field("unsent", &self.unsent.len())
            .field("in_flight", &self.in_flight.len())
            .field("rto", &self.rtt.rto)
            .finish()
    }
}

impl Sender {
    /// A sender for `stream`.
    pub fn new(stream: StreamId, config: SenderConfig) -> Result<Sender, StreamError> {
        config.validate()?;
        Ok(Sender {
            stream,
            next_seq: 0,
            open: None,
            unsent: VecDeque::new(),
            close: None,
            closed: false,
            in_flight: BTreeMap::new(),
            retransmit: VecDeque::new(),
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            last_backoff: None,
            failed: None,
            acked_bytes: 0,
            allowance: config.initial_window.unwrap_or(config.window),
            config,
        })
    }

    /// Queue the `Open` chunk (before any data): with the target on the client, without on
    /// the exit once its connection is up.
    pub fn open(&mut self, target: Option<TargetAddr>) -> Result<(), StreamError> {
        if self.closed || self.open.is_some() || self.next_seq > 0 || !self.unsent.is_empty() {
            return Err(StreamError::Closed);
        }
        self.open = Some(target);
        Ok(())
    }

    /// Queue stream bytes. Bounding the buffer is the driver's job: stop reading the socket
    /// while [`Sender::buffered`] is high.
    pub fn push(&mut self, data: &[u8]) -> Result<(), StreamError> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        self.unsent.extend(data);
        Ok(())
    }

    /// End the stream normally after the queued data.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        self.closed = true;
        self.close = Some(Body::Fin);
        Ok(())
    }

    /// Abort the stream with a SOCKS reply code; unsent data is dropped.
    pub fn reset(&mut self, code: Reply) -> Result<(), StreamError> {
        if self.closed {
            return Err(StreamError::Closed);
        }
        self.closed = true;
        self.unsent.clear();
        self.close = Some(Body::Reset(code));
        Ok(())
    }

    /// Bytes queued and not yet sent once.
    pub fn buffered(&self) -> usize {
        self.unsent.len()
    }

    /// Chunks sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Data bytes the peer has acknowledged (a sender's progress).
    pub fn acked_bytes(&self) -> u64 {
        self.acked_bytes
    }

    /// The round-trip estimate.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// The outcome, once there is one.
    pub fn verdict(&self) -> Option<Verdict> {
        if self.failed.is_some() {
            return self.failed;
        }
        let done = self.closed
            && self.close.is_none()
            && self.in_flight.is_empty()
            && self.unsent.is_empty();
        done.then_some(Verdict::Delivered)
    }

    /// When the driver must call [`Sender::poll_transmit`] (or [`Sender::handle_timeout`])
    /// next even if nothing arrives; `None` when no timer runs.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.failed.is_some() {
            return None;
        }
        // Chunks parked for retransmission have no timer: `poll_transmit` sends them.
        self.in_flight
            .values()
            .map(|f| f.deadline)
            .filter(|&d| d != PARKED)
            .min()
    }

    /// Expire retransmission timers due at `now`: the chunks are queued for retransmission,
    /// or the stream fails when one has used its retries.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.failed.is_some() {
            return;
        }
        let mut backed_off = false;
        for (&seq, f) in self.in_flight.iter_mut() {
            if f.deadline > now || f.deadline == PARKED {
                continue;
            }
            if f.retries >= self.config.max_retries {
                self.failed = Some(Verdict::Failed {
                    seq,
                    retries: f.retries,
                });
                self.retransmit.clear();
                return;
            }
            // Back off once per flight: only for a chunk sent since the last backoff.
            if !backed_off && self.last_backoff.is_none_or(|b| f.last_sent >= b) {
                backed_off = true;
            }
            // Parked until retransmitted.
            f.deadline = PARKED;
            self.retransmit.push_back(seq);
        }
        if backed_off {
            self.rtt.back_off();
            self.last_backoff = Some(now);
        }
    }

    /// The next chunk to send at `now`: a retransmission first, then new content while the
    /// window allows. Attach an ack and SURBs to it as needed before encoding.
    pub fn poll_transmit(&mut self, now: Timestamp) -> Option<Chunk> {
        self.handle_timeout(now);
        if self.failed.is_some() {
            return None;
        }
        let deadline = now + self.rtt.rto;
        while let Some(seq) = self.retransmit.pop_front() {
            if let Some(f) = self.in_flight.get_mut(&seq) {
                f.retries += 1;
                f.last_sent = now;
                f.deadline = deadline;
                f.backed_off = self.last_backoff.is_some();
                let body = f.body.clone();
                return Some(self.chunk(seq, body));
            }
        }
        if self.in_flight.len() >= self.allowance {
            return None;
        }
        let body = if let Some(target) = self.open.take() {
            Body::Open(target)
        } else if !self.unsent.is_empty() {
            let n = self.unsent.len().min(self.config.max_data);
            Body::Data(self.unsent.drain(..n).collect())
        } else {
            self.close.take()?
        };
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        self.in_flight.insert(
            seq,
            InFlight {
                body: body.clone(),
                last_sent: now,
                deadline,
                retries: 0,
                backed_off: self.last_backoff.is_some(),
            },
        );
        Some(self.chunk(seq, body))
    }

    /// A `Reset` to tell the peer that this half gave up (after [`Verdict::Failed`]): the
    /// next sequence number, never retransmitted nor acknowledged. The peer's [`Receiver`]
    /// takes a reset at once, past any hole.
    pub fn abort_chunk(&self, code: Reply) -> Chunk {
        self.chunk(self.next_seq, Body::Reset(code))
    }

    fn chunk(&self, seq: u32, body: Body) -> Chunk {
        Chunk {
            stream: self.stream,
            seq,
            body: Some(body),
            ack: None,
            surbs: Vec::new(),
        }
    }

    /// An acknowledgement arrived: every covered chunk leaves the window. Chunks sent once
    /// give an RTT sample (Karn: never a retransmitted one).
    pub fn on_ack(&mut self, now: Timestamp, ack: &AckFrame) {
        let mut acked: Vec<u32> = self
            .in_flight
            .range(..ack.cumulative)
            .map(|(&s, _)| s)
            .collect();
        for &(a, b) in ack.ranges.iter().take(MAX_ACK_RANGES) {
            if a <= b {
                acked.extend(self.in_flight.range(a..=b).map(|(&s, _)| s));
            }
        }
        let mut sample = None;
        // The latest send time among the acknowledged chunks sent once.
        let mut proven: Option<Timestamp> = None;
        for seq in acked {
            let Some(f) = self.in_flight.remove(&seq) else {
                continue;
            };
            self.allowance = (self.allowance + 1).min(self.config.window);
            if let Body::Data(d) = &f.body {
                self.acked_bytes += d.len() as u64;
            }
            if f.retries == 0 {
                let r = now - f.last_sent;
                sample = Some(sample.map_or(r, |s: Duration| s.min(r)));
                proven = Some(proven.map_or(f.last_sent, |p: Timestamp| p.max(f.last_sent)));
            }
        }
        if let Some(r) = sample {
            self.rtt.sample(r);
            self.last_backoff = None;
        }
        // A chunk sent once arrived: the path works. Timers armed with a backed-off timeout
        // (after losses) would hold the stream (the receiver delivers in order) for many
        // seconds: re-arm those of older chunks one current timeout after their last send,
        // as a fresh chunk's would be. Other timers stay: reordering is normal in a mixnet.
        if let Some(p) = proven {
            let rto = self.rtt.rto;
            for f in self.in_flight.values_mut() {
                if f.deadline != PARKED && f.backed_off && f.last_sent < p {
                    f.backed_off = false;
                    f.deadline = f.deadline.min(f.last_sent + rto);
                }
            }
        }
    }
}

/// What the receiving half hands to the application, in order.
#[derive(Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The peer opened the stream (client's target) or confirmed it (exit, no target).
    Opened(Option<TargetAddr>),
    /// Stream bytes.
    Data(Vec<u8>),
    /// The peer finished normally.
    Finished,
    /// The peer reset the stream with this SOCKS reply code.
    Reset(Reply),
}

impl fmt::Debug for StreamEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEvent::Opened(t) => write!(f, "Opened(target: {})", t.is_some()),
            StreamEvent::Data(d) => write!(f, "Data({} bytes)", d.len()),
            StreamEvent::Finished => f.write_str("Finished"),
            StreamEvent::Reset(r) => write!(f, "Reset({r:?})"),
        }
    }
}

/// What one received chunk produced.
#[derive(Debug, Default)]
pub struct Received {
    /// The ack to send back (now or piggy-backed); `None` for an ack-only chunk.
    pub ack: Option<AckFrame>,
    /// Newly deliverable content, in stream order.
    pub events: Vec<StreamEvent>,
}

/// The receiving half of a stream.
#[derive(Debug)]
pub struct Receiver {
    next: u32,
    max_ahead: u32,
    buffered: BTreeMap<u32, Body>,
    ended: bool,
    last_seq: Option<u32>,
}

impl Receiver {
    /// A receiver that buffers chunks at most `max_ahead` sequence numbers beyond the next
    /// expected one (use the peer's window); later ones are dropped unacknowledged.
    pub fn new(max_ahead: u32) -> Receiver {
        Receiver {
            next: 0,
            max_ahead: max_ahead.max(1),
            buffered: BTreeMap::new(),
            ended: false,
            last_seq: None,
        }
    }

    /// Whether `Finished` or `Reset` has been delivered.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Take in a chunk of this stream (the driver routes by [`Chunk::stream`] and hands the
    /// chunk's own `ack` to its [`Sender`]). Duplicates deliver nothing but are acked again,
    /// in case the first ack was lost.
    pub fn on_chunk(&mut self, chunk: &Chunk) -> Received {
        let Some(body) = &chunk.body else {
            return Received::default();
        };
        let seq = chunk.seq;
        let mut events = Vec::new();
        let in_window = seq >= self.next && seq - self.next < self.max_ahead;
        // A reset aborts the stream: nothing before it matters any more, so it is not held
        // behind a hole (the peer's sender may have given up on the chunks missing), nor
        // refused beyond the window (it buffers nothing). The chunks it skips are abandoned
        // by both ends: the cumulative ack covers them and the reset, so the resetting
        // sender finishes rather than retransmitting them.
        if let Body::Reset(code) = body
            && seq > self.next
            && !self.ended
        {
            self.ended = true;
            self.buffered.clear();
            self.last_seq = Some(seq);
            self.next = seq.saturating_add(1);
            return Received {
                ack: Some(self.ack()),
                events: vec![StreamEvent::Reset(*code)],
            };
        }
        if in_window && !self.ended && !self.buffered.contains_key(&seq) {
            self.buffered.insert(seq, body.clone());
            self.last_seq = Some(seq);
            while let Some(b) = self.buffered.remove(&self.next) {
                self.next = self.next.saturating_add(1);
                let ends = matches!(b, Body::Fin | Body::Reset(_));
                events.push(match b {
                    Body::Open(t) => StreamEvent::Opened(t),
                    Body::Data(d) => StreamEvent::Data(d),
                    Body::Fin => StreamEvent::Finished,
                    Body::Reset(r) => StreamEvent::Reset(r),
                });
                if ends {
                    self.ended = true;
                    self.buffered.clear();
                    break;
                }
            }
        }
        Received {
            ack: Some(self.ack()),
            events,
        }
    }

    /// The current acknowledgement: the cumulative point and up to [`MAX_ACK_RANGES`]
    /// ranges of buffered chunks, the one holding the latest arrival always among them.
    pub fn ack(&self) -> AckFrame {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for &s in self.buffered.keys() {
            match ranges.last_mut() {
                Some((_, last)) if last.checked_add(1) == Some(s) => *last = s,
                _ => ranges.push((s, s)),
            }
        }
        if ranges.len() > MAX_ACK_RANGES {
            let latest = self
                .last_seq
                .and_then(|l| ranges.iter().position(|&(a, b)| a <= l && l <= b));
            let keep = latest.filter(|&i| i >= MAX_ACK_RANGES - 1);
            let kept = keep.map(|i| ranges[i]);
            ranges.truncate(if kept.is_some() {
                MAX_ACK_RANGES - 1
            } else {
                MAX_ACK_RANGES
            });
            ranges.extend(kept);
        }
        AckFrame {
            cumulative: self.next,
            ranges,
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model;
