//! Why a storage operation failed.

use ringkv_shared::PartitionId;
use ringkv_shared::encoding::DecodeError;
use std::path::PathBuf;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The storage engine failed.
    #[error("storage engine error: {source}")]
    Engine {
        /// fjall's error.
        #[from]
        source: fjall::Error,
    },
    /// The data directory cannot be created or used.
    #[error("data directory {path}: {reason}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process (or store) holds the data directory open.
    #[error(
        "data directory {path} is in use by another process: is a ringkv-node already running on it?"
    )]
    InUse {
        /// The directory.
        path: PathBuf,
    },
    /// The directory holds another node's data, or a format this build does not read.
    #[error("data directory {path} cannot be used by this node: {reason}")]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A stored object failed its checksum or could not be decoded.
    #[error("stored object for key {key:?} in partition {partition} is corrupt: {source}")]
    Corrupt {
        /// The partition.
        partition: PartitionId,
        /// The user key (lossy UTF-8 for display).
        key: String,
        /// The decoder's error.
        source: DecodeError,
    },
    /// A write would grow the object past the configured limit.
    #[error(
        "object would be {size} bytes with its siblings, the limit is {max}; resolve siblings first"
    )]
    ObjectTooLarge {
        /// The size it would have.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A write or merge would leave the object with more siblings than the limit.
    #[error(
        "object would have {count} siblings, the limit is {max}; read the key and write back one resolved value with its context"
    )]
    TooManySiblings {
        /// The siblings it would have.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A write cannot be stamped: the coordinator's counter for the key is exhausted.
    #[error("cannot stamp a write of key {key:?}: {reason}")]
    Version {
        /// The user key (lossy UTF-8 for display).
        key: String,
        /// Why.
        reason: String,
    },
    /// The fsync covering a write failed.
    #[error("durability: {reason}")]
    Sync {
        /// Why.
        reason: String,
    },
}
