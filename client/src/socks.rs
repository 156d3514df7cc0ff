//! `lethe-client socks`: a local SOCKS5 proxy (RFC 1928: no authentication, `CONNECT` to
//! IPv4, IPv6 or a domain name) whose connections cross the mixnet to an exit service.
//!
//! Each accepted TCP connection becomes one stream (random [`StreamId`]) to the exit,
//! opened through an [`Opener`] ([`crate::forward`]: forward packets with fresh SURBs,
//! the SURB supply, sharing the payload slots, avoiding dead relays); the exit answers in
//! our SURBs.
//!
//! Over 350 lines, on purpose: the listener, the SOCKS handshake and its bounds are the
//! one proxy; the policies are in `lethe-proto` (`supply`, `stream::Connection`), the
//! opener's transport in [`crate::forward`] and the stream driver in [`crate::pipe`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lethe_proto::ClientAddress;
use lethe_proto::socks::{
    METHOD_NONE_ACCEPTABLE, Parsed, encode_method_selection, encode_reply, parse_greeting,
    parse_request,
};
use lethe_proto::stream::{Receiver, Sender, SenderConfig, StreamId, max_sealed_data_len};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::forward::{Opener, OpenerConfig};
use crate::pipe::{Pipe, PipeConfig, PipeEnd};
use crate::{Client, ClientError};

pub use crate::forward::{
    DEFAULT_SURB_TTL, EXIT_WINDOW, MIN_SURBS, QUEUED_PER_STREAM, SLOT_TIMEOUT,
};

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
    let opener = Arc::new(
        Opener::start(
            client.clone(),
            OpenerConfig {
                surb_target: cfg.surb_target,
                surb_ttl: cfg.surb_ttl,
                max_keys: cfg.max_keys,
            },
        )
        .await?,
    );
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
                let (o, cfg) = (opener.clone(), cfg.clone());
                let (ticket, evicted) = pending.enter();
                let pending = pending.clone();
                tokio::spawn(async move {
                    connection(o, cfg, tcp, (ticket, evicted, pending)).await;
                    drop(permit);
                });
            }
            _ = client_closed(&client) => break Err(ClientError::Closed),
        }
    };
    drop(opener);
    result
}

async fn client_closed(client: &Client) {
    client.conn.closed().await;
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
    opener: Arc<Opener>,
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
    let (mut transport, rx) = opener.stream(id, cfg.exit, 4 * EXIT_WINDOW);
    let pipe = Pipe {
        id,
        config: PipeConfig::default(),
        sender,
        receiver: Receiver::new(EXIT_WINDOW as u32 + 16),
        received_any: false,
        socks_reply_pending: true,
        progress: None,
    };
    let end = pipe.run(&mut transport, Some(tcp), rx).await;
    debug!(?end, "SOCKS stream ended");
    opener.ended(id, end == PipeEnd::Ended(lethe_proto::stream::End::Closed));
}
