//! What the geofence benchmarks share, and the test that checks the index against brute
//! force on the realistic layout: the timing loop, the fences' bounding boxes for rstar,
//! and the realistic store layout: the real store layout of central Helsinki (1,711
//! OpenStreetMap points of interest, bench/data/helsinki_osm_pois.csv, © OpenStreetMap
//! contributors, ODbL 1.0), copied onto the centres of 64 real European cities, each copy
//! rotated and stretched differently. Shops get circles of 20–80 m (log-uniform); one store
//! in 25 is a mall or a large store: a rotated rectangle of 80–300 m as a GeoJSON polygon.

#![allow(dead_code, reason = "each benchmark and the test use a part of it")]

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};
use nearcast_core::config::Fence;
use nearcast_core::geofence::{GeofenceIndex, Shape};
use rand::Rng;
use rand::rngs::StdRng;
use rstar::primitives::Rectangle;
use std::f64::consts::PI;
use std::hint::black_box;

const POIS: &str = include_str!("../../../../bench/data/helsinki_osm_pois.csv");

/// Metres per degree of latitude.
pub const M_PER_DEG: f64 = 111_195.0;

/// Centres of real cities (lat, lon), in the order copies are placed.
pub const CITIES: [(f64, f64); 64] = [
    (60.170, 24.940),  // Helsinki
    (60.205, 24.655),  // Espoo
    (61.498, 23.761),  // Tampere
    (60.452, 22.267),  // Turku
    (65.012, 25.465),  // Oulu
    (62.242, 25.747),  // Jyväskylä
    (60.983, 25.656),  // Lahti
    (62.892, 27.678),  // Kuopio
    (61.485, 21.797),  // Pori
    (59.329, 18.069),  // Stockholm
    (57.709, 11.975),  // Gothenburg
    (55.605, 13.000),  // Malmö
    (59.913, 10.752),  // Oslo
    (60.391, 5.322),   // Bergen
    (55.676, 12.568),  // Copenhagen
    (56.162, 10.203),  // Aarhus
    (59.437, 24.754),  // Tallinn
    (56.949, 24.105),  // Riga
    (54.687, 25.280),  // Vilnius
    (52.230, 21.012),  // Warsaw
    (50.065, 19.945),  // Kraków
    (52.520, 13.405),  // Berlin
    (53.551, 9.993),   // Hamburg
    (48.137, 11.575),  // Munich
    (50.938, 6.960),   // Cologne
    (50.110, 8.682),   // Frankfurt
    (48.208, 16.373),  // Vienna
    (50.075, 14.438),  // Prague
    (47.498, 19.040),  // Budapest
    (52.368, 4.904),   // Amsterdam
    (51.924, 4.478),   // Rotterdam
    (50.850, 4.352),   // Brussels
    (48.857, 2.352),   // Paris
    (45.764, 4.836),   // Lyon
    (43.297, 5.370),   // Marseille
    (51.507, -0.128),  // London
    (53.481, -2.243),  // Manchester
    (52.486, -1.890),  // Birmingham
    (53.350, -6.260),  // Dublin
    (55.953, -3.189),  // Edinburgh
    (40.417, -3.704),  // Madrid
    (41.385, 2.173),   // Barcelona
    (38.722, -9.139),  // Lisbon
    (41.158, -8.629),  // Porto
    (41.903, 12.496),  // Rome
    (45.464, 9.190),   // Milan
    (40.852, 14.268),  // Naples
    (47.377, 8.541),   // Zurich
    (46.204, 6.143),   // Geneva
    (37.984, 23.728),  // Athens
    (44.426, 26.102),  // Bucharest
    (42.698, 23.322),  // Sofia
    (44.787, 20.457),  // Belgrade
    (45.815, 15.982),  // Zagreb
    (46.057, 14.506),  // Ljubljana
    (48.149, 17.107),  // Bratislava
    (64.147, -21.942), // Reykjavik
    (54.352, 18.646),  // Gdańsk
    (51.108, 17.039),  // Wrocław
    (51.340, 12.375),  // Leipzig
    (51.050, 13.738),  // Dresden
    (48.776, 9.183),   // Stuttgart
    (37.389, -5.984),  // Seville
    (39.470, -0.376),  // Valencia
];

/// The Helsinki points as offsets (east, north) in metres from their centroid.
pub fn offsets() -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    for line in POIS.lines().skip(1) {
        // lat and lon are the third and second fields from the right (names and opening
        // hours may hold quoted commas, so read from the right).
        let f: Vec<&str> = line.rsplitn(4, ',').collect();
        let (Ok(lon), Ok(lat)) = (f[1].parse::<f64>(), f[2].parse::<f64>()) else {
            continue;
        };
        pts.push((lat, lon));
    }
    assert!(pts.len() > 1_700, "read {} points", pts.len());
    let n = pts.len() as f64;
    let (clat, clon) = pts
        .iter()
        .fold((0.0, 0.0), |a, p| (a.0 + p.0 / n, a.1 + p.1 / n));
    pts.iter()
        .map(|(lat, lon)| {
            (
                (lon - clon) * M_PER_DEG * clat.to_radians().cos(),
                (lat - clat) * M_PER_DEG,
            )
        })
        .collect()
}

/// A point `east`, `north` metres from (lat, lon).
pub fn moved(lat: f64, lon: f64, east: f64, north: f64) -> (f64, f64) {
    (
        lat + north / M_PER_DEG,
        lon + east / (M_PER_DEG * lat.to_radians().cos()),
    )
}

/// One store: its shape, and for circles the centre and radius (for near-edge probes).
pub struct Layout {
    /// The stores' shapes.
    pub shapes: Vec<Shape>,
    /// The circles' centres and radii, for near-edge probes.
    pub circles: Vec<(f64, f64, f64)>,
}

pub fn layout(n: usize, rng: &mut StdRng) -> Layout {
    let base = offsets();
    let mut shapes = Vec::with_capacity(n);
    let mut circles = Vec::new();
    'cities: for &(clat, clon) in CITIES.iter().cycle() {
        let angle = rng.random_range(0.0..2.0 * PI);
        let stretch = rng.random_range(0.8..1.6);
        let (sin, cos) = angle.sin_cos();
        for &(e, no) in &base {
            if shapes.len() == n {
                break 'cities;
            }
            let (e, no) = (
                stretch * (e * cos - no * sin) + rng.random_range(-10.0..10.0),
                stretch * (e * sin + no * cos) + rng.random_range(-10.0..10.0),
            );
            let (lat, lon) = moved(clat, clon, e, no);
            if shapes.len() % 25 == 24 {
                // A mall or a large store: a rotated rectangle.
                let (w, h) = (
                    rng.random_range(80.0..300.0) / 2.0,
                    rng.random_range(80.0..200.0) / 2.0,
                );
                let a = rng.random_range(0.0..PI);
                let (s, c) = a.sin_cos();
                let mut ring: Vec<[f64; 2]> = [(-w, -h), (w, -h), (w, h), (-w, h), (-w, -h)]
                    .iter()
                    .map(|&(x, y)| {
                        let (plat, plon) = moved(lat, lon, x * c - y * s, x * s + y * c);
                        [plon, plat]
                    })
                    .collect();
                ring[4] = ring[0];
                let fence = Fence::Polygon {
                    geometry: serde_json::json!({"type": "Polygon", "coordinates": [ring]}),
                };
                shapes.push(Shape::from_fence(&fence).expect("a rectangle is a valid polygon"));
            } else {
                let radius_m = (rng.random_range(20f64.ln()..80f64.ln())).exp();
                shapes.push(Shape::Circle { lat, lon, radius_m });
                circles.push((lat, lon, radius_m));
            }
        }
    }
    Layout { shapes, circles }
}

pub fn bbox(s: &Shape) -> Rectangle<[f64; 2]> {
    match s {
        Shape::Circle { lat, lon, radius_m } => {
            let dlat = radius_m / M_PER_DEG;
            let dlon = dlat / lat.to_radians().cos();
            Rectangle::from_corners([lon - dlon, lat - dlat], [lon + dlon, lat + dlat])
        }
        Shape::Polygon { bbox, .. } => {
            Rectangle::from_corners([bbox.min().x, bbox.min().y], [bbox.max().x, bbox.max().y])
        }
    }
}

/// A probe, (lat, lon).
pub type Point = (f64, f64);

/// The three probe sets of `n` points each: hits, near edge, misses.
pub fn probes(
    l: &Layout,
    index: &GeofenceIndex,
    cities: usize,
    n: usize,
    rng: &mut StdRng,
) -> [Vec<Point>; 3] {
    let mut hits = Vec::with_capacity(n);
    while hits.len() < n {
        let f = rng.random_range(0..l.shapes.len());
        let p = match &l.shapes[f] {
            Shape::Circle { lat, lon, radius_m } => {
                let r = radius_m * rng.random_range(0.0f64..1.0).sqrt();
                let a = rng.random_range(0.0..2.0 * PI);
                moved(*lat, *lon, r * a.cos(), r * a.sin())
            }
            Shape::Polygon { bbox, .. } => (
                rng.random_range(bbox.min().y..bbox.max().y),
                rng.random_range(bbox.min().x..bbox.max().x),
            ),
        };
        // A point of a polygon's box outside the rotated rectangle is no hit.
        if !index.lookup(p.0, p.1).is_empty() {
            hits.push(p);
        }
    }
    let near: Vec<Point> = (0..n)
        .map(|_| {
            let (lat, lon, r) = l.circles[rng.random_range(0..l.circles.len())];
            let d = r + rng.random_range(-5.0..15.0);
            let a = rng.random_range(0.0..2.0 * PI);
            moved(lat, lon, d * a.cos(), d * a.sin())
        })
        .collect();
    let mut misses = Vec::with_capacity(n);
    while misses.len() < n {
        let (clat, clon) = CITIES[rng.random_range(0..cities)];
        let r = 3_000.0 * rng.random_range(0.0f64..1.0).sqrt();
        let a = rng.random_range(0.0..2.0 * PI);
        let p = moved(clat, clon, r * a.cos(), r * a.sin());
        if index.lookup(p.0, p.1).is_empty() {
            misses.push(p);
        }
    }
    [hits, near, misses]
}

/// Times `lookup` over `pts` in turn, one probe an iteration.
pub fn time(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    n: usize,
    pts: &[Point],
    lookup: impl Fn(f64, f64, &mut Vec<u32>),
) {
    let mut out = Vec::with_capacity(16);
    let mut k = 0usize;
    g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
        b.iter(|| {
            let (lat, lon) = pts[k % pts.len()];
            k += 1;
            out.clear();
            lookup(black_box(lat), black_box(lon), &mut out);
            black_box(out.len())
        })
    });
}
