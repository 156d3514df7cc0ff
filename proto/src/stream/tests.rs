//! The stream layer on a virtual clock, over a simulated lossy, reordering, duplicating
//! network driven by a seeded rng.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use super::*;

const ID: StreamId = 0x0123_4567_89ab_cdef;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn target() -> TargetAddr {
    TargetAddr::Domain("example.org".into(), 443)
}

/// One direction of the network: each encoded chunk is lost with probability `loss`,
/// duplicated with probability `dup`, and delayed uniformly in `delay` (so reordered).
struct Net {
    rng: StdRng,
    loss: f64,
    dup: f64,
    delay: (u64, u64),
    queue: BTreeMap<(Timestamp, u64), Vec<u8>>,
    n: u64,
    sent: u64,
}

impl Net {
    fn new(seed: u64, loss: f64, dup: f64, delay: (u64, u64)) -> Net {
        Net {
            rng: StdRng::seed_from_u64(seed),
            loss,
            dup,
            delay,
            queue: BTreeMap::new(),
            n: 0,
            sent: 0,
        }
    }
    fn send(&mut self, now: Timestamp, bytes: Vec<u8>) {
        assert!(bytes.len() <= MAX_MESSAGE_LEN);
        self.sent += 1;
        if self.rng.random_bool(self.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let d = self.rng.random_range(self.delay.0..=self.delay.1);
            self.n += 1;
            self.queue.insert((now + ms(d), self.n), bytes.clone());
        }
    }
    fn next(&self) -> Option<Timestamp> {
        self.queue.keys().next().map(|k| k.0)
    }
    fn pop(&mut self, now: Timestamp) -> Option<Vec<u8>> {
        let (&k, _) = self.queue.iter().next()?;
        if k.0 > now {
            return None;
        }
        self.queue.remove(&k)
    }
}

struct Outcome {
    verdict: Verdict,
    events: Vec<StreamEvent>,
    bytes: Vec<u8>,
    max_in_flight: usize,
    sent: u64,
    end: Timestamp,
}

/// Send `data` over a stream from a client `Sender` to an exit `Receiver`; acks come back
/// as ack-only chunks. Runs until the sender has a verdict.
fn run(cfg: SenderConfig, fwd: &mut Net, back: &mut Net, data: &[u8]) -> Outcome {
    let window = u32::try_from(cfg.window).unwrap();
    let mut sender = Sender::new(ID, cfg).unwrap();
    sender.open(Some(target())).unwrap();
    sender.push(data).unwrap();
    sender.finish().unwrap();
    let mut receiver = Receiver::new(window);
    let mut events = Vec::new();
    let mut now = Timestamp::ZERO;
    let mut max_in_flight = 0;
    loop {
        while let Some(c) = sender.poll_transmit(now) {
            max_in_flight = max_in_flight.max(sender.in_flight());
            fwd.send(now, c.encode().unwrap());
        }
        if let Some(verdict) = sender.verdict() {
            let bytes = events
                .iter()
                .filter_map(|e| match e {
                    StreamEvent::Data(d) => Some(d.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            return Outcome {
                verdict,
                events,
                bytes,
                max_in_flight,
                sent: fwd.sent,
                end: now,
            };
        }
        let t = [sender.poll_timeout(), fwd.next(), back.next()]
            .into_iter()
            .flatten()
            .min()
            .expect("a stream without a verdict always has a timer or a packet in flight");
        assert!(t >= now);
        now = t;
        assert!(now < Timestamp::from_duration(Duration::from_secs(3600)));
        while let Some(b) = fwd.pop(now) {
            let c = Chunk::decode(&b).unwrap();
            assert_eq!(c.stream, ID);
            let r = receiver.on_chunk(&c);
            events.extend(r.events);
            back.send(now, Chunk::ack_only(ID, r.ack.unwrap()).encode().unwrap());
        }
        while let Some(b) = back.pop(now) {
            let c = Chunk::decode(&b).unwrap();
            sender.on_ack(now, c.ack.as_ref().unwrap());
        }
    }
}

fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn assert_whole(o: &Outcome, sent: &[u8]) {
    assert_eq!(o.verdict, Verdict::Delivered);
    assert_eq!(o.events.first(), Some(&StreamEvent::Opened(Some(target()))));
    assert_eq!(o.events.last(), Some(&StreamEvent::Finished));
    assert!(o.bytes == sent, "bytes differ");
}

#[test]
fn a_perfect_network_delivers_in_order() {
    let sent = data(100_000, 1);
    let mut fwd = Net::new(1, 0.0, 0.0, (100, 100));
    let mut back = Net::new(2, 0.0, 0.0, (100, 100));
    let o = run(SenderConfig::default(), &mut fwd, &mut back, &sent);
    assert_whole(&o, &sent);
    // open + data chunks + fin, nothing sent twice
    let chunks = sent.len().div_ceil(max_data_len(0)) as u64 + 2;
    assert_eq!(o.sent, chunks);
}

#[test]
fn loss_reordering_and_duplication_still_deliver_byte_exact() {
    for seed in 0..10 {
        let sent = data(60_000 + seed as usize * 777, seed);
        let mut fwd = Net::new(seed * 2 + 100, 0.25, 0.1, (50, 1500));
        let mut back = Net::new(seed * 2 + 101, 0.25, 0.1, (50, 1500));
        let cfg = SenderConfig {
            window: 8,
            max_retries: 12,
            max_data: 700,
            ..SenderConfig::default()
        };
        let o = run(cfg, &mut fwd, &mut back, &sent);
        assert_whole(&o, &sent);
        assert!(o.max_in_flight <= 8);
        assert_eq!(
            o.events
                .iter()
                .filter(|e| matches!(e, StreamEvent::Finished))
                .count(),
            1
        );
    }
}

#[test]
fn loss_beyond_the_retry_budget_is_a_failure_verdict() {
    let sent = data(10_000, 3);
    let mut fwd = Net::new(5, 1.0, 0.0, (100, 100));
    let mut back = Net::new(6, 0.0, 0.0, (100, 100));
    let cfg = SenderConfig {
        max_retries: 4,
        ..SenderConfig::default()
    };
    let o = run(cfg, &mut fwd, &mut back, &sent);
    assert_eq!(o.verdict, Verdict::Failed { seq: 0, retries: 4 });
    assert!(o.events.is_empty());
    // a whole window timed out together backs off once per round: 3, 6, 12, 24, 48 s
    assert_eq!(o.end, Timestamp::from_duration(Duration::from_secs(93)));
}

#[test]
fn a_link_cut_midway_fails_and_the_receiver_holds_only_a_prefix() {
    // The acks stop coming back once the reverse direction is cut: the sender cannot know
    // what arrived, so it must report failure, never success.
    let sent = data(200_000, 4);
    let mut fwd = Net::new(7, 0.0, 0.0, (100, 300));
    let mut back = Net::new(8, 0.0, 0.0, (100, 300));
    let cfg = SenderConfig {
        window: 4,
        max_retries: 3,
        ..SenderConfig::default()
    };
    // run a first stretch by hand, then cut
    let mut sender = Sender::new(ID, cfg).unwrap();
    sender.open(Some(target())).unwrap();
    sender.push(&sent).unwrap();
    sender.finish().unwrap();
    let mut receiver = Receiver::new(4);
    let mut got = Vec::new();
    let mut now = Timestamp::ZERO;
    let mut verdict = None;
    for step in 0..100_000 {
        if step == 200 {
            fwd.loss = 1.0;
            back.loss = 1.0;
        }
        while let Some(c) = sender.poll_transmit(now) {
            fwd.send(now, c.encode().unwrap());
        }
        verdict = sender.verdict();
        if verdict.is_some() {
            break;
        }
        now = [sender.poll_timeout(), fwd.next(), back.next()]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        while let Some(b) = fwd.pop(now) {
            let r = receiver.on_chunk(&Chunk::decode(&b).unwrap());
            for e in r.events {
                if let StreamEvent::Data(d) = e {
                    got.extend(d);
                }
            }
            back.send(now, Chunk::ack_only(ID, r.ack.unwrap()).encode().unwrap());
        }
        while let Some(b) = back.pop(now) {
            sender.on_ack(now, Chunk::decode(&b).unwrap().ack.as_ref().unwrap());
        }
    }
    assert!(matches!(verdict, Some(Verdict::Failed { retries: 3, .. })));
    assert!(!got.is_empty() && got.len() < sent.len());
    assert_eq!(got, sent[..got.len()]);
    assert!(!receiver.is_ended());
}

#[test]
fn the_window_bounds_chunks_in_flight() {
    let cfg = SenderConfig {
        window: 5,
        max_data: 100,
        ..SenderConfig::default()
    };
    let mut s = Sender::new(ID, cfg).unwrap();
    s.push(&[7u8; 10_000]).unwrap();
    let now = Timestamp::ZERO;
    let first: Vec<Chunk> = std::iter::from_fn(|| s.poll_transmit(now)).collect();
    assert_eq!(first.len(), 5);
    assert_eq!(s.in_flight(), 5);
    assert_eq!(s.buffered(), 10_000 - 500);
    // one selective ack of two chunks opens room for exactly two more
    s.on_ack(
        now + ms(10),
        &AckFrame {
            cumulative: 0,
            ranges: vec![(1, 1), (3, 3)],
        },
    );
    assert_eq!(s.in_flight(), 3);
    let more: Vec<u32> = std::iter::from_fn(|| s.poll_transmit(now + ms(10)))
        .map(|c| c.seq)
        .collect();
    assert_eq!(more, vec![5, 6]);
}

#[test]
fn slow_start_sends_a_few_chunks_until_the_peer_answers_then_grows_to_the_window() {
    let cfg = SenderConfig {
        window: 32,
        initial_window: Some(4),
        ..SenderConfig::default()
    };
    let mut s = Sender::new(ID, cfg).unwrap();
    s.push(&vec![1u8; max_data_len(0) * 1000]).unwrap();
    let now = Timestamp::ZERO;
    let first: Vec<u32> = std::iter::from_fn(|| s.poll_transmit(now))
        .map(|c| c.seq)
        .collect();
    assert_eq!(
        first,
        vec![0, 1, 2, 3],
        "a silent peer gets the first four only"
    );
    // Retransmissions of those four, nothing new, while nobody answers.
    let later = now + Duration::from_secs(10);
    let again: Vec<u32> = std::iter::from_fn(|| s.poll_transmit(later))
        .map(|c| c.seq)
        .collect();
    assert_eq!(again, vec![0, 1, 2, 3]);
    // Each acknowledged chunk allows one more: four acked, eight may fly.
    s.on_ack(
        later + ms(300),
        &AckFrame {
            cumulative: 4,
            ranges: Vec::new(),
        },
    );
    let grown = std::iter::from_fn(|| s.poll_transmit(later + ms(300))).count();
    assert_eq!(grown, 8);
    // And never past the window.
    for round in 1..10u32 {
        let t = later + ms(300 + 300 * u64::from(round));
        s.on_ack(
            t,
            &AckFrame {
                cumulative: s.next_seq,
                ranges: Vec::new(),
            },
        );
        std::iter::from_fn(|| s.poll_transmit(t)).count();
        assert!(s.in_flight() <= 32);
    }
    assert_eq!(
        s.in_flight(),
        32,
        "the whole window flies once it has grown"
    );
    assert!(
        Sender::new(
            ID,
            SenderConfig {
                initial_window: Some(0),
                ..SenderConfig::default()
            }
        )
        .is_err()
    );
}

#[test]
fn one_ack_acknowledges_many_chunks_individually() {
    let mut s = Sender::new(ID, SenderConfig::default()).unwrap();
    s.push(&vec![1u8; max_data_len(0) * 10]).unwrap();
    let now = Timestamp::ZERO;
    while s.poll_transmit(now).is_some() {}
    assert_eq!(s.in_flight(), 10);
    s.on_ack(
        now + ms(300),
        &AckFrame {
            cumulative: 2,
            ranges: vec![(4, 5), (7, 9)],
        },
    );
    // 0, 1, 4, 5, 7, 8, 9 acked; 2, 3, 6 still out
    assert_eq!(s.in_flight(), 3);
    assert_eq!(s.rtt().srtt(), Some(ms(300)));
    // progress counts the data of the seven acknowledged chunks, once each
    assert_eq!(s.acked_bytes(), 7 * max_data_len(0) as u64);
    s.on_ack(
        now + ms(400),
        &AckFrame {
            cumulative: 2,
            ranges: vec![(4, 5)],
        },
    );
    assert_eq!(s.acked_bytes(), 7 * max_data_len(0) as u64);
    // only those three are retransmitted when their timers expire
    let later = now + s.rtt().rto() + Duration::from_secs(5);
    let again: Vec<u32> = std::iter::from_fn(|| s.poll_transmit(later))
        .map(|c| c.seq)
        .collect();
    assert_eq!(again, vec![2, 3, 6]);
}

#[test]
fn the_rto_backs_off_exponentially_up_to_the_cap_then_fails() {
    let cfg = SenderConfig {
        window: 1,
        max_retries: 6,
        initial_rto: ms(1000),
        min_rto: ms(100),
        max_rto: ms(8000),
        ..SenderConfig::default()
    };
    let mut s = Sender::new(ID, cfg).unwrap();
    s.push(b"hello").unwrap();
    let mut now = Timestamp::ZERO;
    let mut sends = Vec::new();
    loop {
        while let Some(c) = s.poll_transmit(now) {
            assert_eq!(c.seq, 0);
            sends.push(now.as_nanos() / 1_000_000);
        }
        match s.poll_timeout() {
            Some(t) => now = t,
            None => break,
        }
    }
    assert_eq!(sends, vec![0, 1000, 3000, 7000, 15000, 23000, 31000]);
    assert_eq!(s.verdict(), Some(Verdict::Failed { seq: 0, retries: 6 }));
    assert_eq!(s.poll_transmit(now), None);
}

#[test]
fn rtt_follows_rfc_6298_and_karn() {
    let cfg = SenderConfig {
        min_rto: ms(100),
        ..SenderConfig::default()
    };
    let mut s = Sender::new(ID, cfg).unwrap();
    assert_eq!(s.rtt().rto(), ms(3000));
    let mut now = Timestamp::ZERO;
    for i in 0..40 {
        s.push(&[i]).unwrap();
        let c = s.poll_transmit(now).unwrap();
        now = now + ms(200);
        s.on_ack(
            now,
            &AckFrame {
                cumulative: c.seq + 1,
                ranges: vec![],
            },
        );
        if i == 0 {
            // first sample: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR
            assert_eq!(s.rtt().srtt(), Some(ms(200)));
            assert_eq!(s.rtt().rttvar(), ms(100));
            assert_eq!(s.rtt().rto(), ms(600));
        }
    }
    assert_eq!(s.rtt().srtt(), Some(ms(200)));
    assert!(s.rtt().rto() < ms(210), "{:?}", s.rtt().rto());
    // a retransmitted chunk gives no sample (Karn), and the backoff sticks until a new one
    s.push(b"x").unwrap();
    s.poll_transmit(now).unwrap();
    let t1 = s.poll_timeout().unwrap();
    let rto_before = s.rtt().rto();
    let c = s.poll_transmit(t1).unwrap();
    assert_eq!(s.rtt().rto(), rto_before * 2);
    s.on_ack(
        t1 + ms(5),
        &AckFrame {
            cumulative: c.seq + 1,
            ranges: vec![],
        },
    );
    assert_eq!(s.rtt().srtt(), Some(ms(200)));
    assert_eq!(s.rtt().rto(), rto_before * 2);
}

#[test]
fn a_backed_off_timer_is_re_armed_once_later_chunks_get_through() {
    // A path that lost everything for a while (the timeout backed off to 8 s), then works:
    // the lost chunk goes again one current timeout after its last send, not 8 s later.
    let cfg = SenderConfig {
        window: 8,
        initial_rto: ms(1000),
        min_rto: ms(100),
        max_rto: ms(60_000),
        ..SenderConfig::default()
    };
    let mut s = Sender::new(ID, cfg).unwrap();
    s.push(b"lost").unwrap();
    let mut now = Timestamp::ZERO;
    let first = s.poll_transmit(now).unwrap();
    assert_eq!(first.seq, 0);
    // three timeouts: sent at 1, 3 and 7 s; the timer now says 15 s
    for _ in 0..3 {
        now = s.poll_timeout().unwrap();
        assert_eq!(s.poll_transmit(now).unwrap().seq, 0);
    }
    assert_eq!(now, Timestamp::ZERO + ms(7000));
    assert_eq!(s.poll_timeout(), Some(Timestamp::ZERO + ms(15_000)));
    // a new chunk sent at 7.1 s is acknowledged 200 ms later
    now = now + ms(100);
    s.push(b"fresh").unwrap();
    let c = s.poll_transmit(now).unwrap();
    assert_eq!(c.seq, 1);
    now = now + ms(200);
    s.on_ack(
        now,
        &AckFrame {
            cumulative: 0,
            ranges: vec![(1, 1)],
        },
    );
    // RTO from the one sample: 200 + 4 * 100 = 600 ms after chunk 0's last send (7 s)
    assert_eq!(s.rtt().rto(), ms(600));
    assert_eq!(s.poll_timeout(), Some(Timestamp::ZERO + ms(7600)));
    // an ack of a retransmitted chunk proves nothing (Karn) and moves no timer
    let cfg = SenderConfig {
        window: 8,
        initial_rto: ms(1000),
        min_rto: ms(100),
        max_rto: ms(60_000),
        ..SenderConfig::default()
    };
    let mut t = Sender::new(ID, cfg.clone()).unwrap();
    t.push(&[0u8; 10]).unwrap();
    let c0 = t.poll_transmit(Timestamp::ZERO).unwrap();
    t.push(&[1u8; 10]).unwrap();
    let c1 = t.poll_transmit(Timestamp::ZERO + ms(10)).unwrap();
    assert_eq!((c0.seq, c1.seq), (0, 1));
    // both time out; chunk 0 goes again at once, chunk 1 at 1.5 s (timers now 2 s)
    let now = t.poll_timeout().unwrap();
    assert_eq!(t.poll_transmit(now).unwrap().seq, 0);
    assert_eq!(t.poll_transmit(now + ms(500)).unwrap().seq, 1);
    let before = t.poll_timeout();
    t.on_ack(
        now + ms(600),
        &AckFrame {
            cumulative: 0,
            ranges: vec![(1, 1)],
        },
    );
    assert_eq!(
        t.poll_timeout(),
        before,
        "a retransmitted chunk's ack re-armed"
    );
    // without a backoff, an out-of-order ack (reordering is normal here) moves no timer
    let mut u = Sender::new(ID, cfg).unwrap();
    u.push(&[0u8; 10]).unwrap();
    u.poll_transmit(Timestamp::ZERO).unwrap();
    u.push(&[1u8; 10]).unwrap();
    u.poll_transmit(Timestamp::ZERO + ms(10)).unwrap();
    let before = u.poll_timeout();
    assert_eq!(before, Some(Timestamp::ZERO + ms(1000)));
    u.on_ack(
        Timestamp::ZERO + ms(60),
        &AckFrame {
            cumulative: 0,
            ranges: vec![(1, 1)],
        },
    );
    // the sample (50 ms) gives an RTO of 150 ms, but chunk 0 keeps its 1 s timer
    assert_eq!(u.rtt().rto(), ms(150));
    assert_eq!(u.poll_timeout(), before);
}

#[test]
fn the_receiver_orders_and_suppresses_duplicates() {
    let mut r = Receiver::new(16);
    let chunk = |seq, body| Chunk {
        stream: ID,
        seq,
        body: Some(body),
        ack: None,
        surbs: vec![],
    };
    let d = |b: &[u8]| Body::Data(b.to_vec());
    let got = r.on_chunk(&chunk(2, d(b"c")));
    assert!(got.events.is_empty());
    assert_eq!(
        got.ack,
        Some(AckFrame {
            cumulative: 0,
            ranges: vec![(2, 2)]
        })
    );
    assert!(r.on_chunk(&chunk(2, d(b"c"))).events.is_empty());
    let got = r.on_chunk(&chunk(0, Body::Open(None)));
    assert_eq!(got.events, vec![StreamEvent::Opened(None)]);
    let got = r.on_chunk(&chunk(1, d(b"b")));
    assert_eq!(
        got.events,
        vec![
            StreamEvent::Data(b"b".to_vec()),
            StreamEvent::Data(b"c".to_vec())
        ]
    );
    assert_eq!(got.ack.unwrap().cumulative, 3);
    // old duplicates are acked again and deliver nothing
    let got = r.on_chunk(&chunk(0, Body::Open(None)));
    assert!(got.events.is_empty());
    assert_eq!(got.ack.unwrap().cumulative, 3);
    // beyond the window: dropped, not acked
    let got = r.on_chunk(&chunk(3 + 16, d(b"far")));
    assert!(!got.ack.unwrap().covers(19));
    // a reset ends the stream; later chunks are ignored
    let got = r.on_chunk(&chunk(3, Body::Reset(Reply::ConnectionRefused)));
    assert_eq!(
        got.events,
        vec![StreamEvent::Reset(Reply::ConnectionRefused)]
    );
    assert!(r.is_ended());
    assert!(r.on_chunk(&chunk(4, d(b"late"))).events.is_empty());
    // ack-only chunks are not the receiver's business
    assert!(
        r.on_chunk(&Chunk::ack_only(ID, AckFrame::default()))
            .ack
            .is_none()
    );
}

#[test]
fn acks_keep_at_most_the_range_cap_and_always_the_latest_arrival() {
    let mut r = Receiver::new(1000);
    let mut last = AckFrame::default();
    for i in 0..40u32 {
        let seq = 2 * i + 1; // every odd number: 40 islands
        last = r
            .on_chunk(&Chunk {
                stream: ID,
                seq,
                body: Some(Body::Fin),
                ack: None,
                surbs: vec![],
            })
            .ack
            .unwrap();
        assert!(last.covers(seq));
        assert!(last.ranges.len() <= MAX_ACK_RANGES);
    }
    assert_eq!(last.ranges.len(), MAX_ACK_RANGES);
    assert!(Chunk::ack_only(ID, last).encode().is_ok());
}

#[test]
fn a_reset_is_delivered_reliably_after_the_data() {
    let mut s = Sender::new(ID, SenderConfig::default()).unwrap();
    s.open(None).unwrap();
    s.push(b"partial").unwrap();
    s.reset(Reply::HostUnreachable).unwrap();
    assert_eq!(s.push(b"more"), Err(StreamError::Closed));
    assert_eq!(s.finish(), Err(StreamError::Closed));
    let now = Timestamp::ZERO;
    let cs: Vec<Chunk> = std::iter::from_fn(|| s.poll_transmit(now)).collect();
    assert_eq!(cs.len(), 2, "reset drops unsent data");
    assert_eq!(cs[1].body, Some(Body::Reset(Reply::HostUnreachable)));
    assert_eq!(s.verdict(), None);
    s.on_ack(
        now,
        &AckFrame {
            cumulative: 2,
            ranges: vec![],
        },
    );
    assert_eq!(s.verdict(), Some(Verdict::Delivered));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn chunks_round_trip_and_fit_a_packet_with_surbs() {
    for k in 0..=4 {
        let c = Chunk {
            stream: u64::MAX,
            seq: u32::MAX,
            body: Some(Body::Data(vec![0xAB; max_data_len(k)])),
            ack: Some(AckFrame {
                cumulative: 5,
                ranges: (0..MAX_ACK_RANGES as u32)
                    .map(|i| (10 + 3 * i, 11 + 3 * i))
                    .collect(),
            }),
            surbs: vec![vec![0x5A; SURB_SIZE]; k],
        };
        let b = c.encode().unwrap();
        assert!(b.len() <= MAX_MESSAGE_LEN);
        assert_eq!(b.len(), c.encoded_len());
        assert_eq!(Chunk::decode(&b).unwrap(), c);
    }
    assert!(max_data_len(2) >= 1000, "{}", max_data_len(2));
    let open = Chunk {
        stream: 1,
        seq: 0,
        body: Some(Body::Open(Some(TargetAddr::Domain("a".repeat(255), 80)))),
        ack: None,
        surbs: vec![vec![1; SURB_SIZE]; 4],
    };
    assert_eq!(Chunk::decode(&open.encode().unwrap()).unwrap(), open);
    // too big, trailing bytes, bad version
    let mut big = open.clone();
    big.surbs = vec![vec![1; SURB_SIZE]; MAX_SURBS + 1];
    assert!(matches!(big.encode(), Err(StreamError::TooLong { .. })));
    let mut b = open.encode().unwrap();
    b.push(0);
    assert!(matches!(
        Chunk::decode(&b),
        Err(StreamError::Trailing { got: 1 })
    ));
    b[0] = 9;
    assert!(matches!(
        Chunk::decode(&b),
        Err(StreamError::Version { got: 9 })
    ));
    // nothing sensitive in Debug
    let shown = format!("{open:?}");
    assert!(!shown.contains("aaaa"), "{shown}");
}

#[test]
fn bad_configurations_are_refused() {
    let bad = [
        SenderConfig {
            window: 0,
            ..SenderConfig::default()
        },
        SenderConfig {
            max_data: 0,
            ..SenderConfig::default()
        },
        SenderConfig {
            max_data: max_data_len(0) + 1,
            ..SenderConfig::default()
        },
        SenderConfig {
            min_rto: Duration::ZERO,
            ..SenderConfig::default()
        },
    ];
    for c in bad {
        assert!(matches!(
            Sender::new(ID, c),
            Err(StreamError::Config { .. })
        ));
    }
}

#[test]
fn a_chunk_without_body_or_ack_is_refused_at_encoding() {
    // Decoding refuses kind 0 without the ack flag, so encoding must too (a driver once
    // sent SURB top-ups this way and the exit dropped them all).
    let bare = Chunk {
        stream: ID,
        seq: 0,
        body: None,
        ack: None,
        surbs: vec![vec![0; SURB_SIZE]],
    };
    assert!(matches!(
        bare.encode(),
        Err(StreamError::Flags { kind: 0, got: 0 })
    ));
    let with_ack = Chunk {
        ack: Some(AckFrame::default()),
        ..bare
    };
    let bytes = with_ack.encode().unwrap();
    assert_eq!(Chunk::decode(&bytes).unwrap(), with_ack);
}
