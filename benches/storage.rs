//! Group commit: `sync` writes with 1 and with 64 in flight, and `buffered` for reference.
//!
//! Under `sync` every acknowledged write is covered by an fsync. Without group commit, 64
//! writers in flight would cost 64 fsyncs; with it, writers that arrive while an fsync runs
//! share the next one. The bench prints writes per fsync after each case.
#![allow(missing_docs)] // criterion_group! generates an undocumented public fn

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringkv_node::storage::{Durability, Store, StoreOptions};
use ringkv_shared::{NodeId, VersionVector};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn puts(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let value = Bytes::from(vec![7u8; 1024]);
    let mut g = c.benchmark_group("store_put_1k");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    for (durability, in_flight) in [
        (Durability::Sync, 1usize),
        (Durability::Sync, 64),
        (Durability::Buffered, 64),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            Store::open(
                dir.path(),
                NodeId(1),
                &StoreOptions {
                    durability,
                    ..StoreOptions::default()
                },
            )
            .expect("store"),
        );
        let next = Arc::new(AtomicU64::new(0));
        let name = format!("{durability:?}").to_lowercase();
        let before = store.stats();
        g.bench_with_input(
            BenchmarkId::new(name.clone(), in_flight),
            &in_flight,
            |b, &in_flight| {
                b.iter_custom(|iters| {
                    let store = store.clone();
                    let next = next.clone();
                    let value = value.clone();
                    rt.block_on(async move {
                        let start = Instant::now();
                        let mut tasks = Vec::new();
                        for w in 0..in_flight as u64 {
                            let (store, next, value) = (store.clone(), next.clone(), value.clone());
                            let share =
                                iters / in_flight as u64 + u64::from(w < iters % in_flight as u64);
                            tasks.push(tokio::spawn(async move {
                                for _ in 0..share {
                                    let k = next.fetch_add(1, Ordering::Relaxed);
                                    let key = k.to_be_bytes();
                                    store
                                        .update(
                                            (k % 1024) as u32,
                                            &key,
                                            &VersionVector::new(),
                                            Some(value.clone()),
                                        )
                                        .await
                                        .expect("put");
                                }
                            }));
                        }
                        for t in tasks {
                            t.await.expect("task");
                        }
                        start.elapsed().max(Duration::from_nanos(1))
                    })
                })
            },
        );
        let after = store.stats();
        let writes = after.writes - before.writes;
        let fsyncs = (after.fsyncs - before.fsyncs).max(1);
        println!(
            "store_put_1k/{name}/{in_flight}: {writes} writes, {} fsyncs, {:.1} writes per fsync",
            after.fsyncs - before.fsyncs,
            writes as f64 / fsyncs as f64
        );
        store.close().expect("close");
    }
    g.finish();
}

criterion_group!(benches, puts);
criterion_main!(benches);
