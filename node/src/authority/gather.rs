//! The exchange with peer authorities: every tick, fetch the votes and signatures this
//! authority lacks and conclude the round when it can.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lethe_net::directory::{HELD_PATH, VOTE_PATH};
use lethe_net::shutdown::Shutdown;
use lethe_net::{http, unix_now};
use lethe_proto::Key32;
use lethe_proto::consensus::SignedVote;
use tracing::debug;

use super::Vote;
use super::state::AuthorityState;

/// Every tick: make this round's vote, fetch the peers' votes this authority lacks and
/// their signatures, and conclude the round when it can.
pub(super) async fn gather(
    state: Arc<Mutex<AuthorityState>>,
    peers: Vec<String>,
    round_secs: u64,
    mut shutdown: Shutdown,
) {
    let tick = Duration::from_millis((round_secs * 1000 / 8).clamp(100, 500));
    // Which key answered at each peer's URL (learnt from its first valid vote).
    let mut keys: HashMap<String, Key32> = HashMap::new();
    loop {
        let now = unix_now();
        let round = {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            let round = st.round_at(now);
            let _ = st.own_vote(round, now);
            round
        };
        for peer in &peers {
            let base = peer.trim_end_matches('/');
            let have = keys.get(peer).is_some_and(|k| {
                let st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.has_vote(round, k)
            });
            if !have
                && let Ok((200, body)) =
                    http::request("GET", &format!("{base}{HELD_PATH}/{round}"), None).await
                && let Ok(vote) = serde_json::from_slice::<SignedVote>(&body)
            {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                match st.add_peer_held(&vote, unix_now()) {
                    Ok(k) => {
                        keys.insert(peer.clone(), k);
                    }
                    Err(e) => debug!(error = %e, "peer's vote refused"),
                }
            }
            if let Ok((200, body)) = http::request("GET", &format!("{base}{VOTE_PATH}"), None).await
                && let Ok(vote) = serde_json::from_slice::<Vote>(&body)
            {
                let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                st.add_peer_vote(vote);
            }
        }
        {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = st.conclude(unix_now()) {
                debug!(error = %e, "round not concluded");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.wait() => return,
        }
    }
}
