//! Helpers shared by the integration tests: node configs on loopback port 0
//! in temporary directories, client endpoints trusting a given CA, and a
//! bare transport server running a test [`Service`].

#![allow(dead_code)]

pub mod cluster;
pub mod history;
pub mod linearizability;
pub mod net;
pub mod objects;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corfu::core::node::NodeConfig;
use corfu::core::transport::tls::{self, ClusterCa, Identity, NodeTls, NodeTlsConfig};
use corfu::core::transport::{bind_server, serve, ClientEndpoint, Service, TransportConfig};
use corfu::core::types::{ClusterId, Role};
use rustls::pki_types::CertificateDer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// `127.0.0.1:0`: the OS picks a free port.
pub fn loopback_any_port() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// A node config listening on `127.0.0.1:0` with default TLS and transport.
pub fn node_config(
    data_dir: &Path,
    node_id: &str,
    roles: Vec<Role>,
    cluster_id: Option<ClusterId>,
) -> NodeConfig {
    NodeConfig {
        node_id: node_id.to_string(),
        listen: loopback_any_port(),
        data_dir: data_dir.to_path_buf(),
        cluster_id,
        roles,
        tls: NodeTlsConfig::default(),
        transport: TransportConfig::default(),
        log_unit: Default::default(),
        sequencer: Default::default(),
        failure_detector: Default::default(),
    }
}

/// A client endpoint trusting the CA certificates of the PEM file `ca_pem`.
pub fn client_trusting_file(
    ca_pem: &Path,
    identity: Option<&Identity>,
    cluster_id: ClusterId,
    config: TransportConfig,
) -> ClientEndpoint {
    let roots = tls::load_certs(ca_pem).expect("load the CA certificate");
    client_trusting(&roots, identity, cluster_id, config)
}

/// A client endpoint trusting `roots`.
pub fn client_trusting(
    roots: &[CertificateDer<'static>],
    identity: Option<&Identity>,
    cluster_id: ClusterId,
    config: TransportConfig,
) -> ClientEndpoint {
    let crypto = tls::client_crypto(roots, identity).expect("client crypto");
    ClientEndpoint::new(crypto, config, cluster_id).expect("client endpoint")
}

/// Client transport settings that fail fast instead of waiting seconds.
pub fn fast_failing_transport() -> TransportConfig {
    TransportConfig {
        connect_timeout_ms: 1_000,
        request_timeout_ms: 2_000,
        ..TransportConfig::default()
    }
}

/// Awaits `fut`, failing the test if it takes longer than `secs` seconds.
pub async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {secs} s"),
    }
}

/// A bare transport server (no node) serving a test [`Service`] with a
/// freshly generated CA and server certificate.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA that issued its certificate.
    pub ca: Vec<CertificateDer<'static>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts serving `service` on `127.0.0.1:0`.
    pub fn start(service: Arc<dyn Service>, config: TransportConfig) -> TestServer {
        let ca = ClusterCa::generate("test").expect("generate CA");
        let issued = ca
            .issue(
                "test-server",
                &["localhost".to_string(), "127.0.0.1".to_string()],
            )
            .expect("issue server certificate");
        let node_tls = NodeTls {
            ca: vec![ca.cert_der().expect("CA DER")],
            identity: issued.identity().expect("server identity"),
            client_auth: false,
        };
        let crypto = tls::server_crypto(&node_tls).expect("server crypto");
        let endpoint = bind_server(loopback_any_port(), crypto, &config).expect("bind server");
        let addr = endpoint.local_addr().expect("server address");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(endpoint, service, Arc::new(config), async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            ca: node_tls.ca,
            shutdown: Some(tx),
            task,
        }
    }

    /// A client endpoint trusting this server's CA.
    pub fn client(&self, config: TransportConfig) -> ClientEndpoint {
        client_trusting(&self.ca, None, ClusterId(42), config)
    }

    /// Stops the server and waits for it to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = within(10, "server shutdown", &mut self.task).await;
    }
}

/// A `corfu node` child process.
pub struct NodeProcess {
    /// The process.
    pub child: std::process::Child,
    /// The address it printed (`node serving on ADDR`).
    pub addr: String,
    /// Lines it printed on stdout after the serving line.
    pub stdout_rest: std::sync::mpsc::Receiver<String>,
    /// Lines it printed on stderr so far.
    pub stderr: Arc<std::sync::Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// Sends `signal` (a `kill` signal name such as `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `secs` seconds for the process to exit; kills it and
    /// fails the test if it does not.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        wait_exit(&mut self.child, secs)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits up to `secs` seconds for `child` to exit; kills it and fails the
/// test if it does not.
pub fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {secs} s", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `corfu` binary of this package, with logging at its default level.
pub fn corfu_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corfu"));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Writes a node config file.
pub fn write_node_toml(path: &Path, node_id: &str, listen: &str, data_dir: &Path) {
    let text = format!(
        "node_id = \"{node_id}\"\nlisten = \"{listen}\"\ndata_dir = \"{}\"\nroles = [\"log_unit\"]\n",
        data_dir.display()
    );
    std::fs::write(path, text).expect("write node config");
}

/// Runs `corfu node --config CONFIG` and waits (up to 20 s) until it prints
/// `node serving on ADDR`.
pub fn spawn_node_process(config: &Path) -> NodeProcess {
    use std::io::BufRead;
    let mut child = corfu_command()
        .arg("node")
        .arg("--config")
        .arg(config)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn corfu node");
    let stderr_lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn({
        let lines = stderr_lines.clone();
        move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        }
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "corfu node printed no line: {e}; stderr: {:?}",
                stderr_lines.lock().unwrap()
            );
        }
    };
    let Some(addr) = line.strip_prefix("node serving on ") else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("unexpected first line of corfu node: {line:?}");
    };
    NodeProcess {
        addr: addr.trim().to_string(),
        child,
        stdout_rest: rx,
        stderr: stderr_lines,
    }
}

/// A bootstrapped in-process cluster of `nodes` nodes with `shape` and
/// `sync = always`, in `dir/cluster`.
pub async fn local_cluster(
    dir: &tempfile::TempDir,
    nodes: usize,
    shape: corfu::cluster::Shape,
) -> corfu::local::LocalCluster {
    corfu::local::LocalCluster::start(
        &dir.path().join("cluster"),
        nodes,
        corfu::local::LocalOptions {
            shape,
            sync: corfu::core::logunit::SyncPolicy::Always,
            ..corfu::local::LocalOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("starting a {nodes}-node cluster: {e:#}"))
}

/// The one segment file of the log directory `dir` of a (stopped) node.
pub fn segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "one segment file: {segs:?}");
    segs.pop().unwrap()
}

/// Offset and length of the valid record of `address` in `bytes` (records
/// damaged earlier are stepped over).
pub fn record_of(bytes: &[u8], address: u64) -> (usize, usize) {
    let mut at = 0;
    while at < bytes.len() {
        let len = corfu::core::logunit::record::record_len(&bytes[at..], 1 << 24)
            .expect("a record header");
        if let Ok((rec, _)) = corfu::core::logunit::record::decode(&bytes[at..], 1 << 24) {
            if rec.address == address {
                return (at, len);
            }
        }
        at += len;
    }
    panic!("no valid record of address {address}");
}

/// XORs `mask` into the byte at `offset` of the record of `address`
/// (`None`: its last byte, the end of its payload).
pub fn damage(file: &Path, address: u64, offset: Option<usize>, mask: u8) {
    let mut bytes = std::fs::read(file).unwrap();
    let (at, len) = record_of(&bytes, address);
    bytes[at + offset.unwrap_or(len - 1)] ^= mask;
    std::fs::write(file, &bytes).unwrap();
}
