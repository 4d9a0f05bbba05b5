//! Invariant 1, geofence recall: every fence that contains a point is found. Checked
//! against an independent brute-force oracle (geo's haversine distance and geo's polygon
//! containment) on random circles, polygons and points, including fences that straddle the
//! antimeridian and fences next to the poles.

use super::*;
use geo::{Distance, Haversine, Point};
use proptest::prelude::*;

/// Oracle: the fences holding the point, by geo's own haversine and containment, with no
/// index at all. Points within a millimetre of a circle's edge are left out of the
/// comparison (two haversine implementations may round differently there).
fn oracle(shapes: &[Shape], lat: f64, lon: f64) -> (Vec<u32>, Vec<u32>) {
    let mut inside = Vec::new();
    let mut borderline = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        match s {
            Shape::Circle {
                lat: clat,
                lon: clon,
                radius_m,
            } => {
                let d = Haversine.distance(Point::new(*clon, *clat), Point::new(lon, lat));
                if (d - radius_m).abs() < 1e-3 {
                    borderline.push(i as u32);
                } else if d < *radius_m {
                    inside.push(i as u32);
                }
            }
            Shape::Polygon { geom, .. } => {
                if geom.intersects(&Point::new(lon, lat)) {
                    inside.push(i as u32);
                }
            }
        }
    }
    (inside, borderline)
}

fn check(shapes: Vec<Shape>, points: &[(f64, f64)]) -> Result<(), TestCaseError> {
    let idx = GeofenceIndex::build(shapes, DEFAULT_RESOLUTION).expect("valid shapes");
    // The same index as a cold start reads it from a snapshot: lean square entries, every
    // candidate tested exactly, the same answers to the last fence, borderline included.
    let lean = idx.through_snapshot();
    for &(lat, lon) in points {
        let got = idx.lookup(lat, lon);
        prop_assert_eq!(
            &lean.lookup(lat, lon),
            &got,
            "lean, point ({}, {})",
            lat,
            lon
        );
        let (want, borderline) = oracle(idx.shapes(), lat, lon);
        let got_clear: Vec<u32> = got
            .iter()
            .copied()
            .filter(|f| !borderline.contains(f))
            .collect();
        prop_assert_eq!(&got_clear, &want, "point ({}, {})", lat, lon);
        // The per-fence test alone (what other candidate filters are compared with) agrees
        // with the oracle on every fence, not only on the index's candidates.
        for f in 0..idx.shapes().len() as u32 {
            if !borderline.contains(&f) {
                prop_assert_eq!(
                    idx.fence_contains(f, lat, lon),
                    want.contains(&f),
                    "fence {} at ({}, {})",
                    f,
                    lat,
                    lon
                );
            }
        }
    }
    Ok(())
}

/// Moves `d_north`, `d_east` metres from a point, wrapping the longitude.
fn offset(lat: f64, lon: f64, d_north: f64, d_east: f64) -> (f64, f64) {
    let dlat = d_north / EARTH_RADIUS_M * 180.0 / std::f64::consts::PI;
    let nlat = (lat + dlat).clamp(-89.9999, 89.9999);
    let dlon = d_east / (EARTH_RADIUS_M * nlat.to_radians().cos().max(1e-6)) * 180.0
        / std::f64::consts::PI;
    let mut nlon = lon + dlon;
    while nlon > 180.0 {
        nlon -= 360.0;
    }
    while nlon < -180.0 {
        nlon += 360.0;
    }
    (nlat, nlon)
}

/// Anchors: ordinary places, the antimeridian on both sides, and near both poles.
fn anchor() -> impl Strategy<Value = (f64, f64)> {
    prop_oneof![
        (59.9..60.5f64, 24.5..25.5f64),
        (-60.0..60.0f64, 179.99..180.0f64),
        (-60.0..60.0f64, -180.0..-179.99f64),
        (88.0..89.99f64, -180.0..180.0f64),
        (-89.99..-88.0f64, -180.0..180.0f64),
        (-80.0..80.0f64, -180.0..180.0f64),
    ]
}

/// A random small polygon (star-shaped, so simple) around a centre, not crossing the
/// antimeridian (RFC 7946 asks such polygons to be cut).
fn polygon_around(lat: f64, lon: f64, radii: &[f64]) -> Option<Shape> {
    let n = radii.len();
    let mut coords = Vec::with_capacity(n + 1);
    for (k, r) in radii.iter().enumerate() {
        let a = std::f64::consts::TAU * k as f64 / n as f64;
        let (plat, plon) = offset(lat, lon, r * a.cos(), r * a.sin());
        coords.push(Coord { x: plon, y: plat });
    }
    if coords.windows(2).any(|w| (w[0].x - w[1].x).abs() > 180.0)
        || (coords[0].x - coords[n - 1].x).abs() > 180.0
    {
        return None;
    }
    coords.push(coords[0]);
    let geom = MultiPolygon::new(vec![Polygon::new(LineString::new(coords), vec![])]);
    use geo::Validation;
    if !geom.is_valid() {
        return None;
    }
    let bbox = geom.bounding_rect()?;
    Some(Shape::Polygon { geom, bbox })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn circles_are_found_wherever_they_are(
        fences in prop::collection::vec((anchor(), 5.0..2_000.0f64), 1..12),
        probes in prop::collection::vec((0usize..64, -1.5..1.5f64, 0.0..std::f64::consts::TAU), 1..64),
    ) {
        let shapes: Vec<Shape> = fences.iter()
            .map(|&((lat, lon), r)| Shape::Circle { lat, lon, radius_m: r })
            .collect();
        // Probe points at a random fraction (0 to 1.5) of a random fence's radius from its centre.
        let points: Vec<(f64, f64)> = probes.iter().map(|&(k, frac, angle)| {
            let ((lat, lon), r) = fences[k % fences.len()];
            offset(lat, lon, frac.abs() * r * angle.cos(), frac.abs() * r * angle.sin())
        }).collect();
        check(shapes, &points)?;
    }

    #[test]
    fn polygons_are_found_wherever_they_are(
        fences in prop::collection::vec((anchor(), prop::collection::vec(20.0..1_500.0f64, 3..12)), 1..6),
        probes in prop::collection::vec((0usize..64, -1.3..1.3f64, 0.0..std::f64::consts::TAU), 1..64),
    ) {
        let mut kept = Vec::new();
        let mut shapes = Vec::new();
        for ((lat, lon), radii) in &fences {
            if let Some(s) = polygon_around(*lat, *lon, radii) {
                kept.push((*lat, *lon, radii.iter().cloned().fold(0.0, f64::max)));
                shapes.push(s);
            }
        }
        prop_assume!(!shapes.is_empty());
        let points: Vec<(f64, f64)> = probes.iter().map(|&(k, frac, angle)| {
            let (lat, lon, r) = kept[k % kept.len()];
            offset(lat, lon, frac.abs() * r * angle.cos(), frac.abs() * r * angle.sin())
        }).collect();
        check(shapes, &points)?;
    }
}

/// One change to a [`FenceSet`]: a fence put at a position (added or moved), or removed.
#[derive(Debug, Clone)]
enum Change {
    Put(usize, (f64, f64), f64, bool),
    Remove(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (0usize..16, anchor(), 5.0..5_000.0f64, any::<bool>())
            .prop_map(|(p, at, r, poly)| Change::Put(p, at, r, poly)),
        1 => (0usize..16).prop_map(Change::Remove),
    ]
}

fn shape_at((lat, lon): (f64, f64), r: f64, polygon: bool) -> Shape {
    if polygon && let Some(s) = polygon_around(lat, lon, &[r, r * 0.6, r * 0.9, r * 0.7, r]) {
        return s;
    }
    Shape::Circle {
        lat,
        lon,
        radius_m: r,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Single fence changes applied to a built index (fences added at new positions, moved,
    /// removed, removed twice, put back, small and large, circles and polygons, across the
    /// antimeridian and by the poles) answer every lookup as the fences they leave would,
    /// by the oracle: nothing stale, nothing missed, each once and in order. A copy taken
    /// before the changes still answers as before them.
    #[test]
    fn single_fence_changes_answer_as_the_fences_they_leave(
        base in prop::collection::vec((anchor(), 5.0..5_000.0f64, any::<bool>()), 0..8),
        changes in prop::collection::vec(change(), 1..24),
        probes in prop::collection::vec((-1.5..1.5f64, 0.0..std::f64::consts::TAU), 8),
    ) {
        let mut model: Vec<Option<Shape>> =
            base.iter().map(|&(at, r, poly)| Some(shape_at(at, r, poly))).collect();
        let built = GeofenceIndex::build(model.iter().flatten().cloned().collect(), DEFAULT_RESOLUTION)
            .expect("valid shapes");
        let before = FenceSet::new(built);
        let mut set = before.clone();
        // Every place a fence ever was: probe around each.
        let mut places: Vec<(f64, f64, f64)> =
            base.iter().map(|&((lat, lon), r, _)| (lat, lon, r)).collect();
        for c in &changes {
            match c {
                Change::Put(p, at, r, poly) => {
                    let shape = shape_at(*at, *r, *poly);
                    if model.len() <= *p {
                        model.resize(*p + 1, None);
                    }
                    model[*p] = Some(shape.clone());
                    set.set(*p as u32, shape).expect("small position");
                    places.push((at.0, at.1, *r));
                }
                Change::Remove(p) => {
                    if let Some(m) = model.get_mut(*p) {
                        *m = None;
                    }
                    set.remove(*p as u32);
                }
            }
        }
        let live: Vec<Shape> = model.iter().map(|m| m.clone().unwrap_or(Shape::Circle {
            // A hole: a fence no probe can be in (the oracle skips it below).
            lat: 0.0, lon: 0.0, radius_m: 1e-9,
        })).collect();
        for &(lat, lon, r) in &places {
            for &(frac, angle) in &probes {
                let (plat, plon) = offset(lat, lon, frac.abs() * r * angle.cos(), frac.abs() * r * angle.sin());
                let (mut want, borderline) = oracle(&live, plat, plon);
                want.retain(|f| model[*f as usize].is_some());
                let got: Vec<u32> = set.lookup(plat, plon).into_iter().filter(|f| !borderline.contains(f)).collect();
                prop_assert_eq!(&got, &want, "after the changes, at ({}, {})", plat, plon);
                prop_assert!(set.lookup(plat, plon).windows(2).all(|w| w[0] < w[1]), "ascending, each once");
                let old: Vec<u32> = before.lookup(plat, plon).into_iter().filter(|f| !borderline.contains(f)).collect();
                let (mut want_old, _) = oracle(&base.iter().map(|&(at, r, poly)| shape_at(at, r, poly)).collect::<Vec<_>>(), plat, plon);
                want_old.retain(|f| !borderline.contains(f));
                prop_assert_eq!(&old, &want_old, "the copy before the changes, at ({}, {})", plat, plon);
            }
        }
        for (p, m) in model.iter().enumerate() {
            prop_assert_eq!(set.shape(p as u32).is_some(), m.is_some(), "shape at {}", p);
        }
    }
}

#[test]
fn a_circle_across_the_antimeridian_is_found_on_both_sides() {
    let idx = GeofenceIndex::build(
        vec![Shape::Circle {
            lat: 10.0,
            lon: 179.9995,
            radius_m: 300.0,
        }],
        DEFAULT_RESOLUTION,
    )
    .unwrap();
    assert_eq!(idx.lookup(10.0, -179.999), vec![0]);
    assert_eq!(idx.lookup(10.0, 179.998), vec![0]);
    assert!(idx.lookup(10.0, -179.99).is_empty());
}

#[test]
fn a_circle_around_the_pole_is_found() {
    let idx = GeofenceIndex::build(
        vec![Shape::Circle {
            lat: 89.999,
            lon: 0.0,
            radius_m: 500.0,
        }],
        DEFAULT_RESOLUTION,
    )
    .unwrap();
    assert_eq!(idx.lookup(90.0, 123.0), vec![0]);
    assert_eq!(idx.lookup(89.998, 180.0), vec![0]);
}

#[test]
fn lookup_matches_scan_on_a_dense_grid_of_real_sized_fences() {
    // 400 fences of 30-300 m in a 2 x 2 km downtown, probed on a 25 m grid.
    let mut shapes = Vec::new();
    for i in 0..400 {
        let (lat, lon) = offset(
            60.16,
            24.93,
            (i % 20) as f64 * 100.0,
            (i / 20) as f64 * 100.0,
        );
        shapes.push(Shape::Circle {
            lat,
            lon,
            radius_m: 30.0 + (i * 37 % 270) as f64,
        });
    }
    let idx = GeofenceIndex::build(shapes, DEFAULT_RESOLUTION).unwrap();
    let lean = idx.through_snapshot();
    for a in 0..80 {
        for b in 0..80 {
            let (lat, lon) = offset(60.16, 24.93, a as f64 * 25.0 - 50.0, b as f64 * 25.0 - 50.0);
            let want = idx.scan(lat, lon);
            assert_eq!(idx.lookup(lat, lon), want, "at ({lat}, {lon})");
            assert_eq!(lean.lookup(lat, lon), want, "lean, at ({lat}, {lon})");
        }
    }
}

/// Every square a fence claims whole (a lookup there accepts the fence untested) is inside
/// it at every point of a fine grid over the square, edges and corners included; and
/// squares are claimed whole often enough to matter.
#[test]
fn a_square_claimed_whole_is_inside_its_fence_everywhere() {
    let mut shapes = Vec::new();
    for i in 0..60 {
        let (lat, lon) = offset(60.16, 24.93, (i % 6) as f64 * 400.0, (i / 6) as f64 * 400.0);
        shapes.push(Shape::Circle {
            lat,
            lon,
            radius_m: 40.0 + (i * 53 % 400) as f64,
        });
        if let Some(p) = polygon_around(lat + 0.001, lon, &[150.0, 320.0, 200.0, 260.0, 90.0]) {
            shapes.push(p);
        }
    }
    let idx = GeofenceIndex::build(shapes, DEFAULT_RESOLUTION).unwrap();
    let mut whole = 0;
    for (&key, &(start, len)) in &idx.squares {
        let (a, b) = ((key >> 32) as i64, (key & 0xffff_ffff) as i64);
        for e in idx
            .square_fences
            .get(start, len)
            .iter()
            .map(SquareEntry::from_bytes)
        {
            if !e.entry.full() {
                continue;
            }
            whole += 1;
            let fence = e.entry.fence();
            let shape = &idx.shapes()[fence as usize];
            for i in 0..=8 {
                for j in 0..=8 {
                    let lat = (a as f64 + i as f64 / 8.0) / GRID - 90.0;
                    let lon = (b as f64 + j as f64 / 8.0) / GRID - 180.0;
                    assert!(shape.contains(lat, lon), "fence {fence} at ({lat}, {lon})");
                }
            }
        }
    }
    assert!(whole > 100, "only {whole} squares claimed whole");
}

/// A square entry's own pre-test (single precision, in the square's units) never
/// contradicts the exact test, even for the largest circles still listed per square (whose
/// centres lie farthest from the squares they mark) and at high latitudes: checked at every
/// point of a fine grid over every square of every such circle. And it settles most points,
/// or it would save nothing.
#[test]
fn a_square_entry_pre_test_never_contradicts_the_exact_test() {
    let mut shapes = Vec::new();
    for (i, &(lat, lon)) in [(60.17, 24.94), (-33.9, 151.2), (78.2, 15.6), (0.0, 179.99)]
        .iter()
        .enumerate()
    {
        for (k, r) in [1.0, 7.5, 45.0, 300.0, 900.0].iter().enumerate() {
            let (lat, lon) = offset(lat, lon, (k as f64) * 3000.0, (i as f64) * 10.0);
            shapes.push(Shape::Circle {
                lat,
                lon,
                radius_m: *r,
            });
        }
    }
    let idx = GeofenceIndex::build(shapes, DEFAULT_RESOLUTION).unwrap();
    let (mut settled, mut total) = (0u64, 0u64);
    for (&key, &(start, len)) in &idx.squares {
        let (a, b) = ((key >> 32) as i64, (key & 0xffff_ffff) as i64);
        for e in idx
            .square_fences
            .get(start, len)
            .iter()
            .map(SquareEntry::from_bytes)
        {
            let shape = &idx.shapes()[e.entry.fence() as usize];
            for i in 0..16 {
                for j in 0..16 {
                    let (y, x) = (i as f64 / 16.0 + 1.0 / 32.0, j as f64 / 16.0 + 1.0 / 32.0);
                    let lat = (a as f64 + y) / GRID - 90.0;
                    let lon = (b as f64 + x) / GRID - 180.0;
                    total += 1;
                    if let Some(inside) = e.test(y as f32, x as f32) {
                        settled += 1;
                        assert_eq!(
                            inside,
                            shape.contains(lat, lon),
                            "{shape:?} at ({lat}, {lon})"
                        );
                    }
                }
            }
        }
    }
    assert!(
        settled * 10 > total * 8,
        "the pre-test settled only {settled} of {total}"
    );
}

#[test]
fn geojson_errors_name_the_position() {
    let bad = serde_json::json!({"type": "Polygon", "coordinates": [[[24.9, 60.1], [24.91, 60.1], [24.91, 95.0], [24.9, 60.1]]]});
    assert_eq!(
        parse_geojson(&bad).unwrap_err().field,
        "coordinates[0][2][1]"
    );
    let open = serde_json::json!({"type": "Polygon", "coordinates": [[[24.9, 60.1], [24.91, 60.1], [24.91, 60.11], [24.9, 60.2]]]});
    assert_eq!(parse_geojson(&open).unwrap_err().field, "coordinates[0]");
    let bowtie = serde_json::json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]});
    assert_eq!(parse_geojson(&bowtie).unwrap_err().field, "coordinates");
    let point = serde_json::json!({"type": "Point", "coordinates": [0, 0]});
    assert_eq!(parse_geojson(&point).unwrap_err().field, "type");
    let across = serde_json::json!({"type": "Polygon", "coordinates": [[[179.9, 0], [-179.9, 0], [-179.9, 1], [179.9, 1], [179.9, 0]]]});
    assert_eq!(
        parse_geojson(&across).unwrap_err().field,
        "coordinates[0][1]"
    );
}
