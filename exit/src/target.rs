//! Opening a target: resolve, check every address against the allow-list, connect with a
//! bounded send buffer, within the connect timeout.

use std::net::SocketAddr;
use std::time::Duration;

use lethe_proto::socks::{Reply, TargetAddr};
use tokio::net::TcpStream;

#[allow(unused_imports)]
use crate::*;

/// Resolve, check and connect; a failure is the SOCKS reply code to reset with.
pub(crate) async fn open_target(
    allow: &AllowList,
    target: &TargetAddr,
    timeout: Duration,
) -> Result<TcpStream, Reply> {
    let work = async {
        let (name, addrs): (Option<&str>, Vec<SocketAddr>) = match target {
            TargetAddr::Ip(a) => (None, vec![*a]),
            TargetAddr::Domain(n, p) => (
                Some(n.as_str()),
                tokio::net::lookup_host((n.as_str(), *p))
                    .await
                    .map_err(|_| Reply::HostUnreachable)?
                    .collect(),
            ),
        };
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| allow.allows(name, a.ip(), a.port()))
            .collect();
        if allowed.is_empty() {
            return Err(Reply::NotAllowedByRuleset);
        }
        let mut last = Reply::HostUnreachable;
        for a in allowed {
            match connect_bounded(a).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    last = match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
                        std::io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
                        std::io::ErrorKind::HostUnreachable => Reply::HostUnreachable,
                        std::io::ErrorKind::TimedOut => Reply::TtlExpired,
                        _ => Reply::GeneralFailure,
                    }
                }
            }
        }
        Err(last)
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(Reply::TtlExpired))
}

/// The kernel's send buffer for a target connection: what a target that stops reading can
/// make the exit hold in the kernel, per stream (on top of `max_buffered` in the stream's
/// own buffer); small enough that a stalled target is seen within `stall_secs`.
pub(crate) const TARGET_SEND_BUFFER: u32 = 64 * 1024;

/// Connect to a target with a bounded send buffer.
pub(crate) async fn connect_bounded(a: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if a.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_send_buffer_size(TARGET_SEND_BUFFER)?;
    socket.connect(a).await
}
