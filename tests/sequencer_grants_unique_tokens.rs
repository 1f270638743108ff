//! The sequencer role over QUIC (issue: layout and sequencer): it serves
//! nothing before a bootstrap; then tokens from many concurrent clients are
//! unique and gap-free, each stream's backpointers chain through exactly its
//! own grants, and a seal fences older epochs.

mod support;

use std::collections::BTreeMap;

use corfu::core::node;
use corfu::core::transport::TransportConfig;
use corfu::core::types::{Role, StreamId};
use corfu::core::wire::sequencer::{SequencerRequest, SequencerResponse};
use corfu::core::wire::{Request, Response, ServerErrorKind};
use support::{client_trusting_file, node_config, within};

fn token(count: u32, streams: Vec<StreamId>) -> Request {
    Request::Sequencer(SequencerRequest::Token {
        count,
        streams,
        condition: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_unique_gap_free_and_chained_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let node = node::start(node_config(dir.path(), "seq", vec![Role::Sequencer], None))
        .await
        .unwrap();
    let client = client_trusting_file(
        node.ca_cert(),
        None,
        node.cluster_id(),
        TransportConfig::default(),
    );
    let peer = client.peer(&node.local_addr().to_string());

    // Soft state: nothing is granted before a bootstrap says where the log is.
    match peer.call(1, token(1, vec![])).await.unwrap() {
        Response::Error(e) => assert_eq!(e.kind, ServerErrorKind::Unavailable, "{e}"),
        other => panic!("token before bootstrap: {other:?}"),
    }
    // A bootstrap follows a seal, by the incarnation that answered it.
    let incarnation = match peer
        .call(1, Request::Sequencer(SequencerRequest::Seal { epoch: 1 }))
        .await
        .unwrap()
    {
        Response::Sequencer(SequencerResponse::Sealed { incarnation, .. }) => incarnation,
        other => panic!("seal: {other:?}"),
    };
    let boot = Request::Sequencer(SequencerRequest::Bootstrap {
        epoch: 1,
        incarnation,
        next: 100,
        bound: u64::MAX,
        stream_tails: vec![(StreamId(1), 42)],
        // No lease: no other sequencer can replace this one.
        layout_servers: vec![],
    });
    assert_eq!(
        peer.call(1, boot).await.unwrap(),
        Response::Sequencer(SequencerResponse::Done)
    );

    // Many clients, random counts and streams.
    let streams = [StreamId(1), StreamId(2), StreamId(3)];
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let peer = peer.clone();
        tasks.push(tokio::spawn(async move {
            let mut grants = Vec::new();
            for i in 0..200u64 {
                let count = 1 + ((c * 7 + i * 13) % 5) as u32;
                let chosen: Vec<StreamId> = streams
                    .iter()
                    .copied()
                    .filter(|s| (c + i + s.0 as u64).is_multiple_of(2))
                    .collect();
                match peer.call(1, token(count, chosen.clone())).await.unwrap() {
                    Response::Sequencer(SequencerResponse::Token {
                        start,
                        count: granted,
                        previous,
                    }) => {
                        assert_eq!(granted, count);
                        grants.push((start, count, chosen, previous));
                    }
                    other => panic!("token answered {other:?}"),
                }
            }
            grants
        }));
    }
    let mut grants = Vec::new();
    for t in tasks {
        grants.extend(t.await.unwrap());
    }
    grants.sort_by_key(|g| g.0);

    // Unique and gap-free from the bootstrap's `next`.
    let mut expect = 100;
    for (start, count, _, _) in &grants {
        assert_eq!(*start, expect, "grants are contiguous and disjoint");
        expect += u64::from(*count);
    }

    // Per stream: each grant's backpointer is the last address of the
    // stream's previous grant (or the recovered tail for the first one).
    let mut last: BTreeMap<StreamId, Option<u64>> = BTreeMap::new();
    last.insert(StreamId(1), Some(42));
    for (start, count, chosen, previous) in &grants {
        for s in chosen {
            let got = previous.iter().find(|(id, _)| id == s).map(|(_, bp)| *bp);
            assert_eq!(
                got,
                Some(last.get(s).copied().flatten()),
                "stream {s:?} at {start}"
            );
            last.insert(*s, Some(start + u64::from(*count) - 1));
        }
    }

    // The tail query agrees, and grants nothing.
    match peer
        .call(
            1,
            Request::Sequencer(SequencerRequest::Tail {
                streams: streams.to_vec(),
            }),
        )
        .await
        .unwrap()
    {
        Response::Sequencer(SequencerResponse::Tail {
            next,
            streams: tails,
        }) => {
            assert_eq!(next, expect);
            for (s, tail) in tails {
                assert_eq!(tail, last.get(&s).copied().flatten(), "tail of {s:?}");
            }
        }
        other => panic!("tail answered {other:?}"),
    }

    // A seal fences the older epoch, and says how far epoch 1 got: past
    // every grant.
    assert_eq!(
        peer.call(2, Request::Sequencer(SequencerRequest::Seal { epoch: 2 }))
            .await
            .unwrap(),
        Response::Sequencer(SequencerResponse::Sealed {
            incarnation,
            served: Some((1, expect)),
        })
    );
    assert_eq!(
        peer.call(1, token(1, vec![])).await.unwrap(),
        Response::WrongEpoch { current: 2 }
    );
    client.close();
    within(10, "shutdown", node.shutdown()).await;
}
