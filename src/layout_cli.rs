//! `corfu layout ...`: show the layout in force and reconfigure by hand
//! (seal the epoch, remove a node, add a node) through the reconfiguration
//! engine ([`corfu_core::reconfig`]).

use std::path::PathBuf;

use corfu_core::client_config::ClientConfig;
use corfu_core::layout::{Layout, NodeAddr};
use corfu_core::reconfig::{Change, Reconfigured, Reconfigurer};

use crate::cluster::{layout_json, layout_summary};

/// Test hook: when this environment variable is set, a reconfiguring
/// `corfu layout` command seals the next epoch, prints `sealed epoch N;
/// holding (CORFU_TEST_HOLD_AFTER_SEAL)` to stderr and waits forever
/// instead of proposing the layout (`tests/fault_kill.rs` kills it there).
pub const HOLD_AFTER_SEAL: &str = "CORFU_TEST_HOLD_AFTER_SEAL";

/// `corfu layout` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum LayoutCommand {
    /// Print the highest committed layout.
    Show(LayoutArgs),
    /// Seal the current epoch and move to the next with the same
    /// membership (fences every client of the current epoch and
    /// re-bootstraps the sequencer).
    Seal(LayoutArgs),
    /// Remove a node from every chain and from the sequencer list (a dead
    /// log unit, or the active sequencer: the next one listed takes over).
    RemoveNode {
        /// The node's id.
        node: String,
        /// Where the cluster is and how to print.
        #[command(flatten)]
        args: LayoutArgs,
    },
    /// Add a log unit: as a member of the shortest chain (it receives the
    /// older segments of that chain by state transfer, then joins their
    /// chains too), or with --stripe as a new stripe of its own.
    AddNode {
        /// The node's id.
        node: String,
        /// Where the node listens (default: the address the layout already
        /// lists for it, for a node that was removed).
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<String>,
        /// Add a new stripe whose chain is this node, from the log's tail
        /// on (scale-out), instead of joining a chain.
        #[arg(long)]
        stripe: bool,
        /// Where the cluster is and how to print.
        #[command(flatten)]
        args: LayoutArgs,
    },
}

/// The address `layout` lists for `node` anywhere (layout servers,
/// sequencers, chains).
fn listed_addr(layout: &Layout, node: &str) -> Option<String> {
    layout
        .layout_servers
        .iter()
        .chain(&layout.sequencers)
        .chain(layout.all_log_units())
        .find(|n| n.node_id == node)
        .map(|n| n.addr.clone())
}

/// Arguments every `corfu layout` command takes.
#[derive(clap::Args, Debug)]
pub struct LayoutArgs {
    /// The client config of the cluster (cluster.toml).
    #[arg(long)]
    pub cluster: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `corfu layout` subcommand.
pub async fn run(command: LayoutCommand) -> anyhow::Result<()> {
    let (args, change) = match command {
        LayoutCommand::Show(args) => (args, None),
        LayoutCommand::Seal(args) => (args, Some(Change::Seal)),
        LayoutCommand::RemoveNode { node, args } => (args, Some(Change::RemoveNode(node))),
        LayoutCommand::AddNode {
            node,
            addr,
            stripe,
            args,
        } => (
            args,
            Some(Change::AddNode {
                // Resolved below, once the layout is known.
                node: NodeAddr {
                    node_id: node,
                    addr: addr.unwrap_or_default(),
                },
                stripe,
            }),
        ),
    };
    let config = ClientConfig::load(&args.cluster)?;
    let mut engine = Reconfigurer::new(config.endpoint()?, config.layout_servers.clone());
    // Test hook: stop between the seal and the proposal (a reconfigurer
    // that dies half-way; see `Reconfigurer::hold_after_seal`).
    if std::env::var_os(HOLD_AFTER_SEAL).is_some() {
        engine = engine.hold_after_seal();
    }
    let Some(mut change) = change else {
        let layout = engine.current().await?;
        if args.json {
            println!("{}", layout_json(&layout));
        } else {
            print!("{}", layout_summary(&layout));
        }
        return Ok(());
    };
    if let Change::AddNode { node, .. } = &mut change {
        if node.addr.is_empty() {
            let layout = engine.current().await?;
            node.addr = listed_addr(&layout, &node.node_id).ok_or_else(|| {
                anyhow::anyhow!(
                    "node {} is not named by the layout of epoch {}: give its address with --addr HOST:PORT",
                    node.node_id,
                    layout.epoch
                )
            })?;
        }
    }
    let done = engine.reconfigure(&change).await?;
    if args.json {
        println!("{}", done_json(&done));
    } else {
        print!("{}", done_text(&done));
    }
    Ok(())
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The outcome of a reconfiguration as one JSON object.
fn done_json(done: &Reconfigured) -> serde_json::Value {
    let mut out = serde_json::json!({
        "layout": layout_json(&done.layout),
        "tail": done.tail,
        "decided_by_us": done.won,
        "elapsed_ms": ms(done.elapsed),
    });
    if let Some(added) = &done.added {
        let step = |s: Option<(u64, std::time::Duration)>| {
            s.map(|(epoch, d)| serde_json::json!({"epoch": epoch, "elapsed_ms": ms(d)}))
        };
        let t = &added.transfer;
        out["added"] = serde_json::json!({
            "joined_open_segment": step(added.joined_open),
            "state_transfer": {
                "addresses": t.addresses,
                "copied": t.copied,
                "already_held": t.already_held,
                "junk": t.junk,
                "holes_completed": t.holes_completed,
                "trimmed": t.trimmed,
                "bytes": t.bytes,
                "elapsed_ms": ms(t.elapsed),
            },
            "joined_older_segments": step(added.joined_older),
        });
    }
    out
}

/// The outcome of a reconfiguration in a few lines.
fn done_text(done: &Reconfigured) -> String {
    let mut out = format!(
        "epoch {} in force ({} in {:.1} ms; sequencer restarts at {})\n",
        done.layout.epoch,
        if done.won {
            "decided"
        } else {
            "already decided by another reconfiguration"
        },
        ms(done.elapsed),
        done.tail
    );
    if let Some(added) = &done.added {
        if let Some((epoch, d)) = added.joined_open {
            out.push_str(&format!(
                "  epoch {epoch}: joined the open segment ({:.1} ms)\n",
                ms(d)
            ));
        }
        let t = &added.transfer;
        if t.addresses > 0 {
            out.push_str(&format!(
                "  state transfer: {} addresses ({} copied, {} already held, {} junk, {} holes completed, {} trimmed), {} bytes in {:.1} ms\n",
                t.addresses,
                t.copied,
                t.already_held,
                t.junk,
                t.holes_completed,
                t.trimmed,
                t.bytes,
                ms(t.elapsed)
            ));
        }
        if let Some((epoch, d)) = added.joined_older {
            out.push_str(&format!(
                "  epoch {epoch}: joined the older segments' chains ({:.1} ms)\n",
                ms(d)
            ));
        }
    }
    out.push_str(&layout_summary(&done.layout));
    out
}
