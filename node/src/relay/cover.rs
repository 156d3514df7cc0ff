//! A mix's own cover: a thread that builds loop packets (the steady stream the directory
//! publishes, the anonymity floor, batch top-ups) within `cover.max_per_sec`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lethe_net::Sensitive;
use lethe_proto::PoissonStream;
use lethe_proto::limit::TokenBucket;
use lethe_proto::mixloop::build_mix_loop;
use tokio::sync::mpsc;
use tracing::debug;

use crate::metrics::CoverKind;

use super::state::*;
use super::*;

/// A mix's own cover: a Poisson stream of loops (at the rate the directory publishes,
/// `authority.cover_mix_loop_mean_ms`, unless `cover.loop_rate_per_sec` overrides it), plus, on the
/// scheduler's request, floor cover while the pool is below `mixing.min_anonymity_bits`
/// (a Poisson stream at `cover.max_per_sec`) and the packets a short batch round lacks. All
/// of it shares one budget of `cover.max_per_sec` (bursts of as many, or of one round).
/// Each packet is a loop (see `lethe_proto::cover`) that enters our own pool like a packet
/// from a previous hop. Runs on its own thread: building one costs 0.5 to 1 ms.
pub(super) fn cover_worker(
    shared: Arc<Shared>,
    sched: mpsc::Sender<Vec<Timed>>,
    requests: crossbeam_channel::Receiver<CoverRequest>,
) {
    use crossbeam_channel::RecvTimeoutError;
    let c = &shared.cfg.cover;
    let mut rng = rand::rng();
    let burst = c
        .max_per_sec
        .max(shared.cfg.mixing.batch_min_packets as f64);
    let mut budget = TokenBucket::new(c.max_per_sec, burst, shared.now());
    // The local override, or the directory's rate (followed as it changes).
    let current_loop_rate = || {
        if c.loop_rate_per_sec > 0.0 {
            c.loop_rate_per_sec
        } else {
            shared
                .topology()
                .map_or(0.0, |t| t.body().cover.mix_loop_rate())
        }
    };
    // The loop schedule is the one the simulator models relays with: a Poisson stream that
    // keeps its rate when the thread is a little late and starts afresh when far behind.
    let stream = |rate: f64| {
        PoissonStream::new(rate).unwrap_or_else(|_| PoissonStream::new(0.0).expect("rate 0"))
    };
    let mut loop_rate = current_loop_rate();
    let mut loops = stream(loop_rate);
    loops.start(shared.now(), &mut rng);
    let mut floor = stream(c.max_per_sec);
    let mut floor_on = false;
    let mut round_wanted = 0usize;
    loop {
        let now = shared.now();
        let mut wake = now + Duration::from_millis(250);
        let floor_next = floor_on.then(|| floor.poll_timeout()).flatten();
        for t in [loops.poll_timeout(), floor_next].into_iter().flatten() {
            wake = wake.min(t);
        }
        let first = match requests.recv_timeout(wake.saturating_duration_since(now)) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for r in first.into_iter().chain(requests.try_iter()) {
            match r {
                CoverRequest::Floor(on) => {
                    if on && !floor_on {
                        // The first floor packet at once, then the stream.
                        floor.start_at(shared.now());
                    }
                    floor_on = on;
                }
                CoverRequest::Round(n) => round_wanted = n,
            }
        }
        let rate = current_loop_rate();
        if rate != loop_rate {
            loop_rate = rate;
            loops = stream(rate);
            loops.start(shared.now(), &mut rng);
        }
        // Loops and floor cover stop at shutdown; round top-ups go on so the last rounds
        // can still leave during the grace period.
        let stopping = shared.shutting_down();
        let now = shared.now();
        let mut wanted: Vec<CoverKind> = Vec::new();
        while loops.pop_due(now, &mut rng).is_some() {
            if !stopping {
                wanted.push(CoverKind::Loop);
            }
        }
        while floor_on && floor.pop_due(now, &mut rng).is_some() {
            if !stopping {
                wanted.push(CoverKind::Floor);
            }
        }
        wanted.extend(std::iter::repeat_n(CoverKind::Round, round_wanted));
        round_wanted = 0;
        if wanted.is_empty() {
            continue;
        }
        let Some(topology) = shared.topology() else {
            continue;
        };
        let epoch = topology.epoch_at(lethe_net::unix_now());
        let mut out: Vec<Timed> = Vec::with_capacity(wanted.len());
        for kind in wanted {
            if !budget.try_take(shared.now()) {
                shared
                    .metrics
                    .cover_suppressed
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match build_mix_loop(&mut rng, &topology, &shared.me, epoch, shared.loop_id) {
                Ok(l) => {
                    shared.metrics.cover_sent(kind);
                    out.push((
                        shared.now(),
                        l.hold,
                        Scheduled {
                            next: l.next,
                            packet: l.packet,
                        },
                    ));
                }
                Err(e) => {
                    // e.g. before our own descriptor is in the topology
                    debug!(error = %Sensitive::new(e.to_string()), "cannot build a loop yet");
                    break;
                }
            }
        }
        if !out.is_empty() && sched.blocking_send(out).is_err() {
            return;
        }
    }
}
