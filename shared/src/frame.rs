//! Frames: how a message travels on a stream.
//!
//! ```text
//! frame  = length: u32 big-endian (bytes that follow) | version: u8 | body: MessagePack
//! ```
//!
//! [`PROTOCOL_VERSION`] is the message schema's version; any change to the shape of
//! [`crate::proto`] messages bumps it. A process speaks a range of versions ([`Protocols`]):
//! a release speaks its own and at least the one before, so that a cluster can be upgraded
//! one host at a time. Two peers settle on the newest version both speak when they connect (the QUIC
//! transport does it with ALPN); every frame names its version, a reply goes back in the
//! version of its request, and a frame of a version the reader does not speak is answered
//! with `UnsupportedVersion` rather than guessed at. The length is checked against
//! [`crate::limits::Limits::max_frame_bytes`] before a single body byte is buffered.
//!
//! # Adding a version
//!
//! A release that changes the schema raises [`PROTOCOL_VERSION`], keeps the old shape of each
//! changed message as its own type, and converts between the two in [`encode_as`] and
//! [`decode_body_in`] for frames of the old version. Its [`OLDEST_PROTOCOL_VERSION`] is at
//! most the version before. A release that only adds a field with a default needs no
//! conversion.

use crate::encoding::from_msgpack;
use serde::{Serialize, de::DeserializeOwned};

/// The newest protocol version this build speaks. 2: anti-entropy and handoff requests carry
/// the sender's epoch; the ring-change write error; read replies name their answers. 3: a
/// write may ask for the stored object back, and its reply carries the context for a
/// follow-up write. 4: removal by force and abort (`AdminRequest::RemoveForced`, `Replace`, `AbortSigned`; the
/// nodes a staged change, a signed change and the view remove by force). Every version-4
/// addition is left out of the encoding when unused, so a version-4 frame that does not use
/// them is the version-3 frame of the same message: a node speaks version 3 by writing the
/// version byte 3. A version-3 peer cannot read a frame that uses them (it answers
/// `Malformed`), so a removal by force waits until every node runs version 4. 5: the
/// messages are version 4's; what changes is the stream (see [`BATCHES_SINCE`]).
pub const PROTOCOL_VERSION: u8 = 5;

/// The oldest protocol version this build still speaks. Version 3 is the first whose builds
/// negotiate; builds of version 2 and before spoke one version only. Version 5 changed no
/// message, so this build keeps speaking both versions before it (3 and 4).
pub const OLDEST_PROTOCOL_VERSION: u8 = 3;

/// From this version on, a stream may carry a batch: a `Request::Batch { requests }` frame,
/// then that many request frames (2 to [`MAX_REQUESTS_PER_STREAM`]), answered by one frame
/// per request of `(index, Reply)` (the request's place in the batch, from 0) in the order the
/// answers are ready. A stream that starts with any other request carries that one request
/// and is answered with a plain reply frame, as before.
pub const BATCHES_SINCE: u8 = 5;

/// The most request frames one batch may carry; a batch header announcing more is refused
/// (the stream reset unanswered).
pub const MAX_REQUESTS_PER_STREAM: usize = 16;

/// The protocol versions a process speaks: every version from `oldest` to `newest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Protocols {
    newest: u8,
    oldest: u8,
}

impl Protocols {
    /// What this build speaks.
    pub const THIS_BUILD: Self = Self {
        newest: PROTOCOL_VERSION,
        oldest: OLDEST_PROTOCOL_VERSION,
    };

    /// A stand-in for the next release, for upgrade tests: it speaks `PROTOCOL_VERSION + 1`
    /// and `PROTOCOL_VERSION`, with this build's message shapes for both. A cluster mixing it
    /// with [`Protocols::THIS_BUILD`] only works if every pair of peers settles on a version
    /// both speak: a frame of version `PROTOCOL_VERSION + 1` is refused by this build.
    pub const NEXT_BUILD: Self = Self {
        newest: PROTOCOL_VERSION + 1,
        oldest: PROTOCOL_VERSION,
    };

    /// Only `version` (a connection's agreed version, for its replies).
    pub fn only(version: u8) -> Self {
        Self {
            newest: version,
            oldest: version,
        }
    }

    /// The newest version spoken.
    pub fn newest(self) -> u8 {
        self.newest
    }

    /// The oldest version spoken.
    pub fn oldest(self) -> u8 {
        self.oldest
    }

    /// Whether `version` is spoken.
    pub fn speaks(self, version: u8) -> bool {
        (self.oldest..=self.newest).contains(&version)
    }

    /// Every version spoken, newest first (the order of preference).
    pub fn newest_first(self) -> impl Iterator<Item = u8> {
        (self.oldest..=self.newest).rev()
    }

    /// The newest version both `self` and `other` speak, if any.
    pub fn common(self, other: Self) -> Option<u8> {
        let newest = self.newest.min(other.newest);
        (newest >= self.oldest.max(other.oldest)).then_some(newest)
    }
}

impl std::fmt::Display for Protocols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.oldest == self.newest {
            write!(f, "{}", self.newest)
        } else {
            write!(f, "{} to {}", self.oldest, self.newest)
        }
    }
}

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

thread_local! {
    /// The version of the frame being encoded on this thread ([`encode_as`] sets it around
    /// the encoding, which never awaits), [`PROTOCOL_VERSION`] otherwise.
    static ENCODING_VERSION: std::cell::Cell<u8> = const { std::cell::Cell::new(PROTOCOL_VERSION) };
}

/// The protocol version of the frame this thread is encoding, or [`PROTOCOL_VERSION`] outside
/// [`encode_as`] (storage, signatures). A field added in a version leaves itself out of
/// older frames through it (`skip_serializing_if`), so that their readers can decode them.
pub fn encoding_version() -> u8 {
    ENCODING_VERSION.get()
}

/// Encodes `msg` as a complete frame (header included) of [`PROTOCOL_VERSION`].
pub fn encode<T: Serialize>(msg: &T, max_frame_bytes: usize) -> Result<Vec<u8>, FrameError> {
    encode_as(msg, PROTOCOL_VERSION, max_frame_bytes)
}

/// Encodes `msg` as a complete frame of protocol `version`, which the caller has agreed with
/// the reader. Every version this build speaks has the current shape (see the module docs
/// for how a release with a new shape converts here).
pub fn encode_as<T: Serialize>(
    msg: &T,
    version: u8,
    max_frame_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&[0; HEADER_BYTES]);
    out.push(version);
    let previous = ENCODING_VERSION.replace(version);
    let written = rmp_serde::encode::write(&mut out, msg);
    ENCODING_VERSION.set(previous);
    written.map_err(|e| FrameError::Malformed {
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

/// Decodes a frame body (what follows the header: version byte and message) of
/// [`PROTOCOL_VERSION`].
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    decode_body_in(body, Protocols::only(PROTOCOL_VERSION)).map(|(msg, _)| msg)
}

/// Decodes a frame body of any version in `spoken`; returns the message and its version
/// (the version to answer in).
pub fn decode_body_in<T: DeserializeOwned>(
    body: &[u8],
    spoken: Protocols,
) -> Result<(T, u8), FrameError> {
    match body.first() {
        None => Err(FrameError::Empty),
        Some(&version) if spoken.speaks(version) => from_msgpack(&body[1..])
            .map(|msg| (msg, version))
            .map_err(|e| FrameError::Malformed {
                reason: e.to_string(),
            }),
        Some(&found) => Err(FrameError::UnsupportedVersion {
            found,
            supported: spoken.newest,
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

    /// A member as a version-3 build reads it (before names).
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct MemberOfVersion3 {
        id: crate::NodeId,
        addr: std::net::SocketAddr,
    }

    #[test]
    fn names_are_left_out_of_frames_of_the_versions_before_them() {
        let named = vec![crate::Member {
            id: crate::NodeId(1),
            addr: std::net::SocketAddr::from(([10, 0, 0, 1], 7001)),
            host: Some(crate::HostName::parse("n1.example.net:7001").unwrap()),
        }];
        let body = |f: &[u8]| f[HEADER_BYTES..].to_vec();
        let old = encode_as(&named, 3, MAX).unwrap();
        let (read, _) =
            decode_body_in::<Vec<MemberOfVersion3>>(&body(&old), Protocols::only(3)).unwrap();
        assert_eq!(read[0].addr, named[0].addr);
        let (back, _) =
            decode_body_in::<Vec<crate::Member>>(&body(&old), Protocols::only(3)).unwrap();
        assert_eq!(back[0].host, None, "a version-3 frame carries no name");
        // The current version carries the name, which a version-3 reader could not read.
        let new = encode(&named, MAX).unwrap();
        assert_eq!(
            decode_body::<Vec<crate::Member>>(&body(&new)).unwrap(),
            named
        );
        assert!(
            decode_body_in::<Vec<MemberOfVersion3>>(&body(&new), Protocols::THIS_BUILD).is_err()
        );
        assert_eq!(
            encoding_version(),
            PROTOCOL_VERSION,
            "restored after encoding"
        );
    }

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

    #[test]
    fn a_frame_is_read_in_any_version_spoken_and_refused_outside_them() {
        let next = encode_as(&Request::Ping, PROTOCOL_VERSION + 1, MAX).unwrap();
        let body = &next[HEADER_BYTES..];
        assert_eq!(
            decode_body_in::<Request>(body, Protocols::NEXT_BUILD),
            Ok((Request::Ping, PROTOCOL_VERSION + 1))
        );
        assert_eq!(
            decode_body_in::<Request>(body, Protocols::THIS_BUILD),
            Err(FrameError::UnsupportedVersion {
                found: PROTOCOL_VERSION + 1,
                supported: PROTOCOL_VERSION
            })
        );
        let this = encode(&Request::Ping, MAX).unwrap();
        assert_eq!(
            decode_body_in::<Request>(&this[HEADER_BYTES..], Protocols::NEXT_BUILD),
            Ok((Request::Ping, PROTOCOL_VERSION))
        );
    }

    #[test]
    fn peers_settle_on_the_newest_version_both_speak() {
        let (this, next) = (Protocols::THIS_BUILD, Protocols::NEXT_BUILD);
        assert_eq!(this.common(next), Some(PROTOCOL_VERSION));
        assert_eq!(next.common(this), Some(PROTOCOL_VERSION));
        assert_eq!(next.common(next), Some(PROTOCOL_VERSION + 1));
        let far = Protocols {
            newest: PROTOCOL_VERSION + 3,
            oldest: PROTOCOL_VERSION + 2,
        };
        assert_eq!(this.common(far), None);
        assert_eq!(
            next.newest_first().collect::<Vec<_>>(),
            [PROTOCOL_VERSION + 1, PROTOCOL_VERSION]
        );
        assert_eq!(
            next.to_string(),
            format!("{} to {}", PROTOCOL_VERSION, PROTOCOL_VERSION + 1)
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
