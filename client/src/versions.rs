//! What a read returns: the values and the opaque context to write back with.

use bytes::Bytes;
use ringkv_shared::encoding::{decode_context, encode_context};
use ringkv_shared::quorum::Answer;
use ringkv_shared::{Object, VersionVector};

/// The causal context of a read, opaque to applications.
///
/// Write back with the context of what you read: the write then replaces every version the
/// read returned, and stays beside (as a sibling) any version written concurrently that the
/// read did not see. A blind write uses [`Context::empty`]. Contexts can be stored and sent
/// as bytes ([`Context::as_bytes`], [`Context::from_bytes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context(Bytes);

impl Context {
    /// The context of having read nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The encoded context.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// A context from bytes previously returned by [`Context::as_bytes`]. Validated when used.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self(bytes)
    }

    pub(crate) fn from_clock(clock: &VersionVector) -> Self {
        Self(encode_context(clock))
    }

    pub(crate) fn to_clock(&self) -> Result<VersionVector, String> {
        decode_context(&self.0).map_err(|e| format!("context is not one this client issued: {e}"))
    }
}

/// The result of a read: every concurrent value (siblings) and their joint context.
///
/// No values means not found (never written, or deleted); the context is still meaningful and
/// should be passed to a following write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versions {
    /// The live values, one per sibling, in a deterministic order.
    pub values: Vec<Bytes>,
    /// The context to write back with.
    pub context: Context,
    /// The answers the read was built from, each marked owner or stand-in (a stand-in counts
    /// only when it held the key or a hint for it).
    pub answers: Vec<Answer>,
}

impl Versions {
    pub(crate) fn from_object(o: &Object, answers: Vec<Answer>) -> Self {
        Self {
            values: o.values().cloned().collect(),
            context: Context::from_clock(o.clock()),
            answers,
        }
    }

    /// Whether the key has no live value.
    pub fn is_not_found(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether there are concurrent values the application must reconcile.
    pub fn has_siblings(&self) -> bool {
        self.values.len() > 1
    }

    /// The single value, if there is exactly one.
    pub fn single(&self) -> Option<&Bytes> {
        match self.values.as_slice() {
            [v] => Some(v),
            _ => None,
        }
    }
}
