//! One stream between a TCP connection and the mixnet, shared by the SOCKS proxy
//! ([`crate::socks`]) and the exit service (`lethe-node --role exit`): the I/O around
//! [`lethe_proto::stream`]'s sans-IO [`Sender`] and [`Receiver`].
//!
//! The two ends differ only in how a chunk leaves ([`Transport`]): the proxy wraps it in a
//! forward packet to the exit and attaches fresh SURBs; the exit puts it in one of the SURBs
//! the client sent, and can send only while it holds one.

use std::future::Future;
use std::time::{Duration, Instant};

use lethe_proto::socks::{Reply, encode_reply};
use lethe_proto::stream::{Chunk, Receiver, Sender, StreamEvent, StreamId, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// Why a chunk could not leave.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error(transparent)]
    Client(#[from] crate::ClientError),
    #[error(transparent)]
    Stream(#[from] lethe_proto::stream::StreamError),
    #[error("crypto worker failed: {0}")]
    Worker(String),
    #[error("no SURB key room: {held} keys held")]
    TooManyKeys { held: usize },
    #[error("no payload slot for a packet within {0:?}")]
    SlotTimeout(std::time::Duration),
}

/// How a chunk of this end leaves.
pub trait Transport: Send {
    /// Whether a chunk can be sent now (the exit needs a SURB).
    fn ready(&self) -> bool;
    /// A chunk of the peer's arrived (the exit keeps its SURBs; the proxy counts it as one
    /// SURB used).
    fn on_chunk(&mut self, chunk: &mut Chunk, now: Instant);
    /// Whether an extra ack-only chunk should go out now (the proxy's SURB top-up).
    fn wants_extra(&mut self, now: Instant) -> bool;
    /// When [`Transport::wants_extra`] may turn true without anything arriving.
    fn next_extra(&self) -> Option<Instant>;
    /// Encode and send.
    fn transmit(&mut self, chunk: Chunk) -> impl Future<Output = Result<(), PipeError>> + Send;
}

/// Tuning of one stream's driver.
#[derive(Clone, Debug)]
pub struct PipeConfig {
    /// Most bytes read from TCP and not yet sent once.
    pub max_buffered: usize,
    /// A stream with nothing received from either side this long is dropped.
    pub idle: Duration,
    /// The longest an ack waits for a chunk to ride on.
    pub ack_delay: Duration,
    /// Send an ack at once after this many unacknowledged chunks.
    pub ack_every: u32,
    /// After both halves ended, keep answering retransmissions this long.
    pub linger: Duration,
    /// The local TCP peer took no byte of what waits for it for this long: the stream is
    /// reset (a target or application that stops reading holds nothing for longer).
    pub stall: Duration,
}

impl Default for PipeConfig {
    fn default() -> Self {
        PipeConfig {
            max_buffered: 256 * 1024,
            idle: Duration::from_secs(300),
            ack_delay: Duration::from_millis(20),
            ack_every: 8,
            linger: Duration::from_secs(3),
            stall: Duration::from_secs(30),
        }
    }
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeEnd {
    /// Both halves finished and were acknowledged.
    Closed,
    /// The peer reset the stream with this code.
    PeerReset(Reply),
    /// We reset it (e.g. the TCP connection failed, or the exit refused).
    Reset,
    /// Our sending half failed: a chunk was never acknowledged.
    Failed,
    /// Nothing happened for [`PipeConfig::idle`].
    Idle,
    /// The local TCP peer stopped reading for [`PipeConfig::stall`].
    Stalled,
    /// The dispatcher went away (shutdown).
    Gone,
}

/// The driver's state for one stream.
pub struct Pipe {
    /// The stream.
    pub id: StreamId,
    /// Tuning.
    pub config: PipeConfig,
    /// Our sending half (already opened or reset by the caller).
    pub sender: Sender,
    /// Our receiving half (may already have taken the peer's `Open`).
    pub receiver: Receiver,
    /// Whether the receiver has taken any numbered chunk (so an ack means something).
    pub received_any: bool,
    /// The proxy: answer the SOCKS request when the exit confirms or refuses.
    pub socks_reply_pending: bool,
}

/// The longest a chunk may wait to leave (a payload slot, a full link): past it the stream
/// is given up rather than held.
pub const TRANSMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// After the local peer stalled, how long the stream waits for its reset to reach the
/// peer's end (it needs a way back, e.g. a SURB) before it ends anyway.
const STALL_GRACE: Duration = Duration::from_secs(10);

/// How long the last bytes (a SOCKS refusal, data before a reset) may take to reach the
/// local TCP peer when the stream ends.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Bytes for the local TCP peer that it has not taken yet, written as it reads: the driver
/// never waits on a write, so a peer that stops reading cannot hold the stream's timers.
#[derive(Default)]
struct Outbox {
    chunks: std::collections::VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    offset: usize,
    bytes: usize,
    /// Shut the TCP connection's sending side once everything is written.
    fin: bool,
    /// Since when something waits without the peer having taken a byte.
    waiting_since: Option<Instant>,
}

impl Outbox {
    fn push(&mut self, data: Vec<u8>, now: Instant) {
        if data.is_empty() {
            return;
        }
        self.bytes += data.len();
        self.chunks.push_back(data);
        self.waiting_since.get_or_insert(now);
    }

    fn front(&self) -> Option<&[u8]> {
        self.chunks.front().map(|c| &c[self.offset..])
    }

    fn wrote(&mut self, n: usize, now: Instant) {
        self.bytes -= n;
        self.offset += n;
        if self.chunks.front().is_some_and(|c| self.offset >= c.len()) {
            self.chunks.pop_front();
            self.offset = 0;
        }
        self.waiting_since = (!self.chunks.is_empty()).then_some(now);
    }

    /// Write what is left, for at most [`FINAL_FLUSH`].
    async fn flush(&mut self, w: &mut OwnedWriteHalf) {
        let _ = tokio::time::timeout(FINAL_FLUSH, async {
            while let Some(front) = self.front() {
                match w.write(front).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => self.wrote(n, Instant::now()),
                }
            }
            if self.fin {
                let _ = w.shutdown().await;
            }
        })
        .await;
    }
}

/// Send one chunk, for at most [`TRANSMIT_TIMEOUT`].
async fn transmit<T: Transport>(transport: &mut T, c: Chunk) -> Result<(), PipeError> {
    match tokio::time::timeout(TRANSMIT_TIMEOUT, transport.transmit(c)).await {
        Ok(r) => r,
        Err(_) => Err(PipeError::SlotTimeout(TRANSMIT_TIMEOUT)),
    }
}

impl Pipe {
    /// Run the stream until it ends. `tcp` is the local connection (none when the exit
    /// refused before connecting); `inbox` brings the peer's chunks.
    pub async fn run<T: Transport>(
        mut self,
        transport: &mut T,
        tcp: Option<TcpStream>,
        inbox: mpsc::Receiver<Chunk>,
    ) -> PipeEnd {
        let started = Instant::now();
        let end = self.drive(transport, tcp, inbox).await;
        tracing::debug!(
            ?end,
            secs = started.elapsed().as_secs_f64(),
            srtt = ?self.sender.rtt().srtt(),
            rto = ?self.sender.rtt().rto(),
            "stream ended"
        );
        end
    }

    async fn drive<T: Transport>(
        &mut self,
        transport: &mut T,
        tcp: Option<TcpStream>,
        mut inbox: mpsc::Receiver<Chunk>,
    ) -> PipeEnd {
        let clock = lethe_net::clock::Clock::new();
        let (mut rd, mut wr): (Option<OwnedReadHalf>, Option<OwnedWriteHalf>) = match tcp {
            Some(t) => {
                let _ = t.set_nodelay(true);
                let (r, w) = t.into_split();
                (Some(r), Some(w))
            }
            None => (None, None),
        };
        let mut buf = vec![0u8; 16 * 1024];
        let mut outbox = Outbox::default();
        let mut ack_pending = 0u32;
        let mut ack_due: Option<Instant> = None;
        let mut last_activity = Instant::now();
        let mut done_at: Option<Instant> = None;
        let mut peer_reset: Option<Reply> = None;
        let mut we_reset = false;
        let mut stalled = false;
        let mut stalled_at: Option<Instant> = None;
        loop {
            // Send what the window, the transport and the peer's acks allow.
            while transport.ready() {
                let Some(mut c) = self.sender.poll_transmit(clock.now()) else {
                    break;
                };
                if self.received_any {
                    c.ack = Some(self.receiver.ack());
                    ack_pending = 0;
                    ack_due = None;
                }
                if transmit(transport, c).await.is_err() {
                    return PipeEnd::Gone;
                }
            }
            let now = Instant::now();
            let ack_now = ack_pending > 0
                && (ack_pending >= self.config.ack_every || ack_due.is_some_and(|d| d <= now));
            if (ack_now && transport.ready()) || (done_at.is_none() && transport.wants_extra(now)) {
                // Before anything arrived the ack acknowledges nothing (cumulative 0), but an
                // ack-only chunk must carry one.
                let c = Chunk::ack_only(self.id, self.receiver.ack());
                ack_pending = 0;
                ack_due = None;
                if transmit(transport, c).await.is_err() {
                    return PipeEnd::Gone;
                }
                continue;
            }
            if let Some(code) = peer_reset {
                if let Some(w) = wr.as_mut() {
                    outbox.flush(w).await;
                }
                return PipeEnd::PeerReset(code);
            }
            // The local peer took nothing for too long: give the stream up.
            if !stalled
                && outbox
                    .waiting_since
                    .is_some_and(|t| now.duration_since(t) >= self.config.stall)
            {
                stalled = true;
                stalled_at = Some(now);
                outbox = Outbox::default();
                if let Some(w) = wr.take() {
                    let _ = w.as_ref().set_zero_linger();
                }
                rd = None;
                if !we_reset && self.sender.reset(Reply::GeneralFailure).is_ok() {
                    we_reset = true;
                }
                continue;
            }
            match self.sender.verdict() {
                Some(Verdict::Failed { .. }) => {
                    if let Some(w) = &wr {
                        // Close with an error (RST), not a clean end of stream.
                        let _ = w.as_ref().set_zero_linger();
                    }
                    return if stalled {
                        PipeEnd::Stalled
                    } else {
                        PipeEnd::Failed
                    };
                }
                Some(Verdict::Delivered) if stalled => return PipeEnd::Stalled,
                Some(Verdict::Delivered) if we_reset => return PipeEnd::Reset,
                Some(Verdict::Delivered)
                    if self.receiver.is_ended() && outbox.front().is_none() =>
                {
                    let d = *done_at.get_or_insert(now + self.config.linger);
                    if now >= d {
                        if let Some(w) = wr.as_mut() {
                            outbox.flush(w).await;
                        }
                        return PipeEnd::Closed;
                    }
                }
                _ => {}
            }
            if now.duration_since(last_activity) >= self.config.idle {
                return PipeEnd::Idle;
            }
            // A stalled stream holds nothing for long, even with no way to say so.
            if stalled_at.is_some_and(|t| now >= t + STALL_GRACE) {
                return PipeEnd::Stalled;
            }
            // Wait for the next thing to do.
            let mut wake = last_activity + self.config.idle;
            if let Some(t) = self.sender.poll_timeout() {
                wake = wake.min(clock.instant(t));
            }
            // An ack waits for a way back: without one (no SURB held) its due time would
            // wake this loop at once, again and again.
            let ack_wake = ack_due.filter(|_| transport.ready());
            let stall_wake = outbox.waiting_since.map(|t| t + self.config.stall);
            let grace_wake = stalled_at.map(|t| t + STALL_GRACE);
            for t in [
                ack_wake,
                done_at,
                transport.next_extra(),
                stall_wake,
                grace_wake,
            ]
            .into_iter()
            .flatten()
            {
                wake = wake.min(t);
            }
            let can_read = rd.is_some()
                && !self.socks_reply_pending
                && self.sender.buffered() < self.config.max_buffered
                && self.sender.verdict().is_none()
                && done_at.is_none();
            let can_write = wr.is_some() && (outbox.front().is_some() || outbox.fin);
            // Data the local peer has not taken yet is bounded too: past the bound, the
            // peer's chunks are not taken (nor acknowledged), so its sender waits and
            // retransmits later.
            let full = outbox.bytes >= self.config.max_buffered;
            tokio::select! {
                c = inbox.recv() => {
                    let Some(mut c) = c else { return PipeEnd::Gone };
                    last_activity = Instant::now();
                    transport.on_chunk(&mut c, last_activity);
                    if let Some(a) = &c.ack {
                        self.sender.on_ack(clock.now(), a);
                    }
                    if c.body.is_none() || full {
                        continue;
                    }
                    self.received_any = true;
                    let r = self.receiver.on_chunk(&c);
                    ack_pending += 1;
                    ack_due.get_or_insert(last_activity + self.config.ack_delay);
                    for ev in r.events {
                        match ev {
                            StreamEvent::Opened(_) => {
                                if self.socks_reply_pending {
                                    self.socks_reply_pending = false;
                                    outbox.push(encode_reply(Reply::Succeeded, None), last_activity);
                                }
                            }
                            StreamEvent::Data(d) => {
                                if wr.is_some() {
                                    outbox.push(d, last_activity);
                                }
                            }
                            StreamEvent::Finished => outbox.fin = true,
                            StreamEvent::Reset(code) => {
                                if self.socks_reply_pending {
                                    self.socks_reply_pending = false;
                                    outbox.push(encode_reply(code, None), last_activity);
                                    outbox.fin = true;
                                } else if let Some(w) = &wr {
                                    outbox = Outbox::default();
                                    let _ = w.as_ref().set_zero_linger();
                                }
                                // Ack it before leaving (next turn of the loop).
                                ack_pending = self.config.ack_every;
                                peer_reset = Some(code);
                            }
                        }
                    }
                }
                r = async {
                    match (wr.as_mut(), outbox.front()) {
                        (Some(w), Some(front)) => w.write(front).await.map(Some),
                        // Everything written: shut our sending side once.
                        (Some(w), None) => {
                            let _ = w.shutdown().await;
                            Ok(None)
                        }
                        (None, _) => std::future::pending().await,
                    }
                }, if can_write => {
                    let now = Instant::now();
                    match r {
                        Ok(Some(n)) if n > 0 => {
                            last_activity = now;
                            outbox.wrote(n, now);
                        }
                        Ok(None) => outbox.fin = false,
                        Ok(Some(_)) | Err(_) => {
                            // The local peer is gone: nothing more can reach it.
                            outbox = Outbox::default();
                            wr = None;
                            if !we_reset && self.sender.reset(Reply::GeneralFailure).is_ok() {
                                we_reset = true;
                            }
                            rd = None;
                        }
                    }
                }
                r = async {
                    match rd.as_mut() {
                        Some(r) => r.read(&mut buf).await,
                        None => std::future::pending().await,
                    }
                }, if can_read => {
                    last_activity = Instant::now();
                    match r {
                        Ok(0) => {
                            rd = None;
                            let _ = self.sender.finish();
                        }
                        Ok(n) => {
                            let _ = self.sender.push(&buf[..n]);
                        }
                        Err(_) => {
                            rd = None;
                            if self.sender.reset(Reply::GeneralFailure).is_ok() {
                                we_reset = true;
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    self.sender.handle_timeout(clock.now());
                }
            }
        }
    }
}
