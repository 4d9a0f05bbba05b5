//! Live weather for Nearcast: [`OpenMeteo`], a [`WeatherSource`] over HTTP in Open-Meteo's
//! forecast format (`https://api.open-meteo.com/v1/forecast` or any server that speaks it).
//!
//! # Requests and caching
//!
//! The world is cut into H3 cells of resolution [`CELL_RESOLUTION`] (5: hexagons of about
//! 250 km², 8.5 km edge). That is about the grid spacing of the global models Open-Meteo
//! serves by default (ECMWF IFS 9 km, GFS 13 km): finer cells would fetch the same grid
//! point again and again, coarser ones would blur distinct forecasts together. Every point
//! of a cell gets the forecast at the cell's centre, so nearby users see the same weather.
//!
//! One request fetches the cell's whole hourly forecast (`past_days=1`, `forecast_days=2`:
//! yesterday to tomorrow, UTC), so every later question about that cell, for any hour in
//! the window, is answered from memory until the forecast is [`Options::max_age`] old.
//! Concurrent questions about one cell wait for one request.
//!
//! # Failures
//!
//! A request has a short [`Options::timeout`]; the location path waits for it. A failed
//! request (network, timeout, non-2xx status, unreadable body) answers `None` (weather
//! unknown: offers with weather rules do not run) and the cell is not asked again for
//! [`Options::retry_after`], so a struggling server is not hammered.

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use h3o::{CellIndex, LatLng, Resolution};
use nearcast_core::ports::{BoxFuture, WeatherSource};
use nearcast_core::weather::{Condition, Weather};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The H3 resolution of the cache cells (see the [module documentation](self)).
pub const CELL_RESOLUTION: Resolution = Resolution::Five;

/// Open-Meteo's public forecast endpoint.
pub const OPEN_METEO_URL: &str = "https://api.open-meteo.com/v1/forecast";

/// Tuning of [`OpenMeteo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Limit on one request, connection included (default 2 s).
    pub timeout: Duration,
    /// How long a fetched forecast is used (default 1 h: models update hourly at best).
    pub max_age: Duration,
    /// How long a cell whose request failed answers `None` without asking (default 60 s).
    pub retry_after: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            max_age: Duration::from_secs(3600),
            retry_after: Duration::from_secs(60),
        }
    }
}

/// Why the source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WeatherError {
    /// The URL is not an absolute http(s) URL.
    #[error("weather URL {0:?} must start with http:// or https://")]
    Url(String),
    /// The HTTP client could not be built (TLS set-up).
    #[error("weather HTTP client: {0}")]
    Client(String),
}

/// What a cell's cache holds.
enum Entry {
    /// The forecast by hour (epoch seconds of the hour's start, UTC), fetched at `at`.
    Forecast {
        hours: BTreeMap<i64, Weather>,
        at: Instant,
    },
    /// The last request failed; do not ask again before `until`.
    Failed { until: Instant },
}

type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

/// Weather from an Open-Meteo-compatible forecast server, cached per H3 cell.
pub struct OpenMeteo {
    client: reqwest::Client,
    url: String,
    options: Options,
    cells: Mutex<HashMap<CellIndex, Slot>>,
    requests: AtomicU64,
}

impl std::fmt::Debug for OpenMeteo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenMeteo")
            .field("url", &self.url)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The weather condition of a WMO weather code (Open-Meteo's `weather_code`), or `None`
/// for a code outside the table.
pub fn condition_of(code: u16) -> Option<Condition> {
    Some(match code {
        0 | 1 => Condition::Clear,        // clear, mainly clear
        2 | 3 => Condition::Cloudy,       // partly cloudy, overcast
        45 | 48 => Condition::Fog,        // fog, depositing rime fog
        51..=57 => Condition::Rain,       // drizzle, freezing drizzle
        61..=67 => Condition::Rain,       // rain, freezing rain
        71..=77 => Condition::Snow,       // snow fall, snow grains
        80..=82 => Condition::Rain,       // rain showers
        85 | 86 => Condition::Snow,       // snow showers
        95 | 96 | 99 => Condition::Storm, // thunderstorm (with hail)
        _ => return None,
    })
}

#[derive(Deserialize)]
struct Response {
    hourly: Hourly,
}

#[derive(Deserialize)]
struct Hourly {
    time: Vec<Time>,
    temperature_2m: Vec<Option<f64>>,
    #[serde(alias = "weathercode")]
    weather_code: Vec<Option<f64>>,
}

/// An hour as Open-Meteo writes it: ISO 8601 without offset (`timezone=UTC`), or epoch
/// seconds (`timeformat=unixtime`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Time {
    Unix(i64),
    Iso(String),
}

impl Time {
    fn epoch(&self) -> Option<i64> {
        match self {
            Time::Unix(t) => Some(*t),
            Time::Iso(s) => NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
                .ok()
                .map(|t| t.and_utc().timestamp()),
        }
    }
}

/// Parses a forecast body into weather by hour. Hours with a missing value or an unknown
/// code are left out.
///
/// # Errors
/// A body that is not the forecast format (the reason, for the log).
pub fn parse_forecast(body: &[u8]) -> Result<BTreeMap<i64, Weather>, String> {
    let r: Response = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let h = r.hourly;
    if h.time.len() != h.temperature_2m.len() || h.time.len() != h.weather_code.len() {
        return Err("hourly arrays differ in length".into());
    }
    let mut out = BTreeMap::new();
    for ((t, temp), code) in h.time.iter().zip(&h.temperature_2m).zip(&h.weather_code) {
        let (Some(t), Some(temp), Some(code)) = (t.epoch(), temp, code) else {
            continue;
        };
        if !temp.is_finite() || !(0.0..=u16::MAX as f64).contains(code) {
            continue;
        }
        if let Some(condition) = condition_of(*code as u16) {
            out.insert(
                t,
                Weather {
                    condition,
                    temp_c: *temp,
                },
            );
        }
    }
    Ok(out)
}

impl OpenMeteo {
    /// A source asking `url` (the forecast endpoint, e.g. [`OPEN_METEO_URL`]).
    ///
    /// # Errors
    /// A URL that is not http(s), or a client that cannot be built.
    pub fn new(url: &str, options: Options) -> Result<Self, WeatherError> {
        let url = url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(WeatherError::Url(url.to_string()));
        }
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(concat!("nearcast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WeatherError::Client(e.to_string()))?;
        Ok(Self {
            client,
            url: url.to_string(),
            options,
            cells: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        })
    }

    /// Requests sent so far (answered or not).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The weather at a point and time (the forecast of the point's cell for that hour).
    pub async fn lookup(&self, lat: f64, lon: f64, at: DateTime<Utc>) -> Option<Weather> {
        let cell = LatLng::new(lat, lon).ok()?.to_cell(CELL_RESOLUTION);
        let hour = at
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))?
            .timestamp();
        let slot = {
            let mut cells = self.cells.lock().expect("weather cache lock");
            cells.entry(cell).or_default().clone()
        };
        // One request per cell at a time: the others wait and read its result.
        let mut entry = slot.lock().await;
        let now = Instant::now();
        match &*entry {
            Some(Entry::Forecast { hours, at })
                if now.duration_since(*at) < self.options.max_age =>
            {
                return hours.get(&hour).copied();
            }
            Some(Entry::Failed { until }) if now < *until => return None,
            _ => {}
        }
        match self.fetch(cell).await {
            Ok(hours) => {
                let w = hours.get(&hour).copied();
                *entry = Some(Entry::Forecast {
                    hours,
                    at: Instant::now(),
                });
                w
            }
            Err(reason) => {
                // The cell, not the user's position: no location in the logs.
                tracing::warn!(cell = %cell, %reason, "weather unavailable");
                *entry = Some(Entry::Failed {
                    until: Instant::now() + self.options.retry_after,
                });
                None
            }
        }
    }

    async fn fetch(&self, cell: CellIndex) -> Result<BTreeMap<i64, Weather>, String> {
        let centre = LatLng::from(cell);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .client
            .get(&self.url)
            .query(&[
                ("latitude", format!("{:.4}", centre.lat())),
                ("longitude", format!("{:.4}", centre.lng())),
                ("hourly", "temperature_2m,weather_code".into()),
                ("timezone", "UTC".into()),
                ("past_days", "1".into()),
                ("forecast_days", "2".into()),
            ])
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("body not read: {e}"))?;
        parse_forecast(&body).map_err(|e| format!("not a forecast: {e}"))
    }
}

impl WeatherSource for OpenMeteo {
    fn weather(&self, lat: f64, lon: f64, at: DateTime<Utc>) -> BoxFuture<'_, Option<Weather>> {
        Box::pin(self.lookup(lat, lon, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wmo_codes_map_onto_conditions() {
        let cases = [
            (0, Some(Condition::Clear)),
            (1, Some(Condition::Clear)),
            (2, Some(Condition::Cloudy)),
            (3, Some(Condition::Cloudy)),
            (45, Some(Condition::Fog)),
            (48, Some(Condition::Fog)),
            (51, Some(Condition::Rain)),
            (57, Some(Condition::Rain)),
            (61, Some(Condition::Rain)),
            (67, Some(Condition::Rain)),
            (71, Some(Condition::Snow)),
            (77, Some(Condition::Snow)),
            (80, Some(Condition::Rain)),
            (82, Some(Condition::Rain)),
            (85, Some(Condition::Snow)),
            (86, Some(Condition::Snow)),
            (95, Some(Condition::Storm)),
            (96, Some(Condition::Storm)),
            (99, Some(Condition::Storm)),
            (4, None),
            (50, None),
            (100, None),
        ];
        for (code, want) in cases {
            assert_eq!(condition_of(code), want, "code {code}");
        }
    }

    #[test]
    fn forecast_bodies_parse_in_both_time_formats_and_skip_gaps() {
        let iso = br#"{"latitude":60.1,"longitude":24.9,"timezone":"GMT",
            "hourly":{"time":["2026-11-20T10:00","2026-11-20T11:00","2026-11-20T12:00"],
            "temperature_2m":[3.5,null,2.0],"weather_code":[63,3,42]}}"#;
        let h = parse_forecast(iso).unwrap();
        let ten = "2026-11-20T10:00:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp();
        assert_eq!(
            h.len(),
            1,
            "a null temperature and an unknown code are skipped"
        );
        assert_eq!(
            h[&ten],
            Weather {
                condition: Condition::Rain,
                temp_c: 3.5
            }
        );
        let unix = format!(
            r#"{{"hourly":{{"time":[{ten}],"temperature_2m":[-4.0],"weathercode":[73]}}}}"#
        );
        let h = parse_forecast(unix.as_bytes()).unwrap();
        assert_eq!(h[&ten].condition, Condition::Snow);
        assert!(
            parse_forecast(
                b"{\"hourly\":{\"time\":[1],\"temperature_2m\":[],\"weather_code\":[]}}"
            )
            .is_err()
        );
        assert!(parse_forecast(b"<html>").is_err());
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(matches!(
            OpenMeteo::new("api.open-meteo.com/v1/forecast", Options::default()),
            Err(WeatherError::Url(_))
        ));
        assert!(OpenMeteo::new(OPEN_METEO_URL, Options::default()).is_ok());
    }
}
