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
use lethe_proto::packet::{MAX_MESSAGE_LEN, build_packet};
use lethe_proto::surb::SurbId;
use lethe_proto::{ClientAddress, ClientId, FrameKind, Key32, NodeId, Packet, Topology};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};

pub mod cover;
pub use cover::{Cover, LoopStats};
pub mod pipe;
pub mod socks;

/// File name of the client's configuration inside its directory.
pub const CONFIG_FILE: &str = "client.toml";

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

/// `client.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Directory authority URL.
    #[serde(default)]
    pub directory: String,
    /// The other authorities' URLs: documents are fetched from all of them, from a random
    /// one on, so one authority down, slow or lying costs nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
    /// The network's name, recorded at `init` from the first document: a document of
    /// another network is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Hex Ed25519 keys of the authorities.
    #[serde(default)]
    pub authority_keys: Vec<String>,
    /// Signatures a topology document needs (default 1).
    #[serde(default = "one")]
    pub threshold: usize,
    /// The client's gateway (hex node id): its entry, and the exit of messages to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// The newest document's (epoch, serial) a client accepted, kept in its directory: after a
/// restart it still refuses anything older.
pub const NEWEST_FILE: &str = "newest-document";

fn one() -> usize {
    1
}

fn config_err(path: &Path, reason: impl Into<String>) -> ClientError {
    ClientError::Config {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl ClientConfig {
    /// Read `client.toml` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, ClientError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| config_err(&path, e.to_string()))?;
        toml::from_str(&text).map_err(|e| config_err(&path, e.to_string()))
    }

    /// Write `client.toml` in `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ClientError> {
        let path = dir.join(CONFIG_FILE);
        let text = toml::to_string_pretty(self).map_err(|e| config_err(&path, e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| config_err(&path, e.to_string()))
    }

    fn directory_client(&self) -> Result<DirectoryClient, ClientError> {
        if self.directory.is_empty() || self.authority_keys.is_empty() {
            return Err(ClientError::NoDirectory);
        }
        let authorities = self
            .authority_keys
            .iter()
            .map(|k| Key32::parse_hex(k, "authority key"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut d = DirectoryClient::single(self.directory.clone(), authorities, self.threshold);
        d.mirrors = self.mirrors.clone();
        d.network = self.network.clone();
        Ok(d)
    }

    fn gateway(&self) -> Result<NodeId, ClientError> {
        Ok(self
            .gateway
            .as_deref()
            .ok_or(ClientError::NoGateway)?
            .parse()?)
    }
}

/// Create a client directory: TLS identity (its hash is the client's id) and `client.toml`.
/// With a directory and no `gateway`, a gateway is chosen at random from the topology.
pub async fn init(dir: &Path, mut cfg: ClientConfig) -> Result<ClientAddress, ClientError> {
    let path = dir.join(CONFIG_FILE);
    if path.exists() {
        return Err(ClientError::AlreadyInitialised(path));
    }
    std::fs::create_dir_all(dir).map_err(|e| config_err(dir, e.to_string()))?;
    // The first document names the network: later ones must be of the same.
    let first = match cfg.gateway {
        None => Some(cfg.directory_client()?.fetch().await?),
        Some(_) => match cfg.directory_client() {
            Ok(d) => d.fetch().await.ok(),
            Err(_) => None,
        },
    };
    if cfg.network.is_none() {
        cfg.network = first.as_ref().map(|t| t.body().network.clone());
    }
    if cfg.gateway.is_none()
        && let Some(topology) = first
    {
        let gateways: Vec<NodeId> = topology.gateways().map(|g| g.id).collect();
        if gateways.is_empty() {
            return Err(lethe_proto::Error::NoRoute {
                what: "gateway".into(),
            }
            .into());
        }
        let pick = gateways[(rand::rng().next_u64() % gateways.len() as u64) as usize];
        cfg.gateway = Some(pick.to_string());
    }
    let gateway = cfg.gateway()?;
    let id = TlsIdentity::generate()?;
    id.save(dir)?;
    cfg.save(dir)?;
    Ok(ClientAddress {
        client: ClientId(id.cert_hash()),
        gateway,
    })
}

/// The address others send to, from a client directory.
pub fn address(dir: &Path) -> Result<ClientAddress, ClientError> {
    let cfg = ClientConfig::load(dir)?;
    let id = TlsIdentity::load(dir)?;
    Ok(ClientAddress {
        client: ClientId(id.cert_hash()),
        gateway: cfg.gateway()?,
    })
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
    }
}

/// How often a connected client fetches the topology again.
pub const TOPOLOGY_REFRESH: Duration = Duration::from_secs(30);

/// Keep `slot` filled with the newest valid topology (older documents are ignored).
async fn refresh_topology(dir: DirectoryClient, slot: Arc<std::sync::RwLock<Arc<Topology>>>) {
    loop {
        tokio::time::sleep(TOPOLOGY_REFRESH).await;
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
        let loops = Arc::new(cover::LoopTracker::new(
            id.derive_secret("lethe-client loop cover v1"),
        ));
        // The link lives on a runtime of its own, so that what the application does on its
        // runtime (say, a download it is busy reading) does not shift when packets leave.
        let link = LinkRuntime::start()?;
        let (gw_addr, gw_cert) = (gw.address, gw.tls_cert);
        let (endpoint, conn, send) = link
            .handle
            .spawn(async move {
                let endpoint = quinn::Endpoint::client(bind).map_err(NetError::Io)?;
                let conn = tls::connect(&endpoint, &id, gw_addr, gw_cert).await?;
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
            tx,
            reply_tx,
            loops.clone(),
            receive_drops.clone(),
        ));
        let topology = Arc::new(std::sync::RwLock::new(topology));
        let refresher = tokio::spawn(refresh_topology(directory.clone(), topology.clone()));
        Ok(Client {
            endpoint,
            conn,
            topology,
            refresher,
            directory,
            address: ClientAddress {
                client: client_id,
                gateway,
            },
            link,
            send: Mutex::new(send),
            incoming: Mutex::new(rx),
            cover_queue: std::sync::OnceLock::new(),
            real_jobs: std::sync::OnceLock::new(),
            loops,
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

    /// Wrap `msg` for `to`: route entry gateway (ours), a mix of each layer, the recipient's
    /// gateway; exponential delays at the mixes with the network's mean.
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
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(ClientError::TooLong {
            got: msg.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    let mut rng = rand::rng();
    let epoch = topology.epoch_at(lethe_net::unix_now());
    let route = topology.choose_route_avoiding(&mut rng, &gateway, &to.gateway, epoch, avoid)?;
    let delays = topology.route_delays(&mut rng, route.len());
    let packet = build_packet(&mut rng, &route, to.client, &delays, msg)?;
    Ok(Outgoing {
        packet,
        total_delay: delays.iter().sum(),
    })
}

async fn receive_loop(
    conn: quinn::Connection,
    tx: mpsc::Sender<Vec<u8>>,
    replies: mpsc::Sender<Reply>,
    loops: Arc<cover::LoopTracker>,
    drops: Arc<ReceiveDrops>,
) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let tx = tx.clone();
        let replies = replies.clone();
        let loops = loops.clone();
        let drops = drops.clone();
        tokio::spawn(async move {
            let mut body = Vec::new();
            loop {
                match read_frame(&mut recv, &mut body).await {
                    Ok(ReadOutcome::Frame(FrameKind::Message)) => {
                        if loops.returned(&body) {
                            continue;
                        }
                        // Never wait here: one kind nobody reads (a flood of either, from
                        // anyone who knows our address) must not stall the other.
                        match tx.try_send(std::mem::take(&mut body)) {
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
