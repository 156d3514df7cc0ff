//! The crypto workers: threads that peel one Sphinx layer per packet (off the async
//! threads) and hand forwards to the scheduler and deliveries to `delivery`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lethe_proto::frame::REPLY_BODY_LEN;
use lethe_proto::{FrameKind, Processed};
use tokio::sync::mpsc;
use tracing::debug;

use crate::metrics::Reason;

use super::state::*;
use super::*;

pub(super) fn crypto_worker(
    shared: Arc<Shared>,
    jobs: crossbeam_channel::Receiver<Job>,
    sched: mpsc::Sender<Vec<Timed>>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(WORKER_BATCH);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < WORKER_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut out: Vec<Timed> = Vec::with_capacity(batch.len());
        // Current epoch first (the ring is newest first: next, current, previous).
        let mut ring = shared.ring();
        if ring.len() > 1 {
            ring.swap(0, 1);
        }
        for job in batch.drain(..) {
            let result = process_with_ring(&ring, &job.bytes);
            if job.from_client
                && matches!(
                    result,
                    Ok(Processed::Deliver { .. } | Processed::Reply { .. })
                )
            {
                // A route whose first hop is its last crossed no mix: whatever it carries
                // would reach a client or a mailbox unmixed and at no cost to its sender.
                shared.metrics.count_drop(Reason::FirstHopDelivery);
                continue;
            }
            match result {
                Ok(Processed::Forward {
                    next,
                    delay,
                    packet,
                }) => out.push((job.arrival, delay, Scheduled { next, packet })),
                Ok(Processed::Deliver {
                    destination,
                    message,
                }) => {
                    if shared.is_gateway() {
                        deliver(&shared, destination, FrameKind::Message, &message);
                    } else if destination == shared.loop_id {
                        // One of our own loops came back: cover, dropped silently.
                        shared
                            .metrics
                            .cover_received
                            .fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.metrics.count_drop(Reason::UnexpectedFinalHop);
                    }
                }
                Ok(Processed::Reply {
                    destination,
                    surb_id,
                    sealed,
                }) => {
                    if shared.is_gateway() {
                        let mut body = Vec::with_capacity(REPLY_BODY_LEN);
                        body.extend_from_slice(surb_id.as_bytes());
                        body.extend_from_slice(&sealed);
                        deliver(&shared, destination, FrameKind::Reply, &body);
                    } else {
                        shared.metrics.count_drop(Reason::UnexpectedFinalHop);
                    }
                }
                Err(e) => {
                    if e.kind() == lethe_proto::error::ErrorKind::Config {
                        // Not the packet's fault: this relay's own key is unusable.
                        lethe_net::warn_limited!(
                            std::time::Duration::from_secs(60),
                            error = %e,
                            "cannot peel packets: fix this relay's keys"
                        );
                    } else {
                        debug!(error = %e, "packet dropped");
                    }
                    shared.metrics.count_drop(Reason::from_error(&e));
                }
            }
        }
        if !out.is_empty() {
            let n = out.len();
            if sched.blocking_send(out).is_err() {
                for _ in 0..n {
                    shared.metrics.count_drop(Reason::Shutdown);
                }
            }
        }
    }
}
