//! The exit service (`lethe-node init --role exit`): a mixnet *client* of one gateway that
//! opens the TCP connections SOCKS proxies ask for and answers inside their SURBs.
//!
//! Its directory is a client directory (`client.toml`, TLS identity; its address is
//! `CLIENT@GATEWAY`) plus `exit.toml` (the `[exit]` section below). Streams arrive as chunks
//! in messages addressed to it; each names its target in its `Open`. The target must match
//! the allow-list; private, loopback, link-local and other special addresses only match a
//! rule that names them by address or network (never `*` or a host name), so a name that
//! resolves to one is refused unless that range is allowed explicitly.
//!
//! Logs never show targets or clients, except through `Sensitive`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lethe_client::pipe::{Pipe, PipeConfig, PipeError, Transport};
use lethe_client::{Client, ClientConfig, ConnectOptions};
use lethe_net::Sensitive;
use lethe_proto::socks::{Reply, TargetAddr};
use lethe_proto::stream::{Body, Chunk, Receiver, Sender, SenderConfig, StreamEvent, StreamId};
use lethe_proto::surb::Surb;
use lethe_proto::{ClientAddress, NodeId};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info};

/// File name of the exit's own settings inside its directory.
pub const EXIT_FILE: &str = "exit.toml";

/// What can go wrong setting up or running the exit.
#[derive(Debug, thiserror::Error)]
pub enum ExitError {
    #[error(transparent)]
    Client(#[from] lethe_client::ClientError),
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error("allow-list rule {rule:?}: {reason}")]
    Rule { rule: String, reason: &'static str },
}

/// `exit.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitFile {
    /// The service's settings.
    #[serde(default)]
    pub exit: ExitSection,
}

/// `[exit]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExitSection {
    /// Targets the exit connects to, `HOST:PORT` each (default `["*:80", "*:443"]`). HOST
    /// is `*` (any public address), a name, `*.example.org` (the name and its subdomains),
    /// an IP address or a network `10.0.0.0/8` (`[::1]`, `[fd00::/8]` for IPv6). PORT is
    /// `*`, a number, or a range `8000-8080`.
    pub allow: Vec<String>,
    /// Local address of the QUIC endpoint to the gateway (default `0.0.0.0:0`).
    pub bind: Option<SocketAddr>,
    /// Streams open at once (default 1024); more are refused with a general failure.
    pub max_streams: usize,
    /// SURBs held per stream (default 256); older ones are dropped beyond it.
    pub max_surbs_per_stream: usize,
    /// Bytes read from a target and not yet sent, per stream (default 262144).
    pub max_buffered: usize,
    /// Seconds without traffic after which a stream is dropped (default 300).
    pub idle_secs: u64,
    /// Seconds to resolve and connect to a target (default 10).
    pub connect_timeout_secs: u64,
    /// Seconds a target may take none of the bytes waiting for it before its stream is
    /// reset (default 30): a target that stops reading holds no stream for longer.
    pub stall_secs: u64,
}

impl Default for ExitSection {
    fn default() -> Self {
        ExitSection {
            allow: vec!["*:80".into(), "*:443".into()],
            bind: None,
            max_streams: 1024,
            max_surbs_per_stream: 256,
            max_buffered: 256 * 1024,
            idle_secs: 300,
            connect_timeout_secs: 10,
            stall_secs: 30,
        }
    }
}

impl ExitFile {
    /// Read `exit.toml` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, ExitError> {
        let path = dir.join(EXIT_FILE);
        let err = |reason: String| ExitError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let f: ExitFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        AllowList::parse(&f.exit.allow)?;
        Ok(f)
    }
}

/// Whether `dir` holds an exit service.
pub fn is_exit(dir: &Path) -> bool {
    dir.join(EXIT_FILE).exists()
}

/// Create an exit directory: a client identity and `client.toml` (a gateway is picked from
/// the directory if `client.gateway` is none) and `exit.toml`. Returns the exit's address.
pub async fn init(
    dir: &Path,
    client: ClientConfig,
    exit: ExitSection,
) -> Result<ClientAddress, ExitError> {
    AllowList::parse(&exit.allow)?;
    let addr = lethe_client::init(dir, client).await?;
    let path = dir.join(EXIT_FILE);
    let err = |reason: String| ExitError::Config {
        path: path.display().to_string(),
        reason,
    };
    let text = toml::to_string_pretty(&ExitFile { exit }).map_err(|e| err(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| err(e.to_string()))?;
    restrict(dir);
    Ok(addr)
}

/// Files in the exit's directory are readable by their owner only.
fn restrict(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600));
        }
    }
}

/// The exit's address (`CLIENT@GATEWAY`).
pub fn address(dir: &Path) -> Result<ClientAddress, ExitError> {
    Ok(lethe_client::address(dir)?)
}

#[derive(Clone, Debug, PartialEq)]
enum HostRule {
    Any,
    Name(String),
    Suffix(String),
    Net(IpAddr, u8),
}

/// A parsed allow-list.
#[derive(Clone, Debug, PartialEq)]
pub struct AllowList(Vec<(HostRule, u16, u16)>);

fn bad(rule: &str, reason: &'static str) -> ExitError {
    ExitError::Rule {
        rule: rule.to_string(),
        reason,
    }
}

impl AllowList {
    /// Parse rules of the form `HOST:PORT` (see [`ExitSection::allow`]).
    pub fn parse(rules: &[String]) -> Result<AllowList, ExitError> {
        let mut out = Vec::new();
        for r in rules {
            let (host, port) = r
                .rsplit_once(':')
                .ok_or_else(|| bad(r, "expected HOST:PORT"))?;
            let (lo, hi) = match port {
                "*" => (0, u16::MAX),
                p => match p.split_once('-') {
                    Some((a, b)) => (
                        a.parse().map_err(|_| bad(r, "bad port"))?,
                        b.parse().map_err(|_| bad(r, "bad port"))?,
                    ),
                    None => {
                        let n = p.parse().map_err(|_| bad(r, "bad port"))?;
                        (n, n)
                    }
                },
            };
            if lo > hi {
                return Err(bad(r, "empty port range"));
            }
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let rule = if host == "*" {
                HostRule::Any
            } else if let Some(s) = host.strip_prefix("*.") {
                if s.is_empty() {
                    return Err(bad(r, "empty domain suffix"));
                }
                HostRule::Suffix(s.to_ascii_lowercase())
            } else if let Some((ip, len)) = host.split_once('/') {
                let ip: IpAddr = ip.parse().map_err(|_| bad(r, "bad network address"))?;
                let len: u8 = len.parse().map_err(|_| bad(r, "bad prefix length"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if len > max {
                    return Err(bad(r, "prefix length too long"));
                }
                HostRule::Net(ip, len)
            } else if let Ok(ip) = host.parse::<IpAddr>() {
                HostRule::Net(ip, if ip.is_ipv4() { 32 } else { 128 })
            } else if host.is_empty() {
                return Err(bad(r, "empty host"));
            } else {
                HostRule::Name(host.to_ascii_lowercase())
            };
            out.push((rule, lo, hi));
        }
        Ok(AllowList(out))
    }

    /// Whether a connection to `ip:port`, asked for by `name` (if a domain), is allowed.
    pub fn allows(&self, name: Option<&str>, ip: IpAddr, port: u16) -> bool {
        let name = name.map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        self.0.iter().any(|(rule, lo, hi)| {
            if port < *lo || port > *hi {
                return false;
            }
            match rule {
                HostRule::Any => !is_special(ip),
                HostRule::Name(n) => name.as_deref() == Some(n.as_str()) && !is_special(ip),
                HostRule::Suffix(s) => {
                    name.as_deref().is_some_and(|n| {
                        n == s || n.strip_suffix(s.as_str()).is_some_and(|p| p.ends_with('.'))
                    }) && !is_special(ip)
                }
                HostRule::Net(net, len) => in_net(ip, *net, *len),
            }
        })
    }
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Loopback, private, link-local, shared (CGNAT), benchmarking, IETF protocol assignment,
/// unspecified, multicast, broadcast, documentation, reserved, unique-local and site-local
/// addresses: never reached through `*` or a name. An IPv6 address that carries an IPv4
/// one (IPv4-mapped, IPv4-compatible, NAT64 well-known prefix, 6to4) is judged by the IPv4
/// address it leads to; the local-use NAT64 prefix, Teredo and IPv6 documentation are
/// refused outright.
pub fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || in_net(ip, IpAddr::from([100, 64, 0, 0]), 10)
                || in_net(ip, IpAddr::from([0, 0, 0, 0]), 8)
                || in_net(ip, IpAddr::from([240, 0, 0, 0]), 4)
                || in_net(ip, IpAddr::from([198, 18, 0, 0]), 15)
                || in_net(ip, IpAddr::from([192, 0, 0, 0]), 24)
        }
        IpAddr::V6(a) => {
            if let Some(v4) = embedded_ipv4(a) {
                return is_special(IpAddr::V4(v4));
            }
            let net6 = |s: [u16; 8], len: u8| in_net(ip, IpAddr::V6(Ipv6Addr::from(s)), len);
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || net6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7)
                || net6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10)
                || net6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10)
                || net6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48)
                || net6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32)
                || net6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32)
                || net6([0x100, 0, 0, 0, 0, 0, 0, 0], 64)
        }
    }
}

/// The IPv4 address an IPv6 address leads to, if it embeds one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4
/// (`2002:AABB:CCDD::/48`).
fn embedded_ipv4(a: Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = a.segments();
    let low = std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && !a.is_loopback() && !a.is_unspecified() {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(std::net::Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Resolve, check and connect; a failure is the SOCKS reply code to reset with.
async fn open_target(
    allow: &AllowList,
    target: &TargetAddr,
    timeout: Duration,
) -> Result<TcpStream, Reply> {
    let work = async {
        let (name, addrs): (Option<&str>, Vec<SocketAddr>) = match target {
            TargetAddr::Ip(a) => (None, vec![*a]),
            TargetAddr::Domain(n, p) => (
                Some(n.as_str()),
                tokio::net::lookup_host((n.as_str(), *p))
                    .await
                    .map_err(|_| Reply::HostUnreachable)?
                    .collect(),
            ),
        };
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| allow.allows(name, a.ip(), a.port()))
            .collect();
        if allowed.is_empty() {
            return Err(Reply::NotAllowedByRuleset);
        }
        let mut last = Reply::HostUnreachable;
        for a in allowed {
            match connect_bounded(a).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    last = match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
                        std::io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
                        std::io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
                        std::io::ErrorKind::TimedOut => Reply::TtlExpired,
                        _ => Reply::GeneralFailure,
                    }
                }
            }
        }
        Err(last)
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(Reply::TtlExpired))
}

struct Ctx {
    client: Arc<Client>,
    gateway: NodeId,
    cfg: ExitSection,
    allow: AllowList,
    streams: Mutex<HashMap<StreamId, mpsc::Sender<Chunk>>>,
}

use lethe_net::clock::lock;

/// Run the exit in `dir` until `shutdown` turns true or the gateway connection closes.
pub async fn run(
    dir: &Path,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ExitError> {
    let file = ExitFile::load(dir)?;
    let allow = AllowList::parse(&file.exit.allow)?;
    let client = Client::connect(
        dir,
        ConnectOptions {
            bind: file.exit.bind,
            ..Default::default()
        },
    )
    .await?;
    client.subscribe().await?;
    let mut messages = client.take_messages().await;
    let ctx = Arc::new(Ctx {
        gateway: client.address().gateway,
        client: Arc::new(client),
        cfg: file.exit,
        allow,
        streams: Mutex::new(HashMap::new()),
    });
    info!(rules = ctx.allow.0.len(), "exit service running");
    // Streams that ended recently: a late retransmission of their Open must not reopen them.
    let mut ended = RecentlyEnded::default();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<StreamId>();
    let mut dropped = 0u64;
    loop {
        let msg = tokio::select! {
            m = messages.recv() => match m {
                Some(m) => m,
                None => break,
            },
            Some(id) = ended_rx.recv() => {
                lock(&ctx.streams).remove(&id);
                ended.insert(id, Instant::now());
                continue;
            }
            _ = shutdown.changed() => break,
        };
        let chunk = match Chunk::decode(&msg) {
            Ok(c) => c,
            Err(e) => {
                dropped += 1;
                debug!(error = %e, dropped, "malformed chunk dropped");
                continue;
            }
        };
        let id = chunk.stream;
        let inbox = lock(&ctx.streams).get(&id).cloned();
        if let Some(tx) = inbox {
            let _ = tx.try_send(chunk);
            continue;
        }
        let opens = chunk.seq == 0 && matches!(chunk.body, Some(Body::Open(Some(_))));
        if !opens || ended.contains(&id, Instant::now()) {
            continue;
        }
        if lock(&ctx.streams).len() >= ctx.cfg.max_streams {
            debug!("stream limit reached; refusing a stream");
            // Making the refusal's packet is Sphinx work: not on this loop.
            let c = ctx.clone();
            tokio::spawn(async move { refuse(&c, chunk).await });
            continue;
        }
        let (tx, rx) = mpsc::channel(256);
        lock(&ctx.streams).insert(id, tx);
        let (c, done) = (ctx.clone(), ended_tx.clone());
        tokio::spawn(async move {
            serve_stream(c, chunk, rx).await;
            let _ = done.send(id);
        });
    }
    info!("exit service stopping");
    Ok(())
}

/// Answer an `Open` we cannot serve with a reset, in one of its own SURBs.
/// How long an ended stream's id is remembered, and how many are at most.
const ENDED_MEMORY: Duration = Duration::from_secs(120);
const ENDED_MAX: usize = 65_536;

/// Ids of streams that ended in the last [`ENDED_MEMORY`] (at most [`ENDED_MAX`]), forgotten
/// in the order they ended.
#[derive(Default)]
struct RecentlyEnded {
    order: VecDeque<(Instant, StreamId)>,
    ids: std::collections::HashSet<StreamId>,
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

async fn refuse(ctx: &Arc<Ctx>, mut chunk: Chunk) {
    let mut t = ExitTransport::new(ctx.clone());
    t.on_chunk(&mut chunk, Instant::now());
    let reply = Chunk {
        stream: chunk.stream,
        seq: 0,
        body: Some(Body::Reset(Reply::GeneralFailure)),
        ack: Some(lethe_proto::stream::AckFrame {
            cumulative: 1,
            ranges: Vec::new(),
        }),
        surbs: Vec::new(),
    };
    let _ = tokio::time::timeout(lethe_client::pipe::TRANSMIT_TIMEOUT, t.transmit(reply)).await;
}

async fn serve_stream(ctx: Arc<Ctx>, mut first: Chunk, inbox: mpsc::Receiver<Chunk>) {
    let id = first.stream;
    let mut transport = ExitTransport::new(ctx.clone());
    transport.on_chunk(&mut first, Instant::now());
    let mut receiver = Receiver::new(64);
    let target = receiver
        .on_chunk(&first)
        .events
        .into_iter()
        .find_map(|e| match e {
            StreamEvent::Opened(Some(t)) => Some(t),
            _ => None,
        });
    let cfg = SenderConfig {
        window: lethe_client::socks::EXIT_WINDOW,
        ..SenderConfig::default()
    };
    let Ok(mut sender) = Sender::new(id, cfg) else {
        return;
    };
    let timeout = Duration::from_secs(ctx.cfg.connect_timeout_secs);
    let tcp = match &target {
        Some(t) => open_target(&ctx.allow, t, timeout).await,
        None => Err(Reply::GeneralFailure),
    };
    let tcp = match tcp {
        Ok(s) => {
            let _ = sender.open(None);
            Some(s)
        }
        Err(code) => {
            debug!(?code, target = ?target.as_ref().map(Sensitive::new), "stream refused");
            let _ = sender.reset(code);
            None
        }
    };
    let pipe = Pipe {
        id,
        config: PipeConfig {
            max_buffered: ctx.cfg.max_buffered,
            idle: Duration::from_secs(ctx.cfg.idle_secs),
            stall: Duration::from_secs(ctx.cfg.stall_secs.max(1)),
            ..PipeConfig::default()
        },
        sender,
        receiver,
        received_any: true,
        socks_reply_pending: false,
    };
    let end = pipe.run(&mut transport, tcp, inbox).await;
    debug!(?end, "stream ended");
}

/// The kernel's send buffer for a target connection: what a target that stops reading can
/// make the exit hold in the kernel, per stream (on top of `max_buffered` in the stream's
/// own buffer); small enough that a stalled target is seen within `stall_secs`.
const TARGET_SEND_BUFFER: u32 = 64 * 1024;

/// Connect to a target with a bounded send buffer.
async fn connect_bounded(a: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if a.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_send_buffer_size(TARGET_SEND_BUFFER)?;
    socket.connect(a).await
}

/// SURBs older than this are dropped unused: the proxy forgets a SURB's key after 300 s by
/// default (`lethe_client::socks::SocksConfig::surb_ttl`; keep this below it), and the
/// newest are used first, so old ones would be used only when the pool runs low, for
/// replies nobody could read.
const SURB_MAX_AGE: Duration = Duration::from_secs(240);

/// Sends in the client's SURBs.
struct ExitTransport {
    ctx: Arc<Ctx>,
    /// When each SURB came, oldest first.
    pool: VecDeque<(Instant, Vec<u8>)>,
}

impl ExitTransport {
    fn new(ctx: Arc<Ctx>) -> Self {
        ExitTransport {
            ctx,
            pool: VecDeque::new(),
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
            if let Err(e) = self.ctx.client.send_packet(&packet).await {
                lethe_net::warn_limited!(Duration::from_secs(10), error = %e, "cannot send to the gateway");
                return Err(e.into());
            }
            return Ok(());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(r: &[&str]) -> AllowList {
        AllowList::parse(&r.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn allow_list_rules() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let l = list(&[
            "*:80",
            "*.example.org:443",
            "127.0.0.1:*",
            "[fd00::/8]:22-23",
        ]);
        assert!(l.allows(None, ip("93.184.216.34"), 80));
        assert!(!l.allows(None, ip("93.184.216.34"), 81));
        // special ranges only by explicit rule
        assert!(!l.allows(None, ip("10.0.0.1"), 80));
        assert!(!l.allows(Some("intranet"), ip("192.168.1.1"), 80));
        assert!(!l.allows(None, ip("169.254.1.1"), 80));
        assert!(l.allows(None, ip("127.0.0.1"), 9999));
        assert!(l.allows(Some("localhost"), ip("127.0.0.1"), 1));
        assert!(!l.allows(None, ip("127.0.0.2"), 80));
        assert!(!l.allows(None, ip("::1"), 80));
        assert!(l.allows(Some("www.example.org"), ip("93.184.216.34"), 443));
        assert!(l.allows(Some("example.org"), ip("93.184.216.34"), 443));
        assert!(!l.allows(Some("badexample.org"), ip("93.184.216.34"), 443));
        assert!(!l.allows(None, ip("93.184.216.34"), 443));
        assert!(l.allows(None, ip("fd12::1"), 23));
        assert!(!l.allows(None, ip("fd12::1"), 24));
        assert!(l.allows(None, ip("::ffff:127.0.0.1"), 5));
        for bad in ["nocolon", "*:x", "*:9-1", "1.2.3.4/33:*", ":80", "*.:80"] {
            assert!(AllowList::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(list(&["127.0.0.0/8:*"]).allows(None, ip("127.80.0.9"), 8080));
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
    fn ipv6_forms_of_special_ipv4_addresses_are_special() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for special in [
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "64:ff9b:1::1",
            "2001:db8::1",
            "2001::1",
            "fec0::1",
            "100::1",
            "198.18.0.1",
            "192.0.0.8",
        ] {
            assert!(is_special(ip(special)), "{special}");
            assert!(!list(&["*:80"]).allows(None, ip(special), 80), "{special}");
        }
        for public in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(!is_special(ip(public)), "{public}");
        }
    }
}
