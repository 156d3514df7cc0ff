//! One outgoing link per next hop: a long-lived QUIC stream with batched frames,
//! reconnected with backoff.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lethe_net::link::push_frame;
use lethe_net::tls::{self};
use lethe_net::{NetError, Sensitive};
use lethe_proto::packet::PACKET_SIZE;
use lethe_proto::{FrameKind, NodeId, Packet};
use tokio::sync::mpsc;
use tracing::debug;

use crate::metrics::Reason;

use super::state::*;

/// One long-lived link to a next hop: connect (pinned to its certificate), write batches of
/// frames on one stream, reconnect with backoff on failure. Ends when its channel closes.
pub(super) async fn link_task(shared: Arc<Shared>, peer: NodeId, mut rx: mpsc::Receiver<Packet>) {
    let mut backoff = Duration::from_millis(50);
    let mut batch: Vec<Packet> = Vec::with_capacity(64);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * (PACKET_SIZE + 4));
    let who = Sensitive::new(peer.short());
    loop {
        let target = shared
            .topology()
            .and_then(|t| t.node(&peer).map(|n| (n.address, n.tls_cert)));
        let conn = match target {
            Some((addr, cert)) => {
                tls::connect(&shared.endpoint, &shared.keys.tls, addr, cert).await
            }
            None => Err(NetError::Directory("next hop left the topology".into())),
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                debug!(peer = %who, error = %Sensitive::new(e.to_string()), "link connect failed");
                if rx.is_closed() {
                    // The next hop left the topology (or we are stopping): what is still
                    // waiting for it cannot be delivered.
                    let left = batch.len() + rx.len();
                    for _ in 0..left {
                        shared.metrics.count_drop(Reason::UnknownNextHop);
                    }
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let mut send = match conn.open_uni().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        shared.metrics.links_up.add(1);
        debug!(peer = %who, "link up");
        backoff = Duration::from_millis(50);
        let closed = loop {
            if batch.is_empty() && rx.recv_many(&mut batch, 64).await == 0 {
                break true;
            }
            buf.clear();
            for p in &batch {
                if push_frame(&mut buf, FrameKind::Packet, p.as_bytes()).is_err() {
                    shared.metrics.count_drop(Reason::Malformed);
                }
            }
            if send.write_all(&buf).await.is_err() {
                // Keep the batch: it is sent again on the next connection.
                break false;
            }
            shared
                .metrics
                .packets_out
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
        };
        shared.metrics.links_up.add(-1);
        if closed {
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
            conn.close(code::SHUTDOWN.into(), b"link closed");
            return;
        }
        debug!(peer = %who, "link lost, reconnecting");
    }
}
