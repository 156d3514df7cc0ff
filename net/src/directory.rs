//! Talking to the directory authority over HTTP: fetch and verify the topology, upload a
//! signed descriptor.

use lethe_proto::{Key32, SignedDescriptor, SignedTopology, Topology};

use crate::{NetError, http, unix_now};

/// Path of the current topology document.
pub const TOPOLOGY_PATH: &str = "/v1/topology";
/// Path of an authority's signature over its newest body, for its peers.
pub const VOTE_PATH: &str = "/v1/vote";
/// Path prefix of an authority's vote for a round: `/v1/held/ROUND`, the descriptors it held
/// and reached at the round's start, signed.
pub const HELD_PATH: &str = "/v1/held";
/// Path descriptors are uploaded to.
pub const DESCRIPTORS_PATH: &str = "/v1/descriptors";

/// Where the directory is and whom to believe.
#[derive(Clone, Debug)]
pub struct DirectoryClient {
    /// Base URL, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    /// Further authorities' base URLs.
    pub mirrors: Vec<String>,
    /// Authority public keys.
    pub authorities: Vec<Key32>,
    /// Signatures needed.
    pub threshold: usize,
    /// The network a document must be for (none: any).
    pub network: Option<String>,
    /// The newest (epoch, serial) accepted so far: an older document, e.g. replayed by one
    /// authority or a mirror, is refused and the next authority is asked.
    pub newest: std::sync::Arc<std::sync::Mutex<(u64, u64)>>,
    /// Where the newest (epoch, serial) is kept across restarts, if anywhere.
    pub newest_file: Option<std::path::PathBuf>,
}

impl DirectoryClient {
    /// A client of one authority.
    pub fn single(url: String, authorities: Vec<Key32>, threshold: usize) -> Self {
        DirectoryClient {
            url,
            mirrors: Vec::new(),
            authorities,
            threshold,
            network: None,
            newest: Default::default(),
            newest_file: None,
        }
    }

    /// Keep the newest (epoch, serial) accepted in `path` as well, and start from what it
    /// holds: after a restart, a document older than one accepted before is still refused.
    pub fn remember_in(mut self, path: std::path::PathBuf) -> Self {
        let saved = std::fs::read_to_string(&path).ok().and_then(|text| {
            let (e, s) = text.trim().split_once(' ')?;
            Some((e.parse().ok()?, s.parse().ok()?))
        });
        if let Some(n) = saved {
            *self.newest.lock().unwrap_or_else(|p| p.into_inner()) = n;
        }
        self.newest_file = Some(path);
        self
    }

    fn urls(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.url).chain(self.mirrors.iter())
    }

    /// Every authority, starting at a random one: no single authority is asked first by
    /// everyone, and one that is down or slow costs each fetch one try at most.
    fn urls_from_random(&self) -> Vec<&String> {
        let mut urls: Vec<&String> = self.urls().collect();
        let start = rand::random_range(0..urls.len());
        urls.rotate_left(start);
        urls
    }

    fn endpoint(base: &str, path: &str) -> String {
        format!("{}{}", base.trim_end_matches('/'), path)
    }

    /// Fetch the current document from the first authority (of all configured, from a
    /// random one on) that serves a valid one: signed by a threshold, unexpired, for our
    /// network, and not older than the newest accepted before.
    pub async fn fetch(&self) -> Result<Topology, NetError> {
        let mut last = NetError::Directory("no directory configured".into());
        for base in self.urls_from_random() {
            match self.fetch_from(base).await {
                Ok(t) => return Ok(t),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn fetch_from(&self, base: &str) -> Result<Topology, NetError> {
        let url = Self::endpoint(base, TOPOLOGY_PATH);
        let (status, body) = http::request("GET", &url, None).await?;
        if status != 200 {
            return Err(NetError::Directory(format!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let doc: SignedTopology = serde_json::from_slice(&body)
            .map_err(|e| NetError::Directory(format!("malformed document: {e}")))?;
        let t = doc
            .verify(&self.authorities, self.threshold, unix_now())
            .map_err(|e| NetError::Directory(e.to_string()))?;
        let body = t.body();
        if let Some(n) = &self.network
            && body.network != *n
        {
            return Err(NetError::Directory(format!(
                "{url} serves a document of network {:?}, not {n:?}",
                body.network
            )));
        }
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        if t.version() < *newest {
            return Err(NetError::Directory(format!(
                "{url} serves an older document (epoch {}, serial {}) than one already seen",
                body.epoch, body.serial
            )));
        }
        if *newest != t.version() {
            *newest = t.version();
            if let Some(path) = &self.newest_file {
                // Best effort: a lost write only weakens the check after a restart.
                let _ = std::fs::write(path, format!("{} {}\n", body.epoch, body.serial));
            }
        }
        Ok(t)
    }

    /// Upload this node's signed descriptor to every authority; succeeds if one accepted it.
    pub async fn register(&self, d: &SignedDescriptor) -> Result<(), NetError> {
        let body = serde_json::to_vec(d).map_err(|e| NetError::Directory(e.to_string()))?;
        let mut accepted = 0;
        let mut last = NetError::Directory("no directory configured".into());
        for base in self.urls() {
            let url = Self::endpoint(base, DESCRIPTORS_PATH);
            match http::request("POST", &url, Some(&body)).await {
                Ok((200, _)) => accepted += 1,
                Ok((status, reply)) => {
                    last = NetError::Directory(format!(
                        "registration refused ({status}): {}",
                        String::from_utf8_lossy(&reply)
                    ))
                }
                Err(e) => last = e,
            }
        }
        if accepted > 0 { Ok(()) } else { Err(last) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lethe_proto::topology::{CoverParams, identity_public_key};
    use lethe_proto::{SignedTopology, TopologyBody};
    use std::sync::{Arc, Mutex};

    /// Serve documents of `network` with the serial in `serial`, signed by `secret`.
    async fn directory(secret: [u8; 32], serial: Arc<Mutex<u64>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handler: http::Handler = Arc::new(move |_| {
            let body = TopologyBody {
                format: lethe_proto::topology::DIRECTORY_FORMAT,
                network: "net-a".into(),
                epoch: 7,
                serial: *serial.lock().unwrap(),
                valid_until: unix_now() + 3600,
                epoch_secs: 3600,
                mean_delay_ms: 10,
                max_delay_ms: 100,
                cover: CoverParams::default(),
                nodes: Vec::new(),
                exits: Vec::new(),
                route_rules: Default::default(),
            };
            let doc = SignedTopology::sign(&body, &secret).unwrap();
            http::Response::ok("application/json", serde_json::to_vec(&doc).unwrap())
        });
        let (tx, rx) = crate::shutdown::channel();
        tokio::spawn(async move {
            http::serve(listener, handler, rx).await;
            drop(tx);
        });
        url
    }

    #[tokio::test]
    async fn another_networks_or_an_older_document_is_refused_even_after_a_restart() {
        let secret = [9u8; 32];
        let key = identity_public_key(&secret);
        let serial = Arc::new(Mutex::new(100));
        let url = directory(secret, serial.clone()).await;
        let file = std::env::temp_dir().join(format!("lethe-newest-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let first = DirectoryClient::single(url.clone(), vec![key], 1).remember_in(file.clone());
        assert_eq!(first.fetch().await.unwrap().body().serial, 100);
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "7 100");
        // A restarted client (a new DirectoryClient from the same file) is offered an
        // older, still valid document: refused.
        *serial.lock().unwrap() = 50;
        let restarted =
            DirectoryClient::single(url.clone(), vec![key], 1).remember_in(file.clone());
        let err = restarted.fetch().await.unwrap_err().to_string();
        assert!(err.contains("older"), "{err}");
        *serial.lock().unwrap() = 101;
        assert_eq!(restarted.fetch().await.unwrap().body().serial, 101);
        // A document of another network: refused.
        let mut other = DirectoryClient::single(url, vec![key], 1);
        other.network = Some("net-b".into());
        let err = other.fetch().await.unwrap_err().to_string();
        assert!(err.contains("network"), "{err}");
        let _ = std::fs::remove_file(&file);
    }
}
