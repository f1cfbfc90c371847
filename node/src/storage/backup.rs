//! Backup and restore of a node's storage.
//!
//! **Backup** ([`Store::backup_to`]) copies a running store into a new directory without
//! stopping writes: every keyspace is read from one point-in-time snapshot of the database
//! (fjall's cross-keyspace snapshot), so the copy is what the store held at one instant,
//! and written as a fresh fjall database. The copy carries no clean-shutdown marker, so the
//! node restored from it draws a fresh actor id: the original kept stamping writes after the
//! backup, and the restored copy must never reuse one of those dots. The time of the backup
//! is recorded in the copy's metadata.
//!
//! **Restore** ([`restore`]) makes a data directory from a backup: it refuses a directory that
//! holds data, refuses a backup older than the tombstone grace period (its deleted keys
//! may have been reaped elsewhere since, and the old copies would bring them back), copies
//! the files, and opens the result once as the node's store to check that it belongs to this
//! node and this build. Once the node runs again, anti-entropy and hinted handoff bring it up
//! to date from its replicas.

use super::engine::{Engine, Table};
use super::{StorageError, Store, StoreOptions};
use ringkv_shared::NodeId;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The metadata entry holding when a backup was taken (ms since the Unix epoch, big-endian).
const TAKEN_AT: &str = "backup_taken_at_ms";

/// Entries written per batch while copying.
const BATCH: usize = 1024;

/// What a backup copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupSummary {
    /// Entries of each keyspace: objects, hints, tombstones, metadata.
    pub objects: u64,
    /// Hints held for other nodes.
    pub hints: u64,
    /// Tombstone work-list entries.
    pub tombstones: u64,
    /// Metadata entries.
    pub meta: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
}

impl std::fmt::Display for BackupSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} objects, {} hints, {} tombstones, {} metadata entries ({:.1} MiB)",
            self.objects,
            self.hints,
            self.tombstones,
            self.meta,
            self.bytes as f64 / f64::from(1 << 20)
        )
    }
}

fn directory_error(path: &Path, reason: impl std::fmt::Display) -> StorageError {
    StorageError::Directory {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Refuses `dir` unless it is absent or empty.
fn require_empty(dir: &Path, what: &str) -> Result<(), StorageError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(directory_error(
                    dir,
                    format!("{what} must be a new or empty directory; this one holds files"),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(directory_error(dir, e)),
    }
}

impl Store {
    /// Copies this store, as it is at one instant, into the new directory `dir` (see the
    /// module docs); writes go on meanwhile. Refuses a `dir` that holds files.
    pub fn backup_to(&self, dir: &Path) -> Result<BackupSummary, StorageError> {
        require_empty(dir, "a backup's directory")?;
        std::fs::create_dir_all(dir).map_err(|e| directory_error(dir, e))?;
        let target = fjall::Database::builder(dir).open()?;
        let tables = [
            ("objects", &self.objects),
            ("hints", &self.hints),
            ("tombstones", &self.tombstones),
            ("meta", &self.meta),
        ];
        let mut summary = BackupSummary::default();
        let snapshot = match &self.db {
            Engine::Fjall(db) => Some(db.snapshot()),
            Engine::Memory(_) => None,
        };
        for (name, table) in tables {
            let into = target.keyspace(name, fjall::KeyspaceCreateOptions::default)?;
            let mut batch = target.batch();
            let mut pending = 0usize;
            let mut copied = 0u64;
            let mut copy = |key: &[u8], value: &[u8]| -> Result<(), StorageError> {
                if name == "meta" && key == b"clean_shutdown" {
                    return Ok(());
                }
                batch.insert(&into, key, value);
                pending += 1;
                copied += 1;
                summary.bytes += (key.len() + value.len()) as u64;
                if pending >= BATCH {
                    std::mem::replace(&mut batch, target.batch()).commit()?;
                    pending = 0;
                }
                Ok(())
            };
            match (&snapshot, table) {
                (Some(snap), Table::Fjall(ks)) => {
                    use fjall::Readable as _;
                    for guard in snap.iter(ks) {
                        let (key, value) = guard.into_inner()?;
                        copy(&key, &value)?;
                    }
                }
                _ => {
                    for entry in table.iter() {
                        let (key, value) = entry?;
                        copy(&key, &value)?;
                    }
                }
            }
            batch.commit()?;
            match name {
                "objects" => summary.objects = copied,
                "hints" => summary.hints = copied,
                "tombstones" => summary.tombstones = copied,
                _ => summary.meta = copied,
            }
        }
        let meta = target.keyspace("meta", fjall::KeyspaceCreateOptions::default)?;
        meta.insert(TAKEN_AT, now_ms().to_be_bytes())?;
        target.persist(fjall::PersistMode::SyncAll)?;
        Ok(summary)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What [`restore`] did.
#[derive(Clone, Debug)]
pub struct RestoreSummary {
    /// The data directory made.
    pub data_dir: PathBuf,
    /// How old the backup was.
    pub backup_age: Duration,
    /// Files copied.
    pub files: u64,
}

/// Makes the data directory `data_dir` of node `node` from the backup in `from` (see the
/// module docs). `grace` is the cluster's tombstone grace period: an older backup is refused.
pub fn restore(
    from: &Path,
    data_dir: &Path,
    node: NodeId,
    opts: &StoreOptions,
    grace: Duration,
) -> Result<RestoreSummary, StorageError> {
    require_empty(data_dir, "the data directory to restore into")?;
    let (taken, owner) = backup_meta(from)?;
    if owner != Some(node) {
        let whose = owner.map_or_else(|| "no node".to_string(), |n| n.to_string());
        return Err(StorageError::Foreign {
            path: from.to_owned(),
            reason: format!("the backup is {whose}'s, not {node}'s"),
        });
    }
    let age = Duration::from_millis(now_ms().saturating_sub(taken));
    if age > grace {
        return Err(directory_error(
            from,
            format!(
                "the backup is {} s old, more than the tombstone grace period ({} s): keys \
                 deleted since may have been reaped on the other replicas, and this copy \
                 would bring them back. Wipe the node instead and let it join again",
                age.as_secs(),
                grace.as_secs()
            ),
        ));
    }
    let existed = data_dir.exists();
    let made = copy_tree(from, data_dir).and_then(|files| {
        // Opened once as this node's store: refuses another format or partition count.
        let store = Store::open(data_dir, node, opts)?;
        store.close()?;
        Ok(files)
    });
    let files = match made {
        Ok(files) => files,
        Err(e) => {
            // Leave the data directory as it was found: absent, or empty.
            if existed {
                if let Ok(entries) = std::fs::read_dir(data_dir) {
                    for entry in entries.flatten() {
                        let _ = std::fs::remove_dir_all(entry.path())
                            .or_else(|_| std::fs::remove_file(entry.path()));
                    }
                }
            } else {
                let _ = std::fs::remove_dir_all(data_dir);
            }
            return Err(e);
        }
    };
    Ok(RestoreSummary {
        data_dir: data_dir.to_owned(),
        backup_age: age,
        files,
    })
}

/// When the backup in `dir` was taken (ms since the epoch) and whose it is, read without
/// opening it as a store (which would change it).
fn backup_meta(dir: &Path) -> Result<(u64, Option<NodeId>), StorageError> {
    let holds_files = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if !holds_files {
        return Err(directory_error(dir, "no backup here (missing or empty)"));
    }
    let db = fjall::Database::builder(dir).open()?;
    let meta = db.keyspace("meta", fjall::KeyspaceCreateOptions::default)?;
    let taken = meta
        .get(TAKEN_AT)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| directory_error(dir, "not a ringkv backup (no backup time recorded)"))?;
    let owner = meta
        .get("node_id")?
        .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
        .map(|b| NodeId(u32::from_be_bytes(b)));
    Ok((taken, owner))
}

/// Copies the files under `from` into `to` (created), returning how many.
fn copy_tree(from: &Path, to: &Path) -> Result<u64, StorageError> {
    std::fs::create_dir_all(to).map_err(|e| directory_error(to, e))?;
    let mut files = 0;
    for entry in std::fs::read_dir(from).map_err(|e| directory_error(from, e))? {
        let entry = entry.map_err(|e| directory_error(from, e))?;
        let path = entry.path();
        let dest = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| directory_error(&path, e))?;
        if kind.is_dir() {
            files += copy_tree(&path, &dest)?;
        } else if kind.is_file() {
            std::fs::copy(&path, &dest).map_err(|e| directory_error(&path, e))?;
            files += 1;
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringkv_shared::VersionVector;

    const HOUR: Duration = Duration::from_secs(3600);

    fn value(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn values(store: &Store, key: &[u8]) -> Vec<Bytes> {
        store
            .get(0, key)
            .expect("read")
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_backup_restores_what_the_store_held_then_under_a_new_incarnation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions::default();
        let store = Store::open(&dir.path().join("live"), NodeId(7), &opts).expect("open");
        for i in 0..3000u32 {
            store
                .update(
                    0,
                    format!("k{i}").as_bytes(),
                    &VersionVector::new(),
                    value("before"),
                )
                .await
                .expect("write");
        }
        let backup = dir.path().join("backup");
        let summary = store.backup_to(&backup).expect("backup");
        assert_eq!(summary.objects, 3000, "{summary}");
        // Written after the backup: not in it.
        store
            .update(0, b"later", &VersionVector::new(), value("after"))
            .await
            .expect("write");
        let original = store.actor();
        assert!(
            store.backup_to(&backup).is_err(),
            "a backup never overwrites files"
        );

        let data = dir.path().join("restored");
        let restored = restore(&backup, &data, NodeId(7), &opts, HOUR).expect("restore");
        assert!(restored.files > 0);
        let back = Store::open(&data, NodeId(7), &opts).expect("open restored");
        assert_eq!(values(&back, b"k2999"), vec![Bytes::from_static(b"before")]);
        assert!(values(&back, b"later").is_empty());
        assert_ne!(
            back.actor(),
            original,
            "the restored copy stamps with a new actor"
        );
        assert_eq!(values(&store, b"later"), vec![Bytes::from_static(b"after")]);
    }

    #[tokio::test]
    async fn restore_refuses_what_it_cannot_use_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions::default();
        let store = Store::open(&dir.path().join("live"), NodeId(1), &opts).expect("open");
        store
            .update(0, b"k", &VersionVector::new(), value("v"))
            .await
            .expect("write");
        let backup = dir.path().join("backup");
        store.backup_to(&backup).expect("backup");

        // Into a directory that holds data.
        let busy = dir.path().join("busy");
        std::fs::create_dir_all(&busy).expect("mkdir");
        std::fs::write(busy.join("keep"), b"x").expect("write");
        let e = restore(&backup, &busy, NodeId(1), &opts, HOUR).expect_err("refused");
        assert!(e.to_string().contains("holds files"), "{e}");
        assert_eq!(std::fs::read(busy.join("keep")).expect("kept"), b"x");

        // Older than the tombstone grace period.
        std::thread::sleep(Duration::from_millis(20));
        let e = restore(
            &backup,
            &dir.path().join("a"),
            NodeId(1),
            &opts,
            Duration::from_millis(1),
        )
        .expect_err("refused");
        assert!(e.to_string().contains("tombstone grace period"), "{e}");
        assert!(!dir.path().join("a").exists(), "nothing made");

        // Another node's backup.
        let e =
            restore(&backup, &dir.path().join("b"), NodeId(2), &opts, HOUR).expect_err("refused");
        assert!(
            e.to_string().contains("the backup is n1's, not n2's"),
            "{e}"
        );
        assert!(!dir.path().join("b").exists(), "nothing made");

        // Not a backup at all.
        let e = restore(
            &dir.path().join("nothing"),
            &dir.path().join("c"),
            NodeId(1),
            &opts,
            HOUR,
        )
        .expect_err("refused");
        assert!(e.to_string().contains("no backup here"), "{e}");
    }
}
