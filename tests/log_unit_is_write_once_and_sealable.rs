//! The log unit role over QUIC (issue: log unit): write-once under
//! concurrent writers, fill, seal fencing stale epochs, prefix trim, range
//! reads — through a real node on loopback.

mod support;

use std::sync::Arc;

use corfu::core::node;
use corfu::core::transport::{Peer, TransportConfig};
use corfu::core::types::{Role, StreamId};
use corfu::core::wire::logunit::{
    AddressedEntry, Entry, Existing, LogUnitRequest, LogUnitResponse, ReadOutcome, StreamHeader,
    WriteOutcome,
};
use corfu::core::wire::{Request, Response};
use support::{client_trusting_file, node_config, within};

fn entry(payload: &str) -> Entry {
    Entry {
        id: None,
        streams: vec![StreamHeader {
            stream: StreamId::from_name("s"),
            backpointer: None,
        }],
        payload: payload.as_bytes().to_vec(),
    }
}

async fn call(peer: &Peer, epoch: u64, req: LogUnitRequest) -> Response {
    peer.call(epoch, Request::LogUnit(req))
        .await
        .expect("transport")
}

async fn read(peer: &Peer, epoch: u64, address: u64) -> Response {
    call(peer, epoch, LogUnitRequest::Read { address }).await
}

fn data(e: Entry) -> Response {
    Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Data(e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_unit_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let node = node::start(node_config(dir.path(), "lu", vec![Role::LogUnit], None))
        .await
        .unwrap();
    let client = client_trusting_file(
        node.ca_cert(),
        None,
        node.cluster_id(),
        TransportConfig::default(),
    );
    let peer = client.peer(&node.local_addr().to_string());

    // Write-once under concurrent writers: exactly one wins each address, the
    // others learn the winner's value, and every reader sees the winner.
    for address in 0..20u64 {
        let mut tasks = Vec::new();
        for w in 0..6 {
            let peer = peer.clone();
            tasks.push(tokio::spawn(async move {
                let e = entry(&format!("writer-{w}"));
                let answer = call(
                    &peer,
                    0,
                    LogUnitRequest::Write(AddressedEntry {
                        address,
                        entry: e.clone(),
                    }),
                )
                .await;
                (e, answer)
            }));
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (e, Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Ok))) => winners.push(e),
                (
                    _,
                    Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Overwritten(
                        Existing::Data(e),
                    ))),
                ) => losers.push(e),
                (_, other) => panic!("unexpected answer {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "address {address}: exactly one winner");
        assert!(
            losers.iter().all(|l| *l == winners[0]),
            "losers see the winner"
        );
        for _ in 0..3 {
            assert_eq!(read(&peer, 0, address).await, data(winners[0].clone()));
        }
    }

    // Fill: junk if unwritten, and then nothing can be written there.
    assert_eq!(
        call(&peer, 0, LogUnitRequest::Fill { address: 20 }).await,
        Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Ok))
    );
    assert_eq!(
        call(
            &peer,
            0,
            LogUnitRequest::Write(AddressedEntry {
                address: 20,
                entry: entry("late")
            })
        )
        .await,
        Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Overwritten(
            Existing::Junk
        )))
    );
    assert_eq!(
        call(&peer, 0, LogUnitRequest::Fill { address: 0 }).await,
        Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Overwritten(
            Existing::Data(match read(&peer, 0, 0).await {
                Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Data(e))) => e,
                other => panic!("{other:?}"),
            })
        )))
    );
    assert_eq!(
        read(&peer, 0, 20).await,
        Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Junk))
    );
    assert_eq!(
        read(&peer, 0, 21).await,
        Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Unwritten))
    );

    // Seal: answers the tails, then rejects every request of a lower epoch.
    match call(&peer, 0, LogUnitRequest::Seal { epoch: 5 }).await {
        Response::LogUnit(LogUnitResponse::Tails(t)) => {
            assert_eq!(t.global, Some(20));
            assert_eq!(t.streams, vec![(StreamId::from_name("s"), 19)]);
        }
        other => panic!("seal answered {other:?}"),
    }
    let stale = Response::WrongEpoch { current: 5 };
    assert_eq!(read(&peer, 4, 0).await, stale);
    assert_eq!(
        call(
            &peer,
            4,
            LogUnitRequest::Write(AddressedEntry {
                address: 30,
                entry: entry("stale")
            })
        )
        .await,
        stale
    );
    assert_eq!(
        call(&peer, 4, LogUnitRequest::Fill { address: 31 }).await,
        stale
    );
    assert_eq!(
        call(&peer, 4, LogUnitRequest::Seal { epoch: 4 }).await,
        stale
    );
    assert_eq!(
        read(&peer, 5, 30).await,
        Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Unwritten)),
        "the stale write left nothing"
    );
    assert_eq!(
        call(
            &peer,
            5,
            LogUnitRequest::WriteBatch(vec![
                AddressedEntry {
                    address: 30,
                    entry: entry("e5-a")
                },
                AddressedEntry {
                    address: 31,
                    entry: entry("e5-b")
                },
            ])
        )
        .await,
        Response::LogUnit(LogUnitResponse::WriteBatch(vec![
            WriteOutcome::Ok,
            WriteOutcome::Ok
        ]))
    );

    // Range reads answer every address, in order.
    match call(&peer, 5, LogUnitRequest::ReadRange { from: 18, to: 33 }).await {
        Response::LogUnit(LogUnitResponse::Reads(reads)) => {
            let addresses: Vec<u64> = reads.iter().map(|(a, _)| *a).collect();
            assert_eq!(addresses, (18..33).collect::<Vec<_>>());
            assert_eq!(reads[2].1, ReadOutcome::Junk);
            assert_eq!(reads[3].1, ReadOutcome::Unwritten);
            assert_eq!(reads[12].1, ReadOutcome::Data(entry("e5-a")));
            assert_eq!(reads[14].1, ReadOutcome::Unwritten);
        }
        other => panic!("range read answered {other:?}"),
    }

    // Prefix trim: reads below the mark answer Trimmed, writes there too.
    assert_eq!(
        call(&peer, 5, LogUnitRequest::PrefixTrim { address: 10 }).await,
        Response::LogUnit(LogUnitResponse::Trimmed { trim_mark: 10 })
    );
    assert_eq!(
        read(&peer, 5, 9).await,
        Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Trimmed))
    );
    assert!(matches!(
        read(&peer, 5, 10).await,
        Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Data(_)))
    ));
    assert_eq!(
        call(
            &peer,
            5,
            LogUnitRequest::Write(AddressedEntry {
                address: 3,
                entry: entry("below")
            })
        )
        .await,
        Response::LogUnit(LogUnitResponse::Write(WriteOutcome::Trimmed))
    );

    // All of it survives a restart of the node.
    client.close();
    within(10, "shutdown", node.shutdown()).await;
    let node = node::start(node_config(dir.path(), "lu", vec![Role::LogUnit], None))
        .await
        .unwrap();
    let client = client_trusting_file(
        node.ca_cert(),
        None,
        node.cluster_id(),
        TransportConfig::default(),
    );
    let peer = Arc::new(client.peer(&node.local_addr().to_string()));
    assert_eq!(read(&peer, 4, 30).await, stale, "the seal is durable");
    assert_eq!(read(&peer, 5, 31).await, data(entry("e5-b")));
    assert_eq!(
        read(&peer, 5, 5).await,
        Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Trimmed)),
        "the trim mark is durable"
    );
    assert_eq!(
        read(&peer, 5, 20).await,
        Response::LogUnit(LogUnitResponse::Read(ReadOutcome::Junk))
    );
    client.close();
    within(10, "shutdown", node.shutdown()).await;
}
