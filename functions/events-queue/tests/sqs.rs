//! The handler in-process, without AWS, on the SQS sample payload from `events/lambda/`:
//! three records (valid, malformed JSON, valid).

use aws_lambda_events::sqs::SqsEvent;
use nearcast_core::decision::Verdict;
use nearcast_core::memory::InMemoryStateStore;
use nearcast_events_queue::{Tally, handle, process};
use nearcast_functions::testing::{FailingCommits, engine, engine_on, sample};
use std::sync::Arc;

fn event() -> SqsEvent {
    serde_json::from_str(&sample("sqs-events.json")).expect("an SQS event")
}

fn id(event: &SqsEvent, i: usize) -> String {
    event.records[i].message_id.clone().unwrap()
}

#[tokio::test]
async fn valid_records_are_processed_and_a_malformed_one_is_dropped_not_retried() {
    let f = engine().await;
    let (response, tally) = process(&f.engine, event()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        tally,
        Tally {
            processed: 2,
            poison: 1,
            retry: 0
        }
    );
    let mut users: Vec<String> = f
        .decisions()
        .await
        .iter()
        .filter(|d| d.verdict == Verdict::Sent)
        .map(|d| d.user_id.to_string())
        .collect();
    users.sort();
    assert_eq!(users, ["u-4712", "u-4713"]);
    assert_eq!(f.notifier.sent().len(), 2);

    // SQS delivers at least once: a redelivered batch sends nothing more.
    let response = handle(&f.engine, event()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(f.notifier.sent().len(), 2);
}

#[tokio::test]
async fn a_record_that_hits_a_failing_store_is_handed_back_by_message_id() {
    let store = Arc::new(FailingCommits::new(Arc::new(InMemoryStateStore::new())));
    let f = engine_on(store.clone()).await;
    let all = event();

    // The store fails for the user of record 2 only (one throttled partition).
    store.fail_for(&["u-4713"]);
    let (response, tally) = process(&f.engine, all.clone()).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|b| b.item_identifier.as_str())
        .collect();
    assert_eq!(failed, [id(&all, 2)]);
    assert_eq!(
        tally,
        Tally {
            processed: 1,
            poison: 1,
            retry: 1
        }
    );
    assert_eq!(f.notifier.sent().len(), 1);
    assert!(
        f.decisions()
            .await
            .iter()
            .all(|d| d.user_id.as_str() == "u-4712")
    );

    // SQS redelivers record 2 alone once the store recovered: it goes through, once.
    store.fail_for(&[]);
    let mut retry = all.clone();
    retry.records = vec![all.records[2].clone()];
    let response = handle(&f.engine, retry).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(f.notifier.sent().len(), 2);
}

#[tokio::test]
async fn records_without_a_body_or_with_an_invalid_batch_are_poison() {
    let f = engine().await;
    let mut e = event();
    e.records[0].body = None;
    e.records[2].body = Some(r#"{"user_id": "u-1", "events": []}"#.into());
    let (response, tally) = process(&f.engine, e).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(tally.poison, 3);
    assert!(f.decisions().await.is_empty());
}
