//! The ringkv client: a partition-aware library that applications link to talk to a ringkv
//! cluster.
//!
//! The client caches the ring, computes each key's replicas itself, and talks to them over
//! QUIC with mutual TLS: reads fan out to N replicas and return after R, reconciled, with
//! stale replicas repaired in the background; writes go to the first healthy replica, which
//! stamps the version and replicates until W replicas hold it. Concurrent writes come back as
//! siblings in [`Versions::values`], with an opaque [`Context`] to write the resolution back
//! with.
//!
//! ```no_run
//! # async fn demo(tls: ringkv_client::TlsIdentity) -> Result<(), ringkv_client::ClientError> {
//! use ringkv_client::{Client, Context};
//! let client = Client::builder()
//!     .seeds(["127.0.0.1:7001".parse().unwrap()])
//!     .tls(tls)
//!     .build()
//!     .await?;
//! let ctx = client.put("cart:42", "apples", &Context::empty()).await?;
//! let read = client.get("cart:42").await?;
//! assert_eq!(read.values.len(), 1);
//! client.put("cart:42", "apples,pears", &read.context).await?;
//! # let _ = ctx; Ok(()) }
//! ```
//!
//! This crate does not store anything, run nodes or parse configs (see `ringkv-node`).
//!
//! # Layout
//!
//! - [`client`] — [`Client`], get/put/delete in direct and router mode.
//! - [`builder`] — [`ClientBuilder`].
//! - [`codec`] — the versioned encoding of typed values.
//! - [`crdt`] — mergeable values: [`crdt::PNCounter`], [`crdt::ORSet`], [`crdt::ORMap`].
//! - [`options`] — [`Mode`], defaults and per-call [`CallOptions`].
//! - [`typed`] — read-merge-write of mergeable values: [`Client::modify`],
//!   [`Client::get_merged`].
//! - [`versions`] — [`Versions`] and the opaque [`Context`].
//! - [`error`] — [`ClientError`].
//! - [`observer`] — [`OperationObserver`], the hook that feeds an application's metrics, and
//!   [`OperationCounts`].
//! - [`lanes`] — the actors behind [`Client::modify`] and the state each last wrote, which
//!   keep mergeable updates unique whatever a read returns.

pub mod builder;
pub mod client;
pub mod codec;
pub mod crdt;
pub mod error;
pub mod lanes;
pub mod observer;
pub mod options;
pub mod typed;
pub mod versions;

pub use builder::ClientBuilder;
pub use client::Client;
pub use error::ClientError;
pub use observer::{Operation, OperationCounts, OperationKind, OperationObserver};
pub use options::{CallOptions, Mode};
pub use ringkv_net::quic::TlsIdentity;
pub use typed::Merged;
pub use versions::{Context, Versions};
