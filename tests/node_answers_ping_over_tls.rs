//! A node started in-process answers `Ping` and `Info` over QUIC + TLS to a
//! client trusting its generated CA, refuses the handshake of a client
//! trusting another CA, and answers requests it cannot serve with the right
//! `ServerErrorKind` (wrong cluster, role not hosted, role not implemented).

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use corfu::core::node::{self, NodeService};
use corfu::core::transport::tls::ClusterCa;
use corfu::core::transport::{Service, TransportConfig, TransportError};
use corfu::core::types::{ClusterId, Role};
use corfu::core::wire::logunit::LogUnitResponse;
use corfu::core::wire::{
    Header, LayoutRequest, LogUnitRequest, Request, Response, SequencerRequest, ServerError,
    ServerErrorKind, PROTOCOL_VERSION,
};
use support::{
    client_trusting, client_trusting_file, fast_failing_transport, node_config, within, TestServer,
};

fn error_kind(answer: &Response) -> Option<ServerErrorKind> {
    match answer {
        Response::Error(ServerError { kind, .. }) => Some(*kind),
        _ => None,
    }
}

fn log_unit_tail() -> Request {
    Request::LogUnit(LogUnitRequest::Tail)
}

fn sequencer_tail() -> Request {
    Request::Sequencer(SequencerRequest::Tail { streams: vec![] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_client_gets_pong_and_node_info() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ClusterId::random();
    let config = node_config(
        dir.path(),
        "node-a",
        vec![Role::Sequencer, Role::LogUnit],
        Some(cluster),
    );
    let node = node::start(config).await.expect("node starts");
    assert_eq!(node.cluster_id(), cluster);
    assert_ne!(
        node.local_addr().port(),
        0,
        "port 0 is replaced by the bound port"
    );
    let ca_pem = dir.path().join("tls").join("ca.pem");
    assert!(
        ca_pem.exists(),
        "the node generated its CA at {}",
        ca_pem.display()
    );
    assert_eq!(node.ca_cert(), ca_pem.as_path());
    assert!(dir.path().join("tls").join("node.pem").exists());
    let stored = std::fs::read_to_string(dir.path().join("cluster_id")).unwrap();
    assert_eq!(
        stored.trim(),
        cluster.to_string(),
        "the configured cluster id is stored"
    );

    let client = client_trusting_file(&ca_pem, None, cluster, TransportConfig::default());
    let addr = node.local_addr().to_string();
    let peer = client.peer(&addr);
    assert_eq!(peer.addr(), addr);

    let pong = within(10, "ping", peer.call(0, Request::Ping))
        .await
        .expect("ping");
    assert_eq!(pong, Response::Pong);

    match within(10, "info", peer.call(0, Request::Info))
        .await
        .expect("info")
    {
        Response::Info(info) => {
            assert_eq!(info.node_id, "node-a");
            assert_eq!(info.cluster_id, cluster);
            // Roles are reported sorted, whatever the config order.
            assert_eq!(info.roles, vec![Role::Sequencer, Role::LogUnit]);
            assert_eq!(info.protocol_version, PROTOCOL_VERSION);
            assert_eq!(info.software_version, env!("CARGO_PKG_VERSION"));
        }
        other => panic!("expected Info, got {other:?}"),
    }

    // Many pings on the one connection, concurrently.
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let peer = peer.clone();
        tasks.push(tokio::spawn(
            async move { peer.call(0, Request::Ping).await },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().expect("concurrent ping"), Response::Pong);
    }

    // The same endpoint hands out the same peer for the same address.
    assert_eq!(
        client.peer(&addr).call(0, Request::Ping).await.unwrap(),
        Response::Pong
    );

    client.close();
    within(10, "node shutdown", node.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_trusting_another_ca_is_refused_in_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let node = node::start(node_config(dir.path(), "n1", vec![Role::LogUnit], None))
        .await
        .expect("node starts");
    let addr = node.local_addr().to_string();

    let other_ca = ClusterCa::generate("other").unwrap();
    let client = client_trusting(
        &[other_ca.cert_der().unwrap()],
        None,
        ClusterId::ANY,
        fast_failing_transport(),
    );
    let result = within(
        10,
        "ping with the wrong CA",
        client.peer(&addr).call(0, Request::Ping),
    )
    .await;
    let err = result.expect_err("a client trusting another CA must not get an answer");
    assert!(
        matches!(
            err,
            TransportError::Tls { .. } | TransportError::Connect { .. }
        ),
        "expected a TLS (or connect) error, got {err:?}"
    );
    assert!(
        matches!(err, TransportError::Tls { .. }),
        "expected a TLS error, got {err:?}"
    );
    assert!(
        err.not_sent(),
        "a refused handshake means the request was not sent"
    );
    let text = err.to_string();
    assert!(text.contains(&addr), "the error names the peer: {text}");
    assert!(
        text.contains("TLS handshake refused"),
        "the error says what failed: {text}"
    );
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "the error says why (an untrusted certificate): {text}"
    );

    // The node is unharmed: a client with the right CA still gets Pong.
    let good = client_trusting_file(
        node.ca_cert(),
        None,
        ClusterId::ANY,
        TransportConfig::default(),
    );
    assert_eq!(
        within(10, "ping", good.peer(&addr).call(0, Request::Ping))
            .await
            .unwrap(),
        Response::Pong
    );
    client.close();
    good.close();
    within(10, "node shutdown", node.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_another_cluster_are_refused_except_discovery_with_any() {
    let dir = tempfile::tempdir().unwrap();
    let node = node::start(node_config(dir.path(), "n1", vec![Role::LogUnit], None))
        .await
        .expect("node starts");
    let addr = node.local_addr().to_string();
    let ca = node.ca_cert().to_path_buf();

    // Another cluster's id: refused for role requests and for discovery.
    let stranger = client_trusting_file(&ca, None, ClusterId::random(), TransportConfig::default());
    let peer = stranger.peer(&addr);
    for request in [log_unit_tail(), Request::Ping, Request::Info] {
        let answer = within(10, "request", peer.call(0, request.clone()))
            .await
            .unwrap();
        assert_eq!(
            error_kind(&answer),
            Some(ServerErrorKind::WrongCluster),
            "{request:?} from another cluster: {answer:?}"
        );
        if let Response::Error(e) = &answer {
            assert!(
                e.message.contains(&node.cluster_id().to_string()),
                "the message names the node's cluster: {}",
                e.message
            );
        }
    }

    // The wildcard id: discovery works, role requests do not.
    let discover = client_trusting_file(&ca, None, ClusterId::ANY, TransportConfig::default());
    let peer = discover.peer(&addr);
    assert_eq!(peer.call(0, Request::Ping).await.unwrap(), Response::Pong);
    match peer.call(0, Request::Info).await.unwrap() {
        Response::Info(info) => assert_eq!(info.cluster_id, node.cluster_id()),
        other => panic!("Info with ClusterId::ANY: {other:?}"),
    }
    let answer = peer.call(0, log_unit_tail()).await.unwrap();
    assert_eq!(
        error_kind(&answer),
        Some(ServerErrorKind::WrongCluster),
        "{answer:?}"
    );

    stranger.close();
    discover.close();
    within(10, "node shutdown", node.shutdown()).await;
}

/// Requests reach the roles a node hosts; others get `RoleNotHosted`
/// naming the node and the request. (`Unsupported` for a hosted role with no
/// implementation is checked through `NodeService` in the next test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_requests_reach_hosted_roles_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = node::start(node_config(dir.path(), "n1", vec![Role::LogUnit], None))
        .await
        .expect("node starts");
    let addr = node.local_addr().to_string();
    let client = client_trusting_file(
        node.ca_cert(),
        None,
        node.cluster_id(),
        TransportConfig::default(),
    );
    let peer = client.peer(&addr);

    for request in [sequencer_tail(), Request::Layout(LayoutRequest::GetLayout)] {
        match peer.call(0, request.clone()).await.unwrap() {
            Response::Error(e) => {
                assert_eq!(e.kind, ServerErrorKind::RoleNotHosted, "{request:?}: {e}");
                assert!(e.message.contains("n1"), "names the node: {}", e.message);
                assert!(
                    e.message.contains(request.kind()),
                    "names the request: {}",
                    e.message
                );
            }
            other => panic!("{request:?} to a node not hosting its role: {other:?}"),
        }
    }

    // The hosted log unit role answers (an empty unit: no tail yet).
    match peer.call(0, log_unit_tail()).await.unwrap() {
        Response::LogUnit(LogUnitResponse::Tails(tails)) => {
            assert_eq!(tails.global, None);
            assert_eq!(tails.trim_mark, 0);
        }
        other => panic!("the hosted log unit answered {other:?}"),
    }
    client.close();
    within(10, "node shutdown", node.shutdown()).await;
}

/// A role implementation that answers `WrongEpoch` with the request's epoch,
/// so the test can see the request reached it.
struct EchoEpoch;

#[async_trait::async_trait]
impl Service for EchoEpoch {
    async fn handle(&self, header: Header, _body: Request) -> Response {
        Response::WrongEpoch {
            current: header.epoch,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_service_dispatches_hosted_roles_and_checks_headers() {
    let cluster = ClusterId::random();
    let mut roles: HashMap<Role, Arc<dyn Service>> = HashMap::new();
    roles.insert(Role::Sequencer, Arc::new(EchoEpoch));
    // Hosts the sequencer (implemented) and the log unit (not implemented).
    let service = NodeService::new("svc", cluster, &[Role::LogUnit, Role::Sequencer], roles);
    let server = TestServer::start(Arc::new(service), TransportConfig::default());
    let addr = server.addr.to_string();
    let client = client_trusting(&server.ca, None, cluster, TransportConfig::default());
    let peer = client.peer(&addr);

    assert_eq!(
        peer.call(7, sequencer_tail()).await.unwrap(),
        Response::WrongEpoch { current: 7 },
        "an implemented role gets the request with its header"
    );
    assert_eq!(
        error_kind(&peer.call(0, log_unit_tail()).await.unwrap()),
        Some(ServerErrorKind::Unsupported)
    );
    assert_eq!(
        error_kind(
            &peer
                .call(0, Request::Layout(LayoutRequest::GetLayout))
                .await
                .unwrap()
        ),
        Some(ServerErrorKind::RoleNotHosted)
    );

    // Protocol version checked first, whatever the request.
    let direct = NodeService::new("svc", cluster, &[Role::Sequencer], HashMap::new());
    let header = Header {
        protocol_version: PROTOCOL_VERSION + 1,
        cluster_id: cluster,
        epoch: 0,
        request_id: 1,
    };
    let answer = direct.handle(header, Request::Ping).await;
    assert_eq!(
        error_kind(&answer),
        Some(ServerErrorKind::ProtocolVersion),
        "{answer:?}"
    );

    client.close();
    server.stop().await;
}
