//! The geofence index on real store density: the Helsinki layout of the benchmarks
//! (OpenStreetMap, ODbL 1.0; `benches/common`) at 10,000 stores, with hit, near-edge and
//! miss probes, answers exactly as brute force, and so does the per-fence test the R-tree
//! side of the benchmarks uses.

#[path = "../benches/common/mod.rs"]
mod common;

use common::{layout, probes};
use nearcast_core::geofence::{DEFAULT_RESOLUTION, GeofenceIndex, Shape};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[test]
fn on_real_store_density_the_index_answers_as_brute_force() {
    let mut rng = StdRng::seed_from_u64(11);
    let l = layout(10_000, &mut rng);
    assert_eq!(l.shapes.len(), 10_000);
    let index = GeofenceIndex::build(l.shapes.clone(), DEFAULT_RESOLUTION).unwrap();
    let [hits, near, misses] = probes(&l, &index, 6, 512, &mut rng);
    let mut fences_over_hits = 0;
    let mut polygon_hits = 0;
    for (set, &(lat, lon)) in [&hits, &near, &misses]
        .into_iter()
        .enumerate()
        .flat_map(|(k, s)| s.iter().map(move |p| (k, p)))
    {
        let want = index.scan(lat, lon);
        assert_eq!(
            index.lookup(lat, lon),
            want,
            "probe set {set} at {lat},{lon}"
        );
        for f in 0..l.shapes.len() as u32 {
            assert_eq!(
                index.fence_contains(f, lat, lon),
                want.binary_search(&f).is_ok(),
                "fence {f} at {lat},{lon}"
            );
        }
        match set {
            0 => {
                assert!(!want.is_empty(), "a hit probe in no fence at {lat},{lon}");
                fences_over_hits += want.len();
                let polygon = |f: &u32| matches!(l.shapes[*f as usize], Shape::Polygon { .. });
                polygon_hits += usize::from(want.iter().any(polygon));
            }
            2 => assert!(want.is_empty(), "a miss probe in fences {want:?}"),
            _ => {}
        }
    }
    // The layout is as dense as the benchmark reports (about 13 fences over a hit), and
    // malls (polygons) are among the fences hit.
    let mean = fences_over_hits as f64 / hits.len() as f64;
    assert!((5.0..30.0).contains(&mean), "{mean} fences per hit");
    assert!(polygon_hits > 0);
}
