#![doc = include_str!("../README.md")]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lethe_net::directory::DirectoryClient;
use lethe_net::link::{ReadOutcome, read_frame, write_frame};
use lethe_net::{NetError, TlsIdentity, tls};
use lethe_proto::packet::build_packet;
use lethe_proto::seal::MAX_SEALED_MESSAGE;
use lethe_proto::surb::SurbId;
use lethe_proto::{ClientAddress, ClientId, FrameKind, NodeId, Packet, Topology};
use rand::Rng;
use tokio::sync::{Mutex, mpsc};

mod config;
pub mod keys;
pub use config::{CONFIG_FILE, ClientConfig, NEWEST_FILE, address, init};
pub mod cover;
pub use cover::{Cover, LoopStats};
pub mod accept;
pub mod answer;
pub mod forward;
pub mod message;
pub mod pipe;
pub mod socks;

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Proto(#[from] lethe_proto::Error),
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{0} already exists; refusing to overwrite an existing client")]
    AlreadyInitialised(PathBuf),
    #[error("no gateway chosen yet: run `lethe-client init` with --directory, or pass --gateway")]
    NoGateway,
    #[error("no directory configured: pass --directory URL and --authority-key HEX")]
    NoDirectory,
    #[error("gateway {0} is not in the topology")]
    GatewayGone(String),
    #[error("message of {got} bytes is larger than one packet's {max}")]
    TooLong { got: usize, max: usize },
    #[error("connection to the gateway is closed")]
    Closed,
    #[error("the network publishes no cover traffic rates")]
    NoCover,
    #[error("cover traffic already runs for this client")]
    CoverRunning,
}

/// How to connect.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Override the directory URL of `client.toml`.
    pub directory: Option<String>,
    /// Override the authority keys of `client.toml`.
    pub authority_keys: Vec<String>,
    /// Override the mirrors of `client.toml` (when not empty).
    pub mirrors: Vec<String>,
    /// Local address of the QUIC endpoint (default `0.0.0.0:0`).
    pub bind: Option<SocketAddr>,
}

/// A packet ready to go, with the delays it asks for.
pub struct Outgoing {
    /// The packet.
    pub packet: Packet,
    /// Sum of the per-hop delays: the least time it takes to arrive.
    pub total_delay: Duration,
}

/// A client connected to its gateway.
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    topology: Arc<std::sync::RwLock<Arc<Topology>>>,
    refresher: tokio::task::JoinHandle<()>,
    /// Saves the filter of opened messages now and then (a crash loses a minute at most).
    saver: tokio::task::JoinHandle<()>,
    directory: DirectoryClient,
    address: ClientAddress,
    /// Declared before `link`: the connection's handles go before its runtime does.
    send: Mutex<quinn::SendStream>,
    incoming: Mutex<mpsc::Receiver<Vec<u8>>>,
    /// Set while cover traffic runs: real packets wait here for a payload slot.
    cover_queue: std::sync::OnceLock<mpsc::Sender<cover::Queued>>,
    /// Set while cover traffic runs: messages for the thread that builds real packets.
    real_jobs: std::sync::OnceLock<mpsc::Sender<cover::BuildJob>>,
    loops: Arc<cover::LoopTracker>,
    /// The sealed messages opened so far, saved to [`SEEN_FILE`] at close.
    seen: Arc<std::sync::Mutex<lethe_proto::ReplayFilter>>,
    dir: PathBuf,
    replies: Mutex<mpsc::Receiver<Reply>>,
    receive_drops: Arc<ReceiveDrops>,
    link: LinkRuntime,
}

/// Messages and replies dropped on arrival because the application had not taken the 4096
/// already waiting.
#[derive(Debug, Default)]
pub struct ReceiveDrops {
    /// Messages dropped.
    pub messages: AtomicU64,
    /// SURB replies dropped.
    pub replies: AtomicU64,
    /// Messages that did not open with our keys (not for us, tampered, or sealed to a key
    /// two rotations old).
    pub unsealed: AtomicU64,
    /// Sealed messages opened before: a replay, dropped.
    pub replayed: AtomicU64,
    /// Downstream cover frames from the gateway, discarded as they should be (not a loss).
    pub cover: AtomicU64,
}

/// A single-threaded runtime on a thread of its own that drives the QUIC link to the
/// gateway. It stops when dropped.
pub(crate) struct LinkRuntime {
    pub(crate) handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl LinkRuntime {
    fn start() -> Result<Self, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NetError::Io)?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("lethe-link".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(NetError::Io)?;
        Ok(LinkRuntime {
            handle,
            _stop: stop,
        })
    }
}

/// A SURB reply the gateway handed us: which SURB it used, and the payload still sealed for
/// that SURB's key ([`lethe_proto::surb::SurbKey::recover`] opens it).
pub struct Reply {
    /// The SURB's identifier, to find its key.
    pub surb_id: SurbId,
    /// The sealed payload, [`lethe_proto::packet::PAYLOAD_SIZE`] bytes.
    pub sealed: Vec<u8>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.refresher.abort();
        self.saver.abort();
    }
}

/// How often a connected client fetches the topology again.
pub const TOPOLOGY_REFRESH: Duration = Duration::from_secs(30);

/// Keep `slot` filled with the newest valid topology (older documents are ignored).
async fn refresh_topology(dir: DirectoryClient, slot: Arc<std::sync::RwLock<Arc<Topology>>>) {
    loop {
        // At least twice an epoch: each document lists the current and the next epoch's
        // keys, so one fetched within an epoch builds packets across its end.
        let epoch_secs = slot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .body()
            .epoch_secs;
        let half_epoch = Duration::from_secs(epoch_secs / 2).max(Duration::from_secs(1));
        tokio::time::sleep(TOPOLOGY_REFRESH.min(half_epoch)).await;
        let Ok(t) = dir.fetch().await else { continue };
        let mut g = slot.write().unwrap_or_else(|p| p.into_inner());
        if t.replaces(&g) {
            *g = Arc::new(t);
        }
    }
}

impl Client {
    /// Load the client in `dir`, fetch the topology, connect to the gateway (pinned).
    pub async fn connect(dir: &Path, opts: ConnectOptions) -> Result<Client, ClientError> {
        let mut cfg = ClientConfig::load(dir)?;
        if let Some(d) = opts.directory {
            cfg.directory = d;
        }
        if !opts.mirrors.is_empty() {
            cfg.mirrors = opts.mirrors;
        }
        if !opts.authority_keys.is_empty() {
            cfg.authority_keys = opts.authority_keys;
        }
        let directory = cfg.directory_client()?.remember_in(dir.join(NEWEST_FILE));
        let topology = Arc::new(directory.fetch().await?);
        let id = TlsIdentity::load(dir)?;
        let gateway = cfg.gateway()?;
        let gw = topology
            .node(&gateway)
            .ok_or_else(|| ClientError::GatewayGone(gateway.short()))?;
        let bind = opts
            .bind
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let client_id = ClientId(id.cert_hash());
        let keys = Arc::new(keys::RecipientKeys::load_or_create(dir)?);
        let recipient_key = keys.public()?;
        let seen = Arc::new(std::sync::Mutex::new(seen_filter(Some(dir))?));
        let loops = Arc::new(cover::LoopTracker::new(
            id.derive_secret("lethe-client loop cover v1"),
        ));
        // The link lives on a runtime of its own, so that what the application does on its
        // runtime (say, a download it is busy reading) does not shift when packets leave.
        let link = LinkRuntime::start()?;
        let (gw_addr, gw_cert) = (gw.address, gw.tls_cert);
        // Strict downstream cover: pad what we send to one size, so that the transport's
        // acknowledgements of what the gateway writes do not vary (THREAT_MODEL.md).
        let cover = topology.body().cover;
        let padded = cover.downstream_strict && cover.downstream_mean_ms > 0;
        let (endpoint, conn, send) = link
            .handle
            .spawn(async move {
                let endpoint = quinn::Endpoint::client(bind).map_err(NetError::Io)?;
                let conn = tls::connect_with(&endpoint, &id, gw_addr, gw_cert, padded).await?;
                let send = conn.open_uni().await.map_err(NetError::Connection)?;
                Ok::<_, ClientError>((endpoint, conn, send))
            })
            .await
            .map_err(|_| ClientError::Closed)??;
        let (tx, rx) = mpsc::channel(4096);
        let (reply_tx, reply_rx) = mpsc::channel(4096);
        let receive_drops = Arc::new(ReceiveDrops::default());
        link.handle.spawn(receive_loop(
            conn.clone(),
            Inbound {
                me: client_id,
                keys: keys.clone(),
                seen: seen.clone(),
                loops: loops.clone(),
                drops: receive_drops.clone(),
            },
            tx,
            reply_tx,
        ));
        let topology = Arc::new(std::sync::RwLock::new(topology));
        let refresher = tokio::spawn(refresh_topology(directory.clone(), topology.clone()));
        let saver = tokio::spawn(save_seen(dir.to_path_buf(), seen.clone()));
        Ok(Client {
            endpoint,
            conn,
            topology,
            refresher,
            saver,
            directory,
            address: ClientAddress {
                client: client_id,
                key: recipient_key,
                gateway,
            },
            link,
            send: Mutex::new(send),
            incoming: Mutex::new(rx),
            cover_queue: std::sync::OnceLock::new(),
            real_jobs: std::sync::OnceLock::new(),
            loops,
            seen,
            dir: dir.to_path_buf(),
            receive_drops,
            replies: Mutex::new(reply_rx),
        })
    }

    /// What arrived but was dropped because the application did not keep up.
    pub fn receive_drops(&self) -> &ReceiveDrops {
        &self.receive_drops
    }

    /// This client's address.
    pub fn address(&self) -> ClientAddress {
        self.address
    }

    /// The mixes this client's real packets, SURBs and drop cover route around: those its
    /// loop cover found dead ([`lethe_proto::RelayHealth`]). Empty unless cover traffic ran
    /// within the last [`lethe_proto::HealthConfig::window`].
    pub fn avoided_relays(&self) -> BTreeSet<NodeId> {
        self.loops.avoided()
    }

    /// How many times [`Client::avoided_relays`] changed so far: a sender that counts on
    /// SURBs or packets already sent can tell when some of them took a relay now found dead.
    pub fn avoided_changes(&self) -> u64 {
        self.loops.avoided_changes()
    }

    /// The current topology (fetched at connect, refreshed every 30 s).
    pub fn topology(&self) -> Arc<Topology> {
        self.topology
            .read()
            .map(|t| t.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Fetch the topology now (it is also refreshed every 30 s in the background).
    pub async fn refresh_topology(&self) -> Result<(), ClientError> {
        let t = self.directory.fetch().await?;
        let mut g = self.topology.write().unwrap_or_else(|p| p.into_inner());
        if t.replaces(&g) {
            *g = Arc::new(t);
        }
        Ok(())
    }

    /// Seal `msg` to `to` ([`lethe_proto::seal`]: at most
    /// [`lethe_proto::seal::MAX_SEALED_MESSAGE`] bytes) and wrap it: route entry gateway
    /// (ours), a mix of each layer, the recipient's gateway; exponential delays at the mixes
    /// with the network's mean.
    pub fn build(&self, to: &ClientAddress, msg: &[u8]) -> Result<Outgoing, ClientError> {
        build_outgoing(
            &self.topology(),
            self.address.gateway,
            &self.avoided_relays(),
            to,
            msg,
        )
    }

    /// Put one packet on the link to the gateway: at once, or, while cover traffic runs, in
    /// the queue for the next payload slot (waiting while the queue is full).
    pub async fn send_packet(&self, packet: &Packet) -> Result<(), ClientError> {
        match self.cover_queue.get() {
            Some(q) => q
                .send(cover::Queued {
                    packet: packet.clone(),
                    written: None,
                })
                .await
                .map_err(|_| ClientError::Closed),
            None => self.send_packet_now(packet).await,
        }
    }

    /// Like [`Client::send_packet`], and also return a receiver that completes once the
    /// packet is on the link: while cover traffic runs, after it left in a payload slot (at
    /// once otherwise; it reports closed if the packet never left). A sender that waits on
    /// these keeps only a few packets in the queue, so what it sends next (acknowledgements,
    /// SURBs) is never older than a few slots' wait.
    pub async fn send_packet_tracked(
        &self,
        packet: &Packet,
    ) -> Result<tokio::sync::oneshot::Receiver<()>, ClientError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.cover_queue.get() {
            Some(q) => q
                .send(cover::Queued {
                    packet: packet.clone(),
                    written: Some(tx),
                })
                .await
                .map_err(|_| ClientError::Closed)?,
            None => {
                self.send_packet_now(packet).await?;
                let _ = tx.send(());
            }
        }
        Ok(rx)
    }

    /// Real packets waiting for a payload slot (0 when cover traffic does not run).
    pub fn queued(&self) -> usize {
        self.cover_queue
            .get()
            .map_or(0, |q| q.max_capacity() - q.capacity())
    }

    /// Write one packet on the link now, whatever the cover schedule.
    pub(crate) async fn send_packet_now(&self, packet: &Packet) -> Result<(), ClientError> {
        let mut s = self.send.lock().await;
        write_frame(&mut s, FrameKind::Packet, packet.as_bytes()).await?;
        Ok(())
    }

    /// Build and send; returns the sum of the hop delays.
    /// While cover traffic runs, the packet is built on the cover's one thread for real
    /// packets, so that however fast the application sends, building costs the machine what
    /// building cover packets would, and the cover schedule's timing does not change.
    pub async fn send(&self, to: &ClientAddress, msg: &[u8]) -> Result<Duration, ClientError> {
        if let Some(jobs) = self.real_jobs.get() {
            let (reply, result) = tokio::sync::oneshot::channel();
            jobs.send(cover::BuildJob {
                to: *to,
                msg: msg.to_vec(),
                reply,
            })
            .await
            .map_err(|_| ClientError::Closed)?;
            return result.await.map_err(|_| ClientError::Closed)?;
        }
        let out = self.build(to, msg)?;
        self.send_packet(&out.packet).await?;
        Ok(out.total_delay)
    }

    /// Ask the gateway to deliver our messages (those waiting, then new ones) on this
    /// connection.
    pub async fn subscribe(&self) -> Result<(), ClientError> {
        let mut s = self.send.lock().await;
        write_frame(&mut s, FrameKind::Subscribe, &[]).await?;
        Ok(())
    }

    /// The next delivered message, or `None` after `timeout` or when the connection closed.
    pub async fn recv_timeout(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut rx = self.incoming.lock().await;
        tokio::time::timeout(timeout, rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next SURB reply, or `None` after `timeout` or when the connection closed.
    /// Replies never appear in [`Client::recv_timeout`], nor messages here.
    pub async fn recv_reply_timeout(&self, timeout: Duration) -> Option<Reply> {
        let mut rx = self.replies.lock().await;
        tokio::time::timeout(timeout, rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Every SURB reply, as a channel of its own (for a driver that owns the receiving
    /// side); afterwards [`Client::recv_reply_timeout`] sees nothing.
    pub async fn take_replies(&self) -> mpsc::Receiver<Reply> {
        let mut rx = self.replies.lock().await;
        let (_, empty) = mpsc::channel(1);
        std::mem::replace(&mut *rx, empty)
    }

    /// Every delivered message, as a channel of its own; afterwards
    /// [`Client::recv_timeout`] sees nothing.
    pub async fn take_messages(&self) -> mpsc::Receiver<Vec<u8>> {
        let mut rx = self.incoming.lock().await;
        let (_, empty) = mpsc::channel(1);
        std::mem::replace(&mut *rx, empty)
    }

    /// Finish the link (waiting until the gateway acknowledged every byte) and close.
    pub async fn close(self) {
        self.refresher.abort();
        {
            let mut s = self.send.lock().await;
            if s.finish().is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(5), s.stopped()).await;
            }
        }
        self.conn.close(0u32.into(), b"bye");
        let saved = lethe_net::clock::lock(&self.seen).to_bytes();
        if let Err(e) = lethe_net::files::replace_secret(&self.dir.join(SEEN_FILE), &saved) {
            tracing::warn!(error = %e, "could not save the filter of opened messages");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// Wrap `msg` for `to` over `topology`, entering at `gateway`.
pub(crate) fn build_outgoing(
    topology: &Topology,
    gateway: NodeId,
    avoid: &BTreeSet<NodeId>,
    to: &ClientAddress,
    msg: &[u8],
) -> Result<Outgoing, ClientError> {
    if msg.len() > MAX_SEALED_MESSAGE {
        return Err(ClientError::TooLong {
            got: msg.len(),
            max: MAX_SEALED_MESSAGE,
        });
    }
    let mut rng = rand::rng();
    // Sealed to the recipient: no relay on the way, its gateway included, reads it.
    let sealed = lethe_proto::seal::seal(&mut rng, &to.key, &to.client, msg)?;
    let msg = &sealed[..];
    let (route, delays) = topology.plan_route(
        &mut rng,
        &gateway,
        &to.gateway,
        lethe_net::unix_now(),
        avoid,
    )?;
    let packet = build_packet(&mut rng, &route, to.client, &delays, msg)?;
    Ok(Outgoing {
        packet,
        total_delay: delays.iter().sum(),
    })
}

/// Sealed messages remembered to recognise a replay: the last 200,000 to 400,000 (two
/// generations), with this rate of false alarms (a fresh message taken for a replay), in
/// about 2.7 MB.
const SEEN_CAPACITY: u64 = 200_000;
const SEEN_FP_RATE: f64 = 1e-9;

/// The sealed messages opened so far, kept across restarts in this file of the client's
/// directory (0600: the filter is keyed), saved at [`Client::close`].
pub const SEEN_FILE: &str = "seen-messages.bin";

/// How often the filter of opened messages is saved while the client runs (and it changed).
const SEEN_SAVE_EVERY: Duration = Duration::from_secs(60);

async fn save_seen(dir: PathBuf, seen: Arc<std::sync::Mutex<lethe_proto::ReplayFilter>>) {
    let mut saved_at = 0u64;
    loop {
        tokio::time::sleep(SEEN_SAVE_EVERY).await;
        let (n, bytes) = {
            let f = lethe_net::clock::lock(&seen);
            (
                f.inserted(),
                (f.inserted() != saved_at).then(|| f.to_bytes()),
            )
        };
        if let Some(bytes) = bytes {
            match lethe_net::files::replace_secret(&dir.join(SEEN_FILE), &bytes) {
                Ok(()) => saved_at = n,
                Err(e) => {
                    tracing::warn!(error = %e, "could not save the filter of opened messages")
                }
            }
        }
    }
}

/// The filter saved in `dir`, or a fresh one (none saved, or unreadable).
fn seen_filter(dir: Option<&Path>) -> Result<lethe_proto::ReplayFilter, ClientError> {
    if let Some(saved) = dir.and_then(|d| lethe_net::files::read_secret(&d.join(SEEN_FILE)).ok())
        && let Ok(f) = lethe_proto::ReplayFilter::from_bytes(&saved, SEEN_CAPACITY, SEEN_FP_RATE)
    {
        return Ok(f);
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    Ok(lethe_proto::ReplayFilter::new(
        key,
        SEEN_CAPACITY,
        SEEN_FP_RATE,
    )?)
}

/// What the receive loop needs to take a message in.
#[derive(Clone)]
struct Inbound {
    me: ClientId,
    keys: Arc<keys::RecipientKeys>,
    /// Sealed messages already opened (by their `enc`).
    seen: Arc<std::sync::Mutex<lethe_proto::ReplayFilter>>,
    loops: Arc<cover::LoopTracker>,
    drops: Arc<ReceiveDrops>,
}

impl Inbound {
    /// Open a delivered message: `None` when it does not open, was opened before, or is one
    /// of our loops coming back.
    fn take(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let Ok(opened) = self.keys.open(&self.me, sealed) else {
            self.drops.unsealed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // Our own loops are the loop tracker's (it knows a loop that comes back twice); they
        // would only use up the filter's memory of real messages.
        if self.loops.returned(&opened.message) {
            return None;
        }
        if lethe_net::clock::lock(&self.seen).check_and_insert(&opened.tag) {
            self.drops.replayed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(opened.message)
    }
}

async fn receive_loop(
    conn: quinn::Connection,
    inbound: Inbound,
    tx: mpsc::Sender<Vec<u8>>,
    replies: mpsc::Sender<Reply>,
) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let tx = tx.clone();
        let replies = replies.clone();
        let inbound = inbound.clone();
        let drops = inbound.drops.clone();
        tokio::spawn(async move {
            let mut body = Vec::new();
            loop {
                match read_frame(&mut recv, &mut body).await {
                    Ok(ReadOutcome::Frame(FrameKind::Cover)) => {
                        drops.cover.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(ReadOutcome::Frame(FrameKind::Message)) => {
                        // Gateways pad messages to the size of every downstream frame;
                        // a sealed message is SEALED_LEN bytes.
                        let sealed = &body[..body.len().min(lethe_proto::seal::SEALED_LEN)];
                        let Some(message) = inbound.take(sealed) else {
                            continue;
                        };
                        // Never wait here: one kind nobody reads (a flood of either, from
                        // anyone who knows our address) must not stall the other.
                        match tx.try_send(message) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                drops.messages.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    Ok(ReadOutcome::Frame(FrameKind::Reply)) => {
                        // The frame's bounds guarantee the 16-byte id is there.
                        let Some((id, sealed)) = body.split_first_chunk::<16>() else {
                            return;
                        };
                        // A zero id never comes from an honest gateway: dropped.
                        if let Some(surb_id) = SurbId::from_bytes(*id) {
                            let r = Reply {
                                surb_id,
                                sealed: sealed.to_vec(),
                            };
                            match replies.try_send(r) {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(_)) => {
                                    drops.replies.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                    }
                    _ => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_message_opens_once_and_a_replayed_copy_is_dropped() {
        let dir = std::env::temp_dir().join(format!("lethe-inbound-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let keys =
            Arc::new(keys::RecipientKeys::load_or_create(&dir).unwrap_or_else(|e| panic!("{e}")));
        let me = ClientId::from_bytes([5; 32]);
        let inbound = Inbound {
            me,
            keys: keys.clone(),
            seen: Arc::new(std::sync::Mutex::new(
                seen_filter(None).unwrap_or_else(|e| panic!("{e}")),
            )),
            loops: Arc::new(cover::LoopTracker::new([1; 32])),
            drops: Arc::new(ReceiveDrops::default()),
        };
        let pk = keys.public().unwrap_or_else(|e| panic!("{e}"));
        let sealed =
            lethe_proto::seal::seal(&mut rand::rng(), &pk, &me, b"once").unwrap_or_default();
        assert_eq!(inbound.take(&sealed), Some(b"once".to_vec()));
        assert_eq!(inbound.take(&sealed), None, "a replayed copy");
        assert_eq!(inbound.drops.replayed.load(Ordering::Relaxed), 1);
        // Not for us: counted, dropped.
        let other = ClientId::from_bytes([6; 32]);
        let theirs =
            lethe_proto::seal::seal(&mut rand::rng(), &pk, &other, b"x").unwrap_or_default();
        assert_eq!(inbound.take(&theirs), None);
        assert_eq!(inbound.drops.unsealed.load(Ordering::Relaxed), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
