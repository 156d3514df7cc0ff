//! QUIC endpoints with pinned identities.
//!
//! Every endpoint has a self-signed certificate; what identifies it is the BLAKE3 hash of
//! that certificate, published in its signed descriptor (relays) or used as its id (clients).
//! There is no CA and no trust on first use:
//! - a connecting side accepts the server only if the certificate hashes to the pinned value
//!   taken from the verified topology;
//! - a server requires a client certificate, checks the handshake signature with it, and
//!   decides after the handshake who the peer is: a relay listed in the topology, or a client.
//!
//! TLS 1.3 only, aws-lc-rs provider, whose default key exchange is the hybrid post-quantum
//! X25519MLKEM768.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lethe_proto::Key32;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::{NetError, files};

/// ALPN protocol id of Lethe links.
pub const ALPN: &[u8] = b"lethe/1";
/// Server name used in handshakes (identity comes from the pinned certificate hash).
pub const SERVER_NAME: &str = "lethe";

const CERT_FILE: &str = "tls.crt";
const KEY_FILE: &str = "tls.key";

/// The crypto provider of every Lethe endpoint: aws-lc-rs, with the hybrid post-quantum
/// X25519MLKEM768 as the only key exchange. Every Lethe peer speaks it, so nothing is lost,
/// and recorded link traffic stays safe against a future quantum computer. (rustls only puts
/// it first by default with its `prefer-post-quantum` feature; we do not rely on features.)
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];
    Arc::new(p)
}

/// A self-signed certificate and its private key.
pub struct TlsIdentity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsIdentity({})", self.cert_hash())
    }
}

/// BLAKE3 of a certificate's DER bytes.
pub fn cert_hash(cert: &[u8]) -> Key32 {
    Key32(*blake3::hash(cert).as_bytes())
}

impl TlsIdentity {
    /// A fresh ECDSA P-256 key and self-signed certificate.
    pub fn generate() -> Result<Self, NetError> {
        let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(|e| NetError::Tls(e.to_string()))?;
        Ok(TlsIdentity {
            cert: ck.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        })
    }

    /// Write `tls.crt` and `tls.key` (0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), NetError> {
        files::write_public(&dir.join(CERT_FILE), &self.cert)?;
        files::write_secret(&dir.join(KEY_FILE), self.key.secret_pkcs8_der())
    }

    /// Load `tls.crt` and `tls.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, NetError> {
        let cert = files::read_public(&dir.join(CERT_FILE))?;
        let key = files::read_secret(&dir.join(KEY_FILE))?;
        Ok(TlsIdentity {
            cert: CertificateDer::from(cert),
            key: PrivatePkcs8KeyDer::from(key),
        })
    }

    /// The hash peers pin.
    pub fn cert_hash(&self) -> Key32 {
        cert_hash(&self.cert)
    }

    /// A secret derived from the private key for one purpose (`context` names it), so a
    /// client needs no second key file.
    pub fn derive_secret(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, self.key.secret_pkcs8_der())
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Link transport settings: keep-alives so idle links survive NAT and notice dead peers.
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    Arc::new(base_transport())
}

fn base_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(4)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(15)) {
        t.max_idle_timeout(Some(idle));
    }
    t.max_concurrent_uni_streams(16u32.into());
    // One bidirectional stream at a time: a liveness probe's question and its answer.
    t.max_concurrent_bidi_streams(1u32.into());
    t
}

/// Link settings of a client in a network whose downstream cover is strict: as
/// [`transport_config`], and every datagram it sends is padded to one size (path MTU
/// discovery off, so the size stays QUIC's 1,200-byte minimum). The acknowledgements it
/// sends for what its gateway writes then all look alike on the wire, whatever their
/// fields hold (packet numbers and counts grow past a varint's byte boundary during a
/// connection's life).
pub fn padded_transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = base_transport();
    t.pad_to_mtu(true);
    t.mtu_discovery_config(None);
    Arc::new(t)
}

/// The handshake-signature half of both verifiers: TLS 1.2 is never offered; a TLS 1.3
/// signature must verify with the certificate's key.
macro_rules! handshake_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

#[derive(Debug)]
struct PinnedServer {
    pinned: Key32,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if cert_hash(end_entity) == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    handshake_signature_checks!();
}

/// Accepts any client certificate that proves possession of its key; the server maps the
/// certificate's hash to a relay or a client after the handshake.
#[derive(Debug)]
struct AnyClientCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    handshake_signature_checks!();
}

fn tls_err(e: impl std::fmt::Display) -> NetError {
    NetError::Tls(e.to_string())
}

/// Server side of a relay: requires a client certificate.
pub fn server_config(id: &TlsIdentity) -> Result<quinn::ServerConfig, NetError> {
    let provider = provider();
    let verifier = Arc::new(AnyClientCert {
        algs: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![id.cert.clone()], id.key())
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(tls_err)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport_config());
    Ok(cfg)
}

/// Connecting side: presents `id` and accepts only a server whose certificate hashes to
/// `pinned`.
pub fn client_config(id: &TlsIdentity, pinned: Key32) -> Result<quinn::ClientConfig, NetError> {
    let provider = provider();
    let verifier = Arc::new(PinnedServer {
        pinned,
        algs: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![id.cert.clone()], id.key())
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(tls_err)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport_config());
    Ok(cfg)
}

/// The hash of the certificate the peer presented.
pub fn peer_cert_hash(conn: &quinn::Connection) -> Option<Key32> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| cert_hash(c))
}

/// Connect to `addr`, accepting only the certificate hashing to `pinned`.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    id: &TlsIdentity,
    addr: std::net::SocketAddr,
    pinned: Key32,
) -> Result<quinn::Connection, NetError> {
    connect_with(endpoint, id, addr, pinned, false).await
}

/// [`connect`], with every datagram padded to one size when `padded`
/// ([`padded_transport_config`]).
pub async fn connect_with(
    endpoint: &quinn::Endpoint,
    id: &TlsIdentity,
    addr: std::net::SocketAddr,
    pinned: Key32,
    padded: bool,
) -> Result<quinn::Connection, NetError> {
    let mut cfg = client_config(id, pinned)?;
    if padded {
        cfg.transport_config(padded_transport_config());
    }
    let connecting = endpoint.connect_with(cfg, addr, SERVER_NAME)?;
    Ok(connecting.await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_quantum_hybrid_key_exchange_is_the_only_one() {
        let p = provider();
        let names: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(names, vec![rustls::NamedGroup::X25519MLKEM768]);
    }

    #[tokio::test]
    async fn pinning_accepts_the_right_server_and_refuses_others() {
        let server_id = TlsIdentity::generate().unwrap();
        let client_id = TlsIdentity::generate().unwrap();
        let server = quinn::Endpoint::server(
            server_config(&server_id).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        let expected_client = client_id.cert_hash();
        let accept = tokio::spawn(async move {
            // the first attempt (wrong pin) fails its handshake; take the first that succeeds
            loop {
                let incoming = server.accept().await.unwrap();
                if let Ok(conn) = incoming.await {
                    return peer_cert_hash(&conn);
                }
            }
        });
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        // wrong pin: refused by our verifier
        let wrong = connect(&client, &client_id, addr, Key32([0; 32])).await;
        assert!(wrong.is_err());
        let conn = connect(&client, &client_id, addr, server_id.cert_hash())
            .await
            .unwrap();
        assert_eq!(peer_cert_hash(&conn), Some(server_id.cert_hash()));
        assert_eq!(accept.await.unwrap(), Some(expected_client));
    }
}
