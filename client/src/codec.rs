//! The encoding of typed values: `[format u8][MessagePack]`.

use crate::error::ClientError;
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

/// The format byte of typed values written by this version.
pub const VALUE_FORMAT: u8 = 1;

/// Encodes a typed value.
pub fn encode_value<T: Serialize>(value: &T) -> Result<Bytes, ClientError> {
    let mut out = vec![VALUE_FORMAT];
    rmp_serde::encode::write(&mut out, value).map_err(|e| ClientError::Codec {
        reason: e.to_string(),
    })?;
    Ok(Bytes::from(out))
}

/// Decodes a typed value.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    match bytes.first() {
        Some(&VALUE_FORMAT) => rmp_serde::from_slice(&bytes[1..]).map_err(|e| ClientError::Codec {
            reason: format!("value does not decode as the expected type: {e}"),
        }),
        Some(other) => Err(ClientError::Codec {
            reason: format!(
                "unknown value format {other} (this client reads format {VALUE_FORMAT})"
            ),
        }),
        None => Err(ClientError::Codec {
            reason: "empty value".into(),
        }),
    }
}
