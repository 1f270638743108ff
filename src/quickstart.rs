//! The embedded default run by `corfu` with no arguments: a node hosting
//! every role on loopback, reached over QUIC with mutual TLS; the layout
//! service decides epoch 1, the sequencer hands out positions, the log unit
//! stores entries write-once; pings are measured, and a client of another
//! cluster and a client without a certificate are refused. It grows into
//! the full quickstart (a 3-node cluster with objects) as the client and
//! object layers land.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use corfu_core::layout::{Layout, NodeAddr, Segment, Stripe};
use corfu_core::layout_service::proposer::Proposer;
use corfu_core::node::{self, NodeConfig};
use corfu_core::transport::tls::{self, ClusterCa};
use corfu_core::transport::{ClientEndpoint, TransportConfig, TransportError};
use corfu_core::types::{ClusterId, Role, StreamId};
use corfu_core::wire::logunit::{
    AddressedEntry, Entry, LogUnitRequest, LogUnitResponse, ReadOutcome, StreamHeader, WriteOutcome,
};
use corfu_core::wire::sequencer::{SequencerRequest, SequencerResponse};
use corfu_core::wire::{Request, Response};

use crate::stats::percentiles;

/// The shared log's pieces on one node: the layout service decides epoch 1,
/// the sequencer is bootstrapped and hands out positions with backpointers,
/// the log unit stores entries write-once at those positions.
async fn log_round_trip(
    client: &ClientEndpoint,
    addr: &str,
    cluster_id: ClusterId,
) -> anyhow::Result<()> {
    let node = NodeAddr {
        node_id: "n1".into(),
        addr: addr.to_string(),
    };
    let layout = Layout {
        cluster_id,
        epoch: 1,
        layout_servers: vec![node.clone()],
        sequencers: vec![node.clone()],
        segments: vec![Segment {
            start: 0,
            end: None,
            stripes: vec![Stripe { chain: vec![node] }],
        }],
    };
    let proposer = Proposer::new(client.clone(), vec![addr.to_string()], 1);
    let chosen = proposer.bootstrap(layout).await?;
    println!(
        "layout: epoch {} decided by the Paxos layout service",
        chosen.epoch
    );

    let peer = client.peer(addr);
    let epoch = chosen.epoch;
    let bootstrap = Request::Sequencer(SequencerRequest::Bootstrap {
        epoch,
        next: 0,
        stream_tails: vec![],
    });
    anyhow::ensure!(
        peer.call(epoch, bootstrap).await? == Response::Sequencer(SequencerResponse::Done),
        "sequencer bootstrap refused"
    );
    let stream = StreamId::from_name("greetings");
    let mut written = Vec::new();
    for word in ["hello", "shared", "log"] {
        let token = Request::Sequencer(SequencerRequest::Token {
            count: 1,
            streams: vec![stream],
            condition: None,
        });
        let (address, backpointer) = match peer.call(epoch, token).await? {
            Response::Sequencer(SequencerResponse::Token {
                start, previous, ..
            }) => (start, previous.first().and_then(|(_, bp)| *bp)),
            other => anyhow::bail!("token answered {other:?}"),
        };
        let write = Request::LogUnit(LogUnitRequest::Write(AddressedEntry {
            address,
            entry: Entry {
                streams: vec![StreamHeader {
                    stream,
                    backpointer,
                }],
                payload: word.as_bytes().to_vec(),
            },
        }));
        match peer.call(epoch, write).await? {
            Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Ok)) => written.push(address),
            other => anyhow::bail!("write answered {other:?}"),
        }
    }
    // Write-once: a second write to a taken address learns what is there.
    let again = Request::LogUnit(LogUnitRequest::Write(AddressedEntry {
        address: written[0],
        entry: Entry {
            streams: vec![],
            payload: b"overwrite?".to_vec(),
        },
    }));
    let refused = matches!(
        peer.call(epoch, again).await?,
        Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Overwritten(_)))
    );
    anyhow::ensure!(refused, "write-once did not hold");
    let read = Request::LogUnit(LogUnitRequest::ReadRange { from: 0, to: 3 });
    let Response::LogUnit(LogUnitResponse::Reads(reads)) = peer.call(epoch, read).await? else {
        anyhow::bail!("range read failed");
    };
    let words: Vec<String> = reads
        .iter()
        .filter_map(|(_, outcome)| match outcome {
            ReadOutcome::Data(e) => Some(String::from_utf8_lossy(&e.payload).into_owned()),
            _ => None,
        })
        .collect();
    anyhow::ensure!(words == ["hello", "shared", "log"], "read back {words:?}");
    println!(
        "log: 3 entries of stream \"greetings\" at addresses {written:?} (tokens from the sequencer, stored durably, read back: {}); a second write to address {} was refused (write-once)",
        words.join(" "),
        written[0]
    );
    Ok(())
}

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
        failure_detector: Default::default(),
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

    log_round_trip(&client, &addr, node.cluster_id()).await?;

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
