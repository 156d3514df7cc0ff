//! A stream's opening end (the SOCKS proxy's, a message's sender): its chunks travel in
//! forward packets to the peer, each with fresh SURBs so the peer can answer without
//! knowing who we are, and the peer's answers come back in those SURBs.
//!
//! [`Opener`] holds what the opener's streams share: the key of every SURB sent out (by
//! SURB id, until its answer comes or it expires), the inbox of every open stream, and the
//! task that opens answers and hands their chunks to their streams. [`ForwardTransport`]
//! is one stream's way out.
//!
//! **SURB supply.** For each stream the opener estimates how many SURBs the peer still
//! holds (sent minus chunks received) and tops it up with ack-only chunks to a target
//! ([`lethe_proto::supply::SurbSupply`]: [`MIN_SURBS`] plus what the peer will use in one
//! and a half round trips at its recent rate). After a silence, or when a relay is newly
//! avoided, it assumes its SURBs were lost and sends fresh ones.
//!
//! **Sharing the payload slots.** While cover traffic runs, a stream has at most
//! [`QUEUED_PER_STREAM`] packets waiting for payload slots ([`Client::send_packet_tracked`]):
//! the slots are shared out among the streams in turn, every packet carries as many SURBs
//! as fit, and acks wait behind a few packets at most, never a long queue (which would
//! inflate the peer's RTT estimate and make it retransmit for nothing).
//!
//! **Dead relays.** Routes for forward packets and SURBs leave out the mixes the client's
//! loop cover found dead ([`Client::avoided_relays`]); the peer uses the newest SURBs first.
//!
//! SURB and packet creation run on the blocking pool, a chunk's SURBs in one batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lethe_net::clock::lock;
use lethe_proto::ClientAddress;
use lethe_proto::Packet;
use lethe_proto::seal::MAX_SEALED_MESSAGE;
use lethe_proto::stream::{Chunk, StreamId};
use lethe_proto::supply::SurbSupply;
use lethe_proto::surb::{SURB_SIZE, Surb, SurbId, SurbKey};
use tokio::sync::mpsc;
use tracing::debug;

use crate::pipe::{PipeError, Transport};
use crate::{Client, ClientError};

pub use lethe_proto::supply::MIN_SURBS;

/// The answering end's sending window (chunks in flight): the opener keeps about this many
/// SURBs, plus a margin, at the peer for each stream.
pub const EXIT_WINDOW: usize = 96;

/// How long the opener keeps a SURB's key waiting for its answer, by default (the answering
/// end drops SURBs a minute younger than this unused).
pub const DEFAULT_SURB_TTL: Duration = Duration::from_secs(300);

/// Most packets of one stream waiting for payload slots at once: two, so that the next is
/// built while the previous waits and no slot passes for want of one.
pub const QUEUED_PER_STREAM: usize = 2;

/// The longest a stream's packet may wait for a payload slot before the stream gives up.
pub const SLOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Tuning of an opener's SURBs.
#[derive(Clone, Copy, Debug)]
pub struct OpenerConfig {
    /// Most SURBs to keep at the peer per stream (the target grows from [`MIN_SURBS`] with
    /// the answer demand up to this).
    pub surb_target: usize,
    /// How long a SURB's key is kept waiting for its answer.
    pub surb_ttl: Duration,
    /// Most SURB keys held in all.
    pub max_keys: usize,
}

impl Default for OpenerConfig {
    fn default() -> Self {
        OpenerConfig {
            surb_target: EXIT_WINDOW + 16,
            surb_ttl: DEFAULT_SURB_TTL,
            max_keys: 200_000,
        }
    }
}

/// SURB keys by id: the stream the SURB was made for, the key, when it expires.
type Keys = Arc<Mutex<HashMap<SurbId, (StreamId, SurbKey, Instant)>>>;
/// Inboxes of the open streams.
type Streams = Arc<Mutex<HashMap<StreamId, mpsc::Sender<Chunk>>>>;

/// What an opener's streams share; its tasks stop when it is dropped.
pub struct Opener {
    client: Arc<Client>,
    cfg: OpenerConfig,
    keys: Keys,
    streams: Streams,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for Opener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Opener {
    /// Subscribe to the gateway and start taking the answers that come in our SURBs (the
    /// client's replies go to this opener alone).
    pub async fn start(client: Arc<Client>, cfg: OpenerConfig) -> Result<Opener, ClientError> {
        client.subscribe().await?;
        let replies = client.take_replies().await;
        let keys: Keys = Arc::default();
        let streams: Streams = Arc::default();
        let tasks = [
            tokio::spawn(dispatch(replies, keys.clone(), streams.clone())),
            tokio::spawn(sweep(keys.clone())),
        ];
        Ok(Opener {
            client,
            cfg,
            keys,
            streams,
            tasks,
        })
    }

    /// The client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Register stream `id` to `to`: its way out, and the inbox its peer's chunks arrive in.
    pub fn stream(
        &self,
        id: StreamId,
        to: ClientAddress,
        inbox_len: usize,
    ) -> (ForwardTransport, mpsc::Receiver<Chunk>) {
        let (tx, rx) = mpsc::channel(inbox_len);
        lock(&self.streams).insert(id, tx);
        let clock = lethe_net::clock::Clock::new();
        let transport = ForwardTransport {
            client: self.client.clone(),
            to,
            stream: id,
            keys: self.keys.clone(),
            supply: SurbSupply::new(clock.now(), self.cfg.surb_target),
            clock,
            ttl: self.cfg.surb_ttl,
            max_keys: self.cfg.max_keys,
            queued: Default::default(),
            avoided_changes: self.client.avoided_changes(),
        };
        (transport, rx)
    }

    /// Stream `id` ended: forget its inbox, and its SURB keys unless it closed cleanly (the
    /// peer's last acks may still come in them).
    pub fn ended(&self, id: StreamId, clean: bool) {
        lock(&self.streams).remove(&id);
        if !clean {
            lock(&self.keys).retain(|_, (s, _, _)| *s != id);
        }
    }
}

/// Open answers and hand their chunks to the streams.
async fn dispatch(mut replies: mpsc::Receiver<crate::Reply>, keys: Keys, streams: Streams) {
    while let Some(r) = replies.recv().await {
        let Some((stream, key, _)) = lock(&keys).remove(&r.surb_id) else {
            debug!("reply for an unknown or expired SURB dropped");
            continue;
        };
        let chunk = match key.recover(&r.sealed).map(|m| Chunk::decode(&m)) {
            Ok(Ok(c)) if c.stream == stream => c,
            _ => {
                debug!("undecodable reply dropped");
                continue;
            }
        };
        let inbox = lock(&streams).get(&stream).cloned();
        if let Some(tx) = inbox {
            let _ = tx.try_send(chunk);
        }
    }
}

async fn sweep(keys: Keys) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = Instant::now();
        lock(&keys).retain(|_, (_, _, exp)| *exp > now);
    }
}

/// A built packet, the keys of the SURBs it carries, and in how many seconds the first of
/// those SURBs dies with its epoch's keys.
type Made = (Packet, Vec<SurbKey>, Option<u64>);

/// One stream's way out: forward packets to the peer, with SURBs.
pub struct ForwardTransport {
    client: Arc<Client>,
    to: ClientAddress,
    stream: StreamId,
    keys: Keys,
    /// How many SURBs the peer holds and should hold for this stream (the policy).
    supply: SurbSupply,
    clock: lethe_net::clock::Clock,
    ttl: Duration,
    max_keys: usize,
    /// This stream's packets still waiting for a payload slot.
    queued: std::collections::VecDeque<tokio::sync::oneshot::Receiver<()>>,
    /// [`Client::avoided_changes`] when last looked at.
    avoided_changes: u64,
}

impl Transport for ForwardTransport {
    fn ready(&self) -> bool {
        true
    }

    fn on_chunk(&mut self, _chunk: &mut Chunk, now: Instant) {
        // Every chunk from the peer came in one of our SURBs.
        self.supply.on_chunk(self.clock.at(now));
    }

    fn wants_extra(&mut self, now: Instant) -> bool {
        // A relay was found dead: SURBs sent through it will never come back, and the count
        // of SURBs held at the peer is too high by an unknown number of them. Start again
        // from none; the new ones avoid the dead relay (the peer uses the newest first).
        let changes = self.client.avoided_changes();
        if changes != self.avoided_changes {
            self.avoided_changes = changes;
            if !self.client.avoided_relays().is_empty() {
                self.supply.forget_held();
            }
        }
        self.supply.wants_extra(self.clock.at(now)) && lock(&self.keys).len() < self.max_keys
    }

    fn next_extra(&self) -> Option<Instant> {
        Some(self.clock.instant(self.supply.next_extra()))
    }

    async fn transmit(&mut self, mut chunk: Chunk) -> Result<(), PipeError> {
        let room = MAX_SEALED_MESSAGE.saturating_sub(chunk.encoded_len()) / SURB_SIZE;
        let held_keys = lock(&self.keys).len();
        let n = if held_keys >= self.max_keys {
            0
        } else {
            self.supply.to_attach(self.clock.now(), room)
        };
        let client = self.client.clone();
        let to = self.to;
        let made = tokio::task::spawn_blocking(move || -> Result<Made, ClientError> {
            let mut rng = rand::rng();
            let topology = client.topology();
            let me = client.address();
            let avoid = client.avoided_relays();
            let mut keys = Vec::with_capacity(n);
            let now_unix = lethe_net::unix_now();
            // When the first of these SURBs dies with its keys, in seconds from now.
            let mut dies_in: Option<u64> = None;
            for _ in 0..n {
                let (route, delays, dies) = topology.plan_surb_route(
                    &mut rng,
                    &to.gateway,
                    &me.gateway,
                    now_unix,
                    &avoid,
                )?;
                // Whole seconds: one less, so as never to count a SURB as alive
                // after its keys are gone.
                let left = dies.saturating_sub(now_unix).saturating_sub(1);
                dies_in = Some(dies_in.map_or(left, |d| d.min(left)));
                let (surb, key) = Surb::create(&mut rng, &route, me.client, &delays)?;
                chunk.surbs.push(surb.to_bytes());
                keys.push(key);
            }
            let msg = chunk.encode().map_err(|e| {
                ClientError::Proto(lethe_proto::Error::Malformed {
                    what: "chunk",
                    detail: e.into(),
                })
            })?;
            Ok((client.build(&to, &msg)?.packet, keys, dies_in))
        })
        .await
        .map_err(|e| PipeError::Worker(e.to_string()))??;
        let (packet, new_keys, dies_in) = made;
        {
            let expires = Instant::now() + self.ttl;
            let mut k = lock(&self.keys);
            let now = self.clock.now();
            let dies = dies_in.map(|s| now + Duration::from_secs(s));
            self.supply.attached_until(new_keys.len(), dies);
            for key in new_keys {
                k.insert(key.id(), (self.stream, key, expires));
            }
        }
        // While cover traffic runs, a stream keeps at most QUEUED_PER_STREAM packets waiting
        // for payload slots, so its acks and SURBs are never stale and the streams share
        // the slots.
        while self.queued.len() >= QUEUED_PER_STREAM {
            if let Some(oldest) = self.queued.pop_front() {
                match tokio::time::timeout(SLOT_TIMEOUT, oldest).await {
                    Ok(r) => r.map_err(|_| ClientError::Closed)?,
                    Err(_) => return Err(PipeError::SlotTimeout(SLOT_TIMEOUT)),
                }
            }
        }
        let written = self.client.send_packet_tracked(&packet).await?;
        self.supply.opened(self.clock.now());
        self.queued.push_back(written);
        Ok(())
    }
}
