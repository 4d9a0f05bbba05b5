//! A compiled catalog in one blob: what a deciding function loads at cold start instead of
//! reading every store and offer and compiling the geofence index again.
//!
//! [`encode`] writes a catalog as built (single store changes folded in first): the
//! configuration version, the offers, cap policy and campaigns as JSON, every store in a
//! compact binary form, and the geofence index's tables as they are in memory. [`decode`]
//! reads it back without compiling anything expensive: the index tables are taken as they
//! are (checked so that no lookup can go out of range; the square entries, most of the
//! bytes, are used where they lie in the snapshot, which the catalog keeps, and are written
//! without the planar pre-tests the build carries: a lookup then tests each candidate
//! exactly, a few hundred nanoseconds, where a start saves half the bytes), the fences'
//! shapes are rebuilt from the stores (a circle is three numbers; a polygon is parsed from
//! its GeoJSON), and opening hours are parsed on first use. Every store record is read and
//! checked, but a [`Store`] is decoded from its record only when first asked for: what
//! deciding needs (time zone, category, offers, shape) is compiled at once, and a start
//! that allocated every store's strings spent most of its time and memory on them. The
//! stores and offers were checked when the catalog was built, before it was written.
//!
//! The format is versioned ([`FORMAT`]); a reader refuses any other format, and the host
//! then builds the catalog from the stored configuration as before. Numbers are
//! little-endian; a string is its byte length (`u32`) and its UTF-8 bytes.
//!
//! | part | content |
//! |---|---|
//! | magic | `NCCATLOG`, then the format (`u32`) |
//! | version | `0`, or `1` and the audit entry id of the last change included |
//! | offers | count (`u32`), then one string: each offer as a line of JSON |
//! | configuration | JSON `{"policy", "campaigns"}` as one string |
//! | stores | count (`u32`), then per store: id, name, category, time zone, fence (`0` and latitude, longitude, radius as `f64`; or `1` and the GeoJSON geometry as a binary JSON value, numbers exact), brand, tags, address, opening hours (an absent optional is `0`, a present one `1` and the string) |
//! | index | the H3 resolution, the grid squares (key, first entry, count) and their fence entries (`u32` each: the fence's position, the top bit set when the fence holds the whole square), the H3 cells of large fences and theirs, the coarse squares near large fences |
//!
//! Format 1 (before 2026-12-05) carried each square entry's planar pre-test (20 bytes an
//! entry); a reader of format 2 refuses it and the host builds the catalog from the table
//! until the next change writes a snapshot again.
//! | end | `END!` |

use crate::campaign::Campaign;
use crate::catalog::Catalog;
use crate::config::{CapPolicy, Fence, Offer, Store};
use crate::geofence::{GeofenceIndex, Shape};
use crate::ids::Id;
use serde::{Deserialize, Serialize};

/// The snapshot format this build writes and reads.
pub const FORMAT: u32 = 2;

const MAGIC: &[u8; 8] = b"NCCATLOG";
const END: &[u8; 4] = b"END!";

/// Why a snapshot could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catalog snapshot: {0}")]
pub struct SnapshotError(pub String);

/// Writes `catalog` (with its changes folded into a fresh build when it carries any).
///
/// # Errors
/// None expected: folding the changes rebuilds a configuration that was valid piece by
/// piece.
pub fn encode(catalog: &Catalog) -> Result<Vec<u8>, SnapshotError> {
    let compacted;
    let c = if catalog.fences_as_built().is_some() && catalog.without_holes() {
        catalog
    } else {
        compacted = catalog
            .compacted()
            .map_err(|e| SnapshotError(format!("folding the changes in: {e}")))?;
        &compacted
    };
    let index = c
        .fences_as_built()
        .ok_or_else(|| SnapshotError("a fresh build carries changes".into()))?;
    let mut w = Writer(Vec::with_capacity(64 + c.store_count() * 160));
    w.0.extend_from_slice(MAGIC);
    w.u32(FORMAT);
    w.opt(c.version.as_deref());
    // The offers by count, then each as one JSON line: the reader allocates their list
    // once (grown by doubling, 10,000 offers touched twice their memory at a start).
    w.len(c.offers.len());
    let mut offers = String::new();
    for o in c.offers.iter() {
        offers
            .push_str(&serde_json::to_string(o).map_err(|e| SnapshotError(format!("offer: {e}")))?);
        offers.push('\n');
    }
    w.str(&offers);
    let config = serde_json::to_string(&Config {
        policy: c.policy.clone(),
        campaigns: c.campaigns.to_vec(),
    })
    .map_err(|e| SnapshotError(format!("configuration: {e}")))?;
    w.str(&config);
    w.len(c.store_count());
    for s in c.stores() {
        write_store(&mut w, s);
    }
    index.write_tables(&mut w);
    w.0.extend_from_slice(END);
    Ok(w.0)
}

/// Reads a snapshot written by [`encode`] (of this [`FORMAT`]). The catalog keeps `bytes`:
/// the geofence index's square entries are used where they lie in it.
///
/// # Errors
/// Another format, a truncated or corrupt blob, or a configuration that does not assemble
/// (an offer naming a store that is not there), described.
pub fn decode(bytes: Vec<u8>) -> Result<Catalog, SnapshotError> {
    let shared = std::sync::Arc::new(bytes);
    let mut r = Reader::new(&shared);
    if r.take(8).map_err(SnapshotError)? != MAGIC {
        return Err(SnapshotError("not a catalog snapshot".into()));
    }
    let format = r.u32().map_err(SnapshotError)?;
    if format != FORMAT {
        return Err(SnapshotError(format!(
            "format {format}, this build reads {FORMAT}"
        )));
    }
    read(&mut r).map_err(SnapshotError)
}

#[derive(Serialize, Deserialize)]
struct Config {
    policy: CapPolicy,
    campaigns: Vec<Campaign>,
}

fn read(r: &mut Reader<'_>) -> Result<Catalog, String> {
    let version = r.opt()?.map(str::to_string);
    let n = r.len(3)?;
    let mut offers = Vec::with_capacity(n);
    for o in serde_json::Deserializer::from_str(r.str()?).into_iter::<Offer>() {
        offers.push(o.map_err(|e| format!("offers[{}]: {e}", offers.len()))?);
    }
    if offers.len() != n {
        return Err(format!("{} offers where the count says {n}", offers.len()));
    }
    let config: Config =
        serde_json::from_str(r.str()?).map_err(|e| format!("configuration: {e}"))?;
    let n = r.len(20)?;
    let mut stores = Vec::with_capacity(n);
    let mut shapes = Vec::with_capacity(n);
    let mut tzs = Vec::with_capacity(n);
    let mut store_pos = crate::catalog::IdMap::with_capacity_and_hasher(n, Default::default());
    for i in 0..n {
        // Every record read and checked now, each store decoded from it on first use.
        let at = r.at;
        let (id, s) = read_record(r).map_err(|e| format!("stores[{i}]: {e}"))?;
        shapes.push(Shape::from_fence(&s.fence).map_err(|e| format!("stores[{i}].fence: {e}"))?);
        tzs.push(
            crate::config::parse_tz(s.time_zone)
                .map_err(|e| format!("stores[{i}].time_zone: {e}"))?,
        );
        match store_pos.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => {
                return Err(format!("stores[{i}]: duplicate id {}", e.key()));
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i as u32);
            }
        }
        stores.push(Record {
            at,
            shared: r.shared,
            category: s.category,
            brand: s.brand,
            tags: s.tags,
            opening_hours: s.opening_hours,
        });
    }
    let index = GeofenceIndex::read_tables(r, shapes)?;
    if r.take(4)? != END || r.at != r.b.len() {
        return Err("no end mark where the index ends".into());
    }
    Catalog::assemble(stores, tzs, store_pos, index, offers, config.policy, false)
        .and_then(|c| c.with_campaigns(config.campaigns))
        .map(|c| c.at_version(version))
        .map_err(|e| e.to_string())
}

/// A store's record as a snapshot holds it, its text borrowed.
struct RecordParts<'a> {
    time_zone: &'a str,
    category: &'a str,
    fence: Fence,
    brand: Option<&'a str>,
    tags: Vec<&'a str>,
    opening_hours: Option<&'a str>,
}

/// What assembling the catalog reads of a store record, and where the record is.
struct Record<'a> {
    at: usize,
    shared: &'a std::sync::Arc<Vec<u8>>,
    category: &'a str,
    brand: Option<&'a str>,
    tags: Vec<&'a str>,
    opening_hours: Option<&'a str>,
}

impl crate::catalog::StoreSource for Record<'_> {
    fn category(&self) -> &str {
        self.category
    }
    fn brand(&self) -> Option<&str> {
        self.brand
    }
    fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().copied()
    }
    fn opening_hours(&self) -> Option<&str> {
        self.opening_hours
    }
    fn into_holder(self) -> crate::catalog::Holder {
        crate::catalog::Holder::Record {
            snapshot: self.shared.clone(),
            at: self.at,
        }
    }
}

/// Reads one store record as [`write_store`] wrote it, checking every field a [`Store`]
/// is decoded from (so that [`store_at`] cannot fail on it), without decoding the text.
fn read_record<'a>(r: &mut Reader<'a>) -> Result<(Id, RecordParts<'a>), String> {
    let id = Id::parse(r.str()?).map_err(|e| format!("id: {}", e.reason))?;
    let _name = r.str()?;
    let category = r.str()?;
    let time_zone = r.str()?;
    let fence = read_fence(r)?;
    let brand = r.opt()?;
    let n = r.len(4)?;
    let mut tags = Vec::with_capacity(n);
    for _ in 0..n {
        tags.push(r.str()?);
    }
    let _address = r.opt()?;
    let opening_hours = r.opt()?;
    Ok((
        id,
        RecordParts {
            time_zone,
            category,
            fence,
            brand,
            tags,
            opening_hours,
        },
    ))
}

/// The store whose record starts at byte `at` of `snapshot`, a record
/// [`read_record`] accepted.
///
/// # Panics
/// When it is not such a record (a catalog only points at the records it read).
pub(crate) fn store_at(snapshot: &std::sync::Arc<Vec<u8>>, at: usize) -> Store {
    let mut r = Reader {
        b: snapshot,
        at,
        shared: snapshot,
    };
    read_store(&mut r).unwrap_or_else(|e| panic!("store record at byte {at}: {e}"))
}

fn read_fence(r: &mut Reader<'_>) -> Result<Fence, String> {
    Ok(match r.u8()? {
        0 => Fence::Circle {
            lat: r.f64()?,
            lon: r.f64()?,
            radius_m: r.f64()?,
        },
        1 => Fence::Polygon {
            geometry: read_value(r, 0).map_err(|e| format!("fence: {e}"))?,
        },
        k => return Err(format!("fence: unknown kind {k}")),
    })
}

fn write_store(w: &mut Writer, s: &Store) {
    // Every field by name: a field added to `Store` fails to compile here until written.
    let Store {
        id,
        name,
        category,
        time_zone,
        fence,
        brand,
        tags,
        address,
        opening_hours,
    } = s;
    w.str(id.as_str());
    w.str(name);
    w.str(category);
    w.str(time_zone);
    match fence {
        Fence::Circle { lat, lon, radius_m } => {
            w.u8(0);
            w.f64(*lat);
            w.f64(*lon);
            w.f64(*radius_m);
        }
        Fence::Polygon { geometry } => {
            w.u8(1);
            write_value(w, geometry);
        }
    }
    w.opt(brand.as_deref());
    w.len(tags.len());
    for t in tags {
        w.str(t);
    }
    w.opt(address.as_deref());
    w.opt(opening_hours.as_deref());
}

fn read_store(r: &mut Reader<'_>) -> Result<Store, String> {
    let id = Id::parse(r.str()?).map_err(|e| format!("id: {}", e.reason))?;
    let name = r.str()?.to_string();
    let category = r.str()?.to_string();
    let time_zone = r.str()?.to_string();
    let fence = read_fence(r)?;
    let brand = r.opt()?.map(str::to_string);
    let n = r.len(4)?;
    let mut tags = Vec::with_capacity(n);
    for _ in 0..n {
        tags.push(r.str()?.to_string());
    }
    Ok(Store {
        id,
        name,
        category,
        time_zone,
        fence,
        brand,
        tags,
        address: r.opt()?.map(str::to_string),
        opening_hours: r.opt()?.map(str::to_string),
    })
}

/// A JSON value in binary, numbers exactly as held (a GeoJSON position written as text and
/// parsed back may move by one unit in the last place).
fn write_value(w: &mut Writer, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Null => w.u8(0),
        Value::Bool(b) => w.u8(1 + u8::from(*b)),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                w.u8(3);
                w.u64(u);
            } else if let Some(i) = n.as_i64() {
                w.u8(4);
                w.u64(i as u64);
            } else {
                w.u8(5);
                w.f64(n.as_f64().unwrap_or(0.0));
            }
        }
        Value::String(s) => {
            w.u8(6);
            w.str(s);
        }
        Value::Array(a) => {
            w.u8(7);
            w.len(a.len());
            for x in a {
                write_value(w, x);
            }
        }
        Value::Object(o) => {
            w.u8(8);
            w.len(o.len());
            for (k, x) in o {
                w.str(k);
                write_value(w, x);
            }
        }
    }
}

/// Nesting a GeoJSON geometry never reaches (a corrupt blob must not exhaust the stack).
const MAX_DEPTH: usize = 16;

fn read_value(r: &mut Reader<'_>, depth: usize) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    if depth > MAX_DEPTH {
        return Err("nested too deep".into());
    }
    Ok(match r.u8()? {
        0 => Value::Null,
        1 => Value::Bool(false),
        2 => Value::Bool(true),
        3 => Value::from(r.u64()?),
        4 => Value::from(r.u64()? as i64),
        5 => serde_json::Number::from_f64(r.f64()?)
            .map(Value::Number)
            .ok_or("a number that is not finite")?,
        6 => Value::String(r.str()?.to_string()),
        7 => {
            let n = r.len(1)?;
            let mut a = Vec::with_capacity(n);
            for _ in 0..n {
                a.push(read_value(r, depth + 1)?);
            }
            Value::Array(a)
        }
        8 => {
            let n = r.len(5)?;
            let mut o = serde_json::Map::new();
            for _ in 0..n {
                let k = r.str()?.to_string();
                o.insert(k, read_value(r, depth + 1)?);
            }
            Value::Object(o)
        }
        k => return Err(format!("value kind {k}")),
    })
}

/// Appends little-endian numbers and length-prefixed strings.
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A count (lists here hold far fewer than 2³² items).
    pub(crate) fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("fewer than 2^32 items"));
    }
    pub(crate) fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
}

/// Reads what [`Writer`] wrote; every read checks the bytes are there.
pub(crate) struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    /// The buffer `b` is, for parts used in place.
    shared: &'a std::sync::Arc<Vec<u8>>,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `b`.
    pub(crate) fn new(b: &'a std::sync::Arc<Vec<u8>>) -> Self {
        Reader {
            b,
            at: 0,
            shared: b,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    /// The next `n` bytes used in place: the buffer and their offset in it.
    pub(crate) fn shared(&mut self, n: usize) -> Result<(std::sync::Arc<Vec<u8>>, usize), String> {
        let start = self.at;
        self.take(n)?;
        Ok((self.shared.clone(), start))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    /// A count of items of at least `item` bytes each, refused when the bytes left cannot
    /// hold them (so a corrupt count never reserves gigabytes).
    pub(crate) fn len(&mut self, item: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item.max(1)) > self.b.len() - self.at {
            return Err(format!("a count of {n} past the end at byte {}", self.at));
        }
        Ok(n)
    }
    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.len(1)?;
        std::str::from_utf8(self.take(n)?).map_err(|e| format!("text: {e}"))
    }
    fn opt(&mut self) -> Result<Option<&'a str>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            k => Err(format!("optional marker {k}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Circles small and large (over 5 km: the H3 cells' path of the index), polygons with
    /// and without holes, a multipolygon, hours, brands, tags and addresses; offers by
    /// category, id, brand and tag; a campaign with a holdout.
    fn catalog() -> Catalog {
        let mut stores = Vec::new();
        for i in 0..300usize {
            let (lat, lon) = (
                60.10 + (i % 20) as f64 * 0.004,
                24.80 + (i / 20) as f64 * 0.006,
            );
            let fence = match i % 10 {
                0 => json!({"type": "polygon", "geometry": {"type": "Polygon", "coordinates": [[
                    [lon, lat], [lon + 0.002, lat], [lon + 0.002, lat + 0.001], [lon, lat + 0.001], [lon, lat]]]}}),
                1 => {
                    json!({"type": "polygon", "geometry": {"type": "MultiPolygon", "coordinates": [
                    [[[lon, lat], [lon + 0.001, lat], [lon, lat + 0.001], [lon, lat]]],
                    [[[lon + 0.03, lat], [lon + 0.04, lat], [lon + 0.04, lat + 0.02], [lon + 0.03, lat + 0.02], [lon + 0.03, lat]],
                     [[lon + 0.034, lat + 0.005], [lon + 0.036, lat + 0.005], [lon + 0.036, lat + 0.007], [lon + 0.034, lat + 0.005]]]]}})
                }
                2 if i % 60 == 2 => {
                    json!({"type": "circle", "lat": lat, "lon": lon, "radius_m": 6000.0})
                }
                _ => {
                    json!({"type": "circle", "lat": lat, "lon": lon, "radius_m": 30.0 + (i % 7) as f64 * 25.0})
                }
            };
            let mut v = json!({
                "id": format!("s{i}"), "name": format!("Store {i} ä"), "category": format!("c{}", i % 4),
                "time_zone": if i % 3 == 0 { "Europe/Helsinki" } else { "America/New_York" },
                "fence": fence,
            });
            if i % 2 == 0 {
                v["brand"] = json!(format!("b{}", i % 5));
                v["tags"] = json!([format!("t{}", i % 3), "mall:kamppi"]);
            }
            if i % 4 == 1 {
                v["address"] = json!(format!("Mannerheimintie {i}"));
                v["opening_hours"] = json!("Mo-Fr 08:00-20:00; Sa 10:00-16:00");
            }
            stores.push(serde_json::from_value(v).unwrap());
        }
        let offer = |k: usize, sel: serde_json::Value| -> Offer {
            let mut v = json!({
                "id": format!("o{k}"), "campaign_id": if k % 2 == 0 { "rain" } else { "other" },
                "title": "T", "body": "B", "category": "coffee", "trigger": {"type": "enter"},
                "threshold": 0.0, "holdout": 0.05 * k as f64,
            });
            for (key, val) in sel.as_object().unwrap() {
                v[key] = val.clone();
            }
            serde_json::from_value(v).unwrap()
        };
        let offers = vec![
            offer(0, json!({"store_categories": ["c0", "c2"]})),
            offer(1, json!({"store_ids": ["s1", "s11", "s250"]})),
            offer(2, json!({"store_brands": ["b2"]})),
            offer(3, json!({"store_tags": ["t1"]})),
        ];
        let campaign: Campaign = serde_json::from_value(json!({
            "id": "rain", "name": "Rainy day", "holdout": 0.1, "status": "active"
        }))
        .unwrap();
        Catalog::build(stores, offers, CapPolicy::default())
            .unwrap()
            .with_campaigns(vec![campaign])
            .unwrap()
            .at_version(Some("2026-12-04T20:00:00.000000Z-abc".into()))
    }

    /// What a decision reads: per store its offers, time zone, opening on a weekday and a
    /// Sunday, fence; then the stores holding each point of a grid over every fence, and
    /// the campaigns' holdouts.
    fn reads(c: &Catalog) -> Vec<String> {
        let day = |d| {
            chrono::NaiveDate::from_ymd_opt(2026, 12, d)
                .unwrap()
                .and_hms_opt(12, 0, 0)
                .unwrap()
        };
        let mut out: Vec<String> = c
            .stores_at()
            .map(|(p, s)| {
                let offers: Vec<u32> = c.offers_at(p).collect();
                format!(
                    "{s:?} {offers:?} {} {} {} {:?}",
                    c.tz(p),
                    c.is_open(p, day(2)),
                    c.is_open(p, day(6)),
                    c.shape(p)
                )
            })
            .collect();
        for a in 0..120 {
            for b in 0..160 {
                let (lat, lon) = (60.05 + a as f64 * 0.0012, 24.75 + b as f64 * 0.0011);
                out.push(format!("{lat} {lon} {:?}", c.lookup(lat, lon)));
            }
        }
        out.push(format!(
            "{:?} {:?} {} {}",
            c.version,
            c.campaigns,
            c.holdout_of(&Id::parse("rain").unwrap()),
            c.holdout_of(&Id::parse("other").unwrap())
        ));
        out
    }

    #[test]
    fn a_catalog_reads_back_as_it_was_written() {
        let c = catalog();
        let bytes = encode(&c).unwrap();
        let back = decode(bytes.clone()).unwrap();
        let (want, got) = (reads(&c), reads(&back));
        assert!(want.iter().filter(|l| !l.ends_with("[]")).count() > 1_000);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w);
        }
        assert_eq!(back.store_count(), 300);
        assert_eq!(back.offers, c.offers);
        assert_eq!(back.policy, c.policy);
        // Written again, the same bytes but for the hash maps' order: same length.
        assert_eq!(encode(&back).unwrap().len(), bytes.len());
    }

    /// Every prefix of a snapshot is refused with an error, never a panic; so is any
    /// snapshot with one byte changed that would let a lookup go out of range (a changed
    /// byte elsewhere may still read: a name, a number).
    #[test]
    fn truncated_or_corrupt_snapshots_are_refused_without_panicking() {
        let c = Catalog::build(
            catalog().stores().take(40).cloned().collect(),
            vec![],
            CapPolicy::default(),
        )
        .unwrap();
        let bytes = encode(&c).unwrap();
        for n in 0..bytes.len() {
            assert!(
                decode(bytes[..n].to_vec()).is_err(),
                "prefix of {n} bytes read"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(longer).is_err());
        for k in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[k] ^= flip;
                if let Ok(read) = decode(b) {
                    // Whatever reads back serves lookups without going out of range, and
                    // every store decodes from its record (read and checked up front, each
                    // store is decoded on first use).
                    for a in 0..30 {
                        let _ = read.lookup(60.10 + a as f64 * 0.003, 24.80 + a as f64 * 0.001);
                    }
                    assert_eq!(read.stores().count(), 40);
                }
            }
        }
        let mut other = bytes.clone();
        other[8..12].copy_from_slice(&(FORMAT + 1).to_le_bytes());
        assert_eq!(
            decode(other).unwrap_err().0,
            format!("format {}, this build reads {FORMAT}", FORMAT + 1)
        );
        assert_eq!(
            decode(b"{\"stores\": []}".to_vec()).unwrap_err().0,
            "not a catalog snapshot"
        );
    }

    /// A catalog carrying single store changes (one added, one removed) is written as the
    /// fresh build of its stores.
    /// The offers' count is held against the lines that follow it, and an offer that does
    /// not parse is named by its position: either way nothing is read.
    #[test]
    fn offers_that_disagree_with_their_count_or_do_not_parse_are_refused() {
        let c = catalog();
        let bytes = encode(&c).unwrap();
        let version = c.version.as_deref().unwrap();
        // Magic, format, the version (marker, length, text), then the offers' count.
        let at = 8 + 4 + 1 + 4 + version.len();
        assert_eq!(bytes[at..at + 4], 4u32.to_le_bytes());
        for (n, want) in [
            (5u32, "4 offers where the count says 5"),
            (3, "4 offers where the count says 3"),
        ] {
            let mut b = bytes.clone();
            b[at..at + 4].copy_from_slice(&n.to_le_bytes());
            assert_eq!(decode(b).unwrap_err().0, want);
        }
        let text_at = at + 8;
        let second = text_at + bytes[text_at..].iter().position(|&x| x == b'\n').unwrap() + 1;
        let mut b = bytes.clone();
        b[second] = b'[';
        let err = decode(b).unwrap_err().0;
        assert!(err.starts_with("offers[1]: "), "{err}");
    }

    #[test]
    fn changes_are_folded_in_before_writing() {
        let c = catalog();
        let mut moved = c.store_by_id(&Id::parse("s5").unwrap()).unwrap().clone();
        moved.id = Id::parse("new").unwrap();
        let changed = c
            .with_store(moved)
            .unwrap()
            .without_store(&Id::parse("s7").unwrap())
            .unwrap()
            .unwrap();
        assert!(changed.changes() > 0);
        let back = decode(encode(&changed).unwrap()).unwrap();
        assert_eq!(back.changes(), 0);
        let ids = |c: &Catalog, lat, lon| {
            let mut v: Vec<String> = c
                .lookup(lat, lon)
                .into_iter()
                .map(|p| c.store(p).id.to_string())
                .collect();
            v.sort();
            v
        };
        let s5 = c.store_by_id(&Id::parse("s5").unwrap()).unwrap();
        let Fence::Circle { lat, lon, .. } = s5.fence else {
            panic!("s5 is a circle")
        };
        let at_s5 = ids(&back, lat, lon);
        assert!(at_s5.contains(&"new".to_string()) && at_s5.contains(&"s5".to_string()));
        assert_eq!(at_s5, ids(&changed, lat, lon));
        assert!(!back.has_store(&Id::parse("s7").unwrap()));
        assert_eq!(back.store_count(), 300);
        assert_eq!(back.version, c.version);
    }
}
