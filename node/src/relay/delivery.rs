//! Delivery at a gateway's final hop: to a subscribed client's session, else to the
//! mailbox; a session writes the mailbox and then what arrives, on the downstream cover
//! schedule when the directory publishes one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::collections::VecDeque;

use lethe_net::link::write_frame;
use lethe_proto::downstream::{Downstream, DownstreamMode, DownstreamSend};
use lethe_proto::frame::DELIVERY_BODY_LEN;
use lethe_proto::{ClientId, FrameKind};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::mpsc;

use crate::metrics::Reason;

use super::state::*;

/// Hand a message or a SURB reply (`kind`, frame body) to its connected client, or keep it
/// in the mailbox. Sessions and the mailbox hold the frame kind's byte followed by the body.
pub(super) fn deliver(shared: &Shared, client: ClientId, kind: FrameKind, body: &[u8]) {
    if client.is_drop() {
        // A client's drop cover: its purpose ends here.
        shared.metrics.drop_cover.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut msg = Vec::with_capacity(1 + body.len());
    msg.push(kind as u8);
    msg.extend_from_slice(body);
    let msg = match lock(&shared.sessions).get(&client) {
        Some((_, tx)) => match tx.try_send(msg) {
            Ok(()) => {
                shared.metrics.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(mpsc::error::TrySendError::Full(m)) => {
                shared
                    .metrics
                    .downstream_overflow
                    .fetch_add(1, Ordering::Relaxed);
                m
            }
            Err(mpsc::error::TrySendError::Closed(m)) => m,
        },
        None => msg,
    };
    if keep_in_mailbox(shared, client, msg) {
        shared.metrics.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Put one message in the mailbox (O(1): an older message may make room), counting what
/// was evicted or expired; returns whether the message was kept.
pub(super) fn keep_in_mailbox(shared: &Shared, client: ClientId, msg: Vec<u8>) -> bool {
    let mut mb = lock(&shared.mailbox);
    let kept = match mb.push(shared.now(), client, msg) {
        Ok(p) => {
            for _ in 0..p.evicted {
                shared.metrics.count_drop(Reason::MailboxEvicted);
            }
            for _ in 0..p.expired {
                shared.metrics.count_drop(Reason::Expired);
            }
            true
        }
        Err(_) => {
            shared.metrics.count_drop(Reason::MailboxFull);
            false
        }
    };
    shared.metrics.mailbox_messages.set(mb.len() as i64);
    kept
}

/// A client asked for its messages on this connection: register the session, then send the
/// mailbox and everything that arrives while it stays connected.
pub(super) fn subscribe(shared: &Arc<Shared>, ctx: &ConnCtx) {
    let client = ClientId(ctx.cert);
    let (tx, rx) = mpsc::channel::<Vec<u8>>(1024);
    let seq = shared.session_seq.fetch_add(1, Ordering::Relaxed) + 1;
    if ctx
        .session
        .compare_exchange(0, seq, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    lock(&shared.sessions).insert(client, (seq, tx));
    tokio::spawn(session_writer(
        shared.clone(),
        ctx.conn.clone(),
        client,
        seq,
        rx,
    ));
}

/// A session writer looks at the mailbox again (for frames that found its queue full) at
/// most this often, and at least this often while its queue is empty.
const MAILBOX_RECHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Downstream cover as the directory publishes it: the mean gap between slots (zero: none)
/// and how real frames share them.
fn downstream_params(shared: &Shared) -> (std::time::Duration, DownstreamMode) {
    let cover = shared
        .topology()
        .map(|t| t.body().cover)
        .unwrap_or_default();
    let mode = if cover.downstream_strict {
        DownstreamMode::Strict
    } else {
        DownstreamMode::Burst
    };
    (
        std::time::Duration::from_millis(cover.downstream_mean_ms),
        mode,
    )
}

/// One queued item (the frame kind's byte, then the body; see [`deliver`]) as a frame: a
/// message is padded with zeros to [`DELIVERY_BODY_LEN`], the size of every frame a client
/// receives, so that on the wire a message, a reply and cover look alike.
fn to_frame(msg: &[u8]) -> Option<(FrameKind, Vec<u8>)> {
    match msg.split_first() {
        Some((&k, body)) if k == FrameKind::Reply as u8 => Some((FrameKind::Reply, body.to_vec())),
        Some((_, body)) => {
            let mut b = Vec::with_capacity(DELIVERY_BODY_LEN);
            b.extend_from_slice(body);
            if b.len() < DELIVERY_BODY_LEN {
                b.resize(DELIVERY_BODY_LEN, 0);
            }
            Some((FrameKind::Message, b))
        }
        None => None,
    }
}

/// Write the mailbox, then what arrives, to one connected client: at once without
/// downstream cover, else on its Poisson slots ([`lethe_proto::downstream`]) with cover
/// frames in the empty ones. Frames that found the queue full wait in the mailbox and are
/// taken from there when the queue runs empty.
pub(super) async fn session_writer(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    client: ClientId,
    seq: u64,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let requeue = |msgs: Vec<Vec<u8>>| {
        for m in msgs {
            keep_in_mailbox(&shared, client, m);
        }
    };
    let from_mailbox = || {
        let mut mb = lock(&shared.mailbox);
        let (b, expired) = mb.take(shared.now(), &client);
        for _ in 0..expired {
            shared.metrics.count_drop(Reason::Expired);
        }
        shared.metrics.mailbox_messages.set(mb.len() as i64);
        b
    };
    let mut pending: VecDeque<Vec<u8>> = from_mailbox().into();
    let mut send = match conn.open_uni().await {
        Ok(s) => s,
        Err(_) => {
            requeue(pending.into());
            return;
        }
    };
    let (gap, mode) = downstream_params(&shared);
    // An unusable rate cannot come from a verified document; it would mean no cover.
    let mut schedule = Downstream::new(gap, mode)
        .unwrap_or_else(|_| Downstream::new(std::time::Duration::ZERO, mode).expect("rate 0"));
    let clock = lethe_net::clock::Clock::new();
    // The slots' secret: an observer must not predict when frames leave.
    let mut rng = StdRng::from_rng(&mut rand::rng());
    schedule.start(clock.now(), &mut rng);
    let cover = vec![0u8; DELIVERY_BODY_LEN];
    let mut mailbox_checked = std::time::Instant::now();
    let failed: Option<Vec<u8>> = 'session: loop {
        if pending.is_empty() {
            match rx.try_recv() {
                Ok(m) => pending.push_back(m),
                Err(mpsc::error::TryRecvError::Disconnected) => break None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if mailbox_checked.elapsed() >= MAILBOX_RECHECK {
                        mailbox_checked = std::time::Instant::now();
                        pending.extend(from_mailbox());
                    }
                }
            }
        }
        if !pending.is_empty() && schedule.real_now(clock.now(), &mut rng) {
            let msg = pending.pop_front().expect("not empty");
            if let Some((kind, body)) = to_frame(&msg)
                && write_frame(&mut send, kind, &body).await.is_err()
            {
                break Some(msg);
            }
            continue;
        }
        let slot = schedule.poll_timeout().map(|t| clock.instant(t));
        tokio::select! {
            m = rx.recv(), if pending.is_empty() => match m {
                Some(m) => pending.push_back(m),
                None => break None,
            },
            _ = sleep_until(slot), if slot.is_some() => {
                while let Some(what) = schedule.pop_due(clock.now(), &mut rng, !pending.is_empty()) {
                    match what {
                        DownstreamSend::Real => {
                            let msg = pending.pop_front().expect("a real frame waits");
                            if let Some((kind, body)) = to_frame(&msg)
                                && write_frame(&mut send, kind, &body).await.is_err()
                            {
                                break 'session Some(msg);
                            }
                        }
                        DownstreamSend::Cover => {
                            if write_frame(&mut send, FrameKind::Cover, &cover).await.is_err() {
                                break 'session None;
                            }
                            shared.metrics.downstream_cover.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if pending.is_empty()
                        && let Ok(m) = rx.try_recv()
                    {
                        pending.push_back(m);
                    }
                }
            }
            // Without cover nothing else wakes the writer while its queue is empty: look
            // at the mailbox now and then for frames that overflowed the queue.
            _ = tokio::time::sleep(MAILBOX_RECHECK), if slot.is_none() && pending.is_empty() => {}
            _ = conn.closed() => break None,
        }
    };
    // The client went away: whatever was not written waits in the mailbox.
    {
        let mut sessions = lock(&shared.sessions);
        if sessions.get(&client).is_some_and(|(s, _)| *s == seq) {
            sessions.remove(&client);
        }
    }
    rx.close();
    let mut rest: Vec<Vec<u8>> = failed.into_iter().chain(pending).collect();
    while let Ok(m) = rx.try_recv() {
        rest.push(m);
    }
    requeue(rest);
}

/// Sleep until `at` (forever when `None`; the caller's `select!` guard keeps that branch off).
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
