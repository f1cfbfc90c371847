//! Size limits enforced on everything that arrives, with documented defaults.

use serde::{Deserialize, Serialize};

/// Most keys one batch request may carry: `ReadMany`, `WriteMany` and a partition handoff
/// batch. A receiver refuses a larger one with `InvalidInput`.
pub const MAX_KEYS_PER_BATCH: usize = 4096;

/// Hard limits on what a node or client accepts. Both sides check them: the client before it
/// sends (so a bad call fails fast with `InvalidInput` and nothing is stored), the node on
/// arrival (so a client that skips the check is refused just the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest key, in bytes. Default 1 KiB: keys are identifiers, and every replica, hint and
    /// Merkle leaf holds a copy.
    pub max_key_bytes: usize,
    /// Largest value of a single write, in bytes. Default 1 MiB, Dynamo's "objects are
    /// typically less than 1 MB".
    pub max_value_bytes: usize,
    /// Largest stored object (all siblings together), in bytes. A write that would grow an
    /// object past it is refused with `InvalidInput`; resolve the siblings first. Default 8 MiB.
    pub max_object_bytes: usize,
    /// Most siblings a coordinated write may leave an object with. A write that would leave
    /// more is refused with `InvalidInput`: read the key and write back one resolved value
    /// with its context. Default 100.
    pub max_siblings: usize,
    /// Largest frame on the wire, in bytes. Must exceed `max_object_bytes` plus framing.
    /// Default 16 MiB.
    pub max_frame_bytes: usize,
    /// Concurrent request streams one peer may have open on a connection. Default 1024.
    pub max_streams_per_connection: u32,
    /// Request bytes one connection's frames may hold while they are read and served, in
    /// bytes. A frame's body is buffered as it arrives and counted here; a connection over it
    /// waits (QUIC flow control then stops its sender). Default 32 MiB; at least
    /// `max_frame_bytes`.
    pub max_connection_buffer_bytes: usize,
    /// Open connections a node accepts in total; more are refused before their handshake.
    /// Default 4096.
    pub max_connections: usize,
    /// Open connections a node accepts from one IP address (a client process keeps one per
    /// node; every node keeps one to each other). Default 256.
    pub max_connections_per_ip: usize,
    /// Request bytes all connections of a node may hold together while their frames are read
    /// and served (as `max_connection_buffer_bytes`, node-wide). Default 256 MiB; at least
    /// `max_connection_buffer_bytes`.
    pub max_node_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_object_bytes: 8 << 20,
            max_siblings: 100,
            max_frame_bytes: 16 << 20,
            max_streams_per_connection: 1024,
            max_connection_buffer_bytes: 32 << 20,
            max_node_buffer_bytes: 256 << 20,
            max_connections: 4096,
            max_connections_per_ip: 256,
        }
    }
}

/// The most one stored object may become: encoded bytes and siblings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectCap {
    /// Encoded bytes, all siblings together.
    pub bytes: usize,
    /// Siblings.
    pub siblings: usize,
}

/// How many times `max_siblings` a merge may leave (see [`Limits::merge_cap`]).
pub const MERGE_SIBLINGS_FACTOR: usize = 16;

impl Limits {
    /// What a coordinated write may leave: `max_object_bytes` and `max_siblings`.
    pub fn write_cap(&self) -> ObjectCap {
        ObjectCap {
            bytes: self.max_object_bytes,
            siblings: self.max_siblings,
        }
    }

    /// What a merge may leave (replication, hints, handoff, anti-entropy, read repair): more
    /// than a write, since two replicas' copies within [`Limits::write_cap`] can merge to more,
    /// but never an object that no longer fits one frame with its key. So every stored object
    /// can always be read, replicated and repaired, and one that a merge would grow past this
    /// is refused and keeps its stored copy.
    pub fn merge_cap(&self) -> ObjectCap {
        ObjectCap {
            bytes: self
                .max_frame_bytes
                .saturating_sub(self.max_key_bytes + 4096),
            siblings: self
                .max_siblings
                .saturating_mul(MERGE_SIBLINGS_FACTOR)
                .min(crate::object::MAX_DECODED_SIBLINGS),
        }
    }

    /// Object bytes one batch (a handoff batch, an anti-entropy push) carries: half a frame.
    /// A batch holds at least one object, and every stored object fits a frame.
    pub fn batch_bytes(&self) -> usize {
        self.max_frame_bytes / 2
    }

    /// Checks a key and (for writes) a value against the limits.
    pub fn check(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        if key.is_empty() {
            return Err("key is empty".into());
        }
        if key.len() > self.max_key_bytes {
            return Err(format!(
                "key is {} bytes, the limit is {}",
                key.len(),
                self.max_key_bytes
            ));
        }
        if let Some(v) = value
            && v.len() > self.max_value_bytes
        {
            return Err(format!(
                "value is {} bytes, the limit is {}",
                v.len(),
                self.max_value_bytes
            ));
        }
        Ok(())
    }

    /// Checks that the limits are consistent with each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return Err("max_key_bytes and max_value_bytes must be positive".into());
        }
        if self.max_object_bytes < self.max_value_bytes {
            return Err("max_object_bytes must be at least max_value_bytes".into());
        }
        if self.max_siblings == 0
            || self.max_siblings > crate::object::MAX_DECODED_SIBLINGS / MERGE_SIBLINGS_FACTOR
        {
            return Err(format!(
                "max_siblings must be between 1 and {}",
                crate::object::MAX_DECODED_SIBLINGS / MERGE_SIBLINGS_FACTOR
            ));
        }
        if self.max_frame_bytes < self.max_object_bytes + self.max_key_bytes + 4096 {
            return Err(
                "max_frame_bytes must exceed max_object_bytes + max_key_bytes + 4 KiB".into(),
            );
        }
        if self.max_frame_bytes > u32::MAX as usize {
            return Err("max_frame_bytes must fit in 32 bits".into());
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err("max_connections and max_connections_per_ip must be positive".into());
        }
        if self.max_streams_per_connection == 0 {
            return Err("max_streams_per_connection must be positive".into());
        }
        if self.max_connection_buffer_bytes < self.max_frame_bytes {
            return Err("max_connection_buffer_bytes must be at least max_frame_bytes".into());
        }
        if self.max_node_buffer_bytes < self.max_connection_buffer_bytes {
            return Err(
                "max_node_buffer_bytes must be at least max_connection_buffer_bytes".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consistent() {
        Limits::default().validate().unwrap();
    }

    #[test]
    fn check_names_the_offending_size() {
        let l = Limits {
            max_key_bytes: 4,
            ..Limits::default()
        };
        assert!(l.check(b"abcd", Some(b"v")).is_ok());
        assert!(l.check(b"abcde", None).unwrap_err().contains("5 bytes"));
        assert!(l.check(b"", None).is_err());
        let big = vec![0u8; l.max_value_bytes + 1];
        assert!(l.check(b"k", Some(&big)).unwrap_err().contains("value"));
    }

    #[test]
    fn inconsistent_limits_are_rejected() {
        let l = Limits {
            max_frame_bytes: 1024,
            ..Limits::default()
        };
        assert!(l.validate().is_err());
    }
}
