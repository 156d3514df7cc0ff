//! The running relay (mix or gateway): the tasks around the core, wired here.
//!
//! One concern a file: `state` (what the tasks share), `listener` (admission, peers,
//! incoming streams), `crypto` (the workers that peel packets), `scheduler` (the mixing
//! pool and release to links), `link` (one outgoing link per next hop), `delivery` (final
//! hop: sessions and the mailbox), `cover` (a mix's own loops), `keyring` (Sphinx keys per
//! epoch and their replay filters), `directory` (topology, rotation, registration).
//!
//! ```text
//!  QUIC streams ──read_frame──▶ crypto pool (SphinxNode::process + ReplayFilter, one thread
//!  per core, off the async threads) ──▶ scheduler (MixQueue: held until arrival + delay)
//!  ──▶ one link task per next hop (long-lived QUIC stream, batched frames, reconnect with
//!  backoff) │ or, at a gateway's final hop, a client session or the mailbox.
//! ```
//!
//! The scheduler's pool is a `MixQueue` (`mixing.strategy = "poisson"`) or a `BatchQueue`
//! (`"batch"`); an `AnonymityEstimator` follows it for `lethe_anonymity_bits`. A mix also
//! runs a `cover` thread that builds its own loop packets (steady loops, the anonymity
//! floor, batch top-ups, within `cover.max_per_sec`) and puts them in the same pool.

mod cover;
mod crypto;
mod delivery;
mod directory;
mod keyring;
mod link;
mod listener;
mod scheduler;
mod state;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lethe_net::directory::DirectoryClient;
use lethe_net::http;
use lethe_net::shutdown::Shutdown;
use lethe_net::tls::{self};
use lethe_proto::limit::{Counters, KeyedBuckets, TokenBucket};
use lethe_proto::{ClientId, Key32, Mailbox, Timestamp};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::NodeError;
use crate::config::{MixingStrategy, NodeConfig, NodeRole};
use crate::keys::NodeKeys;
use crate::metrics::{Metrics, Reason};

use cover::*;
use crypto::*;
use directory::*;
use listener::*;
use scheduler::*;
use state::*;
#[allow(unused_imports)]
use {delivery::*, keyring::*, link::*};

/// A relay that is configured and has its keys, but does no network I/O yet.
pub struct Relay {
    cfg: NodeConfig,
    keys: NodeKeys,
    dir: std::path::PathBuf,
    metrics: Arc<Metrics>,
}

impl Relay {
    /// Check the configuration and keys.
    pub fn new(cfg: NodeConfig, keys: NodeKeys, dir: &std::path::Path) -> Result<Self, NodeError> {
        cfg.validate()?;
        Ok(Relay {
            cfg,
            keys,
            dir: dir.to_path_buf(),
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The counters (for tests and the metrics endpoint).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Run until `shutdown` turns true, then stop cleanly: stop accepting, release queued
    /// packets at their times for the grace period, close links, return.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), NodeError> {
        let Relay {
            cfg,
            keys,
            dir,
            metrics,
        } = self;
        let authorities = cfg
            .directory
            .authority_keys
            .iter()
            .map(|k| Key32::parse_hex(k, "authority key"))
            .collect::<Result<Vec<_>, _>>()?;
        let directory = DirectoryClient {
            url: cfg.directory.url.clone(),
            mirrors: cfg.directory.mirrors.clone(),
            authorities,
            threshold: cfg.directory.threshold,
            network: None,
            newest: Default::default(),
            newest_file: None,
        }
        .remember_in(dir.join("newest-document"));
        let server_cfg = tls::server_config(&keys.tls)?;
        let mut padded_server = server_cfg.clone();
        padded_server.transport_config(tls::padded_transport_config());
        let endpoint = quinn::Endpoint::server(server_cfg, cfg.node.listen).map_err(|source| {
            NodeError::Bind {
                addr: cfg.node.listen,
                source,
            }
        })?;
        let g = &cfg.gateway;
        let mailbox = Mailbox::new(lethe_proto::MailboxLimits {
            per_client: g.mailbox_per_client,
            per_client_bytes: g.mailbox_per_client_bytes,
            total: g.mailbox_total,
            total_bytes: g.mailbox_total_bytes,
            ttl: Duration::from_secs(g.mailbox_ttl_secs),
        });
        let me = keys.id();
        let shared = Arc::new(Shared {
            me,
            clock: lethe_net::clock::Clock::new(),
            metrics: metrics.clone(),
            directory,
            topology: RwLock::new(None),
            endpoint: endpoint.clone(),
            padded_server: Arc::new(padded_server),
            links: Mutex::new(HashMap::new()),
            link_tasks: Mutex::new(JoinSet::new()),
            sessions: Mutex::new(HashMap::new()),
            session_seq: Default::default(),
            mailbox: Mutex::new(mailbox),
            shutdown: shutdown.clone(),
            last_fetch_ms: Default::default(),
            connections: Mutex::new(Counters::new(
                cfg.limits.connections_per_ip,
                cfg.limits.max_connections,
            )),
            relay_connections: Mutex::new(Counters::new(
                cfg.limits.relay_connections,
                cfg.limits.relay_connections,
            )),
            packet_budget: Mutex::new(KeyedBuckets::new(
                f64::from(cfg.limits.client_packets_per_sec),
                f64::from(cfg.limits.client_packets_per_sec),
                cfg.limits.max_connections,
            )),
            handshakes: Mutex::new(TokenBucket::new(
                f64::from(cfg.limits.handshakes_per_sec),
                f64::from(cfg.limits.handshakes_per_sec),
                Timestamp::ZERO,
            )),
            ring: RwLock::new(Vec::new()),
            own_descriptor: RwLock::new(Vec::new()),
            loop_id: {
                let mut b = [0u8; 32];
                rand::Rng::fill_bytes(&mut rand::rng(), &mut b);
                ClientId::from_bytes(b)
            },
            dir,
            keys,
            cfg,
        });
        info!(
            role = ?shared.cfg.node.role,
            layer = ?shared.cfg.node.layer,
            id = %me.short(),
            listen = %shared.cfg.node.listen,
            "relay starting"
        );

        // Metrics endpoint.
        let mut tasks = JoinSet::new();
        if let Some(addr) = shared.cfg.node.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Bind { addr, source })?;
            let m = metrics.clone();
            let role = if shared.is_gateway() {
                "gateway"
            } else {
                "mix"
            };
            let handler: http::Handler = Arc::new(move |r: http::Request| {
                if r.method == "GET" && r.path == "/metrics" {
                    http::Response::ok("text/plain; version=0.0.4", m.render(role))
                } else {
                    http::Response::error(404, "only GET /metrics")
                }
            });
            tasks.spawn(http::serve(listener, handler, shutdown.clone()));
            info!(%addr, "metrics at /metrics");
        }

        // Crypto pool.
        let workers = match shared.cfg.node.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(8192);
        let (sched_tx, sched_rx) = mpsc::channel::<Vec<Timed>>(4096);
        // Keys appear once the first topology (and its epoch length) is known.
        for i in 0..workers {
            let rx = job_rx.clone();
            let tx = sched_tx.clone();
            let sh = shared.clone();
            std::thread::Builder::new()
                .name(format!("sphinx-{i}"))
                .spawn(move || crypto_worker(sh, rx, tx))
                .map_err(|source| NodeError::Io {
                    path: "thread".into(),
                    source,
                })?;
        }
        // Cover: a mix builds its own packets on a thread of its own (0.5 to 1 ms of CPU
        // each, never on the async threads).
        let cover = if shared.cfg.node.role == NodeRole::Mix {
            let (req_tx, req_rx) = crossbeam_channel::bounded::<CoverRequest>(64);
            let tx = sched_tx.clone();
            let sh = shared.clone();
            std::thread::Builder::new()
                .name("cover".into())
                .spawn(move || cover_worker(sh, tx, req_rx))
                .map_err(|source| NodeError::Io {
                    path: "thread".into(),
                    source,
                })?;
            Some(req_tx)
        } else {
            None
        };
        drop(sched_tx);
        let m = &shared.cfg.mixing;
        if m.strategy == MixingStrategy::Batch {
            let need = m.batch_min_packets as f64 * 1000.0 / m.batch_round_ms as f64;
            if need > shared.cfg.cover.max_per_sec {
                warn!(
                    need,
                    cap = shared.cfg.cover.max_per_sec,
                    "at no traffic, batch rounds need more cover per second than cover.max_per_sec allows; rounds will wait"
                );
            }
        }

        // Directory: register and fetch before accepting traffic.
        tasks.spawn(directory_task(shared.clone()));
        // Replay filters survive a restart: saved every `replay.save_secs`.
        {
            let sh = shared.clone();
            let every = Duration::from_secs(shared.cfg.replay.save_secs);
            tasks.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let s = sh.clone();
                    let _ = tokio::task::spawn_blocking(move || s.save_replays()).await;
                }
            });
        }
        // Scheduler.
        let scheduler = tokio::spawn(scheduler(shared.clone(), sched_rx, cover));
        // Accept loop.
        tasks.spawn(accept_loop(shared.clone(), job_tx));

        // Wait for shutdown.
        shutdown.clone().wait().await;
        info!("shutting down: no new connections; queued packets leave at their times");
        endpoint.set_server_config(None);
        let _ = scheduler.await;
        // Close every link: the link tasks flush and finish their streams.
        lock(&shared.links).clear();
        let mut links = std::mem::take(&mut *lock(&shared.link_tasks));
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while links.join_next().await.is_some() {}
        })
        .await;
        links.abort_all();
        tasks.abort_all();
        endpoint.close(code::SHUTDOWN.into(), b"shutdown");
        {
            let s = shared.clone();
            let _ = tokio::task::spawn_blocking(move || s.save_replays()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        info!(
            out = metrics.packets_out.load(Ordering::Relaxed),
            dropped_at_shutdown = metrics.dropped(Reason::Shutdown),
            "stopped"
        );
        Ok(())
    }
}
