//! How the exit's chunks leave: inside the SURBs the client sent, newest first, and only
//! while they are young enough for the client to still hold their keys.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_client::pipe::{PipeError, Transport};
use lethe_client::socks::{QUEUED_PER_STREAM, SLOT_TIMEOUT};
use lethe_proto::stream::Chunk;
use lethe_proto::surb::Surb;

#[allow(unused_imports)]
use crate::*;

/// SURBs older than this are dropped unused: a minute less than the time the proxy keeps a
/// SURB's key by default ([`lethe_client::socks::DEFAULT_SURB_TTL`]), and the newest are
/// used first, so old ones would be used only when the pool runs low, for replies nobody
/// could read.
pub(crate) const SURB_MAX_AGE: Duration =
    Duration::from_secs(lethe_client::socks::DEFAULT_SURB_TTL.as_secs() - 60);

/// Sends in the client's SURBs.
pub(crate) struct ExitTransport {
    ctx: Arc<Ctx>,
    /// When each SURB came, oldest first.
    pool: VecDeque<(Instant, Vec<u8>)>,
    /// This stream's packets still waiting for the exit's payload slots (exit cover): at
    /// most [`QUEUED_PER_STREAM`], as at the proxy, so the streams share the slots and a
    /// retransmission never queues behind a long backlog of its own stream.
    queued: VecDeque<tokio::sync::oneshot::Receiver<()>>,
}

impl ExitTransport {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        ExitTransport {
            ctx,
            pool: VecDeque::new(),
            queued: VecDeque::new(),
        }
    }
}

impl Transport for ExitTransport {
    fn ready(&self) -> bool {
        // The newest SURB is usable (if it is too old, so are all the others).
        self.pool
            .back()
            .is_some_and(|(t, _)| t.elapsed() <= SURB_MAX_AGE)
    }

    fn on_chunk(&mut self, chunk: &mut Chunk, now: Instant) {
        self.pool.extend(
            std::mem::take(&mut chunk.surbs)
                .into_iter()
                .map(|s| (now, s)),
        );
        while self.pool.len() > self.ctx.cfg.max_surbs_per_stream
            || self
                .pool
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > SURB_MAX_AGE)
        {
            self.pool.pop_front();
        }
    }

    fn wants_extra(&mut self, _now: Instant) -> bool {
        false
    }

    fn next_extra(&self) -> Option<Instant> {
        None
    }

    async fn transmit(&mut self, chunk: Chunk) -> Result<(), PipeError> {
        // Wait for a slot to take one of ours before using a SURB: the one used is then the
        // freshest there is when the packet leaves.
        while self.queued.len() >= QUEUED_PER_STREAM {
            if let Some(oldest) = self.queued.pop_front() {
                match tokio::time::timeout(SLOT_TIMEOUT, oldest).await {
                    Ok(r) => r.map_err(|_| lethe_client::ClientError::Closed)?,
                    Err(_) => return Err(PipeError::SlotTimeout(SLOT_TIMEOUT)),
                }
            }
        }
        let msg = chunk.encode()?;
        // Newest first: the client chose the latest SURBs' routes knowing most (a relay it
        // found dead is in none of them); older ones are used when the new are gone.
        let now = Instant::now();
        while let Some((came, bytes)) = self.pool.pop_back() {
            if now.saturating_duration_since(came) > SURB_MAX_AGE {
                // Every older one is older still.
                self.pool.clear();
                break;
            }
            // A SURB that does not start at our gateway could not be sent anyway.
            let Ok(surb) = Surb::from_bytes(&bytes) else {
                continue;
            };
            if surb.first_hop() != self.ctx.gateway {
                continue;
            }
            // A SURB that cannot carry the chunk (malformed) is dropped, not the stream.
            let Ok((_, packet)) = surb.into_packet(&msg) else {
                continue;
            };
            match self.ctx.client.send_packet_tracked(&packet).await {
                Ok(written) => self.queued.push_back(written),
                Err(e) => {
                    lethe_net::warn_limited!(Duration::from_secs(10), error = %e, "cannot send to the gateway");
                    return Err(e.into());
                }
            }
            return Ok(());
        }
        Ok(())
    }
}
