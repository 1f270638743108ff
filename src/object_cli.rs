//! `corfu map|counter|queue|register|set ...`: replicated objects from the
//! command line, through an [`smr::Runtime`] over a [`LogClient`].
//!
//! Keys, values and items are strings: the objects are
//! `ReplicatedMap<String, String>`, `ReplicatedCounter`,
//! `ReplicatedQueue<String>`, `ReplicatedRegister<String>` and
//! `ReplicatedSet<String>`. `NAME` is the object's name, and its stream is
//! the stream of that name (`corfu log stream --cluster C NAME` shows its
//! raw entries). A program opening the same name with the same types sees
//! the same object.
//!
//! ```text
//! corfu map get|remove --cluster C NAME KEY     map put --cluster C NAME KEY VALUE
//! corfu map list --cluster C NAME               KEY<TAB>VALUE lines, in key order
//! corfu counter get --cluster C NAME            counter add --cluster C NAME DELTA
//! corfu queue push --cluster C NAME ITEM...     pushed in the order given
//! corfu queue pop|peek|len|list --cluster C NAME
//! corfu register get --cluster C NAME           register set --cluster C NAME VALUE
//! corfu set add|remove|contains --cluster C NAME ITEM     set list --cluster C NAME
//! ```
//!
//! Every command takes `--cluster FILE` (the client config, `cluster.toml`)
//! and `--json`, like `corfu log`. Results go to stdout, one line each: the
//! bare value in text (control characters escaped, so one result is one
//! line), one JSON object per line with `--json` (values exact). Writes
//! print the address of their entry; `counter add` prints the value right
//! after its increment, in log order.
//!
//! Exit status: 0 done; 1 an error (one `error:` line on stderr); 2 bad
//! usage (clap's); [`EXIT_NOTHING`] (3) when there was nothing to print: a
//! `get` of an absent key or an unset register, a `pop` or `peek` of an
//! empty queue. Then text mode prints nothing on stdout and a one-line
//! note on stderr; `--json` prints the result with a `null` value.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::json;

use corfu_core::client::LogClient;
use corfu_core::client_config::ClientConfig;
use objects::{
    ReplicatedCounter, ReplicatedMap, ReplicatedQueue, ReplicatedRegister, ReplicatedSet,
};
use smr::Runtime;

use crate::log_cli::CommonArgs;

/// The exit status of a command that had nothing to print (an absent key,
/// an unset register, an empty queue).
pub const EXIT_NOTHING: i32 = 3;

/// The log filter of the object commands when `RUST_LOG` is not set:
/// warnings, except the runtime's (`smr`), whose only report is the error
/// log of a view stopped by an undecodable entry, which the command
/// returns as its one `error:` line anyway.
pub const LOG_FILTER_DEFAULT: &str = "warn,smr=off";

/// The exit statuses, shown at the end of every object command's help.
pub const EXIT_HELP: &str = "Keys, values and items are strings. Exit status: 0 done; 1 error \
(one `error:` line on stderr); 2 bad usage; 3 nothing to print (get of an absent key or an unset \
register, pop or peek of an empty queue: a note on stderr, or a null value with --json).";

/// The object commands, each a top-level command of `corfu`.
#[derive(clap::Subcommand, Debug)]
pub enum ObjectCommand {
    /// A replicated map of strings to strings: get, put, remove, list.
    #[command(subcommand, after_help = EXIT_HELP)]
    Map(MapCommand),
    /// A replicated signed 64-bit counter: get, add.
    #[command(subcommand, after_help = EXIT_HELP)]
    Counter(CounterCommand),
    /// A replicated FIFO queue of strings: push, pop, peek, len, list.
    #[command(subcommand, after_help = EXIT_HELP)]
    Queue(QueueCommand),
    /// A replicated register holding one string: get, set.
    #[command(subcommand, after_help = EXIT_HELP)]
    Register(RegisterCommand),
    /// A replicated set of strings: add, remove, contains, list.
    #[command(subcommand, after_help = EXIT_HELP)]
    Set(SetCommand),
}

/// `corfu map ...`: a `ReplicatedMap<String, String>`.
#[derive(clap::Subcommand, Debug)]
pub enum MapCommand {
    /// Print the value of KEY (exit 3 if absent).
    #[command(after_help = EXIT_HELP)]
    Get(KeyArgs),
    /// Set KEY to VALUE; print the entry's address.
    #[command(after_help = EXIT_HELP)]
    Put(PutArgs),
    /// Remove KEY (whether or not present); print the entry's address.
    #[command(after_help = EXIT_HELP)]
    Remove(KeyArgs),
    /// Print every key and value (key, a tab, value), in key order.
    #[command(after_help = EXIT_HELP)]
    List(NameArgs),
}

/// `corfu counter ...`: a `ReplicatedCounter`.
#[derive(clap::Subcommand, Debug)]
pub enum CounterCommand {
    /// Print the value (a counter starts at 0).
    #[command(after_help = EXIT_HELP)]
    Get(NameArgs),
    /// Add DELTA (may be negative; wraps on overflow) and print the value
    /// right after this increment, in log order.
    #[command(after_help = EXIT_HELP)]
    Add(AddArgs),
}

/// `corfu queue ...`: a `ReplicatedQueue<String>`.
#[derive(clap::Subcommand, Debug)]
pub enum QueueCommand {
    /// Push each ITEM at the back, in the order given; print each address.
    #[command(after_help = EXIT_HELP)]
    Push(PushArgs),
    /// Take the front item and print it (exit 3 if the queue is empty).
    /// No other pop, from any process, gets the same item.
    #[command(after_help = EXIT_HELP)]
    Pop(NameArgs),
    /// Print the front item without taking it (exit 3 if empty).
    #[command(after_help = EXIT_HELP)]
    Peek(NameArgs),
    /// Print the number of items.
    #[command(after_help = EXIT_HELP)]
    Len(NameArgs),
    /// Print every item, front first.
    #[command(after_help = EXIT_HELP)]
    List(NameArgs),
}

/// `corfu register ...`: a `ReplicatedRegister<String>`.
#[derive(clap::Subcommand, Debug)]
pub enum RegisterCommand {
    /// Print the value (exit 3 if never set).
    #[command(after_help = EXIT_HELP)]
    Get(NameArgs),
    /// Set the value; print the entry's address.
    #[command(after_help = EXIT_HELP)]
    Set(ValueArgs),
}

/// `corfu set ...`: a `ReplicatedSet<String>`.
#[derive(clap::Subcommand, Debug)]
pub enum SetCommand {
    /// Add ITEM; print the entry's address.
    #[command(after_help = EXIT_HELP)]
    Add(ItemArgs),
    /// Remove ITEM (whether or not present); print the entry's address.
    #[command(after_help = EXIT_HELP)]
    Remove(ItemArgs),
    /// Print `true` or `false`: whether ITEM is a member.
    #[command(after_help = EXIT_HELP)]
    Contains(ItemArgs),
    /// Print every member, in order.
    #[command(after_help = EXIT_HELP)]
    List(NameArgs),
}

/// Arguments of a command on a whole object.
#[derive(clap::Args, Debug)]
pub struct NameArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The object's name (its stream's name).
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// Arguments of `map get` and `map remove`.
#[derive(clap::Args, Debug)]
pub struct KeyArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The map's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The key.
    #[arg(value_name = "KEY", allow_hyphen_values = true)]
    pub key: String,
}

/// Arguments of `map put`.
#[derive(clap::Args, Debug)]
pub struct PutArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The map's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The key.
    #[arg(value_name = "KEY", allow_hyphen_values = true)]
    pub key: String,
    /// Its new value.
    #[arg(value_name = "VALUE", allow_hyphen_values = true)]
    pub value: String,
}

/// Arguments of `counter add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The counter's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The increment, a 64-bit integer (negative to decrement).
    #[arg(value_name = "DELTA", allow_hyphen_values = true)]
    pub delta: String,
}

/// Arguments of `queue push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The queue's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The items, pushed one after the other (put items that begin with
    /// `-` after `--`: `push --cluster C q -- -1 -2`).
    #[arg(value_name = "ITEM", required = true, num_args = 1..)]
    pub items: Vec<String>,
}

/// Arguments of `register set`.
#[derive(clap::Args, Debug)]
pub struct ValueArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The register's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The new value.
    #[arg(value_name = "VALUE", allow_hyphen_values = true)]
    pub value: String,
}

/// Arguments of `set add`, `set remove` and `set contains`.
#[derive(clap::Args, Debug)]
pub struct ItemArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The set's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The element.
    #[arg(value_name = "ITEM", allow_hyphen_values = true)]
    pub item: String,
}

impl ObjectCommand {
    /// The `--cluster` and `--json` of the command.
    pub fn common(&self) -> &CommonArgs {
        match self {
            ObjectCommand::Map(MapCommand::Get(a) | MapCommand::Remove(a)) => &a.common,
            ObjectCommand::Map(MapCommand::Put(a)) => &a.common,
            ObjectCommand::Map(MapCommand::List(a))
            | ObjectCommand::Counter(CounterCommand::Get(a))
            | ObjectCommand::Queue(
                QueueCommand::Pop(a)
                | QueueCommand::Peek(a)
                | QueueCommand::Len(a)
                | QueueCommand::List(a),
            )
            | ObjectCommand::Register(RegisterCommand::Get(a))
            | ObjectCommand::Set(SetCommand::List(a)) => &a.common,
            ObjectCommand::Counter(CounterCommand::Add(a)) => &a.common,
            ObjectCommand::Queue(QueueCommand::Push(a)) => &a.common,
            ObjectCommand::Register(RegisterCommand::Set(a)) => &a.common,
            ObjectCommand::Set(
                SetCommand::Add(a) | SetCommand::Remove(a) | SetCommand::Contains(a),
            ) => &a.common,
        }
    }
}

/// What a command printed, or had nothing to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: exit 0.
    Done,
    /// Nothing to print (an absent key, an unset register, an empty
    /// queue): exit [`EXIT_NOTHING`].
    Nothing,
}

/// What a command has to say: its stdout lines, and, if it had nothing to
/// print, the note for stderr (used in text mode only; with `--json` the
/// lines say it with a `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The result lines, text or JSON.
    pub lines: Vec<String>,
    /// Set when there was nothing to print: why.
    pub nothing: Option<String>,
}

impl Report {
    fn line(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// The outcome the report stands for.
    pub fn outcome(&self) -> Outcome {
        if self.nothing.is_some() {
            Outcome::Nothing
        } else {
            Outcome::Done
        }
    }
}

/// Runs an object command against the cluster of its `--cluster` file:
/// prints the result lines on stdout (and, in text mode, the note of an
/// empty result on stderr). Errors come back as an [`anyhow::Error`] that
/// reads as one line.
pub async fn run(command: ObjectCommand) -> anyhow::Result<Outcome> {
    let common = command.common();
    let path = common.cluster.clone();
    let json = common.json;
    let config = ClientConfig::load(&path)?;
    let client = connect(&config, &path).await?;
    let runtime = Runtime::new(client.clone());
    let report = execute(&runtime, &command).await;
    client.close();
    let report = report?;
    let mut stdout = std::io::stdout().lock();
    for line in &report.lines {
        writeln!(stdout, "{line}").context("writing to stdout")?;
    }
    stdout.flush().context("writing to stdout")?;
    if let (Some(note), false) = (&report.nothing, json) {
        eprintln!("{note}");
    }
    Ok(report.outcome())
}

async fn connect(config: &ClientConfig, path: &Path) -> anyhow::Result<LogClient> {
    LogClient::connect(config)
        .await
        .with_context(|| format!("connecting to the cluster of {}", path.display()))
}

/// Runs `command` on `runtime` and says what to print. The runtime may be
/// over any shared log (the tests use a `MemoryLog`).
pub async fn execute(runtime: &Runtime, command: &ObjectCommand) -> anyhow::Result<Report> {
    let json = command.common().json;
    let mut report = Report::default();
    match command {
        ObjectCommand::Map(which) => map(runtime, which, json, &mut report).await?,
        ObjectCommand::Counter(which) => counter(runtime, which, json, &mut report).await?,
        ObjectCommand::Queue(which) => queue(runtime, which, json, &mut report).await?,
        ObjectCommand::Register(which) => register(runtime, which, json, &mut report).await?,
        ObjectCommand::Set(which) => set(runtime, which, json, &mut report).await?,
    }
    Ok(report)
}

/// An object's error as one line. (`smr::Error` already names the object,
/// and its message includes its source's, so the chain is not repeated.)
fn object_error(e: smr::Error) -> anyhow::Error {
    anyhow::Error::msg(e.to_string())
}

fn open<O: smr::Object>(runtime: &Runtime, name: &str) -> anyhow::Result<O> {
    runtime.open::<O>(name).map_err(object_error)
}

/// `text` on one line: control characters (newlines, tabs, ...) escaped.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses a counter increment (a signed 64-bit decimal integer).
pub fn parse_delta(text: &str) -> anyhow::Result<i64> {
    text.trim().parse::<i64>().map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "outside the 64-bit range"
            }
            std::num::IntErrorKind::Empty => "empty",
            _ => "not an integer",
        };
        anyhow::anyhow!("invalid DELTA {text:?}: {why}")
    })
}

async fn map(
    runtime: &Runtime,
    command: &MapCommand,
    json: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    type Map = ReplicatedMap<String, String>;
    match command {
        MapCommand::Get(a) => {
            let m: Map = open(runtime, &a.name)?;
            let value = m.get(&a.key).await.map_err(object_error)?;
            if json {
                report.line(json!({"map": a.name, "key": a.key, "value": value}).to_string());
            }
            match value {
                Some(value) if !json => report.line(one_line(&value)),
                Some(_) => {}
                None => {
                    report.nothing = Some(format!("map {:?} has no key {:?}", a.name, a.key));
                }
            }
        }
        MapCommand::Put(a) => {
            let m: Map = open(runtime, &a.name)?;
            let address = m
                .insert(a.key.clone(), a.value.clone())
                .await
                .map_err(object_error)?;
            report.line(if json {
                json!({"map": a.name, "op": "put", "key": a.key, "value": a.value, "address": address})
                    .to_string()
            } else {
                format!("put {} at {address}", one_line(&a.key))
            });
        }
        MapCommand::Remove(a) => {
            let m: Map = open(runtime, &a.name)?;
            let address = m.remove(a.key.clone()).await.map_err(object_error)?;
            report.line(if json {
                json!({"map": a.name, "op": "remove", "key": a.key, "address": address}).to_string()
            } else {
                format!("removed {} at {address}", one_line(&a.key))
            });
        }
        MapCommand::List(a) => {
            let m: Map = open(runtime, &a.name)?;
            for (key, value) in m.snapshot().await.map_err(object_error)? {
                report.line(if json {
                    json!({"map": a.name, "key": key, "value": value}).to_string()
                } else {
                    // Tabs in keys are escaped: the first tab splits.
                    format!("{}\t{}", one_line(&key), one_line(&value))
                });
            }
        }
    }
    Ok(())
}

async fn counter(
    runtime: &Runtime,
    command: &CounterCommand,
    json: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    match command {
        CounterCommand::Get(a) => {
            let c: ReplicatedCounter = open(runtime, &a.name)?;
            let value = c.get().await.map_err(object_error)?;
            report.line(if json {
                json!({"counter": a.name, "value": value}).to_string()
            } else {
                value.to_string()
            });
        }
        CounterCommand::Add(a) => {
            let delta = parse_delta(&a.delta)?;
            let c: ReplicatedCounter = open(runtime, &a.name)?;
            let value = c.add_and_get(delta).await.map_err(object_error)?;
            report.line(if json {
                json!({"counter": a.name, "delta": delta, "value": value}).to_string()
            } else {
                value.to_string()
            });
        }
    }
    Ok(())
}

async fn queue(
    runtime: &Runtime,
    command: &QueueCommand,
    json: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    type Queue = ReplicatedQueue<String>;
    match command {
        QueueCommand::Push(a) => {
            let q: Queue = open(runtime, &a.name)?;
            // One after the other: the queue's order is the order given.
            for item in &a.items {
                let address = q.push(item.clone()).await.map_err(object_error)?;
                report.line(if json {
                    json!({"queue": a.name, "op": "push", "item": item, "address": address})
                        .to_string()
                } else {
                    format!("pushed {} at {address}", one_line(item))
                });
            }
        }
        QueueCommand::Pop(a) | QueueCommand::Peek(a) => {
            let q: Queue = open(runtime, &a.name)?;
            let item = if matches!(command, QueueCommand::Pop(_)) {
                q.pop().await
            } else {
                q.peek().await
            }
            .map_err(object_error)?;
            if json {
                report.line(json!({"queue": a.name, "item": item}).to_string());
            }
            match item {
                Some(item) if !json => report.line(one_line(&item)),
                Some(_) => {}
                None => report.nothing = Some(format!("queue {:?} is empty", a.name)),
            }
        }
        QueueCommand::Len(a) => {
            let q: Queue = open(runtime, &a.name)?;
            let len = q.len().await.map_err(object_error)?;
            report.line(if json {
                json!({"queue": a.name, "len": len}).to_string()
            } else {
                len.to_string()
            });
        }
        QueueCommand::List(a) => {
            let q: Queue = open(runtime, &a.name)?;
            let items = q.snapshot().await.map_err(object_error)?;
            for (position, item) in items.iter().enumerate() {
                report.line(if json {
                    json!({"queue": a.name, "position": position, "item": item}).to_string()
                } else {
                    one_line(item)
                });
            }
        }
    }
    Ok(())
}

async fn register(
    runtime: &Runtime,
    command: &RegisterCommand,
    json: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    type Register = ReplicatedRegister<String>;
    match command {
        RegisterCommand::Get(a) => {
            let r: Register = open(runtime, &a.name)?;
            let value = r.get().await.map_err(object_error)?;
            if json {
                report.line(json!({"register": a.name, "value": value}).to_string());
            }
            match value {
                Some(value) if !json => report.line(one_line(&value)),
                Some(_) => {}
                None => report.nothing = Some(format!("register {:?} is not set", a.name)),
            }
        }
        RegisterCommand::Set(a) => {
            let r: Register = open(runtime, &a.name)?;
            let address = r.set(a.value.clone()).await.map_err(object_error)?;
            report.line(if json {
                json!({"register": a.name, "op": "set", "value": a.value, "address": address})
                    .to_string()
            } else {
                format!("set at {address}")
            });
        }
    }
    Ok(())
}

async fn set(
    runtime: &Runtime,
    command: &SetCommand,
    json: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    type Set = ReplicatedSet<String>;
    match command {
        SetCommand::Add(a) | SetCommand::Remove(a) => {
            let s: Set = open(runtime, &a.name)?;
            let added = matches!(command, SetCommand::Add(_));
            let address = if added {
                s.insert(a.item.clone()).await
            } else {
                s.remove(a.item.clone()).await
            }
            .map_err(object_error)?;
            let (op, verb) = if added {
                ("add", "added")
            } else {
                ("remove", "removed")
            };
            report.line(if json {
                json!({"set": a.name, "op": op, "item": a.item, "address": address}).to_string()
            } else {
                format!("{verb} {} at {address}", one_line(&a.item))
            });
        }
        SetCommand::Contains(a) => {
            let s: Set = open(runtime, &a.name)?;
            let member = s.contains(&a.item).await.map_err(object_error)?;
            report.line(if json {
                json!({"set": a.name, "item": a.item, "contains": member}).to_string()
            } else {
                member.to_string()
            });
        }
        SetCommand::List(a) => {
            let s: Set = open(runtime, &a.name)?;
            for item in s.snapshot().await.map_err(object_error)? {
                report.line(if json {
                    json!({"set": a.name, "item": item}).to_string()
                } else {
                    one_line(&item)
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::Value;
    use smr::MemoryLog;

    /// The object commands as `corfu` parses them.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: ObjectCommand,
    }

    /// Parses `corfu ARGS` (with `--cluster` added) and runs it on `rt`.
    async fn exec(rt: &Runtime, args: &[&str]) -> anyhow::Result<Report> {
        let mut argv = vec!["corfu"];
        argv.extend_from_slice(&args[..2.min(args.len())]);
        argv.extend_from_slice(&["--cluster", "unused.toml"]);
        argv.extend_from_slice(&args[2.min(args.len())..]);
        let cli = Cli::try_parse_from(argv)?;
        execute(rt, &cli.command).await
    }

    fn json_lines(report: &Report) -> Vec<Value> {
        report
            .lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn flags_anywhere_and_values_with_hyphens() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["corfu"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|cli| cli.command)
        };
        let c = ["--cluster", "c.toml"];
        let Ok(ObjectCommand::Queue(QueueCommand::Push(a))) = parse(
            &[
                &["queue", "push"],
                &c[..],
                &["q", "a", "--json", "--", "-b"],
            ]
            .concat(),
        ) else {
            panic!("queue push did not parse");
        };
        assert_eq!(
            (a.items, a.common.json),
            (vec!["a".into(), "-b".into()], true)
        );
        let Ok(ObjectCommand::Counter(CounterCommand::Add(a))) =
            parse(&["counter", "add", "--json", "n", "-5", "--cluster", "c.toml"])
        else {
            panic!("counter add did not parse");
        };
        assert_eq!((a.delta.as_str(), a.common.json), ("-5", true));
        let Ok(ObjectCommand::Map(MapCommand::Put(a))) =
            parse(&[&["map", "put"], &c[..], &["m", "--json", "-k", "-v"]].concat())
        else {
            panic!("map put did not parse");
        };
        assert_eq!(
            (a.key.as_str(), a.value.as_str(), a.common.json),
            ("-k", "-v", true)
        );
        // --cluster is required.
        assert!(parse(&["map", "get", "m", "k"]).is_err());
    }

    #[test]
    fn deltas_are_signed_integers_and_text_is_one_line() {
        assert_eq!(parse_delta("-5").unwrap(), -5);
        assert_eq!(parse_delta(" 7 ").unwrap(), 7);
        assert_eq!(
            parse_delta("abc").unwrap_err().to_string(),
            "invalid DELTA \"abc\": not an integer"
        );
        assert_eq!(
            parse_delta("9223372036854775808").unwrap_err().to_string(),
            "invalid DELTA \"9223372036854775808\": outside the 64-bit range"
        );
        assert!(parse_delta("").is_err());
        assert_eq!(one_line("a\tb\nc"), "a\\tb\\nc");
        assert_eq!(one_line("plain words"), "plain words");
    }

    #[tokio::test]
    async fn commands_print_results_and_say_when_there_is_nothing() {
        let log = MemoryLog::new();
        let rt = Runtime::new(log.clone());
        let r = exec(&rt, &["map", "put", "m", "k", "v 1"]).await.unwrap();
        assert_eq!(r.lines, vec!["put k at 0"]);
        let r = exec(&rt, &["map", "get", "m", "k"]).await.unwrap();
        assert_eq!(
            (r.lines.clone(), r.outcome()),
            (vec!["v 1".into()], Outcome::Done)
        );
        let r = exec(&rt, &["map", "get", "m", "nope", "--json"])
            .await
            .unwrap();
        assert_eq!(r.outcome(), Outcome::Nothing);
        assert_eq!(
            json_lines(&r),
            vec![json!({"map": "m", "key": "nope", "value": null})]
        );

        // A negative delta is a value, not an option.
        let r = exec(&rt, &["counter", "add", "c", "-5"]).await.unwrap();
        assert_eq!(r.lines, vec!["-5"]);
        let r = exec(&rt, &["counter", "add", "c", "12", "--json"])
            .await
            .unwrap();
        assert_eq!(
            json_lines(&r),
            vec![json!({"counter": "c", "delta": 12, "value": 7})]
        );
        assert!(exec(&rt, &["counter", "add", "c", "x"]).await.is_err());

        let r = exec(&rt, &["queue", "push", "q", "a", "b\tc"])
            .await
            .unwrap();
        assert_eq!(r.lines.len(), 2);
        assert!(r.lines[1].starts_with("pushed b\\tc at "), "{:?}", r.lines);
        let r = exec(&rt, &["queue", "pop", "q", "--json"]).await.unwrap();
        assert_eq!(json_lines(&r), vec![json!({"queue": "q", "item": "a"})]);
        let r = exec(&rt, &["queue", "pop", "q"]).await.unwrap();
        assert_eq!(r.lines, vec!["b\\tc"]);
        let r = exec(&rt, &["queue", "pop", "q"]).await.unwrap();
        assert!(r.lines.is_empty());
        assert_eq!(r.nothing.as_deref(), Some("queue \"q\" is empty"));

        let r = exec(&rt, &["register", "get", "r"]).await.unwrap();
        assert_eq!(r.outcome(), Outcome::Nothing);
        exec(&rt, &["register", "set", "r", "-x-"]).await.unwrap();
        let r = exec(&rt, &["register", "get", "r"]).await.unwrap();
        assert_eq!(r.lines, vec!["-x-"]);

        exec(&rt, &["set", "add", "s", "b"]).await.unwrap();
        exec(&rt, &["set", "add", "s", "a"]).await.unwrap();
        let r = exec(&rt, &["set", "contains", "s", "c"]).await.unwrap();
        assert_eq!(
            (r.lines.clone(), r.outcome()),
            (vec!["false".into()], Outcome::Done)
        );
        let r = exec(&rt, &["set", "list", "s"]).await.unwrap();
        assert_eq!(r.lines, vec!["a", "b"]);

        // The stream of "m" holds map ops: it is no counter (in another
        // process; this runtime refuses to open it as one at all).
        assert!(exec(&rt, &["counter", "get", "m"]).await.is_err());
        let e = exec(&Runtime::new(log.clone()), &["counter", "get", "m"])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("opened as \"corfu.counter\"") && e.contains("is \"corfu.map\""),
            "{e}"
        );

        // A queue's stream is no set: listing it and removing from it fail
        // (in a new process, like a new `corfu` command), and the queue
        // still holds its item.
        exec(&rt, &["queue", "push", "q2", "job-1"]).await.unwrap();
        for args in [
            &["set", "list", "q2"][..],
            &["set", "remove", "q2", "job-1"],
        ] {
            let e = exec(&Runtime::new(log.clone()), args)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("opened as \"corfu.set\"") && e.contains("is \"corfu.queue\""),
                "{args:?}: {e}"
            );
        }
        let r = exec(&Runtime::new(log), &["queue", "list", "q2"])
            .await
            .unwrap();
        assert_eq!(r.lines, vec!["job-1"]);
    }
}
