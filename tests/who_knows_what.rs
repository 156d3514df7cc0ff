//! Who learns what, seen through the most an operator could log: every relay runs with
//! `--unsafe-logging` at debug level, so each prints the real addresses and ids of the peers
//! it deals with. Alice (entry gateway-1) sends to Bob (exit gateway-2). The exit gateway
//! never deals with Alice's address; the entry gateway never deals with Bob, his gateway or
//! any relay but the first mix layer; the mixes never deal with a client.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

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
    alice.close().await;
    bob.close().await;
    let names: Vec<String> = net.nodes.iter().map(|n| n.name.clone()).collect();
    for n in &names {
        net.stop_node(n).unwrap();
    }
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
    // Mixes deal only with relays: no client address, no client id.
    for m in ["mix-1a", "mix-1b", "mix-2a", "mix-2b", "mix-3a", "mix-3b"] {
        let l = log(m);
        for secret in [alice_ip, bob_ip, bob_id.as_str()] {
            assert!(!l.contains(secret), "{m} learned {secret}");
        }
    }
}
