//! The `corfu` command: runs nodes, talks to clusters, runs benchmarks.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use corfu::bench;
use corfu::core::client_config::ClientConfig;
use corfu::core::node::{self, NodeConfig};
use corfu::core::transport::tls::{self, ClientTlsConfig};
use corfu::core::transport::{ClientEndpoint, TransportConfig};
use corfu::core::types::ClusterId;
use corfu::core::wire::{Request, Response};

/// corfu: a shared log (CORFU) with replicated objects (Tango), over QUIC.
#[derive(Parser, Debug)]
#[command(name = "corfu", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node: one QUIC endpoint hosting the roles its config names.
    Node {
        /// The node's config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Ping a node and print who it is.
    Ping(PingArgs),
    /// The embedded demo (what `corfu` with no command runs): a 3-node
    /// cluster, two clients running transactions over a queue, a map and a
    /// counter, one node killed.
    Quickstart {
        /// Keep the cluster (configs, data, node logs) here instead of a
        /// temporary directory; it must not hold a cluster already.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Local clusters on loopback: write their configs, run them, restart
    /// a node.
    Local {
        #[command(subcommand)]
        which: corfu::local::LocalCommand,
    },
    /// The layout: show it, seal the epoch, remove a node.
    Layout {
        #[command(subcommand)]
        which: corfu::layout_cli::LayoutCommand,
    },
    /// Cluster administration (bootstrap).
    Cluster {
        #[command(subcommand)]
        which: corfu::cluster::ClusterCommand,
    },
    /// The shared log: append, read, tail, fill, trim, read a stream.
    Log {
        #[command(subcommand)]
        which: corfu::log_cli::LogCommand,
    },
    /// Replicated objects: map, counter, queue, register, set.
    #[command(flatten)]
    Object(corfu::object_cli::ObjectCommand),
    /// Benchmarks: each prints what it measured and the ratio to a baseline
    /// measured in the same run.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(clap::Args, Debug)]
struct PingArgs {
    /// A client config (cluster.toml); pings its first layout server unless
    /// --addr is given.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// The node's address (host:port).
    #[arg(long)]
    addr: Option<String>,
    /// The cluster CA certificate (PEM), when no --cluster is given.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), for nodes requiring client auth.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Number of pings.
    #[arg(long, default_value_t = 3)]
    count: u32,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// A sequencer node over QUIC: batched tokens/s and single-token
    /// requests/s, against pings to the same node.
    Sequencer {
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Addresses per batched request.
        #[arg(long, default_value_t = 64)]
        batch: u32,
        /// Seconds per timed run.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Runs per measurement (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// One log unit node over QUIC: batched writes/s (sync always and
    /// never), write latency, range reads/s, index rebuild rate and memory.
    Logunit {
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Concurrent client tasks.
        #[arg(long, default_value_t = 16)]
        tasks: usize,
        /// Entries per write batch.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Seconds per timed phase.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Entries written for the rebuild measurement.
        #[arg(long, default_value_t = 1_000_000)]
        rebuild_entries: u64,
    },
    /// The shared log end to end on a local cluster: appends/s with one
    /// task and with many, latency, and playback through the log client.
    Append {
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Nodes of the local cluster.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Stripes (default: one).
        #[arg(long)]
        stripes: Option<usize>,
        /// Log units per chain (default: every node in one chain).
        #[arg(long)]
        chain: Option<usize>,
        /// The log units' durability policy: always, batch or never.
        #[arg(long, default_value = "always")]
        sync: String,
        /// Tasks of the concurrent phases.
        #[arg(long, default_value_t = 64)]
        tasks: usize,
        /// Entries per append_batch call in the batch phase.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Seconds per timed phase.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// The client's batches in flight (its `batches_in_flight_max`).
        #[arg(long)]
        batches_in_flight: Option<u32>,
    },
    /// Replicated objects on a local 3-node cluster: map puts/s (against
    /// plain appends at the same concurrency), linearizable gets/s, and
    /// two-object transactions/s at low and high contention.
    Objects {
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// The log units' durability policy: always, batch or never.
        #[arg(long, default_value = "always")]
        sync: String,
        /// Concurrencies of the put phases, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        put_tasks: Vec<usize>,
        /// Tasks of the get phase.
        #[arg(long, default_value_t = 16)]
        get_tasks: usize,
        /// Tasks of the transaction phases.
        #[arg(long, default_value_t = 64)]
        txn_tasks: usize,
        /// Seconds per timed phase.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// The transport against bare quinn: pipelined small requests/s and
    /// one-at-a-time round-trip latency.
    Rpc {
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Requests outstanding at once in the pipelined phase.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// Seconds per timed run.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Timed runs per side, alternating between the sides (the median
        /// is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Large entries read back through `read_range` (1 MiB entries by
    /// default), against the transport's bulk rate (bare quinn, same TLS
    /// and windows, the same bytes on one stream).
    Read {
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Entries written, then read by each run.
        #[arg(long, default_value_t = 64)]
        entries: usize,
        /// Payload bytes per entry.
        #[arg(long, default_value_t = 1 << 20)]
        entry_bytes: usize,
        /// Timed runs per side, alternating (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Every benchmark in turn (rpc, logunit, sequencer, append, objects),
    /// then etcd 3.4 with the same value size and client counts
    /// (bench/peer-etcd/run.sh); --report DIR writes report.md with every
    /// figure, its target, the corfu/etcd ratios and SVG plots.
    All(bench::all::AllArgs),
}

fn main() {
    let cli = Cli::parse();
    let default_filter = match &cli.command {
        Some(Command::Object(_)) => corfu::object_cli::LOG_FILTER_DEFAULT,
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        // One line: the error and its causes.
        let mut line = format!("error: {e}");
        for cause in e.chain().skip(1) {
            line.push_str(&format!(": {cause}"));
        }
        eprintln!("{line}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Quickstart { dir: None }) {
        Command::Node { config } => run_node(config).await,
        Command::Ping(args) => ping(args).await,
        Command::Quickstart { dir } => {
            corfu::quickstart::run(corfu::quickstart::QuickstartOptions { dir, exe: None }).await
        }
        Command::Local { which } => corfu::local::run_local(which).await,
        Command::Cluster { which } => corfu::cluster::run_cluster(which).await,
        Command::Layout { which } => corfu::layout_cli::run(which).await,
        Command::Log { which } => corfu::log_cli::run(which).await,
        Command::Object(which) => {
            if corfu::object_cli::run(which).await? == corfu::object_cli::Outcome::Nothing {
                // Stdout is flushed and the client closed: nothing is lost.
                std::process::exit(corfu::object_cli::EXIT_NOTHING);
            }
            Ok(())
        }
        Command::Bench { which } => {
            match which {
                BenchCommand::Sequencer {
                    json,
                    batch,
                    seconds,
                    runs,
                } => {
                    anyhow::ensure!(
                        seconds > 0.0 && seconds.is_finite(),
                        "--seconds must be positive"
                    );
                    anyhow::ensure!(batch > 0, "--batch must be positive");
                    anyhow::ensure!(runs > 0, "--runs must be positive");
                    let cfg = bench::sequencer::SequencerBenchConfig {
                        batch,
                        run: Duration::from_secs_f64(seconds),
                        runs,
                        ..Default::default()
                    };
                    let r = bench::sequencer::run(&cfg).await?;
                    if json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        println!("sequencer: batches of {} from {} tasks; single tokens and pings from {} tasks", r.batch, r.batched_tasks, r.single_tasks);
                        println!(
                            "  batched tokens  {:>10.0}/s (target >= 2000000)",
                            r.batched_tokens_per_s
                        );
                        println!("  single tokens   {:>10.0}/s (target >= 300000)   pings {:>10.0}/s   ratio {:.2}", r.single_tokens_per_s, r.ping_per_s, r.ratio_single_to_ping);
                    }
                    Ok(())
                }
                BenchCommand::Logunit {
                    json,
                    tasks,
                    batch,
                    seconds,
                    rebuild_entries,
                } => {
                    anyhow::ensure!(
                        seconds > 0.0 && seconds.is_finite(),
                        "--seconds must be positive"
                    );
                    anyhow::ensure!(
                        tasks > 0 && batch > 0,
                        "--tasks and --batch must be positive"
                    );
                    let cfg = bench::logunit::LogUnitBenchConfig {
                        tasks,
                        batch,
                        payload_bytes: 64,
                        run: Duration::from_secs_f64(seconds),
                        rebuild_entries,
                    };
                    let r = bench::logunit::run(&cfg).await?;
                    if json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        println!(
                            "logunit: {} tasks, batches of {}, {} B payloads",
                            r.tasks, r.batch, r.payload_bytes
                        );
                        println!("  batched writes  sync=always {:>10.0}/s (target >= 250000)   sync=never {:>10.0}/s", r.writes_per_s_sync_always, r.writes_per_s_sync_never);
                        println!("  group commit    {:>10.0} fdatasync/s", r.syncs_per_s);
                        println!("  single writer   p50 {:>7.1} us p99 {:>7.1} us   raw 4 KiB append+fdatasync p50 {:>7.1} us (ratio {:.2})", r.single_write_latency.p50_us, r.single_write_latency.p99_us, r.raw_fdatasync_4k.p50_us, r.ratio_single_write_p50_to_raw_sync);
                        println!("  range reads     {:>10.0} entries/s", r.reads_per_s);
                        println!("  index rebuild   {:>10.0} entries/s over {} entries (target >= 1000000)", r.rebuild_entries_per_s, r.rebuild_entries);
                        println!(
                            "  index memory    {:>10.1} bytes/entry (target <= 32)",
                            r.index_bytes_per_entry
                        );
                    }
                    Ok(())
                }
                BenchCommand::Append {
                    json,
                    nodes,
                    stripes,
                    chain,
                    sync,
                    tasks,
                    batch,
                    seconds,
                    batches_in_flight,
                } => {
                    anyhow::ensure!(
                        seconds > 0.0 && seconds.is_finite(),
                        "--seconds must be positive"
                    );
                    anyhow::ensure!(
                        tasks > 0 && batch > 0 && nodes > 0,
                        "--nodes, --tasks and --batch must be positive"
                    );
                    let cfg = bench::append::AppendBenchConfig {
                        nodes,
                        shape: corfu::cluster::Shape { stripes, chain },
                        sync: corfu::local::parse_sync(&sync).map_err(anyhow::Error::msg)?,
                        tasks,
                        batch,
                        payload_bytes: 64,
                        run: Duration::from_secs_f64(seconds),
                        client: corfu::core::client::LogClientOptions {
                            batches_in_flight_max: batches_in_flight.unwrap_or(
                                corfu::core::client::LogClientOptions::default()
                                    .batches_in_flight_max,
                            ),
                            ..Default::default()
                        },
                    };
                    cfg.client.validate().map_err(anyhow::Error::msg)?;
                    let r = bench::append::run(&cfg).await?;
                    if json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        print_append(&r);
                    }
                    Ok(())
                }
                BenchCommand::Objects {
                    json,
                    sync,
                    put_tasks,
                    get_tasks,
                    txn_tasks,
                    seconds,
                } => {
                    anyhow::ensure!(
                        seconds > 0.0 && seconds.is_finite(),
                        "--seconds must be positive"
                    );
                    anyhow::ensure!(
                        put_tasks.iter().all(|&t| t > 0) && get_tasks > 0 && txn_tasks > 0,
                        "--put-tasks, --get-tasks and --txn-tasks must be positive"
                    );
                    let cfg = bench::objects::ObjectsBenchConfig {
                        sync: corfu::local::parse_sync(&sync).map_err(anyhow::Error::msg)?,
                        put_tasks,
                        get_tasks,
                        txn_tasks,
                        run: Duration::from_secs_f64(seconds),
                        ..Default::default()
                    };
                    let r = bench::objects::run(&cfg).await?;
                    if json {
                        println!("{}", serde_json::to_string(&r)?);
                    } else {
                        bench::objects::print(&r);
                    }
                    Ok(())
                }
                BenchCommand::Rpc {
                    json,
                    concurrency,
                    seconds,
                    runs,
                } => {
                    anyhow::ensure!(
                        seconds > 0.0 && seconds.is_finite(),
                        "--seconds must be positive"
                    );
                    anyhow::ensure!(concurrency > 0, "--concurrency must be positive");
                    anyhow::ensure!(runs > 0, "--runs must be positive");
                    let cfg = bench::rpc::RpcBenchConfig {
                        concurrency,
                        run: Duration::from_secs_f64(seconds),
                        runs,
                        latency_run: Duration::from_secs_f64(seconds * 2.0),
                    };
                    let report = bench::rpc::run(&cfg).await?;
                    if json {
                        println!("{}", serde_json::to_string(&report)?);
                    } else {
                        print_rpc(&report);
                    }
                    Ok(())
                }
                BenchCommand::Read {
                    json,
                    entries,
                    entry_bytes,
                    runs,
                } => {
                    anyhow::ensure!(entries > 0, "--entries must be positive");
                    anyhow::ensure!(runs > 0, "--runs must be positive");
                    let cfg = bench::read::ReadBenchConfig {
                        entries,
                        entry_bytes,
                        runs,
                    };
                    let report = bench::read::run(&cfg).await?;
                    if json {
                        println!("{}", serde_json::to_string(&report)?);
                    } else {
                        bench::read::print(&report);
                    }
                    Ok(())
                }
                BenchCommand::All(args) => bench::all::command(args).await,
            }
        }
    }
}

fn print_append(r: &bench::append::AppendReport) {
    println!(
        "append: {} nodes, {} stripe(s) x chain of {}, sync={}, {} B entries",
        r.nodes, r.stripes, r.chain, r.sync, r.payload_bytes
    );
    for (name, p, target) in [
        ("1 task", &r.single, ""),
        ("concurrent", &r.concurrent, " (target >= 200000)"),
        ("batched", &r.batched, ""),
    ] {
        println!(
            "  {name:<10} {:>3} tasks x {:>3}/call {:>10.0} appends/s{target}   p50 {:>8.1} us p99 {:>8.1} us",
            p.tasks, p.entries_per_call, p.appends_per_s, p.latency.p50_us, p.latency.p99_us
        );
    }
    println!(
        "  chain floor {} x raw 4 KiB append+fdatasync p50 {:.1} us; 1-task p50 ratio {:.2}",
        r.chain, r.raw_fdatasync_4k.p50_us, r.ratio_single_p50_to_chain_floor
    );
    println!(
        "  tail query {:>10.0} stream-tail queries/s from {} tasks",
        r.stream_tail_queries_per_s, r.concurrent.tasks
    );
    println!(
        "  playback   {:>10.0} entries/s over {} entries (target >= 1000000)   raw range reads {:>10.0}/s   ratio {:.2}",
        r.playback_entries_per_s, r.playback_entries, r.raw_range_reads_per_s, r.ratio_playback_to_raw
    );
}

fn print_rpc(r: &bench::rpc::RpcReport) {
    println!(
        "rpc: {} outstanding requests, {} B requests / {} B responses, {} streams per connection",
        r.concurrency, r.request_bytes, r.response_bytes, r.streams
    );
    println!(
        "  pipelined  corfu {:>10.0} req/s   bare quinn {:>10.0} req/s   ratio {:.2} (target >= 0.80)",
        r.corfu.pipelined_rps, r.bare_quinn.pipelined_rps, r.ratio_rps
    );
    println!(
        "  cpu        corfu {:>6.2} us/req      bare quinn {:>6.2} us/req      ratio {:.2} (process CPU, client + server)",
        r.corfu.cpu_us_per_request, r.bare_quinn.cpu_us_per_request, r.ratio_cpu
    );
    println!(
        "  one-by-one corfu p50 {:>6.1} us p99 {:>6.1} us   bare quinn p50 {:>6.1} us p99 {:>6.1} us   p50 ratio {:.2} (target <= 1.30)",
        r.corfu.latency.p50_us, r.corfu.latency.p99_us, r.bare_quinn.latency.p50_us, r.bare_quinn.latency.p99_us, r.ratio_p50
    );
}

async fn run_node(path: PathBuf) -> anyhow::Result<()> {
    let config = NodeConfig::load(&path)?;
    let mut node = node::start(config).await?;
    println!("node serving on {}", node.local_addr());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = node.wait() => anyhow::bail!("the node stopped unexpectedly"),
    }
    node.shutdown().await;
    Ok(())
}

async fn ping(args: PingArgs) -> anyhow::Result<()> {
    let (endpoint, addr) = match (&args.cluster, &args.ca) {
        (Some(path), _) => {
            let mut cfg = ClientConfig::load(path)?;
            if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
                cfg.tls.cert = Some(cert.clone());
                cfg.tls.key = Some(key.clone());
            }
            let addr = args
                .addr
                .clone()
                .unwrap_or_else(|| cfg.layout_servers[0].clone());
            (cfg.endpoint()?, addr)
        }
        (None, Some(ca)) => {
            let addr = args
                .addr
                .clone()
                .context("--addr is required without --cluster")?;
            let tls_cfg = ClientTlsConfig {
                ca_cert: ca.clone(),
                cert: args.cert.clone(),
                key: args.key.clone(),
            };
            let (roots, identity) = tls::load_client_tls(&tls_cfg)?;
            let crypto = tls::client_crypto(&roots, identity.as_ref())?;
            (
                ClientEndpoint::new(crypto, TransportConfig::default(), ClusterId::ANY)?,
                addr,
            )
        }
        (None, None) => anyhow::bail!("give --cluster FILE, or --addr HOST:PORT with --ca FILE"),
    };
    let peer = endpoint.peer(&addr);
    let info = match peer.call(0, Request::Info).await? {
        Response::Info(info) => info,
        Response::Error(e) => anyhow::bail!("{addr}: {e}"),
        other => anyhow::bail!("{addr}: unexpected answer {other:?}"),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({"addr": addr, "node_id": info.node_id, "cluster_id": info.cluster_id.to_string(),
                "roles": info.roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "protocol_version": info.protocol_version, "software_version": info.software_version})
        );
    } else {
        println!(
            "{addr}: node {} of cluster {}, roles {:?}, protocol v{}",
            info.node_id, info.cluster_id, info.roles, info.protocol_version
        );
    }
    for seq in 0..args.count {
        let t = std::time::Instant::now();
        let answer = peer.call(0, Request::Ping).await?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        match answer {
            Response::Pong => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"addr": addr, "seq": seq, "rtt_us": us.round()})
                    );
                } else {
                    println!("pong from {addr}: seq {seq} time {us:.0} us");
                }
            }
            Response::Error(e) => anyhow::bail!("{addr}: {e}"),
            other => anyhow::bail!("{addr}: unexpected answer {other:?}"),
        }
    }
    endpoint.close();
    Ok(())
}
