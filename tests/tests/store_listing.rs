//! `GET /v1/admin/stores` by page and by bounding box: pages cover every store once in id
//! order, a bounding box returns exactly the stores whose fence's box meets it (checked
//! against a brute force over the stores' own coordinates), and bad parameters get a 400
//! naming them.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nearcast_tests::*;
use serde_json::Value;
use tower::ServiceExt;

async fn get(h: &Harness, uri: &str) -> (StatusCode, Value) {
    let resp = nearcast_api::router(h.engine.clone())
        .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn ids(v: &Value) -> Vec<String> {
    v["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn pages_cover_every_store_once_and_a_bbox_returns_what_it_meets() {
    let h = harness(Backend::Memory, 100, policy(3)).await;
    let (_, all) = get(&h, "/v1/admin/stores").await;
    assert_eq!(ids(&all).len(), 100);
    assert!(all.get("next_after").is_none(), "no parameters: as before");

    let mut seen = Vec::new();
    let mut uri = "/v1/admin/stores?limit=30".to_string();
    loop {
        let (status, v) = get(&h, &uri).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        seen.extend(ids(&v));
        match v["next_after"].as_str() {
            Some(a) => uri = format!("/v1/admin/stores?limit=30&after={a}"),
            None => break,
        }
    }
    let mut want: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
    want.sort();
    assert_eq!(seen, want, "every store once, in id order");

    // A box around stores 0-2 (200 m apart along a line, 50 m fences).
    let (lat0, lon0) = store_point(0);
    let (_, lon2) = store_point(2);
    let (x0, y0, x1, y1) = (lon0 - 0.0005, lat0 - 0.0002, lon2 + 0.0005, lat0 + 0.0002);
    let (status, v) = get(&h, &format!("/v1/admin/stores?bbox={x0},{y0},{x1},{y1}")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // Brute force: a 50 m circle's box meets the query box.
    let mut brute: Vec<String> = (0..100)
        .filter(|&i| {
            let (lat, lon) = store_point(i);
            let dlat = 50.0 / 111_320.0;
            let dlon = 50.0 / (111_320.0 * lat.to_radians().cos());
            lon - dlon <= x1 && lon + dlon >= x0 && lat - dlat <= y1 && lat + dlat >= y0
        })
        .map(|i| format!("s{i}"))
        .collect();
    brute.sort();
    assert_eq!(ids(&v), brute);
    assert_eq!(brute, ["s0", "s1", "s2"]);
    // A box over the sea: nothing.
    let (_, v) = get(&h, "/v1/admin/stores?bbox=24.0,59.0,24.1,59.1").await;
    assert!(ids(&v).is_empty());

    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=5001", "limit"),
        ("bbox=1,2,3", "bbox"),
        ("bbox=25,60,24,61", "bbox"),
        ("bbox=0,95,1,96", "bbox"),
        ("bbox=NaN,1,2,3", "bbox"),
        ("after=bad%20id", "after"),
        ("colour=red", "colour"),
    ] {
        let (status, v) = get(&h, &format!("/v1/admin/stores?{q}")).await;
        assert_eq!(
            (status, v["error"]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{q}: {v}"
        );
    }
}

/// `GET /v1/admin/store-clusters`: every store whose centre is in the box is counted once,
/// in the cell its centre falls in (checked against a brute force), each cluster's centre
/// and box lie within its stores' centres, and bad parameters get a 400 naming them.
#[tokio::test]
async fn clusters_count_every_store_in_the_box_once_in_its_cell() {
    let h = harness(Backend::Memory, 100, policy(3)).await;
    let points: Vec<(f64, f64)> = (0..100).map(store_point).collect();
    let lat = |i: usize| points[i].0;
    let lon = |i: usize| points[i].1;
    let (min_lon, max_lon) = (0..100).fold((f64::MAX, f64::MIN), |(a, b), i| {
        (a.min(lon(i)), b.max(lon(i)))
    });
    let (min_lat, max_lat) = (0..100).fold((f64::MAX, f64::MIN), |(a, b), i| {
        (a.min(lat(i)), b.max(lat(i)))
    });
    // The box takes about the western two thirds of the stores.
    let (x0, y0) = (min_lon - 0.001, min_lat - 0.001);
    let (x1, y1) = (min_lon + (max_lon - min_lon) * 0.66, max_lat + 0.001);
    for grid in [1usize, 3, 16, 64] {
        let (status, v) = get(
            &h,
            &format!("/v1/admin/store-clusters?bbox={x0},{y0},{x1},{y1}&grid={grid}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let inside: Vec<usize> = (0..100)
            .filter(|&i| (x0..=x1).contains(&lon(i)) && (y0..=y1).contains(&lat(i)))
            .collect();
        assert!(inside.len() > 10 && inside.len() < 100, "{}", inside.len());
        assert_eq!(v["total"], inside.len(), "grid {grid}");
        // Brute force: the stores per cell.
        let cell = |i: usize| {
            let cx = (((lon(i) - x0) / (x1 - x0) * grid as f64) as usize).min(grid - 1);
            let cy = (((lat(i) - y0) / (y1 - y0) * grid as f64) as usize).min(grid - 1);
            cy * grid + cx
        };
        let mut want: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for &i in &inside {
            want.entry(cell(i)).or_default().push(i);
        }
        let clusters = v["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), want.len(), "grid {grid}: {v}");
        for (c, (_, members)) in clusters.iter().zip(&want) {
            assert_eq!(c["count"], members.len());
            let f = |k: &str| c[k].as_f64().unwrap();
            let mean_lat = members.iter().map(|&i| lat(i)).sum::<f64>() / members.len() as f64;
            let mean_lon = members.iter().map(|&i| lon(i)).sum::<f64>() / members.len() as f64;
            assert!((f("lat") - mean_lat).abs() < 1e-9 && (f("lon") - mean_lon).abs() < 1e-9);
            let b: Vec<f64> = c["bbox"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let lo_lon = members.iter().map(|&i| lon(i)).fold(f64::MAX, f64::min);
            let hi_lat = members.iter().map(|&i| lat(i)).fold(f64::MIN, f64::max);
            assert!(
                (b[0] - lo_lon).abs() < 1e-9 && (b[3] - hi_lat).abs() < 1e-9,
                "{c}"
            );
        }
    }
    // Nothing in a box over the sea.
    let (_, v) = get(&h, "/v1/admin/store-clusters?bbox=24.0,59.0,24.1,59.1").await;
    assert_eq!(
        (v["total"].as_u64(), v["clusters"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
    for (q, field) in [
        ("", "bbox"),
        ("grid=4", "bbox"),
        ("bbox=25,60,24,61", "bbox"),
        ("bbox=0,0,1,1&grid=0", "grid"),
        ("bbox=0,0,1,1&grid=65", "grid"),
        ("bbox=0,0,1,1&grid=x", "grid"),
        ("bbox=0,0,1,1&zoom=3", "zoom"),
    ] {
        let (status, v) = get(&h, &format!("/v1/admin/store-clusters?{q}")).await;
        assert_eq!(
            (status, v["error"]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{q}: {v}"
        );
    }
}
