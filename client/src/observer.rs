//! A hook through which the application sees every client operation, to feed the metrics
//! library it already uses (a Prometheus registry, the `metrics` facade, logs): the client
//! itself depends on none.
//!
//! Set one with [`crate::ClientBuilder::observer`]. [`OperationCounts`] is a ready-made
//! observer that only counts, for applications that poll numbers instead.

use crate::error::ClientError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What kind of operation a client call was. `modify` and the typed calls are reported as the
/// gets and puts they are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// A quorum read.
    Get,
    /// A write of a value.
    Put,
    /// A delete (a write of a tombstone).
    Delete,
}

impl OperationKind {
    /// The kind as a metric label: `get`, `put`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Get => "get",
            OperationKind::Put => "put",
            OperationKind::Delete => "delete",
        }
    }
}

/// One finished client operation.
#[derive(Debug)]
pub struct Operation<'a> {
    /// What it was.
    pub kind: OperationKind,
    /// How it ended.
    pub result: Result<(), &'a ClientError>,
    /// From the call to its answer, ring refreshes and retries included.
    pub duration: Duration,
}

impl Operation<'_> {
    /// How it ended, as a metric label: `ok`, or the error's kind ([`error_kind`]).
    pub fn outcome(&self) -> &'static str {
        match self.result {
            Ok(()) => "ok",
            Err(e) => error_kind(e),
        }
    }
}

/// A [`ClientError`] as a metric label (`quorum_failed`, `outcome_unknown`, `unavailable`,
/// ...).
pub fn error_kind(error: &ClientError) -> &'static str {
    match error {
        ClientError::InvalidInput { .. } => "invalid_input",
        ClientError::QuorumFailed { .. } => "quorum_failed",
        ClientError::OutcomeUnknown { .. } => "outcome_unknown",
        ClientError::Unavailable { .. } => "unavailable",
        ClientError::Tls { .. } => "tls",
        ClientError::Codec { .. } => "codec",
        ClientError::ReadFailed { .. } => "read_failed",
        ClientError::Node { .. } => "node",
    }
}

/// Sees every operation a [`crate::Client`] finishes. Called on the task that made the call,
/// after the answer and before it is returned: keep it cheap (count, record, return).
pub trait OperationObserver: Send + Sync + 'static {
    /// One operation finished.
    fn observe(&self, operation: &Operation<'_>);
}

impl<F> OperationObserver for F
where
    F: Fn(&Operation<'_>) + Send + Sync + 'static,
{
    fn observe(&self, operation: &Operation<'_>) {
        self(operation)
    }
}

/// The observer a client was built with, if any.
#[derive(Clone, Default)]
pub(crate) struct Slot(pub(crate) Option<std::sync::Arc<dyn OperationObserver>>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(observer)"
        } else {
            "None"
        })
    }
}

/// An observer that counts operations by kind and outcome, and quorum failures.
#[derive(Debug, Default)]
pub struct OperationCounts {
    ok: [AtomicU64; 3],
    failed: [AtomicU64; 3],
    quorum_failed: AtomicU64,
}

impl OperationCounts {
    /// Operations of `kind` that succeeded.
    pub fn succeeded(&self, kind: OperationKind) -> u64 {
        self.ok[kind as usize].load(Ordering::Relaxed)
    }

    /// Operations of `kind` that failed, whatever the error.
    pub fn failed(&self, kind: OperationKind) -> u64 {
        self.failed[kind as usize].load(Ordering::Relaxed)
    }

    /// Operations of any kind that failed because R or W replicas did not answer.
    pub fn quorum_failures(&self) -> u64 {
        self.quorum_failed.load(Ordering::Relaxed)
    }
}

impl OperationObserver for OperationCounts {
    fn observe(&self, operation: &Operation<'_>) {
        let i = operation.kind as usize;
        match operation.result {
            Ok(()) => self.ok[i].fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                if matches!(e, ClientError::QuorumFailed { .. }) {
                    self.quorum_failed.fetch_add(1, Ordering::Relaxed);
                }
                self.failed[i].fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

impl<T: OperationObserver> OperationObserver for std::sync::Arc<T> {
    fn observe(&self, operation: &Operation<'_>) {
        (**self).observe(operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_outcome() {
        let counts = OperationCounts::default();
        let quorum = ClientError::QuorumFailed {
            required: 2,
            succeeded: 1,
            errors: vec![],
        };
        let unknown = ClientError::OutcomeUnknown {
            node: ringkv_shared::NodeId(1),
            reason: "lost".into(),
        };
        let op = |kind, result| Operation {
            kind,
            result,
            duration: Duration::from_millis(1),
        };
        counts.observe(&op(OperationKind::Get, Ok(())));
        counts.observe(&op(OperationKind::Get, Err(&quorum)));
        counts.observe(&op(OperationKind::Put, Err(&unknown)));
        counts.observe(&op(OperationKind::Delete, Ok(())));
        assert_eq!(counts.succeeded(OperationKind::Get), 1);
        assert_eq!(counts.failed(OperationKind::Get), 1);
        assert_eq!(counts.failed(OperationKind::Put), 1);
        assert_eq!(counts.succeeded(OperationKind::Delete), 1);
        assert_eq!(counts.quorum_failures(), 1);
        assert_eq!(
            op(OperationKind::Put, Err(&unknown)).outcome(),
            "outcome_unknown"
        );
        assert_eq!(op(OperationKind::Put, Ok(())).outcome(), "ok");
    }
}
