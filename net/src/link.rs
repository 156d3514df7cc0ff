//! Frames over QUIC streams: the async side of the codec in `lethe_proto::frame`.

use lethe_proto::frame::{FrameHeader, FrameKind, HEADER_LEN};

use crate::NetError;

/// Why reading a frame stopped.
#[derive(Debug)]
pub enum ReadOutcome {
    /// A frame of `kind`; its body is in the buffer passed in.
    Frame(FrameKind),
    /// The peer finished the stream cleanly between frames.
    End,
}

/// Read one frame from `recv` into `body` (resized to the frame's length).
/// A malformed header or a stream that ends inside a frame is an error.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    body: &mut Vec<u8>,
) -> Result<ReadOutcome, NetError> {
    let mut header = [0u8; HEADER_LEN];
    // Read the first byte separately to tell a clean end from a truncated frame.
    match recv.read(&mut header[..1]).await {
        Ok(None) => return Ok(ReadOutcome::End),
        Ok(Some(0)) => return Ok(ReadOutcome::End),
        Ok(Some(_)) => {}
        Err(e) => return Err(NetError::Read(quinn::ReadExactError::ReadError(e))),
    }
    recv.read_exact(&mut header[1..]).await?;
    let h = FrameHeader::parse(header)?;
    body.resize(h.len, 0);
    recv.read_exact(body).await?;
    Ok(ReadOutcome::Frame(h.kind))
}

/// Append one frame to `out` (for batching several frames into one write).
pub fn push_frame(out: &mut Vec<u8>, kind: FrameKind, body: &[u8]) -> Result<(), NetError> {
    lethe_proto::Frame::encode(kind, body, out)?;
    Ok(())
}

/// Write one frame.
pub async fn write_frame(
    send: &mut quinn::SendStream,
    kind: FrameKind,
    body: &[u8],
) -> Result<(), NetError> {
    let header = FrameHeader::encode(kind, body.len())?;
    send.write_all(&header).await?;
    send.write_all(body).await?;
    Ok(())
}
