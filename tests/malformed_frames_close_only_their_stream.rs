//! Raw QUIC against a node: a stream carrying garbage, an oversized or
//! empty length prefix is reset by the node with `FRAME_ERROR_CODE`, while
//! the connection's other streams and other clients keep being served. A
//! hand-encoded frame (`u32` little-endian length + rkyv archive) gets a
//! `ResponseFrame` back, decodable with `FrameDecoder`.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use corfu::core::node::{self, RunningNode};
use corfu::core::transport::{tls, TransportConfig, FRAME_ERROR_CODE};
use corfu::core::types::{ClusterId, Role};
use corfu::core::wire::frame::{encode_frame, FRAME_BYTES_MAX_DEFAULT, LENGTH_PREFIX_BYTES};
use corfu::core::wire::logunit::{LogUnitResponse, ReadOutcome};
use corfu::core::wire::{
    FrameDecoder, Header, LogUnitRequest, Request, RequestFrame, Response, ResponseFrame,
    ServerErrorKind, PROTOCOL_VERSION,
};
use support::{client_trusting_file, node_config, within};

struct Raw {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

async fn raw_connection(node: &RunningNode) -> Raw {
    let roots = tls::load_certs(node.ca_cert()).unwrap();
    let crypto = tls::client_crypto(&roots, None).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(TransportConfig::default().quinn()));
    let mut endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
    endpoint.set_default_client_config(config);
    let conn = within(
        10,
        "raw connect",
        endpoint.connect(node.local_addr(), "localhost").unwrap(),
    )
    .await
    .expect("raw QUIC connection with the corfu ALPN");
    Raw { endpoint, conn }
}

fn request(request_id: u64, cluster_id: ClusterId, body: Request) -> RequestFrame {
    RequestFrame {
        header: Header {
            protocol_version: PROTOCOL_VERSION,
            cluster_id,
            epoch: 0,
            request_id,
        },
        body,
    }
}

/// Sends `bytes` on a new stream (finishing it if `finish`) and returns how
/// the node ended its side: the reset code, or `None` if it finished it.
async fn send_on_new_stream(
    conn: &quinn::Connection,
    bytes: &[u8],
    finish: bool,
) -> (Option<u64>, Vec<u8>) {
    let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
    send.write_all(bytes).await.expect("write");
    if finish {
        send.finish().expect("finish");
    }
    let read = within(10, "the node ends the stream", recv.read_to_end(1 << 20)).await;
    match read {
        Ok(answer) => (None, answer),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            (Some(code.into_inner()), Vec::new())
        }
        Err(e) => panic!("unexpected read error: {e:?}"),
    }
}

/// Asserts the node reset the stream with `FRAME_ERROR_CODE` and also stopped
/// reading it.
async fn assert_reset_by_node(conn: &quinn::Connection, bytes: &[u8], what: &str) {
    let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
    send.write_all(bytes).await.expect("write");
    match within(10, what, recv.read_to_end(1 << 20)).await {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            assert_eq!(
                code.into_inner(),
                u64::from(FRAME_ERROR_CODE),
                "{what}: reset code"
            );
        }
        other => panic!("{what}: expected the node to reset the stream, got {other:?}"),
    }
    match within(10, what, send.stopped()).await {
        Ok(Some(code)) => assert_eq!(
            code.into_inner(),
            u64::from(FRAME_ERROR_CODE),
            "{what}: stop code"
        ),
        other => panic!("{what}: expected the node to stop reading the stream, got {other:?}"),
    }
}

/// Decodes every response frame of `bytes`, checking the framing by hand
/// first: a sequence of (u32 LE length, archive of that length).
fn decode_responses(bytes: &[u8]) -> Vec<ResponseFrame> {
    let mut at = 0;
    let mut count = 0;
    while at < bytes.len() {
        let prefix: [u8; 4] = bytes[at..at + LENGTH_PREFIX_BYTES].try_into().unwrap();
        let len = u32::from_le_bytes(prefix) as usize;
        assert!(len > 0);
        at += LENGTH_PREFIX_BYTES + len;
        count += 1;
    }
    assert_eq!(at, bytes.len(), "frames tile the stream exactly");
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX_DEFAULT);
    decoder.extend(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder
        .next_frame::<ResponseFrame>()
        .expect("valid response frame")
    {
        frames.push(frame);
    }
    decoder.finish().expect("no bytes left over");
    assert_eq!(frames.len(), count);
    frames
}

async fn ping_on_new_stream(conn: &quinn::Connection, request_id: u64) {
    let bytes = encode_frame(
        &request(request_id, ClusterId::ANY, Request::Ping),
        FRAME_BYTES_MAX_DEFAULT,
    )
    .unwrap();
    let (reset, answer) = send_on_new_stream(conn, &bytes, true).await;
    assert_eq!(reset, None, "a valid request stream is finished, not reset");
    assert_eq!(
        decode_responses(&answer),
        vec![ResponseFrame {
            request_id,
            body: Response::Pong
        }]
    );
}

async fn start(dir: &std::path::Path) -> RunningNode {
    node::start(node_config(dir, "n1", vec![Role::LogUnit], None))
        .await
        .expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_encoded_frames_get_framed_answers_by_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let raw = raw_connection(&node).await;

    let ping = encode_frame(
        &request(77, ClusterId::ANY, Request::Ping),
        FRAME_BYTES_MAX_DEFAULT,
    )
    .unwrap();
    let len = u32::from_le_bytes(ping[..4].try_into().unwrap()) as usize;
    assert_eq!(
        len + LENGTH_PREFIX_BYTES,
        ping.len(),
        "a frame is a u32 LE length, then the archive"
    );

    // Several requests pipelined in one write, answered by request id.
    let mut bytes = Vec::new();
    let cluster = node.cluster_id();
    let mut wrong_version = request(4, cluster, Request::Ping);
    wrong_version.header.protocol_version = PROTOCOL_VERSION + 1;
    for frame in [
        request(1, ClusterId::ANY, Request::Ping),
        request(2, cluster, Request::Info),
        request(3, ClusterId::ANY, Request::LogUnit(LogUnitRequest::Tail)),
        wrong_version,
        request(
            5,
            cluster,
            Request::LogUnit(LogUnitRequest::Read { address: 9 }),
        ),
    ] {
        bytes.extend(encode_frame(&frame, FRAME_BYTES_MAX_DEFAULT).unwrap());
    }
    let (reset, answer) = send_on_new_stream(&raw.conn, &bytes, true).await;
    assert_eq!(reset, None);
    let answers: HashMap<u64, Response> = decode_responses(&answer)
        .into_iter()
        .map(|f| (f.request_id, f.body))
        .collect();
    assert_eq!(answers.len(), 5, "one answer per request: {answers:?}");
    assert_eq!(answers[&1], Response::Pong);
    match &answers[&2] {
        Response::Info(info) => {
            assert_eq!(info.node_id, "n1");
            assert_eq!(info.cluster_id, cluster);
        }
        other => panic!("Info: {other:?}"),
    }
    let kind = |r: &Response| match r {
        Response::Error(e) => Some(e.kind),
        _ => None,
    };
    assert_eq!(kind(&answers[&3]), Some(ServerErrorKind::WrongCluster));
    assert_eq!(kind(&answers[&4]), Some(ServerErrorKind::ProtocolVersion));
    assert_eq!(
        answers[&5],
        Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Unwritten)),
        "the log unit answers reads"
    );

    // The single ping frame on its own stream.
    let (reset, answer) = send_on_new_stream(&raw.conn, &ping, true).await;
    assert_eq!(reset, None);
    assert_eq!(
        decode_responses(&answer),
        vec![ResponseFrame {
            request_id: 77,
            body: Response::Pong
        }]
    );

    raw.endpoint.close(0u32.into(), b"done");
    within(10, "node shutdown", node.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_reset_their_stream_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let raw = raw_connection(&node).await;
    ping_on_new_stream(&raw.conn, 1).await;

    // A plausible length, then bytes that are no archive.
    let mut garbage = 16u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xFF; 16]);
    assert_reset_by_node(&raw.conn, &garbage, "garbage archive").await;
    ping_on_new_stream(&raw.conn, 2).await;

    // Text: its first four bytes read as a length far above the limit.
    assert_reset_by_node(&raw.conn, b"GET / HTTP/1.1\r\n\r\n", "text").await;
    // A length prefix above frame_bytes_max, without the bytes it announces.
    assert_reset_by_node(
        &raw.conn,
        &(FRAME_BYTES_MAX_DEFAULT + 1).to_le_bytes(),
        "oversized prefix",
    )
    .await;
    assert_reset_by_node(&raw.conn, &u32::MAX.to_le_bytes(), "u32::MAX prefix").await;
    // A zero length.
    assert_reset_by_node(&raw.conn, &[0, 0, 0, 0, 1, 2, 3, 4], "empty frame").await;
    // A valid frame with its archive corrupted.
    let mut corrupted = encode_frame(
        &request(5, ClusterId::ANY, Request::Info),
        FRAME_BYTES_MAX_DEFAULT,
    )
    .unwrap();
    for b in corrupted[LENGTH_PREFIX_BYTES..].iter_mut() {
        *b = !*b;
    }
    assert_reset_by_node(&raw.conn, &corrupted, "corrupted archive").await;

    // Many bad streams in a row do not wear the connection down.
    for i in 0..50u32 {
        assert_reset_by_node(
            &raw.conn,
            &(u32::MAX - i).to_le_bytes(),
            "oversized prefix (loop)",
        )
        .await;
    }

    assert!(
        raw.conn.close_reason().is_none(),
        "the connection is still open: {:?}",
        raw.conn.close_reason()
    );
    ping_on_new_stream(&raw.conn, 3).await;

    // A stream that stays open next to the bad ones keeps working too.
    let (mut send, mut recv) = raw.conn.open_bi().await.unwrap();
    let first = encode_frame(
        &request(10, ClusterId::ANY, Request::Ping),
        FRAME_BYTES_MAX_DEFAULT,
    )
    .unwrap();
    send.write_all(&first).await.unwrap();
    assert_reset_by_node(
        &raw.conn,
        &u32::MAX.to_le_bytes(),
        "bad stream beside a good one",
    )
    .await;
    let second = encode_frame(
        &request(11, ClusterId::ANY, Request::Ping),
        FRAME_BYTES_MAX_DEFAULT,
    )
    .unwrap();
    send.write_all(&second).await.unwrap();
    send.finish().unwrap();
    let answer = within(10, "long-lived stream", recv.read_to_end(1 << 20))
        .await
        .unwrap();
    let ids: Vec<u64> = decode_responses(&answer)
        .iter()
        .map(|f| f.request_id)
        .collect();
    assert_eq!(ids, vec![10, 11]);

    // And a fresh client of the node is served.
    let client = client_trusting_file(
        node.ca_cert(),
        None,
        node.cluster_id(),
        TransportConfig::default(),
    );
    let pong = within(
        10,
        "fresh client",
        client
            .peer(&node.local_addr().to_string())
            .call(0, Request::Ping),
    )
    .await;
    assert_eq!(pong.unwrap(), Response::Pong);

    client.close();
    raw.endpoint.close(0u32.into(), b"done");
    within(10, "node shutdown", node.shutdown()).await;
}

/// A stream finished in the middle of a frame is never answered and does not
/// hang: the node resets it, and the connection carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_gets_no_answer_and_the_connection_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let raw = raw_connection(&node).await;

    let whole = encode_frame(
        &request(1, ClusterId::ANY, Request::Info),
        FRAME_BYTES_MAX_DEFAULT,
    )
    .unwrap();
    for cut in [2, LENGTH_PREFIX_BYTES, whole.len() / 2, whole.len() - 1] {
        let (_how, answer) = send_on_new_stream(&raw.conn, &whole[..cut], true).await;
        assert!(
            answer.is_empty(),
            "no answer to a truncated frame (cut at {cut})"
        );
    }
    // A complete frame, then a truncated one: the stream is reset, so the
    // answer to the first may or may not have left before the reset; if
    // anything arrived, it is exactly that answer.
    let mut bytes = encode_frame(
        &request(2, ClusterId::ANY, Request::Ping),
        FRAME_BYTES_MAX_DEFAULT,
    )
    .unwrap();
    bytes.extend_from_slice(&whole[..whole.len() - 3]);
    let (how, answer) = send_on_new_stream(&raw.conn, &bytes, true).await;
    assert_eq!(how, Some(u64::from(FRAME_ERROR_CODE)));
    let answers = decode_responses(&answer);
    assert!(
        answers.is_empty()
            || answers
                == vec![ResponseFrame {
                    request_id: 2,
                    body: Response::Pong
                }],
        "{answers:?}"
    );
    ping_on_new_stream(&raw.conn, 3).await;
    assert!(raw.conn.close_reason().is_none());

    raw.endpoint.close(0u32.into(), b"done");
    within(10, "node shutdown", node.shutdown()).await;
}

/// A stream that ends inside a frame is malformed: the node resets it with
/// `FRAME_ERROR_CODE`, so the sender learns its request was cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_resets_the_stream_with_frame_error_code() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let raw = raw_connection(&node).await;
    let whole = encode_frame(
        &request(1, ClusterId::ANY, Request::Info),
        FRAME_BYTES_MAX_DEFAULT,
    )
    .unwrap();
    let (how, _) = send_on_new_stream(&raw.conn, &whole[..whole.len() / 2], true).await;
    assert_eq!(
        how,
        Some(u64::from(FRAME_ERROR_CODE)),
        "the node should reset a stream that ended inside a frame"
    );
    raw.endpoint.close(0u32.into(), b"done");
    within(10, "node shutdown", node.shutdown()).await;
}
