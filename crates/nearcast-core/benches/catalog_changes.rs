//! One store added, moved or removed, applied to a catalog of 10,000 or 100,000 stores on
//! the realistic layout ([`common::layout`]: central Helsinki's real store layout on 64
//! European cities; one store in 25 a mall polygon) with 1,000 offers, against rebuilding
//! the whole catalog (what every admin change did before). Each change is timed on the
//! catalog as built (no changes yet) and on one carrying `COMPACT_AFTER - 1` changes (the
//! most it carries before the engine folds them into a fresh build); the time includes
//! dropping the previous copy. Lookups are timed on the hits probe set through the catalog
//! with no changes and with `COMPACT_AFTER - 1`, beside the bare index, so that the cost
//! the changes add to every fix shows, and through the same catalog read from its snapshot
//! (square entries without their pre-tests: every candidate tested exactly). The compaction itself (a full build from the
//! catalog's stores, off the request path) is timed last, and beside it the same catalog
//! read from its snapshot (`nearcast_core::snapshot`, what a cold start loads) and written.
//!
//! `cargo bench -p nearcast-core --bench catalog_changes -- --verbose` (medians in the
//! verbose output).

mod common;

use common::{CITIES, layout, moved, probes, time};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nearcast_core::catalog::{COMPACT_AFTER, Catalog};
use nearcast_core::config::{CapPolicy, Fence, Offer, Store};
use nearcast_core::geofence::Shape;
use nearcast_core::ids::Id;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::hint::black_box;

const CATEGORIES: usize = 24;

fn fence_of(shape: &Shape) -> Fence {
    match shape {
        Shape::Circle { lat, lon, radius_m } => Fence::Circle {
            lat: *lat,
            lon: *lon,
            radius_m: *radius_m,
        },
        Shape::Polygon { geom, .. } => {
            let ring: Vec<[f64; 2]> = geom.0[0].exterior().coords().map(|c| [c.x, c.y]).collect();
            Fence::Polygon {
                geometry: json!({"type": "Polygon", "coordinates": [ring]}),
            }
        }
    }
}

fn store(i: usize, fence: Fence) -> Store {
    let mut s: Store = serde_json::from_value(json!({
        "id": format!("s{i}"), "name": format!("Store {i}"),
        "category": format!("cat{}", i % CATEGORIES), "time_zone": "Europe/Helsinki",
        "fence": {"type": "circle", "lat": 0.0, "lon": 0.0, "radius_m": 1.0},
    }))
    .expect("valid store");
    s.fence = fence;
    if i % 7 == 0 {
        s.brand = Some(format!("brand{}", i % 5));
    }
    s
}

fn offers() -> Vec<Offer> {
    (0..1_000)
        .map(|k| {
            let target = if k % 10 == 0 {
                json!({"store_brands": [format!("brand{}", k % 5)]})
            } else {
                json!({"store_categories": [format!("cat{}", k % CATEGORIES)]})
            };
            let mut v = json!({
                "id": format!("o{k}"), "campaign_id": format!("c{}", k % 200), "title": "T",
                "body": "B", "category": "coffee", "trigger": {"type": "enter"}, "threshold": 0.0,
            });
            for (key, val) in target.as_object().expect("object") {
                v[key] = val.clone();
            }
            serde_json::from_value(v).expect("valid offer")
        })
        .collect()
}

/// A change: a new store near a city centre, an existing store moved 40 m, or an existing
/// store removed.
fn change(cat: &Catalog, n: usize, rng: &mut StdRng, kind: u8) -> Catalog {
    match kind {
        0 => {
            let (clat, clon) = CITIES[rng.random_range(0..CITIES.len())];
            let (lat, lon) = moved(
                clat,
                clon,
                rng.random_range(-2_000.0..2_000.0),
                rng.random_range(-2_000.0..2_000.0),
            );
            let s = store(
                n + rng.random_range(0..1_000_000),
                Fence::Circle {
                    lat,
                    lon,
                    radius_m: 50.0,
                },
            );
            cat.with_store(s).expect("valid")
        }
        1 => {
            let i = rng.random_range(0..n);
            let Some(old) = cat.store_by_id(&Id::parse(&format!("s{i}")).expect("id")) else {
                return cat.clone();
            };
            let fence = match &old.fence {
                Fence::Circle { lat, lon, radius_m } => {
                    let (lat, lon) = moved(*lat, *lon, 40.0, 0.0);
                    Fence::Circle {
                        lat,
                        lon,
                        radius_m: *radius_m,
                    }
                }
                f => f.clone(),
            };
            cat.with_store(store(i, fence)).expect("valid")
        }
        _ => {
            let i = rng.random_range(0..n);
            cat.without_store(&Id::parse(&format!("s{i}")).expect("id"))
                .expect("no offer names stores by id")
                .unwrap_or_else(|| cat.clone())
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("catalog_changes");
    for n in [10_000usize, 100_000] {
        let mut rng = StdRng::seed_from_u64(7);
        let l = layout(n, &mut rng);
        let stores: Vec<Store> = l
            .shapes
            .iter()
            .enumerate()
            .map(|(i, s)| store(i, fence_of(s)))
            .collect();
        let offers = offers();
        let policy = CapPolicy::default();
        let built = Catalog::build(stores.clone(), offers.clone(), policy.clone()).expect("valid");
        let mut changed = built.clone();
        let mut k = 0u8;
        while changed.changes() < COMPACT_AFTER - 1 {
            changed = change(&changed, n, &mut rng, k % 3);
            k = k.wrapping_add(1);
        }
        assert_eq!(changed.changes(), COMPACT_AFTER - 1);

        for (label, kind) in [("add", 0u8), ("move", 1), ("remove", 2)] {
            for (state, cat) in [("built", &built), ("carrying_511", &changed)] {
                g.bench_with_input(
                    BenchmarkId::new(format!("{label}/{state}"), n),
                    &n,
                    |b, _| b.iter(|| black_box(change(cat, n, &mut rng, kind)).store_count()),
                );
            }
        }

        let cities = n.div_ceil(1_711).min(CITIES.len());
        let index = nearcast_core::geofence::GeofenceIndex::build(
            l.shapes.clone(),
            nearcast_core::geofence::DEFAULT_RESOLUTION,
        )
        .expect("valid");
        let hits = probes(&l, &index, cities, 4096, &mut rng)[0].clone();
        time(
            &mut g,
            "lookup_hits/bare_index",
            n,
            &hits,
            |lat, lon, out| index.lookup_into(lat, lon, out),
        );
        time(&mut g, "lookup_hits/built", n, &hits, |lat, lon, out| {
            built.lookup_into(lat, lon, out)
        });
        time(
            &mut g,
            "lookup_hits/carrying_511",
            n,
            &hits,
            |lat, lon, out| changed.lookup_into(lat, lon, out),
        );
        // The same catalog as a cold start reads it: lean square entries, every candidate
        // tested exactly.
        let read = nearcast_core::snapshot::decode(
            nearcast_core::snapshot::encode(&built).expect("encoded"),
        )
        .expect("read");
        time(
            &mut g,
            "lookup_hits/from_snapshot",
            n,
            &hits,
            |lat, lon, out| read.lookup_into(lat, lon, out),
        );
    }
    g.finish();
}

/// The full build every change did before, and the compaction of 511 changes.
fn rebuild(c: &mut Criterion) {
    let mut g = c.benchmark_group("catalog_rebuild");
    g.sample_size(10);
    for n in [10_000usize, 100_000] {
        let mut rng = StdRng::seed_from_u64(7);
        let stores: Vec<Store> = layout(n, &mut rng)
            .shapes
            .iter()
            .enumerate()
            .map(|(i, s)| store(i, fence_of(s)))
            .collect();
        let (offers, policy) = (offers(), CapPolicy::default());
        let mut changed =
            Catalog::build(stores.clone(), offers.clone(), policy.clone()).expect("valid");
        let mut k = 0u8;
        while changed.changes() < COMPACT_AFTER - 1 {
            changed = change(&changed, n, &mut rng, k % 3);
            k = k.wrapping_add(1);
        }
        g.bench_with_input(BenchmarkId::new("full_build", n), &n, |b, _| {
            b.iter(|| {
                Catalog::build(black_box(stores.clone()), offers.clone(), policy.clone())
                    .expect("valid")
                    .store_count()
            })
        });
        g.bench_with_input(BenchmarkId::new("compaction", n), &n, |b, _| {
            b.iter(|| changed.compacted().expect("valid").store_count())
        });
        // The cold start's alternative to the full build: the same catalog read from its
        // snapshot (and written, what the admin side pays after a change).
        let built = Catalog::build(stores.clone(), offers.clone(), policy.clone()).expect("valid");
        let blob = nearcast_core::snapshot::encode(&built).expect("encoded");
        eprintln!("snapshot of {n} stores: {} bytes", blob.len());
        g.bench_with_input(BenchmarkId::new("snapshot_read", n), &n, |b, _| {
            // The blob is the decoder's to keep (its index is read in place): a copy per
            // run, made outside the timing.
            b.iter_batched(
                || blob.clone(),
                |blob| {
                    nearcast_core::snapshot::decode(black_box(blob))
                        .expect("read")
                        .store_count()
                },
                criterion::BatchSize::LargeInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("snapshot_write", n), &n, |b, _| {
            b.iter(|| {
                nearcast_core::snapshot::encode(black_box(&built))
                    .expect("written")
                    .len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, rebuild);
criterion_main!(benches);
