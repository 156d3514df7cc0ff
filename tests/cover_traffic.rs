//! Cover traffic on a real local network: a client's link carries the same Poisson process
//! whether its user is idle or sending as fast as it can (two-sample Kolmogorov-Smirnov
//! test), real messages ride in payload slots, loops come home, drop cover ends at gateways.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lethe_proto::ClientRates;
use lethe_tests::LocalNet;
use lethe_tests::stats::{ks_critical, ks_statistic};

/// Idle and busy each last STRETCHES stretches, long enough together for about
/// GAPS_PER_PHASE gaps each at alice's rates: enough for the test below to tell apart two
/// Poisson processes whose rates differ by 10% (checked in the test itself, on the idle
/// sample).
const STRETCHES: usize = 10;
const GAPS_PER_PHASE: f64 = 7500.0;
/// Alice's payload rate when the machine can build real packets fast enough (at 250/s a
/// phase takes 25 s); on a busy machine it is lowered (and stretches made longer) so that
/// the application can still offer more than the payload slots take.
const MAX_PAYLOAD_RATE: f64 = 250.0;
/// Below this the test would take too long; a machine this busy runs it at this rate.
const MIN_PAYLOAD_RATE: f64 = 60.0;
/// Significance level of the KS test.
const ALPHA: f64 = 0.01;

fn gaps(times: &[Instant]) -> Vec<f64> {
    times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .collect()
}

/// Wait (at most 60 s, else fail) until `cond` holds.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_looks_the_same_idle_and_busy() {
    // The network publishes Nym-like rates, which every client of it (the local SOCKS proxy
    // too) follows; alice runs the same three streams six times faster, to collect enough
    // gaps in a short test.
    let net = LocalNet::start_with_env(
        "127.75.0",
        5,
        &[
            ("LETHE_COVER_PAYLOAD_MS", "20"),
            ("LETHE_COVER_LOOP_MS", "200"),
            ("LETHE_COVER_DROP_MS", "200"),
        ],
    )
    .unwrap();
    let alice = Arc::new(
        net.client("alice", "gateway-1", "127.75.1.1:0")
            .await
            .unwrap(),
    );
    let bob = Arc::new(
        net.client("bob", "gateway-2", "127.75.1.2:0")
            .await
            .unwrap(),
    );
    bob.subscribe().await.unwrap();
    alice.subscribe().await.unwrap();
    let rates = alice.topology().client_rates();
    assert_eq!((rates.payload, rates.loop_, rates.drop), (50.0, 5.0, 5.0));

    // How many packets a second one thread of this process builds now, with the network
    // running: `send` builds real packets on the cover's one builder thread, so "busy" (the
    // application offers more than the payload slots take) needs slots slower than that.
    // A busy machine gets lower rates and longer stretches, not a weaker test.
    let build_rate = {
        let (a, to) = (alice.clone(), bob.address());
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let mut n = 0u32;
            while start.elapsed() < Duration::from_millis(1500) {
                a.build(&to, b"calibration").unwrap();
                n += 1;
            }
            f64::from(n) / start.elapsed().as_secs_f64()
        })
        .await
        .unwrap()
    };
    let payload = (build_rate / 2.0).clamp(MIN_PAYLOAD_RATE, MAX_PAYLOAD_RATE);
    let rates = ClientRates {
        payload,
        loop_: payload / 10.0,
        drop: payload / 10.0,
    };
    let stretch = Duration::from_secs_f64(
        GAPS_PER_PHASE / ((rates.payload + rates.loop_ + rates.drop) * STRETCHES as f64),
    );
    eprintln!(
        "one thread builds {build_rate:.0} packets/s: alice's payload rate {payload:.0}/s, stretches of {stretch:.2?}"
    );
    let cover = alice.start_cover_with(rates).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Idle and busy stretches alternate, so that whatever else the machine does at the time
    // weighs on both samples alike. Gaps are taken within a stretch only. The busy traffic
    // is addressed to the discard id at bob's gateway, so that delivering it costs this
    // shared machine nothing that idle cover does not: the test looks at the sender alone.
    let to = lethe_proto::ClientAddress {
        client: lethe_proto::ClientId::DROP,
        key: bob.address().key,
        gateway: bob.address().gateway,
    };
    let busy_now = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let offered = Arc::new(AtomicU64::new(0));
    // Several writers, so that building packets never lets the queue run dry.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (alice, busy_now, done, offered) = (
                alice.clone(),
                busy_now.clone(),
                done.clone(),
                offered.clone(),
            );
            tokio::spawn(async move {
                let body = vec![0x42u8; 1000];
                while !done.load(Ordering::Relaxed) {
                    // Keep a few packets queued: enough that no payload slot finds the
                    // queue empty, few enough that it drains at once when idle begins.
                    if busy_now.load(Ordering::Relaxed) && alice.queued() < 64 {
                        alice.send(&to, &body).await.unwrap();
                        offered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect();
    let count = |m: &std::collections::HashMap<&str, u64>, k: &str| *m.get(k).unwrap_or(&0);
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    let (mut real, mut filler, mut idle_real) = (0, 0, 0);
    for _ in 0..STRETCHES {
        // Idle: wait until the queue has drained, then measure.
        busy_now.store(false, Ordering::Relaxed);
        wait_until("the queue drains", || alice.queued() == 0).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = cover.counts();
        cover.clear_send_times();
        tokio::time::sleep(stretch).await;
        idle.extend(gaps(&cover.send_times()));
        idle_real += count(&cover.counts(), "real") - count(&before, "real");
        // Busy: the application sends as fast as the queue takes it; measure once it is
        // full.
        busy_now.store(true, Ordering::Relaxed);
        wait_until("the queue fills", || alice.queued() >= 32).await;
        let before = cover.counts();
        cover.clear_send_times();
        tokio::time::sleep(stretch).await;
        busy.extend(gaps(&cover.send_times()));
        let after = cover.counts();
        real += count(&after, "real") - count(&before, "real");
        filler += count(&after, "payload_cover") - count(&before, "payload_cover");
    }
    done.store(true, Ordering::Relaxed);
    assert_eq!(idle_real, 0, "no real packet while idle");

    // The same process on the wire, idle or busy.
    let (n, m) = (idle.len(), busy.len());
    let d = ks_statistic(&idle, &busy);
    let crit = ks_critical(ALPHA, n, m);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!(
        "idle: {n} gaps, mean {:.3} ms; busy: {m} gaps, mean {:.3} ms; D = {d:.4}, critical {crit:.4}",
        mean(&idle) * 1e3,
        mean(&busy) * 1e3
    );
    let q = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        [0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
            .map(|p| (v[(p * v.len() as f64) as usize] * 1e4).round() / 10.0)
    };
    eprintln!("quantiles (ms) idle {:?} busy {:?}", q(&idle), q(&busy));
    assert!(n > 5000 && m > 5000, "too few sends: {n} idle, {m} busy");
    assert!(
        d < crit,
        "idle and busy inter-send times differ: D = {d:.4} >= {crit:.4} (alpha {ALPHA})"
    );
    // And the test can see a 10% change of rate with this many samples.
    let faster: Vec<f64> = idle.iter().map(|g| g / 1.1).collect();
    let d10 = ks_statistic(&idle, &faster);
    assert!(
        d10 > ks_critical(ALPHA, n, n),
        "a 10% rate change is not detectable with {n} samples: D = {d10:.4}"
    );

    // While busy, (nearly) every payload slot carried a real packet: at least 64% of the
    // slots the schedule had (as at 250/s before: 4,000 of 6,250), and nearly no filler.
    let slots = payload * stretch.as_secs_f64() * STRETCHES as f64;
    assert!(
        real as f64 > 0.64 * slots && filler * 50 < real,
        "busy phase: {real} real packets, {filler} payload cover, {slots:.0} slots"
    );

    for w in writers {
        w.await.unwrap();
    }
    // Real messages for bob ride in payload slots and arrive.
    for i in 0..50u32 {
        alice
            .send(&bob.address(), format!("real {i}").as_bytes())
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received = 0;
    while received < 50 && Instant::now() < deadline {
        if bob.recv_timeout(Duration::from_secs(1)).await.is_some() {
            received += 1;
        }
    }
    assert_eq!(received, 50, "bob got every message");
    let final_counts = cover.stop().await;
    let sent_real = offered.load(Ordering::Relaxed);

    // Loops came home through every layer; drop cover ended at the gateways.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loops = alice.loop_stats();
    // Alice's loops over the whole test (at least 2 x 25 s at a tenth of the payload rate).
    let expected_loops = rates.loop_ * 2.0 * stretch.as_secs_f64() * STRETCHES as f64;
    assert!(
        loops.returned as f64 > 0.5 * expected_loops,
        "{loops:?}, {expected_loops:.0} expected"
    );
    assert_eq!(loops.lost, 0, "{loops:?}");
    let mixes_on_loops = loops.per_relay.len();
    assert!(
        mixes_on_loops >= 7,
        "loops crossed only {mixes_on_loops} relays"
    );
    let dropped = net.metric("gateway-1", "lethe_drop_cover_total").await
        + net.metric("gateway-2", "lethe_drop_cover_total").await;
    // The local SOCKS proxy sends drop cover too, so the gateways count at least alice's.
    let alice_drops =
        count(&final_counts, "drop") + count(&final_counts, "payload_cover") + sent_real;
    assert!(
        dropped as u64 >= alice_drops,
        "gateways discarded {dropped}, fewer than alice's {alice_drops} drop packets"
    );
    assert_eq!(count(&final_counts, "real"), sent_real + 50);
}
