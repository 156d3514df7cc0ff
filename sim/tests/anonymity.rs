//! Entropy against closed forms, determinism, and the effect of corrupt relays and cover.

use std::time::Duration;

use lethe_sim::{MixKind, SimConfig, Simulation, TopologyKind, run};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One relay, many clients sending rarely (so the packets in a pool have distinct senders),
/// no cover but the payload stream.
fn single_mix(mix: MixKind) -> SimConfig {
    SimConfig {
        seed: 7,
        topology: TopologyKind::Stratified,
        layers: 1,
        width: 1,
        clients: 20_000,
        message_rate: 0.005,
        payload_rate: 0.01,
        loop_rate: 0.0,
        drop_rate: 0.0,
        relay_loop_rate: 0.0,
        mix,
        mean_delay: ms(50),
        max_delay: Duration::from_secs(5),
        processing: Duration::ZERO,
        link_latency: ms(1),
        corrupt_fraction: 0.0,
        duration: Duration::from_secs(60),
        warmup: Duration::from_secs(5),
        cooldown: Duration::from_secs(2),
        targets: 300,
        epsilon: 1e-9,
        queue_capacity: 1_000_000,
    }
}

#[test]
fn batch_round_of_n_distinct_senders_gives_log2_n() {
    let cfg = single_mix(MixKind::Batch {
        round: ms(100),
        min_packets: 0,
    });
    let mut sim = Simulation::new(cfg).expect("config");
    sim.run();
    let results = sim.target_results();
    assert!(results.len() > 200, "{} targets", results.len());
    let mut exact = 0;
    for r in &results {
        let log2n = f64::from(r.last_pool).log2();
        assert!(r.entropy_bits <= log2n + 1e-9, "{r:?}");
        assert_eq!(r.unresolved, 0.0);
        if (r.entropy_bits - log2n).abs() < 1e-9 {
            exact += 1;
        }
    }
    // About 20 packets a round from 20000 clients: a repeated sender in a round is rare.
    assert!(
        exact * 100 >= results.len() * 97,
        "{exact} of {}",
        results.len()
    );
}

#[test]
fn single_poisson_mix_matches_the_steady_state() {
    // Arrivals at lambda = 200/s, mean delay 1/mu = 50 ms: the pool holds lambda/mu = 10 on
    // average, and the packet leaving is the one that arrived tau ago with weight about
    // (mu/lambda) e^(-mu tau), which gives H = log2(e lambda / mu) = 4.76 bits.
    let cfg = single_mix(MixKind::Poisson);
    let report = run(&cfg).expect("run");
    let predicted = (std::f64::consts::E * 10.0).log2();
    assert!(report.targets_measured > 200);
    assert!(
        (report.entropy_bits.mean - predicted).abs() < 0.25,
        "mean {} vs {predicted}",
        report.entropy_bits.mean
    );
    assert!(
        (report.mean_pool - 11.0).abs() < 1.5,
        "pool {}",
        report.mean_pool
    );
    assert!(report.unresolved_mass < 1e-6);
}

/// A small stratified network at low traffic.
fn small_net() -> SimConfig {
    SimConfig {
        seed: 3,
        layers: 3,
        width: 2,
        clients: 40,
        message_rate: 0.5,
        payload_rate: 1.0,
        loop_rate: 0.0,
        drop_rate: 0.0,
        mean_delay: ms(50),
        duration: Duration::from_secs(40),
        warmup: Duration::from_secs(5),
        cooldown: Duration::from_secs(2),
        targets: 150,
        epsilon: 1e-7,
        ..SimConfig::default()
    }
}

#[test]
fn same_seed_same_json() {
    let cfg = small_net();
    let a = serde_json::to_string(&run(&cfg).expect("run")).expect("json");
    let b = serde_json::to_string(&run(&cfg).expect("run")).expect("json");
    assert_eq!(a, b);
    let other = SimConfig { seed: 4, ..cfg };
    let c = serde_json::to_string(&run(&other).expect("run")).expect("json");
    assert_ne!(a, c);
}

#[test]
fn corrupt_relays_reduce_entropy() {
    let honest = run(&small_net()).expect("run");
    let half = run(&SimConfig {
        corrupt_fraction: 0.5,
        ..small_net()
    })
    .expect("run");
    let all = run(&SimConfig {
        corrupt_fraction: 1.0,
        ..small_net()
    })
    .expect("run");
    assert_eq!(half.corrupt_relays, 3);
    assert!(
        half.entropy_bits.mean < honest.entropy_bits.mean - 0.3,
        "{} vs {}",
        half.entropy_bits.mean,
        honest.entropy_bits.mean
    );
    // Every relay reveals its mapping: each sender is known.
    assert_eq!(all.entropy_bits.max, 0.0);
}

#[test]
fn client_cover_raises_entropy_at_low_traffic() {
    let bare = run(&small_net()).expect("run");
    let covered = run(&SimConfig {
        loop_rate: 4.0,
        drop_rate: 4.0,
        ..small_net()
    })
    .expect("run");
    assert!(
        covered.entropy_bits.mean > bare.entropy_bits.mean + 0.5,
        "{} vs {}",
        covered.entropy_bits.mean,
        bare.entropy_bits.mean
    );
    assert!(covered.cover_share > 0.9 && bare.cover_share < 0.6);
    // Relay cover adds no possible sender, but once it leaves its relay it is as likely to
    // be any client packet pooled with it: it carries their probability on as decoys.
    let relay_cover = run(&SimConfig {
        relay_loop_rate: 50.0,
        ..small_net()
    })
    .expect("run");
    assert!(relay_cover.cover_share > bare.cover_share);
    assert!(
        relay_cover.entropy_bits.mean > bare.entropy_bits.mean + 0.3,
        "{} vs {}",
        relay_cover.entropy_bits.mean,
        bare.entropy_bits.mean
    );
}

#[test]
fn topologies_and_batch_rounds_run() {
    for topology in [TopologyKind::FreeRoute, TopologyKind::Cascade] {
        let r = run(&SimConfig {
            topology,
            ..small_net()
        })
        .expect("run");
        assert!(
            r.targets_measured > 100 && r.entropy_bits.mean > 1.0,
            "{topology:?}"
        );
    }
    let r = run(&SimConfig {
        mix: MixKind::Batch {
            round: ms(100),
            min_packets: 5,
        },
        ..small_net()
    })
    .expect("run");
    assert!(r.targets_measured > 100);
    assert!(r.mean_pool >= 5.0);
    assert!(r.latency_ms.count > 0);
}
