//! The service: dispatch the chunks of incoming messages to their streams (opening new
//! ones within `max_streams`, refusing late `Open`s of ended ones: [`Acceptor`]), and drive
//! each stream between its target and the mixnet, answering in the client's SURBs
//! ([`SurbTransport`]).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_client::accept::{Acceptor, Offered};
use lethe_client::answer::SurbTransport;
use lethe_client::pipe::{Pipe, PipeConfig, Transport};
use lethe_client::{Client, ConnectOptions};
use lethe_net::Sensitive;
use lethe_proto::socks::Reply;
use lethe_proto::stream::{Body, Chunk, Receiver, Sender, SenderConfig, StreamEvent, StreamId};
use tokio::sync::mpsc;
use tracing::{debug, info};

#[allow(unused_imports)]
use crate::*;

pub(crate) struct Ctx {
    pub(crate) client: Arc<Client>,
    pub(crate) cfg: ExitSection,
    pub(crate) allow: AllowList,
}

impl Ctx {
    fn transport(&self) -> SurbTransport {
        SurbTransport::new(self.client.clone(), self.cfg.max_surbs_per_stream)
    }
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
        client: Arc::new(client),
        cfg: file.exit,
        allow,
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
    let mut streams = Acceptor::new(ctx.cfg.max_streams, 256);
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<StreamId>();
    let mut dropped = 0u64;
    loop {
        let msg = tokio::select! {
            m = messages.recv() => match m {
                Some(m) => m,
                None => break,
            },
            Some(id) = ended_rx.recv() => {
                streams.ended(id, Instant::now());
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
        match streams.offer(chunk, Instant::now()) {
            Offered::Delivered | Offered::Ignored | Offered::Unknown(_) => {}
            Offered::Refused(chunk) => {
                debug!("stream limit reached; refusing a stream");
                // Making the refusal's packet is Sphinx work: not on this loop.
                let c = ctx.clone();
                tokio::spawn(async move { refuse(&c, chunk).await });
            }
            Offered::Opened(chunk, rx) => {
                let id = chunk.stream;
                let (c, done) = (ctx.clone(), ended_tx.clone());
                tokio::spawn(async move {
                    serve_stream(c, chunk, rx).await;
                    let _ = done.send(id);
                });
            }
        }
    }
    info!("exit service stopping");
    Ok(())
}

/// Answer an `Open` we cannot serve with a reset, in one of its own SURBs.
pub(crate) async fn refuse(ctx: &Arc<Ctx>, mut chunk: Chunk) {
    let mut t = ctx.transport();
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
    let mut transport = ctx.transport();
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
        progress: None,
    };
    let end = pipe.run(&mut transport, tcp, inbox).await;
    debug!(?end, "stream ended");
}
