//! The client configuration file (`cluster.toml`): how a client finds and
//! trusts a cluster.
//!
//! ```toml
//! cluster_id = "4f1c...e2"
//! layout_servers = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
//!
//! [tls]
//! ca_cert = "ca.pem"            # relative paths are relative to this file
//! # cert = "client.pem"         # for clusters with client_auth
//! # key = "client.key"
//!
//! [client]                      # optional; see `LogClientOptions`
//! hole_fill = "wait_then_fill"  # wait_then_fill | immediately | never
//! hole_fill_timeout_ms = 300
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::client::LogClientOptions;
use crate::node::config::{parse_toml, ConfigError};
use crate::transport::tls::{self, ClientTlsConfig, TlsError};
use crate::transport::{ClientEndpoint, TransportConfig, TransportError};
use crate::types::ClusterId;

/// Configuration of a client of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The cluster's id; every request names it.
    pub cluster_id: ClusterId,
    /// `host:port` of the layout servers (at least one).
    pub layout_servers: Vec<String>,
    /// Trust and identity.
    pub tls: ClientTlsConfig,
    /// Transport limits and windows.
    #[serde(default)]
    pub transport: TransportConfig,
    /// Log client settings (hole filling, batching, retries).
    #[serde(default)]
    pub client: LogClientOptions,
}

/// A client endpoint could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS material is unusable.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The endpoint could not be created.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl ClientConfig {
    /// Reads, parses and validates a client config; relative paths are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let mut config: ClientConfig = parse_toml(&text, &file)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            Some(&mut config.tls.ca_cert),
            config.tls.cert.as_mut(),
            config.tls.key.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        config
            .validate()
            .map_err(|message| ConfigError { file, message })?;
        Ok(config)
    }

    /// Checks values serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.layout_servers.is_empty() {
            return Err("field `layout_servers`: at least one address is needed".into());
        }
        for addr in &self.layout_servers {
            if crate::transport::split_host_port(addr).is_none() {
                return Err(format!("field `layout_servers`: {addr:?} is not host:port"));
            }
        }
        if self.cluster_id == ClusterId::ANY {
            return Err("field `cluster_id`: the all-zero id is reserved".into());
        }
        self.transport.validate()?;
        self.client.validate()?;
        self.client.check_frame(self.transport.frame_bytes_max)
    }

    /// A client endpoint trusting the cluster CA (and presenting the client
    /// certificate, if configured).
    pub fn endpoint(&self) -> Result<ClientEndpoint, ClientSetupError> {
        let (ca, identity) = tls::load_client_tls(&self.tls)?;
        let crypto = tls::client_crypto(&ca, identity.as_ref())?;
        Ok(ClientEndpoint::new(
            crypto,
            self.transport.clone(),
            self.cluster_id,
        )?)
    }
}
