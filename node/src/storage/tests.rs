//! Storage: merges, incarnations, durability, hints and tombstones against a real fjall
//! directory, and (where a test runs on [`engines`]) on a memory disk too.

use super::*;
use bytes::Bytes;
use ringkv_shared::limits::ObjectCap;
use ringkv_shared::{NodeId, Object, VersionVector};
use std::sync::Arc;

fn val(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

/// The engines a test that says so runs on: fjall in its directory, then a memory disk.
fn engines() -> [Option<MemoryDisk>; 2] {
    [None, Some(MemoryDisk::new())]
}

/// Default options on `memory` (fjall in the directory if `None`).
fn on(memory: &Option<MemoryDisk>) -> StoreOptions {
    StoreOptions {
        memory: memory.clone(),
        ..StoreOptions::default()
    }
}

#[tokio::test]
async fn a_store_on_a_memory_disk_writes_nothing_to_its_directory_and_is_open_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n1");
    let disk = MemoryDisk::new();
    let opts = StoreOptions {
        memory: Some(disk.clone()),
        ..StoreOptions::default()
    };
    let s = Store::open(&path, NodeId(1), &opts).unwrap();
    s.update(0, b"k", &VersionVector::new(), val("v"))
        .await
        .unwrap();
    assert!(!path.exists(), "the memory disk stands for the directory");
    let locked = Store::open(&path, NodeId(1), &opts).unwrap_err();
    assert!(matches!(locked, StorageError::InUse { .. }), "{locked}");
    assert!(locked.to_string().contains("in use"), "{locked}");
    let actor = s.actor();
    drop(s);
    let s = Store::open(&path, NodeId(1), &opts).unwrap();
    assert!(s.get(0, b"k").unwrap().is_some(), "the disk kept the data");
    assert_ne!(s.actor(), actor, "dropped without close: a new incarnation");
    let wiped = StoreOptions {
        memory: Some(MemoryDisk::new()),
        ..StoreOptions::default()
    };
    assert!(
        Store::open(&path, NodeId(1), &wiped)
            .unwrap()
            .get(0, b"k")
            .unwrap()
            .is_none(),
        "another disk is another store"
    );
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
            s.update(0, &[i], &VersionVector::new(), val("v"))
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
        s.update_staged(0, &[k], &VersionVector::new(), val("v"))
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
    for memory in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = on(&memory);
        let actor = {
            let s = Store::open(dir.path(), NodeId(1), &opts).unwrap();
            let o = s
                .update(3, b"k", &VersionVector::new(), val("v1"))
                .await
                .unwrap();
            assert_eq!(o.values().count(), 1);
            let mut other = Object::new();
            other
                .update(&VersionVector::new(), val("v2"), ActorId(42))
                .unwrap();
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
}

#[tokio::test]
async fn an_unclean_shutdown_starts_a_new_incarnation_and_keeps_the_data() {
    for memory in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            durability: Durability::None,
            memory: memory.clone(),
            ..StoreOptions::default()
        };
        let first = {
            let s = Store::open(dir.path(), NodeId(1), &opts).unwrap();
            s.update(0, b"k", &VersionVector::new(), val("v"))
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
}

#[tokio::test]
async fn a_directory_of_another_node_is_refused() {
    for memory in engines() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), NodeId(1), &on(&memory)).unwrap();
        s.close().unwrap();
        drop(s);
        let err = Store::open(dir.path(), NodeId(2), &on(&memory)).unwrap_err();
        assert!(err.to_string().contains("belongs to node n1"), "{err}");
    }
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
    let opts = StoreOptions {
        write_cap: ObjectCap {
            bytes: 100,
            siblings: 10,
        },
        ..StoreOptions::default()
    };
    let s = Store::open(dir.path(), NodeId(1), &opts).unwrap();
    let err = s
        .update(
            0,
            b"k",
            &VersionVector::new(),
            Some(Bytes::from(vec![0u8; 200])),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::ObjectTooLarge { .. }), "{err}");
    assert_eq!(s.get(0, b"k").unwrap(), None);
}

/// Siblings are bounded on every path that stores an object: a coordinated write may not
/// leave more than `write_cap` (a write that resolves them always may), a merge not more than
/// the merge cap; a refused merge keeps the stored copy and is counted.
#[tokio::test]
async fn writes_and_merges_past_their_caps_are_refused_and_keep_the_stored_copy() {
    let dir = tempfile::tempdir().unwrap();
    let merge_cap = ObjectCap {
        bytes: 1 << 20,
        siblings: 4,
    };
    let write_cap = ObjectCap {
        bytes: 1 << 20,
        siblings: 2,
    };
    let opts = StoreOptions {
        write_cap,
        merge_cap,
        ..StoreOptions::default()
    };
    let s = Store::open(dir.path(), NodeId(1), &opts).unwrap();
    let none = VersionVector::new();
    s.update(0, b"k", &none, val("a")).await.unwrap();
    s.update(0, b"k", &none, val("b")).await.unwrap();
    let err = s.update(0, b"k", &none, val("c")).await.unwrap_err();
    assert!(
        matches!(err, StorageError::TooManySiblings { count: 3, max: 2 }),
        "{err}"
    );
    assert!(err.to_string().contains("resolved value"), "{err}");
    assert_eq!(s.get(0, b"k").unwrap().unwrap().siblings().len(), 2);

    // Other replicas' concurrent siblings merge in up to the merge cap, not past it.
    let concurrent = |actor: u64, n: u64| {
        let mut o = Object::new();
        for i in 0..n {
            let mut w = Object::new();
            w.update(
                &none,
                val(&format!("r{actor}-{i}")),
                ringkv_shared::ActorId(actor + i),
            )
            .unwrap();
            o.merge(&w);
        }
        o
    };
    s.merge(0, b"k", &concurrent(100, 2)).await.unwrap();
    assert_eq!(s.get(0, b"k").unwrap().unwrap().siblings().len(), 4);
    let before = s.get(0, b"k").unwrap();
    let err = s.merge(0, b"k", &concurrent(200, 1)).await.unwrap_err();
    assert!(
        matches!(err, StorageError::TooManySiblings { count: 5, max: 4 }),
        "{err}"
    );
    assert_eq!(s.get(0, b"k").unwrap(), before, "the stored copy stays");
    assert_eq!(s.stats().merges_refused, 1);

    // The application resolves: a write with the read's context leaves one sibling, though
    // the object held more than a write may leave.
    let read = before.unwrap();
    let resolved = s
        .update(0, b"k", read.clock(), val("resolved"))
        .await
        .unwrap();
    assert_eq!(resolved.siblings().len(), 1);
    // Now the merge that was refused fits.
    s.merge(0, b"k", &concurrent(200, 1)).await.unwrap();
    assert_eq!(s.get(0, b"k").unwrap().unwrap().siblings().len(), 2);
}

/// A partition scan stops at its byte budget but always returns at least one object, so a
/// handoff of large objects moves in frames that fit, one object at a time if need be.
#[tokio::test]
async fn partition_scans_are_bounded_by_bytes() {
    for memory in engines() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), NodeId(1), &on(&memory)).unwrap();
        for i in 0..10u8 {
            let big = Some(Bytes::from(vec![i; 10_000]));
            s.update(0, &[i], &VersionVector::new(), big).await.unwrap();
        }
        assert_eq!(
            s.scan_partition(0, None, 256, usize::MAX).unwrap().len(),
            10
        );
        assert_eq!(s.scan_partition(0, None, 256, 35_000).unwrap().len(), 3);
        assert_eq!(
            s.scan_partition(0, None, 256, 1).unwrap().len(),
            1,
            "at least one"
        );
        let rest = s.scan_partition(0, Some(&[8]), 256, 1).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(&rest[0].0[..], &[9]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sync_writes_share_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let s =
        std::sync::Arc::new(Store::open(dir.path(), NodeId(1), &StoreOptions::default()).unwrap());
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.update(0, &i.to_be_bytes(), &VersionVector::new(), val("x"))
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
    for memory in engines() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Object::new();
        o.update(&VersionVector::new(), val("v"), ActorId(5))
            .unwrap();
        {
            let s = Store::open(dir.path(), NodeId(1), &on(&memory)).unwrap();
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
        let s = Store::open(dir.path(), NodeId(1), &on(&memory)).unwrap();
        assert_eq!(s.hints_pending().unwrap(), 1, "counted again at start-up");
    }
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
        .update(0, b"k", &VersionVector::new(), val("v"))
        .await
        .unwrap();
    let super::engine::Engine::Fjall(db) = &s.db else {
        panic!("a store opened on a directory runs on fjall");
    };
    let seqno = db.seqno();
    let again = s.merge(0, b"k", &o).await.unwrap();
    assert_eq!(again, o);
    assert_eq!(
        db.seqno(),
        seqno,
        "a merge that changes nothing writes nothing"
    );
}

/// Polls `cond` every 5 ms for up to 5 s.
async fn within_5s(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn under_buffered_writes_are_refused_after_a_failed_fsync_until_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        durability: Durability::Buffered,
        buffered_interval: Duration::from_millis(20),
        ..StoreOptions::default()
    };
    let s = Store::open(dir.path(), NodeId(1), &opts).unwrap();
    let none = VersionVector::new();
    s.commit.fail_next_fsyncs(2);
    s.update(0, b"before", &none, val("v")).await.unwrap();
    within_5s("the fsync failed", || s.commit.healthy().is_err()).await;
    let refused = s.update(0, b"during", &none, val("v")).await;
    assert!(
        matches!(refused, Err(StorageError::Sync { .. })),
        "{refused:?}"
    );
    assert!(
        s.get(0, b"during").unwrap().is_none(),
        "a refused write stores nothing"
    );
    // The syncer keeps trying every interval; the third fsync succeeds.
    within_5s("an fsync succeeded again", || s.commit.healthy().is_ok()).await;
    s.update(0, b"after", &none, val("v")).await.unwrap();
}

#[tokio::test]
async fn under_sync_a_failed_fsync_fails_the_write_and_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), NodeId(1), &StoreOptions::default()).unwrap();
    let none = VersionVector::new();
    s.commit.fail_next_fsyncs(1);
    let failed = s.update(0, b"k", &none, val("v")).await;
    assert!(
        matches!(failed, Err(StorageError::Sync { .. })),
        "{failed:?}"
    );
    let refused = s.update(0, b"k2", &none, val("v")).await;
    assert!(
        matches!(refused, Err(StorageError::Sync { .. })),
        "{refused:?}"
    );
}

/// Makes `path` look as a format-1 release left it: no `written_by`, no `partitions`.
fn as_format_one(path: &std::path::Path, opts: &StoreOptions) {
    let s = Store::open(path, NodeId(1), opts).unwrap();
    s.meta.insert("format", [1u8].as_slice()).unwrap();
    s.meta.remove("written_by").unwrap();
    s.meta.remove("partitions").unwrap();
    s.close().unwrap();
}

#[tokio::test]
async fn a_directory_of_the_older_format_is_migrated_with_its_data_and_incarnation() {
    for memory in engines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1");
        let opts = on(&memory);
        let s = Store::open(&path, NodeId(1), &opts).unwrap();
        s.update(7, b"k", &VersionVector::new(), val("v"))
            .await
            .unwrap();
        s.close().unwrap();
        drop(s);
        as_format_one(&path, &opts);

        let s = Store::open(&path, NodeId(1), &opts).unwrap();
        let actor = s.actor();
        assert_eq!(s.meta_get("format").unwrap(), Some(vec![STORAGE_FORMAT]));
        assert_eq!(
            s.meta_get("written_by").unwrap(),
            Some(env!("CARGO_PKG_VERSION").as_bytes().to_vec())
        );
        assert_eq!(
            s.meta_get("partitions").unwrap(),
            Some(opts.partitions.to_be_bytes().to_vec())
        );
        let o = s
            .get(7, b"k")
            .unwrap()
            .expect("the data survived the migration");
        assert_eq!(o.values().next().map(|v| &v[..]), Some(&b"v"[..]));
        s.close().unwrap();
        drop(s);
        // Migrated once: the next open changes nothing and keeps the incarnation.
        let s = Store::open(&path, NodeId(1), &opts).unwrap();
        assert_eq!(s.actor(), actor);
        assert_eq!(s.meta_get("format").unwrap(), Some(vec![STORAGE_FORMAT]));
    }
}

#[test]
fn a_directory_of_a_newer_format_is_refused_untouched_naming_the_release_that_wrote_it() {
    for memory in engines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1");
        let opts = on(&memory);
        let s = Store::open(&path, NodeId(1), &opts).unwrap();
        s.meta
            .insert("format", [STORAGE_FORMAT + 1].as_slice())
            .unwrap();
        s.meta.insert("written_by", b"9.9.9".as_slice()).unwrap();
        s.close().unwrap();
        drop(s);

        let refused = Store::open(&path, NodeId(1), &opts).unwrap_err();
        let said = refused.to_string();
        assert!(matches!(refused, StorageError::Foreign { .. }), "{said}");
        assert!(said.contains("written by ringkv 9.9.9"), "{said}");
        assert!(said.contains(&format!("up to {STORAGE_FORMAT}")), "{said}");

        // Untouched: refused the same way again.
        let again = Store::open(&path, NodeId(1), &opts).unwrap_err();
        assert_eq!(again.to_string(), said);
        for bad in [vec![], vec![0u8], vec![1, 2]] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("n1");
            let opts = on(&memory.as_ref().map(|_| MemoryDisk::new()));
            let s = Store::open(&path, NodeId(1), &opts).unwrap();
            s.meta.insert("format", bad.as_slice()).unwrap();
            s.close().unwrap();
            drop(s);
            let e = Store::open(&path, NodeId(1), &opts).unwrap_err();
            assert!(e.to_string().contains("format entry"), "{bad:?}: {e}");
        }
    }
}
