//! Single store changes through the engine (`PUT` and `DELETE /v1/admin/stores/{id}`):
//! applied to the catalog in service in place of a rebuild, folded into a fresh build off
//! the request path once `COMPACT_AFTER` have gathered, and at every point read by a
//! decision exactly as the catalog a fresh start builds from the saved configuration. A
//! change another instance saved makes the next change rebuild from the saved
//! configuration instead. On SQLite, in memory and on DynamoDB.

use nearcast_core::audit::{Actor, AuditEntry, ConfigChange};
use nearcast_core::catalog::{COMPACT_AFTER, Catalog};
use nearcast_core::config::{Store, parse_json};
use nearcast_core::engine::{Engine, EngineError};
use nearcast_core::geofence::Shape;
use nearcast_tests::*;
use serde_json::json;
use std::sync::Arc;

fn store(i: usize, k: u64) -> Store {
    let (lat, lon) = store_point(i);
    let category = ["cafe", "bakery", "kiosk"][(k % 3) as usize];
    parse_json::<Store>(&json!({
        "id": format!("s{i}"), "name": format!("Store {i} v{k}"), "category": category,
        "time_zone": if k % 2 == 0 { "Europe/Helsinki" } else { "Europe/Tallinn" },
        "fence": {"type": "circle", "lat": lat + (k % 7) as f64 * 0.0002,
                  "lon": lon - (k % 5) as f64 * 0.0003, "radius_m": 30 + (k % 4) * 25},
    }))
    .expect("valid store")
}

/// What decisions read of a catalog, by store id: each store, its offers (by id), time
/// zone and fence, and the stores found at points around every store's centre.
fn seen(cat: &Catalog) -> Vec<String> {
    let mut out: Vec<String> = cat
        .stores()
        .map(|s| {
            let p = cat
                .store_position(&s.id)
                .expect("listed stores have positions");
            let offers: Vec<&str> = cat
                .offers_at(p)
                .map(|k| cat.offers[k as usize].id.as_str())
                .collect();
            // To nine decimals (0.1 mm): a configuration read back from storage may differ
            // in the last bit of a coordinate (serde_json's fast float parsing).
            let fence = match cat.shape(p) {
                Shape::Circle { lat, lon, radius_m } => {
                    format!("circle {lat:.9} {lon:.9} {radius_m:.3}")
                }
                Shape::Polygon { bbox, .. } => format!("polygon {bbox:?}"),
            };
            format!("{} {} {offers:?} {} {fence}", s.id, s.name, cat.tz(p))
        })
        .collect();
    out.sort();
    for i in 0..160 {
        let (lat, lon) = store_point(i);
        for (dy, dx) in [(0.0, 0.0), (0.0004, -0.0006), (0.0011, -0.0013)] {
            let mut ids: Vec<&str> = cat
                .lookup(lat + dy, lon + dx)
                .into_iter()
                .map(|p| cat.store(p).id.as_str())
                .collect();
            ids.sort_unstable();
            out.push(format!("{i} {dy} {dx} {ids:?}"));
        }
    }
    out.push(format!("{} stores", cat.store_count()));
    out
}

async fn fresh_start(h: &Harness) -> Arc<Catalog> {
    Engine::new(
        h.store.clone(),
        Arc::new(nearcast_core::memory::RecordingNotifier::new()),
        Arc::new(weather()),
        Arc::new(h.clock.clone()),
        model(),
    )
    .await
    .expect("engine")
    .catalog()
}

async fn changes_read_as_a_fresh_start(backend: Backend, changes: usize) {
    let h = harness(backend, 40, policy(3)).await;
    let who = Actor::system("test");
    // Deterministic pseudo-random changes: stores 40..160 added, edited (moved, other
    // category, zone, size) and removed, stores 0..40 (each named by its offer) edited.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for n in 0..changes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % 160) as usize;
        if i >= 40 && x % 4 == 0 {
            match h.engine.delete_store(&id(&format!("s{i}")), &who).await {
                Ok(()) | Err(EngineError::NotFound(_)) => {}
                Err(e) => panic!("delete s{i}: {e}"),
            }
        } else {
            h.engine.put_store(store(i, x >> 8), &who).await.unwrap();
        }
        if n == 0 {
            assert_eq!(h.engine.catalog().changes(), 1, "applied in place");
        }
        if n % 97 == 0 && !h.engine.compacting() {
            assert_eq!(
                seen(&h.engine.catalog()),
                seen(&*fresh_start(&h).await),
                "after {n}"
            );
        }
    }
    // The compaction started at COMPACT_AFTER changes is done, the rest rebased on it.
    for _ in 0..600 {
        if !h.engine.compacting() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!h.engine.compacting());
    let cat = h.engine.catalog();
    if changes >= COMPACT_AFTER {
        assert!(
            cat.changes() < COMPACT_AFTER,
            "{} changes left",
            cat.changes()
        );
    }
    assert_eq!(seen(&cat), seen(&*fresh_start(&h).await));

    // A store an offer names by id cannot go; nothing changes.
    let e = h.engine.delete_store(&id("s3"), &who).await.unwrap_err();
    assert!(
        matches!(&e, EngineError::Invalid(f) if f.field.ends_with(".store_ids[0]")),
        "{e:?}"
    );
    assert!(h.engine.catalog().has_store(&id("s3")));

    // A change saved by another instance: the next change here rebuilds from the saved
    // configuration, and so includes it.
    let other = store(158, 3);
    let entry = AuditEntry::new(h.engine.now(), &who, "store.put").target(&other.id);
    h.store
        .apply_config(&[ConfigChange::PutStore(other.clone())], &entry)
        .await
        .unwrap();
    let name = |c: &Catalog| c.store_by_id(&other.id).map(|s| s.name.clone());
    assert_ne!(name(&h.engine.catalog()), Some(other.name.clone()));
    h.engine.put_store(store(157, 4), &who).await.unwrap();
    let cat = h.engine.catalog();
    assert_eq!(name(&cat), Some(other.name.clone()));
    assert_eq!(cat.changes(), 0, "rebuilt");
    assert_eq!(seen(&cat), seen(&*fresh_start(&h).await));
}

#[tokio::test]
async fn single_store_changes_read_as_a_fresh_start_on_sqlite() {
    changes_read_as_a_fresh_start(Backend::Sqlite, COMPACT_AFTER + 150).await;
}

#[tokio::test]
async fn single_store_changes_read_as_a_fresh_start_in_memory() {
    changes_read_as_a_fresh_start(Backend::Memory, COMPACT_AFTER + 150).await;
}

#[tokio::test]
async fn single_store_changes_read_as_a_fresh_start_on_dynamodb() {
    changes_read_as_a_fresh_start(Backend::Dynamo, 60).await;
}
