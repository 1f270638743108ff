//! Crash test of the log unit (issue: log unit, "crash test"): a `corfu node`
//! child process hosting a log unit with `sync = always` is killed with
//! SIGKILL at random moments while clients write; after each restart every
//! write that was acknowledged is present and intact, and no address holds
//! anything but what was written there.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corfu::core::types::{ClusterId, StreamId};
use corfu::core::wire::logunit::{
    AddressedEntry, Entry, LogUnitRequest, LogUnitResponse, ReadOutcome, StreamHeader, WriteOutcome,
};
use corfu::core::wire::{Request, Response};
use support::{client_trusting_file, fast_failing_transport, spawn_node_process, write_node_toml};

/// The only value ever written at `address`.
fn payload_for(address: u64) -> Vec<u8> {
    format!("value-{address}-{}", "x".repeat((address % 97) as usize)).into_bytes()
}

fn entry_for(address: u64) -> Entry {
    Entry {
        id: None,
        streams: vec![StreamHeader {
            stream: StreamId::from_name("crash"),
            backpointer: address.checked_sub(1),
        }],
        payload: payload_for(address),
    }
}

const CYCLES: usize = 5;
const WRITERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("node.toml");
    write_node_toml(&config, "crash", "127.0.0.1:0", &data);
    let acked: Arc<Mutex<BTreeMap<u64, Vec<u8>>>> = Arc::default();
    let next_address = Arc::new(AtomicU64::new(0));
    let mut transport = fast_failing_transport();
    // Writes with sync = always take milliseconds; a short timeout ends the
    // writers quickly once the node is killed.
    transport.request_timeout_ms = 1_000;

    for cycle in 0..=CYCLES {
        let mut node = spawn_node_process(&config);
        let cluster_id: ClusterId = std::fs::read_to_string(data.join("cluster_id"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let client = client_trusting_file(
            &data.join("tls").join("ca.pem"),
            None,
            cluster_id,
            transport.clone(),
        );
        let peer = client.peer(&node.addr);

        // Everything acknowledged before any earlier kill is intact, and
        // whatever else is there is exactly what was written there.
        let expected = acked.lock().unwrap().clone();
        let top = next_address.load(Ordering::SeqCst);
        let mut from = 0;
        while from < top {
            let answer = peer
                .call(
                    0,
                    Request::LogUnit(LogUnitRequest::ReadRange { from, to: top }),
                )
                .await
                .unwrap();
            let Response::LogUnit(LogUnitResponse::Reads(reads)) = answer else {
                panic!("range read answered {answer:?}");
            };
            assert!(!reads.is_empty());
            for (address, outcome) in &reads {
                match outcome {
                    ReadOutcome::Data(e) => {
                        assert_eq!(
                            e.payload,
                            payload_for(*address),
                            "cycle {cycle}: address {address}"
                        );
                        assert_eq!(e.streams, entry_for(*address).streams);
                    }
                    ReadOutcome::Unwritten => {
                        assert!(
                            !expected.contains_key(address),
                            "acknowledged {address} is unwritten"
                        )
                    }
                    other => panic!("address {address}: {other:?}"),
                }
            }
            from = reads.last().unwrap().0 + 1;
        }
        assert!(from >= top);
        if cycle == CYCLES {
            node.signal("TERM");
            assert!(node.wait_exit(10).success());
            break;
        }

        // Writers, half of them batching, until the node dies under them.
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let peer = peer.clone();
            let acked = acked.clone();
            let next_address = next_address.clone();
            writers.push(tokio::spawn(async move {
                let batch = if w % 2 == 0 { 1 } else { 8 };
                loop {
                    let first = next_address.fetch_add(batch, Ordering::SeqCst);
                    let addresses: Vec<u64> = (first..first + batch).collect();
                    let request = if batch == 1 {
                        LogUnitRequest::Write(AddressedEntry {
                            address: first,
                            entry: entry_for(first),
                        })
                    } else {
                        LogUnitRequest::WriteBatch(
                            addresses
                                .iter()
                                .map(|a| AddressedEntry {
                                    address: *a,
                                    entry: entry_for(*a),
                                })
                                .collect(),
                        )
                    };
                    let outcomes = match peer.call(0, Request::LogUnit(request)).await {
                        Ok(Response::LogUnit(LogUnitResponse::Write(o))) => vec![o],
                        Ok(Response::LogUnit(LogUnitResponse::WriteBatch(o))) => o,
                        Ok(other) => panic!("write answered {other:?}"),
                        Err(_) => return, // the node was killed
                    };
                    assert_eq!(outcomes.len(), addresses.len());
                    let mut acked = acked.lock().unwrap();
                    for (address, outcome) in addresses.iter().zip(outcomes) {
                        assert_eq!(outcome, WriteOutcome::Ok, "fresh address {address}");
                        acked.insert(*address, payload_for(*address));
                    }
                }
            }));
        }
        let delay_ms = 100 + rand::random::<u64>() % 400;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        node.signal("KILL");
        node.wait_exit(10);
        for w in writers {
            tokio::time::timeout(Duration::from_secs(20), w)
                .await
                .expect("writers stop once the node is gone")
                .unwrap();
        }
        client.close();
    }
    let total = acked.lock().unwrap().len();
    assert!(
        total >= 200 * CYCLES,
        "only {total} writes were acknowledged over {CYCLES} kills"
    );
    eprintln!("{total} acknowledged writes intact across {CYCLES} SIGKILLs");
}
