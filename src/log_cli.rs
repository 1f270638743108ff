//! `corfu log ...`: the shared log from the command line, through a
//! [`LogClient`].
//!
//! Every command takes `--cluster FILE` (a client config, `cluster.toml`)
//! and `--json`. Results go to stdout, one line each: compact text by
//! default, one JSON object per line with `--json`. Payloads are shown as
//! UTF-8 text (invalid sequences replaced); in text, control characters are
//! escaped and long values are cut to a preview, in JSON they are given
//! whole with their length in `"bytes"`.
//!
//! ```text
//! corfu log append --cluster C [--stream NAME]... [DATA]     DATA, or stdin as one entry
//! corfu log append --cluster C --count K [--prefix P] ...    P-0 .. P-(K-1), concurrently
//! corfu log read   --cluster C ADDR [--to ADDR]              [ADDR, TO): data, junk, unwritten, trimmed
//! corfu log tail   --cluster C [--stream NAME]               next address / stream's last address
//! corfu log fill   --cluster C ADDR                          complete ADDR (copy or junk)
//! corfu log trim   --cluster C ADDR                          trim the log below ADDR
//! corfu log stream --cluster C NAME [--from A] [--to B]      a stream's entries
//! ```
//!
//! Errors (an unreadable config, an unreachable cluster, a bad address, a
//! failed append) come back as an [`anyhow::Error`] whose chain reads as
//! one line; the `corfu` binary prints it on stderr and exits non-zero.

use std::ffi::OsString;
use std::fmt::Display;
use std::io::{BufWriter, IsTerminal, Read, Stdout, Write};
use std::num::IntErrorKind;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use corfu_core::client::{ClientError, LogClient};
use corfu_core::client_config::ClientConfig;
use corfu_core::types::{Address, StreamId};
use corfu_core::wire::logunit::{Entry, ReadOutcome};

/// Appends of `log append --count` outstanding at once; the client batches
/// concurrent appends, so this bounds the batch sizes the command can reach
/// and the memory it holds.
pub const APPEND_CONCURRENCY: usize = 256;

/// The most addresses one `log read ADDR --to TO` may cover.
pub const READ_RANGE_MAX: u64 = 1_000_000;

/// Addresses read (and printed) per `read_range` call of `log read`.
const READ_CHUNK: u64 = 4096;

/// Characters of a payload shown in text output before it is cut.
pub const PREVIEW_CHARS: usize = 100;

/// `corfu log ...` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum LogCommand {
    /// Append DATA (or all of stdin) as one entry, or with --count K the K
    /// values PREFIX-0 .. PREFIX-(K-1) concurrently; prints each address.
    Append(AppendArgs),
    /// Print what ADDR holds (data, junk, unwritten, trimmed), or every
    /// address of [ADDR, TO).
    Read(ReadArgs),
    /// Print the log's tail (the next address the sequencer grants), or
    /// the last address of a stream.
    Tail(TailArgs),
    /// Complete ADDR now (copy its value down its chain, or junk it) and
    /// print what it holds.
    Fill(AddressArgs),
    /// Trim the log below ADDR on every log unit and print the trim mark.
    Trim(AddressArgs),
    /// Print the entries of stream NAME in [FROM, TO), in address order.
    Stream(StreamArgs),
}

/// The options every `corfu log` command takes.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// The client config of the cluster (cluster.toml).
    #[arg(long, value_name = "FILE")]
    pub cluster: PathBuf,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `corfu log append`.
#[derive(clap::Args, Debug)]
pub struct AppendArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Make the entries members of this stream (repeatable).
    #[arg(long = "stream", value_name = "NAME")]
    pub streams: Vec<String>,
    /// Append this many values, PREFIX-0 .. PREFIX-(K-1), concurrently.
    #[arg(long, value_name = "K", conflicts_with = "data")]
    pub count: Option<u64>,
    /// The prefix of the --count values [default: value].
    #[arg(long, value_name = "P", requires = "count")]
    pub prefix: Option<String>,
    /// The entry; without it (and without --count) all of stdin is one
    /// entry.
    #[arg(value_name = "DATA", allow_hyphen_values = true)]
    pub data: Option<OsString>,
}

/// Arguments of `corfu log read`.
#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The (first) address.
    #[arg(value_name = "ADDR", allow_hyphen_values = true)]
    pub address: String,
    /// Read up to this address (exclusive).
    #[arg(long, value_name = "ADDR", allow_hyphen_values = true)]
    pub to: Option<String>,
}

/// Arguments of `corfu log tail`.
#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print this stream's last address instead of the log's tail.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
}

/// Arguments of `corfu log fill` and `corfu log trim`.
#[derive(clap::Args, Debug)]
pub struct AddressArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The address.
    #[arg(value_name = "ADDR", allow_hyphen_values = true)]
    pub address: String,
}

/// Arguments of `corfu log stream`.
#[derive(clap::Args, Debug)]
pub struct StreamArgs {
    /// --cluster and --json.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The stream's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The first address to look at [default: 0].
    #[arg(long, value_name = "ADDR", allow_hyphen_values = true)]
    pub from: Option<String>,
    /// Stop before this address [default: the log's tail].
    #[arg(long, value_name = "ADDR", allow_hyphen_values = true)]
    pub to: Option<String>,
}

/// Runs a `corfu log` subcommand.
pub async fn run(command: LogCommand) -> anyhow::Result<()> {
    match command {
        LogCommand::Append(args) => append(args).await,
        LogCommand::Read(args) => read(args).await,
        LogCommand::Tail(args) => tail(args).await,
        LogCommand::Fill(args) => fill(args).await,
        LogCommand::Trim(args) => trim(args).await,
        LogCommand::Stream(args) => read_stream(args).await,
    }
}

// ---------------------------------------------------------------------
// Parsing and formatting
// ---------------------------------------------------------------------

/// Parses a log address (a non-negative decimal integer); `what` names the
/// argument in the error.
pub fn parse_address(text: &str, what: &str) -> anyhow::Result<Address> {
    text.trim().parse::<Address>().map_err(|e| {
        let why = match e.kind() {
            IntErrorKind::PosOverflow => format!("larger than {}", Address::MAX),
            IntErrorKind::Empty => "empty".to_string(),
            _ if text.trim().starts_with('-') => "addresses are not negative".to_string(),
            _ => "not a non-negative integer".to_string(),
        };
        anyhow::anyhow!("invalid address {text:?} for {what}: {why}")
    })
}

/// `bytes` as one line of text: UTF-8 (invalid sequences replaced),
/// control characters escaped, cut after [`PREVIEW_CHARS`] characters
/// (then followed by the total size).
pub fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len().min(PREVIEW_CHARS * 4));
    for (n, c) in text.chars().enumerate() {
        if n == PREVIEW_CHARS {
            out.push_str(&format!("... ({} bytes)", bytes.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What an address holds, as one line of text: `ADDR data VALUE`
/// (followed by `  streams=ID,...` if the entry has streams), `ADDR junk`,
/// `ADDR unwritten` or `ADDR trimmed`.
pub fn outcome_text(address: Address, outcome: &ReadOutcome) -> String {
    match outcome {
        ReadOutcome::Data(entry) => {
            let mut line = format!("{address} data {}", preview(&entry.payload));
            if !entry.streams.is_empty() {
                line.push_str("  streams=");
                line.push_str(&stream_ids(entry).join(","));
            }
            line
        }
        ReadOutcome::Junk => format!("{address} junk"),
        ReadOutcome::Unwritten => format!("{address} unwritten"),
        ReadOutcome::Trimmed => format!("{address} trimmed"),
    }
}

/// What an address holds, as one JSON object: `{"address", "state"}` with
/// `state` one of `data`, `junk`, `unwritten`, `trimmed`; data adds
/// `"value"` (lossy UTF-8), `"bytes"` and `"streams"` (hex stream ids).
pub fn outcome_json(address: Address, outcome: &ReadOutcome) -> Value {
    match outcome {
        ReadOutcome::Data(entry) => json!({
            "address": address,
            "state": "data",
            "value": String::from_utf8_lossy(&entry.payload),
            "bytes": entry.payload.len(),
            "streams": stream_ids(entry),
        }),
        ReadOutcome::Junk => json!({"address": address, "state": "junk"}),
        ReadOutcome::Unwritten => json!({"address": address, "state": "unwritten"}),
        ReadOutcome::Trimmed => json!({"address": address, "state": "trimmed"}),
    }
}

fn stream_ids(entry: &Entry) -> Vec<String> {
    entry.streams.iter().map(|h| h.stream.to_string()).collect()
}

/// Buffered stdout; every write error (a closed pipe too) is an error.
struct Out {
    w: BufWriter<Stdout>,
}

impl Out {
    fn new() -> Out {
        Out {
            w: BufWriter::new(std::io::stdout()),
        }
    }

    fn line(&mut self, line: impl Display) -> anyhow::Result<()> {
        writeln!(self.w, "{line}").context("writing to stdout")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.w.flush().context("writing to stdout")
    }
}

// ---------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------

fn load_config(path: &Path) -> anyhow::Result<ClientConfig> {
    Ok(ClientConfig::load(path)?)
}

async fn connect(config: &ClientConfig, path: &Path) -> anyhow::Result<LogClient> {
    LogClient::connect(config)
        .await
        .with_context(|| format!("connecting to the cluster of {}", path.display()))
}

/// The outcome of one append, as `log append` reports it.
struct Appended<'a> {
    value: &'a str,
    bytes: usize,
    streams: &'a [String],
    result: &'a Result<Address, ClientError>,
}

impl Appended<'_> {
    fn text(&self) -> String {
        match self.result {
            Ok(address) => format!("appended {address} {}", preview(self.value.as_bytes())),
            Err(e) => format!(
                "failed {} {}: {e}",
                e.kind(),
                preview(self.value.as_bytes())
            ),
        }
    }

    fn json(&self) -> Value {
        match self.result {
            Ok(address) => json!({
                "address": address,
                "value": self.value,
                "bytes": self.bytes,
                "streams": self.streams,
            }),
            Err(e) => json!({
                "error": e.kind(),
                "message": e.to_string(),
                "value": self.value,
                "bytes": self.bytes,
                "streams": self.streams,
            }),
        }
    }
}

async fn append(args: AppendArgs) -> anyhow::Result<()> {
    let path = &args.common.cluster;
    let json = args.common.json;
    let config = load_config(path)?;
    // Names in order, without duplicates (the client dedups the ids).
    let mut names: Vec<String> = Vec::new();
    for name in args.streams {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let ids: Vec<StreamId> = names.iter().map(|n| StreamId::from_name(n)).collect();
    let mut out = Out::new();

    let Some(count) = args.count else {
        // One entry: DATA or stdin.
        let max = config.client.entry_bytes_max;
        let (payload, bytes) = match args.data {
            Some(data) => {
                let payload = data.into_vec();
                let bytes = payload.len();
                (payload, bytes)
            }
            None => read_stdin(max as usize).await?,
        };
        // Measured as the client and the log units measure it.
        let entry_bytes = corfu_core::logunit::record::body_len(bytes, ids.len(), true);
        let (value, result) = if entry_bytes > max as usize {
            // Refused before connecting; stdin was read only up to the
            // limit, so only a preview of it can be shown.
            (
                preview(&payload),
                Err(ClientError::EntryTooLarge {
                    bytes: entry_bytes,
                    max,
                }),
            )
        } else {
            let value = String::from_utf8_lossy(&payload).into_owned();
            let client = connect(&config, path).await?;
            let result = client.append(payload, &ids).await;
            client.close();
            (value, result)
        };
        let report = Appended {
            value: &value,
            bytes,
            streams: &names,
            result: &result,
        };
        // In text a failure is only the error line on stderr.
        if json {
            out.line(report.json())?;
        } else if result.is_ok() {
            out.line(report.text())?;
        }
        out.flush()?;
        return result.map(|_| ()).context("append failed");
    };

    let prefix = args.prefix.unwrap_or_else(|| "value".to_string());
    let client = connect(&config, path).await?;
    let mut results = stream::iter(0..count)
        .map(|i| {
            let client = &client;
            let ids = &ids;
            let value = format!("{prefix}-{i}");
            async move {
                let result = client.append(value.clone().into_bytes(), ids).await;
                (value, result)
            }
        })
        .buffer_unordered(APPEND_CONCURRENCY);
    let mut failed = 0u64;
    let mut first_failure: Option<ClientError> = None;
    while let Some((value, result)) = results.next().await {
        let report = Appended {
            value: &value,
            bytes: value.len(),
            streams: &names,
            result: &result,
        };
        out.line(if json {
            report.json().to_string()
        } else {
            report.text()
        })?;
        out.flush()?;
        if let Err(e) = result {
            failed += 1;
            first_failure.get_or_insert(e);
        }
    }
    drop(results);
    client.close();
    match first_failure {
        None => Ok(()),
        Some(e) => Err(anyhow::anyhow!(
            "{failed} of {count} appends failed (first: {}: {e})",
            e.kind()
        )),
    }
}

/// Reads stdin as one entry, keeping at most `max + 1` bytes; returns them
/// and the total size.
async fn read_stdin(max: usize) -> anyhow::Result<(Vec<u8>, usize)> {
    tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprintln!("reading the entry from stdin (end it with Ctrl-D)");
        }
        let mut lock = stdin.lock();
        let mut payload = Vec::new();
        (&mut lock)
            .take(max as u64 + 1)
            .read_to_end(&mut payload)
            .context("reading stdin")?;
        let mut bytes = payload.len();
        if bytes > max {
            // Too large: count the rest without keeping it.
            bytes +=
                std::io::copy(&mut lock, &mut std::io::sink()).context("reading stdin")? as usize;
        }
        Ok((payload, bytes))
    })
    .await
    .context("reading stdin")?
}

async fn read(args: ReadArgs) -> anyhow::Result<()> {
    let from = parse_address(&args.address, "ADDR")?;
    let to = match &args.to {
        Some(to) => parse_address(to, "--to")?,
        None => from.checked_add(1).context("ADDR is the largest address")?,
    };
    anyhow::ensure!(to > from, "--to ({to}) must be above ADDR ({from})");
    let config = load_config(&args.common.cluster)?;
    let client = connect(&config, &args.common.cluster).await?;
    // Void ranges (addresses a failover skipped; they hold nothing) are
    // neither counted nor printed.
    let ranges = client.layout().unvoided(from, to);
    let addresses: u64 = ranges.iter().map(|(start, end)| end - start).sum();
    anyhow::ensure!(
        addresses <= READ_RANGE_MAX,
        "the range [{from}, {to}) has {addresses} addresses; read at most {READ_RANGE_MAX} at once"
    );
    let mut out = Out::new();
    let print = |out: &mut Out, address: Address, outcome: &ReadOutcome| {
        if args.common.json {
            out.line(outcome_json(address, outcome))
        } else {
            out.line(outcome_text(address, outcome))
        }
    };
    if args.to.is_none() {
        let outcome = client
            .read(from)
            .await
            .with_context(|| format!("reading address {from}"))?;
        print(&mut out, from, &outcome)?;
    } else {
        for (mut start, to) in ranges {
            while start < to {
                let end = to.min(start.saturating_add(READ_CHUNK));
                let outcomes = client
                    .read_range(start, end)
                    .await
                    .with_context(|| format!("reading [{start}, {end})"))?;
                for (address, outcome) in &outcomes {
                    print(&mut out, *address, outcome)?;
                }
                out.flush()?;
                start = end;
            }
        }
    }
    out.flush()?;
    client.close();
    Ok(())
}

async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let config = load_config(&args.common.cluster)?;
    let client = connect(&config, &args.common.cluster).await?;
    let mut out = Out::new();
    match &args.stream {
        None => {
            let tail = client.tail().await.context("asking for the tail")?;
            if args.common.json {
                out.line(json!({ "tail": tail }))?;
            } else {
                out.line(format!("tail {tail}"))?;
            }
        }
        Some(name) => {
            let id = StreamId::from_name(name);
            let last = client
                .stream_tail(id)
                .await
                .with_context(|| format!("asking for the tail of stream {name:?}"))?;
            if args.common.json {
                out.line(json!({"stream": name, "stream_id": id.to_string(), "last": last}))?;
            } else {
                match last {
                    Some(last) => out.line(format!("stream {name} last {last}"))?,
                    None => out.line(format!("stream {name} empty"))?,
                }
            }
        }
    }
    out.flush()?;
    client.close();
    Ok(())
}

async fn fill(args: AddressArgs) -> anyhow::Result<()> {
    let address = parse_address(&args.address, "ADDR")?;
    let config = load_config(&args.common.cluster)?;
    let client = connect(&config, &args.common.cluster).await?;
    let outcome = client
        .fill(address)
        .await
        .with_context(|| format!("filling address {address}"))?;
    let mut out = Out::new();
    if args.common.json {
        out.line(outcome_json(address, &outcome))?;
    } else {
        out.line(outcome_text(address, &outcome))?;
    }
    out.flush()?;
    client.close();
    Ok(())
}

async fn trim(args: AddressArgs) -> anyhow::Result<()> {
    let address = parse_address(&args.address, "ADDR")?;
    let config = load_config(&args.common.cluster)?;
    let client = connect(&config, &args.common.cluster).await?;
    let mark = client
        .prefix_trim(address)
        .await
        .with_context(|| format!("trimming below address {address}"))?;
    let mut out = Out::new();
    if args.common.json {
        out.line(json!({ "trim_mark": mark }))?;
    } else {
        out.line(format!("trim mark {mark}"))?;
    }
    out.flush()?;
    client.close();
    Ok(())
}

async fn read_stream(args: StreamArgs) -> anyhow::Result<()> {
    let from = match &args.from {
        Some(a) => parse_address(a, "--from")?,
        None => 0,
    };
    let to = match &args.to {
        Some(a) => Some(parse_address(a, "--to")?),
        None => None,
    };
    if let Some(to) = to {
        anyhow::ensure!(to >= from, "--to ({to}) is below --from ({from})");
    }
    let config = load_config(&args.common.cluster)?;
    let client = connect(&config, &args.common.cluster).await?;
    let to = match to {
        Some(to) => to,
        // Past the tail there is nothing to read.
        None => client
            .tail()
            .await
            .context("asking for the tail")?
            .max(from),
    };
    let id = StreamId::from_name(&args.name);
    let entries = client
        .read_stream(id, from, to)
        .await
        .with_context(|| format!("reading stream {:?} in [{from}, {to})", args.name))?;
    let mut out = Out::new();
    for (address, entry) in &entries {
        if args.common.json {
            out.line(json!({
                "address": address,
                "value": String::from_utf8_lossy(&entry.payload),
                "bytes": entry.payload.len(),
            }))?;
        } else {
            out.line(format!("{address} {}", preview(&entry.payload)))?;
        }
    }
    out.flush()?;
    client.close();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corfu_core::wire::logunit::StreamHeader;

    #[test]
    fn addresses_are_non_negative_integers() {
        assert_eq!(parse_address("0", "ADDR").unwrap(), 0);
        assert_eq!(parse_address(" 42 ", "ADDR").unwrap(), 42);
        let e = parse_address("abc", "ADDR").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid address \"abc\" for ADDR: not a non-negative integer"
        );
        let e = parse_address("-1", "--to").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid address \"-1\" for --to: addresses are not negative"
        );
        let e = parse_address("99999999999999999999", "ADDR")
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than 18446744073709551615"), "{e}");
        assert!(parse_address("", "ADDR").is_err());
    }

    #[test]
    fn previews_are_one_line_and_bounded() {
        assert_eq!(preview(b"hello"), "hello");
        assert_eq!(preview(b"a\nb\tc"), "a\\nb\\tc");
        assert_eq!(preview(&[0x66, 0xff, 0x6f]), "f\u{fffd}o");
        let long = vec![b'x'; 300];
        assert_eq!(
            preview(&long),
            format!("{}... (300 bytes)", "x".repeat(PREVIEW_CHARS))
        );
        assert_eq!(preview(&[b'y'; PREVIEW_CHARS]), "y".repeat(PREVIEW_CHARS));
    }

    #[test]
    fn outcomes_print_as_text_and_json() {
        let s = StreamId::from_name("s");
        let entry = Entry {
            id: None,
            streams: vec![StreamHeader {
                stream: s,
                backpointer: None,
            }],
            payload: b"hi".to_vec(),
        };
        let data = ReadOutcome::Data(entry);
        assert_eq!(outcome_text(7, &data), format!("7 data hi  streams={s}"));
        assert_eq!(
            outcome_json(7, &data),
            json!({"address": 7, "state": "data", "value": "hi", "bytes": 2, "streams": [s.to_string()]})
        );
        assert_eq!(outcome_text(3, &ReadOutcome::Junk), "3 junk");
        assert_eq!(outcome_text(3, &ReadOutcome::Unwritten), "3 unwritten");
        assert_eq!(
            outcome_json(3, &ReadOutcome::Trimmed),
            json!({"address": 3, "state": "trimmed"})
        );
    }
}
