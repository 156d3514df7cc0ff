//! `lethe-bench socks`: downloads through the SOCKS proxy of the local network, as a user
//! runs them: `curl --socks5-hostname` fetches a random file from an HTTP server in this
//! process on 127.0.0.1, through the proxy, the mixnet (five hops each way) and the exit
//! service. For each mean mixing delay: a warm-up fetch, R single downloads one after the
//! other, then one round of P at once; each checked byte for byte (length and BLAKE3).
//! Reports MB/s (10^6 bytes per second), time to first byte (curl's `time_starttransfer`:
//! SOCKS handshake, stream opening across the mixnet, request, first byte of the answer)
//! and the CPU time the network's processes used.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::stats::{median, ratio};

/// Options of `socks`.
#[derive(Args, Clone, Debug)]
pub struct SocksArgs {
    /// Size of the downloaded file in MB (10^6 bytes).
    #[arg(long, default_value_t = 5.0)]
    pub size_mb: f64,
    /// Downloads in the parallel round.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Mean per-hop mixing delays to measure, ms (one network each), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 50])]
    pub delays: Vec<u64>,
    /// Single downloads per delay (the report takes medians).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Longest a download may take (curl --max-time), seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Client cover rates the directory publishes: mean ms between payload, loop and drop
    /// sends (localnet.sh's LETHE_COVER_PAYLOAD_MS, _LOOP_MS, _DROP_MS; 0 turns one off).
    #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [20u64, 200, 200])]
    pub cover_ms: Vec<u64>,
    /// Downstream cover the directory publishes: mean ms between a gateway's slots to each
    /// client (0 = off, as in the runs before issue 12).
    #[arg(long, default_value_t = 0)]
    pub downstream_ms: u64,
    /// Downstream cover mode: real frames wait for slots (`strict`) or not (`burst`).
    #[arg(long, default_value = "burst")]
    pub downstream_mode: String,
    /// The exit service's payload stream: mean ms between sends (0 = off: replies leave as
    /// they are made, as in the runs before issue 12).
    #[arg(long, default_value_t = 0)]
    pub exit_ms: u64,
    /// Repository root (holds scripts/localnet.sh).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
    pub repo: PathBuf,
    /// First three octets of the network's loopback addresses.
    #[arg(long, default_value = "127.92.0")]
    pub prefix: String,
}

/// The cover settings the network ran with.
#[derive(Debug, Serialize)]
pub struct CoverSettings {
    pub payload_mean_ms: u64,
    pub loop_mean_ms: u64,
    pub drop_mean_ms: u64,
    /// Downstream cover: mean ms between slots (0: off) and its mode.
    pub downstream_mean_ms: u64,
    pub downstream_mode: String,
    /// The exit's payload stream: mean ms between sends (0: off).
    pub exit_payload_mean_ms: u64,
    /// Whether the SOCKS proxy sends on the cover schedule (then its real packets, requests
    /// and SURB top-ups, wait for payload slots, one per `payload_mean_ms` on average).
    pub proxy_sends_cover: bool,
    /// Whether the exit service does (its replies then wait for its payload slots).
    pub exit_sends_cover: bool,
}

/// One curl download.
#[derive(Debug, Serialize)]
pub struct Download {
    /// Complete, and equal to the served file byte for byte.
    pub ok: bool,
    pub bytes: u64,
    /// Time to first byte (curl's time_starttransfer), ms.
    pub ttfb_ms: f64,
    /// Whole download (curl's time_total), ms.
    pub total_ms: f64,
    /// bytes / total time, MB/s.
    pub mb_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything measured at one mean delay.
#[derive(Debug, Serialize)]
pub struct DelayRun {
    pub mean_delay_ms: u64,
    /// The fetch of a 1 kB file right after the network came up (not in the figures below).
    pub warmup: Download,
    pub single: Vec<Download>,
    /// Median over the single downloads that succeeded.
    pub single_mb_per_sec_median: f64,
    pub single_ttfb_ms_p50: f64,
    pub single_total_ms_median: f64,
    pub parallel: Vec<Download>,
    /// From starting the first parallel download to the end of the last, ms.
    pub parallel_wall_ms: f64,
    /// Bytes of the parallel downloads that succeeded / parallel_wall_ms, MB/s.
    pub parallel_aggregate_mb_per_sec: f64,
    pub parallel_ttfb_ms_p50: f64,
    pub verified: usize,
    pub failed: usize,
    /// CPU seconds (user + system) each network process used over the single and parallel
    /// downloads, by name as localnet.sh calls them.
    pub cpu_secs: BTreeMap<String, f64>,
    /// Sums of `cpu_secs`: gateways and mixes; the exit service; the SOCKS proxy.
    pub relays_cpu_secs: f64,
    pub exit_cpu_secs: f64,
    pub proxy_cpu_secs: f64,
    /// Packets the gateways and mixes took in over the same time (their
    /// `lethe_packets_in_total`), and dropped (`lethe_packets_dropped_total`, all reasons).
    pub relay_packets_in: u64,
    pub relay_packets_dropped: u64,
    /// relay_packets_in per MB downloaded (both directions, every hop: a packet crossing
    /// the five relays of a route counts five times).
    pub relay_hops_per_mb: f64,
    /// relays_cpu_secs / relay_packets_in, us.
    pub relay_cpu_us_per_hop: f64,
    /// This process (the HTTP server and curl's supervision; curl itself not counted).
    pub bench_cpu_secs: f64,
    /// Wall time of the single and parallel downloads, s.
    pub measured_secs: f64,
}

/// Results of `socks`.
#[derive(Debug, Serialize)]
pub struct SocksReport {
    pub size_bytes: u64,
    pub parallel: usize,
    pub repeats: usize,
    pub timeout_secs: u64,
    pub curl_version: String,
    pub cover: CoverSettings,
    pub runs: Vec<DelayRun>,
}

impl SocksReport {
    /// Downloads that failed or differed, over all runs.
    pub fn failed(&self) -> usize {
        self.runs.iter().map(|r| r.failed).sum()
    }
}

/// Table headers of [`rows`].
pub const HEADERS: [&str; 12] = [
    "delay ms",
    "MB/s (median)",
    "TTFB p50 ms",
    "parallel MB/s",
    "par. TTFB p50 ms",
    "relays CPU s",
    "exit CPU s",
    "proxy CPU s",
    "relay hops/MB",
    "relay us/hop",
    "dropped",
    "ok/failed",
];

/// One table row per delay.
pub fn rows(r: &SocksReport) -> Vec<Vec<String>> {
    r.runs
        .iter()
        .map(|d| {
            vec![
                d.mean_delay_ms.to_string(),
                format!("{:.3}", d.single_mb_per_sec_median),
                format!("{:.0}", d.single_ttfb_ms_p50),
                format!("{:.3}", d.parallel_aggregate_mb_per_sec),
                format!("{:.0}", d.parallel_ttfb_ms_p50),
                format!("{:.1}", d.relays_cpu_secs),
                format!("{:.1}", d.exit_cpu_secs),
                format!("{:.1}", d.proxy_cpu_secs),
                format!("{:.0}", d.relay_hops_per_mb),
                format!("{:.0}", d.relay_cpu_us_per_hop),
                d.relay_packets_dropped.to_string(),
                format!("{}/{}", d.verified, d.failed),
            ]
        })
        .collect()
}

/// `curl --version`'s first line, or a clear error when curl is missing.
fn curl_version() -> anyhow::Result<String> {
    let out = std::process::Command::new("curl").arg("--version").output();
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()),
        _ => bail!(
            "lethe-bench socks measures with `curl --socks5-hostname`, as users download: \
             install curl (e.g. apt-get install curl) and put it on PATH"
        ),
    }
}

/// Serve `files` (path -> body) over HTTP/1.1 on `listener`, one task per connection.
async fn serve(listener: TcpListener, files: Arc<BTreeMap<String, Arc<Vec<u8>>>>) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let files = files.clone();
        tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
                if req.len() > 16 * 1024 {
                    return;
                }
            }
            let text = String::from_utf8_lossy(&req);
            let path = text.split_whitespace().nth(1).unwrap_or("/");
            match files.get(path) {
                Some(body) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    if tcp.write_all(head.as_bytes()).await.is_ok() {
                        let _ = tcp.write_all(body).await;
                    }
                }
                None => {
                    let _ = tcp
                        .write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                }
            }
            let _ = tcp.shutdown().await;
        });
    }
}

fn failed(error: String) -> Download {
    Download {
        ok: false,
        bytes: 0,
        ttfb_ms: 0.0,
        total_ms: 0.0,
        mb_per_sec: 0.0,
        error: Some(error),
    }
}

/// One `curl --socks5-hostname proxy url -o out`, checked against `want`.
async fn curl(proxy: &str, url: &str, out: &Path, want: &[u8], timeout_secs: u64) -> Download {
    let run = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", &timeout_secs.to_string()])
        .arg("--socks5-hostname")
        .arg(proxy)
        .args(["-w", "%{time_starttransfer} %{time_total} %{http_code}"])
        .arg("-o")
        .arg(out)
        .arg(url)
        .kill_on_drop(true)
        .output();
    // curl stops itself at --max-time; this is the backstop should it not.
    let o = match tokio::time::timeout(Duration::from_secs(timeout_secs + 10), run).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return failed(format!("running curl: {e}")),
        Err(_) => return failed("curl did not stop at --max-time".into()),
    };
    let body = tokio::fs::read(out).await.unwrap_or_default();
    let _ = tokio::fs::remove_file(out).await;
    let stdout = String::from_utf8_lossy(&o.stdout);
    let f: Vec<&str> = stdout.split_whitespace().collect();
    let secs = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let (ttfb_ms, total_ms) = (secs(0) * 1000.0, secs(1) * 1000.0);
    let code = f.get(2).copied().unwrap_or("000");
    let error = if !o.status.success() {
        Some(format!(
            "curl exit {}: {}",
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    } else if code != "200" {
        Some(format!("HTTP status {code}"))
    } else if body.len() != want.len() {
        Some(format!("got {} bytes of {}", body.len(), want.len()))
    } else if blake3::hash(&body) != blake3::hash(want) {
        Some("the body differs from the served file".into())
    } else {
        None
    };
    Download {
        ok: error.is_none(),
        bytes: body.len() as u64,
        ttfb_ms,
        total_ms,
        mb_per_sec: ratio(body.len() as f64 / 1e6, total_ms / 1000.0),
        error,
    }
}

fn cpu_of(pids: &[(u32, String)]) -> BTreeMap<String, f64> {
    pids.iter()
        .filter_map(|(pid, name)| Some((name.clone(), crate::procs::cpu_seconds(*pid).ok()?)))
        .collect()
}

/// GET http://addr/metrics (bash-free: a raw HTTP/1.0 request), or "" on any failure.
async fn scrape(addr: SocketAddr) -> String {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: m\r\n\r\n")
            .await
            .ok()?;
        let mut v = Vec::new();
        s.read_to_end(&mut v).await.ok()?;
        Some(String::from_utf8_lossy(&v).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(3), get)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The sum of every sample of metric `name` (any labels) in a Prometheus text page.
fn metric_sum(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// (packets in, packets dropped) summed over the relays' metrics addresses.
async fn relay_packets(metrics: &[SocketAddr]) -> (u64, u64) {
    let mut totals = (0, 0);
    for &m in metrics {
        let page = scrape(m).await;
        totals.0 += metric_sum(&page, "lethe_packets_in_total");
        totals.1 += metric_sum(&page, "lethe_packets_dropped_total");
    }
    totals
}

fn ok_values(ds: &[Download], f: impl Fn(&Download) -> f64) -> Vec<f64> {
    ds.iter().filter(|d| d.ok).map(f).collect()
}

/// Measure at one mean delay on a fresh network.
async fn one_delay(
    args: &SocksArgs,
    mean_delay_ms: u64,
    files: &Arc<BTreeMap<String, Arc<Vec<u8>>>>,
    url: &dyn Fn(&str) -> String,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<DelayRun> {
    let tmp = tempfile::tempdir()?;
    progress.set_message(format!(
        "delay {mean_delay_ms} ms: starting the local network"
    ));
    let [payload, lp, dr] = [0, 1, 2].map(|i| args.cover_ms.get(i).copied().unwrap_or(0));
    let (net, info) = crate::net::start(
        &args.repo,
        &tmp.path().join("net"),
        &args.prefix,
        &[
            ("LETHE_MEAN_DELAY_MS", mean_delay_ms.to_string()),
            ("LETHE_COVER_PAYLOAD_MS", payload.to_string()),
            ("LETHE_COVER_LOOP_MS", lp.to_string()),
            ("LETHE_COVER_DROP_MS", dr.to_string()),
            // Mixes' own loops off, as in the runs BENCHMARKS.md records.
            ("LETHE_COVER_MIX_LOOP_MS", "0".to_string()),
            ("LETHE_COVER_DOWNSTREAM_MS", args.downstream_ms.to_string()),
            ("LETHE_COVER_DOWNSTREAM_MODE", args.downstream_mode.clone()),
            ("LETHE_COVER_EXIT_MS", args.exit_ms.to_string()),
        ],
    )?;
    let proxy = info.socks;
    let file = files.get("/file").context("no file")?.clone();
    let warm = files.get("/warmup").context("no warm-up file")?.clone();
    let out = |name: &str| tmp.path().join(name);

    progress.set_message(format!("delay {mean_delay_ms} ms: warm-up"));
    let warmup = curl(
        &proxy,
        &url("/warmup"),
        &out("warmup"),
        &warm,
        args.timeout_secs,
    )
    .await;

    let pids = net.processes();
    let metrics: Vec<SocketAddr> = info.nodes.iter().filter_map(|n| n.metrics).collect();
    let packets_before = relay_packets(&metrics).await;
    let me = std::process::id();
    let cpu_before = cpu_of(&pids);
    let bench_before = crate::procs::cpu_seconds(me).unwrap_or(0.0);
    let started = Instant::now();
    let mut single = Vec::new();
    for i in 0..args.repeats {
        progress.set_message(format!(
            "delay {mean_delay_ms} ms: download {} of {}",
            i + 1,
            args.repeats
        ));
        single.push(
            curl(
                &proxy,
                &url("/file"),
                &out(&format!("single-{i}")),
                &file,
                args.timeout_secs,
            )
            .await,
        );
        progress.inc(1);
    }
    progress.set_message(format!(
        "delay {mean_delay_ms} ms: {} downloads at once",
        args.parallel
    ));
    let par_start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.parallel {
        let (proxy, u, o, f, t) = (
            proxy.clone(),
            url("/file"),
            out(&format!("parallel-{i}")),
            file.clone(),
            args.timeout_secs,
        );
        tasks.push(tokio::spawn(
            async move { curl(&proxy, &u, &o, &f, t).await },
        ));
    }
    let mut parallel = Vec::new();
    for t in tasks {
        parallel.push(t.await.unwrap_or_else(|e| failed(format!("task: {e}"))));
    }
    let parallel_wall_ms = par_start.elapsed().as_secs_f64() * 1000.0;
    progress.inc(1);
    let measured_secs = started.elapsed().as_secs_f64();
    let cpu_after = cpu_of(&pids);
    let packets_after = relay_packets(&metrics).await;
    let bench_cpu_secs = crate::procs::cpu_seconds(me).unwrap_or(0.0) - bench_before;
    drop(net);

    let cpu_secs: BTreeMap<String, f64> = cpu_after
        .iter()
        .filter_map(|(k, a)| Some((k.clone(), a - cpu_before.get(k)?)))
        .collect();
    let sum = |pred: &dyn Fn(&str) -> bool| -> f64 {
        cpu_secs
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, v)| v)
            .sum()
    };
    let relays_cpu_secs = sum(&|k| k.starts_with("gateway-") || k.starts_with("mix-"));
    let exit_cpu_secs = sum(&|k| k == "exit");
    let proxy_cpu_secs = sum(&|k| k == "socks");
    let verified = single.iter().chain(&parallel).filter(|d| d.ok).count();
    let failed_n = single.len() + parallel.len() - verified;
    let par_bytes: u64 = parallel.iter().filter(|d| d.ok).map(|d| d.bytes).sum();
    let all_bytes: u64 = single
        .iter()
        .chain(&parallel)
        .filter(|d| d.ok)
        .map(|d| d.bytes)
        .sum();
    let relay_packets_in = packets_after.0.saturating_sub(packets_before.0);
    let relay_packets_dropped = packets_after.1.saturating_sub(packets_before.1);
    Ok(DelayRun {
        mean_delay_ms,
        single_mb_per_sec_median: median(&ok_values(&single, |d| d.mb_per_sec)),
        single_ttfb_ms_p50: median(&ok_values(&single, |d| d.ttfb_ms)),
        single_total_ms_median: median(&ok_values(&single, |d| d.total_ms)),
        parallel_aggregate_mb_per_sec: ratio(par_bytes as f64 / 1e6, parallel_wall_ms / 1000.0),
        parallel_ttfb_ms_p50: median(&ok_values(&parallel, |d| d.ttfb_ms)),
        parallel_wall_ms,
        warmup,
        single,
        parallel,
        verified,
        failed: failed_n,
        cpu_secs,
        relay_packets_in,
        relay_packets_dropped,
        relay_hops_per_mb: ratio(relay_packets_in as f64, all_bytes as f64 / 1e6),
        relay_cpu_us_per_hop: ratio(relays_cpu_secs * 1e6, relay_packets_in as f64),
        relays_cpu_secs,
        exit_cpu_secs,
        proxy_cpu_secs,
        bench_cpu_secs,
        measured_secs,
    })
}

/// Run the SOCKS benchmark.
pub async fn run(
    args: &SocksArgs,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<SocksReport> {
    anyhow::ensure!(
        args.size_mb > 0.0 && args.size_mb <= 1000.0,
        "--size-mb must be in (0, 1000]"
    );
    anyhow::ensure!(!args.delays.is_empty(), "--delays needs at least one value");
    anyhow::ensure!(args.timeout_secs > 0, "--timeout-secs must be positive");
    anyhow::ensure!(
        args.cover_ms.len() == 3,
        "--cover-ms takes three values: payload,loop,drop"
    );
    anyhow::ensure!(
        matches!(args.downstream_mode.as_str(), "burst" | "strict"),
        "--downstream-mode is burst or strict"
    );
    let curl_version = curl_version()?;
    let size = (args.size_mb * 1e6).round() as usize;
    let random = |n: usize| {
        let mut v = vec![0u8; n];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut v);
        Arc::new(v)
    };
    let files: Arc<BTreeMap<String, Arc<Vec<u8>>>> = Arc::new(
        [
            ("/file".to_string(), random(size)),
            ("/warmup".to_string(), random(1000)),
        ]
        .into_iter()
        .collect(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(serve(listener, files.clone()));
    let url = move |p: &str| format!("http://127.0.0.1:{port}{p}");
    progress.set_length((args.delays.len() * (args.repeats + 1)) as u64);
    let mut runs = Vec::new();
    for &d in &args.delays {
        match one_delay(args, d, &files, &url, progress).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                server.abort();
                return Err(e.context(format!("at mean delay {d} ms")));
            }
        }
    }
    server.abort();
    Ok(SocksReport {
        size_bytes: size as u64,
        parallel: args.parallel,
        repeats: args.repeats,
        timeout_secs: args.timeout_secs,
        curl_version,
        cover: CoverSettings {
            payload_mean_ms: args.cover_ms[0],
            loop_mean_ms: args.cover_ms[1],
            drop_mean_ms: args.cover_ms[2],
            downstream_mean_ms: args.downstream_ms,
            downstream_mode: args.downstream_mode.clone(),
            exit_payload_mean_ms: args.exit_ms,
            // `lethe-client socks` runs the cover driver (unless --no-cover); so does the exit
            // service when the directory publishes an exit rate.
            proxy_sends_cover: args.cover_ms[0] > 0,
            exit_sends_cover: args.exit_ms > 0,
        },
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_server_serves_files_and_404s() {
        let files: Arc<BTreeMap<String, Arc<Vec<u8>>>> = Arc::new(
            [("/a".to_string(), Arc::new(vec![7u8; 3000]))]
                .into_iter()
                .collect(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve(listener, files));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut v = Vec::new();
            s.read_to_end(&mut v).await.unwrap();
            v
        };
        let ok = get("/a").await;
        assert!(ok.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(ok.ends_with(&[7u8; 3000]));
        assert!(get("/b").await.starts_with(b"HTTP/1.1 404"));
        server.abort();
    }

    #[test]
    fn metric_sums_cover_every_label() {
        let page = "HTTP/1.0 200 OK\r\n\r\n# HELP x\nlethe_packets_in_total 12\n\
                    lethe_packets_in_total_other 5\n\
                    lethe_packets_dropped_total{reason=\"replay\"} 2\n\
                    lethe_packets_dropped_total{reason=\"full\"} 3\n";
        assert_eq!(metric_sum(page, "lethe_packets_in_total"), 12);
        assert_eq!(metric_sum(page, "lethe_packets_dropped_total"), 5);
        assert_eq!(metric_sum("", "lethe_packets_in_total"), 0);
    }
}
