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
    let node = node::start(NodeConfig::local(
        "example",
        &dir.path().join("node"),
        vec![Role::LogUnit],
    ))
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
