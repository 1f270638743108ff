//! `corfu bench objects`: replicated objects on a local 3-node cluster (one
//! chain of 3 log units, `sync = always` by default), through the smr
//! runtime over a [`LogClient`].
//!
//! Measures, each phase for a fixed time with tasks looping on one call:
//!
//! - **map puts**: `ReplicatedMap<u64, Vec<u8>>::insert` of 64-byte values
//!   at each concurrency of `put_tasks` (every put is a keyed append that
//!   the client batches with the others);
//! - **linearizable gets**: `get` from `get_tasks` tasks (each asks the
//!   stream's tail, plays what is new, then reads; concurrent tail queries
//!   share sequencer round trips);
//! - **transactions**: read a key of one map and a key of another, write
//!   both (a transfer between two objects), at low contention (keys drawn
//!   from `low_contention_keys`) and at high contention (from
//!   `high_contention_keys`); one attempt per call (no retries), so the
//!   abort rate is refused attempts / attempts; the extra runs a first
//!   attempt reading from behind the tail costs are reported apart.
//!
//! The baseline measured in the same run is the log itself: plain appends
//! of the same size from the same number of tasks, so the ratio shows what
//! the object layer costs over the log.

use std::time::{Duration, Instant};

use corfu_core::client::{LogClient, LogClientOptions};
use corfu_core::logunit::SyncPolicy;
use corfu_core::types::StreamId;
use objects::ReplicatedMap;
use serde::Serialize;
use smr::{Error, Runtime, RuntimeOptions};

use crate::local::{LocalCluster, LocalOptions};
use crate::stats::{percentiles, Percentiles};

/// Parameters of the benchmark.
#[derive(Debug, Clone)]
pub struct ObjectsBenchConfig {
    /// The log units' durability policy.
    pub sync: SyncPolicy,
    /// Concurrencies of the put phases.
    pub put_tasks: Vec<usize>,
    /// Tasks of the get phase.
    pub get_tasks: usize,
    /// Tasks of the transaction phases.
    pub txn_tasks: usize,
    /// Keys per map in the low-contention transaction phase.
    pub low_contention_keys: u64,
    /// Keys per map in the high-contention transaction phase.
    pub high_contention_keys: u64,
    /// Value bytes of a put.
    pub value_bytes: usize,
    /// Length of each timed phase.
    pub run: Duration,
}

impl Default for ObjectsBenchConfig {
    fn default() -> Self {
        ObjectsBenchConfig {
            sync: SyncPolicy::Always,
            put_tasks: vec![1, 16, 64, 256],
            get_tasks: 16,
            txn_tasks: 64,
            low_contention_keys: 100_000,
            high_contention_keys: 4,
            value_bytes: 64,
            run: Duration::from_secs(3),
        }
    }
}

/// One timed phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// What was measured: "append", "put", "get" or "txn".
    pub op: &'static str,
    /// Client tasks.
    pub tasks: usize,
    /// Completed operations per second (for transactions: commits/s).
    pub ops_per_s: f64,
    /// Latency of one completed call (for transactions: one attempt).
    pub latency: Percentiles,
    /// Transactions only: keys per map the transfers draw from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Transactions only: attempts refused for a conflict / attempts
    /// (each call makes one attempt: no retries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_rate: Option<f64>,
    /// Transactions only: extra runs of the body per commit after a first
    /// read from behind the log's tail missed (not aborts; see
    /// `smr::TransactionStats`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reruns_per_commit: Option<f64>,
}

/// The report of `corfu bench objects`.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectsReport {
    /// Always "objects".
    pub bench: &'static str,
    /// "always", "batch" or "never".
    pub sync: String,
    /// Value bytes of a put.
    pub value_bytes: usize,
    /// Plain appends at each put concurrency (the baseline).
    pub appends: Vec<Phase>,
    /// Map puts at each concurrency.
    pub puts: Vec<Phase>,
    /// Linearizable gets.
    pub gets: Phase,
    /// Transactions at low contention.
    pub txn_low_contention: Phase,
    /// Transactions at high contention.
    pub txn_high_contention: Phase,
    /// puts/s over appends/s at the highest concurrency.
    pub ratio_puts_to_appends: f64,
}

/// A tiny deterministic generator (xorshift), one per task: the bench needs
/// spread-out keys, not statistical quality.
struct Keys(u64);

impl Keys {
    fn new(seed: u64) -> Keys {
        Keys(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// Runs `tasks` copies of `call` (given the task's index and a call count)
/// until `run` has passed: the rate and latency of the calls that
/// succeeded (`Ok(true)`; `Ok(false)` is an attempt that did not).
async fn timed<F, Fut>(tasks: usize, run: Duration, call: F) -> anyhow::Result<Phase>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<bool>> + Send,
{
    let start = Instant::now();
    let deadline = start + run;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let call = call.clone();
        handles.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if call(task, n).await? {
                    samples.push(t.elapsed());
                }
                n += 1;
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for h in handles {
        samples.extend(h.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(Phase {
        op: "",
        tasks,
        ops_per_s: samples.len() as f64 / elapsed,
        latency: percentiles(&mut samples),
        keys: None,
        abort_rate: None,
        reruns_per_commit: None,
    })
}

fn value(task: usize, n: u64, bytes: usize) -> Vec<u8> {
    let mut v = format!("{task}-{n}-").into_bytes();
    v.resize(bytes.max(v.len()), b'.');
    v
}

/// Two-object transfers: read key `a` of `from` and key `b` of `to`, write
/// both, one attempt per call.
async fn transfers(
    rt: &Runtime,
    tasks: usize,
    keys: u64,
    run: Duration,
    phase_name: &str,
) -> anyhow::Result<Phase> {
    let from: ReplicatedMap<u64, i64> = rt.open(&format!("{phase_name}-from"))?;
    let to: ReplicatedMap<u64, i64> = rt.open(&format!("{phase_name}-to"))?;
    let before = rt.transaction_stats();
    let rt2 = rt.clone();
    let mut phase = timed(tasks, run, move |task, n| {
        let (rt, from, to) = (rt2.clone(), from.clone(), to.clone());
        async move {
            let mut pick = Keys::new((task as u64) << 32 | n);
            let (a, b) = (pick.next(keys), pick.next(keys));
            let (from, to) = (&from, &to);
            let outcome = rt
                .transaction(|tx| async move {
                    let x = from.tx_get(&tx, &a).await?.unwrap_or(0);
                    let y = to.tx_get(&tx, &b).await?.unwrap_or(0);
                    from.tx_insert(&tx, a, x - 1)?;
                    to.tx_insert(&tx, b, y + 1)?;
                    Ok(())
                })
                .await;
            match outcome {
                Ok(()) => Ok(true),
                Err(Error::Aborted { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await?;
    let after = rt.transaction_stats();
    let commits = after.commits - before.commits;
    let aborts = after.aborts - before.aborts;
    phase.op = "txn";
    phase.keys = Some(keys);
    phase.abort_rate = Some(aborts as f64 / (commits + aborts).max(1) as f64);
    phase.reruns_per_commit = Some((after.reruns - before.reruns) as f64 / commits.max(1) as f64);
    Ok(phase)
}

/// Runs the benchmark.
pub async fn run(cfg: &ObjectsBenchConfig) -> anyhow::Result<ObjectsReport> {
    anyhow::ensure!(!cfg.put_tasks.is_empty(), "no put concurrency given");
    let root = tempfile::tempdir()?;
    let cluster = LocalCluster::start(
        &root.path().join("cluster"),
        3,
        LocalOptions {
            sync: cfg.sync,
            ..LocalOptions::default()
        },
    )
    .await?;
    let mut config = cluster.client_config();
    config.client = LogClientOptions::default();
    let client = LogClient::connect(&config).await?;
    // One attempt per transaction call: the bench counts aborts itself.
    let rt = Runtime::with_options(
        client.clone(),
        RuntimeOptions {
            transaction_retries: 0,
            ..RuntimeOptions::default()
        },
    );
    let bytes = cfg.value_bytes;

    let mut appends = Vec::new();
    let mut puts = Vec::new();
    for &tasks in &cfg.put_tasks {
        let log = client.clone();
        let stream = [StreamId::from_name("bench-appends")];
        let mut phase = timed(tasks, cfg.run, move |task, n| {
            let log = log.clone();
            async move {
                log.append(value(task, n, bytes), &stream).await?;
                Ok(true)
            }
        })
        .await?;
        phase.op = "append";
        appends.push(phase);

        let map: ReplicatedMap<u64, Vec<u8>> = rt.open("bench-map")?;
        let mut phase = timed(tasks, cfg.run, move |task, n| {
            let map = map.clone();
            async move {
                let key = (task as u64) << 20 | (n & 0xFFFF);
                map.insert(key, value(task, n, bytes)).await?;
                Ok(true)
            }
        })
        .await?;
        phase.op = "put";
        puts.push(phase);
    }

    // Gets of keys the put phases wrote, after one sync of the view.
    let map: ReplicatedMap<u64, Vec<u8>> = rt.open("bench-map")?;
    let written = map.len().await? as u64;
    anyhow::ensure!(written > 0, "the put phases wrote nothing");
    let mut gets = timed(cfg.get_tasks, cfg.run, move |task, n| {
        let map = map.clone();
        async move {
            let key = (task as u64 % 16) << 20 | (n & 0xFF);
            map.get(&key).await?;
            Ok(true)
        }
    })
    .await?;
    gets.op = "get";

    let txn_low_contention =
        transfers(&rt, cfg.txn_tasks, cfg.low_contention_keys, cfg.run, "low").await?;
    let txn_high_contention = transfers(
        &rt,
        cfg.txn_tasks,
        cfg.high_contention_keys,
        cfg.run,
        "high",
    )
    .await?;

    // The transfers conserve the total: check it, so a wrong commit is
    // noticed even in a benchmark.
    for name in ["low", "high"] {
        let from: ReplicatedMap<u64, i64> = rt.open(&format!("{name}-from"))?;
        let to: ReplicatedMap<u64, i64> = rt.open(&format!("{name}-to"))?;
        let sum_from: i64 = from.query(|m| m.values().sum()).await?;
        let sum_to: i64 = to.query(|m| m.values().sum()).await?;
        anyhow::ensure!(
            sum_from + sum_to == 0,
            "{name} contention: transfers did not conserve the total ({sum_from} + {sum_to})"
        );
    }
    client.close();
    cluster.shutdown().await;

    let last = |v: &[Phase]| v.last().map_or(0.0, |p| p.ops_per_s);
    Ok(ObjectsReport {
        bench: "objects",
        sync: format!("{:?}", cfg.sync).to_lowercase(),
        value_bytes: cfg.value_bytes,
        ratio_puts_to_appends: if last(&appends) > 0.0 {
            last(&puts) / last(&appends)
        } else {
            0.0
        },
        appends,
        puts,
        gets,
        txn_low_contention,
        txn_high_contention,
    })
}

/// Prints the report as a table.
pub fn print(r: &ObjectsReport) {
    println!(
        "objects: local 3-node cluster, chain of 3, sync={}, {} B values",
        r.sync, r.value_bytes
    );
    let line = |p: &Phase, target: &str| {
        let extra = match (p.keys, p.abort_rate, p.reruns_per_commit) {
            (Some(k), Some(a), Some(r)) => format!(
                "   {k} keys, abort rate {:.1}%, {r:.2} reruns/commit",
                a * 100.0
            ),
            _ => String::new(),
        };
        println!(
            "  {:<7} {:>4} tasks {:>10.0} /s   p50 {:>8.1} us p99 {:>8.1} us{extra}{target}",
            p.op, p.tasks, p.ops_per_s, p.latency.p50_us, p.latency.p99_us
        );
    };
    for (a, p) in r.appends.iter().zip(&r.puts) {
        line(a, "");
        line(
            p,
            &format!(
                "   ratio to appends {:.2}",
                p.ops_per_s / a.ops_per_s.max(1e-9)
            ),
        );
    }
    line(&r.gets, "   (target >= 200000)");
    line(&r.txn_low_contention, "   (target >= 30000)");
    line(&r.txn_high_contention, "");
    println!(
        "  map puts at {} tasks (target >= 100000): {:.0}/s",
        r.puts.last().map_or(0, |p| p.tasks),
        r.puts.last().map_or(0.0, |p| p.ops_per_s)
    );
}
