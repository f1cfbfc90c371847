//! Frame I/O on QUIC streams.

use ringkv_shared::frame::{self, FrameError, HEADER_BYTES};
use serde::{Serialize, de::DeserializeOwned};

/// Why a frame could not be read from or written to a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The stream or connection failed.
    #[error("stream failed: {reason}")]
    Io {
        /// The transport's message.
        reason: String,
    },
    /// The bytes were not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

fn io(e: impl std::fmt::Display) -> StreamError {
    StreamError::Io {
        reason: e.to_string(),
    }
}

/// Reads one frame, refusing (before buffering the body) anything over `max_frame_bytes`.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_frame_bytes: usize,
) -> Result<T, StreamError> {
    let mut header = [0u8; HEADER_BYTES];
    recv.read_exact(&mut header).await.map_err(io)?;
    let len = frame::decode_header(header, max_frame_bytes)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(io)?;
    Ok(frame::decode_body(&body)?)
}

/// Encodes and writes one frame, then finishes the send side.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
    max_frame_bytes: usize,
) -> Result<(), StreamError> {
    let bytes = frame::encode(msg, max_frame_bytes)?;
    send.write_all(&bytes).await.map_err(io)?;
    send.finish().map_err(io)?;
    Ok(())
}
