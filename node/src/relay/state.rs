//! The relay's shared state: its configuration, keys, topology, links, sessions, mailbox
//! and limits, one `Shared` behind an `Arc`, and the types the tasks pass each other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use lethe_net::directory::DirectoryClient;
use lethe_net::shutdown::Shutdown;
use lethe_proto::limit::{Counters, KeyedBuckets, TokenBucket};
use lethe_proto::topology::{NodeDescriptor, Role};
use lethe_proto::{
    ClientId, EpochKey, Key32, Mailbox, NodeId, Packet, ReplayFilter, SphinxNode, Timestamp,
    Topology,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{NodeConfig, NodeRole};
use crate::keys::NodeKeys;
use crate::metrics::Metrics;

/// Error codes we close QUIC streams and connections with.
pub(super) mod code {
    pub const SHUTDOWN: u32 = 0;
    pub const BAD_FRAME: u32 = 1;
    pub const UNKNOWN_PEER: u32 = 2;
    pub const BUSY: u32 = 3;
}

/// A packet waiting in the mix queue.
pub(super) struct Scheduled {
    pub(super) next: NodeId,
    pub(super) packet: Packet,
}

/// A processed packet on its way to the mix queue: arrival time, requested delay, packet.
pub(super) type Timed = (Timestamp, Duration, Scheduled);

/// Most packets a worker takes off the queue at once (one wake-up of the scheduler each).
pub(super) const WORKER_BATCH: usize = 32;

/// A packet read from the wire, for the crypto pool.
pub(super) struct Job {
    pub(super) arrival: Timestamp,
    pub(super) bytes: Vec<u8>,
    /// Read from a client's connection: this relay is the packet's first hop, where nothing
    /// may be delivered (a route must cross the mixes before it ends at a gateway).
    pub(super) from_client: bool,
}

/// One epoch's Sphinx key and the replay filter that goes with it (dropped together).
pub(super) struct EpochKeyState {
    pub(super) epoch: u64,
    pub(super) public: Key32,
    pub(super) node: SphinxNode,
    pub(super) replay: Mutex<ReplayFilter>,
    /// The filter's tag count when it was last saved.
    pub(super) saved: std::sync::atomic::AtomicU64,
}

/// One accepted connection, shared by its stream readers.
pub(super) struct ConnCtx {
    pub(super) conn: quinn::Connection,
    /// Hash of the peer's certificate: a relay's pinned identity, or a client's id.
    pub(super) cert: Key32,
    /// Sequence number of this connection's subscription; 0 until it subscribes (once).
    pub(super) session: std::sync::atomic::AtomicU64,
    /// A client's source prefix, whose packet budget it spends (relays are not limited):
    /// one host cannot fill the shared crypto queue and crowd everyone else out, however
    /// many connections or addresses of its prefix it uses.
    pub(super) prefix: Option<IpAddr>,
}

/// Who is at the other end of a connection.
#[derive(Clone, Copy, Debug)]
pub(super) enum Peer {
    Node(NodeId),
    Client,
}

/// A subscribed client: a sequence number (to tell connections apart) and its queue.
pub(super) type Session = (u64, mpsc::Sender<Vec<u8>>);

pub(super) struct Shared {
    pub(super) cfg: NodeConfig,
    pub(super) me: NodeId,
    pub(super) keys: NodeKeys,
    pub(super) clock: lethe_net::clock::Clock,
    pub(super) metrics: Arc<Metrics>,
    pub(super) directory: DirectoryClient,
    pub(super) topology: RwLock<Option<Arc<Topology>>>,
    pub(super) endpoint: quinn::Endpoint,
    /// The endpoint's server settings with every datagram padded to one size: a gateway
    /// accepts its clients with them when the directory publishes strict downstream cover.
    pub(super) padded_server: Arc<quinn::ServerConfig>,
    pub(super) links: Mutex<HashMap<NodeId, mpsc::Sender<Packet>>>,
    pub(super) link_tasks: Mutex<JoinSet<()>>,
    pub(super) sessions: Mutex<HashMap<ClientId, Session>>,
    pub(super) session_seq: std::sync::atomic::AtomicU64,
    pub(super) mailbox: Mutex<Mailbox>,
    pub(super) shutdown: Shutdown,
    /// Sphinx keys by epoch (newest first), each with its own replay filter.
    pub(super) ring: RwLock<Vec<Arc<EpochKeyState>>>,
    /// The node's directory (Sphinx key files live there).
    pub(super) dir: std::path::PathBuf,
    /// Open connections (and handshakes in progress) per source prefix and in all, of
    /// peers that are not relays of the topology.
    pub(super) connections: Mutex<Counters<IpAddr>>,
    /// The same for relays (known by the address they connect from): a budget of their
    /// own, which clients cannot use up.
    pub(super) relay_connections: Mutex<Counters<IpAddr>>,
    /// Completed handshakes per second.
    pub(super) handshakes: Mutex<TokenBucket>,
    /// Packets per second per client source prefix.
    pub(super) packet_budget: Mutex<KeyedBuckets<IpAddr>>,
    /// Milliseconds since the clock's origin of the last on-demand topology fetch (rate limit).
    pub(super) last_fetch_ms: std::sync::atomic::AtomicU64,
    /// Secret destination of this mix's own loop packets: the final hop of a loop is the mix
    /// itself, and only a packet built by it carries this id.
    pub(super) loop_id: ClientId,
    /// Our newest signed descriptor (JSON), the answer to a liveness probe's `Describe`.
    pub(super) own_descriptor: RwLock<Vec<u8>>,
}

pub(super) use lethe_net::clock::lock;

impl Shared {
    pub(super) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(super) fn instant(&self, t: Timestamp) -> Instant {
        self.clock.instant(t)
    }

    pub(super) fn topology(&self) -> Option<Arc<Topology>> {
        self.topology
            .read()
            .map(|t| t.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Install a newer topology (an older or same-age one, e.g. from a racing fetch, is
    /// ignored), follow its delay cap, and close links to relays that left it.
    pub(super) fn set_topology(&self, t: Topology) {
        if let Some(cur) = self.topology()
            && !t.replaces(&cur)
        {
            return;
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

    pub(super) fn ring(&self) -> Vec<Arc<EpochKeyState>> {
        self.ring
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(super) fn own_descriptor_json(&self) -> Vec<u8> {
        self.own_descriptor
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(super) fn is_gateway(&self) -> bool {
        self.cfg.node.role == NodeRole::Gateway
    }

    pub(super) fn shutting_down(&self) -> bool {
        self.shutdown.is_set()
    }

    pub(super) fn descriptor(&self, published: u64, epoch: u64) -> NodeDescriptor {
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
            family: None,
            family_proof: None,
            country: None,
        }
    }
}
