//! Storage format migrations: bringing a data directory written by an older release up to
//! [`STORAGE_FORMAT`] when this build opens it.
//!
//! Each step takes the directory from one format to the next and commits the format it
//! reached in the same batch as its changes, so a crash between steps resumes at the next
//! step and a step never runs twice. A directory of a newer format than this build's is
//! refused before anything is changed, with the release that wrote it named (the `written_by`
//! entry), so that an operator rolling back knows which binary the data needs.
//!
//! Formats:
//! - 1: the first release's layout.
//! - 2: `meta` always holds `partitions` (format-1 directories made before that entry
//!   existed lack it) and `written_by`, the version of the last release that opened it.

use super::engine::{Engine, Table};
use super::{STORAGE_FORMAT, StorageError};
use tracing::info;

/// This build's release, recorded in `written_by` each time it opens a directory.
pub(super) const THIS_RELEASE: &str = env!("CARGO_PKG_VERSION");

/// What `open` does with a directory whose `format` entry is `stored`.
pub(super) fn check_format(
    meta: &Table,
    stored: &[u8],
    foreign: impl Fn(String) -> StorageError,
) -> Result<Option<u8>, StorageError> {
    let [format] = *stored else {
        return Err(foreign(format!("the format entry {stored:?} is malformed")));
    };
    if format == 0 {
        return Err(foreign(
            "the format entry is 0 (never written by a release)".into(),
        ));
    }
    if format > STORAGE_FORMAT {
        let writer = meta
            .get("written_by")?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_else(|| "a newer release".into());
        return Err(foreign(format!(
            "it has storage format {format}, written by ringkv {writer}; this build (ringkv \
             {THIS_RELEASE}) reads formats up to {STORAGE_FORMAT}: run ringkv {writer} or newer \
             on it, or restore a backup made before the upgrade"
        )));
    }
    Ok((format < STORAGE_FORMAT).then_some(format))
}

/// Migrates a directory of format `from` (older than [`STORAGE_FORMAT`]) step by step.
/// `partitions` is the configured partition count (checked against the directory before).
pub(super) fn migrate(
    db: &Engine,
    meta: &Table,
    from: u8,
    partitions: u32,
) -> Result<(), StorageError> {
    for format in from..STORAGE_FORMAT {
        let mut batch = db.batch();
        match format {
            1 => {
                if meta.get("partitions")?.is_none() {
                    batch.insert(meta, b"partitions", partitions.to_be_bytes());
                }
                batch.insert(meta, b"written_by", THIS_RELEASE);
            }
            // `check_format` refuses 0 and formats above this build's.
            _ => unreachable!("no storage format {format} below {STORAGE_FORMAT} but 1"),
        }
        batch.insert(meta, b"format", [format + 1]);
        batch.commit()?;
        db.persist(fjall::PersistMode::SyncAll)?;
        info!(
            from = format,
            to = format + 1,
            "storage migrated to the next format"
        );
    }
    Ok(())
}
