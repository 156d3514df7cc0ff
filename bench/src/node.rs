//! `lethe-bench node`: one real `lethe-node` relay process (a layer-2 mix) under load over
//! real QUIC on loopback.
//!
//! The bench registers two stand-in relays with a real directory authority: a layer-1 mix
//! (the load generator) and a layer-3 mix (the sink). It pre-builds every packet before the
//! clock starts (route: relay under test, then the sink), and pre-computes what each looks
//! like after the relay's hop, so the sink recognises packets by their first 32 bytes
//! without doing any crypto. Then it offers a rising rate, step by step, and reports for
//! each: packets/s forwarded, the relay's CPU time per packet (from /proc), the latency it
//! adds beyond the requested delay, and drops. It stops at saturation, then measures the
//! added latency at half the saturation rate, and reads the relay's peak RSS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lethe_net::clock::Clock;
use lethe_net::directory::DirectoryClient;
use lethe_net::link::{ReadOutcome, push_frame, read_frame};
use lethe_net::{TlsIdentity, files, tls};
use lethe_proto::packet::{HopSpec, build_packet, sphinx_public_key};
use lethe_proto::topology::{NodeDescriptor, Role, identity_public_key};
use lethe_proto::{
    ClientId, FrameKind, Key32, NodeId, Processed, SignedDescriptor, SphinxNode, Topology,
};
use rand::Rng;
use serde::Serialize;

use crate::procs::{NodeProcess, cpu_seconds, free_port, node_cmd, peak_rss_mib};
use crate::stats::{Latencies, Percentiles, rate};

/// Options of `node`.
#[derive(Clone, Debug)]
pub struct NodeOpts {
    /// Offered rates, packets/s, in order.
    pub rates: Vec<u64>,
    /// Seconds per step.
    pub step_secs: f64,
    /// Per-hop delay every packet asks the relay for, ms.
    pub delay_ms: u64,
    /// Sphinx worker threads of the relay (0 = one per core).
    pub workers: usize,
}

/// One step of offered load.
#[derive(Debug, Serialize, Clone)]
pub struct Step {
    pub offered_pps: f64,
    pub forwarded_pps: f64,
    pub cpu_us_per_packet: f64,
    pub added_latency: Percentiles,
    pub dropped: u64,
    pub lost: u64,
    /// Relay CPU per packet over `sphinx-packet`'s bare `process`, timed in this run.
    pub cpu_over_sphinx_process: f64,
}

/// Results of `node`.
#[derive(Debug, Serialize)]
pub struct NodeReport {
    pub workers: usize,
    pub delay_ms: u64,
    pub steps: Vec<Step>,
    pub saturation_pps: f64,
    /// `sphinx-packet`'s `from_bytes` + `process` on these packets, one thread, us.
    pub sphinx_process_us: f64,
    pub half_saturation: Option<Step>,
    pub peak_rss_mib: f64,
}

struct Bed {
    _auth: NodeProcess,
    relay: NodeProcess,
    relay_metrics: SocketAddr,
    relay_hop: HopSpec,
    relay_secret: [u8; 32],
    relay_addr: SocketAddr,
    relay_cert: Key32,
    sink_hop: HopSpec,
    sink_endpoint: quinn::Endpoint,
    /// The sink's signed descriptor, its answer to the authority's probes.
    sink_json: Arc<Vec<u8>>,
    gen_tls: TlsIdentity,
}

fn stand_in(
    role_layer: u8,
    address: SocketAddr,
    tls: &TlsIdentity,
) -> anyhow::Result<(SignedDescriptor, HopSpec)> {
    let mut rng = rand::rng();
    let mut identity = [0u8; 32];
    let mut sphinx = [0u8; 32];
    rng.fill_bytes(&mut identity);
    rng.fill_bytes(&mut sphinx);
    // The bench's authority uses the default epoch length: publish the key for this
    // epoch and the next.
    let epoch = lethe_net::unix_now() / 3600;
    let key = sphinx_public_key(&sphinx);
    let d = NodeDescriptor {
        id: NodeId(identity_public_key(&identity)),
        role: Role::Mix,
        layer: Some(role_layer),
        address,
        sphinx_keys: vec![
            lethe_proto::EpochKey { epoch, key },
            lethe_proto::EpochKey {
                epoch: epoch + 1,
                key,
            },
        ],
        tls_cert: tls.cert_hash(),
        published: lethe_net::unix_now(),
        family: None,
        family_proof: None,
        country: None,
    };
    let hop = HopSpec {
        id: d.id,
        sphinx_key: key,
    };
    Ok((SignedDescriptor::sign(&d, &identity)?, hop))
}

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let Ok((200, body)) =
        lethe_net::http::request("GET", &format!("http://{addr}/metrics"), None).await
    else {
        return -1.0;
    };
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Answer the authority's liveness probes on `ep`: complete the handshake and describe
/// the stand-in (`descriptor`, its signed descriptor's JSON).
async fn answer_probes(ep: quinn::Endpoint, descriptor: Arc<Vec<u8>>) {
    while let Some(inc) = ep.accept().await {
        tokio::spawn(answer_probe(inc, descriptor.clone()));
    }
}

async fn answer_probe(inc: quinn::Incoming, descriptor: Arc<Vec<u8>>) {
    let Ok(conn) = inc.await else { return };
    if let Ok((send, recv)) = conn.accept_bi().await {
        let _ = lethe_net::link::answer_describe(send, recv, &descriptor).await;
    }
}

async fn setup(dir: &Path, opts: &NodeOpts) -> anyhow::Result<Bed> {
    let auth_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let relay_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let auth_dir = dir.join("authority");
    let relay_dir = dir.join("relay");
    let key = node_cmd(&[
        "init",
        "--dir",
        path(&auth_dir)?,
        "--role",
        "authority",
        "--listen",
        &auth_addr.to_string(),
        "--mean-delay-ms",
        "1",
        "--max-delay-ms",
        "1000",
        "--vote-interval-secs",
        "1",
    ])?;
    let auth = NodeProcess::start(&auth_dir)?;
    let url = format!("http://{auth_addr}");
    node_cmd(&[
        "init",
        "--dir",
        path(&relay_dir)?,
        "--role",
        "mix",
        "--layer",
        "2",
        "--listen",
        &relay_addr.to_string(),
        "--metrics",
        &metrics.to_string(),
        "--directory",
        &url,
        "--authority-key",
        &key,
        "--refresh-secs",
        "1",
    ])?;
    if opts.workers > 0 {
        let cfg = relay_dir.join("node.toml");
        let text = std::fs::read_to_string(&cfg)?;
        std::fs::write(
            &cfg,
            text.replace("workers = 0", &format!("workers = {}", opts.workers)),
        )?;
    }
    let relay = NodeProcess::start(&relay_dir)?;

    let sink_tls = TlsIdentity::generate()?;
    let sink_endpoint =
        quinn::Endpoint::server(tls::server_config(&sink_tls)?, "127.0.0.1:0".parse()?)?;
    let sink_addr = sink_endpoint.local_addr()?;
    let gen_tls = TlsIdentity::generate()?;
    // The authority lists only relays it reaches: the generator answers its probes on an
    // endpoint of its own (it sends from another), the sink on its own endpoint (answered
    // here until the measurement's accept loop takes over).
    let gen_probe = quinn::Endpoint::server(tls::server_config(&gen_tls)?, "127.0.0.1:0".parse()?)?;
    let (gen_desc, _) = stand_in(1, gen_probe.local_addr()?, &gen_tls)?;
    tokio::spawn(answer_probes(
        gen_probe,
        Arc::new(serde_json::to_vec(&gen_desc)?),
    ));
    let (sink_desc, sink_hop) = stand_in(3, sink_addr, &sink_tls)?;
    let sink_json = Arc::new(serde_json::to_vec(&sink_desc)?);
    let directory = DirectoryClient::single(url, vec![Key32::parse_hex(&key, "authority key")?], 1);
    // The authority may still be starting.
    let deadline = Instant::now() + Duration::from_secs(15);
    let topo: Topology = loop {
        let _ = directory.register(&gen_desc).await;
        let _ = directory.register(&sink_desc).await;
        if let Ok(t) = directory.fetch().await
            && t.nodes().len() == 3
            && metric(metrics, "lethe_topology_nodes").await == 3.0
        {
            break t;
        }
        if Instant::now() > deadline {
            bail!(
                "the relay did not load the 3-node topology within 15 s; see {}",
                dir.display()
            );
        }
        tokio::select! {
            Some(inc) = sink_endpoint.accept() => {
                tokio::spawn(answer_probe(inc, sink_json.clone()));
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    let relay_id: NodeId = node_cmd(&["id", "--dir", path(&relay_dir)?])?.parse()?;
    let rd = topo.node(&relay_id).context("relay not in topology")?;
    // Packets for this epoch's key, whose secret the relay keeps in its directory.
    let epoch = topo.epoch_at(lethe_net::unix_now());
    let relay_secret = files::read_key32(&relay_dir.join(format!("sphinx-{epoch}.key")))?;
    Ok(Bed {
        _auth: auth,
        relay_hop: HopSpec {
            id: rd.id,
            sphinx_key: rd
                .key_for(epoch)
                .context("relay has no key for this epoch")?,
        },
        relay_cert: rd.tls_cert,
        relay,
        relay_metrics: metrics,
        relay_secret,
        relay_addr,
        sink_hop,
        sink_endpoint,
        sink_json,
        gen_tls,
    })
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// A pre-built packet and the first 32 bytes it will have after the relay's hop.
type Built = (Vec<u8>, [u8; 32]);
/// Packets, and each one's index by its post-hop tag.
type Fixture = (Vec<Vec<u8>>, HashMap<[u8; 32], usize>);

/// Packets and, for each, the first 32 bytes it will have after the relay's hop.
fn build(
    bed: &Bed,
    n: usize,
    delay: Duration,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Fixture> {
    let route = [bed.relay_hop, bed.sink_hop];
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let per = n.div_ceil(threads);
    let relay = SphinxNode::new(bed.relay_secret, Duration::from_secs(10));
    let parts: Vec<anyhow::Result<Vec<Built>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let relay = &relay;
                s.spawn(move || {
                    let mut rng = rand::rng();
                    let count = per.min(n.saturating_sub(t * per));
                    let mut out = Vec::with_capacity(count);
                    for _ in 0..count {
                        let p = build_packet(
                            &mut rng,
                            &route,
                            ClientId::from_bytes([0; 32]),
                            &[delay, Duration::ZERO],
                            b"bench",
                        )?;
                        let Processed::Forward { packet, .. } =
                            relay.process(p.as_bytes(), |_| false)?
                        else {
                            bail!("relay would not forward");
                        };
                        let mut tag = [0u8; 32];
                        tag.copy_from_slice(&packet.as_bytes()[..32]);
                        out.push((p.into_vec(), tag));
                        progress.inc(1);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("builder panicked")))
            })
            .collect()
    });
    let mut packets = Vec::with_capacity(n);
    let mut index = HashMap::with_capacity(n);
    for part in parts {
        for (p, tag) in part? {
            index.insert(tag, packets.len());
            packets.push(p);
        }
    }
    Ok((packets, index))
}

/// Accept the relay's link and stamp each packet's arrival (ns on `clock`).
fn spawn_sink(
    ep: quinn::Endpoint,
    descriptor: Arc<Vec<u8>>,
    index: Arc<HashMap<[u8; 32], usize>>,
    arrivals: Arc<Vec<AtomicU64>>,
    clock: Clock,
) {
    tokio::spawn(async move {
        while let Some(inc) = ep.accept().await {
            let index = index.clone();
            let arrivals = arrivals.clone();
            let descriptor = descriptor.clone();
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                // The authority keeps probing the sink while the bench runs.
                let probe = conn.clone();
                tokio::spawn(async move {
                    while let Ok((send, recv)) = probe.accept_bi().await {
                        let _ = lethe_net::link::answer_describe(send, recv, &descriptor).await;
                    }
                });
                while let Ok(mut recv) = conn.accept_uni().await {
                    let index = index.clone();
                    let arrivals = arrivals.clone();
                    tokio::spawn(async move {
                        let mut body = Vec::new();
                        while let Ok(ReadOutcome::Frame(FrameKind::Packet)) =
                            read_frame(&mut recv, &mut body).await
                        {
                            let now = clock.now().as_nanos();
                            if let Some(tag) = body.first_chunk::<32>()
                                && let Some(&i) = index.get(tag)
                            {
                                arrivals[i].store(now.max(1), Ordering::Relaxed);
                            }
                        }
                    });
                }
            });
        }
    });
}

/// Offer `pps` for `secs` using packets from `next`; returns the range of indices used.
async fn offer(
    send: &mut quinn::SendStream,
    packets: &[Vec<u8>],
    next: &mut usize,
    pps: f64,
    secs: f64,
    sends: &[AtomicU64],
    clock: Clock,
) -> anyhow::Result<(usize, usize, f64)> {
    let start_idx = *next;
    let t0 = Instant::now();
    let mut buf = Vec::with_capacity(64 * 2500);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let el = t0.elapsed().as_secs_f64();
        if el >= secs {
            break;
        }
        let due = ((el * pps) as usize).min((secs * pps) as usize);
        let sent = *next - start_idx;
        if due <= sent {
            continue;
        }
        buf.clear();
        let end = (start_idx + due).min(packets.len());
        if end <= *next {
            bail!("ran out of pre-built packets");
        }
        let now = clock.now().as_nanos();
        for i in *next..end {
            push_frame(&mut buf, FrameKind::Packet, &packets[i])?;
            sends[i].store(now.max(1), Ordering::Relaxed);
        }
        send.write_all(&buf).await?;
        *next = end;
    }
    Ok((start_idx, *next, t0.elapsed().as_secs_f64()))
}

/// Everything a load step reads.
struct Load<'a> {
    bed: &'a Bed,
    packets: &'a [Vec<u8>],
    sends: &'a [AtomicU64],
    arrivals: &'a [AtomicU64],
    clock: Clock,
    opts: &'a NodeOpts,
}

async fn measure_step(
    l: &Load<'_>,
    send: &mut quinn::SendStream,
    next: &mut usize,
    pps: f64,
) -> anyhow::Result<Step> {
    let (bed, packets, sends, arrivals, clock, opts) =
        (l.bed, l.packets, l.sends, l.arrivals, l.clock, l.opts);
    let cpu0 = cpu_seconds(bed.relay.pid())?;
    let drops0 = metric(bed.relay_metrics, "lethe_packets_dropped_total").await;
    let (from, to, secs) = offer(send, packets, next, pps, opts.step_secs, sends, clock).await?;
    // Let the last packets through (delay plus a margin).
    tokio::time::sleep(Duration::from_millis(opts.delay_ms + 300)).await;
    let cpu = cpu_seconds(bed.relay.pid())? - cpu0;
    let dropped =
        (metric(bed.relay_metrics, "lethe_packets_dropped_total").await - drops0).max(0.0) as u64;
    let mut lat = Latencies::new();
    let mut arrived = 0u64;
    let delay_ns = opts.delay_ms * 1_000_000;
    for i in from..to {
        let (s, a) = (
            sends[i].load(Ordering::Relaxed),
            arrivals[i].load(Ordering::Relaxed),
        );
        if a > 0 {
            arrived += 1;
            lat.record_us(a.saturating_sub(s).saturating_sub(delay_ns) / 1000);
        }
    }
    let offered = (to - from) as u64;
    Ok(Step {
        offered_pps: rate(offered, secs),
        forwarded_pps: rate(arrived, secs),
        cpu_us_per_packet: if arrived > 0 {
            cpu * 1e6 / arrived as f64
        } else {
            0.0
        },
        added_latency: lat.summary(),
        dropped,
        lost: offered - arrived,
        cpu_over_sphinx_process: 0.0,
    })
}

/// Run the node benchmark.
pub async fn run(opts: NodeOpts, progress: &indicatif::ProgressBar) -> anyhow::Result<NodeReport> {
    let dir = tempfile::tempdir()?;
    progress.set_message("starting authority and relay");
    let bed = setup(dir.path(), &opts).await?;
    let budget: usize = (opts.rates.first().copied().unwrap_or(100) as f64
        * opts.step_secs.min(1.0)) as usize
        + opts
            .rates
            .iter()
            .map(|r| (*r as f64 * opts.step_secs).ceil() as usize + 64)
            .sum::<usize>()
        + (opts.rates.iter().max().copied().unwrap_or(0) as f64 * opts.step_secs) as usize / 2
        + 64;
    progress.set_length(budget as u64);
    progress.set_message("pre-building packets");
    let delay = Duration::from_millis(opts.delay_ms);
    let (packets, index) = build(&bed, budget, delay, progress)?;
    // The reference cost, in this run: sphinx-packet's own hop on up to 2000 of the packets.
    let sample = &packets[..packets.len().min(2000)];
    let sk = sphinx_packet::crypto::PrivateKey::from(bed.relay_secret);
    let t = Instant::now();
    for p in sample {
        let ok = sphinx_packet::SphinxPacket::from_bytes(p).and_then(|x| x.process(&sk));
        anyhow::ensure!(ok.is_ok(), "sphinx-packet refused a bench packet");
    }
    let sphinx_process_us = t.elapsed().as_secs_f64() * 1e6 / sample.len().max(1) as f64;
    let sends: Vec<AtomicU64> = (0..packets.len()).map(|_| AtomicU64::new(0)).collect();
    let arrivals: Arc<Vec<AtomicU64>> =
        Arc::new((0..packets.len()).map(|_| AtomicU64::new(0)).collect());
    let clock = Clock::new();
    spawn_sink(
        bed.sink_endpoint.clone(),
        bed.sink_json.clone(),
        Arc::new(index),
        arrivals.clone(),
        clock,
    );

    let ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let conn = tls::connect(&ep, &bed.gen_tls, bed.relay_addr, bed.relay_cert).await?;
    let mut send = conn.open_uni().await?;
    let mut next = 0usize;
    let mut steps = Vec::new();
    let load = Load {
        bed: &bed,
        packets: &packets,
        sends: &sends,
        arrivals: &arrivals,
        clock,
        opts: &opts,
    };
    progress.set_length(opts.rates.len() as u64 + 1);
    progress.set_position(0);
    progress.set_message("offering load");
    let mut saturation: f64 = 0.0;
    // Warm up (links, allocations, caches) at the first rate, unmeasured.
    let warm = opts.step_secs.min(1.0);
    let first = opts.rates.first().copied().unwrap_or(100) as f64;
    offer(&mut send, &packets, &mut next, first, warm, &sends, clock).await?;
    tokio::time::sleep(Duration::from_millis(opts.delay_ms + 300)).await;
    for &r in &opts.rates {
        let step = measure_step(&load, &mut send, &mut next, r as f64).await?;
        progress.inc(1);
        saturation = saturation.max(step.forwarded_pps);
        let saturated = step.forwarded_pps < 0.9 * step.offered_pps;
        steps.push(step);
        if saturated {
            break;
        }
    }
    progress.set_message("half of saturation");
    // After an overload the relay still holds a backlog: wait until it has forwarded what
    // it will (its packet counter stands still for a second), at most 15 s.
    let mut last = -1.0;
    for _ in 0..15 {
        let out = metric(bed.relay_metrics, "lethe_packets_out_total").await;
        if out == last {
            break;
        }
        last = out;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut half = if saturation > 0.0
        && next + (saturation / 2.0 * opts.step_secs) as usize <= packets.len()
    {
        Some(measure_step(&load, &mut send, &mut next, saturation / 2.0).await?)
    } else {
        None
    };
    progress.inc(1);
    let rss = peak_rss_mib(bed.relay.pid())?;
    let _ = send.finish();
    conn.close(0u32.into(), b"done");
    for st in steps.iter_mut().chain(half.iter_mut()) {
        st.cpu_over_sphinx_process = crate::stats::ratio(st.cpu_us_per_packet, sphinx_process_us);
    }
    Ok(NodeReport {
        sphinx_process_us,
        workers: opts.workers,
        delay_ms: opts.delay_ms,
        steps,
        saturation_pps: saturation,
        half_saturation: half,
        peak_rss_mib: rss,
    })
}
