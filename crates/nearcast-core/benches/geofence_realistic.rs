//! Geofence lookup on a map that looks like a real retail network.
//!
//! The layout ([`common::layout`]) is the real store layout of central Helsinki copied onto 64
//! European city centres, until there are 10,000 or 100,000 stores.
//!
//! Three probe sets, timed separately: **hits** (a point inside a random fence), **near
//! edge** (a point within −5..+15 m of a random circle's edge, in or out) and **misses**
//! (points within 3 km of a city centre inside no fence: the fixes of people walking
//! elsewhere in town). The H3 index, an R-tree (rstar) of the fences' bounding boxes and a
//! brute-force scan answer each probe; the index and the R-tree apply the same per-fence
//! test (`GeofenceIndex::fence_contains`), and all answers are checked equal to brute force
//! before anything is timed. The mean number of fences per hit is printed.
//!
//! `cargo bench -p nearcast-core --bench geofence_realistic -- --verbose` (medians in the
//! verbose output).

mod common;

use common::{CITIES, bbox, layout, probes, time};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nearcast_core::geofence::{DEFAULT_RESOLUTION, GeofenceIndex};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rstar::RTree;
use rstar::primitives::{GeomWithData, Rectangle};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("geofence_realistic");
    for n in [10_000usize, 100_000] {
        let mut rng = StdRng::seed_from_u64(7);
        let l = layout(n, &mut rng);
        let cities = n.div_ceil(1_711).min(CITIES.len());
        let index = GeofenceIndex::build(l.shapes.clone(), DEFAULT_RESOLUTION).unwrap();
        let tree: RTree<GeomWithData<Rectangle<[f64; 2]>, u32>> = RTree::bulk_load(
            l.shapes
                .iter()
                .enumerate()
                .map(|(i, s)| GeomWithData::new(bbox(s), i as u32))
                .collect(),
        );
        let rtree_lookup = |lat: f64, lon: f64, out: &mut Vec<u32>| {
            for gd in tree.locate_all_at_point(&[lon, lat]) {
                if index.fence_contains(gd.data, lat, lon) {
                    out.push(gd.data);
                }
            }
        };
        let sets = probes(&l, &index, cities, 4096, &mut rng);
        // Equal answers from all three on every probe before anything is timed.
        let mut in_fences = 0usize;
        for (k, set) in sets.iter().enumerate() {
            for &(lat, lon) in set {
                let want = index.scan(lat, lon);
                assert_eq!(index.lookup(lat, lon), want, "index at {lat},{lon}");
                let mut got = Vec::new();
                rtree_lookup(lat, lon, &mut got);
                got.sort_unstable();
                assert_eq!(got, want, "R-tree at {lat},{lon}");
                if k == 0 {
                    in_fences += want.len();
                }
            }
        }
        let near_hits = sets[1]
            .iter()
            .filter(|p| !index.lookup(p.0, p.1).is_empty())
            .count();
        eprintln!(
            "{n} stores in {cities} cities: {:.2} fences per hit; {near_hits} of {} near-edge probes inside a fence; {} index entries",
            in_fences as f64 / sets[0].len() as f64,
            sets[1].len(),
            index.entry_count()
        );
        for (label, pts) in [
            ("hits", &sets[0]),
            ("near_edge", &sets[1]),
            ("misses", &sets[2]),
        ] {
            time(
                &mut g,
                &format!("h3_index/{label}"),
                n,
                pts,
                |lat, lon, out| index.lookup_into(lat, lon, out),
            );
            time(
                &mut g,
                &format!("rstar_rtree/{label}"),
                n,
                pts,
                rtree_lookup,
            );
        }
    }
    g.finish();
}

/// Building the index for the realistic 10,000 and 100,000 stores.
fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("geofence_realistic_build");
    g.sample_size(10);
    for n in [10_000usize, 100_000] {
        let s = layout(n, &mut StdRng::seed_from_u64(7)).shapes;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| GeofenceIndex::build(black_box(s.clone()), DEFAULT_RESOLUTION).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench, build);
criterion_main!(benches);
