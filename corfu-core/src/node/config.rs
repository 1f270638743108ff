//! The node's configuration file (`node.toml`).
//!
//! ```toml
//! node_id = "n1"
//! listen = "127.0.0.1:7001"
//! data_dir = "data/n1"          # relative paths are relative to this file
//! roles = ["layout_server", "sequencer", "log_unit"]
//! # cluster_id = "..."          # generated on first start if absent
//!
//! [tls]
//! client_auth = false           # require client certificates from the CA
//!
//! [transport]
//! request_timeout_ms = 5000
//!
//! [log_unit]
//! sync = "always"               # always | batch | never
//!
//! [failure_detector]            # see `crate::detector`
//! enabled = false               # only nodes hosting a layout server run it
//! failure_timeout_ms = 1000
//! probe_interval_ms = 100
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detector::DetectorConfig;
use crate::logunit::LogUnitConfig;
use crate::sequencer::SequencerConfig;
use crate::transport::tls::NodeTlsConfig;
use crate::transport::TransportConfig;
use crate::types::{ClusterId, Role};

/// Configuration of one node process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's id, unique in the cluster (letters, digits, `-`, `_`, `.`).
    pub node_id: String,
    /// Address of the node's QUIC endpoint (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory of the node's durable state and generated certificates.
    pub data_dir: PathBuf,
    /// The cluster the node belongs to. If absent, the id stored in the data
    /// directory is used, or a new one is generated on first start.
    #[serde(default)]
    pub cluster_id: Option<ClusterId>,
    /// The roles this node hosts (at least one).
    pub roles: Vec<Role>,
    /// TLS settings.
    #[serde(default)]
    pub tls: NodeTlsConfig,
    /// Transport limits and windows.
    #[serde(default)]
    pub transport: TransportConfig,
    /// Log unit storage (used when the node hosts the `log_unit` role).
    #[serde(default)]
    pub log_unit: LogUnitConfig,
    /// Sequencer limits (used when the node hosts the `sequencer` role).
    #[serde(default)]
    pub sequencer: SequencerConfig,
    /// The failure detector (off by default; see [`crate::detector`]).
    #[serde(default)]
    pub failure_detector: DetectorConfig,
}

/// A configuration file that cannot be used. Its `Display` is one line that
/// names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// What is wrong, naming the field.
    pub message: String,
}

/// Parses a TOML document into `T`, reporting errors as one line naming the
/// field (`field `a.b`: ...`) or the line of a syntax error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut message = inner.message().trim().replace('\n', " ");
        if path != "." && !path.is_empty() {
            message = format!("field `{path}`: {message}");
        } else if let Some(span) = inner.span() {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            message = format!("line {line}: {message}");
        }
        ConfigError {
            file: file.to_string(),
            message,
        }
    })
}

impl NodeConfig {
    /// A node on `127.0.0.1` with a free port and every other setting at
    /// its default: for embedded clusters, examples, benchmarks and tests.
    pub fn local(node_id: &str, data_dir: &Path, roles: Vec<Role>) -> NodeConfig {
        NodeConfig {
            node_id: node_id.to_string(),
            listen: ([127, 0, 0, 1], 0).into(),
            data_dir: data_dir.to_path_buf(),
            cluster_id: None,
            roles,
            tls: NodeTlsConfig::default(),
            transport: TransportConfig::default(),
            log_unit: LogUnitConfig::default(),
            sequencer: SequencerConfig::default(),
            failure_detector: DetectorConfig::default(),
        }
    }

    /// Reads, parses and validates a node config file; relative paths in it
    /// are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let mut config: NodeConfig = parse_toml(&text, &file)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config
            .validate()
            .map_err(|message| ConfigError { file, message })?;
        Ok(config)
    }

    /// Makes relative paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        for p in [
            &mut self.tls.ca_cert,
            &mut self.tls.ca_key,
            &mut self.tls.cert,
            &mut self.tls.key,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
    }

    /// Checks values serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        validate_node_id(&self.node_id).map_err(|e| format!("field `node_id`: {e}"))?;
        if self.roles.is_empty() {
            return Err("field `roles`: a node must host at least one role (layout_server, sequencer, log_unit)".into());
        }
        let mut roles = self.roles.clone();
        roles.sort();
        roles.dedup();
        if roles.len() != self.roles.len() {
            return Err("field `roles`: a role is listed twice".into());
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("field `data_dir`: must not be empty".into());
        }
        if self.cluster_id == Some(ClusterId::ANY) {
            return Err("field `cluster_id`: the all-zero id is reserved".into());
        }
        self.transport.validate()?;
        self.log_unit.validate()?;
        if self.roles.contains(&Role::LogUnit) {
            // The largest entry must fit one write request and one read
            // answer.
            crate::wire::logunit::check_entry_fits_frame(
                self.log_unit.entry_bytes_max,
                self.transport.frame_bytes_max,
                "log_unit.entry_bytes_max",
                "transport.frame_bytes_max",
            )?;
        }
        self.sequencer.validate()?;
        self.failure_detector.validate()?;
        Ok(())
    }
}

/// Checks a node id: 1 to 64 characters of letters, digits, `-`, `_`, `.`.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{id:?} may only hold letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, String> {
        let cfg: NodeConfig = parse_toml(text, "node.toml").map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| format!("node.toml: {e}"))?;
        Ok(cfg)
    }

    const GOOD: &str = r#"
node_id = "n1"
listen = "127.0.0.1:7001"
data_dir = "data"
roles = ["log_unit", "sequencer"]
"#;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let cfg = parse(GOOD).unwrap();
        assert_eq!(cfg.node_id, "n1");
        assert_eq!(cfg.roles, vec![Role::LogUnit, Role::Sequencer]);
        assert_eq!(cfg.transport, TransportConfig::default());
        assert!(!cfg.tls.client_auth);
        assert_eq!(cfg.failure_detector, DetectorConfig::default());
        assert!(!cfg.failure_detector.enabled);
    }

    #[test]
    fn the_failure_detector_table_parses_and_is_validated() {
        let cfg = parse(&format!(
            "{GOOD}\n[failure_detector]\nenabled = true\nfailure_timeout_ms = 300\nprobe_interval_ms = 50\n"
        ))
        .unwrap();
        assert!(cfg.failure_detector.enabled);
        assert_eq!(cfg.failure_detector.failure_timeout_ms, 300);
        assert_eq!(cfg.failure_detector.probe_interval_ms, 50);
        let e = error_of(&format!(
            "{GOOD}\n[failure_detector]\nfailure_timeout_ms = 300\nprobe_interval_ms = 200\n"
        ));
        assert!(e.contains("`failure_detector.probe_interval_ms`"), "{e}");
        let e = error_of(&format!("{GOOD}\n[failure_detector]\ntimeout = 3\n"));
        assert!(e.contains("timeout"), "{e}");
    }

    fn error_of(text: &str) -> String {
        let e = parse(text).unwrap_err();
        assert!(!e.contains('\n'), "error is one line: {e}");
        e
    }

    #[test]
    fn bad_fields_are_named_in_one_line() {
        let e = error_of(&GOOD.replace("127.0.0.1:7001", "nowhere"));
        assert!(e.contains("`listen`"), "{e}");
        let e = error_of(&GOOD.replace("\"sequencer\"", "\"sequenzer\""));
        assert!(e.contains("`roles"), "{e}");
        let e = error_of(&format!("{GOOD}\n[tls]\nclient_auth = \"yes\"\n"));
        assert!(e.contains("`tls.client_auth`"), "{e}");
        let e = error_of(&format!("{GOOD}\n[transport]\nrequest_timeout_ms = 0\n"));
        assert!(e.contains("`transport.request_timeout_ms`"), "{e}");
        let e = error_of(&format!("{GOOD}\nlisten_port = 3\n"));
        assert!(e.contains("listen_port"), "{e}");
        let e = error_of(&GOOD.replace("roles = [\"log_unit\", \"sequencer\"]", "roles = []"));
        assert!(e.contains("`roles`"), "{e}");
        let e = error_of(&GOOD.replace("\"n1\"", "\"n 1\""));
        assert!(e.contains("`node_id`"), "{e}");
        let e = error_of(&GOOD.replace("node_id = \"n1\"\n", ""));
        assert!(e.contains("node_id"), "{e}");
        let e = error_of(&format!("{GOOD}\ncluster_id = \"zz\"\n"));
        assert!(e.contains("`cluster_id`"), "{e}");
        let e = error_of("node_id = \n");
        assert!(e.contains("line 1"), "{e}");
    }

    /// An entry the unit accepts must fit a frame, or it could be written
    /// (in a batch of its own) but never read back.
    #[test]
    fn the_largest_entry_must_fit_a_frame() {
        let e = error_of(&format!("{GOOD}\n[transport]\nframe_bytes_max = 8388608\n"));
        assert!(
            e.contains("`log_unit.entry_bytes_max`")
                && e.contains("`transport.frame_bytes_max` (8388608)")
                && e.contains("raise"),
            "{e}"
        );
        let e = error_of(&format!("{GOOD}\n[log_unit]\nentry_bytes_max = 16777216\n"));
        assert!(e.contains("`log_unit.entry_bytes_max`"), "{e}");
        // Smaller entries fit smaller frames (up to a third more in a
        // frame than in a record: stream headers); a node without a log
        // unit does not care.
        parse(&format!(
            "{GOOD}\n[transport]\nframe_bytes_max = 1048576\n[log_unit]\nentry_bytes_max = 700000\n"
        ))
        .unwrap();
        parse(
            &format!("{GOOD}\n[transport]\nframe_bytes_max = 8388608\n")
                .replace("\"log_unit\", ", ""),
        )
        .unwrap();
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let mut cfg = parse(GOOD).unwrap();
        cfg.resolve_paths(Path::new("/etc/corfu"));
        assert_eq!(cfg.data_dir, PathBuf::from("/etc/corfu/data"));
    }
}
