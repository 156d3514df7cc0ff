//! The running relay (mix or gateway): a thin driver around the core.
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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use lethe_net::directory::DirectoryClient;
use lethe_net::link::{ReadOutcome, answer_describe, push_frame, read_frame, write_frame};
use lethe_net::tls::{self, peer_cert_hash};
use lethe_net::{NetError, Sensitive, http};
use lethe_proto::frame::REPLY_BODY_LEN;
use lethe_proto::limit::{Counters, KeyedBuckets, TokenBucket, source_prefix};
use lethe_proto::mixloop::build_mix_loop;
use lethe_proto::packet::{PACKET_SIZE, sample_delay};
use lethe_proto::topology::{NodeDescriptor, Role};
use lethe_proto::{
    AnonymityEstimator, BatchConfig, BatchQueue, ClientId, EpochKey, FrameKind, Key32, Mailbox,
    MixQueue, NodeId, Packet, Processed, ReplayFilter, SignedDescriptor, SphinxNode, Timestamp,
    Topology,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::NodeError;
use crate::config::{MixingStrategy, NodeConfig, NodeRole};
use crate::keys::NodeKeys;
use crate::metrics::{CoverKind, Metrics, Reason};

/// Error codes we close QUIC streams and connections with.
mod code {
    pub const SHUTDOWN: u32 = 0;
    pub const BAD_FRAME: u32 = 1;
    pub const UNKNOWN_PEER: u32 = 2;
    pub const BUSY: u32 = 3;
}

/// A packet waiting in the mix queue.
struct Scheduled {
    next: NodeId,
    packet: Packet,
}

/// A processed packet on its way to the mix queue: arrival time, requested delay, packet.
type Timed = (Timestamp, Duration, Scheduled);

/// Most packets a worker takes off the queue at once (one wake-up of the scheduler each).
const WORKER_BATCH: usize = 32;

/// A packet read from the wire, for the crypto pool.
struct Job {
    arrival: Timestamp,
    bytes: Vec<u8>,
    /// Read from a client's connection: this relay is the packet's first hop, where nothing
    /// may be delivered (a route must cross the mixes before it ends at a gateway).
    from_client: bool,
}

/// One epoch's Sphinx key and the replay filter that goes with it (dropped together).
struct EpochKeyState {
    epoch: u64,
    public: Key32,
    node: SphinxNode,
    replay: Mutex<ReplayFilter>,
    /// The filter's tag count when it was last saved.
    saved: std::sync::atomic::AtomicU64,
}

/// One accepted connection, shared by its stream readers.
struct ConnCtx {
    conn: quinn::Connection,
    /// Hash of the peer's certificate: a relay's pinned identity, or a client's id.
    cert: Key32,
    /// Sequence number of this connection's subscription; 0 until it subscribes (once).
    session: std::sync::atomic::AtomicU64,
    /// A client's source prefix, whose packet budget it spends (relays are not limited):
    /// one host cannot fill the shared crypto queue and crowd everyone else out, however
    /// many connections or addresses of its prefix it uses.
    prefix: Option<IpAddr>,
}

/// Who is at the other end of a connection.
#[derive(Clone, Copy, Debug)]
enum Peer {
    Node(NodeId),
    Client,
}

/// A subscribed client: a sequence number (to tell connections apart) and its queue.
type Session = (u64, mpsc::Sender<Vec<u8>>);

struct Shared {
    cfg: NodeConfig,
    me: NodeId,
    keys: NodeKeys,
    origin: Instant,
    metrics: Arc<Metrics>,
    directory: DirectoryClient,
    topology: RwLock<Option<Arc<Topology>>>,
    endpoint: quinn::Endpoint,
    links: Mutex<HashMap<NodeId, mpsc::Sender<Packet>>>,
    link_tasks: Mutex<JoinSet<()>>,
    sessions: Mutex<HashMap<ClientId, Session>>,
    session_seq: std::sync::atomic::AtomicU64,
    mailbox: Mutex<Mailbox>,
    shutdown: watch::Receiver<bool>,
    /// Sphinx keys by epoch (newest first), each with its own replay filter.
    ring: RwLock<Vec<Arc<EpochKeyState>>>,
    /// The node's directory (Sphinx key files live there).
    dir: std::path::PathBuf,
    /// Open connections (and handshakes in progress) per source prefix and in all, of
    /// peers that are not relays of the topology.
    connections: Mutex<Counters<IpAddr>>,
    /// The same for relays (known by the address they connect from): a budget of their
    /// own, which clients cannot use up.
    relay_connections: Mutex<Counters<IpAddr>>,
    /// Completed handshakes per second.
    handshakes: Mutex<TokenBucket>,
    /// Packets per second per client source prefix.
    packet_budget: Mutex<KeyedBuckets<IpAddr>>,
    /// Milliseconds since `origin` of the last on-demand topology fetch (rate limit).
    last_fetch_ms: std::sync::atomic::AtomicU64,
    /// Secret destination of this mix's own loop packets: the final hop of a loop is the mix
    /// itself, and only a packet built by it carries this id.
    loop_id: ClientId,
    /// Our newest signed descriptor (JSON), the answer to a liveness probe's `Describe`.
    own_descriptor: RwLock<Vec<u8>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data half-updated in a way
    // that matters more than stopping the relay would, so keep going with the data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.origin.elapsed())
    }

    fn instant(&self, t: Timestamp) -> Instant {
        self.origin + t.since_origin()
    }

    fn topology(&self) -> Option<Arc<Topology>> {
        self.topology
            .read()
            .map(|t| t.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Install a newer topology (an older or same-age one, e.g. from a racing fetch, is
    /// ignored), follow its delay cap, and close links to relays that left it.
    fn set_topology(&self, t: Topology) {
        if let Some(cur) = self.topology() {
            let (c, n) = (cur.body(), t.body());
            if (n.epoch, n.serial) < (c.epoch, c.serial) {
                return;
            }
        }
        self.metrics.topology_nodes.set(t.nodes().len() as i64);
        for k in self.ring().iter() {
            k.node.set_max_delay(t.max_delay());
        }
        lock(&self.links).retain(|id, _| t.node(id).is_some());
        let t = Some(Arc::new(t));
        match self.topology.write() {
            Ok(mut g) => *g = t,
            Err(p) => *p.into_inner() = t,
        }
    }

    fn ring(&self) -> Vec<Arc<EpochKeyState>> {
        self.ring
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Keep Sphinx keys for the current and the next epoch, and the previous one during the
    /// overlap after an epoch starts; delete the files of the others (forward secrecy) and
    /// drop their replay filters. Returns whether the published keys changed.
    fn rotate(&self, now_unix: u64) -> Result<bool, NodeError> {
        let Some(t) = self.topology() else {
            return Ok(false);
        };
        let len = t.body().epoch_secs;
        let epoch = now_unix / len;
        let overlap = (len / 4).max(1);
        let keep_previous = now_unix < epoch * len + overlap && epoch > 0;
        let wanted: Vec<u64> = [epoch + 1, epoch]
            .into_iter()
            .chain(keep_previous.then(|| epoch - 1))
            .collect();
        let old = self.ring();
        if old.iter().map(|k| k.epoch).collect::<Vec<_>>() == wanted {
            return Ok(false);
        }
        let mut ring = Vec::new();
        for e in &wanted {
            if let Some(k) = old.iter().find(|k| k.epoch == *e) {
                ring.push(k.clone());
                continue;
            }
            let secret = crate::keys::sphinx_key(&self.dir, *e)?;
            let node = SphinxNode::new(secret, t.max_delay());
            // The filter saved for this key before a restart, so that a packet seen then is
            // still a replay; else a fresh one.
            let (cap, fp) = (
                self.cfg.replay.capacity,
                self.cfg.replay.false_positive_rate,
            );
            let replay = match crate::keys::load_replay(&self.dir, *e, cap, fp) {
                Some(f) => {
                    info!(epoch = e, tags = f.inserted(), "replay filter restored");
                    f
                }
                None => {
                    let mut replay_key = [0u8; 32];
                    rand::Rng::fill_bytes(&mut rand::rng(), &mut replay_key);
                    ReplayFilter::new(replay_key, cap, fp)?
                }
            };
            ring.push(Arc::new(EpochKeyState {
                epoch: *e,
                public: node.public_key(),
                node,
                saved: replay.inserted().into(),
                replay: Mutex::new(replay),
            }));
        }
        for e in crate::keys::sphinx_key_epochs(&self.dir) {
            if !wanted.contains(&e) {
                let _ = std::fs::remove_file(crate::keys::sphinx_key_path(&self.dir, e));
                let _ = std::fs::remove_file(crate::keys::replay_path(&self.dir, e));
                info!(epoch = e, "expired Sphinx key deleted");
            }
        }
        let published = |r: &[Arc<EpochKeyState>]| {
            r.iter()
                .filter(|k| k.epoch >= epoch)
                .map(|k| (k.epoch, k.public))
                .collect::<Vec<_>>()
        };
        let changed = published(&old) != published(&ring);
        match self.ring.write() {
            Ok(mut g) => *g = ring,
            Err(p) => *p.into_inner() = ring,
        }
        Ok(changed)
    }

    /// Save every key's replay filter that recorded tags since its last save (a copy is
    /// made under the lock, the file written without it). Blocking: call off the async
    /// threads.
    fn save_replays(&self) {
        for k in self.ring() {
            let (bytes, inserted) = {
                let f = lock(&k.replay);
                if f.inserted() == k.saved.load(Ordering::Relaxed) {
                    continue;
                }
                (f.to_bytes(), f.inserted())
            };
            match crate::keys::save_replay(&self.dir, k.epoch, &bytes) {
                Ok(()) => k.saved.store(inserted, Ordering::Relaxed),
                Err(e) => warn!(epoch = k.epoch, error = %e, "cannot save the replay filter"),
            }
        }
    }

    fn own_descriptor_json(&self) -> Vec<u8> {
        self.own_descriptor
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn is_gateway(&self) -> bool {
        self.cfg.node.role == NodeRole::Gateway
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn descriptor(&self, published: u64, epoch: u64) -> NodeDescriptor {
        NodeDescriptor {
            id: self.me,
            role: if self.is_gateway() {
                Role::Gateway
            } else {
                Role::Mix
            },
            layer: self.cfg.node.layer,
            address: self.cfg.node.public_address.unwrap_or(self.cfg.node.listen),
            sphinx_keys: self
                .ring()
                .iter()
                .filter(|k| k.epoch >= epoch)
                .map(|k| EpochKey {
                    epoch: k.epoch,
                    key: k.public,
                })
                .collect(),
            tls_cert: self.keys.tls.cert_hash(),
            published,
        }
    }
}

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
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), NodeError> {
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
            origin: Instant::now(),
            metrics: metrics.clone(),
            directory,
            topology: RwLock::new(None),
            endpoint: endpoint.clone(),
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
        let mut sd = shutdown.clone();
        while !*sd.borrow() {
            if sd.changed().await.is_err() {
                break;
            }
        }
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

/// Peel `bytes` with whichever of the ring's keys it was made for: the current epoch's key
/// first. A packet for no key we hold (an unknown or expired epoch) fails every MAC check
/// and is dropped as `bad_mac`. Each key tried costs one X25519.
fn process_with_ring(
    ring: &[Arc<EpochKeyState>],
    bytes: &[u8],
) -> Result<Processed, lethe_proto::Error> {
    let mut result = Err(lethe_proto::Error::BadMac);
    for k in ring {
        result = k
            .node
            .process(bytes, |tag| lock(&k.replay).check_and_insert(tag));
        if !matches!(result, Err(lethe_proto::Error::BadMac)) {
            break;
        }
    }
    result
}

fn crypto_worker(
    shared: Arc<Shared>,
    jobs: crossbeam_channel::Receiver<Job>,
    sched: mpsc::Sender<Vec<Timed>>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(WORKER_BATCH);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < WORKER_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut out: Vec<Timed> = Vec::with_capacity(batch.len());
        // Current epoch first (the ring is newest first: next, current, previous).
        let mut ring = shared.ring();
        if ring.len() > 1 {
            ring.swap(0, 1);
        }
        for job in batch.drain(..) {
            let result = process_with_ring(&ring, &job.bytes);
            if job.from_client
                && matches!(
                    result,
                    Ok(Processed::Deliver { .. } | Processed::Reply { .. })
                )
            {
                // A route whose first hop is its last crossed no mix: whatever it carries
                // would reach a client or a mailbox unmixed and at no cost to its sender.
                shared.metrics.count_drop(Reason::FirstHopDelivery);
                continue;
            }
            match result {
                Ok(Processed::Forward {
                    next,
                    delay,
                    packet,
                }) => out.push((job.arrival, delay, Scheduled { next, packet })),
                Ok(Processed::Deliver {
                    destination,
                    message,
                }) => {
                    if shared.is_gateway() {
                        deliver(&shared, destination, FrameKind::Message, &message);
                    } else if destination == shared.loop_id {
                        // One of our own loops came back: cover, dropped silently.
                        shared
                            .metrics
                            .cover_received
                            .fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.metrics.count_drop(Reason::UnexpectedFinalHop);
                    }
                }
                Ok(Processed::Reply {
                    destination,
                    surb_id,
                    sealed,
                }) => {
                    if shared.is_gateway() {
                        let mut body = Vec::with_capacity(REPLY_BODY_LEN);
                        body.extend_from_slice(surb_id.as_bytes());
                        body.extend_from_slice(&sealed);
                        deliver(&shared, destination, FrameKind::Reply, &body);
                    } else {
                        shared.metrics.count_drop(Reason::UnexpectedFinalHop);
                    }
                }
                Err(e) => {
                    debug!(error = %e, "packet dropped");
                    shared.metrics.count_drop(Reason::from_error(&e));
                }
            }
        }
        if !out.is_empty() {
            let n = out.len();
            if sched.blocking_send(out).is_err() {
                for _ in 0..n {
                    shared.metrics.count_drop(Reason::Shutdown);
                }
            }
        }
    }
}

/// Hand a message or a SURB reply (`kind`, frame body) to its connected client, or keep it
/// in the mailbox. Sessions and the mailbox hold the frame kind's byte followed by the body.
fn deliver(shared: &Shared, client: ClientId, kind: FrameKind, body: &[u8]) {
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
fn keep_in_mailbox(shared: &Shared, client: ClientId, msg: Vec<u8>) -> bool {
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

/// What the scheduler asks of the cover thread.
#[derive(Clone, Copy, Debug)]
enum CoverRequest {
    /// The pool is below the anonymity floor (true) or back above it (false).
    Floor(bool),
    /// The batch round is due but short by this many packets.
    Round(usize),
}

/// The mixing pool: a continuous-time queue or batch rounds.
enum Pool {
    Poisson(MixQueue<Scheduled>),
    Batch(BatchQueue<Scheduled>),
}

impl Pool {
    fn len(&self) -> usize {
        match self {
            Pool::Poisson(q) => q.len(),
            Pool::Batch(b) => b.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, arrival: Timestamp, s: Scheduled, delay: Duration) -> bool {
        match self {
            Pool::Poisson(q) => q.push(arrival, s, delay).is_ok(),
            // Batch mode ignores the requested delay (the cap was checked on processing).
            Pool::Batch(b) => b.push(s).is_ok(),
        }
    }

    fn drain(&mut self) -> usize {
        match self {
            Pool::Poisson(q) => q.drain().count(),
            Pool::Batch(b) => b.drain().count(),
        }
    }
}

/// How long a short batch round waits for its top-up before asking again.
const TOPUP_RETRY: Duration = Duration::from_millis(50);
/// How often the anonymity gauge is refreshed when nothing else wakes the scheduler.
const GAUGE_TICK: Duration = Duration::from_millis(500);

async fn scheduler(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Vec<Timed>>,
    cover: Option<crossbeam_channel::Sender<CoverRequest>>,
) {
    let m = &shared.cfg.mixing;
    let mut pool = match m.strategy {
        MixingStrategy::Poisson => Pool::Poisson(MixQueue::new(m.queue_capacity)),
        MixingStrategy::Batch => Pool::Batch(BatchQueue::new(
            shared.now(),
            BatchConfig {
                round: Duration::from_millis(m.batch_round_ms),
                min_packets: m.batch_min_packets,
                capacity: m.queue_capacity,
            },
        )),
    };
    let mut estimate = AnonymityEstimator::new(Duration::from_millis(m.anonymity_window_ms));
    let floor = m.min_anonymity_bits;
    let mut below_floor = false;
    // Set while a batch round is due but short: when to ask for the top-up again.
    let mut topup_retry: Option<Instant> = None;
    let mut gauge_tick = tokio::time::interval(GAUGE_TICK);
    gauge_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = shared.shutdown.clone();
    let mut drain_until: Option<Instant> = None;
    let grace = Duration::from_millis(m.shutdown_grace_ms);
    // While draining, leave early only once the queue is empty and nothing has come in for
    // this long: packets may still be on their way from the previous hop.
    let quiet = Duration::from_millis(200).min(grace);
    let mut last_arrival = Instant::now();
    let mut inputs_open = true;
    loop {
        let wake = match &pool {
            Pool::Poisson(q) => q.poll_timeout().map(|t| shared.instant(t)),
            Pool::Batch(b) => Some(topup_retry.unwrap_or_else(|| shared.instant(b.poll_timeout()))),
        };
        let quiet_check = match drain_until {
            Some(_) if pool.is_empty() => Some(last_arrival + quiet),
            _ => None,
        };
        tokio::select! {
            item = rx.recv(), if inputs_open => match item {
                Some(batch) => {
                    last_arrival = Instant::now();
                    for (arrival, delay, s) in batch {
                        if pool.push(arrival, s, delay) {
                            estimate.on_arrival(arrival);
                        } else {
                            shared.metrics.count_drop(Reason::QueueFull);
                        }
                    }
                }
                None => {
                    // Every worker is gone: release what is queued, then stop.
                    inputs_open = false;
                    if pool.is_empty() {
                        break;
                    }
                }
            },
            _ = sleep_until_opt(wake) => {}
            _ = gauge_tick.tick() => {}
            r = shutdown.changed(), if drain_until.is_none() => {
                if r.is_err() || *shutdown.borrow() {
                    drain_until = Some(Instant::now() + grace);
                }
            }
            _ = sleep_until_opt(drain_until) => {}
            _ = sleep_until_opt(quiet_check) => {}
        }
        let now = shared.now();
        match &mut pool {
            Pool::Poisson(q) => {
                while let Some((_, s)) = q.pop_ready(now) {
                    estimate.on_departure(now);
                    dispatch(&shared, s);
                }
            }
            Pool::Batch(b) => {
                if now >= b.poll_timeout() {
                    match b.pop_round(now, &mut rand::rng()) {
                        Some(round) => {
                            topup_retry = None;
                            estimate.on_round(now, round.len());
                            if !round.is_empty() {
                                shared.metrics.batch_rounds.fetch_add(1, Ordering::Relaxed);
                            }
                            for s in round {
                                dispatch(&shared, s);
                            }
                        }
                        None => {
                            // Short: ask for exactly the missing cover (a repeated request
                            // replaces the previous one), and look again shortly.
                            if topup_retry.is_none_or(|t| Instant::now() >= t) {
                                if let Some(c) = &cover {
                                    let _ = c.try_send(CoverRequest::Round(b.deficit()));
                                }
                                topup_retry = Some(Instant::now() + TOPUP_RETRY);
                            }
                        }
                    }
                }
            }
        }
        // The floor follows the pool without lag: below it, the cover thread adds packets
        // (at most cover.max_per_sec); not while shutting down.
        if floor > 0.0
            && let Some(c) = &cover
        {
            let below = drain_until.is_none() && estimate.current_bits() < floor;
            if below != below_floor && c.try_send(CoverRequest::Floor(below)).is_ok() {
                below_floor = below;
            }
        }
        shared.metrics.queue_depth.set(pool.len() as i64);
        shared.metrics.pool_packets.set(pool.len() as i64);
        shared.metrics.anonymity_bits.set(estimate.estimate(now));
        if let Some(deadline) = drain_until {
            let idle = pool.is_empty() && last_arrival.elapsed() >= quiet;
            if idle || Instant::now() >= deadline {
                let left = pool.drain();
                for _ in 0..left {
                    estimate.on_discard();
                    shared.metrics.count_drop(Reason::Shutdown);
                }
                shared.metrics.queue_depth.set(0);
                shared.metrics.pool_packets.set(0);
                return;
            }
        }
    }
}

/// A mix's own cover: a Poisson stream of loops (at the rate the directory publishes,
/// `authority.cover_mix_loop_mean_ms`, unless `cover.loop_rate_per_sec` overrides it), plus, on the
/// scheduler's request, floor cover while the pool is below `mixing.min_anonymity_bits`
/// (a Poisson stream at `cover.max_per_sec`) and the packets a short batch round lacks. All
/// of it shares one budget of `cover.max_per_sec` (bursts of as many, or of one round).
/// Each packet is a loop (see `lethe_proto::cover`) that enters our own pool like a packet
/// from a previous hop. Runs on its own thread: building one costs 0.5 to 1 ms.
fn cover_worker(
    shared: Arc<Shared>,
    sched: mpsc::Sender<Vec<Timed>>,
    requests: crossbeam_channel::Receiver<CoverRequest>,
) {
    use crossbeam_channel::RecvTimeoutError;
    let c = &shared.cfg.cover;
    let mut rng = rand::rng();
    let gap = |rng: &mut rand::rngs::ThreadRng, rate: f64| {
        sample_delay(
            rng,
            Duration::from_secs_f64(1.0 / rate),
            Duration::from_secs(3600),
        )
    };
    let burst = c
        .max_per_sec
        .max(shared.cfg.mixing.batch_min_packets as f64);
    let mut budget = TokenBucket::new(c.max_per_sec, burst, shared.now());
    // The local override, or the directory's rate (followed as it changes).
    let current_loop_rate = || {
        if c.loop_rate_per_sec > 0.0 {
            c.loop_rate_per_sec
        } else {
            shared
                .topology()
                .map_or(0.0, |t| t.body().cover.mix_loop_rate())
        }
    };
    let mut loop_rate = current_loop_rate();
    let mut next_loop = (loop_rate > 0.0).then(|| Instant::now() + gap(&mut rng, loop_rate));
    let mut floor_on = false;
    let mut next_floor: Option<Instant> = None;
    let mut round_wanted = 0usize;
    loop {
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(250);
        for t in [next_loop, next_floor].into_iter().flatten() {
            wake = wake.min(t);
        }
        let first = match requests.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for r in first.into_iter().chain(requests.try_iter()) {
            match r {
                CoverRequest::Floor(on) => {
                    floor_on = on;
                    next_floor = on.then(Instant::now);
                }
                CoverRequest::Round(n) => round_wanted = n,
            }
        }
        let rate = current_loop_rate();
        if rate != loop_rate {
            loop_rate = rate;
            next_loop = (rate > 0.0).then(|| Instant::now() + gap(&mut rng, rate));
        }
        // Loops and floor cover stop at shutdown; round top-ups go on so the last rounds
        // can still leave during the grace period.
        let stopping = shared.shutting_down();
        let now = Instant::now();
        let mut wanted: Vec<CoverKind> = Vec::new();
        if let Some(t) = next_loop
            && t <= now
        {
            if !stopping {
                wanted.push(CoverKind::Loop);
            }
            // Keep the stream's schedule, but never catch up a backlog in a burst.
            next_loop = Some((t + gap(&mut rng, loop_rate)).max(now));
        }
        if floor_on
            && let Some(t) = next_floor
            && t <= now
        {
            if !stopping {
                wanted.push(CoverKind::Floor);
            }
            next_floor = Some(now + gap(&mut rng, c.max_per_sec));
        }
        wanted.extend(std::iter::repeat_n(CoverKind::Round, round_wanted));
        round_wanted = 0;
        if wanted.is_empty() {
            continue;
        }
        let Some(topology) = shared.topology() else {
            continue;
        };
        let epoch = topology.epoch_at(lethe_net::unix_now());
        let mut out: Vec<Timed> = Vec::with_capacity(wanted.len());
        for kind in wanted {
            if !budget.try_take(shared.now()) {
                shared
                    .metrics
                    .cover_suppressed
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match build_mix_loop(&mut rng, &topology, &shared.me, epoch, shared.loop_id) {
                Ok(l) => {
                    shared.metrics.cover_sent(kind);
                    out.push((
                        shared.now(),
                        l.hold,
                        Scheduled {
                            next: l.next,
                            packet: l.packet,
                        },
                    ));
                }
                Err(e) => {
                    // e.g. before our own descriptor is in the topology
                    debug!(error = %Sensitive::new(e.to_string()), "cannot build a loop yet");
                    break;
                }
            }
        }
        if !out.is_empty() && sched.blocking_send(out).is_err() {
            return;
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Send a released packet on its next hop's link, creating the link on first use.
fn dispatch(shared: &Arc<Shared>, s: Scheduled) {
    let mut links = lock(&shared.links);
    let tx = match links.get(&s.next) {
        Some(tx) => tx.clone(),
        None => {
            let known = shared.topology().is_some_and(|t| t.node(&s.next).is_some());
            if !known || s.next == shared.me {
                shared.metrics.count_drop(Reason::UnknownNextHop);
                return;
            }
            let (tx, rx) = mpsc::channel(shared.cfg.mixing.link_queue);
            links.insert(s.next, tx.clone());
            lock(&shared.link_tasks).spawn(link_task(shared.clone(), s.next, rx));
            tx
        }
    };
    drop(links);
    if tx.try_send(s.packet).is_err() {
        shared.metrics.count_drop(Reason::LinkFull);
    }
}

/// One long-lived link to a next hop: connect (pinned to its certificate), write batches of
/// frames on one stream, reconnect with backoff on failure. Ends when its channel closes.
async fn link_task(shared: Arc<Shared>, peer: NodeId, mut rx: mpsc::Receiver<Packet>) {
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

async fn accept_loop(shared: Arc<Shared>, jobs: crossbeam_channel::Sender<Job>) {
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
            match incoming.await {
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

async fn identify(shared: &Shared, cert: Key32) -> Option<Peer> {
    let known = |t: Option<Arc<Topology>>| t.and_then(|t| t.node_by_cert(&cert).map(|n| n.id));
    if let Some(id) = known(shared.topology()) {
        return Some(Peer::Node(id));
    }
    if shared.is_gateway() {
        return Some(Peer::Client);
    }
    // A mix only talks to relays; the peer may have joined after our last fetch. Look
    // again, at most once a second whatever unknown peers do.
    let now_ms = shared.origin.elapsed().as_millis() as u64;
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

async fn serve_connection(
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

async fn read_stream(
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
                FrameKind::Message | FrameKind::Reply | FrameKind::Describe | FrameKind::Descriptor,
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

/// A client asked for its messages on this connection: register the session, then send the
/// mailbox and everything that arrives while it stays connected.
fn subscribe(shared: &Arc<Shared>, ctx: &ConnCtx) {
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

async fn session_writer(
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

/// Register our descriptor and keep the topology fresh.
async fn directory_task(shared: Arc<Shared>) {
    let register_every = Duration::from_secs(shared.cfg.directory.register_secs);
    let refresh_every = Duration::from_secs(shared.cfg.directory.refresh_secs);
    let mut next_register = Instant::now();
    let mut next_refresh = Instant::now();
    let mut registered = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        let now = Instant::now();
        // The topology first: it tells the epoch length our keys follow.
        if now >= next_refresh {
            match shared.directory.fetch().await {
                Ok(t) => {
                    let first = shared.topology().is_none();
                    if first {
                        info!(
                            nodes = t.nodes().len(),
                            epoch = t.epoch(),
                            "topology loaded"
                        );
                    }
                    shared.set_topology(t);
                    next_refresh = now
                        + if first {
                            Duration::from_secs(1)
                        } else {
                            refresh_every
                        };
                }
                Err(e) => {
                    lethe_net::warn_limited!(Duration::from_secs(60), error = %e, "topology fetch failed; retrying");
                    next_refresh = now + Duration::from_secs(1);
                }
            }
        }
        let unix = lethe_net::unix_now();
        match shared.rotate(unix) {
            Ok(true) => {
                info!("Sphinx keys rotated; publishing them");
                next_register = now;
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "Sphinx key rotation failed"),
        }
        let epoch = shared.topology().map(|t| t.epoch_at(unix));
        if let Some(epoch) = epoch
            && now >= next_register
        {
            // Signed afresh each time: the authority keeps only the newest descriptor.
            let signed = match SignedDescriptor::sign(
                &shared.descriptor(unix, epoch),
                &shared.keys.identity,
            ) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot sign our descriptor");
                    return;
                }
            };
            if let Ok(json) = serde_json::to_vec(&signed) {
                match shared.own_descriptor.write() {
                    Ok(mut d) => *d = json,
                    Err(p) => *p.into_inner() = json,
                }
            }
            match shared.directory.register(&signed).await {
                Ok(()) => {
                    if !registered {
                        info!("registered with the directory");
                    }
                    registered = true;
                    next_register = now + register_every;
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    lethe_net::warn_limited!(Duration::from_secs(60), error = %e, "directory registration failed; retrying");
                    next_register = now + backoff;
                    backoff = (backoff * 2).min(register_every);
                }
            }
        }
        if shared.is_gateway() {
            let mut mb = lock(&shared.mailbox);
            for _ in 0..mb.purge(shared.now()) {
                shared.metrics.count_drop(Reason::Expired);
            }
            shared.metrics.mailbox_messages.set(mb.len() as i64);
        }
        // Also wake at the next epoch boundary and at the end of the overlap after it.
        let rotation = shared.topology().map(|t| {
            let len = t.body().epoch_secs;
            let start = t.epoch_at(unix) * len;
            let overlap_end = start + (len / 4).max(1);
            let next = if unix < overlap_end {
                overlap_end
            } else {
                start + len
            };
            now + Duration::from_secs(next.saturating_sub(unix)) + Duration::from_millis(50)
        });
        let mut wake = next_register.min(next_refresh);
        if let Some(r) = rotation {
            wake = wake.min(r);
        }
        let mut sd = shared.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = sd.changed() => return,
        }
    }
}
