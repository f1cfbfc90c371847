//! Versioned, checksummed encodings of what goes to disk or into an application's hands.
//!
//! Every encoding starts with a format byte. Stored objects also carry an XXH3-64 checksum of
//! their body, so a flipped bit on disk is reported as [`DecodeError::Checksum`] instead of
//! being served or merged. Old formats keep decoding: a new format gets a new byte and the
//! decoder keeps a branch for each byte it ever wrote.

use crate::dvv::VersionVector;
use crate::hash::checksum;
use crate::object::Object;
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

/// The format byte of stored objects written by this version.
pub const OBJECT_FORMAT: u8 = 1;
/// The format byte of contexts handed out by this version.
pub const CONTEXT_FORMAT: u8 = 1;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header needs.
    #[error("truncated: {len} bytes, need at least {need}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the header needs.
        need: usize,
    },
    /// A format byte this version does not know (written by a newer release, or garbage).
    #[error("unknown format {found}; this build reads format {supported}")]
    UnknownFormat {
        /// The format byte found.
        found: u8,
        /// The newest format this build reads.
        supported: u8,
    },
    /// The body does not match its checksum: the bytes were corrupted.
    #[error("checksum mismatch: stored {stored:#018x}, computed {computed:#018x}")]
    Checksum {
        /// The checksum in the header.
        stored: u64,
        /// The checksum of the body as read.
        computed: u64,
    },
    /// The body is not a valid encoding of the expected type.
    #[error("malformed body: {reason}")]
    Malformed {
        /// The decoder's message.
        reason: String,
    },
}

fn to_msgpack<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // Serializing our own plain data types into a Vec cannot fail: no maps with non-string
    // keys, no I/O, no custom serializers that error.
    if let Err(e) = rmp_serde::encode::write(out, value) {
        unreachable!("msgpack encoding of an in-memory value failed: {e}");
    }
}

pub(crate) fn from_msgpack<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice(body).map_err(|e| DecodeError::Malformed {
        reason: e.to_string(),
    })
}

/// Encodes a stored object: `[format u8][checksum u64 BE][msgpack body]`.
pub fn encode_object(object: &Object) -> Vec<u8> {
    seal(OBJECT_FORMAT, object, 64 + object.value_bytes())
}

/// `[format][checksum of body][msgpack body]`.
fn seal<T: Serialize>(format: u8, value: &T, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.push(format);
    out.extend_from_slice(&[0; 8]);
    to_msgpack(value, &mut out);
    let sum = checksum(&out[9..]);
    out[1..9].copy_from_slice(&sum.to_be_bytes());
    out
}

/// The body of a [`seal`]ed encoding of `format`, once its checksum matches.
fn unseal(bytes: &[u8], format: u8) -> Result<&[u8], DecodeError> {
    if bytes.len() < 9 {
        return Err(DecodeError::Truncated {
            len: bytes.len(),
            need: 9,
        });
    }
    if bytes[0] != format {
        return Err(DecodeError::UnknownFormat {
            found: bytes[0],
            supported: format,
        });
    }
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&bytes[1..9]);
    let stored = u64::from_be_bytes(stored);
    let computed = checksum(&bytes[9..]);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    Ok(&bytes[9..])
}

/// Decodes a stored object, verifying its format and checksum. (Format 1 is the only one
/// so far; a new format gets its own branch here and old ones keep decoding.)
pub fn decode_object(bytes: &[u8]) -> Result<Object, DecodeError> {
    from_msgpack(unseal(bytes, OBJECT_FORMAT)?)
}

/// The format byte of persisted cluster views written by this version.
pub const VIEW_FORMAT: u8 = 1;

/// Encodes a cluster view for a node's disk: `[format u8][checksum u64 BE][msgpack body]`.
pub fn encode_view(view: &crate::membership::View) -> Vec<u8> {
    seal(VIEW_FORMAT, view, 4096)
}

/// Decodes a persisted cluster view, verifying its format and checksum.
pub fn decode_view(bytes: &[u8]) -> Result<crate::membership::View, DecodeError> {
    from_msgpack(unseal(bytes, VIEW_FORMAT)?)
}

/// Encodes a causal context for an application: `[format u8][msgpack version vector]`.
pub fn encode_context(clock: &VersionVector) -> Bytes {
    let mut out = Vec::with_capacity(1 + clock.entries().len() * 12);
    out.push(CONTEXT_FORMAT);
    to_msgpack(clock, &mut out);
    Bytes::from(out)
}

/// Decodes a context an application handed back. The empty byte string is the empty context.
pub fn decode_context(bytes: &[u8]) -> Result<VersionVector, DecodeError> {
    match bytes.first() {
        None => Ok(VersionVector::new()),
        Some(&CONTEXT_FORMAT) => from_msgpack(&bytes[1..]),
        Some(&found) => Err(DecodeError::UnknownFormat {
            found,
            supported: CONTEXT_FORMAT,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ActorId;

    fn sample() -> Object {
        let mut o = Object::new();
        o.update(
            &VersionVector::new(),
            Some(Bytes::from_static(b"hello")),
            ActorId(7),
        )
        .unwrap();
        o
    }

    #[test]
    fn object_round_trip() {
        let o = sample();
        assert_eq!(decode_object(&encode_object(&o)).unwrap(), o);
    }

    /// Bytes written by format 1; they must keep decoding in every later release.
    #[test]
    fn object_format_1_fixture_still_loads() {
        let fixture = encode_object(&sample());
        let hex: String = fixture.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex, FIXTURE_V1,
            "the format-1 encoding changed; add a new format instead"
        );
        let bytes: Vec<u8> = (0..FIXTURE_V1.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&FIXTURE_V1[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(decode_object(&bytes).unwrap(), sample());
    }
    const FIXTURE_V1: &str = include_str!("../fixtures/object_v1.hex");

    #[test]
    fn flipped_bit_is_a_checksum_error() {
        let mut bytes = encode_object(&sample());
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        assert!(matches!(
            decode_object(&bytes),
            Err(DecodeError::Checksum { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            decode_object(&[1, 2]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode_object(&[9; 20]),
            Err(DecodeError::UnknownFormat { found: 9, .. })
        ));
        assert!(decode_context(&[1, 0xc1, 0xff]).is_err());
    }

    #[test]
    fn context_round_trip_and_empty() {
        let o = sample();
        let ctx = encode_context(o.clock());
        assert_eq!(&decode_context(&ctx).unwrap(), o.clock());
        assert!(decode_context(&[]).unwrap().is_empty());
    }
}
