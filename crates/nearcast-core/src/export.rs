//! The training-data format `nearcast-training/1`: one JSON line per logged decision, with
//! its context, every candidate that was considered, and outcomes joined afterwards.
//!
//! `nearcast export` writes it from the embedded store or DynamoDB; the trainer
//! (`models/nearcast-train`) reads it, and its generator writes it, so data scientists can
//! train on their own logs as well as on generated ones. docs/training-data.md documents
//! every field. Unknown fields are refused: a reader never silently ignores a newer format.
//!
//! The record carries exactly what [`crate::features::Input`] needs for each candidate
//! ([`TrainingRecord::input`]), so the trainer computes features through the same code path
//! as serving.
//!
//! Privacy: no user id, no coordinates. `user` is a keyed pseudonym (stable within one
//! export, useless to join with anything else), the place is an H3 cell of resolution 9
//! (about 0.1 km²).

use crate::context::Daypart;
use crate::features::Input;
use crate::weather::Weather;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The format tag every record carries.
pub const FORMAT: &str = "nearcast-training/1";

/// One decision and its outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    /// Always [`FORMAT`].
    pub format: String,
    /// The decision's id (the location event's id).
    pub decision_id: String,
    /// A pseudonym of the user, stable within one export.
    pub user: String,
    /// When the decision was made, UTC.
    pub at: DateTime<Utc>,
    /// Local time at the store, RFC 3339 with its UTC offset.
    pub local_time: String,
    /// Daypart in local time.
    pub daypart: Daypart,
    /// Weekday in local time, `Mon`..`Sun`.
    pub weekday: String,
    /// Saturday or Sunday in local time.
    pub weekend: bool,
    /// H3 cell (resolution 9) of the fix.
    pub cell: String,
    /// Weather at the store, when known.
    #[serde(default)]
    pub weather: Option<Weather>,
    /// Whether the user had given personalisation consent (otherwise the user features
    /// were not used).
    pub personalised: bool,
    /// Model version that scored the candidates.
    pub model_version: String,
    /// `sent`, `held_out`, `suppressed` or `none`.
    pub verdict: String,
    /// Suppression reason, when suppressed.
    #[serde(default)]
    pub reason: Option<String>,
    /// Every candidate considered, scored or not.
    pub candidates: Vec<TrainingCandidate>,
}

/// One candidate of a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingCandidate {
    /// Offer.
    pub offer_id: String,
    /// Offer category.
    pub category: String,
    /// Store.
    pub store_id: String,
    /// Distance from the fix to the store's fence centre, metres.
    pub distance_m: f64,
    /// The user's affinity for the category at decision time (only with personalisation
    /// consent).
    #[serde(default)]
    pub affinity: Option<f64>,
    /// Whether the user had bought in the category before (only with consent).
    #[serde(default)]
    pub bought_category: bool,
    /// Model score, when it was eligible and scored.
    #[serde(default)]
    pub score: Option<f64>,
    /// Why it was dropped, if it was.
    #[serde(default)]
    pub reason: Option<String>,
    /// Whether this candidate was pushed.
    pub sent: bool,
    /// Whether this candidate was chosen but held out (holdout group: not pushed).
    pub held_out: bool,
    /// Outcome: the push was opened within the attribution window.
    pub opened: bool,
    /// Outcome: the offer's coupon was redeemed within the window.
    pub redeemed: bool,
    /// Outcome: the user bought in the offer's category within the window.
    pub purchased: bool,
}

impl TrainingRecord {
    /// The feature input of candidate `c`, built as serving builds it: without consent there
    /// is no affinity, with consent a missing affinity counts as 0.
    pub fn input<'a>(&self, c: &'a TrainingCandidate) -> Input<'a> {
        Input {
            category: &c.category,
            daypart: self.daypart,
            weekend: self.weekend,
            weather: self.weather,
            distance_m: c.distance_m,
            affinity: self.personalised.then(|| c.affinity.unwrap_or(0.0)),
            bought_category: c.bought_category,
        }
    }

    /// Checks what serde cannot: the format tag, finite non-negative distances, scores in
    /// [0, 1], affinities in [0, 1], at least one candidate. The error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "format: expected {FORMAT:?}, got {:?}",
                self.format
            ));
        }
        if self.candidates.is_empty() {
            return Err("candidates: empty".into());
        }
        for (i, c) in self.candidates.iter().enumerate() {
            if !c.distance_m.is_finite() || c.distance_m < 0.0 {
                return Err(format!("candidates[{i}].distance_m: not a finite distance"));
            }
            for (name, v) in [("score", c.score), ("affinity", c.affinity)] {
                if let Some(v) = v
                    && !(0.0..=1.0).contains(&v)
                {
                    return Err(format!("candidates[{i}].{name}: outside [0, 1]"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TrainingRecord {
        serde_json::from_str(
            r#"{"format":"nearcast-training/1","decision_id":"e1","user":"u-3f2a",
            "at":"2026-10-06T05:12:40Z","local_time":"2026-10-06T08:12:40+03:00",
            "daypart":"morning","weekday":"Tue","weekend":false,"cell":"891126d3a47ffff",
            "weather":{"condition":"rain","temp_c":4.0},"personalised":true,
            "model_version":"2026-11-23.1","verdict":"sent","reason":null,
            "candidates":[{"offer_id":"o1","category":"coffee","store_id":"s1",
              "distance_m":40.0,"affinity":0.6,"bought_category":false,"score":0.31,
              "reason":null,"sent":true,"held_out":false,"opened":true,"redeemed":false,
              "purchased":true}]}"#,
        )
        .expect("parses")
    }

    #[test]
    fn round_trips_and_validates() {
        let r = record();
        r.validate().unwrap();
        let again: TrainingRecord =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values() {
        let mut v = serde_json::to_value(record()).unwrap();
        v["extra"] = 1.into();
        assert!(serde_json::from_value::<TrainingRecord>(v).is_err());
        let mut r = record();
        r.candidates[0].score = Some(1.5);
        assert!(r.validate().unwrap_err().contains("candidates[0].score"));
        let mut r = record();
        r.format = "other".into();
        assert!(r.validate().unwrap_err().starts_with("format"));
    }

    #[test]
    fn input_drops_user_features_without_consent() {
        let mut r = record();
        assert_eq!(r.input(&r.candidates[0]).affinity, Some(0.6));
        r.personalised = false;
        assert_eq!(r.input(&r.candidates[0]).affinity, None);
    }
}
