//! `curl --socks5-hostname` through the local mixnet: the SOCKS proxy and the exit service
//! started by localnet.sh, a local HTTP server, the real curl binary.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_tests::http::{random, serve};
use lethe_tests::{LocalNet, curl_socks};

struct Fetched {
    ok: bool,
    body: Vec<u8>,
    stderr: String,
    elapsed: Duration,
}

fn curl(proxy: &str, url: &str, out: &Path, max_secs: u64) -> Fetched {
    let (o, elapsed) = curl_socks(proxy, &[url, "-o", out.to_str().unwrap()], max_secs);
    Fetched {
        ok: o.status.success(),
        body: std::fs::read(out).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        elapsed,
    }
}

fn rate(bytes: usize, t: Duration) -> String {
    format!(
        "{} bytes in {:.2} s ({:.0} KB/s)",
        bytes,
        t.as_secs_f64(),
        bytes as f64 / 1000.0 / t.as_secs_f64()
    )
}

fn logs(net: &LocalNet) -> String {
    format!(
        "exit log:\n{}\nproxy log:\n{}",
        std::fs::read_to_string(&net.exit_log).unwrap_or_default(),
        std::fs::read_to_string(&net.socks_log).unwrap_or_default()
    )
}

/// A download that must have completed byte for byte.
fn assert_fetched(f: &Fetched, body: &[u8], net: &LocalNet) {
    assert!(f.ok, "curl: {}\n{}", f.stderr, logs(net));
    assert!(
        f.body == body,
        "the download differs ({} bytes)",
        f.body.len()
    );
}

/// A raw SOCKS5 CONNECT to an IPv4 target: the reply code, or `None` if the proxy closed.
fn socks_connect(proxy: &str, ip: [u8; 4], port: u16) -> Option<u8> {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).ok()?;
    assert_eq!(sel, [5, 0]);
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&ip);
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep).ok()?;
    Some(rep[1])
}

#[test]
fn curl_fetches_files_through_the_mixnet() {
    // The proxy sends cover traffic at the network's rates, as it does by default: its
    // streams' packets wait for payload slots (every 5 ms on average).
    let net = LocalNet::start_with_env(
        "127.80.0",
        5,
        &[
            ("LETHE_COVER_PAYLOAD_MS", "5"),
            ("LETHE_COVER_LOOP_MS", "200"),
            ("LETHE_COVER_DROP_MS", "200"),
            // This test's own addresses only: a refused destination is loopback too, so
            // a wrong answer cannot send a packet off the machine.
            ("LETHE_EXIT_ALLOW", "127.80.0.0/16:*"),
        ],
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let files: HashMap<String, Arc<Vec<u8>>> = [
        ("/100k".to_string(), random(100_000)),
        ("/5m".to_string(), random(5_000_000)),
    ]
    .into_iter()
    .collect();
    let port = serve("127.80.0.70", files.clone());
    let url = |p: &str| format!("http://127.80.0.70:{port}{p}");

    // (a) one file, then the large one, byte for byte
    for (path, max) in [("/100k", 60), ("/5m", 150)] {
        let f = curl(&net.socks, &url(path), &tmp.path().join("a"), max);
        assert!(f.ok, "curl {path}: {}\n{}", f.stderr, logs(&net));
        assert!(
            f.body == *files[path],
            "{path} differs ({} bytes)",
            f.body.len()
        );
        eprintln!("{path}: {}", rate(f.body.len(), f.elapsed));
    }

    // (b) eight 5 MB downloads at once, sharing the proxy's payload slots
    let start = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (proxy, u, out) = (
                net.socks.clone(),
                url("/5m"),
                tmp.path().join(format!("p{i}")),
            );
            std::thread::spawn(move || curl(&proxy, &u, &out, 300))
        })
        .collect();
    for h in handles {
        let f = h.join().unwrap();
        assert!(f.ok, "parallel curl: {}\n{}", f.stderr, logs(&net));
        assert!(f.body == *files["/5m"], "a parallel download differs");
        eprintln!("  one of 8: {}", rate(f.body.len(), f.elapsed));
    }
    eprintln!(
        "8 x 5 MB in parallel: {}",
        rate(8 * 5_000_000, start.elapsed())
    );

    // (d) a denied destination gets a SOCKS error reply, not a hang
    let f = curl(&net.socks, "http://127.81.2.3/", &tmp.path().join("d"), 30);
    assert!(!f.ok, "an address outside the allow-list was reached");
    assert!(
        f.elapsed < Duration::from_secs(25),
        "denied request hung: {:?}",
        f.elapsed
    );
    eprintln!("denied: {}", f.stderr.trim());
    assert_eq!(socks_connect(&net.socks, [127, 81, 2, 3], 80), Some(0x02));
    // a refused connection is REP 5
    let closed = TcpListener::bind("127.80.0.71:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    assert_eq!(
        socks_connect(&net.socks, [127, 80, 0, 71], closed_port),
        Some(0x05)
    );

    // a malformed handshake closes that connection only
    let mut bad = TcpStream::connect(&net.socks).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let n = bad.read_to_end(&mut rest);
    assert!(
        matches!(n, Ok(0)),
        "proxy answered garbage with {n:?} {rest:?}"
    );
    let f = curl(&net.socks, &url("/100k"), &tmp.path().join("e"), 60);
    assert!(
        f.ok && f.body == *files["/100k"],
        "proxy stopped serving: {}",
        f.stderr
    );
}

#[test]
fn a_transfer_survives_a_mix_restart() {
    let mut net = LocalNet::start("127.81.0", 5).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let body = random(2_000_000);
    let port = serve(
        "127.81.0.70",
        [("/2m".to_string(), body.clone())].into_iter().collect(),
    );
    let (proxy, out) = (net.socks.clone(), tmp.path().join("c"));
    let url = format!("http://127.81.0.70:{port}/2m");
    let fetch = std::thread::spawn(move || curl(&proxy, &url, &out, 150));
    std::thread::sleep(Duration::from_millis(1500));
    // one mix of layer 2 goes away mid-transfer and comes back
    net.stop_node("mix-2a").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    net.start_node("mix-2a").unwrap();
    let f = fetch.join().unwrap();
    assert_fetched(&f, &body, &net);
    eprintln!(
        "2 MB across a mix restart: {}",
        rate(f.body.len(), f.elapsed)
    );
}

#[test]
fn a_transfer_survives_a_mix_killed_for_good() {
    // The proxy's loop cover finds the dead mix; its packets and SURBs then route around it
    // while the directory still lists it (for up to descriptor_ttl_secs).
    let mut net = LocalNet::start_with_env(
        "127.82.0",
        5,
        &[
            ("LETHE_COVER_PAYLOAD_MS", "5"),
            ("LETHE_COVER_LOOP_MS", "100"),
            ("LETHE_COVER_DROP_MS", "200"),
            ("RUST_LOG", "warn,lethe_client::cover=debug"),
        ],
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let body = random(5_000_000);
    let port = serve(
        "127.82.0.70",
        [("/5m".to_string(), body.clone())].into_iter().collect(),
    );
    let (proxy, out) = (net.socks.clone(), tmp.path().join("k"));
    let url = format!("http://127.82.0.70:{port}/5m");
    let fetch = {
        let out = out.clone();
        std::thread::spawn(move || curl(&proxy, &url, &out, 240))
    };
    // kill one mix of layer 2 once a quarter of the file has arrived (bounded wait)
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::metadata(&out).map_or(0, |m| m.len()) < 1_250_000 {
        assert!(Instant::now() < deadline, "the download did not start");
        assert!(!fetch.is_finished(), "curl ended before the kill");
        std::thread::sleep(Duration::from_millis(100));
    }
    let victim = net.node("mix-2a").id.clone();
    eprintln!(
        "killing mix-2a ({}) at {:?}",
        &victim[..12],
        std::time::SystemTime::now()
    );
    net.kill_node("mix-2a").unwrap();
    let killed_at = Instant::now();
    let f = fetch.join().unwrap();
    assert_fetched(&f, &body, &net);
    eprintln!(
        "5 MB with mix-2a killed at 1.25 MB: {}; {:.1} s after the kill",
        rate(f.body.len(), f.elapsed),
        killed_at.elapsed().as_secs_f64()
    );
    // the proxy said which relay it routes around: the dead one, and never a live mix
    let log = std::fs::read_to_string(&net.socks_log).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("routing around relays"))
        .collect();
    for l in &lines {
        eprintln!("proxy: {l}");
    }
    assert!(
        lines.iter().any(|l| l.contains(&victim[..12])),
        "the proxy never avoided mix-2a ({victim}):\n{log}"
    );
    for n in net
        .nodes
        .iter()
        .filter(|n| n.role == "mix" && n.name != "mix-2a")
    {
        assert!(
            !lines.iter().any(|l| l.contains(&n.id[..12])),
            "the proxy avoided {}, which is alive:\n{log}",
            n.name
        );
    }
}

/// Sphinx keys rotate every 8 s here (the old epoch's keys live 2 s more): SURBs made
/// before a rotation die with their keys. Downloads that cross several rotations must not
/// stall: curl gives up on any 6 s stretch below 2 kB/s.
#[test]
fn downloads_cross_key_rotations_without_stalling() {
    let net = LocalNet::start_with_env(
        "127.86.0",
        5,
        &[
            ("LETHE_EPOCH_SECS", "8"),
            ("LETHE_COVER_PAYLOAD_MS", "5"),
            ("LETHE_COVER_LOOP_MS", "200"),
            ("LETHE_COVER_DROP_MS", "200"),
            ("LETHE_EXIT_ALLOW", "127.86.0.0/16:*"),
        ],
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let files: HashMap<String, Arc<Vec<u8>>> = [("/3m".to_string(), random(3_000_000))]
        .into_iter()
        .collect();
    let port = serve("127.86.0.70", files.clone());
    let url = format!("http://127.86.0.70:{port}/3m");
    let start = Instant::now();
    let mut rotations_crossed = 0;
    for i in 0..4 {
        let out = tmp.path().join(format!("r{i}"));
        let (o, elapsed) = curl_socks(
            &net.socks,
            &[
                &url,
                "-o",
                out.to_str().unwrap(),
                "--speed-time",
                "6",
                "--speed-limit",
                "2000",
            ],
            120,
        );
        assert!(
            o.status.success(),
            "download {i} stalled or failed after {elapsed:.1?}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            logs(&net)
        );
        assert!(
            std::fs::read(&out).unwrap() == *files["/3m"],
            "download {i} differs"
        );
        eprintln!("download {i}: {}", rate(3_000_000, elapsed));
        rotations_crossed = start.elapsed().as_secs() / 8;
        if rotations_crossed >= 4 {
            break;
        }
    }
    assert!(
        rotations_crossed >= 3,
        "the downloads crossed {rotations_crossed} rotations"
    );
}
