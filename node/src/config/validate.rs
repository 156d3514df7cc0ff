//! [`NodeConfig::validate`]: the values of `node.toml` that parse but make no sense; each
//! error names its field.

use super::{MixingStrategy, NodeConfig, NodeRole};
use crate::NodeError;

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
            (
                "authority.cover_downstream_mean_ms",
                a.cover_downstream_mean_ms,
            ),
            (
                "authority.cover_exit_payload_mean_ms",
                a.cover_exit_payload_mean_ms,
            ),
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
