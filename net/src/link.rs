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

/// Answer who we are on one bidirectional stream a peer opened: if it asks
/// ([`FrameKind::Describe`]), send `descriptor` (our signed descriptor, JSON) and finish.
pub async fn answer_describe(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    descriptor: &[u8],
) -> Result<(), NetError> {
    let mut body = Vec::new();
    if let ReadOutcome::Frame(FrameKind::Describe) = read_frame(&mut recv, &mut body).await? {
        write_frame(&mut send, FrameKind::Descriptor, descriptor).await?;
        let _ = send.finish();
        // Let the answer reach the peer before the stream is dropped.
        let _ = send.stopped().await;
    }
    Ok(())
}

/// Ask the peer on `conn` who it is: its signed descriptor's JSON.
pub async fn ask_describe(conn: &quinn::Connection) -> Result<Vec<u8>, NetError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(NetError::from)?;
    write_frame(&mut send, FrameKind::Describe, &[]).await?;
    let _ = send.finish();
    let mut body = Vec::new();
    match read_frame(&mut recv, &mut body).await? {
        ReadOutcome::Frame(FrameKind::Descriptor) => Ok(body),
        _ => Err(NetError::Directory(
            "the peer did not describe itself".into(),
        )),
    }
}
