//! Starts a node in a temporary directory and pings it over QUIC with TLS.
//!
//! `cargo run --release --example ping_node`

use corfu::core::node::{self, NodeConfig};
use corfu::core::transport::{tls, ClientEndpoint, TransportConfig};
use corfu::core::types::Role;
use corfu::core::wire::{Request, Response};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = node::start(NodeConfig {
        node_id: "example".into(),
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.path().join("node"),
        cluster_id: None,
        roles: vec![Role::LogUnit],
        tls: Default::default(),
        transport: TransportConfig::default(),
        log_unit: Default::default(),
        sequencer: Default::default(),
    })
    .await?;
    let roots = tls::load_certs(node.ca_cert())?;
    let client = ClientEndpoint::new(
        tls::client_crypto(&roots, None)?,
        TransportConfig::default(),
        node.cluster_id(),
    )?;
    let peer = client.peer(&node.local_addr().to_string());
    let answer = peer.call(0, Request::Ping).await?;
    anyhow::ensure!(answer == Response::Pong, "unexpected answer {answer:?}");
    println!("node at {} answered {answer:?}", node.local_addr());
    client.close();
    node.shutdown().await;
    Ok(())
}
