//! Values near the entry limit stay readable (issue 15, item 1).
//!
//! A log unit used to answer a range or batch read with every address
//! asked (up to `read_batch_max`), whatever their size: once the answer
//! passed the transport's `frame_bytes_max` (16 MiB) it became an internal
//! error, the client asked for the same batch again, and every read
//! covering those entries failed for good. Now every read answer has a
//! byte budget below the frame limit; the unit answers a prefix and the
//! client continues after it.
//!
//! An in-process 3-node cluster (one chain of three) takes, on one stream
//! each:
//! - five entries of the largest payload the client accepts (about
//!   8 MiB each, 40 MiB on one stream), read back through `read_range`
//!   and `read_stream`;
//! - 300 map inserts of 60 KiB values (18 MB on one stream, the `service`
//!   example's reproduction), read by a fresh runtime;
//! - three register sets of values near the limit, read by a fresh
//!   runtime.
//!
//! A fourth unit added to the chain receives four entries of the largest
//! size by state transfer (which reads from the chain's tail with range
//! reads).
//!
//! And the client refuses, before anything is sent, a payload that the
//! log units would refuse: its limit is on the same quantity as theirs.

mod support;

use corfu::cluster::Shape;
use corfu::core::client::{ClientError, LogClient};
use corfu::core::layout::NodeAddr;
use corfu::core::logunit::SyncPolicy;
use corfu::core::reconfig::{Change, Reconfigurer};
use corfu::core::types::StreamId;
use corfu::core::wire::logunit::ReadOutcome;
use corfu::local::{LocalCluster, LocalOptions};
use corfu::objects::{ReplicatedMap, ReplicatedRegister};
use corfu::smr::Runtime;
use support::within;

/// The default `entry_bytes_max` of clients and log units.
const ENTRY_BYTES_MAX: usize = 8 << 20;
/// What a record body holds besides the payload: address (8), kind (1),
/// stream count (2), append id (16).
const ENTRY_OVERHEAD: usize = 27;
/// A stream header in a record: stream id and backpointer.
const STREAM_HEADER: usize = 24;

/// `len` bytes that differ from one value to the next.
fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k.wrapping_mul(31) ^ i.wrapping_mul(7919)) as u8)
        .collect()
}

async fn cluster(dir: &tempfile::TempDir) -> LocalCluster {
    cluster_of(dir, 3).await
}

/// `nodes` nodes, one chain of three (`n1 n2 n3`).
async fn cluster_of(dir: &tempfile::TempDir, nodes: usize) -> LocalCluster {
    within(
        30,
        "cluster start",
        LocalCluster::start(
            &dir.path().join("c"),
            nodes,
            LocalOptions {
                shape: Shape::new(1, 3),
                // Durability is not the point; 8 MiB fdatasyncs on one disk
                // would make the test slow.
                sync: SyncPolicy::Never,
                ..LocalOptions::default()
            },
        ),
    )
    .await
    .expect("start the cluster")
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_near_the_limit_are_read_back_by_range_and_stream() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&dir).await;
    let config = cluster.client_config();
    assert_eq!(config.client.entry_bytes_max as usize, ENTRY_BYTES_MAX);
    let client = LogClient::connect(&config).await.unwrap();
    let big = StreamId::from_name("big");

    // The largest payload of one stream that client and units accept.
    let largest = ENTRY_BYTES_MAX - ENTRY_OVERHEAD - STREAM_HEADER;
    let mut appended = Vec::new();
    for i in 0..5 {
        let payload = value(i, largest);
        let address = within(30, "append", client.append(payload.clone(), &[big]))
            .await
            .unwrap_or_else(|e| panic!("append {i} of {largest} bytes: {e}"));
        appended.push((address, payload));
    }
    // Small entries of another stream in between.
    let small = StreamId::from_name("small");
    for i in 0..3 {
        client.append(value(100 + i, 10), &[small]).await.unwrap();
    }

    let tail = client.tail().await.unwrap();
    let range = within(60, "read_range", client.read_range(0, tail))
        .await
        .expect("read_range over 40 MiB of entries");
    assert_eq!(range.len() as u64, tail);
    for (address, payload) in &appended {
        match &range[*address as usize] {
            (a, ReadOutcome::Data(e)) if a == address => {
                assert!(e.payload == *payload, "address {address}: wrong payload")
            }
            other => panic!("address {address}: {:?}", other.0),
        }
    }

    let stream = within(60, "read_stream", client.read_stream(big, 0, tail))
        .await
        .expect("read_stream over 40 MiB");
    assert_eq!(stream.len(), appended.len());
    for ((a, e), (address, payload)) in stream.iter().zip(&appended) {
        assert_eq!(a, address);
        assert!(e.payload == *payload, "address {address}: wrong payload");
    }
    let smalls = client.read_stream(small, 0, tail).await.unwrap();
    assert_eq!(smalls.len(), 3);

    // One byte more than the units accept is refused by the client itself,
    // naming the limit, with or without streams.
    for (streams, len) in [
        (vec![big], largest + 1),
        (vec![], ENTRY_BYTES_MAX - ENTRY_OVERHEAD + 1),
        (vec![big, small], largest - STREAM_HEADER + 1),
    ] {
        match client.append(vec![7; len], &streams).await {
            Err(ClientError::EntryTooLarge { max, .. }) => {
                assert_eq!(max as usize, ENTRY_BYTES_MAX)
            }
            other => panic!(
                "{len} bytes in {} stream(s): expected EntryTooLarge, got {other:?}",
                streams.len()
            ),
        }
    }
    client.close();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_with_large_values_are_read_by_a_fresh_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(&dir).await;
    let config = cluster.client_config();

    // The reproduction: 300 inserts of 60 KiB values (18 MB).
    let writer = Runtime::new(LogClient::connect(&config).await.unwrap());
    let map: ReplicatedMap<String, Vec<u8>> = writer.open("kv").unwrap();
    let inserts = (0..300).map(|i| {
        let map = map.clone();
        async move { map.insert(format!("k{i}"), value(i, 60 << 10)).await }
    });
    for result in within(60, "inserts", futures_util::future::join_all(inserts)).await {
        result.expect("insert");
    }
    // Register values near the limit (the op's encoding adds a few bytes).
    let register: ReplicatedRegister<Vec<u8>> = writer.open("reg").unwrap();
    let near = ENTRY_BYTES_MAX - 4096;
    for i in 0..3 {
        register.set(value(1000 + i, near)).await.expect("set");
    }

    // A fresh runtime plays both streams from the log.
    let reader = Runtime::new(LogClient::connect(&config).await.unwrap());
    let map: ReplicatedMap<String, Vec<u8>> = reader.open("kv").unwrap();
    let got = within(60, "map get", map.get("k299"))
        .await
        .expect("get after 18 MB of inserts");
    assert!(got == Some(value(299, 60 << 10)));
    assert_eq!(map.len().await.unwrap(), 300);
    let register: ReplicatedRegister<Vec<u8>> = reader.open("reg").unwrap();
    let got = within(60, "register get", register.get())
        .await
        .expect("register get");
    assert!(got == Some(value(1002, near)));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_transfer_copies_entries_near_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster_of(&dir, 4).await;
    let config = cluster.client_config();
    let client = LogClient::connect(&config).await.unwrap();
    let largest = ENTRY_BYTES_MAX - ENTRY_OVERHEAD;
    for i in 0..4 {
        client.append(value(i, largest), &[]).await.expect("append");
    }

    // n4 joins the chain: the closed segment [0, 4) is copied to it.
    let n4 = NodeAddr {
        node_id: cluster.node_id(3).unwrap().to_string(),
        addr: cluster.node_addr(3).unwrap().to_string(),
    };
    let engine = Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());
    let done = within(
        60,
        "adding n4",
        engine.reconfigure(&Change::AddNode {
            node: n4.clone(),
            stripe: false,
        }),
    )
    .await
    .expect("adding n4 copies 32 MiB by state transfer");
    let transfer = done.added.expect("an addition").transfer;
    assert_eq!(transfer.copied, 4);
    assert_eq!(transfer.bytes, 4 * largest as u64);
    let tail = client.tail().await.unwrap();
    let log = client.read_range(0, tail).await.expect("read_range");
    let addresses: Vec<u64> = log.iter().map(|(a, _)| *a).collect();
    let on_n4 = support::history::raw_reads(
        &config.endpoint().unwrap(),
        &n4.addr,
        done.layout.epoch,
        &addresses,
    )
    .await;
    assert!(on_n4 == log, "n4 holds what the log holds");
    client.close();
    cluster.shutdown().await;
}
