//! Issue 15, item 2: a corrupt record on one chain member is repaired from
//! a good member, reads are served meanwhile, and a damaged address field
//! never takes out an intact record.
//!
//! The store tests damage a segment file of a stopped `FileStore` and
//! reopen it. The cluster test runs three in-process nodes on one chain,
//! stops one, damages a record in its segment file, restarts it, and reads
//! the address every way a client can: `read`, `read_range`, `read_stream`
//! and `fill` answer the acknowledged value, and afterwards every member
//! holds the same copy.

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use corfu::cluster::Shape;
use corfu::core::client::LogClient;
use corfu::core::logunit::record::{self, HEADER_BYTES};
use corfu::core::logunit::{FileStore, LogStore, LogUnitConfig, StoreError, Stored};
use corfu::core::reconfig::{Change, Reconfigurer};
use corfu::core::types::{Address, StreamId};
use corfu::core::wire::logunit::{Entry, LogUnitRequest, ReadOutcome};
use corfu::core::wire::{Request, Response};
use support::history::check_replicas;
use support::{local_cluster, within};

fn value(address: Address) -> Vec<u8> {
    format!("value-{address}").into_bytes()
}

fn stored(address: Address) -> Stored {
    Stored::Data(Entry {
        id: None,
        streams: vec![],
        payload: value(address),
    })
}

fn segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "one segment file: {segs:?}");
    segs.pop().unwrap()
}

/// Offset and length of the valid record of `address` in `bytes` (records
/// damaged earlier are stepped over).
fn record_of(bytes: &[u8], address: Address) -> (usize, usize) {
    let mut at = 0;
    while at < bytes.len() {
        let len = record::record_len(&bytes[at..], 1 << 24).expect("a record header");
        if let Ok((rec, _)) = record::decode(&bytes[at..], 1 << 24) {
            if rec.address == address {
                return (at, len);
            }
        }
        at += len;
    }
    panic!("no valid record of address {address}");
}

/// XORs `mask` into the byte at `offset` of the record of `address`
/// (`None`: its last byte, the end of its payload).
fn damage(file: &Path, address: Address, offset: Option<usize>, mask: u8) {
    let mut bytes = std::fs::read(file).unwrap();
    let (at, len) = record_of(&bytes, address);
    bytes[at + offset.unwrap_or(len - 1)] ^= mask;
    std::fs::write(file, &bytes).unwrap();
}

/// A store in a fresh directory holding `value-a` at every address of
/// `0..n`, closed.
fn store_with(n: Address) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
    for a in 0..n {
        store.put(0, a, &stored(a)).unwrap();
    }
    drop(store);
    dir
}

fn is_value(read: &Result<ReadOutcome, StoreError>, address: Address) -> bool {
    matches!(read, Ok(ReadOutcome::Data(e)) if e.payload == value(address))
}

#[test]
fn a_damaged_address_field_marks_its_own_address_not_the_one_it_names() {
    let dir = store_with(10);
    // The address field of record 4 now reads 7 (4 ^ 3), an intact address.
    damage(&segment(dir.path()), 4, Some(HEADER_BYTES), 0x03);
    let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
    assert_eq!(store.recovery_report().corrupt_records, 1);
    let seven = store.get(7);
    assert!(is_value(&seven, 7), "the intact address 7: {seven:?}");
    let four = store.get(4);
    assert!(
        matches!(four, Err(StoreError::Corrupt { address: 4, .. })),
        "the damaged record's own address: {four:?}"
    );
    for a in (0..10).filter(|a| *a != 4) {
        assert!(is_value(&store.get(a), a), "address {a}");
    }
}

#[test]
fn two_corrupt_records_in_a_row_are_both_counted_and_marked() {
    let dir = store_with(10);
    let file = segment(dir.path());
    damage(&file, 4, None, 0x40);
    damage(&file, 5, None, 0x40);
    let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
    assert_eq!(store.recovery_report().corrupt_records, 2);
    for a in [4, 5] {
        let read = store.get(a);
        assert!(
            matches!(read, Err(StoreError::Corrupt { address, .. }) if address == a),
            "address {a}: {read:?}"
        );
    }
    for a in (0..10).filter(|a| *a != 4 && *a != 5) {
        assert!(is_value(&store.get(a), a), "address {a}");
    }
}

#[test]
fn a_write_batch_fails_only_where_the_copy_is_corrupt() {
    let dir = store_with(10);
    damage(&segment(dir.path()), 4, None, 0x40);
    let store = FileStore::open(dir.path(), LogUnitConfig::default()).unwrap();
    let out = store.put_batch(0, &[(4, Stored::Junk), (10, stored(10))]);
    assert!(out.is_ok(), "{out:?}");
    assert!(is_value(&store.get(10), 10));
    assert!(matches!(
        store.get(4),
        Err(StoreError::Corrupt { address: 4, .. })
    ));
}

/// Checks that every way of reading `addresses` answers `expected`, then
/// that every member holds the same copy.
async fn everything_reads_and_matches(
    client: &LogClient,
    stream: StreamId,
    expected: &[(Address, Vec<u8>)],
    config: &corfu::core::client_config::ClientConfig,
) {
    let tail = client.tail().await.unwrap();
    let range = within(30, "read_range", client.read_range(0, tail))
        .await
        .unwrap();
    let entries = within(30, "read_stream", client.read_stream(stream, 0, tail))
        .await
        .unwrap();
    assert_eq!(entries.len(), expected.len());
    for ((address, entry), (want, payload)) in entries.iter().zip(expected) {
        assert_eq!((address, &entry.payload), (want, payload));
    }
    for (address, payload) in expected {
        let read = within(30, "read", client.read(*address)).await.unwrap();
        assert!(
            matches!(&read, ReadOutcome::Data(e) if &e.payload == payload),
            "read {address}: {read:?}"
        );
        let filled = within(30, "fill", client.fill(*address)).await.unwrap();
        assert_eq!(filled, read, "fill {address}");
    }
    let endpoint = config.endpoint().unwrap();
    let layout = client.refresh_layout().await.unwrap();
    check_replicas(&endpoint, &layout, tail, Some(&range)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_copy_on_the_tail_middle_or_head_is_repaired_from_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = local_cluster(&dir, 3, Shape::new(1, 3)).await;
    let config = cluster.client_config();
    let client = LogClient::connect(&config).await.unwrap();
    let stream = StreamId::from_name("corrupt");
    // Distinct payloads, so a copy of the wrong address would show.
    let mut expected = Vec::new();
    for i in 0..40u64 {
        let payload = format!("entry {i}").into_bytes();
        let a = client.append(payload.clone(), &[stream]).await.unwrap();
        expected.push((a, payload));
    }
    let addr = |i: usize| expected[i].0;

    // (member index, what is damaged, the address whose copy goes bad,
    // the offset of the damaged byte in its record: `None` for the last)
    let cases: [(usize, &str, Address, Option<usize>); 4] = [
        (2, "tail, payload byte", addr(10), None),
        // The address field of the record of addr(20) then names addr(21).
        (2, "tail, address field", addr(20), Some(HEADER_BYTES)),
        (1, "middle, payload byte", addr(25), None),
        (0, "head, payload byte", addr(30), None),
    ];
    for (member, what, address, offset) in cases {
        let log_dir = cluster.node_config(member).unwrap().data_dir.join("log");
        cluster.stop_node(member).await.unwrap();
        let mask = if offset.is_some() {
            (address ^ (address + 1)) as u8
        } else {
            0x40
        };
        damage(&segment(&log_dir), address, offset, mask);
        cluster.restart_node(member).await.unwrap();
        if member == 0 {
            // The head's node hosts the sequencer, which restarts empty: a
            // seal bootstraps it again.
            let engine =
                Reconfigurer::new(config.endpoint().unwrap(), config.layout_servers.clone());
            within(30, "seal", engine.reconfigure(&Change::Seal))
                .await
                .unwrap();
            client.refresh_layout().await.unwrap();
        }
        // The restarted unit knows its copy is bad (and says so).
        let unit = cluster.node_addr(member).unwrap().to_string();
        let epoch = client.layout().epoch;
        let raw = config
            .endpoint()
            .unwrap()
            .peer(&unit)
            .call(epoch, Request::LogUnit(LogUnitRequest::Read { address }))
            .await
            .unwrap();
        assert!(
            matches!(&raw, Response::Error(e) if format!("{:?}", e.kind) == "Corrupt"),
            "{what}: {unit} answered {raw:?}"
        );
        // The first read of the address: from the tail, repaired there if
        // the tail's copy is the bad one; a fill repairs the others.
        let started = Instant::now();
        let read = within(30, "read", client.read(address)).await.unwrap();
        let read_took = started.elapsed();
        let want = &expected.iter().find(|(a, _)| *a == address).unwrap().1;
        assert!(
            matches!(&read, ReadOutcome::Data(e) if &e.payload == want),
            "{what}: read {address}: {read:?}"
        );
        let started = Instant::now();
        let filled = within(30, "fill", client.fill(address)).await.unwrap();
        let fill_took = started.elapsed();
        assert_eq!(filled, read, "{what}: fill {address}");
        println!(
            "{what}: address {address}: first read {:.2} ms, fill {:.2} ms",
            read_took.as_secs_f64() * 1e3,
            fill_took.as_secs_f64() * 1e3
        );
        everything_reads_and_matches(&client, stream, &expected, &config).await;
    }
    cluster.shutdown().await;
}
