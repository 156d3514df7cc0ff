//! The authority's HTTP routes, and the server that runs them with its tasks.

use std::sync::{Arc, Mutex};

use lethe_net::directory::{DESCRIPTORS_PATH, HELD_PATH, TOPOLOGY_PATH, VOTE_PATH};
use lethe_net::shutdown::Shutdown;
use lethe_net::{http, unix_now};
use lethe_proto::{Key32, SignedDescriptor};
use tracing::{debug, info};

use super::AuthorityError;
use super::documents::to_json;
use super::gather::gather;
use super::probe::probe;
use super::state::AuthorityState;
use crate::NodeError;
use crate::config::NodeConfig;
use crate::keys::NodeKeys;

/// Serve the directory over HTTP until `shutdown`.
pub async fn run(cfg: NodeConfig, keys: NodeKeys, shutdown: Shutdown) -> Result<(), NodeError> {
    let addr = cfg.node.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind { addr, source })?;
    let peer_keys = cfg
        .authority
        .peer_keys
        .iter()
        .map(|k| Key32::parse_hex(k, "authority.peer_keys"))
        .collect::<Result<Vec<_>, _>>()?;
    let state = Arc::new(Mutex::new(AuthorityState::new(
        cfg.authority.clone(),
        keys.identity,
        peer_keys,
    )));
    let gather = tokio::spawn(gather(
        state.clone(),
        cfg.authority.peers.clone(),
        cfg.authority.vote_interval_secs,
        shutdown.clone(),
    ));
    let id = keys.id();
    let prober = tokio::spawn(probe(state.clone(), keys, addr.ip(), shutdown.clone()));
    let json = |v: Result<Vec<u8>, AuthorityError>| match v {
        Ok(v) => http::Response::ok("application/json", v),
        Err(e @ (AuthorityError::NoDocument { .. } | AuthorityError::NoVote { .. })) => {
            http::Response::error(503, e.to_string())
        }
        Err(e) => http::Response::error(500, e.to_string()),
    };
    let handler: http::Handler = Arc::new(move |r: http::Request| {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        let now = unix_now();
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", VOTE_PATH) => match st.vote() {
                Some(v) => json(to_json(&v)),
                None => http::Response::error(503, "no body signed yet"),
            },
            ("GET", TOPOLOGY_PATH) => json(st.document(now)),
            ("GET", p) if p.starts_with(HELD_PATH) => {
                let round = p[HELD_PATH.len()..]
                    .strip_prefix('/')
                    .and_then(|r| r.parse::<u64>().ok());
                match round {
                    Some(round) => json(st.own_vote(round, now).and_then(|v| to_json(&v))),
                    None => http::Response::error(400, "GET /v1/held/ROUND"),
                }
            }
            ("POST", DESCRIPTORS_PATH) => {
                let parsed: Result<SignedDescriptor, _> = serde_json::from_slice(&r.body);
                match parsed {
                    Ok(d) => match st.register(d, now) {
                        Ok(_) => http::Response::ok("text/plain", "accepted"),
                        Err(e) => {
                            // Anyone can upload: a refusal is theirs to read, not a warning
                            // in our log.
                            debug!(error = %e, "descriptor refused");
                            http::Response::error(400, e.to_string())
                        }
                    },
                    Err(e) => http::Response::error(400, format!("malformed descriptor: {e}")),
                }
            }
            _ => http::Response::error(
                404,
                "GET /v1/topology, GET /v1/vote, GET /v1/held/ROUND or POST /v1/descriptors",
            ),
        }
    });
    info!(addr = %lethe_net::Sensitive::new(addr), key = %id, "directory authority serving");
    http::serve(listener, handler, shutdown).await;
    gather.abort();
    prober.abort();
    info!("directory authority stopped");
    Ok(())
}
