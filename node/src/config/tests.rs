//! Tests of `node.toml` against the files in `tests/fixtures`: the valid ones parse and
//! survive a round trip, each invalid one's error names its field.

use super::*;

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn valid_fixtures_parse() {
    for f in [
        "mix.toml",
        "gateway.toml",
        "authority.toml",
        "minimal-mix.toml",
        "batch-mix.toml",
        "floor-mix.toml",
    ] {
        let cfg = NodeConfig::parse(&fixture(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        // and survive a round trip
        assert_eq!(NodeConfig::parse(&cfg.to_toml().unwrap()).unwrap(), cfg);
    }
    let a = NodeConfig::parse(&fixture("authority.toml")).unwrap();
    assert_eq!(a.authority.cover_mix_loop_mean_ms, 500);
    assert_eq!(a.authority.cover_downstream_mean_ms, 10);
    assert_eq!(
        a.authority.cover_downstream_mode,
        DownstreamModeConfig::Strict
    );
    assert_eq!(a.authority.cover_exit_payload_mean_ms, 4);
    assert_eq!(AuthoritySection::default().cover_mix_loop_mean_ms, 1000);
    let m = NodeConfig::parse(&fixture("minimal-mix.toml")).unwrap();
    assert_eq!(m.replay, ReplaySection::default());
    assert_eq!(m.directory.threshold, 1);
    assert_eq!(m.mixing.strategy, MixingStrategy::Poisson);
    assert_eq!(m.cover, CoverSection::default());
    assert_eq!(m.mixing.min_anonymity_bits, 0.0);
    let b = NodeConfig::parse(&fixture("batch-mix.toml")).unwrap();
    assert_eq!(b.mixing.strategy, MixingStrategy::Batch);
    assert_eq!(
        (b.mixing.batch_round_ms, b.mixing.batch_min_packets),
        (500, 20)
    );
    assert_eq!(b.cover.loop_rate_per_sec, 2.5);
    let f = NodeConfig::parse(&fixture("floor-mix.toml")).unwrap();
    assert_eq!(f.mixing.min_anonymity_bits, 3.0);
    assert_eq!(f.cover.max_per_sec, 40.0);
}

#[test]
fn invalid_fixtures_name_the_field() {
    for (f, field) in [
        ("bad-unknown-key.toml", "colour"),
        ("bad-layer.toml", "node.layer"),
        ("bad-gateway-layer.toml", "node.layer"),
        ("bad-threshold.toml", "directory.threshold"),
        ("bad-url.toml", "directory.url"),
        ("bad-listen.toml", "listen"),
        ("bad-fp-rate.toml", "replay.false_positive_rate"),
        ("bad-authority-key.toml", "directory.authority_keys"),
        ("bad-role.toml", "role"),
        ("bad-limits.toml", "limits.connections_per_ip"),
        ("bad-strategy.toml", "strategy"),
        ("bad-floor-batch.toml", "mixing.min_anonymity_bits"),
        ("bad-floor-nan.toml", "mixing.min_anonymity_bits"),
        ("bad-batch-round.toml", "mixing.batch_round_ms"),
        ("bad-cover-cap.toml", "cover.max_per_sec"),
        ("bad-cover-gateway.toml", "cover.loop_rate_per_sec"),
        ("bad-cover-rate.toml", "authority.cover_payload_mean_ms"),
        ("bad-mix-loop-rate.toml", "authority.cover_mix_loop_mean_ms"),
        (
            "bad-downstream-rate.toml",
            "authority.cover_downstream_mean_ms",
        ),
        ("bad-downstream-mode.toml", "cover_downstream_mode"),
        ("bad-peer-keys.toml", "authority.peer_keys"),
        ("bad-vote-interval.toml", "authority.vote_interval_secs"),
        ("bad-mailbox-bytes.toml", "gateway.mailbox_per_client_bytes"),
    ] {
        let err = NodeConfig::parse(&fixture(f)).expect_err(f).to_string();
        assert!(
            err.contains(field),
            "{f}: error {err:?} should name {field}"
        );
    }
}
