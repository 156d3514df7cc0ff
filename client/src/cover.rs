//! Cover traffic: the client's three Loopix send streams (payload, loop, drop) on the wire.
//!
//! Once [`Client::start_cover`] runs, the client writes a packet to its gateway only at the
//! events of three independent Poisson processes whose rates the directory publishes for
//! every client alike ([`lethe_proto::ClientSchedule`] decides; this module drives it):
//!
//! - **payload**: a real packet if one is queued, else a drop cover packet in its slot;
//! - **loop**: a packet through the whole network (a mix of each layer) back to this client;
//! - **drop**: a packet to a random gateway, which discards it.
//!
//! Real messages then wait in a bounded queue for a payload slot, so the times at which the
//! client sends are the same process whether its user is idle or busy. Cover packets are
//! built ahead of their slot, like real ones, so that no kind leaves later after its due
//! time than another.
//!
//! Loops that do not come back within [`LOOP_DEADLINE`] are counted as lost against every
//! relay on their route ([`LoopStats`]): a relay that drops packets shows up there. For
//! route choice a loop counts as lost sooner ([`LOOP_LATE`]): [`lethe_proto::RelayHealth`]
//! names the mixes whose loops are lost while others' return, and the client's real
//! packets, SURBs and drop cover then route around them ([`Client::avoided_relays`]);
//! loops keep crossing every relay.
//!
//! Over 350 lines, on purpose: the schedule thread, the real-packet builder thread and the
//! bounded queue between them share one lifecycle (start, stop, the queue's wake-ups), and
//! the policies they run are already in `lethe-proto` (`ClientSchedule`, `LoopTracker`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use lethe_proto::packet::build_packet;
use lethe_proto::seal::{SEALED_LEN, seal};
use lethe_proto::{ClientId, ClientRates, ClientSchedule, ClientSend, NodeId, Packet, Topology};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::{Client, ClientError};

pub use lethe_proto::loops::{COVER_MESSAGE_LEN, LOOP_DEADLINE, LOOP_LATE, LoopStats};
/// Changes of the avoided relays are logged at warn level at most this often (at debug
/// level in between).
const AVOID_LOG_EVERY: Duration = Duration::from_secs(10);
/// Real packets waiting for a payload slot; `send` waits while it is full.
pub const REAL_QUEUE: usize = 1024;

/// A real packet waiting for a payload slot, and who to tell when it is on the link.
pub(crate) struct Queued {
    pub(crate) packet: Packet,
    pub(crate) written: Option<tokio::sync::oneshot::Sender<()>>,
}
/// Send times kept for [`Cover::send_times`] (the oldest are dropped beyond it).
const SEND_TIMES_KEPT: usize = 1 << 18;

use lethe_net::clock::lock;

/// Where a cover driver reads the rates to follow in each new document, and the rates it
/// runs at now.
type Follow = (fn(&Topology) -> ClientRates, ClientRates);

/// The loops a client has in flight ([`lethe_proto::loops::LoopTracker`], the policy), on
/// this process's clock, shared by the cover driver and the receive path; changes of the
/// avoided relays are logged here.
pub(crate) struct LoopTracker {
    inner: Mutex<lethe_proto::loops::LoopTracker>,
    clock: lethe_net::clock::Clock,
    /// When a change was last logged at warn level.
    last_warn: Mutex<Option<Instant>>,
}

impl LoopTracker {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        LoopTracker {
            inner: Mutex::new(lethe_proto::loops::LoopTracker::new(key)),
            clock: lethe_net::clock::Clock::new(),
            last_warn: Mutex::new(None),
        }
    }

    /// Say which relays are avoided now (after the set changed): at warn level at most
    /// every [`AVOID_LOG_EVERY`], at debug level in between.
    fn log_change(&self, suspects: &BTreeSet<NodeId>) {
        let names: Vec<String> = suspects.iter().map(|n| n.short()).collect();
        let now = Instant::now();
        let mut last = lock(&self.last_warn);
        let loud = last.is_none_or(|t| now.saturating_duration_since(t) >= AVOID_LOG_EVERY);
        if names.is_empty() {
            tracing::debug!("no relay avoided any more");
        } else if loud {
            *last = Some(now);
            tracing::warn!(
                relays = %names.join(","),
                "routing around relays whose loops are lost"
            );
        } else {
            tracing::debug!(relays = %names.join(","), "routing around relays whose loops are lost");
        }
    }

    /// How many times the avoided relays changed so far.
    pub(crate) fn avoided_changes(&self) -> u64 {
        lock(&self.inner).changes()
    }

    /// The relays every packet of this client should avoid now (evidence older than
    /// [`lethe_proto::HealthConfig::window`] forgotten, also when cover has stopped).
    pub(crate) fn avoided(&self) -> BTreeSet<NodeId> {
        let (set, changed) = lock(&self.inner).avoided(self.clock.now());
        if changed {
            self.log_change(&set);
        }
        set
    }

    fn message<R: Rng + ?Sized>(&self, rng: &mut R) -> ([u8; 32], [u8; COVER_MESSAGE_LEN]) {
        lock(&self.inner).message(rng)
    }

    /// A loop left; its hops' delays add up to `total`.
    fn sent(&self, id: [u8; 32], route: Vec<NodeId>, total: Duration) {
        lock(&self.inner).sent(self.clock.now(), id, route, total);
    }

    /// If `msg` is one of our loops (this run's or a late one from an earlier run), count
    /// it and return true: it is not a message for the application.
    pub(crate) fn returned(&self, msg: &[u8]) -> bool {
        let mut t = lock(&self.inner);
        let (what, changed) = t.returned(self.clock.now(), msg);
        if changed {
            let suspects = t.suspects().clone();
            drop(t);
            self.log_change(&suspects);
        }
        what != lethe_proto::loops::Returned::NotALoop
    }

    fn expire(&self, now: Instant) {
        let mut t = lock(&self.inner);
        if t.expire(self.clock.at(now)) {
            let suspects = t.suspects().clone();
            drop(t);
            self.log_change(&suspects);
        }
    }

    pub(crate) fn stats(&self) -> LoopStats {
        lock(&self.inner).stats().clone()
    }
}

/// A running cover-traffic driver. Stops when dropped, when [`Cover::stop`] is called or
/// when the client is gone; in the first two cases after the real packets already queued
/// have left.
pub struct Cover {
    stop: Arc<AtomicBool>,
    task: Option<std::thread::JoinHandle<()>>,
    shared: Arc<CoverShared>,
}

#[derive(Default)]
struct CoverShared {
    send_times: Mutex<std::collections::VecDeque<Instant>>,
    /// Sum and count of (send time - due time) since the last clear.
    lateness: Mutex<(Duration, u64)>,
    counts: Mutex<HashMap<&'static str, u64>>,
    error: Mutex<Option<String>>,
}

impl Cover {
    /// Times at which packets were written to the gateway link (the most recent ones).
    pub fn send_times(&self) -> Vec<Instant> {
        lock(&self.shared.send_times).iter().copied().collect()
    }

    /// Forget the recorded send times.
    pub fn clear_send_times(&self) {
        lock(&self.shared.send_times).clear();
        *lock(&self.shared.lateness) = (Duration::ZERO, 0);
    }

    /// Mean time between a send's due time and its write to the link, since the last
    /// [`Cover::clear_send_times`].
    pub fn mean_lateness(&self) -> Duration {
        let (sum, n) = *lock(&self.shared.lateness);
        sum.checked_div(u32::try_from(n).unwrap_or(u32::MAX))
            .unwrap_or(Duration::ZERO)
    }

    /// Packets sent so far by kind: `real`, `payload_cover`, `loop`, `drop`; and
    /// `built_late`: cover packets that were not built ahead when their slot came.
    pub fn counts(&self) -> HashMap<&'static str, u64> {
        lock(&self.shared.counts).clone()
    }

    /// Why the driver stopped on its own, if it did (e.g. the link closed).
    pub fn error(&self) -> Option<String> {
        lock(&self.shared.error).clone()
    }

    /// Stop sending and wait for the driver to end. Real packets already queued still leave,
    /// in payload slots as before (at most [`REAL_QUEUE`] of them); `send` fails from now on.
    /// Returns the final [`Cover::counts`].
    pub async fn stop(mut self) -> HashMap<&'static str, u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        self.counts()
    }
}

impl Drop for Cover {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the driver needs from a route for one cover packet.
struct Built {
    packet: Packet,
    loop_id: Option<([u8; 32], Vec<NodeId>, Duration)>,
}

fn kind_name(k: ClientSend) -> &'static str {
    match k {
        ClientSend::Real => "real",
        ClientSend::PayloadCover => "payload_cover",
        ClientSend::Loop => "loop",
        ClientSend::Drop => "drop",
    }
}

/// Build a loop (back to this client through every layer) or a drop packet (to a random
/// gateway, addressed to [`ClientId::DROP`]).
fn build_cover(client: &Client, is_loop: bool) -> Result<Built, ClientError> {
    let mut rng = rand::rng();
    let topology = client.topology();
    let me = client.address();
    let (exit, dest) = if is_loop {
        (me.gateway, me.client)
    } else {
        let gws: Vec<NodeId> = topology.gateways().map(|g| g.id).collect();
        if gws.is_empty() {
            return Err(lethe_proto::Error::NoRoute {
                what: lethe_proto::error::Missing::Gateway,
            }
            .into());
        }
        (
            gws[(rng.next_u64() % gws.len() as u64) as usize],
            ClientId::DROP,
        )
    };
    // Drop cover (which also fills payload slots) avoids what real packets avoid, so that
    // real and payload cover packets keep one route distribution. Loops keep crossing every
    // relay: they are how a dead relay is found, and how its return is seen.
    let avoid = if is_loop {
        BTreeSet::new()
    } else {
        client.avoided_relays()
    };
    let (route, delays) =
        topology.plan_route(&mut rng, &me.gateway, &exit, lethe_net::unix_now(), &avoid)?;
    // A loop is sealed to ourselves like any message to us, and a drop packet is as long:
    // at a gateway, a message and a loop are alike in length and look (a drop's random
    // bytes differ in their first byte, the version, but a drop is addressed to the
    // discard id, which its gateway sees anyway).
    let (id, msg) = if is_loop {
        let (id, msg) = client.loops.message(&mut rng);
        (id, seal(&mut rng, &me.key, &me.client, &msg)?)
    } else {
        let mut msg = vec![0u8; SEALED_LEN];
        rng.fill_bytes(&mut msg);
        ([0; 32], msg)
    };
    let packet = build_packet(&mut rng, &route, dest, &delays, &msg)?;
    let loop_id = is_loop.then(|| {
        let total: Duration = delays.iter().sum();
        (id, route.iter().map(|h| h.id).collect(), total)
    });
    Ok(Built { packet, loop_id })
}

/// Cover packets of one kind built ahead, on a thread of their own, so that a slot never
/// waits for a Sphinx packet to be made (which would make cover leave later than real
/// packets, which the application built before queueing).
const BUILT_AHEAD: usize = 64;

/// A message for the real-packet builder: build, queue for a payload slot, say the delay.
pub(crate) struct BuildJob {
    pub(crate) to: lethe_proto::ClientAddress,
    pub(crate) msg: Vec<u8>,
    pub(crate) reply: tokio::sync::oneshot::Sender<Result<Duration, ClientError>>,
}

/// Build real packets one at a time and queue them for payload slots.
fn real_builder(
    client: Weak<Client>,
    mut jobs: mpsc::Receiver<BuildJob>,
    queue: mpsc::Sender<Queued>,
) {
    while let Some(job) = jobs.blocking_recv() {
        let Some(c) = client.upgrade() else {
            return;
        };
        let (topology, gateway, avoid) = (c.topology(), c.address().gateway, c.avoided_relays());
        drop(c);
        let result =
            crate::build_outgoing(&topology, gateway, &avoid, &job.to, &job.msg).and_then(|out| {
                queue
                    .blocking_send(Queued {
                        packet: out.packet,
                        written: None,
                    })
                    .map(|()| out.total_delay)
                    .map_err(|_| ClientError::Closed)
            });
        let _ = job.reply.send(result);
    }
}

/// Keep `tx` filled with fresh cover packets until the driver or the client is gone.
fn builder(client: Weak<Client>, is_loop: bool, tx: mpsc::Sender<Built>) {
    while let Some(c) = client.upgrade() {
        let built = build_cover(&c, is_loop);
        drop(c);
        match built {
            Ok(b) => {
                if tx.blocking_send(b).is_err() {
                    return;
                }
            }
            // No route right now (topology changing): try again shortly.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn spawn_builder(client: &Arc<Client>, is_loop: bool) -> mpsc::Receiver<Built> {
    let (tx, rx) = mpsc::channel(BUILT_AHEAD);
    let weak = Arc::downgrade(client);
    let name = if is_loop {
        "cover-loops"
    } else {
        "cover-drops"
    };
    // If the thread cannot start, the receiver reports closed and the driver builds inline.
    let _ = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || builder(weak, is_loop, tx));
    rx
}

impl Client {
    /// Start sending cover traffic at the network's published rates. From now on
    /// [`Client::send`] queues real packets for payload slots instead of writing them at once.
    /// Fails if the network publishes no cover (all rates zero) or cover already runs.
    pub fn start_cover(self: &Arc<Self>) -> Result<Cover, ClientError> {
        self.start_cover_inner(self.topology().client_rates(), Some(Topology::client_rates))
    }

    /// Start sending cover at the exit services' published rates
    /// ([`Topology::exit_rates`]: a faster payload stream than clients', which every exit
    /// shares), following them as the directory changes. Fails with
    /// [`ClientError::NoCover`] when the directory publishes no exit rate.
    pub fn start_exit_cover(self: &Arc<Self>) -> Result<Cover, ClientError> {
        self.start_cover_inner(self.topology().exit_rates(), Some(Topology::exit_rates))
    }

    /// Like [`Client::start_cover`], with rates chosen by the caller (tests and benchmarks;
    /// a client that uses other rates than the network's stands out).
    pub fn start_cover_with(self: &Arc<Self>, rates: ClientRates) -> Result<Cover, ClientError> {
        self.start_cover_inner(rates, None)
    }

    fn start_cover_inner(
        self: &Arc<Self>,
        rates: ClientRates,
        follow: Option<fn(&Topology) -> ClientRates>,
    ) -> Result<Cover, ClientError> {
        if rates.payload <= 0.0 && rates.loop_ <= 0.0 && rates.drop <= 0.0 {
            return Err(ClientError::NoCover);
        }
        let schedule = ClientSchedule::new(rates)?;
        let (tx, rx) = mpsc::channel(REAL_QUEUE);
        if self.cover_queue.set(tx.clone()).is_err() {
            return Err(ClientError::CoverRunning);
        }
        let (jobs_tx, jobs_rx) = mpsc::channel(16);
        if self.real_jobs.set(jobs_tx).is_ok() {
            let weak = Arc::downgrade(self);
            // If the thread cannot start, jobs fail with Closed.
            let _ = std::thread::Builder::new()
                .name("cover-real".into())
                .spawn(move || real_builder(weak, jobs_rx, tx));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(CoverShared::default());
        let drops = spawn_builder(self, false);
        let loops = (rates.loop_ > 0.0).then(|| spawn_builder(self, true));
        let (handle, weak, stop2, shared2) = (
            self.link.handle.clone(),
            Arc::downgrade(self),
            stop.clone(),
            shared.clone(),
        );
        let task = std::thread::Builder::new()
            .name("cover".into())
            .spawn(move || {
                let follow = follow.map(|f| (f, rates));
                drive(
                    handle,
                    weak,
                    (schedule, follow),
                    (drops, loops),
                    rx,
                    stop2,
                    shared2,
                )
            })
            .map_err(|_| ClientError::Closed)?;
        Ok(Cover {
            stop,
            task: Some(task),
            shared,
        })
    }

    /// Loop cover sent, returned and lost (per relay too).
    pub fn loop_stats(&self) -> LoopStats {
        self.loops.stats()
    }
}

/// The longest single sleep of the driver, so that it notices a stop request soon.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// The send loop. It runs on a thread of its own and sleeps with the operating system's
/// timer, not the async runtime's (whose 1 ms ticks would round every gap and whose worker
/// threads are shared with whatever else the application does); only the writes to the
/// link go through the runtime.
fn drive(
    handle: tokio::runtime::Handle,
    client: Weak<Client>,
    (mut schedule, mut follow): (ClientSchedule, Option<Follow>),
    (mut drops, mut loops): (mpsc::Receiver<Built>, Option<mpsc::Receiver<Built>>),
    mut real: mpsc::Receiver<Queued>,
    stop: Arc<AtomicBool>,
    shared: Arc<CoverShared>,
) {
    let clock = lethe_net::clock::Clock::new();
    let now = || clock.now();
    // The schedule's secret: an observer must not predict when cover leaves.
    let mut rng = StdRng::from_rng(&mut rand::rng());
    schedule.start(now(), &mut rng);
    let mut waiting: Option<Queued> = None;
    let result: Result<(), ClientError> = (|| {
        loop {
            if stop.load(Ordering::Relaxed) {
                // No new real packets; those already queued still leave in payload slots,
                // then the driver ends.
                real.close();
                if waiting.is_none() {
                    waiting = real.try_recv().ok();
                }
                if waiting.is_none() {
                    return Ok(());
                }
            }
            let Some(c) = client.upgrade() else {
                return Ok(());
            };
            c.loops.expire(Instant::now());
            // Follow the rates the directory publishes, so as to stay like every client.
            if let Some((published_rates, current)) = follow {
                let published = published_rates(&c.topology());
                // A document without a payload rate would leave real packets waiting
                // forever: the old rates stay until a usable one comes.
                if published != current
                    && published.payload > 0.0
                    && let Ok(mut fresh) = ClientSchedule::new(published)
                {
                    fresh.start(now(), &mut rng);
                    schedule = fresh;
                    follow = Some((published_rates, published));
                }
            }
            drop(c);
            let Some(due) = schedule.poll_timeout() else {
                std::thread::sleep(MAX_SLEEP);
                continue;
            };
            let wait = clock.instant(due).saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait.min(MAX_SLEEP));
                continue;
            }
            let Some(c) = client.upgrade() else {
                return Ok(());
            };
            loop {
                if waiting.is_none() {
                    waiting = real.try_recv().ok();
                }
                let Some((due, kind)) = schedule.pop_due(now(), &mut rng, waiting.is_some()) else {
                    break;
                };
                let mut written = None;
                let packet = match kind {
                    ClientSend::Real => match waiting.take() {
                        Some(q) => {
                            written = q.written;
                            q.packet
                        }
                        None => continue,
                    },
                    ClientSend::Loop => {
                        let ready = loops.as_mut().and_then(|r| r.try_recv().ok());
                        let b = match ready {
                            Some(b) => b,
                            None => {
                                *lock(&shared.counts).entry("built_late").or_default() += 1;
                                build_cover(&c, true)?
                            }
                        };
                        if let Some((id, route, total)) = b.loop_id {
                            c.loops.sent(id, route, total);
                        }
                        b.packet
                    }
                    ClientSend::PayloadCover | ClientSend::Drop => match drops.try_recv() {
                        Ok(b) => b.packet,
                        Err(_) => {
                            *lock(&shared.counts).entry("built_late").or_default() += 1;
                            build_cover(&c, false)?.packet
                        }
                    },
                };
                handle.block_on(c.send_packet_now(&packet))?;
                if let Some(w) = written {
                    let _ = w.send(());
                }
                let t = Instant::now();
                {
                    let mut times = lock(&shared.send_times);
                    if times.len() == SEND_TIMES_KEPT {
                        times.pop_front();
                    }
                    times.push_back(t);
                }
                {
                    let mut l = lock(&shared.lateness);
                    l.0 += t.saturating_duration_since(clock.instant(due));
                    l.1 += 1;
                }
                *lock(&shared.counts).entry(kind_name(kind)).or_default() += 1;
            }
        }
    })();
    if let Err(e) = result {
        *lock(&shared.error) = Some(e.to_string());
    }
}
