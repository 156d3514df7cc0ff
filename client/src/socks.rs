//! `lethe-client socks`: a local SOCKS5 proxy (RFC 1928: no authentication, `CONNECT` to
//! IPv4, IPv6 or a domain name) whose connections cross the mixnet to an exit service.
//!
//! Each accepted TCP connection becomes one stream (random [`StreamId`]) to the exit. The
//! proxy's chunks travel in forward packets; each carries fresh SURBs (route: the exit's
//! gateway, a mix of each layer, our own gateway) so the exit can answer without knowing who
//! we are. The proxy keeps each SURB's key by its id until the reply comes or it expires.
//!
//! **SURB supply.** For each stream the proxy estimates how many SURBs the exit still holds
//! (sent minus chunks received) and tops it up with ack-only chunks to a target:
//! [`MIN_SURBS`] plus what the exit will use in one and a half round trips at the rate it
//! sent chunks in the last second (the observed reply demand), at most
//! [`SocksConfig::surb_target`]. An idle stream so keeps only a few SURBs at the exit, a
//! busy one enough for its window. After a silence, or when a relay is newly avoided, the
//! proxy assumes its SURBs were lost and sends fresh ones (silences: after 1 s, then 2,
//! 4... up to 30 s).
//!
//! **Sharing the payload slots.** While cover traffic runs, a stream has at most
//! [`QUEUED_PER_STREAM`] packets waiting for payload slots ([`Client::send_packet_tracked`]):
//! the slots are shared out among the streams in turn, every packet carries as many SURBs
//! as fit, and acks wait behind a few packets at most, never a long queue (which would inflate the exit's RTT
//! estimate and make it retransmit for nothing).
//!
//! **Dead relays.** Routes for forward packets and SURBs leave out the mixes the client's
//! loop cover found dead ([`Client::avoided_relays`]); the exit uses the newest SURBs first.
//!
//! SURB and packet creation run on the blocking pool, a chunk's SURBs in one batch.
//!
//! Over 350 lines, on purpose: the listener, the SOCKS handshake, the reply dispatcher and
//! the proxy's transport (SURBs in, packets out) are the one proxy; the policies are in
//! `lethe-proto` (`supply`, `stream::Connection`) and the stream driver in [`crate::pipe`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lethe_proto::seal::MAX_SEALED_MESSAGE;
use lethe_proto::socks::{
    METHOD_NONE_ACCEPTABLE, Parsed, encode_method_selection, encode_reply, parse_greeting,
    parse_request,
};
use lethe_proto::stream::{Chunk, Receiver, Sender, SenderConfig, StreamId, max_sealed_data_len};
use lethe_proto::supply::SurbSupply;
use lethe_proto::surb::{SURB_SIZE, Surb, SurbId, SurbKey};
use lethe_proto::{ClientAddress, Packet};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::pipe::{Pipe, PipeConfig, PipeEnd, PipeError, Transport};
use crate::{Client, ClientError};

/// The exit's sending window (chunks in flight): the proxy keeps about this many SURBs, plus
/// a margin, at the exit for each stream.
pub const EXIT_WINDOW: usize = 96;

/// How long the proxy keeps a SURB's key waiting for its reply, by default (the exit drops
/// SURBs a minute younger than this unused).
pub const DEFAULT_SURB_TTL: Duration = Duration::from_secs(300);

/// Tuning of the proxy.
#[derive(Clone, Debug)]
pub struct SocksConfig {
    /// Where the SOCKS server listens.
    pub listen: SocketAddr,
    /// The exit service's address (`CLIENT.KEY@GATEWAY`).
    pub exit: ClientAddress,
    /// Most TCP connections served at once (streams and handshakes together).
    pub max_connections: usize,
    /// Most connections still in their SOCKS handshake; when one more arrives the oldest
    /// of them is closed, so idle connections cannot hold the proxy's slots (a client's
    /// handshake takes milliseconds).
    pub max_handshakes: usize,
    /// Most SURBs to keep at the exit per stream (the target grows from [`MIN_SURBS`] with
    /// the reply demand up to this).
    pub surb_target: usize,
    /// How long a SURB's key is kept waiting for its reply.
    pub surb_ttl: Duration,
    /// Most SURB keys held in all.
    pub max_keys: usize,
    /// The SOCKS handshake must complete within this.
    pub handshake_timeout: Duration,
}

impl SocksConfig {
    /// Defaults for a listen address and an exit.
    pub fn new(listen: SocketAddr, exit: ClientAddress) -> Self {
        SocksConfig {
            listen,
            exit,
            max_connections: 256,
            max_handshakes: 32,
            surb_target: EXIT_WINDOW + 16,
            surb_ttl: DEFAULT_SURB_TTL,
            max_keys: 200_000,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// SURB keys by id: the stream the SURB was made for, the key, when it expires.
type Keys = Arc<Mutex<HashMap<SurbId, (StreamId, SurbKey, Instant)>>>;
/// Inboxes of the open streams.
type Streams = Arc<Mutex<HashMap<StreamId, mpsc::Sender<Chunk>>>>;

use lethe_net::clock::lock;

/// Serve SOCKS5 on `cfg.listen` until the gateway connection closes.
pub async fn serve(client: Arc<Client>, cfg: SocksConfig) -> Result<(), ClientError> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| ClientError::Net(lethe_net::NetError::Io(e)))?;
    serve_on(client, listener, cfg).await
}

/// Serve SOCKS5 on an already bound listener.
pub async fn serve_on(
    client: Arc<Client>,
    listener: TcpListener,
    cfg: SocksConfig,
) -> Result<(), ClientError> {
    client.subscribe().await?;
    let replies = client.take_replies().await;
    let keys: Keys = Arc::default();
    let streams: Streams = Arc::default();
    let dispatcher = tokio::spawn(dispatch(replies, keys.clone(), streams.clone()));
    let sweeper = tokio::spawn(sweep(keys.clone()));
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
    let pending = Arc::new(Pending::default());
    info!("SOCKS5 proxy listening");
    let result = loop {
        tokio::select! {
            a = listener.accept() => {
                let (tcp, _) = match a {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Room for a newcomer: the oldest unfinished handshake goes first.
                let cancelled = pending.admit(cfg.max_handshakes);
                let permit = match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    // Every slot holds a stream: wait briefly for the evicted one to leave.
                    Err(_) if cancelled => match tokio::time::timeout(
                        Duration::from_millis(100),
                        slots.clone().acquire_owned(),
                    )
                    .await
                    {
                        Ok(Ok(p)) => p,
                        _ => continue,
                    },
                    Err(_) => {
                        debug!("too many SOCKS connections; refusing one");
                        drop(tcp);
                        continue;
                    }
                };
                let (c, k, s, cfg) = (client.clone(), keys.clone(), streams.clone(), cfg.clone());
                let (ticket, evicted) = pending.enter();
                let pending = pending.clone();
                tokio::spawn(async move {
                    connection(c, k, s, cfg, tcp, (ticket, evicted, pending)).await;
                    drop(permit);
                });
            }
            _ = client_closed(&client) => break Err(ClientError::Closed),
        }
    };
    dispatcher.abort();
    sweeper.abort();
    result
}

async fn client_closed(client: &Client) {
    client.conn.closed().await;
}

/// Open replies and hand their chunks to the streams.
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

/// Read until `parse` completes, with the bytes it did not consume.
async fn read_msg<T>(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Parsed<T>, lethe_proto::socks::SocksError>,
) -> Result<Option<T>, Option<lethe_proto::socks::SocksError>> {
    loop {
        match parse(buf) {
            Ok(Parsed::Complete { value, consumed }) => {
                buf.drain(..consumed);
                return Ok(Some(value));
            }
            Ok(Parsed::NeedMore) => {}
            Err(e) => return Err(Some(e)),
        }
        let mut tmp = [0u8; 512];
        match tcp.read(&mut tmp).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
        if buf.len() > 1024 {
            return Err(None);
        }
    }
}

/// Connections still in their SOCKS handshake, oldest first, each with the means to close
/// it.
#[derive(Default)]
struct Pending {
    queue: Mutex<std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Pending {
    /// Make room for one more under `max`: close the oldest if full; returns whether one
    /// was closed.
    fn admit(&self, max: usize) -> bool {
        let mut q = lock(&self.queue);
        if q.len() < max.max(1) {
            return false;
        }
        if let Some((_, close)) = q.pop_front() {
            let _ = close.send(());
        }
        true
    }

    /// A new handshake: its ticket and the receiver that fires if it is evicted.
    fn enter(&self) -> (u64, tokio::sync::oneshot::Receiver<()>) {
        let ticket = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.queue).push_back((ticket, tx));
        (ticket, rx)
    }

    /// The handshake of `ticket` is over (done, failed or evicted).
    fn leave(&self, ticket: u64) {
        lock(&self.queue).retain(|(t, _)| *t != ticket);
    }
}

async fn connection(
    client: Arc<Client>,
    keys: Keys,
    streams: Streams,
    cfg: SocksConfig,
    mut tcp: TcpStream,
    (ticket, evicted, pending): (u64, tokio::sync::oneshot::Receiver<()>, Arc<Pending>),
) {
    let mut buf = Vec::new();
    let handshake = async {
        let greeting = match read_msg(&mut tcp, &mut buf, parse_greeting).await {
            Ok(Some(g)) => g,
            Ok(None) => return None,
            Err(e) => {
                debug!(error = ?e, "malformed SOCKS greeting; closing that connection");
                return None;
            }
        };
        let method = greeting.selected_method();
        tcp.write_all(&encode_method_selection(method)).await.ok()?;
        if method == METHOD_NONE_ACCEPTABLE {
            return None;
        }
        match read_msg(&mut tcp, &mut buf, parse_request).await {
            Ok(Some(t)) => Some(t),
            Ok(None) => None,
            Err(e) => {
                debug!(error = ?e, "malformed SOCKS request; closing that connection");
                if let Some(code) = e.and_then(|e| e.reply()) {
                    let _ = tcp.write_all(&encode_reply(code, None)).await;
                }
                None
            }
        }
    };
    let target = tokio::select! {
        t = tokio::time::timeout(cfg.handshake_timeout, handshake) => t.ok().flatten(),
        _ = evicted => None,
    };
    pending.leave(ticket);
    let Some(target) = target else {
        return;
    };
    let id: StreamId = rand::rng().next_u64();
    let sender_cfg = SenderConfig {
        window: 16,
        max_data: max_sealed_data_len(2),
        ..SenderConfig::default()
    };
    let Ok(mut sender) = Sender::new(id, sender_cfg) else {
        return;
    };
    if sender.open(Some(target)).is_err() {
        return;
    }
    if !buf.is_empty() {
        let _ = sender.push(&buf);
    }
    let (tx, rx) = mpsc::channel(4 * EXIT_WINDOW);
    lock(&streams).insert(id, tx);
    let pipe = Pipe {
        id,
        config: PipeConfig::default(),
        sender,
        receiver: Receiver::new(EXIT_WINDOW as u32 + 16),
        received_any: false,
        socks_reply_pending: true,
    };
    let clock = lethe_net::clock::Clock::new();
    let client_changes = client.avoided_changes();
    let mut transport = ProxyTransport {
        client,
        exit: cfg.exit,
        stream: id,
        keys: keys.clone(),
        supply: SurbSupply::new(clock.now(), cfg.surb_target),
        clock,
        ttl: cfg.surb_ttl,
        max_keys: cfg.max_keys,
        queued: Default::default(),
        avoided_changes: client_changes,
    };
    let end = pipe.run(&mut transport, Some(tcp), rx).await;
    debug!(?end, "SOCKS stream ended");
    lock(&streams).remove(&id);
    if end != PipeEnd::Ended(lethe_proto::stream::End::Closed) {
        lock(&keys).retain(|_, (s, _, _)| *s != id);
    }
}

/// Most packets of one stream waiting for payload slots at once: two, so that the next is
/// built while the previous waits and no slot passes for want of one.
pub const QUEUED_PER_STREAM: usize = 2;
pub use lethe_proto::supply::MIN_SURBS;
/// The longest a stream's packet may wait for a payload slot before the stream gives up.
pub const SLOT_TIMEOUT: Duration = Duration::from_secs(60);

/// A built packet, the keys of the SURBs it carries, and in how many seconds the first of
/// those SURBs dies with its epoch's keys.
type Made = (Packet, Vec<SurbKey>, Option<u64>);

struct ProxyTransport {
    client: Arc<Client>,
    exit: ClientAddress,
    stream: StreamId,
    keys: Keys,
    /// How many SURBs the exit holds and should hold for this stream (the policy).
    supply: SurbSupply,
    clock: lethe_net::clock::Clock,
    ttl: Duration,
    max_keys: usize,
    /// This stream's packets still waiting for a payload slot.
    queued: std::collections::VecDeque<tokio::sync::oneshot::Receiver<()>>,
    /// [`Client::avoided_changes`] when last looked at.
    avoided_changes: u64,
}

impl Transport for ProxyTransport {
    fn ready(&self) -> bool {
        true
    }

    fn on_chunk(&mut self, _chunk: &mut Chunk, now: Instant) {
        // Every chunk from the exit came in one of our SURBs.
        self.supply.on_chunk(self.clock.at(now));
    }

    fn wants_extra(&mut self, now: Instant) -> bool {
        // A relay was found dead: SURBs sent through it will never come back, and the count
        // of SURBs held at the exit is too high by an unknown number of them. Start again
        // from none; the new ones avoid the dead relay (the exit uses the newest first).
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
        let exit = self.exit;
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
                    &exit.gateway,
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
            Ok((client.build(&exit, &msg)?.packet, keys, dies_in))
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
