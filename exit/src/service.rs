//! The service: dispatch the chunks of incoming messages to their streams (opening new
//! ones within `max_streams`, refusing late `Open`s of ended ones), and drive each stream
//! between its target and the mixnet.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lethe_client::pipe::{Pipe, PipeConfig, Transport};
use lethe_client::{Client, ConnectOptions};
use lethe_net::Sensitive;
use lethe_net::clock::lock;
use lethe_proto::NodeId;
use lethe_proto::socks::Reply;
use lethe_proto::stream::{Body, Chunk, Receiver, Sender, SenderConfig, StreamEvent, StreamId};
use tokio::sync::mpsc;
use tracing::{debug, info};

#[allow(unused_imports)]
use crate::*;

pub(crate) struct Ctx {
    pub(crate) client: Arc<Client>,
    pub(crate) gateway: NodeId,
    pub(crate) cfg: ExitSection,
    pub(crate) allow: AllowList,
    pub(crate) streams: Mutex<HashMap<StreamId, mpsc::Sender<Chunk>>>,
}

/// Run the exit in `dir` until `shutdown` turns true or the gateway connection closes.
pub async fn run(dir: &Path, mut shutdown: lethe_net::shutdown::Shutdown) -> Result<(), ExitError> {
    let file = ExitFile::load(dir)?;
    let allow = AllowList::parse(&file.exit.allow)?;
    let client = Client::connect(
        dir,
        ConnectOptions {
            bind: file.exit.bind,
            ..Default::default()
        },
    )
    .await?;
    client.subscribe().await?;
    let mut messages = client.take_messages().await;
    let ctx = Arc::new(Ctx {
        gateway: client.address().gateway,
        client: Arc::new(client),
        cfg: file.exit,
        allow,
        streams: Mutex::new(HashMap::new()),
    });
    // The exit's sending shows nothing of its streams: its replies wait for the slots of
    // the payload stream every exit shares (the directory's exit rate), cover fills the rest.
    let _cover = match ctx.client.start_exit_cover() {
        Ok(c) => {
            let r = ctx.client.topology().exit_rates();
            info!(
                payload_per_sec = r.payload,
                loops_per_sec = r.loop_,
                drops_per_sec = r.drop,
                "exit cover running"
            );
            Some(c)
        }
        Err(e) => {
            info!(error = %e, "no exit cover: replies leave as they are made");
            None
        }
    };
    info!(rules = ctx.allow.0.len(), "exit service running");
    // Streams that ended recently: a late retransmission of their Open must not reopen them.
    let mut ended = RecentlyEnded::default();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<StreamId>();
    let mut dropped = 0u64;
    loop {
        let msg = tokio::select! {
            m = messages.recv() => match m {
                Some(m) => m,
                None => break,
            },
            Some(id) = ended_rx.recv() => {
                lock(&ctx.streams).remove(&id);
                ended.insert(id, Instant::now());
                continue;
            }
            _ = shutdown.wait() => break,
        };
        let chunk = match Chunk::decode(&msg) {
            Ok(c) => c,
            Err(e) => {
                dropped += 1;
                debug!(error = %e, dropped, "malformed chunk dropped");
                continue;
            }
        };
        let id = chunk.stream;
        let inbox = lock(&ctx.streams).get(&id).cloned();
        if let Some(tx) = inbox {
            let _ = tx.try_send(chunk);
            continue;
        }
        let opens = chunk.seq == 0 && matches!(chunk.body, Some(Body::Open(Some(_))));
        if !opens || ended.contains(&id, Instant::now()) {
            continue;
        }
        if lock(&ctx.streams).len() >= ctx.cfg.max_streams {
            debug!("stream limit reached; refusing a stream");
            // Making the refusal's packet is Sphinx work: not on this loop.
            let c = ctx.clone();
            tokio::spawn(async move { refuse(&c, chunk).await });
            continue;
        }
        let (tx, rx) = mpsc::channel(256);
        lock(&ctx.streams).insert(id, tx);
        let (c, done) = (ctx.clone(), ended_tx.clone());
        tokio::spawn(async move {
            serve_stream(c, chunk, rx).await;
            let _ = done.send(id);
        });
    }
    info!("exit service stopping");
    Ok(())
}

/// Answer an `Open` we cannot serve with a reset, in one of its own SURBs.
/// How long an ended stream's id is remembered, and how many are at most.
pub(crate) const ENDED_MEMORY: Duration = Duration::from_secs(120);

pub(crate) const ENDED_MAX: usize = 65_536;

/// Ids of streams that ended in the last [`ENDED_MEMORY`] (at most [`ENDED_MAX`]), forgotten
/// in the order they ended.
#[derive(Default)]
pub(crate) struct RecentlyEnded {
    order: VecDeque<(Instant, StreamId)>,
    ids: std::collections::HashSet<StreamId>,
}

impl RecentlyEnded {
    fn insert(&mut self, id: StreamId, now: Instant) {
        self.expire(now);
        if self.order.len() >= ENDED_MAX
            && let Some((_, old)) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        if self.ids.insert(id) {
            self.order.push_back((now, id));
        }
    }

    fn contains(&mut self, id: &StreamId, now: Instant) -> bool {
        self.expire(now);
        self.ids.contains(id)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, old)) = self.order.front() {
            if now.saturating_duration_since(t) < ENDED_MEMORY {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&old);
        }
    }
}

pub(crate) async fn refuse(ctx: &Arc<Ctx>, mut chunk: Chunk) {
    let mut t = ExitTransport::new(ctx.clone());
    t.on_chunk(&mut chunk, Instant::now());
    let reply = Chunk {
        stream: chunk.stream,
        seq: 0,
        body: Some(Body::Reset(Reply::GeneralFailure)),
        ack: Some(lethe_proto::stream::AckFrame {
            cumulative: 1,
            ranges: Vec::new(),
        }),
        surbs: Vec::new(),
    };
    let _ = tokio::time::timeout(lethe_client::pipe::TRANSMIT_TIMEOUT, t.transmit(reply)).await;
}

pub(crate) async fn serve_stream(ctx: Arc<Ctx>, mut first: Chunk, inbox: mpsc::Receiver<Chunk>) {
    let id = first.stream;
    let mut transport = ExitTransport::new(ctx.clone());
    transport.on_chunk(&mut first, Instant::now());
    let mut receiver = Receiver::new(64);
    let target = receiver
        .on_chunk(&first)
        .events
        .into_iter()
        .find_map(|e| match e {
            StreamEvent::Opened(Some(t)) => Some(t),
            _ => None,
        });
    let cfg = SenderConfig {
        window: lethe_client::socks::EXIT_WINDOW,
        ..SenderConfig::default()
    };
    let Ok(mut sender) = Sender::new(id, cfg) else {
        return;
    };
    let timeout = Duration::from_secs(ctx.cfg.connect_timeout_secs);
    let tcp = match &target {
        Some(t) => open_target(&ctx.allow, t, timeout).await,
        None => Err(Reply::GeneralFailure),
    };
    let tcp = match tcp {
        Ok(s) => {
            let _ = sender.open(None);
            Some(s)
        }
        Err(code) => {
            debug!(?code, target = ?target.as_ref().map(Sensitive::new), "stream refused");
            let _ = sender.reset(code);
            None
        }
    };
    let pipe = Pipe {
        id,
        config: PipeConfig {
            max_buffered: ctx.cfg.max_buffered,
            idle: Duration::from_secs(ctx.cfg.idle_secs),
            stall: Duration::from_secs(ctx.cfg.stall_secs.max(1)),
            ..PipeConfig::default()
        },
        sender,
        receiver,
        received_any: true,
        socks_reply_pending: false,
    };
    let end = pipe.run(&mut transport, tcp, inbox).await;
    debug!(?end, "stream ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_streams_are_remembered_for_a_while_then_forgotten() {
        let mut e = RecentlyEnded::default();
        let t0 = Instant::now();
        let id: StreamId = 7;
        e.insert(id, t0);
        assert!(e.contains(&id, t0 + Duration::from_secs(60)));
        assert!(!e.contains(&id, t0 + ENDED_MEMORY));
        assert!(
            e.order.is_empty() && e.ids.is_empty(),
            "expired ids are dropped"
        );
    }
}
