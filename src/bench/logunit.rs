//! `corfu bench logunit`: one log unit node over QUIC.
//!
//! Measures batched 64-byte writes/s with `sync = always` and with
//! `sync = never`, single-writer write latency (`sync = always`), range-read
//! throughput, the start-up index rebuild rate and the index's memory per
//! entry. The baseline, measured in the same run on the same disk, is the
//! raw device path: appending 4 KiB and calling `fdatasync`, one at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corfu_core::logunit::{FileStore, LogStore, LogUnitConfig, Stored, SyncPolicy};
use corfu_core::node::{self, NodeConfig};
use corfu_core::transport::{tls, ClientEndpoint, Peer, TransportConfig};
use corfu_core::types::{Role, StreamId};
use corfu_core::wire::logunit::{
    AddressedEntry, Entry, LogUnitRequest, LogUnitResponse, StreamHeader, WriteOutcome,
};
use corfu_core::wire::{Request, Response};
use serde::Serialize;

use crate::stats::{percentiles, Percentiles};

/// Parameters of the benchmark.
#[derive(Debug, Clone)]
pub struct LogUnitBenchConfig {
    /// Concurrent client tasks for the throughput phases.
    pub tasks: usize,
    /// Entries per write batch.
    pub batch: usize,
    /// Payload bytes per entry.
    pub payload_bytes: usize,
    /// Length of each timed phase.
    pub run: Duration,
    /// Entries written directly to a store for the rebuild measurement.
    pub rebuild_entries: u64,
}

impl Default for LogUnitBenchConfig {
    fn default() -> Self {
        LogUnitBenchConfig {
            tasks: 16,
            batch: 256,
            payload_bytes: 64,
            run: Duration::from_secs(3),
            rebuild_entries: 1_000_000,
        }
    }
}

/// The report of `corfu bench logunit`.
#[derive(Debug, Clone, Serialize)]
pub struct LogUnitReport {
    /// Always "logunit".
    pub bench: &'static str,
    /// Client tasks.
    pub tasks: usize,
    /// Entries per batch.
    pub batch: usize,
    /// Payload bytes per entry.
    pub payload_bytes: usize,
    /// Batched writes/s, `sync = always` (target >= 250,000).
    pub writes_per_s_sync_always: f64,
    /// Batched writes/s, `sync = never`.
    pub writes_per_s_sync_never: f64,
    /// `fdatasync` calls per second during the `sync = always` phase.
    pub syncs_per_s: f64,
    /// One writer, one 64-byte write at a time, `sync = always`.
    pub single_write_latency: Percentiles,
    /// Range reads of `batch` addresses: entries read per second.
    pub reads_per_s: f64,
    /// Records indexed per second when a store is opened.
    pub rebuild_entries_per_s: f64,
    /// Entries in the rebuilt index.
    pub rebuild_entries: u64,
    /// Estimated index memory per entry, in bytes (target <= 32).
    pub index_bytes_per_entry: f64,
    /// Baseline: append 4 KiB + `fdatasync`, one at a time, on the same disk.
    pub raw_fdatasync_4k: Percentiles,
    /// single write p50 / raw 4 KiB fdatasync p50.
    pub ratio_single_write_p50_to_raw_sync: f64,
}

fn entry(address: u64, payload_bytes: usize) -> Entry {
    let mut payload = vec![0u8; payload_bytes];
    let tag = address.to_le_bytes();
    for (i, b) in payload.iter_mut().enumerate() {
        *b = tag[i % 8];
    }
    Entry {
        id: None,
        streams: vec![StreamHeader {
            stream: StreamId::from_name("bench"),
            backpointer: None,
        }],
        payload,
    }
}

struct BenchNode {
    node: node::RunningNode,
    client: ClientEndpoint,
    peer: Peer,
}

async fn start_node(dir: &std::path::Path, sync: SyncPolicy) -> anyhow::Result<BenchNode> {
    let node = node::start(NodeConfig {
        log_unit: LogUnitConfig {
            sync,
            ..LogUnitConfig::default()
        },
        ..NodeConfig::local("bench", dir, vec![Role::LogUnit])
    })
    .await?;
    let roots = tls::load_certs(node.ca_cert())?;
    let client = ClientEndpoint::new(
        tls::client_crypto(&roots, None)?,
        TransportConfig::default(),
        node.cluster_id(),
    )?;
    let peer = client.peer(&node.local_addr().to_string());
    Ok(BenchNode { node, client, peer })
}

/// Writes batches from `tasks` tasks for `run`; returns entries/s and the
/// next unused address.
async fn write_phase(
    peer: &Peer,
    cfg: &LogUnitBenchConfig,
    start: u64,
) -> anyhow::Result<(f64, u64)> {
    let next = Arc::new(AtomicU64::new(start));
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + cfg.run;
    let mut tasks = Vec::new();
    for _ in 0..cfg.tasks {
        let (peer, next, done) = (peer.clone(), next.clone(), done.clone());
        let (batch, payload_bytes) = (cfg.batch as u64, cfg.payload_bytes);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                let writes = (first..first + batch)
                    .map(|address| AddressedEntry {
                        address,
                        entry: entry(address, payload_bytes),
                    })
                    .collect();
                match peer
                    .call(0, Request::LogUnit(LogUnitRequest::WriteBatch(writes)))
                    .await?
                {
                    Response::LogUnit(LogUnitResponse::WriteBatch(outcomes))
                        if outcomes.iter().all(|o| *o == WriteOutcome::Ok) =>
                    {
                        done.fetch_add(batch, Ordering::Relaxed);
                    }
                    other => anyhow::bail!("write batch answered {other:?}"),
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((
        done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64(),
        next.load(Ordering::Relaxed),
    ))
}

/// Runs the benchmark.
pub async fn run(cfg: &LogUnitBenchConfig) -> anyhow::Result<LogUnitReport> {
    let root = tempfile::tempdir()?;

    // Baseline: the disk's own append + fdatasync latency.
    let raw_fdatasync_4k = super::raw_fdatasync(root.path(), cfg.run.min(Duration::from_secs(1)))?;

    // sync = always: throughput, syncs, single-writer latency, reads.
    let always = start_node(&root.path().join("always"), SyncPolicy::Always).await?;
    let (writes_per_s_sync_always, written) = write_phase(&always.peer, cfg, 0).await?;
    let mut samples = Vec::new();
    let t0 = Instant::now();
    let mut address = written;
    while t0.elapsed() < cfg.run.min(Duration::from_secs(2)) {
        let t = Instant::now();
        let answer = always
            .peer
            .call(
                0,
                Request::LogUnit(LogUnitRequest::Write(AddressedEntry {
                    address,
                    entry: entry(address, cfg.payload_bytes),
                })),
            )
            .await?;
        samples.push(t.elapsed());
        anyhow::ensure!(
            answer == Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Ok)),
            "single write answered {answer:?}"
        );
        address += 1;
    }
    let single_write_latency = percentiles(&mut samples);
    let reads_per_s = read_phase(&always.peer, cfg, written).await?;
    always.client.close();
    always.node.shutdown().await;

    // sync = never: throughput only.
    let never = start_node(&root.path().join("never"), SyncPolicy::Never).await?;
    let (writes_per_s_sync_never, _) = write_phase(&never.peer, cfg, 0).await?;
    never.client.close();
    never.node.shutdown().await;

    // Syncs per second of the group commit, measured on a store directly.
    let syncs_per_s = group_commit_syncs(&root.path().join("syncs"), cfg).await?;

    // Rebuild: a store holding `rebuild_entries` records, opened afresh.
    let rebuild_dir = root.path().join("rebuild");
    let store_cfg = LogUnitConfig {
        sync: SyncPolicy::Never,
        ..LogUnitConfig::default()
    };
    {
        let store = FileStore::open(&rebuild_dir, store_cfg.clone())?;
        let mut address = 0;
        while address < cfg.rebuild_entries {
            let n = 4096.min(cfg.rebuild_entries - address);
            let items: Vec<(u64, Stored)> = (address..address + n)
                .map(|a| (a, Stored::Data(entry(a, cfg.payload_bytes))))
                .collect();
            store.put_batch(0, &items)?;
            address += n;
        }
    }
    let t = Instant::now();
    let store = FileStore::open(&rebuild_dir, store_cfg)?;
    let rebuild_secs = t.elapsed().as_secs_f64();
    let rebuilt = store.recovery_report().records;
    let (entries, index_bytes) = store.index_stats();
    drop(store);

    Ok(LogUnitReport {
        bench: "logunit",
        tasks: cfg.tasks,
        batch: cfg.batch,
        payload_bytes: cfg.payload_bytes,
        writes_per_s_sync_always,
        writes_per_s_sync_never,
        syncs_per_s,
        ratio_single_write_p50_to_raw_sync: single_write_latency.p50_us
            / raw_fdatasync_4k.p50_us.max(0.001),
        single_write_latency,
        reads_per_s,
        rebuild_entries_per_s: rebuilt as f64 / rebuild_secs,
        rebuild_entries: rebuilt,
        index_bytes_per_entry: index_bytes as f64 / entries.max(1) as f64,
        raw_fdatasync_4k,
    })
}

/// Writes from `tasks` threads through a store directly with `sync =
/// always`, each waiting for durability; returns fdatasync calls per second.
async fn group_commit_syncs(
    dir: &std::path::Path,
    cfg: &LogUnitBenchConfig,
) -> anyhow::Result<f64> {
    let store = Arc::new(FileStore::open(dir, LogUnitConfig::default())?);
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + cfg.run.min(Duration::from_secs(1));
    let mut tasks = Vec::new();
    for _ in 0..cfg.tasks {
        let (store, next) = (store.clone(), next.clone());
        let payload_bytes = cfg.payload_bytes;
        tasks.push(tokio::spawn(async move {
            let mut durable = store.durable();
            while Instant::now() < deadline {
                let a = next.fetch_add(1, Ordering::Relaxed);
                if let corfu_core::logunit::Put::Written(ticket) =
                    store.put(0, a, &Stored::Data(entry(a, payload_bytes)))?
                {
                    durable.wait_for(|d| *d >= ticket).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(store.sync_count() as f64 / t0.elapsed().as_secs_f64())
}

async fn read_phase(peer: &Peer, cfg: &LogUnitBenchConfig, written: u64) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + cfg.run;
    let mut tasks = Vec::new();
    let span = written.saturating_sub(cfg.batch as u64).max(1);
    for _ in 0..cfg.tasks {
        let (peer, done) = (peer.clone(), done.clone());
        let batch = cfg.batch as u64;
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let from = rand::random::<u64>() % span;
                match peer
                    .call(
                        0,
                        Request::LogUnit(LogUnitRequest::ReadRange {
                            from,
                            to: from + batch,
                        }),
                    )
                    .await?
                {
                    Response::LogUnit(LogUnitResponse::Reads(reads)) => {
                        done.fetch_add(reads.len() as u64, Ordering::Relaxed);
                    }
                    other => anyhow::bail!("range read answered {other:?}"),
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64())
}
