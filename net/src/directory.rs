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
}

impl DirectoryClient {
    /// A client of one authority.
    pub fn single(url: String, authorities: Vec<Key32>, threshold: usize) -> Self {
        DirectoryClient {
            url,
            mirrors: Vec::new(),
            authorities,
            threshold,
        }
    }

    fn urls(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.url).chain(self.mirrors.iter())
    }

    fn endpoint(base: &str, path: &str) -> String {
        format!("{}{}", base.trim_end_matches('/'), path)
    }

    /// Fetch the current document from the first authority that serves a valid one.
    pub async fn fetch(&self) -> Result<Topology, NetError> {
        let mut last = NetError::Directory("no directory configured".into());
        for base in self.urls() {
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
        doc.verify(&self.authorities, self.threshold, unix_now())
            .map_err(|e| NetError::Directory(e.to_string()))
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
