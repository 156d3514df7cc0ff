//! The scheduler: the mixing pool (Poisson queue or batch rounds), releasing each packet
//! at its time to the link of its next hop, and asking the cover thread for floor and
//! round top-ups.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lethe_proto::{AnonymityEstimator, BatchConfig};
use tokio::sync::mpsc;

use crate::config::MixingStrategy;
use crate::metrics::Reason;

use super::state::*;
use super::*;

/// What the scheduler asks of the cover thread.
#[derive(Clone, Copy, Debug)]
pub(super) enum CoverRequest {
    /// The pool is below the anonymity floor (true) or back above it (false).
    Floor(bool),
    /// The batch round is due but short by this many packets.
    Round(usize),
}

/// The mixing pool (the simulator's too).
pub(super) type Pool = lethe_proto::Pool<Scheduled>;

/// How long a short batch round waits for its top-up before asking again.
pub(super) const TOPUP_RETRY: Duration = Duration::from_millis(50);

/// How often the anonymity gauge is refreshed when nothing else wakes the scheduler.
pub(super) const GAUGE_TICK: Duration = Duration::from_millis(500);

pub(super) async fn scheduler(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Vec<Timed>>,
    cover: Option<crossbeam_channel::Sender<CoverRequest>>,
) {
    let m = &shared.cfg.mixing;
    let mut pool = match m.strategy {
        MixingStrategy::Poisson => Pool::poisson(m.queue_capacity),
        MixingStrategy::Batch => Pool::batch(
            shared.now(),
            BatchConfig {
                round: Duration::from_millis(m.batch_round_ms),
                min_packets: m.batch_min_packets,
                capacity: m.queue_capacity,
            },
        ),
    };
    let mut estimate = AnonymityEstimator::new(Duration::from_millis(m.anonymity_window_ms));
    let floor = m.min_anonymity_bits;
    let mut below_floor = false;
    // Set while a batch round is due but short: when to ask for the top-up again.
    let mut topup_retry: Option<Instant> = None;
    let mut gauge_tick = tokio::time::interval(GAUGE_TICK);
    gauge_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = shared.shutdown.clone();
    let mut drain_until: Option<Instant> = None;
    let grace = Duration::from_millis(m.shutdown_grace_ms);
    // While draining, leave early only once the queue is empty and nothing has come in for
    // this long: packets may still be on their way from the previous hop.
    let quiet = Duration::from_millis(200).min(grace);
    let mut last_arrival = Instant::now();
    let mut inputs_open = true;
    loop {
        let wake = match &pool {
            Pool::Poisson(_) => pool.poll_timeout().map(|t| shared.instant(t)),
            Pool::Batch(b) => Some(topup_retry.unwrap_or_else(|| shared.instant(b.poll_timeout()))),
        };
        let quiet_check = match drain_until {
            Some(_) if pool.is_empty() => Some(last_arrival + quiet),
            _ => None,
        };
        tokio::select! {
            item = rx.recv(), if inputs_open => match item {
                Some(batch) => {
                    last_arrival = Instant::now();
                    for (arrival, delay, s) in batch {
                        if pool.push(arrival, s, delay).is_ok() {
                            estimate.on_arrival(arrival);
                        } else {
                            shared.metrics.count_drop(Reason::QueueFull);
                        }
                    }
                }
                None => {
                    // Every worker is gone: release what is queued, then stop.
                    inputs_open = false;
                    if pool.is_empty() {
                        break;
                    }
                }
            },
            _ = sleep_until_opt(wake) => {}
            _ = gauge_tick.tick() => {}
            () = shutdown.wait(), if drain_until.is_none() => {
                drain_until = Some(Instant::now() + grace);
            }
            _ = sleep_until_opt(drain_until) => {}
            _ = sleep_until_opt(quiet_check) => {}
        }
        let now = shared.now();
        match &mut pool {
            Pool::Poisson(q) => {
                while let Some((_, s)) = q.pop_ready(now) {
                    estimate.on_departure(now);
                    dispatch(&shared, s);
                }
            }
            Pool::Batch(b) => {
                if now >= b.poll_timeout() {
                    match b.pop_round(now, &mut rand::rng()) {
                        Some(round) => {
                            topup_retry = None;
                            estimate.on_round(now, round.len());
                            if !round.is_empty() {
                                shared.metrics.batch_rounds.fetch_add(1, Ordering::Relaxed);
                            }
                            for s in round {
                                dispatch(&shared, s);
                            }
                        }
                        None => {
                            // Short: ask for exactly the missing cover (a repeated request
                            // replaces the previous one), and look again shortly.
                            if topup_retry.is_none_or(|t| Instant::now() >= t) {
                                if let Some(c) = &cover {
                                    let _ = c.try_send(CoverRequest::Round(b.deficit()));
                                }
                                topup_retry = Some(Instant::now() + TOPUP_RETRY);
                            }
                        }
                    }
                }
            }
        }
        // The floor follows the pool without lag: below it, the cover thread adds packets
        // (at most cover.max_per_sec); not while shutting down.
        if floor > 0.0
            && let Some(c) = &cover
        {
            let below = drain_until.is_none() && estimate.current_bits() < floor;
            if below != below_floor && c.try_send(CoverRequest::Floor(below)).is_ok() {
                below_floor = below;
            }
        }
        shared.metrics.queue_depth.set(pool.len() as i64);
        shared.metrics.pool_packets.set(pool.len() as i64);
        shared.metrics.anonymity_bits.set(estimate.estimate(now));
        if let Some(deadline) = drain_until {
            let idle = pool.is_empty() && last_arrival.elapsed() >= quiet;
            if idle || Instant::now() >= deadline {
                let left = pool.drain();
                for _ in 0..left {
                    estimate.on_discard();
                    shared.metrics.count_drop(Reason::Shutdown);
                }
                shared.metrics.queue_depth.set(0);
                shared.metrics.pool_packets.set(0);
                return;
            }
        }
    }
}

pub(super) async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Send a released packet on its next hop's link, creating the link on first use.
pub(super) fn dispatch(shared: &Arc<Shared>, s: Scheduled) {
    let mut links = lock(&shared.links);
    let tx = match links.get(&s.next) {
        Some(tx) => tx.clone(),
        None => {
            let known = shared.topology().is_some_and(|t| t.node(&s.next).is_some());
            if !known || s.next == shared.me {
                shared.metrics.count_drop(Reason::UnknownNextHop);
                return;
            }
            let (tx, rx) = mpsc::channel(shared.cfg.mixing.link_queue);
            links.insert(s.next, tx.clone());
            lock(&shared.link_tasks).spawn(link_task(shared.clone(), s.next, rx));
            tx
        }
    };
    drop(links);
    if tx.try_send(s.packet).is_err() {
        shared.metrics.count_drop(Reason::LinkFull);
    }
}
