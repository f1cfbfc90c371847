//! What a `modify` of a mergeable value costs on the client besides the network: decoding each
//! sibling, merging them and the lane's state, and encoding the result, for sets and carts of
//! growing size. `cargo bench --bench crdt`.
#![allow(missing_docs)] // criterion_group! generates an undocumented public fn

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringkv::crdt::{ActorId, Merge, ORMap, ORSet, PNCounter};
use ringkv::typed::{decode_value, encode_value};
use std::hint::black_box;

/// A set of `n` elements added by 40 actors (as many lanes as a busy key sees), and a copy
/// with 20 more elements by another actor: a sibling one burst of writes ahead.
fn sets(n: usize) -> (ORSet<String>, ORSet<String>) {
    let mut a = ORSet::new();
    for i in 0..n {
        a.add(format!("c{}t{}-{}", i % 3, i % 2, i * 7), actor(i));
    }
    let mut b = a.clone();
    for i in 0..20 {
        b.add(format!("c9t1-{i}"), ActorId(999));
    }
    (a, b)
}

/// A cart of `n` items, each with a quantity, and a copy with every tenth item changed.
fn carts(n: usize) -> (ORMap<String, PNCounter>, ORMap<String, PNCounter>) {
    let mut a = ORMap::new();
    for i in 0..n {
        let by = actor(i);
        a.update(format!("item-{i:05}"), by, |c: &mut PNCounter| {
            c.add(by, 1 + (i % 4) as i64)
        });
    }
    let mut b = a.clone();
    for i in (0..n).step_by(10) {
        b.update(format!("item-{i:05}"), ActorId(999), |c: &mut PNCounter| {
            c.add(ActorId(999), 1)
        });
    }
    (a, b)
}

fn actor(i: usize) -> ActorId {
    ActorId(1 + (i as u64 % 40) * 7919)
}

fn bench_value<T>(c: &mut Criterion, name: &str, sizes: &[usize], make: impl Fn(usize) -> (T, T))
where
    T: Merge + Clone + serde::Serialize + serde::de::DeserializeOwned,
{
    let mut g = c.benchmark_group(name);
    for &n in sizes {
        let (a, b) = make(n);
        let bytes = encode_value(&a).expect("the bench's own value encodes");
        g.bench_with_input(BenchmarkId::new("decode", n), &bytes, |bench, bytes| {
            bench.iter(|| black_box(decode_value::<T>(black_box(bytes)).expect("decodes")))
        });
        g.bench_with_input(BenchmarkId::new("encode", n), &a, |bench, a| {
            bench.iter(|| black_box(encode_value(black_box(a)).expect("encodes")))
        });
        g.bench_with_input(BenchmarkId::new("merge", n), &(a, b), |bench, (a, b)| {
            bench.iter_batched_ref(
                || a.clone(),
                |x| x.merge(black_box(b)),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn crdt(c: &mut Criterion) {
    bench_value(c, "orset", &[150, 1000], sets);
    bench_value(c, "cart", &[150], carts);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = crdt
}
criterion_main!(benches);
