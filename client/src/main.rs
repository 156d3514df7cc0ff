//! `lethe-client`: keys, address, send and receive through a Lethe mixnet.
#![allow(clippy::print_stdout)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use lethe_client::message::MAX_MESSAGE_BYTES;
use lethe_client::{Client, ClientConfig, ConnectOptions};
use lethe_proto::ClientAddress;

#[derive(Parser)]
#[command(
    name = "lethe-client",
    version,
    about = "Send and receive through a Lethe mixnet"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Net {
    /// The client's directory.
    #[arg(long)]
    dir: PathBuf,
    /// Directory authority URL (overrides client.toml).
    #[arg(long)]
    directory: Option<String>,
    /// Authority key in hex, repeatable (overrides client.toml).
    #[arg(long = "authority-key")]
    authority_keys: Vec<String>,
    /// Another authority's URL, repeatable: documents are fetched from every authority
    /// (overrides client.toml when given).
    #[arg(long = "mirror")]
    mirrors: Vec<String>,
    /// Local address of the QUIC endpoint: an IP address, or IP:PORT.
    #[arg(long, value_parser = parse_bind)]
    bind: Option<SocketAddr>,
}

impl Net {
    fn options(&self) -> ConnectOptions {
        ConnectOptions {
            directory: self.directory.clone(),
            authority_keys: self.authority_keys.clone(),
            mirrors: self.mirrors.clone(),
            bind: self.bind,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a client directory: TLS identity and client.toml; picks a gateway.
    Init {
        #[command(flatten)]
        net: Net,
        /// Use this gateway (hex node id) instead of a random one.
        #[arg(long)]
        gateway: Option<String>,
        /// Authority signatures a topology document needs.
        #[arg(long, default_value_t = 1)]
        threshold: usize,
    },
    /// Print the address others send to (CLIENT.KEY@GATEWAY: KEY is the key messages to
    /// this client are sealed to).
    Address {
        /// The client's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Make a new recipient key (and so a new address to hand out). The previous key is
    /// kept to open messages already sealed to it; the next rotation deletes it.
    RotateKey {
        /// The client's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Send a message (standard input, or --file; up to 64 MiB) to ADDRESS, on the cover
    /// schedule, and wait until the recipient has acknowledged and written all of it (exit
    /// status 0), or --timeout passes (non-zero, with the reason).
    Send {
        #[command(flatten)]
        net: Net,
        /// Recipient address, as printed by `lethe-client address`.
        #[arg(long)]
        to: String,
        /// Send this file instead of standard input.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Give up when the recipient has not acknowledged the whole message after this
        /// many seconds (an offline recipient is retried until then).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Send no cover traffic (by default the message's packets take the payload slots
        /// of the client's cover streams, so that sending looks like idling).
        #[arg(long)]
        no_cover: bool,
    },
    /// Receive messages into OUT, one file per message.
    Receive {
        #[command(flatten)]
        net: Net,
        /// Where to write messages.
        #[arg(long)]
        out_dir: PathBuf,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Send no cover traffic while receiving (by default the client sends the payload,
        /// loop and drop streams at the rates the network publishes, so that it looks like
        /// every other client).
        #[arg(long)]
        no_cover: bool,
    },
    /// Serve a local SOCKS5 proxy (no authentication, CONNECT) whose connections cross the
    /// mixnet to the exit service at ADDRESS; runs until Ctrl-C or the gateway goes away.
    Socks {
        #[command(flatten)]
        net: Net,
        /// TCP address of the SOCKS5 server.
        #[arg(long, default_value = "127.0.0.1:1080")]
        listen: SocketAddr,
        /// The exit service's address (CLIENT.KEY@GATEWAY, from `lethe-node address`).
        #[arg(long)]
        exit: String,
        /// Send no cover traffic (by default the proxy sends the payload, loop and drop
        /// streams at the network's rates, and its streams' packets wait for payload slots,
        /// so the gateway cannot tell browsing from idling; this bounds upload speed to the
        /// payload rate).
        #[arg(long)]
        no_cover: bool,
        /// Accept SOCKS clients from other hosts (a --listen address that is not
        /// loopback): anyone who reaches it can use your proxy and your mixnet identity.
        #[arg(long)]
        allow_remote: bool,
    },
}

/// `--bind`: `IP:PORT`, or a bare IP address (any port).
fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 0))
        })
        .map_err(|_| format!("{s:?} is neither an IP address nor IP:PORT"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The client has no unsafe logging: its dependencies' logs never name peers.
    lethe_net::logging::init("warn", false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(cli.cmd))
}

async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Init {
            net,
            gateway,
            threshold,
        } => {
            let cfg = ClientConfig {
                directory: net.directory.clone().unwrap_or_default(),
                mirrors: net.mirrors.clone(),
                authority_keys: net.authority_keys.clone(),
                threshold,
                gateway,
                network: None,
            };
            let addr = lethe_client::init(&net.dir, cfg).await?;
            println!("{addr}");
        }
        Cmd::Address { dir } => println!("{}", lethe_client::address(&dir)?),
        Cmd::RotateKey { dir } => {
            lethe_client::keys::rotate(&dir)?;
            println!("{}", lethe_client::address(&dir)?);
            eprintln!(
                "new address above; the previous key still opens what was sealed to it until \
                 the next rotation"
            );
        }
        Cmd::Send {
            net,
            to,
            file,
            timeout,
            no_cover,
        } => {
            let to: ClientAddress = to.parse().context("--to")?;
            let limit = MAX_MESSAGE_BYTES as u64 + 1;
            let mut msg = Vec::new();
            match &file {
                Some(p) => std::fs::File::open(p)
                    .and_then(|f| f.take(limit).read_to_end(&mut msg))
                    .with_context(|| format!("--file {}", p.display()))?,
                None => std::io::stdin().take(limit).read_to_end(&mut msg)?,
            };
            if msg.len() > MAX_MESSAGE_BYTES {
                bail!("the message is larger than the limit of {MAX_MESSAGE_BYTES} bytes");
            }
            send(net, to, msg, Duration::from_secs(timeout), no_cover).await?;
        }
        Cmd::Receive {
            net,
            out_dir,
            count,
            timeout,
            no_cover,
        } => {
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            let client = Arc::new(Client::connect(&net.dir, net.options()).await?);
            client.subscribe().await?;
            let cover = start_cover(&client, no_cover)?;
            let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s));
            let (tx, mut delivered) = tokio::sync::mpsc::channel(16);
            let messages = client.take_messages().await;
            let (stop, stopped) = lethe_net::shutdown::channel();
            let mut service = tokio::spawn(lethe_client::message::receive(
                client.clone(),
                messages,
                out_dir.clone(),
                tx,
                stopped,
            ));
            let mut got = 0usize;
            while count.is_none_or(|c| got < c) {
                let wait = match deadline {
                    Some(d) => d.saturating_duration_since(Instant::now()),
                    None => Duration::from_secs(3600),
                };
                if wait.is_zero() {
                    break;
                }
                tokio::select! {
                    p = delivered.recv() => {
                        let Some(path) = p else { break };
                        println!("{}", path.display());
                        got += 1;
                    }
                    r = &mut service => {
                        r.context("the receiving task failed")??;
                        break;
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            // Answer the messages already written until their senders know (bounded); those
            // that end meanwhile are written, named and printed too. The senders of
            // unfinished ones learn that they broke off from the next `receive`.
            stop.fire();
            let drain_end = Instant::now() + lethe_client::message::DRAIN + Duration::from_secs(1);
            while !service.is_finished() {
                tokio::select! {
                    Some(path) = delivered.recv() => {
                        println!("{}", path.display());
                        got += 1;
                    }
                    _ = &mut service => break,
                    _ = tokio::time::sleep_until(drain_end.into()) => {
                        service.abort();
                        break;
                    }
                }
            }
            while let Ok(path) = delivered.try_recv() {
                println!("{}", path.display());
                got += 1;
            }
            if let Some(c) = cover {
                c.stop().await;
            }
            if let Ok(c) = Arc::try_unwrap(client) {
                c.close().await;
            }
            eprintln!("received {got} messages");
            if let Some(c) = count
                && got < c
            {
                bail!("timed out after {got} of {c} messages");
            }
        }
        Cmd::Socks {
            net,
            listen,
            exit,
            no_cover,
            allow_remote,
        } => {
            if !listen.ip().is_loopback() && !allow_remote {
                anyhow::bail!(
                    "--listen {listen} is not a loopback address: anyone who reaches it could use this proxy; add --allow-remote if that is what you want"
                );
            }
            if !listen.ip().is_loopback() {
                tracing::warn!(listen = %lethe_net::Sensitive::new(listen), "SOCKS proxy open to other hosts (--allow-remote)");
            }
            let exit: ClientAddress = exit.parse().context("--exit")?;
            let client = std::sync::Arc::new(Client::connect(&net.dir, net.options()).await?);
            let _cover = start_cover(&client, no_cover)?;
            let cfg = lethe_client::socks::SocksConfig::new(listen, exit);
            eprintln!("SOCKS5 proxy on {listen}");
            tokio::select! {
                r = lethe_client::socks::serve(client, cfg) => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    Ok(())
}

/// Start cover traffic unless `no_cover`; a network that publishes no rates gets a warning.
fn start_cover(
    client: &Arc<Client>,
    no_cover: bool,
) -> anyhow::Result<Option<lethe_client::Cover>> {
    if no_cover {
        return Ok(None);
    }
    match client.start_cover() {
        Ok(c) => Ok(Some(c)),
        Err(lethe_client::ClientError::NoCover) => {
            tracing::warn!(
                "the network publishes no cover traffic rates: this client's sending times are visible"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Send `msg` on a stream to `to`, with a progress bar on a terminal, until the recipient
/// acknowledged it all or `timeout` passes.
async fn send(
    net: Net,
    to: ClientAddress,
    msg: Vec<u8>,
    timeout: Duration,
    no_cover: bool,
) -> anyhow::Result<()> {
    use lethe_client::forward::{Opener, OpenerConfig};
    use lethe_client::message::{self, SendOptions};
    let total = msg.len() as u64;
    let client = Arc::new(Client::connect(&net.dir, net.options()).await?);
    let opener = Opener::start(client.clone(), OpenerConfig::default()).await?;
    let cover = start_cover(&client, no_cover)?;
    let (tx, mut rx) = tokio::sync::watch::channel(0u64);
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} acknowledged, {bytes_per_sec}, {elapsed}",
    ) {
        bar.set_style(style);
    }
    let started = Instant::now();
    // Progress, and a word when the recipient says nothing for a while.
    let watcher = {
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut last_change = Instant::now();
            let mut told = false;
            loop {
                match tokio::time::timeout(Duration::from_secs(1), rx.changed()).await {
                    Ok(Ok(())) => {
                        bar.set_position(*rx.borrow());
                        last_change = Instant::now();
                        told = false;
                    }
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
                if !told && last_change.elapsed() >= SILENCE_NOTE {
                    told = true;
                    bar.suspend(|| {
                        eprintln!(
                            "no acknowledgement from the recipient for {} s (offline? busy?); \
                             retrying until the timeout",
                            last_change.elapsed().as_secs()
                        )
                    });
                }
            }
        })
    };
    let result = message::send(
        &opener,
        to,
        msg,
        SendOptions {
            timeout,
            progress: Some(tx),
        },
    )
    .await;
    watcher.abort();
    bar.finish_and_clear();
    if let Some(c) = cover {
        c.stop().await;
    }
    drop(opener);
    if let Ok(c) = Arc::try_unwrap(client) {
        c.close().await;
    }
    result?;
    eprintln!(
        "delivered {total} bytes: the recipient acknowledged all of them in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How long `send` waits without any acknowledgement before it says so.
const SILENCE_NOTE: Duration = Duration::from_secs(15);
