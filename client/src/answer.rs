//! A stream's answering end (the exit service's, a message's recipient's): its chunks leave
//! inside the SURBs the opener sent, newest first, and only while they are young enough for
//! the opener to still hold their keys.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_proto::NodeId;
use lethe_proto::stream::Chunk;
use lethe_proto::surb::Surb;

use crate::forward::{DEFAULT_SURB_TTL, QUEUED_PER_STREAM, SLOT_TIMEOUT};
use crate::pipe::{PipeError, Transport};
use crate::{Client, ClientError};

/// SURBs older than this are dropped unused: a minute less than the time the opener keeps
/// a SURB's key by default ([`DEFAULT_SURB_TTL`]), and the newest are used first, so old
/// ones would be used only when the pool runs low, for answers nobody could read.
pub const SURB_MAX_AGE: Duration = Duration::from_secs(DEFAULT_SURB_TTL.as_secs() - 60);

/// Sends in the opener's SURBs.
pub struct SurbTransport {
    client: Arc<Client>,
    /// Our gateway: a SURB must start there.
    gateway: NodeId,
    /// Most SURBs held; older ones are dropped beyond it.
    max_surbs: usize,
    /// When each SURB came, oldest first.
    pool: VecDeque<(Instant, Vec<u8>)>,
    /// This stream's packets still waiting for the payload slots: at most
    /// [`QUEUED_PER_STREAM`], as at the opener, so the streams share the slots and a
    /// retransmission never queues behind a long backlog of its own stream.
    queued: VecDeque<tokio::sync::oneshot::Receiver<()>>,
}

impl SurbTransport {
    /// A stream's transport through `client`, holding at most `max_surbs` SURBs.
    pub fn new(client: Arc<Client>, max_surbs: usize) -> Self {
        SurbTransport {
            gateway: client.address().gateway,
            client,
            max_surbs,
            pool: VecDeque::new(),
            queued: VecDeque::new(),
        }
    }
}

impl Transport for SurbTransport {
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
        while self.pool.len() > self.max_surbs
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
                    Ok(r) => r.map_err(|_| ClientError::Closed)?,
                    Err(_) => return Err(PipeError::SlotTimeout(SLOT_TIMEOUT)),
                }
            }
        }
        let msg = chunk.encode()?;
        // Newest first: the opener chose the latest SURBs' routes knowing most (a relay it
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
            if surb.first_hop() != self.gateway {
                continue;
            }
            // A SURB that cannot carry the chunk (malformed) is dropped, not the stream.
            let Ok((_, packet)) = surb.into_packet(&msg) else {
                continue;
            };
            match self.client.send_packet_tracked(&packet).await {
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
