//! The SOCKS5 codec (RFC 1928), sans-IO: what the local proxy reads from an application and
//! what it answers.
//!
//! A connection goes: greeting (`VER NMETHODS METHODS`), method selection (`VER METHOD`),
//! request (`VER CMD RSV ATYP DST.ADDR DST.PORT`), reply (`VER REP RSV ATYP BND.ADDR
//! BND.PORT`). Only "no authentication" (`0x00`) and `CONNECT` are supported. Parsers take
//! everything buffered so far and return [`Parsed::NeedMore`] until a whole message is there,
//! then the message and how many bytes it used; bytes after it (early application data) are
//! the caller's.
//!
//! Target addresses are what a user visits: drivers must not log them at info or above.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The protocol version byte.
pub const SOCKS_VERSION: u8 = 0x05;
/// Method "no authentication required".
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Method selection "no acceptable methods": the client must close.
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
/// Command `CONNECT`.
pub const CMD_CONNECT: u8 = 0x01;
/// Address type IPv4.
pub const ATYP_IPV4: u8 = 0x01;
/// Address type domain name (one length byte, then the name).
pub const ATYP_DOMAIN: u8 = 0x03;
/// Address type IPv6.
pub const ATYP_IPV6: u8 = 0x04;

/// Longest encoded request: `VER CMD RSV ATYP`, length byte, 255-byte name, port.
pub const MAX_REQUEST_LEN: usize = 4 + 1 + 255 + 2;

/// The result of feeding buffered bytes to a parser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole message: the value and how many bytes of the buffer it took.
    Complete { value: T, consumed: usize },
    /// The buffer holds a valid prefix; read more and call again with all of it.
    NeedMore,
}

/// Malformed or unsupported SOCKS input. The connection cannot continue after any of them;
/// [`SocksError::reply`] says what to answer first, if anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SocksError {
    #[error("SOCKS version {got} is not supported (expected 5)")]
    WrongVersion { got: u8 },
    #[error("SOCKS greeting offers no authentication methods")]
    NoMethods,
    #[error("SOCKS command {got:#04x} is not supported (only CONNECT)")]
    UnsupportedCommand { got: u8 },
    #[error("SOCKS address type {got:#04x} is not supported")]
    UnsupportedAddressType { got: u8 },
    #[error("SOCKS reserved byte is {got:#04x}, expected 0")]
    ReservedNotZero { got: u8 },
    #[error("SOCKS domain name is empty")]
    EmptyDomain,
    #[error("SOCKS domain name is not valid UTF-8")]
    DomainNotUtf8,
}

impl SocksError {
    /// The reply to send before closing: `None` for greeting errors (the client may not even
    /// speak SOCKS5), a reply code for request errors.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            SocksError::WrongVersion { .. } | SocksError::NoMethods => None,
            SocksError::UnsupportedCommand { .. } => Some(Reply::CommandNotSupported),
            SocksError::UnsupportedAddressType { .. } => Some(Reply::AddressTypeNotSupported),
            SocksError::ReservedNotZero { .. }
            | SocksError::EmptyDomain
            | SocksError::DomainNotUtf8 => Some(Reply::GeneralFailure),
        }
    }
}

/// The reply field (`REP`) of a SOCKS5 reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowedByRuleset = 0x02,
    NetworkUnreachable = 0x03,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

impl Reply {
    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The reply for a wire code; unassigned codes (`0x09..=0xFF`) are `None`.
    pub fn from_code(code: u8) -> Option<Reply> {
        Some(match code {
            0x00 => Reply::Succeeded,
            0x01 => Reply::GeneralFailure,
            0x02 => Reply::NotAllowedByRuleset,
            0x03 => Reply::NetworkUnreachable,
            0x04 => Reply::HostUnreachable,
            0x05 => Reply::ConnectionRefused,
            0x06 => Reply::TtlExpired,
            0x07 => Reply::CommandNotSupported,
            0x08 => Reply::AddressTypeNotSupported,
            _ => return None,
        })
    }
}

/// A client's greeting: the authentication methods it offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// The offered method codes, in the client's order (1 to 255 of them).
    pub methods: Vec<u8>,
}

impl Greeting {
    /// The method to select: no-auth if offered, else [`METHOD_NONE_ACCEPTABLE`] (answer it,
    /// then close).
    pub fn selected_method(&self) -> u8 {
        if self.methods.contains(&METHOD_NO_AUTH) {
            METHOD_NO_AUTH
        } else {
            METHOD_NONE_ACCEPTABLE
        }
    }

    /// The greeting's wire form (for tests and clients).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.methods.len());
        out.push(SOCKS_VERSION);
        out.push(u8::try_from(self.methods.len()).unwrap_or(u8::MAX));
        out.extend(self.methods.iter().take(255));
        out
    }
}

/// Where a `CONNECT` should go.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    /// An IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A domain name (1 to 255 bytes of UTF-8, resolved by the exit) and port.
    Domain(String, u16),
}

impl TargetAddr {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ip(a) => a.port(),
            TargetAddr::Domain(_, p) => *p,
        }
    }

    /// Bytes of [`TargetAddr::encode`].
    pub fn encoded_len(&self) -> usize {
        match self {
            TargetAddr::Ip(SocketAddr::V4(_)) => 1 + 4 + 2,
            TargetAddr::Ip(SocketAddr::V6(_)) => 1 + 16 + 2,
            TargetAddr::Domain(name, _) => 1 + 1 + name.len().min(255) + 2,
        }
    }

    /// Append `ATYP ADDR PORT` as in a SOCKS request or reply. A domain longer than 255
    /// bytes cannot be built by the parser; if constructed by hand it is truncated.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            TargetAddr::Ip(SocketAddr::V4(a)) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&a.ip().octets());
            }
            TargetAddr::Ip(SocketAddr::V6(a)) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&a.ip().octets());
            }
            TargetAddr::Domain(name, _) => {
                let bytes = &name.as_bytes()[..name.len().min(255)];
                out.push(ATYP_DOMAIN);
                out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(bytes);
            }
        }
        out.extend_from_slice(&self.port().to_be_bytes());
    }

    /// Parse `ATYP ADDR PORT` at the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Parsed<TargetAddr>, SocksError> {
        let Some(&atyp) = buf.first() else {
            return Ok(Parsed::NeedMore);
        };
        let rest = &buf[1..];
        let (addr_len, skip) = match atyp {
            ATYP_IPV4 => (4, 0),
            ATYP_IPV6 => (16, 0),
            ATYP_DOMAIN => match rest.first() {
                None => return Ok(Parsed::NeedMore),
                Some(0) => return Err(SocksError::EmptyDomain),
                Some(&n) => (usize::from(n), 1),
            },
            got => return Err(SocksError::UnsupportedAddressType { got }),
        };
        let total = 1 + skip + addr_len + 2;
        if buf.len() < total {
            return Ok(Parsed::NeedMore);
        }
        let addr = &buf[1 + skip..1 + skip + addr_len];
        let port = u16::from_be_bytes([buf[total - 2], buf[total - 1]]);
        let value = match atyp {
            ATYP_IPV4 => {
                let mut o = [0u8; 4];
                o.copy_from_slice(addr);
                TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
            }
            ATYP_IPV6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(addr);
                TargetAddr::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
            }
            _ => {
                let name = std::str::from_utf8(addr).map_err(|_| SocksError::DomainNotUtf8)?;
                TargetAddr::Domain(name.to_owned(), port)
            }
        };
        Ok(Parsed::Complete {
            value,
            consumed: total,
        })
    }
}

/// Parse a greeting from everything buffered so far.
pub fn parse_greeting(buf: &[u8]) -> Result<Parsed<Greeting>, SocksError> {
    let Some(&ver) = buf.first() else {
        return Ok(Parsed::NeedMore);
    };
    if ver != SOCKS_VERSION {
        return Err(SocksError::WrongVersion { got: ver });
    }
    let Some(&n) = buf.get(1) else {
        return Ok(Parsed::NeedMore);
    };
    if n == 0 {
        return Err(SocksError::NoMethods);
    }
    let total = 2 + usize::from(n);
    if buf.len() < total {
        return Ok(Parsed::NeedMore);
    }
    Ok(Parsed::Complete {
        value: Greeting {
            methods: buf[2..total].to_vec(),
        },
        consumed: total,
    })
}

/// Parse a `CONNECT` request from everything buffered so far; returns its target.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<TargetAddr>, SocksError> {
    // Check each fixed byte as soon as it is there, so bad input fails early.
    if let Some(&ver) = buf.first()
        && ver != SOCKS_VERSION
    {
        return Err(SocksError::WrongVersion { got: ver });
    }
    if let Some(&cmd) = buf.get(1)
        && cmd != CMD_CONNECT
    {
        return Err(SocksError::UnsupportedCommand { got: cmd });
    }
    if let Some(&rsv) = buf.get(2)
        && rsv != 0
    {
        return Err(SocksError::ReservedNotZero { got: rsv });
    }
    if buf.len() < 4 {
        return Ok(Parsed::NeedMore);
    }
    match TargetAddr::decode(&buf[3..])? {
        Parsed::NeedMore => Ok(Parsed::NeedMore),
        Parsed::Complete { value, consumed } => Ok(Parsed::Complete {
            value,
            consumed: 3 + consumed,
        }),
    }
}

/// Encode a `CONNECT` request (for tests and clients).
pub fn encode_request(target: &TargetAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + target.encoded_len());
    out.extend_from_slice(&[SOCKS_VERSION, CMD_CONNECT, 0]);
    target.encode(&mut out);
    out
}

/// The method selection message: `VER METHOD`.
pub fn encode_method_selection(method: u8) -> [u8; 2] {
    [SOCKS_VERSION, method]
}

/// A reply: `VER REP RSV ATYP BND.ADDR BND.PORT`. The bound address is `0.0.0.0:0` when
/// `None`: the real outbound socket is at the exit, and its address is not the client's
/// business (nor the application's).
pub fn encode_reply(reply: Reply, bound: Option<SocketAddr>) -> Vec<u8> {
    let bound = TargetAddr::Ip(bound.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))));
    let mut out = Vec::with_capacity(3 + bound.encoded_len());
    out.extend_from_slice(&[SOCKS_VERSION, reply.code(), 0]);
    bound.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete<T>(p: Parsed<T>) -> (T, usize) {
        match p {
            Parsed::Complete { value, consumed } => (value, consumed),
            Parsed::NeedMore => panic!("expected a complete message"),
        }
    }

    #[test]
    fn greeting_selects_no_auth_or_refuses() {
        let (g, n) = complete(parse_greeting(&[5, 2, 2, 0, 0xAA]).unwrap());
        assert_eq!(n, 4);
        assert_eq!(g.methods, vec![2, 0]);
        assert_eq!(g.selected_method(), METHOD_NO_AUTH);
        assert_eq!(encode_method_selection(g.selected_method()), [5, 0]);
        let (g, _) = complete(parse_greeting(&[5, 1, 2]).unwrap());
        assert_eq!(g.selected_method(), METHOD_NONE_ACCEPTABLE);
        assert_eq!(encode_method_selection(g.selected_method()), [5, 0xFF]);
    }

    #[test]
    fn greeting_needs_more_until_complete() {
        let full = [5u8, 3, 1, 2, 0];
        for len in 0..full.len() {
            assert_eq!(parse_greeting(&full[..len]).unwrap(), Parsed::NeedMore);
        }
        assert_eq!(complete(parse_greeting(&full).unwrap()).1, 5);
    }

    #[test]
    fn greeting_errors() {
        assert_eq!(
            parse_greeting(&[4, 1, 0]),
            Err(SocksError::WrongVersion { got: 4 })
        );
        assert_eq!(parse_greeting(&[5, 0]), Err(SocksError::NoMethods));
        assert_eq!(SocksError::NoMethods.reply(), None);
        // a wrong version fails on the first byte, without waiting for more
        assert!(parse_greeting(&[0x47]).is_err());
    }

    #[test]
    fn requests_of_each_address_type() {
        let v4 = [5, 1, 0, 1, 10, 0, 0, 1, 0x01, 0xBB];
        let (t, n) = complete(parse_request(&v4).unwrap());
        assert_eq!(n, 10);
        assert_eq!(t, TargetAddr::Ip("10.0.0.1:443".parse().unwrap()));

        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 80]);
        let (t, n) = complete(parse_request(&v6).unwrap());
        assert_eq!(n, 22);
        assert_eq!(t, TargetAddr::Ip("[2001:db8::1]:80".parse().unwrap()));

        let mut d = vec![5, 1, 0, 3, 11];
        d.extend_from_slice(b"example.org");
        d.extend_from_slice(&[0x1F, 0x90, 0xEE]); // port 8080, then one byte of early data
        let (t, n) = complete(parse_request(&d).unwrap());
        assert_eq!(n, d.len() - 1);
        assert_eq!(t, TargetAddr::Domain("example.org".into(), 8080));
        assert_eq!(encode_request(&t), d[..n]);
    }

    #[test]
    fn request_needs_more_until_complete() {
        let mut d = vec![5, 1, 0, 3, 3];
        d.extend_from_slice(b"a.b");
        d.extend_from_slice(&[0, 1]);
        for len in 0..d.len() {
            assert_eq!(parse_request(&d[..len]).unwrap(), Parsed::NeedMore, "{len}");
        }
        assert!(matches!(
            parse_request(&d).unwrap(),
            Parsed::Complete { .. }
        ));
    }

    #[test]
    fn request_errors_map_to_reply_codes() {
        let e = parse_request(&[5, 2, 0, 1]).unwrap_err(); // BIND
        assert_eq!(e, SocksError::UnsupportedCommand { got: 2 });
        assert_eq!(e.reply(), Some(Reply::CommandNotSupported));
        let e = parse_request(&[5, 3]).unwrap_err(); // UDP ASSOCIATE, early
        assert_eq!(e.reply().map(Reply::code), Some(0x07));
        let e = parse_request(&[5, 1, 0, 2, 0, 0]).unwrap_err();
        assert_eq!(e, SocksError::UnsupportedAddressType { got: 2 });
        assert_eq!(e.reply().map(Reply::code), Some(0x08));
        assert_eq!(
            parse_request(&[4, 1]),
            Err(SocksError::WrongVersion { got: 4 })
        );
        assert_eq!(
            parse_request(&[5, 1, 1]),
            Err(SocksError::ReservedNotZero { got: 1 })
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0, 0, 80]),
            Err(SocksError::EmptyDomain)
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 1, 0xFF, 0, 80]),
            Err(SocksError::DomainNotUtf8)
        );
    }

    #[test]
    fn replies_have_the_rfc_codes() {
        let codes = [
            (Reply::Succeeded, 0x00),
            (Reply::GeneralFailure, 0x01),
            (Reply::NotAllowedByRuleset, 0x02),
            (Reply::NetworkUnreachable, 0x03),
            (Reply::HostUnreachable, 0x04),
            (Reply::ConnectionRefused, 0x05),
            (Reply::TtlExpired, 0x06),
            (Reply::CommandNotSupported, 0x07),
            (Reply::AddressTypeNotSupported, 0x08),
        ];
        for (r, c) in codes {
            assert_eq!(r.code(), c);
            assert_eq!(Reply::from_code(c), Some(r));
            assert_eq!(encode_reply(r, None), vec![5, c, 0, 1, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(Reply::from_code(9), None);
        assert_eq!(Reply::from_code(0xFF), None);
        let b = encode_reply(Reply::Succeeded, Some("[::1]:1080".parse().unwrap()));
        assert_eq!(b.len(), 4 + 16 + 2);
        assert_eq!(&b[..4], &[5, 0, 0, 4]);
        assert_eq!(&b[20..], &[0x04, 0x38]);
    }
}
