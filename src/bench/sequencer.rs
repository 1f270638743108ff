//! `corfu bench sequencer`: tokens/s from a sequencer node over QUIC, with
//! batched requests (`count` 64) and with single-token requests pipelined
//! from many tasks. The baseline, measured in the same run against the same
//! node and with the same concurrency, is `Ping`: the transport's ceiling
//! for a small request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corfu_core::node::{self, NodeConfig};
use corfu_core::transport::{tls, ClientEndpoint, Peer, TransportConfig};
use corfu_core::types::{Role, StreamId};
use corfu_core::wire::sequencer::{SequencerRequest, SequencerResponse};
use corfu_core::wire::{Request, Response};
use serde::Serialize;

use crate::stats::median;

/// Parameters of the benchmark.
#[derive(Debug, Clone)]
pub struct SequencerBenchConfig {
    /// Client tasks for batched tokens.
    pub batched_tasks: usize,
    /// Addresses per batched token request.
    pub batch: u32,
    /// Client tasks (outstanding requests) for single tokens and pings.
    pub single_tasks: usize,
    /// Length of each timed run.
    pub run: Duration,
    /// Runs per measurement (the median is reported).
    pub runs: usize,
}

impl Default for SequencerBenchConfig {
    fn default() -> Self {
        SequencerBenchConfig {
            batched_tasks: 16,
            batch: 64,
            single_tasks: 256,
            run: Duration::from_secs(1),
            runs: 3,
        }
    }
}

/// The report of `corfu bench sequencer`.
#[derive(Debug, Clone, Serialize)]
pub struct SequencerReport {
    /// Always "sequencer".
    pub bench: &'static str,
    /// Addresses per batched request.
    pub batch: u32,
    /// Tasks issuing batched requests.
    pub batched_tasks: usize,
    /// Tasks issuing single-token requests (and pings).
    pub single_tasks: usize,
    /// Tokens granted per second with batched requests (target >= 2M).
    pub batched_tokens_per_s: f64,
    /// Single-token requests per second (target >= 300K).
    pub single_tokens_per_s: f64,
    /// Pings per second, same node, same concurrency (the ceiling).
    pub ping_per_s: f64,
    /// single tokens/s / pings/s.
    pub ratio_single_to_ping: f64,
}

type MakeRequest = Arc<dyn Fn(usize) -> Request + Send + Sync>;

async fn timed(
    tasks: usize,
    run: Duration,
    peer: &Peer,
    make: MakeRequest,
    weight: u64,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + run;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (peer, done, make) = (peer.clone(), done.clone(), make.clone());
        handles.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match peer.call(1, make(t)).await? {
                    Response::Pong | Response::Sequencer(SequencerResponse::Token { .. }) => {
                        done.fetch_add(weight, Ordering::Relaxed);
                    }
                    other => anyhow::bail!("unexpected answer {other:?}"),
                }
            }
            Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64())
}

fn stream(t: usize) -> Vec<StreamId> {
    vec![StreamId((t % 8) as u128 + 1)]
}

/// Runs the benchmark.
pub async fn run(cfg: &SequencerBenchConfig) -> anyhow::Result<SequencerReport> {
    let dir = tempfile::tempdir()?;
    let node = node::start(NodeConfig::local(
        "bench",
        dir.path(),
        vec![Role::Sequencer],
    ))
    .await?;
    let roots = tls::load_certs(node.ca_cert())?;
    let client = ClientEndpoint::new(
        tls::client_crypto(&roots, None)?,
        TransportConfig::default(),
        node.cluster_id(),
    )?;
    let peer = client.peer(&node.local_addr().to_string());
    // A sequencer is bootstrapped by the incarnation that answered its seal.
    let sealed = peer
        .call(1, Request::Sequencer(SequencerRequest::Seal { epoch: 1 }))
        .await?;
    let Response::Sequencer(SequencerResponse::Sealed { incarnation, .. }) = sealed else {
        anyhow::bail!("seal answered {sealed:?}");
    };
    let boot = peer
        .call(
            1,
            Request::Sequencer(SequencerRequest::Bootstrap {
                epoch: 1,
                incarnation,
                next: 0,
                bound: u64::MAX,
                stream_tails: vec![],
                // No lease: the benchmark's sequencer is alone.
                layout_servers: vec![],
            }),
        )
        .await?;
    anyhow::ensure!(
        boot == Response::Sequencer(SequencerResponse::Done),
        "bootstrap answered {boot:?}"
    );

    let batch = cfg.batch;
    let mut batched = Vec::new();
    let mut single = Vec::new();
    let mut ping = Vec::new();
    for _ in 0..cfg.runs {
        let batched_request: MakeRequest = Arc::new(move |t| token(batch, t));
        batched.push(
            timed(
                cfg.batched_tasks,
                cfg.run,
                &peer,
                batched_request,
                batch.into(),
            )
            .await?,
        );
        single.push(
            timed(
                cfg.single_tasks,
                cfg.run,
                &peer,
                Arc::new(|t| token(1, t)),
                1,
            )
            .await?,
        );
        ping.push(
            timed(
                cfg.single_tasks,
                cfg.run,
                &peer,
                Arc::new(|_| Request::Ping),
                1,
            )
            .await?,
        );
    }
    client.close();
    node.shutdown().await;
    let single_tokens_per_s = median(&mut single);
    let ping_per_s = median(&mut ping);
    Ok(SequencerReport {
        bench: "sequencer",
        batch: if matches!(batch, 16 | 64 | 256) {
            batch
        } else {
            64
        },
        batched_tasks: cfg.batched_tasks,
        single_tasks: cfg.single_tasks,
        batched_tokens_per_s: median(&mut batched),
        single_tokens_per_s,
        ping_per_s,
        ratio_single_to_ping: single_tokens_per_s / ping_per_s.max(1.0),
    })
}

fn token(count: u32, t: usize) -> Request {
    Request::Sequencer(SequencerRequest::Token {
        count,
        streams: stream(t),
        condition: None,
    })
}
