//! `lethe-node`: run a Lethe relay or directory authority.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use lethe_node::config::{
    AuthoritySection, DirectorySection, DownstreamModeConfig, GatewaySection, LimitsSection,
    MixingSection, NodeSection, ReplaySection,
};
use lethe_node::{NodeConfig, NodeKeys, NodeRole};

#[derive(Parser)]
#[command(
    name = "lethe-node",
    version,
    about = "A Lethe mixnet relay or directory authority"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum DownstreamArg {
    Burst,
    Strict,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Mix,
    Gateway,
    Authority,
    /// The exit service: a client of a gateway that opens TCP connections for SOCKS streams.
    Exit,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Cmd {
    /// Create a node directory with node.toml and fresh keys (files 0600).
    Init {
        /// The node's directory.
        #[arg(long)]
        dir: PathBuf,
        /// What the node does.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Mix layer (1-3), mixes only.
        #[arg(long)]
        layer: Option<u8>,
        /// QUIC (relays) or HTTP (authority) listen address; for an exit, the local address
        /// of its QUIC endpoint to the gateway.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Exit: the gateway to attach to (hex node id); picked at random if absent.
        #[arg(long)]
        gateway: Option<String>,
        /// Exit: allow-list rule HOST:PORT (repeatable; default *:80 and *:443).
        #[arg(long = "allow")]
        allow: Vec<String>,
        /// Address to publish, if not the listen address.
        #[arg(long)]
        public_address: Option<SocketAddr>,
        /// Serve Prometheus metrics on this TCP address.
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Directory authority URL (relays).
        #[arg(long)]
        directory: Option<String>,
        /// Further directory authority URLs to upload to and fetch from (repeatable).
        #[arg(long = "mirror")]
        mirrors: Vec<String>,
        /// Authority public key in hex (repeatable).
        #[arg(long = "authority-key")]
        authority_keys: Vec<String>,
        /// Authority signatures a document needs (for an authority: before it serves it).
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        /// Authority: another authority's URL, whose votes it collects (repeatable).
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// Authority: another authority's public key in hex, one per --peer (repeatable).
        #[arg(long = "peer-key")]
        peer_keys: Vec<String>,
        /// Authority: seconds per voting round.
        #[arg(long, default_value_t = 30)]
        vote_interval_secs: u64,
        /// Seconds between topology fetches.
        #[arg(long, default_value_t = 30)]
        refresh_secs: u64,
        /// Authority: network name.
        #[arg(long, default_value = "lethe")]
        network: String,
        /// Authority: mean per-hop delay in ms.
        #[arg(long, default_value_t = 50)]
        mean_delay_ms: u64,
        /// Authority: largest per-hop delay in ms.
        #[arg(long, default_value_t = 1000)]
        max_delay_ms: u64,
        /// Authority: epoch length in seconds.
        #[arg(long, default_value_t = 3600)]
        epoch_secs: u64,
        /// Authority: clients' payload stream, mean ms between sends (0 = off).
        #[arg(long, default_value_t = 20)]
        cover_payload_mean_ms: u64,
        /// Authority: clients' loop cover stream, mean ms between sends (0 = off).
        #[arg(long, default_value_t = 200)]
        cover_loop_mean_ms: u64,
        /// Authority: clients' drop cover stream, mean ms between sends (0 = off).
        #[arg(long, default_value_t = 200)]
        cover_drop_mean_ms: u64,
        /// Authority: each mix's loop cover stream, mean ms between loops (0 = off).
        #[arg(long, default_value_t = 1000)]
        cover_mix_loop_mean_ms: u64,
        /// Authority: downstream cover, mean ms between a gateway's slots to each client
        /// (0 = off).
        #[arg(long, default_value_t = 20)]
        cover_downstream_mean_ms: u64,
        /// Authority: downstream cover mode, `burst` or `strict`.
        #[arg(long, value_enum, default_value_t = DownstreamArg::Burst)]
        cover_downstream_mode: DownstreamArg,
        /// Authority: exit services' payload stream, mean ms between sends (0 = off).
        #[arg(long, default_value_t = 5)]
        cover_exit_payload_mean_ms: u64,
    },
    /// Run the node until SIGTERM or Ctrl-C.
    Run {
        /// The node's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Print client addresses, destinations and next hops in logs. Only for debugging a
        /// private test network: it defeats the point of a mixnet.
        #[arg(long)]
        unsafe_logging: bool,
    },
    /// Print the node's identity key (for an authority: the key relays and clients trust;
    /// for an exit: its address CLIENT.KEY@GATEWAY).
    Id {
        /// The node's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print an exit's address (CLIENT.KEY@GATEWAY), which SOCKS proxies use as --exit.
    Address {
        /// The exit's directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Init {
            dir,
            role,
            layer,
            listen,
            public_address,
            metrics,
            directory,
            mirrors,
            authority_keys,
            threshold,
            peers,
            peer_keys,
            vote_interval_secs,
            refresh_secs,
            network,
            mean_delay_ms,
            max_delay_ms,
            epoch_secs,
            cover_payload_mean_ms,
            cover_loop_mean_ms,
            cover_drop_mean_ms,
            cover_mix_loop_mean_ms,
            cover_downstream_mean_ms,
            cover_downstream_mode,
            cover_exit_payload_mean_ms,
            gateway,
            allow,
        } => {
            let role = match role {
                RoleArg::Mix => NodeRole::Mix,
                RoleArg::Gateway => NodeRole::Gateway,
                RoleArg::Authority => NodeRole::Authority,
                RoleArg::Exit => {
                    let client = lethe_exit::ClientConfig {
                        directory: directory.unwrap_or_default(),
                        mirrors: mirrors.clone(),
                        authority_keys,
                        threshold,
                        gateway,
                        network: None,
                    };
                    let mut exit = lethe_exit::ExitSection {
                        bind: listen,
                        ..Default::default()
                    };
                    if !allow.is_empty() {
                        exit.allow = allow;
                    }
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let addr = rt
                        .block_on(lethe_exit::init(&dir, client, exit))
                        .with_context(|| format!("initialising {}", dir.display()))?;
                    println!("{addr}");
                    eprintln!(
                        "initialised exit service in {} (address printed above)",
                        dir.display()
                    );
                    return Ok(());
                }
            };
            let listen = listen.context("--listen is required")?;
            let cfg = NodeConfig {
                node: NodeSection {
                    role,
                    layer,
                    listen,
                    public_address,
                    metrics_listen: metrics,
                    workers: 0,
                },
                directory: DirectorySection {
                    url: directory.unwrap_or_default(),
                    mirrors,
                    authority_keys,
                    threshold,
                    refresh_secs,
                    ..Default::default()
                },
                mixing: MixingSection::default(),
                replay: ReplaySection::default(),
                gateway: GatewaySection::default(),
                limits: LimitsSection::default(),
                cover: Default::default(),
                authority: AuthoritySection {
                    network,
                    epoch_secs,
                    mean_delay_ms,
                    max_delay_ms,
                    peers,
                    peer_keys,
                    vote_interval_secs,
                    cover_payload_mean_ms,
                    cover_loop_mean_ms,
                    cover_drop_mean_ms,
                    cover_mix_loop_mean_ms,
                    cover_downstream_mean_ms,
                    cover_downstream_mode: match cover_downstream_mode {
                        DownstreamArg::Burst => DownstreamModeConfig::Burst,
                        DownstreamArg::Strict => DownstreamModeConfig::Strict,
                    },
                    cover_exit_payload_mean_ms,
                    threshold: if role == NodeRole::Authority {
                        threshold
                    } else {
                        1
                    },
                    ..Default::default()
                },
            };
            let keys = lethe_node::init(&dir, &cfg)
                .with_context(|| format!("initialising {}", dir.display()))?;
            println!("{}", keys.id());
            eprintln!(
                "initialised {:?} node in {} (id printed above)",
                role,
                dir.display()
            );
            Ok(())
        }
        Cmd::Id { dir } | Cmd::Address { dir } if lethe_exit::is_exit(&dir) => {
            println!("{}", lethe_exit::address(&dir)?);
            Ok(())
        }
        Cmd::Address { dir } => anyhow::bail!("{} holds no exit service", dir.display()),
        Cmd::Id { dir } => {
            let keys = NodeKeys::load(&dir)?;
            println!("{}", keys.id());
            Ok(())
        }
        Cmd::Run {
            dir,
            unsafe_logging,
        } => {
            lethe_net::logging::init("info", unsafe_logging);
            if unsafe_logging {
                lethe_net::sensitive::enable_unsafe_logging();
                tracing::warn!(
                    "--unsafe-logging is on: client addresses and next hops will appear in logs"
                );
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let shown = dir.display().to_string();
            rt.block_on(async move {
                let (trigger, rx) = lethe_net::shutdown::channel();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    trigger.fire();
                    // Held until the process ends: a dropped trigger counts as fired.
                    std::future::pending::<()>().await;
                });
                if lethe_exit::is_exit(&dir) {
                    lethe_exit::run(&dir, rx).await?;
                    return Ok(());
                }
                lethe_node::run(&dir, rx).await.map_err(anyhow::Error::from)
            })
            .with_context(|| format!("node in {shown}"))?;
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
