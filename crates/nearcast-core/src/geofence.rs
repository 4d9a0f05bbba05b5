//! The H3 geofence index: which fences contain a point.
//!
//! # How it works
//! Every fence is compiled once into the set of H3 cells (at one resolution, 9 by default)
//! that *may* hold a point of the fence, each flagged "fully inside" or "partial":
//!
//! * **Circles** are covered by a flood fill from the centre's cell. A cell joins when the
//!   haversine distance from the circle's centre to the cell's centre is at most the radius
//!   plus the cell's circumradius (the farthest boundary vertex from its centre). A point of
//!   the cell is never farther from the cell's centre than that vertex (a spherical cap
//!   smaller than a hemisphere is convex), so no cell holding a point of the circle is
//!   missed. A cell whose vertices are all inside the circle is fully inside. The flood fill
//!   walks H3 neighbours, so it is indifferent to the antimeridian and the poles.
//! * **Polygons** go through h3o's tiler in `Covers` mode (every cell whose boundary touches
//!   the polygon, or that holds it whole), then every partial cell is dilated by one ring.
//!   The ring absorbs the difference between H3's geodesic cell edges and the planar edges
//!   in which the tiler and the GeoJSON containment test work.
//!
//! Lookups then go through one of two paths:
//!
//! * **Small fences** (the retail case; their bounding box spans at most
//!   [`MAX_FINE_SQUARES`] squares of a 1/1024° latitude/longitude grid, about 110 × 55 m in
//!   Helsinki) are answered from per-square candidate lists: a square lists every fence
//!   that may hold a point of it (for a circle, the square's point nearest the centre is
//!   within the radius; for a polygon, geo's planar intersection, the plane of the point
//!   test), and flags the fences that hold all of it, which a lookup accepts untested. The
//!   lists are as tight as the shapes allow: a square of a dense downtown lists the fences
//!   that actually reach it, not every fence of the H3 cells around it (an earlier version
//!   derived the lists from the H3 covers; its lists were several times longer and lost to
//!   an R-tree on dense maps). A lookup is two float-to-integer conversions, one hash
//!   probe, and a planar pre-test per listed fence, which settles almost all of them; each
//!   list entry carries its fence's pre-test in the square's own units, so one square's
//!   candidates are read from a few adjacent cache lines. Most fixes are near no fence and
//!   stop at the probe.
//! * **Large fences** (and fences around a pole) are looked up from the fix's own H3 cell:
//!   one point-to-cell conversion (about 0.4 µs), a hash probe, fully-inside entries
//!   accepted at once, exact tests on the partial ones. A 1° pre-filter keeps fixes far
//!   from any large fence off this path.
//!
//! The exact test is the haversine distance for circles, after a planar pre-test that
//! settles points well inside or well outside without trigonometry, and point-in-polygon
//! with geo after a bounding-box test for polygons. Recall is exact by construction and is
//! checked against a brute-force oracle by property tests (`tests` below). The benchmark
//! (`benches/geofence_lookup.rs`) compares the index with an rstar R-tree and a brute-force
//! scan.
//!
//! # Resolution and grid
//! The H3 path (large fences) uses resolution 9 cells, of about 174 m mean edge (0.1 km²):
//! a large fence covers many, most of them "fully inside" (no exact test). The square grid
//! of small fences is 1/1024°: measured on the realistic benchmark, 1/2048° and 1/4096°
//! squares made lookups at 100k fences no faster (memory, not tests, bounds them there)
//! while building took 1.4 and 5 times as long (docs/performance.md).

use crate::FieldError;
use crate::config::{Fence, MAX_VERTICES};
use geo::{BoundingRect, Coord, Intersects, LineString, MultiPolygon, Point, Polygon, Rect};
use h3o::geom::{ContainmentMode, TilerBuilder};
use h3o::{CellIndex, LatLng, Resolution};
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Mean Earth radius (IUGG R1), metres; the same sphere geo's `Haversine` uses.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Default index resolution.
pub const DEFAULT_RESOLUTION: Resolution = Resolution::Nine;

/// Haversine distance in metres between two points given in degrees.
#[inline]
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp * 0.5).sin().powi(2) + p1.cos() * p2.cos() * (dl * 0.5).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// A compiled fence shape.
#[derive(Debug, Clone)]
pub enum Shape {
    /// A circle.
    Circle {
        /// Centre latitude, degrees.
        lat: f64,
        /// Centre longitude, degrees.
        lon: f64,
        /// Radius, metres.
        radius_m: f64,
    },
    /// A (multi)polygon in `[lon, lat]` degrees with its bounding box.
    Polygon {
        /// The geometry.
        geom: MultiPolygon<f64>,
        /// Its bounding box, for a cheap pre-test.
        bbox: Rect<f64>,
    },
}

impl Shape {
    /// Compiles a validated fence configuration.
    ///
    /// # Errors
    /// When the polygon geometry is invalid.
    pub fn from_fence(fence: &Fence) -> Result<Shape, FieldError> {
        match fence {
            Fence::Circle { lat, lon, radius_m } => Ok(Shape::Circle {
                lat: *lat,
                lon: *lon,
                radius_m: *radius_m,
            }),
            Fence::Polygon { geometry } => {
                let geom = parse_geojson(geometry)?;
                let bbox = geom
                    .bounding_rect()
                    .ok_or_else(|| FieldError::new("", "polygon is empty"))?;
                Ok(Shape::Polygon { geom, bbox })
            }
        }
    }

    /// Whether the shape holds the point (boundary included).
    #[inline]
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        match self {
            Shape::Circle {
                lat: clat,
                lon: clon,
                radius_m,
            } => haversine_m(*clat, *clon, lat, lon) <= *radius_m,
            Shape::Polygon { geom, bbox } => {
                let c = Coord { x: lon, y: lat };
                bbox.intersects(&c) && geom.intersects(&c)
            }
        }
    }

    /// How far outside the shape the point is, in metres (0 inside).
    pub fn distance_outside_m(&self, lat: f64, lon: f64) -> f64 {
        match self {
            Shape::Circle {
                lat: clat,
                lon: clon,
                radius_m,
            } => (haversine_m(*clat, *clon, lat, lon) - radius_m).max(0.0),
            Shape::Polygon { geom, .. } => {
                if self.contains(lat, lon) {
                    return 0.0;
                }
                use geo::{Closest, HaversineClosestPoint};
                match geom.haversine_closest_point(&Point::new(lon, lat)) {
                    Closest::Intersection(_) => 0.0,
                    Closest::SinglePoint(p) => haversine_m(lat, lon, p.y(), p.x()),
                    Closest::Indeterminate => f64::INFINITY,
                }
            }
        }
    }

    /// How far inside the shape the point is: its distance to the nearest edge, in metres
    /// (0 outside).
    pub fn depth_m(&self, lat: f64, lon: f64) -> f64 {
        match self {
            Shape::Circle {
                lat: clat,
                lon: clon,
                radius_m,
            } => (radius_m - haversine_m(*clat, *clon, lat, lon)).max(0.0),
            Shape::Polygon { geom, .. } => {
                use geo::{Closest, Contains, HaversineClosestPoint};
                let c = Coord { x: lon, y: lat };
                let p = Point::new(lon, lat);
                let mut best = 0.0f64;
                for poly in geom.iter().filter(|poly| poly.contains(&c)) {
                    let mut d = f64::INFINITY;
                    for ring in std::iter::once(poly.exterior()).chain(poly.interiors()) {
                        if let Closest::SinglePoint(q) | Closest::Intersection(q) =
                            ring.haversine_closest_point(&p)
                        {
                            d = d.min(haversine_m(lat, lon, q.y(), q.x()));
                        }
                    }
                    if d.is_finite() {
                        best = best.max(d);
                    }
                }
                best
            }
        }
    }
}

/// Parses a GeoJSON `Polygon` or `MultiPolygon` geometry object (RFC 7946).
///
/// Positions are `[lon, lat]` (an optional third element, altitude, is ignored). Rings must
/// be closed with at least four positions; polygons must be valid (no self-intersection,
/// holes inside the shell) and must not cross the antimeridian: RFC 7946 §3.1.9 asks for
/// such shapes to be cut in two, which a `MultiPolygon` expresses.
///
/// # Errors
/// A [`FieldError`] whose field is the path inside the geometry (`coordinates[0][3][1]`).
pub fn parse_geojson(v: &Value) -> Result<MultiPolygon<f64>, FieldError> {
    let mut f = crate::event::Fields::of(v)?;
    let ty = f.str("type", 32)?;
    let coords = f.req("coordinates")?;
    f.finish()?;
    let mut budget = MAX_VERTICES;
    let polys = match ty {
        "Polygon" => vec![parse_polygon(coords, &mut budget).map_err(|e| e.within("coordinates"))?],
        "MultiPolygon" => {
            let arr = array(coords).map_err(|e| e.within("coordinates"))?;
            if arr.is_empty() {
                return Err(FieldError::new(
                    "coordinates",
                    "must hold at least one polygon",
                ));
            }
            arr.iter()
                .enumerate()
                .map(|(i, p)| {
                    parse_polygon(p, &mut budget)
                        .map_err(|e| e.within(&format!("coordinates[{i}]")))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        other => {
            return Err(FieldError::new(
                "type",
                format!("must be \"Polygon\" or \"MultiPolygon\", got {other:?}"),
            ));
        }
    };
    let mp = MultiPolygon::new(polys);
    use geo::Validation;
    if let Err(e) = mp.check_validation() {
        return Err(FieldError::new(
            "coordinates",
            format!("invalid polygon: {e}"),
        ));
    }
    Ok(mp)
}

fn array(v: &Value) -> Result<&Vec<Value>, FieldError> {
    v.as_array().ok_or_else(|| {
        FieldError::new(
            "",
            format!("must be an array, got {}", crate::event::kind_of(v)),
        )
    })
}

fn parse_polygon(v: &Value, budget: &mut usize) -> Result<Polygon<f64>, FieldError> {
    let rings = array(v)?;
    if rings.is_empty() {
        return Err(FieldError::new("", "a polygon needs an exterior ring"));
    }
    let mut parsed = Vec::with_capacity(rings.len());
    for (ri, ring) in rings.iter().enumerate() {
        let at = format!("[{ri}]");
        let pts = array(ring).map_err(|e| e.within(&at))?;
        if pts.len() < 4 {
            return Err(FieldError::new(
                at,
                format!("a ring needs at least 4 positions, got {}", pts.len()),
            ));
        }
        if pts.len() > *budget {
            return Err(FieldError::new(
                at,
                format!("polygons may have at most {MAX_VERTICES} positions in all"),
            ));
        }
        *budget -= pts.len();
        let mut coords = Vec::with_capacity(pts.len());
        for (pi, p) in pts.iter().enumerate() {
            // The path only when there is an error to name (a fence has thousands of
            // positions, and a cold start reads thousands of fences).
            let at = || format!("[{ri}][{pi}]");
            let pos = array(p).map_err(|e| e.within(&at()))?;
            if pos.len() < 2 || pos.len() > 3 {
                return Err(FieldError::new(
                    at(),
                    "a position is [lon, lat] or [lon, lat, altitude]",
                ));
            }
            let lon = crate::event::number(&pos[0], -180.0, 180.0)
                .map_err(|e| e.within(&format!("{}[0]", at())))?;
            let lat = crate::event::number(&pos[1], -90.0, 90.0)
                .map_err(|e| e.within(&format!("{}[1]", at())))?;
            if let Some(prev) = coords.last() {
                let prev: &Coord<f64> = prev;
                if (prev.x - lon).abs() > 180.0 {
                    return Err(FieldError::new(
                        at(),
                        "an edge crosses the antimeridian; cut the polygon in two (RFC 7946 §3.1.9)",
                    ));
                }
            }
            coords.push(Coord { x: lon, y: lat });
        }
        if coords.first() != coords.last() {
            return Err(FieldError::new(
                at,
                "a ring must be closed (first position equal to the last)",
            ));
        }
        parsed.push(LineString::new(coords));
    }
    let exterior = parsed.remove(0);
    Ok(Polygon::new(exterior, parsed))
}

/// A hasher for H3 cell indexes: one multiply, since the keys are already well spread.
#[derive(Default, Clone, Copy)]
pub struct CellHasher(u64);

impl Hasher for CellHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing; the high bits feed hashbrown's control bytes, so fold them down.
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

type CellMap<V> = HashMap<u64, V, BuildHasherDefault<CellHasher>>;

/// One fence's claim on a cell: the fence's position and whether the cell is wholly inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry(u32);

impl Entry {
    const FULL: u32 = 1 << 31;
    fn new(fence: u32, full: bool) -> Self {
        Entry(fence | if full { Self::FULL } else { 0 })
    }
    fn fence(self) -> u32 {
        self.0 & !Self::FULL
    }
    fn full(self) -> bool {
        self.0 & Self::FULL != 0
    }
}

/// The geofence index over a set of shapes.
#[derive(Debug, Clone)]
pub struct GeofenceIndex {
    resolution: Resolution,
    shapes: Vec<Shape>,
    /// Square -> range in `square_fences`: for every square of a 1/1024° lat/lon grid
    /// (about 110 × 55 m here) that some small fence may hold a point of, those fences
    /// (with their pre-tests when built), the ones holding all of the square first.
    squares: CellMap<(u32, u32)>,
    square_fences: SquareTable,
    /// Large fences (more than [`MAX_FINE_SQUARES`] squares, or around a pole): H3 cell ->
    /// range in `entries`, looked up from the fix's own cell.
    cells: CellMap<(u32, u32)>,
    entries: Vec<Entry>,
    /// 1° squares near some large fence: only fixes there pay the point-to-cell conversion.
    near_coarse: CellMap<()>,
    /// Per fence (in fence order), the planar pre-test of [`Self::fence_contains`], made
    /// on first use. Lookups do not read it: each square entry carries its own copy.
    quick: std::sync::OnceLock<Vec<Quick>>,
}

/// The base index's square entries as they are stored, in one of two layouts:
///
/// - **with pre-tests** (the build's): [`SquareEntry::BYTES`] little-endian bytes each,
///   the fence entry and its planar pre-test, so that a lookup settles most candidates
///   from one run of memory (what the serving host's throughput rests on);
/// - **lean** (a snapshot's): the fence entry alone, 4 bytes, used where it lies in the
///   snapshot's buffer; a lookup gives every candidate that does not hold the whole square
///   the exact test. At 100,000 stores the pre-tests were 27 of a snapshot's 53 MB, and a
///   cold start pays for every byte twice (the transfer, then a fresh page): a function
///   that decides a few fixes before it is frozen needs the entries, not the shortcut.
///
/// Both give the same answers (the pre-test only settles points the exact test settles
/// the same way).
#[derive(Debug, Clone)]
struct SquareTable {
    buf: std::sync::Arc<Vec<u8>>,
    /// Byte offset of the first entry in `buf`.
    start: usize,
    /// Entries.
    len: usize,
    /// Whether entries are fence entries alone (4 bytes) rather than with pre-tests.
    lean: bool,
}

impl SquareTable {
    /// Bytes of one entry of the lean layout.
    const LEAN_BYTES: usize = 4;

    /// Entries `from..from + n` with pre-tests (in range: checked when the table was
    /// read; the table is not lean).
    #[inline]
    fn get(&self, from: u32, n: u32) -> &[[u8; SquareEntry::BYTES]] {
        let a = self.start + from as usize * SquareEntry::BYTES;
        self.buf[a..a + n as usize * SquareEntry::BYTES]
            .as_chunks()
            .0
    }

    /// Entries `from..from + n` of a lean table.
    #[inline]
    fn get_lean(&self, from: u32, n: u32) -> &[[u8; Self::LEAN_BYTES]] {
        let a = self.start + from as usize * Self::LEAN_BYTES;
        self.buf[a..a + n as usize * Self::LEAN_BYTES].as_chunks().0
    }

    /// Every entry's fence entry, in order, whichever the layout.
    fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        let width = if self.lean {
            Self::LEAN_BYTES
        } else {
            SquareEntry::BYTES
        };
        self.buf[self.start..self.start + self.len * width]
            .chunks_exact(width)
            .map(move |c| {
                let w = if self.lean { &c[0..4] } else { &c[16..20] };
                Entry(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            })
    }
}

/// A small fence's claim on a grid square, with the fence's planar pre-test carried along
/// in the square's own units (1/1024° from its south-west corner, single precision): a
/// lookup reads one square's candidates from one run of memory, a few adjacent cache
/// lines, instead of one far-apart pre-test per candidate (at 100k fences the pre-tests
/// are megabytes, beyond the caches, and those reads were most of a lookup's time).
///
/// Single precision is enough: a circle's centre lies within its bounding box, at most
/// [`MAX_FINE_SQUARES`] squares from any square it marks, where an `f32` is exact to about
/// 1e-4 of a square (a centimetre); the pre-test only settles points more than 5 % of the
/// radius inside or outside, and the exact test decides the rest.
#[derive(Debug, Clone, Copy)]
struct SquareEntry {
    /// The circle's centre, from the square's corner, in squares.
    y: f32,
    x: f32,
    /// Cosine of the centre's latitude (a longitude step in latitude units).
    cos_lat: f32,
    /// (0.95 r)² in squares²; negative when the pre-test is unusable (polygons, circles
    /// where the projection is not accurate enough).
    in2: f32,
    entry: Entry,
}

/// `(1.05 / 0.95)²`: the pre-test's outer bound, (1.05 r)², over its inner one.
const OUT_OVER_IN: f32 = (1.05 / 0.95) * (1.05 / 0.95);

impl SquareEntry {
    /// Bytes of one entry in a [`SquareTable`] with pre-tests.
    const BYTES: usize = 20;

    fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut b = [0; Self::BYTES];
        b[0..4].copy_from_slice(&self.y.to_le_bytes());
        b[4..8].copy_from_slice(&self.x.to_le_bytes());
        b[8..12].copy_from_slice(&self.cos_lat.to_le_bytes());
        b[12..16].copy_from_slice(&self.in2.to_le_bytes());
        b[16..20].copy_from_slice(&self.entry.0.to_le_bytes());
        b
    }

    #[inline(always)]
    fn from_bytes(b: &[u8; Self::BYTES]) -> Self {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        SquareEntry {
            y: f32::from_le_bytes(word(0)),
            x: f32::from_le_bytes(word(4)),
            cos_lat: f32::from_le_bytes(word(8)),
            in2: f32::from_le_bytes(word(12)),
            entry: Entry(u32::from_le_bytes(word(16))),
        }
    }

    /// `q`'s pre-test relative to square `(a, b)` (`b` as the fence's bounding box gave it,
    /// possibly past ±180°).
    fn new(q: &Quick, a: i64, b: i64, entry: Entry) -> Self {
        if !q.usable {
            return SquareEntry {
                y: 0.0,
                x: 0.0,
                cos_lat: 0.0,
                in2: -1.0,
                entry,
            };
        }
        SquareEntry {
            y: ((q.lat + 90.0) * GRID - a as f64) as f32,
            x: ((q.lon + 180.0) * GRID - b as f64) as f32,
            cos_lat: q.cos_lat as f32,
            in2: (q.in2 * GRID * GRID) as f32,
            entry,
        }
    }

    /// `Some(inside)` when the pre-test settles it, for a point at `(y, x)` squares from the
    /// square's corner.
    #[inline]
    fn test(&self, y: f32, x: f32) -> Option<bool> {
        if self.in2 < 0.0 {
            return None;
        }
        let dy = y - self.y;
        let dx = (x - self.x) * self.cos_lat;
        let d2 = dx * dx + dy * dy;
        if d2 < self.in2 {
            Some(true)
        } else if d2 > self.in2 * OUT_OVER_IN {
            Some(false)
        } else {
            None
        }
    }
}

/// A circle's planar pre-test: on a local equirectangular projection, points well inside
/// (distance below 0.95 r) or well outside (above 1.05 r) are settled with a few
/// multiplications; only the thin band between them, and every polygon, gets the exact
/// test. It is used only where the projection's error stays under 2 % (see `usable`).
#[derive(Debug, Clone, Copy)]
struct Quick {
    lat: f64,
    lon: f64,
    cos_lat: f64,
    in2: f64,
    out2: f64,
    usable: bool,
}

impl Quick {
    fn of(shape: &Shape) -> Quick {
        match shape {
            Shape::Circle { lat, lon, radius_m } => {
                let r_deg = radius_m / EARTH_RADIUS_M * 180.0 / std::f64::consts::PI;
                Quick {
                    lat: *lat,
                    lon: *lon,
                    cos_lat: lat.to_radians().cos(),
                    in2: (0.95 * r_deg).powi(2),
                    out2: (1.05 * r_deg).powi(2),
                    // The projection's relative error grows like r·tan(lat); keep it under 2 %.
                    usable: lat.abs() < 85.0
                        && r_deg < 0.5
                        && r_deg.to_radians() * lat.abs().to_radians().tan() < 0.02,
                }
            }
            Shape::Polygon { .. } => Quick {
                lat: 0.0,
                lon: 0.0,
                cos_lat: 0.0,
                in2: 0.0,
                out2: 0.0,
                usable: false,
            },
        }
    }

    /// `Some(inside)` when the pre-test settles it.
    #[inline]
    fn test(&self, lat: f64, lon: f64) -> Option<bool> {
        if !self.usable {
            return None;
        }
        let mut dlon = lon - self.lon;
        if dlon > 180.0 {
            dlon -= 360.0;
        } else if dlon < -180.0 {
            dlon += 360.0;
        }
        let dx = dlon * self.cos_lat;
        let dy = lat - self.lat;
        let d2 = dx * dx + dy * dy;
        if d2 < self.in2 {
            Some(true)
        } else if d2 > self.out2 {
            Some(false)
        } else {
            None
        }
    }
}

/// Grid squares per degree of the pre-filter.
const GRID: f64 = 1024.0;
/// Squares around the globe in longitude.
const GRID_LON: i64 = 360 * GRID as i64;
/// Most fine squares one fence may mark before it is marked at 1° instead.
const MAX_FINE_SQUARES: i64 = 1024;

#[inline]
fn grid_key(lat_idx: i64, lon_idx: i64, lon_wrap: i64) -> u64 {
    ((lat_idx as u64) << 32) | (lon_idx.rem_euclid(lon_wrap) as u64)
}

/// The fence's bounding box in degrees, as a latitude range and a longitude range that may
/// run past ±180 (wrapped when marking) or cover every longitude near a pole.
fn bounds(shape: &Shape) -> (f64, f64, f64, f64) {
    match shape {
        Shape::Circle { lat, lon, radius_m } => {
            // 1 % and a metre of slack against rounding.
            let dlat = (radius_m * 1.01 + 1.0) / EARTH_RADIUS_M * 180.0 / std::f64::consts::PI;
            let (lo, hi) = (lat - dlat, lat + dlat);
            let far = lo.abs().max(hi.abs());
            if far >= 89.0 {
                return (lo.max(-90.0), hi.min(90.0), -180.0, 180.0);
            }
            let dlon = dlat / far.to_radians().cos();
            (lo, hi, lon - dlon, lon + dlon)
        }
        Shape::Polygon { bbox, .. } => {
            let e = 1e-7;
            (
                bbox.min().y - e,
                bbox.max().y + e,
                bbox.min().x - e,
                bbox.max().x + e,
            )
        }
    }
}

/// Slack of the square tests, degrees (about a centimetre): a fix is assigned its square
/// by rounding, so the square is taken a little larger than its exact bounds.
const SQUARE_SLACK_DEG: f64 = 1e-7;

/// Whether a small fence may hold a point of square `(a, b)` of the grid, and whether it
/// holds all of it: `None` when it holds none of it, `Some(true)` when every point of the
/// square is inside (a lookup there needs no test), `Some(false)` otherwise.
///
/// Circles: the point of the square nearest the centre (clamped in latitude and longitude)
/// within the radius plus a metre and 0.1 % (the clamped point and the true nearest point
/// on the sphere differ by far less over a 110 m square); fully inside when the four
/// corners are within the radius less half a metre, away from the poles (a parallel bulges
/// from the great circle through its ends by under a micrometre here). Polygons: geo's
/// planar intersection and containment of the square, the same plane as the point test.
fn square_overlap(shape: &Shape, a: i64, b: i64) -> Option<bool> {
    let lat0 = a as f64 / GRID - 90.0 - SQUARE_SLACK_DEG;
    let lat1 = (a + 1) as f64 / GRID - 90.0 + SQUARE_SLACK_DEG;
    // Longitudes as the bounding box gave them (they may run past ±180).
    let lon0 = b as f64 / GRID - 180.0 - SQUARE_SLACK_DEG;
    let lon1 = (b + 1) as f64 / GRID - 180.0 + SQUARE_SLACK_DEG;
    match shape {
        Shape::Circle { lat, lon, radius_m } => {
            let near_lat = lat.clamp(lat0, lat1);
            let near_lon = lon.clamp(lon0, lon1);
            if haversine_m(*lat, *lon, near_lat, near_lon) > radius_m * 1.001 + 1.0 {
                return None;
            }
            let full = lat0.abs().max(lat1.abs()) < 80.0
                && [(lat0, lon0), (lat0, lon1), (lat1, lon0), (lat1, lon1)]
                    .iter()
                    .all(|&(y, x)| haversine_m(*lat, *lon, y, x) <= radius_m - 0.5);
            Some(full)
        }
        Shape::Polygon { geom, .. } => {
            // A polygon's own longitudes lie in [-180, 180]; so do its squares' (no small
            // polygon crosses the antimeridian: GeoJSON splits such shapes).
            let rect = Rect::new(Coord { x: lon0, y: lat0 }, Coord { x: lon1, y: lat1 });
            if !rect.intersects(geom) {
                return None;
            }
            // Whole when its corners are inside and no edge of the polygon meets the
            // square (an edge inside or across it would leave part of it out; one that only
            // touches its border counts too, which errs on the safe side). Cheaper than
            // geo's general `relate`, and silent: that one traces the geometry it compares.
            let corners = [(lon0, lat0), (lon1, lat0), (lon0, lat1), (lon1, lat1)];
            let full = corners
                .iter()
                .all(|&(x, y)| geom.intersects(&Coord { x, y }))
                && !geom.iter().any(|p| {
                    std::iter::once(p.exterior())
                        .chain(p.interiors())
                        .flat_map(|ring| ring.lines())
                        .any(|line| line.intersects(&rect))
                });
            Some(full)
        }
    }
}

/// Calls `mark` with every grid square a small fence may hold a point of, and that
/// square's entry for fence `fence`; returns false, marking nothing, when the fence is
/// large (more than [`MAX_FINE_SQUARES`] squares, or around a pole) and belongs on the H3
/// path.
fn mark_squares(
    shape: &Shape,
    quick: &Quick,
    fence: u32,
    mut mark: impl FnMut(u64, SquareEntry),
) -> bool {
    let (la0, la1, lo0, lo1) = bounds(shape);
    // Every square the bounding box touches; longitudes past ±180 wrap (`grid_key`).
    let (a0, a1) = (
        ((la0 + 90.0) * GRID).floor() as i64,
        ((la1 + 90.0) * GRID).floor() as i64,
    );
    let (b0, b1) = (
        ((lo0 + 180.0) * GRID).floor() as i64,
        ((lo1 + 180.0) * GRID).floor() as i64,
    );
    if lo1 - lo0 >= 360.0 || (a1 - a0 + 1) * (b1 - b0 + 1) > MAX_FINE_SQUARES {
        return false;
    }
    for a in a0..=a1 {
        for b in b0..=b1 {
            if let Some(full) = square_overlap(shape, a, b) {
                mark(
                    grid_key(a, b, GRID_LON),
                    SquareEntry::new(quick, a, b, Entry::new(fence, full)),
                );
            }
        }
    }
    true
}

impl GeofenceIndex {
    /// Compiles `shapes` at `resolution`. Fence positions in lookups are indexes into `shapes`.
    ///
    /// # Errors
    /// When h3o rejects a polygon's geometry.
    ///
    /// # Example
    /// ```
    /// use nearcast_core::geofence::{GeofenceIndex, Shape, DEFAULT_RESOLUTION};
    /// let idx = GeofenceIndex::build(vec![Shape::Circle { lat: 60.17, lon: 24.94, radius_m: 100.0 }],
    ///     DEFAULT_RESOLUTION).unwrap();
    /// assert_eq!(idx.lookup(60.1701, 24.9401), vec![0]);
    /// assert!(idx.lookup(60.18, 24.94).is_empty());
    /// ```
    pub fn build(shapes: Vec<Shape>, resolution: Resolution) -> Result<Self, FieldError> {
        let mut big_by_cell: CellMap<Vec<Entry>> = CellMap::default();
        let mut near_coarse = CellMap::default();
        let quick: Vec<Quick> = shapes.iter().map(Quick::of).collect();
        // (square, entry) for every square a small fence may hold a point of.
        let mut marked: Vec<(u64, SquareEntry)> = Vec::new();
        for (i, shape) in shapes.iter().enumerate() {
            let fence =
                u32::try_from(i).map_err(|_| FieldError::new("stores", "too many fences"))?;
            if fence & Entry::FULL != 0 {
                return Err(FieldError::new("stores", "too many fences"));
            }
            if !mark_squares(shape, &quick[i], fence, |key, e| marked.push((key, e))) {
                let cover = match shape {
                    Shape::Circle { lat, lon, radius_m } => {
                        cover_circle(*lat, *lon, *radius_m, resolution)
                    }
                    Shape::Polygon { geom, .. } => cover_polygon(geom, resolution)?,
                };
                let (la0, la1, lo0, lo1) = bounds(shape);
                let (a0, a1) = (
                    (la0 + 90.0).floor() as i64 - 1,
                    (la1 + 90.0).floor() as i64 + 1,
                );
                let (b0, b1) = if lo1 - lo0 >= 360.0 {
                    (0, 359)
                } else {
                    (
                        (lo0 + 180.0).floor() as i64 - 1,
                        (lo1 + 180.0).floor() as i64 + 1,
                    )
                };
                for a in a0..=a1 {
                    for b in b0..=b1 {
                        near_coarse.insert(grid_key(a, b, 360), ());
                    }
                }
                for (cell, full) in cover {
                    big_by_cell
                        .entry(u64::from(cell))
                        .or_default()
                        .push(Entry::new(fence, full));
                }
            }
        }

        // One list per square, fully-covering fences first (they need no test), then in
        // fence order.
        marked.sort_unstable_by_key(|&(key, e)| (key, !e.entry.full(), e.entry.fence()));
        let mut squares = CellMap::default();
        squares.reserve(marked.len() / 8);
        // The entries written as the table holds them.
        let mut table = Vec::with_capacity(marked.len() * SquareEntry::BYTES);
        let mut i = 0;
        while i < marked.len() {
            let key = marked[i].0;
            let start = i as u32;
            while i < marked.len() && marked[i].0 == key {
                table.extend_from_slice(&marked[i].1.to_bytes());
                i += 1;
            }
            squares.insert(key, (start, i as u32 - start));
        }

        let mut cells = CellMap::default();
        cells.reserve(big_by_cell.len());
        let mut entries = Vec::with_capacity(big_by_cell.values().map(Vec::len).sum());
        for (cell, mut list) in big_by_cell {
            // Fully-inside entries first: they need no exact test.
            list.sort_by_key(|e| (!e.full(), e.fence()));
            let start = entries.len() as u32;
            entries.extend_from_slice(&list);
            cells.insert(cell, (start, list.len() as u32));
        }
        Ok(GeofenceIndex {
            resolution,
            shapes,
            squares,
            square_fences: SquareTable {
                buf: std::sync::Arc::new(table),
                start: 0,
                len: marked.len(),
                lean: false,
            },
            cells,
            entries,
            near_coarse,
            quick: quick.into(),
        })
    }

    /// Writes the compiled tables (not the shapes, which the reader rebuilds from the stores'
    /// fences) for [`crate::snapshot`].
    pub(crate) fn write_tables(&self, w: &mut crate::snapshot::Writer) {
        w.u8(u8::from(self.resolution));
        let map = |w: &mut crate::snapshot::Writer, m: &CellMap<(u32, u32)>| {
            w.len(m.len());
            for (k, (start, len)) in m {
                w.u64(*k);
                w.u32(*start);
                w.u32(*len);
            }
        };
        map(w, &self.squares);
        // Lean: the fence entries without their pre-tests (see `SquareTable`).
        w.len(self.square_fences.len);
        w.0.reserve(self.square_fences.len * SquareTable::LEAN_BYTES);
        for e in self.square_fences.entries() {
            w.u32(e.0);
        }
        map(w, &self.cells);
        w.len(self.entries.len());
        for e in &self.entries {
            w.u32(e.0);
        }
        w.len(self.near_coarse.len());
        for k in self.near_coarse.keys() {
            w.u64(*k);
        }
    }

    /// The index of `shapes` from tables written by [`Self::write_tables`], checked so
    /// that no lookup can index out of range: every range lies within its list and every
    /// entry names one of `shapes`.
    ///
    /// # Errors
    /// A truncated or inconsistent input, described.
    pub(crate) fn read_tables(
        r: &mut crate::snapshot::Reader<'_>,
        shapes: Vec<Shape>,
    ) -> Result<Self, String> {
        let resolution =
            Resolution::try_from(r.u8()?).map_err(|e| format!("index resolution: {e}"))?;
        let fences = shapes.len() as u64;
        let map = |r: &mut crate::snapshot::Reader<'_>| -> Result<CellMap<(u32, u32)>, String> {
            let n = r.len(16)?;
            let mut m: CellMap<(u32, u32)> = CellMap::default();
            m.reserve(n);
            for _ in 0..n {
                m.insert(r.u64()?, (r.u32()?, r.u32()?));
            }
            Ok(m)
        };
        let in_range = |m: &CellMap<(u32, u32)>, total: usize, what: &str| match m
            .values()
            .find(|(s, l)| u64::from(*s) + u64::from(*l) > total as u64)
        {
            Some(_) => Err(format!("index {what}: a range past the end")),
            None => Ok(()),
        };
        let entry = |raw: u32, what: &str| {
            if u64::from(Entry(raw).fence()) < fences {
                Ok(Entry(raw))
            } else {
                Err(format!("index {what}: an entry names no fence"))
            }
        };
        let squares = map(r)?;
        let n = r.len(SquareTable::LEAN_BYTES)?;
        // In place: the entries stay in the snapshot's buffer, lean.
        let (buf, start) = r.shared(n * SquareTable::LEAN_BYTES)?;
        let square_fences = SquareTable {
            buf,
            start,
            len: n,
            lean: true,
        };
        for e in square_fences.entries() {
            entry(e.0, "squares")?;
        }
        in_range(&squares, n, "squares")?;
        let cells = map(r)?;
        let n = r.len(4)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(entry(r.u32()?, "cells")?);
        }
        in_range(&cells, entries.len(), "cells")?;
        let n = r.len(8)?;
        let mut near_coarse = CellMap::default();
        near_coarse.reserve(n);
        for _ in 0..n {
            near_coarse.insert(r.u64()?, ());
        }
        Ok(GeofenceIndex {
            resolution,
            shapes,
            squares,
            square_fences,
            cells,
            entries,
            near_coarse,
            quick: std::sync::OnceLock::new(),
        })
    }

    /// This index written as a snapshot holds it and read back (lean square entries).
    #[cfg(test)]
    pub(crate) fn through_snapshot(&self) -> GeofenceIndex {
        let mut w = crate::snapshot::Writer(Vec::new());
        self.write_tables(&mut w);
        let buf = std::sync::Arc::new(w.0);
        let idx = GeofenceIndex::read_tables(
            &mut crate::snapshot::Reader::new(&buf),
            self.shapes.clone(),
        )
        .expect("reads back");
        assert!(idx.square_fences.lean || idx.square_fences.len == 0);
        idx
    }

    /// The shapes, in fence order.
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// Number of (square or cell, fence) entries, a measure of the index's memory.
    pub fn entry_count(&self) -> usize {
        self.entries.len() + self.square_fences.len
    }

    /// Fences containing the point, appended to `out` in ascending fence order.
    /// Coordinates must be finite and in range (validated events are).
    #[inline]
    pub fn lookup_into(&self, lat: f64, lon: f64, out: &mut Vec<u32>) {
        let first = out.len();
        let (fy, fx) = ((lat + 90.0) * GRID, (lon + 180.0) * GRID);
        let (a, b) = (fy.floor(), fx.floor());
        let key = grid_key(a as i64, b as i64, GRID_LON);
        if let Some(&(start, len)) = self.squares.get(&key) {
            // The fix in the square's units, from its corner.
            if self.square_fences.lean {
                for w in self.square_fences.get_lean(start, len) {
                    let e = Entry(u32::from_le_bytes(*w));
                    let f = e.fence();
                    if e.full() || self.shapes[f as usize].contains(lat, lon) {
                        out.push(f);
                    }
                }
            } else {
                let (y, x) = ((fy - a) as f32, (fx - b) as f32);
                scan_square(
                    self.square_fences
                        .get(start, len)
                        .iter()
                        .map(SquareEntry::from_bytes),
                    y,
                    x,
                    |f| self.shapes[f as usize].contains(lat, lon),
                    out,
                );
            }
        }
        if !self.near_coarse.is_empty()
            && self.near_coarse.contains_key(&grid_key(
                (lat + 90.0).floor() as i64,
                (lon + 180.0).floor() as i64,
                360,
            ))
        {
            self.lookup_cells(lat, lon, out);
        }
        out[first..].sort_unstable();
    }

    /// The H3 path, for large fences: the fix's cell, its entries, exact tests.
    fn lookup_cells(&self, lat: f64, lon: f64, out: &mut Vec<u32>) {
        let Ok(ll) = LatLng::new(lat, lon) else {
            return;
        };
        let cell = u64::from(ll.to_cell(self.resolution));
        let Some(&(start, len)) = self.cells.get(&cell) else {
            return;
        };
        for e in &self.entries[start as usize..(start + len) as usize] {
            let f = e.fence() as usize;
            if e.full() || self.shapes[f].contains(lat, lon) {
                out.push(e.fence());
            }
        }
    }

    /// Whether fence `f` holds the point, by the test [`Self::lookup_into`] applies to each
    /// candidate (the planar pre-test, then the exact test when it cannot decide): for
    /// comparing other candidate filters on equal terms.
    #[inline]
    pub fn fence_contains(&self, f: u32, lat: f64, lon: f64) -> bool {
        self.quick
            .get_or_init(|| self.shapes.iter().map(Quick::of).collect())[f as usize]
            .test(lat, lon)
            .unwrap_or_else(|| self.shapes[f as usize].contains(lat, lon))
    }

    /// Fences containing the point, in ascending order.
    pub fn lookup(&self, lat: f64, lon: f64) -> Vec<u32> {
        let mut v = Vec::new();
        self.lookup_into(lat, lon, &mut v);
        v
    }

    /// Brute force: every fence tested exactly. The oracle of the property tests and the
    /// baseline of the benchmark.
    pub fn scan(&self, lat: f64, lon: f64) -> Vec<u32> {
        (0..self.shapes.len() as u32)
            .filter(|&i| self.shapes[i as usize].contains(lat, lon))
            .collect()
    }
}

/// The fences of one square's list that hold the point at `(y, x)` squares from the
/// square's corner, appended to `out`: those holding the whole square, those the
/// pre-test settles inside, and those `exact` accepts.
#[inline(always)]
fn scan_square(
    entries: impl IntoIterator<Item = SquareEntry>,
    y: f32,
    x: f32,
    exact: impl Fn(u32) -> bool,
    out: &mut Vec<u32>,
) {
    for e in entries {
        let f = e.entry.fence();
        if e.entry.full() || e.test(y, x).unwrap_or_else(|| exact(f)) {
            out.push(f);
        }
    }
}

/// A [`GeofenceIndex`] that takes single fence changes in microseconds: an immutable
/// base index, shared by every copy, plus the changes made since it was built (fences
/// added or moved, in a small index of their own, and base fences retired). Cloning is a
/// few reference counts, so a changed copy can be made beside the one readers use and
/// swapped in; readers never wait.
///
/// Fence positions are stable: a moved fence keeps its position, a removed one leaves a
/// hole, and an added one takes the position it is given. Rebuilding the base
/// ([`GeofenceIndex::build`] over the live fences) folds the changes in; until then a
/// lookup costs one more hash probe (and a filter of the base's answers when some base
/// fence is retired).
#[derive(Debug, Clone)]
pub struct FenceSet {
    base: std::sync::Arc<GeofenceIndex>,
    /// One bit per base position: set when the base's fence there no longer counts.
    retired: std::sync::Arc<Vec<u64>>,
    /// Whether any bit of `retired` is set.
    any_retired: bool,
    delta: std::sync::Arc<FenceDelta>,
}

/// The fences added or moved since the base was built.
#[derive(Debug, Clone, Default)]
struct FenceDelta {
    shapes: HashMap<u32, (Shape, Quick)>,
    squares: CellMap<Vec<SquareEntry>>,
    /// Fences too large for the squares (or around a pole), with their bounding boxes:
    /// tested one by one (they are rare, and rarer among single changes).
    big: Vec<(u32, (f64, f64, f64, f64))>,
}

impl FenceDelta {
    fn insert(&mut self, fence: u32, shape: Shape) {
        let quick = Quick::of(&shape);
        let squares = &mut self.squares;
        if !mark_squares(&shape, &quick, fence, |key, e| {
            let list = squares.entry(key).or_default();
            // Whole-square fences first, as in the base (they need no test).
            if e.entry.full() {
                list.insert(0, e);
            } else {
                list.push(e);
            }
        }) {
            self.big.push((fence, bounds(&shape)));
        }
        self.shapes.insert(fence, (shape, quick));
    }

    fn remove(&mut self, fence: u32) {
        let Some((shape, quick)) = self.shapes.remove(&fence) else {
            return;
        };
        let squares = &mut self.squares;
        if !mark_squares(&shape, &quick, fence, |key, _| {
            if let Some(list) = squares.get_mut(&key) {
                list.retain(|e| e.entry.fence() != fence);
                if list.is_empty() {
                    squares.remove(&key);
                }
            }
        }) {
            self.big.retain(|(f, _)| *f != fence);
        }
    }

    fn lookup_into(&self, lat: f64, lon: f64, out: &mut Vec<u32>) {
        let (fy, fx) = ((lat + 90.0) * GRID, (lon + 180.0) * GRID);
        let (a, b) = (fy.floor(), fx.floor());
        if let Some(list) = self.squares.get(&grid_key(a as i64, b as i64, GRID_LON)) {
            scan_square(
                list.iter().copied(),
                (fy - a) as f32,
                (fx - b) as f32,
                |f| self.shapes[&f].0.contains(lat, lon),
                out,
            );
        }
        for &(f, (la0, la1, lo0, lo1)) in &self.big {
            let in_lon = (lo0..=lo1).contains(&lon)
                || (lo0..=lo1).contains(&(lon + 360.0))
                || (lo0..=lo1).contains(&(lon - 360.0));
            if (la0..=la1).contains(&lat) && in_lon && self.shapes[&f].0.contains(lat, lon) {
                out.push(f);
            }
        }
    }
}

impl FenceSet {
    /// `base` with no changes.
    pub fn new(base: GeofenceIndex) -> Self {
        FenceSet {
            retired: std::sync::Arc::new(vec![0; base.shapes.len().div_ceil(64)]),
            base: std::sync::Arc::new(base),
            any_retired: false,
            delta: std::sync::Arc::default(),
        }
    }

    /// The index as built, when no change was made on top of it.
    pub(crate) fn unchanged(&self) -> Option<&GeofenceIndex> {
        (!self.any_retired && self.delta.shapes.is_empty()).then_some(&*self.base)
    }

    /// Fences containing the point, appended to `out` in ascending position order.
    #[inline]
    pub fn lookup_into(&self, lat: f64, lon: f64, out: &mut Vec<u32>) {
        let first = out.len();
        self.base.lookup_into(lat, lon, out);
        if self.any_retired {
            let mut w = first;
            for r in first..out.len() {
                let f = out[r];
                if self.retired[f as usize / 64] & (1 << (f % 64)) == 0 {
                    out[w] = f;
                    w += 1;
                }
            }
            out.truncate(w);
        }
        if !self.delta.shapes.is_empty() {
            let before = out.len();
            self.delta.lookup_into(lat, lon, out);
            if out.len() > before {
                out[first..].sort_unstable();
            }
        }
    }

    /// Fences containing the point, in ascending order.
    pub fn lookup(&self, lat: f64, lon: f64) -> Vec<u32> {
        let mut v = Vec::new();
        self.lookup_into(lat, lon, &mut v);
        v
    }

    fn base_live(&self, p: u32) -> bool {
        (p as usize) < self.base.shapes.len()
            && self.retired[p as usize / 64] & (1 << (p % 64)) == 0
    }

    /// The shape at position `p`, if a fence is there.
    pub fn shape(&self, p: u32) -> Option<&Shape> {
        if let Some((s, _)) = self.delta.shapes.get(&p) {
            return Some(s);
        }
        self.base_live(p).then(|| &self.base.shapes[p as usize])
    }

    /// Puts `shape` at position `p`, replacing the fence there if any.
    ///
    /// # Errors
    /// When `p` is too large to be a fence position.
    pub fn set(&mut self, p: u32, shape: Shape) -> Result<(), FieldError> {
        if p & Entry::FULL != 0 {
            return Err(FieldError::new("stores", "too many fences"));
        }
        self.retire(p);
        let delta = std::sync::Arc::make_mut(&mut self.delta);
        delta.remove(p);
        delta.insert(p, shape);
        Ok(())
    }

    /// Removes the fence at position `p`, if any.
    pub fn remove(&mut self, p: u32) {
        self.retire(p);
        if self.delta.shapes.contains_key(&p) {
            std::sync::Arc::make_mut(&mut self.delta).remove(p);
        }
    }

    fn retire(&mut self, p: u32) {
        if self.base_live(p) {
            std::sync::Arc::make_mut(&mut self.retired)[p as usize / 64] |= 1 << (p % 64);
            self.any_retired = true;
        }
    }
}

fn cell_center(cell: CellIndex) -> (f64, f64) {
    let ll = LatLng::from(cell);
    (ll.lat(), ll.lng())
}

/// Circle cover by flood fill (see the module docs for why it misses nothing).
fn cover_circle(lat: f64, lon: f64, radius_m: f64, res: Resolution) -> Vec<(CellIndex, bool)> {
    // One metre of slack for floating-point error in the distances.
    const SLACK_M: f64 = 1.0;
    let start = LatLng::new(lat, lon).expect("validated").to_cell(res);
    let mut seen = std::collections::HashSet::new();
    let mut queue = vec![start];
    let mut out = Vec::new();
    seen.insert(start);
    while let Some(cell) = queue.pop() {
        let (clat, clon) = cell_center(cell);
        let mut circum: f64 = 0.0;
        let mut all_inside = true;
        for v in cell.boundary().iter() {
            circum = circum.max(haversine_m(clat, clon, v.lat(), v.lng()));
            if haversine_m(lat, lon, v.lat(), v.lng()) > radius_m - SLACK_M {
                all_inside = false;
            }
        }
        if haversine_m(lat, lon, clat, clon) > radius_m + circum + SLACK_M {
            continue;
        }
        out.push((cell, all_inside));
        for n in cell.grid_disk::<Vec<_>>(1) {
            if seen.insert(n) {
                queue.push(n);
            }
        }
    }
    out
}

/// Polygon cover: h3o's tiler in `Covers` mode, partial cells dilated by one ring.
fn cover_polygon(
    geom: &MultiPolygon<f64>,
    res: Resolution,
) -> Result<Vec<(CellIndex, bool)>, FieldError> {
    let mut tiler = TilerBuilder::new(res)
        .containment_mode(ContainmentMode::Covers)
        .disable_transmeridian_heuristic()
        .build();
    for p in geom {
        tiler
            .add(p.clone())
            .map_err(|e| FieldError::new("coordinates", format!("invalid polygon: {e}")))?;
    }
    let mut cells: HashMap<CellIndex, bool> = HashMap::new();
    let annotated: Vec<_> = tiler.into_annotated_coverage().collect();
    for a in &annotated {
        cells.insert(a.cell, a.is_fully_contained);
    }
    for a in annotated.iter().filter(|a| !a.is_fully_contained) {
        for n in a.cell.grid_disk::<Vec<_>>(1) {
            cells.entry(n).or_insert(false);
        }
    }
    // If the tiler found nothing (a sliver thinner than its tests resolve), fall back to
    // the cells of the vertices and their rings.
    if cells.is_empty() {
        for c in geom.iter().flat_map(|p| p.exterior().coords()) {
            if let Ok(ll) = LatLng::new(c.y, c.x) {
                for n in ll.to_cell(res).grid_disk::<Vec<_>>(1) {
                    cells.entry(n).or_insert(false);
                }
            }
        }
    }
    // Trust "fully inside" only for cells whose neighbours are all fully inside too: the
    // tiler decides in planar coordinates, and a cell next to the boundary could bulge past
    // it by the small difference between planar and geodesic edges.
    let strict: Vec<(CellIndex, bool)> = cells
        .iter()
        .map(|(&c, &full)| {
            let deep = full
                && c.grid_disk::<Vec<_>>(1)
                    .iter()
                    .all(|n| cells.get(n) == Some(&true));
            (c, deep)
        })
        .collect();
    Ok(strict)
}

#[cfg(test)]
mod tests;
