//! Benchmarks run by `corfu bench ...`. Each measures the project and a
//! baseline in the same run and prints both with their ratio.

pub mod logunit;
pub mod rpc;
pub mod sequencer;

use corfu_core::transport::tls::{ClusterCa, Identity, NodeTls, TlsError};

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
