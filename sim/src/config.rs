//! Simulation parameters.

use std::time::Duration;

use serde::Serialize;

use crate::SimError;

/// How routes are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TopologyKind {
    /// `layers` layers of `width` relays; hop i is a uniform relay of layer i.
    Stratified,
    /// Every hop is a uniform relay among all `layers * width`.
    FreeRoute,
    /// `width` fixed cascades of `layers` relays; a route is one uniform cascade.
    Cascade,
}

/// How relays mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum MixKind {
    /// Continuous-time mix: each packet is held for its own exponential delay
    /// (`lethe_proto::MixQueue`).
    Poisson,
    /// Batch rounds of length `round`, topped up with relay cover to at least `min_packets`
    /// (`lethe_proto::BatchQueue`).
    Batch { round: Duration, min_packets: usize },
}

/// One simulation's parameters. Rates are per second; every client runs the same streams.
#[derive(Clone, Debug, Serialize)]
pub struct SimConfig {
    pub seed: u64,
    pub topology: TopologyKind,
    /// Hops per route (mix layers).
    pub layers: usize,
    /// Relays per layer (cascades, for `Cascade`); relays in all: `layers * width`.
    pub width: usize,
    pub clients: usize,
    /// Real messages each client wants to send (they wait for a payload slot).
    pub message_rate: f64,
    /// lambda_P, lambda_L, lambda_D of every client.
    pub payload_rate: f64,
    pub loop_rate: f64,
    pub drop_rate: f64,
    /// lambda_M: each relay's own loop cover.
    pub relay_loop_rate: f64,
    pub mix: MixKind,
    /// Mean of the exponential per-hop delay (Poisson mixes), and its cap.
    pub mean_delay: Duration,
    pub max_delay: Duration,
    /// Time a relay (or gateway) spends on a packet before it is queued, and one link's
    /// latency.
    pub processing: Duration,
    pub link_latency: Duration,
    /// Share of relays that reveal their input-output mapping.
    pub corrupt_fraction: f64,
    /// Traffic runs for `duration`; targets are sampled among real messages sent between
    /// `warmup` and `duration - cooldown`; in-flight packets then drain.
    pub duration: Duration,
    pub warmup: Duration,
    pub cooldown: Duration,
    /// Target messages to sample.
    pub targets: usize,
    /// Paths of the backward walk with weight below this are cut (their mass is reported as
    /// unresolved).
    pub epsilon: f64,
    /// Packets one relay holds at most.
    pub queue_capacity: usize,
}

impl Default for SimConfig {
    /// A small stratified network at the deployed Loopix-style parameters.
    fn default() -> Self {
        SimConfig {
            seed: 1,
            topology: TopologyKind::Stratified,
            layers: 3,
            width: 3,
            clients: 100,
            message_rate: 1.0,
            payload_rate: 2.0,
            loop_rate: 0.5,
            drop_rate: 0.5,
            relay_loop_rate: 0.0,
            mix: MixKind::Poisson,
            mean_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
            processing: Duration::from_micros(100),
            link_latency: Duration::from_millis(1),
            corrupt_fraction: 0.0,
            duration: Duration::from_secs(30),
            warmup: Duration::from_secs(5),
            cooldown: Duration::from_secs(2),
            targets: 200,
            epsilon: 1e-6,
            queue_capacity: 1_000_000,
        }
    }
}

impl SimConfig {
    /// Relays in all.
    pub fn relays(&self) -> usize {
        self.layers * self.width
    }

    /// Check the parameters.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |field, reason: &str| {
            Err(SimError::Invalid {
                field,
                reason: reason.to_string(),
            })
        };
        if self.layers == 0 || self.layers > 16 {
            return bad("layers", "must be 1 to 16");
        }
        if self.width == 0 {
            return bad("width", "must be at least 1");
        }
        if self.clients == 0 || self.clients.saturating_add(self.relays()) >= u32::MAX as usize {
            return bad("clients", "must be at least 1 and fit u32 ids");
        }
        for (f, r) in [
            ("message_rate", self.message_rate),
            ("payload_rate", self.payload_rate),
            ("loop_rate", self.loop_rate),
            ("drop_rate", self.drop_rate),
            ("relay_loop_rate", self.relay_loop_rate),
        ] {
            if !r.is_finite() || r < 0.0 {
                return bad(f, "must be a finite rate >= 0");
            }
        }
        if !(0.0..=1.0).contains(&self.corrupt_fraction) {
            return bad("corrupt_fraction", "must be in [0, 1]");
        }
        if !(self.epsilon > 0.0 && self.epsilon < 1.0) {
            return bad("epsilon", "must be in (0, 1)");
        }
        if self.warmup + self.cooldown >= self.duration {
            return bad("warmup", "warmup + cooldown must be shorter than duration");
        }
        if (self.processing + self.link_latency).is_zero() {
            return bad("link_latency", "processing + link latency must be positive");
        }
        if let MixKind::Batch { round, min_packets } = self.mix {
            if round.is_zero() {
                return bad("round", "must be positive");
            }
            lethe_proto::BatchConfig {
                round,
                min_packets,
                capacity: self.queue_capacity,
            }
            .validate()?;
        }
        Ok(())
    }
}
