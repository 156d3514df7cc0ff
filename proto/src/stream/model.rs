//! A virtual-clock model of SOCKS downloads through the mixnet (tests only): proxies and
//! exits run the real [`Connection`], [`Sender`]/[`Receiver`] and [`SurbSupply`] policies;
//! the mixnet is a delay per packet, the proxy's cover is a Poisson stream of payload slots
//! shared by its streams, and the exit answers only in the SURBs it holds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Chunk, Connection, ConnectionConfig, End, Receiver, Sender, SenderConfig};
use crate::Timestamp;
use crate::packet::MAX_MESSAGE_LEN;
use crate::socks::TargetAddr;
use crate::supply::SurbSupply;
use crate::surb::SURB_SIZE;

/// The network and load being modelled.
#[derive(Clone, Debug)]
pub struct Net {
    pub streams: usize,
    /// Bytes each download brings.
    pub bytes: usize,
    /// Mean mixing delay per hop (5 hops each way, plus 1 ms of link each).
    pub hop_delay: Duration,
    /// The proxy's payload slots a second (its cover rate), shared by all streams.
    pub slots_per_sec: f64,
    /// Packets of one stream waiting for slots at once (the proxy's driver waits beyond).
    pub queued_per_stream: usize,
    /// The proxy's inbox of chunks per stream; more are dropped (as `try_send` does).
    pub inbox: usize,
    /// Most SURBs the proxy keeps at the exit per stream.
    pub surb_target: usize,
    /// Most SURBs the exit keeps per stream (the oldest go).
    pub exit_max_surbs: usize,
    /// The exit's window (its sender's).
    pub exit_window: usize,
    /// Chance that a packet is lost on the way (either direction).
    pub loss: f64,
    /// At these times, every SURB the exits hold dies (a relay on their routes went away,
    /// or their keys expired): replies in them are lost.
    pub surb_deaths: Vec<Duration>,
    /// From, until, chance: a stretch where packets are lost more often (a relay of a
    /// layer is down and routes through it die).
    pub outage: Option<(Duration, Duration, f64)>,
    /// Give up the run at this virtual time.
    pub horizon: Duration,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            streams: 8,
            bytes: 1 << 20,
            hop_delay: Duration::from_millis(50),
            slots_per_sec: 50.0,
            queued_per_stream: 2,
            inbox: 4 * 96,
            surb_target: 96 + 16,
            exit_max_surbs: 256,
            exit_window: 96,
            loss: 0.0,
            surb_deaths: Vec::new(),
            outage: None,
            horizon: Duration::from_secs(600),
        }
    }
}

/// What happened to one stream.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// When the proxy's end finished, and how.
    pub end: Option<(Duration, End)>,
    /// Bytes the proxy's application received.
    pub received: usize,
    /// The longest time the application waited between two pieces of data.
    pub longest_gap: Duration,
    /// Chunks the exit sent (retransmissions included) and chunks dropped at the proxy's
    /// full inbox.
    pub exit_chunks: u64,
    pub inbox_drops: u64,
}

struct Proxy {
    conn: Connection,
    supply: SurbSupply,
    /// A built packet waiting for room among the queued ones: the driver is blocked.
    blocked: Option<(Chunk, usize)>,
    queued: usize,
    inbox: VecDeque<Chunk>,
    wake: Timestamp,
    received: usize,
    last_data: Timestamp,
    longest_gap: Duration,
    end: Option<(Duration, End)>,
    read_end: bool,
}

struct Exit {
    conn: Connection,
    /// SURBs held, oldest first (false: dead, its reply will be lost).
    surbs: VecDeque<bool>,
    /// Bytes of the target's answer not read yet.
    left: usize,
    wake: Timestamp,
    done: bool,
    sent: u64,
}

#[derive(Debug)]
enum Ev {
    Slot,
    ToExit(usize, Chunk, usize),
    ToProxy(usize, Chunk),
    WakeProxy(usize),
    WakeExit(usize),
    SurbDeath,
}

struct World {
    net: Net,
    rng: StdRng,
    now: Timestamp,
    events: BinaryHeap<(Reverse<Timestamp>, u64, usize)>,
    payloads: Vec<Option<Ev>>,
    seq: u64,
    /// Packets waiting for a slot, oldest first: (stream, chunk, SURBs).
    slot_queue: VecDeque<(usize, Chunk, usize)>,
    proxies: Vec<Proxy>,
    exits: Vec<Option<Exit>>,
    inbox_drops: Vec<u64>,
}

fn at(d: Duration) -> Timestamp {
    Timestamp::ZERO + d
}

impl World {
    fn schedule(&mut self, t: Timestamp, ev: Ev) {
        self.seq += 1;
        self.payloads.push(Some(ev));
        self.events
            .push((Reverse(t), self.seq, self.payloads.len() - 1));
    }

    fn exp(&mut self, mean: f64) -> Duration {
        let u = self.uniform().max(1e-12);
        Duration::from_secs_f64(-u.ln() * mean)
    }

    /// Five hops of mixing and links.
    fn route_delay(&mut self) -> Duration {
        let mut d = Duration::ZERO;
        for _ in 0..5 {
            d += Duration::from_millis(1) + self.exp(self.net.hop_delay.as_secs_f64());
        }
        d
    }

    fn lost(&mut self) -> bool {
        let p = match self.net.outage {
            Some((a, b, p)) if self.now >= at(a) && self.now < at(b) => p,
            _ => self.net.loss,
        };
        p > 0.0 && self.uniform() < p
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn run(&mut self) {
        let first = self.exp(1.0 / self.net.slots_per_sec);
        self.schedule(at(first), Ev::Slot);
        for d in self.net.surb_deaths.clone() {
            self.schedule(at(d), Ev::SurbDeath);
        }
        for s in 0..self.net.streams {
            self.step_proxy(s);
        }
        while let Some((Reverse(t), _, i)) = self.events.pop() {
            if t > at(self.net.horizon) || self.proxies.iter().all(|p| p.end.is_some()) {
                break;
            }
            self.now = t;
            let Some(ev) = self.payloads[i].take() else {
                continue;
            };
            match ev {
                Ev::Slot => {
                    if let Some((s, chunk, surbs)) = self.slot_queue.pop_front() {
                        let d = self.route_delay();
                        if !self.lost() {
                            self.schedule(t + d, Ev::ToExit(s, chunk, surbs));
                        }
                        self.proxies[s].queued -= 1;
                        if let Some((c, n)) = self.proxies[s].blocked.take() {
                            self.enqueue(s, c, n);
                            self.step_proxy(s);
                        }
                    }
                    let next = self.exp(1.0 / self.net.slots_per_sec);
                    self.schedule(t + next, Ev::Slot);
                }
                Ev::ToExit(s, chunk, surbs) => self.at_exit(s, chunk, surbs),
                Ev::ToProxy(s, chunk) => {
                    let p = &mut self.proxies[s];
                    if p.inbox.len() >= self.net.inbox {
                        self.inbox_drops[s] += 1;
                    } else {
                        p.inbox.push_back(chunk);
                    }
                    self.step_proxy(s);
                }
                Ev::WakeProxy(s) => {
                    if self.proxies[s].wake == t {
                        self.step_proxy(s);
                    }
                }
                Ev::SurbDeath => {
                    for e in self.exits.iter_mut().flatten() {
                        e.surbs.iter_mut().for_each(|a| *a = false);
                    }
                }
                Ev::WakeExit(s) => {
                    if self.exits[s].as_ref().is_some_and(|e| e.wake == t) {
                        self.step_exit(s);
                    }
                }
            }
        }
    }

    fn enqueue(&mut self, s: usize, chunk: Chunk, surbs: usize) {
        self.proxies[s].queued += 1;
        self.slot_queue.push_back((s, chunk, surbs));
    }

    /// The proxy's transport: attach SURBs, then wait for room among the queued packets.
    /// Returns false when the driver is now blocked.
    fn proxy_send(&mut self, s: usize, chunk: Chunk) -> bool {
        let now = self.now;
        let p = &mut self.proxies[s];
        let room = MAX_MESSAGE_LEN.saturating_sub(chunk.encoded_len()) / SURB_SIZE;
        let n = p.supply.to_attach(now, room);
        p.supply.attached(n);
        p.supply.opened(now);
        if p.queued >= self.net.queued_per_stream {
            p.blocked = Some((chunk, n));
            return false;
        }
        self.enqueue(s, chunk, n);
        true
    }

    /// One turn of the proxy's driver loop (as `client::pipe`'s), repeated until it waits.
    fn step_proxy(&mut self, s: usize) {
        loop {
            let now = self.now;
            if self.proxies[s].end.is_some() || self.proxies[s].blocked.is_some() {
                return;
            }
            self.proxies[s].conn.handle_timeout(now);
            while let Some(c) = self.proxies[s].conn.poll_transmit(now, true) {
                if !self.proxy_send(s, c) {
                    return;
                }
            }
            let p = &mut self.proxies[s];
            if p.conn.may_send_extra() && p.supply.wants_extra(now) {
                let c = p.conn.extra();
                if !self.proxy_send(s, c) {
                    return;
                }
                continue;
            }
            let p = &mut self.proxies[s];
            if let Some(end) = p.conn.poll_end(now) {
                p.end = Some((now.since_origin(), end));
                return;
            }
            // The application takes everything at once, and closes after the answer.
            if let Some(o) = p.conn.outbox() {
                if let Some(n) = o.front().map(<[u8]>::len) {
                    if p.received > 0 || n > 10 {
                        p.longest_gap = p.longest_gap.max(now - p.last_data);
                        p.last_data = now;
                    }
                    p.received += n;
                    p.conn.on_written(now, n);
                    continue;
                }
                if o.fin() {
                    p.conn.on_shut();
                    if !p.read_end {
                        p.read_end = true;
                        p.conn.on_read_end(now);
                    }
                    continue;
                }
            }
            if let Some(c) = p.inbox.pop_front() {
                p.supply.on_chunk(now);
                p.conn.on_chunk(now, &c);
                continue;
            }
            let wake = p
                .conn
                .poll_timeout(true)
                .min(p.supply.next_extra())
                .max(now + Duration::from_micros(1));
            p.wake = wake;
            self.schedule(wake, Ev::WakeProxy(s));
            return;
        }
    }

    fn at_exit(&mut self, s: usize, chunk: Chunk, surbs: usize) {
        if self.exits[s].is_none() {
            // The stream's first chunk: the exit connects and confirms.
            let mut receiver = Receiver::new(self.net.exit_window as u32 + 16);
            let _ = receiver.on_chunk(&chunk);
            let mut sender = Sender::new(
                chunk.stream,
                SenderConfig {
                    window: self.net.exit_window,
                    ..SenderConfig::default()
                },
            )
            .expect("valid config");
            sender.open(None).expect("fresh sender");
            let mut conn = Connection::new(
                self.now,
                chunk.stream,
                ConnectionConfig::default(),
                sender,
                receiver,
                true,
                false,
            );
            conn.set_received_any();
            self.exits[s] = Some(Exit {
                conn,
                surbs: std::iter::repeat_n(true, surbs).collect(),
                left: self.net.bytes,
                wake: Timestamp::ZERO,
                done: false,
                sent: 0,
            });
        } else if let Some(e) = self.exits[s].as_mut() {
            e.surbs.extend(std::iter::repeat_n(true, surbs));
            while e.surbs.len() > self.net.exit_max_surbs {
                e.surbs.pop_front();
            }
            e.conn.on_chunk(self.now, &chunk);
        }
        self.step_exit(s);
    }

    fn step_exit(&mut self, s: usize) {
        let now = self.now;
        let mut out = Vec::new();
        let Some(e) = self.exits[s].as_mut() else {
            return;
        };
        if e.done {
            return;
        }
        loop {
            e.conn.handle_timeout(now);
            while let Some(c) = e.conn.poll_transmit(now, !e.surbs.is_empty()) {
                let alive = e.surbs.pop_back().unwrap_or(false);
                e.sent += 1;
                out.push((c, alive));
            }
            if e.conn.poll_end(now).is_some() {
                e.done = true;
                break;
            }
            // The target's answer, read as the connection wants it; what the client sends
            // is taken at once.
            if let Some(n) = e.conn.outbox().and_then(|o| o.front()).map(<[u8]>::len) {
                e.conn.on_written(now, n);
                continue;
            }
            if e.conn.wants_read() {
                if e.left == 0 {
                    e.conn.on_read_end(now);
                } else {
                    let n = e.left.min(16 * 1024);
                    e.left -= n;
                    e.conn.on_read(now, &vec![0u8; n]);
                }
                continue;
            }
            break;
        }
        let wake = e
            .conn
            .poll_timeout(!e.surbs.is_empty())
            .max(now + Duration::from_micros(1));
        e.wake = wake;
        let done = e.done;
        for (c, alive) in out {
            let d = self.route_delay();
            if alive && !self.lost() {
                self.schedule(now + d, Ev::ToProxy(s, c));
            }
        }
        if !done {
            self.schedule(wake, Ev::WakeExit(s));
        }
    }
}

/// Run `net` with the randomness of `seed`.
pub fn run(net: &Net, seed: u64) -> Vec<Outcome> {
    let proxies = (0..net.streams)
        .map(|s| {
            let mut sender = Sender::new(s as u64, SenderConfig::default()).expect("valid config");
            sender
                .open(Some(TargetAddr::Domain("example.test".into(), 80)))
                .expect("fresh sender");
            let _ = sender.push(b"GET / HTTP/1.1\r\n\r\n");
            Proxy {
                conn: Connection::new(
                    Timestamp::ZERO,
                    s as u64,
                    ConnectionConfig::default(),
                    sender,
                    Receiver::new(net.exit_window as u32 + 16),
                    true,
                    true,
                ),
                supply: SurbSupply::new(Timestamp::ZERO, net.surb_target),
                blocked: None,
                queued: 0,
                inbox: VecDeque::new(),
                wake: Timestamp::ZERO,
                received: 0,
                last_data: Timestamp::ZERO,
                longest_gap: Duration::ZERO,
                end: None,
                read_end: false,
            }
        })
        .collect();
    let mut w = World {
        net: net.clone(),
        rng: StdRng::seed_from_u64(seed),
        now: Timestamp::ZERO,
        events: BinaryHeap::new(),
        payloads: Vec::new(),
        seq: 0,
        slot_queue: VecDeque::new(),
        proxies,
        exits: (0..net.streams).map(|_| None).collect(),
        inbox_drops: vec![0; net.streams],
    };
    w.run();
    (0..net.streams)
        .map(|s| Outcome {
            end: w.proxies[s].end,
            received: w.proxies[s].received,
            longest_gap: w.proxies[s].longest_gap,
            exit_chunks: w.exits[s].as_ref().map_or(0, |e| e.sent),
            inbox_drops: w.inbox_drops[s],
        })
        .collect()
}

#[test]
fn eight_downloads_share_the_slots_without_a_long_stall() {
    let net = Net {
        bytes: 256 * 1024,
        ..Net::default()
    };
    for o in run(&net, 1) {
        assert!(matches!(o.end, Some((_, End::Closed))), "{o:?}");
        assert_eq!(
            o.received,
            net.bytes + 10,
            "the SOCKS answer and every byte"
        );
        assert!(o.longest_gap < Duration::from_secs(3), "{o:?}");
        assert_eq!(o.inbox_drops, 0);
    }
}

/// The stall BENCHMARKS.md reported (one of 8 downloads taking minutes while no relay
/// dropped anything any more): during a stretch of heavy loss one exit used up its
/// retransmissions and gave up in silence, and its proxy waited for chunks that never came
/// until the idle timer (300 s). With seed 0 one stream ended at 334 s. Now the failing end
/// tells its peer with a reset, which the peer takes past the missing chunks.
#[test]
fn an_end_that_gives_up_tells_its_peer() {
    let net = Net {
        outage: Some((Duration::from_secs(5), Duration::from_secs(35), 0.5)),
        ..Net::default()
    };
    let out = run(&net, 0);
    for o in &out {
        let (t, end) = o.end.expect("every stream ends");
        assert_ne!(end, End::Idle, "{o:?}");
        assert!(t < Duration::from_secs(100), "{o:?}");
    }
    assert!(
        out.iter()
            .any(|o| matches!(o.end, Some((_, End::PeerReset(_))))),
        "this seed has an exit give up"
    );
}

/// Explore by hand: `MODEL="streams bytes hop_ms slots seeds [loss]" cargo test --release -p
/// lethe-proto --lib explore -- --ignored --nocapture`.
#[test]
#[ignore = "exploration"]
fn explore() {
    let args: Vec<f64> = std::env::var("MODEL")
        .unwrap_or_else(|_| "1 1048576 0 50 10".into())
        .split_whitespace()
        .map(|a| a.parse().expect("number"))
        .collect();
    let net = Net {
        streams: args[0] as usize,
        bytes: args[1] as usize,
        hop_delay: Duration::from_secs_f64(args[2] / 1000.0),
        slots_per_sec: args[3],
        loss: args.get(5).copied().unwrap_or(0.0),
        surb_deaths: args[6..]
            .iter()
            .map(|&t| Duration::from_secs_f64(t))
            .collect(),
        outage: std::env::var("OUTAGE").ok().map(|o| {
            let v: Vec<f64> = o
                .split_whitespace()
                .map(|a| a.parse().expect("number"))
                .collect();
            (
                Duration::from_secs_f64(v[0]),
                Duration::from_secs_f64(v[1]),
                v[2],
            )
        }),
        ..Net::default()
    };
    for seed in 0..args[4] as u64 {
        let out = run(&net, seed);
        let worst = out.iter().map(|o| o.longest_gap).max().unwrap_or_default();
        let ends: Vec<String> = out
            .iter()
            .map(|o| format!("{:.1}", o.end.map_or(f64::NAN, |e| e.0.as_secs_f64())))
            .collect();
        let chunks: u64 = out.iter().map(|o| o.exit_chunks).sum();
        let drops: u64 = out.iter().map(|o| o.inbox_drops).sum();
        eprintln!(
            "seed {seed}: ends {ends:?} worst gap {worst:.2?} exit chunks {chunks} drops {drops}"
        );
    }
}
