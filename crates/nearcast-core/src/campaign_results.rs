//! A campaign's results: what each arm did (treated, held out by the campaign, held out by
//! the global control group), the lift of treating with its 95 % interval, the funnel from
//! triggered to purchased, per store's local day, store and variant.
//!
//! Everything is counted in [`Cell`]s, one per (day, store, variant): the counts of one
//! cell add up, so any range of days and any breakdown is a sum of cells
//! ([`summarise`]). [`cells_from_logs`] computes the cells from the logged decisions and
//! outcomes (what `nearcast export` reads); the stores keep the same cells up to date in
//! each commit, so results need no scan of the logs.
//!
//! What counts, per decision of the campaign that sent a push or held one out (an
//! *exposure*), within the campaign's conversion window after it (`conversion.within_hours`,
//! default 72):
//! - `opened`: the push was opened (treated only; the open names its delivery);
//! - `visited`: the person entered a fence of one of the campaign's stores (a new visit,
//!   after the decision), treated or not: the visits a push brings;
//! - `redeemed`: a redemption of the offer (or of the code the push carried);
//! - `purchased`: a purchase in the offer's category; `revenue`: the amounts of all such
//!   purchases, per currency (each exposure's total, for Welch's interval).
//!
//! The funnel counts, per decision that considered one of the campaign's offers:
//! `triggered`, `eligible` (an offer of the campaign passed its rules and was scored), then
//! the arm it went to, or the reason it was not sent (`suppressed`, by reason code).

use crate::decision::{Decision, Reason, Verdict};
use crate::ids::Id;
use crate::ports::{OutcomeKind, OutcomeRecord};
use crate::stats::{Difference, Moments};
use chrono::{Datelike, Duration, NaiveDate};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The conversion window of a campaign without one.
pub const DEFAULT_WINDOW_HOURS: u32 = 72;

/// Where a count belongs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CellKey {
    /// The store's local day of the decision.
    pub day: NaiveDate,
    /// The store.
    pub store: String,
    /// The variant (`-` for none).
    pub variant: String,
}

/// Money of one currency over an arm's exposures: the sum, and the sum of the squares of
/// each exposure's total (for the variance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Money {
    /// Total.
    pub sum: f64,
    /// Sum over exposures of (that exposure's total)².
    pub sum_sq: f64,
}

/// What one arm did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// Exposures: decisions that sent (or held out) one of the campaign's offers.
    pub n: u64,
    /// Pushes opened.
    pub opened: u64,
    /// Exposures followed by a visit to one of the campaign's stores.
    pub visited: u64,
    /// Exposures followed by a redemption.
    pub redeemed: u64,
    /// Exposures followed by a purchase in the offer's category.
    pub purchased: u64,
    /// Revenue of those purchases, per currency.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revenue: BTreeMap<String, Money>,
}

/// Money after a subtraction, to a millionth: what remains of sums of amounts in cents
/// is exact to that, and no float residue shows.
fn settle(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

impl Arm {
    /// Takes away `o`'s counts, which `self` holds (a month less some of its days).
    fn sub(&mut self, o: &Arm) {
        self.n = self.n.saturating_sub(o.n);
        self.opened = self.opened.saturating_sub(o.opened);
        self.visited = self.visited.saturating_sub(o.visited);
        self.redeemed = self.redeemed.saturating_sub(o.redeemed);
        self.purchased = self.purchased.saturating_sub(o.purchased);
        for (c, m) in &o.revenue {
            if let Some(e) = self.revenue.get_mut(c) {
                e.sum = settle(e.sum - m.sum);
                e.sum_sq = settle(e.sum_sq - m.sum_sq);
                if e.sum == 0.0 && e.sum_sq == 0.0 {
                    self.revenue.remove(c);
                }
            }
        }
    }

    fn add(&mut self, o: &Arm) {
        self.n += o.n;
        self.opened += o.opened;
        self.visited += o.visited;
        self.redeemed += o.redeemed;
        self.purchased += o.purchased;
        for (c, m) in &o.revenue {
            let e = self.revenue.entry(c.clone()).or_default();
            e.sum += m.sum;
            e.sum_sq += m.sum_sq;
        }
    }
}

/// The counts of one (day, store, variant).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Sent a push.
    pub treated: Arm,
    /// Held out by the campaign's holdout.
    pub held_out: Arm,
    /// Held out by the global control group.
    pub global_control: Arm,
    /// Decisions that considered one of the campaign's offers.
    pub triggered: u64,
    /// Of those, decisions where one of them passed its rules.
    pub eligible: u64,
    /// Decisions that considered the campaign and neither sent nor held out, by reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub suppressed: BTreeMap<String, u64>,
}

impl Cell {
    /// Takes away another cell's counts, which this one holds (a month's cell less some of
    /// its days); counts that reach zero are dropped.
    pub fn sub(&mut self, o: &Cell) {
        self.treated.sub(&o.treated);
        self.held_out.sub(&o.held_out);
        self.global_control.sub(&o.global_control);
        self.triggered = self.triggered.saturating_sub(o.triggered);
        self.eligible = self.eligible.saturating_sub(o.eligible);
        for (r, n) in &o.suppressed {
            if let Some(e) = self.suppressed.get_mut(r) {
                *e = e.saturating_sub(*n);
                if *e == 0 {
                    self.suppressed.remove(r);
                }
            }
        }
    }

    /// Adds another cell's counts.
    pub fn add(&mut self, o: &Cell) {
        self.treated.add(&o.treated);
        self.held_out.add(&o.held_out);
        self.global_control.add(&o.global_control);
        self.triggered += o.triggered;
        self.eligible += o.eligible;
        for (r, n) in &o.suppressed {
            *self.suppressed.entry(r.clone()).or_default() += n;
        }
    }

    /// The arm of an exposure: 0 treated, 1 held out, 2 global control.
    pub fn arm_mut(&mut self, arm: ArmKind) -> &mut Arm {
        match arm {
            ArmKind::Treated => &mut self.treated,
            ArmKind::HeldOut => &mut self.held_out,
            ArmKind::GlobalControl => &mut self.global_control,
        }
    }
}

impl Cell {
    /// The cell as named counters (what the stores keep, one row or attribute each; zero
    /// counts left out): `tr` triggered, `el` eligible, `s.<reason>` suppressed, and per
    /// arm (`t` treated, `h` held out, `g` global control) `.n`, `.op`, `.vi`, `.re`, `.pu`,
    /// `.rv.<currency>` (revenue) and `.rq.<currency>` (its sum of squares).
    pub fn counters(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        let mut put = |name: String, x: f64| {
            if x != 0.0 {
                out.push((name, x));
            }
        };
        put("tr".into(), self.triggered as f64);
        put("el".into(), self.eligible as f64);
        for (r, x) in &self.suppressed {
            put(format!("s.{r}"), *x as f64);
        }
        for (p, a) in [
            ("t", &self.treated),
            ("h", &self.held_out),
            ("g", &self.global_control),
        ] {
            for (name, x) in [
                ("n", a.n),
                ("op", a.opened),
                ("vi", a.visited),
                ("re", a.redeemed),
                ("pu", a.purchased),
            ] {
                put(format!("{p}.{name}"), x as f64);
            }
            for (cur, m) in &a.revenue {
                put(format!("{p}.rv.{cur}"), m.sum);
                put(format!("{p}.rq.{cur}"), m.sum_sq);
            }
        }
        out
    }

    /// Adds one named counter of [`Cell::counters`] (an unknown name is ignored).
    pub fn add_counter(&mut self, name: &str, x: f64) {
        let u = x.max(0.0).round() as u64;
        let mut parts = name.split('.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("tr"), None, _) => self.triggered += u,
            (Some("el"), None, _) => self.eligible += u,
            (Some("s"), Some(r), None) => *self.suppressed.entry(r.to_string()).or_default() += u,
            (Some(arm @ ("t" | "h" | "g")), Some(what), cur) => {
                let a = match arm {
                    "t" => &mut self.treated,
                    "h" => &mut self.held_out,
                    _ => &mut self.global_control,
                };
                match (what, cur) {
                    ("n", None) => a.n += u,
                    ("op", None) => a.opened += u,
                    ("vi", None) => a.visited += u,
                    ("re", None) => a.redeemed += u,
                    ("pu", None) => a.purchased += u,
                    ("rv", Some(c)) => a.revenue.entry(c.to_string()).or_default().sum += x,
                    ("rq", Some(c)) => a.revenue.entry(c.to_string()).or_default().sum_sq += x,
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// Which arm an exposure is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArmKind {
    /// Sent.
    Treated,
    /// Held out by the campaign.
    HeldOut,
    /// Held out by the global control group.
    GlobalControl,
}

impl ArmKind {
    /// The arm of a decision of the campaign, if it sent or held out.
    pub fn of(d: &Decision) -> Option<ArmKind> {
        match (&d.verdict, &d.reason) {
            (Verdict::Sent, _) => Some(ArmKind::Treated),
            (Verdict::HeldOut, Some(Reason::GlobalControl)) => Some(ArmKind::GlobalControl),
            (Verdict::HeldOut, _) => Some(ArmKind::HeldOut),
            _ => None,
        }
    }
}

/// The store's local day of a decision (UTC's when it has no context).
pub fn local_day(d: &Decision) -> NaiveDate {
    d.context
        .as_ref()
        .and_then(|c| c.local_time.get(..10))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| d.at.date_naive())
}

/// What a decision adds to a campaign's funnel: the cell it belongs to, and either the arm
/// of its exposure or the reason the campaign was not sent. `None` when no offer of the
/// campaign was considered.
pub struct FunnelStep {
    /// Where it counts.
    pub key: CellKey,
    /// One of the campaign's offers passed its rules.
    pub eligible: bool,
    /// The exposure's arm, or the reason nothing was sent.
    pub result: Result<ArmKind, String>,
}

/// The funnel step of decision `d` for `campaign`, whose offers are `offers`.
pub fn funnel_step(
    campaign: &crate::campaign::Campaign,
    offers: &HashSet<Id>,
    d: &Decision,
) -> Option<FunnelStep> {
    let mine: Vec<_> = d
        .candidates
        .iter()
        .filter(|c| offers.contains(&c.offer_id))
        .collect();
    if mine.is_empty() {
        return None;
    }
    let best = mine
        .iter()
        .filter(|c| c.score.is_some())
        .max_by(|a, b| {
            a.score
                .partial_cmp(&b.score)
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .unwrap_or(&mine[0]);
    let chosen = d.campaign_id.as_ref() == Some(&campaign.id);
    let arm = if chosen { ArmKind::of(d) } else { None };
    let store = match (&d.store_id, chosen) {
        (Some(s), true) => s.to_string(),
        _ => best.store_id.to_string(),
    };
    // The decision's own variant when the campaign was chosen; else the one the person
    // would have been drawn (the draw is stable per person and campaign).
    let variant = if chosen {
        d.variant_id.as_ref()
    } else {
        campaign.variant_for(&d.user_id).map(|v| &v.id)
    }
    .map_or_else(|| "-".to_string(), Id::to_string);
    let result = match arm {
        Some(a) => Ok(a),
        None => {
            let chosen_mine = d.offer_id.as_ref().is_some_and(|o| offers.contains(o));
            let reason = if chosen_mine {
                d.reason.as_ref()
            } else {
                best.reason.as_ref()
            };
            // An offer that passed every rule and lost to a better one has no reason.
            Err(reason
                .map_or("another_offer_chosen", Reason::code)
                .to_string())
        }
    };
    Some(FunnelStep {
        key: CellKey {
            day: local_day(d),
            store,
            variant,
        },
        eligible: mine.iter().any(|c| c.score.is_some()),
        result,
    })
}

/// The conversion window of `campaign`.
pub fn window_of(campaign: &crate::campaign::Campaign) -> Duration {
    Duration::hours(i64::from(
        campaign
            .conversion
            .as_ref()
            .map_or(DEFAULT_WINDOW_HOURS, |c| c.within_hours),
    ))
}

/// The cells of `campaign` (whose offers are `offers`) from logged decisions and outcomes,
/// in any order. Visits are not in the logs (no trail of places is kept): `visited` is 0
/// here, and counted only by the stores' cells.
pub fn cells_from_logs(
    campaign: &crate::campaign::Campaign,
    offers: &HashSet<Id>,
    decisions: &[Decision],
    outcomes: &[OutcomeRecord],
) -> BTreeMap<CellKey, Cell> {
    let window = window_of(campaign);
    let mut by_user: HashMap<&Id, Vec<&OutcomeRecord>> = HashMap::new();
    for o in outcomes {
        by_user.entry(&o.user_id).or_default().push(o);
    }
    let mut cells: BTreeMap<CellKey, Cell> = BTreeMap::new();
    for d in decisions {
        let Some(step) = funnel_step(campaign, offers, d) else {
            continue;
        };
        let cell = cells.entry(step.key).or_default();
        cell.triggered += 1;
        cell.eligible += u64::from(step.eligible);
        let arm = match step.result {
            Ok(a) => a,
            Err(reason) => {
                *cell.suppressed.entry(reason).or_default() += 1;
                continue;
            }
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
        let within = |o: &&&OutcomeRecord| o.at >= d.at && o.at - d.at <= window;
        let a = cell.arm_mut(arm);
        a.n += 1;
        let opened = arm == ArmKind::Treated
            && mine.iter().any(|o| {
                o.kind == OutcomeKind::Opened
                    && o.delivery_id.is_some()
                    && o.delivery_id == d.delivery_id
            });
        a.opened += u64::from(opened);
        a.redeemed += u64::from(
            mine.iter()
                .filter(within)
                .any(|o| redeems(o, offer, d.delivery_id.as_deref())),
        );
        let bought: Vec<_> = mine
            .iter()
            .filter(within)
            .filter(|o| buys(o, category))
            .collect();
        a.purchased += u64::from(!bought.is_empty());
        let mut money: BTreeMap<&str, f64> = BTreeMap::new();
        for o in bought {
            if let (Some(x), Some(c)) = (o.detail.amount, o.detail.currency.as_deref()) {
                *money.entry(c).or_default() += x;
            }
        }
        for (c, x) in money {
            let m = a.revenue.entry(c.to_string()).or_default();
            m.sum += x;
            m.sum_sq += x * x;
        }
    }
    cells
}

/// A decision of a defined campaign that sent or held out, remembered in the person's state
/// until the campaign's conversion window closes, so that what they do next counts in the
/// decision's cell, once per outcome. Holds no place but the store it was decided at.
///
/// It is part of the person's record, which most fixes rewrite, so it is kept small: short
/// field names, times in epoch microseconds, the offer's category looked up in the catalog
/// rather than copied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exposure {
    /// The campaign.
    #[serde(rename = "c")]
    pub campaign_id: Id,
    /// Its cell's day.
    #[serde(rename = "d")]
    pub day: NaiveDate,
    /// Its cell's store.
    #[serde(rename = "s")]
    pub store: Id,
    /// Its cell's variant (`-` for none).
    #[serde(rename = "v")]
    pub variant: String,
    /// Its arm.
    #[serde(rename = "a")]
    pub arm: ArmKind,
    /// The decision's time.
    #[serde(rename = "t", with = "chrono::serde::ts_microseconds")]
    pub at: chrono::DateTime<chrono::Utc>,
    /// The end of its conversion window.
    #[serde(rename = "u", with = "chrono::serde::ts_microseconds")]
    pub until: chrono::DateTime<chrono::Utc>,
    /// The offer sent or held out.
    #[serde(rename = "o")]
    pub offer_id: Id,
    /// The delivery, for a push.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// Outcomes counted already: [`OPENED`], [`VISITED`], [`REDEEMED`], [`PURCHASED`].
    #[serde(rename = "x", default, skip_serializing_if = "is_zero")]
    pub done: u8,
    /// Revenue counted so far, per currency.
    #[serde(rename = "r", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revenue: BTreeMap<String, f64>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(x: &u8) -> bool {
    *x == 0
}

impl Exposure {
    /// Its cell.
    pub fn key(&self) -> CellKey {
        CellKey {
            day: self.day,
            store: self.store.to_string(),
            variant: self.variant.clone(),
        }
    }
}

/// [`Exposure::done`]: the push was opened.
pub const OPENED: u8 = 1;
/// [`Exposure::done`]: a visit followed.
pub const VISITED: u8 = 2;
/// [`Exposure::done`]: a redemption followed.
pub const REDEEMED: u8 = 4;
/// [`Exposure::done`]: a purchase followed.
pub const PURCHASED: u8 = 8;

/// How long past its window an exposure is kept for outcomes that arrive late.
pub const EXPOSURE_GRACE: Duration = Duration::days(2);

/// The most exposures a person's state remembers (the newest).
pub const MAX_EXPOSURES: usize = 32;

/// The most recent redemptions and purchases a person's state remembers for decisions that
/// arrive after them (the newest): more than this within [`crate::decision::MAX_FIX_AGE`]
/// before a delayed fix, and the oldest count in the logs' recomputation only.
pub const MAX_RECENT_OUTCOMES: usize = 16;

/// A campaign's cells, by key.
pub type Cells = BTreeMap<CellKey, Cell>;

/// Whether `key` is in the days from `from` to `to` (inclusive; none: unbounded).
pub fn in_range(key: &CellKey, from: Option<NaiveDate>, to: Option<NaiveDate>) -> bool {
    !(from.is_some_and(|f| key.day < f) || to.is_some_and(|t| key.day > t))
}

/// What one commit adds to the cells: (campaign, cell) -> counts to add.
pub type CellDeltas = BTreeMap<(Id, CellKey), Cell>;

fn delta<'a>(out: &'a mut CellDeltas, e: &Exposure) -> &'a mut Arm {
    out.entry((e.campaign_id.clone(), e.key()))
        .or_default()
        .arm_mut(e.arm)
}

/// Counts an outcome against the exposures it follows (within their windows), each kind
/// once per exposure; revenue adds up. `category` gives an offer's category (purchases in
/// it count).
pub fn account_outcome(
    exposures: &mut [Exposure],
    o: &OutcomeRecord,
    category: &dyn Fn(&Id) -> Option<String>,
    out: &mut CellDeltas,
) {
    for e in exposures.iter_mut() {
        // An open names its push's delivery: it counts whatever its device clock says, as
        // in the logs' recomputation; the other outcomes count within the window.
        if o.kind != OutcomeKind::Opened && (o.at < e.at || o.at > e.until) {
            continue;
        }
        match o.kind {
            OutcomeKind::Opened => {
                if e.arm == ArmKind::Treated
                    && e.done & OPENED == 0
                    && o.delivery_id.is_some()
                    && o.delivery_id == e.delivery_id
                {
                    e.done |= OPENED;
                    delta(out, e).opened += 1;
                }
            }
            OutcomeKind::Redeemed => {
                if e.done & REDEEMED == 0 && redeems(o, &e.offer_id, e.delivery_id.as_deref()) {
                    e.done |= REDEEMED;
                    delta(out, e).redeemed += 1;
                }
            }
            OutcomeKind::Purchased => {
                if !buys(o, category(&e.offer_id).as_deref()) {
                    continue;
                }
                if e.done & PURCHASED == 0 {
                    e.done |= PURCHASED;
                    delta(out, e).purchased += 1;
                }
                if let (Some(x), Some(c)) = (o.detail.amount, o.detail.currency.as_deref()) {
                    let before = e.revenue.get(c).copied().unwrap_or(0.0);
                    let after = before + x;
                    e.revenue.insert(c.to_string(), after);
                    let m = delta(out, e).revenue.entry(c.to_string()).or_default();
                    m.sum += x;
                    m.sum_sq += after * after - before * before;
                }
            }
        }
    }
}

/// What one event of a person adds to the cells, and to the exposures in their `state`:
/// enters into a campaign's stores count as visits of its earlier exposures, an outcome
/// counts against the exposures it follows, and a decision adds to the funnel of every
/// defined campaign it considered (and, if it sent or held out, a new exposure). The
/// engine calls it for each event it commits, and the deltas go in the same commit.
pub fn account(
    catalog: &crate::catalog::Catalog,
    state: &mut crate::state::UserState,
    at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    decision: Option<&Decision>,
    outcome: Option<&OutcomeRecord>,
    out: &mut CellDeltas,
) {
    // Kept a while past their window: events of a person arrive out of order (batches,
    // retries), and one stamped in the window may come after one stamped past it.
    state.exposures.retain(|e| e.until + EXPOSURE_GRACE >= at);
    // A fix is decided only while it is at most MAX_FIX_AGE old by the host's clock, so an
    // outcome stamped earlier than that can follow no decision still to come.
    let oldest = now - crate::decision::MAX_FIX_AGE;
    state.recent_outcomes.retain(|o| o.at >= oldest);
    let category = |offer: &Id| {
        catalog
            .offer_pos
            .get(offer)
            .map(|&k| catalog.offers[k as usize].category.clone())
    };
    if let Some(d) = decision {
        for enter in d
            .presence
            .iter()
            .filter(|p| p.transition == crate::decision::PresenceTransition::Enter)
        {
            let Some(p) = catalog.store_position(&enter.store_id) else {
                continue;
            };
            for e in state.exposures.iter_mut() {
                if e.done & VISITED != 0 || enter.since <= e.at || enter.since > e.until {
                    continue;
                }
                let campaign_store = catalog
                    .offers_at(p)
                    .any(|k| catalog.offers[k as usize].campaign_id == e.campaign_id);
                if campaign_store {
                    e.done |= VISITED;
                    delta(out, e).visited += 1;
                }
            }
        }
    }
    if let Some(o) = outcome {
        account_outcome(&mut state.exposures, o, &category, out);
        if o.kind != OutcomeKind::Opened && o.at >= oldest {
            // What counting reads, nothing more (no order, store or code).
            state.recent_outcomes.push(OutcomeRecord {
                detail: crate::ports::OutcomeDetail {
                    amount: o.detail.amount,
                    currency: o.detail.currency.clone(),
                    ..Default::default()
                },
                ..o.clone()
            });
            let extra = state
                .recent_outcomes
                .len()
                .saturating_sub(MAX_RECENT_OUTCOMES);
            state.recent_outcomes.drain(..extra);
        }
    }
    let Some(d) = decision else {
        return;
    };
    let first_new = state.exposures.len();
    // Every defined campaign among the candidates, with its offers among them.
    let mut campaigns: BTreeMap<&Id, HashSet<Id>> = BTreeMap::new();
    for c in &d.candidates {
        let Some(&k) = catalog.offer_pos.get(&c.offer_id) else {
            continue;
        };
        let cid = &catalog.offers[k as usize].campaign_id;
        if catalog.campaign(cid).is_some() {
            campaigns.entry(cid).or_default().insert(c.offer_id.clone());
        }
    }
    for (cid, offers) in campaigns {
        let Some(campaign) = catalog.campaign(cid) else {
            continue;
        };
        let Some(step) = funnel_step(campaign, &offers, d) else {
            continue;
        };
        let cell = out.entry((cid.clone(), step.key.clone())).or_default();
        cell.triggered += 1;
        cell.eligible += u64::from(step.eligible);
        match step.result {
            Err(reason) => *cell.suppressed.entry(reason).or_default() += 1,
            Ok(arm) => {
                cell.arm_mut(arm).n += 1;
                let Some(offer) = d.offer_id.clone() else {
                    continue;
                };
                let Ok(store) = Id::parse(&step.key.store) else {
                    continue;
                };
                state.exposures.push(Exposure {
                    campaign_id: cid.clone(),
                    day: step.key.day,
                    store,
                    variant: step.key.variant,
                    arm,
                    at: d.at,
                    until: d.at + window_of(campaign),
                    offer_id: offer,
                    delivery_id: d.delivery_id.clone(),
                    done: 0,
                    revenue: BTreeMap::new(),
                });
            }
        }
    }
    // The new exposures count the outcomes that came before them but happened after.
    if first_new < state.exposures.len() {
        for o in &state.recent_outcomes {
            account_outcome(&mut state.exposures[first_new..], o, &category, out);
        }
    }
    let extra = state.exposures.len().saturating_sub(MAX_EXPOSURES);
    state.exposures.drain(..extra);
}

/// The store of a day's roll-up cell: every store of the campaign on that day (no store id
/// can be `*`).
pub const ALL_STORES: &str = "*";

/// The three kinds of cell the stores keep, each added to in the same commit, so that every
/// answer reads few of them:
/// - [`CellLevel::Days`]: a day's roll-up over all stores (store [`ALL_STORES`]), per
///   variant: a whole campaign, a range of days, a breakdown by day or variant read a row
///   per day and variant;
/// - [`CellLevel::StoreDays`]: the cells themselves, per store and day;
/// - [`CellLevel::StoreMonths`]: per store and calendar month (keyed by the month's first
///   day): a breakdown by store reads whole months from these and only the days at either
///   end of the range from the day cells ([`store_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellLevel {
    /// A day's roll-up over all stores.
    Days,
    /// One store, one day.
    StoreDays,
    /// One store, one calendar month (its first day).
    StoreMonths,
}

/// The first day of `d`'s month.
pub fn month_of(d: NaiveDate) -> NaiveDate {
    d.with_day(1).expect("every month has a first day")
}

/// What a commit adds to the cells, as the stores take them: per (campaign, level, key).
pub type LevelDeltas = Vec<(Id, CellLevel, CellKey, Cell)>;

/// The deltas of a commit as the stores take them: each cell, its day's roll-up over all
/// stores and its store's month.
pub fn with_rollups(deltas: CellDeltas) -> LevelDeltas {
    let mut out: BTreeMap<(Id, CellLevel, CellKey), Cell> = BTreeMap::new();
    for ((c, k), v) in deltas {
        let all = CellKey {
            store: ALL_STORES.to_string(),
            ..k.clone()
        };
        let month = CellKey {
            day: month_of(k.day),
            ..k.clone()
        };
        out.entry((c.clone(), CellLevel::Days, all))
            .or_default()
            .add(&v);
        out.entry((c.clone(), CellLevel::StoreMonths, month))
            .or_default()
            .add(&v);
        out.entry((c, CellLevel::StoreDays, k)).or_default().add(&v);
    }
    out.into_iter().map(|((c, l, k), v)| (c, l, k, v)).collect()
}

/// Adds `deltas` to `cells` (what a store does in a commit).
pub fn apply(cells: &mut BTreeMap<(Id, CellLevel, CellKey), Cell>, deltas: &LevelDeltas) {
    for (c, l, k, d) in deltas {
        cells.entry((c.clone(), *l, k.clone())).or_default().add(d);
    }
}

/// How a breakdown by store reads the days from `from` to `to` (inclusive; none:
/// unbounded): a run of calendar months from the month cells, plus some day ranges and
/// less others from the day cells. A month only partly in the range is read as its days
/// when they are at most half of it, else as the month less the days outside the range,
/// so no more than half a month of days is read at either end (at most 31 days in all,
/// whatever the range's length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePlan {
    /// The months read, if any: (first, last), each a month's first day (none: unbounded).
    pub months: Option<(Option<NaiveDate>, Option<NaiveDate>)>,
    /// Ranges of days added (inclusive).
    pub days: Vec<(NaiveDate, NaiveDate)>,
    /// Ranges of days taken away (inclusive): days of a month read whole that are outside
    /// the range.
    pub minus: Vec<(NaiveDate, NaiveDate)>,
}

/// The last day of `d`'s month.
fn month_end(d: NaiveDate) -> NaiveDate {
    month_of(d) + chrono::Months::new(1) - Duration::days(1)
}

/// See [`StorePlan`].
pub fn store_plan(from: Option<NaiveDate>, to: Option<NaiveDate>) -> StorePlan {
    let mut plan = StorePlan {
        months: None,
        days: Vec::new(),
        minus: Vec::new(),
    };
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return plan;
    }
    // The pieces of the range in months it covers only partly: at most one at each end
    // (one in all when the range lies inside a month).
    let mut pieces: Vec<(NaiveDate, NaiveDate)> = Vec::new();
    if let Some(f) = from
        && f.day() != 1
    {
        let end = to.map_or(month_end(f), |t| t.min(month_end(f)));
        pieces.push((f, end));
    }
    if let Some(t) = to
        && t != month_end(t)
    {
        let start = from.map_or(month_of(t), |f| f.max(month_of(t)));
        if pieces.last() != Some(&(start, t)) {
            pieces.push((start, t));
        }
    }
    // Months read whole: from the first day of `from`'s month (or the month after, if
    // `from` is in a piece) to the last (or the month before).
    let mut first = from.map(|f| {
        if f.day() == 1 {
            f
        } else {
            month_of(f) + chrono::Months::new(1)
        }
    });
    let mut last = to.map(|t| {
        if t == month_end(t) {
            month_of(t)
        } else {
            month_of(t) - chrono::Months::new(1)
        }
    });
    for (a, b) in pieces {
        let m = month_of(a);
        let (len, whole) = ((b - a).num_days() + 1, (month_end(a) - m).num_days() + 1);
        if len <= whole - len {
            plan.days.push((a, b));
            continue;
        }
        // The month less the days outside the piece; the month joins the run read whole.
        if m < a {
            plan.minus.push((m, a - Duration::days(1)));
        }
        if b < month_end(a) {
            plan.minus.push((b + Duration::days(1), month_end(a)));
        }
        first = first.map(|x| x.min(m));
        last = last.map(|x| x.max(m));
    }
    if first.zip(last).is_none_or(|(a, b)| a <= b) {
        plan.months = Some((first, last));
    }
    plan
}

/// A campaign's counts per store and variant on the days from `from` to `to`, read by
/// [`store_plan`]: months from the month cells, and days added or taken away from the day
/// cells. Each (store, variant) is one summed cell, keyed by the range's first day (or
/// the earliest date for an open start), which is what a breakdown by store sums.
///
/// # Errors
/// The store's error.
pub async fn store_cells(
    store: &(impl crate::ports::StateStore + ?Sized),
    campaign: &Id,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Cells, crate::ports::StoreError> {
    let plan = store_plan(from, to);
    let day = from.unwrap_or(NaiveDate::MIN);
    let mut out = Cells::new();
    let mut put = |cells: Cells, add: bool| {
        for (k, c) in cells {
            let key = CellKey { day, ..k };
            let e = out.entry(key).or_default();
            if add { e.add(&c) } else { e.sub(&c) }
        }
    };
    if let Some((a, b)) = plan.months {
        put(
            store
                .campaign_cells(campaign, CellLevel::StoreMonths, a, b)
                .await?,
            true,
        );
    }
    for (add, ranges) in [(true, &plan.days), (false, &plan.minus)] {
        for &(a, b) in ranges {
            put(
                store
                    .campaign_cells(campaign, CellLevel::StoreDays, Some(a), Some(b))
                    .await?,
                add,
            );
        }
    }
    // A store whose counts in the range are all taken away was not in it.
    out.retain(|_, c| *c != Cell::default());
    Ok(out)
}

/// Whether outcome `o` redeems `offer`, or the code of delivery `delivery`.
pub fn redeems(o: &OutcomeRecord, offer: &Id, delivery: Option<&str>) -> bool {
    o.kind == OutcomeKind::Redeemed
        && (o.offer_id.as_ref() == Some(offer)
            || (o.delivery_id.is_some() && o.delivery_id.as_deref() == delivery))
}

/// Whether outcome `o` is a purchase in `category`.
pub fn buys(o: &OutcomeRecord, category: Option<&str>) -> bool {
    o.kind == OutcomeKind::Purchased && o.category.as_deref().is_some_and(|c| Some(c) == category)
}

/// Treated against held out on one proportion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lift {
    /// Rate in the treated arm.
    pub treated_rate: Option<f64>,
    /// Rate in the held-out arm.
    pub held_out_rate: Option<f64>,
    /// The difference with its 95 % interval (Newcombe's hybrid score).
    pub difference: Option<Difference>,
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

/// Treated against held out on revenue per exposure, in one currency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevenueLift {
    /// Revenue per treated exposure.
    pub treated_mean: Option<f64>,
    /// Revenue per held-out exposure.
    pub held_out_mean: Option<f64>,
    /// Revenue in the treated arm.
    pub treated_total: f64,
    /// The difference of the means with its 95 % interval (Welch).
    pub difference: Option<Difference>,
    /// As for [`Lift`]: `too_small` below 30 exposures in an arm.
    pub verdict: &'static str,
}

fn moments(arm: &Arm, currency: &str) -> Moments {
    let m = arm.revenue.get(currency).copied().unwrap_or_default();
    Moments {
        n: arm.n,
        sum: m.sum,
        sum_sq: m.sum_sq,
    }
}

fn revenue_lift(t: &Arm, h: &Arm, currency: &str) -> RevenueLift {
    let (mt, mh) = (moments(t, currency), moments(h, currency));
    let difference = crate::stats::welch(&mt, &mh);
    let verdict = match difference {
        _ if t.n < 30 || h.n < 30 => "too_small",
        Some(d) if d.low > 0.0 || d.high < 0.0 => "significant",
        _ => "not_significant",
    };
    RevenueLift {
        treated_mean: mt.mean(),
        held_out_mean: mh.mean(),
        treated_total: mt.sum,
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
    /// Visits to the campaign's stores, treated against held out.
    pub visit_lift: Lift,
    /// Redemptions, treated against held out.
    pub redemption_lift: Lift,
    /// Purchases in the offer's category, treated against held out.
    pub purchase_lift: Lift,
    /// Revenue per exposure, per currency.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub revenue_lift: BTreeMap<String, RevenueLift>,
}

fn group(c: &Cell) -> CampaignGroup {
    let (t, h) = (&c.treated, &c.held_out);
    let currencies: std::collections::BTreeSet<&String> =
        t.revenue.keys().chain(h.revenue.keys()).collect();
    CampaignGroup {
        treated: t.clone(),
        held_out: h.clone(),
        global_control: c.global_control.clone(),
        visit_lift: lift(t.visited, t.n, h.visited, h.n),
        redemption_lift: lift(t.redeemed, t.n, h.redeemed, h.n),
        purchase_lift: lift(t.purchased, t.n, h.purchased, h.n),
        revenue_lift: currencies
            .into_iter()
            .map(|cur| (cur.clone(), revenue_lift(t, h, cur)))
            .collect(),
    }
}

/// From triggered to purchased.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Funnel {
    /// Decisions that considered one of the campaign's offers.
    pub triggered: u64,
    /// Of those, where one passed its rules.
    pub eligible: u64,
    /// Not sent nor held out, by reason.
    pub suppressed: BTreeMap<String, u64>,
    /// Pushes sent.
    pub sent: u64,
    /// Held out (the campaign's holdout and the global control group).
    pub held_out: u64,
    /// Sent pushes opened.
    pub opened: u64,
    /// Treated exposures followed by a visit.
    pub visited: u64,
    /// Treated exposures followed by a redemption.
    pub redeemed: u64,
    /// Treated exposures followed by a purchase.
    pub purchased: u64,
}

fn funnel(c: &Cell) -> Funnel {
    Funnel {
        triggered: c.triggered,
        eligible: c.eligible,
        suppressed: c.suppressed.clone(),
        sent: c.treated.n,
        held_out: c.held_out.n + c.global_control.n,
        opened: c.treated.opened,
        visited: c.treated.visited,
        redeemed: c.treated.redeemed,
        purchased: c.treated.purchased,
    }
}

/// How results are broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    /// Per store's local day.
    Day,
    /// Per store.
    Store,
    /// Per variant.
    Variant,
}

impl By {
    /// From its name in a query.
    pub fn parse(s: &str) -> Option<By> {
        Some(match s {
            "day" => By::Day,
            "store" => By::Store,
            "variant" => By::Variant,
            _ => return None,
        })
    }
}

/// One row of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The day (`2026-11-20`), store id or variant id.
    pub key: String,
    /// Sent.
    pub treated: Arm,
    /// Held out.
    pub held_out: Arm,
    /// Global control.
    pub global_control: Arm,
    /// Its funnel.
    pub funnel: Funnel,
}

/// A campaign's results over a range of days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignResults {
    /// The whole campaign.
    pub all: CampaignGroup,
    /// Per variant (`-`: decisions without one).
    pub variants: BTreeMap<String, CampaignGroup>,
    /// Do the variants' treated purchase rates differ? Pearson's chi-squared across them
    /// (with two or more variants that sent).
    pub variants_purchase_test: Option<crate::stats::ChiSquared>,
    /// The same for redemptions.
    pub variants_redemption_test: Option<crate::stats::ChiSquared>,
    /// The same for visits.
    pub variants_visit_test: Option<crate::stats::ChiSquared>,
    /// From triggered to purchased.
    pub funnel: Funnel,
    /// The breakdown asked for, in key order (none without one).
    pub rows: Vec<Row>,
}

/// The results of `cells` on the days from `from` to `to` (inclusive; none: unbounded),
/// broken down `by`.
pub fn summarise(
    cells: &BTreeMap<CellKey, Cell>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    by: Option<By>,
) -> CampaignResults {
    let mut all = Cell::default();
    let mut variants: BTreeMap<String, Cell> = BTreeMap::new();
    let mut rows: BTreeMap<String, Cell> = BTreeMap::new();
    for (k, c) in cells {
        if from.is_some_and(|f| k.day < f) || to.is_some_and(|t| k.day > t) {
            continue;
        }
        all.add(c);
        variants.entry(k.variant.clone()).or_default().add(c);
        if let Some(by) = by {
            let key = match by {
                By::Day => k.day.to_string(),
                By::Store => k.store.clone(),
                By::Variant => k.variant.clone(),
            };
            rows.entry(key).or_default().add(c);
        }
    }
    // Variants that exposed nobody (only funnel counts) are not compared.
    let exposed: Vec<&Cell> = variants.values().filter(|c| c.treated.n > 0).collect();
    let test = |f: fn(&Arm) -> u64| {
        crate::stats::chi_squared(
            &exposed
                .iter()
                .map(|c| (f(&c.treated), c.treated.n))
                .collect::<Vec<_>>(),
        )
    };
    CampaignResults {
        all: group(&all),
        variants_purchase_test: test(|a| a.purchased),
        variants_redemption_test: test(|a| a.redeemed),
        variants_visit_test: test(|a| a.visited),
        funnel: funnel(&all),
        variants: variants
            .iter()
            .filter(|(_, c)| c.treated.n + c.held_out.n + c.global_control.n > 0)
            .map(|(k, c)| (k.clone(), group(c)))
            .collect(),
        rows: rows
            .into_iter()
            .map(|(key, c)| Row {
                key,
                funnel: funnel(&c),
                treated: c.treated,
                held_out: c.held_out,
                global_control: c.global_control,
            })
            .collect(),
    }
}

#[cfg(test)]
mod campaign_tests {
    use super::*;
    use crate::decision::{Candidate, Decision, Reason, Verdict};
    use crate::ids::Id;
    use crate::ports::{OutcomeDetail, OutcomeKind, OutcomeRecord};
    use chrono::{DateTime, Duration, Utc};
    use serde_json::json;

    fn id(s: &str) -> Id {
        Id::parse(s).unwrap()
    }

    fn rain() -> crate::campaign::Campaign {
        let content = json!({"en": {"title": "Rain", "body": "Umbrellas"}});
        serde_json::from_value(json!({"id": "rain", "name": "Rain",
            "variants": [{"id": "a", "default_locale": "en", "content": content},
                         {"id": "b", "default_locale": "en", "content": content}]}))
        .unwrap()
    }

    fn offers() -> HashSet<Id> {
        [id("umbrellas")].into_iter().collect()
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
            next_fix_by: None,
        }
    }

    fn outcome(user: &str, kind: OutcomeKind, hours: i64, category: &str) -> OutcomeRecord {
        OutcomeRecord {
            detail: Default::default(),
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

        let r = summarise(
            &cells_from_logs(&rain(), &offers(), &ds, &os),
            None,
            None,
            None,
        );
        let arm = |n, opened, redeemed, purchased| Arm {
            n,
            opened,
            redeemed,
            purchased,
            ..Arm::default()
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

    /// Revenue per exposure by hand: 40 treated of which 10 spend (5 of them 20 EUR, 5 of
    /// them 10 + 30 = 40 EUR within the window, plus 100 EUR too late), 40 held out of
    /// which 4 spend 20 EUR. Treated mean 300/40 = 7.5, held out 80/40 = 2.0.
    #[test]
    fn revenue_per_exposure_has_welchs_interval() {
        let mut ds = Vec::new();
        let mut os = Vec::new();
        let buy = |u: &str, hours: i64, amount: f64| OutcomeRecord {
            detail: OutcomeDetail {
                amount: Some(amount),
                currency: Some("EUR".into()),
                ..OutcomeDetail::default()
            },
            ..outcome(u, OutcomeKind::Purchased, hours, "umbrella")
        };
        for i in 0..40 {
            let u = format!("t{i}");
            ds.push(decision(&u, Verdict::Sent, None, "a"));
            if i < 5 {
                os.push(buy(&u, 1, 20.0));
            } else if i < 10 {
                os.push(buy(&u, 1, 10.0));
                let mut second = buy(&u, 2, 30.0);
                second.event_id = id(&format!("second-{u}"));
                os.push(second);
                os.push(buy(&u, 100, 100.0));
            }
        }
        for i in 0..40 {
            let u = format!("h{i}");
            let held = Reason::HeldOut {
                campaign: "rain".into(),
            };
            ds.push(decision(&u, Verdict::HeldOut, Some(held), "a"));
            if i < 4 {
                os.push(buy(&u, 5, 20.0));
            }
        }
        let r = summarise(
            &cells_from_logs(&rain(), &offers(), &ds, &os),
            None,
            None,
            None,
        );
        assert_eq!(r.all.treated.purchased, 10);
        let m = r.all.treated.revenue["EUR"];
        assert_eq!((m.sum, m.sum_sq), (300.0, 5.0 * 400.0 + 5.0 * 1600.0));
        let l = &r.all.revenue_lift["EUR"];
        assert_eq!((l.treated_mean, l.held_out_mean), (Some(7.5), Some(2.0)));
        assert_eq!(l.treated_total, 300.0);
        // By hand: treated variance (10000 - 300²/40)/39 = 198.72, held out (1600 -
        // 80²/40)/39 = 36.92; se² = 4.968 + 0.923 = 5.891, se 2.4271; df = 5.891² /
        // (4.968²/39 + 0.923²/39) = 53.0; t(97.5 %, 53) = 2.0057: 5.5 ± 4.868.
        let d = l.difference.unwrap();
        assert!((d.difference - 5.5).abs() < 1e-9, "{d:?}");
        assert!(
            (d.low - 0.632).abs() < 1e-3 && (d.high - 10.368).abs() < 1e-3,
            "{d:?}"
        );
        assert_eq!(l.verdict, "significant");
    }

    /// The funnel and the breakdowns: every decision that considered the campaign counts
    /// once, by the reason it was not sent, and any breakdown adds up to the whole.
    #[test]
    fn the_funnel_and_the_breakdowns_add_up() {
        let c = rain();
        let mut ds = Vec::new();
        let next_day = |mut d: Decision| {
            d.at += Duration::days(1);
            d
        };
        // Day 1: 3 sent at s1, 1 held out. Day 2: 2 sent at s2.
        for i in 0..3 {
            ds.push(decision(&format!("t{i}"), Verdict::Sent, None, "a"));
        }
        let held = Reason::HeldOut {
            campaign: "rain".into(),
        };
        ds.push(decision("h0", Verdict::HeldOut, Some(held), "a"));
        for i in 0..2 {
            let mut d = next_day(decision(&format!("u{i}"), Verdict::Sent, None, "b"));
            d.store_id = Some(id("s2"));
            d.candidates[0].store_id = id("s2");
            ds.push(d);
        }
        // Considered, not sent: capped once (chosen, then capped), below the threshold once
        // (another campaign's offer chosen; ours scored but lost), a rule once (not scored).
        let mut capped = decision(
            "c0",
            Verdict::Suppressed,
            Some(Reason::Capped {
                detail: "2/2 today".into(),
            }),
            "a",
        );
        capped.delivery_id = None;
        ds.push(capped);
        let mut lost = decision("c1", Verdict::Sent, None, "a");
        lost.campaign_id = Some(id("sunny"));
        lost.offer_id = Some(id("sunglasses"));
        ds.push(lost);
        let mut rule = decision("c2", Verdict::None, Some(Reason::NoTrigger), "a");
        rule.campaign_id = None;
        rule.offer_id = None;
        rule.candidates[0].score = None;
        rule.candidates[0].reason = Some(Reason::Weather {
            needs: vec!["rain".into()],
            got: "clear".into(),
        });
        ds.push(rule);
        // A decision that never considered the campaign: not in its funnel.
        let mut other = decision("z", Verdict::Sent, None, "a");
        other.candidates[0].offer_id = id("sunglasses");
        other.offer_id = Some(id("sunglasses"));
        other.campaign_id = Some(id("sunny"));
        ds.push(other);

        let cells = cells_from_logs(&c, &offers(), &ds, &[]);
        let r = summarise(&cells, None, None, Some(By::Day));
        let f = &r.funnel;
        assert_eq!((f.triggered, f.eligible, f.sent, f.held_out), (9, 8, 5, 1));
        assert_eq!(
            f.suppressed,
            [("another_offer_chosen", 1), ("capped", 1), ("weather", 1)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<BTreeMap<_, _>>()
        );
        assert_eq!(r.rows.len(), 2);
        assert_eq!(
            (r.rows[0].key.as_str(), r.rows[0].treated.n),
            ("2026-11-20", 3)
        );
        assert_eq!(
            (r.rows[1].key.as_str(), r.rows[1].treated.n),
            ("2026-11-21", 2)
        );
        assert_eq!(
            r.rows[0].funnel.triggered + r.rows[1].funnel.triggered,
            f.triggered
        );
        // By store and by variant: the same totals.
        for by in [By::Store, By::Variant] {
            let r = summarise(&cells, None, None, Some(by));
            assert_eq!(
                r.rows.iter().map(|x| x.funnel.triggered).sum::<u64>(),
                9,
                "{by:?}"
            );
            assert_eq!(r.rows.iter().map(|x| x.treated.n).sum::<u64>(), 5, "{by:?}");
        }
        let by_store = summarise(&cells, None, None, Some(By::Store));
        assert_eq!(by_store.rows[1].key, "s2");
        // A range of days: only day 2.
        let day2: NaiveDate = "2026-11-21".parse().unwrap();
        let r = summarise(&cells, Some(day2), Some(day2), None);
        assert_eq!(
            (r.funnel.sent, r.funnel.triggered, r.all.treated.n),
            (2, 2, 2)
        );
        assert_eq!(r.variants.keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn a_cell_round_trips_through_its_counters() {
        let mut c = Cell {
            triggered: 7,
            eligible: 5,
            ..Cell::default()
        };
        c.suppressed.insert("capped".into(), 2);
        c.treated = Arm {
            n: 3,
            opened: 1,
            visited: 2,
            redeemed: 1,
            purchased: 1,
            revenue: [(
                "EUR".to_string(),
                Money {
                    sum: 12.5,
                    sum_sq: 156.25,
                },
            )]
            .into(),
        };
        c.global_control.n = 1;
        let mut back = Cell::default();
        for (name, x) in c.counters() {
            back.add_counter(&name, x);
        }
        assert_eq!(back, c);
        assert!(
            c.counters().iter().all(|(_, x)| *x != 0.0),
            "zero counts are left out"
        );
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use proptest::prelude::*;

    fn day(n: i64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2027, 1, 1).unwrap() + Duration::days(n)
    }

    /// How many times the plan counts each day from `lo` to `hi`: +1 for each month read
    /// whole and each day range added, -1 for each day range taken away; and how many
    /// days it reads from the day cells.
    fn counted(plan: &StorePlan, lo: NaiveDate, hi: NaiveDate) -> (BTreeMap<NaiveDate, i64>, i64) {
        let mut n: BTreeMap<NaiveDate, i64> = BTreeMap::new();
        let mut d = lo - Duration::days(62);
        while d <= hi + Duration::days(62) {
            n.insert(d, 0);
            d += Duration::days(1);
        }
        if let Some((a, b)) = plan.months {
            assert!(a.is_none_or(|a| a.day() == 1) && b.is_none_or(|b| b.day() == 1));
            for (d, k) in n.iter_mut() {
                let m = month_of(*d);
                if a.is_none_or(|a| m >= a) && b.is_none_or(|b| m <= b) {
                    *k += 1;
                }
            }
        }
        let mut read = 0;
        for (sign, ranges) in [(1, &plan.days), (-1, &plan.minus)] {
            for &(a, b) in ranges {
                assert!(a <= b, "no empty ranges");
                read += (b - a).num_days() + 1;
                for (d, k) in n.range_mut(a..=b) {
                    let _ = d;
                    *k += sign;
                }
            }
        }
        (n, read)
    }

    proptest! {
        /// The months, days added and days taken away together count every day of the
        /// range once and no other day, on ranges of any length across month and year ends
        /// (leap February included), bounded or open at either end; and never read more
        /// than 31 days from the day cells.
        #[test]
        fn a_store_plan_counts_every_day_of_its_range_once_and_reads_few_days(
            a in -400i64..800, len in 0i64..500, open_from: bool, open_to: bool,
        ) {
            let (f, t) = (day(a), day(a + len));
            let from = (!open_from).then_some(f);
            let to = (!open_to).then_some(t);
            let plan = store_plan(from, to);
            let (n, read) = counted(&plan, f, t);
            for (d, k) in n {
                let inside = from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t);
                prop_assert_eq!(k, i64::from(inside), "{} in {:?}..{:?}: {:?}", d, from, to, plan);
            }
            prop_assert!(read <= 31, "{} days read: {:?}", read, plan);
        }
    }

    #[test]
    fn whole_months_come_from_month_cells_and_ragged_ends_from_the_fewer_days() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        // Nearly three months: three months less a day at the start and three at the end.
        let p = store_plan(Some(d("2026-11-02")), Some(d("2027-01-28")));
        assert_eq!(
            p.months,
            Some((Some(d("2026-11-01")), Some(d("2027-01-01"))))
        );
        assert!(p.days.is_empty());
        assert_eq!(
            p.minus,
            vec![
                (d("2026-11-01"), d("2026-11-01")),
                (d("2027-01-29"), d("2027-01-31"))
            ]
        );
        // A leap February, whole.
        let p = store_plan(Some(d("2028-02-01")), Some(d("2028-02-29")));
        assert_eq!(
            p.months,
            Some((Some(d("2028-02-01")), Some(d("2028-02-01"))))
        );
        assert!(p.days.is_empty() && p.minus.is_empty());
        // A week: its days.
        let p = store_plan(Some(d("2026-11-08")), Some(d("2026-11-14")));
        assert_eq!(p.months, None);
        assert_eq!(p.days, vec![(d("2026-11-08"), d("2026-11-14"))]);
        // A month and a few days past it.
        let p = store_plan(Some(d("2026-11-01")), Some(d("2026-12-03")));
        assert_eq!(
            p.months,
            Some((Some(d("2026-11-01")), Some(d("2026-11-01"))))
        );
        assert_eq!(p.days, vec![(d("2026-12-01"), d("2026-12-03"))]);
        assert!(p.minus.is_empty());
        let p = store_plan(None, None);
        assert_eq!(p.months, Some((None, None)));
        assert!(p.days.is_empty() && p.minus.is_empty());
        let p = store_plan(Some(d("2026-11-25")), None);
        assert_eq!(p.months, Some((Some(d("2026-12-01")), None)));
        assert_eq!(p.days, vec![(d("2026-11-25"), d("2026-11-30"))]);
        let p = store_plan(None, Some(d("2026-11-20")));
        assert_eq!(p.months, Some((None, Some(d("2026-11-01")))));
        assert_eq!(p.minus, vec![(d("2026-11-21"), d("2026-11-30"))]);
    }

    #[test]
    fn each_delta_goes_to_its_day_roll_up_its_store_day_and_its_store_month() {
        let c = Id::parse("c1").unwrap();
        let k = |day: &str, store: &str| CellKey {
            day: day.parse().unwrap(),
            store: store.into(),
            variant: "a".into(),
        };
        let one = Cell {
            triggered: 1,
            ..Cell::default()
        };
        let mut deltas = CellDeltas::new();
        deltas.insert((c.clone(), k("2026-11-03", "s1")), one.clone());
        deltas.insert((c.clone(), k("2026-11-04", "s1")), one.clone());
        deltas.insert((c.clone(), k("2026-11-04", "s2")), one.clone());
        let out = with_rollups(deltas);
        let got: Vec<(CellLevel, String, String, u64)> = out
            .iter()
            .map(|(_, l, k, v)| (*l, k.day.to_string(), k.store.clone(), v.triggered))
            .collect();
        let want: Vec<(CellLevel, String, String, u64)> = [
            (CellLevel::Days, "2026-11-03", "*", 1),
            (CellLevel::Days, "2026-11-04", "*", 2),
            (CellLevel::StoreDays, "2026-11-03", "s1", 1),
            (CellLevel::StoreDays, "2026-11-04", "s1", 1),
            (CellLevel::StoreDays, "2026-11-04", "s2", 1),
            (CellLevel::StoreMonths, "2026-11-01", "s1", 2),
            (CellLevel::StoreMonths, "2026-11-01", "s2", 1),
        ]
        .into_iter()
        .map(|(l, d, s, n)| (l, d.to_string(), s.to_string(), n))
        .collect();
        assert_eq!(got, want);
    }
}
