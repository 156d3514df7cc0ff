#![doc = include_str!("../README.md")]

mod allow;
mod config;
mod service;
mod target;

pub use allow::{AllowList, is_special};
pub use config::{EXIT_FILE, ExitError, ExitFile, ExitSection, address, init, is_exit};
pub use lethe_client::ClientConfig;
pub use service::run;
#[allow(unused_imports)]
use {service::*, target::*};

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn list(r: &[&str]) -> AllowList {
        AllowList::parse(&r.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn allow_list_rules() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let l = list(&[
            "*:80",
            "*.example.org:443",
            "127.0.0.1:*",
            "[fd00::/8]:22-23",
        ]);
        assert!(l.allows(None, ip("93.184.216.34"), 80));
        assert!(!l.allows(None, ip("93.184.216.34"), 81));
        // special ranges only by explicit rule
        assert!(!l.allows(None, ip("10.0.0.1"), 80));
        assert!(!l.allows(Some("intranet"), ip("192.168.1.1"), 80));
        assert!(!l.allows(None, ip("169.254.1.1"), 80));
        assert!(l.allows(None, ip("127.0.0.1"), 9999));
        assert!(l.allows(Some("localhost"), ip("127.0.0.1"), 1));
        assert!(!l.allows(None, ip("127.0.0.2"), 80));
        assert!(!l.allows(None, ip("::1"), 80));
        assert!(l.allows(Some("www.example.org"), ip("93.184.216.34"), 443));
        assert!(l.allows(Some("example.org"), ip("93.184.216.34"), 443));
        assert!(!l.allows(Some("badexample.org"), ip("93.184.216.34"), 443));
        assert!(!l.allows(None, ip("93.184.216.34"), 443));
        assert!(l.allows(None, ip("fd12::1"), 23));
        assert!(!l.allows(None, ip("fd12::1"), 24));
        assert!(l.allows(None, ip("::ffff:127.0.0.1"), 5));
        for bad in ["nocolon", "*:x", "*:9-1", "1.2.3.4/33:*", ":80", "*.:80"] {
            assert!(AllowList::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(list(&["127.0.0.0/8:*"]).allows(None, ip("127.80.0.9"), 8080));
    }

    #[test]
    fn ipv6_forms_of_special_ipv4_addresses_are_special() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for special in [
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "64:ff9b:1::1",
            "2001:db8::1",
            "2001::1",
            "fec0::1",
            "100::1",
            "198.18.0.1",
            "192.0.0.8",
        ] {
            assert!(is_special(ip(special)), "{special}");
            assert!(!list(&["*:80"]).allows(None, ip(special), 80), "{special}");
        }
        for public in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(!is_special(ip(public)), "{public}");
        }
    }
}
