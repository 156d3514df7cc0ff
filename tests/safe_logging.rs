//! What an operator holds must not name a client: after real traffic, a client's own IP
//! address appears in no node's log (at trace level), data directory or metrics, the entry
//! gateway's included. And the check can fail: with `--unsafe-logging` it does appear.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use lethe_tests::{LocalNet, files_containing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_log_disk_or_metric_names_a_client_address() {
    // Trace level: our own code prints addresses only through `Sensitive`, and the QUIC,
    // TLS and HTTP crates (which name peers at debug and trace) are held at info unless
    // --unsafe-logging.
    let mut net = LocalNet::start_with_env("127.65.0", 5, &[("RUST_LOG", "trace")]).unwrap();
    let (alice_ip, bob_ip) = ("127.65.7.7", "127.65.7.8");
    let alice = net
        .client("alice", "gateway-1", &format!("{alice_ip}:0"))
        .await
        .unwrap();
    let bob = net
        .client("bob", "gateway-2", &format!("{bob_ip}:0"))
        .await
        .unwrap();
    alice.subscribe().await.unwrap();
    bob.subscribe().await.unwrap();
    for i in 0..20u8 {
        alice.send(&bob.address(), &[i; 100]).await.unwrap();
        bob.send(&alice.address(), &[i; 100]).await.unwrap();
    }
    for c in [&alice, &bob] {
        for _ in 0..20 {
            assert!(c.recv_timeout(Duration::from_secs(10)).await.is_some());
        }
    }
    // Metrics of every relay, while they run.
    let mut metrics_text = String::new();
    for n in net.nodes.clone() {
        if n.metrics.is_some() {
            let m = net.metrics(&n.name).await.unwrap();
            metrics_text.push_str(&format!("{m:?}"));
        }
    }
    assert!(metrics_text.contains("lethe_packets_in_total"));
    for ip in [alice_ip, bob_ip] {
        assert!(!metrics_text.contains(ip), "metrics name {ip}");
    }
    alice.close().await;
    bob.close().await;
    // Stop every relay so logs are complete, then search the whole network directory:
    // logs, configs, keys, everything on disk.
    let names: Vec<String> = net.nodes.iter().map(|n| n.name.clone()).collect();
    for n in &names {
        net.stop_node(n).unwrap();
    }
    let root = net.root.path().join("net");
    let logs = files_containing(&root, b"DEBUG");
    assert!(!logs.is_empty(), "nodes logged nothing at debug level");
    for ip in [alice_ip, bob_ip] {
        let hits = files_containing(&root, ip.as_bytes());
        assert!(hits.is_empty(), "{ip} found in {hits:?}");
    }

    // The same search finds the address when the entry gateway logs unsafely.
    net.start_node_with("gateway-1", &["--unsafe-logging"], &[("RUST_LOG", "debug")])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The directory is down now: connect straight to the gateway as a fresh client.
    let gw = net.node("gateway-1").clone();
    let ep = quinn::Endpoint::client(format!("{alice_ip}:0").parse().unwrap()).unwrap();
    let cert = lethe_net::tls::cert_hash(&std::fs::read(gw.dir.join("tls.crt")).unwrap());
    let id = lethe_net::TlsIdentity::generate().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(c) = lethe_net::tls::connect(&ep, &id, gw.listen.parse().unwrap(), cert).await {
            c.close(0u32.into(), b"bye");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    net.stop_node("gateway-1").unwrap();
    let hits = files_containing(&root, alice_ip.as_bytes());
    assert!(
        hits.iter().any(|p| p.ends_with("node.log")),
        "with --unsafe-logging the client's address should be in the gateway's log"
    );
}
