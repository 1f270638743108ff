//! Issue 15, item 7: a transaction naming more conflict keys than the
//! sequencer's `txn_keys_max` fails as "too many keys", a definite failure
//! (nothing appended), not as an error of the log whose outcome is
//! unknown.

mod support;

use corfu::cluster::Shape;
use corfu::core::client::LogClient;
use corfu::objects::ReplicatedMap;
use corfu::smr::{Error, Runtime};
use support::{local_cluster, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_txn_keys_max_fails_as_too_many_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = local_cluster(&dir, 1, Shape::new(1, 1)).await;
    let client = LogClient::connect(&cluster.client_config()).await.unwrap();
    let rt = Runtime::new(client.clone());
    let map: ReplicatedMap<u32, u32> = rt.open("wide").unwrap();
    map.insert(0, 0).await.unwrap();
    let before = client.tail().await.unwrap();
    // 4,097 keys written: one more than the default txn_keys_max (4,096).
    let map = &map;
    let result = within(
        30,
        "transaction",
        rt.transaction(|tx| async move {
            for k in 0..4097u32 {
                map.tx_insert(&tx, k, k)?;
            }
            Ok(())
        }),
    )
    .await;
    let err = result.expect_err("the sequencer refuses 4,097 keys");
    assert!(
        !matches!(err, Error::Log { .. }),
        "an unknown outcome: {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("too many keys")
            && text.contains("more than the sequencer's txn_keys_max of 4096"),
        "{text}"
    );
    assert_eq!(client.tail().await.unwrap(), before, "nothing appended");
    // A transaction within the limit commits.
    rt.transaction(|tx| async move {
        for k in 0..100u32 {
            map.tx_insert(&tx, k, k + 1)?;
        }
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(map.get(&99).await.unwrap(), Some(100));
    cluster.shutdown().await;
}
