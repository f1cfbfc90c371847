//! Typed, mergeable values: read all siblings, decode, merge, change, write back.
//!
//! Values written by these helpers are encoded as `[format u8][MessagePack]`
//! ([`encode_value`]); a sibling that does not decode is an error
//! ([`ClientError::Codec`]), never silently dropped.

use crate::client::Client;
use crate::crdt::{ActorId, Merge};
use crate::error::ClientError;
use crate::options::CallOptions;
use crate::versions::Context;
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

/// A merged read.
#[derive(Clone, Debug)]
pub struct Merged<T> {
    /// Every sibling merged (the type's default if the key does not exist).
    pub value: T,
    /// The context to write the merged value back with (it supersedes every sibling read).
    pub context: Context,
    /// How many siblings the read returned (1 when the replicas agreed on one version).
    pub siblings: usize,
}

impl Client {
    /// This client's actor id, used to stamp updates of mergeable values.
    pub fn actor(&self) -> ActorId {
        self.inner.actor
    }

    /// Reads `key` and merges all its siblings into one `T`.
    pub async fn get_merged<T>(&self, key: impl Into<Bytes>) -> Result<Merged<T>, ClientError>
    where
        T: Merge + Default + DeserializeOwned,
    {
        self.get_merged_with(key, CallOptions::default()).await
    }

    /// [`Client::get_merged`] with per-call options.
    pub async fn get_merged_with<T>(
        &self,
        key: impl Into<Bytes>,
        opts: CallOptions,
    ) -> Result<Merged<T>, ClientError>
    where
        T: Merge + Default + DeserializeOwned,
    {
        let read = self.get_with(key, opts).await?;
        let mut value = T::default();
        for sibling in &read.values {
            value.merge(&decode_value::<T>(sibling)?);
        }
        Ok(Merged {
            value,
            siblings: read.values.len(),
            context: read.context,
        })
    }

    /// Read-merge-write: reads every sibling of `key`, merges them, applies `change` (with this
    /// client's actor id), and writes the result back with the read's context, so the siblings
    /// collapse into one. Returns the value written and its context.
    ///
    /// A write concurrent with this one (another writer's `modify`) becomes a sibling of it;
    /// the next read merges both, so no update is lost.
    pub async fn modify<T, F>(
        &self,
        key: impl Into<Bytes>,
        change: F,
    ) -> Result<Merged<T>, ClientError>
    where
        T: Merge + Default + Serialize + DeserializeOwned,
        F: FnOnce(&mut T, ActorId),
    {
        self.modify_with(key, CallOptions::default(), change).await
    }

    /// [`Client::modify`] with per-call options (the quorum applies to the read as R and to
    /// the write as W).
    pub async fn modify_with<T, F>(
        &self,
        key: impl Into<Bytes>,
        opts: CallOptions,
        change: F,
    ) -> Result<Merged<T>, ClientError>
    where
        T: Merge + Default + Serialize + DeserializeOwned,
        F: FnOnce(&mut T, ActorId),
    {
        let key = key.into();
        let mut read: Merged<T> = self.get_merged_with(key.clone(), opts).await?;
        change(&mut read.value, self.actor());
        let encoded = encode_value(&read.value)?;
        let context = self.put_with(key, encoded, &read.context, opts).await?;
        Ok(Merged {
            value: read.value,
            context,
            siblings: read.siblings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::PNCounter;

    #[test]
    fn values_round_trip_and_bad_bytes_are_errors() {
        let mut c = PNCounter::new();
        c.add(ActorId(1), 4);
        let b = encode_value(&c).unwrap();
        assert_eq!(b[0], VALUE_FORMAT);
        assert_eq!(decode_value::<PNCounter>(&b).unwrap(), c);
        assert!(matches!(
            decode_value::<PNCounter>(b"\x01\xc1"),
            Err(ClientError::Codec { .. })
        ));
        assert!(matches!(
            decode_value::<PNCounter>(b"\x09abc"),
            Err(ClientError::Codec { .. })
        ));
        assert!(matches!(
            decode_value::<PNCounter>(b""),
            Err(ClientError::Codec { .. })
        ));
    }
}
