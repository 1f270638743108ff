//! A five-node cluster of real `corfu node` processes on loopback for the
//! fault tests (`fault_kill`, `partitions`): bootstrapped with one chain of
//! three (n1 -> n2 -> n3), detectors on with a 300 ms failure timeout, and
//! appenders recording a history.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corfu::cluster::Shape;
use corfu::core::client::{LogClient, LogClientOptions};
use corfu::core::client_config::ClientConfig;
use corfu::core::layout::Layout;
use corfu::core::logunit::SyncPolicy;
use corfu::core::reconfig::Reconfigurer;
use corfu::core::types::{Address, StreamId};
use corfu::core::wire::Request;
use corfu::local::{init, InitOptions};

use super::history::{check_replicas, History, Outcome};
use super::{spawn_node_process, within, NodeProcess};

/// The detector's failure timeout in these tests.
pub const FAILURE_TIMEOUT_MS: u64 = 300;

pub struct Cluster {
    pub _dir: tempfile::TempDir,
    pub nodes: Vec<NodeProcess>,
    /// Each node's config file.
    pub node_configs: Vec<std::path::PathBuf>,
    /// A client config file naming the nodes where they really listen
    /// (for the `corfu layout` commands).
    pub cluster_toml: std::path::PathBuf,
    pub config: ClientConfig,
    pub first: Layout,
    /// The setup's `local_ips`.
    pub local_ips: Option<u8>,
    /// Per node, the stderr lines of its earlier processes (before
    /// restarts).
    pub earlier_stderr: Vec<Vec<String>>,
}

impl Cluster {
    /// Node `k` (1-based) as the packet filter sees it (the cluster must
    /// have been set up with `local_ips`).
    pub fn host(&self, k: usize) -> super::net::Host {
        let x = self.local_ips.expect("a cluster set up with local_ips");
        let port = self.nodes[k - 1].addr.rsplit(':').next().unwrap();
        super::net::Host {
            ip: node_ip(x, k),
            port: Some(port.parse().unwrap()),
        }
    }

    /// The test's clients as the packet filter sees them.
    pub fn client_host(&self) -> super::net::Host {
        let x = self.local_ips.expect("a cluster set up with local_ips");
        super::net::Host {
            ip: client_ip(x),
            port: None,
        }
    }

    /// Starts node `k` (1-based) again from its config and data directory,
    /// on the address it had (its process must have exited or been
    /// killed), as often as needed.
    pub fn restart(&mut self, k: usize) {
        let config = &self.node_configs[k - 1];
        let text = std::fs::read_to_string(config).unwrap();
        let any = "listen = \"127.0.0.1:0\"";
        let there = format!("listen = \"{}\"", self.nodes[k - 1].addr);
        // Restarted before: the config names the address already.
        assert!(text.contains(any) || text.contains(&there), "{text}");
        let text = text.replace(any, &there);
        std::fs::write(config, text).unwrap();
        let _ = self.nodes[k - 1].child.wait();
        let lines = self.nodes[k - 1].stderr.lock().unwrap().clone();
        self.earlier_stderr[k - 1].extend(lines);
        self.earlier_stderr[k - 1].push("---- restarted ----".into());
        self.nodes[k - 1] = spawn_node_process(config);
    }

    /// Writes every node's stderr so far (earlier processes included) to
    /// `dir/nK.log`; returns `dir`.
    pub fn write_logs(&self, dir: &std::path::Path) -> std::path::PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        for (i, node) in self.nodes.iter().enumerate() {
            let mut lines = self.earlier_stderr[i].clone();
            lines.extend(node.stderr.lock().unwrap().iter().cloned());
            let text: Vec<String> = lines.iter().map(|l| plain(l)).collect();
            std::fs::write(dir.join(format!("n{}.log", i + 1)), text.join("\n")).unwrap();
        }
        dir.to_path_buf()
    }
}

/// How a test's cluster is set up.
pub struct Setup<'a> {
    /// The 1-based nodes hosting a sequencer (in layout order: the first
    /// is active).
    pub sequencers: &'a [usize],
    /// Nodes require client certificates from the cluster CA (the
    /// detectors present their node certificates; the test client borrows
    /// n5's).
    pub client_auth: bool,
    /// The nodes' failure detectors are on.
    pub detectors: bool,
    /// The 1-based nodes hosting a layout server (the others do not).
    pub layout_servers: &'a [usize],
    /// The nodes' `transport.connect_timeout_ms`, if not the default.
    pub node_connect_timeout_ms: Option<u64>,
    /// `Some(x)`: node `k` makes its outgoing connections from
    /// `127.0.x.k` and the test's clients from [`client_ip`]`(x)`
    /// (`transport.local_ip`), so links can be cut by address
    /// ([`super::net::Net`]); `None`: the OS picks.
    pub local_ips: Option<u8>,
}

/// The source address of node `k` (1-based) with `local_ips = Some(x)`.
pub fn node_ip(x: u8, k: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, x, k as u8)
}

/// The source address of the test's clients with `local_ips = Some(x)`.
pub fn client_ip(x: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 0, x, 100)
}

/// Five nodes; `sequencers` are the 1-based nodes hosting a sequencer (in
/// layout order: the first is active). Bootstrapped with one chain of
/// three. Every node is a layout server and runs its failure detector.
/// With `client_auth`, nodes require client certificates from the cluster
/// CA (the detectors present their node certificates; the test client
/// borrows n5's).
pub async fn start_cluster(sequencers: &[usize], client_auth: bool) -> Cluster {
    start_cluster_with(Setup {
        sequencers,
        client_auth,
        detectors: true,
        layout_servers: &[1, 2, 3, 4, 5],
        node_connect_timeout_ms: None,
        local_ips: None,
    })
    .await
}

/// Five nodes, bootstrapped with one chain of three (n1 -> n2 -> n3), as
/// `setup` says.
pub async fn start_cluster_with(setup: Setup<'_>) -> Cluster {
    let Setup {
        sequencers,
        client_auth,
        detectors,
        layout_servers,
        node_connect_timeout_ms,
        local_ips,
    } = setup;
    let dir = tempfile::tempdir().unwrap();
    let report = init(&InitOptions {
        nodes: 5,
        sync: SyncPolicy::Always,
        // The setup adds the sequencer role to the nodes it names.
        sequencers: Some(1),
        ..InitOptions::new(dir.path().join("cluster"))
    })
    .unwrap();
    let mut nodes = Vec::new();
    for (i, node) in report.nodes.iter().enumerate() {
        let k = i + 1;
        let text = std::fs::read_to_string(&node.config).unwrap();
        let listen = format!("listen = \"{}\"", node.addr);
        assert!(text.contains(&listen), "{text}");
        let mut text = text.replace(&listen, "listen = \"127.0.0.1:0\"");
        let roles = "roles = [\"layout_server\", \"log_unit\"";
        if sequencers.contains(&k) && !text.contains("\"sequencer\"") {
            assert!(text.contains(roles), "{text}");
            text = text.replace(
                roles,
                "roles = [\"layout_server\", \"log_unit\", \"sequencer\"",
            );
        }
        if !layout_servers.contains(&k) {
            assert!(text.contains("roles = [\"layout_server\", "), "{text}");
            text = text.replace("roles = [\"layout_server\", ", "roles = [");
        }
        if client_auth {
            assert!(text.contains("[tls]\n"), "{text}");
            text = text.replace("[tls]\n", "[tls]\nclient_auth = true\n");
        }
        if node_connect_timeout_ms.is_some() || local_ips.is_some() {
            text.push_str("\n[transport]\n");
        }
        if let Some(ms) = node_connect_timeout_ms {
            text.push_str(&format!("connect_timeout_ms = {ms}\n"));
        }
        if let Some(x) = local_ips {
            text.push_str(&format!("local_ip = \"{}\"\n", node_ip(x, k)));
        }
        if detectors {
            text.push_str(&format!(
                "\n[failure_detector]\nenabled = true\nfailure_timeout_ms = {FAILURE_TIMEOUT_MS}\nprobe_interval_ms = 50\n"
            ));
        }
        std::fs::write(&node.config, text).unwrap();
        nodes.push(spawn_node_process(&node.config));
    }
    let mut config = ClientConfig::load(&report.cluster_config).unwrap();
    config.transport.local_ip = local_ips.map(|x| client_ip(x).into());
    // The bootstrap asks every node who it is.
    config.layout_servers = nodes.iter().map(|n| n.addr.clone()).collect();
    if client_auth {
        let n5 = report.nodes[4].config.parent().unwrap().join("tls");
        config.tls.cert = Some(n5.join("node.pem"));
        config.tls.key = Some(n5.join("node.key"));
        // Client certificates are really required.
        let mut anonymous = config.clone();
        anonymous.tls.cert = None;
        anonymous.tls.key = None;
        let refused = anonymous
            .endpoint()
            .unwrap()
            .peer(&nodes[0].addr)
            .call(0, Request::Ping)
            .await;
        assert!(refused.is_err(), "{refused:?}");
    }
    let first = within(
        20,
        "bootstrap",
        corfu::cluster::bootstrap(&config, Shape::new(1, 3)),
    )
    .await
    .unwrap();
    let ids: Vec<_> = first.sequencers.iter().map(|n| n.node_id.clone()).collect();
    let expected: Vec<_> = sequencers.iter().map(|k| format!("n{k}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(chain_ids(&first), ["n1", "n2", "n3"]);
    // From now on only the layout servers are asked for layouts.
    config.layout_servers = layout_servers
        .iter()
        .map(|k| nodes[k - 1].addr.clone())
        .collect();
    let listed: Vec<String> = config
        .layout_servers
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    let text = std::fs::read_to_string(&report.cluster_config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("layout_servers = "))
        .unwrap()
        .to_string();
    let cluster_toml = report.cluster_config.with_file_name("cluster-live.toml");
    std::fs::write(
        &cluster_toml,
        text.replace(&line, &format!("layout_servers = [{}]", listed.join(", "))),
    )
    .unwrap();
    // Clients give up on an unanswered request after 300 ms and retry (with
    // the layout re-read), so a dead peer stalls them about as long as the
    // detector takes.
    config.transport.request_timeout_ms = 300;
    config.transport.connect_timeout_ms = 300;
    config.client = LogClientOptions {
        hole_fill_timeout_ms: 50,
        operation_timeout_ms: 20_000,
        ..LogClientOptions::default()
    };
    Cluster {
        _dir: dir,
        nodes,
        node_configs: report.nodes.iter().map(|n| n.config.clone()).collect(),
        cluster_toml,
        config,
        first,
        local_ips,
        earlier_stderr: vec![Vec::new(); 5],
    }
}

pub fn chain_ids(layout: &Layout) -> Vec<String> {
    let open = layout.open_segment().expect("an open segment");
    assert_eq!(open.stripes.len(), 1);
    open.stripes[0]
        .chain
        .iter()
        .map(|n| n.node_id.clone())
        .collect()
}

/// Appenders recording a history and the time of every acknowledgement.
pub struct Load {
    pub history: Arc<History>,
    pub acks: Arc<Mutex<Vec<(Instant, Address)>>>,
    pub acked: Arc<AtomicUsize>,
    pub stop: Arc<AtomicBool>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub async fn start(config: &ClientConfig) -> Load {
        let history = Arc::new(History::new());
        let acks = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let stream = StreamId::from_name("faults");
        let mut tasks = Vec::new();
        for c in 0..2 {
            let client = LogClient::connect(config).await.unwrap();
            for t in 0..4 {
                let (client, history, acks, acked, stop) = (
                    client.clone(),
                    history.clone(),
                    acks.clone(),
                    acked.clone(),
                    stop.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let value = format!("c{c}-t{t}-{i}").into_bytes();
                        let streams: &[StreamId] = if i % 2 == 0 { &[stream] } else { &[] };
                        if let Ok(address) = history.append(&client, value, streams).await {
                            acks.lock().unwrap().push((Instant::now(), address));
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        i += 1;
                    }
                }));
            }
        }
        Load {
            history,
            acks,
            acked,
            stop,
            tasks,
        }
    }

    /// Waits until `more` further appends are acknowledged.
    pub async fn resume(&self, more: usize, what: &str) {
        let from = self.acked.load(Ordering::SeqCst);
        within(15, what, async {
            while self.acked.load(Ordering::SeqCst) < from + more {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// The first acknowledgement at or above `address` after `since`.
    pub fn first_ack_from(&self, since: Instant, address: Address) -> Option<Instant> {
        self.acks
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, a)| *at >= since && *a >= address)
            .map(|(at, _)| *at)
            .min()
    }

    /// Stops the appenders, requires every append to have been
    /// acknowledged, checks the history against the whole log and the
    /// replicas of `layout` against each other.
    pub async fn finish(self, config: &ClientConfig) -> Layout {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            within(30, "appenders stop", task).await.unwrap();
        }
        let ops = self.history.ops();
        let failed: Vec<_> = ops
            .iter()
            .filter(|op| !matches!(op.outcome, Outcome::Acked(_)))
            .collect();
        assert!(
            failed.is_empty(),
            "appends failed: {:?}",
            &failed[..failed.len().min(5)]
        );
        let reader = LogClient::connect(config).await.unwrap();
        let (report, log) = self.history.check_log(&reader).await;
        eprintln!("{report}");
        assert_eq!(report.acked, ops.len());
        let layout = reader.refresh_layout().await.unwrap();
        check_replicas(
            &config.endpoint().unwrap(),
            &layout,
            log.last().map_or(0, |(a, _)| a + 1),
            Some(&log),
        )
        .await;
        Layout::clone(&layout)
    }
}

/// Polls the committed layout until `gone` is in no chain of the open
/// segment; returns it and when it was first seen.
pub async fn removed(config: &ClientConfig, gone: &str) -> (Layout, Instant) {
    let engine = Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());
    within(15, &format!("the detectors remove {gone}"), async {
        loop {
            if let Ok(layout) = engine.current().await {
                if layout.epoch > 1 && !chain_ids(&layout).iter().any(|n| n == gone) {
                    return (layout, Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Strips ANSI escape sequences (the node logs in colour).
pub fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `elapsed_ms` the detector that removed `gone` logged (waiting up to
/// 5 s for the line), and which node logged it.
pub async fn logged_reconfiguration(nodes: &[NodeProcess], gone: &str) -> (String, u64) {
    within(5, "the detector's removal log line", async {
        loop {
            for node in nodes {
                let lines = node.stderr.lock().unwrap().clone();
                for line in lines.iter().map(|l| plain(l)) {
                    if line.contains("removed an unreachable node")
                        && line.contains(&format!("removed={gone}"))
                    {
                        let field = |name: &str| {
                            line.split_whitespace()
                                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                                .map(str::to_string)
                        };
                        let ms = field("elapsed_ms").unwrap().parse().unwrap();
                        return (field("node").unwrap(), ms);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}
