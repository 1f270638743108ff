//! Conditional appends (transaction commits resolved at the sequencer) on a
//! real 3-node cluster: a commit whose read set was written after its
//! snapshot aborts and leaves nothing in the log; a fresh snapshot commits;
//! unrelated keys never conflict.

mod support;

use corfu::core::client::{ClientError, LogClient};
use corfu::core::types::StreamId;
use corfu::core::wire::logunit::ReadOutcome;
use corfu::core::wire::sequencer::{ConflictKey, TxnCondition};
use corfu::local::{LocalCluster, LocalOptions};
use support::within;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_commits_abort_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&dir.path().join("c"), 3, LocalOptions::default())
        .await
        .unwrap();
    let log = LogClient::connect(&cluster.client_config()).await.unwrap();
    let accounts = StreamId::from_name("accounts");
    let alice = ConflictKey {
        stream: accounts,
        key_hash: 1,
    };
    let bob = ConflictKey {
        stream: accounts,
        key_hash: 2,
    };
    log.append(b"setup".to_vec(), &[accounts]).await.unwrap();
    // A snapshot is the last address a transaction has seen.
    let snapshot = log.tail().await.unwrap() - 1;
    let txn = |read: Vec<ConflictKey>, write: Vec<ConflictKey>, snapshot| TxnCondition {
        snapshot,
        read_set: read,
        write_set: write,
    };

    within(20, "conditional appends", async {
        // Two read-modify-writes of alice from the same snapshot: the
        // first commits, the second aborts naming alice and the first.
        let first = log
            .append_conditional(
                b"alice-1".to_vec(),
                &[accounts],
                &txn(vec![alice], vec![alice], snapshot),
            )
            .await
            .unwrap();
        let second = log
            .append_conditional(
                b"alice-2".to_vec(),
                &[accounts],
                &txn(vec![alice], vec![alice], snapshot),
            )
            .await;
        match &second {
            Err(e @ ClientError::Aborted { conflict, address }) => {
                assert_eq!(*conflict, Some(alice));
                assert_eq!(*address, first);
                assert_eq!(e.kind(), "aborted");
            }
            other => panic!("expected an abort, got {other:?}"),
        }
        // Bob's transaction from the same old snapshot does not conflict.
        log.append_conditional(
            b"bob-1".to_vec(),
            &[accounts],
            &txn(vec![bob], vec![bob], snapshot),
        )
        .await
        .unwrap();
        // Alice again from a snapshot past the first commit: commits.
        let fresh = log.tail().await.unwrap() - 1;
        log.append_conditional(
            b"alice-3".to_vec(),
            &[accounts],
            &txn(vec![alice], vec![alice], fresh),
        )
        .await
        .unwrap();
    })
    .await;

    let tail = log.tail().await.unwrap();
    let values: Vec<Vec<u8>> = log
        .read_stream(accounts, 0, tail)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.payload)
        .collect();
    let expect: Vec<Vec<u8>> = ["setup", "alice-1", "bob-1", "alice-3"]
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    assert_eq!(
        values, expect,
        "the aborted commit is nowhere in the stream"
    );
    let range = log.read_range(0, tail).await.unwrap();
    assert!(range
        .iter()
        .all(|(_, o)| !matches!(o, ReadOutcome::Data(e) if e.payload == b"alice-2")));
    cluster.shutdown().await;
}

/// Keyed appends (an empty read set: every object write outside a
/// transaction) are batched like plain appends, and every key they carry
/// is still seen by the conflict check: a transaction whose snapshot
/// predates a keyed write of a key it read aborts, whichever batch carried
/// the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_keyed_appends_are_seen_by_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(&dir.path().join("c"), 3, LocalOptions::default())
        .await
        .unwrap();
    let log = std::sync::Arc::new(LogClient::connect(&cluster.client_config()).await.unwrap());
    let stream = StreamId::from_name("map");
    let key = move |k: u64| ConflictKey {
        stream,
        key_hash: k,
    };
    log.append(b"setup".to_vec(), &[stream]).await.unwrap();
    let before = log.tail().await.unwrap() - 1;

    within(30, "keyed appends", async {
        // 32 tasks × 40 keyed writes, keys 1..=1280, all at once: the
        // client batches them under back-pressure.
        let mut tasks = Vec::new();
        for t in 0..32u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut addresses = Vec::new();
                for i in 0..40u64 {
                    let k = 1 + t * 40 + i;
                    let condition = TxnCondition {
                        snapshot: 0,
                        read_set: Vec::new(),
                        write_set: vec![key(k), key(0)],
                    };
                    let payload = format!("k{k}").into_bytes();
                    let address = log
                        .append_conditional(payload, &[stream], &condition)
                        .await
                        .unwrap();
                    addresses.push((k, address));
                }
                addresses
            }));
        }
        let mut written = Vec::new();
        for task in tasks {
            written.extend(task.await.unwrap());
        }
        // Every keyed write is in the log at its address, once.
        let mut addresses: Vec<u64> = written.iter().map(|w| w.1).collect();
        addresses.sort_unstable();
        addresses.dedup();
        assert_eq!(addresses.len(), 1280);
        for &(k, address) in written.iter().step_by(97) {
            match log.read(address).await.unwrap() {
                ReadOutcome::Data(entry) => assert_eq!(entry.payload, format!("k{k}").into_bytes()),
                other => panic!("address {address}: {other:?}"),
            }
        }
        // Each key, read from the snapshot before the writes, conflicts.
        for k in [1u64, 640, 1280] {
            let outcome = log
                .append_conditional(
                    b"stale".to_vec(),
                    &[stream],
                    &TxnCondition {
                        snapshot: before,
                        read_set: vec![key(k)],
                        write_set: vec![key(k)],
                    },
                )
                .await;
            assert!(
                matches!(outcome, Err(ClientError::Aborted { conflict: Some(c), .. }) if c == key(k)),
                "key {k}: {outcome:?}"
            );
        }
        // From a snapshot past every keyed write, the same read commits.
        let fresh = log.tail().await.unwrap() - 1;
        log.append_conditional(
            b"fresh".to_vec(),
            &[stream],
            &TxnCondition {
                snapshot: fresh,
                read_set: vec![key(640)],
                write_set: vec![key(640)],
            },
        )
        .await
        .unwrap();
    })
    .await;
    cluster.shutdown().await;
}
