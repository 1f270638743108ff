//! The load generator: timed phases of puts and gets through `etcd-client`,
//! each client task with its own connection, one request at a time.
//!
//! A phase runs `clients` tasks until a deadline; every task awaits one
//! request before sending the next, so the concurrency is exactly the
//! client count (as in corfu's append benchmark, where each task awaits one
//! append at a time). Throughput counts acknowledged requests over the time
//! until the last task returned; latency is per request.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{Client, ConnectOptions, GetOptions};

use crate::cluster::EtcdCluster;

/// A request that takes longer than this fails the run instead of hanging.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// How long a new connection may take.
const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// How long the cluster has to elect a leader and serve a put.
pub const STARTUP_TIMEOUT_MS: u64 = 30_000;
/// Distinct keys each put task cycles through: the keyspace of a map that
/// is updated, not one that only grows.
const PUT_KEYS_PER_CLIENT: u64 = 1_024;
/// Keys written before the get phase and read by it.
const GET_KEYS: u64 = 1_024;

/// Latency percentiles of one phase, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Requests measured.
    pub count: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

/// Percentiles of `samples` (sorted in place), nearest rank rounded, the
/// same rule as corfu's `stats::percentiles`.
pub fn percentiles(samples: &mut [Duration]) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    Percentiles {
        count: samples.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
    }
}

/// The result of one timed phase.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Acknowledged requests per second.
    pub ops_per_sec: f64,
    /// Latency of one request.
    pub latency: Percentiles,
    /// Wall time of the phase, until the last task returned.
    pub seconds: f64,
}

/// The kind of request a phase sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `Put` of a `value_bytes` value.
    Put,
    /// `Range` of one key; linearizable unless `serializable`.
    Get {
        /// Answered from the member's local state, without a quorum
        /// round (may be stale).
        serializable: bool,
    },
}

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .with_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
}

/// One client connected to `endpoints` (it balances over them).
pub async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    Client::connect(endpoints, Some(options()))
        .await
        .with_context(|| format!("connecting to {endpoints:?}"))
}

/// What the cluster said once it was healthy.
#[derive(Debug, Clone)]
pub struct Health {
    /// The members' etcd version.
    pub version: String,
    /// The client URL of the leader.
    pub leader_url: String,
}

/// Asks one member for its status: (its id, the leader's id, version).
async fn member_status(url: &str) -> anyhow::Result<(u64, u64, String)> {
    let mut client = connect(&[url.to_string()]).await?;
    let status = client.status().await?;
    let id = status
        .header()
        .map(|h| h.member_id())
        .context("status without a header")?;
    Ok((id, status.leader(), status.version().to_string()))
}

/// Waits until every member reports the same leader and a put through all
/// of them succeeds.
pub async fn wait_healthy(cluster: &mut EtcdCluster) -> anyhow::Result<Health> {
    let urls = cluster.client_urls();
    let deadline = Instant::now() + Duration::from_millis(STARTUP_TIMEOUT_MS);
    let mut last_error = String::from("no answer yet");
    while Instant::now() < deadline {
        cluster.check_running()?;
        match probe(&urls).await {
            Ok(health) => return Ok(health),
            Err(e) => last_error = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("etcd was not healthy after {STARTUP_TIMEOUT_MS} ms: {last_error}")
}

async fn probe(urls: &[String]) -> anyhow::Result<Health> {
    let mut statuses = Vec::with_capacity(urls.len());
    for url in urls {
        statuses.push((url.clone(), member_status(url).await?));
    }
    let leader = statuses[0].1 .1;
    anyhow::ensure!(leader != 0, "no leader yet");
    anyhow::ensure!(
        statuses.iter().all(|(_, (_, l, _))| *l == leader),
        "members disagree on the leader"
    );
    let (leader_url, version) = statuses
        .iter()
        .find(|(_, (id, _, _))| *id == leader)
        .map(|(url, (_, _, v))| (url.clone(), v.clone()))
        .context("the leader is not one of our members")?;
    let mut client = connect(urls).await?;
    client.put("peer-etcd/health", "ok", None).await?;
    Ok(Health {
        version,
        leader_url,
    })
}

/// Writes the keys the get phase reads.
pub async fn fill_get_keys(endpoints: &[String], value_bytes: usize) -> anyhow::Result<()> {
    let mut client = connect(endpoints).await?;
    for k in 0..GET_KEYS {
        client
            .put(format!("peer-etcd/get/{k}"), vec![b'v'; value_bytes], None)
            .await?;
    }
    Ok(())
}

/// A value of exactly `bytes` bytes that starts with who wrote it (the
/// tag is cut when the value is shorter).
fn value(client: usize, seq: u64, bytes: usize) -> Vec<u8> {
    let mut v = format!("{client}-{seq}-").into_bytes();
    v.resize(bytes, b'.');
    v
}

/// One task: requests until `deadline`, returning each one's latency.
async fn task(
    mut client: Client,
    id: usize,
    op: Op,
    value_bytes: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let t = Instant::now();
        match op {
            Op::Put => {
                let key = format!("peer-etcd/put/{id}/{}", seq % PUT_KEYS_PER_CLIENT);
                client.put(key, value(id, seq, value_bytes), None).await?;
            }
            Op::Get { serializable } => {
                // Spread the tasks over the keys, so they do not read in step.
                let k = (id as u64).wrapping_mul(7_919).wrapping_add(seq) % GET_KEYS;
                let options = serializable.then(|| GetOptions::new().with_serializable());
                let resp = client.get(format!("peer-etcd/get/{k}"), options).await?;
                anyhow::ensure!(
                    resp.kvs().len() == 1 && resp.kvs()[0].value().len() == value_bytes,
                    "get of key {k} did not return the value written"
                );
            }
        }
        samples.push(t.elapsed());
        seq += 1;
    }
    Ok(samples)
}

/// Runs `clients` tasks (one connection each) for `warmup`, discarding the
/// results, then for `run`, measured.
pub async fn phase(
    endpoints: &[String],
    clients: usize,
    op: Op,
    value_bytes: usize,
    warmup: Duration,
    run: Duration,
) -> anyhow::Result<Phase> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(connect(endpoints).await?);
    }
    if !warmup.is_zero() {
        timed(&conns, op, value_bytes, warmup).await?;
    }
    timed(&conns, op, value_bytes, run).await
}

async fn timed(
    conns: &[Client],
    op: Op,
    value_bytes: usize,
    run: Duration,
) -> anyhow::Result<Phase> {
    let start = Instant::now();
    let deadline = start + run;
    let handles: Vec<_> = conns
        .iter()
        .enumerate()
        .map(|(id, c)| tokio::spawn(task(c.clone(), id, op, value_bytes, deadline)))
        .collect();
    let mut samples = Vec::new();
    for h in handles {
        samples.extend(h.await??);
    }
    let seconds = start.elapsed().as_secs_f64();
    let latency = percentiles(&mut samples);
    anyhow::ensure!(latency.count > 0, "no request completed in {run:?}");
    Ok(Phase {
        ops_per_sec: latency.count as f64 / seconds,
        latency,
        seconds,
    })
}

/// The disk's own durable-append latency, the floor under an etcd WAL
/// write: 4 KiB appended to a file in `dir` and `fdatasync`, one at a time,
/// for `run` (corfu's benchmarks measure the same baseline the same way).
pub fn raw_fdatasync(dir: &Path, run: Duration) -> anyhow::Result<Phase> {
    let path = dir.join("raw-fdatasync");
    let mut file = std::fs::File::create(&path).context("creating the fdatasync file")?;
    let block = vec![0xA5u8; 4096];
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < run {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(t.elapsed());
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Phase {
        ops_per_sec: samples.len() as f64 / seconds,
        latency: percentiles(&mut samples),
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_sample() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let p = percentiles(&mut s);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50_us.round(), 51.0);
        assert_eq!(p.p99_us.round(), 99.0);
        assert_eq!(percentiles(&mut []).p50_us, 0.0);
    }

    #[test]
    fn values_have_the_requested_size() {
        assert_eq!(value(3, 17, 64).len(), 64);
        assert_eq!(value(3, 17, 64)[..5], *b"3-17-");
        assert_eq!(value(3, 17, 1), b"3");
    }
}
