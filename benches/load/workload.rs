//! YCSB-style workloads: the operation mix, the key chooser, and the closed loop.

use anyhow::Result;
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Zipf};
use ringkv::{Client, Context};
use std::future::Future;
use std::time::{Duration, Instant};

/// What the closed loop drives: ringkv's client in either mode, or a peer system's client.
pub trait Store: Clone + Send + Sync + 'static {
    /// What an update's read hands its write (ringkv: the read's context).
    type Token: Default + Send;
    /// The client worker `w` uses (a peer's client may pin workers to members).
    fn worker(&self, w: usize) -> Self;
    /// Reads `key`: how many versions it returned (0: not found), and the token to write with.
    fn read(&self, key: String) -> impl Future<Output = Result<(usize, Self::Token)>> + Send;
    /// Writes `value` for `key` with the token of a read before it.
    fn write(
        &self,
        key: String,
        value: Bytes,
        token: Self::Token,
    ) -> impl Future<Output = Result<()>> + Send;
}

impl Store for Client {
    type Token = Context;

    fn worker(&self, _w: usize) -> Self {
        self.clone()
    }

    async fn read(&self, key: String) -> Result<(usize, Context)> {
        let v = self.get(key).await?;
        Ok((v.values.len(), v.context))
    }

    async fn write(&self, key: String, value: Bytes, token: Context) -> Result<()> {
        self.put(key, value, &token).await?;
        Ok(())
    }
}

impl Store for crate::etcd::EtcdClient {
    /// etcd keeps one version: a write replaces it, whatever was read.
    type Token = ();

    fn worker(&self, w: usize) -> Self {
        self.for_worker(w)
    }

    async fn read(&self, key: String) -> Result<(usize, ())> {
        Ok((self.get(&key).await?, ()))
    }

    async fn write(&self, key: String, value: Bytes, _token: ()) -> Result<()> {
        self.put(&key, &value).await
    }
}

/// Writes every key once with `value`, `in_flight` writes at a time.
pub async fn load<S: Store>(
    store: &S,
    keys: u64,
    value: &Bytes,
    in_flight: usize,
    bar: &ProgressBar,
) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let step = in_flight.max(1) as u64;
    for w in 0..step {
        let (s, v, b) = (store.worker(w as usize), value.clone(), bar.clone());
        tasks.spawn(async move {
            let mut i = w;
            while i < keys {
                s.write(key(i), v.clone(), S::Token::default()).await?;
                b.inc(1);
                i += step;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

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

/// One measured phase's settings.
#[derive(Clone, Copy)]
pub struct Phase<'a> {
    pub workload: Workload,
    pub keys: &'a std::sync::Arc<Keys>,
    pub value: &'a Bytes,
    pub in_flight: usize,
    /// Run, unrecorded, before measuring.
    pub warmup: Duration,
    pub duration: Duration,
    /// Seeds the workers' key choices.
    pub seed: u64,
    pub bar: &'a ProgressBar,
}

/// Runs the phase's workload closed-loop on `store` with `in_flight` operations for
/// `duration` (after `warmup`, which is not recorded). Latencies in microseconds.
pub async fn run<S: Store>(store: &S, phase: &Phase<'_>) -> Result<Run> {
    let Phase {
        workload,
        keys,
        value,
        in_flight,
        warmup,
        duration,
        seed,
        bar,
    } = *phase;
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..in_flight as u64 {
        let (store, keys, value, bar) = (
            store.worker(w as usize),
            keys.clone(),
            value.clone(),
            bar.clone(),
        );
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
                let token = if read {
                    S::Token::default()
                } else {
                    match store.read(k.clone()).await {
                        Ok((_, token)) => token,
                        Err(_) => {
                            errors += u64::from(Instant::now() >= measure_from);
                            continue;
                        }
                    }
                };
                let t = Instant::now();
                let result: Result<Option<usize>> = if read {
                    store.read(k).await.map(|(n, _)| Some(n))
                } else {
                    store.write(k, value.clone(), token).await.map(|_| None)
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
