//! Helpers to start `lethe-node` processes and read the operating system's accounting of
//! them (CPU time, peak memory) from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where the lethe-node binary is: beside this one.
pub fn node_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut p = exe.with_file_name("lethe-node");
    if !p.exists() {
        // a test executable lives one level down, in deps/
        if let Some(up) = exe.parent().and_then(Path::parent) {
            p = up.join("lethe-node");
        }
    }
    if !p.exists() {
        bail!(
            "{} not found: build it too (cargo build --release -p lethe-node -p lethe-bench)",
            p.display()
        );
    }
    Ok(p)
}

/// Run `lethe-node` with `args` and return its standard output.
pub fn node_cmd(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(node_binary()?).args(args).output()?;
    if !out.status.success() {
        bail!(
            "lethe-node {:?}: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A `lethe-node run` child, stopped (SIGTERM, then kill) when dropped.
pub struct NodeProcess(pub Child);

impl NodeProcess {
    /// Start `lethe-node run --dir dir`, logging to `dir/node.log`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let log = std::fs::File::create(dir.join("node.log"))?;
        let child = Command::new(node_binary()?)
            .args(["run", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting lethe-node")?;
        Ok(NodeProcess(child))
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User plus system CPU seconds a process has used (all threads), from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let utime: f64 = f.get(11).context("utime")?.parse()?;
    let stime: f64 = f.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Peak resident memory of a process in MiB (VmHWM).
pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("VmHWM")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// A free loopback port (bound and released).
pub fn free_port() -> anyhow::Result<u16> {
    let s = std::net::TcpListener::bind("127.0.0.1:0")?;
    let u = std::net::UdpSocket::bind(s.local_addr()?);
    let port = s.local_addr()?.port();
    drop(u);
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_and_memory() {
        let pid = std::process::id();
        let before = cpu_seconds(pid).unwrap();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = cpu_seconds(pid).unwrap() - before;
        assert!(used > 0.1 && used < 5.0, "{used}");
        assert!(peak_rss_mib(pid).unwrap() > 1.0);
        assert!(free_port().unwrap() > 0);
    }
}
