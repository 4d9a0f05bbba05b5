//! Geofence lookup with 10,000 and 100,000 stores in a 50 x 25 km box around Helsinki:
//! the H3 index, side by side with a brute-force scan and an R-tree (rstar) of the fences'
//! bounding boxes followed by the index's own per-fence test (`fence_contains`).

mod common;

use common::{bbox, time};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nearcast_core::geofence::{DEFAULT_RESOLUTION, GeofenceIndex, Shape};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rstar::RTree;
use rstar::primitives::{GeomWithData, Rectangle};
use std::hint::black_box;

/// A probe, (lat, lon).
type Point = (f64, f64);

const LAT: (f64, f64) = (60.10, 60.32);
const LON: (f64, f64) = (24.60, 25.40);

fn shapes(n: usize, rng: &mut StdRng) -> Vec<Shape> {
    (0..n)
        .map(|_| Shape::Circle {
            lat: rng.random_range(LAT.0..LAT.1),
            lon: rng.random_range(LON.0..LON.1),
            radius_m: rng.random_range(30.0..300.0),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("geofence_lookup");
    for n in [10_000usize, 100_000] {
        let mut rng = StdRng::seed_from_u64(42);
        let index = GeofenceIndex::build(shapes(n, &mut rng), DEFAULT_RESOLUTION).unwrap();
        let tree: RTree<GeomWithData<Rectangle<[f64; 2]>, u32>> = RTree::bulk_load(
            index
                .shapes()
                .iter()
                .enumerate()
                .map(|(i, s)| GeomWithData::new(bbox(s), i as u32))
                .collect(),
        );
        // Half the probes uniformly in the box (mostly misses), half at store centres (hits).
        let points: Vec<(f64, f64)> = (0..4096)
            .map(|k| {
                if k % 2 == 0 {
                    (
                        rng.random_range(LAT.0..LAT.1),
                        rng.random_range(LON.0..LON.1),
                    )
                } else {
                    match &index.shapes()[rng.random_range(0..n)] {
                        Shape::Circle { lat, lon, .. } => (*lat + 0.0002, *lon),
                        Shape::Polygon { .. } => unreachable!(),
                    }
                }
            })
            .collect();
        // Same answers from all three before timing anything.
        for &(lat, lon) in &points[..512] {
            let mut r: Vec<u32> = tree
                .locate_all_at_point(&[lon, lat])
                .map(|g| g.data)
                .filter(|&i| index.shapes()[i as usize].contains(lat, lon))
                .collect();
            r.sort_unstable();
            assert_eq!(index.lookup(lat, lon), r);
            assert_eq!(index.lookup(lat, lon), index.scan(lat, lon));
        }
        // Misses (uniform in the box, where most fixes of a city are) and hits (near
        // store centres) timed separately, then the 50/50 mix.
        let (hits, misses): (Vec<Point>, Vec<Point>) = points
            .iter()
            .partition(|p| !index.lookup(p.0, p.1).is_empty());
        let sets: [(&str, &[(f64, f64)]); 3] =
            [("mixed", &points), ("hits", &hits), ("misses", &misses)];
        for (label, pts) in sets {
            if pts.is_empty() {
                continue;
            }
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
                |lat, lon, out| {
                    for gd in tree.locate_all_at_point(&[lon, lat]) {
                        if index.fence_contains(gd.data, lat, lon) {
                            out.push(gd.data);
                        }
                    }
                },
            );
        }
        if n <= 10_000 {
            let mut k = 0usize;
            g.bench_with_input(BenchmarkId::new("brute_force/mixed", n), &n, |b, _| {
                b.iter(|| {
                    let (lat, lon) = points[k & 4095];
                    k += 1;
                    black_box(index.scan(black_box(lat), black_box(lon)).len())
                })
            });
        }
    }
    g.finish();
}

/// Building the index for 10,000 stores: what a catalog rebuild after a marketer's change
/// costs.
fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("geofence_build");
    g.sample_size(10);
    let mut rng = StdRng::seed_from_u64(42);
    let s = shapes(10_000, &mut rng);
    g.bench_function("10000", |b| {
        b.iter(|| GeofenceIndex::build(black_box(s.clone()), DEFAULT_RESOLUTION).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench, build);
criterion_main!(benches);
