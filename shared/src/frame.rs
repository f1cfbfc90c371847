//! Frames: how a message travels on a stream.
//!
//! ```text
//! frame  = length: u32 big-endian (bytes that follow) | version: u8 | body: MessagePack
//! ```
//!
//! [`PROTOCOL_VERSION`] is the message schema's version; any change to the shape of
//! [`crate::proto`] messages bumps it, and a node answers a frame of another version with
//! `UnsupportedVersion` rather than guessing. The length is checked against
//! [`crate::limits::Limits::max_frame_bytes`] before a single body byte is buffered.

use crate::encoding::from_msgpack;
use serde::{Serialize, de::DeserializeOwned};

/// The protocol version this build speaks. 2: anti-entropy and handoff requests carry the
/// sender's epoch; the ring-change write error; read replies name their answers. 3: a write
/// may ask for the stored object back, and its reply carries the context for a follow-up
/// write.
pub const PROTOCOL_VERSION: u8 = 3;

/// Bytes in the length prefix.
pub const HEADER_BYTES: usize = 4;

/// Why a frame could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is larger than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame is empty (no version byte).
    #[error("empty frame")]
    Empty,
    /// The frame's protocol version is not this build's.
    #[error("protocol version {found} is not supported (this build speaks {supported})")]
    UnsupportedVersion {
        /// The version in the frame.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// The body is not a valid message.
    #[error("malformed frame body: {reason}")]
    Malformed {
        /// The decoder's message.
        reason: String,
    },
}

/// Encodes `msg` as a complete frame (header included).
pub fn encode<T: Serialize>(msg: &T, max_frame_bytes: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&[0; HEADER_BYTES]);
    out.push(PROTOCOL_VERSION);
    rmp_serde::encode::write(&mut out, msg).map_err(|e| FrameError::Malformed {
        reason: e.to_string(),
    })?;
    let len = out.len() - HEADER_BYTES;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    // `len <= max_frame_bytes`, which `Limits::validate` keeps within u32.
    let len32 = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: u32::MAX as usize,
    })?;
    out[..HEADER_BYTES].copy_from_slice(&len32.to_be_bytes());
    Ok(out)
}

/// Reads the body length from a frame header, refusing frames over the limit.
pub fn decode_header(
    header: [u8; HEADER_BYTES],
    max_frame_bytes: usize,
) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    Ok(len)
}

/// Decodes a frame body (what follows the header: version byte and message).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    match body.first() {
        None => Err(FrameError::Empty),
        Some(&PROTOCOL_VERSION) => from_msgpack(&body[1..]).map_err(|e| FrameError::Malformed {
            reason: e.to_string(),
        }),
        Some(&found) => Err(FrameError::UnsupportedVersion {
            found,
            supported: PROTOCOL_VERSION,
        }),
    }
}

/// Decodes a complete frame held in memory (header included).
pub fn decode<T: DeserializeOwned>(frame: &[u8], max_frame_bytes: usize) -> Result<T, FrameError> {
    let header: [u8; HEADER_BYTES] = frame
        .get(..HEADER_BYTES)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Empty)?;
    let len = decode_header(header, max_frame_bytes)?;
    let body = &frame[HEADER_BYTES..];
    if body.len() != len {
        return Err(FrameError::Malformed {
            reason: format!("header says {len} bytes, frame has {}", body.len()),
        });
    }
    decode_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Reply, Request, Response};
    use bytes::Bytes;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn round_trip() {
        let req = Request::Read {
            key: Bytes::from_static(b"k"),
        };
        let f = encode(&req, MAX).unwrap();
        assert_eq!(f[4], PROTOCOL_VERSION);
        assert_eq!(decode::<Request>(&f, MAX).unwrap(), req);
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        assert_eq!(
            decode_header((MAX as u32 + 1).to_be_bytes(), MAX),
            Err(FrameError::TooLarge {
                len: MAX + 1,
                max: MAX
            })
        );
        let big = Request::Read {
            key: Bytes::from(vec![0u8; 100]),
        };
        assert!(matches!(encode(&big, 50), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn other_versions_are_named() {
        let mut f = encode(&Request::Ping, MAX).unwrap();
        f[4] = 99;
        assert_eq!(
            decode::<Request>(&f, MAX),
            Err(FrameError::UnsupportedVersion {
                found: 99,
                supported: PROTOCOL_VERSION
            })
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes, MAX);
            let _ = decode::<Reply>(&bytes, MAX);
        }

        #[test]
        fn truncated_frames_are_errors(cut in 0usize..20) {
            let f = encode(&Reply { epoch: 3, body: Response::Written }, MAX).unwrap();
            let cut = cut.min(f.len() - 1);
            prop_assert!(decode::<Reply>(&f[..cut], MAX).is_err());
        }
    }
}
