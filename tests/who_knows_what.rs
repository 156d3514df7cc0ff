//! Who learns what, seen through the most an operator could log: every relay runs with
//! `--unsafe-logging` at debug level, so each prints the real addresses and ids of the peers
//! it deals with. Alice (entry gateway-1) sends to Bob (exit gateway-2). The exit gateway
//! never deals with Alice's address; the entry gateway never deals with Bob, his gateway or
//! any relay but the first mix layer; the mixes never deal with a client. Through the SOCKS
//! proxy, the exit service sees the destination but never the proxy's address, and the
//! proxy's entry gateway never sees the exit service.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use lethe_tests::LocalNet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exit_never_learns_the_sender_and_the_entry_never_learns_the_destination() {
    let mut net = LocalNet::start_with_env(
        "127.70.0",
        5,
        &[
            ("RUST_LOG", "debug"),
            ("LETHE_NODE_ARGS", "--unsafe-logging"),
        ],
    )
    .unwrap();
    let (alice_ip, bob_ip) = ("127.70.7.7", "127.70.7.8");
    let alice = net
        .client("alice", "gateway-1", &format!("{alice_ip}:0"))
        .await
        .unwrap();
    let bob = net
        .client("bob", "gateway-2", &format!("{bob_ip}:0"))
        .await
        .unwrap();
    bob.subscribe().await.unwrap();
    for i in 0..30u8 {
        alice.send(&bob.address(), &[i; 32]).await.unwrap();
    }
    for _ in 0..30 {
        assert!(bob.recv_timeout(Duration::from_secs(10)).await.is_some());
    }
    let bob_id = bob.address().client.to_string();
    let exit_id = bob.address().gateway.short();

    // A stream through the local SOCKS proxy (a client of gateway-1, bound to PREFIX.51) to
    // a closed local port: the exit service (a client of gateway-2) tries it and refuses.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut s = tokio::net::TcpStream::connect(&net.socks).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.unwrap();
    assert_eq!(choice, [5, 0]);
    let [hi, lo] = closed_port.to_be_bytes();
    s.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, hi, lo])
        .await
        .unwrap();
    let mut reply = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply[1], 5, "connection refused, as the exit found it");
    let proxy_ip = net.socks.rsplit_once(':').unwrap().0.to_string();
    // Its id as logs print it, in full or as a short prefix.
    let exit_service_id = net.exit.split('@').next().unwrap()[..12].to_string();

    alice.close().await;
    bob.close().await;
    let names: Vec<String> = net.nodes.iter().map(|n| n.name.clone()).collect();
    for n in &names {
        net.stop_node(n).unwrap();
    }
    let exit_service = std::fs::read_to_string(&net.exit_log).unwrap();
    let log = |n: &str| std::fs::read_to_string(&net.node(n).log).unwrap();
    let entry = log("gateway-1");
    let exit = log("gateway-2");
    // The logs are unsafe indeed: the entry names Alice's address, the exit Bob's.
    assert!(
        entry.contains(alice_ip),
        "entry gateway did not log its client"
    );
    assert!(exit.contains(bob_ip), "exit gateway did not log its client");
    // The exit never saw Alice's address; the entry never saw Bob's address, id or gateway.
    assert!(
        !exit.contains(alice_ip),
        "the exit gateway learned the sender's address"
    );
    assert!(
        !entry.contains(bob_ip) && !entry.contains(&bob_id),
        "the entry learned the recipient"
    );
    assert!(
        !entry.contains(&exit_id),
        "the entry gateway dealt with the exit gateway"
    );
    // The exit service saw the destination (it logged the refused target), never the
    // proxy's address; the proxy's entry gateway saw the proxy, never the exit service.
    assert!(
        exit_service.contains(&closed_port.to_string()),
        "the exit service did not log its target"
    );
    assert!(
        entry.contains(&proxy_ip),
        "entry gateway did not log the proxy, its client"
    );
    for secret in [proxy_ip.as_str(), alice_ip] {
        assert!(
            !exit_service.contains(secret),
            "the exit service learned a client address: {secret}"
        );
    }
    assert!(
        !entry.contains(&exit_service_id),
        "the proxy's entry gateway learned the exit service"
    );
    // Mixes deal only with relays: no client address, no client id.
    for m in ["mix-1a", "mix-1b", "mix-2a", "mix-2b", "mix-3a", "mix-3b"] {
        let l = log(m);
        for secret in [alice_ip, bob_ip, bob_id.as_str()] {
            assert!(!l.contains(secret), "{m} learned {secret}");
        }
    }
}
