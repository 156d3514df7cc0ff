//! `lethe-bench`: benchmarks and load tests for Lethe. Every run is bounded in time and
//! stops by itself; `--json FILE` writes every figure with the machine's description, and
//! `--plot FILE.svg` draws the curve where one says more than a table.
#![allow(clippy::print_stdout)]

mod hop;
mod message;
mod net;
mod node;
mod procs;
mod report;
mod sim;
mod socks;
mod stats;
mod svg;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::report::{command_line, table, write_json};
use crate::svg::{Series, line_chart};

#[derive(Parser)]
#[command(
    name = "lethe-bench",
    version,
    about = "Lethe benchmarks and load tests"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Output {
    /// Write all figures, with the machine's description, as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the main curve as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// ns per forward hop: our relay path, sphinx-packet's process, and the crypto floor;
    /// then our hop's throughput on 1..N threads.
    Hop {
        /// Pre-built packets per timing round.
        #[arg(long, default_value_t = 4000)]
        packets: usize,
        /// Rounds (the report takes medians).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[command(flatten)]
        out: Output,
    },
    /// One real relay process under a rising load until it saturates.
    Node {
        /// Offered rates in packets/s, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1000u64, 2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000])]
        rates: Vec<u64>,
        /// Seconds per rate step.
        #[arg(long, default_value_t = 2.0)]
        step_secs: f64,
        /// Delay every packet asks the relay for, ms.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Relay worker threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        #[command(flatten)]
        out: Output,
    },
    /// The whole local network with K clients sending Poisson streams.
    Net {
        /// Number of clients.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Messages per second per client.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Mean per-hop delay, ms.
        #[arg(long, default_value_t = 20)]
        mean_delay_ms: u64,
        /// Repository root (holds scripts/localnet.sh).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
        repo: PathBuf,
        /// First three octets of the network's loopback addresses.
        #[arg(long, default_value = "127.90.0")]
        prefix: String,
        /// Client cover: mean ms between payload, loop and drop sends, e.g. `20,200,200`
        /// (the network default; `0,0,0`, the default here, turns it off).
        #[arg(long, value_delimiter = ',', default_value = "0,0,0")]
        cover_ms: Vec<u64>,
        /// Downstream cover: mean ms between a gateway's slots to each client (0 = off).
        #[arg(long, default_value_t = 0)]
        downstream_ms: u64,
        /// Downstream cover mode: `burst` or `strict`.
        #[arg(long, default_value = "burst")]
        downstream_mode: String,
        #[command(flatten)]
        out: Output,
    },
    /// Downloads through the local network's SOCKS proxy with curl: MB/s and time to first
    /// byte, for each mean mixing delay in `--delays`.
    Socks {
        #[command(flatten)]
        args: socks::SocksArgs,
        #[command(flatten)]
        out: Output,
    },
    /// Messages of any size with the real `lethe-client send` and `receive`: seconds from
    /// `send` to the recipient's acknowledgement of the whole message, on cover or not.
    Message {
        #[command(flatten)]
        args: message::MessageArgs,
        #[command(flatten)]
        out: Output,
    },
    /// The discrete-event simulator: sender anonymity (entropy), latency and cover overhead,
    /// once or over a sweep of one parameter (`--sweep clients=10,100,1000`).
    Sim {
        #[command(flatten)]
        args: sim::SimArgs,
        #[command(flatten)]
        out: Output,
    },
}

fn bar() -> ProgressBar {
    let pb = ProgressBar::new(1);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// A multi-threaded runtime with `workers` worker threads, timers and I/O.
fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cmd_line = command_line();
    match cli.cmd {
        Cmd::Hop {
            packets,
            rounds,
            out,
        } => {
            let pb = bar();
            let r = hop::run(packets.max(1), rounds.max(1), &pb)?;
            pb.finish_and_clear();
            let hops = table(
                &["path", "ns/hop", "vs floor"],
                &[
                    vec![
                        "ours (relay path, own backend)".into(),
                        format!("{:.0}", r.ours_ns),
                        format!("{:.2}x", r.ours_over_floor),
                    ],
                    vec![
                        "sphinx-packet process".into(),
                        format!("{:.0}", r.sphinx_packet_ns),
                        format!("{:.2}x", r.sphinx_packet_over_floor),
                    ],
                    vec![
                        "floor (2 aws-lc X25519 + symmetric)".into(),
                        format!("{:.0}", r.floor_ns),
                        "1.00x".into(),
                    ],
                    vec![
                        "one X25519 (x25519-dalek)".into(),
                        format!("{:.0}", r.x25519_ns),
                        String::new(),
                    ],
                    vec![
                        "one X25519 (aws-lc-rs, stored key)".into(),
                        format!("{:.0}", r.x25519_aws_lc_ns),
                        String::new(),
                    ],
                ],
            );
            let rows: Vec<Vec<String>> = r
                .threads
                .iter()
                .map(|t| {
                    vec![
                        t.threads.to_string(),
                        format!("{:.0}", t.packets_per_sec),
                        format!("{:.2}x", t.speedup),
                    ]
                })
                .collect();
            let text = format!(
                "{hops}\nours / sphinx-packet = {:.3} (target <= 0.6); median of paired 50-packet chunks: {:.3}\n\
                 building a 5-hop packet: ours {:.0} us, sphinx-packet {:.0} us ({:.2}x)\n\n{}",
                r.ours_over_sphinx_packet,
                r.ours_over_sphinx_packet_paired,
                r.create5_ours_us,
                r.create5_sphinx_packet_us,
                crate::stats::ratio(r.create5_ours_us, r.create5_sphinx_packet_us),
                table(&["threads", "hops/s", "speedup"], &rows)
            );
            let curve = Plot::Curve {
                title: "Forward hops per second against threads".into(),
                x: "threads".into(),
                y: "hops/s".into(),
                series: vec![Series {
                    name: "ours".into(),
                    points: r
                        .threads
                        .iter()
                        .map(|t| (t.threads as f64, t.packets_per_sec))
                        .collect(),
                }],
            };
            render(&out, &cmd_line, &text, curve, &r)?;
        }
        Cmd::Node {
            rates,
            step_secs,
            delay_ms,
            workers,
            out,
        } => {
            let rt = runtime(1)?;
            let pb = bar();
            let r = rt.block_on(node::run(
                node::NodeOpts {
                    rates,
                    step_secs,
                    delay_ms,
                    workers,
                },
                &pb,
            ))?;
            pb.finish_and_clear();
            let mut rows: Vec<Vec<String>> = r.steps.iter().map(step_row).collect();
            if let Some(h) = &r.half_saturation {
                let mut row = step_row(h);
                row[0] = format!("{} (half sat.)", row[0]);
                rows.push(row);
            }
            let text = format!(
                "{}\nsaturation: {:.0} packets/s; relay peak RSS {:.1} MiB; sphinx-packet process: {:.1} us/packet in this run",
                table(
                    &[
                        "offered/s",
                        "forwarded/s",
                        "cpu us/pkt",
                        "vs sphinx",
                        "p50 us",
                        "p99 us",
                        "p99.9 us",
                        "dropped",
                        "lost"
                    ],
                    &rows
                ),
                r.saturation_pps,
                r.peak_rss_mib,
                r.sphinx_process_us
            );
            let curve = Plot::Curve {
                title: "Added latency (p99) against offered load".into(),
                x: "offered packets/s".into(),
                y: "p99 added latency (us)".into(),
                series: vec![Series {
                    name: "p99".into(),
                    points: r
                        .steps
                        .iter()
                        .map(|s| (s.offered_pps, s.added_latency.p99_us as f64))
                        .collect(),
                }],
            };
            render(&out, &cmd_line, &text, curve, &r)?;
        }
        Cmd::Net {
            clients,
            rate,
            secs,
            mean_delay_ms,
            repo,
            prefix,
            cover_ms,
            downstream_ms,
            downstream_mode,
            out,
        } => {
            anyhow::ensure!(clients >= 2, "--clients must be at least 2");
            let cover_ms: [u64; 3] = cover_ms
                .try_into()
                .map_err(|_| anyhow::anyhow!("--cover-ms takes three values: payload,loop,drop"))?;
            let rt = runtime(2)?;
            let pb = bar();
            let r = rt.block_on(net::run(
                net::NetOpts {
                    clients,
                    rate,
                    secs,
                    mean_delay_ms,
                    repo,
                    prefix,
                    cover_ms,
                    downstream_ms,
                    downstream_mode,
                },
                &pb,
            ))?;
            pb.finish_and_clear();
            let text = table(
                &[
                    "clients",
                    "sent",
                    "delivered",
                    "ratio",
                    "msgs/s",
                    "p50 ms",
                    "p99 ms",
                    "p99.9 ms",
                    "cover share",
                    "kB/s up per client",
                    "kB/s down per client",
                ],
                &[vec![
                    r.clients.to_string(),
                    r.sent.to_string(),
                    r.delivered.to_string(),
                    format!("{:.4}", r.delivery_ratio),
                    format!("{:.1}", r.throughput_msgs_per_sec),
                    format!("{:.1}", r.latency.p50_us as f64 / 1000.0),
                    format!("{:.1}", r.latency.p99_us as f64 / 1000.0),
                    format!("{:.1}", r.latency.p999_us as f64 / 1000.0),
                    format!("{:.2}", r.cover_share),
                    format!("{:.1}", r.upstream_kb_per_client),
                    format!("{:.1}", r.downstream_kb_per_client),
                ]],
            );
            let no_curve = Plot::None("net: no plot (one operating point); use --json");
            render(&out, &cmd_line, &text, no_curve, &r)?;
        }
        Cmd::Message { args, out } => {
            let rt = runtime(2)?;
            let pb = bar();
            let r = rt.block_on(message::run(&args, &pb))?;
            pb.finish_and_clear();
            let text = format!(
                "messages through lethe-client send/receive; payload slot every {} ms, sender {}; MB = 10^6 bytes\n{}",
                r.payload_mean_ms,
                if r.sender_on_cover {
                    "on cover"
                } else {
                    "without cover"
                },
                table(&message::HEADERS, &message::rows(&r))
            );
            render(
                &out,
                &cmd_line,
                &text,
                Plot::None("message: no plot; use --json"),
                &r,
            )?;
            let failed: Vec<_> = r.runs.iter().filter(|m| !m.ok).collect();
            if !failed.is_empty() {
                for m in &failed {
                    eprintln!("{} bytes failed: {:?}", m.size_bytes, m.error);
                }
                anyhow::bail!("{} of {} messages failed", failed.len(), r.runs.len());
            }
        }
        Cmd::Socks { args, out } => {
            let rt = runtime(2)?;
            let pb = bar();
            let r = rt.block_on(socks::run(&args, &pb))?;
            pb.finish_and_clear();
            let text = format!(
                "{} MB file, {} single downloads (median) and {} at once (aggregate); MB = 10^6 bytes\n{}",
                r.size_bytes as f64 / 1e6,
                r.repeats,
                r.parallel,
                table(&socks::HEADERS, &socks::rows(&r))
            );
            let series = |name: String, f: fn(&socks::DelayRun) -> f64| Series {
                name,
                points: r
                    .runs
                    .iter()
                    .map(|d| (d.mean_delay_ms as f64, f(d)))
                    .collect(),
            };
            let curve = Plot::Curve {
                title: "SOCKS download throughput against mean per-hop delay".into(),
                x: "mean delay per hop (ms)".into(),
                y: "MB/s".into(),
                series: vec![
                    series("single (median)".into(), |d| d.single_mb_per_sec_median),
                    series(format!("{} at once (aggregate)", r.parallel), |d| {
                        d.parallel_aggregate_mb_per_sec
                    }),
                ],
            };
            render(&out, &cmd_line, &text, curve, &r)?;
            let failed = r.failed();
            if failed > 0 {
                for d in r
                    .runs
                    .iter()
                    .flat_map(|x| x.single.iter().chain(&x.parallel))
                {
                    if let Some(e) = &d.error {
                        eprintln!("download failed: {e}");
                    }
                }
                anyhow::bail!("{failed} downloads failed or differed from the served file");
            }
        }
        Cmd::Sim { args, out } => {
            let pb = bar();
            pb.set_message("sim");
            let points = sim::run(&args, |i, n| {
                pb.set_length(n as u64);
                pb.set_position(i as u64);
            })?;
            pb.finish_and_clear();
            let text = table(&sim::HEADERS, &sim::rows(&points));
            let name = args.sweep.as_deref().unwrap_or("run");
            let param = name.split('=').next().unwrap_or(name);
            let curve = Plot::Curve {
                title: format!("Sender entropy against {param}"),
                x: param.into(),
                y: "mean entropy (bits)".into(),
                series: vec![Series {
                    name: "H".into(),
                    points: points
                        .iter()
                        .filter(|p| p.value.is_finite())
                        .map(|p| (p.value, p.report.entropy_bits.mean))
                        .collect(),
                }],
            };
            render(&out, &cmd_line, &text, curve, &points)?;
        }
    }
    Ok(())
}

/// A report's main curve, or why it has none.
enum Plot {
    Curve {
        title: String,
        x: String,
        y: String,
        series: Vec<Series>,
    },
    None(&'static str),
}

/// What every command does with its report: print `text`, draw the curve to `--plot`
/// (or say why there is none), write the figures to `--json`.
fn render(
    out: &Output,
    cmd_line: &str,
    text: &str,
    plot: Plot,
    report: &impl serde::Serialize,
) -> anyhow::Result<()> {
    println!("{text}");
    let mut no_plot = None;
    if let Some(p) = &out.plot {
        match plot {
            Plot::Curve {
                title,
                x,
                y,
                series,
            } => std::fs::write(p, line_chart(&title, &x, &y, &series))?,
            Plot::None(why) => no_plot = Some(why),
        }
    }
    if let Some(j) = &out.json {
        write_json(j, cmd_line, report)?;
    }
    if let Some(why) = no_plot {
        eprintln!("{why}");
    }
    Ok(())
}

fn step_row(s: &node::Step) -> Vec<String> {
    vec![
        format!("{:.0}", s.offered_pps),
        format!("{:.0}", s.forwarded_pps),
        format!("{:.1}", s.cpu_us_per_packet),
        format!("{:.2}x", s.cpu_over_sphinx_process),
        s.added_latency.p50_us.to_string(),
        s.added_latency.p99_us.to_string(),
        s.added_latency.p999_us.to_string(),
        s.dropped.to_string(),
        s.lost.to_string(),
    ]
}
