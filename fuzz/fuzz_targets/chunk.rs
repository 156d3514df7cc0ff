//! Stream chunks (proto/src/stream.rs `Chunk::decode`): what an exit reads from every
//! delivered message and a client from every SURB reply. A chunk that decodes from at most
//! `MAX_MESSAGE_LEN` bytes (all a packet can carry) must re-encode to the same bytes. Each
//! decoded chunk is also handed to a fresh `Receiver`, and its ack to a `Sender` with chunks
//! in flight, as the exit and the client do.
#![no_main]

use lethe_proto::Timestamp;
use lethe_proto::packet::MAX_MESSAGE_LEN;
use lethe_proto::stream::{Chunk, Receiver, Sender, SenderConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(chunk) = Chunk::decode(data) else {
        return;
    };
    assert_eq!(chunk.encoded_len(), data.len());
    match chunk.encode() {
        Ok(bytes) => assert_eq!(bytes, data),
        Err(e) => assert!(data.len() > MAX_MESSAGE_LEN, "{e}"),
    }
    let mut rx = Receiver::new(32);
    let _ = rx.on_chunk(&chunk);
    let _ = rx.on_chunk(&chunk);
    if let Some(ack) = &chunk.ack
        && let Ok(mut tx) = Sender::new(chunk.stream, SenderConfig::default())
    {
        // Put some chunks in flight first, so the ack has something to remove.
        let t0 = Timestamp::from_nanos(1_000_000_000);
        let _ = tx.open(None);
        let _ = tx.push(&[7u8; 3000]);
        for _ in 0..64 {
            if tx.poll_transmit(t0).is_none() {
                break;
            }
        }
        tx.on_ack(Timestamp::from_nanos(2_000_000_000), ack);
        let _ = tx.verdict();
    }
});
