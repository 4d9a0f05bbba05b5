//! Weather: conditions, and a deterministic table-driven source for the embedded default.

use serde::{Deserialize, Serialize};

/// Weather condition, coarse enough for offer rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs, reason = "the names are the conditions")]
pub enum Condition {
    Clear,
    Cloudy,
    Fog,
    Rain,
    Snow,
    Storm,
}

impl Condition {
    /// Wet weather (rain, snow or storm): what umbrellas and cafés respond to.
    pub fn is_wet(self) -> bool {
        matches!(self, Condition::Rain | Condition::Snow | Condition::Storm)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Clear => "clear",
            Condition::Cloudy => "cloudy",
            Condition::Fog => "fog",
            Condition::Rain => "rain",
            Condition::Snow => "snow",
            Condition::Storm => "storm",
        }
    }
}

/// Weather at a place and hour.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weather {
    /// Condition.
    pub condition: Condition,
    /// Air temperature, °C.
    pub temp_c: f64,
}

/// One row of a weather table: the weather from `from` (inclusive) to `to` (exclusive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeatherSpan {
    /// Start, UTC.
    pub from: chrono::DateTime<chrono::Utc>,
    /// End, UTC.
    pub to: chrono::DateTime<chrono::Utc>,
    /// Weather in that span.
    #[serde(flatten)]
    pub weather: Weather,
}

/// A deterministic weather source: a table of time spans, the same everywhere. The embedded
/// default and the demo use it; the AWS host uses an HTTP forecast source instead.
#[derive(Debug, Clone, Default)]
pub struct TableWeather {
    spans: Vec<WeatherSpan>,
}

impl TableWeather {
    /// A source from spans (any order).
    pub fn new(mut spans: Vec<WeatherSpan>) -> Self {
        spans.sort_by_key(|s| s.from);
        Self { spans }
    }

    /// The weather at `at`, if a span covers it.
    pub fn at(&self, at: chrono::DateTime<chrono::Utc>) -> Option<Weather> {
        let i = self.spans.partition_point(|s| s.from <= at);
        let s = self.spans.get(i.checked_sub(1)?)?;
        (at < s.to).then_some(s.weather)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_answers_by_span() {
        let w = |c| Weather {
            condition: c,
            temp_c: 5.0,
        };
        let t = TableWeather::new(vec![
            WeatherSpan {
                from: "2026-11-20T10:00:00Z".parse().unwrap(),
                to: "2026-11-20T12:00:00Z".parse().unwrap(),
                weather: w(Condition::Rain),
            },
            WeatherSpan {
                from: "2026-11-20T08:00:00Z".parse().unwrap(),
                to: "2026-11-20T10:00:00Z".parse().unwrap(),
                weather: w(Condition::Clear),
            },
        ]);
        assert_eq!(
            t.at("2026-11-20T09:59:59Z".parse().unwrap())
                .unwrap()
                .condition,
            Condition::Clear
        );
        assert_eq!(
            t.at("2026-11-20T10:00:00Z".parse().unwrap())
                .unwrap()
                .condition,
            Condition::Rain
        );
        assert!(t.at("2026-11-20T12:00:00Z".parse().unwrap()).is_none());
        assert!(t.at("2026-11-20T07:00:00Z".parse().unwrap()).is_none());
    }
}
