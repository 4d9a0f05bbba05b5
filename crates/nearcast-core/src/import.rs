//! Store files a marketer imports (`POST /v1/admin/stores/import`): CSV or GeoJSON, every
//! row validated before anything is applied, each rejected row reported with its reason.
//!
//! **CSV** (RFC 4180, a header row, UTF-8): the columns, case-insensitive,
//!
//! | column | |
//! |---|---|
//! | `id` | the store's external id (upserts go by it); or `osm_type` and `osm_id`, which make `osm-<type>-<id>` as in `events/stores.json` |
//! | `name` | else the store's id (an OpenStreetMap extract has many unnamed shops); the answer counts them as `named_by_id` |
//! | `category` | else the first non-empty of `shop`, `amenity`, `tourism` (OpenStreetMap's tags) |
//! | `time_zone` | IANA name; else the file's default (`time_zone=` parameter) |
//! | `lat`, `lon` | the centre of a circle fence, degrees |
//! | `radius_m` | the circle's radius; else the file's default (`radius_m=`, 50 m) |
//! | `brand`, `address` | optional texts |
//! | `tags` | optional, separated by `;` (`flagship;mall:kamppi`), lower-cased |
//! | `opening_hours` | optional, OpenStreetMap syntax; a value that cannot be read is dropped with a warning naming the row (real extracts have a few, e.g. `Mon - Fri 11am - 11pm`), and the store counts as always open |
//!
//! Other columns (an OSM extract's `osm_timestamp`) are not stored; the answer lists them
//! under `ignored_columns` so nobody believes they were.
//!
//! **GeoJSON**: a `FeatureCollection`; each feature's `properties` carry `id` (or the
//! feature's own `id`), `name`, `category`, `time_zone`, `radius_m`, `brand`, `address`,
//! `tags` (a `;`-separated text or a list), `opening_hours` as above; a `Point`
//! geometry makes a circle fence, a `Polygon` or `MultiPolygon` the polygon itself.
//!
//! Rows are numbered from 1 (the first data row of a CSV file, the first feature); a
//! rejection names the row, the store id when it has one, the field and the reason.

use crate::FieldError;
use crate::config::{Fence, Store};
use crate::ids::Id;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// Most rows one file may hold.
pub const MAX_ROWS: usize = 200_000;

/// The radius of a circle fence when neither the row nor the file gives one.
pub const DEFAULT_RADIUS_M: f64 = 50.0;

/// A file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CSV with a header row.
    Csv,
    /// A GeoJSON FeatureCollection.
    Geojson,
}

/// What applies to every row without its own value.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// IANA time zone.
    pub time_zone: Option<String>,
    /// Circle radius, metres.
    pub radius_m: f64,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            time_zone: None,
            radius_m: DEFAULT_RADIUS_M,
        }
    }
}

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedRow {
    /// The row, from 1.
    pub row: usize,
    /// The store id, when the row has a valid one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The column or property at fault.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// A parsed file: the valid stores (in file order), the rejected rows, the columns not
/// stored.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// Valid stores with their row numbers, file order.
    pub stores: Vec<(usize, Store)>,
    /// Rejected rows, file order.
    pub rejected: Vec<RejectedRow>,
    /// Columns (CSV) or properties (GeoJSON) that are not stored.
    pub ignored_columns: Vec<String>,
    /// Rows read.
    pub rows: usize,
    /// Valid stores without a name, named by their id.
    pub named_by_id: usize,
    /// Values dropped from valid rows (unreadable opening hours), file order.
    pub warnings: Vec<RejectedRow>,
}

/// Sets the optional descriptive fields of a store read from a row. Opening hours that
/// cannot be read are left out and returned as a warning; the other fields are checked
/// with the store.
fn describe(
    store: &mut Store,
    brand: Option<&str>,
    tags: Vec<String>,
    address: Option<&str>,
    hours: Option<&str>,
) -> Option<FieldError> {
    store.brand = brand.map(str::to_string);
    store.tags = tags;
    store.address = address.map(str::to_string);
    match hours.map(|h| crate::config::parse_opening_hours(h).map(|_| h)) {
        Some(Ok(h)) => {
            store.opening_hours = Some(h.to_string());
            None
        }
        Some(Err(e)) => Some(FieldError::new(
            "opening_hours",
            format!("{}; left out, so the store counts as always open", e.reason),
        )),
        None => None,
    }
}

/// Tags from a `;`-separated text, trimmed and lower-cased, empty ones dropped.
fn split_tags(raw: &str) -> Vec<String> {
    raw.split(';')
        .map(|t| t.trim().to_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

impl Parsed {
    fn reject(&mut self, row: usize, id: Option<String>, e: FieldError) {
        self.rejected.push(RejectedRow {
            row,
            id,
            field: e.field,
            reason: e.reason,
        });
    }
}

fn body_error(reason: impl Into<String>) -> FieldError {
    FieldError::new("body", reason)
}

/// Parses a whole file. A file that cannot be read at all (no header, not a
/// FeatureCollection, too many rows) is an error naming `body`; a bad row is a
/// [`RejectedRow`], and every row is checked.
///
/// # Errors
/// A [`FieldError`] on `body` for a file that cannot be read as `format`.
pub fn parse(text: &str, format: Format, defaults: &Defaults) -> Result<Parsed, FieldError> {
    let mut parsed = match format {
        Format::Csv => parse_csv(text, defaults)?,
        Format::Geojson => parse_geojson(text, defaults)?,
    };
    // The same id twice: every such row is rejected (which one is meant is not known).
    let mut count: HashMap<Id, usize> = HashMap::new();
    for (_, s) in &parsed.stores {
        *count.entry(s.id.clone()).or_default() += 1;
    }
    if count.values().any(|&n| n > 1) {
        let (keep, dup): (Vec<_>, Vec<_>) = std::mem::take(&mut parsed.stores)
            .into_iter()
            .partition(|(_, s)| count[&s.id] == 1);
        for (row, s) in dup {
            let reason = format!("{} is in the file more than once", s.id);
            parsed.reject(row, Some(s.id.to_string()), FieldError::new("id", reason));
        }
        parsed.rejected.sort_by_key(|r| r.row);
        parsed.stores = keep;
    }
    parsed.named_by_id = parsed
        .stores
        .iter()
        .filter(|(_, s)| s.name == s.id.as_str())
        .count();
    Ok(parsed)
}

/// Whether two stores are the same but for the last bits of their coordinates: a store
/// read back from JSON may differ from the file's in its last unit of precision (serde_json
/// parses floats fast, not always to the nearest double), and that is no change to write.
/// Coordinates within 1e-9 (under a millimetre) count as equal.
pub fn same_store(a: &Store, b: &Store) -> bool {
    fn close(x: &Value, y: &Value) -> bool {
        match (x, y) {
            (Value::Number(p), Value::Number(q)) => match (p.as_f64(), q.as_f64()) {
                (Some(p), Some(q)) => (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0),
                _ => p == q,
            },
            (Value::Array(p), Value::Array(q)) => {
                p.len() == q.len() && p.iter().zip(q).all(|(p, q)| close(p, q))
            }
            (Value::Object(p), Value::Object(q)) => {
                p.len() == q.len() && p.iter().all(|(k, v)| q.get(k).is_some_and(|w| close(v, w)))
            }
            _ => x == y,
        }
    }
    if a == b {
        return true;
    }
    if (&a.id, &a.name, &a.category, &a.time_zone) != (&b.id, &b.name, &b.category, &b.time_zone) {
        return false;
    }
    match (
        serde_json::to_value(&a.fence),
        serde_json::to_value(&b.fence),
    ) {
        (Ok(x), Ok(y)) => close(&x, &y),
        _ => false,
    }
}

/// The time zone of a row: its own, else the file's.
fn time_zone(own: Option<&str>, defaults: &Defaults) -> Result<String, FieldError> {
    own.map(str::to_string)
        .or_else(|| defaults.time_zone.clone())
        .ok_or_else(|| {
            FieldError::new(
                "time_zone",
                "is missing: give the column or the file's default (time_zone=Europe/Helsinki)",
            )
        })
}

fn number(field: &str, raw: &str) -> Result<f64, FieldError> {
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| FieldError::new(field, format!("must be a number, got {raw:?}")))
}

fn id(field: &str, raw: &str) -> Result<Id, FieldError> {
    Id::parse(raw.trim()).map_err(|e| e.within(field))
}

/// The columns a CSV file may have, and the ones it must.
const CSV_COLUMNS: &[&str] = &[
    "id",
    "osm_type",
    "osm_id",
    "name",
    "category",
    "shop",
    "amenity",
    "tourism",
    "time_zone",
    "lat",
    "lon",
    "radius_m",
    "brand",
    "tags",
    "address",
    "opening_hours",
];

fn parse_csv(text: &str, defaults: &Defaults) -> Result<Parsed, FieldError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| body_error(format!("has no readable header row: {e}")))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let mut parsed = Parsed {
        ignored_columns: headers
            .iter()
            .filter(|h| !CSV_COLUMNS.contains(&h.as_str()))
            .cloned()
            .collect(),
        ..Parsed::default()
    };
    let has_id = col("id").is_some() || (col("osm_type").is_some() && col("osm_id").is_some());
    let has_category = ["category", "shop", "amenity", "tourism"]
        .iter()
        .any(|c| col(c).is_some());
    for (needed, present) in [
        ("id", has_id),
        ("name", col("name").is_some()),
        ("category", has_category),
        ("lat", col("lat").is_some()),
        ("lon", col("lon").is_some()),
    ] {
        if !present {
            return Err(body_error(format!(
                "has no {needed} column (the header is {})",
                headers.join(",")
            )));
        }
    }
    for (k, record) in reader.records().enumerate() {
        let row = k + 1;
        if row > MAX_ROWS {
            return Err(body_error(format!("has more than {MAX_ROWS} rows")));
        }
        parsed.rows = row;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                parsed.reject(
                    row,
                    None,
                    body_error(format!("row {row} is not valid CSV: {e}")),
                );
                continue;
            }
        };
        let get = |name: &str| {
            col(name)
                .and_then(|i| record.get(i))
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let store = (|| {
            let id = match get("id") {
                Some(raw) => id("id", raw)?,
                None => match (get("osm_type"), get("osm_id")) {
                    (Some(t), Some(n)) => id("osm_id", &format!("osm-{t}-{n}"))?,
                    _ => return Err(FieldError::new("id", "is empty")),
                },
            };
            let category = ["category", "shop", "amenity", "tourism"]
                .iter()
                .find_map(|c| get(c))
                .ok_or_else(|| {
                    FieldError::new("category", "is empty (and so are shop, amenity, tourism)")
                })?;
            let radius_m = match get("radius_m") {
                Some(r) => number("radius_m", r)?,
                None => defaults.radius_m,
            };
            let fence = Fence::Circle {
                lat: number("lat", get("lat").unwrap_or(""))?,
                lon: number("lon", get("lon").unwrap_or(""))?,
                radius_m,
            };
            let mut store = Store {
                name: get("name").map_or_else(|| id.to_string(), str::to_string),
                category: category.to_string(),
                time_zone: time_zone(get("time_zone"), defaults)?,
                fence,
                id,
                brand: None,
                tags: Vec::new(),
                address: None,
                opening_hours: None,
            };
            let warning = describe(
                &mut store,
                get("brand"),
                get("tags").map(split_tags).unwrap_or_default(),
                get("address"),
                get("opening_hours"),
            );
            // Fence fields are columns here: `fence.lat` is the `lat` column.
            store.validate().map_err(|e| FieldError {
                field: e
                    .field
                    .strip_prefix("fence.")
                    .unwrap_or(&e.field)
                    .to_string(),
                ..e
            })?;
            Ok((store, warning))
        })();
        let id_of = get("id").map(str::to_string);
        match store {
            Ok((s, warning)) => {
                if let Some(w) = warning {
                    parsed.warnings.push(RejectedRow {
                        row,
                        id: Some(s.id.to_string()),
                        field: w.field,
                        reason: w.reason,
                    });
                }
                parsed.stores.push((row, s));
            }
            Err(e) => parsed.reject(row, id_of, e),
        }
    }
    Ok(parsed)
}

/// The properties a GeoJSON feature may have.
const GEOJSON_PROPERTIES: &[&str] = &[
    "id",
    "name",
    "category",
    "time_zone",
    "radius_m",
    "brand",
    "tags",
    "address",
    "opening_hours",
];

fn parse_geojson(text: &str, defaults: &Defaults) -> Result<Parsed, FieldError> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| body_error(format!("is not valid JSON: {e}")))?;
    if v.get("type").and_then(Value::as_str) != Some("FeatureCollection") {
        return Err(FieldError::new("type", "must be \"FeatureCollection\""));
    }
    let features = v
        .get("features")
        .and_then(Value::as_array)
        .ok_or_else(|| FieldError::new("features", "must be a list of features"))?;
    if features.len() > MAX_ROWS {
        return Err(FieldError::new(
            "features",
            format!("has more than {MAX_ROWS} features"),
        ));
    }
    let mut parsed = Parsed {
        rows: features.len(),
        ..Parsed::default()
    };
    let mut ignored = std::collections::BTreeSet::new();
    for (k, f) in features.iter().enumerate() {
        let row = k + 1;
        let props = f.get("properties").and_then(Value::as_object);
        for key in props.into_iter().flat_map(|p| p.keys()) {
            if !GEOJSON_PROPERTIES.contains(&key.as_str()) {
                ignored.insert(key.clone());
            }
        }
        let prop = |name: &str| props.and_then(|p| p.get(name));
        let text = |name: &str| -> Result<Option<&str>, FieldError> {
            match prop(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim())),
                Some(_) => Err(FieldError::new(
                    format!("properties.{name}"),
                    "must be a string",
                )),
            }
        };
        let own_id = match f.get("id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let store = (|| {
            if f.get("type").and_then(Value::as_str) != Some("Feature") {
                return Err(FieldError::new("type", "must be \"Feature\""));
            }
            let id = match (text("id")?, own_id.as_deref()) {
                (Some(raw), _) => id("properties.id", raw)?,
                (None, Some(raw)) => id("id", raw)?,
                (None, None) => return Err(FieldError::new("properties.id", "is missing")),
            };
            let geometry = f
                .get("geometry")
                .filter(|g| !g.is_null())
                .ok_or_else(|| FieldError::new("geometry", "is missing"))?;
            let fence = match geometry.get("type").and_then(Value::as_str) {
                Some("Point") => {
                    let c = geometry
                        .get("coordinates")
                        .and_then(Value::as_array)
                        .filter(|c| c.len() >= 2)
                        .ok_or_else(|| {
                            FieldError::new("geometry.coordinates", "must be [lon, lat]")
                        })?;
                    let coord = |i: usize, name: &str| {
                        c[i].as_f64().ok_or_else(|| {
                            FieldError::new(
                                format!("geometry.coordinates[{i}]"),
                                format!("{name} must be a number"),
                            )
                        })
                    };
                    let radius_m = match prop("radius_m") {
                        None | Some(Value::Null) => defaults.radius_m,
                        Some(r) => r.as_f64().ok_or_else(|| {
                            FieldError::new("properties.radius_m", "must be a number")
                        })?,
                    };
                    Fence::Circle {
                        lat: coord(1, "lat")?,
                        lon: coord(0, "lon")?,
                        radius_m,
                    }
                }
                Some("Polygon" | "MultiPolygon") => Fence::Polygon {
                    geometry: geometry.clone(),
                },
                _ => {
                    return Err(FieldError::new(
                        "geometry.type",
                        "must be Point, Polygon or MultiPolygon",
                    ));
                }
            };
            let mut store = Store {
                name: text("name")?.map_or_else(|| id.to_string(), str::to_string),
                id,
                category: text("category")?.unwrap_or("").to_string(),
                time_zone: time_zone(text("time_zone")?, defaults)?,
                fence,
                brand: None,
                tags: Vec::new(),
                address: None,
                opening_hours: None,
            };
            let tags = match prop("tags") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(t)) => split_tags(t),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|t| {
                        t.as_str()
                            .map(|t| t.trim().to_lowercase())
                            .ok_or_else(|| FieldError::new("properties.tags", "must be texts"))
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(FieldError::new(
                        "properties.tags",
                        "must be a text (separated by ;) or a list of texts",
                    ));
                }
            };
            let warning = describe(
                &mut store,
                text("brand")?,
                tags,
                text("address")?,
                text("opening_hours")?,
            );
            store.validate().map_err(|e| {
                let field = match e.field.as_str() {
                    "fence.lat" => "geometry.coordinates[1]".to_string(),
                    "fence.lon" => "geometry.coordinates[0]".to_string(),
                    "fence.radius_m" => "properties.radius_m".to_string(),
                    f => f
                        .strip_prefix("fence.")
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("properties.{f}")),
                };
                FieldError { field, ..e }
            })?;
            Ok((store, warning))
        })();
        match store {
            Ok((s, warning)) => {
                if let Some(w) = warning {
                    parsed.warnings.push(RejectedRow {
                        row,
                        id: Some(s.id.to_string()),
                        field: format!("properties.{}", w.field),
                        reason: w.reason,
                    });
                }
                parsed.stores.push((row, s));
            }
            Err(e) => parsed.reject(
                row,
                text("id").ok().flatten().map(str::to_string).or(own_id),
                e,
            ),
        }
    }
    parsed.ignored_columns = ignored
        .into_iter()
        .map(|k| format!("properties.{k}"))
        .collect();
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn helsinki() -> Defaults {
        Defaults {
            time_zone: Some("Europe/Helsinki".into()),
            ..Defaults::default()
        }
    }

    #[test]
    fn an_osm_extract_imports_with_its_ids_categories_and_quoted_names() {
        let text = "osm_type,osm_id,name,shop,amenity,tourism,opening_hours,lat,lon,osm_timestamp\n\
            node,1,\"Cafe, Bar & Co\",,cafe,,Mo-Fr 08:00-18:00,60.17,24.94,2020-01-01\n\
            way,2,Kiosk,kiosk,,,,60.171,24.941,2020-01-01\n\
            node,3,,,,hotel,,60.172,24.942,2020-01-01\n";
        let p = parse(text, Format::Csv, &helsinki()).unwrap();
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(p.rows, 3);
        assert_eq!(p.named_by_id, 1);
        assert_eq!(p.stores[2].1.name, "osm-node-3");
        assert_eq!(p.ignored_columns, ["osm_timestamp"]);
        // The opening hours are kept; a row without them has none.
        assert_eq!(
            p.stores[0].1.opening_hours.as_deref(),
            Some("Mo-Fr 08:00-18:00")
        );
        assert_eq!(p.stores[1].1.opening_hours, None);
        assert!(p.warnings.is_empty());
        let (row, s) = &p.stores[0];
        assert_eq!(
            (*row, s.id.as_str(), s.name.as_str(), s.category.as_str()),
            (1, "osm-node-1", "Cafe, Bar & Co", "cafe")
        );
        assert_eq!(
            s.fence,
            Fence::Circle {
                lat: 60.17,
                lon: 24.94,
                radius_m: DEFAULT_RADIUS_M
            }
        );
        assert_eq!(p.stores[1].1.id.as_str(), "osm-way-2");
        assert_eq!(p.stores[1].1.category, "kiosk");
    }

    #[test]
    fn every_bad_row_is_reported_with_its_field_and_the_good_ones_kept() {
        let text = "id,name,category,time_zone,lat,lon,radius_m\n\
            a,A,cafe,,60.1,24.9,40\n\
            b,B,cafe,,91,24.9,40\n\
            c,C,cafe,Mars/Olympus,60.1,24.9,40\n\
            d,D,cafe,,60.1,east,40\n\
            e e,E,cafe,,60.1,24.9,40\n\
            f,F,cafe,,60.1,24.9,-3\n\
            g,G,,,60.1,24.9,40\n\
            a,A again,cafe,,60.1,24.9,40\n\
            h,H,cafe,,NaN,24.9,40\n";
        let p = parse(text, Format::Csv, &helsinki()).unwrap();
        let got: Vec<(usize, &str)> = p
            .rejected
            .iter()
            .map(|r| (r.row, r.field.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "id"),
                (2, "lat"),
                (3, "time_zone"),
                (4, "lon"),
                (5, "id"),
                (6, "radius_m"),
                (7, "category"),
                (8, "id"),
                (9, "lat")
            ]
        );
        assert!(p.stores.is_empty());
        assert_eq!(p.rejected[0].id.as_deref(), Some("a"));
    }

    #[test]
    fn a_file_that_cannot_be_read_names_the_body() {
        for text in ["", "name,lat,lon\nA,1,2\n", "id,name,category,lat\n"] {
            let e = parse(text, Format::Csv, &helsinki()).unwrap_err();
            assert_eq!(e.field, "body", "{text:?}: {e:?}");
        }
        let e = parse(
            "id,name,category,lat,lon\na,A,cafe,60,24\n",
            Format::Csv,
            &Defaults::default(),
        )
        .unwrap()
        .rejected;
        assert_eq!(e[0].field, "time_zone");
        assert_eq!(
            parse("{}", Format::Geojson, &helsinki()).unwrap_err().field,
            "type"
        );
        assert_eq!(
            parse("[1", Format::Geojson, &helsinki()).unwrap_err().field,
            "body"
        );
    }

    #[test]
    fn stores_differing_in_the_last_bits_of_a_coordinate_are_the_same() {
        let text = "id,name,category,lat,lon,radius_m\na,A,cafe,60.227157000000005,24.95,40\n";
        let file = parse(text, Format::Csv, &helsinki())
            .unwrap()
            .stores
            .remove(0)
            .1;
        let back: Store = serde_json::from_str(&serde_json::to_string(&file).unwrap()).unwrap();
        assert!(same_store(&file, &back));
        let Fence::Circle { lat, lon, radius_m } = file.fence.clone() else {
            unreachable!()
        };
        let mut ulp = file.clone();
        ulp.fence = Fence::Circle {
            lat: f64::from_bits(lat.to_bits() + 1),
            lon,
            radius_m,
        };
        assert!(ulp != file && same_store(&file, &ulp));
        let mut moved = back.clone();
        moved.fence = Fence::Circle {
            lat: 60.2272,
            lon: 24.95,
            radius_m: 40.0,
        };
        assert!(!same_store(&file, &moved));
        let mut renamed = back;
        renamed.name = "B".into();
        assert!(!same_store(&file, &renamed));
    }

    #[test]
    fn geojson_points_become_circles_and_polygons_stay_polygons() {
        let text = r#"{"type": "FeatureCollection", "features": [
            {"type": "Feature", "id": "p1", "properties": {"name": "Point", "category": "cafe", "radius_m": 30, "brand": "X", "tags": ["a", "B"], "opening_hours": "Mon 9am", "floor": 2},
             "geometry": {"type": "Point", "coordinates": [24.94, 60.17]}},
            {"type": "Feature", "properties": {"id": "m1", "name": "Mall", "category": "mall", "time_zone": "Europe/Helsinki"},
             "geometry": {"type": "Polygon", "coordinates": [[[24.9, 60.1], [24.91, 60.1], [24.91, 60.11], [24.9, 60.1]]]}},
            {"type": "Feature", "properties": {"id": "bad", "name": "Bowtie", "category": "mall"},
             "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}},
            {"type": "Feature", "properties": {"id": "line", "name": "Line", "category": "x"},
             "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}},
            {"type": "Feature", "properties": {"id": "far", "name": "Far", "category": "x"},
             "geometry": {"type": "Point", "coordinates": [24.9, 95]}}
        ]}"#;
        let p = parse(text, Format::Geojson, &helsinki()).unwrap();
        assert_eq!(p.stores.len(), 2, "{:?}", p.rejected);
        assert_eq!(
            p.stores[0].1.fence,
            Fence::Circle {
                lat: 60.17,
                lon: 24.94,
                radius_m: 30.0
            }
        );
        assert!(matches!(p.stores[1].1.fence, Fence::Polygon { .. }));
        assert_eq!(p.ignored_columns, ["properties.floor"]);
        let point = &p.stores[0].1;
        assert_eq!(
            (
                point.brand.as_deref(),
                point.tags.clone(),
                point.opening_hours.as_deref()
            ),
            (Some("X"), vec!["a".to_string(), "b".to_string()], None)
        );
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(
            (p.warnings[0].row, p.warnings[0].field.as_str()),
            (1, "properties.opening_hours")
        );
        let got: Vec<(usize, &str, Option<&str>)> = p
            .rejected
            .iter()
            .map(|r| (r.row, r.field.as_str(), r.id.as_deref()))
            .collect();
        assert_eq!(got[0].0, 3);
        assert!(got[0].1.starts_with("geometry"), "{got:?}");
        assert_eq!(got[1], (4, "geometry.type", Some("line")));
        assert_eq!(got[2], (5, "geometry.coordinates[1]", Some("far")));
    }
}
