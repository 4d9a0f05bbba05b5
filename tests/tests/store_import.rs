//! `POST /v1/admin/stores/import` on the real Helsinki OpenStreetMap extract
//! (`bench/data/helsinki_osm_pois.csv`, 1,711 shops and amenities, a third unnamed, names
//! with commas and quotes): a dry run reports and writes nothing; a file with bad rows is
//! refused whole, naming each row, and changes no row of any table; the clean file is one
//! catalog change with one audit entry, found by the geofence index at once; importing it
//! again writes nothing. On SQLite and on DynamoDB.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use nearcast_api::auth::{Access, Role};
use nearcast_tests::*;
use serde_json::Value;
use tower::ServiceExt;

const OSM: &str = include_str!("../../bench/data/helsinki_osm_pois.csv");

fn access() -> Access {
    api_keys(&[("vic", Role::Viewer), ("eddie", Role::Editor)])
}

async fn import(
    h: &Harness,
    who: &str,
    query: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, Value) {
    let app = nearcast_api::router_with(h.engine.clone(), access());
    let req = Request::builder()
        .method("POST")
        .uri(format!("/v1/admin/stores/import{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {}", key_of(who)))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The extract with two rows broken the way real files break: a latitude out of range
/// (data row 10) and a longitude that is not a number (data row 500).
fn with_two_bad_rows() -> String {
    OSM.lines()
        .enumerate()
        .map(|(k, line)| {
            let mut f: Vec<String> = line.split(',').map(str::to_string).collect();
            let n = f.len();
            match k {
                10 => f[n - 3] = "91.5".into(),
                500 => f[n - 2] = "24.9x".into(),
                _ => {}
            }
            f.join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn the_helsinki_extract_imports_all_or_nothing(backend: Backend) {
    let h = harness(backend, 2, policy(3)).await;
    let rows = dump(&h).await;
    let audit = h.engine.audit_log(None, 100).await.unwrap();
    let csv = "text/csv";
    let rows_in_file = OSM.lines().count() - 1;

    // A viewer may not import.
    let (status, v) = import(&h, "vic", "?time_zone=Europe/Helsinki", csv, OSM).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");

    // Bad rows: the dry run reports them; the real run refuses the whole file.
    let bad = with_two_bad_rows();
    let (status, v) = import(
        &h,
        "eddie",
        "?time_zone=Europe/Helsinki&dry_run=true",
        csv,
        &bad,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["applied"], false);
    assert_eq!(v["rows"], rows_in_file);
    let rejected: Vec<(u64, &str)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["row"].as_u64().unwrap(), r["field"].as_str().unwrap()))
        .collect();
    // Rows count from the first data row: line k of the file is data row k.
    assert_eq!(rejected, [(10, "lat"), (500, "lon")], "{v}");
    assert_eq!(v["ignored_columns"], serde_json::json!(["osm_timestamp"]));
    // The extract's opening hours are kept; the 12 of 608 that OpenStreetMap's syntax cannot
    // read (`Mon - Fri 11am - 11pm`, `Seasonal, only summer time`...) are left out, each
    // named, and do not refuse the file.
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 12, "{v}");
    assert!(
        warnings.iter().all(|w| w["field"] == "opening_hours"
            && w["reason"].as_str().unwrap().contains("always open"))
    );
    let (status, v) = import(&h, "eddie", "?time_zone=Europe/Helsinki", csv, &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "invalid_rows");
    assert_eq!(v["error"]["field"], "rows[10].lat");
    assert_eq!(v["error"]["rejected"].as_array().unwrap().len(), 2);
    assert_eq!(dump(&h).await, rows, "a refused file wrote nothing");
    assert_eq!(h.engine.audit_log(None, 100).await.unwrap(), audit);

    // The clean file: a dry run counts, the real run applies, once.
    let (status, v) = import(
        &h,
        "eddie",
        "?time_zone=Europe/Helsinki&dry_run=true",
        csv,
        OSM,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["applied"].as_bool(), v["created"].as_u64()),
        (Some(false), Some(rows_in_file as u64))
    );
    assert_eq!(dump(&h).await, rows, "a dry run wrote nothing");
    let (status, v) = import(&h, "eddie", "?time_zone=Europe/Helsinki", csv, OSM).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["applied"], true);
    assert_eq!(v["created"], rows_in_file);
    assert_eq!(v["stores"], rows_in_file + 2);
    assert_eq!(v["named_by_id"], 533, "the extract's unnamed places");
    let catalog = h.engine.catalog();
    assert_eq!(catalog.store_count(), rows_in_file + 2);
    // The index knows the imported stores at once: Pääposti, the main post office.
    let hits = catalog.lookup(60.1716419, 24.9385433);
    assert!(
        hits.iter()
            .any(|&p| catalog.store(p).id.as_str() == "osm-node-56431331"),
        "{hits:?}"
    );
    // Their hours say when they are open, in their own time.
    let with_hours: Vec<u32> = (0..catalog.store_count() as u32)
        .filter(|&p| catalog.store(p).opening_hours.is_some())
        .collect();
    assert_eq!(with_hours.len(), 596);
    let p = with_hours
        .iter()
        .copied()
        .find(|&p| {
            catalog.store(p).opening_hours.as_deref()
                == Some("Mo-Th 11:00-23:00; Fr 11:00-24:00; Sa 12:00-24:00; Su 13:00-23:00")
        })
        .unwrap();
    let at = |d: u32, h: u32| {
        chrono::NaiveDate::from_ymd_opt(2026, 11, d)
            .unwrap()
            .and_hms_opt(h, 30, 0)
            .unwrap()
    };
    // Thursday 19 November 2026: open at 11:30 and 22:30, closed at 10:30 and 23:30;
    // Sunday 22 November: closed at 12:30, open at 13:30.
    assert_eq!(
        [
            at(19, 10),
            at(19, 11),
            at(19, 22),
            at(19, 23),
            at(22, 12),
            at(22, 13)
        ]
        .map(|t| catalog.is_open(p, t)),
        [false, true, true, false, false, true]
    );
    let entries = h.engine.audit_log(None, 100).await.unwrap();
    assert_eq!(entries.len(), audit.len() + 1);
    assert_eq!(entries[0].action, "store.import");
    assert_eq!(entries[0].actor.name, "eddie");
    assert_eq!(entries[0].after.as_ref().unwrap()["created"], rows_in_file);

    // Again: nothing to write, no entry. One name changed: one update.
    let (status, v) = import(&h, "eddie", "?time_zone=Europe/Helsinki", csv, OSM).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["created"].as_u64(), v["unchanged"].as_u64()),
        (Some(0), Some(rows_in_file as u64))
    );
    assert_eq!(
        h.engine.audit_log(None, 100).await.unwrap().len(),
        entries.len()
    );
    let renamed = OSM.replacen("Pääposti", "Pääposti (closed)", 1);
    let (status, v) = import(&h, "eddie", "?time_zone=Europe/Helsinki", csv, &renamed).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["updated"], 1);
    let catalog = h.engine.catalog();
    let p = catalog.store_position(&id("osm-node-56431331")).unwrap();
    assert_eq!(catalog.store(p).name, "Pääposti (closed)");
}

#[tokio::test]
async fn the_helsinki_extract_imports_all_or_nothing_on_sqlite() {
    the_helsinki_extract_imports_all_or_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_helsinki_extract_imports_all_or_nothing_on_dynamodb() {
    the_helsinki_extract_imports_all_or_nothing(Backend::Dynamo).await;
}

#[tokio::test]
async fn geojson_imports_and_bad_requests_name_their_field() {
    let h = harness(Backend::Sqlite, 1, policy(3)).await;
    let rows = dump(&h).await;
    let json = "application/geo+json";
    for (query, body, field) in [
        ("?format=xml", "id,name\n", "format"),
        ("?time_zone=Mars/Olympus", OSM, "time_zone"),
        ("?radius_m=0", OSM, "radius_m"),
        ("?dry_run=maybe", OSM, "dry_run"),
        ("?sheet=1", OSM, "sheet"),
        ("", "", "body"),
        ("", "name,lat,lon\nA,1,2\n", "body"),
        ("?format=geojson", "{\"type\": \"Feature\"}", "type"),
        (
            "?format=geojson",
            "{\"type\": \"FeatureCollection\", \"features\": [",
            "body",
        ),
    ] {
        let (status, v) = import(&h, "eddie", query, "text/csv", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query} {body:.30}: {v}");
        assert_eq!(v["error"]["field"], field, "{query}: {v}");
    }
    // Over the route's own limit: 413 naming the body, before anything is parsed.
    let big = "x".repeat(nearcast_api::MAX_IMPORT_BODY + 1);
    let (status, v) = import(&h, "eddie", "", "text/csv", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["field"], "body");
    assert_eq!(dump(&h).await, rows);

    let file = r#"{"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "forum", "properties": {"name": "Forum", "category": "mall", "time_zone": "Europe/Helsinki"},
         "geometry": {"type": "Polygon", "coordinates": [[[24.9385, 60.1685], [24.9405, 60.1685], [24.9405, 60.1695], [24.9385, 60.1695], [24.9385, 60.1685]]]}},
        {"type": "Feature", "properties": {"id": "kiosk-1", "name": "Kiosk", "category": "kiosk", "radius_m": 25},
         "geometry": {"type": "Point", "coordinates": [24.9415, 60.1699]}}
    ]}"#;
    let (status, v) = import(&h, "eddie", "?time_zone=Europe/Helsinki", json, file).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["format"].as_str(), v["created"].as_u64()),
        (Some("geojson"), Some(2))
    );
    let c = h.engine.catalog();
    let inside = c.lookup(60.1690, 24.9395);
    assert!(
        inside.iter().any(|&p| c.store(p).id.as_str() == "forum"),
        "{inside:?}"
    );
}
