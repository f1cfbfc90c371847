//! Opening and closing a node's storage: the directory's metadata (format, node id, partition
//! count), the storage incarnation, the clean-shutdown marker.

use super::durability::GroupCommit;
use super::engine::Engine;
use super::migrate;
use super::unsynced::Unsynced;
use super::{
    Durability, LOCK_STRIPES, STORAGE_FORMAT, StorageError, Store, StoreOptions, StoreStats, trees,
};
use fjall::Database;
use ringkv_shared::{ActorId, NodeId};
use std::path::Path;
use std::sync::Mutex;
use tracing::{info, warn};

/// How old a change gets before a simulated disk's operating system has written it back
/// (Linux's `dirty_expire_centisecs` is 30 s; this is shorter so that power cuts also meet
/// changes that made it).
const OS_WRITEBACK: std::time::Duration = std::time::Duration::from_secs(5);

impl Store {
    /// Opens (or creates) the storage of node `node` in `dir`.
    ///
    /// A directory created by another node id, or by a newer storage format, is refused
    /// rather than served. A new directory draws a fresh random [`ActorId`]. With
    /// [`StoreOptions::memory`], the memory disk stands for the directory and nothing is
    /// written under `dir`.
    pub fn open(dir: &Path, node: NodeId, opts: &StoreOptions) -> Result<Self, StorageError> {
        let in_use = |e: fjall::Error| match e {
            fjall::Error::Locked => StorageError::InUse {
                path: dir.to_owned(),
            },
            other => other.into(),
        };
        let db = match &opts.memory {
            Some(disk) => Engine::Memory(std::sync::Arc::new(disk.hold().map_err(in_use)?)),
            None => {
                std::fs::create_dir_all(dir).map_err(|e| StorageError::Directory {
                    path: dir.to_owned(),
                    reason: e.to_string(),
                })?;
                Engine::Fjall(
                    Database::builder(dir)
                        .cache_size(opts.cache_bytes)
                        .open()
                        .map_err(in_use)?,
                )
            }
        };
        let objects = db.table("objects")?;
        let hints = db.table("hints")?;
        let tombstones = db.table("tombstones")?;
        let meta = db.table("meta")?;
        let foreign = |reason: String| StorageError::Foreign {
            path: dir.to_owned(),
            reason,
        };

        // Checked before anything is written: a newer format is refused untouched.
        let older_format = match meta.get("format")? {
            None => None,
            Some(v) => migrate::check_format(&meta, v.as_ref(), foreign)?,
        };
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
        if let Some(from) = older_format {
            migrate::migrate(&db, &meta, from, opts.partitions)?;
        }
        let clean = meta.get("clean_shutdown")?.is_some();
        let actor = match meta.get("actor")? {
            Some(v) if clean => <[u8; 8]>::try_from(v.as_ref())
                .map(|b| ActorId(u64::from_be_bytes(b)))
                .map_err(|_| foreign("actor entry is malformed".into()))?,
            existing => {
                let actor = ActorId(ringkv_net::ambient::random_u64());
                let mut batch = db.batch();
                batch.insert(&meta, b"format", [STORAGE_FORMAT]);
                batch.insert(&meta, b"node_id", node.0.to_be_bytes());
                batch.insert(&meta, b"actor", actor.0.to_be_bytes());
                batch.insert(&meta, b"partitions", opts.partitions.to_be_bytes());
                batch.insert(&meta, b"written_by", migrate::THIS_RELEASE);
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
        if meta.get("written_by")?.as_deref() != Some(migrate::THIS_RELEASE.as_bytes()) {
            meta.insert("written_by", migrate::THIS_RELEASE.as_bytes())?;
        }
        let trees = trees::Trees::build(&objects, opts.partitions).map_err(foreign)?;
        let mut hint_keys = 0u64;
        for entry in hints.iter() {
            entry?;
            hint_keys += 1;
        }
        // The operating system writes dirty pages back within seconds on its own; under
        // `buffered` the syncer does it every interval.
        let disk = opts.simulated_disk.then(|| {
            let writeback = match opts.durability {
                Durability::Buffered => opts.buffered_interval,
                _ => OS_WRITEBACK,
            };
            std::sync::Arc::new(Unsynced::new(writeback))
        });
        let commit = GroupCommit::start(
            db.clone(),
            opts.durability,
            opts.buffered_interval,
            opts.group_commit_gather,
            disk.clone(),
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
            disk,
            path: dir.to_owned(),
            write_cap: opts.write_cap,
            merge_cap: opts.merge_cap,
            merges_refused: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// This storage incarnation's actor id: the one that stamps dots of writes coordinated here.
    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> StoreStats {
        super::StoreStats {
            merges_refused: self
                .merges_refused
                .load(std::sync::atomic::Ordering::Relaxed),
            ..self.commit.stats()
        }
    }

    /// Bytes the store takes on disk (journal and tables; 0 on a memory disk).
    pub fn disk_bytes(&self) -> Result<u64, StorageError> {
        Ok(self.db.disk_space()?)
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
