//! Typed, mergeable values: read all siblings, decode, merge, change, write back.
//!
//! Values written by these helpers are encoded as `[format u8][MessagePack]`
//! ([`encode_value`], from [`crate::codec`]); a sibling that does not decode, or breaks its
//! type's invariants, is an error ([`ClientError::Codec`]) naming the key, never silently
//! dropped.

use crate::client::Client;
pub use crate::codec::{VALUE_FORMAT, decode_value, encode_value};
use crate::crdt::{ActorId, Merge};
use crate::error::ClientError;
use crate::options::CallOptions;
use crate::versions::Context;
use bytes::Bytes;
use ringkv_shared::quorum::Answer;
use serde::{Serialize, de::DeserializeOwned};

/// A merged read.
#[derive(Clone, Debug)]
pub struct Merged<T> {
    /// Every sibling merged (the type's default if the key does not exist).
    pub value: T,
    /// The context to write the merged value back with (it supersedes every sibling read).
    pub context: Context,
    /// How many siblings the read returned (1 when the replicas agreed on one version).
    pub siblings: usize,
    /// The answers the read was built from, each marked owner or stand-in.
    pub answers: Vec<Answer>,
}

impl Client {
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
        Ok(self.read_merged(key.into(), opts).await?.0)
    }

    /// [`Client::get_merged_with`], also returning the siblings as read (encoded).
    async fn read_merged<T>(
        &self,
        key: Bytes,
        opts: CallOptions,
    ) -> Result<(Merged<T>, Vec<Bytes>), ClientError>
    where
        T: Merge + Default + DeserializeOwned,
    {
        let read = self.get_with(key.clone(), opts).await?;
        let value = merge_siblings(&key, &read.values, None)?;
        let merged = Merged {
            value,
            siblings: read.values.len(),
            context: read.context,
            answers: read.answers,
        };
        Ok((merged, read.values))
    }

    /// Read-merge-write: reads every sibling of `key`, merges them, applies `change`, and
    /// writes the result back with the read's context, so the siblings collapse into one.
    ///
    /// Returns the key's value after the write as the coordinating replica holds it: the value
    /// written, merged with every sibling written concurrently that the coordinator has (the
    /// write asks for them back, Riak's `return_body`), and the context covering all of them.
    /// Writing [`Merged::value`] back with [`Merged::context`] therefore loses nothing. (When
    /// a concurrent sibling there does not decode as `T`, the value is the one written and the
    /// context covers only it and what the read saw.) [`Merged::siblings`] and
    /// [`Merged::answers`] describe the read.
    ///
    /// **No acknowledged update is lost, whatever the read returned.** `change` gets an
    /// [`ActorId`] that only this call is using, together with a state that holds every update
    /// that actor made before, even when the read was stale, partial or served by stand-ins
    /// (the client keeps each actor's last written state; see [`crate::lanes`]). Concurrent
    /// calls, through one client or its clones, get different actors. An actor whose write
    /// fails is never used again. A write concurrent with this one becomes a sibling of it;
    /// the next read merges both.
    ///
    /// **Available whenever one node that would know answers.** The read asks for R answers
    /// that are evidence (owners, or stand-ins holding the key or a hint). When fewer come, but
    /// at least one, `modify` continues from what that one says ([`Merged::answers`] shows who
    /// answered): for mergeable values a partial read is safe, so an update is not refused
    /// for lack of a read quorum. The write then needs its W as always (sloppy quorum).
    ///
    /// Errors: a read that got no evidence at all is [`ClientError::ReadFailed`] (nothing was
    /// written, `may_have_been_applied() == false`); a failed write is the write's own error,
    /// whose [`ClientError::may_have_been_applied`] says whether it may be stored. A sibling
    /// that does not decode as `T` is [`ClientError::Codec`] naming the key, and nothing is
    /// written.
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
        let (read, read_values): (Merged<T>, _) = match self.read_merged(key.clone(), opts).await {
            Ok(read) => read,
            // Fewer than R nodes that would know answered, but some did. A partial read is safe
            // here (lanes keep every actor's own history; a remove removes only what it saw),
            // so continue from what they say rather than refuse the update: a cart stays
            // writeable on the side of a partition that holds one owner.
            Err(ClientError::QuorumFailed { succeeded, .. }) if succeeded > 0 => {
                tracing::debug!(key = %label(&key), succeeded, "modify continues from a partial read");
                self.read_merged(key.clone(), opts.quorum(1))
                    .await
                    .map_err(read_failed)?
            }
            Err(e) => return Err(read_failed(e)),
        };
        let read_clock = read
            .context
            .to_clock()
            .map_err(|reason| ClientError::Codec { reason })?;
        let found = read.siblings > 0;
        let mut update =
            self.inner
                .lanes
                .begin(key.clone(), read.value, &read_clock, found, &read_values)?;
        if *update.prepared() == crate::lanes::Prepared::Retired {
            tracing::debug!(key = %label(&key), "the key was deleted after this client's last update: new actor");
        }
        update.apply(change);
        let encoded = update.encode()?;
        // On any error `update` is dropped with its lane: the actor is never used again,
        // whether or not the write landed somewhere.
        let reply = self
            .put_lane(key.clone(), encoded.clone(), &read.context, opts)
            .await?;
        let written = update.written(&self.inner.lanes, encoded.clone(), reply.clock);
        let stored = reply
            .body
            .as_ref()
            // The value just written is merged below as `written`: not decoded again.
            .map(|body| {
                (
                    merge_siblings::<T>(&key, body.values(), Some(&encoded)),
                    body,
                )
            });
        let (value, context) = match stored {
            Some((Ok(mut value), body)) => {
                value.merge(&written);
                (value, Context::from_clock(body.clock()))
            }
            Some((Err(e), _)) => {
                tracing::debug!(key = %label(&key), error = %e, "a concurrent sibling is unusable: returning the value written");
                (written, Context::from_clock(&reply.next))
            }
            None => (written, Context::from_clock(&reply.next)),
        };
        Ok(Merged {
            value,
            context,
            siblings: read.siblings,
            answers: read.answers,
        })
    }
}

/// Every sibling of `key` decoded, checked and merged into one `T` (the default when there is
/// none), except those whose bytes are `known`'s (a value the caller merges itself: merging it
/// twice would change nothing, and decoding a large value is the costly part). A sibling that
/// does not decode or breaks `T`'s invariants is an error naming the key.
fn merge_siblings<'a, T>(
    key: &[u8],
    siblings: impl IntoIterator<Item = &'a Bytes>,
    known: Option<&Bytes>,
) -> Result<T, ClientError>
where
    T: Merge + Default + DeserializeOwned,
{
    let mut value = T::default();
    for sibling in siblings.into_iter().filter(|s| Some(*s) != known) {
        let unusable = |why: String| ClientError::Codec {
            reason: format!("key {}: a sibling is unusable: {why}", label(key)),
        };
        let decoded = match decode_value::<T>(sibling) {
            Ok(v) => v,
            Err(ClientError::Codec { reason }) => return Err(unusable(reason)),
            Err(other) => return Err(other),
        };
        decoded.validate().map_err(unusable)?;
        value.merge(&decoded);
    }
    Ok(value)
}

/// A read error before a modify: nothing was written.
fn read_failed(e: ClientError) -> ClientError {
    match e {
        ClientError::InvalidInput { .. } | ClientError::Codec { .. } => e,
        other => ClientError::ReadFailed {
            error: Box::new(other),
        },
    }
}

fn label(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[..key.len().min(64)]).into_owned()
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

    /// Siblings are merged, except the one the caller merges itself (not even decoded: here
    /// it could not be); any other sibling that does not decode is still an error.
    #[test]
    fn merging_siblings_skips_only_the_known_value() {
        let (mut a, mut b) = (PNCounter::new(), PNCounter::new());
        a.add(ActorId(1), 4);
        b.add(ActorId(2), 3);
        let (a, b) = (encode_value(&a).unwrap(), encode_value(&b).unwrap());
        let known = Bytes::from_static(b"\x01\xc1");
        let all = [a.clone(), known.clone(), b.clone()];
        let merged: PNCounter = merge_siblings(b"k", &all, Some(&known)).unwrap();
        assert_eq!(merged.value(), 7);
        assert!(merge_siblings::<PNCounter>(b"k", &all, None).is_err());
        assert!(merge_siblings::<PNCounter>(b"k", &all, Some(&a)).is_err());
    }
}
