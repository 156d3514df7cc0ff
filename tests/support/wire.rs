//! What an observer of a link sees: UDP datagrams on loopback captured with tcpdump (their
//! times, sizes and ends), for tests that compare traffic on the wire.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// One captured UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Datagram {
    /// Capture time, seconds since the Unix epoch.
    pub t: f64,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Length of the IP packet on the wire (headers included).
    pub len: u32,
}

/// A running tcpdump on `lo`, writing to a pcap file.
pub struct Capture {
    child: Child,
    file: PathBuf,
    /// What tcpdump printed on stderr (its drop counts come at the end).
    said: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Capture {
    /// Capture the UDP datagrams to or from any of `hosts` on `lo` into `file` (headers
    /// only); returns once tcpdump listens. Needs tcpdump and root (`.ci/run` installs it).
    pub fn start(file: &Path, hosts: &[Ipv4Addr]) -> Result<Capture> {
        let filter = format!(
            "udp and ({})",
            hosts
                .iter()
                .map(|h| format!("host {h}"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-n", "-U", "-s", "96", "-w"])
            .arg(file)
            .arg(&filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("tcpdump (apt-get install tcpdump; .ci/run does)")?;
        // tcpdump says "listening on lo" once its filter is in place.
        let stderr = child.stderr.take().context("tcpdump's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let all = said.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Ok(mut s) = all.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
                if line.contains("listening on") {
                    let _ = tx.send(Ok(()));
                }
            }
            let s = all.lock().map(|s| s.clone()).unwrap_or_default();
            let _ = tx.send(Err(s));
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(())) => break,
                Ok(Err(said)) => bail!("tcpdump did not start: {said}"),
                Err(_) if Instant::now() > deadline => {
                    let _ = child.kill();
                    bail!("tcpdump did not listen within 20 s");
                }
                Err(_) => {}
            }
        }
        Ok(Capture {
            child,
            file: file.to_path_buf(),
            said,
        })
    }

    /// Stop capturing and read what was captured.
    pub fn stop(mut self) -> Result<Vec<Datagram>> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A capture that lost packets under load would bias what a test compares: its
        // counts must be whole. tcpdump prints "N packets dropped by kernel" as it exits.
        let deadline = Instant::now() + Duration::from_secs(5);
        let dropped = loop {
            let said = self.said.lock().map(|s| s.clone()).unwrap_or_default();
            if let Some(line) = said.lines().find(|l| l.contains("dropped by kernel")) {
                break line
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(u64::MAX);
            }
            if Instant::now() > deadline {
                bail!("tcpdump did not report its drops: {said}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if dropped > 0 {
            bail!("tcpdump dropped {dropped} packets: the capture is incomplete");
        }
        read_pcap(&std::fs::read(&self.file)?)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The IPv4 UDP datagrams of a classic pcap file (Ethernet or Linux cooked link types).
pub fn read_pcap(bytes: &[u8]) -> Result<Vec<Datagram>> {
    if bytes.len() < 24 {
        bail!("not a pcap file ({} bytes)", bytes.len());
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into()?);
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => bail!("not a pcap file (magic {m:#x})"),
    };
    let u32_at = |b: &[u8], i: usize| -> u32 {
        let a: [u8; 4] = b[i..i + 4].try_into().unwrap_or_default();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link = u32_at(bytes, 20);
    let ip_offset = match link {
        1 => 14,   // Ethernet (what `-i lo` gives)
        113 => 16, // Linux cooked v1
        276 => 20, // Linux cooked v2
        l => bail!("pcap link type {l} not handled"),
    };
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= bytes.len() {
        let (sec, frac, caplen, len) = (
            u32_at(bytes, i),
            u32_at(bytes, i + 4),
            u32_at(bytes, i + 8) as usize,
            u32_at(bytes, i + 12),
        );
        let rec = &bytes[i + 16..(i + 16 + caplen).min(bytes.len())];
        i += 16 + caplen;
        let Some(ip) = rec.get(ip_offset..) else {
            continue;
        };
        // IPv4 carrying UDP.
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let t = sec as f64 + frac as f64 / if nanos { 1e9 } else { 1e6 };
        out.push(Datagram {
            t,
            src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            len: len.saturating_sub(ip_offset as u32),
        });
    }
    Ok(out)
}

/// Seconds since the Unix epoch now (the clock pcap timestamps use).
pub fn unix_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pcap_record_of_a_udp_datagram_reads_back() {
        let mut f = Vec::new();
        for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 96, 1] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        // A record: 1.5 s, 60 bytes captured of 1300.
        let mut rec = vec![0u8; 60];
        rec[14] = 0x45;
        rec[23] = 17;
        rec[26..30].copy_from_slice(&[127, 0, 0, 1]);
        rec[30..34].copy_from_slice(&[127, 0, 0, 2]);
        for v in [1u32, 500_000, 60, 1300] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&rec);
        let d = read_pcap(&f).unwrap();
        assert_eq!(
            d,
            vec![Datagram {
                t: 1.5,
                src: Ipv4Addr::new(127, 0, 0, 1),
                dst: Ipv4Addr::new(127, 0, 0, 2),
                len: 1286,
            }]
        );
    }
}
