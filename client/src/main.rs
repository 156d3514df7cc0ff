//! `lethe-client`: keys, address, send and receive through a Lethe mixnet.
#![allow(clippy::print_stdout)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use lethe_client::{Client, ClientConfig, ConnectOptions};
use lethe_proto::ClientAddress;
use lethe_proto::seal::MAX_SEALED_MESSAGE;

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
    /// Send the message on standard input (up to one packet's payload) to ADDRESS.
    Send {
        #[command(flatten)]
        net: Net,
        /// Recipient address, as printed by `lethe-client address`.
        #[arg(long)]
        to: String,
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
        Cmd::Send { net, to } => {
            let to: ClientAddress = to.parse().context("--to")?;
            let mut msg = Vec::new();
            std::io::stdin()
                .take(MAX_SEALED_MESSAGE as u64 + 1)
                .read_to_end(&mut msg)?;
            if msg.len() > MAX_SEALED_MESSAGE {
                bail!("message is longer than one packet's {MAX_SEALED_MESSAGE} bytes");
            }
            let client = Client::connect(&net.dir, net.options()).await?;
            let delay = client.send(&to, &msg).await?;
            client.close().await;
            eprintln!(
                "sent {} bytes; hop delays add up to {} ms",
                msg.len(),
                delay.as_millis()
            );
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
            let mut got = 0usize;
            while count.is_none_or(|c| got < c) {
                let wait = match deadline {
                    Some(d) => d.saturating_duration_since(Instant::now()),
                    None => Duration::from_secs(3600),
                };
                if wait.is_zero() {
                    break;
                }
                let Some(msg) = client.recv_timeout(wait).await else {
                    if deadline.is_some() {
                        break;
                    }
                    continue;
                };
                let path = write_message(&out_dir, &msg)?;
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

/// Write `msg` to the first free `message-NNNNNN` in `dir`.
fn write_message(dir: &Path, msg: &[u8]) -> anyhow::Result<PathBuf> {
    for i in 1.. {
        let p = dir.join(format!("message-{i:06}"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(mut f) => {
                std::io::Write::write_all(&mut f, msg)?;
                return Ok(p);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| p.display().to_string()),
        }
    }
    unreachable!()
}
