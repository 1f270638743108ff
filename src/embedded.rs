//! A cluster to run on, for examples and demos: one named by a client
//! config (`--cluster FILE`), or, by default, a 3-node cluster started in
//! this process on loopback with its data in a temporary directory.

use std::path::Path;

use anyhow::Context;
use corfu_core::client::LogClient;
use corfu_core::client_config::ClientConfig;
use smr::Runtime;

use crate::local::{LocalCluster, LocalOptions};

/// A cluster to run on: given by a client config, or embedded.
pub struct ClusterOrEmbedded {
    config: ClientConfig,
    /// The embedded cluster and the directory holding its data.
    embedded: Option<(LocalCluster, tempfile::TempDir)>,
}

impl ClusterOrEmbedded {
    /// Loads the client config at `cluster`, or starts an embedded 3-node
    /// cluster (one chain of 3) if none is given; prints one line saying
    /// which.
    pub async fn open(cluster: Option<&Path>) -> anyhow::Result<ClusterOrEmbedded> {
        if let Some(path) = cluster {
            let config = ClientConfig::load(path)
                .with_context(|| format!("loading the client config {}", path.display()))?;
            println!("cluster: {} (from {})", config.cluster_id, path.display());
            return Ok(ClusterOrEmbedded {
                config,
                embedded: None,
            });
        }
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let cluster = LocalCluster::start(&dir.path().join("cluster"), 3, LocalOptions::default())
            .await
            .context("starting the embedded cluster")?;
        println!(
            "cluster: 3 nodes in this process on loopback (QUIC, mutual TLS), one chain of 3, data in {}",
            dir.path().display()
        );
        Ok(ClusterOrEmbedded {
            config: cluster.client_config(),
            embedded: Some((cluster, dir)),
        })
    }

    /// The client config of the cluster.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A runtime over a new log client (a connection of its own, like
    /// another process), and the client.
    pub async fn runtime(&self) -> anyhow::Result<(Runtime, LogClient)> {
        let client = LogClient::connect(&self.config)
            .await
            .context("connecting to the cluster")?;
        Ok((Runtime::new(client.clone()), client))
    }

    /// Stops the embedded cluster, if any (its directory is removed).
    pub async fn shutdown(self) {
        if let Some((cluster, _dir)) = self.embedded {
            cluster.shutdown().await;
        }
    }
}
