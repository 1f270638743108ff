//! `corfu bench append`: the shared log end to end on a local 3-node
//! cluster (one chain of 3 log units by default, `sync = always`), through
//! the [`LogClient`].
//!
//! Measures appends/s of 64-byte entries with one client task and with
//! many tasks (each awaiting one append at a time, so the client's
//! batching is what combines them), the same tasks each appending batches,
//! latency percentiles, and playback (range reads of the whole log through
//! the client). Baselines measured in the same run on the same disk: the
//! raw durable-append latency (4 KiB + `fdatasync`), times the chain
//! length, which is the floor of one chain-replicated append with
//! `sync = always`; and raw pipelined range reads from the tail log unit,
//! the floor of playback.

use std::time::{Duration, Instant};

use corfu_core::client::{LogClient, LogClientOptions};
use corfu_core::logunit::SyncPolicy;
use corfu_core::types::StreamId;
use corfu_core::wire::logunit::{LogUnitRequest, LogUnitResponse, ReadOutcome};
use corfu_core::wire::{Request, Response};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::cluster::Shape;
use crate::local::{LocalCluster, LocalOptions};
use crate::stats::{percentiles, Percentiles};

/// Parameters of the benchmark.
#[derive(Debug, Clone)]
pub struct AppendBenchConfig {
    /// Nodes of the local cluster (each a log unit and layout server).
    pub nodes: usize,
    /// Stripes and chains.
    pub shape: Shape,
    /// The log units' durability policy.
    pub sync: SyncPolicy,
    /// Tasks of the concurrent phases.
    pub tasks: usize,
    /// Entries per `append_batch` call in the batch phase.
    pub batch: usize,
    /// Payload bytes per entry.
    pub payload_bytes: usize,
    /// Length of each timed phase.
    pub run: Duration,
    /// The client's settings.
    pub client: LogClientOptions,
}

impl Default for AppendBenchConfig {
    fn default() -> Self {
        AppendBenchConfig {
            nodes: 3,
            shape: Shape::default(),
            sync: SyncPolicy::Always,
            tasks: 64,
            batch: 64,
            payload_bytes: 64,
            run: Duration::from_secs(3),
            client: LogClientOptions::default(),
        }
    }
}

/// One timed append phase.
#[derive(Debug, Clone, Serialize)]
pub struct AppendPhase {
    /// Client tasks.
    pub tasks: usize,
    /// Entries per call (1: `append`).
    pub entries_per_call: usize,
    /// Acknowledged appends per second.
    pub appends_per_s: f64,
    /// Latency of one call.
    pub latency: Percentiles,
}

/// The report of `corfu bench append`.
#[derive(Debug, Clone, Serialize)]
pub struct AppendReport {
    /// Always "append".
    pub bench: &'static str,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Stripes of the layout.
    pub stripes: usize,
    /// Log units per chain.
    pub chain: usize,
    /// "always", "batch" or "never".
    pub sync: String,
    /// Payload bytes per entry.
    pub payload_bytes: usize,
    /// One task, one append at a time.
    pub single: AppendPhase,
    /// `tasks` tasks, one append at a time each.
    pub concurrent: AppendPhase,
    /// `tasks` tasks, `append_batch` of `batch` entries each.
    pub batched: AppendPhase,
    /// Linearizable stream-tail queries per second from `tasks` tasks
    /// (concurrent queries share sequencer round trips).
    pub stream_tail_queries_per_s: f64,
    /// Entries read back through the client.
    pub playback_entries: u64,
    /// Playback through `LogClient::read_range`, entries/s.
    pub playback_entries_per_s: f64,
    /// Raw pipelined range reads from the tail log unit, entries/s.
    pub raw_range_reads_per_s: f64,
    /// playback / raw range reads.
    pub ratio_playback_to_raw: f64,
    /// The disk's 4 KiB append + fdatasync latency.
    pub raw_fdatasync_4k: Percentiles,
    /// Single-task append p50 / (chain length x raw fdatasync p50).
    pub ratio_single_p50_to_chain_floor: f64,
}

fn payload(task: usize, seq: u64, bytes: usize) -> Vec<u8> {
    let mut p = format!("{task}-{seq}-").into_bytes();
    p.resize(bytes.max(p.len()), b'.');
    p
}

/// Runs `tasks` tasks, each calling `append_batch` with `per_call` entries
/// (or `append` when 1) until `run` has passed.
async fn phase(
    client: &LogClient,
    tasks: usize,
    per_call: usize,
    cfg: &AppendBenchConfig,
) -> anyhow::Result<AppendPhase> {
    let stream = [StreamId::from_name("bench")];
    let start = Instant::now();
    let deadline = start + cfg.run;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let client = client.clone();
        let bytes = cfg.payload_bytes;
        handles.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if per_call == 1 {
                    client.append(payload(task, seq, bytes), &stream).await?;
                } else {
                    let entries = (0..per_call as u64)
                        .map(|i| (payload(task, seq + i, bytes), stream.to_vec()))
                        .collect();
                    for r in client.append_batch(entries).await {
                        r?;
                    }
                }
                samples.push(t.elapsed());
                seq += per_call as u64;
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for h in handles {
        samples.extend(h.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(AppendPhase {
        tasks,
        entries_per_call: per_call,
        appends_per_s: (samples.len() * per_call) as f64 / elapsed,
        latency: percentiles(&mut samples),
    })
}

/// Reads `[0, tail)` from the tail of the first chain with `in_flight`
/// pipelined range requests of `chunk` addresses; entries/s.
async fn raw_range_reads(
    cluster: &LocalCluster,
    tail: u64,
    chunk: u64,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let layout = cluster.layout();
    let unit = layout
        .chain_of(0)
        .and_then(|c| c.last())
        .ok_or_else(|| anyhow::anyhow!("no chain holds address 0"))?;
    let endpoint = cluster.client_config().endpoint()?;
    let peer = endpoint.peer(&unit.addr);
    let epoch = layout.epoch;
    let start = Instant::now();
    let counts: Vec<anyhow::Result<usize>> = stream::iter((0..tail).step_by(chunk as usize))
        .map(|from| {
            let peer = peer.clone();
            async move {
                let to = (from + chunk).min(tail);
                match peer
                    .call(
                        epoch,
                        Request::LogUnit(LogUnitRequest::ReadRange { from, to }),
                    )
                    .await?
                {
                    Response::LogUnit(LogUnitResponse::Reads(reads)) => Ok(reads.len()),
                    other => anyhow::bail!("range read answered {other:?}"),
                }
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let mut read = 0;
    for c in counts {
        read += c?;
    }
    let rate = read as f64 / start.elapsed().as_secs_f64();
    endpoint.close();
    Ok(rate)
}

/// Runs the benchmark.
pub async fn run(cfg: &AppendBenchConfig) -> anyhow::Result<AppendReport> {
    let root = tempfile::tempdir()?;
    let raw_fdatasync_4k = super::raw_fdatasync(root.path(), Duration::from_secs(1))?;
    let cluster = LocalCluster::start(
        &root.path().join("cluster"),
        cfg.nodes,
        LocalOptions {
            shape: cfg.shape,
            sync: cfg.sync,
            ..LocalOptions::default()
        },
    )
    .await?;
    let layout = cluster.layout().clone();
    let segment = layout
        .open_segment()
        .ok_or_else(|| anyhow::anyhow!("the layout has no open segment"))?;
    let (stripes, chain) = (segment.stripes.len(), segment.stripes[0].chain.len());
    let mut config = cluster.client_config();
    config.client = cfg.client.clone();
    let client = LogClient::connect(&config).await?;

    let single = phase(&client, 1, 1, cfg).await?;
    let concurrent = phase(&client, cfg.tasks, 1, cfg).await?;
    let batched = phase(&client, cfg.tasks, cfg.batch, cfg).await?;

    // Stream-tail queries, the first step of every linearizable read.
    let stream_tail_queries_per_s = {
        let start = Instant::now();
        let deadline = start + cfg.run;
        let mut handles = Vec::new();
        for _ in 0..cfg.tasks {
            let client = client.clone();
            handles.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    client.stream_tail(StreamId::from_name("bench")).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            }));
        }
        let mut total = 0;
        for h in handles {
            total += h.await??;
        }
        total as f64 / start.elapsed().as_secs_f64()
    };

    // Playback: the whole log through the client, then raw.
    let tail = client.tail().await?;
    let start = Instant::now();
    let read = client.read_range(0, tail).await?;
    let playback_entries_per_s = read.len() as f64 / start.elapsed().as_secs_f64();
    let data = read
        .iter()
        .filter(|(_, o)| matches!(o, ReadOutcome::Data(_)))
        .count();
    anyhow::ensure!(
        data as u64 == tail,
        "playback found {data} entries below the tail {tail}"
    );
    drop(read);
    let options = client.options().clone();
    let raw_range_reads_per_s = if stripes == 1 {
        raw_range_reads(
            &cluster,
            tail,
            u64::from(options.read_batch_max),
            options.reads_in_flight_max as usize,
        )
        .await?
    } else {
        0.0
    };
    client.close();
    cluster.shutdown().await;

    let floor = chain as f64 * raw_fdatasync_4k.p50_us;
    Ok(AppendReport {
        bench: "append",
        nodes: cfg.nodes,
        stripes,
        chain,
        sync: format!("{:?}", cfg.sync).to_lowercase(),
        payload_bytes: cfg.payload_bytes,
        ratio_single_p50_to_chain_floor: if floor > 0.0 {
            single.latency.p50_us / floor
        } else {
            0.0
        },
        single,
        concurrent,
        batched,
        stream_tail_queries_per_s,
        playback_entries: tail,
        playback_entries_per_s,
        ratio_playback_to_raw: if raw_range_reads_per_s > 0.0 {
            playback_entries_per_s / raw_range_reads_per_s
        } else {
            0.0
        },
        raw_range_reads_per_s,
        raw_fdatasync_4k,
    })
}
