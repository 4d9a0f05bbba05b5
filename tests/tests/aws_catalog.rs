//! Catalog refresh across instances: two engines on one DynamoDB table (moto, started by the
//! test process, through the real SDK). An
//! admin change through one reaches the other within the refresh interval, and the check
//! costs one GetItem per interval, not per event.

mod aws_support;

use aws_support::{Proxy, moto, moto_url, unique};
use nearcast_aws::DynamoStateStore;
use nearcast_aws::refresh::RefreshingStore;
use nearcast_aws::snapshots::CatalogSnapshots;
use nearcast_core::audit::{Actor, Role};
use nearcast_core::engine::Engine;
use nearcast_core::memory::RecordingNotifier;
use nearcast_core::ports::{ManualClock, StateStore};
use nearcast_tests::{catalog, event, id, model, noon, policy, weather};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

async fn instance(
    proxy: &Proxy,
    table: &str,
    every: Duration,
) -> (Arc<Engine>, Arc<RefreshingStore>) {
    let dynamo = DynamoStateStore::new(moto().dynamodb(Some(&proxy.url)).await, table);
    let store = RefreshingStore::new(Arc::new(dynamo), every);
    store.prime().await.expect("catalog version");
    let engine = Arc::new(
        Engine::new(
            store.clone(),
            Arc::new(RecordingNotifier::new()),
            Arc::new(weather()),
            Arc::new(ManualClock::new(noon())),
            model(),
        )
        .await
        .expect("engine"),
    );
    store.attach(&engine);
    (engine, store)
}

/// A fix far from every store, for a fresh user.
async fn far_fix(engine: &Engine, user: &str) {
    let e = event(
        user,
        json!({"event_id": "f", "type": "location", "at": noon().to_rfc3339(),
            "lat": 60.25, "lon": 25.10, "accuracy_m": 8}),
    );
    engine.process(&e).await.expect("processed");
}

fn m(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_change_on_one_instance_reaches_the_other_within_the_interval() {
    let proxy = Proxy::start(&moto_url()).await;
    let table = unique("catalog");
    DynamoStateStore::create_table(&moto().dynamodb(None).await, &table)
        .await
        .expect("create table");
    // Long enough that 10 events (20 round trips to moto, which serves one request at a
    // time) fit well within it on a loaded CI machine: at 400 ms they once did not.
    let every = Duration::from_secs(2);
    let (a, a_store) = instance(&proxy, &table, every).await;
    let (b, _) = instance(&proxy, &table, every).await;
    assert!(b.catalog().store_count() == 0);

    // Instance A saves two stores, their offers and a policy.
    let (stores, offers) = catalog(2);
    a.load_config(stores, offers, policy(3)).await.unwrap();
    assert_eq!(a.catalog().store_count(), 2);
    let version = a_store.inner().catalog_version().await.unwrap();
    assert_eq!(
        version, 1,
        "a load of up to 98 changes is one transaction and one version bump"
    );

    // B, within its interval: no check, the old catalog.
    far_fix(&b, "u0").await;
    assert!(b.catalog().store_count() == 0);

    // After the interval, B's next user read checks, finds the new version and reloads.
    tokio::time::sleep(every + Duration::from_millis(100)).await;
    proxy.reset_counts();
    far_fix(&b, "u1").await;
    assert_eq!(b.catalog().store_count(), 2);
    assert_eq!(b.catalog().policy, policy(3));
    assert_eq!(
        proxy.counts(),
        m(&[
            // the version, the reload's policy, the user, and (a user without a profile
            // whose event grants no consent) the erasure pseudonym
            ("GetItem", 4),
            // the reload's stores, offers and campaigns
            ("Scan", 3),
            // the audit log's head, read to follow single store changes in place (a load
            // is not one, so the catalog is reloaded), and the reload's configuration
            // version: the newest audit entry
            ("Query", 2),
            ("PutItem", 1),
        ])
    );

    // Within the interval again: no version check. Each event of these new users without
    // consent costs its 2 round trips and the erasure pseudonym's GetItem.
    proxy.reset_counts();
    for i in 0..10 {
        far_fix(&b, &format!("v{i}")).await;
    }
    assert_eq!(proxy.counts(), m(&[("GetItem", 20), ("PutItem", 10)]));

    // A deletion travels the same way; deleting what is not there changes no version.
    let maria = Actor {
        name: "maria".into(),
        role: Role::Editor,
    };
    a.delete_offer(&id("o1"), &maria).await.unwrap();
    a.delete_store(&id("s1"), &maria).await.unwrap();
    // Each change wrote its audit entry in its own transaction: newest first.
    let audit = a.audit_log(None, 10).await.unwrap();
    let actions: Vec<(&str, Option<&str>, &str)> = audit
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.target.as_deref(),
                e.actor.name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("store.delete", Some("s1"), "maria"),
            ("offer.delete", Some("o1"), "maria"),
            ("catalog.load", None, "nearcast (configuration load)"),
        ]
    );
    assert_eq!(audit[0].before.as_ref().unwrap()["id"], "s1");
    assert!(audit[0].after.is_none());
    let version = a_store.inner().catalog_version().await.unwrap();
    assert!(!a_store.inner().delete_store(&id("s-none")).await.unwrap());
    assert_eq!(a_store.inner().catalog_version().await.unwrap(), version);
    tokio::time::sleep(every + Duration::from_millis(100)).await;
    far_fix(&b, "u2").await;
    assert_eq!(b.catalog().store_count(), 1);
}

/// An instance of the functions with a catalog bucket: its catalog from the newest snapshot
/// when that holds the newest change, else from the table. `admin`: it publishes a snapshot
/// after each change, as admin-api does.
async fn instance_with_snapshots(
    proxy: &Proxy,
    table: &str,
    bucket: &str,
    admin: bool,
) -> (Arc<Engine>, Arc<RefreshingStore>) {
    let dynamo = Arc::new(DynamoStateStore::new(
        moto().dynamodb(Some(&proxy.url)).await,
        table,
    ));
    let store = RefreshingStore::new(dynamo.clone(), Duration::from_millis(300));
    // As a function starts (nearcast_functions::start_with): the version read points at
    // the snapshot, fetched while the newest change is checked.
    let versions = store.prime().await.expect("catalog version");
    let snapshots = Arc::new(CatalogSnapshots::new(
        moto().s3(Some(&proxy.url)).await,
        bucket,
        dynamo,
    ));
    store.use_snapshots(snapshots.clone());
    let initial = snapshots.load_logged_at(versions.snapshot, true).await;
    let engine = Arc::new(
        Engine::starting_from(
            store.clone(),
            Arc::new(RecordingNotifier::new()),
            Arc::new(weather()),
            Arc::new(ManualClock::new(noon())),
            model(),
            initial,
        )
        .await
        .expect("engine"),
    );
    store.attach(&engine);
    if admin {
        engine.set_catalog_sink(snapshots);
    }
    (engine, store)
}

/// Publishes `admin`'s catalog, waits out the refresh interval and lets `running` check:
/// the requests of that check.
async fn published_then_refreshed(
    admin: &Engine,
    proxy: &Proxy,
    running: &RefreshingStore,
) -> BTreeMap<String, u64> {
    assert!(admin.publish_catalog().await.unwrap());
    tokio::time::sleep(Duration::from_millis(350)).await;
    proxy.reset_counts();
    running.refresh_if_due().await;
    proxy.counts()
}

/// Stores by id with their fences, offers by id, and the policy: what a decision reads.
fn config_of(c: &nearcast_core::catalog::Catalog) -> String {
    let mut stores: Vec<String> = c.stores().map(|s| format!("{s:?}")).collect();
    stores.sort();
    format!("{stores:?} {:?} {:?} {:?}", c.offers, c.policy, c.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_start_from_the_newest_snapshot_and_never_from_a_stale_one() {
    let proxy = Proxy::start(&moto_url()).await;
    let (table, bucket) = (unique("snap"), unique("snap"));
    DynamoStateStore::create_table(&moto().dynamodb(None).await, &table)
        .await
        .expect("create table");
    nearcast_aws::model_store::S3Blobs::create_bucket(&moto().s3(None).await, &bucket)
        .await
        .expect("bucket");
    let admin_actor = Actor {
        name: "ana@example.com".into(),
        role: Role::Admin,
    };

    // Nothing published yet: a start reads the table.
    let (admin, _) = instance_with_snapshots(&proxy, &table, &bucket, true).await;
    let (stores, offers) = catalog(3);
    admin.load_config(stores, offers, policy(3)).await.unwrap();
    assert!(admin.publish_catalog().await.unwrap());
    let first_version = admin.catalog().version.clone().unwrap();

    // A new instance starts from the snapshot: one GetItem (the versions, which point at
    // it), one Query (the newest change), one GetObject, no Scan of the table.
    proxy.reset_counts();
    let (b, b_store) = instance_with_snapshots(&proxy, &table, &bucket, false).await;
    let counts = proxy.counts();
    assert_eq!(counts.get("Scan"), None, "{counts:?}");
    assert_eq!(counts.get("GetItem"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("Query"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("GetObject"), Some(&1), "{counts:?}");
    assert_eq!(config_of(&b.catalog()), config_of(&admin.catalog()));
    let (lat, lon) = nearcast_tests::store_point(0);
    let e = event(
        "snap-user",
        json!({"event_id": "in", "type": "location", "at": noon().to_rfc3339(),
            "lat": lat, "lon": lon, "accuracy_m": 8}),
    );
    let r = b.process(&e).await.unwrap();
    assert_eq!(r.status, "accepted");
    assert_eq!(b.catalog().lookup(lat, lon).len(), 1);

    // One store moved and published: the running instance applies that one change from
    // the audit log at its next check (one Query), reading neither the table's stores nor
    // the snapshot; the old object is deleted.
    let mut moved = admin.catalog().stores().next().unwrap().clone();
    moved.name = "Moved".into();
    admin.put_store(moved, &admin_actor).await.unwrap();
    let counts = published_then_refreshed(&admin, &proxy, &b_store).await;
    assert_eq!(counts.get("Scan"), None, "{counts:?}");
    assert_eq!(counts.get("GetObject"), None, "{counts:?}");
    assert_eq!(counts.get("Query"), Some(&1), "{counts:?}");
    assert_eq!(b.catalog().changes(), 1, "applied in place");
    assert_eq!(config_of(&b.catalog()), config_of(&admin.catalog()));
    assert_eq!(
        keys_in(&bucket).await,
        vec![CatalogSnapshots::key_of(
            admin.catalog().version.as_deref().unwrap()
        )]
    );

    // An offer changed and published: not a store change, so the running instance takes
    // the whole catalog at its next check, from the snapshot (one GetObject), not from the
    // table (no Scan).
    let mut offer = admin.catalog().offers[0].clone();
    let changed_id = offer.id.clone();
    offer.title = "Changed".into();
    admin.put_offer(offer, &admin_actor).await.unwrap();
    let counts = published_then_refreshed(&admin, &proxy, &b_store).await;
    assert_eq!(counts.get("Scan"), None, "{counts:?}");
    assert_eq!(counts.get("GetObject"), Some(&1), "{counts:?}");
    assert!(
        b.catalog()
            .offers
            .iter()
            .any(|o| o.id == changed_id && o.title == "Changed")
    );
    assert_eq!(config_of(&b.catalog()), config_of(&admin.catalog()));

    // A change whose snapshot was never published (the admin instance died after its
    // commit): the pointer is stale, so a new instance reads the table, and so does the
    // running one at its next check. Neither serves the older snapshot.
    let (quiet_admin, _) = instance_with_snapshots(&proxy, &table, &bucket, false).await;
    quiet_admin
        .delete_offer(&quiet_admin.catalog().offers[0].id.clone(), &admin_actor)
        .await
        .unwrap();
    assert!(!quiet_admin.publish_catalog().await.unwrap(), "no sink");
    proxy.reset_counts();
    let (c, _) = instance_with_snapshots(&proxy, &table, &bucket, false).await;
    assert!(proxy.counts().get("Scan").is_some_and(|n| *n >= 2));
    assert_eq!(config_of(&c.catalog()), config_of(&quiet_admin.catalog()));
    tokio::time::sleep(Duration::from_millis(350)).await;
    b_store.refresh_if_due().await;
    assert_eq!(config_of(&b.catalog()), config_of(&quiet_admin.catalog()));

    // A publish of an older catalog (a slow admin instance) never moves the pointer back,
    // and its object is deleted.
    let mut again = admin.catalog().stores().next().unwrap().clone();
    again.name = "Moved again".into();
    admin.put_store(again, &admin_actor).await.unwrap();
    assert!(admin.publish_catalog().await.unwrap());
    let newest = admin.catalog().version.clone().unwrap();
    let snapshots = nearcast_aws::snapshots::CatalogSnapshots::new(
        moto().s3(None).await,
        &bucket,
        Arc::new(DynamoStateStore::new(moto().dynamodb(None).await, &table)),
    );
    let older = admin
        .catalog()
        .as_ref()
        .clone()
        .at_version(Some(first_version.clone()));
    assert!(!snapshots.publish(&older).await.unwrap());
    assert_eq!(
        keys_in(&bucket).await,
        vec![CatalogSnapshots::key_of(&newest)]
    );
    assert_eq!(
        config_of(&snapshots.load().await.unwrap()),
        config_of(&admin.catalog())
    );

    // A snapshot that does not read (a corrupt object) is not used: a new instance reads the
    // table, and says why.
    moto()
        .s3(None)
        .await
        .put_object()
        .bucket(&bucket)
        .key(CatalogSnapshots::key_of(&newest))
        .body(b"NCCATLOG garbage".to_vec().into())
        .send()
        .await
        .unwrap();
    assert!(matches!(
        snapshots.load().await,
        Err(nearcast_aws::snapshots::Skipped::Failed(_))
    ));
    proxy.reset_counts();
    let (d, _) = instance_with_snapshots(&proxy, &table, &bucket, false).await;
    assert!(proxy.counts().get("Scan").is_some_and(|n| *n >= 2));
    assert_eq!(config_of(&d.catalog()), config_of(&admin.catalog()));

    // An object that is gone is missing (logged at info level); S3 failing otherwise (here
    // a bucket that does not exist) is a failure (at warn level). Either way the table.
    moto()
        .s3(None)
        .await
        .delete_object()
        .bucket(&bucket)
        .key(CatalogSnapshots::key_of(&newest))
        .send()
        .await
        .unwrap();
    assert_eq!(
        snapshots.load().await.err(),
        Some(nearcast_aws::snapshots::Skipped::Missing)
    );
    let elsewhere = CatalogSnapshots::new(
        moto().s3(None).await,
        unique("nobucket"),
        Arc::new(DynamoStateStore::new(moto().dynamodb(None).await, &table)),
    );
    assert!(matches!(
        elsewhere.load().await,
        Err(nearcast_aws::snapshots::Skipped::Failed(e)) if e.contains("S3 GetObject")
    ));
}

/// The object keys in `bucket`.
async fn keys_in(bucket: &str) -> Vec<String> {
    let objects = moto()
        .s3(None)
        .await
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    objects
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}
