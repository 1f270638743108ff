//! `corfu bench all`: every benchmark of the project in turn (rpc,
//! logunit, sequencer, append, objects), then the etcd peer benchmark
//! (`bench/peer-etcd/run.sh`) with the same value size and client counts
//! as the append and map-put phases, all in one run on one machine; the
//! results, their targets and the corfu / etcd ratios go into a report
//! (see [`super::report`]).
//!
//! Our benchmarks run in this process through their `run` functions, with
//! shorter phases than when run one by one (`--seconds`, default 2 s). The
//! etcd benchmark runs as a child process: `run.sh` installs etcd and
//! protoc when missing, builds the load generator (outside the workspace,
//! so the normal build does not need protoc) and starts and stops a
//! 3-member etcd cluster itself. Its JSON lines are parsed into
//! [`EtcdRow`]s.
//!
//! When etcd cannot be measured (no script, install or build failure, etcd
//! failing), the report still holds our figures and says why etcd is
//! missing; the command exits 0 unless `--require-etcd` is given. A failing
//! benchmark of ours is recorded in the report and the others still run;
//! the command then exits non-zero after writing the report.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{append, logunit, objects, rpc, sequencer};

/// The value (and entry) size of every write phase: the append and
/// objects benchmarks' 64 B, and what etcd is asked to put.
pub const VALUE_BYTES: usize = 64;

/// Tasks of our linearizable-get phase and clients of etcd's get run.
pub const GET_CLIENTS: usize = 16;

/// Where `run.sh` of the etcd peer benchmark is in the source tree this
/// binary was built from.
pub const DEFAULT_PEER_SCRIPT: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/bench/peer-etcd/run.sh");

/// How long the etcd child may take beyond its timed runs (installing
/// packages and building the load generator on a fresh machine).
const ETCD_SETUP_ALLOWANCE: Duration = Duration::from_secs(30 * 60);

/// Lines of the etcd child's stderr kept for the report.
const ETCD_LOG_LINES_MAX: usize = 400;

/// One of our benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bench {
    /// `corfu bench rpc`.
    Rpc,
    /// `corfu bench logunit`.
    Logunit,
    /// `corfu bench sequencer`.
    Sequencer,
    /// `corfu bench append`.
    Append,
    /// `corfu bench objects`.
    Objects,
}

impl Bench {
    /// Every benchmark, in the order `bench all` runs them.
    pub const ALL: [Bench; 5] = [
        Bench::Rpc,
        Bench::Logunit,
        Bench::Sequencer,
        Bench::Append,
        Bench::Objects,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Bench::Rpc => "rpc",
            Bench::Logunit => "logunit",
            Bench::Sequencer => "sequencer",
            Bench::Append => "append",
            Bench::Objects => "objects",
        }
    }
}

/// The arguments of `corfu bench all`.
#[derive(clap::Args, Debug, Clone)]
pub struct AllArgs {
    /// Print every result, figure and ratio as one JSON object on stdout
    /// (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write DIR/report.md, report.json, the plots (SVG) and etcd's raw
    /// output into this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Seconds per timed phase [default: 2, or 0.5 with --quick].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// A smoke run: 0.5 s phases, one run per rpc/sequencer measurement,
    /// a smaller index rebuild, a shorter etcd warm-up. Figures are rough.
    #[arg(long)]
    pub quick: bool,
    /// Client counts of the append and map-put phases and of etcd's puts
    /// (1 is always included).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub clients: Vec<usize>,
    /// Run only these of our benchmarks (comma-separated); default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Bench>,
    /// Do not run the etcd peer benchmark.
    #[arg(long, conflicts_with_all = ["peer_etcd", "require_etcd"])]
    pub no_etcd: bool,
    /// The etcd peer benchmark's script [default: bench/peer-etcd/run.sh of
    /// the source tree this binary was built from].
    #[arg(long, value_name = "PATH")]
    pub peer_etcd: Option<PathBuf>,
    /// Exit non-zero when etcd could not be measured (the report is still
    /// written).
    #[arg(long)]
    pub require_etcd: bool,
}

/// What to run, resolved from [`AllArgs`].
#[derive(Debug, Clone)]
pub struct AllConfig {
    /// Length of each timed phase of the append, objects and logunit
    /// benchmarks, and of etcd's runs.
    pub run: Duration,
    /// Length of each rpc/sequencer run (several are made, the median
    /// kept).
    pub short_run: Duration,
    /// Runs per rpc/sequencer measurement.
    pub runs: usize,
    /// Entries of the logunit index rebuild.
    pub rebuild_entries: u64,
    /// Client counts of the append/put phases and of etcd's puts, 1 first.
    pub clients: Vec<usize>,
    /// Our benchmarks to run, in order.
    pub benches: Vec<Bench>,
    /// The etcd script, or `None` to skip etcd.
    pub peer_etcd: Option<PathBuf>,
    /// etcd's warm-up before each timed run.
    pub etcd_warmup: Duration,
    /// The command line, for the report.
    pub command_line: String,
}

impl AllConfig {
    /// Resolves the arguments (defaults, `--quick`, checks).
    pub fn from_args(args: &AllArgs, command_line: String) -> anyhow::Result<AllConfig> {
        let seconds = args.seconds.unwrap_or(if args.quick { 0.5 } else { 2.0 });
        anyhow::ensure!(
            seconds > 0.0 && seconds <= 600.0,
            "--seconds must be in (0, 600]"
        );
        anyhow::ensure!(
            args.clients.iter().all(|&c| (1..=1024).contains(&c)),
            "--clients must be in 1..=1024"
        );
        let mut clients = vec![1];
        for &c in &args.clients {
            if !clients.contains(&c) {
                clients.push(c);
            }
        }
        let benches = if args.only.is_empty() {
            Bench::ALL.to_vec()
        } else {
            Bench::ALL
                .into_iter()
                .filter(|b| args.only.contains(b))
                .collect()
        };
        let peer_etcd = if args.no_etcd {
            None
        } else {
            Some(
                args.peer_etcd
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_PEER_SCRIPT)),
            )
        };
        Ok(AllConfig {
            run: Duration::from_secs_f64(seconds),
            short_run: Duration::from_secs_f64((seconds / 2.0).min(1.0)),
            runs: if args.quick { 1 } else { 3 },
            rebuild_entries: if args.quick { 100_000 } else { 500_000 },
            clients,
            benches,
            peer_etcd,
            etcd_warmup: Duration::from_secs_f64(if args.quick { 0.5 } else { 1.0 }),
            command_line,
        })
    }
}

/// The machine and the run, for the report's header.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    /// Cores available to this process.
    pub cores: usize,
    /// `model name` of /proc/cpuinfo.
    pub cpu: String,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// The kernel release.
    pub kernel: String,
    /// `PRETTY_NAME` of /etc/os-release.
    pub os: String,
    /// When the run started, UTC (ISO 8601).
    pub date_utc: String,
    /// The git commit of the source tree the binary was built from, with
    /// "+dirty" when it has uncommitted changes (at run time).
    pub git_commit: Option<String>,
    /// corfu's version.
    pub corfu_version: String,
    /// The command line.
    pub command_line: String,
    /// Load average (1, 5, 15 min) when the run started.
    pub load_average_start: String,
    /// Load average when the run ended.
    pub load_average_end: String,
}

impl MachineInfo {
    /// Collects what the machine tells (unknown parts read "unknown").
    pub fn collect(command_line: String) -> MachineInfo {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / (1024.0 * 1024.0));
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map_or_else(
                || "unknown".to_string(),
                |v| v.trim_matches('"').to_string(),
            );
        MachineInfo {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            memory_gib,
            kernel: if kernel.is_empty() {
                "unknown".into()
            } else {
                kernel
            },
            os,
            date_utc: utc_now(),
            git_commit: git_commit(Path::new(env!("CARGO_MANIFEST_DIR"))),
            corfu_version: env!("CARGO_PKG_VERSION").to_string(),
            command_line,
            load_average_start: load_average(),
            load_average_end: String::new(),
        }
    }
}

/// The load average (1, 5, 15 min), or "unknown".
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| {
            let v: Vec<&str> = s.split_whitespace().take(3).collect();
            (v.len() == 3).then(|| v.join(" "))
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The current time, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic
/// Gregorian calendar; days to civil date after H. Hinnant).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `git rev-parse HEAD` in `dir`, with "+dirty" when tracked files have
/// changed; `None` without git or outside a repository.
fn git_commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"]).filter(|h| !h.is_empty())?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}

/// The settings the benchmarks ran with.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Seconds per timed phase.
    pub phase_seconds: f64,
    /// Seconds per rpc/sequencer run.
    pub short_run_seconds: f64,
    /// Runs per rpc/sequencer measurement.
    pub runs: usize,
    /// Entries of the logunit index rebuild.
    pub rebuild_entries: u64,
    /// Client counts of the append/put phases and of etcd's puts.
    pub clients: Vec<usize>,
    /// Value bytes of every write.
    pub value_bytes: usize,
    /// Tasks (clients) of the get phases.
    pub get_clients: usize,
    /// etcd's warm-up before each timed run, seconds.
    pub etcd_warmup_seconds: f64,
}

/// A benchmark of ours that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// Which.
    pub bench: String,
    /// The error and its causes.
    pub error: String,
}

/// How long a benchmark took and how loaded the machine was before it.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Which ("etcd" for the peer).
    pub bench: String,
    /// Wall time, seconds.
    pub seconds: f64,
    /// The load average when it started.
    pub load_average_before: String,
}

/// One JSON line of the etcd peer benchmark (`peer-etcd --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtcdRow {
    /// "put", "get_linearizable", "get_serializable" or "fdatasync_4k".
    pub op: String,
    /// Concurrent clients (one connection and one request in flight each).
    pub clients: usize,
    /// Value bytes (4096 for the fdatasync baseline).
    pub value_bytes: usize,
    /// Completed operations per second.
    pub ops_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Length of the run, seconds.
    pub seconds: f64,
    /// etcd's version.
    pub etcd_version: String,
    /// Which members the clients talked to ("all" or "leader").
    pub target: String,
}

/// Whether etcd was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EtcdStatus {
    /// The peer benchmark ran to its end.
    Measured,
    /// It could not run or failed (see the reason; rows it printed before
    /// failing are kept).
    NotMeasured,
    /// `--no-etcd`.
    Skipped,
}

/// The etcd peer benchmark's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdResult {
    /// Measured, not measured or skipped.
    pub status: EtcdStatus,
    /// Why it was not measured.
    pub reason: Option<String>,
    /// The command run.
    pub command: Option<String>,
    /// The parsed measurements.
    pub rows: Vec<EtcdRow>,
    /// Its stdout, line by line (the JSON lines as printed).
    pub raw_lines: Vec<String>,
    /// The last lines of its stderr (its table and progress).
    pub log: Vec<String>,
}

impl EtcdResult {
    /// etcd was not run (`--no-etcd`).
    pub fn skipped() -> EtcdResult {
        EtcdResult {
            status: EtcdStatus::Skipped,
            reason: Some("skipped (--no-etcd)".into()),
            command: None,
            rows: Vec::new(),
            raw_lines: Vec::new(),
            log: Vec::new(),
        }
    }

    /// etcd could not be measured, for `reason`.
    pub fn not_measured(reason: impl Into<String>) -> EtcdResult {
        EtcdResult {
            status: EtcdStatus::NotMeasured,
            reason: Some(reason.into()),
            command: None,
            rows: Vec::new(),
            raw_lines: Vec::new(),
            log: Vec::new(),
        }
    }

    /// The row of `op` at `clients`.
    pub fn row(&self, op: &str, clients: usize) -> Option<&EtcdRow> {
        self.rows
            .iter()
            .find(|r| r.op == op && r.clients == clients)
    }

    /// The put rows, by client count.
    pub fn puts(&self) -> Vec<&EtcdRow> {
        let mut v: Vec<&EtcdRow> = self.rows.iter().filter(|r| r.op == "put").collect();
        v.sort_by_key(|r| r.clients);
        v
    }

    /// The get row (linearizable or serializable), if any.
    pub fn get(&self) -> Option<&EtcdRow> {
        self.rows.iter().find(|r| r.op.starts_with("get"))
    }

    /// etcd's version, from its rows.
    pub fn version(&self) -> Option<&str> {
        self.rows.first().map(|r| r.etcd_version.as_str())
    }
}

/// Everything one `bench all` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct AllResults {
    /// Always "all".
    pub bench: &'static str,
    /// The machine and the run.
    pub machine: MachineInfo,
    /// The settings.
    pub settings: Settings,
    /// `bench rpc`, unless it failed or was not run.
    pub rpc: Option<rpc::RpcReport>,
    /// `bench logunit`.
    pub logunit: Option<logunit::LogUnitReport>,
    /// `bench sequencer`.
    pub sequencer: Option<sequencer::SequencerReport>,
    /// `bench append`.
    pub append: Option<append::AppendReport>,
    /// `bench objects`.
    pub objects: Option<objects::ObjectsReport>,
    /// The etcd peer.
    pub etcd: EtcdResult,
    /// Our benchmarks that failed.
    pub failures: Vec<Failure>,
    /// Our benchmarks that were not run (`--only`).
    pub not_run: Vec<String>,
    /// Wall time of each part.
    pub timings: Vec<Timing>,
    /// Wall time of the whole run, seconds.
    pub total_seconds: f64,
}

/// One line with an error and its causes.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        line.push_str(": ");
        line.push_str(&cause.to_string());
    }
    line
}

/// Runs one of ours, recording its time and failure.
async fn one<T, F>(
    bench: Bench,
    results: &mut AllResults,
    step: usize,
    steps: usize,
    fut: F,
) -> Option<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let load = load_average();
    eprintln!(
        "bench all: [{step}/{steps}] {} (load average {load})",
        bench.name()
    );
    let t = Instant::now();
    let r = fut.await;
    let seconds = t.elapsed().as_secs_f64();
    results.timings.push(Timing {
        bench: bench.name().into(),
        seconds,
        load_average_before: load,
    });
    match r {
        Ok(v) => {
            eprintln!("bench all: {} done in {seconds:.1} s", bench.name());
            Some(v)
        }
        Err(e) => {
            let error = error_line(&e);
            eprintln!("bench all: {} FAILED: {error}", bench.name());
            results.failures.push(Failure {
                bench: bench.name().into(),
                error,
            });
            None
        }
    }
}

/// Runs every benchmark of `cfg`, then etcd.
pub async fn run(cfg: &AllConfig) -> AllResults {
    let started = Instant::now();
    let mut results = AllResults {
        bench: "all",
        machine: MachineInfo::collect(cfg.command_line.clone()),
        settings: Settings {
            phase_seconds: cfg.run.as_secs_f64(),
            short_run_seconds: cfg.short_run.as_secs_f64(),
            runs: cfg.runs,
            rebuild_entries: cfg.rebuild_entries,
            clients: cfg.clients.clone(),
            value_bytes: VALUE_BYTES,
            get_clients: GET_CLIENTS,
            etcd_warmup_seconds: cfg.etcd_warmup.as_secs_f64(),
        },
        rpc: None,
        logunit: None,
        sequencer: None,
        append: None,
        objects: None,
        etcd: EtcdResult::skipped(),
        failures: Vec::new(),
        not_run: Bench::ALL
            .into_iter()
            .filter(|b| !cfg.benches.contains(b))
            .map(|b| b.name().to_string())
            .collect(),
        timings: Vec::new(),
        total_seconds: 0.0,
    };
    let steps = cfg.benches.len() + usize::from(cfg.peer_etcd.is_some());
    for (i, &bench) in cfg.benches.iter().enumerate() {
        let step = i + 1;
        match bench {
            Bench::Rpc => {
                let c = rpc::RpcBenchConfig {
                    run: cfg.short_run,
                    runs: cfg.runs,
                    latency_run: cfg.short_run,
                    ..Default::default()
                };
                results.rpc = one(bench, &mut results, step, steps, rpc::run(&c)).await;
            }
            Bench::Logunit => {
                let c = logunit::LogUnitBenchConfig {
                    run: cfg.run,
                    rebuild_entries: cfg.rebuild_entries,
                    payload_bytes: VALUE_BYTES,
                    ..Default::default()
                };
                results.logunit = one(bench, &mut results, step, steps, logunit::run(&c)).await;
            }
            Bench::Sequencer => {
                let c = sequencer::SequencerBenchConfig {
                    run: cfg.short_run,
                    runs: cfg.runs,
                    ..Default::default()
                };
                results.sequencer = one(bench, &mut results, step, steps, sequencer::run(&c)).await;
            }
            Bench::Append => {
                let c = append::AppendBenchConfig {
                    run: cfg.run,
                    payload_bytes: VALUE_BYTES,
                    ..Default::default()
                };
                results.append = one(bench, &mut results, step, steps, append::run(&c)).await;
            }
            Bench::Objects => {
                let c = objects::ObjectsBenchConfig {
                    run: cfg.run,
                    put_tasks: cfg.clients.clone(),
                    get_tasks: GET_CLIENTS,
                    value_bytes: VALUE_BYTES,
                    ..Default::default()
                };
                results.objects = one(bench, &mut results, step, steps, objects::run(&c)).await;
            }
        }
    }
    if let Some(script) = &cfg.peer_etcd {
        let load = load_average();
        eprintln!("bench all: [{steps}/{steps}] etcd peer (load average {load})");
        let t = Instant::now();
        results.etcd = run_etcd(script, cfg).await;
        let seconds = t.elapsed().as_secs_f64();
        results.timings.push(Timing {
            bench: "etcd".into(),
            seconds,
            load_average_before: load,
        });
        // A failure is said once more at the end (`command`).
        let outcome = match results.etcd.status {
            EtcdStatus::Measured => "done",
            _ => "not measured",
        };
        eprintln!("bench all: etcd {outcome} after {seconds:.1} s");
    }
    results.machine.load_average_end = load_average();
    results.total_seconds = started.elapsed().as_secs_f64();
    results
}

/// The arguments given to the etcd script.
pub fn etcd_args(cfg: &AllConfig) -> Vec<String> {
    let clients: Vec<String> = cfg.clients.iter().map(|c| c.to_string()).collect();
    vec![
        "--json".into(),
        "--clients".into(),
        clients.join(","),
        "--value-bytes".into(),
        VALUE_BYTES.to_string(),
        "--get-clients".into(),
        GET_CLIENTS.to_string(),
        "--seconds".into(),
        format!("{}", cfg.run.as_secs_f64()),
        "--warmup-seconds".into(),
        format!("{}", cfg.etcd_warmup.as_secs_f64()),
    ]
}

/// Parses the stdout lines of `peer-etcd --json`: the JSON rows; other
/// lines are skipped.
pub fn parse_etcd_lines(lines: &[String]) -> Vec<EtcdRow> {
    lines
        .iter()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs the etcd script as a child, its stderr forwarded to ours, its
/// stdout parsed.
async fn run_etcd(script: &Path, cfg: &AllConfig) -> EtcdResult {
    let args = etcd_args(cfg);
    let command = format!("{} {}", script.display(), args.join(" "));
    let mut result = EtcdResult::not_measured(String::new());
    result.command = Some(command);
    if !script.is_file() {
        result.reason = Some(format!(
            "the peer benchmark's script {} does not exist (give --peer-etcd PATH to bench/peer-etcd/run.sh)",
            script.display()
        ));
        return result;
    }
    let mut child = match tokio::process::Command::new(script)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            result.reason = Some(format!("cannot start {}: {e}", script.display()));
            return result;
        }
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        result.reason = Some("the child's output pipes are missing".into());
        return result;
    };
    let read_out = async {
        let mut lines = BufReader::new(stdout).lines();
        let mut out = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            out.push(line);
        }
        out
    };
    let read_err = async {
        let mut lines = BufReader::new(stderr).lines();
        let mut kept = std::collections::VecDeque::new();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("  etcd| {line}");
            if kept.len() == ETCD_LOG_LINES_MAX {
                kept.pop_front();
            }
            kept.push_back(line);
        }
        Vec::from(kept)
    };
    // Timed runs: (warm-up + run) for each put count and the get run, plus
    // the disk baseline and start-up; then the setup allowance.
    let runs = (cfg.clients.len() + 1) as u32;
    let limit = (cfg.run + cfg.etcd_warmup) * runs + Duration::from_secs(60) + ETCD_SETUP_ALLOWANCE;
    let waited = tokio::time::timeout(limit, async {
        let (out, err) = tokio::join!(read_out, read_err);
        (out, err, child.wait().await)
    })
    .await;
    let (out, err, status) = match waited {
        Ok(v) => v,
        Err(_) => {
            // Dropping the child kills it (kill_on_drop); etcd's members
            // die with it (PR_SET_PDEATHSIG).
            result.reason = Some(format!(
                "the peer benchmark did not finish within {:.0} s",
                limit.as_secs_f64()
            ));
            return result;
        }
    };
    result.rows = parse_etcd_lines(&out);
    result.raw_lines = out;
    result.log = err;
    match status {
        Ok(s) if s.success() => {
            if result.row("put", 1).is_some() {
                result.status = EtcdStatus::Measured;
                result.reason = None;
            } else {
                result.reason = Some("the peer benchmark printed no 1-client put".into());
            }
        }
        Ok(s) => {
            let last = result
                .log
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .cloned()
                .unwrap_or_default();
            result.reason = Some(format!("the peer benchmark failed ({s}): {last}"));
        }
        Err(e) => result.reason = Some(format!("waiting for the peer benchmark: {e}")),
    }
    result
}

/// `corfu bench all`: runs everything, writes the report, prints the
/// summary (or the JSON). Errors after the report is written when one of
/// our benchmarks failed, or etcd was not measured under `--require-etcd`.
pub async fn command(args: AllArgs) -> anyhow::Result<()> {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let cfg = AllConfig::from_args(&args, command_line)?;
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating the report directory {}: {e}", dir.display()))?;
    }
    let results = run(&cfg).await;
    if let Some(dir) = &args.report {
        super::report::write(dir, &results)?;
        eprintln!(
            "bench all: report written to {}",
            dir.join("report.md").display()
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&super::report::combined_json(&results))?
        );
    } else {
        print!("{}", super::report::summary_text(&results));
    }
    if results.etcd.status != EtcdStatus::Measured {
        let reason = results.etcd.reason.as_deref().unwrap_or("unknown");
        eprintln!("bench all: etcd: NOT MEASURED: {reason}");
    }
    eprintln!("bench all: took {:.0} s", results.total_seconds);
    if !results.failures.is_empty() {
        let names: Vec<&str> = results.failures.iter().map(|f| f.bench.as_str()).collect();
        anyhow::bail!("benchmark(s) failed: {}", names.join(", "));
    }
    if args.require_etcd && results.etcd.status != EtcdStatus::Measured {
        anyhow::bail!(
            "etcd was not measured (--require-etcd): {}",
            results.etcd.reason.as_deref().unwrap_or("unknown")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        all: AllArgs,
    }

    fn cfg(args: &[&str]) -> anyhow::Result<AllConfig> {
        let cli = Cli::try_parse_from(std::iter::once("all").chain(args.iter().copied()))?;
        AllConfig::from_args(&cli.all, "corfu bench all".into())
    }

    #[test]
    fn defaults_quick_and_client_counts() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.clients, vec![1, 16, 64, 256]);
        assert_eq!(c.run, Duration::from_secs(2));
        assert_eq!(c.benches, Bench::ALL.to_vec());
        assert_eq!(c.peer_etcd.as_deref(), Some(Path::new(DEFAULT_PEER_SCRIPT)));
        let q = cfg(&[
            "--quick",
            "--clients",
            "64,16",
            "--no-etcd",
            "--only",
            "objects,rpc",
        ])
        .unwrap();
        assert_eq!(q.run, Duration::from_millis(500));
        assert_eq!(q.runs, 1);
        assert_eq!(q.clients, vec![1, 64, 16]);
        assert_eq!(q.benches, vec![Bench::Rpc, Bench::Objects]);
        assert!(q.peer_etcd.is_none());
        assert!(cfg(&["--clients", "0"]).is_err());
        assert!(cfg(&["--seconds", "0"]).is_err());
        assert!(cfg(&["--no-etcd", "--require-etcd"]).is_err());
    }

    #[test]
    fn etcd_gets_our_value_size_and_client_counts() {
        let c = cfg(&["--seconds", "2.5"]).unwrap();
        let a = etcd_args(&c).join(" ");
        assert_eq!(
            a,
            "--json --clients 1,16,64,256 --value-bytes 64 --get-clients 16 --seconds 2.5 --warmup-seconds 1"
        );
    }

    #[test]
    fn etcd_lines_parse_and_others_are_skipped() {
        let lines = vec![
            r#"{"op":"fdatasync_4k","clients":1,"value_bytes":4096,"ops_per_sec":900.0,"p50_us":1100.0,"p99_us":3000.0,"seconds":1.0,"etcd_version":"3.4.23","target":"all"}"#.to_string(),
            "not json".to_string(),
            r#"{"op":"put","clients":16,"value_bytes":64,"ops_per_sec":1885.4,"p50_us":7796.2,"p99_us":21814.2,"seconds":1.021,"etcd_version":"3.4.23","target":"leader"}"#.to_string(),
        ];
        let rows = parse_etcd_lines(&lines);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].op, "put");
        assert_eq!(rows[1].clients, 16);
        assert_eq!(rows[1].p50_us, 7796.2);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[tokio::test]
    async fn a_missing_script_is_reported_not_fatal() {
        let mut c = cfg(&["--peer-etcd", "/nonexistent/run.sh"]).unwrap();
        c.benches.clear();
        let r = run(&c).await;
        assert_eq!(r.etcd.status, EtcdStatus::NotMeasured);
        assert!(r.etcd.reason.unwrap().contains("/nonexistent/run.sh"));
        assert!(r.failures.is_empty());
        assert_eq!(r.not_run.len(), 5);
    }
}
