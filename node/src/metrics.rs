//! Aggregate counters in Prometheus text format. Nothing here is per client or per packet
//! source: only totals and gauges.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Why a packet or frame was dropped; each is a label of `lethe_packets_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Reason {
    WrongSize,
    BadMac,
    Replay,
    BadVersion,
    DelayTooLong,
    BadPayload,
    BadFrame,
    Truncated,
    QueueFull,
    Overload,
    UnknownNextHop,
    LinkFull,
    UnexpectedFinalHop,
    MailboxFull,
    Shutdown,
    Malformed,
    Expired,
    RateLimited,
    FirstHopDelivery,
    MailboxEvicted,
}

const DROPS: [(Reason, &str); 20] = [
    (Reason::WrongSize, "wrong_size"),
    (Reason::BadMac, "bad_mac"),
    (Reason::Replay, "replay"),
    (Reason::BadVersion, "bad_version"),
    (Reason::DelayTooLong, "delay_too_long"),
    (Reason::BadPayload, "bad_payload"),
    (Reason::BadFrame, "bad_frame"),
    (Reason::Truncated, "truncated"),
    (Reason::QueueFull, "queue_full"),
    (Reason::Overload, "overload"),
    (Reason::UnknownNextHop, "unknown_next_hop"),
    (Reason::LinkFull, "link_full"),
    (Reason::UnexpectedFinalHop, "unexpected_final_hop"),
    (Reason::MailboxFull, "mailbox_full"),
    (Reason::Shutdown, "shutdown"),
    (Reason::Malformed, "malformed"),
    (Reason::Expired, "mailbox_expired"),
    (Reason::RateLimited, "rate_limited"),
    (Reason::FirstHopDelivery, "first_hop_delivery"),
    (Reason::MailboxEvicted, "mailbox_evicted"),
];

impl Reason {
    /// The drop reason of a core error.
    pub fn from_error(e: &lethe_proto::Error) -> Reason {
        use lethe_proto::Error as E;
        match e {
            E::WrongPacketSize { .. } => Reason::WrongSize,
            E::BadMac => Reason::BadMac,
            E::Replay => Reason::Replay,
            E::UnsupportedVersion { .. } => Reason::BadVersion,
            E::DelayTooLong { .. } => Reason::DelayTooLong,
            E::BadPayload => Reason::BadPayload,
            E::FrameVersion { .. } | E::FrameKind { .. } | E::FrameLength { .. } => {
                Reason::BadFrame
            }
            E::QueueFull { .. } => Reason::QueueFull,
            E::UnknownNode { .. } => Reason::UnknownNextHop,
            _ => Reason::Malformed,
        }
    }
}

/// A gauge or counter slot.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Set the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Add (or subtract) `d`.
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge holding a float (stored as its bits).
#[derive(Default)]
pub struct FloatGauge(AtomicU64);

impl FloatGauge {
    /// Set the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Why a relay built one of its own cover packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoverKind {
    /// The steady loop stream (`cover.loop_rate_per_sec`).
    Loop,
    /// The anonymity floor (`mixing.min_anonymity_bits`).
    Floor,
    /// Topping up a short batch round (`mixing.batch_min_packets`).
    Round,
}

const COVER_KINDS: [(CoverKind, &str); 3] = [
    (CoverKind::Loop, "loop"),
    (CoverKind::Floor, "floor"),
    (CoverKind::Round, "round"),
];

/// The node's counters.
#[derive(Default)]
pub struct Metrics {
    /// Packets read from links and client connections.
    pub packets_in: AtomicU64,
    /// Packets written to next-hop links.
    pub packets_out: AtomicU64,
    /// Messages handed to connected clients or their mailbox (gateways).
    pub delivered: AtomicU64,
    /// Clients' drop cover packets discarded at their final hop (gateways).
    pub drop_cover: AtomicU64,
    /// Downstream cover frames written to connected clients (gateways).
    pub downstream_cover: AtomicU64,
    /// Frames for a connected client that found its downstream queue full and went to
    /// the mailbox instead (gateways; the session writer takes them from there).
    pub downstream_overflow: AtomicU64,
    dropped: [AtomicU64; 20],
    /// Incoming connections refused: unknown relays at a mix, or over the admission limits.
    pub connections_refused: AtomicU64,
    /// Packets in the mix queue.
    pub queue_depth: Gauge,
    /// Outgoing links connected.
    pub links_up: Gauge,
    /// Client connections open (gateways).
    pub clients_connected: Gauge,
    /// Messages in mailboxes (gateways).
    pub mailbox_messages: Gauge,
    /// Nodes in the current topology.
    pub topology_nodes: Gauge,
    /// The live anonymity estimate, bits (see `lethe_proto::anonymity`).
    pub anonymity_bits: FloatGauge,
    /// Packets in the mixing pool (real and cover).
    pub pool_packets: Gauge,
    /// Batch rounds released.
    pub batch_rounds: AtomicU64,
    cover_sent: [AtomicU64; 3],
    /// Own loop packets that came back.
    pub cover_received: AtomicU64,
    /// Cover packets not built because `cover.max_per_sec` was reached.
    pub cover_suppressed: AtomicU64,
}

impl Metrics {
    /// Count one drop.
    pub fn count_drop(&self, why: Reason) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Drops so far for `why`.
    pub fn dropped(&self, why: Reason) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }

    /// Count one cover packet built and put in the pool.
    pub fn cover_sent(&self, kind: CoverKind) {
        self.cover_sent[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Cover packets built so far for `kind`.
    pub fn cover_sent_count(&self, kind: CoverKind) -> u64 {
        self.cover_sent[kind as usize].load(Ordering::Relaxed)
    }

    /// Count one packet in.
    pub fn packet_in(&self) {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, role: &str) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(2048);
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(s, "# HELP lethe_info Node role.\n# TYPE lethe_info gauge");
        let _ = writeln!(s, "lethe_info{{role=\"{role}\"}} 1");
        for (name, help, v) in [
            (
                "lethe_packets_in_total",
                "Packets received.",
                c(&self.packets_in),
            ),
            (
                "lethe_packets_out_total",
                "Packets forwarded to a next hop.",
                c(&self.packets_out),
            ),
            (
                "lethe_messages_delivered_total",
                "Messages delivered to clients or mailboxes.",
                c(&self.delivered),
            ),
            (
                "lethe_drop_cover_total",
                "Clients' drop cover packets discarded here (their final hop).",
                c(&self.drop_cover),
            ),
            (
                "lethe_downstream_cover_total",
                "Downstream cover frames written to connected clients.",
                c(&self.downstream_cover),
            ),
            (
                "lethe_downstream_overflow_total",
                "Frames for a connected client that found its queue full (kept in the mailbox).",
                c(&self.downstream_overflow),
            ),
            (
                "lethe_connections_refused_total",
                "Incoming connections refused (unknown relay, or over a limit).",
                c(&self.connections_refused),
            ),
            (
                "lethe_batch_rounds_total",
                "Batch rounds released.",
                c(&self.batch_rounds),
            ),
            (
                "lethe_cover_received_total",
                "The relay's own loop packets that came back to it.",
                c(&self.cover_received),
            ),
            (
                "lethe_cover_suppressed_total",
                "Cover packets not built because cover.max_per_sec was reached.",
                c(&self.cover_suppressed),
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        let _ = writeln!(
            s,
            "# HELP lethe_packets_dropped_total Packets or frames dropped, by reason.\n# TYPE lethe_packets_dropped_total counter"
        );
        for (d, label) in DROPS {
            let _ = writeln!(
                s,
                "lethe_packets_dropped_total{{reason=\"{label}\"}} {}",
                self.dropped(d)
            );
        }
        let _ = writeln!(
            s,
            "# HELP lethe_cover_sent_total Cover packets the relay built and mixed, by why.\n# TYPE lethe_cover_sent_total counter"
        );
        for (k, label) in COVER_KINDS {
            let _ = writeln!(
                s,
                "lethe_cover_sent_total{{kind=\"{label}\"}} {}",
                self.cover_sent_count(k)
            );
        }
        let _ = writeln!(
            s,
            "# HELP lethe_anonymity_bits Mean entropy, in bits, of which recent input each recent output could be (log2 of the pool at each departure; log2 of the round in batch mode).\n# TYPE lethe_anonymity_bits gauge\nlethe_anonymity_bits {:.4}",
            self.anonymity_bits.get()
        );
        for (name, help, g) in [
            (
                "lethe_pool_packets",
                "Packets in the mixing pool, real and cover.",
                &self.pool_packets,
            ),
            (
                "lethe_queue_depth",
                "Packets held in the mix queue.",
                &self.queue_depth,
            ),
            (
                "lethe_links_up",
                "Outgoing links connected.",
                &self.links_up,
            ),
            (
                "lethe_clients_connected",
                "Client connections open.",
                &self.clients_connected,
            ),
            (
                "lethe_mailbox_messages",
                "Messages waiting in mailboxes.",
                &self.mailbox_messages,
            ),
            (
                "lethe_topology_nodes",
                "Nodes in the current topology.",
                &self.topology_nodes,
            ),
        ] {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                g.get()
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_reason_and_counts() {
        let m = Metrics::default();
        m.count_drop(Reason::Replay);
        m.count_drop(Reason::Replay);
        m.packet_in();
        m.queue_depth.set(7);
        let text = m.render("mix");
        assert!(text.contains("lethe_packets_dropped_total{reason=\"replay\"} 2"));
        assert!(text.contains("lethe_packets_in_total 1"));
        assert!(text.contains("lethe_queue_depth 7"));
        m.anonymity_bits.set(2.5);
        m.cover_sent(CoverKind::Floor);
        let text = m.render("mix");
        assert!(text.contains("lethe_anonymity_bits 2.5000"));
        assert!(text.contains("lethe_cover_sent_total{kind=\"floor\"} 1"));
        assert!(text.contains("lethe_cover_sent_total{kind=\"loop\"} 0"));
        assert!(text.contains("lethe_pool_packets 0"));
        for (i, (k, _)) in COVER_KINDS.iter().enumerate() {
            assert_eq!(*k as usize, i, "COVER_KINDS order must match the enum");
        }
        for (_, label) in DROPS {
            assert!(text.contains(&format!("reason=\"{label}\"")));
        }
        for (i, (d, _)) in DROPS.iter().enumerate() {
            assert_eq!(*d as usize, i, "DROPS order must match the enum");
        }
    }
}
