//! Link frames (proto/src/frame.rs): `Frame::decode` over a buffer of frames, as a link
//! reader sees a QUIC stream, and `FrameHeader::parse` (what net/src/link.rs `read_frame`
//! calls on the first four bytes). A decoded frame must re-encode to the bytes it came from.
#![no_main]

use lethe_proto::frame::{Frame, FrameHeader, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(h) = data.first_chunk::<HEADER_LEN>()
        && let Ok(header) = FrameHeader::parse(*h)
    {
        let (min, max) = header.kind.length_bounds();
        assert!(min <= header.len && header.len <= max);
    }
    let mut rest = data;
    while let Ok(Some((frame, used))) = Frame::decode(rest) {
        assert_eq!(used, HEADER_LEN + frame.body.len());
        assert!(used <= rest.len());
        let mut out = Vec::new();
        Frame::encode(frame.kind, frame.body, &mut out).expect("a decoded frame re-encodes");
        assert_eq!(out, rest[..used]);
        rest = &rest[used..];
    }
});
