//! The embedded default run by `corfu` with no arguments: a node on
//! loopback, reached over QUIC with mutual TLS, pinged and measured, and a
//! client without a certificate refused. It grows into the full quickstart
//! (a 3-node cluster with objects) as the roles land.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use corfu_core::node::{self, NodeConfig};
use corfu_core::transport::tls::{self, ClusterCa};
use corfu_core::transport::{ClientEndpoint, TransportConfig, TransportError};
use corfu_core::types::{ClusterId, Role};
use corfu_core::wire::{Request, Response};

use crate::stats::percentiles;

/// Options of the quickstart.
#[derive(Debug, Clone, Default)]
pub struct QuickstartOptions {
    /// Where to keep the node's data; a temporary directory if `None`.
    pub dir: Option<PathBuf>,
}

/// Runs the quickstart, printing what happens; returns an error if any step
/// does not behave as it should.
pub async fn run(opts: QuickstartOptions) -> anyhow::Result<()> {
    let temp;
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let data_dir = dir.join("n1");
    let config = NodeConfig {
        node_id: "n1".into(),
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: data_dir.clone(),
        cluster_id: None,
        roles: vec![Role::LayoutServer, Role::Sequencer, Role::LogUnit],
        tls: tls::NodeTlsConfig {
            client_auth: true,
            ..Default::default()
        },
        transport: TransportConfig::default(),
        log_unit: Default::default(),
        sequencer: Default::default(),
    };
    let node = node::start(config).await.context("starting the node")?;
    let addr = node.local_addr().to_string();
    println!(
        "started node n1 on {addr} (QUIC, TLS 1.3, client certificates required); data in {}",
        data_dir.display()
    );

    // A client certificate issued by the cluster CA the node generated.
    let tls_dir = data_dir.join("tls");
    let ca = ClusterCa::load(&tls_dir.join("ca.pem"), &tls_dir.join("ca.key"))?;
    let identity = ca.issue("quickstart-client", &[])?.identity()?;
    let roots = tls::load_certs(&tls_dir.join("ca.pem"))?;
    let client = ClientEndpoint::new(
        tls::client_crypto(&roots, Some(&identity))?,
        TransportConfig::default(),
        node.cluster_id(),
    )?;
    let peer = client.peer(&addr);
    match peer.call(0, Request::Info).await? {
        Response::Info(info) => println!(
            "info: node {} of cluster {}, roles {:?}, protocol v{}, corfu {}",
            info.node_id, info.cluster_id, info.roles, info.protocol_version, info.software_version
        ),
        other => anyhow::bail!("unexpected answer to Info: {other:?}"),
    }

    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        let t = Instant::now();
        let answer = peer.call(0, Request::Ping).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(
            answer == Response::Pong,
            "unexpected answer to Ping: {answer:?}"
        );
    }
    let p = percentiles(&mut samples);
    println!(
        "ping: {} round trips one at a time, p50 {:.0} us, p99 {:.0} us",
        p.count, p.p50_us, p.p99_us
    );

    let total = 100_000;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let peer = peer.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / 64 {
                peer.call(0, Request::Ping).await?;
            }
            Ok::<_, TransportError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    println!(
        "ping: {} requests pipelined from 64 tasks on one connection, {:.0} requests/s",
        total / 64 * 64,
        (total / 64 * 64) as f64 / t.elapsed().as_secs_f64()
    );

    // A client from another cluster is told so.
    let stranger = ClientEndpoint::new(
        tls::client_crypto(&roots, Some(&identity))?,
        TransportConfig::default(),
        ClusterId::random(),
    )?;
    match stranger
        .peer(&addr)
        .call(0, Request::LogUnit(corfu_core::wire::LogUnitRequest::Tail))
        .await?
    {
        Response::Error(e) => println!("a client of another cluster is refused: {e}"),
        other => anyhow::bail!("a client of another cluster got {other:?}"),
    }
    stranger.close();

    // A client without a certificate is refused at the handshake.
    let anonymous = ClientEndpoint::new(
        tls::client_crypto(&roots, None)?,
        TransportConfig {
            request_timeout_ms: 3_000,
            ..TransportConfig::default()
        },
        node.cluster_id(),
    )?;
    match anonymous.peer(&addr).call(0, Request::Ping).await {
        Err(e @ TransportError::Tls { .. }) => {
            println!("a client without a certificate is refused: {e}")
        }
        other => anyhow::bail!("a client without a certificate was not refused: {other:?}"),
    }
    anonymous.close();

    client.close();
    node.shutdown().await;
    println!("node stopped cleanly; done");
    Ok(())
}
