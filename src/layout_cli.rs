//! `corfu layout ...`: show the layout in force and reconfigure by hand
//! (seal the epoch, remove a node) through the reconfiguration engine
//! ([`corfu_core::reconfig`]).

use std::path::PathBuf;

use corfu_core::client_config::ClientConfig;
use corfu_core::reconfig::{Change, Reconfigurer};

use crate::cluster::{layout_json, layout_summary};

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
    };
    let config = ClientConfig::load(&args.cluster)?;
    let engine = Reconfigurer::new(config.endpoint()?, config.layout_servers.clone());
    let Some(change) = change else {
        let layout = engine.current().await?;
        if args.json {
            println!("{}", layout_json(&layout));
        } else {
            print!("{}", layout_summary(&layout));
        }
        return Ok(());
    };
    let done = engine.reconfigure(&change).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "layout": layout_json(&done.layout),
                "tail": done.tail,
                "decided_by_us": done.won,
                "elapsed_ms": done.elapsed.as_secs_f64() * 1e3,
            })
        );
    } else {
        println!(
            "epoch {} in force ({} in {:.1} ms; sequencer restarts at {})",
            done.layout.epoch,
            if done.won {
                "decided"
            } else {
                "already decided by another reconfiguration"
            },
            done.elapsed.as_secs_f64() * 1e3,
            done.tail
        );
        print!("{}", layout_summary(&done.layout));
    }
    Ok(())
}
