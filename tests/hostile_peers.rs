//! A hostile peer opens connections and streams in a loop and sends garbage at full speed,
//! bounded in count and time. The entry gateway refuses what is over its limits, counts and
//! drops the garbage, keeps its memory under a ceiling, and still relays honest traffic.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_net::link::write_frame;
use lethe_net::{TlsIdentity, tls};
use lethe_proto::FrameKind;
use lethe_proto::packet::PACKET_SIZE;
use lethe_tests::{LocalNet, rss_mib};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// At most `attempts` connections, each with up to 4 streams of garbage, for at most
/// `budget`; returns (connections made, refused or failed).
async fn attack(
    target: std::net::SocketAddr,
    cert: lethe_proto::Key32,
    attempts: usize,
    budget: Duration,
) -> (usize, usize) {
    let ep = quinn::Endpoint::client("127.68.9.9:0".parse().unwrap()).unwrap();
    let id = TlsIdentity::generate().unwrap();
    let deadline = Instant::now() + budget;
    let mut rng = StdRng::seed_from_u64(66);
    let (mut made, mut refused) = (0, 0);
    let mut open = Vec::new();
    for _ in 0..attempts {
        if Instant::now() > deadline {
            break;
        }
        let conn = match tokio::time::timeout(
            Duration::from_secs(2),
            tls::connect(&ep, &id, target, cert),
        )
        .await
        {
            Ok(Ok(c)) => c,
            _ => {
                refused += 1;
                continue;
            }
        };
        made += 1;
        for k in 0..4 {
            let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_millis(200), conn.open_uni()).await
            else {
                break;
            };
            let mut junk = vec![0u8; 16 * 1024];
            rng.fill_bytes(&mut junk);
            if k % 2 == 0 {
                // unframed bytes
                let _ = tokio::time::timeout(Duration::from_millis(200), s.write_all(&junk)).await;
            } else {
                // well-framed packets that fail their MAC
                for _ in 0..5 {
                    let mut p = vec![0u8; PACKET_SIZE];
                    rng.fill_bytes(&mut p);
                    let _ = tokio::time::timeout(
                        Duration::from_millis(200),
                        write_frame(&mut s, FrameKind::Packet, &p),
                    )
                    .await;
                }
            }
            let _ = s.finish();
        }
        open.push(conn);
    }
    (made, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_peer_is_bounded_and_honest_traffic_still_flows() {
    let net = LocalNet::start("127.68.0", 5).unwrap();
    let gw = net.node("gateway-1").clone();
    let alice = net
        .client("alice", "gateway-1", "127.68.1.1:0")
        .await
        .unwrap();
    let bob = Arc::new(
        net.client("bob", "gateway-2", "127.68.1.2:0")
            .await
            .unwrap(),
    );
    bob.subscribe().await.unwrap();
    let cert = alice
        .topology()
        .node(&gw.id.parse().unwrap())
        .unwrap()
        .tls_cert;
    let before = rss_mib(gw.pid);

    let flood = tokio::spawn(attack(
        gw.listen.parse().unwrap(),
        cert,
        200,
        Duration::from_secs(20),
    ));
    // Honest traffic through the same gateway while the flood runs.
    let mut got = 0;
    for i in 0..40u8 {
        alice.send(&bob.address(), &[i; 64]).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < 40 && Instant::now() < deadline {
        if bob.recv_timeout(Duration::from_secs(5)).await.is_some() {
            got += 1;
        }
    }
    let (made, refused) = flood.await.unwrap();
    // One client connection sending faster than its budget (2000 packets/s, same burst).
    let ep = quinn::Endpoint::client("127.68.9.10:0".parse().unwrap()).unwrap();
    let id = TlsIdentity::generate().unwrap();
    let conn = tls::connect(&ep, &id, gw.listen.parse().unwrap(), cert)
        .await
        .unwrap();
    let mut s = conn.open_uni().await.unwrap();
    let mut rng = StdRng::seed_from_u64(67);
    let mut frames = Vec::with_capacity(5000 * (PACKET_SIZE + 4));
    let mut p = vec![0u8; PACKET_SIZE];
    for _ in 0..5000 {
        rng.fill_bytes(&mut p);
        lethe_net::link::push_frame(&mut frames, FrameKind::Packet, &p).unwrap();
    }
    let t0 = Instant::now();
    s.write_all(&frames).await.unwrap();
    s.finish().unwrap();
    let sent_in = t0.elapsed();
    eprintln!("sent 5000 packets in {sent_in:?}");
    let limited = net
        .wait_metric(
            "gateway-1",
            "lethe_packets_dropped_total{reason=\"rate_limited\"}",
            Duration::from_secs(10),
            |v| v > 0.0,
        )
        .await;
    // Only meaningful if we really sent faster than the budget refills.
    if sent_in < Duration::from_millis(1400) {
        limited.unwrap();
    }
    assert_eq!(got, 40, "honest messages lost during the flood");
    // 64 connections per source address are admitted, the rest refused.
    assert!(made <= 64, "{made} connections admitted from one address");
    assert!(refused > 0, "nothing refused");
    let m = net.metrics("gateway-1").await.unwrap();
    assert!(m["lethe_connections_refused_total"] >= refused as f64 - 1.0);
    assert!(m["lethe_packets_dropped_total{reason=\"bad_frame\"}"] > 0.0);
    assert!(m["lethe_packets_dropped_total{reason=\"bad_mac\"}"] > 0.0);
    let after = rss_mib(gw.pid);
    assert!(
        after < 200.0,
        "gateway RSS {after:.1} MiB (was {before:.1}) over the 200 MiB ceiling"
    );
    eprintln!(
        "flood: {made} admitted, {refused} refused; gateway RSS {before:.1} -> {after:.1} MiB"
    );
    alice.close().await;
}
