//! Marketer configuration: stores with their geofences, offers with their rules, and the
//! frequency-cap policy. Parsed with serde (unknown fields rejected, paths reported by
//! `serde_path_to_error`), then checked by `validate` so every error names its field.

use crate::FieldError;
use crate::context::Daypart;
use crate::ids::Id;
use crate::weather::Condition;
use chrono::{DateTime, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest circle radius accepted, in metres.
pub const MAX_RADIUS_M: f64 = 50_000.0;
/// Most vertices a polygon fence may have (all rings together).
pub const MAX_VERTICES: usize = 10_000;

/// Parses a JSON value into `T`, reporting the path of the first wrong field.
///
/// # Errors
/// A [`FieldError`] whose field is the JSON path of the offending value.
pub fn parse_json<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(v).map_err(path_error)
}

/// Parses JSON text into `T` as [`parse_json`] does, without building a JSON value tree
/// first (a 100k-store file made a tree of about twice its size in memory); the reasons
/// of errors found in the text also name its line and column.
///
/// # Errors
/// A [`FieldError`] whose field is the JSON path of the offending value (empty when the
/// text is not JSON).
pub fn parse_json_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, FieldError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end().map_err(|e| FieldError::new("", e.to_string()))?;
    Ok(v)
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde names an unknown field in its message; surface it as the field itself.
        if let Some(rest) = inner.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or_default();
            let field = if path == "." {
                name.to_string()
            } else if path == name || path.ends_with(&format!(".{name}")) {
                path
            } else {
                format!("{path}.{name}")
            };
            return FieldError::new(field, "is not a known field");
        }
        if let Some(rest) = inner.strip_prefix("missing field `") {
            let name = rest.split('`').next().unwrap_or_default();
            let field = if path == "." {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
            return FieldError::new(field, "is required");
        }
        let path = if path == "." { String::new() } else { path };
        if let Some(rest) = inner.strip_prefix(FIELD_MARK)
            && let Some((field, reason)) = rest.split_once(FIELD_MARK)
        {
            return FieldError::new(field, reason).within(&path);
        }
        FieldError::new(path, inner)
    }
}

/// A store and its geofence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// Store id.
    pub id: Id,
    /// Display name.
    pub name: String,
    /// Store category (`cafe`, `clothes`, `supermarket`...), used by offers' store selectors.
    pub category: String,
    /// IANA time zone of the store, e.g. `Europe/Helsinki`.
    pub time_zone: String,
    /// The geofence.
    pub fence: Fence,
    /// Brand (`K-Market`, `Alepa`), for offers' `store_brands`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Tags (`flagship`, `mall:kamppi`), for offers' `store_tags`: up to 16, each 1–40
    /// characters from `a-z 0-9 _ - : .`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Street address, shown to marketers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Opening hours in OpenStreetMap's `opening_hours` syntax (`Mo-Fr 08:00-21:00; Sa
    /// 09:00-18:00`), in the store's time zone: offers with `require_open` run only while
    /// the store is open. None: always open as far as offers know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opening_hours: Option<String>,
}

/// Most tags a store may have.
pub const MAX_TAGS: usize = 16;

/// Checks a store tag: 1–40 characters from `a-z 0-9 _ - : .`.
///
/// # Errors
/// What is wrong with it.
pub fn check_tag(field: &str, tag: &str) -> Result<(), FieldError> {
    if tag.is_empty() || tag.len() > 40 {
        return Err(FieldError::new(field, "must be 1 to 40 characters"));
    }
    if let Some(c) = tag.chars().find(|c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | ':' | '.'))
    }) {
        return Err(FieldError::new(
            field,
            format!("character {c:?} is not allowed (use a-z 0-9 _ - : .)"),
        ));
    }
    Ok(())
}

/// Parses opening hours in OpenStreetMap's syntax.
///
/// # Errors
/// A [`FieldError`] on the empty field, saying where the text stops making sense.
pub fn parse_opening_hours(text: &str) -> Result<opening_hours::OpeningHours, FieldError> {
    if text.trim().is_empty() || text.len() > 255 {
        return Err(FieldError::new("", "must be 1 to 255 bytes"));
    }
    text.parse::<opening_hours::OpeningHours>().map_err(|e| {
        let e = e.to_string();
        let first = e.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid");
        FieldError::new(
            "",
            format!(
                "is not valid OpenStreetMap opening_hours ({}), e.g. \"Mo-Fr 08:00-21:00; Sa 09:00-18:00\"",
                first.trim()
            ),
        )
    })
}

/// A geofence: a circle, or a GeoJSON Polygon / MultiPolygon geometry.
///
/// JSON: `{"type": "circle", "lat": .., "lon": .., "radius_m": ..}` or
/// `{"type": "polygon", "geometry": {GeoJSON}}`. Parsed by hand so that errors name the
/// inner field (`fence.lat`), which serde's internally tagged enums cannot.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Fence {
    /// A circle around a point.
    Circle {
        /// Centre latitude, degrees.
        lat: f64,
        /// Centre longitude, degrees.
        lon: f64,
        /// Radius in metres, in (0, 50 000].
        radius_m: f64,
    },
    /// A GeoJSON geometry (RFC 7946): `Polygon` or `MultiPolygon`, `[lon, lat]` positions.
    Polygon {
        /// The geometry object.
        geometry: Value,
    },
}

/// Marks a nested field name inside a serde error message, so [`parse_json`] can put it
/// into the path.
const FIELD_MARK: char = '\u{1}';

impl<'de> Deserialize<'de> for Fence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let err = |e: FieldError| {
            serde::de::Error::custom(format!("{FIELD_MARK}{}{FIELD_MARK}{}", e.field, e.reason))
        };
        let mut f = crate::event::Fields::of(&v).map_err(err)?;
        let fence = match f.str("type", 16).map_err(err)? {
            "circle" => Fence::Circle {
                lat: f.num("lat", -90.0, 90.0).map_err(err)?,
                lon: f.num("lon", -180.0, 180.0).map_err(err)?,
                radius_m: f
                    .num("radius_m", f64::MIN_POSITIVE, MAX_RADIUS_M)
                    .map_err(err)?,
            },
            "polygon" => Fence::Polygon {
                geometry: f.req("geometry").map_err(err)?.clone(),
            },
            other => {
                return Err(err(FieldError::new(
                    "type",
                    format!("must be \"circle\" or \"polygon\", got {other:?}"),
                )));
            }
        };
        f.finish().map_err(err)?;
        Ok(fence)
    }
}

impl Store {
    /// Checks ranges, the time zone and the geometry.
    ///
    /// # Errors
    /// The first [`FieldError`], e.g. `fence.radius_m` or `time_zone`.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_text("name", &self.name, 200)?;
        check_text("category", &self.category, 64)?;
        parse_tz(&self.time_zone).map_err(|e| e.within("time_zone"))?;
        if let Some(b) = &self.brand {
            check_text("brand", b, 100)?;
        }
        if self.tags.len() > MAX_TAGS {
            return Err(FieldError::new(
                "tags",
                format!("at most {MAX_TAGS} tags, got {}", self.tags.len()),
            ));
        }
        for (i, t) in self.tags.iter().enumerate() {
            check_tag(&format!("tags[{i}]"), t)?;
            if self.tags[..i].contains(t) {
                return Err(FieldError::new(format!("tags[{i}]"), "repeats a tag"));
            }
        }
        if let Some(a) = &self.address {
            check_text("address", a, 300)?;
        }
        if let Some(h) = &self.opening_hours {
            parse_opening_hours(h).map_err(|e| e.within("opening_hours"))?;
        }
        match &self.fence {
            Fence::Circle { lat, lon, radius_m } => {
                check_range("fence.lat", *lat, -90.0, 90.0)?;
                check_range("fence.lon", *lon, -180.0, 180.0)?;
                if !(radius_m.is_finite() && *radius_m > 0.0 && *radius_m <= MAX_RADIUS_M) {
                    return Err(FieldError::new(
                        "fence.radius_m",
                        format!("must be in (0, {MAX_RADIUS_M}], got {radius_m}"),
                    ));
                }
            }
            Fence::Polygon { geometry } => {
                crate::geofence::parse_geojson(geometry).map_err(|e| e.within("fence.geometry"))?;
            }
        }
        Ok(())
    }
}

/// Parses an IANA time zone name.
///
/// # Errors
/// When the name is not in the tz database.
pub fn parse_tz(name: &str) -> Result<chrono_tz::Tz, FieldError> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| FieldError::new("", format!("unknown IANA time zone {name:?}")))
}

pub(crate) fn check_text(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    if s.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} bytes, got {}", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn check_range(field: &str, x: f64, lo: f64, hi: f64) -> Result<(), FieldError> {
    if x.is_finite() && x >= lo && x <= hi {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must be a finite number in [{lo}, {hi}], got {x}"),
        ))
    }
}

/// When an offer triggers relative to the fence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// On entering the fence.
    Enter,
    /// After `minutes` inside the fence without leaving.
    Dwell {
        /// Minutes inside, 1 to 240.
        minutes: u32,
    },
    /// On leaving the fence (a confirmed exit, never one inferred from an app gone quiet),
    /// after a visit of `min_minutes` to `max_minutes` (the visit runs from the enter to
    /// the last fix inside): "thanks for coming" after a real visit, not after walking by.
    Exit {
        /// Shortest visit, minutes, 0 to 1440 (default 0).
        #[serde(default)]
        min_minutes: u32,
        /// Longest visit, minutes, up to 1440 (default 1440).
        #[serde(default = "max_visit_minutes")]
        max_minutes: u32,
    },
}

/// The longest visit an exit trigger can name, minutes (a day).
pub const MAX_VISIT_MINUTES: u32 = 24 * 60;

fn max_visit_minutes() -> u32 {
    MAX_VISIT_MINUTES
}

/// Weather conditions an offer needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeatherRule {
    /// Any of these conditions (empty: any condition).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Minimum temperature, °C.
    pub min_temp_c: Option<f64>,
    /// Maximum temperature, °C.
    pub max_temp_c: Option<f64>,
}

/// Who an offer is for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// The user's affinity for the offer's category must be at least this (0..1). Needs
    /// personalisation consent: without it the rule is not met.
    pub min_affinity: Option<f64>,
    /// Only users who never bought in the offer's category.
    #[serde(default)]
    pub new_to_category: bool,
}

/// An offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// Offer id.
    pub id: Id,
    /// Campaign it belongs to; the holdout draw is per campaign.
    pub campaign_id: Id,
    /// Push title.
    pub title: String,
    /// Push body.
    pub body: String,
    /// Coupon code to redeem, if any.
    pub coupon: Option<String>,
    /// Product on offer; a user who bought it is not offered it again.
    pub product_id: Option<Id>,
    /// Product category on offer (`coffee`, `umbrella`...).
    pub category: String,
    /// Stores it runs at, by id.
    #[serde(default)]
    pub store_ids: Vec<Id>,
    /// Stores it runs at, by store category (in addition to `store_ids`).
    #[serde(default)]
    pub store_categories: Vec<String>,
    /// Stores it runs at, by brand (in addition to the above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub store_brands: Vec<String>,
    /// Stores it runs at, by tag: a store with any of them (in addition to the above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub store_tags: Vec<String>,
    /// Runs only while the store is open by its `opening_hours` (a store without hours
    /// counts as open); otherwise `store_closed`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_open: bool,
    /// Start of the schedule.
    pub starts_at: Option<DateTime<Utc>>,
    /// End of the schedule.
    pub ends_at: Option<DateTime<Utc>>,
    /// Dayparts in the store's local time (empty: all day).
    #[serde(default)]
    pub dayparts: Vec<Daypart>,
    /// Weekdays in the store's local time, `mon`..`sun` (empty: every day).
    #[serde(default)]
    pub weekdays: Vec<WeekdayName>,
    /// Weather rule.
    pub weather: Option<WeatherRule>,
    /// Audience rule.
    pub audience: Option<Audience>,
    /// Enter or dwell.
    pub trigger: Trigger,
    /// Minimum model score to send, in [0, 1].
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Share of users held out of the campaign, in [0, 0.5].
    #[serde(default)]
    pub holdout: f64,
    /// Hours before the same user may get this offer again.
    #[serde(default = "default_reeligible")]
    pub reeligible_after_hours: u32,
    /// Fires only on the user's Nth visit to the store (1: the first visit), counted over
    /// the 90 days before; 1 to 100. None: any visit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nth_visit: Option<u32>,
    /// How often it may be decided for one user: once per visit (the default), or at most
    /// once per local day at each store (`store_day`: a second visit the same day does not
    /// fire it).
    #[serde(default, skip_serializing_if = "OncePer::is_visit")]
    pub once_per: OncePer,
}

/// How often an offer may be decided for one user at one store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OncePer {
    /// Once per visit.
    #[default]
    Visit,
    /// At most once per local day at each store (sent or held out).
    StoreDay,
}

impl OncePer {
    /// Whether this is the default, once per visit.
    #[must_use]
    pub fn is_visit(&self) -> bool {
        *self == Self::Visit
    }
}

fn default_threshold() -> f64 {
    0.2
}
fn default_reeligible() -> u32 {
    72
}

/// A weekday by its three-letter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs, reason = "the names are the days")]
pub enum WeekdayName {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl WeekdayName {
    /// The chrono weekday.
    pub fn weekday(self) -> Weekday {
        match self {
            WeekdayName::Mon => Weekday::Mon,
            WeekdayName::Tue => Weekday::Tue,
            WeekdayName::Wed => Weekday::Wed,
            WeekdayName::Thu => Weekday::Thu,
            WeekdayName::Fri => Weekday::Fri,
            WeekdayName::Sat => Weekday::Sat,
            WeekdayName::Sun => Weekday::Sun,
        }
    }
}

impl Offer {
    /// Checks texts, ranges and the schedule.
    ///
    /// # Errors
    /// The first [`FieldError`].
    pub fn validate(&self) -> Result<(), FieldError> {
        check_text("title", &self.title, 100)?;
        check_text("body", &self.body, 500)?;
        check_text("category", &self.category, 64)?;
        if let Some(c) = &self.coupon {
            check_text("coupon", c, 64)?;
        }
        if self.store_ids.is_empty()
            && self.store_categories.is_empty()
            && self.store_brands.is_empty()
            && self.store_tags.is_empty()
        {
            return Err(FieldError::new(
                "store_ids",
                "give store_ids, store_categories, store_brands or store_tags (any of them)",
            ));
        }
        for (i, c) in self.store_categories.iter().enumerate() {
            check_text(&format!("store_categories[{i}]"), c, 64)?;
        }
        for (i, b) in self.store_brands.iter().enumerate() {
            check_text(&format!("store_brands[{i}]"), b, 100)?;
        }
        for (i, t) in self.store_tags.iter().enumerate() {
            check_tag(&format!("store_tags[{i}]"), t)?;
        }
        if let (Some(s), Some(e)) = (self.starts_at, self.ends_at)
            && e <= s
        {
            return Err(FieldError::new("ends_at", "must be after starts_at"));
        }
        if let Some(w) = &self.weather {
            if let Some(t) = w.min_temp_c {
                check_range("weather.min_temp_c", t, -90.0, 60.0)?;
            }
            if let Some(t) = w.max_temp_c {
                check_range("weather.max_temp_c", t, -90.0, 60.0)?;
            }
            if let (Some(lo), Some(hi)) = (w.min_temp_c, w.max_temp_c)
                && hi < lo
            {
                return Err(FieldError::new(
                    "weather.max_temp_c",
                    "must not be below min_temp_c",
                ));
            }
        }
        if let Some(a) = &self.audience
            && let Some(m) = a.min_affinity
        {
            check_range("audience.min_affinity", m, 0.0, 1.0)?;
        }
        if let Trigger::Dwell { minutes } = self.trigger
            && !(1..=240).contains(&minutes)
        {
            return Err(FieldError::new(
                "trigger.minutes",
                format!("must be in [1, 240], got {minutes}"),
            ));
        }
        if let Trigger::Exit {
            min_minutes,
            max_minutes,
        } = self.trigger
        {
            if max_minutes > MAX_VISIT_MINUTES {
                return Err(FieldError::new(
                    "trigger.max_minutes",
                    format!("must be at most {MAX_VISIT_MINUTES}, got {max_minutes}"),
                ));
            }
            if min_minutes > max_minutes {
                return Err(FieldError::new(
                    "trigger.min_minutes",
                    format!("must not exceed max_minutes ({max_minutes}), got {min_minutes}"),
                ));
            }
        }
        check_range("threshold", self.threshold, 0.0, 1.0)?;
        check_range("holdout", self.holdout, 0.0, 0.5)?;
        if let Some(n) = self.nth_visit
            && !(1..=100).contains(&n)
        {
            return Err(FieldError::new(
                "nth_visit",
                format!("must be in [1, 100], got {n}"),
            ));
        }
        if self.reeligible_after_hours > 24 * 365 {
            return Err(FieldError::new(
                "reeligible_after_hours",
                "must be at most 8760",
            ));
        }
        Ok(())
    }
}

/// Frequency caps and quiet hours, applied to every user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapPolicy {
    /// Pushes per user per local day.
    pub per_day: u32,
    /// Pushes per user per rolling 7 days.
    pub per_week: u32,
    /// Minimum minutes between two pushes to one user.
    pub min_gap_minutes: u32,
    /// Quiet hours start, local time of the store (`21:00`).
    pub quiet_start: NaiveTime,
    /// Quiet hours end, local time of the store (`08:00`).
    pub quiet_end: NaiveTime,
    /// Share of all users in the global control group, in [0, 0.2] (default 0): never sent
    /// any campaign's push, their decisions logged as held out, so the lift of the whole
    /// programme can be measured as well as each campaign's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub global_control: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl Default for CapPolicy {
    fn default() -> Self {
        Self {
            per_day: 2,
            per_week: 6,
            min_gap_minutes: 60,
            quiet_start: NaiveTime::from_hms_opt(21, 0, 0).expect("valid"),
            quiet_end: NaiveTime::from_hms_opt(8, 0, 0).expect("valid"),
            global_control: 0.0,
        }
    }
}

impl CapPolicy {
    /// Checks the limits.
    ///
    /// # Errors
    /// The first [`FieldError`].
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.per_day == 0 || self.per_day > 50 {
            return Err(FieldError::new(
                "per_day",
                format!("must be in [1, 50], got {}", self.per_day),
            ));
        }
        if self.per_week < self.per_day || self.per_week > 200 {
            return Err(FieldError::new("per_week", "must be in [per_day, 200]"));
        }
        if self.min_gap_minutes > 24 * 60 {
            return Err(FieldError::new("min_gap_minutes", "must be at most 1440"));
        }
        check_range("global_control", self.global_control, 0.0, 0.2)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(v: Value) -> Result<Store, FieldError> {
        let s: Store = parse_json(&v)?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn store_errors_name_the_field() {
        let ok = json!({"id": "s1", "name": "Cafe", "category": "cafe", "time_zone": "Europe/Helsinki",
            "fence": {"type": "circle", "lat": 60.17, "lon": 24.94, "radius_m": 80}});
        assert!(store(ok.clone()).is_ok());
        let mut v = ok.clone();
        v["time_zone"] = json!("Mars/Olympus");
        assert_eq!(store(v).unwrap_err().field, "time_zone");
        let mut v = ok.clone();
        v["fence"]["radius_m"] = json!(-5);
        assert_eq!(store(v).unwrap_err().field, "fence.radius_m");
        let mut v = ok.clone();
        v["fence"]["lat"] = json!("north");
        assert_eq!(store(v).unwrap_err().field, "fence.lat");
        let mut v = ok.clone();
        v["colour"] = json!("red");
        assert_eq!(store(v).unwrap_err().field, "colour");
        let mut v = ok;
        v["fence"] = json!({"type": "polygon", "geometry": {"type": "Polygon", "coordinates": [[[24.9, 60.1], [24.91, 60.1]]]}});
        assert!(store(v).unwrap_err().field.starts_with("fence.geometry"));
    }

    /// Text parsed straight into stores gives what the value tree gives, and its errors
    /// name the same fields, for a list as configuration files hold it.
    #[test]
    fn parsing_text_names_the_same_fields_as_parsing_a_value() {
        let ok = json!([{"id": "s1", "name": "Cafe", "category": "cafe", "time_zone": "Europe/Helsinki",
            "fence": {"type": "circle", "lat": 60.17, "lon": 24.94, "radius_m": 80}},
            {"id": "m", "name": "Mall", "category": "mall", "time_zone": "Europe/Helsinki",
            "fence": {"type": "polygon", "geometry": {"type": "Polygon", "coordinates":
                [[[24.9, 60.1], [24.91, 60.1], [24.91, 60.11], [24.9, 60.1]]]}}}]);
        let from_text: Vec<Store> = parse_json_str(&ok.to_string()).unwrap();
        assert_eq!(from_text, parse_json::<Vec<Store>>(&ok).unwrap());
        for (path, bad, field) in [
            ("/1/fence/lat", json!("north"), "[1].fence.lat"),
            ("/0/colour", json!("red"), "[0].colour"),
            ("/0/fence/type", json!("square"), "[0].fence.type"),
        ] {
            let mut v = ok.clone();
            let (parent, key) = path.rsplit_once('/').unwrap();
            v.pointer_mut(parent).unwrap()[key] = bad;
            let text = serde_json::to_string_pretty(&v).unwrap();
            let (a, b) = (
                parse_json::<Vec<Store>>(&v).unwrap_err(),
                parse_json_str::<Vec<Store>>(&text).unwrap_err(),
            );
            assert_eq!(
                (a.field.as_str(), b.field.as_str()),
                (field, field),
                "{path}"
            );
        }
        let missing = r#"[{"id": "s1", "name": "Cafe", "category": "cafe", "time_zone": "UTC"}]"#;
        let e = parse_json_str::<Vec<Store>>(missing).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("[0].fence", "is required")
        );
        let e = parse_json_str::<Vec<Store>>("[] []").unwrap_err();
        assert!(e.reason.contains("trailing characters"), "{e:?}");
        let e = parse_json_str::<Vec<Store>>("[{").unwrap_err();
        assert!(e.reason.contains("line 1"), "{e:?}");
    }

    #[test]
    fn a_policy_put_needs_every_field_and_equal_quiet_times_switch_quiet_hours_off() {
        let full = json!({"per_day": 2, "per_week": 6, "min_gap_minutes": 60,
            "quiet_start": "21:00", "quiet_end": "08:00"});
        assert!(parse_json::<CapPolicy>(&full).is_ok());
        let mut partial = full.clone();
        partial.as_object_mut().unwrap().remove("quiet_end");
        let e = parse_json::<CapPolicy>(&partial).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("quiet_end", "is required")
        );
        let mut off = full;
        off["quiet_start"] = json!("00:00");
        off["quiet_end"] = json!("00:00");
        let p: CapPolicy = parse_json(&off).unwrap();
        p.validate().unwrap();
        for minute in 0..24 * 60 {
            let t = NaiveTime::from_hms_opt(minute / 60, minute % 60, 0).unwrap();
            assert!(
                !crate::caps::in_quiet_hours(t, p.quiet_start, p.quiet_end),
                "{t}"
            );
        }
    }
}
