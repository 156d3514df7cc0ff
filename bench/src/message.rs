//! `lethe-bench message`: messages of any size through the local network with the real
//! `lethe-client send` and `receive` processes: how long each takes from the start of
//! `send` to the recipient's acknowledgement of the whole message, on the sender's cover
//! schedule (or without, `--no-cover`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use lethe_client::ClientConfig;
use rand::RngExt;
use serde::Serialize;

/// Options of `message`.
#[derive(Args, Clone, Debug)]
pub struct MessageArgs {
    /// Message sizes in MB (10^6 bytes), comma-separated; sent one after another.
    #[arg(long, value_delimiter = ',', default_values_t = [0.1f64, 1.0, 10.0])]
    pub sizes_mb: Vec<f64>,
    /// Client cover rates the directory publishes: mean ms between payload, loop and drop
    /// sends (0 turns one off).
    #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [20u64, 200, 200])]
    pub cover_ms: Vec<u64>,
    /// Mean per-hop mixing delay, ms.
    #[arg(long, default_value_t = 20)]
    pub mean_delay_ms: u64,
    /// Downstream cover: mean ms between a gateway's slots to each client (0 = off).
    #[arg(long, default_value_t = 20)]
    pub downstream_ms: u64,
    /// Downstream cover mode (`burst` or `strict`).
    #[arg(long, default_value = "burst")]
    pub downstream_mode: String,
    /// Send without cover (`send --no-cover`; the recipient keeps its cover).
    #[arg(long)]
    pub no_cover: bool,
    /// `send --timeout`, seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_secs: u64,
    /// Repository root (holds scripts/localnet.sh).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
    pub repo: PathBuf,
    /// First three octets of the network's loopback addresses.
    #[arg(long, default_value = "127.94.0")]
    pub prefix: String,
}

/// One message.
#[derive(Debug, Serialize)]
pub struct MessageRun {
    pub size_bytes: u64,
    /// `send` exited 0 and the recipient's file is byte-exact.
    pub ok: bool,
    /// From `send`'s start to its exit (the recipient's acknowledgement).
    pub secs: f64,
    pub mb_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct MessageReport {
    pub payload_mean_ms: u64,
    pub loop_mean_ms: u64,
    pub drop_mean_ms: u64,
    pub mean_delay_ms: u64,
    pub downstream_mean_ms: u64,
    pub downstream_mode: String,
    pub sender_on_cover: bool,
    pub runs: Vec<MessageRun>,
}

/// Table columns.
pub const HEADERS: [&str; 4] = ["size MB", "ok", "seconds", "MB/s"];

/// Table rows.
pub fn rows(r: &MessageReport) -> Vec<Vec<String>> {
    r.runs
        .iter()
        .map(|m| {
            vec![
                format!("{}", m.size_bytes as f64 / 1e6),
                m.ok.to_string(),
                format!("{:.1}", m.secs),
                format!("{:.3}", m.mb_per_sec),
            ]
        })
        .collect()
}

fn client_binary() -> anyhow::Result<PathBuf> {
    let node = crate::procs::node_binary()?;
    let p = node.with_file_name("lethe-client");
    anyhow::ensure!(
        p.exists(),
        "{} not found: build it too (cargo build --release)",
        p.display()
    );
    Ok(p)
}

/// Run the benchmark.
pub async fn run(
    args: &MessageArgs,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<MessageReport> {
    let tmp = tempfile::tempdir()?;
    let [payload, lp, dr] = [0, 1, 2].map(|i| args.cover_ms.get(i).copied().unwrap_or(0));
    progress.set_message("starting the local network");
    let (_net, info) = crate::net::start(
        &args.repo,
        &tmp.path().join("net"),
        &args.prefix,
        &[
            ("LETHE_MEAN_DELAY_MS", args.mean_delay_ms.to_string()),
            ("LETHE_COVER_PAYLOAD_MS", payload.to_string()),
            ("LETHE_COVER_LOOP_MS", lp.to_string()),
            ("LETHE_COVER_DROP_MS", dr.to_string()),
            ("LETHE_COVER_MIX_LOOP_MS", "0".to_string()),
            ("LETHE_COVER_DOWNSTREAM_MS", args.downstream_ms.to_string()),
            ("LETHE_COVER_DOWNSTREAM_MODE", args.downstream_mode.clone()),
        ],
    )?;
    let gateway = |name: &str| -> anyhow::Result<String> {
        Ok(info
            .nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no {name}"))?
            .id
            .clone())
    };
    let mut dirs = Vec::new();
    for (name, gw) in [("alice", "gateway-1"), ("bob", "gateway-2")] {
        let dir = tmp.path().join(name);
        lethe_client::init(
            &dir,
            ClientConfig {
                directory: info.directory.clone(),
                authority_keys: info.authority_keys.clone(),
                threshold: info.threshold,
                gateway: Some(gateway(gw)?),
                mirrors: info.mirrors(),
                network: None,
            },
        )
        .await?;
        dirs.push(dir);
    }
    let (alice, bob) = (&dirs[0], &dirs[1]);
    let to = lethe_client::address(bob)?.to_string();
    let bin = client_binary()?;
    let inbox = tmp.path().join("inbox");
    let bind = |host: u8| {
        format!(
            "{}.{host}.7:0",
            args.prefix.rsplit_once('.').map_or("127.94", |p| p.0)
        )
    };
    let mut receiver = Command::new(&bin)
        .args(["receive", "--dir"])
        .arg(bob)
        .args(["--bind", &bind(2), "--out-dir"])
        .arg(&inbox)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting lethe-client receive")?;
    progress.set_length(args.sizes_mb.len() as u64);
    let mut runs = Vec::new();
    for (i, mb) in args.sizes_mb.iter().enumerate() {
        let len = (mb * 1e6) as usize;
        progress.set_message(format!("{mb} MB message"));
        let mut data = vec![0u8; len];
        rand::rng().fill(&mut data[..]);
        let file = tmp.path().join(format!("msg-{i}"));
        std::fs::write(&file, &data)?;
        let started = Instant::now();
        let mut cmd = Command::new(&bin);
        cmd.args(["send", "--dir"])
            .arg(alice)
            .args(["--bind", &bind(1), "--to", &to, "--file"])
            .arg(&file)
            .args(["--timeout", &args.timeout_secs.to_string()]);
        if args.no_cover {
            cmd.arg("--no-cover");
        }
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        let secs = started.elapsed().as_secs_f64();
        let got = std::fs::read(inbox.join(format!("message-{:06}", i + 1))).ok();
        let ok = out.status.success() && got.as_deref() == Some(&data[..]);
        runs.push(MessageRun {
            size_bytes: len as u64,
            ok,
            secs,
            mb_per_sec: len as f64 / 1e6 / secs,
            error: (!ok).then(|| String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
        progress.inc(1);
    }
    let _ = receiver.kill();
    let _ = receiver.wait();
    Ok(MessageReport {
        payload_mean_ms: payload,
        loop_mean_ms: lp,
        drop_mean_ms: dr,
        mean_delay_ms: args.mean_delay_ms,
        downstream_mean_ms: args.downstream_ms,
        downstream_mode: args.downstream_mode.clone(),
        sender_on_cover: !args.no_cover && payload > 0,
        runs,
    })
}
