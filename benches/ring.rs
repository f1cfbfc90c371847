//! Ring lookup: key → partition → preference list, for cluster sizes 3 to 100.
#![allow(missing_docs)] // criterion_group! generates an undocumented public fn

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringkv_shared::{Member, NodeId, Ring};
use std::hint::black_box;
use std::net::SocketAddr;

fn members(n: u32) -> Vec<Member> {
    (1..=n)
        .map(|i| {
            Member::at(
                NodeId(i),
                SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
            )
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024).map(|i| format!("user:{i:08}:cart")).collect();
    let mut g = c.benchmark_group("ring_lookup");
    g.throughput(Throughput::Elements(1));
    for nodes in [3u32, 10, 100] {
        let ring = Ring::balanced(1024, members(nodes)).expect("valid ring");
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("replicas_n3", nodes), &ring, |b, ring| {
            b.iter(|| {
                i = (i + 1) & 1023;
                let key = keys[i].as_bytes();
                black_box(ring.replicas(ring.partition_of(black_box(key)), 3));
            })
        });
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    c.bench_function("ring_build_q1024_s100", |b| {
        b.iter(|| Ring::balanced(1024, black_box(members(100))).expect("valid ring"))
    });
}

criterion_group!(benches, lookup, build);
criterion_main!(benches);
