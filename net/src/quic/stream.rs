//! Frame I/O on QUIC streams.

use ringkv_shared::frame::{self, FrameError, HEADER_BYTES, Protocols};
use serde::{Serialize, de::DeserializeOwned};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// Reads one frame of a version in `spoken`, refusing (before buffering the body) anything
/// over `max_frame_bytes`. The body is buffered as it arrives, never allocated up front from
/// the declared length.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_frame_bytes: usize,
    spoken: Protocols,
) -> Result<T, StreamError> {
    let frame = read_frame_within(recv, max_frame_bytes, spoken, &[]).await?;
    Ok(frame.msg)
}

/// A frame read by [`read_frame_within`].
#[derive(Debug)]
pub struct Frame<T> {
    /// The message.
    pub msg: T,
    /// Its protocol version: the version to answer in.
    pub version: u8,
    /// The budget its bytes hold until dropped.
    pub held: Held,
}

/// Memory that frames being read may hold, shared by whoever reads with it (a connection, a
/// whole node). A reader that finds it spent waits, which stops reading the stream, so QUIC's
/// flow control stops the sender.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
}

/// Budget is counted in units of this many bytes.
const UNIT: usize = 1024;

impl MemoryBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(units)),
        }
    }

    /// Bytes not held by any frame now.
    pub fn available(&self) -> usize {
        self.permits.available_permits() * UNIT
    }
}

/// Budget a frame holds until dropped (once the request it carried has been handled).
#[derive(Debug, Default)]
pub struct Held {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// [`read_frame`], holding room in every one of `budgets` for the bytes buffered so far: a
/// peer that declares a large frame and sends nothing holds nothing, and peers together can
/// never buffer more than the smallest budget allows.
pub async fn read_frame_within<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max_frame_bytes: usize,
    spoken: Protocols,
    budgets: &[&MemoryBudget],
) -> Result<Frame<T>, StreamError> {
    let mut header = [0u8; HEADER_BYTES];
    recv.read_exact(&mut header).await.map_err(io)?;
    let len = frame::decode_header(header, max_frame_bytes)?;
    let mut held: Vec<Option<OwnedSemaphorePermit>> = budgets.iter().map(|_| None).collect();
    let mut held_units = 0usize;
    let mut body = Vec::with_capacity(len.min(READ_CHUNK));
    while body.len() < len {
        let want = (len - body.len()).min(READ_CHUNK);
        let chunk = recv
            .read_chunk(want, true)
            .await
            .map_err(io)?
            .ok_or_else(|| StreamError::Io {
                reason: format!("the stream ended after {} of {len} bytes", body.len()),
            })?;
        body.extend_from_slice(&chunk.bytes);
        // Room for what is buffered now, in every budget, before reading more (a chunk is at
        // most 64 KiB, so a frame holds at most that much beyond its budget).
        let units = body.len().div_ceil(UNIT);
        let more = u32::try_from(units - held_units).unwrap_or(u32::MAX);
        if more > 0 {
            for (budget, slot) in budgets.iter().zip(held.iter_mut()) {
                let permit = budget
                    .permits
                    .clone()
                    .acquire_many_owned(more)
                    .await
                    .map_err(io)?;
                match slot {
                    Some(p) => p.merge(permit),
                    None => *slot = Some(permit),
                }
            }
            held_units = units;
        }
    }
    let (msg, version) = frame::decode_body_in(&body, spoken)?;
    Ok(Frame {
        msg,
        version,
        held: Held {
            _permits: held.into_iter().flatten().collect(),
        },
    })
}

/// The most a frame read buffers per step.
const READ_CHUNK: usize = 64 << 10;

/// Encodes one frame of protocol `version` (agreed with the reader) and writes it, leaving the
/// stream open: the caller finishes it once its last frame is written.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
    version: u8,
    max_frame_bytes: usize,
) -> Result<(), StreamError> {
    let bytes = frame::encode_as(msg, version, max_frame_bytes)?;
    send.write_all(&bytes).await.map_err(io)
}
