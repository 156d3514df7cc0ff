//! Incoming connections: admission (Retry, per-prefix and relay budgets, handshakes),
//! identification of the peer, liveness probes, and the streams that feed the crypto pool.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lethe_net::link::{ReadOutcome, answer_describe, read_frame};
use lethe_net::tls::peer_cert_hash;
use lethe_net::{NetError, Sensitive};
use lethe_proto::limit::source_prefix;
use lethe_proto::packet::PACKET_SIZE;
use lethe_proto::{ClientId, FrameKind, Key32, Topology};
use tokio::task::JoinSet;
use tracing::debug;

use crate::metrics::Reason;

use super::state::*;
use super::*;

pub(super) async fn accept_loop(shared: Arc<Shared>, jobs: crossbeam_channel::Sender<Job>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        if shared.shutting_down() {
            incoming.refuse();
            continue;
        }
        // A stateless Retry first: costs us one packet, and only a peer that really
        // receives at its source address comes back (no spoofed floods of Initials).
        if !incoming.remote_address_validated() && incoming.may_retry() {
            let _ = incoming.retry();
            continue;
        }
        let remote = incoming.remote_address();
        let prefix = source_prefix(remote.ip());
        // Relays connect from the address they publish; a spoofed one cannot pass the Retry.
        let relay = shared
            .topology()
            .is_some_and(|t| t.node_at(&remote).is_some());
        // Strict downstream cover: a client's link pads every datagram to one size, so the
        // acknowledgements we send it look alike whatever their fields hold.
        let padded = !relay
            && shared.is_gateway()
            && shared.topology().is_some_and(|t| {
                let c = t.body().cover;
                c.downstream_strict && c.downstream_mean_ms > 0
            });
        let counters = if relay {
            &shared.relay_connections
        } else {
            &shared.connections
        };
        // When a budget is full, new connections are refused; nothing already open is
        // evicted (an attacker cannot push established peers out).
        if !lock(counters).acquire(prefix) {
            shared
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        let sh = shared.clone();
        let jobs = jobs.clone();
        tokio::spawn(async move {
            let peer = Sensitive::new(remote);
            let connecting = if padded {
                incoming.accept_with(sh.padded_server.clone())
            } else {
                incoming.accept()
            };
            let connected = match connecting {
                Ok(c) => c.await,
                Err(e) => Err(e),
            };
            match connected {
                // Handshakes are counted once they succeed: Initials that can never complete
                // spend only their own prefix's connection slots, for the handshake's time.
                Ok(conn) if !lock(&sh.handshakes).try_take(sh.now()) => {
                    sh.metrics
                        .connections_refused
                        .fetch_add(1, Ordering::Relaxed);
                    conn.close(code::BUSY.into(), b"busy");
                }
                Ok(conn) => serve_connection(sh.clone(), conn, jobs, prefix).await,
                Err(e) => debug!(peer = %peer, error = %e, "handshake failed"),
            }
            let counters = if relay {
                &sh.relay_connections
            } else {
                &sh.connections
            };
            lock(counters).release(prefix);
        });
    }
}

pub(super) async fn identify(shared: &Shared, cert: Key32) -> Option<Peer> {
    let known = |t: Option<Arc<Topology>>| t.and_then(|t| t.node_by_cert(&cert).map(|n| n.id));
    if let Some(id) = known(shared.topology()) {
        return Some(Peer::Node(id));
    }
    if shared.is_gateway() {
        return Some(Peer::Client);
    }
    // A mix only talks to relays; the peer may have joined after our last fetch. Look
    // again, at most once a second whatever unknown peers do.
    let now_ms = shared.clock.elapsed_ms();
    let last = shared.last_fetch_ms.load(Ordering::Relaxed);
    if now_ms.saturating_sub(last) >= 1000
        && shared
            .last_fetch_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        && let Ok(t) = shared.directory.fetch().await
    {
        shared.set_topology(t);
    }
    known(shared.topology()).map(Peer::Node)
}

pub(super) async fn serve_connection(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    jobs: crossbeam_channel::Sender<Job>,
    prefix: IpAddr,
) {
    let remote: Sensitive<SocketAddr> = Sensitive::new(conn.remote_address());
    let Some(cert) = peer_cert_hash(&conn) else {
        conn.close(code::UNKNOWN_PEER.into(), b"no certificate");
        return;
    };
    let Some(peer) = identify(&shared, cert).await else {
        shared
            .metrics
            .connections_refused
            .fetch_add(1, Ordering::Relaxed);
        debug!(peer = %remote, "refused a connection from an unknown relay");
        // A directory authority's liveness probe is such a peer: it may ask who we are
        // (once, briefly) before the connection closes.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if let Ok((send, recv)) = conn.accept_bi().await {
                let _ = answer_describe(send, recv, &shared.own_descriptor_json()).await;
            }
        })
        .await;
        conn.close(code::UNKNOWN_PEER.into(), b"unknown peer");
        return;
    };
    let is_client = matches!(peer, Peer::Client);
    if is_client {
        shared.metrics.clients_connected.add(1);
    }
    match peer {
        Peer::Node(id) => debug!(relay = %Sensitive::new(id.short()), "relay connection up"),
        Peer::Client => debug!(peer = %remote, "client connection up"),
    }
    let ctx = Arc::new(ConnCtx {
        conn: conn.clone(),
        cert,
        session: std::sync::atomic::AtomicU64::new(0),
        prefix: is_client.then_some(prefix),
    });
    // Streams are read until the connection closes, also during a shutdown's grace period:
    // packets already on their way to us are still mixed and handed on. Finished readers are
    // reaped as they end, so a peer cycling through streams holds nothing.
    let mut readers = JoinSet::new();
    loop {
        tokio::select! {
            s = conn.accept_uni() => match s {
                Ok(recv) => {
                    readers.spawn(read_stream(shared.clone(), ctx.clone(), recv, jobs.clone()));
                }
                Err(_) => break,
            },
            // Who are we (a liveness probe): the answer is public, our signed descriptor.
            s = conn.accept_bi() => match s {
                Ok((send, recv)) => {
                    let d = shared.own_descriptor_json();
                    readers.spawn(async move {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            answer_describe(send, recv, &d),
                        )
                        .await;
                    });
                }
                Err(_) => break,
            },
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
        }
    }
    readers.abort_all();
    if is_client {
        shared.metrics.clients_connected.add(-1);
    }
    // Forget this connection's session (the writer does too when it notices the close).
    let seq = ctx.session.load(Ordering::Relaxed);
    if seq != 0 {
        let id = ClientId(cert);
        let mut sessions = lock(&shared.sessions);
        if sessions.get(&id).is_some_and(|(s, _)| *s == seq) {
            sessions.remove(&id);
        }
    }
    debug!(peer = %remote, "connection closed");
}

pub(super) async fn read_stream(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    mut recv: quinn::RecvStream,
    jobs: crossbeam_channel::Sender<Job>,
) {
    let mut body = Vec::with_capacity(PACKET_SIZE);
    loop {
        match read_frame(&mut recv, &mut body).await {
            Ok(ReadOutcome::Frame(FrameKind::Packet)) => {
                shared.metrics.packet_in();
                if let Some(p) = ctx.prefix
                    && !lock(&shared.packet_budget).try_take(p, shared.now())
                {
                    shared.metrics.count_drop(Reason::RateLimited);
                    continue;
                }
                let bytes = std::mem::replace(&mut body, Vec::with_capacity(PACKET_SIZE));
                let job = Job {
                    arrival: shared.now(),
                    bytes,
                    from_client: ctx.prefix.is_some(),
                };
                if jobs.try_send(job).is_err() {
                    shared.metrics.count_drop(Reason::Overload);
                }
            }
            Ok(ReadOutcome::Frame(FrameKind::Subscribe)) => {
                // Any peer of a gateway may collect the messages addressed to its own
                // certificate's hash, once per connection (a relay's certificate cannot
                // shadow a client's id this way).
                let first = ctx.session.load(Ordering::Relaxed) == 0;
                if shared.is_gateway() && first {
                    subscribe(&shared, &ctx);
                } else {
                    shared.metrics.count_drop(Reason::BadFrame);
                    let _ = recv.stop(code::BAD_FRAME.into());
                    return;
                }
            }
            Ok(ReadOutcome::Frame(
                FrameKind::Message
                | FrameKind::Reply
                | FrameKind::Describe
                | FrameKind::Descriptor
                | FrameKind::Cover,
            )) => {
                shared.metrics.count_drop(Reason::BadFrame);
                let _ = recv.stop(code::BAD_FRAME.into());
                return;
            }
            Ok(ReadOutcome::End) => return,
            Err(NetError::Frame(e)) => {
                debug!(error = %e, "bad frame; closing the stream");
                shared.metrics.count_drop(Reason::BadFrame);
                let _ = recv.stop(code::BAD_FRAME.into());
                return;
            }
            Err(NetError::Read(quinn::ReadExactError::FinishedEarly(_))) => {
                shared.metrics.count_drop(Reason::Truncated);
                return;
            }
            Err(_) => return,
        }
    }
}
