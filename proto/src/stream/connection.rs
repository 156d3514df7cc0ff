//! One stream end's connection policy, sans-IO: when acks go out, when a finished stream has
//! lingered long enough, when a local peer that stops reading is given up, and how the
//! stream ends. The driver (the SOCKS proxy's or the exit's) only moves bytes and time.
//!
//! A [`Connection`] joins the stream's [`Sender`] and [`Receiver`] with the local side (a
//! TCP connection, seen as bytes to read and an [`Outbox`] of bytes to write). The driver:
//! - passes the peer's chunks to [`Connection::on_chunk`], what it read locally to
//!   [`Connection::on_read`] (or [`Connection::on_read_end`] / [`Connection::on_read_error`]),
//!   and what it wrote to [`Connection::on_written`];
//! - calls [`Connection::handle_timeout`], then sends what [`Connection::poll_transmit`] gives
//!   (plus an [`Connection::extra`] ack when its transport wants one), checks
//!   [`Connection::poll_end`] and [`Connection::take_abort`], and sleeps until
//!   [`Connection::poll_timeout`] or until something arrives.

use std::collections::VecDeque;
use std::time::Duration;

use super::{Body, Chunk, Receiver, Sender, StreamEvent, StreamId, Verdict};
use crate::Timestamp;
use crate::socks::{Reply, encode_reply};

/// Tuning of one stream's connection.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// Most bytes read locally and not yet sent once; also the most bytes waiting for the
    /// local peer to take them.
    pub max_buffered: usize,
    /// A stream with nothing received from either side this long is dropped.
    pub idle: Duration,
    /// The longest an ack waits for a chunk to ride on.
    pub ack_delay: Duration,
    /// Send an ack at once after this many unacknowledged chunks.
    pub ack_every: u32,
    /// After both halves ended, keep answering retransmissions this long.
    pub linger: Duration,
    /// The local peer took no byte of what waits for it for this long: the stream is reset
    /// (a target or application that stops reading holds nothing for longer).
    pub stall: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_buffered: 256 * 1024,
            idle: Duration::from_secs(300),
            ack_delay: Duration::from_millis(20),
            ack_every: 8,
            linger: Duration::from_secs(3),
            stall: Duration::from_secs(30),
        }
    }
}

/// After the local peer stalled, how long the stream waits for its reset to reach the
/// peer's end (it needs a way back, e.g. a SURB) before it ends anyway.
pub const STALL_GRACE: Duration = Duration::from_secs(10);

/// After our sending half failed, the longest the stream waits for a way to tell the peer
/// (the exit needs a SURB, which the proxy sends at most [`crate::supply::MAX_STALL`] after a
/// silence) before it ends anyway.
pub const FAIL_GRACE: Duration = Duration::from_secs(60);
/// Copies of the reset that tells the peer we gave up, and the time between them: the
/// reset is not retransmitted on acks, so it goes more than once.
pub const ABORT_COPIES: u32 = 3;
/// See [`ABORT_COPIES`].
pub const ABORT_REPEAT: Duration = Duration::from_secs(1);

/// Our sending half failed: the peer is told with a few copies of a reset.
#[derive(Debug, Clone, Copy)]
struct Aborting {
    since: Timestamp,
    sent: u32,
    next: Timestamp,
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both halves finished and were acknowledged.
    Closed,
    /// The peer reset the stream with this code.
    PeerReset(Reply),
    /// We reset it (e.g. the local connection failed, or the exit refused).
    Reset,
    /// Our sending half failed: a chunk was never acknowledged.
    Failed,
    /// Nothing happened for [`ConnectionConfig::idle`].
    Idle,
    /// The local peer stopped reading for [`ConnectionConfig::stall`].
    Stalled,
}

/// Bytes for the local peer that it has not taken yet, written as it reads: the driver never
/// waits on a write, so a peer that stops reading cannot hold the stream's timers.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    offset: usize,
    bytes: usize,
    /// Shut the local connection's sending side once everything is written.
    fin: bool,
    /// Since when something waits without the peer having taken a byte.
    waiting_since: Option<Timestamp>,
}

impl Outbox {
    fn push(&mut self, data: Vec<u8>, now: Timestamp) {
        if data.is_empty() {
            return;
        }
        self.bytes += data.len();
        self.chunks.push_back(data);
        self.waiting_since.get_or_insert(now);
    }

    /// The bytes to write next.
    pub fn front(&self) -> Option<&[u8]> {
        self.chunks.front().map(|c| &c[self.offset..])
    }

    /// Whether the sending side should be shut once [`Outbox::front`] is empty.
    pub fn fin(&self) -> bool {
        self.fin
    }

    /// `n` bytes of [`Outbox::front`] were written at `now`.
    pub fn wrote(&mut self, n: usize, now: Timestamp) {
        let n = n.min(self.bytes);
        self.bytes -= n;
        self.offset += n;
        if self.chunks.front().is_some_and(|c| self.offset >= c.len()) {
            self.chunks.pop_front();
            self.offset = 0;
        }
        self.waiting_since = (!self.chunks.is_empty()).then_some(now);
    }

    /// The sending side was shut.
    pub fn shut(&mut self) {
        self.fin = false;
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// One stream end: its sending and receiving halves and the local side's state.
#[derive(Debug)]
pub struct Connection {
    id: StreamId,
    config: ConnectionConfig,
    sender: Sender,
    receiver: Receiver,
    /// Whether the receiver has taken any numbered chunk (so an ack means something).
    received_any: bool,
    /// The proxy: the SOCKS answer waits for the exit's `Open` or `Reset`.
    reply_pending: bool,
    /// The local side can still be read from / written to.
    reading: bool,
    writing: bool,
    outbox: Outbox,
    ack_pending: u32,
    ack_due: Option<Timestamp>,
    last_activity: Timestamp,
    done_at: Option<Timestamp>,
    peer_reset: Option<Reply>,
    we_reset: bool,
    stalled_at: Option<Timestamp>,
    /// The local connection must be closed with an error (RST) now.
    abort: bool,
    /// Our sending half failed and the peer is being told.
    aborting: Option<Aborting>,
}

impl Connection {
    /// A stream end starting at `now`. `sender` is already opened (or reset) by the caller;
    /// `receiver` may already hold the peer's `Open`. `local` says whether there is a local
    /// connection at all (none when the exit refused before connecting); `reply_pending`
    /// that a SOCKS answer waits for the exit's verdict.
    pub fn new(
        now: Timestamp,
        id: StreamId,
        config: ConnectionConfig,
        sender: Sender,
        receiver: Receiver,
        local: bool,
        reply_pending: bool,
    ) -> Self {
        Connection {
            id,
            config,
            sender,
            receiver,
            received_any: false,
            reply_pending,
            reading: local,
            writing: local,
            outbox: Outbox::default(),
            ack_pending: 0,
            ack_due: None,
            last_activity: now,
            done_at: None,
            peer_reset: None,
            we_reset: false,
            stalled_at: None,
            abort: false,
            aborting: None,
        }
    }

    /// The receiver already took a numbered chunk before the connection was made (the
    /// exit's first chunk, the client's `Open`).
    pub fn set_received_any(&mut self) {
        self.received_any = true;
    }

    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The sending half (for its round-trip estimate).
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// Expire timers due at `now`: retransmissions, and a local peer that took nothing for
    /// [`ConnectionConfig::stall`] (the stream is reset and the local side aborted).
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.sender.handle_timeout(now);
        let stalled = self
            .outbox
            .waiting_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.config.stall);
        if self.stalled_at.is_none() && stalled {
            self.stalled_at = Some(now);
            self.outbox = Outbox::default();
            self.abort_local();
            self.reset_ours();
        }
    }

    /// The next chunk to send when the transport can take one (`ready`): our content with
    /// the current ack attached, else an ack-only chunk when one is due.
    pub fn poll_transmit(&mut self, now: Timestamp, ready: bool) -> Option<Chunk> {
        if !ready {
            return None;
        }
        if let Some(a) = self.aborting.as_mut() {
            if a.sent >= ABORT_COPIES || a.next > now {
                return None;
            }
            a.sent += 1;
            a.next = now + ABORT_REPEAT;
            return Some(self.sender.abort_chunk(Reply::GeneralFailure));
        }
        if let Some(mut c) = self.sender.poll_transmit(now) {
            if self.received_any {
                c.ack = Some(self.receiver.ack());
                self.ack_sent();
            }
            return Some(c);
        }
        let ack_now = self.ack_pending > 0
            && (self.ack_pending >= self.config.ack_every
                || self.ack_due.is_some_and(|d| d <= now));
        ack_now.then(|| self.extra())
    }

    /// Whether an extra ack-only chunk (the transport's, e.g. to carry SURBs) may go out:
    /// not once the stream is done and only lingers.
    pub fn may_send_extra(&self) -> bool {
        self.done_at.is_none()
    }

    /// An ack-only chunk. Before anything arrived it acknowledges nothing (cumulative 0),
    /// but an ack-only chunk must carry one.
    pub fn extra(&mut self) -> Chunk {
        self.ack_sent();
        Chunk::ack_only(self.id, self.receiver.ack())
    }

    fn ack_sent(&mut self) {
        self.ack_pending = 0;
        self.ack_due = None;
    }

    /// Whether the local side should be read now: not while the SOCKS answer waits, nor
    /// past [`ConnectionConfig::max_buffered`], nor once the sending half is over.
    pub fn wants_read(&self) -> bool {
        self.reading
            && !self.reply_pending
            && self.sender.buffered() < self.config.max_buffered
            && self.sender.verdict().is_none()
            && self.done_at.is_none()
    }

    /// Bytes read locally at `now`.
    pub fn on_read(&mut self, now: Timestamp, data: &[u8]) {
        self.last_activity = now;
        let _ = self.sender.push(data);
    }

    /// The local peer ended its sending side at `now`.
    pub fn on_read_end(&mut self, now: Timestamp) {
        self.last_activity = now;
        self.reading = false;
        let _ = self.sender.finish();
    }

    /// Reading the local side failed at `now`: the stream is reset.
    pub fn on_read_error(&mut self, now: Timestamp) {
        self.last_activity = now;
        self.reading = false;
        self.reset_ours();
    }

    /// What waits for the local peer, when it can still take something.
    pub fn outbox(&self) -> Option<&Outbox> {
        self.writing.then_some(&self.outbox)
    }

    /// Whether the driver has something to write (or a sending side to shut).
    pub fn wants_write(&self) -> bool {
        self.writing && (self.outbox.front().is_some() || self.outbox.fin)
    }

    /// `n` bytes were written to the local peer at `now`.
    pub fn on_written(&mut self, now: Timestamp, n: usize) {
        if n > 0 {
            self.last_activity = now;
            self.outbox.wrote(n, now);
        }
    }

    /// The local connection's sending side was shut.
    pub fn on_shut(&mut self) {
        self.outbox.shut();
    }

    /// Writing to the local peer failed (it is gone): nothing more can reach it, and the
    /// stream is reset.
    pub fn on_write_error(&mut self) {
        self.outbox = Outbox::default();
        self.writing = false;
        self.reading = false;
        self.reset_ours();
    }

    /// Whether the local connection must be closed with an error (RST) now; the driver then
    /// drops it. Returns true once.
    pub fn take_abort(&mut self) -> bool {
        std::mem::take(&mut self.abort)
    }

    fn abort_local(&mut self) {
        if self.reading || self.writing {
            self.abort = true;
        }
        self.reading = false;
        self.writing = false;
    }

    fn reset_ours(&mut self) {
        if !self.we_reset && self.sender.reset(Reply::GeneralFailure).is_ok() {
            self.we_reset = true;
        }
    }

    /// A chunk of the peer's arrived at `now` (the driver's transport has taken its SURBs).
    pub fn on_chunk(&mut self, now: Timestamp, chunk: &Chunk) {
        self.last_activity = now;
        if let Some(a) = &chunk.ack {
            self.sender.on_ack(now, a);
        }
        // Data the local peer has not taken yet is bounded too: past the bound, the peer's
        // data is not taken (nor acknowledged), so its sender waits and retransmits. A fin or
        // a reset adds nothing to hold and is always taken.
        let Some(body) = &chunk.body else {
            return;
        };
        let ends = matches!(body, Body::Fin | Body::Reset(_));
        if !ends && self.outbox.bytes >= self.config.max_buffered {
            return;
        }
        self.received_any = true;
        let r = self.receiver.on_chunk(chunk);
        self.ack_pending += 1;
        self.ack_due.get_or_insert(now + self.config.ack_delay);
        for ev in r.events {
            match ev {
                StreamEvent::Opened(_) => {
                    if self.reply_pending {
                        self.reply_pending = false;
                        self.outbox.push(encode_reply(Reply::Succeeded, None), now);
                    }
                }
                StreamEvent::Data(d) => {
                    if self.writing {
                        self.outbox.push(d, now);
                    }
                }
                StreamEvent::Finished => self.outbox.fin = true,
                StreamEvent::Reset(code) => {
                    if self.reply_pending {
                        self.reply_pending = false;
                        self.outbox.push(encode_reply(code, None), now);
                        self.outbox.fin = true;
                    } else {
                        self.outbox = Outbox::default();
                        self.abort_local();
                    }
                    // Ack it before leaving.
                    self.ack_pending = self.config.ack_every;
                    self.peer_reset = Some(code);
                }
            }
        }
    }

    /// How the stream ended, once it has, at `now`. On [`End::Closed`] and
    /// [`End::PeerReset`] the driver writes what [`Connection::outbox`] still holds (briefly)
    /// before it closes the local connection.
    pub fn poll_end(&mut self, now: Timestamp) -> Option<End> {
        // The driver sent the ack of the peer's reset (if it could) before asking.
        if let Some(code) = self.peer_reset {
            return Some(End::PeerReset(code));
        }
        let stalled = self.stalled_at.is_some();
        match self.sender.verdict() {
            Some(Verdict::Failed { .. }) => {
                // Tell the peer, which would otherwise wait for chunks that never come
                // until its idle timer ends the stream.
                self.abort_local();
                let a = *self.aborting.get_or_insert(Aborting {
                    since: now,
                    sent: 0,
                    next: now,
                });
                if a.sent >= ABORT_COPIES || now >= a.since + FAIL_GRACE {
                    return Some(if stalled { End::Stalled } else { End::Failed });
                }
                return None;
            }
            Some(Verdict::Delivered) if stalled => return Some(End::Stalled),
            Some(Verdict::Delivered) if self.we_reset => return Some(End::Reset),
            Some(Verdict::Delivered)
                if self.receiver.is_ended() && self.outbox.front().is_none() =>
            {
                let d = *self.done_at.get_or_insert(now + self.config.linger);
                if now >= d {
                    return Some(End::Closed);
                }
            }
            _ => {}
        }
        if now.saturating_duration_since(self.last_activity) >= self.config.idle {
            return Some(End::Idle);
        }
        // A stalled stream holds nothing for long, even with no way to say so.
        if self.stalled_at.is_some_and(|t| now >= t + STALL_GRACE) {
            return Some(End::Stalled);
        }
        None
    }

    /// When the driver must call [`Connection::handle_timeout`] next if nothing arrives.
    /// `ready` says whether the transport can send: without a way back (no SURB held) a due
    /// ack would wake the driver at once, again and again.
    pub fn poll_timeout(&self, ready: bool) -> Timestamp {
        let mut wake = self.last_activity + self.config.idle;
        let ack_wake = self.ack_due.filter(|_| ready);
        let stall_wake = self.outbox.waiting_since.map(|t| t + self.config.stall);
        let grace_wake = self.stalled_at.map(|t| t + STALL_GRACE);
        let abort_wake = self.aborting.map(|a| {
            if ready {
                a.next.min(a.since + FAIL_GRACE)
            } else {
                a.since + FAIL_GRACE
            }
        });
        for t in [
            abort_wake,
            self.sender.poll_timeout(),
            ack_wake,
            self.done_at,
            stall_wake,
            grace_wake,
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(t);
        }
        wake
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Body, SenderConfig};

    fn at(ms: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_millis(ms)
    }

    fn conn(cfg: SenderConfig) -> Connection {
        let mut sender = Sender::new(7, cfg).expect("valid");
        sender.open(None).expect("fresh");
        let mut c = Connection::new(
            at(0),
            7,
            ConnectionConfig::default(),
            sender,
            Receiver::new(64),
            true,
            false,
        );
        c.set_received_any();
        c
    }

    fn data(seq: u32, bytes: &[u8]) -> Chunk {
        Chunk {
            stream: 7,
            seq,
            body: Some(Body::Data(bytes.to_vec())),
            ack: None,
            surbs: Vec::new(),
        }
    }

    #[test]
    fn an_ack_waits_for_its_delay_or_enough_chunks() {
        let mut c = conn(SenderConfig::default());
        let open = c.poll_transmit(at(0), true).expect("the open");
        assert!(open.ack.is_some(), "acks ride on our chunks");
        c.on_chunk(at(10), &data(0, b"a"));
        assert!(c.poll_transmit(at(10), true).is_none(), "not due yet");
        assert_eq!(c.poll_timeout(true), at(30));
        assert_eq!(
            c.poll_timeout(false),
            at(3000),
            "the open's timer; no ack without a way"
        );
        let ack = c.poll_transmit(at(30), true).expect("due");
        assert!(ack.body.is_none() && ack.ack.is_some_and(|a| a.cumulative == 1));
        // Eight chunks: at once.
        for s in 1..9 {
            c.on_chunk(at(40), &data(s, b"b"));
        }
        assert!(c.poll_transmit(at(40), true).is_some());
        assert!(
            c.poll_transmit(at(40), false).is_none(),
            "never without a way"
        );
    }

    #[test]
    fn a_finished_stream_lingers_then_closes() {
        let mut c = conn(SenderConfig::default());
        c.on_read_end(at(0));
        while c.poll_transmit(at(0), true).is_some() {}
        // The peer acks our open and fin, sends its fin; the local peer takes it.
        let mut fin = Chunk {
            stream: 7,
            seq: 0,
            body: Some(Body::Fin),
            ack: Some(crate::stream::AckFrame {
                cumulative: 2,
                ranges: Vec::new(),
            }),
            surbs: Vec::new(),
        };
        c.on_chunk(at(100), &fin);
        assert!(c.wants_write(), "the fin is to be passed on");
        c.on_shut();
        assert_eq!(c.poll_end(at(100)), None, "lingers for retransmissions");
        fin.ack = None;
        c.on_chunk(at(200), &fin);
        assert_eq!(c.poll_end(at(3099)), None);
        assert_eq!(c.poll_end(at(3100)), Some(End::Closed));
    }

    #[test]
    fn a_local_peer_that_stops_reading_is_reset_and_dropped() {
        let mut c = conn(SenderConfig::default());
        c.on_chunk(at(0), &data(0, b"unread"));
        c.handle_timeout(at(29_999));
        assert!(!c.take_abort());
        c.handle_timeout(at(30_000));
        assert!(
            c.take_abort(),
            "the local connection is closed with an error"
        );
        assert!(!c.wants_read() && !c.wants_write());
        let sent: Vec<_> = std::iter::from_fn(|| c.poll_transmit(at(30_000), true)).collect();
        assert!(
            sent.iter().any(|s| matches!(s.body, Some(Body::Reset(_)))),
            "the peer is told"
        );
        // Nobody acknowledges: the stream still ends after the grace.
        assert_eq!(c.poll_end(at(39_999)), None);
        assert_eq!(c.poll_end(at(40_000)), Some(End::Stalled));
    }

    #[test]
    fn a_sending_half_that_fails_tells_the_peer_before_it_ends() {
        let cfg = SenderConfig {
            max_retries: 0,
            initial_rto: Duration::from_secs(1),
            ..SenderConfig::default()
        };
        let mut c = conn(cfg);
        assert!(c.poll_transmit(at(0), true).is_some());
        c.handle_timeout(at(1000));
        // No way back at first (an exit without SURBs): it waits, at most FAIL_GRACE.
        assert_eq!(c.poll_end(at(1000)), None);
        assert!(c.take_abort(), "the local side learns at once");
        assert!(c.poll_transmit(at(1000), false).is_none());
        assert_eq!(c.poll_timeout(false), at(1000) + FAIL_GRACE);
        // A way back: the copies go a second apart, then the stream ends.
        let mut copies = 0;
        for t in [5000, 5500, 6000, 7000] {
            if let Some(ch) = c.poll_transmit(at(t), true) {
                assert!(matches!(ch.body, Some(Body::Reset(_))));
                copies += 1;
            }
        }
        assert_eq!(copies, ABORT_COPIES);
        assert_eq!(c.poll_end(at(7000)), Some(End::Failed));
        // Without any way, it ends after the grace.
        let mut d = conn(SenderConfig {
            max_retries: 0,
            initial_rto: Duration::from_secs(1),
            ..SenderConfig::default()
        });
        assert!(d.poll_transmit(at(0), true).is_some());
        d.handle_timeout(at(1000));
        assert_eq!(d.poll_end(at(1000)), None);
        assert_eq!(d.poll_end(at(1000) + FAIL_GRACE), Some(End::Failed));
    }

    #[test]
    fn the_peers_reset_past_a_hole_ends_the_stream_at_once() {
        let mut c = conn(SenderConfig::default());
        c.on_chunk(at(0), &data(0, b"a"));
        let reset = Chunk {
            stream: 7,
            seq: 5,
            body: Some(Body::Reset(Reply::GeneralFailure)),
            ack: None,
            surbs: Vec::new(),
        };
        c.on_chunk(at(10), &reset);
        assert_eq!(
            c.poll_end(at(10)),
            Some(End::PeerReset(Reply::GeneralFailure))
        );
        assert!(c.take_abort());
    }

    #[test]
    fn nothing_for_the_idle_time_ends_the_stream() {
        let mut c = conn(SenderConfig::default());
        c.on_chunk(at(0), &data(0, b"a"));
        c.on_written(at(0), 1);
        while c.poll_transmit(at(100), true).is_some() {}
        let ack = crate::stream::AckFrame {
            cumulative: 1,
            ranges: Vec::new(),
        };
        c.on_chunk(at(200), &Chunk::ack_only(7, ack));
        assert_eq!(c.poll_end(at(300_199)), None);
        assert_eq!(c.poll_end(at(300_200)), Some(End::Idle));
    }
}
