//! `node.toml`: the node's configuration. Unknown keys are errors; every key has a
//! documented default; [`NodeConfig::validate`] names the field it rejects.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::NodeError;

/// File name of the configuration inside a node's directory.
pub const CONFIG_FILE: &str = "node.toml";

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

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Identity and addresses.
    pub node: NodeSection,
    /// Where the directory is (not used by the authority itself).
    #[serde(default)]
    pub directory: DirectorySection,
    /// Mixing and shutdown.
    #[serde(default)]
    pub mixing: MixingSection,
    /// Replay filter sizing.
    #[serde(default)]
    pub replay: ReplaySection,
    /// Gateway mailbox limits.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// Network parameters the authority publishes.
    #[serde(default)]
    pub authority: AuthoritySection,
    /// Admission limits against hostile peers.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The relay's own cover traffic (mixes).
    #[serde(default)]
    pub cover: CoverSection,
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
        }
    }
}

/// The shortest mean gap between a client's cover sends the authority accepts.
pub const MIN_COVER_MEAN_MS: u64 = 2;
/// The shortest mean gap between a mix's own loops the authority accepts: 20 a second,
/// well inside a mix's default `cover.max_per_sec` (50), which batch top-ups and floor
/// cover share.
pub const MIN_MIX_LOOP_MEAN_MS: u64 = 50;

fn invalid(field: &'static str, reason: impl Into<String>) -> NodeError {
    NodeError::Config {
        field,
        reason: reason.into(),
    }
}

impl NodeConfig {
    /// Parse TOML text and validate it.
    pub fn parse(text: &str) -> Result<Self, NodeError> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| NodeError::ConfigSyntax {
            reason: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read `node.toml` from a node directory.
    pub fn load(dir: &Path) -> Result<Self, NodeError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| NodeError::Io {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            NodeError::ConfigSyntax { reason } => NodeError::ConfigSyntax {
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// TOML text of this configuration.
    pub fn to_toml(&self) -> Result<String, NodeError> {
        toml::to_string_pretty(self).map_err(|e| NodeError::ConfigSyntax {
            reason: e.to_string(),
        })
    }

    fn validate_mixing(&self) -> Result<(), NodeError> {
        let m = &self.mixing;
        let c = &self.cover;
        let mix = self.node.role == NodeRole::Mix;
        if !(1..=60_000).contains(&m.batch_round_ms) {
            return Err(invalid(
                "mixing.batch_round_ms",
                "must be between 1 and 60000",
            ));
        }
        if m.batch_min_packets > m.queue_capacity {
            return Err(invalid(
                "mixing.batch_min_packets",
                "must be at most mixing.queue_capacity",
            ));
        }
        if m.strategy == MixingStrategy::Batch && !mix && m.batch_min_packets > 0 {
            return Err(invalid(
                "mixing.batch_min_packets",
                "only mixes build cover to top up a round; set 0 on other relays",
            ));
        }
        if !(0.0..=20.0).contains(&m.min_anonymity_bits) {
            return Err(invalid(
                "mixing.min_anonymity_bits",
                "must be between 0 and 20",
            ));
        }
        if m.min_anonymity_bits > 0.0 {
            if !mix {
                return Err(invalid(
                    "mixing.min_anonymity_bits",
                    "only mixes build cover; set 0 on other relays",
                ));
            }
            if m.strategy == MixingStrategy::Batch {
                return Err(invalid(
                    "mixing.min_anonymity_bits",
                    "in batch mode the floor is mixing.batch_min_packets",
                ));
            }
        }
        if !(100..=3_600_000).contains(&m.anonymity_window_ms) {
            return Err(invalid(
                "mixing.anonymity_window_ms",
                "must be between 100 and 3600000",
            ));
        }
        if !(0.0..=10_000.0).contains(&c.loop_rate_per_sec) {
            return Err(invalid(
                "cover.loop_rate_per_sec",
                "must be between 0 and 10000",
            ));
        }
        if c.loop_rate_per_sec > 0.0 && !mix {
            return Err(invalid(
                "cover.loop_rate_per_sec",
                "only mixes send loop cover; set 0 on other relays",
            ));
        }
        if !(0.1..=5_000.0).contains(&c.max_per_sec) {
            return Err(invalid("cover.max_per_sec", "must be between 0.1 and 5000"));
        }
        Ok(())
    }

    /// Check values that parse but make no sense; the error names the field.
    pub fn validate(&self) -> Result<(), NodeError> {
        let n = &self.node;
        match (n.role, n.layer) {
            (NodeRole::Mix, Some(1..=3)) => {}
            (NodeRole::Mix, _) => return Err(invalid("node.layer", "a mix needs layer 1, 2 or 3")),
            (_, Some(_)) => return Err(invalid("node.layer", "only mixes have a layer")),
            (_, None) => {}
        }
        if n.role != NodeRole::Authority {
            let d = &self.directory;
            if !d.url.starts_with("http://") {
                return Err(invalid("directory.url", "must be an http:// URL"));
            }
            if d.mirrors.iter().any(|m| !m.starts_with("http://")) {
                return Err(invalid("directory.mirrors", "each must be an http:// URL"));
            }
            if d.authority_keys.is_empty() {
                return Err(invalid(
                    "directory.authority_keys",
                    "at least one key is needed",
                ));
            }
            for k in &d.authority_keys {
                lethe_proto::Key32::parse_hex(k, "authority key")
                    .map_err(|e| invalid("directory.authority_keys", e.to_string()))?;
            }
            if d.threshold == 0 || d.threshold > d.authority_keys.len() {
                return Err(invalid(
                    "directory.threshold",
                    "must be between 1 and the number of authority keys",
                ));
            }
            if d.refresh_secs == 0 {
                return Err(invalid("directory.refresh_secs", "must be at least 1"));
            }
            if d.register_secs == 0 {
                return Err(invalid("directory.register_secs", "must be at least 1"));
            }
        }
        if self.mixing.queue_capacity == 0 {
            return Err(invalid("mixing.queue_capacity", "must be at least 1"));
        }
        if self.mixing.link_queue == 0 {
            return Err(invalid("mixing.link_queue", "must be at least 1"));
        }
        self.validate_mixing()?;
        let r = &self.replay;
        if r.capacity == 0 || r.capacity > 1 << 32 {
            return Err(invalid("replay.capacity", "must be between 1 and 2^32"));
        }
        if !(1e-12..0.5).contains(&r.false_positive_rate) {
            return Err(invalid(
                "replay.false_positive_rate",
                "must be in [1e-12, 0.5)",
            ));
        }
        if r.save_secs == 0 {
            return Err(invalid("replay.save_secs", "must be at least 1"));
        }
        let g = &self.gateway;
        if g.mailbox_per_client == 0 || g.mailbox_total == 0 {
            return Err(invalid(
                "gateway.mailbox_per_client",
                "mailbox limits must be at least 1",
            ));
        }
        // A message is at most one frame: a byte bound below that would refuse everything.
        if g.mailbox_per_client_bytes < 4096 {
            return Err(invalid(
                "gateway.mailbox_per_client_bytes",
                "must be at least 4096 (one message)",
            ));
        }
        if g.mailbox_total_bytes < g.mailbox_per_client_bytes {
            return Err(invalid(
                "gateway.mailbox_total_bytes",
                "must be at least gateway.mailbox_per_client_bytes",
            ));
        }
        let l = &self.limits;
        if l.connections_per_ip == 0 {
            return Err(invalid("limits.connections_per_ip", "must be at least 1"));
        }
        if l.relay_connections == 0 {
            return Err(invalid("limits.relay_connections", "must be at least 1"));
        }
        if l.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if l.handshakes_per_sec == 0 {
            return Err(invalid("limits.handshakes_per_sec", "must be at least 1"));
        }
        if l.client_packets_per_sec == 0 {
            return Err(invalid(
                "limits.client_packets_per_sec",
                "must be at least 1",
            ));
        }
        let a = &self.authority;
        if a.epoch_secs == 0 {
            return Err(invalid("authority.epoch_secs", "must be at least 1"));
        }
        if a.max_delay_ms < a.mean_delay_ms {
            return Err(invalid(
                "authority.max_delay_ms",
                "must be at least mean_delay_ms",
            ));
        }
        if a.peers.iter().any(|p| !p.starts_with("http://")) {
            return Err(invalid("authority.peers", "each must be an http:// URL"));
        }
        if a.peer_keys.len() != a.peers.len()
            || a.peer_keys
                .iter()
                .any(|k| lethe_proto::Key32::parse_hex(k, "authority.peer_keys").is_err())
        {
            return Err(invalid(
                "authority.peer_keys",
                "one hex public key per peer is needed (`lethe-node id --dir PEER`)",
            ));
        }
        if a.vote_interval_secs == 0 || a.vote_interval_secs * 2 > a.epoch_secs {
            return Err(invalid(
                "authority.vote_interval_secs",
                "must be at least 1 and at most half of epoch_secs",
            ));
        }
        if a.threshold == 0 || a.threshold > a.peers.len() + 1 {
            return Err(invalid(
                "authority.threshold",
                "must be between 1 and the number of authorities",
            ));
        }
        for (field, ms) in [
            ("authority.cover_payload_mean_ms", a.cover_payload_mean_ms),
            ("authority.cover_loop_mean_ms", a.cover_loop_mean_ms),
            ("authority.cover_drop_mean_ms", a.cover_drop_mean_ms),
        ] {
            // Three streams at 2 ms are 1500 packets a second from every client, under the
            // gateways' default per-client limit of 2000; anything faster is a typo.
            if ms != 0 && ms < MIN_COVER_MEAN_MS {
                return Err(invalid(
                    field,
                    format!("must be 0 (off) or at least {MIN_COVER_MEAN_MS}"),
                ));
            }
        }
        let ms = a.cover_mix_loop_mean_ms;
        if ms != 0 && ms < MIN_MIX_LOOP_MEAN_MS {
            return Err(invalid(
                "authority.cover_mix_loop_mean_ms",
                format!("must be 0 (off) or at least {MIN_MIX_LOOP_MEAN_MS}"),
            ));
        }
        if a.network.is_empty() {
            return Err(invalid("authority.network", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn valid_fixtures_parse() {
        for f in [
            "mix.toml",
            "gateway.toml",
            "authority.toml",
            "minimal-mix.toml",
            "batch-mix.toml",
            "floor-mix.toml",
        ] {
            let cfg = NodeConfig::parse(&fixture(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            // and survive a round trip
            assert_eq!(NodeConfig::parse(&cfg.to_toml().unwrap()).unwrap(), cfg);
        }
        let a = NodeConfig::parse(&fixture("authority.toml")).unwrap();
        assert_eq!(a.authority.cover_mix_loop_mean_ms, 500);
        assert_eq!(AuthoritySection::default().cover_mix_loop_mean_ms, 1000);
        let m = NodeConfig::parse(&fixture("minimal-mix.toml")).unwrap();
        assert_eq!(m.replay, ReplaySection::default());
        assert_eq!(m.directory.threshold, 1);
        assert_eq!(m.mixing.strategy, MixingStrategy::Poisson);
        assert_eq!(m.cover, CoverSection::default());
        assert_eq!(m.mixing.min_anonymity_bits, 0.0);
        let b = NodeConfig::parse(&fixture("batch-mix.toml")).unwrap();
        assert_eq!(b.mixing.strategy, MixingStrategy::Batch);
        assert_eq!(
            (b.mixing.batch_round_ms, b.mixing.batch_min_packets),
            (500, 20)
        );
        assert_eq!(b.cover.loop_rate_per_sec, 2.5);
        let f = NodeConfig::parse(&fixture("floor-mix.toml")).unwrap();
        assert_eq!(f.mixing.min_anonymity_bits, 3.0);
        assert_eq!(f.cover.max_per_sec, 40.0);
    }

    #[test]
    fn invalid_fixtures_name_the_field() {
        for (f, field) in [
            ("bad-unknown-key.toml", "colour"),
            ("bad-layer.toml", "node.layer"),
            ("bad-gateway-layer.toml", "node.layer"),
            ("bad-threshold.toml", "directory.threshold"),
            ("bad-url.toml", "directory.url"),
            ("bad-listen.toml", "listen"),
            ("bad-fp-rate.toml", "replay.false_positive_rate"),
            ("bad-authority-key.toml", "directory.authority_keys"),
            ("bad-role.toml", "role"),
            ("bad-limits.toml", "limits.connections_per_ip"),
            ("bad-strategy.toml", "strategy"),
            ("bad-floor-batch.toml", "mixing.min_anonymity_bits"),
            ("bad-floor-nan.toml", "mixing.min_anonymity_bits"),
            ("bad-batch-round.toml", "mixing.batch_round_ms"),
            ("bad-cover-cap.toml", "cover.max_per_sec"),
            ("bad-cover-gateway.toml", "cover.loop_rate_per_sec"),
            ("bad-cover-rate.toml", "authority.cover_payload_mean_ms"),
            ("bad-mix-loop-rate.toml", "authority.cover_mix_loop_mean_ms"),
            ("bad-peer-keys.toml", "authority.peer_keys"),
            ("bad-vote-interval.toml", "authority.vote_interval_secs"),
            ("bad-mailbox-bytes.toml", "gateway.mailbox_per_client_bytes"),
        ] {
            let err = NodeConfig::parse(&fixture(f)).expect_err(f).to_string();
            assert!(
                err.contains(field),
                "{f}: error {err:?} should name {field}"
            );
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary text, and arbitrary edits of a valid file, give a config or an error,
        /// never a panic.
        #[test]
        fn parsing_never_panics(s in "(?s).{0,600}") {
            let _ = NodeConfig::parse(&s);
        }

        #[test]
        fn edited_valid_config_never_panics(at in 0usize..2000, junk in "[ -~\n]{0,12}") {
            let text = include_str!("../tests/fixtures/mix.toml");
            let at = text.char_indices().map(|(i, _)| i).nth(at % text.len()).unwrap_or(0);
            let edited = format!("{}{}{}", &text[..at], junk, &text[at..]);
            let _ = NodeConfig::parse(&edited);
        }
    }
}
