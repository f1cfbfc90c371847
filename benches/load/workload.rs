//! YCSB-style workloads: the operation mix, the key chooser, and the closed loop.

use anyhow::Result;
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Zipf};
use ringkv::{Client, ClientError, Context};
use std::time::{Duration, Instant};

/// YCSB's core workloads (plus W, all updates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Workload {
    /// 50% read, 50% update.
    A,
    /// 95% read, 5% update.
    B,
    /// 100% read.
    C,
    /// 100% update.
    W,
}

impl Workload {
    fn read_share(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
            Workload::W => 0.0,
        }
    }
}

/// How keys are picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum KeyDist {
    /// YCSB's scrambled zipfian, theta 0.99: a few hot keys, spread over the key space.
    Zipfian,
    /// Every key equally likely.
    Uniform,
}

/// Picks key indexes.
pub struct Keys {
    n: u64,
    zipf: Option<Zipf<f64>>,
}

impl Keys {
    pub fn new(n: u64, dist: KeyDist) -> Result<Self> {
        let zipf = match dist {
            KeyDist::Zipfian => Some(Zipf::new(n as f64, 0.99)?),
            KeyDist::Uniform => None,
        };
        Ok(Keys { n, zipf })
    }

    pub fn pick(&self, rng: &mut StdRng) -> u64 {
        match &self.zipf {
            // Scramble the rank so that hot keys do not all share one partition.
            Some(z) => {
                ringkv_shared::hash::key_hash(&(z.sample(rng) as u64).to_le_bytes()) % self.n
            }
            None => rng.random_range(0..self.n),
        }
    }
}

pub fn key(i: u64) -> String {
    format!("user{i:012}")
}

/// Latencies and counts of one measured run.
pub struct Run {
    pub reads: Histogram<u64>,
    pub updates: Histogram<u64>,
    pub errors: u64,
    pub elapsed: Duration,
    /// Reads by the number of versions (siblings) they returned: 0 (not found), 1, 2, 3, 4+.
    pub versions: [u64; 5],
    /// Operations completed, warm-up included (to relate node counters to operations).
    pub all_ops: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `workload` closed-loop with `in_flight` operations for `duration` (after `warmup`,
/// which is not recorded). Latencies in microseconds.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &Client,
    workload: Workload,
    keys: &std::sync::Arc<Keys>,
    value: &Bytes,
    in_flight: usize,
    warmup: Duration,
    duration: Duration,
    seed: u64,
    bar: &ProgressBar,
) -> Result<Run> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..in_flight as u64 {
        let (client, keys, value, bar) = (client.clone(), keys.clone(), value.clone(), bar.clone());
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(w));
            let (mut reads, mut updates) = (histogram(), histogram());
            let mut errors = 0u64;
            let mut versions = [0u64; 5];
            let mut all_ops = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let k = key(keys.pick(&mut rng));
                let read = rng.random_bool(workload.read_share());
                // An update writes with the context of a read of the key just before, as
                // applications do (a blind write would be kept as one more sibling); the
                // update's latency is the put's.
                let context = if read {
                    Context::empty()
                } else {
                    match client.get(k.clone()).await {
                        Ok(v) => v.context,
                        Err(_) => {
                            errors += u64::from(Instant::now() >= measure_from);
                            continue;
                        }
                    }
                };
                let t = Instant::now();
                let result: Result<Option<usize>, ClientError> = if read {
                    client.get(k).await.map(|v| Some(v.values.len()))
                } else {
                    client.put(k, value.clone(), &context).await.map(|_| None)
                };
                let micros = t.elapsed().as_micros().max(1) as u64;
                all_ops += u64::from(result.is_ok());
                if t < measure_from {
                    continue;
                }
                match result {
                    Ok(seen) => {
                        if let Some(n) = seen {
                            versions[n.min(4)] += 1;
                            reads.record(micros)?;
                        } else {
                            updates.record(micros)?;
                        }
                    }
                    Err(_) => errors += 1,
                }
                bar.inc(1);
            }
            anyhow::Ok((reads, updates, errors, versions, all_ops))
        });
    }
    let mut out = Run {
        reads: histogram(),
        updates: histogram(),
        errors: 0,
        elapsed: duration,
        versions: [0; 5],
        all_ops: 0,
    };
    while let Some(r) = tasks.join_next().await {
        let (reads, updates, errors, versions, all_ops) = r??;
        out.all_ops += all_ops;
        out.reads.add(reads)?;
        out.updates.add(updates)?;
        out.errors += errors;
        for (a, b) in out.versions.iter_mut().zip(versions) {
            *a += b;
        }
    }
    Ok(out)
}
