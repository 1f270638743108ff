//! Benchmarks run by `corfu bench ...`. Each measures the project and a
//! baseline in the same run and prints both with their ratio.

pub mod all;
pub mod append;
pub mod logunit;
pub mod objects;
pub mod read;
pub mod report;
pub mod rpc;
pub mod sequencer;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use corfu_core::transport::tls::{ClusterCa, Identity, NodeTls, TlsError};

use crate::stats::{percentiles, Percentiles};

/// In-memory TLS material for a benchmark: a fresh CA, a node certificate
/// for loopback, and a client certificate.
pub struct BenchTls {
    /// The node's TLS settings.
    pub node: NodeTls,
    /// The client's identity (unused unless client auth is on).
    pub client: Identity,
}

impl BenchTls {
    /// Generates the material.
    pub fn generate() -> Result<BenchTls, TlsError> {
        let ca = ClusterCa::generate("bench")?;
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let node = ca.issue("bench-node", &names)?.identity()?;
        let client = ca.issue("bench-client", &[])?.identity()?;
        Ok(BenchTls {
            node: NodeTls {
                ca: vec![ca.cert_der()?],
                identity: node,
                client_auth: false,
            },
            client,
        })
    }
}

/// The disk's own durable-append latency: appending 4 KiB to a file in
/// `dir` and calling `fdatasync`, one at a time, for `run`.
pub fn raw_fdatasync(dir: &Path, run: Duration) -> std::io::Result<Percentiles> {
    let path = dir.join("raw-fdatasync");
    let mut raw = std::fs::File::create(&path)?;
    let block = vec![0xA5u8; 4096];
    let mut samples = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < run {
        let t = Instant::now();
        raw.write_all(&block)?;
        raw.sync_data()?;
        samples.push(t.elapsed());
    }
    drop(raw);
    std::fs::remove_file(&path)?;
    Ok(percentiles(&mut samples))
}
