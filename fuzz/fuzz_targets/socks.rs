//! The SOCKS5 parsers of the client's local proxy (proto/src/socks.rs): `parse_greeting`,
//! then `parse_request` on what follows it (one buffer, as client/src/socks.rs reads them),
//! and `parse_request` / `TargetAddr::decode` on the whole input. A complete parse must not
//! claim more bytes than it was given and must re-encode to the bytes it consumed.
#![no_main]

use lethe_proto::socks::{Parsed, TargetAddr, encode_request, parse_greeting, parse_request};
use libfuzzer_sys::fuzz_target;

fn request(buf: &[u8]) {
    match parse_request(buf) {
        Ok(Parsed::Complete { value, consumed }) => {
            assert!(consumed <= buf.len());
            assert_eq!(encode_request(&value), buf[..consumed]);
            let _ = value.port();
        }
        Ok(Parsed::NeedMore) => {}
        Err(e) => {
            let _ = e.reply();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match parse_greeting(data) {
        Ok(Parsed::Complete { value, consumed }) => {
            assert!(consumed <= data.len());
            assert_eq!(value.encode(), data[..consumed]);
            let _ = value.selected_method();
            request(&data[consumed..]);
        }
        Ok(Parsed::NeedMore) => {}
        Err(e) => {
            let _ = e.reply();
        }
    }
    request(data);
    if let Ok(Parsed::Complete { value, consumed }) = TargetAddr::decode(data) {
        assert!(consumed <= data.len());
        assert_eq!(value.encoded_len(), consumed);
        let mut out = Vec::new();
        value.encode(&mut out);
        assert_eq!(out, data[..consumed]);
    }
});
