//! A node with `tls.client_auth = true` refuses, in the TLS handshake,
//! clients without a certificate and clients whose certificate another CA
//! issued, and serves clients with a certificate issued by its cluster CA.

mod support;

use corfu::core::node::{self, RunningNode};
use corfu::core::transport::tls::{ClusterCa, Identity, NodeTlsConfig};
use corfu::core::transport::{ClientEndpoint, TransportError};
use corfu::core::types::{ClusterId, Role};
use corfu::core::wire::{Request, Response};
use support::{client_trusting_file, fast_failing_transport, node_config, within};

async fn start_node_with_client_auth(dir: &std::path::Path) -> RunningNode {
    let mut config = node_config(dir, "secure", vec![Role::LogUnit], None);
    config.tls = NodeTlsConfig {
        client_auth: true,
        ..NodeTlsConfig::default()
    };
    node::start(config).await.expect("node starts")
}

fn client(node: &RunningNode, identity: Option<&Identity>) -> ClientEndpoint {
    client_trusting_file(
        node.ca_cert(),
        identity,
        node.cluster_id(),
        fast_failing_transport(),
    )
}

/// Pings with a fresh client and returns the transport error it must get.
async fn refused(node: &RunningNode, identity: Option<&Identity>) -> TransportError {
    let client = client(node, identity);
    let addr = node.local_addr().to_string();
    let result = within(10, "ping", client.peer(&addr).call(0, Request::Ping)).await;
    client.close();
    match result {
        Ok(answer) => panic!("the node answered an unauthorized client: {answer:?}"),
        Err(e) => {
            assert!(
                e.to_string().contains(&addr),
                "the error names the node: {e}"
            );
            e
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_refused_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node_with_client_auth(dir.path()).await;
    let err = refused(&node, None).await;
    match &err {
        TransportError::Tls { reason, .. } => {
            assert!(
                reason.contains("client certificate"),
                "the reason mentions the client certificate: {reason}"
            );
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(err.to_string().contains("TLS handshake refused"), "{err}");
    within(10, "node shutdown", node.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_with_certificate_of_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node_with_client_auth(dir.path()).await;
    let other = ClusterCa::generate("intruder").unwrap();
    let identity = other
        .issue("intruder-client", &[])
        .unwrap()
        .identity()
        .unwrap();
    let err = refused(&node, Some(&identity)).await;
    match &err {
        TransportError::Tls { reason, .. } => {
            assert!(
                reason.contains("certificate"),
                "the reason is about the certificate: {reason}"
            );
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    within(10, "node shutdown", node.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_with_certificate_of_the_cluster_ca_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node_with_client_auth(dir.path()).await;
    let tls_dir = dir.path().join("tls");
    let ca = ClusterCa::load(&tls_dir.join("ca.pem"), &tls_dir.join("ca.key"))
        .expect("load the node's CA");
    let identity = ca.issue("good-client", &[]).unwrap().identity().unwrap();
    let client = client(&node, Some(&identity));
    let addr = node.local_addr().to_string();
    let peer = client.peer(&addr);
    assert_eq!(
        within(10, "ping", peer.call(0, Request::Ping))
            .await
            .unwrap(),
        Response::Pong
    );
    match within(10, "info", peer.call(0, Request::Info))
        .await
        .unwrap()
    {
        Response::Info(info) => {
            assert_eq!(info.node_id, "secure");
            assert_eq!(info.cluster_id, node.cluster_id());
        }
        other => panic!("expected Info, got {other:?}"),
    }

    // Refused clients in between do not disturb the authorized one.
    let _ = refused(&node, None).await;
    assert_eq!(
        within(10, "ping", peer.call(0, Request::Ping))
            .await
            .unwrap(),
        Response::Pong
    );

    // Client auth is about identity, not the cluster id: a certified client
    // naming another cluster passes the handshake and is told so.
    let stranger = client_trusting_file(
        node.ca_cert(),
        Some(&identity),
        ClusterId::random(),
        fast_failing_transport(),
    );
    match within(10, "ping", stranger.peer(&addr).call(0, Request::Ping))
        .await
        .unwrap()
    {
        Response::Error(e) => assert_eq!(e.kind, corfu::core::wire::ServerErrorKind::WrongCluster),
        other => panic!("expected WrongCluster, got {other:?}"),
    }
    stranger.close();
    client.close();
    within(10, "node shutdown", node.shutdown()).await;
}
