//! `lethe-bench net`: the whole local network (as `scripts/localnet.sh` starts it: a
//! directory, two gateways, two mixes per layer, all real processes) with K clients each
//! sending a Poisson stream of messages to the others; reports end-to-end latency,
//! delivery ratio and throughput.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lethe_client::{Client, ClientConfig, ConnectOptions};
use lethe_net::clock::Clock;
use lethe_net::localnet::Localnet;
use lethe_proto::Timestamp;
use lethe_proto::packet::sample_delay;
use serde::Serialize;

use crate::stats::{Latencies, Percentiles, rate, ratio};

/// Options of `net`.
#[derive(Clone, Debug)]
pub struct NetOpts {
    pub clients: usize,
    /// Messages per second per client.
    pub rate: f64,
    pub secs: f64,
    pub mean_delay_ms: u64,
    /// Repository root (for scripts/localnet.sh).
    pub repo: PathBuf,
    /// First three octets of the network's loopback addresses.
    pub prefix: String,
    /// Client cover the directory publishes and the bench's clients send: mean ms between
    /// payload, loop and drop sends (all 0: no cover, as before issue 12).
    pub cover_ms: [u64; 3],
    /// Downstream cover: mean ms between a gateway's slots to each client (0 = off).
    pub downstream_ms: u64,
    /// `burst` or `strict`.
    pub downstream_mode: String,
}

/// Results of `net`.
#[derive(Debug, Serialize)]
pub struct NetReport {
    pub clients: usize,
    pub rate_per_client: f64,
    pub mean_delay_ms: u64,
    pub sent: u64,
    pub delivered: u64,
    pub delivery_ratio: f64,
    pub throughput_msgs_per_sec: f64,
    pub latency: Percentiles,
    /// Share of the bytes on client links, both ways, that is cover (not the measured
    /// messages): drop and loop packets, empty payload slots, downstream cover frames.
    pub cover_share: f64,
    /// Cover settings: payload, loop, drop, downstream mean ms, downstream mode.
    pub cover_ms: [u64; 3],
    pub downstream_ms: u64,
    pub downstream_mode: String,
    /// Bytes per second one client sends (Sphinx packets) and receives (delivery frames),
    /// mean over clients: with cover on, what an idle client costs too (its payload slots
    /// are then all cover).
    pub upstream_kb_per_client: f64,
    pub downstream_kb_per_client: f64,
}

/// A network started by `scripts/localnet.sh start`; stopped (`localnet.sh stop`) when
/// dropped.
pub struct Net {
    dir: PathBuf,
    repo: PathBuf,
}

impl Net {
    /// The processes localnet.sh started, as (pid, name) from its `pids` file: authorities,
    /// gateways, mixes, `exit` and `socks`.
    pub fn processes(&self) -> Vec<(u32, String)> {
        std::fs::read_to_string(self.dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (pid, name) = l.split_once(' ')?;
                Some((pid.parse().ok()?, name.trim().to_string()))
            })
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(self.repo.join("scripts/localnet.sh"))
            .args(["stop", "--dir"])
            .arg(&self.dir)
            .output();
    }
}

/// Start the local network in `dir` with the binaries beside this one (`LETHE_BIN_DIR`),
/// addresses `prefix`.N and the other `LETHE_*` settings in `env`; returns it and its
/// `localnet.json`.
pub fn start(
    repo: &Path,
    dir: &Path,
    prefix: &str,
    env: &[(&str, String)],
) -> anyhow::Result<(Net, Localnet)> {
    let bin = crate::procs::node_binary()?;
    let bin_dir = bin.parent().context("bin dir")?;
    let out = Command::new("bash")
        .arg(repo.join("scripts/localnet.sh"))
        .args(["start", "--dir"])
        .arg(dir)
        .env("LETHE_BIN_DIR", bin_dir)
        .env("LETHE_PREFIX", prefix)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    let net = Net {
        dir: dir.to_path_buf(),
        repo: repo.to_path_buf(),
    };
    if !out.status.success() {
        bail!(
            "localnet.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let info = Localnet::read(dir)?;
    Ok((net, info))
}

/// Run the network benchmark.
pub async fn run(opts: NetOpts, progress: &indicatif::ProgressBar) -> anyhow::Result<NetReport> {
    let tmp = tempfile::tempdir()?;
    progress.set_message("starting the local network");
    let (_net, info) = start(
        &opts.repo,
        &tmp.path().join("net"),
        &opts.prefix,
        &[
            ("LETHE_MEAN_DELAY_MS", opts.mean_delay_ms.to_string()),
            // The bench's own clients (and the local SOCKS proxy, idle) send the client
            // cover the directory publishes; the mixes' own loops stay off, as in the runs
            // BENCHMARKS.md records.
            ("LETHE_COVER_PAYLOAD_MS", opts.cover_ms[0].to_string()),
            ("LETHE_COVER_LOOP_MS", opts.cover_ms[1].to_string()),
            ("LETHE_COVER_DROP_MS", opts.cover_ms[2].to_string()),
            ("LETHE_COVER_MIX_LOOP_MS", "0".to_string()),
            ("LETHE_COVER_DOWNSTREAM_MS", opts.downstream_ms.to_string()),
            ("LETHE_COVER_DOWNSTREAM_MODE", opts.downstream_mode.clone()),
            ("LETHE_COVER_EXIT_MS", "0".to_string()),
        ],
    )?;
    let gateways: Vec<&str> = info.with_role("gateway").map(|n| n.id.as_str()).collect();
    let mut clients = Vec::new();
    for i in 0..opts.clients {
        let dir = tmp.path().join(format!("client-{i}"));
        let cfg = ClientConfig {
            directory: info.directory.clone(),
            authority_keys: info.authority_keys.clone(),
            threshold: info.threshold,
            gateway: Some(gateways[i % gateways.len()].to_string()),
            mirrors: info.mirrors(),
            network: None,
        };
        lethe_client::init(&dir, cfg).await?;
        let c = Client::connect(&dir, ConnectOptions::default()).await?;
        c.subscribe().await?;
        clients.push(Arc::new(c));
    }
    let covers = if opts.cover_ms.iter().any(|&m| m > 0) {
        clients
            .iter()
            .map(|c| c.start_cover())
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    // What the clients had received before the measured stretch (loops, cover frames).
    let received_before: Vec<u64> = clients.iter().map(|c| frames_received(c)).collect();
    let started = Instant::now();
    let addrs: Vec<_> = clients.iter().map(|c| c.address()).collect();
    let capacity = (opts.clients as f64 * opts.rate * opts.secs * 3.0) as usize + 1024;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..capacity).map(|_| AtomicU64::new(0)).collect());
    let seq = Arc::new(AtomicU64::new(0));
    let clock = Clock::new();
    let deadline = clock.instant(Timestamp::ZERO + Duration::from_secs_f64(opts.secs));
    let drain = Duration::from_millis(opts.mean_delay_ms * 3 * 10 + 2000);
    progress.set_length(opts.secs.ceil() as u64);
    progress.set_message("sending");
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let (c2, addrs, sent, seq) = (c.clone(), addrs.clone(), sent_at.clone(), seq.clone());
        let (rate_, n) = (opts.rate, addrs.len());
        senders.push(tokio::spawn(async move {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(rand::random());
            let mean = Duration::from_secs_f64(1.0 / rate_);
            loop {
                tokio::time::sleep(sample_delay(&mut rng, mean, mean * 20)).await;
                if Instant::now() >= deadline {
                    return;
                }
                let s = seq.fetch_add(1, Ordering::Relaxed) as usize;
                if s >= sent.len() {
                    return;
                }
                let to =
                    addrs[(i + 1 + (rand::Rng::next_u32(&mut rng) as usize) % (n - 1).max(1)) % n];
                let mut msg = (s as u64).to_be_bytes().to_vec();
                msg.resize(256, 0xab);
                sent[s].store(clock.now().as_nanos() + 1, Ordering::Relaxed);
                if c2.send(&to, &msg).await.is_err() {
                    sent[s].store(0, Ordering::Relaxed);
                }
            }
        }));
        let (c3, sent_at) = (c.clone(), sent_at.clone());
        receivers.push(tokio::spawn(async move {
            let mut lat = Latencies::new();
            let mut got = 0u64;
            let end = deadline + drain;
            loop {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let Some(m) = c3.recv_timeout(left).await else {
                    break;
                };
                let Some(b) = m.first_chunk::<8>() else {
                    continue;
                };
                let s = u64::from_be_bytes(*b) as usize;
                let t = sent_at
                    .get(s)
                    .map(|a| a.load(Ordering::Relaxed))
                    .unwrap_or(0);
                if t > 0 {
                    let now = clock.now().as_nanos() + 1;
                    lat.record_us(now.saturating_sub(t) / 1000);
                    got += 1;
                }
            }
            (got, lat)
        }));
    }
    let ticker = {
        let p = progress.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                p.inc(1);
            }
        })
    };
    for s in senders {
        s.await?;
    }
    ticker.abort();
    let sent = sent_at
        .iter()
        .filter(|a| a.load(Ordering::Relaxed) > 0)
        .count() as u64;
    progress.set_message("waiting for the last deliveries");
    let mut all = Latencies::new();
    let mut delivered = 0u64;
    let mut per_client = Vec::new();
    for r in receivers {
        let (g, lat) = r.await?;
        delivered += g;
        per_client.push(lat);
    }
    for l in &per_client {
        all.merge(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let received: u64 = clients
        .iter()
        .zip(&received_before)
        .map(|(c, b)| frames_received(c).saturating_sub(*b))
        .sum::<u64>()
        + delivered;
    let mut packets_up = 0u64;
    for cover in covers {
        let counts = cover.stop().await;
        packets_up += ["real", "payload_cover", "loop", "drop"]
            .iter()
            .map(|k| counts.get(k).copied().unwrap_or(0))
            .sum::<u64>();
    }
    // Without cover every packet up is a message; down, a message or nothing.
    let packets_up = packets_up.max(sent);
    let frames_down = received;
    let up_bytes = packets_up as f64 * lethe_proto::packet::PACKET_SIZE as f64;
    let down_bytes = frames_down as f64 * lethe_proto::frame::DELIVERY_BODY_LEN as f64;
    let real_bytes = sent as f64 * lethe_proto::packet::PACKET_SIZE as f64
        + delivered as f64 * lethe_proto::frame::DELIVERY_BODY_LEN as f64;
    let n = opts.clients.max(1) as f64;
    for c in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    }
    Ok(NetReport {
        clients: opts.clients,
        rate_per_client: opts.rate,
        mean_delay_ms: opts.mean_delay_ms,
        sent,
        delivered,
        delivery_ratio: ratio(delivered as f64, sent as f64),
        throughput_msgs_per_sec: rate(delivered, opts.secs),
        latency: all.summary(),
        cover_share: 1.0 - ratio(real_bytes, up_bytes + down_bytes),
        cover_ms: opts.cover_ms,
        downstream_ms: opts.downstream_ms,
        downstream_mode: opts.downstream_mode,
        upstream_kb_per_client: up_bytes / n / elapsed.max(1e-9) / 1e3,
        downstream_kb_per_client: down_bytes / n / elapsed.max(1e-9) / 1e3,
    })
}

/// Frames a client has received besides the bench's messages: downstream cover frames
/// and its loops' returns.
fn frames_received(c: &Client) -> u64 {
    let stats = c.loop_stats();
    c.receive_drops().cover.load(Ordering::Relaxed) + stats.returned + stats.stale
}
