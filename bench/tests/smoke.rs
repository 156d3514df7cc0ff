//! Each `lethe-bench` subcommand end to end with tiny limits: it runs, stops by itself, and
//! writes a JSON report whose figures make sense.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let d = tempfile::tempdir().unwrap();
    let json = d.path().join("r.json");
    let svg = d.path().join("r.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_lethe-bench"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lethe-bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if args[0] != "net" {
        let plot = std::fs::read_to_string(&svg).unwrap();
        assert!(plot.starts_with("<svg"));
    }
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
    v["results"].clone()
}

#[test]
fn hop_smoke() {
    let r = bench(&["hop", "--packets", "40", "--rounds", "1"]);
    for k in [
        "ours_ns",
        "sphinx_packet_ns",
        "floor_ns",
        "ours_over_sphinx_packet",
    ] {
        assert!(r[k].as_f64().unwrap() > 0.0, "{k}: {r}");
    }
}

#[test]
fn node_smoke() {
    let r = bench(&[
        "node",
        "--rates",
        "100,200",
        "--step-secs",
        "0.5",
        "--delay-ms",
        "1",
    ]);
    let steps = r["steps"].as_array().unwrap();
    assert!(!steps.is_empty());
    // at 100 packets/s nothing is lost and every packet shows in the latency histogram
    assert_eq!(steps[0]["lost"].as_u64(), Some(0), "{r}");
    assert!(steps[0]["added_latency"]["count"].as_u64().unwrap() >= 40);
    assert!(steps[0]["cpu_us_per_packet"].as_f64().unwrap() > 0.0);
    assert!(r["peak_rss_mib"].as_f64().unwrap() > 1.0);
}

#[test]
fn net_smoke() {
    let r = bench(&[
        "net",
        "--clients",
        "2",
        "--rate",
        "5",
        "--secs",
        "2",
        "--mean-delay-ms",
        "2",
        "--prefix",
        "127.91.0",
    ]);
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 0, "{r}");
    assert_eq!(r["delivered"].as_u64(), Some(sent), "{r}");
    assert!(r["latency"]["p50_us"].as_u64().unwrap() > 0);
}

#[test]
fn socks_smoke() {
    let r = bench(&[
        "socks",
        "--size-mb",
        "0.2",
        "--parallel",
        "2",
        "--delays",
        "0",
        "--repeats",
        "1",
        "--timeout-secs",
        "60",
        "--prefix",
        "127.93.0",
    ]);
    assert_eq!(r["size_bytes"].as_u64(), Some(200_000), "{r}");
    assert_eq!(r["cover"]["payload_mean_ms"].as_u64(), Some(20), "{r}");
    let run = &r["runs"][0];
    assert_eq!(run["mean_delay_ms"].as_u64(), Some(0), "{r}");
    assert_eq!(run["verified"].as_u64(), Some(3), "{r}");
    assert_eq!(run["failed"].as_u64(), Some(0), "{r}");
    for k in [
        "single_mb_per_sec_median",
        "single_ttfb_ms_p50",
        "parallel_aggregate_mb_per_sec",
        "parallel_ttfb_ms_p50",
        "relays_cpu_secs",
        "relay_hops_per_mb",
        "relay_cpu_us_per_hop",
    ] {
        assert!(run[k].as_f64().unwrap() > 0.0, "{k}: {r}");
    }
    assert_eq!(run["single"][0]["bytes"].as_u64(), Some(200_000), "{r}");
    assert!(run["warmup"]["ok"].as_bool().unwrap(), "{r}");
}
