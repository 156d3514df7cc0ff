//! Mixing strategies end to end, on real `lethe-node` processes over QUIC on loopback:
//! batch rounds still deliver, the live anonymity estimate (`lethe_anonymity_bits`) follows
//! the traffic, the anonymity floor keeps it up when clients are silent, and mixes send
//! their own loops at the rate the directory publishes.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lethe_client::Client;
use lethe_tests::{LocalNet, close_pair, network_and_pair};

const MIXES: [&str; 6] = ["mix-1a", "mix-1b", "mix-2a", "mix-2b", "mix-3a", "mix-3b"];

/// Send `n` distinct messages from alice to bob and count how many arrive within `timeout`.
async fn deliver(alice: &Client, bob: &Client, tag: &str, n: usize, timeout: Duration) -> usize {
    let mut want = HashSet::new();
    for i in 0..n {
        let m = format!("{tag}-{i}").into_bytes();
        let out = alice.build(&bob.address(), &m).unwrap();
        alice.send_packet(&out.packet).await.unwrap();
        want.insert(m);
    }
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    while got < n {
        let Some(m) = bob
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .await
        else {
            break;
        };
        assert!(want.remove(&m), "unexpected or repeated message");
        got += 1;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mixes_deliver_in_rounds_of_at_least_k() {
    let started = Instant::now();
    let (mut net, alice, bob) = network_and_pair(65, 5).await.unwrap();
    // Every mix in batch mode: rounds of 200 ms, never fewer than 4 packets; and a steady
    // stream of loops, 5 a second.
    net.reconfigure(
        &MIXES,
        &[
            ("strategy", "\"batch\""),
            ("batch_round_ms", "200"),
            ("batch_min_packets", "4"),
            ("anonymity_window_ms", "2000"),
            ("loop_rate_per_sec", "5.0"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        deliver(&alice, &bob, "batched", 40, Duration::from_secs(15)).await,
        40,
        "every message crosses three batch mixes"
    );
    let mut topped = 0.0;
    for m in MIXES {
        let rounds = net.metric(m, "lethe_batch_rounds_total").await;
        assert!(rounds > 0.0, "{m} released no round");
        // Each round holds at least 4 packets: every departure hides among at least 4.
        let bits = net.metric(m, "lethe_anonymity_bits").await;
        assert!(bits >= 2.0, "{m}: {bits} bits with rounds of at least 4");
        // Rounds short of 4 are topped up with the mix's own loops, which come back.
        topped += net
            .metric(m, "lethe_cover_sent_total{kind=\"round\"}")
            .await;
        // A mix builds loops once its topology lists every layer again after the restarts
        // (it fetches the topology every few seconds).
        net.wait_metric(
            m,
            "lethe_cover_sent_total{kind=\"loop\"}",
            Duration::from_secs(30),
            |v| v > 0.0,
        )
        .await
        .unwrap_or_else(|e| panic!("{m} sent no loop at 5 a second: {e}"));
    }
    println!("cover packets built to top up short rounds: {topped}");
    assert!(topped > 0.0, "no mix ever topped a round up");
    net.wait_metric(
        "mix-2a",
        "lethe_cover_received_total",
        Duration::from_secs(5),
        |v| v > 0.0,
    )
    .await
    .unwrap();
    // Loops end at the mix that built them: none is delivered to a client or a mailbox,
    // and no mix counts one as an unexpected final hop.
    for m in MIXES {
        let unexpected = net
            .metric(
                m,
                "lethe_packets_dropped_total{reason=\"unexpected_final_hop\"}",
            )
            .await;
        assert_eq!(unexpected, 0.0, "{m}");
    }
    let delivered = net
        .metric("gateway-1", "lethe_messages_delivered_total")
        .await
        + net
            .metric("gateway-2", "lethe_messages_delivered_total")
            .await;
    assert_eq!(delivered, 40.0, "cover never reaches a client or a mailbox");
    println!("batch test took {:?}", started.elapsed());
    close_pair(alice, bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estimate_follows_traffic_and_the_floor_holds_it_up() {
    let started = Instant::now();
    // A mean of 200 ms per mix: at the floor's 4 packets, about 20 cover packets a second.
    let (mut net, alice, bob) = network_and_pair(66, 200).await.unwrap();
    let bits = "lethe_anonymity_bits";
    // A quiet network: nothing departs, nobody is hidden.
    for m in MIXES {
        assert_eq!(net.metric(m, bits).await, 0.0, "{m} idle");
    }
    // mix-2a gets a floor of 2 bits (a pool of 4); mix-2b, its twin in layer 2, none.
    net.reconfigure(
        &["mix-2a"],
        &[
            ("min_anonymity_bits", "2.0"),
            ("max_per_sec", "100.0"),
            ("anonymity_window_ms", "2000"),
        ],
    )
    .await
    .unwrap();
    let floor_bits = net
        .wait_metric("mix-2a", bits, Duration::from_secs(10), |v| v >= 1.5)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let floor_bits_later = net.metric("mix-2a", bits).await;
    let floor_cover = net
        .metric("mix-2a", "lethe_cover_sent_total{kind=\"floor\"}")
        .await;
    let no_floor_bits = net.metric("mix-2b", bits).await;
    println!(
        "no client traffic: mix-2a (floor 2 bits) {floor_bits:.2} then {floor_bits_later:.2} bits after {floor_cover} floor packets; mix-2b (no floor) {no_floor_bits:.2} bits"
    );
    assert!(floor_bits_later >= 1.5, "{floor_bits_later}");
    assert!(floor_cover > 0.0);
    assert!(
        no_floor_bits < 0.5,
        "without a floor an idle mix hides nobody"
    );
    net.wait_metric(
        "mix-2a",
        "lethe_cover_received_total",
        Duration::from_secs(5),
        |v| v > 0.0,
    )
    .await
    .unwrap();

    // A burst of client traffic: the estimate of the mix without a floor rises.
    assert_eq!(
        deliver(&alice, &bob, "burst", 200, Duration::from_secs(15)).await,
        200
    );
    let loaded = net.metric("mix-2b", bits).await;
    let pool = net.metric("mix-2b", "lethe_pool_packets").await;
    println!("after a burst of 200 messages: mix-2b {loaded:.2} bits (pool now {pool})");
    assert!(loaded > 1.0, "a burst must raise the estimate: {loaded}");
    println!("floor test took {:?}", started.elapsed());
    close_pair(alice, bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixes_send_loops_at_the_rate_the_directory_publishes() {
    // The authorities publish a mix loop every 100 ms on average; no mix has a cover
    // setting of its own (the harness leaves cover.loop_rate_per_sec at 0).
    let net = tokio::task::spawn_blocking(|| {
        LocalNet::start_with_env("127.83.0", 5, &[("LETHE_COVER_MIX_LOOP_MS", "100")])
    })
    .await
    .unwrap()
    .unwrap();
    let loops = "lethe_cover_sent_total{kind=\"loop\"}";
    // Each mix starts once its topology lists every layer.
    for m in MIXES {
        net.wait_metric(m, loops, Duration::from_secs(30), |v| v > 0.0)
            .await
            .unwrap_or_else(|e| panic!("{m} sent no loop at the directory's rate: {e}"));
    }
    let before: Vec<f64> = mix_metrics(&net, loops).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after: Vec<f64> = mix_metrics(&net, loops).await;
    let secs = t0.elapsed().as_secs_f64();
    for (i, m) in MIXES.iter().enumerate() {
        let rate = (after[i] - before[i]) / secs;
        println!("{m}: {rate:.1} loops/s (published: 10)");
        // A Poisson count over about 4 s at 10/s is 40 +- 6.3: [15, 80] fails only if the
        // rate is not followed (0 without it; cover.max_per_sec is 50).
        assert!(
            (15.0 / 4.0..=80.0 / 4.0).contains(&rate),
            "{m}: {rate:.1} loops/s where the directory publishes 10"
        );
        // and they come back
        net.wait_metric(
            m,
            "lethe_cover_received_total",
            Duration::from_secs(10),
            |v| v > 0.0,
        )
        .await
        .unwrap_or_else(|e| panic!("{m}: no loop came back: {e}"));
    }
}

async fn mix_metrics(net: &LocalNet, metric: &str) -> Vec<f64> {
    let mut v = Vec::new();
    for m in MIXES {
        v.push(net.metric(m, metric).await);
    }
    v
}
