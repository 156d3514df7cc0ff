//! Sphinx keys rotate every epoch (8 s here, with an overlap of a quarter epoch): traffic
//! keeps flowing across epoch changes; a packet made with the old epoch's keys is accepted
//! during the overlap and dropped after it; the old private key files are gone afterwards.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use lethe_net::unix_now;
use lethe_tests::LocalNet;

const EPOCH: u64 = 8;
const OVERLAP: u64 = 2;

/// Sleep until unix time `t` (plus `extra`).
async fn until(t: u64, extra: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let target = Duration::from_secs(t) + extra;
    if target > now {
        tokio::time::sleep(target - now).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_with_an_overlap_and_old_keys_are_deleted() {
    let net = LocalNet::start_with_env("127.72.0", 2, &[("LETHE_EPOCH_SECS", "8")]).unwrap();
    let alice = net
        .client("alice", "gateway-1", "127.72.1.1:0")
        .await
        .unwrap();
    let bob = net
        .client("bob", "gateway-2", "127.72.1.2:0")
        .await
        .unwrap();
    bob.subscribe().await.unwrap();

    // Start early in an epoch e0, with the topology of that epoch.
    if unix_now() % EPOCH > EPOCH - 4 {
        until(
            unix_now() / EPOCH * EPOCH + EPOCH,
            Duration::from_millis(300),
        )
        .await;
    }
    alice.refresh_topology().await.unwrap();
    let e0 = unix_now() / EPOCH;
    let old_in_overlap = alice
        .build(&bob.address(), b"old key, in the overlap")
        .unwrap();
    let old_too_late = alice.build(&bob.address(), b"old key, too late").unwrap();

    // Steady traffic across the next epoch change, refreshing the topology as clients do.
    let mut sent = 0;
    let stop = (e0 + 1) * EPOCH + OVERLAP + 2;
    let mut last_refresh = Instant::now();
    while unix_now() < stop {
        if last_refresh.elapsed() > Duration::from_secs(1) {
            alice.refresh_topology().await.unwrap();
            last_refresh = Instant::now();
        }
        alice
            .send(&bob.address(), format!("steady {sent}").as_bytes())
            .await
            .unwrap();
        sent += 1;
        // The old packet, half a second into the new epoch: inside the overlap.
        if sent == 1 {
            until((e0 + 1) * EPOCH, Duration::from_millis(500)).await;
            alice.send_packet(&old_in_overlap.packet).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // After the overlap: the old epoch's key is gone everywhere.
    until((e0 + 1) * EPOCH + OVERLAP, Duration::from_millis(1500)).await;
    let bad_mac = "lethe_packets_dropped_total{reason=\"bad_mac\"}";
    let before = net.metric("gateway-1", bad_mac).await;
    alice.send_packet(&old_too_late.packet).await.unwrap();
    net.wait_metric("gateway-1", bad_mac, Duration::from_secs(5), |v| v > before)
        .await
        .unwrap();

    let mut got = Vec::new();
    while let Some(m) = bob.recv_timeout(Duration::from_secs(3)).await {
        got.push(String::from_utf8(m).unwrap());
    }
    let steady = got.iter().filter(|m| m.starts_with("steady")).count();
    assert_eq!(
        steady, sent,
        "steady traffic lost across the epoch change: {got:?}"
    );
    assert!(
        got.iter().any(|m| m == "old key, in the overlap"),
        "{got:?}"
    );
    assert!(!got.iter().any(|m| m == "old key, too late"), "{got:?}");

    for n in ["gateway-1", "mix-1a", "mix-2b", "gateway-2"] {
        let dir = &net.node(n).dir;
        assert!(
            !dir.join(format!("sphinx-{e0}.key")).exists(),
            "{n} kept the old key"
        );
        assert!(
            dir.join(format!("sphinx-{}.key", e0 + 1)).exists(),
            "{n} lacks the current key"
        );
    }
    alice.close().await;
    bob.close().await;
}
