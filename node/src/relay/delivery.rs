//! Delivery at a gateway's final hop: to a subscribed client's session, else to the
//! mailbox; a session writes the mailbox and then what arrives.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lethe_net::link::write_frame;
use lethe_proto::{ClientId, FrameKind};
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
            Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) => m,
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
    let backlog = {
        let mut mb = lock(&shared.mailbox);
        let (b, expired) = mb.take(shared.now(), &client);
        for _ in 0..expired {
            shared.metrics.count_drop(Reason::Expired);
        }
        shared.metrics.mailbox_messages.set(mb.len() as i64);
        b
    };
    let mut send = match conn.open_uni().await {
        Ok(s) => s,
        Err(_) => {
            requeue(backlog);
            return;
        }
    };
    let mut pending = backlog.into_iter();
    let failed = loop {
        let msg = match pending.next() {
            Some(m) => m,
            None => tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => break None,
                },
                _ = conn.closed() => break None,
            },
        };
        // Each queued item is the frame kind's byte, then the body (see `deliver`).
        let (kind, body) = match msg.split_first() {
            Some((&k, body)) if k == FrameKind::Reply as u8 => (FrameKind::Reply, body),
            Some((_, body)) => (FrameKind::Message, body),
            None => continue,
        };
        if write_frame(&mut send, kind, body).await.is_err() {
            break Some(msg);
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
