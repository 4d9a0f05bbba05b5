//! Context of a decision: the store's local time, daypart, weekday and the weather.

use crate::weather::Weather;
use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Parts of the day, in the store's local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Daypart {
    /// 06:00 to 11:00.
    Morning,
    /// 11:00 to 14:00.
    Midday,
    /// 14:00 to 17:00.
    Afternoon,
    /// 17:00 to 21:00.
    Evening,
    /// 21:00 to 06:00.
    Night,
}

impl Daypart {
    /// The daypart of a local hour.
    pub fn of_hour(hour: u32) -> Daypart {
        match hour {
            6..=10 => Daypart::Morning,
            11..=13 => Daypart::Midday,
            14..=16 => Daypart::Afternoon,
            17..=20 => Daypart::Evening,
            _ => Daypart::Night,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Daypart::Morning => "morning",
            Daypart::Midday => "midday",
            Daypart::Afternoon => "afternoon",
            Daypart::Evening => "evening",
            Daypart::Night => "night",
        }
    }

    /// All dayparts in order.
    pub const ALL: [Daypart; 5] = [
        Daypart::Morning,
        Daypart::Midday,
        Daypart::Afternoon,
        Daypart::Evening,
        Daypart::Night,
    ];
}

/// The context of one decision at one store.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// The moment, in the store's time zone.
    pub local: DateTime<Tz>,
    /// Daypart of `local`.
    pub daypart: Daypart,
    /// Weekday of `local`.
    pub weekday: Weekday,
    /// Saturday or Sunday.
    pub weekend: bool,
    /// Weather there and then, if known.
    pub weather: Option<Weather>,
}

impl Context {
    /// Builds the context of instant `at` in time zone `tz`.
    ///
    /// # Example
    /// ```
    /// use nearcast_core::context::{Context, Daypart};
    /// let at = "2026-11-21T06:30:00Z".parse().unwrap(); // 08:30 in Helsinki, a Saturday
    /// let c = Context::new(at, chrono_tz::Europe::Helsinki, None);
    /// assert_eq!(c.daypart, Daypart::Morning);
    /// assert!(c.weekend);
    /// ```
    pub fn new(at: DateTime<Utc>, tz: Tz, weather: Option<Weather>) -> Context {
        let local = at.with_timezone(&tz);
        let weekday = local.weekday();
        Context {
            daypart: Daypart::of_hour(local.hour()),
            weekend: matches!(weekday, Weekday::Sat | Weekday::Sun),
            weekday,
            local,
            weather,
        }
    }
}
