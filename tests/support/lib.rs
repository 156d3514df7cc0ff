//! Test support: a local Lethe network of real `lethe-node` processes on loopback, started
//! with `scripts/localnet.sh` (so the script is tested too), plus helpers to read metrics,
//! stop and restart nodes, and connect in-process clients.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod http;
pub mod stats;
pub mod wire;

use anyhow::{Context, Result, bail};
use lethe_client::{Client, ClientConfig, ConnectOptions};
use lethe_net::localnet::Localnet;

/// One node of the network, from `localnet.json`.
pub use lethe_net::localnet::NodeInfo;

/// The directory holding the workspace's binaries for this test run (`target/debug` or
/// `target/release`), next to the test executable's `deps/`. `cargo test --workspace`
/// builds them (through the node's and client's own CLI tests); a binary older than the
/// sources it is built from fails the test instead of silently testing old code.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    for (bin, sources) in [
        (
            "lethe-node",
            &["proto/src", "net/src", "node/src", "client/src", "exit/src"][..],
        ),
        ("lethe-client", &["proto/src", "net/src", "client/src"][..]),
    ] {
        let built = std::fs::metadata(dir.join(bin))
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| {
                panic!(
                    "no {bin} in {}: run `cargo test --workspace`",
                    dir.display()
                )
            });
        let newest = sources
            .iter()
            .filter_map(|d| newest_mtime(&workspace().join(d)))
            .max();
        if let Some(src) = newest {
            assert!(
                built >= src,
                "{bin} is older than its sources: run `cargo test --workspace` (or cargo build --workspace)"
            );
        }
    }
    dir
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            if p.is_dir() {
                newest_mtime(&p)
            } else {
                e.metadata().and_then(|m| m.modified()).ok()
            }
        })
        .max()
}

/// Root of the workspace.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running local network; stopped when dropped.
pub struct LocalNet {
    pub root: tempfile::TempDir,
    pub prefix: String,
    pub directory: String,
    pub authority_keys: Vec<String>,
    pub threshold: usize,
    /// The other authorities' URLs (clients use every one).
    pub mirrors: Vec<String>,
    pub nodes: Vec<NodeInfo>,
    /// The exit service's address (`CLIENT.KEY@GATEWAY`) and log.
    pub exit: String,
    pub exit_log: PathBuf,
    /// The SOCKS5 proxy's listen address and log.
    pub socks: String,
    pub socks_log: PathBuf,
    /// Nodes restarted by the test (not known to the script's pid file).
    children: HashMap<String, Child>,
}

impl LocalNet {
    /// Start the network on `PREFIX.x` addresses with the given mean per-hop delay.
    pub fn start(prefix: &str, mean_delay_ms: u64) -> Result<LocalNet> {
        Self::start_with_env(prefix, mean_delay_ms, &[])
    }

    /// As [`LocalNet::start`], with extra environment for every node (e.g. `RUST_LOG`).
    pub fn start_with_env(
        prefix: &str,
        mean_delay_ms: u64,
        env: &[(&str, &str)],
    ) -> Result<LocalNet> {
        let root = tempfile::tempdir()?;
        let dir = root.path().join("net");
        let out = Command::new("bash")
            .arg(workspace().join("scripts/localnet.sh"))
            .args(["start", "--dir"])
            .arg(&dir)
            .env("LETHE_BIN_DIR", bin_dir())
            .env("LETHE_PREFIX", prefix)
            .env("LETHE_MEAN_DELAY_MS", mean_delay_ms.to_string())
            // No client or mix cover unless a test asks for it (`env` wins): most tests
            // count packets and need a network that carries only theirs.
            .env("LETHE_COVER_PAYLOAD_MS", "0")
            .env("LETHE_COVER_LOOP_MS", "0")
            .env("LETHE_COVER_DROP_MS", "0")
            .env("LETHE_COVER_MIX_LOOP_MS", "0")
            .env("LETHE_COVER_DOWNSTREAM_MS", "0")
            .env("LETHE_COVER_EXIT_MS", "0")
            .envs(env.iter().copied())
            .output()?;
        if !out.status.success() {
            bail!(
                "localnet.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let info = Localnet::read(&dir)?;
        let mirrors = info.mirrors();
        let Localnet {
            directory,
            authority_keys,
            threshold,
            exit,
            exit_log,
            socks,
            socks_log,
            nodes,
            ..
        } = info;
        Ok(LocalNet {
            prefix: prefix.to_string(),
            directory,
            authority_keys,
            threshold,
            mirrors,
            nodes,
            exit,
            exit_log,
            socks,
            socks_log,
            root,
            children: HashMap::new(),
        })
    }

    /// The test's temporary directory (the network is in `net/` below it).
    pub fn root_path(&self) -> &Path {
        self.root.path()
    }

    /// A node by name (`gateway-1`, `mix-2a`, ...).
    pub fn node(&self, name: &str) -> &NodeInfo {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    /// The node's metrics as `name{labels} -> value`.
    pub async fn metrics(&self, name: &str) -> Result<HashMap<String, f64>> {
        let addr = self.node(name).metrics.context("no metrics")?;
        let (status, body) =
            lethe_net::http::request("GET", &format!("http://{addr}/metrics"), None).await?;
        if status != 200 {
            bail!("metrics answered {status}");
        }
        Ok(parse_metrics(&String::from_utf8_lossy(&body)))
    }

    /// One metric, 0 when absent.
    pub async fn metric(&self, node: &str, name: &str) -> f64 {
        self.metrics(node)
            .await
            .ok()
            .and_then(|m| m.get(name).copied())
            .unwrap_or(0.0)
    }

    /// Send SIGTERM to a node and wait (up to 15 s) for it to exit; returns its status when
    /// it was a child of this test (restarted), else whether it exited.
    pub fn stop_node(&mut self, name: &str) -> Result<Option<ExitStatus>> {
        self.signal_node(name, "TERM")
    }

    /// Kill a node with SIGKILL, as a crash or a pulled plug would: no draining, no goodbye.
    pub fn kill_node(&mut self, name: &str) -> Result<Option<ExitStatus>> {
        self.signal_node(name, "KILL")
    }

    fn signal_node(&mut self, name: &str, signal: &str) -> Result<Option<ExitStatus>> {
        let pid = self.node(name).pid;
        Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()?;
        self.wait_stopped(name, Instant::now() + Duration::from_secs(15))
    }

    /// Wait until the (signalled) node `name` has exited, failing after `deadline`; returns
    /// its status when it was a child of this test (restarted), else `None`.
    fn wait_stopped(&mut self, name: &str, deadline: Instant) -> Result<Option<ExitStatus>> {
        let pid = self.node(name).pid.to_string();
        if let Some(mut child) = self.children.remove(name) {
            loop {
                if let Some(st) = child.try_wait()? {
                    return Ok(Some(st));
                }
                if Instant::now() > deadline {
                    bail!("{name} did not stop within 15 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        while Command::new("kill")
            .args(["-0", &pid])
            .stderr(Stdio::null())
            .status()?
            .success()
        {
            if Instant::now() > deadline {
                bail!("{name} did not stop within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    /// Start a stopped node again from its directory (same keys), logging to the same file.
    pub fn start_node(&mut self, name: &str) -> Result<()> {
        self.start_node_with(name, &[], &[])
    }

    /// As [`LocalNet::start_node`], with extra `run` arguments and environment.
    pub fn start_node_with(
        &mut self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<()> {
        let info = self.node(name).clone();
        let log = std::fs::OpenOptions::new().append(true).open(&info.log)?;
        let child = Command::new(bin_dir().join("lethe-node"))
            .args(["run", "--dir"])
            .arg(&info.dir)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        self.children.insert(name.to_string(), child);
        if let Some(n) = self.nodes.iter_mut().find(|n| n.name == name) {
            n.pid = pid;
        }
        Ok(())
    }

    /// Stop the named relays together (SIGTERM to all, then wait for each), set `key = value`
    /// lines in each one's `node.toml` (every key is written by `init`, so each is there
    /// once), start them again and wait until each has loaded the full topology.
    pub async fn reconfigure(&mut self, names: &[&str], edits: &[(&str, &str)]) -> Result<()> {
        for name in names {
            let pid = self.node(name).pid;
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for name in names {
            self.wait_stopped(name, deadline)?;
        }
        for name in names {
            let path = self.node(name).dir.join("node.toml");
            let text = std::fs::read_to_string(&path)?;
            let mut lines: Vec<String> = text.lines().map(String::from).collect();
            for (key, value) in edits {
                let prefix = format!("{key} =");
                let line = lines
                    .iter_mut()
                    .find(|l| l.starts_with(&prefix))
                    .with_context(|| format!("no {key} in {}", path.display()))?;
                *line = format!("{key} = {value}");
            }
            std::fs::write(&path, lines.join("\n") + "\n")?;
            self.start_node(name)?;
        }
        let want = self.nodes.iter().filter(|n| n.role != "authority").count() as f64;
        for name in names {
            self.wait_metric(name, "lethe_topology_nodes", Duration::from_secs(20), |v| {
                v == want
            })
            .await?;
        }
        Ok(())
    }

    /// Wait until `node`'s `metric` satisfies `ok`, for at most `timeout`.
    pub async fn wait_metric(
        &self,
        node: &str,
        metric: &str,
        timeout: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(node, metric).await;
            if ok(v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("{node} {metric} = {v} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Create a client whose home is `gateway`, and connect it from `bind`.
    pub async fn client(&self, name: &str, gateway: &str, bind: &str) -> Result<Client> {
        let dir = self.client_dir(name, gateway).await?;
        Ok(Client::connect(
            &dir,
            ConnectOptions {
                bind: Some(bind.parse()?),
                ..Default::default()
            },
        )
        .await?)
    }

    /// A client directory made with `init` (identity, recipient key, gateway), not
    /// connected.
    pub async fn client_dir(&self, name: &str, gateway: &str) -> Result<PathBuf> {
        let dir = self.root.path().join("clients").join(name);
        let cfg = ClientConfig {
            directory: self.directory.clone(),
            authority_keys: self.authority_keys.clone(),
            threshold: self.threshold,
            gateway: Some(self.node(gateway).id.clone()),
            mirrors: self.mirrors.clone(),
            network: None,
        };
        lethe_client::init(&dir, cfg).await?;
        Ok(dir)
    }
}

impl Drop for LocalNet {
    fn drop(&mut self) {
        for (_, mut c) in self.children.drain() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        let _ = Command::new("bash")
            .arg(workspace().join("scripts/localnet.sh"))
            .args(["stop", "--dir"])
            .arg(self.root.path().join("net"))
            .stderr(Stdio::null())
            .status();
        // Debugging a failure: `LETHE_TEST_KEEP=DIR` copies the network's directory (logs,
        // keys, localnet.json) to DIR/PREFIX when a test panicked.
        if std::thread::panicking()
            && let Ok(keep) = std::env::var("LETHE_TEST_KEEP")
        {
            let to = Path::new(&keep).join(&self.prefix);
            let _ = std::fs::create_dir_all(&to);
            let _ = Command::new("cp")
                .arg("-r")
                .arg(self.root.path().join("net"))
                .arg(&to)
                .status();
        }
    }
}

/// `curl -sS --max-time MAX --socks5-hostname PROXY ARGS...`: its output and how long it
/// took.
pub fn curl_socks(proxy: &str, args: &[&str], max_secs: u64) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            &max_secs.to_string(),
            "--socks5-hostname",
        ])
        .arg(proxy)
        .args(args)
        .output()
        .expect("curl must be installed");
    (out, start.elapsed())
}

/// Resident memory of a process, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    kib / 1024.0
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(p);
        }
    }
    hits
}

/// Parse Prometheus text into `name{labels} -> value`.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// A local network on `127.N.0.x` and two subscribed clients, each on its own address:
/// alice (home gateway-1) on 127.N.1.1 and bob (home gateway-2) on 127.N.1.2.
pub async fn network_and_pair(
    n: u8,
    mean_delay_ms: u64,
) -> Result<(LocalNet, Arc<Client>, Arc<Client>)> {
    let net = LocalNet::start(&format!("127.{n}.0"), mean_delay_ms)?;
    let alice = net
        .client("alice", "gateway-1", &format!("127.{n}.1.1:0"))
        .await?;
    let bob = net
        .client("bob", "gateway-2", &format!("127.{n}.1.2:0"))
        .await?;
    alice.subscribe().await?;
    bob.subscribe().await?;
    Ok((net, Arc::new(alice), Arc::new(bob)))
}

/// Close both clients (each only if nothing else holds it).
pub async fn close_pair(a: Arc<Client>, b: Arc<Client>) {
    for c in [a, b] {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    }
}
