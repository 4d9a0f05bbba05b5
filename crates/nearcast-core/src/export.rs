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
use crate::decision::{Decision, Verdict};
use crate::features::Input;
use crate::ids::Id;
use crate::ports::{OutcomeKind, OutcomeRecord};
use crate::weather::Weather;
use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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
    /// Weather at the store, when known. `temp_c` may be left out (or null): the
    /// temperature is then unknown (NaN) and its features are absent.
    #[serde(default, deserialize_with = "logged_weather")]
    pub weather: Option<Weather>,
    /// Whether the user had given personalisation consent (otherwise the user features
    /// were not used).
    pub personalised: bool,
    /// Model version that scored the candidates (default: empty, for logs of other systems).
    #[serde(default)]
    pub model_version: String,
    /// `sent`, `held_out`, `suppressed` or `none` (default: `none`).
    #[serde(default = "verdict_none")]
    pub verdict: String,
    /// Suppression reason, when suppressed.
    #[serde(default)]
    pub reason: Option<String>,
    /// Every candidate considered, scored or not.
    pub candidates: Vec<TrainingCandidate>,
}

/// The weather of a record: `temp_c` optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoggedWeather {
    condition: crate::weather::Condition,
    #[serde(default)]
    temp_c: Option<f64>,
}

fn logged_weather<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Weather>, D::Error> {
    let w: Option<LoggedWeather> = Option::deserialize(d)?;
    Ok(w.map(|w| Weather {
        condition: w.condition,
        temp_c: w.temp_c.unwrap_or(f64::NAN),
    }))
}

fn verdict_none() -> String {
    "none".into()
}

/// What every candidate of a record shares in its features ([`TrainingRecord::shared`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Shared<'a> {
    /// The fix's H3 cell, when `cell` is one.
    pub cell: Option<h3o::CellIndex>,
    /// Local hour of the week, when `local_time` is RFC 3339.
    pub hour_of_week: Option<u32>,
    /// The user's history.
    pub history: Vec<(&'a str, f64)>,
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
    /// Whether the user had bought in the category before, as serving saw it (purchases
    /// are kept without personalisation consent too, to never offer what was bought).
    #[serde(default)]
    pub bought_category: bool,
    /// Model score, when it was eligible and scored.
    #[serde(default)]
    pub score: Option<f64>,
    /// Why it was dropped, if it was.
    #[serde(default)]
    pub reason: Option<String>,
    /// Whether this candidate was pushed (default: false).
    #[serde(default)]
    pub sent: bool,
    /// Whether this candidate was chosen but held out (holdout group: not pushed; default:
    /// false).
    #[serde(default)]
    pub held_out: bool,
    /// Outcome: the push was opened within the attribution window (default: false).
    #[serde(default)]
    pub opened: bool,
    /// Outcome: the offer's coupon was redeemed within the window (default: false).
    #[serde(default)]
    pub redeemed: bool,
    /// Outcome: the user bought in the offer's category within the window.
    pub purchased: bool,
}

impl TrainingRecord {
    /// What the features read from the decision as a whole, computed once per record: the
    /// fix's cell, the local hour of the week, and the user's history (from every candidate,
    /// as serving builds it; empty without consent).
    pub fn shared(&self) -> Shared<'_> {
        let local = chrono::DateTime::parse_from_rfc3339(&self.local_time).ok();
        Shared {
            cell: self.cell.parse().ok(),
            hour_of_week: local.map(|t| crate::features::hour_of_week(t.weekday(), t.hour())),
            history: if self.personalised {
                crate::features::history(
                    self.candidates
                        .iter()
                        .map(|c| (c.category.as_str(), Some(c.affinity.unwrap_or(0.0)))),
                )
            } else {
                Vec::new()
            },
        }
    }

    /// The feature input of candidate `c`, built as serving builds it: without consent there
    /// is no affinity and no history, with consent a missing affinity counts as 0.
    /// `shared` is [`TrainingRecord::shared`] of this record.
    pub fn input<'a>(&'a self, c: &'a TrainingCandidate, shared: &'a Shared<'a>) -> Input<'a> {
        Input {
            offer_id: &c.offer_id,
            store_id: &c.store_id,
            category: &c.category,
            cell: shared.cell,
            hour_of_week: shared.hour_of_week,
            daypart: self.daypart,
            weekend: self.weekend,
            weather: self.weather,
            distance_m: c.distance_m,
            affinity: self.personalised.then(|| c.affinity.unwrap_or(0.0)),
            bought_category: c.bought_category,
            history: &shared.history,
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

/// The attribution window used unless told otherwise.
pub const DEFAULT_WINDOW_HOURS: i64 = 24;

/// How decisions and outcomes are joined into records.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// An outcome counts for a decision only within this long after it.
    pub window: Duration,
    /// Key of the user pseudonym (keep it secret, or random per export: then pseudonyms
    /// cannot be linked across exports).
    pub key: Vec<u8>,
    /// Only decisions at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only decisions before this time.
    pub until: Option<DateTime<Utc>>,
}

impl JoinOptions {
    /// The default window, no time bounds, and `key`.
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self {
            window: Duration::hours(DEFAULT_WINDOW_HOURS),
            key: key.into(),
            since: None,
            until: None,
        }
    }
}

/// A keyed pseudonym of a user: `u-` and the first 16 bytes of HMAC-SHA256(key, user id),
/// hex. Without the key it cannot be reversed or recomputed from a user id.
pub fn pseudonym(key: &[u8], user: &Id) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes a key of any length");
    mac.update(user.as_str().as_bytes());
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(34);
    out.push_str("u-");
    for b in &tag[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Joins logged decisions and outcomes into training records, one per decision that has
/// candidates and a context, in the order given (oldest first), restricted to
/// `[since, until)`.
///
/// Attribution, each within `window` after the decision (inclusive):
/// - **opened**: an open names its delivery (the decision with that `delivery_id`), or else
///   counts for the latest earlier decision that sent that offer to that user. Only the
///   chosen candidate of a sent decision can be opened; an open is attributed at most once.
/// - **redeemed**: as opened, but a held-out decision counts too (a held-out user who
///   redeems anyway is the baseline that lift is measured against).
/// - **purchased**: any candidate whose category the user bought in, after the decision.
///
/// Outcomes are matched against all decisions given, also those outside `[since, until)`,
/// so a bound never moves an outcome to another decision.
pub fn join(
    decisions: &[Decision],
    outcomes: &[OutcomeRecord],
    opts: &JoinOptions,
) -> Vec<TrainingRecord> {
    let window = opts.window;
    // Decisions per user, in time order (index into `decisions`).
    let mut by_user: HashMap<&Id, Vec<usize>> = HashMap::new();
    for (i, d) in decisions.iter().enumerate() {
        by_user.entry(&d.user_id).or_default().push(i);
    }
    for v in by_user.values_mut() {
        v.sort_by_key(|&i| (decisions[i].at, i));
    }
    let by_delivery: HashMap<(&Id, &str), usize> = decisions
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.delivery_id.as_deref().map(|x| ((&d.user_id, x), i)))
        .collect();
    let within = |d: &Decision, at: DateTime<Utc>| at >= d.at && at - d.at <= window;
    fn chosen_offer(d: &Decision) -> Option<&Id> {
        match d.verdict {
            Verdict::Sent | Verdict::HeldOut => d.offer_id.as_ref(),
            _ => None,
        }
    }
    let mut opened = vec![false; decisions.len()];
    let mut redeemed = vec![false; decisions.len()];
    // Purchases per user: (time, category).
    let mut bought: HashMap<&Id, Vec<(DateTime<Utc>, &str)>> = HashMap::new();
    for o in outcomes {
        let target = match o.kind {
            OutcomeKind::Purchased => {
                if let Some(c) = &o.category {
                    bought.entry(&o.user_id).or_default().push((o.at, c));
                }
                continue;
            }
            OutcomeKind::Opened => &mut opened,
            OutcomeKind::Redeemed => &mut redeemed,
        };
        let counts = |d: &Decision| {
            d.verdict == Verdict::Sent
                || (o.kind == OutcomeKind::Redeemed && d.verdict == Verdict::HeldOut)
        };
        let named = o
            .delivery_id
            .as_deref()
            .and_then(|x| by_delivery.get(&(&o.user_id, x)).copied())
            .filter(|&i| counts(&decisions[i]) && within(&decisions[i], o.at));
        let latest = || {
            by_user.get(&o.user_id).and_then(|v| {
                v.iter().rev().copied().find(|&i| {
                    let d = &decisions[i];
                    counts(d) && chosen_offer(d) == o.offer_id.as_ref() && within(d, o.at)
                })
            })
        };
        if let Some(i) = named.or_else(latest) {
            target[i] = true;
        }
    }
    decisions
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            !d.candidates.is_empty()
                && d.context.is_some()
                && opts.since.is_none_or(|s| d.at >= s)
                && opts.until.is_none_or(|u| d.at < u)
        })
        .filter_map(|(i, d)| {
            let ctx = d.context.as_ref()?;
            let daypart: Daypart =
                serde_json::from_value(serde_json::Value::String(ctx.daypart.clone())).ok()?;
            let purchases = bought.get(&d.user_id);
            let candidates = d
                .candidates
                .iter()
                .map(|c| {
                    let chosen = d.offer_id.as_ref() == Some(&c.offer_id)
                        && d.store_id.as_ref() == Some(&c.store_id);
                    let sent = chosen && d.verdict == Verdict::Sent;
                    let held_out = chosen && d.verdict == Verdict::HeldOut;
                    TrainingCandidate {
                        offer_id: c.offer_id.to_string(),
                        category: c.category.clone(),
                        store_id: c.store_id.to_string(),
                        distance_m: c.distance_m,
                        affinity: c.affinity,
                        bought_category: c.bought_category,
                        score: c.score,
                        reason: c.reason.as_ref().map(|r| r.code().to_string()),
                        sent,
                        held_out,
                        opened: sent && opened[i],
                        redeemed: (sent || held_out) && redeemed[i],
                        purchased: purchases.is_some_and(|p| {
                            p.iter()
                                .any(|&(at, cat)| cat == c.category && within(d, at))
                        }),
                    }
                })
                .collect();
            Some(TrainingRecord {
                format: FORMAT.to_string(),
                decision_id: d.event_id.to_string(),
                user: pseudonym(&opts.key, &d.user_id),
                at: d.at,
                local_time: ctx.local_time.clone(),
                daypart,
                weekend: matches!(ctx.weekday.as_str(), "Sat" | "Sun"),
                weekday: ctx.weekday.clone(),
                cell: ctx.cell.clone(),
                weather: ctx.weather,
                personalised: d.personalised,
                model_version: d.model_version.clone(),
                verdict: verdict_str(d.verdict).to_string(),
                reason: d.reason.as_ref().map(|r| r.code().to_string()),
                candidates,
            })
        })
        .collect()
}

fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Sent => "sent",
        Verdict::HeldOut => "held_out",
        Verdict::Suppressed => "suppressed",
        Verdict::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TrainingRecord {
        serde_json::from_str(
            r#"{"format":"nearcast-training/1","decision_id":"e1","user":"u-3f2a",
            "at":"2026-10-06T05:12:40Z","local_time":"2026-10-06T08:12:40+03:00",
            "daypart":"morning","weekday":"Tue","weekend":false,"cell":"891126d3303ffff",
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
    fn a_plain_visit_log_reads_with_the_documented_defaults() {
        let r: TrainingRecord = serde_json::from_str(
            r#"{"format":"nearcast-training/1","decision_id":"v1","user":"u1",
            "at":"2026-10-06T05:12:40Z","local_time":"2026-10-06T08:12:40+03:00",
            "daypart":"morning","weekday":"Tue","weekend":false,"cell":"891126d3a47ffff",
            "weather":{"condition":"rain"},"personalised":false,
            "candidates":[{"offer_id":"o1","category":"yarn","store_id":"s1",
              "distance_m":40.0,"purchased":true}]}"#,
        )
        .unwrap();
        r.validate().unwrap();
        assert_eq!((r.model_version.as_str(), r.verdict.as_str()), ("", "none"));
        let c = &r.candidates[0];
        assert!(!c.sent && !c.held_out && !c.opened && !c.redeemed && c.purchased);
        assert_eq!(c.affinity, None);
        let w = r.weather.unwrap();
        assert!(w.temp_c.is_nan(), "an unknown temperature is not 0 °C");
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
        let shared = r.shared();
        let x = r.input(&r.candidates[0], &shared);
        assert_eq!(x.affinity, Some(0.6));
        assert_eq!(x.history, [(r.candidates[0].category.as_str(), 0.6)]);
        assert!(x.cell.is_some() && x.hour_of_week.is_some());
        r.personalised = false;
        let shared = r.shared();
        let x = r.input(&r.candidates[0], &shared);
        assert_eq!(x.affinity, None);
        assert!(x.history.is_empty());
    }

    // ------------------------------------------------------------ the join

    use crate::decision::{Candidate, DecisionContext, Reason};
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        "2026-11-20T08:00:00Z".parse().unwrap()
    }

    fn id(s: &str) -> Id {
        Id::parse(s).unwrap()
    }

    fn cand(offer: &str, category: &str) -> Candidate {
        Candidate {
            store_id: id("s1"),
            offer_id: id(offer),
            category: category.into(),
            distance_m: 30.0,
            score: Some(0.4),
            reason: None,
            affinity: Some(0.2),
            bought_category: false,
        }
    }

    /// A decision of `user` at `t0 + minutes`, choosing `offer` (coffee) among it and a
    /// bakery candidate, with `verdict`.
    fn decision(user: &str, event: &str, minutes: i64, offer: &str, verdict: Verdict) -> Decision {
        let mut bakery = cand("bread", "bakery");
        bakery.reason = Some(Reason::BelowThreshold {
            score: 0.1,
            threshold: 0.2,
        });
        Decision {
            event_id: id(event),
            user_id: id(user),
            at: t0() + Duration::minutes(minutes),
            verdict,
            store_id: Some(id("s1")),
            offer_id: Some(id(offer)),
            score: Some(0.4),
            reason: None,
            context: Some(DecisionContext {
                local_time: "2026-11-20T10:00:00+02:00".into(),
                daypart: "morning".into(),
                weekday: "Fri".into(),
                weather: None,
                cell: "891126d3a47ffff".into(),
            }),
            candidates: vec![cand(offer, "coffee"), bakery],
            model_version: "m1".into(),
            delivery_id: matches!(verdict, Verdict::Sent | Verdict::HeldOut)
                .then(|| format!("d-{event}")),
            personalised: true,
            presence: Vec::new(),
            campaign_id: None,
            variant_id: None,
            catalog_version: None,
            deferred_until: None,
            next_fix_by: None,
        }
    }

    fn outcome(user: &str, minutes: i64, kind: OutcomeKind, offer: Option<&str>) -> OutcomeRecord {
        OutcomeRecord {
            detail: Default::default(),
            event_id: id(&format!("x{minutes}")),
            user_id: id(user),
            at: t0() + Duration::minutes(minutes),
            kind,
            offer_id: offer.map(id),
            category: Some("coffee".into()),
            delivery_id: None,
        }
    }

    fn opts() -> JoinOptions {
        JoinOptions::new(b"secret".to_vec())
    }

    #[test]
    fn an_open_counts_for_the_latest_earlier_send_of_its_offer_within_the_window() {
        let ds = [
            decision("ann", "e1", 0, "latte", Verdict::Sent),
            decision("ann", "e2", 60, "latte", Verdict::Sent),
            decision("ann", "e3", 90, "mocha", Verdict::Sent),
            decision("bob", "e4", 70, "latte", Verdict::Sent),
        ];
        let os = [outcome("ann", 100, OutcomeKind::Opened, Some("latte"))];
        let r = join(&ds, &os, &opts());
        let opened: Vec<bool> = r.iter().map(|r| r.candidates[0].opened).collect();
        assert_eq!(opened, [false, true, false, false]);
        // Only the chosen candidate can be opened.
        assert!(!r[1].candidates[1].opened);
        assert!(r[1].candidates[0].sent && !r[1].candidates[1].sent);
        // Past the window: nobody.
        let late = [outcome(
            "ann",
            60 + 24 * 60 + 1,
            OutcomeKind::Opened,
            Some("latte"),
        )];
        assert!(
            join(&ds, &late, &opts())
                .iter()
                .all(|r| !r.candidates[0].opened)
        );
        // An open before any decision counts for none.
        let early = [outcome("ann", -5, OutcomeKind::Opened, Some("latte"))];
        assert!(
            join(&ds, &early, &opts())
                .iter()
                .all(|r| !r.candidates[0].opened)
        );
    }

    #[test]
    fn an_open_naming_its_delivery_counts_for_that_decision() {
        let ds = [
            decision("ann", "e1", 0, "latte", Verdict::Sent),
            decision("ann", "e2", 60, "latte", Verdict::Sent),
        ];
        let mut o = outcome("ann", 100, OutcomeKind::Opened, Some("latte"));
        o.delivery_id = Some("d-e1".into());
        let r = join(&ds, &[o.clone()], &opts());
        assert_eq!(
            (r[0].candidates[0].opened, r[1].candidates[0].opened),
            (true, false)
        );
        // Another user's delivery id is not theirs to open: falls back to their own sends.
        o.user_id = id("bob");
        assert!(
            join(&ds, &[o], &opts())
                .iter()
                .all(|r| !r.candidates[0].opened)
        );
    }

    #[test]
    fn redemptions_count_for_held_out_decisions_too_opens_do_not() {
        let ds = [decision("ann", "e1", 0, "latte", Verdict::HeldOut)];
        let os = [
            outcome("ann", 10, OutcomeKind::Opened, Some("latte")),
            outcome("ann", 20, OutcomeKind::Redeemed, Some("latte")),
        ];
        let r = join(&ds, &os, &opts());
        let c = &r[0].candidates[0];
        assert!(c.held_out && !c.sent && !c.opened && c.redeemed);
        assert_eq!(r[0].verdict, "held_out");
    }

    #[test]
    fn purchases_in_a_candidates_category_within_the_window_mark_it() {
        let ds = [
            decision("ann", "e1", 0, "latte", Verdict::Suppressed),
            decision("ann", "e2", 2 * 24 * 60, "latte", Verdict::Sent),
        ];
        let mut os = vec![outcome("ann", 30, OutcomeKind::Purchased, None)];
        let mut bread = outcome("ann", 31, OutcomeKind::Purchased, None);
        bread.category = Some("bakery".into());
        os.push(bread);
        let r = join(&ds, &os, &opts());
        assert!(r[0].candidates[0].purchased && r[0].candidates[1].purchased);
        assert!(!r[1].candidates[0].purchased && !r[1].candidates[1].purchased);
        // A narrower window leaves them out.
        let mut o = opts();
        o.window = Duration::minutes(20);
        assert!(!join(&ds, &os, &o)[0].candidates[0].purchased);
    }

    #[test]
    fn saturdays_and_sundays_export_as_weekend_and_no_other_day() {
        for (day, weekend) in [
            ("Mon", false),
            ("Tue", false),
            ("Wed", false),
            ("Thu", false),
            ("Fri", false),
            ("Sat", true),
            ("Sun", true),
        ] {
            let mut d = decision("ann", "e1", 0, "latte", Verdict::Sent);
            d.context.as_mut().unwrap().weekday = day.into();
            let r = join(&[d], &[], &opts());
            assert_eq!((r[0].weekday.as_str(), r[0].weekend), (day, weekend));
        }
    }

    #[test]
    fn records_carry_context_and_a_keyed_pseudonym_never_the_user_id() {
        let ds = [
            decision("ann", "e1", 0, "latte", Verdict::Sent),
            decision("ann", "e2", 5, "latte", Verdict::Sent),
            decision("bob", "e3", 5, "latte", Verdict::Sent),
        ];
        let r = join(&ds, &[], &opts());
        assert_eq!(r[0].user, r[1].user);
        assert_ne!(r[0].user, r[2].user);
        assert_ne!(
            r[0].user,
            join(&ds, &[], &JoinOptions::new(b"other".to_vec()))[0].user
        );
        assert!(r[0].user.starts_with("u-") && r[0].user.len() == 34);
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("ann") && !text.contains("bob"));
        let x = &r[0];
        assert_eq!(
            (x.daypart, x.weekday.as_str(), x.weekend),
            (Daypart::Morning, "Fri", false)
        );
        assert_eq!(x.candidates[1].reason.as_deref(), Some("below_threshold"));
        assert_eq!(x.candidates[0].affinity, Some(0.2));
        assert!(x.personalised);
        x.validate().unwrap();
    }

    #[test]
    fn since_and_until_bound_decisions_not_attribution() {
        let ds = [
            decision("ann", "e1", 0, "latte", Verdict::Sent),
            decision("ann", "e2", 60, "latte", Verdict::Sent),
        ];
        let os = [outcome("ann", 100, OutcomeKind::Opened, Some("latte"))];
        let mut o = opts();
        o.until = Some(t0() + Duration::minutes(60));
        let r = join(&ds, &os, &o);
        assert_eq!(r.len(), 1);
        // The open belongs to e2 (outside the bounds), so e1 is not credited with it.
        assert!(!r[0].candidates[0].opened);
        o.until = None;
        o.since = Some(t0() + Duration::minutes(1));
        let r = join(&ds, &os, &o);
        assert_eq!((r.len(), r[0].decision_id.as_str()), (1, "e2"));
    }

    fn arb_case() -> impl Strategy<Value = (Vec<Decision>, Vec<OutcomeRecord>)> {
        let users = ["ann", "bob", "cem"];
        let offers = ["latte", "mocha"];
        let verdicts = [Verdict::Sent, Verdict::HeldOut, Verdict::Suppressed];
        let d = (0..3usize, 0..3000i64, 0..2usize, 0..3usize);
        let o = (0..3usize, 0..4000i64, 0..3usize, 0..2usize, any::<bool>());
        (
            prop::collection::vec(d, 0..20),
            prop::collection::vec(o, 0..20),
        )
            .prop_map(move |(ds, os)| {
                let ds = ds
                    .into_iter()
                    .enumerate()
                    .map(|(i, (u, m, o, v))| {
                        decision(users[u], &format!("e{i}"), m, offers[o], verdicts[v])
                    })
                    .collect::<Vec<_>>();
                let os = os
                    .into_iter()
                    .map(|(u, m, k, o, named)| {
                        let kind = [
                            OutcomeKind::Opened,
                            OutcomeKind::Redeemed,
                            OutcomeKind::Purchased,
                        ][k];
                        let mut r = outcome(users[u], m, kind, Some(offers[o]));
                        if named && !ds.is_empty() {
                            r.delivery_id = Some(format!("d-e{}", m as usize % ds.len()));
                        }
                        r
                    })
                    .collect();
                (ds, os)
            })
    }

    proptest! {
        /// Whatever the logs: one valid record per decision, outcomes only where they can
        /// be (opened only if sent, redeemed only if sent or held out), each open or
        /// redemption credited to at most one record, and only within the window after it.
        #[test]
        fn the_join_attributes_soundly((ds, os) in arb_case(), hours in 1i64..48) {
            let mut o = opts();
            o.window = Duration::hours(hours);
            let r = join(&ds, &os, &o);
            prop_assert_eq!(r.len(), ds.len());
            let mut opens = 0;
            let mut redemptions = 0;
            for (rec, d) in r.iter().zip(&ds) {
                rec.validate().unwrap();
                prop_assert_eq!(rec.candidates.len(), d.candidates.len());
                prop_assert!(!rec.user.contains(d.user_id.as_str()));
                for c in &rec.candidates {
                    prop_assert!(!c.opened || c.sent);
                    prop_assert!(!c.redeemed || c.sent || c.held_out);
                    prop_assert!(!(c.sent && c.held_out));
                    opens += usize::from(c.opened);
                    redemptions += usize::from(c.redeemed);
                    let can_match = |k: OutcomeKind| os.iter().any(|x| {
                        x.kind == k && x.user_id == d.user_id && x.at >= d.at
                            && x.at - d.at <= o.window
                    });
                    prop_assert!(!c.opened || can_match(OutcomeKind::Opened));
                    prop_assert!(!c.redeemed || can_match(OutcomeKind::Redeemed));
                    prop_assert!(!c.purchased || can_match(OutcomeKind::Purchased));
                }
            }
            let count = |k: OutcomeKind| os.iter().filter(|x| x.kind == k).count();
            prop_assert!(opens <= count(OutcomeKind::Opened));
            prop_assert!(redemptions <= count(OutcomeKind::Redeemed));
        }
    }
}
