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

/// What one arm of a campaign (or of one of its variants) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Arm {
    /// Decisions in the arm (each a user at a store at a moment the campaign chose).
    pub n: u64,
    /// Pushes opened (treated arm only).
    pub opened: u64,
    /// Decisions followed by a redemption of the offer within the window.
    pub redeemed: u64,
    /// Decisions followed by a purchase in the offer's category within the window.
    pub purchased: u64,
}

/// Treated against held out on one outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lift {
    /// Rate in the treated arm.
    pub treated_rate: Option<f64>,
    /// Rate in the held-out arm.
    pub held_out_rate: Option<f64>,
    /// The difference with its 95 % interval (Newcombe's hybrid score).
    pub difference: Option<crate::stats::Difference>,
    /// `significant` (the interval excludes 0), `not_significant`, or `too_small` (an arm
    /// under 30, or fewer than 5 expected successes or failures in one: the interval is
    /// shown but not to be concluded from).
    pub verdict: &'static str,
}

fn lift(treated_k: u64, treated_n: u64, held_k: u64, held_n: u64) -> Lift {
    let rate = |k: u64, n: u64| (n > 0).then(|| k as f64 / n as f64);
    let difference = crate::stats::newcombe(treated_k, treated_n, held_k, held_n);
    let pooled = (treated_k + held_k) as f64 / (treated_n + held_n).max(1) as f64;
    let small = [treated_n, held_n]
        .iter()
        .any(|&n| n < 30 || (n as f64) * pooled < 5.0 || (n as f64) * (1.0 - pooled) < 5.0);
    let verdict = match difference {
        _ if small => "too_small",
        Some(d) if d.low > 0.0 || d.high < 0.0 => "significant",
        _ => "not_significant",
    };
    Lift {
        treated_rate: rate(treated_k, treated_n),
        held_out_rate: rate(held_k, held_n),
        difference,
        verdict,
    }
}

/// One campaign's results, or one variant's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignGroup {
    /// Pushes sent.
    pub treated: Arm,
    /// Held out by the campaign's holdout.
    pub held_out: Arm,
    /// Held out by the global control group.
    pub global_control: Arm,
    /// Redemptions, treated against held out.
    pub redemption_lift: Lift,
    /// Purchases in the offer's category, treated against held out.
    pub purchase_lift: Lift,
}

/// A campaign's results from its logged decisions and their users' outcomes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignResults {
    /// The whole campaign.
    pub all: CampaignGroup,
    /// Per variant (decisions without a variant under `-`).
    pub variants: BTreeMap<String, CampaignGroup>,
    /// Do the variants' treated purchase rates differ? Pearson's chi-squared across them
    /// (with two or more variants that sent).
    pub variants_purchase_test: Option<crate::stats::ChiSquared>,
    /// The same for redemptions.
    pub variants_redemption_test: Option<crate::stats::ChiSquared>,
}

/// Results of campaign `campaign` over `decisions` (any order, any users) and `outcomes`:
/// each decision that sent or held out one of its offers, with what its user did within
/// `window` after it.
pub fn campaign_results(
    campaign: &crate::ids::Id,
    decisions: &[crate::decision::Decision],
    outcomes: &[crate::ports::OutcomeRecord],
    window: chrono::Duration,
) -> CampaignResults {
    use crate::decision::{Reason, Verdict};
    use crate::ports::OutcomeKind;
    use std::collections::HashMap;
    let mut by_user: HashMap<&crate::ids::Id, Vec<&crate::ports::OutcomeRecord>> = HashMap::new();
    for o in outcomes {
        by_user.entry(&o.user_id).or_default().push(o);
    }
    #[derive(Default)]
    struct Acc {
        arms: [Arm; 3],
    }
    let mut all = Acc::default();
    let mut variants: BTreeMap<String, Acc> = BTreeMap::new();
    for d in decisions {
        if d.campaign_id.as_ref() != Some(campaign) {
            continue;
        }
        let arm = match (&d.verdict, &d.reason) {
            (Verdict::Sent, _) => 0,
            (Verdict::HeldOut, Some(Reason::GlobalControl)) => 2,
            (Verdict::HeldOut, _) => 1,
            _ => continue,
        };
        let Some(offer) = d.offer_id.as_ref() else {
            continue;
        };
        let category = d
            .candidates
            .iter()
            .find(|c| &c.offer_id == offer)
            .map(|c| c.category.as_str());
        let mine = by_user.get(&d.user_id).map(Vec::as_slice).unwrap_or(&[]);
        let within = |o: &&&crate::ports::OutcomeRecord| o.at >= d.at && o.at - d.at <= window;
        let opened = arm == 0
            && mine.iter().any(|o| {
                o.kind == OutcomeKind::Opened
                    && o.delivery_id.is_some()
                    && o.delivery_id == d.delivery_id
            });
        let redeemed = mine.iter().filter(within).any(|o| {
            o.kind == OutcomeKind::Redeemed
                && (o.offer_id.as_ref() == Some(offer)
                    || (o.delivery_id.is_some() && o.delivery_id == d.delivery_id))
        });
        let purchased = mine.iter().filter(within).any(|o| {
            o.kind == OutcomeKind::Purchased
                && o.category.as_deref().is_some_and(|c| Some(c) == category)
        });
        let variant = d
            .variant_id
            .as_ref()
            .map_or("-", |v| v.as_str())
            .to_string();
        for acc in [&mut all, variants.entry(variant).or_default()] {
            let a = &mut acc.arms[arm];
            a.n += 1;
            a.opened += u64::from(opened);
            a.redeemed += u64::from(redeemed);
            a.purchased += u64::from(purchased);
        }
    }
    let group = |acc: &Acc| {
        let [t, h, g] = acc.arms;
        CampaignGroup {
            treated: t,
            held_out: h,
            global_control: g,
            redemption_lift: lift(t.redeemed, t.n, h.redeemed, h.n),
            purchase_lift: lift(t.purchased, t.n, h.purchased, h.n),
        }
    };
    let treated: Vec<Arm> = variants.values().map(|a| a.arms[0]).collect();
    CampaignResults {
        all: group(&all),
        variants_purchase_test: crate::stats::chi_squared(
            &treated
                .iter()
                .map(|a| (a.purchased, a.n))
                .collect::<Vec<_>>(),
        ),
        variants_redemption_test: crate::stats::chi_squared(
            &treated
                .iter()
                .map(|a| (a.redeemed, a.n))
                .collect::<Vec<_>>(),
        ),
        variants: variants
            .iter()
            .map(|(k, a)| (k.clone(), group(a)))
            .collect(),
    }
}

#[cfg(test)]
mod campaign_tests {
    use super::*;
    use crate::decision::{Candidate, Decision, Reason, Verdict};
    use crate::ids::Id;
    use crate::ports::{OutcomeKind, OutcomeRecord};
    use chrono::{DateTime, Duration, Utc};

    fn id(s: &str) -> Id {
        Id::parse(s).unwrap()
    }

    fn t0() -> DateTime<Utc> {
        "2026-11-20T10:00:00Z".parse().unwrap()
    }

    fn decision(user: &str, verdict: Verdict, reason: Option<Reason>, variant: &str) -> Decision {
        Decision {
            event_id: id(&format!("e-{user}")),
            user_id: id(user),
            at: t0(),
            verdict,
            store_id: Some(id("s1")),
            offer_id: Some(id("umbrellas")),
            score: Some(0.5),
            reason,
            context: None,
            candidates: vec![Candidate {
                store_id: id("s1"),
                offer_id: id("umbrellas"),
                category: "umbrella".into(),
                distance_m: 10.0,
                score: Some(0.5),
                reason: None,
                affinity: None,
                bought_category: false,
            }],
            model_version: "m".into(),
            delivery_id: Some(format!("d-{user}")),
            personalised: false,
            presence: Vec::new(),
            campaign_id: Some(id("rain")),
            variant_id: (!variant.is_empty()).then(|| id(variant)),
            catalog_version: None,
            deferred_until: None,
        }
    }

    fn outcome(user: &str, kind: OutcomeKind, hours: i64, category: &str) -> OutcomeRecord {
        OutcomeRecord {
            event_id: id(&format!("o-{user}-{hours}-{category}")),
            user_id: id(user),
            at: t0() + Duration::hours(hours),
            kind,
            offer_id: (kind != OutcomeKind::Purchased).then(|| id("umbrellas")),
            category: Some(category.into()),
            delivery_id: (kind == OutcomeKind::Opened).then(|| format!("d-{user}")),
        }
    }

    /// 40 treated (20 in each of variants a and b), 40 held out, 10 in the global control
    /// group. Treated: 12 redeem (a 9, b 3), 10 buy an umbrella, 20 open. Held out: 2
    /// redeem, 4 buy. Outcomes outside the 72 h window, of another category, before the
    /// decision or of another campaign's decisions count for nothing.
    #[test]
    fn a_campaign_is_counted_per_arm_and_variant_with_its_intervals() {
        let mut ds = Vec::new();
        let mut os = Vec::new();
        for i in 0..40 {
            let u = format!("t{i}");
            ds.push(decision(
                &u,
                Verdict::Sent,
                None,
                if i < 20 { "a" } else { "b" },
            ));
            if i < 9 || (20..23).contains(&i) {
                os.push(outcome(&u, OutcomeKind::Redeemed, 2, "umbrella"));
            }
            if i % 4 == 0 {
                os.push(outcome(&u, OutcomeKind::Purchased, 24, "umbrella"));
            }
            if i % 2 == 0 {
                os.push(outcome(&u, OutcomeKind::Opened, 0, "umbrella"));
            }
            // Too late, another category, before the decision: not counted.
            os.push(outcome(&u, OutcomeKind::Purchased, 100, "umbrella"));
            os.push(outcome(&u, OutcomeKind::Purchased, 1, "coffee"));
            os.push(outcome(&u, OutcomeKind::Purchased, -1, "umbrella"));
        }
        for i in 0..40 {
            let u = format!("h{i}");
            let held = Reason::HeldOut {
                campaign: "rain".into(),
            };
            ds.push(decision(&u, Verdict::HeldOut, Some(held), "a"));
            if i < 2 {
                os.push(outcome(&u, OutcomeKind::Redeemed, 3, "umbrella"));
            }
            if i < 4 {
                os.push(outcome(&u, OutcomeKind::Purchased, 30, "umbrella"));
            }
        }
        for i in 0..10 {
            let u = format!("g{i}");
            ds.push(decision(
                &u,
                Verdict::HeldOut,
                Some(Reason::GlobalControl),
                "",
            ));
        }
        let mut other = decision("t0", Verdict::Sent, None, "a");
        other.campaign_id = Some(id("sunny"));
        ds.push(other);
        ds.push(decision("x", Verdict::Suppressed, None, "a"));

        let r = campaign_results(&id("rain"), &ds, &os, Duration::hours(72));
        let arm = |n, opened, redeemed, purchased| Arm {
            n,
            opened,
            redeemed,
            purchased,
        };
        assert_eq!(r.all.treated, arm(40, 20, 12, 10));
        assert_eq!(r.all.held_out, arm(40, 0, 2, 4));
        assert_eq!(r.all.global_control, arm(10, 0, 0, 0));
        assert_eq!(r.variants["a"].treated, arm(20, 10, 9, 5));
        assert_eq!(r.variants["b"].treated, arm(20, 10, 3, 5));
        assert_eq!(r.variants["-"].global_control.n, 10);

        // Redemptions: 0.30 against 0.05. By hand (Wilson 12/40 = 0.1806..0.4539, 2/40 =
        // 0.0138..0.1650): 0.25 - sqrt(0.1194² + 0.1150²) = 0.0842; 0.25 + sqrt(0.1539² +
        // 0.0362²) = 0.4081. Significant.
        let l = &r.all.redemption_lift;
        let d = l.difference.unwrap();
        assert!((d.difference - 0.25).abs() < 1e-12);
        assert!(
            (d.low - 0.0842).abs() < 5e-4 && (d.high - 0.4081).abs() < 5e-4,
            "{d:?}"
        );
        assert_eq!(l.verdict, "significant");
        // Purchases: 0.25 against 0.10; the interval holds 0 or not, as computed.
        let p = &r.all.purchase_lift;
        let pd = p.difference.unwrap();
        assert!((pd.difference - 0.15).abs() < 1e-12);
        assert_eq!(
            p.verdict,
            if pd.low > 0.0 {
                "significant"
            } else {
                "not_significant"
            }
        );
        // A variant's held-out arm of 20 is too small to conclude from.
        assert_eq!(r.variants["b"].redemption_lift.verdict, "too_small");
        // Variants a and b: 9/20 against 3/20 redeemed: chi-squared 4.286 on 1 df, p 0.0384
        // (expected 6 and 14 in each row).
        let c = r.variants_redemption_test.unwrap();
        assert!((c.statistic - 30.0 / 7.0).abs() < 1e-9, "{c:?}");
        assert!((c.p_value - 0.038_434).abs() < 1e-5, "{c:?}");
    }
}
