//! `gen-config`: a large, deterministic store and offer configuration around Helsinki.
//!
//! Stores: 90 % circles (radius 30-300 m, log-uniform, so small fences dominate as in real
//! retail) and 10 % rotated rectangles (polygons, 15-120 m half-sides). 75 % of them sit in
//! a dozen Gaussian "town centres", the rest are spread uniformly over the box, so a
//! uniformly random fix is inside some fence now and then but mostly inside none.
//!
//! Offers: 80 % name 5-20 store ids, 20 % one store category; triggers are enter (75 %) or
//! dwell; some carry dayparts, weekdays, weather or audience rules, a coupon, a holdout.

use crate::rng::Rng;
use serde_json::{Value, json};
use std::path::Path;

/// The load box: latitude range (degrees north).
pub const LAT: (f64, f64) = (60.10, 60.32);
/// The load box: longitude range (degrees east).
pub const LON: (f64, f64) = (24.60, 25.40);

/// Metres per degree of latitude (sphere of radius 6 371 008.8 m).
const M_PER_DEG_LAT: f64 = 111_195.08;

/// Store categories with the offer (product) categories that fit them.
const CATEGORIES: &[(&str, &[&str])] = &[
    ("cafe", &["coffee", "pastry"]),
    ("bakery", &["pastry", "bread"]),
    ("supermarket", &["groceries", "snacks", "drinks"]),
    ("convenience", &["snacks", "drinks"]),
    ("clothes", &["clothing", "shoes"]),
    ("books", &["books", "stationery"]),
    ("restaurant", &["dining"]),
    ("bar", &["drinks"]),
    ("pharmacy", &["health", "beauty"]),
    ("sports", &["sports", "clothing"]),
    ("electronics", &["electronics"]),
    ("beauty", &["beauty"]),
];

const DAYPARTS: &[&str] = &["morning", "midday", "afternoon", "evening", "night"];
const WEEKDAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const CONDITIONS: &[&str] = &["clear", "cloudy", "fog", "rain", "snow", "storm"];

/// A generated fence, kept for the hit-rate estimate.
enum Shape {
    Circle {
        lat: f64,
        lon: f64,
        r: f64,
    },
    /// Rectangle centred at (lat, lon), half-sides `a` (along `theta`) and `b`, metres.
    Rect {
        lat: f64,
        lon: f64,
        a: f64,
        b: f64,
        theta: f64,
    },
}

fn m_per_deg_lon(lat: f64) -> f64 {
    M_PER_DEG_LAT * lat.to_radians().cos()
}

impl Shape {
    /// Whether a point is inside (local equirectangular approximation, fine at 300 m).
    fn contains(&self, plat: f64, plon: f64) -> bool {
        match *self {
            Shape::Circle { lat, lon, r } => {
                let dy = (plat - lat) * M_PER_DEG_LAT;
                let dx = (plon - lon) * m_per_deg_lon(lat);
                dx * dx + dy * dy <= r * r
            }
            Shape::Rect {
                lat,
                lon,
                a,
                b,
                theta,
            } => {
                let dy = (plat - lat) * M_PER_DEG_LAT;
                let dx = (plon - lon) * m_per_deg_lon(lat);
                let (s, c) = theta.sin_cos();
                let u = dx * c + dy * s;
                let v = -dx * s + dy * c;
                u.abs() <= a && v.abs() <= b
            }
        }
    }

    fn centre(&self) -> (f64, f64) {
        match *self {
            Shape::Circle { lat, lon, .. } | Shape::Rect { lat, lon, .. } => (lat, lon),
        }
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// A uniform point of the load box.
pub fn uniform_point(rng: &mut Rng) -> (f64, f64) {
    (rng.range(LAT.0, LAT.1), rng.range(LON.0, LON.1))
}

fn in_box(lat: f64, lon: f64) -> bool {
    (LAT.0..=LAT.1).contains(&lat) && (LON.0..=LON.1).contains(&lon)
}

/// What was generated.
pub struct Summary {
    /// Stores written.
    pub stores: usize,
    /// Of which polygons.
    pub polygons: usize,
    /// Offers written.
    pub offers: usize,
    /// Estimated share of uniform fixes in the box that fall inside at least one fence.
    pub hit_fraction: f64,
}

/// Generates `n_stores` stores and `n_offers` offers into `out/stores.json`,
/// `out/offers.json`.
///
/// # Errors
/// When the folder or the files cannot be written.
pub fn gen_config(
    n_stores: usize,
    n_offers: usize,
    seed: u64,
    out: &Path,
) -> std::io::Result<Summary> {
    assert!(n_stores >= 20, "need at least 20 stores");
    let mut rng = Rng::new(seed);
    // Town centres: a dozen clusters with sigma 0.3-1.2 km.
    let centres: Vec<(f64, f64, f64)> = (0..12)
        .map(|_| {
            let (lat, lon) = (rng.range(60.15, 60.28), rng.range(24.70, 25.30));
            (lat, lon, rng.range(300.0, 1200.0))
        })
        .collect();
    let mut shapes = Vec::with_capacity(n_stores);
    let mut stores = Vec::with_capacity(n_stores);
    let mut store_cats = Vec::with_capacity(n_stores);
    let mut polygons = 0;
    for i in 0..n_stores {
        let (lat, lon) = if rng.chance(0.75) {
            let &(clat, clon, sigma) = rng.pick(&centres);
            loop {
                let lat = clat + rng.gauss() * sigma / M_PER_DEG_LAT;
                let lon = clon + rng.gauss() * sigma / m_per_deg_lon(clat);
                if in_box(lat, lon) {
                    break (lat, lon);
                }
            }
        } else {
            uniform_point(&mut rng)
        };
        let (lat, lon) = (round6(lat), round6(lon));
        let (cat, _) = *rng.pick(CATEGORIES);
        let id = format!("st-{i:05}");
        let name = format!("{} {i:05}", capitalise(cat));
        let (shape, fence) = if rng.chance(0.10) {
            polygons += 1;
            let (a, b, theta) = (
                rng.range(15.0, 120.0),
                rng.range(15.0, 120.0),
                rng.range(0.0, std::f64::consts::PI),
            );
            (
                Shape::Rect {
                    lat,
                    lon,
                    a,
                    b,
                    theta,
                },
                rect_fence(lat, lon, a, b, theta),
            )
        } else {
            // Log-uniform in [30, 300] m.
            let r = (30.0f64.ln() + rng.f64() * (10.0f64).ln()).exp().round();
            (
                Shape::Circle { lat, lon, r },
                json!({"type": "circle", "lat": lat, "lon": lon, "radius_m": r}),
            )
        };
        stores.push(json!({
            "id": id, "name": name, "category": cat, "time_zone": "Europe/Helsinki", "fence": fence,
        }));
        shapes.push(shape);
        store_cats.push(cat);
    }

    let mut offers = Vec::with_capacity(n_offers);
    for k in 0..n_offers {
        offers.push(offer(&mut rng, k, &stores, &store_cats));
    }

    std::fs::create_dir_all(out)?;
    write_json(&out.join("stores.json"), &Value::Array(stores))?;
    write_json(&out.join("offers.json"), &Value::Array(offers))?;

    let hit_fraction = estimate_hits(&shapes, seed ^ 0xABCD, 4000);
    Ok(Summary {
        stores: n_stores,
        polygons,
        offers: n_offers,
        hit_fraction,
    })
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A closed, counter-clockwise GeoJSON rectangle.
fn rect_fence(lat: f64, lon: f64, a: f64, b: f64, theta: f64) -> Value {
    let (s, c) = theta.sin_cos();
    let corner = |u: f64, v: f64| {
        let dx = u * c - v * s;
        let dy = u * s + v * c;
        json!([
            round6(lon + dx / m_per_deg_lon(lat)),
            round6(lat + dy / M_PER_DEG_LAT)
        ])
    };
    let ring = vec![
        corner(-a, -b),
        corner(a, -b),
        corner(a, b),
        corner(-a, b),
        corner(-a, -b),
    ];
    json!({"type": "polygon", "geometry": {"type": "Polygon", "coordinates": [ring]}})
}

fn offer(rng: &mut Rng, k: usize, stores: &[Value], store_cats: &[&str]) -> Value {
    let mut o = serde_json::Map::new();
    let (store_cat, products) = if rng.chance(0.8) {
        let n = rng.between(5, 20);
        let idx = rng.distinct(n, stores.len());
        let ids: Vec<Value> = idx.iter().map(|&i| stores[i]["id"].clone()).collect();
        o.insert("store_ids".into(), Value::Array(ids));
        let cat = store_cats[idx[0]];
        (
            cat,
            CATEGORIES
                .iter()
                .find(|c| c.0 == cat)
                .map(|c| c.1)
                .unwrap_or(&["general"]),
        )
    } else {
        let &(cat, products) = rng.pick(CATEGORIES);
        o.insert("store_categories".into(), json!([cat]));
        (cat, products)
    };
    let product = *rng.pick(products);
    let pct = 5 * rng.between(2, 8);
    o.insert("id".into(), json!(format!("of-{k:04}")));
    o.insert("campaign_id".into(), json!(format!("cmp-{:03}", k / 5)));
    o.insert("title".into(), json!(format!("{pct} % off {product}")));
    o.insert(
        "body".into(),
        json!(format!("Offer {k}: {pct} % off {product} at participating {store_cat} stores today. Show this message at the till.")),
    );
    o.insert("category".into(), json!(product));
    if rng.chance(0.4) {
        o.insert("coupon".into(), json!(format!("LG{k:04}")));
    }
    if rng.chance(0.1) {
        o.insert(
            "product_id".into(),
            json!(format!("p-{product}-{}", rng.below(50))),
        );
    }
    let trigger = if rng.chance(0.75) {
        json!({"type": "enter"})
    } else {
        json!({"type": "dwell", "minutes": rng.between(2, 30)})
    };
    o.insert("trigger".into(), trigger);
    if rng.chance(0.3) {
        let n = rng.between(1, 3);
        let parts: Vec<&str> = rng
            .distinct(n, DAYPARTS.len())
            .into_iter()
            .map(|i| DAYPARTS[i])
            .collect();
        o.insert("dayparts".into(), json!(parts));
    }
    if rng.chance(0.2) {
        let n = rng.between(2, 5);
        let days: Vec<&str> = rng
            .distinct(n, WEEKDAYS.len())
            .into_iter()
            .map(|i| WEEKDAYS[i])
            .collect();
        o.insert("weekdays".into(), json!(days));
    }
    if rng.chance(0.15) {
        let w = if rng.chance(0.5) {
            let n = rng.between(1, 3);
            let conds: Vec<&str> = rng
                .distinct(n, CONDITIONS.len())
                .into_iter()
                .map(|i| CONDITIONS[i])
                .collect();
            json!({"conditions": conds})
        } else {
            json!({"max_temp_c": rng.between(0, 15)})
        };
        o.insert("weather".into(), w);
    }
    if rng.chance(0.15) {
        let a = if rng.chance(0.5) {
            json!({"new_to_category": true})
        } else {
            json!({"min_affinity": 0.2})
        };
        o.insert("audience".into(), a);
    }
    if rng.chance(0.1) {
        o.insert("starts_at".into(), json!("2020-01-01T00:00:00Z"));
        o.insert("ends_at".into(), json!("2099-12-31T00:00:00Z"));
    }
    o.insert(
        "threshold".into(),
        json!((rng.range(0.02, 0.3) * 100.0).round() / 100.0),
    );
    o.insert(
        "holdout".into(),
        json!(if rng.chance(0.5) { 0.05 } else { 0.0 }),
    );
    o.insert(
        "reeligible_after_hours".into(),
        json!(*rng.pick(&[24u32, 72, 168])),
    );
    Value::Object(o)
}

fn write_json(path: &Path, v: &Value) -> std::io::Result<()> {
    let mut s = serde_json::to_string_pretty(v).map_err(std::io::Error::other)?;
    s.push('\n');
    std::fs::write(path, s)
}

/// Monte Carlo estimate of the share of uniform fixes inside at least one fence.
fn estimate_hits(shapes: &[Shape], seed: u64, samples: usize) -> f64 {
    // Bucket fences by a 0.01° grid cell of their centre; no fence is wider than 300 m, so
    // the 3 x 3 neighbourhood of a point's cell holds every fence that may contain it.
    let cell = |lat: f64, lon: f64| {
        (
            ((lat - LAT.0) / 0.01).floor() as i64,
            ((lon - LON.0) / 0.01).floor() as i64,
        )
    };
    let mut grid: std::collections::HashMap<(i64, i64), Vec<usize>> =
        std::collections::HashMap::new();
    for (i, s) in shapes.iter().enumerate() {
        let (lat, lon) = s.centre();
        grid.entry(cell(lat, lon)).or_default().push(i);
    }
    let mut rng = Rng::new(seed);
    let mut hits = 0usize;
    for _ in 0..samples {
        let (lat, lon) = uniform_point(&mut rng);
        let (cy, cx) = cell(lat, lon);
        let inside = (-1..=1).any(|dy| {
            (-1..=1).any(|dx| {
                grid.get(&(cy + dy, cx + dx))
                    .is_some_and(|v| v.iter().any(|&i| shapes[i].contains(lat, lon)))
            })
        });
        hits += usize::from(inside);
    }
    hits as f64 / samples as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_deterministic_and_well_formed() {
        let dir =
            std::env::temp_dir().join(format!("nearcast-loadgen-test-{}", std::process::id()));
        let a = gen_config(200, 30, 1, &dir.join("a")).unwrap();
        gen_config(200, 30, 1, &dir.join("b")).unwrap();
        let sa = std::fs::read(dir.join("a/stores.json")).unwrap();
        assert_eq!(sa, std::fs::read(dir.join("b/stores.json")).unwrap());
        assert_eq!(
            std::fs::read(dir.join("a/offers.json")).unwrap(),
            std::fs::read(dir.join("b/offers.json")).unwrap()
        );
        let stores: Vec<Value> = serde_json::from_slice(&sa).unwrap();
        assert_eq!(stores.len(), 200);
        assert!(a.polygons > 0 && a.polygons < 60);
        for s in &stores {
            let f = &s["fence"];
            if f["type"] == "polygon" {
                let ring = f["geometry"]["coordinates"][0].as_array().unwrap();
                assert_eq!(ring.len(), 5);
                assert_eq!(ring[0], ring[4]);
            } else {
                let r = f["radius_m"].as_f64().unwrap();
                assert!((30.0..=300.0).contains(&r));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
