//! `corfu bench rpc`: the transport against bare quinn.
//!
//! Both sides run in this process over loopback with the same TLS (a
//! generated CA, TLS 1.3, ring), the same QUIC windows and stream count,
//! and the same frame sizes. The baseline is the best a hand-written quinn
//! program does with those frames: length-prefixed byte frames echoed by
//! the server, writes batched, a window of outstanding requests. The
//! project's side goes through everything a real request does: rkyv
//! encoding, request ids, the pending table, per-request timeouts, the
//! in-flight bound, bytecheck validation, the node's header checks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use corfu_core::node::NodeService;
use corfu_core::transport::{self, tls, ClientEndpoint, TransportConfig};
use corfu_core::types::{ClusterId, Role};
use corfu_core::wire::{
    encode_frame_default, Header, Request, RequestFrame, Response, ResponseFrame, PROTOCOL_VERSION,
};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::BenchTls;
use crate::stats::{median, percentiles, process_cpu_time, Percentiles};

/// Parameters of the benchmark.
#[derive(Debug, Clone)]
pub struct RpcBenchConfig {
    /// Requests outstanding at once in the pipelined phase.
    pub concurrency: usize,
    /// Length of each timed pipelined run.
    pub run: Duration,
    /// Number of timed runs per side (the median is reported).
    pub runs: usize,
    /// Length of the one-at-a-time latency phase, per side.
    pub latency_run: Duration,
}

impl Default for RpcBenchConfig {
    fn default() -> Self {
        RpcBenchConfig {
            concurrency: 256,
            run: Duration::from_secs(1),
            runs: 5,
            latency_run: Duration::from_secs(1),
        }
    }
}

/// What one side measured.
#[derive(Debug, Clone, Serialize)]
pub struct SideResult {
    /// Median pipelined requests per second over the runs.
    pub pipelined_rps: f64,
    /// Every run's rate.
    pub pipelined_rps_runs: Vec<f64>,
    /// Median CPU time of the whole process (client and server) per
    /// pipelined request, in microseconds: less sensitive than the rate to
    /// other load on a shared machine.
    pub cpu_us_per_request: f64,
    /// One-request-at-a-time round trips.
    pub latency: Percentiles,
}

/// The report of `corfu bench rpc`.
#[derive(Debug, Clone, Serialize)]
pub struct RpcReport {
    /// Always "rpc".
    pub bench: &'static str,
    /// Outstanding requests in the pipelined phase.
    pub concurrency: usize,
    /// Request frame bytes (prefix included), the same on both sides.
    pub request_bytes: usize,
    /// Response frame bytes (prefix included), the same on both sides.
    pub response_bytes: usize,
    /// Streams per connection, the same on both sides.
    pub streams: u16,
    /// The project's transport.
    pub corfu: SideResult,
    /// Bare quinn.
    pub bare_quinn: SideResult,
    /// corfu pipelined rate / bare quinn pipelined rate (target >= 0.8).
    pub ratio_rps: f64,
    /// corfu p50 / bare quinn p50 (target <= 1.3).
    pub ratio_p50: f64,
    /// bare quinn CPU per request / corfu CPU per request (1.0 = as cheap).
    pub ratio_cpu: f64,
}

/// Runs the benchmark.
pub async fn run(cfg: &RpcBenchConfig) -> anyhow::Result<RpcReport> {
    let material = BenchTls::generate()?;
    let transport = TransportConfig::default();
    let cluster_id = ClusterId::random();
    let ping = RequestFrame {
        header: Header {
            protocol_version: PROTOCOL_VERSION,
            cluster_id,
            epoch: 0,
            request_id: u64::MAX / 2,
        },
        body: Request::Ping,
    };
    let pong = ResponseFrame {
        request_id: u64::MAX / 2,
        body: Response::Pong,
    };
    let request_bytes = encode_frame_default(&ping)?.len();
    let response_bytes = encode_frame_default(&pong)?.len();

    // The project's transport, serving the real node service.
    let endpoint = transport::bind_server(
        ([127, 0, 0, 1], 0).into(),
        tls::server_crypto(&material.node)?,
        &transport,
    )?;
    let addr = endpoint.local_addr()?;
    let service = Arc::new(NodeService::new(
        "bench",
        cluster_id,
        &[Role::LogUnit],
        Default::default(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(transport::serve(
        endpoint,
        service,
        Arc::new(transport.clone()),
        async {
            let _ = stop_rx.await;
        },
    ));
    let client = ClientEndpoint::new(
        tls::client_crypto(&material.node.ca, None)?,
        transport.clone(),
        cluster_id,
    )?;
    let peer = client.peer(&addr.to_string());
    let answer = peer.call(0, Request::Ping).await?;
    anyhow::ensure!(answer == Response::Pong, "unexpected answer {answer:?}");
    // Bare quinn with the same TLS, windows, streams and frame sizes.
    let bare = BareQuinn::start(&material, &transport, request_bytes, response_bytes).await?;

    // Runs alternate between the two sides so that load from elsewhere on
    // this shared machine hits both alike; medians are reported.
    let mut corfu_runs = Vec::new();
    let mut bare_runs = Vec::new();
    let mut corfu_cpu = Vec::new();
    let mut bare_cpu = Vec::new();
    for _ in 0..cfg.runs {
        let cpu = process_cpu_time();
        let rps = corfu_pipelined(&peer, cfg.concurrency, cfg.run).await?;
        corfu_cpu.push(
            (process_cpu_time() - cpu).as_secs_f64() * 1e6 / (rps * cfg.run.as_secs_f64()).max(1.0),
        );
        corfu_runs.push(rps);
        let cpu = process_cpu_time();
        let rps = bare.pipelined(cfg.concurrency, cfg.run).await?;
        bare_cpu.push(
            (process_cpu_time() - cpu).as_secs_f64() * 1e6 / (rps * cfg.run.as_secs_f64()).max(1.0),
        );
        bare_runs.push(rps);
    }
    let mut corfu_samples = Vec::new();
    let mut bare_samples = Vec::new();
    let slice = cfg.latency_run / 4;
    for _ in 0..4 {
        corfu_samples.extend(corfu_latency(&peer, slice).await?);
        bare_samples.extend(bare.latency(slice).await?);
    }
    let corfu_latency = percentiles(&mut corfu_samples);
    let bare_latency = percentiles(&mut bare_samples);
    client.close();
    let _ = stop_tx.send(());
    let _ = server.await;
    bare.stop();

    let corfu = SideResult {
        pipelined_rps: median(&mut corfu_runs.clone()),
        pipelined_rps_runs: corfu_runs,
        cpu_us_per_request: median(&mut corfu_cpu),
        latency: corfu_latency,
    };
    let bare_quinn = SideResult {
        pipelined_rps: median(&mut bare_runs.clone()),
        pipelined_rps_runs: bare_runs,
        cpu_us_per_request: median(&mut bare_cpu),
        latency: bare_latency,
    };
    Ok(RpcReport {
        bench: "rpc",
        concurrency: cfg.concurrency,
        request_bytes,
        response_bytes,
        streams: transport.streams_per_connection,
        ratio_rps: corfu.pipelined_rps / bare_quinn.pipelined_rps.max(1.0),
        ratio_p50: corfu.latency.p50_us / bare_quinn.latency.p50_us.max(0.001),
        ratio_cpu: bare_quinn.cpu_us_per_request / corfu.cpu_us_per_request.max(0.001),
        corfu,
        bare_quinn,
    })
}

async fn corfu_pipelined(
    peer: &corfu_core::transport::Peer,
    concurrency: usize,
    run: Duration,
) -> anyhow::Result<f64> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mode = std::env::var("CORFU_BENCH_MODE").unwrap_or_default();
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + run;
    if mode == "one-task" {
        let mut in_flight = FuturesUnordered::new();
        for _ in 0..concurrency {
            in_flight.push(peer.call(0, Request::Ping));
        }
        while let Some(answer) = in_flight.next().await {
            anyhow::ensure!(answer? == Response::Pong, "unexpected answer");
            done.fetch_add(1, Ordering::Relaxed);
            if Instant::now() < deadline {
                in_flight.push(peer.call(0, Request::Ping));
            }
        }
        return Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64());
    }
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let peer = peer.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match peer.call(0, Request::Ping).await {
                    Ok(Response::Pong) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(other) => anyhow::bail!("unexpected answer {other:?}"),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

async fn corfu_latency(
    peer: &corfu_core::transport::Peer,
    run: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::new();
    let deadline = Instant::now() + run;
    while Instant::now() < deadline {
        let t = Instant::now();
        let answer = peer.call(0, Request::Ping).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(answer == Response::Pong, "unexpected answer {answer:?}");
    }
    Ok(samples)
}

/// A bare quinn echo server and client.
struct BareQuinn {
    server: quinn::Endpoint,
    client: quinn::Endpoint,
    conn: quinn::Connection,
    streams: usize,
    request_bytes: usize,
    response_bytes: usize,
}

impl BareQuinn {
    async fn start(
        material: &BenchTls,
        transport: &TransportConfig,
        request_bytes: usize,
        response_bytes: usize,
    ) -> anyhow::Result<BareQuinn> {
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
                        tokio::spawn(bare_echo(send, recv, response_bytes));
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
        Ok(BareQuinn {
            server,
            client,
            conn,
            streams: transport.streams_per_connection.into(),
            request_bytes,
            response_bytes,
        })
    }

    fn frame(&self) -> Vec<u8> {
        let body = self.request_bytes - 4;
        let mut f = (body as u32).to_le_bytes().to_vec();
        f.resize(self.request_bytes, 0x5A);
        f
    }

    /// A window of `concurrency` outstanding requests spread over the
    /// streams; each writer sends as many frames as the window allows in one
    /// write, each reader returns window slots as answers arrive.
    async fn pipelined(&self, concurrency: usize, run: Duration) -> anyhow::Result<f64> {
        let window = Arc::new(Semaphore::new(concurrency));
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + run;
        let mut tasks = Vec::new();
        for _ in 0..self.streams {
            let (mut send, mut recv) = self.conn.open_bi().await?;
            let frame = self.frame();
            let w = window.clone();
            let writer = tokio::spawn(async move {
                let mut buf = Vec::with_capacity(256 * 1024);
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    let first = w.acquire().await?;
                    first.forget();
                    let mut n = 1;
                    while n < 4096 {
                        match w.try_acquire() {
                            Ok(p) => {
                                p.forget();
                                n += 1;
                            }
                            Err(_) => break,
                        }
                    }
                    buf.clear();
                    for _ in 0..n {
                        buf.extend_from_slice(&frame);
                    }
                    send.write_all(&buf).await?;
                    sent += n as u64;
                }
                send.finish()?;
                anyhow::Ok(sent)
            });
            let w = window.clone();
            let done = done.clone();
            let response_bytes = self.response_bytes;
            let reader = tokio::spawn(async move {
                let mut partial = 0usize;
                while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
                    partial += chunk.bytes.len();
                    let n = partial / response_bytes;
                    partial %= response_bytes;
                    if n > 0 {
                        if Instant::now() < deadline {
                            done.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        w.add_permits(n);
                    }
                }
                anyhow::Ok(())
            });
            tasks.push((writer, reader));
        }
        for (writer, reader) in tasks {
            writer.await??;
            reader.await??;
        }
        Ok(done.load(Ordering::Relaxed) as f64 / run.as_secs_f64())
    }

    async fn latency(&self, run: Duration) -> anyhow::Result<Vec<Duration>> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        let frame = self.frame();
        let mut answer = vec![0u8; self.response_bytes];
        let mut samples = Vec::new();
        let deadline = Instant::now() + run;
        while Instant::now() < deadline {
            let t = Instant::now();
            send.write_all(&frame).await?;
            recv.read_exact(&mut answer).await?;
            samples.push(t.elapsed());
        }
        send.finish()?;
        Ok(samples)
    }

    fn stop(self) {
        self.conn.close(0u32.into(), b"done");
        self.client.close(0u32.into(), b"done");
        self.server.close(0u32.into(), b"done");
    }
}

/// Echo server side: cuts length-prefixed frames and answers each with a
/// response frame, all answers of a read in one write.
async fn bare_echo(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    response_bytes: usize,
) {
    let mut response = ((response_bytes - 4) as u32).to_le_bytes().to_vec();
    response.resize(response_bytes, 0xA5);
    let mut buffered: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut out = Vec::with_capacity(64 * 1024);
    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
        buffered.extend_from_slice(&chunk.bytes);
        let mut at = 0;
        out.clear();
        while buffered.len() - at >= 4 {
            let len = u32::from_le_bytes([
                buffered[at],
                buffered[at + 1],
                buffered[at + 2],
                buffered[at + 3],
            ]) as usize;
            if buffered.len() - at < 4 + len {
                break;
            }
            at += 4 + len;
            out.extend_from_slice(&response);
        }
        buffered.drain(..at);
        if !out.is_empty() && send.write_all(&out).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}
