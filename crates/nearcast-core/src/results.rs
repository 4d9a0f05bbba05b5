//! Campaign and model results from the logs: per offer and per model version, how many
//! decisions chose it, how many were sent or held out, opened and redeemed, with conversion
//! rates and the lift of sending over holding out. Computed from the joined training
//! records ([`crate::export::join`]), so results and training data never disagree.

use crate::export::TrainingRecord;
use serde::Serialize;
use std::collections::BTreeMap;

/// Counts and rates of one group (an offer under one model version, or a model version).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Decisions that chose it (sent, held out, or suppressed after being chosen).
    pub decisions: u64,
    /// Pushes sent.
    pub sent: u64,
    /// Chosen but held out (holdout group).
    pub held_out: u64,
    /// Sent pushes opened.
    pub opened: u64,
    /// Sent pushes whose coupon was redeemed.
    pub redeemed_sent: u64,
    /// Held-out decisions whose coupon was redeemed anyway.
    pub redeemed_held_out: u64,
    /// `opened / sent`.
    pub open_rate: Option<f64>,
    /// `redeemed_sent / sent`.
    pub conversion_sent: Option<f64>,
    /// `redeemed_held_out / held_out`.
    pub conversion_held_out: Option<f64>,
    /// `conversion_sent - conversion_held_out`: redemptions per push caused by sending.
    pub lift: Option<f64>,
}

impl Tally {
    fn add(&mut self, r: &TrainingRecord) {
        self.decisions += 1;
        let Some(c) = r.candidates.iter().find(|c| c.sent || c.held_out) else {
            return;
        };
        self.sent += u64::from(c.sent);
        self.held_out += u64::from(c.held_out);
        self.opened += u64::from(c.opened);
        self.redeemed_sent += u64::from(c.sent && c.redeemed);
        self.redeemed_held_out += u64::from(c.held_out && c.redeemed);
    }

    fn finish(&mut self) {
        let rate = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
        self.open_rate = rate(self.opened, self.sent);
        self.conversion_sent = rate(self.redeemed_sent, self.sent);
        self.conversion_held_out = rate(self.redeemed_held_out, self.held_out);
        self.lift = self
            .conversion_sent
            .zip(self.conversion_held_out)
            .map(|(s, h)| s - h);
    }
}

/// One offer under one model version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfferResult {
    /// Offer.
    pub offer_id: String,
    /// Model version that scored the decisions.
    pub model_version: String,
    /// Its numbers.
    #[serde(flatten)]
    pub tally: Tally,
}

/// One model version over all offers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelResult {
    /// Model version.
    pub model_version: String,
    /// Its numbers.
    #[serde(flatten)]
    pub tally: Tally,
}

/// All results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Results {
    /// Per offer and model version, by offer then version.
    pub by_offer: Vec<OfferResult>,
    /// Per model version.
    pub by_model: Vec<ModelResult>,
}

/// Tallies the records' chosen candidates. Decisions that chose nothing (every candidate
/// dropped by a rule) are not counted.
pub fn results(records: &[TrainingRecord]) -> Results {
    let mut by_offer: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut by_model: BTreeMap<String, Tally> = BTreeMap::new();
    for r in records {
        let chosen = r
            .candidates
            .iter()
            .find(|c| c.sent || c.held_out)
            .or_else(|| (r.verdict == "suppressed").then(|| best(r)).flatten());
        let Some(c) = chosen else { continue };
        by_offer
            .entry((c.offer_id.clone(), r.model_version.clone()))
            .or_default()
            .add(r);
        by_model.entry(r.model_version.clone()).or_default().add(r);
    }
    Results {
        by_offer: by_offer
            .into_iter()
            .map(|((offer_id, model_version), mut tally)| {
                tally.finish();
                OfferResult {
                    offer_id,
                    model_version,
                    tally,
                }
            })
            .collect(),
        by_model: by_model
            .into_iter()
            .map(|(model_version, mut tally)| {
                tally.finish();
                ModelResult {
                    model_version,
                    tally,
                }
            })
            .collect(),
    }
}

/// The candidate a suppressed decision had chosen: the best-scored one that a rule before
/// scoring did not drop (caps, consent and quiet hours suppress a scored candidate).
fn best(r: &TrainingRecord) -> Option<&crate::export::TrainingCandidate> {
    r.candidates
        .iter()
        .filter(|c| c.score.is_some() && c.reason.as_deref() != Some("below_threshold"))
        .max_by(|a, b| a.score.unwrap_or(0.0).total_cmp(&b.score.unwrap_or(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{FORMAT, TrainingCandidate};

    /// A record choosing `offer` under `model` with the given verdict and outcomes.
    fn rec(
        offer: &str,
        model: &str,
        verdict: &str,
        opened: bool,
        redeemed: bool,
    ) -> TrainingRecord {
        let sent = verdict == "sent";
        let held_out = verdict == "held_out";
        TrainingRecord {
            format: FORMAT.into(),
            decision_id: "e".into(),
            user: "u-1".into(),
            at: "2026-11-20T08:00:00Z".parse().unwrap(),
            local_time: "2026-11-20T10:00:00+02:00".into(),
            daypart: crate::context::Daypart::Morning,
            weekday: "Fri".into(),
            weekend: false,
            cell: "891126d3a47ffff".into(),
            weather: None,
            personalised: false,
            model_version: model.into(),
            verdict: verdict.into(),
            reason: None,
            candidates: vec![
                TrainingCandidate {
                    offer_id: offer.into(),
                    category: "coffee".into(),
                    store_id: "s1".into(),
                    distance_m: 10.0,
                    affinity: None,
                    bought_category: false,
                    score: Some(0.5),
                    reason: (verdict == "suppressed").then(|| "capped".into()),
                    sent,
                    held_out,
                    opened,
                    redeemed,
                    purchased: false,
                },
                TrainingCandidate {
                    offer_id: "other".into(),
                    category: "bakery".into(),
                    store_id: "s1".into(),
                    distance_m: 10.0,
                    affinity: None,
                    bought_category: false,
                    score: None,
                    reason: Some("weather".into()),
                    sent: false,
                    held_out: false,
                    opened: false,
                    redeemed: false,
                    purchased: false,
                },
            ],
        }
    }

    #[test]
    fn counts_rates_and_lift_per_offer_and_model() {
        let mut rs = Vec::new();
        // Champion, latte: 10 sent (4 opened, 3 redeemed), 5 held out (1 redeemed), 2 capped.
        for i in 0..10 {
            rs.push(rec("latte", "champ", "sent", i < 4, i < 3));
        }
        for i in 0..5 {
            rs.push(rec("latte", "champ", "held_out", false, i < 1));
        }
        for _ in 0..2 {
            rs.push(rec("latte", "champ", "suppressed", false, false));
        }
        // Challenger, latte: 4 sent, 2 opened, 2 redeemed; no holdout.
        for i in 0..4 {
            rs.push(rec("latte", "chall", "sent", i < 2, i < 2));
        }
        let r = results(&rs);
        assert_eq!(r.by_offer.len(), 2);
        let champ = &r
            .by_offer
            .iter()
            .find(|o| o.model_version == "champ")
            .unwrap()
            .tally;
        assert_eq!(
            (champ.decisions, champ.sent, champ.held_out, champ.opened),
            (17, 10, 5, 4)
        );
        assert_eq!((champ.redeemed_sent, champ.redeemed_held_out), (3, 1));
        assert_eq!(champ.open_rate, Some(0.4));
        assert_eq!(champ.conversion_sent, Some(0.3));
        assert_eq!(champ.conversion_held_out, Some(0.2));
        assert!((champ.lift.unwrap() - 0.1).abs() < 1e-12);
        let chall = &r
            .by_model
            .iter()
            .find(|m| m.model_version == "chall")
            .unwrap()
            .tally;
        assert_eq!(
            (chall.sent, chall.opened, chall.open_rate),
            (4, 2, Some(0.5))
        );
        // No holdout: no held-out rate and no lift, rather than a made-up zero.
        assert_eq!((chall.conversion_held_out, chall.lift), (None, None));
        assert_eq!(r.by_model.len(), 2);
        assert_eq!(
            r.by_model[0].tally.decisions + r.by_model[1].tally.decisions,
            21
        );
    }
}
