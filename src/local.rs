//! Local clusters on one machine: `corfu local init` writes the configs and
//! certificates of an N-node cluster on loopback, `corfu local up` runs it
//! as child processes (reporting a node that dies and keeping the others
//! running), `corfu local restart` has that `local up` start a node again,
//! and [`LocalCluster`] runs one inside the current process (for tests,
//! examples and benchmarks).
//!
//! A directory written by [`init`] (or used by [`LocalCluster::start`]):
//!
//! ```text
//! D/cluster.toml           client config: cluster id, layout servers, CA
//! D/tls/ca.pem, ca.key     the cluster CA (the key stays here only)
//! D/nK/node.toml           node K's config (init only; relative paths)
//! D/nK/tls/ca.pem          a copy of the CA certificate
//! D/nK/tls/node.pem, .key  node K's certificate, issued by the CA
//! D/nK/data/               node K's durable state
//! D/nK/node.log            node K's output (`local up` only)
//! D/local-up.sock          a running `local up`'s control socket
//! ```
//!
//! Node `K` (1-based) has id `nK` and listens on `127.0.0.1:(P + K - 1)`;
//! every node hosts a layout server and a log unit, and by default a
//! sequencer too (`--sequencers S`: only the first `S` nodes). The
//! bootstrap lists the sequencers in node order, n1 first (the active
//! one), so removing the active sequencer's node (by hand or by a failure
//! detector) hands the role to the next node instead of leaving the
//! cluster without one. [`LocalCluster`] picks free ports instead, indexes
//! nodes from 0 (index `i` is node `n{i+1}`) and hosts one sequencer
//! unless told otherwise ([`LocalOptions::sequencers`]).

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::{join_all, select_all};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use corfu_core::client_config::ClientConfig;
use corfu_core::detector::DetectorConfig;
use corfu_core::layout::Layout;
use corfu_core::logunit::{LogUnitConfig, SyncPolicy};
use corfu_core::node::{self, NodeConfig, RunningNode};
use corfu_core::transport::tls::{node_names, ClusterCa, NodeTlsConfig};
use corfu_core::types::{ClusterId, Role};
use corfu_core::wire::{Request, Response};

use crate::cluster::{self, Shape};

/// The most nodes a local cluster may have.
pub const NODES_MAX: usize = 64;

/// How long [`LocalCluster::restart_node`] waits for its port to be free.
const RESTART_PORT_WAIT: Duration = Duration::from_secs(5);

/// Name of the client config file in a cluster directory.
pub const CLUSTER_TOML: &str = "cluster.toml";

/// Options of [`init`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// The cluster directory (created if absent).
    pub dir: PathBuf,
    /// Number of nodes, 1 to [`NODES_MAX`].
    pub nodes: usize,
    /// Node `K` listens on `base_port + K - 1`.
    pub base_port: u16,
    /// The log units' durability policy.
    pub sync: SyncPolicy,
    /// How many nodes (the first ones, 1 to `nodes`) host a sequencer;
    /// `None`: every node, so no single node's death leaves the cluster
    /// without one.
    pub sequencers: Option<usize>,
    /// The nodes' `[failure_detector]` table, if they run one (every node
    /// hosts a layout server, so each would).
    pub failure_detector: Option<DetectorConfig>,
}

impl InitOptions {
    /// Three nodes from port 7001, `sync = always`, a sequencer on every
    /// node, no failure detector, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> InitOptions {
        InitOptions {
            dir: dir.into(),
            nodes: 3,
            base_port: 7001,
            sync: SyncPolicy::Always,
            sequencers: None,
            failure_detector: None,
        }
    }
}

/// Checks a `--sequencers` count against the node count; the error is one
/// line naming the option.
fn check_sequencers(sequencers: usize, nodes: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=nodes).contains(&sequencers),
        "--sequencers must be between 1 and the number of nodes ({nodes}), not {sequencers}"
    );
    Ok(())
}

/// One node written by [`init`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitNode {
    /// Its id (`nK`).
    pub node_id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
}

/// What [`init`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// The cluster directory.
    pub dir: PathBuf,
    /// The new cluster's id.
    pub cluster_id: ClusterId,
    /// The client config (`dir/cluster.toml`).
    pub cluster_config: PathBuf,
    /// The nodes, in order.
    pub nodes: Vec<InitNode>,
}

fn node_id(k: usize) -> String {
    format!("n{k}")
}

fn sync_name(sync: SyncPolicy) -> &'static str {
    match sync {
        SyncPolicy::Always => "always",
        SyncPolicy::Batch => "batch",
        SyncPolicy::Never => "never",
    }
}

/// Parses `always`, `batch` or `never`.
pub fn parse_sync(s: &str) -> Result<SyncPolicy, String> {
    match s {
        "always" => Ok(SyncPolicy::Always),
        "batch" => Ok(SyncPolicy::Batch),
        "never" => Ok(SyncPolicy::Never),
        other => Err(format!("{other:?} is not one of always, batch, never")),
    }
}

/// The roles of node `k` (1-based) of a cluster whose first `sequencers`
/// nodes host a sequencer.
fn roles_of(k: usize, sequencers: usize) -> Vec<Role> {
    let mut roles = vec![Role::LayoutServer, Role::LogUnit];
    if k <= sequencers {
        roles.push(Role::Sequencer);
    }
    roles
}

/// The config of a node whose directory is `node_dir` (data in
/// `node_dir/data`, certificates in `node_dir/tls`).
fn node_config(
    node_dir: &Path,
    node_id: &str,
    listen: SocketAddr,
    cluster_id: ClusterId,
    roles: Vec<Role>,
    sync: SyncPolicy,
) -> NodeConfig {
    let tls = node_dir.join("tls");
    NodeConfig {
        listen,
        data_dir: node_dir.join("data"),
        cluster_id: Some(cluster_id),
        tls: NodeTlsConfig {
            ca_cert: Some(tls.join("ca.pem")),
            cert: Some(tls.join("node.pem")),
            key: Some(tls.join("node.key")),
            ..NodeTlsConfig::default()
        },
        log_unit: LogUnitConfig {
            sync,
            ..LogUnitConfig::default()
        },
        ..NodeConfig::local(node_id, Path::new("data"), roles)
    }
}

/// The text of a node's `node.toml` (paths relative to the file). Every
/// value is a node id `nK`, an address, a cluster id or a fixed name, so
/// nothing needs escaping.
fn node_toml(config: &NodeConfig, cluster_dir: &Path) -> String {
    let roles: Vec<String> = config.roles.iter().map(|r| format!("\"{r}\"")).collect();
    let cluster_id = config.cluster_id.map(|c| c.to_string()).unwrap_or_default();
    format!(
        "# Node {id} of local cluster {cluster_id}, written by `corfu local init`.\n\
         # Run it with: corfu node --config {path}\n\
         # Relative paths are relative to this file.\n\
         node_id = \"{id}\"\n\
         listen = \"{listen}\"\n\
         data_dir = \"data\"\n\
         cluster_id = \"{cluster_id}\"\n\
         roles = [{roles}]\n\
         \n\
         [tls]\n\
         ca_cert = \"tls/ca.pem\"\n\
         cert = \"tls/node.pem\"\n\
         key = \"tls/node.key\"\n\
         \n\
         [log_unit]\n\
         sync = \"{sync}\"\n{detector}",
        id = config.node_id,
        path = cluster_dir
            .join(&config.node_id)
            .join("node.toml")
            .display(),
        listen = config.listen,
        roles = roles.join(", "),
        sync = sync_name(config.log_unit.sync),
        detector = if config.failure_detector.enabled {
            format!(
                "\n[failure_detector]\nenabled = true\nfailure_timeout_ms = {}\nprobe_interval_ms = {}\n",
                config.failure_detector.failure_timeout_ms, config.failure_detector.probe_interval_ms
            )
        } else {
            String::new()
        },
    )
}

/// The text of a cluster's `cluster.toml` (the CA path relative to it).
fn cluster_toml(cluster_id: ClusterId, addrs: &[SocketAddr]) -> String {
    let servers: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "# Client config of local cluster {cluster_id}.\n\
         # Relative paths are relative to this file.\n\
         cluster_id = \"{cluster_id}\"\n\
         layout_servers = [{}]\n\
         \n\
         [tls]\n\
         ca_cert = \"tls/ca.pem\"\n",
        servers.join(", ")
    )
}

/// Writes the cluster CA (`dir/tls/ca.pem`, `ca.key`) and, per node, a copy
/// of the CA certificate and a node certificate issued by it
/// (`dir/<id>/tls/ca.pem`, `node.pem`, `node.key`), valid for `localhost`,
/// the loopback addresses and the node id.
fn write_tls(dir: &Path, cluster_id: ClusterId, node_ids: &[String]) -> anyhow::Result<()> {
    let short = cluster_id.to_string();
    let ca = ClusterCa::generate(&format!("local-{}", &short[..8]))
        .context("generating the cluster CA")?;
    let tls_dir = dir.join("tls");
    ca.write(&tls_dir.join("ca.pem"), &tls_dir.join("ca.key"))
        .context("writing the cluster CA")?;
    for id in node_ids {
        let node_tls = dir.join(id).join("tls");
        let names = node_names(id, [127, 0, 0, 1].into(), &[]);
        let issued = ca
            .issue(id, &names)
            .with_context(|| format!("issuing the certificate of node {id}"))?;
        issued
            .write(&node_tls.join("node.pem"), &node_tls.join("node.key"))
            .with_context(|| format!("writing the certificate of node {id}"))?;
        let ca_copy = node_tls.join("ca.pem");
        fs::write(&ca_copy, ca.cert_pem())
            .with_context(|| format!("writing {}", ca_copy.display()))?;
    }
    Ok(())
}

/// Writes `text` to `path`, refusing to replace an existing file.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Checks the node count and that no target path exists yet; the error is
/// one line naming the offending option or path.
fn check_new_cluster(dir: &Path, nodes: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=NODES_MAX).contains(&nodes),
        "--nodes must be between 1 and {NODES_MAX}, not {nodes}"
    );
    let cluster_toml = dir.join(CLUSTER_TOML);
    anyhow::ensure!(
        !cluster_toml.exists(),
        "{} already holds a cluster ({} exists); choose another --dir",
        dir.display(),
        cluster_toml.display()
    );
    let mut taken = vec![dir.join("tls")];
    taken.extend((1..=nodes).map(|k| dir.join(node_id(k))));
    if let Some(path) = taken.iter().find(|p| p.exists()) {
        anyhow::bail!("{} already exists; choose an empty --dir", path.display());
    }
    Ok(())
}

/// Removes what a failed [`init`] or [`LocalCluster::start`] created (the
/// paths were checked absent before, so they are ours).
fn remove_partial(dir: &Path, nodes: usize, created_dir: bool) {
    let _ = fs::remove_file(dir.join(CLUSTER_TOML));
    let _ = fs::remove_dir_all(dir.join("tls"));
    for k in 1..=nodes {
        let _ = fs::remove_dir_all(dir.join(node_id(k)));
    }
    if created_dir {
        let _ = fs::remove_dir(dir);
    }
}

fn create_dir(dir: &Path) -> anyhow::Result<bool> {
    let existed = dir.exists();
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(!existed)
}

/// Writes the configs and certificates of a local cluster (see the module
/// docs) and checks that every file loads. Refuses, without writing
/// anything, a directory that already holds a cluster or any of the files,
/// a node count outside 1..=[`NODES_MAX`], and ports above 65535.
pub fn init(opts: &InitOptions) -> anyhow::Result<InitReport> {
    anyhow::ensure!(opts.base_port > 0, "--base-port must be at least 1");
    if let Some(detector) = &opts.failure_detector {
        detector.validate().map_err(anyhow::Error::msg)?;
    }
    check_new_cluster(&opts.dir, opts.nodes)?;
    if let Some(sequencers) = opts.sequencers {
        check_sequencers(sequencers, opts.nodes)?;
    }
    let last_port = usize::from(opts.base_port) + opts.nodes - 1;
    anyhow::ensure!(
        last_port <= usize::from(u16::MAX),
        "{} nodes from port {} need ports up to {last_port}, above 65535",
        opts.nodes,
        opts.base_port
    );
    let created_dir = create_dir(&opts.dir)?;
    let dir =
        fs::canonicalize(&opts.dir).with_context(|| format!("resolving {}", opts.dir.display()))?;
    let result = write_cluster(&dir, opts);
    if result.is_err() {
        remove_partial(&dir, opts.nodes, created_dir);
    }
    result
}

fn write_cluster(dir: &Path, opts: &InitOptions) -> anyhow::Result<InitReport> {
    let cluster_id = ClusterId::random();
    let ids: Vec<String> = (1..=opts.nodes).map(node_id).collect();
    let sequencers = opts.sequencers.unwrap_or(opts.nodes);
    write_tls(dir, cluster_id, &ids)?;
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let k = i + 1;
        // Checked by `init`: base_port + nodes - 1 <= 65535.
        let port = u16::try_from(usize::from(opts.base_port) + i).context("port overflow")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let node_dir = dir.join(id);
        let mut expected = node_config(
            &node_dir,
            id,
            addr,
            cluster_id,
            roles_of(k, sequencers),
            opts.sync,
        );
        if let Some(detector) = &opts.failure_detector {
            expected.failure_detector = DetectorConfig {
                enabled: true,
                ..detector.clone()
            };
        }
        let path = node_dir.join("node.toml");
        write_new(&path, &node_toml(&expected, dir))?;
        let loaded = NodeConfig::load(&path).context("checking the written node config")?;
        anyhow::ensure!(
            loaded == expected,
            "{}: reads back as {loaded:?}, not {expected:?}",
            path.display()
        );
        nodes.push(InitNode {
            node_id: id.clone(),
            addr,
            config: path,
        });
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let cluster_config = write_cluster_toml(dir, cluster_id, &addrs)?;
    Ok(InitReport {
        dir: dir.to_path_buf(),
        cluster_id,
        cluster_config,
        nodes,
    })
}

/// Writes `dir/cluster.toml` (refusing to replace one) and checks it loads
/// as the intended client config.
fn write_cluster_toml(
    dir: &Path,
    cluster_id: ClusterId,
    addrs: &[SocketAddr],
) -> anyhow::Result<PathBuf> {
    let path = dir.join(CLUSTER_TOML);
    write_new(&path, &cluster_toml(cluster_id, addrs))?;
    let loaded = ClientConfig::load(&path).context("checking the written client config")?;
    let servers: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    anyhow::ensure!(
        loaded.cluster_id == cluster_id
            && loaded.layout_servers == servers
            && loaded.tls.ca_cert == dir.join("tls").join("ca.pem"),
        "{}: does not read back as written",
        path.display()
    );
    Ok(path)
}

// ---------------------------------------------------------------------
// corfu local up
// ---------------------------------------------------------------------

/// Options of [`up`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpOptions {
    /// The cluster directory; initialized with [`init`] unless it already
    /// holds `cluster.toml` and the node configs.
    pub dir: PathBuf,
    /// Number of nodes: for a new cluster (default 3); for an existing
    /// one it must match what is there.
    pub nodes: Option<usize>,
    /// First port of a new cluster.
    pub base_port: u16,
    /// Durability policy of a new cluster's log units.
    pub sync: SyncPolicy,
    /// Nodes hosting a sequencer: for a new cluster (default: every
    /// node); for an existing one it must match what is there.
    pub sequencers: Option<usize>,
    /// Stripes and chains of the bootstrap.
    pub shape: Shape,
    /// The `corfu` binary to run nodes with (`corfu node --config ...`).
    pub exe: PathBuf,
    /// How long each node may take to answer a ping after it is started.
    pub ready_timeout: Duration,
    /// How long a node may take to stop after SIGTERM before it is killed.
    pub stop_grace: Duration,
}

/// An existing cluster directory: its client config and node configs.
struct ClusterDir {
    dir: PathBuf,
    cluster_config: PathBuf,
    nodes: Vec<(NodeConfig, PathBuf)>,
}

/// Loads the cluster in `dir` (written by [`init`]): `cluster.toml` and
/// `nK/node.toml` for K = 1, 2, ... as long as they exist.
fn load_cluster_dir(dir: &Path) -> anyhow::Result<ClusterDir> {
    let cluster_config = dir.join(CLUSTER_TOML);
    let client = ClientConfig::load(&cluster_config)?;
    let mut nodes = Vec::new();
    for k in 1..=NODES_MAX {
        let path = dir.join(node_id(k)).join("node.toml");
        if !path.exists() {
            break;
        }
        nodes.push((NodeConfig::load(&path)?, path));
    }
    anyhow::ensure!(
        !nodes.is_empty(),
        "{} exists but {} does not: not a directory written by `corfu local init`",
        cluster_config.display(),
        dir.join("n1").join("node.toml").display()
    );
    anyhow::ensure!(
        nodes.len() == client.layout_servers.len(),
        "{} lists {} layout servers but {} holds {} node configs",
        cluster_config.display(),
        client.layout_servers.len(),
        dir.display(),
        nodes.len()
    );
    Ok(ClusterDir {
        dir: dir.to_path_buf(),
        cluster_config,
        nodes,
    })
}

/// A node process started by [`up`].
pub(crate) struct NodeProcess {
    pub(crate) node_id: String,
    pub(crate) addr: String,
    pub(crate) log: PathBuf,
    /// Its process id (kept: `child.id()` is `None` once it is reaped).
    pub(crate) pid: u32,
    pub(crate) child: Child,
}

/// The last non-empty line of a log file, for error messages.
fn last_log_line(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

fn exited(node: &NodeProcess, status: ExitStatus) -> anyhow::Error {
    let last = last_log_line(&node.log)
        .map(|l| format!("; its log ends with: {l}"))
        .unwrap_or_default();
    anyhow::anyhow!(
        "node {} exited ({status}); see {}{last}",
        node.node_id,
        node.log.display()
    )
}

pub(crate) fn spawn_node(
    exe: &Path,
    config: &Path,
    node_id: &str,
    addr: String,
    dir: &Path,
) -> anyhow::Result<NodeProcess> {
    let log = dir.join(node_id).join("node.log");
    let mut out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    {
        use std::io::Write;
        let _ = writeln!(out, "--- started by corfu (pid {}) ---", std::process::id());
    }
    let err = out
        .try_clone()
        .with_context(|| format!("opening {}", log.display()))?;
    let mut command = Command::new(exe);
    command
        .arg("node")
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group: a Ctrl-C in the terminal reaches only
        // `local up`, which then stops the nodes in order.
        .process_group(0)
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info");
    }
    if std::env::var_os("NO_COLOR").is_none() {
        // The output goes to a file: no terminal colour codes in it.
        command.env("NO_COLOR", "1");
    }
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls async-signal-safe functions (prctl, getppid). It makes the
        // node get SIGTERM if `local up` dies without stopping it (the
        // spawning thread is the one running `up`, which lives as long as
        // the nodes it watches).
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("the parent exited"));
                }
                Ok(())
            });
        }
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting node {node_id} ({})", exe.display()))?;
    Ok(NodeProcess {
        node_id: node_id.to_string(),
        addr,
        log,
        pid: child.id().unwrap_or(0),
        child,
    })
}

/// Waits until `node` answers a ping, or fails naming it and its log.
pub(crate) async fn wait_ready(
    endpoint: &corfu_core::transport::ClientEndpoint,
    node: &mut NodeProcess,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let peer = endpoint.peer(&node.addr);
    loop {
        if let Some(status) = node.child.try_wait().context("checking a node process")? {
            return Err(exited(node, status));
        }
        let answer = peer
            .call_timeout(0, Request::Ping, Duration::from_millis(500))
            .await;
        if let Ok(Response::Pong) = answer {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let why = match answer {
                Ok(other) => format!("answered {other:?}"),
                Err(e) => e.to_string(),
            };
            anyhow::bail!(
                "node {} did not answer a ping within {:.0} s ({why}); see {}",
                node.node_id,
                timeout.as_secs_f64(),
                node.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends SIGTERM to every node still running, waits up to `grace`, then
/// kills the rest.
pub(crate) async fn stop_all(nodes: &mut [NodeProcess], grace: Duration) {
    for node in nodes.iter_mut() {
        if let (Ok(None), Some(pid)) = (node.child.try_wait(), node.child.id()) {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: plain syscall; the child is not reaped yet (id()
                // is Some), so the pid is still this child's.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
    }
    let waits = nodes.iter_mut().map(|node| async move {
        match tokio::time::timeout(grace, node.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!(
                    "node {} did not stop within {:.0} s of SIGTERM: killing it",
                    node.node_id,
                    grace.as_secs_f64()
                );
                let _ = node.child.kill().await;
            }
        }
    });
    join_all(waits).await;
}

/// Starts the nodes (each as soon as it is spawned in `procs`, so a stop
/// midway stops it too), waits until each answers, bootstraps and prints
/// how to use the cluster.
async fn start(
    cluster: &ClusterDir,
    opts: &UpOptions,
    procs: &mut Vec<Option<NodeProcess>>,
) -> anyhow::Result<()> {
    for (config, path) in &cluster.nodes {
        let proc = spawn_node(
            &opts.exe,
            path,
            &config.node_id,
            config.listen.to_string(),
            &cluster.dir,
        )?;
        procs.push(Some(proc));
    }
    let client = ClientConfig::load(&cluster.cluster_config)?;
    let endpoint = client.endpoint().context("client endpoint")?;
    for proc in procs.iter_mut().flatten() {
        wait_ready(&endpoint, proc, opts.ready_timeout).await?;
    }
    let layout = cluster::bootstrap_with(&endpoint, &client, opts.shape).await?;
    endpoint.close();
    let mut text = String::new();
    let _ = writeln!(text, "local cluster up: {} nodes", procs.len());
    for proc in procs.iter().flatten() {
        let _ = writeln!(
            text,
            "  {} on {} (pid {}), log {}",
            proc.node_id,
            proc.addr,
            proc.child.id().unwrap_or(0),
            proc.log.display()
        );
    }
    let _ = write!(text, "layout: {}", cluster::layout_summary(&layout));
    let _ = writeln!(text, "client config: {}", cluster.cluster_config.display());
    let _ = writeln!(
        text,
        "try:  corfu log append --cluster {} hello",
        cluster.cluster_config.display()
    );
    let _ = writeln!(
        text,
        "      corfu ping --cluster {}",
        cluster.cluster_config.display()
    );
    let _ = writeln!(
        text,
        "A node that dies is reported here and the others keep running; `corfu local restart nK --dir {}` starts it again.",
        cluster.dir.display()
    );
    let _ = writeln!(text, "Ctrl-C (or SIGTERM) stops the cluster.");
    print!("{text}");
    anyhow::ensure!(!procs.is_empty(), "the cluster has no node");
    Ok(())
}

/// Name of the Unix socket a running `corfu local up` listens on in its
/// cluster directory; `corfu local restart` asks it to start a node again.
pub const CONTROL_SOCKET: &str = "local-up.sock";

/// The longest request line a control connection may send.
const CONTROL_LINE_MAX: u64 = 4096;

/// How long a control connection may take to send its request.
const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to a running `corfu local up` over [`CONTROL_SOCKET`] (one
/// JSON line; the answer is one JSON line too).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum ControlRequest {
    /// Start node `node`'s process again; answered with a
    /// `Result<Restarted, String>`.
    Restart {
        /// The node's id.
        node: String,
    },
}

/// A node process started again by [`restart`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Restarted {
    /// The node's id.
    pub node: String,
    /// The new process's id.
    pub pid: u32,
    /// Where it listens.
    pub addr: String,
    /// What the layout in force means for it (it was removed and can be
    /// added back, or it hosts the active sequencer whose state was lost),
    /// if anything.
    pub note: Option<String>,
}

/// The listening end of [`CONTROL_SOCKET`]; the socket file is removed
/// when this is dropped.
struct Control {
    path: PathBuf,
    listener: tokio::net::UnixListener,
}

impl Control {
    /// Listens on `dir/local-up.sock`. Refuses if another `local up`
    /// answers there (two supervisors of the same nodes would fight over
    /// their ports and data directories); replaces a socket file left by
    /// a `local up` that was killed. `None` (with a warning) if the path is
    /// too long for a Unix socket: the cluster then runs without restarts.
    async fn bind(dir: &Path) -> anyhow::Result<Option<Control>> {
        use std::os::unix::fs::FileTypeExt;
        let path = dir.join(CONTROL_SOCKET);
        match fs::symlink_metadata(&path) {
            Ok(meta) => {
                anyhow::ensure!(
                    meta.file_type().is_socket(),
                    "{} exists and is not a socket; remove it",
                    path.display()
                );
                if tokio::net::UnixStream::connect(&path).await.is_ok() {
                    anyhow::bail!(
                        "another `corfu local up` is running on {} (it answers on {}); stop it first",
                        dir.display(),
                        path.display()
                    );
                }
                fs::remove_file(&path)
                    .with_context(|| format!("removing the stale {}", path.display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        }
        match tokio::net::UnixListener::bind(&path) {
            Ok(listener) => Ok(Some(Control { path, listener })),
            // The only InvalidInput here: a path longer than a socket
            // address holds (about 107 bytes).
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                eprintln!(
                    "warning: cannot listen on {} ({e}): `corfu local restart` will not work for this cluster (use a shorter --dir)",
                    path.display()
                );
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("listening on {}", path.display())),
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A control request read from a connection, with where its answer goes.
type ControlCall = (ControlRequest, tokio::sync::oneshot::Sender<String>);

/// Reads one request line from `stream`, hands it to the supervisor and
/// writes the answer back. Runs as a task of its own, so a client that
/// connects and says nothing holds up nobody.
async fn serve_control(
    stream: tokio::net::UnixStream,
    calls: tokio::sync::mpsc::Sender<ControlCall>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(CONTROL_LINE_MAX));
    let read = tokio::time::timeout(CONTROL_READ_TIMEOUT, reader.read_line(&mut line)).await;
    let answer: Result<Restarted, String> = match read {
        Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(line.trim()) {
            Ok(request) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if calls.send((request, tx)).await.is_err() {
                    Err("`corfu local up` is stopping".to_string())
                } else {
                    match rx.await {
                        // Already serialized by the supervisor.
                        Ok(text) => {
                            let _ = write.write_all(format!("{text}\n").as_bytes()).await;
                            return;
                        }
                        Err(_) => Err("`corfu local up` is stopping".to_string()),
                    }
                }
            }
            Err(e) => Err(format!("not a control request: {e}")),
        },
        Ok(Err(e)) => Err(format!("reading the request: {e}")),
        Err(_) => Err("no request within 5 s".to_string()),
    };
    let text = serde_json::to_string(&answer).unwrap_or_default();
    let _ = write.write_all(format!("{text}\n").as_bytes()).await;
}

/// Waits until one of the running processes in `procs` exits; never
/// returns while none runs.
async fn next_exit(procs: &mut [Option<NodeProcess>]) -> (usize, std::io::Result<ExitStatus>) {
    let waits: Vec<_> = procs
        .iter_mut()
        .enumerate()
        .filter_map(|(i, p)| {
            p.as_mut()
                .map(|p| Box::pin(async move { (i, p.child.wait().await) }))
        })
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    select_all(waits).await.0
}

/// The line `local up` prints when a node process dies.
fn death_line(node: &NodeProcess, status: &std::io::Result<ExitStatus>, dir: &Path) -> String {
    let how = match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("its status is unknown: {e}"),
    };
    // A node that exits by itself says why at the end of its log; a killed
    // one says nothing useful there.
    let last = match status {
        Ok(s) if s.code().is_some() => last_log_line(&node.log)
            .map(|l| format!("; its log ends with: {l}"))
            .unwrap_or_default(),
        _ => String::new(),
    };
    format!(
        "node {} (pid {}) died ({how}){last}; the other nodes keep running; `corfu local restart {} --dir {}` starts it again (log {})",
        node.node_id,
        node.pid,
        node.node_id,
        dir.display(),
        node.log.display()
    )
}

/// Watches the started cluster until SIGINT or SIGTERM: reports every node
/// process that dies (the others keep running) and serves restart
/// requests from `corfu local restart`. Restarts run here, on the task
/// (and thread) of `up` itself, because a node's parent-death signal is
/// tied to the thread that spawned it.
async fn supervise(
    cluster: &ClusterDir,
    opts: &UpOptions,
    procs: &mut [Option<NodeProcess>],
    control: Option<&Control>,
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let (calls_tx, mut calls) = tokio::sync::mpsc::channel::<ControlCall>(16);
    let client = ClientConfig::load(&cluster.cluster_config)?;
    let endpoint = client.endpoint().context("client endpoint")?;
    let accept = || async {
        match control {
            Some(c) => c.listener.accept().await,
            None => std::future::pending().await,
        }
    };
    let outcome = loop {
        tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            (i, status) = next_exit(procs) => {
                if let Some(node) = procs[i].take() {
                    println!("{}", death_line(&node, &status, &cluster.dir));
                }
            }
            accepted = accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_control(stream, calls_tx.clone()));
                }
            }
            Some((request, answer)) = calls.recv() => {
                let ControlRequest::Restart { node } = request;
                let result = restart_node(cluster, opts, procs, &endpoint, &client, &node).await;
                match &result {
                    Ok(r) => println!(
                        "restarted {} (pid {}) on {}{}",
                        r.node,
                        r.pid,
                        r.addr,
                        r.note.as_ref().map(|n| format!("; {n}")).unwrap_or_default()
                    ),
                    Err(e) => println!("restart of {node} refused: {e}"),
                }
                let _ = answer.send(serde_json::to_string(&result).unwrap_or_default());
            }
        }
    };
    println!("{outcome}: stopping the nodes");
    endpoint.close();
    Ok(())
}

/// Starts node `node`'s process again from its config and data directory
/// and waits until it answers a ping. Refuses an unknown node and one
/// still running.
async fn restart_node(
    cluster: &ClusterDir,
    opts: &UpOptions,
    procs: &mut [Option<NodeProcess>],
    endpoint: &corfu_core::transport::ClientEndpoint,
    client: &ClientConfig,
    node: &str,
) -> Result<Restarted, String> {
    let Some(i) = cluster.nodes.iter().position(|(c, _)| c.node_id == node) else {
        return Err(format!(
            "no node {node} in {} (its nodes: {})",
            cluster.dir.display(),
            cluster
                .nodes
                .iter()
                .map(|(c, _)| c.node_id.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    };
    if let Some(running) = &mut procs[i] {
        // Its death may not have been noticed yet.
        if let Ok(None) = running.child.try_wait() {
            return Err(format!(
                "node {node} is already running (pid {})",
                running.pid
            ));
        }
    }
    let (config, path) = &cluster.nodes[i];
    let proc = spawn_node(
        &opts.exe,
        path,
        node,
        config.listen.to_string(),
        &cluster.dir,
    )
    .map_err(|e| format!("{e:#}"))?;
    let pid = proc.pid;
    // Recorded before the wait, so a stop meanwhile stops it too.
    let proc = procs[i].insert(proc);
    if let Err(e) = wait_ready(endpoint, proc, opts.ready_timeout).await {
        if let Ok(Some(_)) = proc.child.try_wait() {
            procs[i] = None;
        }
        return Err(format!("{e:#}"));
    }
    Ok(Restarted {
        node: node.to_string(),
        pid,
        addr: config.listen.to_string(),
        note: restart_note(endpoint, client, &cluster.cluster_config, node).await,
    })
}

/// What the layout in force means for a node just restarted, if anything
/// needs doing: a node removed from the layout is added back with
/// `add-node`; a restarted active sequencer lost its state and serves
/// nothing until a new epoch bootstraps it.
async fn restart_note(
    endpoint: &corfu_core::transport::ClientEndpoint,
    client: &ClientConfig,
    cluster_toml: &Path,
    node: &str,
) -> Option<String> {
    let fetch =
        corfu_core::layout_service::proposer::fetch_layout(endpoint, &client.layout_servers);
    let layout = tokio::time::timeout(Duration::from_secs(3), fetch)
        .await
        .ok()?
        .ok()?;
    let epoch = layout.epoch;
    let c = cluster_toml.display();
    if layout.active_sequencer().is_some_and(|s| s.node_id == node) {
        return Some(format!(
            "it hosts the active sequencer of epoch {epoch}, which lost its state: `corfu layout seal --cluster {c}` bootstraps it again"
        ));
    }
    let a_unit = layout.all_log_units().iter().any(|n| n.node_id == node);
    (!a_unit).then(|| {
        format!(
            "it is no log unit of epoch {epoch}: `corfu layout add-node --cluster {c} {node}` adds it back"
        )
    })
}

/// How long [`restart`] waits for `local up`'s answer: its own wait for
/// the node (`ready_timeout`, 10 s) and then some.
pub const RESTART_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// `corfu local restart`: asks the `corfu local up` running on `dir` to
/// start node `node`'s process again from its config and data directory,
/// and returns once the node answers a ping. The node becomes a child of
/// that `local up` again (stopped by its Ctrl-C, reported if it dies).
/// One-line errors: `dir` holds no cluster, `node` is not one of its
/// nodes, no `local up` is running there, or `local up` refused (the node
/// is still running, or did not come up).
pub async fn restart(dir: &Path, node: &str) -> anyhow::Result<Restarted> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    anyhow::ensure!(
        dir.join(CLUSTER_TOML).is_file(),
        "{} holds no cluster (no {CLUSTER_TOML}); `corfu local up --dir {}` creates and starts one",
        dir.display(),
        dir.display()
    );
    let cluster = load_cluster_dir(dir)?;
    if !cluster.nodes.iter().any(|(c, _)| c.node_id == node) {
        anyhow::bail!(
            "no node {node} in {} (its nodes: {})",
            dir.display(),
            cluster
                .nodes
                .iter()
                .map(|(c, _)| c.node_id.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let path = dir.join(CONTROL_SOCKET);
    let stream = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
        anyhow::anyhow!(
            "no `corfu local up` is running on {} ({}: {e}); `corfu local up --dir {}` starts every node",
            dir.display(),
            path.display(),
            dir.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut request = serde_json::to_string(&ControlRequest::Restart {
        node: node.to_string(),
    })?;
    request.push('\n');
    write
        .write_all(request.as_bytes())
        .await
        .with_context(|| format!("writing to {}", path.display()))?;
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read);
    match tokio::time::timeout(RESTART_ANSWER_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Ok(_)) => anyhow::bail!(
            "`corfu local up` closed {} without an answer",
            path.display()
        ),
        Ok(Err(e)) => return Err(e).with_context(|| format!("reading from {}", path.display())),
        Err(_) => anyhow::bail!(
            "`corfu local up` did not answer within {} s",
            RESTART_ANSWER_TIMEOUT.as_secs()
        ),
    }
    let answer: Result<Restarted, String> = serde_json::from_str(line.trim())
        .with_context(|| format!("an answer from {} that is not one", path.display()))?;
    answer.map_err(|e| anyhow::anyhow!("{e}"))
}

/// `corfu local up`: initializes the directory if needed (a directory
/// already holding `cluster.toml` and its node configs is restarted as it
/// is), runs every node as a child process with its output in
/// `D/nK/node.log`, waits until each answers a ping, bootstraps
/// (idempotent), prints the client config and example commands, then runs
/// until SIGINT or SIGTERM and stops the nodes (SIGTERM, then SIGKILL after
/// the grace period). A node that fails to start stops the others and
/// fails `up`; once the cluster is up, a node that dies is reported (a
/// line naming it, its pid and its exit status or signal) and the others
/// keep running, and [`restart`] (`corfu local restart`) starts it again
/// through [`CONTROL_SOCKET`]. A second `up` on a directory whose cluster
/// is running is refused.
pub async fn up(opts: &UpOptions) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (cluster, control) = if opts.dir.join(CLUSTER_TOML).exists() {
        let cluster = load_cluster_dir(&opts.dir)?;
        if let Some(n) = opts.nodes {
            anyhow::ensure!(
                n == cluster.nodes.len(),
                "{} holds a cluster of {} nodes, not {n}: drop --nodes or choose another --dir",
                opts.dir.display(),
                cluster.nodes.len()
            );
        }
        if let Some(n) = opts.sequencers {
            let there = cluster
                .nodes
                .iter()
                .filter(|(c, _)| c.roles.contains(&Role::Sequencer))
                .count();
            anyhow::ensure!(
                n == there,
                "{} holds a cluster with {there} sequencer node(s), not {n}: drop --sequencers or choose another --dir",
                opts.dir.display()
            );
        }
        // Before anything is said or started: refused if it runs already.
        let control = Control::bind(&cluster.dir).await?;
        println!(
            "restarting the cluster in {} ({} nodes)",
            cluster.dir.display(),
            cluster.nodes.len()
        );
        (cluster, control)
    } else {
        let report = init(&InitOptions {
            dir: opts.dir.clone(),
            nodes: opts.nodes.unwrap_or(3),
            base_port: opts.base_port,
            sync: opts.sync,
            sequencers: opts.sequencers,
            failure_detector: None,
        })?;
        println!(
            "initialized {} ({} nodes, cluster {})",
            report.dir.display(),
            report.nodes.len(),
            report.cluster_id
        );
        let cluster = load_cluster_dir(&report.dir)?;
        let control = Control::bind(&cluster.dir).await?;
        (cluster, control)
    };
    let mut procs = Vec::new();
    let started = tokio::select! {
        r = start(&cluster, opts, &mut procs) => r.map(|()| true),
        _ = sigint.recv() => {
            println!("SIGINT: stopping the nodes");
            Ok(false)
        }
        _ = sigterm.recv() => {
            println!("SIGTERM: stopping the nodes");
            Ok(false)
        }
    };
    let outcome = match started {
        Ok(true) => {
            supervise(
                &cluster,
                opts,
                &mut procs,
                control.as_ref(),
                &mut sigint,
                &mut sigterm,
            )
            .await
        }
        other => other.map(|_| ()),
    };
    // No restart requests while the nodes stop.
    drop(control);
    let mut running: Vec<NodeProcess> = procs.into_iter().flatten().collect();
    stop_all(&mut running, opts.stop_grace).await;
    if outcome.is_ok() {
        println!("stopped {} node(s)", running.len());
    }
    outcome
}

// ---------------------------------------------------------------------
// In-process clusters
// ---------------------------------------------------------------------

/// Options of [`LocalCluster::start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOptions {
    /// Stripes and chains of the bootstrap (default: one chain of every
    /// node).
    pub shape: Shape,
    /// The log units' durability policy (default `always`).
    pub sync: SyncPolicy,
    /// How many nodes (the first ones) host a sequencer; the first is the
    /// active one (default 1).
    pub sequencers: usize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            shape: Shape::default(),
            sync: SyncPolicy::Always,
            sequencers: 1,
        }
    }
}

struct LocalNode {
    config: NodeConfig,
    running: Option<RunningNode>,
}

/// A cluster of nodes running inside this process on loopback, sharing one
/// CA, bootstrapped at start. Node `i` (0-based) has id `n{i+1}`; every
/// node hosts a layout server and a log unit, the first
/// [`LocalOptions::sequencers`] also a sequencer.
pub struct LocalCluster {
    dir: PathBuf,
    cluster_config_path: PathBuf,
    client_config: ClientConfig,
    layout: Layout,
    nodes: Vec<LocalNode>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("dir", &self.dir)
            .field(
                "nodes",
                &self
                    .nodes
                    .iter()
                    .map(|n| n.config.listen)
                    .collect::<Vec<_>>(),
            )
            .field("epoch", &self.layout.epoch)
            .finish_non_exhaustive()
    }
}

impl LocalCluster {
    /// Starts `nodes` nodes in `dir` (created if absent; it must not hold a
    /// cluster already) on free loopback ports, writes `dir/cluster.toml`
    /// with their addresses, and bootstraps the cluster with
    /// [`cluster::bootstrap`].
    pub async fn start(
        dir: &Path,
        nodes: usize,
        opts: LocalOptions,
    ) -> anyhow::Result<LocalCluster> {
        check_new_cluster(dir, nodes)?;
        anyhow::ensure!(
            (1..=nodes).contains(&opts.sequencers),
            "sequencers must be between 1 and the number of nodes ({nodes}), not {}",
            opts.sequencers
        );
        let created_dir = create_dir(dir)?;
        let dir = fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
        let mut started = Vec::new();
        let result = Self::start_in(&dir, nodes, &opts, &mut started).await;
        if result.is_err() {
            join_all(started.into_iter().map(|n: RunningNode| n.shutdown())).await;
            remove_partial(&dir, nodes, created_dir);
        }
        result
    }

    async fn start_in(
        dir: &Path,
        count: usize,
        opts: &LocalOptions,
        started: &mut Vec<RunningNode>,
    ) -> anyhow::Result<LocalCluster> {
        let cluster_id = ClusterId::random();
        let ids: Vec<String> = (1..=count).map(node_id).collect();
        write_tls(dir, cluster_id, &ids)?;
        let mut configs = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let mut config = node_config(
                &dir.join(id),
                id,
                SocketAddr::from(([127, 0, 0, 1], 0)),
                cluster_id,
                roles_of(i + 1, opts.sequencers),
                opts.sync,
            );
            let running = node::start(config.clone())
                .await
                .with_context(|| format!("starting node {id}"))?;
            // Restarts reuse the port the node got.
            config.listen = running.local_addr();
            started.push(running);
            configs.push(config);
        }
        let addrs: Vec<SocketAddr> = configs.iter().map(|c| c.listen).collect();
        let cluster_config_path = write_cluster_toml(dir, cluster_id, &addrs)?;
        let client_config = ClientConfig::load(&cluster_config_path)?;
        let layout = cluster::bootstrap(&client_config, opts.shape).await?;
        let nodes = configs
            .into_iter()
            .zip(started.drain(..))
            .map(|(config, running)| LocalNode {
                config,
                running: Some(running),
            })
            .collect();
        Ok(LocalCluster {
            dir: dir.to_path_buf(),
            cluster_config_path,
            client_config,
            layout,
            nodes,
        })
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The client config of the cluster (as loaded from
    /// [`LocalCluster::client_config_path`]).
    pub fn client_config(&self) -> ClientConfig {
        self.client_config.clone()
    }

    /// Path of the client config file (`dir/cluster.toml`).
    pub fn client_config_path(&self) -> &Path {
        &self.cluster_config_path
    }

    /// The layout decided by the last bootstrap.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> ClusterId {
        self.client_config.cluster_id
    }

    /// Number of nodes (running or stopped).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The id of node `i` (0-based), if there is one.
    pub fn node_id(&self, i: usize) -> Option<&str> {
        self.nodes.get(i).map(|n| n.config.node_id.as_str())
    }

    /// The address of node `i` (0-based), if there is one; it keeps it
    /// across restarts.
    pub fn node_addr(&self, i: usize) -> Option<SocketAddr> {
        self.nodes.get(i).map(|n| n.config.listen)
    }

    /// The config node `i` (0-based) runs with, if there is one.
    pub fn node_config(&self, i: usize) -> Option<&NodeConfig> {
        self.nodes.get(i).map(|n| &n.config)
    }

    /// Whether node `i` (0-based) is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.running.is_some())
    }

    fn node_mut(&mut self, i: usize) -> anyhow::Result<&mut LocalNode> {
        let count = self.nodes.len();
        self.nodes
            .get_mut(i)
            .with_context(|| format!("no node {i}: the cluster has {count} (indices from 0)"))
    }

    /// Stops node `i` (0-based) gracefully; its data stays. An error if
    /// there is no such node or it is already stopped.
    pub async fn stop_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = self.node_mut(i)?;
        let running = node
            .running
            .take()
            .with_context(|| format!("node {} is not running", node.config.node_id))?;
        running.shutdown().await;
        Ok(())
    }

    /// Starts node `i` (0-based) again on its address and data directory.
    /// Its sequencer, if any, then serves nothing until bootstrapped again
    /// (for example with [`LocalCluster::bootstrap`]); its log unit and
    /// layout server recover their state from disk.
    pub async fn restart_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = self.node_mut(i)?;
        anyhow::ensure!(
            node.running.is_none(),
            "node {} is already running",
            node.config.node_id
        );
        // The stopped endpoint's socket is released by a task of its own,
        // which may still hold the port for a moment: retry while it does.
        let deadline = tokio::time::Instant::now() + RESTART_PORT_WAIT;
        let running = loop {
            match node::start(node.config.clone()).await {
                Ok(running) => break running,
                Err(e @ node::NodeError::Transport(_))
                    if e.to_string().contains("in use")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("restarting node {}", node.config.node_id)))
                }
            }
        };
        node.running = Some(running);
        Ok(())
    }

    /// Runs [`cluster::bootstrap`] again (idempotent: the layout service
    /// keeps its decision, the active sequencer is bootstrapped from the
    /// log units' tails) and returns the decided layout.
    pub async fn bootstrap(&mut self, shape: Shape) -> anyhow::Result<Layout> {
        let layout = cluster::bootstrap(&self.client_config, shape).await?;
        self.layout = layout.clone();
        Ok(layout)
    }

    /// Stops every running node and waits until they have stopped.
    pub async fn shutdown(self) {
        join_all(
            self.nodes
                .into_iter()
                .filter_map(|n| n.running)
                .map(|n| n.shutdown()),
        )
        .await;
    }
}

// ---------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------

/// `corfu local ...` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum LocalCommand {
    /// Write the configs and certificates of a local cluster on loopback
    /// (starts nothing).
    Init(InitArgs),
    /// Run a local cluster as child processes until Ctrl-C (initializes
    /// the directory first unless it already holds a cluster). A node that
    /// dies is reported and the others keep running.
    Up(UpArgs),
    /// Start a node of a running `corfu local up` again (after it died or
    /// was killed), from its config and data directory.
    Restart(RestartArgs),
}

/// Arguments of `corfu local restart`.
#[derive(clap::Args, Debug)]
pub struct RestartArgs {
    /// The node's id (n1, n2, ...).
    pub node: String,
    /// The cluster directory `corfu local up` runs.
    #[arg(long)]
    pub dir: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `corfu local init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Number of nodes (1 to 64).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// The cluster directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Port of node n1; node nK listens on base-port + K - 1.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Durability of the log units: always, batch or never.
    #[arg(long, default_value = "always", value_parser = parse_sync)]
    pub sync: SyncPolicy,
    /// How many nodes (n1, n2, ... in order) host a sequencer, 1 to
    /// --nodes (default: every node). The first is active; removing its
    /// node hands the role to the next.
    #[arg(long)]
    pub sequencers: Option<usize>,
}

/// Arguments of `corfu local up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Number of nodes of a new cluster (default 3; 1 to 64).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// The cluster directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Port of node n1 of a new cluster; node nK listens on
    /// base-port + K - 1.
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// Durability of a new cluster's log units: always, batch or never.
    #[arg(long, default_value = "always", value_parser = parse_sync)]
    pub sync: SyncPolicy,
    /// How many nodes of a new cluster (n1, n2, ... in order) host a
    /// sequencer, 1 to --nodes (default: every node).
    #[arg(long)]
    pub sequencers: Option<usize>,
    /// Number of stripes of the bootstrap layout (see `corfu cluster
    /// bootstrap`).
    #[arg(long)]
    pub stripes: Option<usize>,
    /// Log units per stripe of the bootstrap layout.
    #[arg(long)]
    pub chain: Option<usize>,
}

/// Runs a `corfu local` subcommand.
pub async fn run_local(command: LocalCommand) -> anyhow::Result<()> {
    match command {
        LocalCommand::Init(args) => {
            let report = init(&InitOptions {
                dir: args.dir,
                nodes: args.nodes,
                base_port: args.base_port,
                sync: args.sync,
                sequencers: args.sequencers,
                failure_detector: None,
            })?;
            println!(
                "local cluster {} ({} nodes) in {}",
                report.cluster_id,
                report.nodes.len(),
                report.dir.display()
            );
            for node in &report.nodes {
                println!(
                    "  {} on {}: {}",
                    node.node_id,
                    node.addr,
                    node.config.display()
                );
            }
            println!("client config: {}", report.cluster_config.display());
            println!(
                "next: corfu local up --dir {}   (or run `corfu node --config ...` per node, then `corfu cluster bootstrap --cluster {}`)",
                report.dir.display(),
                report.cluster_config.display()
            );
            Ok(())
        }
        LocalCommand::Up(args) => {
            let exe = std::env::current_exe().context("locating the corfu binary")?;
            up(&UpOptions {
                dir: args.dir,
                nodes: args.nodes,
                base_port: args.base_port,
                sync: args.sync,
                sequencers: args.sequencers,
                shape: Shape {
                    stripes: args.stripes,
                    chain: args.chain,
                },
                exe,
                ready_timeout: Duration::from_secs(10),
                stop_grace: Duration::from_secs(5),
            })
            .await
        }
        LocalCommand::Restart(args) => {
            let done = restart(&args.dir, &args.node).await?;
            if args.json {
                println!("{}", serde_json::to_string(&done)?);
            } else {
                println!(
                    "restarted {} (pid {}) on {}; it answers pings",
                    done.node, done.pid, done.addr
                );
                if let Some(note) = &done.note {
                    println!("note: {note}");
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_loadable_configs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let report = init(&InitOptions {
            nodes: 4,
            base_port: 17001,
            sync: SyncPolicy::Never,
            ..InitOptions::new(&dir)
        })
        .unwrap();
        assert_eq!(report.nodes.len(), 4);
        let client = ClientConfig::load(&dir.join("cluster.toml")).unwrap();
        assert_eq!(client.cluster_id, report.cluster_id);
        assert_eq!(
            client.layout_servers,
            vec![
                "127.0.0.1:17001",
                "127.0.0.1:17002",
                "127.0.0.1:17003",
                "127.0.0.1:17004"
            ]
        );
        assert!(client.tls.ca_cert.exists());
        for (i, node) in report.nodes.iter().enumerate() {
            let cfg = NodeConfig::load(&node.config).unwrap();
            assert_eq!(cfg.node_id, format!("n{}", i + 1));
            assert_eq!(cfg.listen.port(), 17001 + i as u16);
            assert_eq!(cfg.cluster_id, Some(report.cluster_id));
            assert_eq!(cfg.log_unit.sync, SyncPolicy::Never);
            assert!(
                cfg.roles.contains(&Role::Sequencer),
                "every node by default"
            );
            assert!(cfg.roles.contains(&Role::LayoutServer) && cfg.roles.contains(&Role::LogUnit));
            assert!(cfg.data_dir.ends_with(format!("n{}/data", i + 1)));
            for p in [&cfg.tls.ca_cert, &cfg.tls.cert, &cfg.tls.key] {
                assert!(p.as_ref().unwrap().exists(), "{p:?}");
            }
            assert!(cfg.tls.ca_key.is_none());
            assert!(!dir.join(format!("n{}", i + 1)).join("tls/ca.key").exists());
        }
        assert!(dir.join("tls/ca.key").exists());
    }

    #[test]
    fn init_refuses_an_existing_cluster_and_overwrites_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = InitOptions::new(tmp.path());
        init(&opts).unwrap();
        let ca = fs::read(tmp.path().join("tls/ca.pem")).unwrap();
        let toml = fs::read(tmp.path().join("cluster.toml")).unwrap();
        let e = init(&opts).unwrap_err();
        let line = format!("{e:#}");
        assert!(line.contains("already holds a cluster"), "{line}");
        assert!(!line.contains('\n'));
        assert_eq!(fs::read(tmp.path().join("tls/ca.pem")).unwrap(), ca);
        assert_eq!(fs::read(tmp.path().join("cluster.toml")).unwrap(), toml);

        // A directory holding some other node's files is refused too.
        let other = tempfile::tempdir().unwrap();
        fs::create_dir_all(other.path().join("n2")).unwrap();
        let e = init(&InitOptions::new(other.path())).unwrap_err();
        assert!(e.to_string().contains("n2 already exists"), "{e}");
        assert!(!other.path().join("tls").exists());
    }

    #[test]
    fn init_refuses_bad_counts_and_ports() {
        let tmp = tempfile::tempdir().unwrap();
        for (nodes, base_port, expect) in [
            (0, 7001, "--nodes"),
            (65, 7001, "--nodes"),
            (2, 65535, "65535"),
            (64, 65500, "65535"),
            (1, 0, "--base-port"),
        ] {
            let e = init(&InitOptions {
                nodes,
                base_port,
                ..InitOptions::new(tmp.path().join("x"))
            })
            .unwrap_err();
            let line = format!("{e:#}");
            assert!(line.contains(expect), "{nodes} {base_port}: {line}");
            assert!(!tmp.path().join("x").exists(), "nothing written");
        }
        // The highest port that fits is fine.
        init(&InitOptions {
            nodes: 1,
            base_port: 65535,
            ..InitOptions::new(tmp.path().join("y"))
        })
        .unwrap();
    }

    #[test]
    fn sequencers_are_the_first_nodes_and_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let report = init(&InitOptions {
            nodes: 4,
            base_port: 17101,
            sequencers: Some(2),
            ..InitOptions::new(tmp.path().join("two"))
        })
        .unwrap();
        let hosts: Vec<bool> = report
            .nodes
            .iter()
            .map(|n| {
                NodeConfig::load(&n.config)
                    .unwrap()
                    .roles
                    .contains(&Role::Sequencer)
            })
            .collect();
        assert_eq!(hosts, [true, true, false, false]);
        for bad in [0, 5] {
            let e = init(&InitOptions {
                nodes: 4,
                sequencers: Some(bad),
                ..InitOptions::new(tmp.path().join("bad"))
            })
            .unwrap_err();
            let line = format!("{e:#}");
            assert!(
                line.contains("--sequencers must be between 1 and the number of nodes (4)"),
                "{line}"
            );
            assert!(!line.contains('\n'));
            assert!(!tmp.path().join("bad").exists(), "nothing written");
        }
    }

    #[test]
    fn sync_names_round_trip() {
        for s in [SyncPolicy::Always, SyncPolicy::Batch, SyncPolicy::Never] {
            assert_eq!(parse_sync(sync_name(s)), Ok(s));
        }
        assert!(parse_sync("sometimes").is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn local_cluster_of_three_bootstraps_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cluster = LocalCluster::start(
            tmp.path(),
            3,
            LocalOptions {
                sync: SyncPolicy::Never,
                ..LocalOptions::default()
            },
        )
        .await
        .unwrap();
        let layout = cluster.layout().clone();
        assert_eq!(layout.epoch, 1);
        assert_eq!(layout.cluster_id, cluster.cluster_id());
        assert_eq!(layout.segments.len(), 1);
        let stripes = &layout.segments[0].stripes;
        assert_eq!(stripes.len(), 1);
        let chain: Vec<&str> = stripes[0]
            .chain
            .iter()
            .map(|n| n.node_id.as_str())
            .collect();
        assert_eq!(chain, ["n1", "n2", "n3"]);
        for (i, node) in stripes[0].chain.iter().enumerate() {
            assert_eq!(node.addr, cluster.node_addr(i).unwrap().to_string());
        }
        assert_eq!(layout.active_sequencer().unwrap().node_id, "n1");

        // The client config on disk names the same cluster and nodes.
        let loaded = ClientConfig::load(cluster.client_config_path()).unwrap();
        assert_eq!(loaded, cluster.client_config());

        // A second bootstrap decides nothing new.
        let again = cluster::bootstrap(&cluster.client_config(), Shape::default())
            .await
            .unwrap();
        assert_eq!(again, layout);
        // Even when asked for another shape: epoch 1 is decided.
        let again = cluster::bootstrap(&cluster.client_config(), Shape::new(3, 1))
            .await
            .unwrap();
        assert_eq!(again, layout);

        // The sequencer serves after the bootstrap.
        use corfu_core::types::StreamId;
        use corfu_core::wire::logunit::{AddressedEntry, Entry, StreamHeader, WriteOutcome};
        use corfu_core::wire::{
            LogUnitRequest, LogUnitResponse, SequencerRequest, SequencerResponse,
        };
        let endpoint = cluster.client_config().endpoint().unwrap();
        let seq = endpoint.peer(&cluster.node_addr(0).unwrap().to_string());
        let stream = StreamId::from_name("local-test");
        let token = Request::Sequencer(SequencerRequest::Token {
            count: 1,
            streams: vec![stream],
            condition: None,
        });
        let answer = seq.call(1, token.clone()).await.unwrap();
        assert!(
            matches!(
                answer,
                Response::Sequencer(SequencerResponse::Token { start: 0, .. })
            ),
            "{answer:?}"
        );
        // Address 0 is written down the chain, head first.
        for i in 0..3 {
            let unit = endpoint.peer(&cluster.node_addr(i).unwrap().to_string());
            let write = Request::LogUnit(LogUnitRequest::Write(AddressedEntry {
                address: 0,
                entry: Entry {
                    id: None,
                    streams: vec![StreamHeader {
                        stream,
                        backpointer: None,
                    }],
                    payload: b"hello".to_vec(),
                },
            }));
            let answer = unit.call(1, write).await.unwrap();
            assert_eq!(
                answer,
                Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Ok))
            );
        }

        // A node restarts on its address; after a restart the sequencer
        // serves nothing. Running the (idempotent) bootstrap again does not
        // bootstrap it at epoch 1 (it may have granted addresses there
        // before it lost its state): it seals epoch 2, whose sequencer
        // starts past every address epoch 1's could have granted.
        cluster.stop_node(0).await.unwrap();
        assert!(!cluster.is_running(0));
        assert!(cluster.stop_node(0).await.is_err());
        assert!(cluster.stop_node(7).await.is_err());
        cluster.restart_node(0).await.unwrap();
        assert!(cluster.is_running(0));
        assert!(cluster.restart_node(0).await.is_err());
        let answer = seq.call(1, token.clone()).await.unwrap();
        assert!(matches!(answer, Response::Error(_)), "{answer:?}");
        let sealed = cluster.bootstrap(Shape::default()).await.unwrap();
        assert_eq!(sealed.epoch, 2);
        assert_eq!(sealed.segments, layout.segments);
        assert_eq!(sealed.grants.start, layout.grants.bound);
        assert!(sealed.is_void(1) && !sealed.is_void(0));
        let answer = seq.call(2, token).await.unwrap();
        assert_eq!(
            answer,
            Response::Sequencer(SequencerResponse::Token {
                start: layout.grants.bound,
                count: 1,
                previous: vec![(stream, Some(0))],
            })
        );
        endpoint.close();

        // The directory cannot be used for a second cluster.
        let e = LocalCluster::start(tmp.path(), 3, LocalOptions::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("already holds a cluster"), "{e}");

        cluster.shutdown().await;
    }
}
