//! How big mergeable values get: a cart (`ORMap<String, PNCounter>`) after many `modify`
//! calls from several client instances that restart, through the same lane steps
//! `Client::modify` takes (`Lanes::begin`, `Update::written`), on an in-memory store.
//!
//! ```sh
//! cargo bench --bench crdt_size -- --modifies 100000 --instances 10 --restarts 100
//! ```
//!
//! Each instance restarts every `modifies / (instances * restarts)` of its updates (a restart
//! is a new `Lanes`: new actors). An update adds 1 of one of `--items` products, or (with
//! `--remove-pct`) removes a product in the cart. Reads are fresh unless `--stale-pct` makes
//! some of them see an older state.

use bytes::Bytes;
use clap::Parser;
use rand::{Rng, SeedableRng, rngs::StdRng};
use ringkv::crdt::{ORMap, PNCounter};
use ringkv::lanes::Lanes;
use ringkv::shared::Object;
use ringkv::typed::decode_value;
use ringkv_shared::ActorId;

type Cart = ORMap<String, PNCounter>;

#[derive(Parser)]
struct Args {
    /// Updates in all.
    #[arg(long, default_value_t = 100_000)]
    modifies: usize,
    /// Client instances.
    #[arg(long, default_value_t = 10)]
    instances: usize,
    /// Restarts of each instance.
    #[arg(long, default_value_t = 100)]
    restarts: usize,
    /// Distinct products.
    #[arg(long, default_value_t = 20)]
    items: usize,
    /// Share of updates that remove a product (percent).
    #[arg(long, default_value_t = 10)]
    remove_pct: u32,
    /// Share of reads that see a state some updates old (percent).
    #[arg(long, default_value_t = 0)]
    stale_pct: u32,
    /// Accepted for `cargo bench` compatibility.
    #[arg(long, hide = true)]
    bench: bool,
}

fn cart_of(object: &Object) -> Cart {
    let mut cart = Cart::new();
    for v in object.values() {
        let sibling: Cart = decode_value(v).expect("the bench's own values decode");
        ringkv::crdt::Merge::merge(&mut cart, &sibling);
    }
    cart
}

fn main() {
    let args = Args::parse();
    let mut rng = StdRng::seed_from_u64(7);
    let key = Bytes::from_static(b"cart:bench");
    let node = ActorId(1);
    let mut stored = Object::new();
    let mut history: Vec<Object> = vec![stored.clone()];
    let per_life = (args.modifies / (args.instances * args.restarts)).max(1);
    let mut lanes: Vec<Lanes> = (0..args.instances).map(|_| Lanes::new(16 << 20)).collect();
    let mut done_in_life = vec![0usize; args.instances];
    let mut lives = args.instances;
    for i in 0..args.modifies {
        let who = i % args.instances;
        if done_in_life[who] == per_life {
            lanes[who] = Lanes::new(16 << 20);
            done_in_life[who] = 0;
            lives += 1;
        }
        done_in_life[who] += 1;
        let read = if rng.random_range(0..100) < args.stale_pct {
            history[history.len().saturating_sub(rng.random_range(1..20))].clone()
        } else {
            stored.clone()
        };
        let mut update = lanes[who]
            .begin(
                key.clone(),
                cart_of(&read),
                read.clock(),
                read.values().next().is_some(),
                &read.values().cloned().collect::<Vec<_>>(),
            )
            .expect("lane");
        let remove = rng.random_range(0..100) < args.remove_pct;
        let item = format!("product-{}", rng.random_range(0..args.items));
        update.apply(|cart, me| {
            if remove {
                cart.remove(&item, me);
            } else {
                cart.update(item.clone(), me, |q| q.add(me, 1));
            }
        });
        let encoded = update.encode().expect("encode");
        stored
            .update(read.clock(), Some(encoded.clone()), node)
            .expect("a fresh counter");
        if args.stale_pct > 0 {
            history.push(stored.clone());
            if history.len() > 20 {
                history.remove(0);
            }
        }
        update.written(&lanes[who], encoded, stored.clock().clone());
    }
    let cart = cart_of(&stored);
    let bytes = ringkv::typed::encode_value(&cart).expect("encode").len();
    let counter_entries: usize = cart.iter().map(|(_, q)| q.actors()).sum();
    println!(
        "{} modifies, {} instances x {} restarts ({lives} client lives), {} products, {}% removes, {}% stale reads",
        args.modifies, args.instances, args.restarts, args.items, args.remove_pct, args.stale_pct
    );
    println!(
        "cart: {} items present, {} siblings stored, encoded {} bytes ({:.1} KiB); \
         {} actors in the map's clock, {} counter actor entries; {:.1} bytes per client life",
        cart.len(),
        stored.siblings().len(),
        bytes,
        bytes as f64 / 1024.0,
        cart.actors(),
        counter_entries,
        bytes as f64 / lives as f64
    );
}
