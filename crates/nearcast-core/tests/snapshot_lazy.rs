//! A catalog read from its snapshot decodes each store only when it is first read, and then
//! answers as the catalog it was written from: stores, opening hours, offers and lookups,
//! whatever the stores and the order they are read in.

use nearcast_core::catalog::Catalog;
use nearcast_core::config::{CapPolicy, Offer, Store};
use proptest::prelude::*;
use serde_json::json;

const HOURS: [Option<&str>; 4] = [
    None,
    Some("Mo-Fr 08:00-20:00; Sa 10:00-16:00"),
    Some("24/7"),
    Some("Mo-Su 07:00-23:00; Dec 24 off"),
];

fn store(i: usize, lat: f64, lon: f64, radius: f64, kind: u8, hours: usize) -> Store {
    let fence = if kind % 5 == 0 {
        let d = radius / 111_000.0;
        json!({"type": "polygon", "geometry": {"type": "Polygon", "coordinates": [[
            [lon, lat], [lon + 2.0 * d, lat], [lon + 2.0 * d, lat + d], [lon, lat + d], [lon, lat]]]}})
    } else {
        json!({"type": "circle", "lat": lat, "lon": lon, "radius_m": radius})
    };
    let mut v = json!({
        "id": format!("s{i}"), "name": format!("Store {i} – ä"), "category": format!("c{}", kind % 3),
        "time_zone": if kind % 2 == 0 { "Europe/Helsinki" } else { "America/New_York" },
        "fence": fence,
    });
    if kind % 4 == 1 {
        v["brand"] = json!(format!("b{}", kind % 2));
        v["tags"] = json!(["mall:kamppi", format!("t{kind}")]);
        v["address"] = json!(format!("Mannerheimintie {i}"));
    }
    if let Some(h) = HOURS[hours] {
        v["opening_hours"] = json!(h);
    }
    serde_json::from_value(v).expect("a valid store")
}

fn offers() -> Vec<Offer> {
    [
        json!({"store_categories": ["c0"]}),
        json!({"store_brands": ["b1"]}),
        json!({"store_tags": ["mall:kamppi"]}),
        json!({"store_ids": ["s0"]}),
    ]
    .into_iter()
    .enumerate()
    .map(|(k, sel)| {
        let mut v = json!({"id": format!("o{k}"), "campaign_id": "c", "title": "T", "body": "B",
            "category": "coffee", "trigger": {"type": "enter"}, "threshold": 0.0});
        for (key, val) in sel.as_object().unwrap() {
            v[key] = val.clone();
        }
        serde_json::from_value(v).expect("a valid offer")
    })
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn stores_are_decoded_on_first_read_and_read_as_written(
        fences in prop::collection::vec(
            (60.15f64..60.20, 24.90f64..24.97, 10.0f64..400.0, 0u8..20, 0usize..4), 1..60),
        order in prop::collection::vec(any::<prop::sample::Index>(), 1..80),
        points in prop::collection::vec((60.14f64..60.21, 24.89f64..24.98), 40),
    ) {
        let stores: Vec<Store> = fences
            .iter()
            .enumerate()
            .map(|(i, &(lat, lon, r, kind, hours))| store(i, lat, lon, r, kind, hours))
            .collect();
        let built = Catalog::build(stores.clone(), offers(), CapPolicy::default()).unwrap();
        let read = nearcast_core::snapshot::decode(
            nearcast_core::snapshot::encode(&built).unwrap(),
        )
        .unwrap();
        // Nothing decoded yet: every position holds its record.
        let records = format!("{read:?}").matches("<store at byte").count();
        prop_assert_eq!(records, stores.len());
        // Read in any order, each store is the one written, with its hours and offers.
        let n = stores.len();
        let days = [
            chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap().and_hms_opt(9, 0, 0).unwrap(),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 6).unwrap().and_hms_opt(21, 30, 0).unwrap(),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 24).unwrap().and_hms_opt(12, 0, 0).unwrap(),
        ];
        let mut first_reads = std::collections::BTreeSet::new();
        for ix in &order {
            let p = ix.index(n) as u32;
            first_reads.insert(p);
            prop_assert_eq!(read.store(p), built.store(p));
            for d in days {
                prop_assert_eq!(read.is_open(p, d), built.is_open(p, d));
            }
            prop_assert_eq!(read.offers_at(p).collect::<Vec<_>>(), built.offers_at(p).collect::<Vec<_>>());
            prop_assert_eq!(read.tz(p), built.tz(p));
        }
        // Only the stores read were decoded.
        let still = format!("{read:?}").matches("<store at byte").count();
        prop_assert_eq!(still, n - first_reads.len());
        for (lat, lon) in points {
            prop_assert_eq!(read.lookup(lat, lon), built.lookup(lat, lon));
        }
        // A listing decodes the rest, as written.
        prop_assert_eq!(read.stores().cloned().collect::<Vec<_>>(), stores);
    }
}
