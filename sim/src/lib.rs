#![doc = include_str!("../README.md")]

mod anonymity;
mod config;
mod engine;

pub use anonymity::entropy_bits;
pub use config::{MixKind, SimConfig, TopologyKind};
pub use engine::{Simulation, TargetResult};

use serde::Serialize;

/// Why a configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulation parameter {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Proto(#[from] lethe_proto::Error),
}

/// A distribution summary.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub min: f64,
    pub p5: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Summarise `values` (order does not matter; NaNs sort last).
    pub fn of(values: &[f64]) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        Summary {
            count: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            min: v[0],
            p5: q(0.05),
            p50: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// Everything one run measured. Deterministic for a given configuration (and seed).
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    pub config: SimConfig,
    pub relays: usize,
    pub corrupt_relays: usize,
    /// Target messages sampled, and how many were delivered before the run ended.
    pub targets_sampled: usize,
    pub targets_measured: usize,
    /// Sender anonymity of the target messages: Shannon entropy over the possible sending
    /// clients, in bits.
    pub entropy_bits: Summary,
    /// 2^(mean entropy): the size of a uniform set with the same entropy.
    pub effective_set: f64,
    /// Mean probability mass left unresolved by the truncation (counted as one extra origin).
    pub unresolved_mass: f64,
    /// End-to-end latency of real messages (created at the client, which waits for a payload slot, to the exit gateway), milliseconds.
    pub latency_ms: Summary,
    /// The part of it in the network (sent by the client to the exit gateway), milliseconds.
    pub network_latency_ms: Summary,
    /// Packets entering the network, and how many were real messages.
    pub packets_sent: u64,
    pub real_sent: u64,
    /// Share of packets that are cover (client payload-slot, loop and drop cover, relay loops
    /// and batch top-up).
    pub cover_share: f64,
    /// Packets relays refused because their queue was full.
    pub dropped: u64,
    /// Mean number of packets held by an honest relay when one leaves (Poisson: the pool;
    /// batch: the round).
    pub mean_pool: f64,
    /// Events processed.
    pub events: u64,
}

/// Run one simulation.
pub fn run(cfg: &SimConfig) -> Result<SimReport, SimError> {
    let mut sim = Simulation::new(cfg.clone())?;
    sim.run();
    Ok(sim.report())
}
