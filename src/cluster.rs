//! Cluster administration: `corfu cluster bootstrap` installs epoch 1 on a
//! fresh cluster.
//!
//! [`bootstrap`] asks every layout server of a client config who it is
//! (`Info`), builds the epoch-1 [`Layout`] from the roles the nodes report
//! ([`build_layout`]), has the Paxos layout service decide it, and then
//! bootstraps the active sequencer from the tails of the layout's log
//! units. Running it again is harmless: the layout service answers with the
//! layout it already decided; a sequencer already serving is left alone,
//! and one that is not (it restarted, and may have granted addresses before
//! it lost its state) is brought back by a seal reconfiguration rather than
//! bootstrapped again at epoch 1 (see [`corfu_core::sequencer`]).
//!
//! Stripes are filled from the log units in config order: with `S` stripes
//! of chains of `C` units, log unit `k` (0-based, in config order) is
//! position `k % C` of stripe `k / C`, for `k < S * C`; further log units
//! are left out of the layout.

use std::path::PathBuf;

use anyhow::Context;
use futures_util::future::join_all;

use corfu_core::client_config::ClientConfig;
use corfu_core::layout::{Layout, NodeAddr, Segment, Stripe};
use corfu_core::layout_service::proposer::{fetch_layout, Decision, ProposeError, Proposer};
use corfu_core::reconfig::{Change, Reconfigurer};
use corfu_core::transport::ClientEndpoint;
use corfu_core::types::{ClusterId, Role};
use corfu_core::wire::logunit::{LogUnitRequest, LogUnitResponse};
use corfu_core::wire::sequencer::{SequencerRequest, SequencerResponse};
use corfu_core::wire::{NodeInfo, Request, Response};

/// How the log is spread over the log units: `stripes` chains of `chain`
/// log units each (stripe and mirror).
///
/// A field left `None` is derived from the other and the number of log
/// units: with neither, one stripe whose chain holds every log unit; with
/// only `stripes`, chains of `units / stripes`; with only `chain`,
/// `units / chain` stripes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Number of stripes (addresses are spread over them round-robin).
    pub stripes: Option<usize>,
    /// Log units per stripe (each stripe is a replication chain).
    pub chain: Option<usize>,
}

impl Shape {
    /// A shape with both dimensions given.
    pub fn new(stripes: usize, chain: usize) -> Shape {
        Shape {
            stripes: Some(stripes),
            chain: Some(chain),
        }
    }

    /// The `(stripes, chain)` this shape means for `log_units` log units;
    /// an error (one line) if it does not fit.
    pub fn resolve(&self, log_units: usize) -> anyhow::Result<(usize, usize)> {
        anyhow::ensure!(log_units > 0, "the cluster has no log unit");
        if self.stripes == Some(0) {
            anyhow::bail!("the number of stripes must be at least 1");
        }
        if self.chain == Some(0) {
            anyhow::bail!("the chain length must be at least 1");
        }
        let too_few = |stripes: usize, chain: usize| {
            let needed = stripes
                .checked_mul(chain)
                .map_or_else(|| "too many".to_string(), |n| n.to_string());
            anyhow::anyhow!(
                "{stripes} stripe(s) with chains of {chain} need {needed} log units, but the cluster has {log_units}"
            )
        };
        let (stripes, chain) = match (self.stripes, self.chain) {
            (None, None) => (1, log_units),
            (Some(s), None) if s > log_units => return Err(too_few(s, 1)),
            (Some(s), None) => (s, log_units / s),
            (None, Some(c)) if c > log_units => return Err(too_few(1, c)),
            (None, Some(c)) => (log_units / c, c),
            (Some(s), Some(c)) => (s, c),
        };
        if stripes.checked_mul(chain).is_none_or(|n| n > log_units) {
            return Err(too_few(stripes, chain));
        }
        Ok((stripes, chain))
    }
}

/// A node as the bootstrap sees it: where it is and what it hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its id and address.
    pub addr: NodeAddr,
    /// The roles it reported.
    pub roles: Vec<Role>,
}

/// Builds the epoch-1 layout of a fresh cluster from its nodes (in config
/// order): every node with the layout-server role is a layout server, every
/// node with the sequencer role a sequencer (the first one active), and one
/// open segment from address 0 holds the stripes of `shape` filled from the
/// log units in order (see the module docs). The layout is validated.
pub fn build_layout(
    cluster_id: ClusterId,
    nodes: &[ClusterNode],
    shape: Shape,
) -> anyhow::Result<Layout> {
    let with_role = |role: Role| -> Vec<NodeAddr> {
        nodes
            .iter()
            .filter(|n| n.roles.contains(&role))
            .map(|n| n.addr.clone())
            .collect()
    };
    let layout_servers = with_role(Role::LayoutServer);
    let sequencers = with_role(Role::Sequencer);
    let log_units = with_role(Role::LogUnit);
    anyhow::ensure!(
        !layout_servers.is_empty(),
        "no node hosts the layout_server role"
    );
    anyhow::ensure!(!sequencers.is_empty(), "no node hosts the sequencer role");
    anyhow::ensure!(!log_units.is_empty(), "no node hosts the log_unit role");
    let (stripes, chain) = shape.resolve(log_units.len())?;
    let stripes = log_units
        .chunks(chain)
        .take(stripes)
        .map(|units| Stripe {
            chain: units.to_vec(),
        })
        .collect();
    let layout = Layout {
        cluster_id,
        epoch: 1,
        layout_servers,
        sequencers,
        segments: vec![Segment {
            start: 0,
            end: None,
            stripes,
        }],
        grants: corfu_core::layout::Grants::from(0),
        voids: vec![],
    };
    layout
        .validate()
        .context("the layout built from the nodes is invalid")?;
    Ok(layout)
}

/// Asks every layout server of `config` who it is. Fails (one line) if one
/// cannot be reached, answers with an error, or belongs to another cluster.
pub async fn discover(
    endpoint: &ClientEndpoint,
    config: &ClientConfig,
) -> anyhow::Result<Vec<ClusterNode>> {
    let answers = join_all(config.layout_servers.iter().map(|addr| async move {
        let answer = endpoint.peer(addr).call(0, Request::Info).await;
        (addr, answer)
    }))
    .await;
    let mut nodes = Vec::new();
    for (addr, answer) in answers {
        let info: Box<NodeInfo> = match answer {
            Ok(Response::Info(info)) => info,
            Ok(Response::Error(e)) => anyhow::bail!("node {addr} refused Info: {e}"),
            Ok(other) => anyhow::bail!("node {addr} answered Info with {other:?}"),
            Err(e) => anyhow::bail!("node unreachable: {e}"),
        };
        anyhow::ensure!(
            info.cluster_id == config.cluster_id,
            "node {} at {addr} belongs to cluster {}, not {}",
            info.node_id,
            info.cluster_id,
            config.cluster_id
        );
        nodes.push(ClusterNode {
            addr: NodeAddr {
                node_id: info.node_id.clone(),
                addr: addr.clone(),
            },
            roles: info.roles.clone(),
        });
    }
    Ok(nodes)
}

/// Installs epoch 1 on the cluster of `config` (see the module docs) and
/// returns the decided layout. Idempotent.
pub async fn bootstrap(config: &ClientConfig, shape: Shape) -> anyhow::Result<Layout> {
    let endpoint = config.endpoint().context("client endpoint")?;
    let result = bootstrap_with(&endpoint, config, shape).await;
    endpoint.close();
    result
}

/// [`bootstrap`] over an existing client endpoint (of `config`'s cluster).
pub async fn bootstrap_with(
    endpoint: &ClientEndpoint,
    config: &ClientConfig,
    shape: Shape,
) -> anyhow::Result<Layout> {
    let nodes = discover(endpoint, config).await?;
    let proposed = build_layout(config.cluster_id, &nodes, shape)?;
    let servers = proposed
        .layout_servers
        .iter()
        .map(|n| n.addr.clone())
        .collect();
    // Paxos safety needs a unique id per proposer: never a constant.
    let proposer = Proposer::new(endpoint.clone(), servers, rand::random::<u64>());
    let decision = match proposer.decide(proposed).await {
        Err(ProposeError::Superseded { layout, .. }) => Decision {
            layout: *layout,
            ours: false,
            promised_at: std::time::Instant::now(),
        },
        other => other.context("deciding the epoch-1 layout")?,
    };
    if decision.ours {
        bootstrap_sequencer(endpoint, &decision.layout).await?;
        return Ok(decision.layout);
    }
    // Decided before (an earlier run): fine if its sequencer serves.
    let current = fetch_layout(endpoint, &config.layout_servers)
        .await
        .context("fetching the layout")?;
    if sequencer_serves(endpoint, &current).await {
        return Ok(current);
    }
    let servers = current
        .layout_servers
        .iter()
        .map(|n| n.addr.clone())
        .collect();
    let done = Reconfigurer::new(endpoint.clone(), servers)
        .reconfigure(&Change::Seal)
        .await
        .context("the sequencer does not serve; sealing to restart it")?;
    Ok(done.layout)
}

/// Whether the active sequencer of `layout` answers a tail query at its
/// epoch.
async fn sequencer_serves(endpoint: &ClientEndpoint, layout: &Layout) -> bool {
    let Some(sequencer) = layout.active_sequencer() else {
        return false;
    };
    let request = Request::Sequencer(SequencerRequest::Tail { streams: vec![] });
    matches!(
        endpoint
            .peer(&sequencer.addr)
            .call(layout.epoch, request)
            .await,
        Ok(Response::Sequencer(SequencerResponse::Tail { .. }))
    )
}

pub use corfu_core::reconfig::merge_tails;

/// Bootstraps the active sequencer of `layout`, which the caller has just
/// decided, at the layout's grant start: seals it at the layout's epoch
/// (nothing changes if it is there already), then bootstraps the
/// incarnation that answered with the stream tails of every log unit of the
/// layout (all must answer). A sequencer already serving the epoch is left
/// alone. Fails if a unit holds an address at or above the grant start
/// (the layout would grant it again).
///
/// Only for a layout the caller decided: bootstrapping a sequencer that
/// restarted during the epoch would grant its addresses again (the
/// reconfiguration engine, [`corfu_core::reconfig`], handles that case).
pub async fn bootstrap_sequencer(endpoint: &ClientEndpoint, layout: &Layout) -> anyhow::Result<()> {
    let epoch = layout.epoch;
    let units = layout.all_log_units();
    let answers = join_all(units.iter().map(|unit| async move {
        let answer = endpoint
            .peer(&unit.addr)
            .call(epoch, Request::LogUnit(LogUnitRequest::Tail))
            .await;
        (*unit, answer)
    }))
    .await;
    let mut tails = Vec::new();
    for (unit, answer) in answers {
        let who = format!("log unit {} at {}", unit.node_id, unit.addr);
        match answer {
            Ok(Response::LogUnit(LogUnitResponse::Tails(t))) => tails.push(t),
            Ok(Response::WrongEpoch { current }) => {
                anyhow::bail!("{who} is sealed at epoch {current}, above the layout's {epoch}")
            }
            Ok(Response::Error(e)) => anyhow::bail!("{who} refused Tail: {e}"),
            Ok(other) => anyhow::bail!("{who} answered Tail with {other:?}"),
            Err(e) => anyhow::bail!("{who} is unreachable: {e}"),
        }
    }
    let (next, stream_tails) = merge_tails(&tails);
    anyhow::ensure!(
        next <= layout.grants.start,
        "the log units hold addresses up to {}, at or above the grant start {} of epoch {epoch}",
        next.saturating_sub(1),
        layout.grants.start
    );
    let sequencer = layout
        .active_sequencer()
        .context("the layout names no sequencer")?;
    let who = format!("sequencer {} at {}", sequencer.node_id, sequencer.addr);
    let peer = endpoint.peer(&sequencer.addr);
    let incarnation = match peer
        .call(epoch, Request::Sequencer(SequencerRequest::Seal { epoch }))
        .await
    {
        Ok(Response::Sequencer(SequencerResponse::Sealed { served, .. }))
            if served.is_some_and(|(e, _)| e == epoch) =>
        {
            return Ok(());
        }
        Ok(Response::Sequencer(SequencerResponse::Sealed {
            served: Some((served, next)),
            ..
        })) if next > layout.grants.start => anyhow::bail!(
            "{who} granted addresses up to {} in epoch {served}, at or above the grant start {} of epoch {epoch}",
            next - 1,
            layout.grants.start
        ),
        Ok(Response::Sequencer(SequencerResponse::Sealed { incarnation, .. })) => incarnation,
        Ok(Response::WrongEpoch { current }) => {
            anyhow::bail!("{who} is at epoch {current}, above the layout's {epoch}")
        }
        Ok(Response::Error(e)) => anyhow::bail!("{who} refused the seal: {e}"),
        Ok(other) => anyhow::bail!("{who} answered the seal with {other:?}"),
        Err(e) => anyhow::bail!("{who} is unreachable: {e}"),
    };
    let request = Request::Sequencer(SequencerRequest::Bootstrap {
        epoch,
        incarnation,
        next: layout.grants.start,
        bound: layout.grants.bound,
        stream_tails,
        layout_servers: layout
            .layout_servers
            .iter()
            .map(|n| n.addr.clone())
            .collect(),
    });
    match peer.call(epoch, request).await {
        Ok(Response::Sequencer(SequencerResponse::Done)) => Ok(()),
        Ok(Response::WrongEpoch { current }) => {
            anyhow::bail!("{who} is at epoch {current}, above the layout's {epoch}")
        }
        Ok(Response::Error(e)) => anyhow::bail!("{who} refused the bootstrap: {e}"),
        Ok(other) => anyhow::bail!("{who} answered the bootstrap with {other:?}"),
        Err(e) => anyhow::bail!("{who} is unreachable: {e}"),
    }
}

fn node_list(nodes: &[NodeAddr]) -> String {
    nodes
        .iter()
        .map(|n| n.node_id.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The layout in a few lines: epoch, cluster, nodes and their addresses,
/// layout servers, sequencers and each segment's stripes as chains of node
/// ids (head first).
pub fn layout_summary(layout: &Layout) -> String {
    let mut out = format!("epoch {} of cluster {}\n", layout.epoch, layout.cluster_id);
    let mut nodes: Vec<&NodeAddr> = Vec::new();
    let all = layout
        .layout_servers
        .iter()
        .chain(&layout.sequencers)
        .chain(layout.all_log_units());
    for n in all {
        if !nodes.iter().any(|m| m.node_id == n.node_id) {
            nodes.push(n);
        }
    }
    let nodes: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.node_id, n.addr))
        .collect();
    out.push_str(&format!("  nodes:          {}\n", nodes.join(" ")));
    out.push_str(&format!(
        "  layout servers: {}\n",
        node_list(&layout.layout_servers)
    ));
    out.push_str(&format!(
        "  sequencers:     {} (active first)\n",
        node_list(&layout.sequencers)
    ));
    for segment in &layout.segments {
        let end = segment
            .end
            .map_or_else(|| "...".to_string(), |e| e.to_string());
        out.push_str(&format!(
            "  segment [{}, {end}): {} stripe(s)\n",
            segment.start,
            segment.stripes.len()
        ));
        for (i, stripe) in segment.stripes.iter().enumerate() {
            let chain: Vec<&str> = stripe.chain.iter().map(|n| n.node_id.as_str()).collect();
            out.push_str(&format!("    stripe {i}: {}\n", chain.join(" -> ")));
        }
    }
    out
}

fn node_json(n: &NodeAddr) -> serde_json::Value {
    serde_json::json!({"node_id": n.node_id, "addr": n.addr})
}

/// The layout as a JSON value (cluster id as hex, chains head first).
pub fn layout_json(layout: &Layout) -> serde_json::Value {
    serde_json::json!({
        "cluster_id": layout.cluster_id.to_string(),
        "epoch": layout.epoch,
        "layout_servers": layout.layout_servers.iter().map(node_json).collect::<Vec<_>>(),
        "sequencers": layout.sequencers.iter().map(node_json).collect::<Vec<_>>(),
        "segments": layout.segments.iter().map(|s| serde_json::json!({
            "start": s.start,
            "end": s.end,
            "stripes": s.stripes.iter()
                .map(|st| st.chain.iter().map(node_json).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// `corfu cluster ...` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Install epoch 1 on a fresh cluster (idempotent): decide the layout
    /// with the layout service and bootstrap the sequencer.
    Bootstrap(BootstrapArgs),
}

/// Arguments of `corfu cluster bootstrap`.
#[derive(clap::Args, Debug)]
pub struct BootstrapArgs {
    /// The client config of the cluster (cluster.toml).
    #[arg(long)]
    pub cluster: PathBuf,
    /// Number of stripes (default: one, or as many chains of --chain as
    /// there are log units for).
    #[arg(long)]
    pub stripes: Option<usize>,
    /// Log units per stripe (default: all log units over the stripes).
    #[arg(long)]
    pub chain: Option<usize>,
    /// Print the decided layout as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `corfu cluster` subcommand.
pub async fn run_cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Bootstrap(args) => {
            let config = ClientConfig::load(&args.cluster)?;
            let shape = Shape {
                stripes: args.stripes,
                chain: args.chain,
            };
            let layout = bootstrap(&config, shape).await?;
            if args.json {
                println!("{}", layout_json(&layout));
            } else {
                print!("{}", layout_summary(&layout));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corfu_core::types::StreamId;
    use corfu_core::wire::logunit::Tails;

    fn nodes(n: usize) -> Vec<ClusterNode> {
        (1..=n)
            .map(|k| ClusterNode {
                addr: NodeAddr {
                    node_id: format!("n{k}"),
                    addr: format!("127.0.0.1:{}", 7000 + k),
                },
                roles: if k == 1 {
                    vec![Role::LayoutServer, Role::Sequencer, Role::LogUnit]
                } else {
                    vec![Role::LayoutServer, Role::LogUnit]
                },
            })
            .collect()
    }

    fn chains(layout: &Layout) -> Vec<Vec<String>> {
        layout.segments[0]
            .stripes
            .iter()
            .map(|s| s.chain.iter().map(|n| n.node_id.clone()).collect())
            .collect()
    }

    #[test]
    fn default_shape_is_one_chain_of_every_log_unit() {
        let layout = build_layout(ClusterId(7), &nodes(3), Shape::default()).unwrap();
        assert_eq!(layout.epoch, 1);
        assert_eq!(chains(&layout), vec![vec!["n1", "n2", "n3"]]);
        assert_eq!(node_list(&layout.layout_servers), "n1 n2 n3");
        assert_eq!(node_list(&layout.sequencers), "n1");
        assert_eq!(layout.segments[0].start, 0);
        assert_eq!(layout.segments[0].end, None);
    }

    #[test]
    fn stripes_are_filled_in_config_order() {
        let layout = build_layout(ClusterId(7), &nodes(6), Shape::new(3, 2)).unwrap();
        assert_eq!(
            chains(&layout),
            vec![vec!["n1", "n2"], vec!["n3", "n4"], vec!["n5", "n6"]]
        );
        let layout = build_layout(
            ClusterId(7),
            &nodes(5),
            Shape {
                stripes: Some(2),
                chain: None,
            },
        )
        .unwrap();
        assert_eq!(chains(&layout), vec![vec!["n1", "n2"], vec!["n3", "n4"]]);
        let layout = build_layout(
            ClusterId(7),
            &nodes(3),
            Shape {
                stripes: None,
                chain: Some(1),
            },
        )
        .unwrap();
        assert_eq!(chains(&layout), vec![vec!["n1"], vec!["n2"], vec!["n3"]]);
    }

    #[test]
    fn bad_shapes_are_one_line_errors() {
        for shape in [
            Shape::new(2, 2),
            Shape::new(0, 1),
            Shape::new(1, 0),
            Shape::new(usize::MAX, 2),
            Shape {
                stripes: Some(4),
                chain: None,
            },
            Shape {
                stripes: None,
                chain: Some(4),
            },
        ] {
            let e = build_layout(ClusterId(7), &nodes(3), shape).unwrap_err();
            let line = format!("{e:#}");
            assert!(!line.contains('\n'), "{line}");
            assert!(
                line.contains("log units") || line.contains("at least 1"),
                "{shape:?}: {line}"
            );
        }
    }

    #[test]
    fn missing_roles_and_duplicates_are_refused() {
        let mut ns = nodes(3);
        for n in &mut ns {
            n.roles.retain(|r| *r != Role::Sequencer);
        }
        let e = build_layout(ClusterId(7), &ns, Shape::default()).unwrap_err();
        assert!(e.to_string().contains("sequencer"), "{e}");
        let mut ns = nodes(3);
        ns[2].addr.node_id = "n1".into();
        let e = build_layout(ClusterId(7), &ns, Shape::default()).unwrap_err();
        assert!(format!("{e:#}").contains("n1"), "{e:#}");
    }

    #[test]
    fn tails_merge_to_the_highest_address() {
        let (s1, s2) = (StreamId(1), StreamId(2));
        let a = Tails {
            global: Some(9),
            streams: vec![(s1, 9), (s2, 4)],
            trim_mark: 0,
        };
        let b = Tails {
            global: Some(7),
            streams: vec![(s1, 7), (s2, 6)],
            trim_mark: 0,
        };
        assert_eq!(merge_tails([&a, &b]), (10, vec![(s1, 9), (s2, 6)]));
        assert_eq!(merge_tails([&Tails::default()]), (0, vec![]));
        let trimmed = Tails {
            global: None,
            streams: vec![],
            trim_mark: 20,
        };
        assert_eq!(merge_tails([&trimmed]).0, 20);
    }

    #[test]
    fn summary_names_chains_by_node_id() {
        let layout = build_layout(ClusterId(7), &nodes(3), Shape::default()).unwrap();
        let text = layout_summary(&layout);
        assert!(text.contains("stripe 0: n1 -> n2 -> n3"), "{text}");
        assert!(text.starts_with("epoch 1 of cluster"), "{text}");
        let json = layout_json(&layout);
        assert_eq!(json["epoch"], 1);
        assert_eq!(json["segments"][0]["stripes"][0][2]["node_id"], "n3");
    }
}
