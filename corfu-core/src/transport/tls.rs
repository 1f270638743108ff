//! TLS 1.3 for QUIC: the cluster CA, node and client certificates, and the
//! rustls configurations (ring provider) built from them.
//!
//! Development clusters need no PKI: on first start a node generates a
//! cluster CA and its own certificate with rcgen into `data_dir/tls/`; a
//! local cluster shares one CA that `corfu local init` writes. Production
//! deployments give PEM paths instead. Clients trust only the cluster CA.
//! With `client_auth` on, a node demands a client certificate issued by that
//! CA and refuses the handshake without one.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::wire::ALPN;

/// Why TLS material could not be loaded, generated or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file did not hold the expected PEM contents.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// rustls or quinn refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// TLS settings of a node (the `[tls]` table of its config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeTlsConfig {
    /// The cluster CA certificate (PEM). Default: `data_dir/tls/ca.pem`,
    /// generated with its key on first start if absent.
    pub ca_cert: Option<PathBuf>,
    /// The cluster CA key (PEM), needed only to issue the node certificate.
    /// Default: `data_dir/tls/ca.key`.
    pub ca_key: Option<PathBuf>,
    /// The node certificate chain (PEM). Default: `data_dir/tls/node.pem`,
    /// issued by the CA on first start if absent.
    pub cert: Option<PathBuf>,
    /// The node private key (PEM). Default: `data_dir/tls/node.key`.
    pub key: Option<PathBuf>,
    /// Require clients to present a certificate issued by the cluster CA.
    pub client_auth: bool,
    /// Extra DNS names or IP addresses for a generated node certificate
    /// (`localhost`, loopback and the listen address are always included).
    pub server_names: Vec<String>,
}

/// TLS settings of a client (the `[tls]` table of a client config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// The cluster CA certificate (PEM) the client trusts.
    pub ca_cert: PathBuf,
    /// The client certificate chain (PEM), for clusters with client auth.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The client private key (PEM).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// Loads a chain and a key from PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: load_certs(cert)?,
            key: load_key(key)?,
        })
    }
}

/// The cluster certificate authority: signs node and client certificates.
pub struct ClusterCa {
    cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

fn gen_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ClusterCa {
    /// Generates a new CA (ECDSA P-256, valid for 10 years).
    pub fn generate(name: &str) -> Result<ClusterCa, TlsError> {
        let key = rcgen::KeyPair::generate().map_err(gen_err)?;
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("corfu cluster CA {name}"),
        );
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params);
        let cert = params.self_signed(&key).map_err(gen_err)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(ClusterCa {
            cert_pem,
            issuer: rcgen::Issuer::new(params, key),
            key_pem,
        })
    }

    /// Loads a CA from its certificate and key PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<ClusterCa, TlsError> {
        let cert_pem = fs::read_to_string(cert).map_err(io_err(cert))?;
        let key_pem = fs::read_to_string(key).map_err(io_err(key))?;
        let key_pair = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Pem {
            path: key.to_path_buf(),
            reason: format!("not a usable private key: {e}"),
        })?;
        let issuer =
            rcgen::Issuer::from_ca_cert_pem(&cert_pem, key_pair).map_err(|e| TlsError::Pem {
                path: cert.to_path_buf(),
                reason: format!("not a CA certificate: {e}"),
            })?;
        Ok(ClusterCa {
            cert_pem,
            issuer,
            key_pem,
        })
    }

    /// Writes the certificate and (mode 0600) the key.
    pub fn write(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        write_file(cert, self.cert_pem.as_bytes(), false)?;
        write_file(key, self.key_pem.as_bytes(), true)
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, TlsError> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| TlsError::Generate(format!("CA certificate PEM: {e}")))
    }

    /// Issues a certificate for `common_name`, valid for `names` (DNS names
    /// or IP addresses), usable as both TLS server and client.
    pub fn issue(&self, common_name: &str, names: &[String]) -> Result<IssuedCert, TlsError> {
        let key = rcgen::KeyPair::generate().map_err(gen_err)?;
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let mut sans = Vec::new();
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(
                    name.clone()
                        .try_into()
                        .map_err(|e| TlsError::Generate(format!("name {name:?}: {e}")))?,
                ),
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        set_validity(&mut params);
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn set_validity(params: &mut rcgen::CertificateParams) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // A day of slack for clocks that disagree, ten years of validity.
    let from = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = from + time_seconds(now.saturating_sub(86_400));
    params.not_after = from + time_seconds(now + 10 * 365 * 86_400);
}

fn time_seconds(secs: u64) -> std::time::Duration {
    std::time::Duration::from_secs(secs)
}

/// A certificate issued by the [`ClusterCa`], with its key.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
}

impl IssuedCert {
    /// Writes the certificate and (mode 0600) the key.
    pub fn write(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        write_file(cert, self.cert_pem.as_bytes(), false)?;
        write_file(key, self.key_pem.as_bytes(), true)
    }

    /// The certificate and key as an [`Identity`].
    pub fn identity(&self) -> Result<Identity, TlsError> {
        let cert = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| TlsError::Generate(format!("certificate PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Generate(format!("key PEM: {e}")))?;
        Ok(Identity {
            chain: vec![cert],
            key,
        })
    }
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Loads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: format!("bad certificate PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

/// Loads the first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })
}

/// Everything a node needs for TLS, resolved from its config and data
/// directory.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// Certificates trusted as the cluster CA (for client auth).
    pub ca: Vec<CertificateDer<'static>>,
    /// The node's own certificate and key.
    pub identity: Identity,
    /// Whether clients must present a certificate from the CA.
    pub client_auth: bool,
}

impl NodeTls {
    /// Resolves the node's TLS material, generating a CA and a node
    /// certificate in `data_dir/tls/` on first start when the config names
    /// no files. Configured files must exist.
    pub fn prepare(
        cfg: &NodeTlsConfig,
        data_dir: &Path,
        node_id: &str,
        listen_ip: IpAddr,
    ) -> Result<NodeTls, TlsError> {
        let dir = data_dir.join("tls");
        let ca_cert = cfg.ca_cert.clone().unwrap_or_else(|| dir.join("ca.pem"));
        let ca_key = cfg.ca_key.clone().unwrap_or_else(|| dir.join("ca.key"));
        if !ca_cert.exists() {
            if cfg.ca_cert.is_some() {
                return Err(TlsError::Config(format!(
                    "tls.ca_cert: {} does not exist",
                    ca_cert.display()
                )));
            }
            let ca = ClusterCa::generate(node_id)?;
            ca.write(&ca_cert, &ca_key)?;
            tracing::info!(path = %ca_cert.display(), "generated a new cluster CA");
        }
        let (cert, key) = match (&cfg.cert, &cfg.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            (None, None) => (dir.join("node.pem"), dir.join("node.key")),
            (Some(_), None) => {
                return Err(TlsError::Config(
                    "tls.key: required when tls.cert is set".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(TlsError::Config(
                    "tls.cert: required when tls.key is set".into(),
                ))
            }
        };
        if !cert.exists() {
            if cfg.cert.is_some() {
                return Err(TlsError::Config(format!(
                    "tls.cert: {} does not exist",
                    cert.display()
                )));
            }
            if !ca_key.exists() {
                return Err(TlsError::Config(format!(
                    "tls.ca_key: no node certificate at {} and no CA key at {} to issue one",
                    cert.display(),
                    ca_key.display()
                )));
            }
            let ca = ClusterCa::load(&ca_cert, &ca_key)?;
            let issued = ca.issue(node_id, &node_names(node_id, listen_ip, &cfg.server_names))?;
            issued.write(&cert, &key)?;
            tracing::info!(path = %cert.display(), "issued the node certificate");
        }
        Ok(NodeTls {
            ca: load_certs(&ca_cert)?,
            identity: Identity::load(&cert, &key)?,
            client_auth: cfg.client_auth,
        })
    }
}

/// The names a node certificate is valid for: `localhost`, loopback, the
/// listen address, the node id (when it is a valid DNS name) and any extra
/// names.
pub fn node_names(node_id: &str, listen_ip: IpAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !listen_ip.is_unspecified() {
        names.push(listen_ip.to_string());
    }
    if rustls::pki_types::DnsName::try_from(node_id).is_ok() && node_id.parse::<IpAddr>().is_err() {
        names.push(node_id.to_string());
    }
    names.extend(extra.iter().cloned());
    names.dedup();
    names
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert.clone())
            .map_err(|e| TlsError::Config(format!("cluster CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn cfg_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// The QUIC server crypto of a node.
pub fn server_crypto(tls: &NodeTls) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cfg_err)?;
    let builder = if tls.client_auth {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(&tls.ca)?),
            provider(),
        )
        .build()
        .map_err(cfg_err)?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(tls.identity.chain.clone(), tls.identity.key.clone_key())
        .map_err(cfg_err)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    quinn::crypto::rustls::QuicServerConfig::try_from(config).map_err(cfg_err)
}

/// The QUIC client crypto: trusts `ca`, presents `identity` if given.
pub fn client_crypto(
    ca: &[CertificateDer<'static>],
    identity: Option<&Identity>,
) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cfg_err)?
        .with_root_certificates(roots(ca)?);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(cfg_err)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(config).map_err(cfg_err)
}

/// Loads a client's CA and optional identity from its config.
pub fn load_client_tls(
    cfg: &ClientTlsConfig,
) -> Result<(Vec<CertificateDer<'static>>, Option<Identity>), TlsError> {
    let ca = load_certs(&cfg.ca_cert)?;
    let identity = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => Some(Identity::load(c, k)?),
        (None, None) => None,
        (Some(_), None) => {
            return Err(TlsError::Config(
                "tls.key: required when tls.cert is set".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(TlsError::Config(
                "tls.cert: required when tls.key is set".into(),
            ))
        }
    };
    Ok((ca, identity))
}
