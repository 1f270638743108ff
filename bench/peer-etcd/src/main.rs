//! `peer-etcd`: the etcd peer benchmark of corfu (issue #8, item 3).
//!
//! Starts a 3-member etcd cluster on 127.0.0.1 (free ports, its own
//! temporary data directories, etcd's default `fdatasync` durability),
//! waits until it has a leader and serves a put, and measures through the
//! `etcd-client` crate, with corfu's value size and client counts:
//!
//! - the disk's 4 KiB append + `fdatasync` latency, the baseline corfu's
//!   benchmarks measure too (the floor under any durable write);
//! - puts from 1 client (sequential) and from each `--clients` count, one
//!   connection per client, each awaiting one put at a time;
//! - linearizable gets (a quorum read per request) from `--get-clients`.
//!
//! It prints a table with the ratios to the 1-client put and to the disk,
//! or with `--json` one JSON object per measurement on stdout (the table
//! then goes to stderr). The cluster is stopped and its directories removed
//! at the end, after an error, and on Ctrl-C or SIGTERM.
//!
//! This crate is outside corfu's workspace on purpose: `etcd-client` needs
//! `protoc` to build. `run.sh` beside it installs etcd and protoc when
//! missing and runs this binary.

mod cluster;
mod load;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde::Serialize;

use cluster::EtcdCluster;
use load::{Op, Phase};

/// Members of the cluster: the size corfu's local benchmarks use.
const MEMBERS: usize = 3;
/// Upper bound on any client count (each client is a connection).
const CLIENTS_MAX: usize = 1_024;
/// Upper bound on the value size; etcd's default request limit is 1.5 MiB.
const VALUE_BYTES_MAX: usize = 1 << 20;
/// Upper bound on one timed run.
const SECONDS_MAX: f64 = 600.0;
/// Upper bound on one warm-up.
const WARMUP_SECONDS_MAX: f64 = 60.0;
/// Length of the disk baseline.
const FDATASYNC_RUN_MS: u64 = 1_000;

/// Which members the clients send their requests to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// All members, balanced by the client (followers forward writes to
    /// the leader): what an etcd client configured with the cluster does.
    All,
    /// The leader only: etcd's best case, no forwarding hop.
    Leader,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::All => "all",
            Target::Leader => "leader",
        }
    }
}

/// The etcd peer benchmark: a 3-member etcd cluster on loopback, measured
/// with corfu's value size and client counts.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Client counts of the put runs (a 1-client run is always measured).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Value bytes of every put.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Length of each measured run, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up before each measured run, in seconds (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    /// Client count of the get run.
    #[arg(long, default_value_t = 16)]
    get_clients: usize,
    /// Serializable gets (local, possibly stale) instead of linearizable.
    #[arg(long)]
    serializable: bool,
    /// Members the clients talk to.
    #[arg(long, value_enum, default_value_t = Target::All)]
    target: Target,
    /// One JSON object per measurement on stdout; the table goes to stderr.
    #[arg(long)]
    json: bool,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Where the temporary data directories go (default: the system's
    /// temporary directory, the disk corfu's benchmarks use).
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        for &c in self.clients.iter().chain([&self.get_clients]) {
            anyhow::ensure!(
                (1..=CLIENTS_MAX).contains(&c),
                "client counts must be in 1..={CLIENTS_MAX}, got {c}"
            );
        }
        anyhow::ensure!(
            (1..=VALUE_BYTES_MAX).contains(&self.value_bytes),
            "--value-bytes must be in 1..={VALUE_BYTES_MAX}"
        );
        anyhow::ensure!(
            self.seconds > 0.0 && self.seconds <= SECONDS_MAX,
            "--seconds must be in (0, {SECONDS_MAX}]"
        );
        anyhow::ensure!(
            (0.0..=WARMUP_SECONDS_MAX).contains(&self.warmup_seconds),
            "--warmup-seconds must be in [0, {WARMUP_SECONDS_MAX}]"
        );
        Ok(())
    }

    /// The put client counts in order: 1 first, then the others once each.
    fn put_clients(&self) -> Vec<usize> {
        let mut out = vec![1];
        for &c in &self.clients {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

/// One measurement line of `--json`.
#[derive(Debug, Serialize)]
struct Row {
    op: &'static str,
    clients: usize,
    value_bytes: usize,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    seconds: f64,
    etcd_version: String,
    target: &'static str,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Row {
    fn new(op: &'static str, clients: usize, value_bytes: usize, p: &Phase, h: &Header) -> Row {
        Row {
            op,
            clients,
            value_bytes,
            ops_per_sec: round1(p.ops_per_sec),
            p50_us: round1(p.latency.p50_us),
            p99_us: round1(p.latency.p99_us),
            seconds: (p.seconds * 1000.0).round() / 1000.0,
            etcd_version: h.version.clone(),
            target: h.target.name(),
        }
    }
}

/// What the table's header says.
struct Header {
    version: String,
    target: Target,
}

/// Where the table goes: stdout, or stderr under `--json`.
struct Out {
    json: bool,
}

impl Out {
    fn table(&self, line: &str) {
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    fn row(&self, row: &Row, ratio: Option<f64>) -> anyhow::Result<()> {
        let ratio = ratio.map(|r| format!("{r:>10.2}")).unwrap_or_default();
        let line = format!(
            "  {:<18} {:>7} {:>7} {:>11.0} {:>10.1} {:>10.1} {:>7.2}  {ratio}",
            row.op,
            row.clients,
            row.value_bytes,
            row.ops_per_sec,
            row.p50_us,
            row.p99_us,
            row.seconds
        );
        self.table(line.trim_end());
        if self.json {
            let mut stdout = std::io::stdout().lock();
            serde_json::to_writer(&mut stdout, row)?;
            writeln!(stdout)?;
            stdout.flush()?;
        }
        Ok(())
    }
}

/// `etcd --version`'s first line, to fail early with a clear message when
/// etcd is missing.
fn etcd_version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running `{} --version` (is etcd installed? run.sh installs it)",
                bin.display()
            )
        })?;
    anyhow::ensure!(out.status.success(), "`{} --version` failed", bin.display());
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .next()
        .unwrap_or("etcd (unknown version)")
        .trim()
        .to_string())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let v: Vec<&str> = s.split_whitespace().take(3).collect();
            (v.len() == 3).then(|| v.join(" "))
        })
        .unwrap_or_else(|| String::from("unknown"))
}

/// The measured part; the cluster is started and stopped by `main`.
async fn bench(
    args: &Args,
    cluster: &mut EtcdCluster,
    disk: &Phase,
    out: &Out,
) -> anyhow::Result<()> {
    let warmup = Duration::from_secs_f64(args.warmup_seconds);
    let run = Duration::from_secs_f64(args.seconds);
    let health = load::wait_healthy(cluster).await?;
    let endpoints = match args.target {
        Target::All => cluster.client_urls(),
        Target::Leader => vec![health.leader_url.clone()],
    };
    let header = Header {
        version: health.version.clone(),
        target: args.target,
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    out.table(&format!(
        "peer-etcd: etcd {} x {MEMBERS} members on 127.0.0.1 (leader {}), default fsync, clients -> {} member(s)",
        health.version,
        health.leader_url,
        endpoints.len()
    ));
    out.table(&format!(
        "  {:.1} s per run after {:.1} s warm-up; one connection per client, one request in flight each; {cores} cores, load average {} at start",
        args.seconds,
        args.warmup_seconds,
        load_average()
    ));
    out.table(&format!(
        "  {:<18} {:>7} {:>7} {:>11} {:>10} {:>10} {:>7}  {:>10}",
        "op", "clients", "value B", "ops/s", "p50 us", "p99 us", "seconds", "x 1 client"
    ));
    out.row(&Row::new("fdatasync_4k", 1, 4096, disk, &header), None)?;

    let mut single: Option<Phase> = None;
    let mut puts = Vec::new();
    for clients in args.put_clients() {
        let p = load::phase(&endpoints, clients, Op::Put, args.value_bytes, warmup, run).await?;
        cluster.check_running()?;
        let base = *single.get_or_insert(p);
        out.row(
            &Row::new("put", clients, args.value_bytes, &p, &header),
            Some(p.ops_per_sec / base.ops_per_sec),
        )?;
        puts.push((clients, p));
    }

    load::fill_get_keys(&endpoints, args.value_bytes).await?;
    let get_op = Op::Get {
        serializable: args.serializable,
    };
    let get = load::phase(
        &endpoints,
        args.get_clients,
        get_op,
        args.value_bytes,
        warmup,
        run,
    )
    .await?;
    cluster.check_running()?;
    let get_name = if args.serializable {
        "get_serializable"
    } else {
        "get_linearizable"
    };
    let single = single.context("no 1-client put was measured")?;
    out.row(
        &Row::new(get_name, args.get_clients, args.value_bytes, &get, &header),
        Some(get.ops_per_sec / single.ops_per_sec),
    )?;

    if disk.latency.p50_us > 0.0 {
        out.table(&format!(
            "  1-client put p50 / disk 4 KiB append+fdatasync p50: {:.2}",
            single.latency.p50_us / disk.latency.p50_us
        ));
    }
    if let Some((_, p)) = puts.iter().find(|(c, _)| *c == args.get_clients) {
        out.table(&format!(
            "  {get_name} / put ops/s at {} clients: {:.2}",
            args.get_clients,
            get.ops_per_sec / p.ops_per_sec
        ));
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => { r?; Ok("Ctrl-C") }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.check()?;
    let out = Out { json: args.json };
    eprintln!("peer-etcd: {}", etcd_version(&args.etcd)?);

    // The disk baseline first, on the disk the data directories go to,
    // while no etcd is running.
    let disk = {
        let probe = match args.dir.as_deref() {
            Some(p) => tempfile::tempdir_in(p),
            None => tempfile::tempdir(),
        }
        .context("creating the fdatasync directory")?;
        load::raw_fdatasync(probe.path(), Duration::from_millis(FDATASYNC_RUN_MS))?
    };

    // Started on the main thread, which outlives the members (see
    // `EtcdCluster::start`); dropped after the runtime, on every path.
    let mut cluster = EtcdCluster::start(&args.etcd, args.dir.as_deref(), MEMBERS)?;
    eprintln!(
        "peer-etcd: started {MEMBERS} members in {}",
        cluster.dir().display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        tokio::select! {
            r = bench(&args, &mut cluster, &disk, &out) => r,
            s = shutdown_signal() => Err(anyhow::anyhow!("interrupted ({})", s?)),
        }
    });
    // Stop the client tasks first, then etcd, then remove the directories.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(cluster);
    eprintln!("peer-etcd: etcd stopped, data directories removed");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_clients_start_with_one_and_do_not_repeat() {
        let args = Args::parse_from(["peer-etcd", "--clients", "16,1,64,16"]);
        assert_eq!(args.put_clients(), vec![1, 16, 64]);
    }

    #[test]
    fn defaults_are_corfus_benchmark_shape() {
        let args = Args::parse_from(["peer-etcd"]);
        assert_eq!(args.clients, vec![1, 16, 64]);
        assert_eq!(args.value_bytes, 64);
        assert_eq!(args.get_clients, 16);
        assert!(!args.serializable);
        assert!(args.check().is_ok());
        assert!(Args::parse_from(["peer-etcd", "--clients", "0"])
            .check()
            .is_err());
    }
}
