//! Incoming streams at an answering end (the exit service, a message recipient): each chunk
//! goes to its stream's inbox; a stream's `Open` starts it within a limit; a stream that
//! ended is remembered for a while, so a late retransmission of its `Open` cannot start it
//! again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use lethe_proto::stream::{Body, Chunk, StreamId};
use tokio::sync::mpsc;

/// How long an ended stream's id is remembered.
pub const ENDED_MEMORY: Duration = Duration::from_secs(120);
/// Most ended streams remembered.
pub const ENDED_MAX: usize = 65_536;

/// What became of an offered chunk.
#[derive(Debug)]
pub enum Offered {
    /// It went to its stream's inbox (or was dropped because the inbox was full: the peer
    /// sends it again).
    Delivered,
    /// It opens a new stream: run it, with this inbox for the chunks that follow.
    Opened(Chunk, mpsc::Receiver<Chunk>),
    /// It would open a new stream, but the limit is reached: refuse it.
    Refused(Chunk),
    /// It belongs to a stream that ended a short while ago: dropped.
    Ignored,
    /// It belongs to no stream we know and is not its `Open` (we restarted, or the `Open`
    /// was lost). The caller may tell the peer (a reset) rather than leave it
    /// retransmitting into nothing; then it calls [`Acceptor::ended`], so that it does so
    /// once.
    Unknown(Chunk),
}

/// The streams of an answering end.
pub struct Acceptor {
    streams: HashMap<StreamId, mpsc::Sender<Chunk>>,
    ended: RecentlyEnded,
    max_streams: usize,
    inbox_len: usize,
}

impl Acceptor {
    /// At most `max_streams` at once, each with an inbox of `inbox_len` chunks.
    pub fn new(max_streams: usize, inbox_len: usize) -> Self {
        Acceptor {
            streams: HashMap::new(),
            ended: RecentlyEnded::default(),
            max_streams,
            inbox_len: inbox_len.max(1),
        }
    }

    /// A chunk arrived at `now`.
    pub fn offer(&mut self, chunk: Chunk, now: Instant) -> Offered {
        if let Some(tx) = self.streams.get(&chunk.stream) {
            let _ = tx.try_send(chunk);
            return Offered::Delivered;
        }
        if self.ended.contains(&chunk.stream, now) {
            return Offered::Ignored;
        }
        let opens = chunk.seq == 0 && matches!(chunk.body, Some(Body::Open(_)));
        if !opens {
            return Offered::Unknown(chunk);
        }
        if self.streams.len() >= self.max_streams {
            return Offered::Refused(chunk);
        }
        let (tx, rx) = mpsc::channel(self.inbox_len);
        self.streams.insert(chunk.stream, tx);
        Offered::Opened(chunk, rx)
    }

    /// Stream `id` ended at `now`.
    pub fn ended(&mut self, id: StreamId, now: Instant) {
        self.streams.remove(&id);
        self.ended.insert(id, now);
    }

    /// Streams running.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream runs.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// Ids of streams that ended in the last [`ENDED_MEMORY`] (at most [`ENDED_MAX`]), forgotten
/// in the order they ended.
#[derive(Default)]
struct RecentlyEnded {
    order: VecDeque<(Instant, StreamId)>,
    ids: HashSet<StreamId>,
}

impl RecentlyEnded {
    fn insert(&mut self, id: StreamId, now: Instant) {
        self.expire(now);
        if self.order.len() >= ENDED_MAX
            && let Some((_, old)) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        if self.ids.insert(id) {
            self.order.push_back((now, id));
        }
    }

    fn contains(&mut self, id: &StreamId, now: Instant) -> bool {
        self.expire(now);
        self.ids.contains(id)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, old)) = self.order.front() {
            if now.saturating_duration_since(t) < ENDED_MEMORY {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_proto::stream::AckFrame;

    fn open(id: StreamId) -> Chunk {
        Chunk {
            stream: id,
            seq: 0,
            body: Some(Body::Open(None)),
            ack: None,
            surbs: Vec::new(),
        }
    }

    #[test]
    fn ended_streams_are_remembered_for_a_while_then_forgotten() {
        let mut e = RecentlyEnded::default();
        let t0 = Instant::now();
        let id: StreamId = 7;
        e.insert(id, t0);
        assert!(e.contains(&id, t0 + Duration::from_secs(60)));
        assert!(!e.contains(&id, t0 + ENDED_MEMORY));
        assert!(
            e.order.is_empty() && e.ids.is_empty(),
            "expired ids are dropped"
        );
    }

    #[test]
    fn opens_start_streams_within_the_limit_and_late_opens_are_ignored() {
        let mut a = Acceptor::new(1, 4);
        let t0 = Instant::now();
        let Offered::Opened(first, mut inbox) = a.offer(open(1), t0) else {
            panic!("an Open starts a stream");
        };
        assert_eq!(first.stream, 1);
        // a retransmitted Open of a running stream goes to it
        assert!(matches!(a.offer(open(1), t0), Offered::Delivered));
        assert_eq!(inbox.try_recv().unwrap().stream, 1);
        // a second stream is over the limit
        assert!(matches!(a.offer(open(2), t0), Offered::Refused(_)));
        // a chunk of no stream that is not an Open
        let ack = Chunk::ack_only(
            3,
            AckFrame {
                cumulative: 1,
                ranges: Vec::new(),
            },
        );
        assert!(matches!(a.offer(ack.clone(), t0), Offered::Unknown(_)));
        // once answered, it counts as ended for a while
        a.ended(3, t0);
        assert!(matches!(a.offer(ack, t0), Offered::Ignored));
        a.ended(1, t0);
        assert!(a.is_empty());
        // a late Open of the ended stream does not start it again, until it is forgotten
        assert!(matches!(a.offer(open(1), t0), Offered::Ignored));
        assert!(matches!(
            a.offer(open(1), t0 + ENDED_MEMORY),
            Offered::Opened(..)
        ));
    }
}
