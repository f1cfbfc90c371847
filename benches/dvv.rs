//! Version work on every request: merging replica objects and stamping writes.
#![allow(missing_docs)] // criterion_group! generates an undocumented public fn

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringkv_shared::{ActorId, Object, VersionVector};
use std::hint::black_box;

/// An object with `siblings` concurrent 1 KiB values written by different actors.
fn with_siblings(siblings: u64) -> Object {
    let mut o = Object::new();
    o.update(
        &VersionVector::new(),
        Some(Bytes::from(vec![1u8; 1024])),
        ActorId(1),
    )
    .expect("a fresh counter");
    let base = o.clock().clone();
    for a in 2..=siblings {
        o.update(&base, Some(Bytes::from(vec![a as u8; 1024])), ActorId(a))
            .expect("a fresh counter");
    }
    o
}

fn merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("dvv_merge");
    for siblings in [1u64, 3, 10] {
        let a = with_siblings(siblings);
        // The common case: a replica one write behind.
        let mut b = a.clone();
        let ctx = b.clock().clone();
        b.update(&ctx, Some(Bytes::from(vec![9u8; 1024])), ActorId(1))
            .expect("a fresh counter");
        g.bench_with_input(
            BenchmarkId::new("stale_into_fresh", siblings),
            &(a, b),
            |bench, (a, b)| bench.iter(|| black_box(Object::merged(black_box(b), black_box(a)))),
        );
    }
    let a = with_siblings(3);
    g.bench_function("identical_3", |bench| {
        bench.iter(|| black_box(Object::merged(&a, &a)))
    });
    g.finish();
}

fn update(c: &mut Criterion) {
    let base = with_siblings(3);
    let ctx = base.clock().clone();
    let value = Bytes::from(vec![7u8; 1024]);
    c.bench_function("dvv_update_resolving_3_siblings", |b| {
        b.iter(|| {
            let mut o = base.clone();
            black_box(o.update(&ctx, Some(value.clone()), ActorId(1)))
        })
    });
}

criterion_group!(benches, merge, update);
criterion_main!(benches);
