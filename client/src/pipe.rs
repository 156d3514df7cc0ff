//! One stream between a local byte stream and the mixnet, shared by the SOCKS proxy
//! ([`crate::socks`]), the exit service (`lethe-node --role exit`) and messages
//! ([`crate::message`]): the I/O around [`lethe_proto::stream`]'s sans-IO [`Sender`] and
//! [`Receiver`].
//!
//! The ends differ only in how a chunk leaves ([`Transport`]): the opener wraps it in a
//! forward packet to the peer and attaches fresh SURBs ([`crate::forward`]); the answering
//! end puts it in one of the SURBs the opener sent ([`crate::answer`]), and can send only
//! while it holds one. The local side is a TCP connection (proxy, exit) or an in-memory
//! pipe to the message code ([`Local`]).

use std::future::Future;
use std::time::{Duration, Instant};

use lethe_net::clock::Clock;
use lethe_proto::stream::{Chunk, Connection, End, Receiver, Sender, StreamId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

/// The local side of a stream: something to read the bytes to send from and write the
/// bytes received to.
pub trait Local: Send + 'static {
    /// The reading half.
    type Read: AsyncRead + Unpin + Send;
    /// The writing half.
    type Write: AsyncWrite + Unpin + Send;
    /// Split for reading and writing at once.
    fn split(self) -> (Self::Read, Self::Write);
    /// Close the writing half with an error (a TCP RST), not a clean end of stream.
    fn abort(w: &Self::Write);
}

impl Local for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;
    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let _ = self.set_nodelay(true);
        self.into_split()
    }
    fn abort(w: &OwnedWriteHalf) {
        let _ = w.as_ref().set_zero_linger();
    }
}

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

/// Tuning of one stream's driver: the sans-IO connection's.
pub use lethe_proto::stream::ConnectionConfig as PipeConfig;

/// How a stream ended: as the connection says, or because the dispatcher went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeEnd {
    /// The stream's own end ([`End`]: closed, reset either way, failed, idle, stalled).
    Ended(End),
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
    /// Where to publish the data bytes the peer has acknowledged (a sender's progress).
    pub progress: Option<watch::Sender<u64>>,
}

/// The longest a chunk may wait to leave (a payload slot, a full link): past it the stream
/// is given up rather than held.
pub const TRANSMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the last bytes (a SOCKS refusal, data before a reset) may take to reach the
/// local TCP peer when the stream ends.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Write what is left for the local peer, for at most [`FINAL_FLUSH`].
async fn flush<W: AsyncWrite + Unpin>(conn: &mut Connection, clock: &Clock, w: &mut W) {
    let _ = tokio::time::timeout(FINAL_FLUSH, async {
        while let Some(front) = conn.outbox().and_then(|o| o.front()) {
            match w.write(front).await {
                Ok(0) | Err(_) => return,
                Ok(n) => conn.on_written(clock.now(), n),
            }
        }
        if conn.outbox().is_some_and(|o| o.fin()) {
            let _ = w.shutdown().await;
        }
    })
    .await;
}

/// Send one chunk, for at most [`TRANSMIT_TIMEOUT`].
async fn transmit<T: Transport>(transport: &mut T, c: Chunk) -> Result<(), PipeError> {
    match tokio::time::timeout(TRANSMIT_TIMEOUT, transport.transmit(c)).await {
        Ok(r) => r,
        Err(_) => Err(PipeError::SlotTimeout(TRANSMIT_TIMEOUT)),
    }
}

impl Pipe {
    /// Run the stream until it ends. `local` is the local side (none when the exit
    /// refused before connecting); `inbox` brings the peer's chunks.
    pub async fn run<T: Transport, L: Local>(
        self,
        transport: &mut T,
        local: Option<L>,
        inbox: mpsc::Receiver<Chunk>,
    ) -> PipeEnd {
        let started = Instant::now();
        let clock = Clock::new();
        let mut conn = Connection::new(
            clock.now(),
            self.id,
            self.config,
            self.sender,
            self.receiver,
            local.is_some(),
            self.socks_reply_pending,
        );
        if self.received_any {
            conn.set_received_any();
        }
        let end = drive(&mut conn, &clock, transport, local, inbox, self.progress).await;
        tracing::debug!(
            ?end,
            secs = started.elapsed().as_secs_f64(),
            srtt = ?conn.sender().rtt().srtt(),
            rto = ?conn.sender().rtt().rto(),
            "stream ended"
        );
        end
    }
}

/// Pump bytes and time between the connection, the local TCP connection and the transport.
async fn drive<T: Transport, L: Local>(
    conn: &mut Connection,
    clock: &Clock,
    transport: &mut T,
    local: Option<L>,
    mut inbox: mpsc::Receiver<Chunk>,
    progress: Option<watch::Sender<u64>>,
) -> PipeEnd {
    let (mut rd, mut wr): (Option<L::Read>, Option<L::Write>) = match local {
        Some(l) => {
            let (r, w) = l.split();
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        conn.handle_timeout(clock.now());
        if let Some(p) = &progress {
            p.send_if_modified(|v| {
                let acked = conn.sender().acked_bytes();
                let changed = *v != acked;
                *v = acked;
                changed
            });
        }
        if conn.take_abort() {
            // Close with an error (RST), not a clean end of stream.
            if let Some(w) = wr.take() {
                L::abort(&w);
            }
            rd = None;
        }
        // Send what the window, the transport and the peer's acks allow.
        while let Some(c) = conn.poll_transmit(clock.now(), transport.ready()) {
            if let Err(e) = transmit(transport, c).await {
                tracing::debug!(error = %e, "a chunk could not leave: stream given up");
                return PipeEnd::Gone;
            }
        }
        if conn.may_send_extra() && transport.wants_extra(Instant::now()) {
            let c = conn.extra();
            if let Err(e) = transmit(transport, c).await {
                tracing::debug!(error = %e, "a chunk could not leave: stream given up");
                return PipeEnd::Gone;
            }
            continue;
        }
        if let Some(end) = conn.poll_end(clock.now()) {
            if conn.take_abort()
                && let Some(w) = wr.take()
            {
                L::abort(&w);
            }
            if matches!(end, End::Closed | End::PeerReset(_))
                && let Some(w) = wr.as_mut()
            {
                flush(conn, clock, w).await;
            }
            return PipeEnd::Ended(end);
        }
        // Wait for the next thing to do.
        let mut wake = clock.instant(conn.poll_timeout(transport.ready()));
        // Only while an extra chunk may go (not while a finished stream lingers): a time
        // already past would otherwise wake this loop again and again.
        if conn.may_send_extra()
            && let Some(t) = transport.next_extra()
        {
            wake = wake.min(t);
        }
        let can_read = rd.is_some() && conn.wants_read();
        let can_write = wr.is_some() && conn.wants_write();
        tokio::select! {
            c = inbox.recv() => {
                let Some(mut c) = c else { return PipeEnd::Gone };
                let now = Instant::now();
                transport.on_chunk(&mut c, now);
                conn.on_chunk(clock.at(now), &c);
            }
            r = async {
                match (wr.as_mut(), conn.outbox().and_then(|o| o.front())) {
                    (Some(w), Some(front)) => w.write(front).await.map(Some),
                    // Everything written: shut our sending side once.
                    (Some(w), None) => {
                        let _ = w.shutdown().await;
                        Ok(None)
                    }
                    (None, _) => std::future::pending().await,
                }
            }, if can_write => {
                match r {
                    Ok(Some(n)) if n > 0 => conn.on_written(clock.now(), n),
                    Ok(None) => conn.on_shut(),
                    Ok(Some(_)) | Err(_) => {
                        // The local peer is gone: nothing more can reach it.
                        conn.on_write_error();
                        wr = None;
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
                let now = clock.now();
                match r {
                    Ok(0) => {
                        rd = None;
                        conn.on_read_end(now);
                    }
                    Ok(n) => conn.on_read(now, &buf[..n]),
                    Err(_) => {
                        rd = None;
                        conn.on_read_error(now);
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}
