//! The directory task: fetch the topology, rotate keys, register our descriptor, purge
//! the mailbox, on the schedule the directory and the epochs set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe_proto::SignedDescriptor;
use tracing::{info, warn};

use crate::metrics::Reason;

use super::state::*;

/// Register our descriptor and keep the topology fresh.
pub(super) async fn directory_task(shared: Arc<Shared>) {
    let register_every = Duration::from_secs(shared.cfg.directory.register_secs);
    let refresh_every = Duration::from_secs(shared.cfg.directory.refresh_secs);
    let mut next_register = Instant::now();
    let mut next_refresh = Instant::now();
    let mut registered = false;
    let mut backoff = Duration::from_millis(100);
    loop {
        let now = Instant::now();
        // The topology first: it tells the epoch length our keys follow.
        if now >= next_refresh {
            match shared.directory.fetch().await {
                Ok(t) => {
                    let first = shared.topology().is_none();
                    if first {
                        info!(
                            nodes = t.nodes().len(),
                            epoch = t.epoch(),
                            "topology loaded"
                        );
                    }
                    shared.set_topology(t);
                    next_refresh = now
                        + if first {
                            Duration::from_secs(1)
                        } else {
                            refresh_every
                        };
                }
                Err(e) => {
                    lethe_net::warn_limited!(Duration::from_secs(60), error = %e, "topology fetch failed; retrying");
                    next_refresh = now + Duration::from_secs(1);
                }
            }
        }
        let unix = lethe_net::unix_now();
        match shared.rotate(unix) {
            Ok(true) => {
                info!("Sphinx keys rotated; publishing them");
                next_register = now;
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "Sphinx key rotation failed"),
        }
        let epoch = shared.topology().map(|t| t.epoch_at(unix));
        if let Some(epoch) = epoch
            && now >= next_register
        {
            // Signed afresh each time: the authority keeps only the newest descriptor.
            let signed = match SignedDescriptor::sign(
                &shared.descriptor(unix, epoch),
                &shared.keys.identity,
            ) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot sign our descriptor");
                    return;
                }
            };
            if let Ok(json) = serde_json::to_vec(&signed) {
                match shared.own_descriptor.write() {
                    Ok(mut d) => *d = json,
                    Err(p) => *p.into_inner() = json,
                }
            }
            match shared.directory.register(&signed).await {
                Ok(()) => {
                    if !registered {
                        info!("registered with the directory");
                    }
                    registered = true;
                    next_register = now + register_every;
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    lethe_net::warn_limited!(Duration::from_secs(60), error = %e, "directory registration failed; retrying");
                    next_register = now + backoff;
                    backoff = (backoff * 2).min(register_every);
                }
            }
        }
        if shared.is_gateway() {
            let mut mb = lock(&shared.mailbox);
            for _ in 0..mb.purge(shared.now()) {
                shared.metrics.count_drop(Reason::Expired);
            }
            shared.metrics.mailbox_messages.set(mb.len() as i64);
        }
        // Also wake at the next epoch boundary and at the end of the overlap after it.
        let rotation = shared.topology().map(|t| {
            let next = lethe_proto::keyring::next_change(unix, t.body().epoch_secs);
            now + Duration::from_secs(next.saturating_sub(unix)) + Duration::from_millis(50)
        });
        let mut wake = next_register.min(next_refresh);
        if let Some(r) = rotation {
            wake = wake.min(r);
        }
        let mut sd = shared.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            () = sd.wait() => return,
        }
    }
}
