//! The report of `corfu bench all`: every figure with its target, the
//! corfu / etcd comparison, and plots.
//!
//! [`write`](fn@write) puts into a directory:
//!
//! - `report.md`: the machine and the run, the etcd comparison (our
//!   appends/s and map puts/s over etcd's puts/s at equal client counts,
//!   single-client p50 ours against etcd's), the plots, a table of every
//!   figure with its target and whether it is met, and every timed phase
//!   with its throughput and latency percentiles;
//! - `report.json`: [`combined_json`], the raw results and the summary;
//! - `etcd.jsonl` and `etcd.log`: the peer benchmark's stdout lines and the
//!   end of its stderr;
//! - `throughput.svg` (throughput against concurrency: our appends and map
//!   puts, etcd's puts and the 25x target line), `latency.svg` (p50 and p99
//!   against concurrency for the same three) and `latency_phases.svg` (p50
//!   and p99 of every timed phase, ours and etcd's).
//!
//! The plots are SVG drawn with `plotters` without its font support: text
//! is laid out with estimated widths and rendered by the viewer, so no font
//! or image library of the system is needed.

use std::fmt::Write as _;
use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde::Serialize;

use super::all::{AllResults, EtcdStatus};

/// The factor our appends/s and map puts/s should have over etcd's puts/s
/// at the same client count (issue #8).
pub const ETCD_RATIO_TARGET: f64 = 25.0;

/// The unit of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Operations (or entries, requests) per second.
    PerSec,
    /// Microseconds.
    Micros,
    /// A ratio (x).
    Ratio,
    /// Bytes per entry.
    BytesPerEntry,
    /// A fraction shown as a percentage.
    Percent,
}

/// Formats `v` in `unit` for a table.
pub fn format_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::PerSec => format_rate(v),
        Unit::Micros => format_us(v),
        Unit::Ratio => {
            if v >= 100.0 {
                format!("{v:.0}x")
            } else if v >= 10.0 {
                format!("{v:.1}x")
            } else {
                format!("{v:.2}x")
            }
        }
        Unit::BytesPerEntry => format!("{v:.1} B/entry"),
        Unit::Percent => format!("{:.1}%", v * 100.0),
    }
}

/// Operations per second: `394/s`, `35.2K/s`, `1.48M/s`.
fn format_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}K/s", v / 1e3)
    } else {
        format!("{v:.0}/s")
    }
}

/// A latency: `85.3 us`, `812 us`, `2.21 ms`.
fn format_us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} us")
    } else {
        format!("{v:.1} us")
    }
}

/// Which way a target goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cmp {
    /// The figure must be at least the target.
    AtLeast,
    /// The figure must be at most the target.
    AtMost,
}

/// A target of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Target {
    /// At least or at most.
    pub cmp: Cmp,
    /// The bound, in the figure's unit.
    pub value: f64,
}

impl Target {
    fn at_least(value: f64) -> Option<Target> {
        Some(Target {
            cmp: Cmp::AtLeast,
            value,
        })
    }

    fn at_most(value: f64) -> Option<Target> {
        Some(Target {
            cmp: Cmp::AtMost,
            value,
        })
    }

    /// Whether `v` meets it.
    pub fn met_by(&self, v: f64) -> bool {
        match self.cmp {
            Cmp::AtLeast => v >= self.value,
            Cmp::AtMost => v <= self.value,
        }
    }

    /// `>= 250.0K/s`, `<= 1.30x`.
    pub fn format(&self, unit: Unit) -> String {
        let op = match self.cmp {
            Cmp::AtLeast => ">=",
            Cmp::AtMost => "<=",
        };
        format!("{op} {}", format_value(self.value, unit))
    }
}

/// One measured figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// The benchmark it comes from ("etcd" for the comparison).
    pub bench: String,
    /// What it is.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
    /// Its target, if the issues set one.
    pub target: Option<Target>,
    /// Whether the target is met (`None`: no target).
    pub met: Option<bool>,
}

/// Collects figures for one benchmark.
struct Figures<'a> {
    bench: &'a str,
    out: &'a mut Vec<Figure>,
}

impl Figures<'_> {
    fn add(&mut self, name: impl Into<String>, value: f64, unit: Unit, target: Option<Target>) {
        self.out.push(Figure {
            bench: self.bench.to_string(),
            name: name.into(),
            value,
            unit,
            target,
            met: target.map(|t| t.met_by(value)),
        });
    }
}

/// Our appends and map puts against etcd's puts at one client count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonRow {
    /// Clients (our tasks) for both sides.
    pub clients: usize,
    /// Our plain appends/s (the objects benchmark's baseline phase).
    pub corfu_appends_per_s: Option<f64>,
    /// Our map puts/s.
    pub corfu_puts_per_s: Option<f64>,
    /// etcd's puts/s.
    pub etcd_puts_per_s: Option<f64>,
    /// appends/s over etcd's puts/s.
    pub appends_ratio: Option<f64>,
    /// map puts/s over etcd's puts/s.
    pub puts_ratio: Option<f64>,
    /// Whether both ratios reach [`ETCD_RATIO_TARGET`] (`None` without
    /// both).
    pub met: Option<bool>,
}

/// One of our single-client latencies against etcd's 1-client put.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyComparison {
    /// Our operation ("append" or "map put").
    pub op: String,
    /// Our p50, microseconds.
    pub corfu_p50_us: f64,
    /// Our p99, microseconds.
    pub corfu_p99_us: f64,
    /// etcd's 1-client put p50.
    pub etcd_p50_us: f64,
    /// etcd's 1-client put p99.
    pub etcd_p99_us: f64,
    /// Our p50 over etcd's.
    pub p50_ratio: f64,
    /// Whether ours is no worse (ratio <= 1).
    pub met: bool,
}

/// One timed phase, for the phase table and the latency plot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseRow {
    /// The benchmark ("etcd" for the peer).
    pub bench: String,
    /// What the phase does.
    pub phase: String,
    /// Concurrent tasks (clients).
    pub tasks: usize,
    /// Operations per second, when the phase measures them.
    pub ops_per_s: Option<f64>,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Whether it is etcd's.
    pub etcd: bool,
}

/// What the report concludes from the results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Every figure with its target.
    pub figures: Vec<Figure>,
    /// Ours against etcd at each client count.
    pub comparison: Vec<ComparisonRow>,
    /// Single-client p50, ours against etcd's.
    pub single_client: Vec<LatencyComparison>,
    /// Our linearizable gets/s over etcd's at the same client count.
    pub gets_ratio: Option<f64>,
    /// Every timed phase.
    pub phases: Vec<PhaseRow>,
    /// Figures with a target that is met.
    pub targets_met: usize,
    /// Figures with a target.
    pub targets_total: usize,
}

/// The comparison rows: one per client count of the run.
pub fn comparison(r: &AllResults) -> Vec<ComparisonRow> {
    r.settings
        .clients
        .iter()
        .map(|&clients| {
            let ours = |v: Option<&Vec<super::objects::Phase>>| {
                v.and_then(|ps| ps.iter().find(|p| p.tasks == clients))
                    .map(|p| p.ops_per_s)
            };
            let appends = ours(r.objects.as_ref().map(|o| &o.appends));
            let puts = ours(r.objects.as_ref().map(|o| &o.puts));
            let etcd = r
                .etcd
                .row("put", clients)
                .map(|row| row.ops_per_sec)
                .filter(|v| *v > 0.0);
            let ratio = |a: Option<f64>| a.zip(etcd).map(|(a, e)| a / e);
            let (appends_ratio, puts_ratio) = (ratio(appends), ratio(puts));
            ComparisonRow {
                clients,
                corfu_appends_per_s: appends,
                corfu_puts_per_s: puts,
                etcd_puts_per_s: etcd,
                appends_ratio,
                puts_ratio,
                met: appends_ratio
                    .zip(puts_ratio)
                    .map(|(a, p)| a >= ETCD_RATIO_TARGET && p >= ETCD_RATIO_TARGET),
            }
        })
        .collect()
}

/// Single-client p50s: our append and map put against etcd's 1-client put.
pub fn single_client(r: &AllResults) -> Vec<LatencyComparison> {
    let (Some(o), Some(e)) = (&r.objects, r.etcd.row("put", 1)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (op, phases) in [("append", &o.appends), ("map put", &o.puts)] {
        if let Some(p) = phases.iter().find(|p| p.tasks == 1) {
            let p50_ratio = if e.p50_us > 0.0 {
                p.latency.p50_us / e.p50_us
            } else {
                f64::INFINITY
            };
            out.push(LatencyComparison {
                op: op.to_string(),
                corfu_p50_us: p.latency.p50_us,
                corfu_p99_us: p.latency.p99_us,
                etcd_p50_us: e.p50_us,
                etcd_p99_us: e.p99_us,
                p50_ratio,
                met: p50_ratio <= 1.0,
            });
        }
    }
    out
}

/// Every timed phase with its latency percentiles.
pub fn phases(r: &AllResults) -> Vec<PhaseRow> {
    let mut out = Vec::new();
    let mut push = |bench: &str, phase: String, tasks, ops: Option<f64>, p50, p99, etcd| {
        out.push(PhaseRow {
            bench: bench.to_string(),
            phase,
            tasks,
            ops_per_s: ops,
            p50_us: p50,
            p99_us: p99,
            etcd,
        })
    };
    if let Some(rpc) = &r.rpc {
        for (name, side) in [("corfu", &rpc.corfu), ("bare quinn", &rpc.bare_quinn)] {
            push(
                "rpc",
                format!("{name} round trip"),
                1,
                None,
                side.latency.p50_us,
                side.latency.p99_us,
                false,
            );
        }
    }
    if let Some(l) = &r.logunit {
        push(
            "logunit",
            "single write (sync=always)".into(),
            1,
            None,
            l.single_write_latency.p50_us,
            l.single_write_latency.p99_us,
            false,
        );
        push(
            "logunit",
            "disk 4 KiB append+fdatasync".into(),
            1,
            None,
            l.raw_fdatasync_4k.p50_us,
            l.raw_fdatasync_4k.p99_us,
            false,
        );
    }
    if let Some(a) = &r.append {
        for p in [&a.single, &a.concurrent, &a.batched] {
            let phase = if p.entries_per_call > 1 {
                format!("append_batch of {}", p.entries_per_call)
            } else {
                "append".to_string()
            };
            push(
                "append",
                phase,
                p.tasks,
                Some(p.appends_per_s),
                p.latency.p50_us,
                p.latency.p99_us,
                false,
            );
        }
    }
    if let Some(o) = &r.objects {
        for (a, p) in o.appends.iter().zip(&o.puts) {
            for (name, ph) in [("append", a), ("map put", p)] {
                push(
                    "objects",
                    name.to_string(),
                    ph.tasks,
                    Some(ph.ops_per_s),
                    ph.latency.p50_us,
                    ph.latency.p99_us,
                    false,
                );
            }
        }
        push(
            "objects",
            "linearizable get".into(),
            o.gets.tasks,
            Some(o.gets.ops_per_s),
            o.gets.latency.p50_us,
            o.gets.latency.p99_us,
            false,
        );
        for (name, t) in [
            ("txn, low contention", &o.txn_low_contention),
            ("txn, high contention", &o.txn_high_contention),
        ] {
            push(
                "objects",
                name.to_string(),
                t.tasks,
                Some(t.ops_per_s),
                t.latency.p50_us,
                t.latency.p99_us,
                false,
            );
        }
    }
    for row in &r.etcd.rows {
        let phase = match row.op.as_str() {
            "fdatasync_4k" => "disk 4 KiB append+fdatasync".to_string(),
            "get_linearizable" => "linearizable get".to_string(),
            "get_serializable" => "serializable get".to_string(),
            other => other.to_string(),
        };
        push(
            "etcd",
            phase,
            row.clients,
            Some(row.ops_per_sec),
            row.p50_us,
            row.p99_us,
            true,
        );
    }
    out
}

/// Every figure of the results, with its target (the targets of the
/// issues; none where the issues set none).
pub fn figures(r: &AllResults) -> Vec<Figure> {
    use Unit::*;
    let mut out = Vec::new();
    if let Some(x) = &r.rpc {
        let mut f = Figures {
            bench: "rpc",
            out: &mut out,
        };
        let c = x.concurrency;
        f.add(
            format!("pipelined requests, corfu ({c} outstanding)"),
            x.corfu.pipelined_rps,
            PerSec,
            None,
        );
        f.add(
            format!("pipelined requests, bare quinn ({c} outstanding)"),
            x.bare_quinn.pipelined_rps,
            PerSec,
            None,
        );
        f.add(
            "pipelined requests, corfu / bare quinn",
            x.ratio_rps,
            Ratio,
            Target::at_least(0.80),
        );
        f.add(
            "round trip p50, corfu",
            x.corfu.latency.p50_us,
            Micros,
            None,
        );
        f.add(
            "round trip p50, bare quinn",
            x.bare_quinn.latency.p50_us,
            Micros,
            None,
        );
        f.add(
            "round trip p50, corfu / bare quinn",
            x.ratio_p50,
            Ratio,
            Target::at_most(1.30),
        );
        f.add(
            "CPU per request, corfu / bare quinn",
            x.ratio_cpu,
            Ratio,
            None,
        );
    }
    if let Some(x) = &r.logunit {
        let mut f = Figures {
            bench: "logunit",
            out: &mut out,
        };
        let shape = format!("{} tasks x {}", x.tasks, x.batch);
        f.add(
            format!(
                "batched {} B writes, sync=always ({shape})",
                x.payload_bytes
            ),
            x.writes_per_s_sync_always,
            PerSec,
            Target::at_least(250_000.0),
        );
        f.add(
            format!("batched {} B writes, sync=never ({shape})", x.payload_bytes),
            x.writes_per_s_sync_never,
            PerSec,
            None,
        );
        f.add("group commits (fdatasync)", x.syncs_per_s, PerSec, None);
        f.add(
            "single write p50 (sync=always)",
            x.single_write_latency.p50_us,
            Micros,
            None,
        );
        f.add(
            "disk 4 KiB append+fdatasync p50",
            x.raw_fdatasync_4k.p50_us,
            Micros,
            None,
        );
        f.add(
            "single write p50 / disk fdatasync p50",
            x.ratio_single_write_p50_to_raw_sync,
            Ratio,
            None,
        );
        f.add("range reads (entries)", x.reads_per_s, PerSec, None);
        f.add(
            format!("index rebuild ({} entries)", x.rebuild_entries),
            x.rebuild_entries_per_s,
            PerSec,
            Target::at_least(1_000_000.0),
        );
        f.add(
            "index memory",
            x.index_bytes_per_entry,
            BytesPerEntry,
            Target::at_most(32.0),
        );
    }
    if let Some(x) = &r.sequencer {
        let mut f = Figures {
            bench: "sequencer",
            out: &mut out,
        };
        f.add(
            format!("batched tokens ({} tasks x {})", x.batched_tasks, x.batch),
            x.batched_tokens_per_s,
            PerSec,
            Target::at_least(2_000_000.0),
        );
        f.add(
            format!("single-token requests ({} tasks)", x.single_tasks),
            x.single_tokens_per_s,
            PerSec,
            Target::at_least(300_000.0),
        );
        f.add(
            format!("pings ({} tasks)", x.single_tasks),
            x.ping_per_s,
            PerSec,
            None,
        );
        f.add(
            "single-token requests / pings",
            x.ratio_single_to_ping,
            Ratio,
            None,
        );
    }
    if let Some(x) = &r.append {
        let mut f = Figures {
            bench: "append",
            out: &mut out,
        };
        let tasks = x.concurrent.tasks;
        f.add("appends, 1 task", x.single.appends_per_s, PerSec, None);
        f.add("append p50, 1 task", x.single.latency.p50_us, Micros, None);
        f.add(
            format!("appends, {tasks} tasks"),
            x.concurrent.appends_per_s,
            PerSec,
            Target::at_least(200_000.0),
        );
        f.add(
            format!("append p50, {tasks} tasks"),
            x.concurrent.latency.p50_us,
            Micros,
            None,
        );
        f.add(
            format!(
                "batched appends, {} tasks x {}",
                x.batched.tasks, x.batched.entries_per_call
            ),
            x.batched.appends_per_s,
            PerSec,
            None,
        );
        f.add(
            format!("stream-tail queries, {tasks} tasks"),
            x.stream_tail_queries_per_s,
            PerSec,
            None,
        );
        f.add(
            format!("playback ({} entries)", x.playback_entries),
            x.playback_entries_per_s,
            PerSec,
            Target::at_least(1_000_000.0),
        );
        f.add(
            "playback / raw range reads",
            x.ratio_playback_to_raw,
            Ratio,
            None,
        );
        f.add(
            format!("1-task p50 / (chain of {} x disk fdatasync p50)", x.chain),
            x.ratio_single_p50_to_chain_floor,
            Ratio,
            None,
        );
    }
    if let Some(x) = &r.objects {
        let mut f = Figures {
            bench: "objects",
            out: &mut out,
        };
        for (a, p) in x.appends.iter().zip(&x.puts) {
            let t = p.tasks;
            f.add(
                format!("appends, {}", count(t, "task")),
                a.ops_per_s,
                PerSec,
                None,
            );
            f.add(
                format!("map puts, {}", count(t, "task")),
                p.ops_per_s,
                PerSec,
                if t == 256 {
                    Target::at_least(100_000.0)
                } else {
                    None
                },
            );
            f.add(
                format!("map puts / appends, {}", count(t, "task")),
                p.ops_per_s / a.ops_per_s.max(1e-9),
                Ratio,
                None,
            );
        }
        f.add(
            format!("linearizable gets, {} tasks", x.gets.tasks),
            x.gets.ops_per_s,
            PerSec,
            Target::at_least(200_000.0),
        );
        for (name, t, target) in [
            ("low", &x.txn_low_contention, Target::at_least(30_000.0)),
            ("high", &x.txn_high_contention, None),
        ] {
            let keys = t.keys.map(|k| format!(", {k} keys")).unwrap_or_default();
            f.add(
                format!(
                    "2-object transactions, {name} contention ({} tasks{keys})",
                    t.tasks
                ),
                t.ops_per_s,
                PerSec,
                target,
            );
            if let Some(a) = t.abort_rate {
                f.add(format!("abort rate, {name} contention"), a, Percent, None);
            }
        }
    }
    {
        let mut f = Figures {
            bench: "etcd",
            out: &mut out,
        };
        for row in comparison(r) {
            let c = row.clients;
            if let Some(v) = row.etcd_puts_per_s {
                f.add(
                    format!("etcd puts, {}", count(c, "client")),
                    v,
                    PerSec,
                    None,
                );
            }
            if let Some(v) = row.appends_ratio {
                f.add(
                    format!("corfu appends / etcd puts, {}", count(c, "client")),
                    v,
                    Ratio,
                    Target::at_least(ETCD_RATIO_TARGET),
                );
            }
            if let Some(v) = row.puts_ratio {
                f.add(
                    format!("corfu map puts / etcd puts, {}", count(c, "client")),
                    v,
                    Ratio,
                    Target::at_least(ETCD_RATIO_TARGET),
                );
            }
        }
        for l in single_client(r) {
            f.add(
                format!("single-client p50, corfu {} / etcd put", l.op),
                l.p50_ratio,
                Ratio,
                Target::at_most(1.0),
            );
        }
        if let Some(g) = r.etcd.get() {
            f.add(
                format!("etcd {}, {}", etcd_op(&g.op), count(g.clients, "client")),
                g.ops_per_sec,
                PerSec,
                None,
            );
        }
        if let Some(v) = gets_ratio(r) {
            f.add(
                "corfu linearizable gets / etcd gets, same clients",
                v,
                Ratio,
                None,
            );
        }
    }
    out
}

/// `1 task`, `16 tasks`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The name of an etcd op in prose: "puts", "linearizable gets".
fn etcd_op(op: &str) -> String {
    match op {
        "put" => "puts".into(),
        "get_linearizable" => "linearizable gets".into(),
        "get_serializable" => "serializable gets".into(),
        other => other.replace('_', " "),
    }
}

/// Our linearizable gets/s over etcd's gets/s at the same client count.
fn gets_ratio(r: &AllResults) -> Option<f64> {
    let o = r.objects.as_ref()?;
    let g = r.etcd.get().filter(|g| g.clients == o.gets.tasks)?;
    (g.ops_per_sec > 0.0).then(|| o.gets.ops_per_s / g.ops_per_sec)
}

/// The summary of the results.
pub fn summarize(r: &AllResults) -> Summary {
    let figures = figures(r);
    let targets_total = figures.iter().filter(|f| f.met.is_some()).count();
    let targets_met = figures.iter().filter(|f| f.met == Some(true)).count();
    Summary {
        comparison: comparison(r),
        single_client: single_client(r),
        gets_ratio: gets_ratio(r),
        phases: phases(r),
        figures,
        targets_met,
        targets_total,
    }
}

/// The results and their summary as one JSON object: what `--json`
/// prints and `report.json` holds.
pub fn combined_json(r: &AllResults) -> serde_json::Value {
    serde_json::json!({ "results": r, "summary": summarize(r) })
}

fn opt(v: Option<f64>, unit: Unit) -> String {
    v.map_or_else(|| "–".to_string(), |v| format_value(v, unit))
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    }
}

/// A line saying whether etcd was measured.
pub fn etcd_status_line(r: &AllResults) -> String {
    match r.etcd.status {
        EtcdStatus::Measured => format!(
            "etcd: measured (etcd {}, {} rows)",
            r.etcd.version().unwrap_or("?"),
            r.etcd.rows.len()
        ),
        EtcdStatus::NotMeasured => format!(
            "etcd: NOT MEASURED: {}",
            r.etcd.reason.as_deref().unwrap_or("unknown")
        ),
        EtcdStatus::Skipped => "etcd: not measured: skipped (--no-etcd)".to_string(),
    }
}

/// Escapes `|` for a markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The markdown report.
pub fn markdown(r: &AllResults, s: &Summary) -> String {
    let m = &r.machine;
    let st = &r.settings;
    let mut md = String::new();
    let w = &mut md;
    let clients: Vec<String> = st.clients.iter().map(|c| c.to_string()).collect();
    let _ = writeln!(w, "# corfu benchmark report\n");
    let _ = writeln!(
        w,
        "`corfu bench all` on {}, {:.0} s in all. Targets met: **{} of {}**. {}.\n",
        m.date_utc,
        r.total_seconds,
        s.targets_met,
        s.targets_total,
        etcd_status_line(r)
    );
    let _ = writeln!(w, "## Machine and run\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let rows: Vec<(&str, String)> = vec![
        ("cores", m.cores.to_string()),
        ("cpu", m.cpu.clone()),
        ("memory", format!("{:.1} GiB", m.memory_gib)),
        ("kernel", m.kernel.clone()),
        ("os", m.os.clone()),
        ("date (UTC)", m.date_utc.clone()),
        (
            "git commit",
            m.git_commit.clone().unwrap_or_else(|| "unknown".into()),
        ),
        ("corfu", m.corfu_version.clone()),
        ("command", format!("`{}`", m.command_line)),
        (
            "load average",
            format!("{} at start, {} at end", m.load_average_start, m.load_average_end),
        ),
        (
            "settings",
            format!(
                "{} s phases; rpc/sequencer {} run(s) of {} s (median); clients {}; {} B values; gets from {} tasks/clients; index rebuild of {} entries; etcd warm-up {} s per run",
                st.phase_seconds,
                st.runs,
                st.short_run_seconds,
                clients.join(","),
                st.value_bytes,
                st.get_clients,
                st.rebuild_entries,
                st.etcd_warmup_seconds
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(w, "| {k} | {} |", cell(&v));
    }
    let _ = writeln!(
        w,
        "\nThe machine may be shared: compare figures within one run, and the load average above.\n"
    );

    if !r.failures.is_empty() || !r.not_run.is_empty() {
        let _ = writeln!(w, "## Not measured\n");
        for f in &r.failures {
            let _ = writeln!(w, "- **{} failed**: {}", f.bench, f.error);
        }
        for b in &r.not_run {
            let _ = writeln!(w, "- {b}: not run (`--only`)");
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## corfu against etcd\n");
    match r.etcd.status {
        EtcdStatus::Measured => {}
        _ => {
            let _ = writeln!(w, "**{}**\n", etcd_status_line(r));
        }
    }
    let etcd_target = r
        .etcd
        .rows
        .first()
        .map(|x| x.target.clone())
        .unwrap_or_else(|| "all".into());
    let _ = writeln!(
        w,
        "corfu: a local 3-node cluster on loopback (one chain of 3 log units, `sync=always`), appends and replicated-map puts of {} B from the objects benchmark. etcd {}: 3 members on loopback, default fsync, clients -> {} member(s), puts of {} B via `etcd-client` (`bench/peer-etcd`). Each task or client has one request in flight; same client counts, same run. Target: corfu >= {}x etcd's puts/s at each client count, and single-client p50 no worse than etcd's.\n",
        st.value_bytes,
        r.etcd.version().unwrap_or("(not measured)"),
        etcd_target,
        st.value_bytes,
        ETCD_RATIO_TARGET
    );
    let _ = writeln!(
        w,
        "| clients | corfu appends/s | corfu map puts/s | etcd puts/s | appends / etcd | map puts / etcd | target | met |\n|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for c in &s.comparison {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | >= {ETCD_RATIO_TARGET:.0}x | {} |",
            c.clients,
            opt(c.corfu_appends_per_s, Unit::PerSec),
            opt(c.corfu_puts_per_s, Unit::PerSec),
            opt(c.etcd_puts_per_s, Unit::PerSec),
            opt(c.appends_ratio, Unit::Ratio),
            opt(c.puts_ratio, Unit::Ratio),
            met(c.met)
        );
    }
    let _ = writeln!(w, "\nSingle client, latency:\n");
    let _ = writeln!(
        w,
        "| corfu op | corfu p50 | corfu p99 | etcd put p50 | etcd put p99 | p50 corfu / etcd | target | met |\n|---|---:|---:|---:|---:|---:|---|---|"
    );
    if s.single_client.is_empty() {
        let _ = writeln!(w, "| – | – | – | – | – | – | <= 1.00x | – |");
    }
    for l in &s.single_client {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | <= 1.00x | {} |",
            l.op,
            format_us(l.corfu_p50_us),
            format_us(l.corfu_p99_us),
            format_us(l.etcd_p50_us),
            format_us(l.etcd_p99_us),
            format_value(l.p50_ratio, Unit::Ratio),
            met(Some(l.met))
        );
    }
    if let (Some(o), Some(g)) = (&r.objects, r.etcd.get()) {
        let _ = writeln!(
            w,
            "\nGets: corfu linearizable gets {} ({} tasks), etcd {} {} ({} clients): ratio {}.",
            format_rate(o.gets.ops_per_s),
            o.gets.tasks,
            etcd_op(&g.op),
            format_rate(g.ops_per_sec),
            g.clients,
            opt(s.gets_ratio, Unit::Ratio)
        );
    }
    if let Some(d) = r.etcd.row("fdatasync_4k", 1) {
        let _ = writeln!(
            w,
            "\nThe disk under etcd: 4 KiB append + fdatasync p50 {}, p99 {} (measured by the peer benchmark before etcd started).",
            format_us(d.p50_us),
            format_us(d.p99_us)
        );
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Plots\n");
    let _ = writeln!(
        w,
        "Throughput against concurrency (log-log; the dashed line is {ETCD_RATIO_TARGET:.0}x etcd's puts, the target):\n\n![throughput](throughput.svg)\n"
    );
    let _ = writeln!(
        w,
        "Latency against concurrency, p50 (solid) and p99 (dashed):\n\n![latency](latency.svg)\n"
    );
    let _ = writeln!(
        w,
        "Latency percentiles of every timed phase (p50 dark, p99 light; etcd in red):\n\n![latency per phase](latency_phases.svg)\n"
    );

    let _ = writeln!(w, "## Every figure\n");
    let _ = writeln!(
        w,
        "| benchmark | figure | value | target | met |\n|---|---|---:|---|---|"
    );
    for f in &s.figures {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            f.bench,
            cell(&f.name),
            format_value(f.value, f.unit),
            f.target
                .map_or_else(|| "–".to_string(), |t| t.format(f.unit)),
            met(f.met)
        );
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Every timed phase\n");
    let _ = writeln!(
        w,
        "| benchmark | phase | tasks | ops/s | p50 | p99 |\n|---|---|---:|---:|---:|---:|"
    );
    for p in &s.phases {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            p.bench,
            cell(&p.phase),
            p.tasks,
            opt(p.ops_per_s, Unit::PerSec),
            format_us(p.p50_us),
            format_us(p.p99_us)
        );
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Timings\n");
    let _ = writeln!(
        w,
        "| part | seconds | load average before |\n|---|---:|---|"
    );
    for t in &r.timings {
        let _ = writeln!(
            w,
            "| {} | {:.1} | {} |",
            t.bench, t.seconds, t.load_average_before
        );
    }
    let _ = writeln!(w, "| all | {:.1} | |", r.total_seconds);
    let _ = writeln!(w);

    let _ = writeln!(w, "## Files\n");
    let _ = writeln!(
        w,
        "- `report.json`: every raw result and this summary (what `--json` prints);"
    );
    let _ = writeln!(
        w,
        "- `etcd.jsonl`: the peer benchmark's JSON lines as printed; `etcd.log`: the end of its stderr;"
    );
    if let Some(cmd) = &r.etcd.command {
        let _ = writeln!(w, "- the peer benchmark ran as `{cmd}`;");
    }
    let _ = writeln!(
        w,
        "- `throughput.svg`, `latency.svg`, `latency_phases.svg`: the plots."
    );
    md
}

/// A short plain-text summary for the terminal.
pub fn summary_text(r: &AllResults) -> String {
    let s = summarize(r);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "bench all: {:.0} s, targets met {} of {}; {}",
        r.total_seconds,
        s.targets_met,
        s.targets_total,
        etcd_status_line(r)
    );
    for f in &s.figures {
        let target = f
            .target
            .map_or_else(String::new, |x| format!("  (target {})", x.format(f.unit)));
        let flag = match f.met {
            Some(false) => "  MISSED",
            _ => "",
        };
        let _ = writeln!(
            t,
            "  {:<10} {:<64} {:>12}{target}{flag}",
            f.bench,
            f.name,
            format_value(f.value, f.unit)
        );
    }
    for b in &r.failures {
        let _ = writeln!(t, "  {} FAILED: {}", b.bench, b.error);
    }
    t
}

/// Writes the report into `dir` (created if missing): report.md,
/// report.json, etcd.jsonl, etcd.log and the three SVG plots.
pub fn write(dir: &Path, r: &AllResults) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let s = summarize(r);
    let put = |name: &str, text: String| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    put(
        "report.json",
        serde_json::to_string_pretty(&serde_json::json!({ "results": r, "summary": &s }))?,
    )?;
    let mut lines = r.etcd.raw_lines.join("\n");
    if !lines.is_empty() {
        lines.push('\n');
    }
    put("etcd.jsonl", lines)?;
    let mut log = r.etcd.log.join("\n");
    if r.etcd.status != EtcdStatus::Measured {
        let _ = write!(log, "\n[bench all] {}", etcd_status_line(r));
    }
    log.push('\n');
    put("etcd.log", log)?;
    plot_throughput(&dir.join("throughput.svg"), r)
        .map_err(|e| anyhow::anyhow!("drawing throughput.svg: {e}"))?;
    plot_latency(&dir.join("latency.svg"), r)
        .map_err(|e| anyhow::anyhow!("drawing latency.svg: {e}"))?;
    plot_phases(&dir.join("latency_phases.svg"), &s.phases)
        .map_err(|e| anyhow::anyhow!("drawing latency_phases.svg: {e}"))?;
    put("report.md", markdown(r, &s))?;
    Ok(())
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

const COLOR_APPENDS: RGBColor = RGBColor(31, 119, 180);
const COLOR_PUTS: RGBColor = RGBColor(44, 160, 44);
const COLOR_ETCD: RGBColor = RGBColor(214, 39, 40);
const COLOR_TARGET: RGBColor = RGBColor(120, 120, 120);

/// A line of a plot.
struct Series {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// `points` of the objects phases at each concurrency.
fn object_points(
    r: &AllResults,
    pick: impl Fn(&super::objects::ObjectsReport) -> &Vec<super::objects::Phase>,
    y: impl Fn(&super::objects::Phase) -> f64,
) -> Vec<(f64, f64)> {
    r.objects.as_ref().map_or_else(Vec::new, |o| {
        pick(o)
            .iter()
            .map(|p| (p.tasks as f64, y(p)))
            .filter(|(_, v)| *v > 0.0)
            .collect()
    })
}

fn etcd_points(r: &AllResults, y: impl Fn(&super::all::EtcdRow) -> f64) -> Vec<(f64, f64)> {
    r.etcd
        .puts()
        .into_iter()
        .map(|row| (row.clients as f64, y(row)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Ticks at 10^k, 2x10^k and 5x10^k inside `[lo, hi]`.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

/// A compact number for an axis: 500, 2K, 1.5M.
fn axis_number(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}K", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_string)
}

/// A log-log line chart of `series` against concurrency.
fn line_chart(
    path: &Path,
    caption: &str,
    y_desc: &str,
    series: &[Series],
    y_axis: fn(f64) -> String,
) -> PlotResult {
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.clone()).collect();
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.4;
    let (mut y_lo, mut y_hi) = all.iter().fold((f64::INFINITY, 0f64), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    if !y_lo.is_finite() || y_hi <= 0.0 {
        (y_lo, y_hi) = (1.0, 10.0);
    }
    let (y_lo, y_hi) = (y_lo / 2.0, y_hi * 2.0);
    let mut x_keys = vec![1.0];
    let mut k = 2.0;
    while k < x_max {
        x_keys.push(k);
        k *= 2.0;
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (0.8f64..x_max).log_scale().with_key_points(x_keys),
            (y_lo..y_hi)
                .log_scale()
                .with_key_points(log_ticks(y_lo, y_hi)),
        )?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (tasks), one request in flight each")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| y_axis(*y))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let color = s.color;
        let style = color.stroke_width(2);
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(s.points.clone(), 8, 5, style))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 3, color.stroke_width(2))
                });
        } else {
            chart
                .draw_series(LineSeries::new(s.points.clone(), style))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
                });
        }
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    if all.is_empty() {
        root.draw(&Text::new(
            "no data: nothing was measured",
            (380, 300),
            ("sans-serif", 18),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Throughput against concurrency: our appends and map puts, etcd's puts,
/// and the 25x-etcd target line.
fn plot_throughput(path: &Path, r: &AllResults) -> PlotResult {
    let etcd = etcd_points(r, |row| row.ops_per_sec);
    let series = [
        Series {
            label: "corfu appends/s".into(),
            color: COLOR_APPENDS,
            dashed: false,
            points: object_points(r, |o| &o.appends, |p| p.ops_per_s),
        },
        Series {
            label: "corfu map puts/s".into(),
            color: COLOR_PUTS,
            dashed: false,
            points: object_points(r, |o| &o.puts, |p| p.ops_per_s),
        },
        Series {
            label: "etcd puts/s".into(),
            color: COLOR_ETCD,
            dashed: false,
            points: etcd.clone(),
        },
        Series {
            label: format!("target: {ETCD_RATIO_TARGET:.0} x etcd puts/s"),
            color: COLOR_TARGET,
            dashed: true,
            points: etcd
                .iter()
                .map(|&(x, y)| (x, y * ETCD_RATIO_TARGET))
                .collect(),
        },
    ];
    line_chart(
        path,
        &format!(
            "Throughput vs concurrency, {} B writes, 3 replicas, fsync",
            r.settings.value_bytes
        ),
        "operations/s (log)",
        &series,
        axis_number,
    )
}

/// p50 and p99 against concurrency for our appends and map puts and
/// etcd's puts.
fn plot_latency(path: &Path, r: &AllResults) -> PlotResult {
    let mut series = Vec::new();
    for (dashed, pct) in [(false, "p50"), (true, "p99")] {
        let y = move |p: &crate::stats::Percentiles| if dashed { p.p99_us } else { p.p50_us };
        series.push(Series {
            label: format!("corfu append {pct}"),
            color: COLOR_APPENDS,
            dashed,
            points: object_points(r, |o| &o.appends, |p| y(&p.latency)),
        });
        series.push(Series {
            label: format!("corfu map put {pct}"),
            color: COLOR_PUTS,
            dashed,
            points: object_points(r, |o| &o.puts, |p| y(&p.latency)),
        });
        series.push(Series {
            label: format!("etcd put {pct}"),
            color: COLOR_ETCD,
            dashed,
            points: etcd_points(r, |row| if dashed { row.p99_us } else { row.p50_us }),
        });
    }
    line_chart(
        path,
        "Latency vs concurrency (p50 solid, p99 dashed)",
        "latency, microseconds (log)",
        &series,
        axis_number,
    )
}

/// Horizontal bars: p50 and p99 of every phase, log scale.
fn plot_phases(path: &Path, phases: &[PhaseRow]) -> PlotResult {
    let rows: Vec<&PhaseRow> = phases.iter().filter(|p| p.p99_us > 0.0).collect();
    let n = rows.len().max(1);
    let height = (90 + 26 * n) as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_lo = rows
        .iter()
        .map(|p| p.p50_us.max(0.1))
        .fold(f64::INFINITY, f64::min);
    let x_hi = rows.iter().map(|p| p.p99_us).fold(0f64, f64::max);
    let (x_lo, x_hi) = if x_lo.is_finite() && x_hi > 0.0 {
        (x_lo / 2.0, x_hi * 2.0)
    } else {
        (1.0, 10.0)
    };
    let labels: Vec<String> = rows
        .iter()
        .map(|p| format!("{}: {}, {}", p.bench, p.phase, p.tasks))
        .collect();
    let width = labels.iter().map(|l| l.len()).max().unwrap_or(10) as u32 * 6 + 16;
    // Row i (0 at the top) spans [10 j, 10 j + 10) with j = n - 1 - i.
    let rows_n = n as i32;
    let keys: Vec<i32> = (0..rows_n).map(|j| 10 * j + 5).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency of every timed phase (p50 dark, p99 light; etcd red)",
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(width)
        .build_cartesian_2d(
            (x_lo..x_hi)
                .log_scale()
                .with_key_points(log_ticks(x_lo, x_hi)),
            (0..10 * rows_n).with_key_points(keys),
        )?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("latency, microseconds (log); label: benchmark: phase, tasks")
        .x_label_formatter(&|x| axis_number(*x))
        .y_label_formatter(&|y| {
            let j = (*y / 10).clamp(0, rows_n - 1) as usize;
            labels.get(n - 1 - j).cloned().unwrap_or_default()
        })
        .label_style(("sans-serif", 12))
        .draw()?;
    for (i, p) in rows.iter().enumerate() {
        let y = 10 * (n - 1 - i) as i32;
        let (dark, light) = if p.etcd {
            (COLOR_ETCD, RGBColor(240, 160, 160))
        } else {
            (COLOR_APPENDS, RGBColor(160, 200, 230))
        };
        chart.draw_series([
            Rectangle::new([(x_lo, y + 1), (p.p99_us, y + 9)], light.filled()),
            Rectangle::new([(x_lo, y + 3), (p.p50_us.max(x_lo), y + 7)], dark.filled()),
        ])?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::all::{
        AllResults, EtcdResult, EtcdRow, EtcdStatus, Failure, MachineInfo, Settings, Timing,
    };
    use super::super::{append, logunit, objects, rpc, sequencer};
    use super::*;
    use crate::stats::Percentiles;

    fn pct(p50: f64, p99: f64) -> Percentiles {
        Percentiles {
            count: 100,
            p50_us: p50,
            p99_us: p99,
            max_us: p99 * 2.0,
        }
    }

    fn phase(op: &'static str, tasks: usize, ops: f64, p50: f64) -> objects::Phase {
        objects::Phase {
            op,
            tasks,
            ops_per_s: ops,
            latency: pct(p50, p50 * 3.0),
            keys: None,
            abort_rate: None,
            reruns_per_commit: None,
        }
    }

    fn etcd_row(op: &str, clients: usize, ops: f64, p50: f64) -> EtcdRow {
        EtcdRow {
            op: op.into(),
            clients,
            value_bytes: if op == "fdatasync_4k" { 4096 } else { 64 },
            ops_per_sec: ops,
            p50_us: p50,
            p99_us: p50 * 4.0,
            seconds: 2.0,
            etcd_version: "3.4.23".into(),
            target: "all".into(),
        }
    }

    /// A hand-made run: every benchmark, and etcd at 1, 16, 64 and 256.
    fn results() -> AllResults {
        let side = |rps: f64, p50: f64| rpc::SideResult {
            pipelined_rps: rps,
            pipelined_rps_runs: vec![rps],
            cpu_us_per_request: 2.0,
            latency: pct(p50, p50 * 2.0),
        };
        let app = |tasks, per_call, aps, p50| append::AppendPhase {
            tasks,
            entries_per_call: per_call,
            appends_per_s: aps,
            latency: pct(p50, p50 * 3.0),
        };
        let clients = vec![1, 16, 64, 256];
        let appends: Vec<_> = [(1, 800.0), (16, 12_000.0), (64, 30_000.0), (256, 60_000.0)]
            .into_iter()
            .map(|(t, v)| phase("append", t, v, 1_000.0 + 100.0 * t as f64))
            .collect();
        let puts: Vec<_> = [(1, 700.0), (16, 10_000.0), (64, 25_000.0), (256, 120_000.0)]
            .into_iter()
            .map(|(t, v)| phase("put", t, v, 1_200.0 + 100.0 * t as f64))
            .collect();
        let mut txn_low = phase("txn", 64, 31_000.0, 2_000.0);
        txn_low.keys = Some(100_000);
        txn_low.abort_rate = Some(0.001);
        txn_low.reruns_per_commit = Some(0.1);
        let mut txn_high = phase("txn", 64, 2_000.0, 9_000.0);
        txn_high.keys = Some(4);
        txn_high.abort_rate = Some(0.4);
        txn_high.reruns_per_commit = Some(0.2);
        AllResults {
            bench: "all",
            machine: MachineInfo {
                cores: 2,
                cpu: "Test CPU".into(),
                memory_gib: 24.0,
                kernel: "6.1.0".into(),
                os: "Debian".into(),
                date_utc: "2025-01-02T03:04:05Z".into(),
                git_commit: Some("abc123".into()),
                corfu_version: "0.1.0".into(),
                command_line: "corfu bench all --report x".into(),
                load_average_start: "0.1 0.2 0.3".into(),
                load_average_end: "1.0 0.5 0.3".into(),
            },
            settings: Settings {
                phase_seconds: 2.0,
                short_run_seconds: 1.0,
                runs: 3,
                rebuild_entries: 500_000,
                clients: clients.clone(),
                value_bytes: 64,
                get_clients: 16,
                etcd_warmup_seconds: 1.0,
            },
            rpc: Some(rpc::RpcReport {
                bench: "rpc",
                concurrency: 256,
                request_bytes: 64,
                response_bytes: 64,
                streams: 256,
                corfu: side(900_000.0, 60.0),
                bare_quinn: side(1_000_000.0, 50.0),
                ratio_rps: 0.9,
                ratio_p50: 1.2,
                ratio_cpu: 1.1,
            }),
            logunit: Some(logunit::LogUnitReport {
                bench: "logunit",
                tasks: 16,
                batch: 256,
                payload_bytes: 64,
                writes_per_s_sync_always: 200_000.0,
                writes_per_s_sync_never: 500_000.0,
                syncs_per_s: 300.0,
                single_write_latency: pct(1_200.0, 3_000.0),
                reads_per_s: 2_000_000.0,
                rebuild_entries_per_s: 1_500_000.0,
                rebuild_entries: 500_000,
                index_bytes_per_entry: 8.4,
                raw_fdatasync_4k: pct(1_000.0, 2_500.0),
                ratio_single_write_p50_to_raw_sync: 1.2,
            }),
            sequencer: Some(sequencer::SequencerReport {
                bench: "sequencer",
                batch: 64,
                batched_tasks: 16,
                single_tasks: 256,
                batched_tokens_per_s: 9_000_000.0,
                single_tokens_per_s: 290_000.0,
                ping_per_s: 400_000.0,
                ratio_single_to_ping: 0.725,
            }),
            append: Some(append::AppendReport {
                bench: "append",
                nodes: 3,
                stripes: 1,
                chain: 3,
                sync: "always".into(),
                payload_bytes: 64,
                single: app(1, 1, 800.0, 1_200.0),
                concurrent: app(64, 1, 22_000.0, 2_900.0),
                batched: app(64, 64, 150_000.0, 25_000.0),
                stream_tail_queries_per_s: 90_000.0,
                playback_entries: 100_000,
                playback_entries_per_s: 1_500_000.0,
                raw_range_reads_per_s: 2_000_000.0,
                ratio_playback_to_raw: 0.75,
                raw_fdatasync_4k: pct(400.0, 900.0),
                ratio_single_p50_to_chain_floor: 1.0,
            }),
            objects: Some(objects::ObjectsReport {
                bench: "objects",
                sync: "always".into(),
                value_bytes: 64,
                appends,
                puts,
                gets: phase("get", 16, 80_000.0, 180.0),
                txn_low_contention: txn_low,
                txn_high_contention: txn_high,
                ratio_puts_to_appends: 2.0,
            }),
            etcd: EtcdResult {
                status: EtcdStatus::Measured,
                reason: None,
                command: Some("bench/peer-etcd/run.sh --json".into()),
                rows: vec![
                    etcd_row("fdatasync_4k", 1, 900.0, 1_100.0),
                    etcd_row("put", 1, 400.0, 2_000.0),
                    etcd_row("put", 16, 1_000.0, 15_000.0),
                    etcd_row("put", 64, 2_000.0, 30_000.0),
                    etcd_row("put", 256, 2_400.0, 100_000.0),
                    etcd_row("get_linearizable", 16, 4_000.0, 4_000.0),
                ],
                raw_lines: vec!["{\"op\":\"put\"}".into()],
                log: vec!["peer-etcd: etcd stopped".into()],
            },
            failures: Vec::new(),
            not_run: Vec::new(),
            timings: vec![Timing {
                bench: "rpc".into(),
                seconds: 8.0,
                load_average_before: "0.1 0.2 0.3".into(),
            }],
            total_seconds: 120.0,
        }
    }

    fn svg_ok(path: &Path) -> String {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.len() > 500, "{} is too small", path.display());
        assert!(text.trim_start().starts_with("<svg"), "{}", path.display());
        assert!(text.trim_end().ends_with("</svg>"), "{}", path.display());
        text
    }

    #[test]
    fn ratios_are_ours_over_etcds() {
        let r = results();
        let c = comparison(&r);
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].clients, 1);
        assert_eq!(c[0].appends_ratio, Some(2.0)); // 800 / 400
        assert_eq!(c[0].puts_ratio, Some(1.75)); // 700 / 400
        assert_eq!(c[0].met, Some(false));
        assert_eq!(c[3].appends_ratio, Some(25.0)); // 60000 / 2400
        assert_eq!(c[3].puts_ratio, Some(50.0)); // 120000 / 2400
        assert_eq!(c[3].met, Some(true));
        let l = single_client(&r);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].op, "append");
        assert!((l[0].p50_ratio - 1_100.0 / 2_000.0).abs() < 1e-12);
        assert!(l[0].met);
        assert_eq!(gets_ratio(&r), Some(20.0)); // 80000 / 4000
    }

    #[test]
    fn targets_are_judged() {
        let s = summarize(&results());
        let find = |name: &str| {
            s.figures
                .iter()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("no figure {name}"))
        };
        assert_eq!(find("map puts, 256 tasks").met, Some(true));
        assert_eq!(find("map puts, 64 tasks").met, None);
        assert_eq!(
            find("batched 64 B writes, sync=always (16 tasks x 256)").met,
            Some(false)
        );
        assert_eq!(find("index memory").met, Some(true));
        assert_eq!(find("single-token requests (256 tasks)").met, Some(false));
        assert_eq!(find("round trip p50, corfu / bare quinn").met, Some(true));
        assert_eq!(find("corfu map puts / etcd puts, 16 clients").value, 10.0);
        assert_eq!(
            find("corfu map puts / etcd puts, 16 clients").met,
            Some(false)
        );
        assert_eq!(
            find("single-client p50, corfu map put / etcd put").met,
            Some(true)
        );
        assert!(s.targets_total > 15);
        assert_eq!(
            s.targets_met,
            s.figures.iter().filter(|f| f.met == Some(true)).count()
        );
    }

    #[test]
    fn report_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let r = results();
        write(dir.path(), &r).unwrap();
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        // The comparison table, its ratios and the single-client p50s.
        assert!(
            md.contains("| 1 | 800/s | 700/s | 400/s | 2.00x | 1.75x | >= 25x | **no** |"),
            "{md}"
        );
        assert!(
            md.contains("| 256 | 60.0K/s | 120.0K/s | 2.4K/s | 25.0x | 50.0x | >= 25x | yes |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| append | 1.10 ms | 3.30 ms | 2.00 ms | 8.00 ms | 0.55x | <= 1.00x | yes |"
            ),
            "{md}"
        );
        // Every figure with its target.
        assert!(md.contains("| objects | map puts, 256 tasks | 120.0K/s | >= 100.0K/s | yes |"));
        assert!(md.contains(
            "| objects | linearizable gets, 16 tasks | 80.0K/s | >= 200.0K/s | **no** |"
        ));
        assert!(md.contains("| logunit | index memory | 8.4 B/entry | <= 32.0 B/entry | yes |"));
        assert!(md.contains("| rpc | CPU per request, corfu / bare quinn | 1.10x | – | – |"));
        assert!(md.contains(
            "| etcd | corfu appends / etcd puts, 64 clients | 15.0x | >= 25.0x | **no** |"
        ));
        assert!(md.contains("| objects | appends, 1 task | 800/s | – | – |"));
        assert!(md.contains("| etcd | etcd linearizable gets, 16 clients | 4.0K/s | – | – |"));
        assert!(md.contains("etcd linearizable gets 4.0K/s (16 clients): ratio 20.0x."));
        // Machine, phases, plots.
        assert!(md.contains("| cores | 2 |"));
        assert!(md.contains("| git commit | abc123 |"));
        assert!(md.contains("etcd: measured (etcd 3.4.23, 6 rows)"));
        assert!(md.contains("| etcd | put | 256 | 2.4K/s | 100.00 ms | 400.00 ms |"));
        for svg in ["throughput.svg", "latency.svg", "latency_phases.svg"] {
            assert!(md.contains(&format!("]({svg})")));
        }
        let t = svg_ok(&dir.path().join("throughput.svg"));
        assert!(t.contains("etcd puts/s") && t.contains("corfu map puts/s"));
        assert!(t.contains("<polyline") || t.contains("<path"));
        let l = svg_ok(&dir.path().join("latency.svg"));
        assert!(l.contains("etcd put p99"));
        let p = svg_ok(&dir.path().join("latency_phases.svg"));
        assert!(p.contains("<rect"));
        assert!(p.contains("objects: map put, 256"));
        // Raw results and etcd's lines.
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["results"]["etcd"]["status"], "measured");
        assert_eq!(json["summary"]["comparison"][3]["puts_ratio"], 50.0);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etcd.jsonl")).unwrap(),
            "{\"op\":\"put\"}\n"
        );
    }

    #[test]
    fn without_etcd_the_report_says_why_and_keeps_our_figures() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = results();
        r.etcd = EtcdResult::not_measured("apt-get install failed");
        r.sequencer = None;
        r.failures.push(Failure {
            bench: "sequencer".into(),
            error: "boom".into(),
        });
        write(dir.path(), &r).unwrap();
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("etcd: NOT MEASURED: apt-get install failed"));
        assert!(md.contains("**sequencer failed**: boom"));
        assert!(md.contains("| 256 | 60.0K/s | 120.0K/s | – | – | – | >= 25x | – |"));
        assert!(md.contains("| objects | map puts, 256 tasks | 120.0K/s |"));
        assert!(!md.contains("| sequencer |"));
        for svg in ["throughput.svg", "latency.svg", "latency_phases.svg"] {
            svg_ok(&dir.path().join(svg));
        }
        let text = summary_text(&r);
        assert!(text.contains("etcd: NOT MEASURED"));
        assert!(text.contains("sequencer FAILED: boom"));
    }

    #[test]
    fn values_format() {
        assert_eq!(format_value(394.2, Unit::PerSec), "394/s");
        assert_eq!(format_value(35_210.0, Unit::PerSec), "35.2K/s");
        assert_eq!(format_value(1_480_000.0, Unit::PerSec), "1.48M/s");
        assert_eq!(format_value(85.31, Unit::Micros), "85.3 us");
        assert_eq!(format_value(2_210.0, Unit::Micros), "2.21 ms");
        assert_eq!(format_value(0.5, Unit::Ratio), "0.50x");
        assert_eq!(format_value(123.4, Unit::Ratio), "123x");
        assert_eq!(format_value(0.001, Unit::Percent), "0.1%");
        assert_eq!(log_ticks(3.0, 120.0), vec![5.0, 10.0, 20.0, 50.0, 100.0]);
        assert_eq!(axis_number(1_500_000.0), "1.5M");
        assert_eq!(axis_number(2_000.0), "2K");
    }
}
