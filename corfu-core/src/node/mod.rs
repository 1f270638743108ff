//! A node: one process, one QUIC endpoint, the roles its config names.
//!
//! The node owns the endpoint, the data directory (locked against a second
//! process) and the shutdown signal; role cores are plugged in as
//! [`Service`]s keyed by [`Role`]. Until a role is implemented the node
//! answers its requests with `Unsupported`; `Ping` and `Info` are always
//! served.

pub mod config;

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{ConfigError, NodeConfig};

use crate::layout_service::service::LayoutServerService;
use crate::logunit::{FileStore, LogUnitLimits, LogUnitService, StoreError, SyncPolicy};
use crate::sequencer::{Sequencer, SequencerService};
use crate::transport::tls::{self, NodeTls, TlsError};
use crate::transport::{self, Service, TransportError};
use crate::types::{ClusterId, Role};
use crate::wire::{Header, NodeInfo, Request, Response, ServerErrorKind, PROTOCOL_VERSION};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory cannot be used.
    #[error("data_dir {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The configured cluster id differs from the one stored in the data
    /// directory.
    #[error(
        "cluster_id: config says {configured} but data_dir {path} belongs to cluster {stored}"
    )]
    ClusterMismatch {
        /// From the config.
        configured: ClusterId,
        /// From the data directory.
        stored: ClusterId,
        /// The data directory.
        path: PathBuf,
    },
    /// TLS material is missing or unusable.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The endpoint could not be bound.
    #[error("listen: {0}")]
    Transport(#[from] TransportError),
    /// The log unit's store could not be opened.
    #[error("log unit store: {0}")]
    Store(#[from] StoreError),
}

/// A running node.
pub struct RunningNode {
    local_addr: SocketAddr,
    cluster_id: ClusterId,
    ca_cert: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("local_addr", &self.local_addr)
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl RunningNode {
    /// The address the endpoint is bound to (with the real port when the
    /// config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's cluster id.
    pub fn cluster_id(&self) -> ClusterId {
        self.cluster_id
    }

    /// Path of the cluster CA certificate the node trusts (for clients).
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// Stops accepting, closes connections, and waits for the node to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Waits until the node ends (after [`RunningNode::shutdown`] from
    /// elsewhere, or the endpoint failing).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

/// The node-level request handler: checks version and cluster, answers
/// `Ping`/`Info`, and dispatches role requests.
pub struct NodeService {
    info: NodeInfo,
    roles: HashMap<Role, Arc<dyn Service>>,
}

impl NodeService {
    /// A service for a node hosting `hosted` roles, with the given
    /// implementations (roles hosted but not implemented answer
    /// `Unsupported`).
    pub fn new(
        node_id: &str,
        cluster_id: ClusterId,
        hosted: &[Role],
        roles: HashMap<Role, Arc<dyn Service>>,
    ) -> NodeService {
        let mut hosted = hosted.to_vec();
        hosted.sort();
        NodeService {
            info: NodeInfo {
                node_id: node_id.to_string(),
                cluster_id,
                roles: hosted,
                protocol_version: PROTOCOL_VERSION,
                software_version: env!("CARGO_PKG_VERSION").to_string(),
            },
            roles,
        }
    }
}

impl NodeService {
    /// The node-level checks: an error answer, or the role to dispatch to
    /// (`None` for `Ping`/`Info`, answered here).
    // The error is the answer itself, moved to the caller.
    #[allow(clippy::result_large_err)]
    fn check(&self, header: &Header, body: &Request) -> Result<Option<Role>, Response> {
        if header.protocol_version != PROTOCOL_VERSION {
            return Err(Response::error(
                ServerErrorKind::ProtocolVersion,
                format!(
                    "request speaks protocol {} but node {} speaks {}",
                    header.protocol_version, self.info.node_id, PROTOCOL_VERSION
                ),
            ));
        }
        let discovery = matches!(body, Request::Ping | Request::Info);
        if header.cluster_id != self.info.cluster_id
            && !(discovery && header.cluster_id == ClusterId::ANY)
        {
            return Err(Response::error(
                ServerErrorKind::WrongCluster,
                format!(
                    "request is for cluster {} but node {} belongs to cluster {}",
                    header.cluster_id, self.info.node_id, self.info.cluster_id
                ),
            ));
        }
        let Some(role) = body.role() else {
            return Ok(None);
        };
        if !self.info.roles.contains(&role) {
            return Err(Response::error(
                ServerErrorKind::RoleNotHosted,
                format!(
                    "node {} does not host the {role} role ({})",
                    self.info.node_id,
                    body.kind()
                ),
            ));
        }
        if !self.roles.contains_key(&role) {
            return Err(Response::error(
                ServerErrorKind::Unsupported,
                format!(
                    "the {role} role is not implemented in this version ({})",
                    body.kind()
                ),
            ));
        }
        Ok(Some(role))
    }

    fn node_answer(&self, body: &Request) -> Response {
        match body {
            Request::Info => Response::Info(Box::new(self.info.clone())),
            _ => Response::Pong,
        }
    }
}

#[async_trait::async_trait]
impl Service for NodeService {
    async fn handle(&self, header: Header, body: Request) -> Response {
        match self.check(&header, &body) {
            Err(answer) => answer,
            Ok(None) => self.node_answer(&body),
            Ok(Some(role)) => match self.roles.get(&role) {
                Some(service) => service.handle(header, body).await,
                None => Response::error(ServerErrorKind::Internal, "role vanished"),
            },
        }
    }

    #[allow(clippy::result_large_err)]
    fn handle_now(&self, header: &Header, body: Request) -> Result<Response, Request> {
        match self.check(header, &body) {
            Err(answer) => Ok(answer),
            Ok(None) => Ok(self.node_answer(&body)),
            Ok(Some(role)) => match self.roles.get(&role) {
                Some(service) => service.handle_now(header, body),
                None => Ok(Response::error(ServerErrorKind::Internal, "role vanished")),
            },
        }
    }
}

/// Starts a node from its config: locks and prepares the data directory,
/// resolves the cluster id and TLS material, binds the endpoint, serves.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let data_dir = config.data_dir.clone();
    fs::create_dir_all(&data_dir).map_err(|e| NodeError::DataDir {
        path: data_dir.clone(),
        reason: e.to_string(),
    })?;
    let lock = lock_data_dir(&data_dir)?;
    let cluster_id = resolve_cluster_id(&data_dir, config.cluster_id)?;
    let node_tls = NodeTls::prepare(&config.tls, &data_dir, &config.node_id, config.listen.ip())?;
    let crypto = tls::server_crypto(&node_tls)?;
    // The sequencer renews its lease with the layout servers over an
    // endpoint of its own, presenting the node's certificate.
    let lease_endpoint = if config.roles.contains(&Role::Sequencer) {
        let crypto = tls::client_crypto(&node_tls.ca, Some(&node_tls.identity))?;
        Some(transport::ClientEndpoint::new(
            crypto,
            config.transport.clone(),
            cluster_id,
        )?)
    } else {
        None
    };
    let roles = start_roles(&config, &data_dir, lease_endpoint).await?;
    let reset_key = load_or_create_secret(&data_dir.join("reset_key"))?;
    let endpoint = transport::bind_server_with_reset_key(
        config.listen,
        crypto,
        &config.transport,
        &reset_key,
    )?;
    let local_addr = endpoint.local_addr().map_err(|e| NodeError::DataDir {
        path: data_dir.clone(),
        reason: format!("endpoint address: {e}"),
    })?;
    let detector = start_detector(&config, &node_tls, cluster_id, local_addr)?;
    let service = Arc::new(NodeService::new(
        &config.node_id,
        cluster_id,
        &config.roles,
        roles,
    ));
    let (tx, rx) = oneshot::channel::<()>();
    let transport = Arc::new(config.transport.clone());
    let node_id = config.node_id.clone();
    tracing::info!(node = %node_id, addr = %local_addr, cluster = %cluster_id, roles = ?config.roles, "node serving");
    let task = tokio::spawn(async move {
        transport::serve(endpoint, service, transport, async {
            let _ = rx.await;
        })
        .await;
        if let Some(detector) = detector {
            detector.abort();
            let _ = detector.await;
        }
        drop(lock);
        tracing::info!(node = %node_id, "node stopped");
    });
    let ca_cert = config
        .tls
        .ca_cert
        .clone()
        .unwrap_or_else(|| data_dir.join("tls").join("ca.pem"));
    Ok(RunningNode {
        local_addr,
        cluster_id,
        ca_cert,
        shutdown: Some(tx),
        task,
    })
}

/// Starts the failure detector if the config enables it and the node hosts
/// a layout server (see [`crate::detector`]). It reaches peers with a
/// client endpoint trusting the cluster CA and presenting the node's own
/// certificate (issued by that CA), so clusters with `client_auth` accept
/// it; it reads the layout from its own address first.
fn start_detector(
    config: &NodeConfig,
    node_tls: &NodeTls,
    cluster_id: ClusterId,
    local_addr: SocketAddr,
) -> Result<Option<JoinHandle<()>>, NodeError> {
    if !config.failure_detector.enabled {
        return Ok(None);
    }
    if !config.roles.contains(&Role::LayoutServer) {
        tracing::warn!(
            node = %config.node_id,
            "failure_detector.enabled is set but the node hosts no layout server: the detector runs only on layout servers; not started"
        );
        return Ok(None);
    }
    let crypto = tls::client_crypto(&node_tls.ca, Some(&node_tls.identity))?;
    let endpoint = transport::ClientEndpoint::new(crypto, config.transport.clone(), cluster_id)?;
    let mut own = local_addr;
    if own.ip().is_unspecified() {
        own.set_ip(if own.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(Some(crate::detector::spawn(
        config.failure_detector.clone(),
        config.node_id.clone(),
        own.to_string(),
        endpoint,
    )))
}

/// Opens the state of the roles the node hosts.
async fn start_roles(
    config: &NodeConfig,
    data_dir: &Path,
    lease_endpoint: Option<transport::ClientEndpoint>,
) -> Result<HashMap<Role, Arc<dyn Service>>, NodeError> {
    let mut roles: HashMap<Role, Arc<dyn Service>> = HashMap::new();
    if config.roles.contains(&Role::LogUnit) {
        let dir = data_dir.join("log");
        let store_config = config.log_unit.clone();
        let store = tokio::task::spawn_blocking(move || FileStore::open(&dir, store_config))
            .await
            .map_err(|e| NodeError::DataDir {
                path: data_dir.to_path_buf(),
                reason: format!("opening the log store: {e}"),
            })??;
        let report = store.recovery_report().clone();
        tracing::info!(
            segments = report.segments,
            records = report.records,
            truncated_bytes = report.truncated_bytes,
            corrupt_records = report.corrupt_records,
            "log unit store recovered"
        );
        let limits = LogUnitLimits {
            read_batch_max: config.log_unit.read_batch_max,
            read_bytes_max: LogUnitLimits::read_bytes_max_for(config.transport.frame_bytes_max),
            wait_for_sync: config.log_unit.sync == SyncPolicy::Always,
        };
        roles.insert(
            Role::LogUnit,
            Arc::new(LogUnitService::new(Arc::new(store), limits)),
        );
    }
    if config.roles.contains(&Role::LayoutServer) {
        let dir = data_dir.join("layout");
        let service = tokio::task::spawn_blocking(move || LayoutServerService::open(&dir))
            .await
            .map_err(|e| NodeError::DataDir {
                path: data_dir.to_path_buf(),
                reason: format!("opening the layout server state: {e}"),
            })??;
        roles.insert(Role::LayoutServer, Arc::new(service));
    }
    if config.roles.contains(&Role::Sequencer) {
        // Soft state: after any start the sequencer serves nothing until a
        // `Bootstrap` (cluster creation, or a reconfiguration with the
        // tails the sealed log units reported) tells it where the log is.
        let core = Sequencer::awaiting_bootstrap(config.sequencer.clone());
        let service = match lease_endpoint {
            Some(endpoint) => SequencerService::leased(core, endpoint),
            None => Arc::new(SequencerService::new(core)),
        };
        roles.insert(Role::Sequencer, service);
    }
    Ok(roles)
}

/// Takes an exclusive lock on `data_dir/LOCK`, held while the node runs, so
/// two processes never share a data directory.
fn lock_data_dir(dir: &Path) -> Result<fs::File, NodeError> {
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| NodeError::DataDir {
            path: dir.to_path_buf(),
            reason: format!("cannot open lock file: {e}"),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(NodeError::DataDir {
            path: dir.to_path_buf(),
            reason: "in use by another running node".into(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(NodeError::DataDir {
            path: dir.to_path_buf(),
            reason: format!("cannot lock: {e}"),
        }),
    }
}

/// The cluster id: the stored one, the configured one (stored on first
/// start), or a new one. A configured id that differs from the stored one is
/// an error: the data belongs to another cluster.
fn resolve_cluster_id(dir: &Path, configured: Option<ClusterId>) -> Result<ClusterId, NodeError> {
    let path = dir.join("cluster_id");
    let data_err = |reason: String| NodeError::DataDir {
        path: dir.to_path_buf(),
        reason,
    };
    let stored = match fs::read_to_string(&path) {
        Ok(text) => Some(
            text.trim()
                .parse::<ClusterId>()
                .map_err(|e| data_err(format!("cluster_id file: {e}")))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(data_err(format!("cluster_id file: {e}"))),
    };
    match (configured, stored) {
        (Some(c), Some(s)) if c != s => Err(NodeError::ClusterMismatch {
            configured: c,
            stored: s,
            path: dir.to_path_buf(),
        }),
        (_, Some(s)) => Ok(s),
        (c, None) => {
            let id = c.unwrap_or_else(ClusterId::random);
            write_durably(&path, format!("{id}\n").as_bytes())
                .map_err(|e| data_err(format!("cannot write cluster_id: {e}")))?;
            if c.is_none() {
                tracing::info!(cluster = %id, "generated a new cluster id");
            }
            Ok(id)
        }
    }
}

/// A 32-byte secret kept in `path` (created with mode 0600 on first start).
fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, NodeError> {
    let err = |reason: String| NodeError::DataDir {
        path: path.to_path_buf(),
        reason,
    };
    match fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => Ok(bytes),
        Ok(bytes) => Err(err(format!("expected 32 bytes, found {}", bytes.len()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = rand::random::<[u8; 32]>().to_vec();
            write_durably(path, &secret).map_err(|e| err(format!("cannot write: {e}")))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                    .map_err(|e| err(format!("cannot restrict permissions: {e}")))?;
            }
            Ok(secret)
        }
        Err(e) => Err(err(format!("cannot read: {e}"))),
    }
}

/// Writes a small file atomically (temp file, fsync, rename, fsync dir).
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
