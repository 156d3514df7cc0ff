//! Messages of any size (up to [`MAX_MESSAGE_BYTES`]): a message is one stream from its
//! sender to its recipient. The sender opens it with an `Open` that names no target, sends
//! the bytes and a `Fin` in forward packets with SURBs ([`crate::forward`]); the recipient
//! acknowledges in those SURBs ([`crate::answer`]), writes the message to disk whole, and
//! only then ends its own half. So a message is fragmented, acknowledged, retransmitted
//! and bounded in flight like a SOCKS connection, its packets wait for the payload slots of
//! the cover schedule like every other, and the sender knows it arrived when the
//! recipient's `Fin` comes back.
//!
//! A recipient that is offline gets the first window of the message (and retransmissions)
//! in its gateway's mailbox, bounded in count and bytes; the rest waits at the sender, which
//! keeps retransmitting (backing off to [`MESSAGE_MAX_RTO`]) until the recipient answers or
//! its timeout passes.
//!
//! A message that arrives as one packet without the stream format (sent with
//! [`Client::send`]) is handed over as it is.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lethe_proto::ClientAddress;
use lethe_proto::socks::Reply;
use lethe_proto::stream::{
    Chunk, End, Receiver, Sender, SenderConfig, StreamEvent, StreamId, max_sealed_data_len,
};
use rand::Rng;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf, ReadHalf, WriteHalf,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::accept::{Acceptor, Offered};
use crate::answer::SurbTransport;
use crate::forward::Opener;
use crate::pipe::{Local, Pipe, PipeConfig, PipeEnd};
use crate::{Client, ClientError};

/// The largest message `send` takes: 64 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Chunks of a message in flight at once (about 130 kB): the window bounds the speed to
/// about window / round trip.
pub const MESSAGE_WINDOW: usize = 128;
/// Chunks in flight before the recipient first answers (slow start): an offline
/// recipient's mailbox gets this many, and their retransmissions.
pub const MESSAGE_INITIAL_WINDOW: usize = 8;
/// The longest a sender waits before it retransmits (backoff stops here): an offline
/// recipient's mailbox gets a window's copies at most this often.
pub const MESSAGE_MAX_RTO: Duration = Duration::from_secs(30);
/// How long a sender stays after the recipient's Fin, to acknowledge it again if the first
/// acknowledgement was lost.
const SENDER_LINGER: Duration = Duration::from_secs(1);
/// Messages a recipient receives at once.
pub const MAX_INCOMING: usize = 64;
/// SURBs a recipient holds per incoming message.
const MAX_SURBS: usize = 256;
/// Folder in the output directory where messages are written until they are whole.
pub const PARTIAL_DIR: &str = ".partial";

/// What the caller can do about a failed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendErrorKind {
    /// The recipient did not answer in time (offline, or the network is slow): try again.
    RetryLater,
    /// The recipient or the message is the problem: do not send it again as it is.
    Refused,
    /// Our own client failed (its gateway link, its configuration).
    Local,
}

/// Why a message was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("message of {got} bytes is larger than the limit of {max} bytes")]
    TooLarge { got: usize, max: usize },
    #[error("the recipient refused the message (code {code:?})")]
    Refused { code: Reply },
    #[error(
        "the recipient did not acknowledge the whole message within {secs} s: {acked} of {total} bytes acknowledged{}",
        if *.acked == 0 { " (nothing: it may be offline, or its address wrong; what reached its gateway's mailbox is handed over when it comes online, so a message that fit there whole may still arrive)" } else { "" }
    )]
    TimedOut { secs: u64, acked: u64, total: u64 },
    #[error(
        "the recipient broke the message off (code {code:?}) with {acked} of {total} bytes acknowledged: it could not store it, or restarted and lost its beginning; send it again"
    )]
    BrokenOff { code: Reply, acked: u64, total: u64 },
    #[error("the message's stream ended ({end:?}) with {acked} of {total} bytes acknowledged")]
    Failed {
        end: PipeEnd,
        acked: u64,
        total: u64,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot start the message's stream: {0}")]
    Stream(#[from] lethe_proto::stream::StreamError),
}

impl SendError {
    /// What the caller can do about it.
    pub fn kind(&self) -> SendErrorKind {
        match self {
            SendError::TimedOut { .. } | SendError::Failed { .. } | SendError::BrokenOff { .. } => {
                SendErrorKind::RetryLater
            }
            SendError::TooLarge { .. } | SendError::Refused { .. } => SendErrorKind::Refused,
            SendError::Client(_) | SendError::Stream(_) => SendErrorKind::Local,
        }
    }
}

/// How to send.
#[derive(Debug)]
pub struct SendOptions {
    /// Give up when the recipient has not acknowledged the whole message by then.
    pub timeout: Duration,
    /// Where to publish the bytes acknowledged so far.
    pub progress: Option<watch::Sender<u64>>,
}

/// Send `data` to `to` and wait until the recipient acknowledged all of it and wrote it.
pub async fn send(
    opener: &Opener,
    to: ClientAddress,
    data: Vec<u8>,
    opts: SendOptions,
) -> Result<(), SendError> {
    let total = data.len() as u64;
    if data.len() > MAX_MESSAGE_BYTES {
        return Err(SendError::TooLarge {
            got: data.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let id: StreamId = rand::rng().next_u64();
    let cfg = SenderConfig {
        window: MESSAGE_WINDOW,
        // Retransmit until the timeout: an offline recipient is waited for.
        max_retries: u32::MAX,
        max_rto: MESSAGE_MAX_RTO,
        max_data: max_sealed_data_len(2),
        initial_window: Some(MESSAGE_INITIAL_WINDOW),
        ..SenderConfig::default()
    };
    let mut sender = Sender::new(id, cfg)?;
    sender.open(None)?;
    let (progress_tx, progress_rx) = match opts.progress {
        Some(p) => {
            let rx = p.subscribe();
            (p, rx)
        }
        None => watch::channel(0),
    };
    let (mut transport, inbox) = opener.stream(id, to, 4 * MESSAGE_WINDOW);
    let pipe = Pipe {
        id,
        config: PipeConfig {
            idle: opts.timeout + Duration::from_secs(60),
            // Long enough to acknowledge a retransmitted Fin of the recipient's.
            linger: SENDER_LINGER,
            ..PipeConfig::default()
        },
        sender,
        receiver: Receiver::new(64),
        received_any: false,
        socks_reply_pending: false,
        progress: Some(progress_tx),
    };
    let (local, app) = MemLocal::pair();
    // The application's end: write the message, then read until the recipient ends.
    let app_task = tokio::spawn(async move {
        let (mut rd, mut wr) = app.split();
        let writing = async move {
            wr.write_all(&data).await?;
            wr.shutdown().await
        };
        // The recipient sends nothing but its Fin: whatever else comes is thrown away.
        let mut sink = tokio::io::sink();
        let reading = tokio::io::copy(&mut rd, &mut sink);
        let _ = tokio::join!(writing, reading);
    });
    let outcome =
        tokio::time::timeout(opts.timeout, pipe.run(&mut transport, Some(local), inbox)).await;
    app_task.abort();
    let acked = *progress_rx.borrow();
    let clean = outcome == Ok(PipeEnd::Ended(End::Closed));
    opener.ended(id, clean);
    match outcome {
        Ok(PipeEnd::Ended(End::Closed)) => Ok(()),
        Ok(PipeEnd::Ended(End::PeerReset(
            code @ (Reply::CommandNotSupported | Reply::NotAllowedByRuleset),
        ))) => Err(SendError::Refused { code }),
        Ok(PipeEnd::Ended(End::PeerReset(code))) => {
            Err(SendError::BrokenOff { code, acked, total })
        }
        Ok(end) => Err(SendError::Failed { end, acked, total }),
        Err(_) => Err(SendError::TimedOut {
            secs: opts.timeout.as_secs(),
            acked,
            total,
        }),
    }
}

/// How long [`receive`] keeps answering the messages it has written, after its shutdown,
/// so their senders learn that they arrived.
pub const DRAIN: Duration = Duration::from_secs(15);

/// Receive messages into `out_dir`, handing each one's path to `delivered` as soon as it is
/// whole on disk, until `messages` closes or `shutdown` fires. Messages are written under
/// [`PARTIAL_DIR`] first (left-overs of an earlier run are deleted) and renamed
/// `message-NNNNNN` when whole. After the shutdown, no new message is taken, and the
/// streams still running (a written message's last acknowledgement, or one in the middle)
/// get up to [`DRAIN`] to end; a message cut off is not lost: its sender retransmits to the
/// next `receive`.
pub async fn receive(
    client: Arc<Client>,
    mut messages: mpsc::Receiver<Vec<u8>>,
    out_dir: PathBuf,
    delivered: mpsc::Sender<PathBuf>,
    mut shutdown: lethe_net::shutdown::Shutdown,
) -> Result<(), ClientError> {
    let partial = out_dir.join(PARTIAL_DIR);
    let io = |e| ClientError::Net(lethe_net::NetError::Io(e));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(io)?;
    let mut streams = Acceptor::new(MAX_INCOMING, 4 * MESSAGE_WINDOW);
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<StreamId>();
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        if draining.is_some() && streams.is_empty() {
            return Ok(());
        }
        let drain_end = draining.unwrap_or_else(|| tokio::time::Instant::now() + DRAIN);
        let msg = tokio::select! {
            m = messages.recv() => match m {
                Some(m) => m,
                None => return Ok(()),
            },
            Some(id) = ended_rx.recv() => {
                streams.ended(id, Instant::now());
                continue;
            }
            _ = shutdown.wait(), if draining.is_none() => {
                draining = Some(tokio::time::Instant::now() + DRAIN);
                continue;
            }
            _ = tokio::time::sleep_until(drain_end), if draining.is_some() => return Ok(()),
        };
        let Ok(chunk) = Chunk::decode(&msg) else {
            // A one-packet message (Client::send): as it is (it has no retransmission, so
            // it is written even while draining).
            match write_new(&out_dir, &msg) {
                Ok(path) => {
                    let _ = delivered.send(path).await;
                }
                Err(e) => warn!(error = %e, "a one-packet message could not be written"),
            }
            continue;
        };
        match streams.offer(chunk, Instant::now()) {
            Offered::Delivered | Offered::Ignored => {}
            // A chunk of a message we do not have (we restarted in its middle): tell its
            // sender, in its own SURBs, so it sends the message again rather than
            // retransmitting into nothing until its timeout.
            Offered::Unknown(chunk) if !chunk.surbs.is_empty() && proves_lost(&chunk) => {
                streams.ended(chunk.stream, Instant::now());
                tokio::spawn(break_off(client.clone(), chunk));
            }
            Offered::Unknown(_) => {}
            Offered::Refused(_) => {
                debug!("too many incoming messages at once; one waits for its retransmission");
            }
            // Draining: a new message waits for the next `receive` (its sender retransmits).
            Offered::Opened(first, _) if draining.is_some() => {
                streams.ended(first.stream, Instant::now());
            }
            Offered::Opened(first, inbox) => {
                let (c, done, out, part, tx) = (
                    client.clone(),
                    ended_tx.clone(),
                    out_dir.clone(),
                    partial.clone(),
                    delivered.clone(),
                );
                tokio::spawn(async move {
                    let id = first.stream;
                    incoming(c, first, inbox, &out, &part, tx).await;
                    let _ = done.send(id);
                });
            }
        }
    }
}

/// Whether a chunk of a message we do not have shows that we had it once (and lost it by a
/// restart), rather than having overtaken its `Open` on the way (the mixnet reorders): it
/// acknowledges something of ours, or it lies beyond what a sender sends before its first
/// acknowledgement (slow start).
fn proves_lost(c: &Chunk) -> bool {
    c.ack
        .as_ref()
        .is_some_and(|a| a.cumulative > 0 || !a.ranges.is_empty())
        || (c.body.is_some() && c.seq >= MESSAGE_INITIAL_WINDOW as u32)
}

/// Tell the sender of a message we do not have that it broke off: a reset in its SURBs.
async fn break_off(client: Arc<Client>, mut chunk: Chunk) {
    use crate::pipe::Transport;
    let mut t = SurbTransport::new(client, MAX_SURBS);
    t.on_chunk(&mut chunk, Instant::now());
    let reset = Chunk {
        stream: chunk.stream,
        seq: u32::MAX,
        body: Some(lethe_proto::stream::Body::Reset(Reply::GeneralFailure)),
        ack: None,
        surbs: Vec::new(),
    };
    let _ = tokio::time::timeout(crate::pipe::TRANSMIT_TIMEOUT, t.transmit(reset)).await;
}

/// One incoming message: acknowledge, write to disk, and when whole, name it, hand its
/// path over and end our half (which tells the sender it arrived).
async fn incoming(
    client: Arc<Client>,
    mut first: Chunk,
    inbox: mpsc::Receiver<Chunk>,
    out_dir: &Path,
    partial: &Path,
    delivered: mpsc::Sender<PathBuf>,
) {
    let id = first.stream;
    let mut transport = SurbTransport::new(client, MAX_SURBS);
    crate::pipe::Transport::on_chunk(&mut transport, &mut first, Instant::now());
    let mut receiver = Receiver::new(MESSAGE_WINDOW as u32 + 16);
    let opened = receiver
        .on_chunk(&first)
        .events
        .iter()
        .any(|e| matches!(e, StreamEvent::Opened(None)));
    let Ok(mut sender) = Sender::new(
        id,
        SenderConfig {
            window: 4,
            ..SenderConfig::default()
        },
    ) else {
        return;
    };
    let started = if opened {
        sender.open(None)
    } else {
        // An Open with a target: that is for an exit, not for us.
        sender.reset(Reply::CommandNotSupported)
    };
    if started.is_err() {
        return;
    }
    let pipe = Pipe {
        id,
        config: PipeConfig::default(),
        sender,
        receiver,
        received_any: true,
        socks_reply_pending: false,
        progress: None,
    };
    let (local, app) = MemLocal::pair();
    let file = partial.join(format!("{id:016x}"));
    let out = out_dir.to_path_buf();
    let app_task = tokio::spawn(async move { keep(app, &file, &out, &delivered).await });
    let local = opened.then_some(local);
    let end = pipe.run(&mut transport, local, inbox).await;
    debug!(?end, "incoming message's stream ended");
    let _ = app_task.await;
}

/// Write the message arriving on `app` to `file`; when it is whole, rename it to the next
/// free name in `out_dir`, then end our half. A message over the limit, or one whose
/// stream breaks, is deleted.
async fn keep(
    app: AppEnd,
    file: &Path,
    out_dir: &Path,
    delivered: &mpsc::Sender<PathBuf>,
) -> Option<PathBuf> {
    let (mut rd, mut wr) = app.split();
    let result = async {
        let mut f = tokio::fs::File::create(file).await.ok()?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut len = 0usize;
        loop {
            // An error: the stream broke off before the sender's Fin.
            let n = rd.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            len += n;
            if len > MAX_MESSAGE_BYTES {
                debug!("incoming message over the limit: refused");
                return None;
            }
            f.write_all(&buf[..n]).await.ok()?;
        }
        f.sync_all().await.ok()?;
        drop(f);
        publish(file, out_dir).ok()
    }
    .await;
    match &result {
        // Whole, on disk and named: now the sender may learn it arrived.
        Some(path) => {
            let _ = delivered.send(path.clone()).await;
            let _ = wr.shutdown().await;
        }
        // Dropping our writing half without a shutdown resets the stream: the sender
        // learns that the message did not arrive.
        None => {
            let _ = std::fs::remove_file(file);
        }
    }
    result
}

/// Give the whole message in `tmp` the first free `message-NNNNNN` name in `dir` (a hard
/// link, so a name never shows a partial or empty file), drop `tmp`, and make the new name
/// durable.
fn publish(tmp: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    for i in 1u64.. {
        let p = dir.join(format!("message-{i:06}"));
        match std::fs::hard_link(tmp, &p) {
            Ok(()) => {
                std::fs::remove_file(tmp)?;
                std::fs::File::open(dir)?.sync_all()?;
                return Ok(p);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the names run out after u64::MAX")
}

/// Write the one-packet message `msg` to the first free `message-NNNNNN` in `dir`.
pub fn write_new(dir: &Path, msg: &[u8]) -> std::io::Result<PathBuf> {
    let partial = dir.join(PARTIAL_DIR);
    std::fs::create_dir_all(&partial)?;
    let tmp = partial.join(format!("one-{:016x}", rand::rng().next_u64()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, msg)?;
        f.sync_all()?;
        publish(&tmp, dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The stream driver's end of an in-memory pipe to the message code. A clean end of
/// either direction is a shutdown of its writing half, which marks a flag; a half dropped
/// without it (a stream cut off, a message the recipient could not store) reads as an
/// error at the other end, never as a clean end.
pub(crate) struct MemLocal {
    stream: DuplexStream,
    /// The peer's Fin has reached the application.
    peer_fin: Arc<AtomicBool>,
    /// The application finished its half: the stream may send our Fin.
    app_done: Arc<AtomicBool>,
}

/// The message code's end.
struct AppEnd {
    stream: DuplexStream,
    peer_fin: Arc<AtomicBool>,
    app_done: Arc<AtomicBool>,
}

impl MemLocal {
    fn pair() -> (MemLocal, AppEnd) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (peer_fin, app_done) = (Arc::default(), Arc::default());
        (
            MemLocal {
                stream: a,
                peer_fin: Arc::clone(&peer_fin),
                app_done: Arc::clone(&app_done),
            },
            AppEnd {
                stream: b,
                peer_fin,
                app_done,
            },
        )
    }
}

impl AppEnd {
    /// Reading (an error unless the peer finished) and writing (shut it down to finish).
    fn split(self) -> (FinReader, FinWriter) {
        let (r, w) = tokio::io::split(self.stream);
        (
            FinReader {
                inner: r,
                clean: self.peer_fin,
            },
            FinWriter {
                inner: w,
                fin: self.app_done,
            },
        )
    }
}

/// A writing half whose shutdown is a clean end.
pub(crate) struct FinWriter {
    inner: WriteHalf<DuplexStream>,
    fin: Arc<AtomicBool>,
}

impl AsyncWrite for FinWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.fin.store(true, Ordering::Release);
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A reading half that reports the end of the stream only if the other side shut its
/// writing half down; otherwise (dropped) an error.
pub(crate) struct FinReader {
    inner: ReadHalf<DuplexStream>,
    clean: Arc<AtomicBool>,
}

impl AsyncRead for FinReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(()))
                if wanted
                    && buf.filled().len() == before
                    && !self.clean.load(Ordering::Acquire) =>
            {
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the other side broke off",
                )))
            }
            other => other,
        }
    }
}

impl Local for MemLocal {
    type Read = FinReader;
    type Write = FinWriter;
    fn split(self) -> (FinReader, FinWriter) {
        let (r, w) = tokio::io::split(self.stream);
        (
            FinReader {
                inner: r,
                clean: self.app_done,
            },
            FinWriter {
                inner: w,
                fin: self.peer_fin,
            },
        )
    }
    fn abort(_: &FinWriter) {
        // Dropping it without a shutdown is the error.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_shutdown_is_a_clean_end_either_way() {
        // The peer's Fin: the driver shuts its writing half down; the app reads to the end.
        let (local, app) = MemLocal::pair();
        let (_r, mut w) = local.split();
        let (mut ar, _aw) = app.split();
        w.write_all(b"whole").await.unwrap();
        w.shutdown().await.unwrap();
        let mut got = Vec::new();
        ar.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"whole");

        // A broken stream: the driver drops its halves (aborted or gone) without a shutdown.
        let (local, app) = MemLocal::pair();
        let (r, mut w) = local.split();
        let (mut ar, _aw) = app.split();
        w.write_all(b"part").await.unwrap();
        MemLocal::abort(&w);
        drop((r, w));
        let mut got = Vec::new();
        assert!(
            ar.read_to_end(&mut got).await.is_err(),
            "a cut stream is not a message"
        );
        assert_eq!(got, b"part");

        // The app could not store the message: it drops its writing half, and the driver
        // reads an error (so it resets the stream), not the end that would send our Fin.
        let (local, app) = MemLocal::pair();
        let (mut r, _w) = local.split();
        let (ar, aw) = app.split();
        drop((ar, aw));
        let mut buf = [0u8; 8];
        assert!(r.read(&mut buf).await.is_err());
        // ...and when it did store it, a clean end.
        let (local, app) = MemLocal::pair();
        let (mut r, _w) = local.split();
        let (_ar, mut aw) = app.split();
        aw.shutdown().await.unwrap();
        assert_eq!(r.read(&mut buf).await.unwrap(), 0);
    }

    #[test]
    fn only_a_chunk_from_after_the_first_answer_proves_a_message_lost() {
        use lethe_proto::stream::{AckFrame, Body};
        let chunk = |seq: u32, cumulative: Option<u32>| Chunk {
            stream: 1,
            seq,
            body: Some(Body::Data(vec![0; 8])),
            ack: cumulative.map(|cumulative| AckFrame {
                cumulative,
                ranges: Vec::new(),
            }),
            surbs: Vec::new(),
        };
        // Overtook its Open: early in the slow start, acknowledging nothing of ours.
        assert!(!proves_lost(&chunk(3, None)));
        assert!(!proves_lost(&chunk(3, Some(0))));
        // Acknowledges our Open, or was sent after an acknowledgement of ours.
        assert!(proves_lost(&chunk(3, Some(1))));
        assert!(proves_lost(&chunk(MESSAGE_INITIAL_WINDOW as u32, None)));
    }

    #[test]
    fn names_are_taken_once_and_in_order_and_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_new(dir.path(), b"a").unwrap();
        let b = write_new(dir.path(), b"b").unwrap();
        assert!(a.ends_with("message-000001") && b.ends_with("message-000002"));
        assert_eq!(std::fs::read(&b).unwrap(), b"b");
        // Only the two names and the empty partial folder: no temporary file left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        assert_eq!(
            std::fs::read_dir(dir.path().join(PARTIAL_DIR))
                .unwrap()
                .count(),
            0
        );
    }
}
