//! `corfu bench read`: large entries read back through
//! [`LogClient::read_range`].
//!
//! A one-node in-process cluster (`sync = never`: the figure is about
//! reads) holds `entries` entries of `entry_bytes` each (1 MiB by default)
//! on one stream. Each timed run reads them all with one `read_range`: the
//! log unit answers a range read with the prefix that fits its byte budget
//! (just under a frame, 16 MiB), and the client continues after it. The
//! baseline, measured in the same run and alternating with it, is the
//! transport's bulk rate: bare quinn with the same TLS and windows, a
//! server writing the same number of bytes on one stream and the client
//! reading them to the end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use corfu_core::client::LogClient;
use corfu_core::logunit::SyncPolicy;
use corfu_core::transport::{tls, TransportConfig};
use corfu_core::types::StreamId;
use corfu_core::wire::logunit::ReadOutcome;
use serde::Serialize;

use super::BenchTls;
use crate::cluster::Shape;
use crate::local::{LocalCluster, LocalOptions};
use crate::stats::median;

/// Parameters of the benchmark.
#[derive(Debug, Clone)]
pub struct ReadBenchConfig {
    /// Entries written, then read by each run.
    pub entries: usize,
    /// Payload bytes per entry.
    pub entry_bytes: usize,
    /// Timed runs per side, alternating (the median is reported).
    pub runs: usize,
}

impl Default for ReadBenchConfig {
    fn default() -> Self {
        ReadBenchConfig {
            entries: 64,
            entry_bytes: 1 << 20,
            runs: 5,
        }
    }
}

/// The report of `corfu bench read`.
#[derive(Debug, Clone, Serialize)]
pub struct ReadReport {
    /// Always "read".
    pub bench: &'static str,
    /// Entries read per run.
    pub entries: usize,
    /// Payload bytes per entry.
    pub entry_bytes: usize,
    /// Frame limit of the transport (bytes).
    pub frame_bytes_max: u32,
    /// Median payload MB/s (10^6 bytes) of `read_range` over the runs.
    pub read_range_mb_per_s: f64,
    /// Every run's rate.
    pub read_range_runs: Vec<f64>,
    /// Median MB/s of the bare quinn bulk transfer of the same bytes.
    pub bulk_mb_per_s: f64,
    /// Every run's rate.
    pub bulk_runs: Vec<f64>,
    /// read_range / bulk.
    pub ratio: f64,
}

/// Runs the benchmark.
pub async fn run(cfg: &ReadBenchConfig) -> anyhow::Result<ReadReport> {
    anyhow::ensure!(cfg.entries > 0 && cfg.runs > 0, "nothing to measure");
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(
        &dir.path().join("cluster"),
        1,
        LocalOptions {
            shape: Shape::new(1, 1),
            sync: SyncPolicy::Never,
            ..LocalOptions::default()
        },
    )
    .await?;
    let config = cluster.client_config();
    let frame_bytes_max = config.transport.frame_bytes_max;
    let client = LogClient::connect(&config).await?;
    let stream = StreamId::from_name("bench-read");
    for chunk in (0..cfg.entries).collect::<Vec<_>>().chunks(16) {
        let batch = chunk
            .iter()
            .map(|&i| (vec![i as u8; cfg.entry_bytes], vec![stream]))
            .collect();
        for result in client.append_batch(batch).await {
            result.context("writing the entries")?;
        }
    }
    let tail = client.tail().await?;
    let bytes = (cfg.entries * cfg.entry_bytes) as u64;
    let bulk = BulkQuinn::start(&config.transport).await?;

    let mut read_runs = Vec::new();
    let mut bulk_runs = Vec::new();
    for _ in 0..cfg.runs {
        let t = Instant::now();
        let read = client.read_range(0, tail).await?;
        let secs = t.elapsed().as_secs_f64();
        let payload: u64 = read
            .iter()
            .map(|(_, o)| match o {
                ReadOutcome::Data(e) => e.payload.len() as u64,
                _ => 0,
            })
            .sum();
        anyhow::ensure!(
            payload == bytes,
            "read {payload} payload bytes, expected {bytes}"
        );
        drop(read);
        read_runs.push(bytes as f64 / 1e6 / secs);
        bulk_runs.push(bulk.transfer(bytes).await?);
    }
    client.close();
    bulk.stop();
    cluster.shutdown().await;
    let read_range_mb_per_s = median(&mut read_runs.clone());
    let bulk_mb_per_s = median(&mut bulk_runs.clone());
    Ok(ReadReport {
        bench: "read",
        entries: cfg.entries,
        entry_bytes: cfg.entry_bytes,
        frame_bytes_max,
        read_range_mb_per_s,
        read_range_runs: read_runs,
        bulk_mb_per_s,
        bulk_runs,
        ratio: read_range_mb_per_s / bulk_mb_per_s.max(f64::MIN_POSITIVE),
    })
}

/// Prints the report as text.
pub fn print(r: &ReadReport) {
    println!(
        "read: {} entries of {} B on one stream, one read_range per run, frames of at most {} B",
        r.entries, r.entry_bytes, r.frame_bytes_max
    );
    println!(
        "  read_range {:>8.1} MB/s   bare quinn bulk {:>8.1} MB/s   ratio {:.2}",
        r.read_range_mb_per_s, r.bulk_mb_per_s, r.ratio
    );
}

/// A bare quinn server that writes as many bytes as asked on a stream.
struct BulkQuinn {
    server: quinn::Endpoint,
    client: quinn::Endpoint,
    conn: quinn::Connection,
}

impl BulkQuinn {
    async fn start(transport: &TransportConfig) -> anyhow::Result<BulkQuinn> {
        let material = BenchTls::generate()?;
        let mut server_cfg =
            quinn::ServerConfig::with_crypto(Arc::new(tls::server_crypto(&material.node)?));
        server_cfg.transport_config(Arc::new(transport.quinn()));
        let server = quinn::Endpoint::server(server_cfg, ([127, 0, 0, 1], 0).into())?;
        let addr: SocketAddr = server.local_addr()?;
        let accept = server.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(serve_bulk(send, recv));
                    }
                });
            }
        });
        let mut client = quinn::Endpoint::client(([0, 0, 0, 0], 0).into())?;
        let mut client_cfg =
            quinn::ClientConfig::new(Arc::new(tls::client_crypto(&material.node.ca, None)?));
        client_cfg.transport_config(Arc::new(transport.quinn()));
        client.set_default_client_config(client_cfg);
        let conn = client
            .connect(addr, "127.0.0.1")?
            .await
            .context("bare quinn connect")?;
        Ok(BulkQuinn {
            server,
            client,
            conn,
        })
    }

    /// Asks for `bytes` bytes and reads them to the end; MB/s.
    async fn transfer(&self, bytes: u64) -> anyhow::Result<f64> {
        let t = Instant::now();
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(&bytes.to_le_bytes()).await?;
        send.finish()?;
        let mut got = 0u64;
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
            got += chunk.bytes.len() as u64;
        }
        anyhow::ensure!(got == bytes, "bulk transfer gave {got} of {bytes} bytes");
        Ok(bytes as f64 / 1e6 / t.elapsed().as_secs_f64())
    }

    fn stop(self) {
        self.conn.close(0u32.into(), b"done");
        self.client.close(0u32.into(), b"done");
        self.server.close(0u32.into(), b"done");
    }
}

/// Writes the number of bytes the client asked for, in 1 MiB writes.
async fn serve_bulk(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut ask = [0u8; 8];
    if recv.read_exact(&mut ask).await.is_err() {
        return;
    }
    let mut left = u64::from_le_bytes(ask);
    let block = bytes::Bytes::from(vec![0x5Au8; 1 << 20]);
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        if send.write_chunk(block.slice(..n)).await.is_err() {
            return;
        }
        left -= n as u64;
    }
    let _ = send.finish();
}
