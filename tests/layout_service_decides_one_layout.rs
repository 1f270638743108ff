//! The layout service over QUIC (issue: layout and sequencer): Paxos
//! acceptors on three nodes, client-side proposers. Racing proposers end
//! with one committed layout everywhere; bootstrap is idempotent; a
//! minority down still commits; a majority down fails with a clear error
//! and commits nothing; a restarted acceptor keeps its promises.

mod support;

use std::path::Path;

use corfu::core::layout::{Layout, NodeAddr, Segment, Stripe};
use corfu::core::layout_service::proposer::{fetch_layout, ProposeError, Proposer};
use corfu::core::node::{self, NodeConfig, RunningNode};
use corfu::core::transport::tls::{self, ClusterCa};
use corfu::core::transport::{ClientEndpoint, TransportConfig};
use corfu::core::types::{ClusterId, Role};
use corfu::core::wire::layout::{LayoutRequest, LayoutResponse, Rank};
use corfu::core::wire::{Request, Response};
use support::{node_config, within};

struct Cluster {
    dir: tempfile::TempDir,
    cluster_id: ClusterId,
    nodes: Vec<Option<RunningNode>>,
    addrs: Vec<String>,
}

fn config(dir: &Path, i: usize, cluster_id: ClusterId, listen: &str) -> NodeConfig {
    let mut cfg = node_config(
        &dir.join(format!("n{i}")),
        &format!("n{i}"),
        vec![Role::LayoutServer],
        Some(cluster_id),
    );
    cfg.listen = listen.parse().unwrap();
    cfg
}

impl Cluster {
    /// Three layout servers sharing one CA and one cluster id.
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let cluster_id = ClusterId::random();
        let ca = ClusterCa::generate("test").unwrap();
        let mut nodes = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..3 {
            let tls_dir = dir.path().join(format!("n{i}")).join("tls");
            ca.write(&tls_dir.join("ca.pem"), &tls_dir.join("ca.key"))
                .unwrap();
            let node = node::start(config(dir.path(), i, cluster_id, "127.0.0.1:0"))
                .await
                .unwrap();
            addrs.push(node.local_addr().to_string());
            nodes.push(Some(node));
        }
        Cluster {
            dir,
            cluster_id,
            nodes,
            addrs,
        }
    }

    fn client(&self) -> ClientEndpoint {
        let roots = tls::load_certs(&self.dir.path().join("n0/tls/ca.pem")).unwrap();
        let transport = TransportConfig {
            connect_timeout_ms: 2_000,
            request_timeout_ms: 3_000,
            ..TransportConfig::default()
        };
        ClientEndpoint::new(
            tls::client_crypto(&roots, None).unwrap(),
            transport,
            self.cluster_id,
        )
        .unwrap()
    }

    fn layout(&self, epoch: u64, sequencer: usize) -> Layout {
        let node = |i: usize| NodeAddr {
            node_id: format!("n{i}"),
            addr: self.addrs[i].clone(),
        };
        Layout {
            cluster_id: self.cluster_id,
            epoch,
            layout_servers: (0..3).map(node).collect(),
            sequencers: vec![node(sequencer)],
            segments: vec![Segment {
                start: 0,
                end: None,
                stripes: vec![Stripe {
                    chain: (0..3).map(node).collect(),
                }],
            }],
            grants: corfu_core::layout::Grants::from(0),
            voids: vec![],
        }
    }

    async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            within(10, "shutdown", node.shutdown()).await;
        }
    }

    async fn restart(&mut self, i: usize) {
        self.stop(i).await;
        let node = node::start(config(self.dir.path(), i, self.cluster_id, &self.addrs[i]))
            .await
            .unwrap();
        self.nodes[i] = Some(node);
    }

    /// The layout server `i` holds as committed (retrying transport
    /// errors for a moment: a restarted server may just be coming up).
    async fn committed_at(&self, client: &ClientEndpoint, i: usize) -> Option<Layout> {
        let peer = client.peer(&self.addrs[i]);
        let mut answer = peer
            .call(0, Request::Layout(LayoutRequest::GetLayout))
            .await;
        for _ in 0..20 {
            if answer.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            answer = peer
                .call(0, Request::Layout(LayoutRequest::GetLayout))
                .await;
        }
        match answer.unwrap_or_else(|e| panic!("GetLayout from server {i}: {e}")) {
            Response::Layout(LayoutResponse::Layout(l)) => l.map(|l| *l),
            other => panic!("GetLayout answered {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paxos_layout_service() {
    let mut cluster = Cluster::start().await;
    let client = cluster.client();
    assert!(matches!(
        fetch_layout(&client, &cluster.addrs).await,
        Err(ProposeError::Unavailable(_))
    ));

    // Two proposers race for epoch 1 with different layouts: both learn the
    // same decision, and every server holds it.
    let a = Proposer::new(client.clone(), cluster.addrs.clone(), 1);
    let b = Proposer::new(client.clone(), cluster.addrs.clone(), 2);
    let (la, lb) = (cluster.layout(1, 0), cluster.layout(1, 1));
    let (ra, rb) = tokio::join!(a.bootstrap(la.clone()), b.bootstrap(lb.clone()));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra, rb, "racing proposers agree");
    assert!(ra == la || ra == lb);
    for i in 0..3 {
        assert_eq!(
            cluster.committed_at(&client, i).await.as_ref(),
            Some(&ra),
            "server {i}"
        );
    }
    assert_eq!(fetch_layout(&client, &cluster.addrs).await.unwrap(), ra);

    // Bootstrap again, with another layout: nothing changes.
    let other = if ra == la { lb } else { la };
    assert_eq!(a.bootstrap(other).await.unwrap(), ra);
    assert_eq!(cluster.committed_at(&client, 2).await.as_ref(), Some(&ra));

    // A minority down: epoch 2 still commits.
    cluster.stop(2).await;
    let l2 = cluster.layout(2, 1);
    assert_eq!(a.propose(l2.clone()).await.unwrap(), l2);
    for i in 0..2 {
        assert_eq!(cluster.committed_at(&client, i).await.as_ref(), Some(&l2));
    }
    // A stale proposal for an older epoch learns it was superseded.
    assert!(matches!(
        b.propose(cluster.layout(1, 2)).await,
        Err(ProposeError::Superseded { committed: 2, .. })
    ));

    // A majority down: a clear error, and nothing is committed.
    cluster.stop(1).await;
    let err = a.propose(cluster.layout(3, 0)).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProposeError::NoMajority {
                reached: 1,
                needed: 2,
                total: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("only 1 of 3 layout servers answered"),
        "{err}"
    );
    assert_eq!(cluster.committed_at(&client, 0).await.as_ref(), Some(&l2));

    // The stopped servers come back and learn epoch 2 from the next round;
    // epoch 3 then commits everywhere.
    cluster.restart(1).await;
    cluster.restart(2).await;
    // Clients wait out the transport's reconnect back-off (100 ms) after
    // the failed attempts above.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let l3 = cluster.layout(3, 2);
    assert_eq!(b.propose(l3.clone()).await.unwrap(), l3);
    for i in 0..3 {
        assert_eq!(
            cluster.committed_at(&client, i).await.as_ref(),
            Some(&l3),
            "server {i}"
        );
    }

    // A restarted acceptor keeps its promises.
    let peer = client.peer(&cluster.addrs[0]);
    let prepare = |number| {
        Request::Layout(LayoutRequest::Prepare {
            epoch: 9,
            rank: Rank {
                number,
                proposer: 7,
            },
        })
    };
    assert_eq!(
        peer.call(0, prepare(5)).await.unwrap(),
        Response::Layout(LayoutResponse::Promise { accepted: None })
    );
    cluster.restart(0).await;
    let peer = client.peer(&cluster.addrs[0]);
    let mut answer = None;
    for _ in 0..50 {
        match peer.call(0, prepare(4)).await {
            Ok(a) => {
                answer = Some(a);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        answer.expect("the restarted server answers"),
        Response::Layout(LayoutResponse::Rejected {
            promised: Rank {
                number: 5,
                proposer: 7
            }
        })
    );
    client.close();
    for i in 0..3 {
        cluster.stop(i).await;
    }
}
