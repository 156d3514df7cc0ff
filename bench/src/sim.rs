//! `lethe-bench sim`: run the discrete-event simulator once or over a sweep of one parameter,
//! and print entropy, latency and cover overhead.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use lethe_sim::{MixKind, SimConfig, SimReport, TopologyKind};
use serde::Serialize;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Topo {
    Stratified,
    FreeRoute,
    Cascade,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mix {
    Poisson,
    Batch,
}

/// The simulated network (defaults: 3 layers of 3 relays, 100 clients, Loopix-style streams).
#[derive(Args, Clone, Debug)]
pub struct SimArgs {
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Topo::Stratified)]
    pub topology: Topo,
    /// Hops per route (mix layers).
    #[arg(long, default_value_t = 3)]
    pub layers: usize,
    /// Relays per layer (cascades, for a cascade topology).
    #[arg(long, default_value_t = 3)]
    pub width: usize,
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Real messages per client per second (they wait for a payload slot).
    #[arg(long, default_value_t = 1.0)]
    pub message_rate: f64,
    /// Payload slots per client per second (lambda_P).
    #[arg(long, default_value_t = 2.0)]
    pub payload_rate: f64,
    /// Loop cover per client per second (lambda_L).
    #[arg(long, default_value_t = 0.5)]
    pub loop_rate: f64,
    /// Drop cover per client per second (lambda_D).
    #[arg(long, default_value_t = 0.5)]
    pub drop_rate: f64,
    /// Each relay's loop cover per second (lambda_M).
    #[arg(long, default_value_t = 0.0)]
    pub relay_loop_rate: f64,
    #[arg(long, value_enum, default_value_t = Mix::Poisson)]
    pub mix: Mix,
    /// Batch round length, ms.
    #[arg(long, default_value_t = 100)]
    pub round_ms: u64,
    /// Batch floor k: rounds are topped up with relay cover to this many packets.
    #[arg(long, default_value_t = 0)]
    pub min_packets: usize,
    /// Mean per-hop delay of Poisson relays, ms.
    #[arg(long, default_value_t = 50.0)]
    pub mean_delay_ms: f64,
    /// Per-hop processing time, us.
    #[arg(long, default_value_t = 100)]
    pub processing_us: u64,
    /// Link latency, ms.
    #[arg(long, default_value_t = 1.0)]
    pub link_ms: f64,
    /// Share of relays that reveal their mapping.
    #[arg(long, default_value_t = 0.0)]
    pub corrupt: f64,
    /// Simulated seconds of traffic.
    #[arg(long, default_value_t = 30.0)]
    pub secs: f64,
    /// Seconds before targets are sampled.
    #[arg(long, default_value_t = 5.0)]
    pub warmup_secs: f64,
    /// Target messages whose anonymity is measured.
    #[arg(long, default_value_t = 200)]
    pub targets: usize,
    /// Backward-walk truncation (mass cut is reported as unresolved).
    #[arg(long, default_value_t = 1e-6)]
    pub epsilon: f64,
    /// Sweep one parameter: NAME=V1,V2,.. with NAME one of clients, mean-delay-ms,
    /// client-cover (loop and drop rate each), relay-loop-rate, corrupt, min-packets,
    /// message-rate, width.
    #[arg(long)]
    pub sweep: Option<String>,
}

/// One run of a sweep.
#[derive(Debug, Serialize)]
pub struct Point {
    pub param: String,
    pub value: f64,
    pub wall_secs: f64,
    pub report: SimReport,
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1000.0)
}

impl SimArgs {
    fn config(&self) -> SimConfig {
        let secs = Duration::from_secs_f64(self.secs.max(0.0));
        SimConfig {
            seed: self.seed,
            topology: match self.topology {
                Topo::Stratified => TopologyKind::Stratified,
                Topo::FreeRoute => TopologyKind::FreeRoute,
                Topo::Cascade => TopologyKind::Cascade,
            },
            layers: self.layers,
            width: self.width,
            clients: self.clients,
            message_rate: self.message_rate,
            payload_rate: self.payload_rate,
            loop_rate: self.loop_rate,
            drop_rate: self.drop_rate,
            relay_loop_rate: self.relay_loop_rate,
            mix: match self.mix {
                Mix::Poisson => MixKind::Poisson,
                Mix::Batch => MixKind::Batch {
                    round: Duration::from_millis(self.round_ms),
                    min_packets: self.min_packets,
                },
            },
            mean_delay: ms(self.mean_delay_ms),
            max_delay: ms(self.mean_delay_ms * 40.0).max(Duration::from_millis(1)),
            processing: Duration::from_micros(self.processing_us),
            link_latency: ms(self.link_ms),
            corrupt_fraction: self.corrupt,
            duration: secs,
            warmup: Duration::from_secs_f64(self.warmup_secs.max(0.0)),
            cooldown: (secs / 10).max(Duration::from_secs(1)),
            targets: self.targets,
            epsilon: self.epsilon,
            queue_capacity: 10_000_000,
        }
    }
}

fn apply(cfg: &mut SimConfig, name: &str, v: f64) -> anyhow::Result<()> {
    match name {
        "clients" => cfg.clients = v as usize,
        "mean-delay-ms" => {
            cfg.mean_delay = ms(v);
            cfg.max_delay = ms(v * 40.0).max(Duration::from_millis(1));
        }
        "client-cover" => {
            cfg.loop_rate = v;
            cfg.drop_rate = v;
        }
        "relay-loop-rate" => cfg.relay_loop_rate = v,
        "corrupt" => cfg.corrupt_fraction = v,
        "message-rate" => cfg.message_rate = v,
        "width" => cfg.width = v as usize,
        "min-packets" => match &mut cfg.mix {
            MixKind::Batch { min_packets, .. } => *min_packets = v as usize,
            MixKind::Poisson => anyhow::bail!("min-packets needs --mix batch"),
        },
        other => anyhow::bail!("unknown sweep parameter {other}"),
    }
    Ok(())
}

/// Run the configuration, or each point of the sweep.
pub fn run(args: &SimArgs, mut progress: impl FnMut(usize, usize)) -> anyhow::Result<Vec<Point>> {
    let base = args.config();
    let (name, values) = match &args.sweep {
        None => ("none".to_string(), vec![f64::NAN]),
        Some(s) => {
            let (n, vs) = s
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--sweep NAME=V1,V2,..."))?;
            let values = vs
                .split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<Result<Vec<_>, _>>()?;
            (n.to_string(), values)
        }
    };
    let mut points = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        progress(i, values.len());
        let mut cfg = base.clone();
        if !v.is_nan() {
            apply(&mut cfg, &name, v)?;
        }
        let start = Instant::now();
        let report = lethe_sim::run(&cfg)?;
        points.push(Point {
            param: name.clone(),
            value: v,
            wall_secs: start.elapsed().as_secs_f64(),
            report,
        });
    }
    progress(values.len(), values.len());
    Ok(points)
}

/// Table rows, one per point.
pub fn rows(points: &[Point]) -> Vec<Vec<String>> {
    points
        .iter()
        .map(|p| {
            let r = &p.report;
            vec![
                if p.value.is_nan() {
                    "-".into()
                } else {
                    format!("{}={}", p.param, p.value)
                },
                r.relays.to_string(),
                r.config.clients.to_string(),
                format!("{:.2}", r.entropy_bits.mean),
                format!("{:.2}", r.entropy_bits.p5),
                format!("{:.1}", r.effective_set),
                format!("{:.0e}", r.unresolved_mass),
                format!("{:.1}", r.mean_pool),
                format!("{:.0}", r.network_latency_ms.p50),
                format!("{:.0}", r.network_latency_ms.p99),
                format!("{:.0}", r.latency_ms.p50),
                format!("{:.2}", r.cover_share),
                r.targets_measured.to_string(),
                format!("{:.1}", p.wall_secs),
            ]
        })
        .collect()
}

pub const HEADERS: [&str; 14] = [
    "point",
    "relays",
    "clients",
    "H bits",
    "H p5",
    "2^H",
    "unresolved",
    "pool",
    "net p50 ms",
    "net p99 ms",
    "e2e p50 ms",
    "cover",
    "targets",
    "wall s",
];
