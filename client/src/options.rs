//! Replication defaults and per-call options.

use crate::error::ClientError;
use ringkv_shared::hedge::HedgePolicy;
use std::time::Duration;

/// How requests are coordinated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Client-driven (default): the client computes each key's replicas from its cached ring,
    /// reads from them directly, and sends writes to the first healthy replica.
    #[default]
    Direct,
    /// Router mode: each request goes to one random node, which coordinates it, as behind a
    /// load balancer. Slower (an extra hop, often to a non-replica); kept for comparison and
    /// for clients that cannot track the ring.
    Router,
}

/// Replication defaults of a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Replicas per key.
    pub n: u8,
    /// Read quorum.
    pub r: u8,
    /// Write quorum.
    pub w: u8,
    /// Call deadline.
    pub timeout: Duration,
    /// Hedged reads: ask R replicas, and one more each time the policy's delay passes
    /// without a quorum (`None`, the default: ask all N at once, as Dynamo does). See
    /// [`ringkv_net::fanout::read_hedged`] and [`ringkv_shared::hedge`].
    pub read_hedge: Option<HedgePolicy>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            n: 3,
            r: 2,
            w: 2,
            timeout: Duration::from_secs(2),
            read_hedge: None,
        }
    }
}

impl Defaults {
    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        let bad = |reason: String| Err(ClientError::InvalidInput { reason });
        if self.n == 0 {
            return bad("N must be at least 1".into());
        }
        for (name, q) in [("R", self.r), ("W", self.w)] {
            if ringkv_shared::proto::Quorum::check_counts(self.n, q).is_err() {
                return bad(format!("{name}={q} must be between 1 and N={}", self.n));
            }
        }
        if self.timeout.is_zero() {
            return bad("timeout must be positive".into());
        }
        if let Some(hedge) = self.read_hedge {
            hedge.validate().or_else(bad)?;
        }
        Ok(())
    }
}

/// Per-call overrides; `None` keeps the client's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Replicas per key.
    pub n: Option<u8>,
    /// R for a read, W for a write.
    pub quorum: Option<u8>,
    /// Deadline of this call.
    pub timeout: Option<Duration>,
}

impl CallOptions {
    /// Overrides R (reads) or W (writes).
    pub fn quorum(mut self, q: u8) -> Self {
        self.quorum = Some(q);
        self
    }

    /// Overrides the deadline.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Overrides N.
    pub fn n(mut self, n: u8) -> Self {
        self.n = Some(n);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        assert!(Defaults::default().validate().is_ok());
        let bad = |d: Defaults| match d.validate() {
            Err(ClientError::InvalidInput { reason }) => reason,
            other => panic!("accepted {d:?}: {other:?}"),
        };
        let r = bad(Defaults {
            r: 4,
            ..Defaults::default()
        });
        assert!(r.contains("R=4"), "{r}");
        let r = bad(Defaults {
            read_hedge: Some(HedgePolicy::Percentile(100)),
            ..Defaults::default()
        });
        assert!(r.contains("percentile 100"), "{r}");
        let r = bad(Defaults {
            read_hedge: Some(HedgePolicy::Fixed(Duration::ZERO)),
            ..Defaults::default()
        });
        assert!(r.contains("positive"), "{r}");
        assert!(
            Defaults {
                read_hedge: Some(HedgePolicy::Percentile(90)),
                ..Defaults::default()
            }
            .validate()
            .is_ok()
        );
    }
}
