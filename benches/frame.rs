//! Wire encoding: the frames of a replica write and of a read reply, 1 KiB values.
#![allow(missing_docs)] // criterion_group! generates an undocumented public fn

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringkv_shared::encoding::{decode_object, encode_object};
use ringkv_shared::frame;
use ringkv_shared::proto::{Reply, Request, Response};
use ringkv_shared::{ActorId, Object, VersionVector};
use std::hint::black_box;

const MAX: usize = 16 << 20;

fn object() -> Object {
    let mut o = Object::new();
    o.update(
        &VersionVector::new(),
        Some(Bytes::from(vec![42u8; 1024])),
        ActorId(0x1234_5678),
    )
    .expect("a fresh counter");
    o
}

fn frames(c: &mut Criterion) {
    let write = Request::Write {
        key: Bytes::from_static(b"user:00001234:cart"),
        object: object(),
        hint_for: None,
    };
    let reply = Reply {
        epoch: 7,
        body: Response::Object(object()),
    };
    let write_frame = frame::encode(&write, MAX).expect("encodes");
    let reply_frame = frame::encode(&reply, MAX).expect("encodes");

    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(write_frame.len() as u64));
    g.bench_function("encode_write_1k", |b| {
        b.iter(|| frame::encode(black_box(&write), MAX))
    });
    g.bench_function("decode_write_1k", |b| {
        b.iter(|| frame::decode::<Request>(black_box(&write_frame), MAX))
    });
    g.bench_function("encode_reply_1k", |b| {
        b.iter(|| frame::encode(black_box(&reply), MAX))
    });
    g.bench_function("decode_reply_1k", |b| {
        b.iter(|| frame::decode::<Reply>(black_box(&reply_frame), MAX))
    });
    g.finish();

    let obj = object();
    let stored = encode_object(&obj);
    let mut g = c.benchmark_group("stored_object");
    g.throughput(Throughput::Bytes(stored.len() as u64));
    g.bench_function("encode_1k", |b| b.iter(|| encode_object(black_box(&obj))));
    g.bench_function("decode_verify_1k", |b| {
        b.iter(|| decode_object(black_box(&stored)))
    });
    g.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
