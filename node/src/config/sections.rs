//! The sections of `node.toml` (`[node]`, `[directory]`, `[mixing]`, ...), each with its
//! defaults.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// What this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A mix of one layer (`layer` = 1, 2 or 3).
    Mix,
    /// Entry and exit for clients.
    Gateway,
    /// The directory authority.
    Authority,
}

/// `[cover]`: packets a mix builds itself (loops through the network back to itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoverSection {
    /// Mean rate of the mix's own loop packets, a Poisson stream. Default 0: follow the rate
    /// the directory publishes for every mix (`authority.cover_mix_loop_mean_ms`); a mix
    /// with a rate of its own stands out among its layer. Mixes only.
    pub loop_rate_per_sec: f64,
    /// Most cover packets the relay builds per second, loops, floor and batch top-ups
    /// together (default 50, bursts of as many). Each costs 0.5 to 1 ms of one core, so
    /// this bounds cover at about `max_per_sec * 1 ms` of CPU per second.
    pub max_per_sec: f64,
}

impl Default for CoverSection {
    fn default() -> Self {
        CoverSection {
            loop_rate_per_sec: 0.0,
            max_per_sec: 50.0,
        }
    }
}

/// How a relay decides when packets leave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MixingStrategy {
    /// Continuous-time mix: each packet held for the delay its sender chose.
    #[default]
    Poisson,
    /// Rounds: packets collected for `batch_round_ms` and released together, shuffled,
    /// never fewer than `batch_min_packets` (cover makes up the difference).
    Batch,
}

/// How a gateway's real frames share a client's downstream cover slots (published in the
/// directory for every client alike; see `lethe_proto::downstream`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownstreamModeConfig {
    /// Real frames leave at once; cover fills the gaps (bursts show above the rate).
    #[default]
    Burst,
    /// Real frames wait for slots: the downstream is the same stream idle or busy.
    Strict,
}

/// `[limits]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Open QUIC connections, and handshakes in progress, from one source prefix: an IPv4
    /// address or an IPv6 /64 (default 64).
    pub connections_per_ip: usize,
    /// Open QUIC connections in all from peers that are not relays (default 4096); when
    /// full, new ones are refused and none is evicted.
    pub max_connections: usize,
    /// Open QUIC connections from relays of the topology (known by the address they
    /// publish), a budget clients cannot use up (default 1024).
    pub relay_connections: usize,
    /// Handshakes completed per second, all sources together (default 200; bursts of up
    /// to the same number); every new connection first answers a QUIC Retry.
    pub handshakes_per_sec: u32,
    /// Packets the clients of one source prefix may send per second together, bursts of
    /// as many (default 2000); relays' links are not limited.
    pub client_packets_per_sec: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            connections_per_ip: 64,
            max_connections: 4096,
            relay_connections: 1024,
            handshakes_per_sec: 200,
            client_packets_per_sec: 2000,
        }
    }
}

/// `[node]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// `mix`, `gateway` or `authority`.
    pub role: NodeRole,
    /// Mix layer, 1 to 3 (mixes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u8>,
    /// UDP address of the QUIC endpoint (TCP address of the HTTP directory for the authority).
    pub listen: SocketAddr,
    /// Address published in the descriptor; defaults to `listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<SocketAddr>,
    /// TCP address serving Prometheus metrics at `/metrics`; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Sphinx worker threads; 0 (default) means one per core.
    #[serde(default)]
    pub workers: usize,
}

/// `[directory]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectorySection {
    /// Base URL of the directory authority, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    /// Base URLs of further authorities: descriptors are uploaded to every one, and the
    /// topology is fetched from the first that answers with a valid document.
    pub mirrors: Vec<String>,
    /// Hex Ed25519 keys of the authorities whose signatures count.
    pub authority_keys: Vec<String>,
    /// How many of them must sign a document (default 1).
    pub threshold: usize,
    /// Seconds between topology fetches (default 30).
    pub refresh_secs: u64,
    /// Seconds between descriptor uploads (default 60).
    pub register_secs: u64,
}

impl Default for DirectorySection {
    fn default() -> Self {
        DirectorySection {
            url: String::new(),
            mirrors: Vec::new(),
            authority_keys: Vec::new(),
            threshold: 1,
            refresh_secs: 30,
            register_secs: 60,
        }
    }
}

/// `[mixing]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixingSection {
    /// Most packets held in the mix queue; newer packets are dropped beyond it (default 200000).
    pub queue_capacity: usize,
    /// Most packets waiting on one outgoing link (default 16384).
    pub link_queue: usize,
    /// On SIGTERM, how long queued packets keep being released at their times (default 3000).
    pub shutdown_grace_ms: u64,
    /// `poisson` (default) or `batch`.
    pub strategy: MixingStrategy,
    /// Batch mode: length of a round in ms (default 1000).
    pub batch_round_ms: u64,
    /// Batch mode: fewest packets a round leaves with; the mix tops a short round up with
    /// its own cover (default 10; mixes only).
    pub batch_min_packets: usize,
    /// Poisson mode: when the anonymity of a packet leaving now (log2 of the pool) is below
    /// this many bits, the mix adds its own cover to its pool, at most `cover.max_per_sec`
    /// (default 0: off; mixes only).
    pub min_anonymity_bits: f64,
    /// Window of the `lethe_anonymity_bits` estimate, in ms (default 10000).
    pub anonymity_window_ms: u64,
}

impl Default for MixingSection {
    fn default() -> Self {
        MixingSection {
            queue_capacity: 200_000,
            link_queue: 16_384,
            shutdown_grace_ms: 3_000,
            strategy: MixingStrategy::Poisson,
            batch_round_ms: 1_000,
            batch_min_packets: 10,
            min_anonymity_bits: 0.0,
            anonymity_window_ms: 10_000,
        }
    }
}

/// `[replay]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplaySection {
    /// Tags per Bloom generation; a replay is caught among at least this many recent
    /// packets (default 4000000: 2 x 18 MB at the default rate).
    pub capacity: u64,
    /// False-positive rate per generation (default 1e-6): an honest packet wrongly dropped.
    pub false_positive_rate: f64,
    /// Seconds between saves of each epoch's filter to the node's directory (default 60;
    /// also saved at shutdown). A relay killed without a shutdown forgets at most the tags
    /// of this long.
    pub save_secs: u64,
}

impl Default for ReplaySection {
    fn default() -> Self {
        ReplaySection {
            capacity: 4_000_000,
            false_positive_rate: 1e-6,
            save_secs: 60,
        }
    }
}

/// `[gateway]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Messages kept per offline client (default 1000).
    pub mailbox_per_client: usize,
    /// Bytes kept per offline client (default 2 MiB).
    pub mailbox_per_client_bytes: usize,
    /// Messages kept in all (default 100000).
    pub mailbox_total: usize,
    /// Bytes kept in all (default 64 MiB).
    pub mailbox_total_bytes: usize,
    /// Seconds a message waits for its client (default 3600).
    pub mailbox_ttl_secs: u64,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            mailbox_per_client: 1000,
            mailbox_per_client_bytes: 2 << 20,
            mailbox_total: 100_000,
            mailbox_total_bytes: 64 << 20,
            mailbox_ttl_secs: 3600,
        }
    }
}

/// `[authority]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthoritySection {
    /// Network name in every document (default `lethe`).
    pub network: String,
    /// Epoch length in seconds (default 3600).
    pub epoch_secs: u64,
    /// Mean per-hop mixing delay senders use, ms (default 50).
    pub mean_delay_ms: u64,
    /// Largest per-hop delay relays accept, ms (default 1000).
    pub max_delay_ms: u64,
    /// A node not re-registered for this long leaves the document (default 300).
    pub descriptor_ttl_secs: u64,
    /// Base URLs of the other authorities, whose votes this one collects (default none).
    pub peers: Vec<String>,
    /// The other authorities' public keys in hex, one per peer (`lethe-node id --dir
    /// PEER`): only their votes and signatures count.
    pub peer_keys: Vec<String>,
    /// Length of a voting round in seconds (default 30): the document of each round lists
    /// the relays that a threshold of the authorities hold and reach at its start.
    pub vote_interval_secs: u64,
    /// Signatures a document needs before this authority serves it over the last good one
    /// (default 1; set it to the network's threshold).
    pub threshold: usize,
    /// Clients' payload stream: mean ms between sends, a real packet or drop cover
    /// (default 20; 0 = off).
    pub cover_payload_mean_ms: u64,
    /// Clients' loop cover stream: mean ms between loops (default 200; 0 = off).
    pub cover_loop_mean_ms: u64,
    /// Clients' drop cover stream: mean ms between drop packets (default 200; 0 = off).
    pub cover_drop_mean_ms: u64,
    /// Each mix's own loop cover: mean ms between loops (default 1000; 0 = off). Mixes
    /// follow it unless their `cover.loop_rate_per_sec` overrides it.
    pub cover_mix_loop_mean_ms: u64,
    /// Downstream cover: mean ms between the slots of the Poisson stream a gateway sends
    /// each connected client (default 20; 0 = off).
    pub cover_downstream_mean_ms: u64,
    /// Downstream cover: `burst` (default; real frames at once, cover in the gaps) or
    /// `strict` (real frames wait for slots).
    pub cover_downstream_mode: DownstreamModeConfig,
    /// Exit services' payload stream: mean ms between sends, a reply or drop cover
    /// (default 5, four times a client's rate; 0 = off).
    pub cover_exit_payload_mean_ms: u64,
}

impl Default for AuthoritySection {
    fn default() -> Self {
        AuthoritySection {
            network: "lethe".into(),
            epoch_secs: 3600,
            mean_delay_ms: 50,
            max_delay_ms: 1000,
            descriptor_ttl_secs: 300,
            peers: Vec::new(),
            peer_keys: Vec::new(),
            vote_interval_secs: 30,
            threshold: 1,
            cover_payload_mean_ms: 20,
            cover_loop_mean_ms: 200,
            cover_drop_mean_ms: 200,
            cover_mix_loop_mean_ms: 1000,
            cover_downstream_mean_ms: 20,
            cover_downstream_mode: DownstreamModeConfig::Burst,
            cover_exit_payload_mean_ms: 5,
        }
    }
}
