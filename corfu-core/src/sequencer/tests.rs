//! Tests of the sequencer's rules; each names the rule it checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;
use crate::wire::sequencer::ConflictKey;

fn sequencer() -> Sequencer {
    Sequencer::new(SequencerConfig::default())
}

fn stream(i: u128) -> StreamId {
    StreamId(i)
}

fn key(stream: u128, key_hash: u64) -> ConflictKey {
    ConflictKey {
        stream: StreamId(stream),
        key_hash,
    }
}

fn token_request(count: u32, streams: &[StreamId]) -> SequencerRequest {
    SequencerRequest::Token {
        count,
        streams: streams.to_vec(),
        condition: None,
    }
}

fn txn_request(
    snapshot: Address,
    count: u32,
    read_set: &[ConflictKey],
    write_set: &[ConflictKey],
) -> SequencerRequest {
    SequencerRequest::Token {
        count,
        streams: vec![],
        condition: Some(TxnCondition {
            snapshot,
            read_set: read_set.to_vec(),
            write_set: write_set.to_vec(),
        }),
    }
}

/// The sequencer's answer, or a panic naming what came instead.
fn answer(response: Response) -> SequencerResponse {
    match response {
        Response::Sequencer(r) => r,
        other => panic!("expected a sequencer answer, got {other:?}"),
    }
}

/// Per requested stream, its tail before a grant.
type Previous = Vec<(StreamId, Option<Address>)>;

/// A grant's start and per-stream previous addresses.
type Grant = (Address, Previous);

fn grant(seq: &mut Sequencer, epoch: Epoch, count: u32, streams: &[StreamId]) -> Grant {
    match answer(seq.handle(epoch, token_request(count, streams))) {
        SequencerResponse::Token {
            start,
            count: granted,
            previous,
        } => {
            assert_eq!(granted, count);
            (start, previous)
        }
        other => panic!("expected a token, got {other:?}"),
    }
}

fn error_kind(response: &Response) -> Option<ServerErrorKind> {
    match response {
        Response::Error(e) => Some(e.kind),
        _ => None,
    }
}

fn addresses(seq: &mut Sequencer, s: StreamId, from: Address, to: Address) -> Vec<Address> {
    match answer(seq.handle(
        seq.epoch(),
        SequencerRequest::StreamAddresses {
            stream: s,
            from,
            to,
        },
    )) {
        SequencerResponse::Addresses { addresses, .. } => addresses,
        other => panic!("expected addresses, got {other:?}"),
    }
}

fn tails(seq: &mut Sequencer, streams: &[StreamId]) -> (Address, Vec<(StreamId, Option<Address>)>) {
    match answer(seq.handle(
        seq.epoch(),
        SequencerRequest::Tail {
            streams: streams.to_vec(),
        },
    )) {
        SequencerResponse::Tail { next, streams } => (next, streams),
        other => panic!("expected tails, got {other:?}"),
    }
}

#[test]
fn rule_tokens_are_unique_and_gap_free() {
    let mut seq = sequencer();
    let mut expected_start = 0;
    for i in 0..10_000u32 {
        let count = 1 + i % 7;
        let (start, _) = grant(&mut seq, 1, count, &[stream(u128::from(i % 3))]);
        assert_eq!(start, expected_start, "request {i}");
        expected_start += u64::from(count);
    }
    assert_eq!(seq.next(), expected_start);
}

#[test]
fn rule_tokens_are_unique_and_gap_free_across_threads() {
    const THREADS: u32 = 8;
    const REQUESTS: u32 = 2_000;
    let seq = Arc::new(Mutex::new(sequencer()));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let seq = seq.clone();
            std::thread::spawn(move || {
                let mut grants = Vec::new();
                for i in 0..REQUESTS {
                    let count = 1 + (i + t) % 4;
                    let mut seq = seq.lock().unwrap();
                    let (start, _) = grant(
                        &mut seq,
                        1,
                        count,
                        &[stream(0), stream(100 + u128::from(t))],
                    );
                    grants.push((start, u64::from(count)));
                }
                grants
            })
        })
        .collect();
    let mut grants: Vec<(Address, u64)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    grants.sort();
    let mut expected_start = 0;
    for (start, count) in &grants {
        assert_eq!(*start, expected_start, "no overlap and no gap");
        expected_start += count;
    }
    let mut seq = seq.lock().unwrap();
    assert_eq!(seq.next(), expected_start);
    assert_eq!(grants.len(), (THREADS * REQUESTS) as usize);
    assert_eq!(
        tails(&mut seq, &[stream(0)]).1,
        vec![(stream(0), Some(expected_start - 1))]
    );
    assert_eq!(
        addresses(&mut seq, stream(0), 0, u64::MAX).len() as u64,
        expected_start,
        "the shared stream owns every address"
    );
}

proptest! {
    /// For each stream, following `previous` of a batch's first address and
    /// `a - 1` inside a batch visits exactly the stream's granted addresses,
    /// in descending order; the address index lists them ascending.
    #[test]
    fn rule_backpointers_chain_each_stream_across_batches(
        batches in prop::collection::vec((1u32..6, 0u8..16), 1..60)
    ) {
        let streams: Vec<StreamId> = (1..=4).map(stream).collect();
        let mut seq = sequencer();
        // start -> (count, previous per stream)
        let mut granted: BTreeMap<Address, (u64, Previous)> = BTreeMap::new();
        let mut owned: BTreeMap<StreamId, Vec<Address>> = BTreeMap::new();
        for (count, mask) in batches {
            let chosen: Vec<StreamId> = streams
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, s)| *s)
                .collect();
            let (start, previous) = grant(&mut seq, 1, count, &chosen);
            for s in &chosen {
                owned.entry(*s).or_default().extend(start..start + u64::from(count));
            }
            granted.insert(start, (u64::from(count), previous));
        }
        let (_, stream_tails) = tails(&mut seq, &streams);
        for (s, tail) in stream_tails {
            let mut visited = Vec::new();
            let mut cursor = tail;
            while let Some(a) = cursor {
                prop_assert!(visited.len() <= seq.next() as usize, "backpointer cycle");
                visited.push(a);
                let (start, (count, previous)) = granted.range(..=a).next_back().unwrap();
                prop_assert!(a < start + count);
                cursor = if a > *start {
                    Some(a - 1)
                } else {
                    previous.iter().find(|(p, _)| *p == s).unwrap().1
                };
            }
            let mut expected = owned.get(&s).cloned().unwrap_or_default();
            prop_assert_eq!(addresses(&mut seq, s, 0, u64::MAX), expected.clone());
            expected.reverse();
            prop_assert_eq!(visited, expected);
        }
    }
}

/// A transaction step of the conflict proptests.
#[derive(Debug, Clone)]
enum Step {
    /// A plain token: records no conflict keys.
    Plain { count: u32 },
    /// A conditional token whose snapshot is `behind` addresses below
    /// `next` (negative: ahead of it).
    Txn {
        count: u32,
        behind: i64,
        read_set: Vec<ConflictKey>,
        write_set: Vec<ConflictKey>,
    },
}

fn small_key() -> impl Strategy<Value = ConflictKey> {
    (0u128..2, 0u64..3).prop_map(|(s, k)| key(s, k))
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (1u32..3).prop_map(|count| Step::Plain { count }),
        4 => (
            1u32..3,
            -2i64..8,
            prop::collection::vec(small_key(), 0..4),
            prop::collection::vec(small_key(), 0..4),
        )
            .prop_map(|(count, behind, read_set, write_set)| Step::Txn {
                count,
                behind,
                read_set,
                write_set,
            }),
    ]
}

/// The brute-force rule over the log of committed write sets: abort iff
/// some read-set key was written at an address above the snapshot; the
/// reported conflict is the first such key in read-set order, at its last
/// write.
fn reference_conflict(
    log: &[(Address, Vec<ConflictKey>)],
    snapshot: Address,
    read_set: &[ConflictKey],
) -> Option<(ConflictKey, Address)> {
    read_set.iter().find_map(|k| {
        let last = log
            .iter()
            .filter(|(_, keys)| keys.contains(k))
            .map(|(a, _)| *a)
            .max()?;
        (last > snapshot).then_some((*k, last))
    })
}

fn snapshot_of(next: Address, behind: i64) -> Address {
    if behind >= 0 {
        next.saturating_sub(behind.unsigned_abs())
    } else {
        next + behind.unsigned_abs()
    }
}

/// Runs `steps` on `seq`; for every conditional token checks the outcome
/// against the reference over what was actually committed. With
/// `exact_above_floor`, a snapshot at or above the floor must get exactly
/// the reference's outcome.
fn check_against_reference(seq: &mut Sequencer, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut log: Vec<(Address, Vec<ConflictKey>)> = Vec::new();
    for step in steps {
        match step {
            Step::Plain { count } => {
                grant(seq, 1, count, &[stream(9)]);
            }
            Step::Txn {
                count,
                behind,
                read_set,
                write_set,
            } => {
                let snapshot = snapshot_of(seq.next(), behind);
                let floor = seq.floor();
                let next = seq.next();
                let expected = if snapshot < floor {
                    Some((None, floor))
                } else {
                    reference_conflict(&log, snapshot, &read_set).map(|(k, a)| (Some(k), a))
                };
                let outcome =
                    answer(seq.handle(1, txn_request(snapshot, count, &read_set, &write_set)));
                match (outcome, expected) {
                    (
                        SequencerResponse::Token {
                            start, count: c, ..
                        },
                        None,
                    ) => {
                        prop_assert_eq!(start, next);
                        prop_assert_eq!(c, count);
                        log.push((start + u64::from(count) - 1, write_set));
                    }
                    (SequencerResponse::Abort { key, address }, Some((k, a))) => {
                        prop_assert_eq!((key, address), (k, a));
                        prop_assert_eq!(seq.next(), next, "an abort grants nothing");
                    }
                    (outcome, expected) => {
                        prop_assert!(false, "snapshot {snapshot}, floor {floor}: got {outcome:?}, reference {expected:?}");
                    }
                }
                // Never a wrong commit: a floor abort is only allowed where
                // a forgotten write could conflict, and the floor is the
                // address of a real committed write.
                if floor > 0 {
                    prop_assert!(
                        log.iter().any(|(a, _)| *a == floor),
                        "floor {floor} is a committed write"
                    );
                }
                prop_assert!(seq.floor() >= floor, "the floor never goes down");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// With a table large enough to remember every key, a conditional
    /// token aborts exactly on a read-write conflict, reporting the first
    /// conflicting read key and its last write.
    #[test]
    fn rule_conditional_tokens_abort_exactly_on_read_write_conflicts(
        steps in prop::collection::vec(step(), 1..40)
    ) {
        let mut seq = sequencer();
        check_against_reference(&mut seq, steps)?;
        prop_assert_eq!(seq.floor(), 0, "nothing was evicted");
    }

    /// With a table of 1 to 3 keys (of 6 possible), eviction raises the
    /// floor; snapshots below it abort, snapshots at or above it get the
    /// unbounded reference's exact outcome, so the bounded table never
    /// commits what the reference aborts.
    #[test]
    fn rule_bounded_table_never_commits_a_conflict(
        keys_max in 1u32..4,
        steps in prop::collection::vec(step(), 1..60)
    ) {
        let mut seq = Sequencer::new(SequencerConfig {
            conflict_keys_max: keys_max,
            txn_keys_max: keys_max,
            ..SequencerConfig::default()
        });
        // Write sets larger than the table are refused by the limit; keep
        // only those that fit.
        let steps = steps
            .into_iter()
            .filter(|s| match s {
                Step::Txn { read_set, write_set, .. } => read_set.len() + write_set.len() <= keys_max as usize,
                Step::Plain { .. } => true,
            })
            .collect();
        check_against_reference(&mut seq, steps)?;
        prop_assert!(seq.conflict_keys() <= keys_max as usize);
    }
}

#[test]
fn rule_table_eviction_raises_the_floor() {
    let mut seq = Sequencer::new(SequencerConfig {
        conflict_keys_max: 2,
        txn_keys_max: 2,
        ..SequencerConfig::default()
    });
    for (i, k) in [1, 2, 3].into_iter().enumerate() {
        let r = answer(seq.handle(1, txn_request(i as Address, 1, &[], &[key(0, k)])));
        assert!(matches!(r, SequencerResponse::Token { start, .. } if start == i as Address));
    }
    // Key 1, written at 0, was forgotten: the floor rose to 0, which no
    // snapshot is below.
    assert_eq!(seq.conflict_keys(), 2);
    assert_eq!(seq.floor(), 0);
    answer(seq.handle(1, txn_request(3, 1, &[], &[key(0, 4)])));
    assert_eq!(seq.floor(), 1, "key 2 at address 1 was forgotten");
    assert_eq!(
        answer(seq.handle(1, txn_request(0, 1, &[key(0, 9)], &[]))),
        SequencerResponse::Abort {
            key: None,
            address: 1
        }
    );
    // At the floor, a forgotten key does not conflict and a remembered one
    // does.
    assert!(matches!(
        answer(seq.handle(1, txn_request(1, 1, &[key(0, 2)], &[]))),
        SequencerResponse::Token { .. }
    ));
    assert_eq!(
        answer(seq.handle(1, txn_request(1, 1, &[key(0, 4)], &[]))),
        SequencerResponse::Abort {
            key: Some(key(0, 4)),
            address: 3
        }
    );
}

#[test]
fn rule_write_set_is_recorded_at_the_last_granted_address() {
    let mut seq = sequencer();
    grant(&mut seq, 1, 5, &[]);
    let r = answer(seq.handle(1, txn_request(4, 3, &[], &[key(1, 1)])));
    assert!(matches!(
        r,
        SequencerResponse::Token {
            start: 5,
            count: 3,
            ..
        }
    ));
    // Written at 7: a snapshot of 6 conflicts, one of 7 does not.
    assert_eq!(
        answer(seq.handle(1, txn_request(6, 1, &[key(1, 1)], &[]))),
        SequencerResponse::Abort {
            key: Some(key(1, 1)),
            address: 7
        }
    );
    assert!(matches!(
        answer(seq.handle(1, txn_request(7, 1, &[key(1, 1)], &[]))),
        SequencerResponse::Token { start: 8, .. }
    ));
    // Plain tokens record no keys.
    grant(&mut seq, 1, 1, &[stream(1)]);
    assert!(matches!(
        answer(seq.handle(1, txn_request(7, 1, &[key(1, 0)], &[]))),
        SequencerResponse::Token { .. }
    ));
}

#[test]
fn rule_tail_answers_without_granting() {
    let mut seq = sequencer();
    grant(&mut seq, 1, 3, &[stream(1)]);
    grant(&mut seq, 1, 2, &[stream(2)]);
    for _ in 0..2 {
        assert_eq!(
            tails(&mut seq, &[stream(1), stream(2), stream(3)]),
            (
                5,
                vec![
                    (stream(1), Some(2)),
                    (stream(2), Some(4)),
                    (stream(3), None)
                ]
            )
        );
    }
    assert_eq!(seq.next(), 5);
}

#[test]
fn rule_stream_addresses_answer_a_capped_ascending_prefix() {
    let mut seq = Sequencer::new(SequencerConfig {
        stream_addresses_max: 7,
        ..SequencerConfig::default()
    });
    // Start just below 2^32 so the index spans two roaring containers.
    let base = (1u64 << 32) - 10;
    assert_eq!(boot(&mut seq, 1, base, &[(stream(1), 3)]), DONE);
    let mut mine = vec![3];
    for i in 0..40u32 {
        let s = if i % 3 == 0 { stream(1) } else { stream(2) };
        let (start, _) = grant(&mut seq, 1, 1 + i % 2, &[s]);
        if s == stream(1) {
            mine.extend(start..start + u64::from(1 + i % 2));
        }
    }
    for (from, to) in [
        (0, u64::MAX),
        (4, base + 20),
        (base + 5, base + 6),
        (base + 12, base + 12),
    ] {
        let expected: Vec<Address> = mine
            .iter()
            .copied()
            .filter(|a| (from..to).contains(a))
            .take(7)
            .collect();
        assert_eq!(
            addresses(&mut seq, stream(1), from, to),
            expected,
            "[{from}, {to})"
        );
    }
    // Continuing from the last address plus 1 collects the whole stream.
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let page = addresses(&mut seq, stream(1), from, u64::MAX);
        match page.last() {
            Some(last) => from = last + 1,
            None => break,
        }
        all.extend(page);
    }
    assert_eq!(all, mine);
    assert_eq!(
        addresses(&mut seq, stream(77), 0, u64::MAX),
        Vec::<Address>::new()
    );
}

#[test]
fn rule_requests_beyond_limits_are_invalid() {
    let mut seq = Sequencer::new(SequencerConfig {
        token_count_max: 10,
        token_streams_max: 2,
        tail_streams_max: 3,
        txn_keys_max: 2,
        ..SequencerConfig::default()
    });
    let invalid = [
        token_request(0, &[]),
        token_request(11, &[]),
        token_request(1, &[stream(1), stream(2), stream(3)]),
        token_request(1, &[stream(1), stream(1)]),
        SequencerRequest::Tail {
            streams: (0..4).map(stream).collect(),
        },
        SequencerRequest::StreamAddresses {
            stream: stream(1),
            from: 5,
            to: 4,
        },
        SequencerRequest::Bootstrap {
            epoch: 0,
            incarnation: seq.incarnation(),
            next: 10,
            bound: 20,
            stream_tails: vec![(stream(1), 10)],
            layout_servers: vec![],
        },
        SequencerRequest::Bootstrap {
            epoch: 0,
            incarnation: seq.incarnation(),
            next: 10,
            bound: 10,
            stream_tails: vec![],
            layout_servers: vec![],
        },
    ];
    for request in invalid {
        let r = seq.handle(1, request.clone());
        assert_eq!(
            error_kind(&r),
            Some(ServerErrorKind::InvalidRequest),
            "{request:?}: {r:?}"
        );
    }
    // Too many keys is an answer of its own (the client reports it as
    // such, not as an unknown outcome), alone or in a batch of commits.
    let wide = txn_request(0, 1, &[key(0, 1), key(0, 2)], &[key(0, 3)]);
    assert_eq!(
        seq.handle(1, wide),
        Response::Sequencer(SequencerResponse::TooManyKeys { keys: 3, max: 2 })
    );
    let batch = SequencerRequest::Tokens {
        tokens: vec![ConditionalToken {
            streams: vec![stream(1)],
            condition: TxnCondition {
                snapshot: 0,
                read_set: vec![key(0, 1)],
                write_set: vec![key(0, 2), key(0, 3)],
            },
        }],
    };
    assert_eq!(
        seq.handle(1, batch),
        Response::Sequencer(SequencerResponse::Tokens(vec![TokenOutcome::TooManyKeys {
            keys: 3,
            max: 2
        }]))
    );
    assert_eq!(seq.next(), 0, "nothing was granted");
    assert_eq!(seq.epoch(), 0, "the refused bootstrap changed nothing");
    grant(&mut seq, 1, 10, &[stream(1), stream(2)]);
}

#[test]
fn rule_address_space_exhaustion_is_refused() {
    let mut seq = sequencer();
    assert_eq!(boot(&mut seq, 1, u64::MAX - 2, &[]), DONE);
    let r = seq.handle(1, token_request(3, &[]));
    assert_eq!(error_kind(&r), Some(ServerErrorKind::Unavailable), "{r:?}");
    assert_eq!(grant(&mut seq, 1, 2, &[]).0, u64::MAX - 2);
}

fn seal(seq: &mut Sequencer, header: Epoch, epoch: Epoch) -> Response {
    seq.handle(header, SequencerRequest::Seal { epoch })
}

fn bootstrap(
    seq: &mut Sequencer,
    epoch: Epoch,
    next: Address,
    stream_tails: &[(StreamId, Address)],
) -> Response {
    let incarnation = seq.incarnation();
    seq.handle(
        epoch,
        SequencerRequest::Bootstrap {
            epoch,
            incarnation,
            next,
            bound: u64::MAX,
            stream_tails: stream_tails.to_vec(),
            layout_servers: vec![],
        },
    )
}

/// Seals at `epoch`, then bootstraps there.
fn boot(
    seq: &mut Sequencer,
    epoch: Epoch,
    next: Address,
    stream_tails: &[(StreamId, Address)],
) -> Response {
    assert!(sealed(&seal(seq, epoch, epoch)));
    bootstrap(seq, epoch, next, stream_tails)
}

fn sealed(r: &Response) -> bool {
    matches!(r, Response::Sequencer(SequencerResponse::Sealed { .. }))
}

const DONE: Response = Response::Sequencer(SequencerResponse::Done);

#[test]
fn rule_seal_fences_lower_epochs() {
    let mut seq = sequencer();
    grant(&mut seq, 1, 4, &[stream(1)]);
    assert!(sealed(&seal(&mut seq, 1, 3)));
    assert_eq!(seq.epoch(), 3);
    let wrong = Response::WrongEpoch { current: 3 };
    assert_eq!(seq.handle(2, token_request(1, &[])), wrong);
    assert_eq!(
        seq.handle(2, SequencerRequest::Tail { streams: vec![] }),
        wrong
    );
    assert_eq!(
        seal(&mut seq, 2, 4),
        wrong,
        "the header's epoch is checked first"
    );
    assert_eq!(seal(&mut seq, 3, 2), wrong, "sealing backwards");
    assert_eq!(bootstrap(&mut seq, 2, 0, &[]), wrong);
    assert_eq!(seq.epoch(), 3);
    assert_eq!(seq.next(), 4, "fenced requests changed nothing");
}

#[test]
fn rule_sealed_sequencer_serves_nothing_until_bootstrapped() {
    let mut seq = sequencer();
    grant(&mut seq, 1, 4, &[stream(1)]);
    assert!(sealed(&seal(&mut seq, 1, 2)));
    assert!(!seq.is_bootstrapped());
    for request in [
        token_request(1, &[]),
        SequencerRequest::Tail { streams: vec![] },
        SequencerRequest::StreamAddresses {
            stream: stream(1),
            from: 0,
            to: 10,
        },
    ] {
        let r = seq.handle(2, request);
        assert_eq!(error_kind(&r), Some(ServerErrorKind::Unavailable), "{r:?}");
    }
    assert_eq!(bootstrap(&mut seq, 2, 4, &[(stream(1), 3)]), DONE);
    assert_eq!(
        grant(&mut seq, 2, 1, &[stream(1)]),
        (4, vec![(stream(1), Some(3))])
    );
}

#[test]
fn rule_sealing_again_at_the_current_epoch_changes_nothing() {
    let mut seq = sequencer();
    assert!(sealed(&seal(&mut seq, 0, 2)));
    assert_eq!(bootstrap(&mut seq, 2, 10, &[]), DONE);
    grant(&mut seq, 2, 1, &[]);
    assert!(
        sealed(&seal(&mut seq, 2, 2)),
        "a racing reconfiguration's late seal"
    );
    assert!(seq.is_bootstrapped());
    assert_eq!(grant(&mut seq, 2, 1, &[]).0, 11);
}

#[test]
fn rule_bootstrap_resumes_above_every_recovered_tail() {
    let mut seq = sequencer();
    // Epoch 1 granted up to 500; only [0, 100) reached the log before the
    // seal, so the reconfiguration bootstraps epoch 2 from 100.
    grant(&mut seq, 1, 500, &[stream(1), stream(2)]);
    answer(seq.handle(1, txn_request(499, 1, &[], &[key(1, 1)])));
    assert!(sealed(&seal(&mut seq, 1, 2)));
    assert_eq!(
        bootstrap(&mut seq, 2, 100, &[(stream(1), 97), (stream(2), 50)]),
        DONE
    );
    assert_eq!(seq.epoch(), 2);
    assert_eq!(seq.floor(), 100);
    assert_eq!(seq.conflict_keys(), 0, "the conflict table starts empty");
    assert_eq!(
        tails(&mut seq, &[stream(1), stream(2), stream(3)]),
        (
            100,
            vec![
                (stream(1), Some(97)),
                (stream(2), Some(50)),
                (stream(3), None)
            ]
        )
    );
    let (start, previous) = grant(&mut seq, 2, 2, &[stream(1), stream(2), stream(3)]);
    assert!(start >= 100);
    assert_eq!(start, 100);
    assert_eq!(
        previous,
        vec![
            (stream(1), Some(97)),
            (stream(2), Some(50)),
            (stream(3), None)
        ]
    );
    // Transactions whose snapshot precedes the failover abort; later ones
    // are judged by the (fresh) table.
    assert_eq!(
        answer(seq.handle(2, txn_request(99, 1, &[key(1, 1)], &[]))),
        SequencerResponse::Abort {
            key: None,
            address: 100
        }
    );
    assert!(matches!(
        answer(seq.handle(2, txn_request(100, 1, &[key(1, 1)], &[]))),
        SequencerResponse::Token { start: 102, .. }
    ));
    // The index knows the recovered tail and the new grants only.
    assert_eq!(
        addresses(&mut seq, stream(1), 0, u64::MAX),
        vec![97, 100, 101]
    );
}

/// Rule: a sequencer bootstrapped again right after the epoch it served,
/// at or above its own next address, keeps its stream index complete; one
/// that skipped an epoch (another sequencer served it) or resumes below
/// what it granted knows only the recovered tails.
#[test]
fn rule_a_sequencer_kept_across_one_reconfiguration_keeps_its_index() {
    let complete_from = |seq: &mut Sequencer| match answer(seq.handle(
        seq.epoch(),
        SequencerRequest::StreamAddresses {
            stream: stream(1),
            from: 0,
            to: u64::MAX,
        },
    )) {
        SequencerResponse::Addresses { complete_from, .. } => complete_from,
        other => panic!("expected addresses, got {other:?}"),
    };
    let mut seq = sequencer();
    assert_eq!(boot(&mut seq, 1, 0, &[]), DONE);
    for _ in 0..3 {
        grant(&mut seq, 1, 1, &[stream(1)]);
        grant(&mut seq, 1, 1, &[stream(2)]);
    }
    // Epoch 2 keeps this sequencer; it resumes past a void [6, 10).
    assert_eq!(
        boot(&mut seq, 2, 10, &[(stream(1), 4), (stream(2), 3)]),
        DONE
    );
    assert_eq!(complete_from(&mut seq), 0);
    grant(&mut seq, 2, 1, &[stream(1)]);
    assert_eq!(
        addresses(&mut seq, stream(1), 0, u64::MAX),
        vec![0, 2, 4, 10]
    );
    // Stream 2's last grant (5) never reached the log (it is in the void):
    // the next backpointer is the recovered tail, not 5.
    assert_eq!(
        grant(&mut seq, 2, 1, &[stream(2)]),
        (11, vec![(stream(2), Some(3))])
    );
    // Epoch 3 went to another sequencer; this one comes back in epoch 4.
    assert!(sealed(&seal(&mut seq, 2, 3)));
    assert_eq!(boot(&mut seq, 4, 20, &[(stream(1), 15)]), DONE);
    assert_eq!(complete_from(&mut seq), 20);
    assert_eq!(addresses(&mut seq, stream(1), 0, u64::MAX), vec![15]);
    // Resuming below its own next (granted addresses handed out again)
    // drops the index too.
    grant(&mut seq, 4, 5, &[stream(1)]);
    assert_eq!(boot(&mut seq, 5, 22, &[(stream(1), 21)]), DONE);
    assert_eq!(complete_from(&mut seq), 22);
    assert_eq!(addresses(&mut seq, stream(1), 0, u64::MAX), vec![21]);
}

/// Rule: the seal's answer bounds what the sequencer granted, and a
/// bootstrap comes only from the seal it follows: same incarnation, sealed
/// at its epoch, once (a repeat changes nothing).
#[test]
fn rule_bootstrap_follows_its_seal_once() {
    let mut seq = Sequencer::awaiting_bootstrap(SequencerConfig::default());
    let incarnation = seq.incarnation();
    assert_eq!(
        seal(&mut seq, 0, 1),
        Response::Sequencer(SequencerResponse::Sealed {
            incarnation,
            served: None
        }),
        "a restarted sequencer says it never served"
    );
    // Not sealed at 2: refused (it may have served 2 before a restart).
    let r = bootstrap(&mut seq, 2, 0, &[]);
    assert_eq!(error_kind(&r), Some(ServerErrorKind::Unavailable), "{r:?}");
    // Another incarnation's bootstrap: refused.
    let other = seq.handle(
        1,
        SequencerRequest::Bootstrap {
            epoch: 1,
            incarnation: incarnation ^ 1,
            next: 0,
            bound: 100,
            stream_tails: vec![],
            layout_servers: vec![],
        },
    );
    assert_eq!(
        error_kind(&other),
        Some(ServerErrorKind::Unavailable),
        "{other:?}"
    );
    assert!(!seq.is_bootstrapped());
    assert_eq!(bootstrap(&mut seq, 1, 30, &[(stream(1), 29)]), DONE);
    grant(&mut seq, 1, 20, &[stream(1)]); // [30, 50)
                                          // A late copy of the bootstrap does not move the sequencer back.
    assert_eq!(bootstrap(&mut seq, 1, 30, &[(stream(1), 29)]), DONE);
    assert_eq!(seq.next(), 50, "no address is granted twice");
    assert_eq!(
        seal(&mut seq, 1, 2),
        Response::Sequencer(SequencerResponse::Sealed {
            incarnation,
            served: Some((1, 50))
        }),
        "the seal reports how far epoch 1 got"
    );
}

/// Rule: grants stop at the bootstrap's bound.
#[test]
fn rule_grants_stop_at_the_bound() {
    let mut seq = Sequencer::awaiting_bootstrap(SequencerConfig::default());
    assert!(sealed(&seal(&mut seq, 0, 1)));
    let incarnation = seq.incarnation();
    assert_eq!(
        seq.handle(
            1,
            SequencerRequest::Bootstrap {
                epoch: 1,
                incarnation,
                next: 10,
                bound: 15,
                stream_tails: vec![],
                layout_servers: vec![],
            }
        ),
        DONE
    );
    assert_eq!(grant(&mut seq, 1, 4, &[]).0, 10);
    let r = seq.handle(1, token_request(2, &[]));
    assert_eq!(error_kind(&r), Some(ServerErrorKind::Unavailable), "{r:?}");
    assert_eq!(grant(&mut seq, 1, 1, &[]).0, 14);
    assert_eq!(seq.next(), 15);
}

/// Rule: a bootstrapped sequencer serves its own epoch only: above it, it
/// does not know what that epoch's sequencer granted.
#[test]
fn rule_a_bootstrapped_sequencer_serves_its_epoch_only() {
    let mut seq = Sequencer::awaiting_bootstrap(SequencerConfig::default());
    assert_eq!(boot(&mut seq, 2, 0, &[]), DONE);
    grant(&mut seq, 2, 1, &[]);
    for request in [
        token_request(1, &[]),
        SequencerRequest::Tail { streams: vec![] },
    ] {
        let r = seq.handle(3, request);
        assert_eq!(error_kind(&r), Some(ServerErrorKind::Unavailable), "{r:?}");
    }
}

#[test]
fn rule_fresh_sequencer_serves_its_epoch_and_above() {
    let mut seq = sequencer();
    assert_eq!(seq.epoch(), 0);
    assert_eq!(grant(&mut seq, 0, 1, &[]).0, 0);
    assert_eq!(grant(&mut seq, 5, 1, &[]).0, 1);
    assert_eq!(seq.epoch(), 0, "serving a higher epoch does not seal");
}

#[test]
fn rule_restarted_sequencer_waits_for_bootstrap() {
    let mut seq = Sequencer::awaiting_bootstrap(SequencerConfig::default());
    let r = seq.handle(4, token_request(1, &[]));
    assert_eq!(error_kind(&r), Some(ServerErrorKind::Unavailable), "{r:?}");
    assert_eq!(boot(&mut seq, 4, 1_000, &[(stream(1), 999)]), DONE);
    assert_eq!(
        grant(&mut seq, 4, 1, &[stream(1)]),
        (1_000, vec![(stream(1), Some(999))])
    );
}

/// Rule: a batch of conditional tokens is judged in order, each as a lone
/// conditional token would be: a commit that conflicts with one earlier in
/// the same batch aborts, naming it; malformed ones are refused alone.
#[test]
fn rule_batched_commits_are_judged_one_after_another() {
    let mut seq = sequencer();
    let (s, t) = (stream(1), stream(2));
    grant(&mut seq, 0, 5, &[s]); // addresses 0..5
    let commit =
        |streams: Vec<StreamId>, read: &[ConflictKey], write: &[ConflictKey]| ConditionalToken {
            streams,
            condition: TxnCondition {
                snapshot: 4,
                read_set: read.to_vec(),
                write_set: write.to_vec(),
            },
        };
    let too_many_streams: Vec<StreamId> = (0..100).map(stream).collect();
    let tokens = vec![
        commit(vec![s], &[key(1, 7)], &[key(1, 7)]),
        commit(vec![s, t], &[key(1, 7)], &[key(1, 8)]), // read 7 after the first wrote it
        commit(vec![t], &[key(2, 1)], &[key(2, 1)]),
        commit(too_many_streams, &[key(3, 1)], &[]),
    ];
    let outcomes = match answer(seq.handle(0, SequencerRequest::Tokens { tokens })) {
        SequencerResponse::Tokens(o) => o,
        other => panic!("expected outcomes, got {other:?}"),
    };
    assert_eq!(outcomes.len(), 4);
    assert_eq!(
        outcomes[0],
        TokenOutcome::Granted {
            address: 5,
            previous: vec![(s, Some(4))]
        }
    );
    assert_eq!(
        outcomes[1],
        TokenOutcome::Aborted {
            key: Some(key(1, 7)),
            address: 5
        }
    );
    // The abort took no address: the next commit gets 6.
    assert_eq!(
        outcomes[2],
        TokenOutcome::Granted {
            address: 6,
            previous: vec![(t, None)]
        }
    );
    assert!(
        matches!(&outcomes[3], TokenOutcome::Refused { message } if message.contains("streams"))
    );
    // The grants are in the stream index like any token's.
    assert_eq!(addresses(&mut seq, s, 0, 10), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(addresses(&mut seq, t, 0, 10), vec![6]);
    // An empty batch is refused as a whole.
    let empty = seq.handle(0, SequencerRequest::Tokens { tokens: vec![] });
    assert_eq!(error_kind(&empty), Some(ServerErrorKind::InvalidRequest));
}

/// Rule: `Status` is answered at any epoch, without serving anything: the
/// failure detectors tell a sequencer that answers but does not serve (it
/// restarted) from one that serves.
#[test]
fn rule_status_says_whether_the_sequencer_serves() {
    let status = |seq: &mut Sequencer, header: Epoch| seq.handle(header, SequencerRequest::Status);
    let mut seq = Sequencer::awaiting_bootstrap(SequencerConfig::default());
    assert_eq!(
        status(&mut seq, 7),
        Response::Sequencer(SequencerResponse::Status {
            epoch: 0,
            serving: false
        })
    );
    assert_eq!(boot(&mut seq, 3, 0, &[]), DONE);
    assert_eq!(
        status(&mut seq, 1),
        Response::Sequencer(SequencerResponse::Status {
            epoch: 3,
            serving: true
        }),
        "answered below the sequencer's epoch too"
    );
    assert_eq!(seq.next(), 0, "a status grants nothing");
}
