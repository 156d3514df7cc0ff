//! The event loop: a binary heap of events on a virtual clock, the real `MixQueue`,
//! `BatchQueue` and Poisson schedules, and a log of every relay's arrivals and departures from
//! which the anonymity of target messages is computed afterwards.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use lethe_proto::packet::sample_delay;
use lethe_proto::{BatchConfig, ClientRates, ClientSchedule, ClientSend, PoissonStream, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use crate::anonymity::{self, LogEv};
use crate::{MixKind, SimConfig, SimError, SimReport, Summary, TopologyKind};

/// Where a packet stands: hop `hop` of packet `pkt`.
type Hop = (u32, u8);

#[derive(Clone, Copy, Debug)]
enum Ev {
    /// A client's schedule is due.
    ClientSend(u32),
    /// A client wants to send a new real message.
    MsgCreate(u32),
    /// A packet enters a relay's pool (after the link and the relay's processing).
    PoolIn(u32, u8),
    /// A Poisson relay's next release.
    Wake(u32),
    /// A batch relay's round boundary.
    Round(u32),
    /// A relay's own loop cover is due.
    RelayLoop(u32),
}

struct Event {
    at: Timestamp,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One packet: its origin (a client id, or `clients + relay` for relay cover), where its hops
/// are stored, and for real messages when the message was created.
pub(crate) struct Pkt {
    pub(crate) origin: u32,
    pub(crate) base: u32,
    pub(crate) hops: u8,
    real: bool,
    created: Timestamp,
    sent: Timestamp,
}

type Pool = lethe_proto::Pool<Hop>;

pub(crate) struct Relay {
    pool: Pool,
    /// When a continuous-time pool's next packet leaves (the wake-up scheduled).
    wake: Option<Timestamp>,
    pub(crate) corrupt: bool,
    pub(crate) log: Vec<LogEv>,
    stream: PoissonStream,
}

struct Client {
    schedule: ClientSchedule,
    waiting: VecDeque<Timestamp>,
    messages: PoissonStream,
}

/// The anonymity of one target message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TargetResult {
    /// Shannon entropy of its sender over the clients, bits.
    pub entropy_bits: f64,
    /// Mass the truncated backward walk left unresolved.
    pub unresolved: f64,
    /// Packets its last relay held when it left (the pool, or the round).
    pub last_pool: u32,
    /// Its sender.
    pub sender: u32,
}

/// A running (or finished) simulation.
pub struct Simulation {
    cfg: SimConfig,
    rng: StdRng,
    now: Timestamp,
    seq: u64,
    heap: BinaryHeap<Reverse<Event>>,
    clients: Vec<Client>,
    pub(crate) relays: Vec<Relay>,
    pub(crate) pkts: Vec<Pkt>,
    pub(crate) hop_relay: Vec<u32>,
    pub(crate) hop_dep: Vec<u32>,
    pub(crate) hop_time: Vec<Timestamp>,
    targets: Vec<u32>,
    window_real: u64,
    latencies_ms: Vec<f64>,
    network_ms: Vec<f64>,
    packets_sent: u64,
    real_sent: u64,
    dropped: u64,
    events: u64,
    end: Timestamp,
}

fn ts(d: Duration) -> Timestamp {
    Timestamp::ZERO + d
}

impl Simulation {
    /// Set up clients and relays (nothing runs yet).
    pub fn new(cfg: SimConfig) -> Result<Self, SimError> {
        cfg.validate()?;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let r = cfg.relays();
        let n_corrupt = (cfg.corrupt_fraction * r as f64).round() as usize;
        let mut order: Vec<usize> = (0..r).collect();
        rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
        let mut corrupt = vec![false; r];
        for &i in &order[..n_corrupt] {
            corrupt[i] = true;
        }
        let mut relays = Vec::with_capacity(r);
        for c in corrupt {
            let pool = match cfg.mix {
                MixKind::Poisson => Pool::poisson(cfg.queue_capacity),
                MixKind::Batch { round, min_packets } => Pool::batch(
                    Timestamp::ZERO,
                    BatchConfig {
                        round,
                        min_packets,
                        capacity: cfg.queue_capacity,
                    },
                ),
            };
            relays.push(Relay {
                pool,
                wake: None,
                corrupt: c,
                log: Vec::new(),
                stream: PoissonStream::new(cfg.relay_loop_rate)?,
            });
        }
        let rates = ClientRates {
            payload: cfg.payload_rate,
            loop_: cfg.loop_rate,
            drop: cfg.drop_rate,
        };
        let mut clients = Vec::with_capacity(cfg.clients);
        for _ in 0..cfg.clients {
            clients.push(Client {
                schedule: ClientSchedule::new(rates)?,
                waiting: VecDeque::new(),
                messages: PoissonStream::new(cfg.message_rate)?,
            });
        }
        let drain = cfg.max_delay.min(cfg.mean_delay * 30) * cfg.layers as u32
            + match cfg.mix {
                MixKind::Batch { round, .. } => round * (2 * cfg.layers as u32 + 2),
                MixKind::Poisson => Duration::ZERO,
            }
            + (cfg.processing + cfg.link_latency) * (cfg.layers as u32 + 4)
            + Duration::from_secs(1);
        let end = ts(cfg.duration + drain);
        let mut sim = Simulation {
            cfg,
            rng,
            now: Timestamp::ZERO,
            seq: 0,
            heap: BinaryHeap::new(),
            clients,
            relays,
            pkts: Vec::new(),
            hop_relay: Vec::new(),
            hop_dep: Vec::new(),
            hop_time: Vec::new(),
            targets: Vec::new(),
            window_real: 0,
            latencies_ms: Vec::new(),
            network_ms: Vec::new(),
            packets_sent: 0,
            real_sent: 0,
            dropped: 0,
            events: 0,
            end,
        };
        sim.start();
        Ok(sim)
    }

    fn schedule(&mut self, at: Timestamp, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Event {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn start(&mut self) {
        let stop = ts(self.cfg.duration);
        for c in 0..self.clients.len() {
            let client = &mut self.clients[c];
            client.schedule.start(Timestamp::ZERO, &mut self.rng);
            let first = client.schedule.poll_timeout();
            let msg = client.messages.start(Timestamp::ZERO, &mut self.rng);
            if let Some(t) = first.filter(|t| *t < stop) {
                self.schedule(t, Ev::ClientSend(c as u32));
            }
            if let Some(t) = msg.filter(|t| *t < stop) {
                self.schedule(t, Ev::MsgCreate(c as u32));
            }
        }
        for r in 0..self.relays.len() {
            if let Some(t) = self.relays[r]
                .stream
                .start(Timestamp::ZERO, &mut self.rng)
                .filter(|t| *t < stop)
            {
                self.schedule(t, Ev::RelayLoop(r as u32));
            }
            if let Pool::Batch(q) = &self.relays[r].pool {
                let t = q.poll_timeout();
                self.schedule(t, Ev::Round(r as u32));
            }
        }
    }

    /// Process every event until the network has drained.
    pub fn run(&mut self) {
        while let Some(Reverse(e)) = self.heap.pop() {
            if e.at > self.end {
                break;
            }
            self.now = e.at;
            self.events += 1;
            match e.ev {
                Ev::ClientSend(c) => self.client_send(c),
                Ev::MsgCreate(c) => self.msg_create(c),
                Ev::PoolIn(p, h) => self.pool_in(p, h),
                Ev::Wake(r) => self.wake(r),
                Ev::Round(r) => self.round(r),
                Ev::RelayLoop(r) => self.relay_loop(r),
            }
        }
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n as u64) as usize
    }

    /// A client route: one relay per hop.
    fn client_route(&mut self) -> Vec<u32> {
        let (l, w) = (self.cfg.layers, self.cfg.width);
        match self.cfg.topology {
            TopologyKind::Stratified => (0..l).map(|i| (i * w + self.pick(w)) as u32).collect(),
            TopologyKind::FreeRoute => (0..l).map(|_| self.pick(l * w) as u32).collect(),
            TopologyKind::Cascade => {
                let j = self.pick(w);
                (0..l).map(|i| (i * w + j) as u32).collect()
            }
        }
    }

    /// A relay cover route: the relay itself (its own pool), then the following positions.
    fn relay_route(&mut self, r: usize) -> Vec<u32> {
        let (l, w) = (self.cfg.layers, self.cfg.width);
        let (layer, pos) = (r / w, r % w);
        let mut route = vec![r as u32];
        for k in 1..l {
            let li = (layer + k) % l;
            let next = match self.cfg.topology {
                TopologyKind::Stratified => li * w + self.pick(w),
                TopologyKind::FreeRoute => self.pick(l * w),
                TopologyKind::Cascade => li * w + pos,
            };
            route.push(next as u32);
        }
        route
    }

    fn new_packet(&mut self, origin: u32, route: &[u32], real: bool, created: Timestamp) -> u32 {
        let id = self.pkts.len() as u32;
        let base = self.hop_relay.len() as u32;
        self.hop_relay.extend_from_slice(route);
        self.hop_dep
            .extend(std::iter::repeat_n(u32::MAX, route.len()));
        self.hop_time
            .extend(std::iter::repeat_n(Timestamp::ZERO, route.len()));
        // Reservoir sampling: every real message sent in the window is equally likely to be
        // a target.
        let window = ts(self.cfg.warmup)..ts(self.cfg.duration - self.cfg.cooldown);
        if real && window.contains(&self.now) && self.cfg.targets > 0 {
            self.window_real += 1;
            if self.targets.len() < self.cfg.targets {
                self.targets.push(id);
            } else {
                let j = self.rng.random_range(0..self.window_real);
                if let Some(slot) = self.targets.get_mut(j as usize) {
                    *slot = id;
                }
            }
        }
        self.pkts.push(Pkt {
            origin,
            base,
            hops: route.len() as u8,
            real,
            created,
            sent: self.now,
        });
        // Traffic is counted while it runs, not while the network drains.
        if self.now < ts(self.cfg.duration) {
            self.packets_sent += 1;
            if real {
                self.real_sent += 1;
            }
        }
        id
    }

    fn msg_create(&mut self, c: u32) {
        let now = self.now;
        let client = &mut self.clients[c as usize];
        client.waiting.push_back(now);
        client.messages.pop_due(now, &mut self.rng);
        if let Some(t) = client
            .messages
            .poll_timeout()
            .filter(|t| *t < ts(self.cfg.duration))
        {
            self.schedule(t, Ev::MsgCreate(c));
        }
    }

    fn client_send(&mut self, c: u32) {
        let now = self.now;
        loop {
            let client = &mut self.clients[c as usize];
            let waiting = !client.waiting.is_empty();
            let Some((_, kind)) = client.schedule.pop_due(now, &mut self.rng, waiting) else {
                break;
            };
            let created = if kind == ClientSend::Real {
                client.waiting.pop_front().unwrap_or(now)
            } else {
                now
            };
            let route = self.client_route();
            let id = self.new_packet(c, &route, kind == ClientSend::Real, created);
            // Client to entry gateway, the gateway's processing, on to the first mix, which
            // processes it before it joins the pool.
            let at = now + (self.cfg.link_latency + self.cfg.processing) * 2;
            self.schedule(at, Ev::PoolIn(id, 0));
        }
        if let Some(t) = self.clients[c as usize]
            .schedule
            .poll_timeout()
            .filter(|t| *t < ts(self.cfg.duration))
        {
            self.schedule(t, Ev::ClientSend(c));
        }
    }

    fn relay_loop(&mut self, r: u32) {
        let now = self.now;
        while self.relays[r as usize]
            .stream
            .pop_due(now, &mut self.rng)
            .is_some()
        {
            self.inject_cover(r);
        }
        if let Some(t) = self.relays[r as usize]
            .stream
            .poll_timeout()
            .filter(|t| *t < ts(self.cfg.duration))
        {
            self.schedule(t, Ev::RelayLoop(r));
        }
    }

    /// A relay's own cover packet, created now in its own pool.
    fn inject_cover(&mut self, r: u32) {
        let route = self.relay_route(r as usize);
        let origin = (self.cfg.clients + r as usize) as u32;
        let id = self.new_packet(origin, &route, false, self.now);
        self.pool_in(id, 0);
    }

    fn pool_in(&mut self, p: u32, h: u8) {
        let now = self.now;
        let relay_id = self.hop_relay[(self.pkts[p as usize].base + h as u32) as usize] as usize;
        let delay = if self.relays[relay_id].pool.uses_delays() {
            sample_delay(&mut self.rng, self.cfg.mean_delay, self.cfg.max_delay)
        } else {
            Duration::ZERO
        };
        let relay = &mut self.relays[relay_id];
        let mut wake_at = None;
        let accepted = match relay.pool.push(now, (p, h), delay) {
            Ok(Some(at)) => {
                if relay.wake.is_none_or(|w| at < w) {
                    relay.wake = Some(at);
                    wake_at = Some(at);
                }
                true
            }
            Ok(None) => true,
            Err(_) => false,
        };
        if accepted {
            relay.log.push(LogEv::Arrive { pkt: p, hop: h });
        } else {
            self.dropped += 1;
        }
        if let Some(at) = wake_at {
            self.schedule(at, Ev::Wake(relay_id as u32));
        }
    }

    fn wake(&mut self, r: u32) {
        let now = self.now;
        let ri = r as usize;
        let mut out = Vec::new();
        let relay = &mut self.relays[ri];
        if let Pool::Poisson(queue) = &mut relay.pool {
            if relay.wake != Some(now) {
                return; // superseded by an earlier wake-up
            }
            loop {
                let n = queue.len() as u32;
                let Some((_, hop)) = queue.pop_ready(now) else {
                    break;
                };
                out.push((hop, n));
            }
            relay.wake = queue.poll_timeout();
        }
        for (hop, n) in out {
            let idx = self.relays[ri].log.len() as u32;
            self.relays[ri].log.push(LogEv::Depart { n });
            self.depart(hop, idx);
        }
        if let Some(next) = self.relays[ri].wake {
            self.schedule(next, Ev::Wake(r));
        }
    }

    fn round(&mut self, r: u32) {
        let now = self.now;
        let ri = r as usize;
        let deficit = match &self.relays[ri].pool {
            Pool::Batch(q) => q.deficit(),
            Pool::Poisson(_) => return,
        };
        let first = match &mut self.relays[ri].pool {
            Pool::Batch(q) => q.pop_round(now, &mut self.rng),
            Pool::Poisson(_) => None,
        };
        let batch = match first {
            Some(b) => Some(b),
            None => {
                for _ in 0..deficit {
                    self.inject_cover(r);
                }
                match &mut self.relays[ri].pool {
                    Pool::Batch(q) => q.pop_round(now, &mut self.rng),
                    Pool::Poisson(_) => None,
                }
            }
        };
        if let Some(batch) = batch {
            let n = batch.len() as u32;
            self.relays[ri].log.push(LogEv::Round);
            for hop in batch {
                let idx = self.relays[ri].log.len() as u32;
                self.relays[ri].log.push(LogEv::Depart { n });
                self.depart(hop, idx);
            }
        }
        let next = match &self.relays[ri].pool {
            Pool::Batch(q) => q.poll_timeout(),
            Pool::Poisson(_) => return,
        };
        self.schedule(next, Ev::Round(r));
    }

    /// Packet hop `(p, h)` leaves its relay now, at log position `idx`.
    fn depart(&mut self, (p, h): Hop, idx: u32) {
        let pkt = &self.pkts[p as usize];
        self.hop_dep[(pkt.base + h as u32) as usize] = idx;
        self.hop_time[(pkt.base + h as u32) as usize] = self.now;
        let hop_time = self.cfg.link_latency + self.cfg.processing;
        if h + 1 < pkt.hops {
            self.schedule(self.now + hop_time, Ev::PoolIn(p, h + 1));
        } else if pkt.real {
            // On to the exit gateway, which processes it and delivers.
            let done = self.now + hop_time;
            self.latencies_ms
                .push((done - pkt.created).as_secs_f64() * 1000.0);
            self.network_ms
                .push((done - pkt.sent).as_secs_f64() * 1000.0);
        }
    }

    /// The anonymity of each delivered target message.
    pub fn target_results(&self) -> Vec<TargetResult> {
        self.targets
            .iter()
            .filter_map(|&t| anonymity::target(self, t, self.cfg.clients, self.cfg.epsilon))
            .collect()
    }

    /// Summarise the run.
    pub fn report(&self) -> SimReport {
        let results = self.target_results();
        let h: Vec<f64> = results.iter().map(|r| r.entropy_bits).collect();
        let entropy = Summary::of(&h);
        let unresolved = if results.is_empty() {
            0.0
        } else {
            results.iter().map(|r| r.unresolved).sum::<f64>() / results.len() as f64
        };
        let (mut pool_sum, mut pool_n) = (0f64, 0u64);
        for r in self.relays.iter().filter(|r| !r.corrupt) {
            for e in &r.log {
                if let LogEv::Depart { n } = e {
                    pool_sum += f64::from(*n);
                    pool_n += 1;
                }
            }
        }
        SimReport {
            config: self.cfg.clone(),
            relays: self.relays.len(),
            corrupt_relays: self.relays.iter().filter(|r| r.corrupt).count(),
            targets_sampled: self.targets.len(),
            targets_measured: results.len(),
            entropy_bits: entropy,
            effective_set: entropy.mean.exp2(),
            unresolved_mass: unresolved,
            latency_ms: Summary::of(&self.latencies_ms),
            network_latency_ms: Summary::of(&self.network_ms),
            packets_sent: self.packets_sent,
            real_sent: self.real_sent,
            cover_share: if self.packets_sent == 0 {
                0.0
            } else {
                1.0 - self.real_sent as f64 / self.packets_sent as f64
            },
            dropped: self.dropped,
            mean_pool: if pool_n == 0 {
                0.0
            } else {
                pool_sum / pool_n as f64
            },
            events: self.events,
        }
    }
}
