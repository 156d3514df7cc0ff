//! End to end over real QUIC on loopback: a directory authority, two gateways and two mixes
//! in each of three layers, each a real `lethe-node` process started by
//! `scripts/localnet.sh`, and in-process clients.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use lethe_client::Client;
use lethe_net::TlsIdentity;
use lethe_net::link::write_frame;
use lethe_proto::packet::{PACKET_SIZE, build_packet};
use lethe_proto::seal::MAX_SEALED_MESSAGE;
use lethe_proto::{FrameKind, HopSpec, Key32, NodeId};
use lethe_tests::{close_pair, network_and_pair};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

/// Message `i` from `from`: a unique prefix and a seeded random body of varying length.
fn message(from: &str, i: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64((i as u64) << 8 | from.len() as u64);
    let mut m = format!("{from}#{i:05}|").into_bytes();
    let extra = (rng.next_u32() as usize) % (MAX_SEALED_MESSAGE - m.len() + 1);
    let start = m.len();
    m.resize(start + extra, 0);
    rng.fill_bytes(&mut m[start..]);
    m
}

/// Send `n` messages from `from` to `to`; returns message -> (sent at, sum of hop delays).
async fn send_many(
    from: &Client,
    name: &str,
    to: &Client,
    n: usize,
) -> HashMap<Vec<u8>, (Instant, Duration)> {
    let mut sent = HashMap::new();
    for i in 0..n {
        let m = message(name, i);
        let out = from.build(&to.address(), &m).unwrap();
        let at = Instant::now();
        from.send_packet(&out.packet).await.unwrap();
        sent.insert(m, (at, out.total_delay));
    }
    sent
}

/// Collect up to `n` messages as they arrive, with their arrival times, for at most
/// `timeout`.
fn collect(c: Arc<Client>, n: usize, timeout: Duration) -> JoinHandle<Vec<(Vec<u8>, Instant)>> {
    tokio::spawn(async move {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(m) = c.recv_timeout(left).await else {
                break;
            };
            got.push((m, Instant::now()));
        }
        got
    })
}

/// Check what arrived against what was sent: each byte-exact, none twice, none sooner than
/// its hop delays allow. Returns how many arrived.
fn check(got: &[(Vec<u8>, Instant)], expected: &HashMap<Vec<u8>, (Instant, Duration)>) -> usize {
    let mut seen = std::collections::HashSet::new();
    for (m, at) in got {
        let (sent_at, delay) = expected
            .get(m)
            .unwrap_or_else(|| panic!("unexpected or corrupted message of {} bytes", m.len()));
        let took = at.duration_since(*sent_at);
        assert!(
            took >= *delay,
            "delivered after {took:?}, before its hop delays of {delay:?}"
        );
        assert!(seen.insert(m.clone()), "a message was delivered twice");
    }
    seen.len()
}

/// Send `n` messages and wait for them at the recipient; returns how many arrived intact.
async fn round_trip(from: &Client, name: &str, to: &Arc<Client>, n: usize) -> usize {
    let rx = collect(to.clone(), n, Duration::from_secs(30));
    let sent = send_many(from, name, to, n).await;
    check(&rx.await.unwrap(), &sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_exchange_500_messages_each_intact_and_never_early() {
    // A mean of 40 ms per mix: delays large enough that delivering early would show.
    let (net, alice, bob) = network_and_pair(61, 40).await.unwrap();
    let at_bob = collect(bob.clone(), 500, Duration::from_secs(60));
    let at_alice = collect(alice.clone(), 500, Duration::from_secs(60));
    let (to_bob, to_alice) = tokio::join!(
        send_many(&alice, "alice", &bob, 500),
        send_many(&bob, "bob", &alice, 500),
    );
    let a = check(&at_bob.await.unwrap(), &to_bob);
    let b = check(&at_alice.await.unwrap(), &to_alice);
    assert_eq!((a, b), (500, 500), "every message delivered");
    // Every packet crossed five relays: both gateways saw 1000 in, and the mixes of each
    // layer together forwarded 1000.
    for layer in ["1", "2", "3"] {
        let mut out = 0.0;
        for s in ["a", "b"] {
            out += net
                .metric(&format!("mix-{layer}{s}"), "lethe_packets_out_total")
                .await;
        }
        assert_eq!(out, 1000.0, "layer {layer} forwarded every packet");
    }
    let delivered = net
        .metric("gateway-1", "lethe_messages_delivered_total")
        .await
        + net
            .metric("gateway-2", "lethe_messages_delivered_total")
            .await;
    assert_eq!(delivered, 1000.0);
    close_pair(alice, bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_garbage_and_strangers_are_dropped_while_the_node_keeps_relaying() {
    let (net, alice, bob) = network_and_pair(62, 5).await.unwrap();

    // A replayed packet is dropped at the first relay; the message arrives once.
    let out = alice.build(&bob.address(), b"only once").unwrap();
    alice.send_packet(&out.packet).await.unwrap();
    alice.send_packet(&out.packet).await.unwrap();
    assert_eq!(
        bob.recv_timeout(Duration::from_secs(10)).await.as_deref(),
        Some(&b"only once"[..])
    );
    net.wait_metric(
        "gateway-1",
        "lethe_packets_dropped_total{reason=\"replay\"}",
        Duration::from_secs(5),
        |v| v == 1.0,
    )
    .await
    .unwrap();
    assert_eq!(
        bob.recv_timeout(Duration::from_secs(2)).await,
        None,
        "replay delivered"
    );

    // Garbage on links to the entry gateway, from a stranger with its own certificate.
    let gw = net.node("gateway-1");
    let gw_addr = gw.listen.parse().unwrap();
    let topo = alice.topology();
    let gw_cert = topo.node(&gw.id.parse().unwrap()).unwrap().tls_cert;
    let stranger = TlsIdentity::generate().unwrap();
    let ep = quinn::Endpoint::client("127.62.1.3:0".parse().unwrap()).unwrap();
    let conn = lethe_net::tls::connect(&ep, &stranger, gw_addr, gw_cert)
        .await
        .unwrap();
    let mut rng = StdRng::seed_from_u64(99);
    // (1) random bytes: a bad frame header
    let mut s = conn.open_uni().await.unwrap();
    let mut junk = vec![0u8; 10_000];
    rng.fill_bytes(&mut junk);
    junk[0] = 0x7f;
    let _ = s.write_all(&junk).await;
    let _ = s.finish();
    // (2) a truncated frame: a packet header and half a body, then the end of the stream
    let mut s = conn.open_uni().await.unwrap();
    let header = lethe_proto::FrameHeader::encode(FrameKind::Packet, PACKET_SIZE).unwrap();
    s.write_all(&header).await.unwrap();
    s.write_all(&junk[..PACKET_SIZE / 2]).await.unwrap();
    s.finish().unwrap();
    // (3) well-framed packets of random bytes: bad MACs
    let mut s = conn.open_uni().await.unwrap();
    for _ in 0..20 {
        let mut p = vec![0u8; PACKET_SIZE];
        rng.fill_bytes(&mut p);
        write_frame(&mut s, FrameKind::Packet, &p).await.unwrap();
    }
    s.finish().unwrap();
    let t = Duration::from_secs(5);
    let r = |why: &str| format!("lethe_packets_dropped_total{{reason=\"{why}\"}}");
    net.wait_metric("gateway-1", &r("bad_frame"), t, |v| v >= 1.0)
        .await
        .unwrap();
    net.wait_metric("gateway-1", &r("truncated"), t, |v| v >= 1.0)
        .await
        .unwrap();
    net.wait_metric("gateway-1", &r("bad_mac"), t, |v| v == 20.0)
        .await
        .unwrap();

    // Well-formed packets that ask for the impossible: a next hop that does not exist, and
    // a delay above the network's cap (1000 ms in localnet).
    let entry = topo.node(&gw.id.parse().unwrap()).unwrap();
    let entry_hop = HopSpec {
        id: entry.id,
        sphinx_key: entry.key_for(topo.epoch_at(lethe_net::unix_now())).unwrap(),
    };
    let nowhere = HopSpec {
        id: NodeId::from_bytes([7; 32]),
        sphinx_key: Key32([9; 32]),
    };
    let mut crng = StdRng::seed_from_u64(5);
    let to = bob.address().client;
    let lost = build_packet(
        &mut crng,
        &[entry_hop, nowhere],
        to,
        &[Duration::ZERO; 2],
        b"x",
    )
    .unwrap();
    let slow = [Duration::from_secs(10), Duration::ZERO];
    let too_slow = build_packet(&mut crng, &[entry_hop, nowhere], to, &slow, b"x").unwrap();
    alice.send_packet(&lost).await.unwrap();
    alice.send_packet(&too_slow).await.unwrap();
    net.wait_metric("gateway-1", &r("unknown_next_hop"), t, |v| v == 1.0)
        .await
        .unwrap();
    net.wait_metric("gateway-1", &r("delay_too_long"), t, |v| v == 1.0)
        .await
        .unwrap();

    // A mix refuses a peer that is not a relay of the topology.
    let mix = net.node("mix-1a");
    let mix_cert = topo.node(&mix.id.parse().unwrap()).unwrap().tls_cert;
    let refused =
        lethe_net::tls::connect(&ep, &stranger, mix.listen.parse().unwrap(), mix_cert).await;
    if let Ok(c) = refused {
        // the handshake completes, then the mix closes the connection
        let err = c.closed().await;
        assert!(err.to_string().contains("unknown peer"), "{err}");
    }
    net.wait_metric("mix-1a", "lethe_connections_refused_total", t, |v| v >= 1.0)
        .await
        .unwrap();
    // A wrong pin is refused by the connecting side before any data flows.
    assert!(
        lethe_net::tls::connect(&ep, &stranger, gw_addr, Key32([1; 32]))
            .await
            .is_err()
    );

    // The gateway keeps relaying honest traffic.
    assert_eq!(round_trip(&alice, "alice", &bob, 50).await, 50);
    close_pair(alice, bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_mix_rejoins_and_traffic_continues() {
    let (mut net, alice, bob) = network_and_pair(63, 5).await.unwrap();
    assert_eq!(round_trip(&alice, "before", &bob, 50).await, 50);

    net.stop_node("mix-2a").unwrap();
    net.start_node("mix-2a").unwrap();
    net.wait_metric(
        "mix-2a",
        "lethe_topology_nodes",
        Duration::from_secs(20),
        |v| v == 8.0,
    )
    .await
    .unwrap();
    // Routes keep going through the restarted mix (same keys, same pinned certificate).
    assert_eq!(round_trip(&alice, "after", &bob, 100).await, 100);
    let through = net.metric("mix-2a", "lethe_packets_out_total").await;
    assert!(through > 0.0, "no packet crossed the restarted mix");
    let status = net.stop_node("mix-2a").unwrap().unwrap();
    assert!(status.success(), "clean shutdown exits 0, got {status}");
    close_pair(alice, bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_queued_packets_on_at_their_times() {
    // Long delays (mean 300 ms per mix) so packets are sitting in layer-1 queues when
    // both layer-1 mixes get SIGTERM.
    let (mut net, alice, bob) = network_and_pair(64, 300).await.unwrap();
    // Restart both layer-1 mixes as children of the test, to read their exit status.
    for m in ["mix-1a", "mix-1b"] {
        net.stop_node(m).unwrap();
        net.start_node(m).unwrap();
        net.wait_metric(m, "lethe_topology_nodes", Duration::from_secs(20), |v| {
            v == 8.0
        })
        .await
        .unwrap();
    }
    let rx = collect(bob.clone(), 30, Duration::from_secs(30));
    let sent = send_many(&alice, "queued", &bob, 30).await;
    // Every packet has left the entry gateway (it does not delay)...
    net.wait_metric(
        "gateway-1",
        "lethe_packets_out_total",
        Duration::from_secs(10),
        |v| v == 30.0,
    )
    .await
    .unwrap();
    // ...and the layer-1 mixes hold packets: stop them now.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held = net.metric("mix-1a", "lethe_queue_depth").await
            + net.metric("mix-1b", "lethe_queue_depth").await;
        if held > 0.0 || Instant::now() > deadline {
            assert!(held > 0.0, "layer-1 queues never held a packet");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for m in ["mix-1a", "mix-1b"] {
        let st = net.stop_node(m).unwrap().unwrap();
        assert!(st.success(), "{m} exit status {st}");
        let log = std::fs::read_to_string(&net.node(m).log).unwrap();
        assert!(
            log.contains("dropped_at_shutdown=0"),
            "{m} dropped packets at shutdown:\n{log}"
        );
    }
    assert_eq!(check(&rx.await.unwrap(), &sent), 30);
    close_pair(alice, bob).await;
}
