//! Talking to the directory authority over HTTP: fetch and verify the topology, upload a
//! signed descriptor.

use lethe_proto::{Key32, SignedDescriptor, SignedTopology, Topology};

use crate::{NetError, http, unix_now};

/// Path of the current topology document.
pub const TOPOLOGY_PATH: &str = "/v1/topology";
/// Path descriptors are uploaded to.
pub const DESCRIPTORS_PATH: &str = "/v1/descriptors";

/// Where the directory is and whom to believe.
#[derive(Clone, Debug)]
pub struct DirectoryClient {
    /// Base URL, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    /// Authority public keys.
    pub authorities: Vec<Key32>,
    /// Signatures needed.
    pub threshold: usize,
}

impl DirectoryClient {
    fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.url.trim_end_matches('/'), path)
    }

    /// Fetch the current document and verify it.
    pub async fn fetch(&self) -> Result<Topology, NetError> {
        let url = self.endpoint(TOPOLOGY_PATH);
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

    /// Upload this node's signed descriptor.
    pub async fn register(&self, d: &SignedDescriptor) -> Result<(), NetError> {
        let url = self.endpoint(DESCRIPTORS_PATH);
        let body = serde_json::to_vec(d).map_err(|e| NetError::Directory(e.to_string()))?;
        let (status, reply) = http::request("POST", &url, Some(&body)).await?;
        if status != 200 {
            return Err(NetError::Directory(format!(
                "registration refused ({status}): {}",
                String::from_utf8_lossy(&reply)
            )));
        }
        Ok(())
    }
}
