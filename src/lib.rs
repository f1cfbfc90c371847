//! ringkv: an always-writeable, Dynamo-style key-value store.
//!
//! This facade re-exports the client library ([`ringkv_client`]) that applications link, and
//! the shared vocabulary ([`shared`]) its types come from. Storage nodes are the
//! `ringkv-node` crate and binary.
//!
//! # Layout
//!
//! - the crate root: everything in [`ringkv_client`] ([`Client`], [`Context`], [`Versions`],
//!   [`ClientError`], [`Mode`], [`CallOptions`]).
//! - [`shared`] — ring, versions, protocol and limits, for applications that need them.

pub use ringkv_client::*;

/// The shared logic crate (ring, versions, protocol, limits).
pub use ringkv_shared as shared;
