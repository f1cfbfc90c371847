//! A node's storage: objects, and node metadata, in one fjall database.
//!
//! Keyspaces:
//! - `objects`: partition (u32, big-endian) ++ user key → [`ringkv_shared::encoding::encode_object`] bytes
//!   (format byte, checksum, body).
//! - `hints`: owner node id (u32, big-endian) ++ partition ++ user key → encoded object: copies
//!   this node holds as a stand-in for an owner that was down, until they are handed over.
//! - `tombstones`: partition ++ user key → when (ms since the epoch) this node's object for the
//!   key became a pure tombstone; the reaper's work list, updated in the same batch as the
//!   object.
//! - `meta`: the storage format version, the node id the directory belongs to, this storage
//!   incarnation's [`ActorId`], a clean-shutdown marker, the persisted cluster view, handoff
//!   cursors, and which partitions are retired (`retire`: copies dropped when the node stopped
//!   replicating them).
//!
//! **Incarnations.** A node whose directory is new, or whose last run did not end with a clean
//! [`Store::close`], draws a fresh actor id. Under `buffered` or `none` durability a crash can
//! lose the node's last writes while its replicas keep them; stamping new writes with the old
//! actor could then reuse a dot the replicas already hold for another value, and a merge would
//! lose one of the two (Riak's KV679). A new incarnation cannot collide.
//!
//! Every write is a read-merge-write of one key under a striped lock, committed as one fjall
//! batch, skipped when it would change nothing, and acknowledged per the [`Durability`] policy.

mod durability;
mod keys;
mod retire;
mod transfer;
mod trees;

pub use durability::{Durability, Ticket};

use bytes::Bytes;
use durability::GroupCommit;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use ringkv_shared::encoding::{DecodeError, decode_object, encode_object};
use ringkv_shared::{ActorId, NodeId, Object, PartitionId, VersionVector};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tracing::{info, warn};

/// The on-disk layout version this build writes and reads.
pub const STORAGE_FORMAT: u8 = 1;

const LOCK_STRIPES: usize = 1024;

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
    /// The fsync covering a write failed.
    #[error("durability: {reason}")]
    Sync {
        /// Why.
        reason: String,
    },
}

/// A hint held for another node.
#[derive(Clone, Debug)]
pub struct Hint {
    /// The owner the copy was meant for when it was written (the key's current owners are
    /// where it is delivered).
    pub owner: NodeId,
    /// The key's partition.
    pub partition: PartitionId,
    /// The user key.
    pub key: Bytes,
    /// The object to hand over.
    pub object: Object,
    raw: Vec<u8>,
}

/// Where a read-modify-write happens: the raw storage key and, for messages, the user key.
struct Target<'a> {
    raw: Vec<u8>,
    partition: PartitionId,
    key: &'a [u8],
    /// Whether the anti-entropy tree covers this entry (replica data does, hints do not).
    in_tree: bool,
}

impl<'a> Target<'a> {
    fn object(partition: PartitionId, key: &'a [u8]) -> Self {
        Self {
            raw: keys::object_key(partition, key),
            partition,
            key,
            in_tree: true,
        }
    }

    fn hint(owner: NodeId, partition: PartitionId, key: &'a [u8]) -> Self {
        Self {
            raw: keys::hint_key(owner, partition, key),
            partition,
            key,
            in_tree: false,
        }
    }
}

/// `incoming` merged into what is stored. A stored copy that fails its checksum is replaced
/// (and reported): the other replicas hold the rest, and anti-entropy or read repair brings it
/// back.
fn merge_into(
    current: Result<Option<Object>, StorageError>,
    incoming: &Object,
    what: &str,
) -> Object {
    let mut merged = match current {
        Ok(Some(o)) => o,
        Ok(None) => Object::new(),
        Err(e) => {
            warn!(error = %e, "replacing a corrupt {what} with the incoming copy");
            Object::new()
        }
    };
    merged.merge(incoming);
    merged
}

/// Whether an object holds only tombstones (and at least one).
fn is_tombstone(o: &Object) -> bool {
    !o.siblings().is_empty() && o.is_deleted()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn read_object(
    keyspace: &Keyspace,
    raw_key: &[u8],
    partition: PartitionId,
    key: &[u8],
) -> Result<Option<Object>, StorageError> {
    decode_stored(keyspace.get(raw_key)?.as_deref(), partition, key)
}

fn decode_stored(
    raw: Option<&[u8]>,
    partition: PartitionId,
    key: &[u8],
) -> Result<Option<Object>, StorageError> {
    raw.map(|bytes| {
        decode_object(bytes).map_err(|source| StorageError::Corrupt {
            partition,
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        })
    })
    .transpose()
}

/// Storage counters, for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches committed (writes that changed an object).
    pub writes: u64,
    /// fsyncs run by the syncer (under `sync`, writes per fsync is the group-commit factor).
    pub fsyncs: u64,
}

/// Options for [`Store::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The cluster's partition count Q (fixed at creation; a directory made with another Q
    /// is refused).
    pub partitions: u32,
    /// The durability policy.
    pub durability: Durability,
    /// Background fsync interval under [`Durability::Buffered`].
    pub buffered_interval: Duration,
    /// fjall block cache, in bytes.
    pub cache_bytes: u64,
    /// Under [`Durability::Sync`]: how long the syncer lets more writes gather before an fsync
    /// when the previous fsync covered several (writes are concurrent). Zero fsyncs at once.
    pub group_commit_gather: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            partitions: ringkv_shared::ring::DEFAULT_PARTITIONS,
            durability: Durability::Sync,
            buffered_interval: Duration::from_millis(10),
            cache_bytes: 64 << 20,
            group_commit_gather: DEFAULT_GROUP_COMMIT_GATHER,
        }
    }
}

/// The default [`StoreOptions::group_commit_gather`]: with 32 operations in flight on three
/// nodes sharing a disk it about doubled the writes each fsync covers (1.5 to 2.9) and raised
/// throughput by a quarter (docs/BENCHMARKS.md); a lone write never waits it.
pub const DEFAULT_GROUP_COMMIT_GATHER: Duration = Duration::from_micros(500);

/// One node's storage.
pub struct Store {
    db: Database,
    objects: Keyspace,
    hints: Keyspace,
    /// Hint keys held, maintained under the stripe locks: reads skip the hints keyspace
    /// entirely while it is zero (the common case).
    hint_keys: std::sync::atomic::AtomicU64,
    tombstones: Keyspace,
    meta: Keyspace,
    trees: trees::Trees,
    actor: ActorId,
    locks: Box<[Mutex<()>]>,
    commit: GroupCommit,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the storage of node `node` in `dir`.
    ///
    /// A directory created by another node id, or by a newer storage format, is refused
    /// rather than served. A new directory draws a fresh random [`ActorId`].
    pub fn open(dir: &Path, node: NodeId, opts: &StoreOptions) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Directory {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        let db = Database::builder(dir).cache_size(opts.cache_bytes).open()?;
        let objects = db.keyspace("objects", KeyspaceCreateOptions::default)?;
        let hints = db.keyspace("hints", KeyspaceCreateOptions::default)?;
        let tombstones = db.keyspace("tombstones", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let foreign = |reason: String| StorageError::Foreign {
            path: dir.to_owned(),
            reason,
        };

        match meta.get("format")? {
            None => {}
            Some(v) if v.as_ref() == [STORAGE_FORMAT] => {}
            Some(v) => {
                return Err(foreign(format!(
                    "storage format {:?}, this build reads format {STORAGE_FORMAT}",
                    v.as_ref()
                )));
            }
        }
        // A big-endian u32 metadata entry, if present.
        let stored_u32 = |name: &str| -> Result<Option<u32>, StorageError> {
            meta.get(name)?
                .map(|v| {
                    <[u8; 4]>::try_from(v.as_ref())
                        .map(u32::from_be_bytes)
                        .map_err(|_| foreign(format!("{name} entry is malformed")))
                })
                .transpose()
        };
        if let Some(stored) = stored_u32("node_id")?
            && stored != node.0
        {
            return Err(foreign(format!(
                "it belongs to node {}, not {node}",
                NodeId(stored)
            )));
        }
        if let Some(stored) = stored_u32("partitions")?
            && stored != opts.partitions
        {
            return Err(foreign(format!(
                "it was created with {stored} partitions, the config says {}; the partition count cannot change",
                opts.partitions
            )));
        }
        let clean = meta.get("clean_shutdown")?.is_some();
        let actor = match meta.get("actor")? {
            Some(v) if clean => <[u8; 8]>::try_from(v.as_ref())
                .map(|b| ActorId(u64::from_be_bytes(b)))
                .map_err(|_| foreign("actor entry is malformed".into()))?,
            existing => {
                let actor = ActorId(rand::random());
                let mut batch = db.batch();
                batch.insert(&meta, "format", [STORAGE_FORMAT].as_slice());
                batch.insert(&meta, "node_id", node.0.to_be_bytes().as_slice());
                batch.insert(&meta, "actor", actor.0.to_be_bytes().as_slice());
                batch.insert(
                    &meta,
                    "partitions",
                    opts.partitions.to_be_bytes().as_slice(),
                );
                batch.commit()?;
                db.persist(fjall::PersistMode::SyncAll)?;
                if existing.is_some() {
                    warn!(%node, %actor, path = %dir.display(), "the last run did not shut down cleanly: new storage incarnation");
                } else {
                    info!(%node, %actor, path = %dir.display(), "new storage incarnation");
                }
                actor
            }
        };
        // Running: the marker comes back only with a clean close.
        if clean {
            meta.remove("clean_shutdown")?;
            db.persist(fjall::PersistMode::SyncAll)?;
        }
        if meta.get("partitions")?.is_none() {
            meta.insert("partitions", opts.partitions.to_be_bytes().as_slice())?;
        }
        let trees = trees::Trees::build(&objects, opts.partitions).map_err(foreign)?;
        let mut hint_keys = 0u64;
        for guard in hints.iter() {
            guard.key()?;
            hint_keys += 1;
        }
        let commit = GroupCommit::start(
            db.clone(),
            opts.durability,
            opts.buffered_interval,
            opts.group_commit_gather,
        )
        .map_err(|e| StorageError::Directory {
            path: dir.to_owned(),
            reason: format!("cannot start the syncer thread: {e}"),
        })?;
        Ok(Self {
            db,
            objects,
            hints,
            hint_keys: std::sync::atomic::AtomicU64::new(hint_keys),
            tombstones,
            meta,
            trees,
            actor,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            commit,
            path: dir.to_owned(),
        })
    }

    /// This storage incarnation's actor id: the one that stamps dots of writes coordinated here.
    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// The object stored for `key`, or `None` if there is none.
    pub fn get(&self, partition: PartitionId, key: &[u8]) -> Result<Option<Object>, StorageError> {
        read_object(
            &self.objects,
            &keys::object_key(partition, key),
            partition,
            key,
        )
    }

    /// Merges `incoming` into the stored object (replica synchronisation) and returns the
    /// result. A stored object that fails its checksum is replaced by `incoming` (logged): the
    /// co-replicas hold the rest, and anti-entropy or read repair brings it back.
    pub async fn merge(
        &self,
        partition: PartitionId,
        key: &[u8],
        incoming: &Object,
    ) -> Result<Object, StorageError> {
        Ok(self.merge_reporting(partition, key, incoming).await?.0)
    }

    /// [`Store::merge`], also telling whether the stored object changed.
    pub async fn merge_reporting(
        &self,
        partition: PartitionId,
        key: &[u8],
        incoming: &Object,
    ) -> Result<(Object, bool), StorageError> {
        let at = Target::object(partition, key);
        self.read_modify_write(&self.objects, &at, None, |current| {
            Ok(merge_into(current, incoming, "object"))
        })
        .await
    }

    /// Applies a client write coordinated here: drops siblings covered by `context`, stamps
    /// `value` (or a tombstone) with this node's next dot, and returns the new object once it is
    /// as durable as the policy requires. Refused if the result would exceed `max_object_bytes`.
    pub async fn update(
        &self,
        partition: PartitionId,
        key: &[u8],
        context: &VersionVector,
        value: Option<Bytes>,
        max_object_bytes: usize,
    ) -> Result<Object, StorageError> {
        let (object, ticket) =
            self.update_staged(partition, key, context, value, max_object_bytes)?;
        self.durable(ticket).await?;
        Ok(object)
    }

    /// [`Store::update`] up to the commit: the write is in the journal, and the returned
    /// [`Ticket`] must be waited for ([`Store::durable`]) before it is acknowledged. A
    /// coordinator replicates meanwhile, so its own fsync and the replicas' overlap; if it
    /// crashes before the fsync, nothing was acknowledged, and its next incarnation cannot
    /// reuse the dot.
    pub fn update_staged(
        &self,
        partition: PartitionId,
        key: &[u8],
        context: &VersionVector,
        value: Option<Bytes>,
        max_object_bytes: usize,
    ) -> Result<(Object, Ticket), StorageError> {
        let actor = self.actor;
        let at = Target::object(partition, key);
        let (object, _, ticket) =
            self.stage(&self.objects, &at, Some(max_object_bytes), |current| {
                // A corrupt object is not overwritten by a coordinated write: its dots are unknown,
                // and stamping without them could reuse one.
                let mut obj = current?.unwrap_or_default();
                obj.update(context, value, actor);
                Ok(obj)
            })?;
        Ok((object, ticket))
    }

    /// Waits until the write behind `ticket` is as durable as the policy requires.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StorageError> {
        self.commit
            .durable(ticket)
            .await
            .map_err(|reason| StorageError::Sync { reason })
    }

    /// Stores `object` as a hint for `owner` (merged with any hint already held for the key).
    pub async fn put_hint(
        &self,
        owner: NodeId,
        partition: PartitionId,
        key: &[u8],
        object: &Object,
    ) -> Result<(), StorageError> {
        let at = Target::hint(owner, partition, key);
        self.read_modify_write(&self.hints, &at, None, |current| {
            Ok(merge_into(current, object, "hint"))
        })
        .await?;
        Ok(())
    }

    /// Tombstones older than `grace_ms`, up to `limit`: `(partition, key, since_ms)`.
    pub fn tombstones_older_than(
        &self,
        grace_ms: u64,
        limit: usize,
    ) -> Result<Vec<(PartitionId, Bytes, u64)>, StorageError> {
        let now = now_ms();
        let mut out = Vec::new();
        for guard in self.tombstones.iter() {
            if out.len() >= limit {
                break;
            }
            let (raw_key, raw) = guard.into_inner()?;
            let Some((p, key)) = keys::split_object_key(&raw_key) else {
                continue;
            };
            let since = <[u8; 8]>::try_from(raw.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if now.saturating_sub(since) >= grace_ms {
                out.push((p, Bytes::copy_from_slice(key), since));
            }
        }
        Ok(out)
    }

    /// Tombstones this node tracks (pure-tombstone objects not yet reaped).
    pub fn tombstone_count(&self) -> Result<u64, StorageError> {
        let mut n = 0;
        for guard in self.tombstones.iter() {
            guard.key()?;
            n += 1;
        }
        Ok(n)
    }

    /// Removes `key`'s stored object (`raw`, stored under `raw_key`) for good: the object, its
    /// tombstone record and its hash-tree entry. The caller holds the key's lock.
    fn remove_stored(
        &self,
        partition: PartitionId,
        key: &[u8],
        raw_key: &[u8],
        raw: &[u8],
    ) -> Result<(), StorageError> {
        let mut batch = self.db.batch();
        batch.remove(&self.objects, raw_key);
        batch.remove(&self.tombstones, raw_key);
        batch.commit()?;
        self.trees
            .toggle(partition, key, ringkv_shared::merkle::entry_hash(key, raw));
        Ok(())
    }

    /// Removes `key`'s object for good if it is still a pure tombstone with exactly `clock`.
    /// Returns whether it was removed.
    pub async fn reap_if_unchanged(
        &self,
        partition: PartitionId,
        key: &[u8],
        clock: &VersionVector,
    ) -> Result<bool, StorageError> {
        let raw_key = keys::object_key(partition, key);
        let removed = {
            let _guard = self.lock_for(&raw_key);
            let Some(raw) = self.objects.get(&raw_key)? else {
                self.tombstones.remove(raw_key.clone())?;
                return Ok(false);
            };
            let current = decode_stored(Some(&raw), partition, key)?.unwrap_or_default();
            if !is_tombstone(&current) || current.clock() != clock {
                false
            } else {
                self.remove_stored(partition, key, &raw_key, &raw)?;
                true
            }
        };
        if removed {
            self.durable(self.commit.committed()).await?;
        }
        Ok(removed)
    }

    /// Roots of the anti-entropy trees of `partitions` (0 for an empty partition).
    pub fn tree_roots(&self, partitions: &[PartitionId]) -> Vec<u64> {
        partitions.iter().map(|p| self.trees.root(*p)).collect()
    }

    /// Every leaf of a partition's tree (empty if the partition is out of range).
    pub fn tree_leaves(&self, partition: PartitionId) -> Vec<u64> {
        self.trees.leaves(partition)
    }

    /// `(key, entry hash)` of every stored key of `partition` that falls in `leaves`.
    pub fn leaf_entries(
        &self,
        partition: PartitionId,
        leaves: &[u16],
    ) -> Result<Vec<(Bytes, u64)>, StorageError> {
        let wanted: std::collections::BTreeSet<u16> = leaves.iter().copied().collect();
        let mut out = Vec::new();
        for guard in self.objects.prefix(partition.to_be_bytes()) {
            let (raw_key, raw) = guard.into_inner()?;
            let Some((_, key)) = keys::split_object_key(&raw_key) else {
                continue;
            };
            if wanted.contains(&ringkv_shared::merkle::leaf_of(key)) {
                out.push((
                    Bytes::copy_from_slice(key),
                    ringkv_shared::merkle::entry_hash(key, &raw),
                ));
            }
        }
        Ok(out)
    }

    /// Every hint held for `key` (for any of `owners`), merged: a stand-in answers reads with
    /// what it holds for others as well as its own data.
    pub fn hints_for_key(
        &self,
        partition: PartitionId,
        key: &[u8],
        owners: impl Iterator<Item = NodeId>,
    ) -> Result<Option<Object>, StorageError> {
        if self.hint_keys.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return Ok(None);
        }
        let mut merged: Option<Object> = None;
        for owner in owners {
            let raw_key = keys::hint_key(owner, partition, key);
            if let Some(o) = read_object(&self.hints, &raw_key, partition, key)? {
                merged.get_or_insert_with(Object::new).merge(&o);
            }
        }
        Ok(merged)
    }

    /// Up to `limit` hints for any owner, in storage order, starting after the hint `after`
    /// names (its `(owner, partition, key)`), from the start if `None`. Corrupt hints are
    /// reported and removed (they can never be delivered; the write they carried is on the
    /// other nodes that acknowledged it).
    pub fn hints_after(
        &self,
        after: Option<(NodeId, PartitionId, &[u8])>,
        limit: usize,
    ) -> Result<Vec<Hint>, StorageError> {
        if self.hint_keys.load(std::sync::atomic::Ordering::Acquire) == 0 {
            return Ok(Vec::new());
        }
        let start = match after {
            Some((owner, p, key)) => std::ops::Bound::Excluded(keys::hint_key(owner, p, key)),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::new();
        for guard in self
            .hints
            .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
        {
            if out.len() >= limit {
                break;
            }
            let (raw_key, raw) = guard.into_inner()?;
            let Some((owner, partition, key)) = keys::split_hint_key(&raw_key) else {
                warn!("removing a hint with a malformed key");
                self.remove_hint_key(&raw_key)?;
                continue;
            };
            match decode_object(&raw) {
                Ok(object) => out.push(Hint {
                    owner,
                    partition,
                    key: Bytes::copy_from_slice(key),
                    object,
                    raw: raw.to_vec(),
                }),
                Err(e) => {
                    tracing::error!(%owner, partition, error = %e, "removing a corrupt hint");
                    self.remove_hint_key(&raw_key)?;
                }
            }
        }
        Ok(out)
    }

    /// Removes a delivered hint, unless it changed since it was read (a newer copy arrived
    /// meanwhile; it will be delivered next round). Returns whether it was removed.
    pub fn remove_hint_if_unchanged(&self, hint: &Hint) -> Result<bool, StorageError> {
        let raw_key = keys::hint_key(hint.owner, hint.partition, &hint.key);
        let _guard = self.lock_for(&raw_key);
        match self.hints.get(&raw_key)? {
            Some(now) if now.as_ref() == hint.raw.as_slice() => {
                self.hints.remove(raw_key)?;
                self.hint_keys
                    .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn remove_hint_key(&self, raw_key: &[u8]) -> Result<(), StorageError> {
        let _guard = self.lock_for(raw_key);
        if self.hints.get(raw_key)?.is_some() {
            self.hints.remove(raw_key)?;
            self.hint_keys
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(())
    }

    /// Hints held for other nodes.
    pub fn hints_pending(&self) -> Result<u64, StorageError> {
        Ok(self.hint_keys.load(std::sync::atomic::Ordering::Acquire))
    }

    fn lock_for(&self, raw_key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let stripe = (ringkv_shared::hash::key_hash(raw_key) as usize) % LOCK_STRIPES;
        self.locks[stripe].lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn read_modify_write(
        &self,
        keyspace: &Keyspace,
        at: &Target<'_>,
        max_object_bytes: Option<usize>,
        f: impl FnOnce(Result<Option<Object>, StorageError>) -> Result<Object, StorageError>,
    ) -> Result<(Object, bool), StorageError> {
        let (next, wrote, ticket) = self.stage(keyspace, at, max_object_bytes, f)?;
        self.durable(ticket).await?;
        Ok((next, wrote))
    }

    /// Reads, applies `f`, and commits the result (skipping unchanged objects) under the key's
    /// stripe lock; returns what to wait for before acknowledging. An unchanged object may
    /// equal a write still waiting for its fsync, so it gets a ticket covering everything
    /// committed so far.
    fn stage(
        &self,
        keyspace: &Keyspace,
        at: &Target<'_>,
        max_object_bytes: Option<usize>,
        f: impl FnOnce(Result<Option<Object>, StorageError>) -> Result<Object, StorageError>,
    ) -> Result<(Object, bool, Ticket), StorageError> {
        let storage_key = &at.raw;
        let (next, wrote) = {
            let _guard = self.lock_for(storage_key);
            let old_raw = keyspace.get(storage_key)?;
            let current = decode_stored(old_raw.as_deref(), at.partition, at.key);
            let unchanged_from = current.as_ref().ok().and_then(|c| c.clone());
            let next = f(current)?;
            if unchanged_from.as_ref() == Some(&next) {
                (next, false)
            } else {
                let encoded = encode_object(&next);
                if let Some(max) = max_object_bytes
                    && encoded.len() > max
                {
                    return Err(StorageError::ObjectTooLarge {
                        size: encoded.len(),
                        max,
                    });
                }
                let new_hash = at
                    .in_tree
                    .then(|| ringkv_shared::merkle::entry_hash(at.key, &encoded));
                let new_hint_key = !at.in_tree && old_raw.is_none();
                let mut batch = self.db.batch();
                batch.insert(keyspace, storage_key.as_slice(), encoded);
                if at.in_tree {
                    let was_tombstone = unchanged_from.as_ref().is_some_and(is_tombstone);
                    if is_tombstone(&next) && !was_tombstone {
                        batch.insert(
                            &self.tombstones,
                            storage_key.as_slice(),
                            now_ms().to_be_bytes().as_slice(),
                        );
                    } else if !is_tombstone(&next) && was_tombstone {
                        batch.remove(&self.tombstones, storage_key.as_slice());
                    }
                }
                batch.commit()?;
                if new_hint_key {
                    self.hint_keys
                        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
                if let Some(new_hash) = new_hash {
                    let old_hash =
                        old_raw.map_or(0, |b| ringkv_shared::merkle::entry_hash(at.key, &b));
                    self.trees.toggle(at.partition, at.key, old_hash ^ new_hash);
                }
                (next, true)
            }
        };
        let ticket = if wrote {
            self.commit.committed()
        } else {
            self.commit.barrier()
        };
        Ok((next, wrote, ticket))
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> StoreStats {
        self.commit.stats()
    }

    /// Number of objects stored (approximate; for metrics and tests).
    pub fn approximate_len(&self) -> usize {
        self.objects.approximate_len()
    }

    /// Flushes everything to disk and stops the syncer. Called on clean shutdown.
    pub fn close(&self) -> Result<(), StorageError> {
        self.commit.stop();
        self.db.persist(fjall::PersistMode::SyncAll)?;
        self.meta.insert("clean_shutdown", [1u8].as_slice())?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn val(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[tokio::test]
    async fn gathering_never_delays_a_lone_writer_and_concurrent_writers_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            group_commit_gather: Duration::from_secs(60),
            ..StoreOptions::default()
        };
        let s = Arc::new(Store::open(dir.path(), NodeId(1), &opts).unwrap());
        // One write at a time: each fsync covers one write, so none waits the (huge) gather.
        tokio::time::timeout(Duration::from_secs(30), async {
            for i in 0..4u8 {
                s.update(0, &[i], &VersionVector::new(), val("v"), 1 << 20)
                    .await
                    .unwrap();
            }
        })
        .await
        .expect("a lone writer waited for the gathering delay");
        let stats = s.stats();
        assert_eq!(
            (stats.writes, stats.fsyncs),
            (4, 4),
            "one fsync per lone write"
        );

        // Concurrent writers: after an fsync that covered two writes, the syncer waits the
        // gather, so a write committed during it shares the next fsync with the one before.
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            group_commit_gather: Duration::from_secs(2),
            ..StoreOptions::default()
        };
        let s = Arc::new(Store::open(dir.path(), NodeId(1), &opts).unwrap());
        let stage = |k: u8| {
            s.update_staged(0, &[k], &VersionVector::new(), val("v"), 1 << 20)
                .unwrap()
                .1
        };
        let (t1, t2) = (stage(1), stage(2));
        s.durable(t1).await.unwrap();
        s.durable(t2).await.unwrap();
        assert_eq!(
            s.stats().fsyncs,
            1,
            "both writes were committed before the fsync"
        );
        let ta = stage(3);
        let waiter = s.clone();
        let a = tokio::spawn(async move { waiter.durable(ta).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tb = stage(4);
        s.durable(tb).await.unwrap();
        a.await.unwrap().unwrap();
        assert_eq!(
            s.stats().fsyncs,
            2,
            "the write committed 50 ms into the gather shared the fsync"
        );
    }

    #[tokio::test]
    async fn update_merge_get_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::default();
        let actor = {
            let s = Store::open(dir.path(), NodeId(1), &opts).unwrap();
            let o = s
                .update(3, b"k", &VersionVector::new(), val("v1"), 1 << 20)
                .await
                .unwrap();
            assert_eq!(o.values().count(), 1);
            let mut other = Object::new();
            other.update(&VersionVector::new(), val("v2"), ActorId(42));
            let m = s.merge(3, b"k", &other).await.unwrap();
            assert_eq!(m.values().count(), 2);
            assert_eq!(s.get(3, b"k").unwrap().unwrap(), m);
            assert_eq!(
                s.get(4, b"k").unwrap(),
                None,
                "partition is part of the key"
            );
            s.close().unwrap();
            s.actor()
        };
        let s = Store::open(dir.path(), NodeId(1), &opts).unwrap();
        assert_eq!(s.actor(), actor, "the incarnation survives a restart");
        assert_eq!(s.get(3, b"k").unwrap().unwrap().values().count(), 2);
    }

    #[tokio::test]
    async fn an_unclean_shutdown_starts_a_new_incarnation_and_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            durability: Durability::None,
            ..StoreOptions::default()
        };
        let first = {
            let s = Store::open(dir.path(), NodeId(1), &opts).unwrap();
            s.update(0, b"k", &VersionVector::new(), val("v"), 1 << 20)
                .await
                .unwrap();
            s.db.persist(fjall::PersistMode::SyncAll).unwrap();
            s.actor()
            // Dropped without close(): a crash.
        };
        let s = Store::open(dir.path(), NodeId(1), &opts).unwrap();
        assert_ne!(s.actor(), first, "a crash must not keep the old actor");
        assert!(s.get(0, b"k").unwrap().is_some());
        let second = s.actor();
        s.close().unwrap();
        drop(s);
        let s = Store::open(dir.path(), NodeId(1), &opts).unwrap();
        assert_eq!(s.actor(), second, "a clean close keeps the actor");
    }

    #[tokio::test]
    async fn a_directory_of_another_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), NodeId(1), &StoreOptions::default()).unwrap();
        s.close().unwrap();
        drop(s);
        let err = Store::open(dir.path(), NodeId(2), &StoreOptions::default()).unwrap_err();
        assert!(err.to_string().contains("belongs to node n1"), "{err}");
    }

    #[tokio::test]
    async fn a_wiped_directory_gets_a_new_actor() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let s1 = Store::open(a.path(), NodeId(1), &StoreOptions::default()).unwrap();
        let s2 = Store::open(b.path(), NodeId(1), &StoreOptions::default()).unwrap();
        assert_ne!(s1.actor(), s2.actor());
    }

    #[tokio::test]
    async fn oversized_objects_are_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), NodeId(1), &StoreOptions::default()).unwrap();
        let err = s
            .update(
                0,
                b"k",
                &VersionVector::new(),
                Some(Bytes::from(vec![0u8; 200])),
                100,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::ObjectTooLarge { .. }), "{err}");
        assert_eq!(s.get(0, b"k").unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sync_writes_share_fsyncs_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(
            Store::open(dir.path(), NodeId(1), &StoreOptions::default()).unwrap(),
        );
        let mut tasks = Vec::new();
        for i in 0..64u32 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.update(
                    0,
                    &i.to_be_bytes(),
                    &VersionVector::new(),
                    val("x"),
                    1 << 20,
                )
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for i in 0..64u32 {
            assert!(s.get(0, &i.to_be_bytes()).unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn the_hint_count_follows_the_hints_keyspace_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Object::new();
        o.update(&VersionVector::new(), val("v"), ActorId(5));
        {
            let s = Store::open(dir.path(), NodeId(1), &StoreOptions::default()).unwrap();
            assert_eq!(s.hints_pending().unwrap(), 0);
            assert_eq!(
                s.hints_for_key(0, b"a", [NodeId(2)].into_iter()).unwrap(),
                None
            );
            s.put_hint(NodeId(2), 0, b"a", &o).await.unwrap();
            s.put_hint(NodeId(2), 0, b"a", &o).await.unwrap();
            s.put_hint(NodeId(3), 0, b"b", &o).await.unwrap();
            assert_eq!(
                s.hints_pending().unwrap(),
                2,
                "the same key twice is one hint"
            );
            assert_eq!(
                s.hints_for_key(0, b"a", [NodeId(2), NodeId(3)].into_iter())
                    .unwrap(),
                Some(o.clone())
            );
            let batch: Vec<Hint> = s
                .hints_after(None, 10)
                .unwrap()
                .into_iter()
                .filter(|h| h.owner == NodeId(2))
                .collect();
            assert!(s.remove_hint_if_unchanged(&batch[0]).unwrap());
            assert_eq!(s.hints_pending().unwrap(), 1);
            s.close().unwrap();
        }
        let s = Store::open(dir.path(), NodeId(1), &StoreOptions::default()).unwrap();
        assert_eq!(s.hints_pending().unwrap(), 1, "counted again at start-up");
    }

    #[tokio::test]
    async fn unchanged_merge_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            dir.path(),
            NodeId(1),
            &StoreOptions {
                durability: Durability::None,
                ..Default::default()
            },
        )
        .unwrap();
        let o = s
            .update(0, b"k", &VersionVector::new(), val("v"), 1 << 20)
            .await
            .unwrap();
        let seqno = s.db.seqno();
        let again = s.merge(0, b"k", &o).await.unwrap();
        assert_eq!(again, o);
        assert_eq!(
            s.db.seqno(),
            seqno,
            "a merge that changes nothing writes nothing"
        );
    }
}
