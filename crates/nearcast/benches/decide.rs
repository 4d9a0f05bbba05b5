//! A whole decision for a location fix that sends nothing (the common case: most fixes
//! are near no fence), embedded SQLite store included: load the user, decide, commit the
//! idempotency key and state. Side by side with the in-memory store, to show the store's
//! share. 10,000 stores and 1,000 offers in the catalog.

use criterion::{Criterion, criterion_group, criterion_main};
use nearcast::store::{SqliteStore, Sync};
use nearcast_core::config::{CapPolicy, Offer, Store, parse_json};
use nearcast_core::engine::Engine;
use nearcast_core::event::{Event, EventKind, Fix};
use nearcast_core::ids::Id;
use nearcast_core::memory::{InMemoryStateStore, RecordingNotifier};
use nearcast_core::ports::{ManualClock, StateStore};
use nearcast_core::weather::TableWeather;
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;

fn config() -> (Vec<Store>, Vec<Offer>) {
    let mut stores = Vec::new();
    let mut offers = Vec::new();
    let mut x: u64 = 7;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for i in 0..10_000 {
        stores.push(
            parse_json::<Store>(&json!({"id": format!("s{i}"), "name": "S", "category": if i % 2 == 0 { "cafe" } else { "clothes" },
                "time_zone": "Europe/Helsinki", "fence": {"type": "circle", "lat": 60.10 + 0.22 * next(),
                "lon": 24.60 + 0.80 * next(), "radius_m": 30.0 + 270.0 * next()}}))
            .unwrap(),
        );
    }
    for k in 0..1_000 {
        let ids: Vec<String> = (0..10)
            .map(|j| format!("s{}", (k * 10 + j) % 10_000))
            .collect();
        offers.push(
            parse_json::<Offer>(
                &json!({"id": format!("o{k}"), "campaign_id": "c", "title": "T", "body": "B",
                "category": "coffee", "store_ids": ids, "trigger": {"type": "enter"}}),
            )
            .unwrap(),
        );
    }
    (stores, offers)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (stores, offers) = config();
    let now: chrono::DateTime<chrono::Utc> = "2026-11-20T10:00:00Z".parse().unwrap();
    let mut g = c.benchmark_group("decide_no_send");
    for backend in ["sqlite", "in_memory"] {
        let store: Arc<dyn StateStore> = if backend == "sqlite" {
            Arc::new(SqliteStore::open(&dir.path().join("bench.db"), Sync::Normal).unwrap())
        } else {
            Arc::new(InMemoryStateStore::new())
        };
        let engine = rt.block_on(async {
            let e = Engine::new(
                store,
                Arc::new(RecordingNotifier::new()),
                Arc::new(TableWeather::default()),
                Arc::new(ManualClock::new(now)),
                nearcast::load_model(None).unwrap(),
            )
            .await
            .unwrap();
            e.load_config(stores.clone(), offers.clone(), CapPolicy::default())
                .await
                .unwrap();
            e
        });
        let user = Id::parse("bench-user").unwrap();
        for p in ["push", "location", "personalisation"] {
            let v = json!({"event_id": format!("c-{p}"), "user_id": "bench-user", "type": "consent", "at": now.to_rfc3339(), "purpose": p, "granted": true});
            rt.block_on(engine.process(&Event::from_json(&v, None, now).unwrap()))
                .unwrap();
        }
        let mut n = 0u64;
        g.bench_function(backend, |b| {
            b.iter(|| {
                n += 1;
                let e = Event {
                    event_id: Id::parse(&format!("e{n}")).unwrap(),
                    user_id: user.clone(),
                    at: now,
                    // North of the box: near no fence.
                    kind: EventKind::Location(Fix {
                        lat: 60.40,
                        lon: 24.9,
                        accuracy_m: 10.0,
                    }),
                };
                black_box(rt.block_on(engine.process(black_box(&e))).unwrap())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
