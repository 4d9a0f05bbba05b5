//! [`OpenMeteo`] against a local stub server on loopback that speaks Open-Meteo's forecast
//! format and counts the requests it gets.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration as Days, Utc};
use nearcast_core::ports::WeatherSource;
use nearcast_core::weather::{Condition, Weather};
use nearcast_weather::{OpenMeteo, Options};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy)]
enum Mode {
    Ok,
    Status500,
    BadJson,
    Slow(Duration),
}

struct Stub {
    mode: Mutex<Mode>,
    requests: AtomicUsize,
    queries: Mutex<Vec<HashMap<String, String>>>,
}

/// The first hour of the stub's forecasts: 2026-11-19 00:00 UTC; 72 hours follow.
fn start() -> DateTime<Utc> {
    "2026-11-19T00:00:00Z".parse().unwrap()
}

/// What the stub forecasts for hour `i` of its window: rain on even hours, overcast on
/// odd ones, `i` °C.
fn expected(i: i64) -> Weather {
    Weather {
        condition: if i % 2 == 0 {
            Condition::Rain
        } else {
            Condition::Cloudy
        },
        temp_c: i as f64,
    }
}

async fn forecast(
    State(stub): State<Arc<Stub>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    stub.requests.fetch_add(1, Ordering::SeqCst);
    stub.queries.lock().unwrap().push(q);
    let mode = *stub.mode.lock().unwrap();
    match mode {
        Mode::Status500 => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Mode::BadJson => return (StatusCode::OK, "{\"hourly\": [not json").into_response(),
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Ok => {}
    }
    let times: Vec<String> = (0..72)
        .map(|i| {
            (start() + Days::hours(i))
                .format("%Y-%m-%dT%H:%M")
                .to_string()
        })
        .collect();
    let temps: Vec<f64> = (0..72).map(|i| expected(i).temp_c).collect();
    let codes: Vec<u16> = (0..72).map(|i| if i % 2 == 0 { 63 } else { 3 }).collect();
    axum::Json(serde_json::json!({
        "latitude": 60.17, "longitude": 24.94, "utc_offset_seconds": 0, "timezone": "GMT",
        "hourly_units": {"time": "iso8601", "temperature_2m": "°C", "weather_code": "wmo code"},
        "hourly": {"time": times, "temperature_2m": temps, "weather_code": codes}
    }))
    .into_response()
}

async fn stub(mode: Mode) -> (String, Arc<Stub>) {
    let state = Arc::new(Stub {
        mode: Mutex::new(mode),
        requests: AtomicUsize::new(0),
        queries: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .route("/v1/forecast", axum::routing::get(forecast))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/forecast", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state)
}

impl Stub {
    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

const HELSINKI: (f64, f64) = (60.1699, 24.9384);

#[tokio::test]
async fn one_request_fills_the_cell_and_later_hours_and_neighbours_hit_the_cache() {
    let (url, stub) = stub(Mode::Ok).await;
    let source: Arc<dyn WeatherSource> =
        Arc::new(OpenMeteo::new(&url, Options::default()).unwrap());
    let (lat, lon) = HELSINKI;
    // 2026-11-20 10:30 is hour 34 of the window.
    let w = source.weather(lat, lon, at("2026-11-20T10:30:00Z")).await;
    assert_eq!(w, Some(expected(34)));
    assert_eq!(stub.count(), 1);
    let q = stub.queries.lock().unwrap()[0].clone();
    assert_eq!(q["hourly"], "temperature_2m,weather_code");
    assert_eq!(q["timezone"], "UTC");
    let qlat: f64 = q["latitude"].parse().unwrap();
    let qlon: f64 = q["longitude"].parse().unwrap();
    assert!(
        (qlat - lat).abs() < 0.1 && (qlon - lon).abs() < 0.2,
        "{q:?}"
    );

    // Another hour, and a point 150 m away: the same cell, no request.
    let w = source.weather(lat, lon, at("2026-11-20T11:59:59Z")).await;
    assert_eq!(w, Some(expected(35)));
    let w = source
        .weather(lat + 0.001, lon + 0.001, at("2026-11-19T00:00:00Z"))
        .await;
    assert_eq!(w, Some(expected(0)));
    assert_eq!(stub.count(), 1, "cache hits make no request");

    // An hour outside the forecast window: unknown, and no request either.
    assert_eq!(
        source.weather(lat, lon, at("2026-12-24T12:00:00Z")).await,
        None
    );
    assert_eq!(stub.count(), 1);

    // Tampere, 160 km away: another cell, one more request.
    let w = source
        .weather(61.4978, 23.7610, at("2026-11-20T10:00:00Z"))
        .await;
    assert_eq!(w, Some(expected(34)));
    assert_eq!(stub.count(), 2);
}

#[tokio::test]
async fn a_failing_server_answers_none_and_is_not_asked_again_at_once() {
    for mode in [
        Mode::Status500,
        Mode::BadJson,
        Mode::Slow(Duration::from_millis(1500)),
    ] {
        let (url, stub) = stub(mode).await;
        let options = Options {
            timeout: Duration::from_millis(200),
            retry_after: Duration::from_millis(400),
            ..Options::default()
        };
        let source = OpenMeteo::new(&url, options).unwrap();
        let (lat, lon) = HELSINKI;
        let t = at("2026-11-20T10:00:00Z");
        let began = std::time::Instant::now();
        assert_eq!(source.lookup(lat, lon, t).await, None);
        assert!(
            began.elapsed() < Duration::from_millis(1200),
            "the timeout cuts a slow answer short"
        );
        assert_eq!(stub.count(), 1);
        // The negative cache: no request while it lasts.
        for _ in 0..5 {
            assert_eq!(source.lookup(lat, lon, t).await, None);
        }
        assert_eq!(stub.count(), 1, "a failed cell is not hammered");
        // After it, the cell is asked again, and a healthy answer is used.
        tokio::time::sleep(Duration::from_millis(450)).await;
        stub.set(Mode::Ok);
        assert_eq!(source.lookup(lat, lon, t).await, Some(expected(34)));
        assert_eq!(stub.count(), 2);
    }
}

#[tokio::test]
async fn concurrent_lookups_in_one_cell_share_one_request() {
    let (url, stub) = stub(Mode::Slow(Duration::from_millis(100))).await;
    let source = Arc::new(OpenMeteo::new(&url, Options::default()).unwrap());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = source.clone();
            tokio::spawn(async move {
                s.lookup(
                    HELSINKI.0,
                    HELSINKI.1 + 0.0001 * f64::from(i),
                    at("2026-11-20T10:00:00Z"),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Some(expected(34)));
    }
    assert_eq!(stub.count(), 1);
}

#[tokio::test]
async fn a_stale_forecast_is_fetched_again() {
    let (url, stub) = stub(Mode::Ok).await;
    let options = Options {
        max_age: Duration::from_millis(100),
        ..Options::default()
    };
    let source = OpenMeteo::new(&url, options).unwrap();
    let t = at("2026-11-20T10:00:00Z");
    assert!(source.lookup(HELSINKI.0, HELSINKI.1, t).await.is_some());
    assert!(source.lookup(HELSINKI.0, HELSINKI.1, t).await.is_some());
    assert_eq!(stub.count(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(source.lookup(HELSINKI.0, HELSINKI.1, t).await.is_some());
    assert_eq!(stub.count(), 2);
    assert_eq!(source.requests(), 2);
}

#[tokio::test]
async fn an_unreachable_server_answers_none() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let source = OpenMeteo::new(
        &format!("http://127.0.0.1:{port}/v1/forecast"),
        Options::default(),
    )
    .unwrap();
    assert_eq!(
        source
            .lookup(HELSINKI.0, HELSINKI.1, at("2026-11-20T10:00:00Z"))
            .await,
        None
    );
}
