//! The decision for one event: a pure function of the catalog, the model, the user's state
//! and the event. It returns the user's next state, the explained decision and, at most,
//! one push. The engine persists and delivers; nothing here does I/O.

use crate::caps::{self, CapBlock};
use crate::catalog::Catalog;
use crate::config::{Offer, Trigger};
use crate::consent::{ConsentRecord, Purpose};
use crate::context::Context;
use crate::event::{Action, Event, EventKind, Fix, Platform};
use crate::features::{self, Input};
use crate::holdout::{self, stable_hash};
use crate::ids::Id;
use crate::ports::{OutcomeKind, OutcomeRecord};
use crate::presence;
use crate::ranker::Ranker;
use crate::state::{Purchase, PushTarget, SendRecord, UserState};
use crate::trigger::{self, Transition};
use crate::weather::Weather;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// A location fix older than this when it arrives moves presence but sends nothing: an
/// offer for where someone was a while ago is spam.
pub const MAX_FIX_AGE: Duration = Duration::minutes(15);

/// Why an offer was not sent. `code()` is stable (metrics, summaries); `Display` explains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
#[allow(missing_docs, reason = "each variant's Display says what it means")]
pub enum Reason {
    NoConsentLocation,
    NoConsentPush,
    NoPushTarget,
    StaleFix {
        minutes: i64,
    },
    NoTrigger,
    OutsideSchedule,
    Weekday {
        needs: Vec<String>,
    },
    Daypart {
        needs: Vec<String>,
    },
    WeatherUnknown,
    Weather {
        needs: Vec<String>,
        got: String,
    },
    Temperature {
        got: f64,
    },
    AudienceNeedsPersonalisation,
    Affinity {
        got: f64,
        needs: f64,
    },
    NotNewToCategory,
    AlreadyBought {
        product: Option<String>,
        category: String,
    },
    NotYetReeligible {
        hours: i64,
    },
    BelowThreshold {
        score: f64,
        threshold: f64,
    },
    Capped {
        detail: String,
    },
    QuietHours {
        local: String,
    },
    HeldOut {
        campaign: String,
    },
    CampaignNotActive {
        campaign: String,
        status: String,
    },
    BudgetSpent {
        campaign: String,
    },
    CouponsExhausted {
        campaign: String,
    },
    StoreClosed,
    RateLimited {
        campaign: String,
    },
    CampaignCapped {
        campaign: String,
        detail: String,
    },
    GlobalControl,
    VisitNumber {
        visit: u32,
        needs: u32,
    },
    OncePerStoreDay,
}

impl Reason {
    /// A short stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::NoConsentLocation => "no_consent_location",
            Reason::NoConsentPush => "no_consent_push",
            Reason::NoPushTarget => "no_push_target",
            Reason::StaleFix { .. } => "stale_fix",
            Reason::NoTrigger => "no_trigger",
            Reason::OutsideSchedule => "outside_schedule",
            Reason::Weekday { .. } => "weekday",
            Reason::Daypart { .. } => "daypart",
            Reason::WeatherUnknown => "weather_unknown",
            Reason::Weather { .. } => "weather",
            Reason::Temperature { .. } => "temperature",
            Reason::AudienceNeedsPersonalisation => "audience_needs_personalisation",
            Reason::Affinity { .. } => "affinity",
            Reason::NotNewToCategory => "not_new_to_category",
            Reason::AlreadyBought { .. } => "already_bought",
            Reason::NotYetReeligible { .. } => "not_yet_reeligible",
            Reason::BelowThreshold { .. } => "below_threshold",
            Reason::Capped { .. } => "capped",
            Reason::QuietHours { .. } => "quiet_hours",
            Reason::HeldOut { .. } => "held_out",
            Reason::CampaignNotActive { .. } => "campaign_not_active",
            Reason::BudgetSpent { .. } => "budget_spent",
            Reason::CouponsExhausted { .. } => "coupons_exhausted",
            Reason::StoreClosed => "store_closed",
            Reason::RateLimited { .. } => "rate_limited",
            Reason::CampaignCapped { .. } => "campaign_capped",
            Reason::GlobalControl => "global_control",
            Reason::VisitNumber { .. } => "visit_number",
            Reason::OncePerStoreDay => "once_per_store_day",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NoConsentLocation => write!(f, "no consent: location"),
            Reason::NoConsentPush => write!(f, "no consent: push"),
            Reason::NoPushTarget => write!(f, "no push token"),
            Reason::StaleFix { minutes } => write!(f, "stale fix ({minutes} min old)"),
            Reason::NoTrigger => write!(f, "no enter or dwell trigger"),
            Reason::OutsideSchedule => write!(f, "outside schedule"),
            Reason::Weekday { needs } => write!(f, "weekday: needs {}", needs.join("/")),
            Reason::Daypart { needs } => write!(f, "daypart: needs {}", needs.join("/")),
            Reason::WeatherUnknown => write!(f, "weather unknown"),
            Reason::Weather { needs, got } => {
                write!(f, "weather: needs {}, is {got}", needs.join("/"))
            }
            Reason::Temperature { got } => write!(f, "temperature {got:.0} °C out of range"),
            Reason::AudienceNeedsPersonalisation => {
                write!(f, "audience rule needs personalisation consent")
            }
            Reason::Affinity { got, needs } => write!(f, "affinity {got:.2} < {needs:.2}"),
            Reason::NotNewToCategory => write!(f, "audience: already a customer in category"),
            Reason::AlreadyBought {
                product: Some(p), ..
            } => write!(f, "already bought {p}"),
            Reason::AlreadyBought {
                product: None,
                category,
            } => write!(f, "already bought {category}"),
            Reason::NotYetReeligible { hours } => write!(f, "offer re-eligible in {hours} h"),
            Reason::BelowThreshold { score, threshold } => {
                write!(f, "score {score:.2} below threshold {threshold:.2}")
            }
            Reason::Capped { detail } => f.write_str(detail),
            Reason::QuietHours { local } => write!(f, "quiet hours ({local} local)"),
            Reason::HeldOut { campaign } => write!(f, "held out (campaign {campaign})"),
            Reason::CampaignNotActive { campaign, status } => {
                write!(f, "campaign {campaign} is {status}")
            }
            Reason::BudgetSpent { campaign } => {
                write!(f, "campaign {campaign} has spent its budget")
            }
            Reason::CouponsExhausted { campaign } => {
                write!(f, "campaign {campaign} has given out every coupon code")
            }
            Reason::StoreClosed => write!(f, "the store is closed now (its opening hours)"),
            Reason::RateLimited { campaign } => {
                write!(f, "campaign {campaign} has sent its most for this minute")
            }
            Reason::CampaignCapped { campaign, detail } => {
                write!(f, "campaign {campaign}: {detail}")
            }
            Reason::GlobalControl => write!(f, "in the global control group"),
            Reason::VisitNumber { visit, needs } => {
                write!(
                    f,
                    "visit {visit} to this store; the offer is for visit {needs}"
                )
            }
            Reason::OncePerStoreDay => {
                write!(
                    f,
                    "already decided at this store today (once per store and day)"
                )
            }
        }
    }
}

/// What became of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A push was sent.
    Sent,
    /// The user is in the campaign's holdout group: recorded, not sent.
    HeldOut,
    /// An offer was triggered but not sent.
    Suppressed,
    /// Nothing was triggered.
    None,
}

/// One scored or rejected candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Store.
    pub store_id: Id,
    /// Offer.
    pub offer_id: Id,
    /// Offer category.
    pub category: String,
    /// Distance from the fix to the fence centre, metres.
    pub distance_m: f64,
    /// Model score, when it was eligible and scored.
    pub score: Option<f64>,
    /// Why it was dropped, if it was.
    pub reason: Option<Reason>,
    /// The user's affinity for the category as the model saw it (only with
    /// personalisation consent; logged for training).
    #[serde(default)]
    pub affinity: Option<f64>,
    /// Whether the user had bought in the category before, as the model saw it.
    #[serde(default)]
    pub bought_category: bool,
}

/// The context recorded with a decision (for explanations and training exports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionContext {
    /// Local time at the store, RFC 3339 with offset.
    pub local_time: String,
    /// Daypart.
    pub daypart: String,
    /// Weekday (`Mon`..`Sun`).
    pub weekday: String,
    /// Weather, if known.
    pub weather: Option<Weather>,
    /// H3 cell (resolution 9) of the fix: coarse place, not a trail.
    pub cell: String,
}

/// An explained decision for one location event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Event.
    pub event_id: Id,
    /// User.
    pub user_id: Id,
    /// Event time.
    pub at: DateTime<Utc>,
    /// Outcome.
    pub verdict: Verdict,
    /// Store of the chosen (or best rejected) candidate.
    pub store_id: Option<Id>,
    /// Offer of the chosen (or best rejected) candidate.
    pub offer_id: Option<Id>,
    /// Its score.
    pub score: Option<f64>,
    /// Why not sent (absent when sent).
    pub reason: Option<Reason>,
    /// Context at the store.
    pub context: Option<DecisionContext>,
    /// Every candidate considered.
    pub candidates: Vec<Candidate>,
    /// Model version that scored.
    pub model_version: String,
    /// Delivery id when sent or held out.
    pub delivery_id: Option<String>,
    /// Whether the user had given personalisation consent (the user features were used).
    #[serde(default)]
    pub personalised: bool,
    /// The fences this fix entered or left, in store order (presence is visible whether
    /// or not an offer could be sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presence: Vec<PresenceChange>,
    /// The chosen offer's campaign, when it is a defined campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<Id>,
    /// The campaign variant drawn for the user (sent or held out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_id: Option<Id>,
    /// The configuration version the decision was made with (the id of the audit entry of
    /// the last configuration change), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_version: Option<String>,
    /// For a push its campaign deferred past quiet hours or the minimum gap: when it goes
    /// out (the outbox relay sends it then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_until: Option<DateTime<Utc>>,
    /// For a location fix that began or ended a visit, or decided offers, and leaves a visit
    /// in progress at a store with dwell offers still to fire: when the first of them is
    /// due. An app that reports rarely (or stops, as phones do while the person stands
    /// still) sends one fix by then, so that the dwell offer fires although no fix would
    /// otherwise come (docs/formats.md#dwell-while-the-app-is-quiet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fix_by: Option<DateTime<Utc>>,
}

impl Decision {
    /// The decision as an event's answer and its idempotency record carry it: everything
    /// but the candidates, which only the decision log keeps (a fix at a store of a large
    /// network can weigh hundreds of offers, and the device needs none of them).
    pub fn without_candidates(&self) -> Decision {
        Decision {
            event_id: self.event_id.clone(),
            user_id: self.user_id.clone(),
            at: self.at,
            verdict: self.verdict.clone(),
            store_id: self.store_id.clone(),
            offer_id: self.offer_id.clone(),
            score: self.score,
            reason: self.reason.clone(),
            context: self.context.clone(),
            candidates: Vec::new(),
            model_version: self.model_version.clone(),
            delivery_id: self.delivery_id.clone(),
            personalised: self.personalised,
            presence: self.presence.clone(),
            campaign_id: self.campaign_id.clone(),
            variant_id: self.variant_id.clone(),
            catalog_version: self.catalog_version.clone(),
            deferred_until: self.deferred_until,
            next_fix_by: self.next_fix_by,
        }
    }
}

/// A visit that began or ended with a location event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceChange {
    /// The store whose fence it is.
    pub store_id: Id,
    /// `enter` or `exit`.
    pub transition: PresenceTransition,
    /// When the visit began: the enter's fix time.
    pub since: DateTime<Utc>,
    /// An exit's visit length, minutes, from the enter to the last fix inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<i64>,
    /// An exit inferred because the app stopped reporting for longer than presence lasts,
    /// rather than confirmed by fixes outside (exit offers do not fire on it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

/// Kind of a [`PresenceChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceTransition {
    /// A visit began.
    Enter,
    /// A visit ended.
    Exit,
}

/// A push to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Push {
    /// Deterministic id (user, event): a retried event yields the same id.
    pub delivery_id: String,
    /// Recipient.
    pub user_id: Id,
    /// Platform.
    pub platform: Platform,
    /// Token (never logged, never written to logs or exports).
    #[serde(skip_serializing, default)]
    pub token: String,
    /// Platform endpoint, once known.
    pub endpoint: Option<String>,
    /// Offer.
    pub offer_id: Id,
    /// Campaign.
    pub campaign_id: Id,
    /// Store.
    pub store_id: Id,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Coupon code.
    pub coupon: Option<String>,
    /// The campaign variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_id: Option<Id>,
    /// The locale of the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Where opening the push leads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep_link: Option<String>,
    /// An image shown with the push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Delivery priority (the variant's; `high` when absent).
    #[serde(default, skip_serializing_if = "crate::campaign::Priority::is_high")]
    pub priority: crate::campaign::Priority,
    /// Held back by quiet hours or the minimum gap and committed for a later `at` (the
    /// campaign's `defer_minutes`): the outbox relay sends it then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
    /// Score.
    pub score: f64,
    /// Model version.
    pub model_version: String,
    /// When it was decided, by the host's clock (the time the caps count in).
    pub at: DateTime<Utc>,
}

/// What processing one event produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The user's next state.
    pub state: UserState,
    /// The decision, for location events.
    pub decision: Option<Decision>,
    /// The push to deliver, if any.
    pub push: Option<Push>,
}

/// Everything a decision reads besides the user's state.
pub struct Inputs<'a> {
    /// Stores, offers, policy.
    pub catalog: &'a Catalog,
    /// The model.
    pub ranker: &'a dyn Ranker,
    /// The weather at a place and time.
    pub weather: &'a (dyn Fn(f64, f64, DateTime<Utc>) -> Option<Weather> + Sync),
    /// Now, by the host's clock.
    pub now: DateTime<Utc>,
}

/// The deterministic delivery id of a user's event.
pub fn delivery_id(user: &Id, event: &Id) -> String {
    format!(
        "d-{:016x}",
        stable_hash(&["delivery", user.as_str(), event.as_str()])
    )
}

/// Processes one validated event against the user's current state.
pub fn decide(inputs: &Inputs<'_>, state: &UserState, event: &Event) -> Outcome {
    decide_owned(inputs, state.clone(), event)
}

/// A location fix that may be the resend of one decided before whose answer was not kept
/// (a routine fix a store keeps no key for, forgotten by [`UserState::recent`]): judged as
/// the late fix it is, moving no presence and so triggering nothing, so that a resend has
/// no effect its first answer did not have. Any other event as [`decide_owned`].
pub fn decide_possible_resend(inputs: &Inputs<'_>, mut state: UserState, event: &Event) -> Outcome {
    match &event.kind {
        EventKind::Location(fix) if state.consents.granted(Purpose::Location) => {
            state.prune(inputs.now);
            decide_at(inputs, state, event, fix, Vec::new())
        }
        _ => decide_owned(inputs, state, event),
    }
}

/// [`decide`] on a state the caller hands over (no copy of it: a user inside fences
/// with many offers carries lists worth not copying for every event).
pub fn decide_owned(inputs: &Inputs<'_>, mut state: UserState, event: &Event) -> Outcome {
    state.prune(inputs.now);
    match &event.kind {
        EventKind::Location(fix) => location(inputs, state, event, fix),
        EventKind::Consent {
            purpose,
            granted,
            policy_version,
        } => {
            state.consents.set(
                *purpose,
                ConsentRecord {
                    granted: *granted,
                    at: event.at,
                    source: "event".into(),
                    policy_version: policy_version.clone(),
                },
            );
            apply_consent_effects(&mut state);
            Outcome {
                state,
                decision: None,
                push: None,
            }
        }
        EventKind::PushToken {
            platform,
            token,
            locale,
        } => {
            let same = state
                .push
                .as_ref()
                .is_some_and(|p| p.platform == *platform && &p.token == token);
            if same {
                if let (Some(p), Some(l)) = (state.push.as_mut(), locale) {
                    p.locale = Some(l.clone());
                }
            } else {
                state.push = Some(PushTarget {
                    platform: *platform,
                    token: token.clone(),
                    endpoint: None,
                    disabled: false,
                    locale: locale.clone(),
                });
            }
            Outcome {
                state,
                decision: None,
                push: None,
            }
        }
        EventKind::Behaviour(b) => {
            let personal = state.consents.granted(Purpose::Personalisation);
            let offer_category = b
                .offer_id
                .as_ref()
                .and_then(|o| inputs.catalog.offer_pos.get(o))
                .map(|&k| inputs.catalog.offers[k as usize].category.clone());
            let category = b.category.clone().or(offer_category);
            if b.action == Action::Purchase {
                // Purchases are kept without personalisation consent too: they only ever
                // suppress offers (never again an offer for what was bought).
                state.add_purchase(Purchase {
                    product_id: b.product_id.clone(),
                    category: category.clone(),
                    at: event.at,
                });
            }
            if personal && let Some(c) = &category {
                let w = match b.action {
                    Action::View => 0.05,
                    Action::AddToCart => 0.15,
                    Action::Purchase => 0.3,
                    Action::NotificationOpened => 0.1,
                    Action::CouponRedeemed => 0.3,
                };
                state.learn(c, w);
            }
            Outcome {
                state,
                decision: None,
                push: None,
            }
        }
    }
}

/// The outcome an event logs, if it is one: an opened push, a redeemed coupon or a
/// purchase. Categories come from the event or, for an offer, from the catalog.
pub fn outcome_of(catalog: &Catalog, event: &Event) -> Option<OutcomeRecord> {
    let EventKind::Behaviour(b) = &event.kind else {
        return None;
    };
    let kind = match b.action {
        Action::NotificationOpened => OutcomeKind::Opened,
        Action::CouponRedeemed => OutcomeKind::Redeemed,
        Action::Purchase => OutcomeKind::Purchased,
        Action::View | Action::AddToCart => return None,
    };
    let offer_category = b
        .offer_id
        .as_ref()
        .and_then(|o| catalog.offer_pos.get(o))
        .map(|&k| catalog.offers[k as usize].category.clone());
    Some(OutcomeRecord {
        detail: b.detail.clone(),
        event_id: event.event_id.clone(),
        user_id: event.user_id.clone(),
        at: event.at,
        kind,
        offer_id: b.offer_id.clone(),
        category: b.category.clone().or(offer_category),
        delivery_id: b.delivery_id.clone(),
    })
}

/// Consequences of a consent change that must hold from the very next event.
pub fn apply_consent_effects(state: &mut UserState) {
    if !state.consents.granted(Purpose::Location) {
        // Without location consent nothing about presence is kept.
        state.fences.clear();
        state.track = None;
        state.visits.clear();
    }
    if !state.consents.granted(Purpose::Personalisation) {
        state.affinities.clear();
    }
}

fn blank(event: &Event, reason: Option<Reason>, verdict: Verdict, model: &str) -> Decision {
    Decision {
        event_id: event.event_id.clone(),
        user_id: event.user_id.clone(),
        at: event.at,
        verdict,
        store_id: None,
        offer_id: None,
        score: None,
        reason,
        context: None,
        candidates: Vec::new(),
        model_version: model.to_string(),
        delivery_id: None,
        personalised: false,
        presence: Vec::new(),
        campaign_id: None,
        variant_id: None,
        catalog_version: None,
        deferred_until: None,
        next_fix_by: None,
    }
}

/// When the next dwell offer of store `p` falls due in a visit that began at `since` and
/// has had its dwell offers decided up to `dwelt` minutes inside: the smallest `minutes` of
/// a dwell offer at the store beyond `dwelt` whose campaign (if any) runs then, after
/// `since`; `None` without one.
pub fn next_dwell_at(
    cat: &Catalog,
    p: u32,
    since: DateTime<Utc>,
    dwelt: Option<i64>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    cat.offers_at(p)
        .filter_map(|k| match cat.offers[k as usize].trigger {
            Trigger::Dwell { minutes } if dwelt.is_none_or(|d| i64::from(minutes) > d) => {
                let due = since + chrono::Duration::minutes(i64::from(minutes));
                let runs = cat
                    .campaign_of(k)
                    .is_none_or(|c| c.running(due.max(now)).is_ok());
                runs.then_some(due)
            }
            _ => None,
        })
        .min()
}

/// A decision suppressed before any candidate was considered.
fn suppressed(state: UserState, event: &Event, reason: Reason, model: &str) -> Outcome {
    Outcome {
        state,
        decision: Some(blank(event, Some(reason), Verdict::Suppressed, model)),
        push: None,
    }
}

fn location(inputs: &Inputs<'_>, mut state: UserState, event: &Event, fix: &Fix) -> Outcome {
    let model = inputs.ranker.version();
    if !state.consents.granted(Purpose::Location) {
        state.fences.clear();
        state.track = None;
        state.visits.clear();
        return suppressed(state, event, Reason::NoConsentLocation, model);
    }

    // 1. Presence: the track, then fences it is in, the user is in, or an enter waits for.
    // The visits open before the fix, to tell how long one that ends lasted.
    // By store position: no id is copied, and a user outside every fence allocates nothing.
    let visits: Vec<(u32, DateTime<Utc>, DateTime<Utc>)> = state
        .fences
        .iter()
        .filter_map(|(sid, f)| {
            let pos = inputs.catalog.store_position(sid)?;
            Some((pos, f.since, f.last_seen))
        })
        .collect();
    let moments = presence::update(
        &trigger::Params::DEFAULT,
        inputs.catalog,
        &mut state,
        fix,
        event.at,
    );
    let mut changes = Vec::new();
    let mut fired: Vec<(u32, Moment)> = Vec::new();
    for (p, tr) in moments {
        let sid = &inputs.catalog.store(p).id;
        match tr {
            Transition::Enter => {
                state.count_visit(sid, event.at);
                changes.push(PresenceChange {
                    store_id: sid.clone(),
                    transition: PresenceTransition::Enter,
                    since: event.at,
                    minutes: None,
                    expired: false,
                });
                fired.push((p, Moment::Enter));
            }
            // Not while an exit waits for confirmation: the user may have left.
            Transition::Inside { minutes } => {
                if state.fences.get(sid).is_some_and(|f| f.out_since.is_none()) {
                    fired.push((p, Moment::Inside { minutes }));
                }
            }
            Transition::Exit => {
                let Some((_, since, last_seen)) = visits.iter().find(|(v, _, _)| *v == p) else {
                    continue;
                };
                let expired = event.at - *last_seen > trigger::Params::DEFAULT.presence_ttl;
                let minutes = (*last_seen - *since).num_minutes().max(0);
                changes.push(PresenceChange {
                    store_id: sid.clone(),
                    transition: PresenceTransition::Exit,
                    since: *since,
                    minutes: Some(minutes),
                    expired,
                });
                if !expired {
                    fired.push((p, Moment::Exit { minutes }));
                }
            }
            Transition::Outside => {}
        }
    }
    let mut out = decide_at(inputs, state, event, fix, fired);
    // The first dwell offer still to come in the visits in progress, when it may have
    // changed: a visit began or ended, or offers were decided (a dwell offer's minute came).
    // Not on every fix inside: that would look through every offer of the store each time.
    let changed = !changes.is_empty()
        || out
            .decision
            .as_ref()
            .is_some_and(|d| !d.candidates.is_empty());
    let next = changed
        .then(|| {
            out.state
                .fences
                .iter()
                .filter(|(_, f)| f.out_since.is_none())
                .filter_map(|(sid, f)| {
                    let p = inputs.catalog.store_position(sid)?;
                    next_dwell_at(inputs.catalog, p, f.since, f.dwelt, inputs.now)
                })
                .filter(|t| *t > event.at)
                .min()
        })
        .flatten();
    if let Some(d) = out.decision.as_mut() {
        d.presence = changes;
        d.next_fix_by = next;
    }
    out
}

/// What a fix means for one store's offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// The visit began.
    Enter,
    /// Inside (and not leaving) for this many minutes.
    Inside { minutes: i64 },
    /// A confirmed exit after a visit of this many minutes.
    Exit { minutes: i64 },
}

impl Moment {
    /// Whether an offer with this trigger fires.
    fn fires(self, t: Trigger) -> bool {
        match (t, self) {
            (Trigger::Enter, Moment::Enter) => true,
            (Trigger::Dwell { minutes: need }, Moment::Inside { minutes }) => {
                minutes >= i64::from(need)
            }
            (
                Trigger::Exit {
                    min_minutes,
                    max_minutes,
                },
                Moment::Exit { minutes },
            ) => (i64::from(min_minutes)..=i64::from(max_minutes)).contains(&minutes),
            _ => false,
        }
    }
}

/// The decision for a fix, given what it means for each store.
fn decide_at(
    inputs: &Inputs<'_>,
    mut state: UserState,
    event: &Event,
    fix: &Fix,
    moments: Vec<(u32, Moment)>,
) -> Outcome {
    let cat = inputs.catalog;
    let model = inputs.ranker.version();

    let age = inputs.now - event.at;
    if age > MAX_FIX_AGE {
        let reason = Reason::StaleFix {
            minutes: age.num_minutes(),
        };
        return suppressed(state, event, reason, model);
    }

    // Caps, quiet hours, re-eligibility and schedules count in the host's clock: a push
    // goes out now, whatever time the device stamped on the fix, so no arrival order and no
    // accepted timestamp (up to 24 h ahead, 15 min behind) can beat them. The context (local
    // time, daypart, weather) is the fix's own moment, but never later than now: a device
    // clock running ahead does not choose tomorrow's offers.
    let context_at_time = event.at.min(inputs.now);

    // 2. Triggered (store, offer) pairs, each offer once per visit.
    let personal = state.consents.granted(Purpose::Personalisation);
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut scored: Vec<(usize, f64, u32, u32)> = Vec::new(); // (candidate idx, score, store, offer)
    // The context at each store that had candidates, for the decision's explanation.
    let mut contexts: Vec<(u32, Context)> = Vec::new();
    // Eligible candidates, scored once all are known (the user's history is read from all
    // the decision's candidates, as the trainer reads it from the logged record):
    // (candidate idx, store, offer, context idx).
    let mut eligible_candidates: Vec<(usize, u32, u32, usize)> = Vec::new();
    let fix_cell = h3o::LatLng::new(fix.lat, fix.lon)
        .ok()
        .map(|ll| ll.to_cell(h3o::Resolution::Nine));
    for (p, moment) in moments {
        let store = cat.store(p);
        // The offers that fire at this moment, less those decided in this visit: a dwell
        // offer whose time inside was reached at an earlier fix of the visit (the visit
        // keeps the longest time inside at which offers were decided, not the offers: a
        // store of a large network runs a hundred offers and more, and listing them in the
        // person's record made every fix inside rewrite them).
        let visit = state.fences.get(&store.id);
        let dwelt = visit.and_then(|f| f.dwelt);
        let legacy: &[Id] = visit.map_or(&[], |f| f.decided.as_slice());
        let mut triggered: Vec<u32> = cat
            .offers_at(p)
            .filter(|&k| {
                let t = cat.offers[k as usize].trigger;
                moment.fires(t)
                    && !matches!((t, dwelt), (Trigger::Dwell { minutes }, Some(d)) if i64::from(minutes) <= d)
            })
            .collect();
        if !triggered.is_empty() && !legacy.is_empty() {
            let set: rustc_hash::FxHashSet<&str> = legacy.iter().map(Id::as_str).collect();
            triggered.retain(|&k| !set.contains(cat.offers[k as usize].id.as_str()));
        }
        if let (Moment::Inside { minutes }, Some(f)) = (moment, state.fences.get_mut(&store.id)) {
            f.dwelt = Some(f.dwelt.map_or(minutes, |d| d.max(minutes)));
        }
        if triggered.is_empty() {
            continue;
        }
        let (clat, clon) = centre(&cat.shape(p));
        let distance_m = crate::geofence::haversine_m(fix.lat, fix.lon, clat, clon);
        let weather = (inputs.weather)(clat, clon, context_at_time);
        let ctx = Context::new(context_at_time, cat.tz(p), weather);
        for k in triggered {
            let o = &cat.offers[k as usize];
            let mut c = Candidate {
                store_id: store.id.clone(),
                offer_id: o.id.clone(),
                category: o.category.clone(),
                distance_m,
                score: None,
                reason: None,
                affinity: personal
                    .then(|| state.affinities.get(&o.category).copied().unwrap_or(0.0)),
                bought_category: state.bought_category(&o.category),
            };
            match campaign_rules(cat, k, &state, inputs.now, cat.tz(p))
                .and_then(|()| eligible(o, &ctx, &state, personal, inputs.now))
                .and_then(|()| {
                    if o.require_open && !cat.is_open(p, ctx.local.naive_local()) {
                        Err(Reason::StoreClosed)
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| visit_rules(o, &store.id, &state, inputs.now, cat.tz(p)))
            {
                Err(r) => c.reason = Some(r),
                Ok(()) => eligible_candidates.push((candidates.len(), p, k, contexts.len())),
            }
            candidates.push(c);
        }
        contexts.push((p, ctx));
    }
    let tastes: Vec<(String, Option<f64>)> = candidates
        .iter()
        .map(|c| (c.category.clone(), c.affinity))
        .collect();
    let history = if personal {
        features::history(tastes.iter().map(|(c, a)| (c.as_str(), *a)))
    } else {
        Vec::new()
    };
    for (ci, p, k, ctx_i) in eligible_candidates {
        let o = &cat.offers[k as usize];
        let c = &candidates[ci];
        let input = Input::new(
            &contexts[ctx_i].1,
            (o.id.as_str(), c.store_id.as_str(), o.category.as_str()),
            fix_cell,
            c.distance_m,
            (c.affinity, c.bought_category, &history),
        );
        let s = inputs.ranker.score(&input);
        let c = &mut candidates[ci];
        c.score = Some(s);
        if s < o.threshold {
            c.reason = Some(Reason::BelowThreshold {
                score: s,
                threshold: o.threshold,
            });
        } else {
            scored.push((ci, s, p, k));
        }
    }

    let cell = fix_cell.map(|c| c.to_string()).unwrap_or_default();
    let context_at = |store: u32| {
        contexts
            .iter()
            .find(|(q, _)| *q == store)
            .map(|(_, ctx)| DecisionContext {
                local_time: ctx.local.to_rfc3339(),
                daypart: ctx.daypart.as_str().to_string(),
                weekday: ctx.weekday.to_string(),
                weather: ctx.weather,
                cell: cell.clone(),
            })
    };
    let mut d = blank(event, None, Verdict::None, model);
    d.personalised = personal;
    d.catalog_version = cat.version.clone();
    if candidates.is_empty() {
        d.reason = Some(Reason::NoTrigger);
        return Outcome {
            state,
            decision: Some(d),
            push: None,
        };
    }

    // 3. Best eligible candidate above its threshold; otherwise explain the best rejection.
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let Some(&(ci, score, p, k)) = scored.first() else {
        let best = candidates
            .iter()
            .max_by(|a, b| a.score.unwrap_or(-1.0).total_cmp(&b.score.unwrap_or(-1.0)))
            .expect("non-empty");
        d.verdict = Verdict::Suppressed;
        d.store_id = Some(best.store_id.clone());
        d.offer_id = Some(best.offer_id.clone());
        d.score = best.score;
        d.reason = best.reason.clone();
        d.context = cat.store_position(&best.store_id).and_then(context_at);
        d.candidates = candidates;
        return Outcome {
            state,
            decision: Some(d),
            push: None,
        };
    };
    let store = &cat.store(p);
    let offer = &cat.offers[k as usize];
    let tz = cat.tz(p);
    d.store_id = Some(store.id.clone());
    d.offer_id = Some(offer.id.clone());
    d.score = candidates[ci].score;
    d.context = context_at(p);

    // 4. Consent, push target, caps, holdout: in that order, so the holdout group is drawn
    // only among users who would otherwise have been sent the push (a fair comparison).
    // A campaign that defers: quiet hours or the gap that would drop the push postpone it
    // instead, to the first moment the caps allow, if that is within its limit.
    let mut send_at = inputs.now;
    let block = if !state.consents.granted(Purpose::Push) {
        Some(Reason::NoConsentPush)
    } else if state.push.as_ref().is_none_or(|t| t.disabled) {
        Some(Reason::NoPushTarget)
    } else {
        match caps::check(&cat.policy, &state.sends, inputs.now, tz) {
            Ok(()) => None,
            Err(b) => {
                let defer = cat.campaign_of(k).and_then(|c| c.defer_minutes);
                let later = defer
                    .filter(|_| matches!(b, CapBlock::QuietHours { .. } | CapBlock::MinGap { .. }))
                    .and_then(|m| {
                        caps::next_allowed(&cat.policy, &state.sends, inputs.now, tz)
                            .filter(|t| *t - inputs.now <= chrono::Duration::minutes(i64::from(m)))
                    });
                match (later, b) {
                    (Some(t), _) => {
                        send_at = t;
                        d.deferred_until = Some(t);
                        None
                    }
                    (None, CapBlock::QuietHours { local }) => Some(Reason::QuietHours { local }),
                    (None, b) => Some(Reason::Capped {
                        detail: b.to_string(),
                    }),
                }
            }
        }
    };
    if let Some(r) = block {
        candidates[ci].reason = Some(r.clone());
        d.verdict = Verdict::Suppressed;
        d.reason = Some(r);
        d.candidates = candidates;
        return Outcome {
            state,
            decision: Some(d),
            push: None,
        };
    }
    let did = delivery_id(&event.user_id, &event.event_id);
    d.delivery_id = Some(did.clone());
    let campaign = cat.campaign_of(k);
    let variant = campaign.and_then(|c| c.variant_for(&event.user_id));
    d.campaign_id = campaign.map(|c| c.id.clone());
    d.variant_id = variant.map(|v| v.id.clone());
    if let Some(c) = campaign
        && c.per_user.total.is_some()
    {
        *state.campaign_sends.entry(c.id.clone()).or_insert(0) += 1;
    }
    let global = holdout::in_global_control(&event.user_id, cat.policy.global_control);
    if global
        || holdout::held_out(
            &event.user_id,
            &offer.campaign_id,
            cat.holdout_of(&offer.campaign_id),
        )
    {
        let r = if global {
            Reason::GlobalControl
        } else {
            Reason::HeldOut {
                campaign: offer.campaign_id.to_string(),
            }
        };
        state.sends.push(SendRecord {
            at: inputs.now,
            offer_id: offer.id.clone(),
            delivery_id: did,
            held_out: true,
            campaign_id: d.campaign_id.clone(),
            store_id: Some(store.id.clone()),
        });
        candidates[ci].reason = Some(r.clone());
        d.verdict = Verdict::HeldOut;
        d.reason = Some(r);
        d.candidates = candidates;
        return Outcome {
            state,
            decision: Some(d),
            push: None,
        };
    }
    state.sends.push(SendRecord {
        at: send_at,
        offer_id: offer.id.clone(),
        delivery_id: did.clone(),
        held_out: false,
        campaign_id: d.campaign_id.clone(),
        store_id: Some(store.id.clone()),
    });
    let target = state.push.as_ref().expect("checked above");
    // A campaign with a coupon pool: the code is picked when the push is committed, and
    // `{coupon}` stays in the text until then (`Push::with_coupon`).
    let pooled = campaign.is_some_and(|c| c.coupon_pool);
    let coupon = if pooled {
        Some(crate::campaign::COUPON_TOKEN.to_string())
    } else {
        offer.coupon.clone()
    };
    let (title, body, locale) = match variant {
        Some(v) => {
            let (locale, m) = v.message_for(target.locale.as_deref());
            (m.title.as_str(), m.body.as_str(), Some(locale.to_string()))
        }
        None => (offer.title.as_str(), offer.body.as_str(), None),
    };
    let push = Push {
        delivery_id: did,
        user_id: event.user_id.clone(),
        platform: target.platform,
        token: target.token.clone(),
        endpoint: target.endpoint.clone(),
        offer_id: offer.id.clone(),
        campaign_id: offer.campaign_id.clone(),
        store_id: store.id.clone(),
        title: crate::campaign::render_text(title, &store.name, coupon.as_deref()),
        body: crate::campaign::render_text(body, &store.name, coupon.as_deref()),
        coupon: coupon.filter(|_| !pooled),
        variant_id: variant.map(|v| v.id.clone()),
        locale,
        deep_link: variant.and_then(|v| v.deep_link.clone()),
        image_url: variant.and_then(|v| v.image_url.clone()),
        priority: variant.map(|v| v.priority).unwrap_or_default(),
        deferred: send_at > inputs.now,
        score,
        model_version: model.to_string(),
        at: send_at,
    };
    d.verdict = Verdict::Sent;
    d.candidates = candidates;
    Outcome {
        state,
        decision: Some(d),
        push: Some(push),
    }
}

impl Push {
    /// The push with its coupon code from the campaign's pool: `{coupon}` in the title
    /// and body becomes `code`.
    #[must_use]
    pub fn with_coupon(mut self, code: &str) -> Self {
        self.title = self.title.replace(crate::campaign::COUPON_TOKEN, code);
        self.body = self.body.replace(crate::campaign::COUPON_TOKEN, code);
        self.coupon = Some(code.to_string());
        self
    }
}

fn centre(shape: &crate::geofence::Shape) -> (f64, f64) {
    match shape {
        crate::geofence::Shape::Circle { lat, lon, .. } => (*lat, *lon),
        crate::geofence::Shape::Polygon { bbox, .. } => {
            let c = bbox.center();
            (c.y, c.x)
        }
    }
}

/// The rules of the defined campaign of the offer at position `k`, if it has one: active
/// and within its schedule, budget not found spent, caps per user not reached. Sends and
/// holdouts count alike for the caps per user, so the holdout group is drawn from users
/// the campaign would have reached as often as the treated ones.
///
/// # Errors
/// The first rule not met, as a [`Reason`].
pub fn campaign_rules(
    cat: &Catalog,
    k: u32,
    state: &UserState,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Result<(), Reason> {
    let Some(c) = cat.campaign_of(k) else {
        return Ok(());
    };
    match c.running(now) {
        Ok(()) => {}
        Err(crate::campaign::CampaignBlock::NotActive(s)) => {
            return Err(Reason::CampaignNotActive {
                campaign: c.id.to_string(),
                status: s.as_str().to_string(),
            });
        }
        Err(crate::campaign::CampaignBlock::OutsideSchedule) => {
            return Err(Reason::OutsideSchedule);
        }
    }
    if c.budget.is_some() && cat.budget_spent(&c.id) {
        return Err(Reason::BudgetSpent {
            campaign: c.id.to_string(),
        });
    }
    if c.max_per_minute.is_some() && cat.budget_spent(&crate::campaign::rate_key(&c.id, now)) {
        return Err(Reason::RateLimited {
            campaign: c.id.to_string(),
        });
    }
    if c.coupon_pool && cat.coupons_exhausted(&c.id) {
        return Err(Reason::CouponsExhausted {
            campaign: c.id.to_string(),
        });
    }
    if let Some(total) = c.per_user.total
        && state.campaign_sends.get(&c.id).copied().unwrap_or(0) >= total
    {
        return Err(Reason::CampaignCapped {
            campaign: c.id.to_string(),
            detail: format!("{total} per user reached"),
        });
    }
    if let Some(per_day) = c.per_user.per_day {
        let today = now.with_timezone(&tz).date_naive();
        let n = state
            .sends
            .iter()
            .filter(|s| s.campaign_id.as_ref() == Some(&c.id))
            .filter(|s| s.at.with_timezone(&tz).date_naive() == today)
            .count();
        if n >= per_day as usize {
            return Err(Reason::CampaignCapped {
                campaign: c.id.to_string(),
                detail: format!("{per_day} per user per day reached"),
            });
        }
    }
    Ok(())
}

/// The offer's rules for this user, here and now.
///
/// # Errors
/// The first rule not met, as a [`Reason`].
pub fn eligible(
    o: &Offer,
    ctx: &Context,
    state: &UserState,
    personal: bool,
    at: DateTime<Utc>,
) -> Result<(), Reason> {
    if o.starts_at.is_some_and(|s| at < s) || o.ends_at.is_some_and(|e| at >= e) {
        return Err(Reason::OutsideSchedule);
    }
    if !o.weekdays.is_empty() && !o.weekdays.iter().any(|w| w.weekday() == ctx.weekday) {
        return Err(Reason::Weekday {
            needs: o.weekdays.iter().map(|w| w.weekday().to_string()).collect(),
        });
    }
    if !o.dayparts.is_empty() && !o.dayparts.contains(&ctx.daypart) {
        return Err(Reason::Daypart {
            needs: o.dayparts.iter().map(|d| d.as_str().to_string()).collect(),
        });
    }
    if let Some(rule) = &o.weather {
        let Some(w) = ctx.weather else {
            return Err(Reason::WeatherUnknown);
        };
        if !rule.conditions.is_empty() && !rule.conditions.contains(&w.condition) {
            return Err(Reason::Weather {
                needs: rule
                    .conditions
                    .iter()
                    .map(|c| c.as_str().to_string())
                    .collect(),
                got: w.condition.as_str().to_string(),
            });
        }
        if rule.min_temp_c.is_some_and(|t| w.temp_c < t)
            || rule.max_temp_c.is_some_and(|t| w.temp_c > t)
        {
            return Err(Reason::Temperature { got: w.temp_c });
        }
    }
    if state.bought(o.product_id.as_ref(), &o.category) && o.product_id.is_some() {
        return Err(Reason::AlreadyBought {
            product: o.product_id.as_ref().map(|p| p.to_string()),
            category: o.category.clone(),
        });
    }
    if let Some(a) = &o.audience {
        if a.new_to_category && state.bought_category(&o.category) {
            return Err(Reason::NotNewToCategory);
        }
        if let Some(min) = a.min_affinity {
            if !personal {
                return Err(Reason::AudienceNeedsPersonalisation);
            }
            let got = state.affinities.get(&o.category).copied().unwrap_or(0.0);
            if got < min {
                return Err(Reason::Affinity { got, needs: min });
            }
        }
    }
    let window = Duration::hours(i64::from(o.reeligible_after_hours));
    if let Some(last) = state
        .sends
        .iter()
        .filter(|s| s.offer_id == o.id)
        .map(|s| s.at)
        .max()
        && at - last < window
    {
        return Err(Reason::NotYetReeligible {
            hours: (window - (at - last)).num_hours().max(1),
        });
    }
    Ok(())
}

/// An offer's visit rules at store `store`: its `nth_visit` (the visit in progress is the
/// store's count), and `once_per: store_day` (no send or holdout of it at this store on
/// the local day of `now` in the store's time zone `tz`).
///
/// # Errors
/// [`Reason::VisitNumber`] or [`Reason::OncePerStoreDay`].
pub fn visit_rules(
    o: &Offer,
    store: &Id,
    state: &UserState,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Result<(), Reason> {
    if let Some(needs) = o.nth_visit {
        let visit = state.visits.get(store).map_or(0, |v| v.count);
        if visit != needs {
            return Err(Reason::VisitNumber { visit, needs });
        }
    }
    if o.once_per == crate::config::OncePer::StoreDay {
        let today = now.with_timezone(&tz).date_naive();
        if state.sends.iter().any(|s| {
            s.offer_id == o.id
                && s.store_id.as_ref() == Some(store)
                && s.at.with_timezone(&tz).date_naive() == today
        }) {
            return Err(Reason::OncePerStoreDay);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Audience, WeatherRule, WeekdayName, parse_json};
    use crate::context::Daypart;
    use crate::weather::Condition;

    fn offer() -> Offer {
        parse_json(&serde_json::json!({"id": "o", "campaign_id": "c", "title": "T", "body": "B",
            "category": "coffee", "product_id": "p1", "store_ids": ["s"], "trigger": {"type": "enter"}}))
        .unwrap()
    }

    fn at(t: &str) -> DateTime<Utc> {
        t.parse().unwrap()
    }

    fn ctx(t: &str, weather: Option<Weather>) -> Context {
        Context::new(at(t), chrono_tz::Europe::Helsinki, weather)
    }

    const FRIDAY_MORNING: &str = "2026-11-20T06:30:00Z"; // 08:30 in Helsinki

    fn code(r: Result<(), Reason>) -> &'static str {
        r.err().map_or("ok", |r| r.code())
    }

    #[test]
    fn schedule_weekday_and_daypart_are_checked_in_local_time() {
        let s = UserState::default();
        let c = ctx(FRIDAY_MORNING, None);
        let t = at(FRIDAY_MORNING);
        assert_eq!(code(eligible(&offer(), &c, &s, true, t)), "ok");
        let o = Offer {
            ends_at: Some(t),
            ..offer()
        };
        assert_eq!(code(eligible(&o, &c, &s, true, t)), "outside_schedule");
        // The schedule starts at its instant, not a second before.
        let o = Offer {
            starts_at: Some(t),
            ..offer()
        };
        assert_eq!(code(eligible(&o, &c, &s, true, t)), "ok");
        let o = Offer {
            starts_at: Some(t + Duration::seconds(1)),
            ..offer()
        };
        assert_eq!(code(eligible(&o, &c, &s, true, t)), "outside_schedule");
        let o = Offer {
            weekdays: vec![WeekdayName::Sat],
            ..offer()
        };
        assert_eq!(code(eligible(&o, &c, &s, true, t)), "weekday");
        let o = Offer {
            dayparts: vec![Daypart::Evening],
            ..offer()
        };
        assert_eq!(code(eligible(&o, &c, &s, true, t)), "daypart");
        let o = Offer {
            dayparts: vec![Daypart::Morning],
            weekdays: vec![WeekdayName::Fri],
            ..offer()
        };
        assert_eq!(code(eligible(&o, &c, &s, true, t)), "ok");
    }

    #[test]
    fn weather_rules_need_known_matching_weather() {
        let s = UserState::default();
        let t = at(FRIDAY_MORNING);
        let rain = Weather {
            condition: Condition::Rain,
            temp_c: 4.0,
        };
        let o = Offer {
            weather: Some(WeatherRule {
                conditions: vec![Condition::Rain],
                min_temp_c: None,
                max_temp_c: Some(5.0),
            }),
            ..offer()
        };
        assert_eq!(
            code(eligible(&o, &ctx(FRIDAY_MORNING, None), &s, true, t)),
            "weather_unknown"
        );
        assert_eq!(
            code(eligible(&o, &ctx(FRIDAY_MORNING, Some(rain)), &s, true, t)),
            "ok"
        );
        let clear = Weather {
            condition: Condition::Clear,
            temp_c: 4.0,
        };
        assert_eq!(
            code(eligible(&o, &ctx(FRIDAY_MORNING, Some(clear)), &s, true, t)),
            "weather"
        );
        let warm = Weather {
            condition: Condition::Rain,
            temp_c: 12.0,
        };
        assert_eq!(
            code(eligible(&o, &ctx(FRIDAY_MORNING, Some(warm)), &s, true, t)),
            "temperature"
        );
    }

    #[test]
    fn audience_purchases_and_reeligibility() {
        let t = at(FRIDAY_MORNING);
        let c = ctx(FRIDAY_MORNING, None);
        let mut s = UserState::default();
        let o = Offer {
            audience: Some(Audience {
                min_affinity: Some(0.3),
                new_to_category: false,
            }),
            ..offer()
        };
        assert_eq!(
            code(eligible(&o, &c, &s, false, t)),
            "audience_needs_personalisation"
        );
        assert_eq!(code(eligible(&o, &c, &s, true, t)), "affinity");
        s.learn("coffee", 0.5);
        assert_eq!(code(eligible(&o, &c, &s, true, t)), "ok");
        s.add_purchase(crate::state::Purchase {
            product_id: None,
            category: Some("coffee".into()),
            at: t,
        });
        let new_only = Offer {
            audience: Some(Audience {
                min_affinity: None,
                new_to_category: true,
            }),
            ..offer()
        };
        assert_eq!(
            code(eligible(&new_only, &c, &s, true, t)),
            "not_new_to_category"
        );
        s.add_purchase(crate::state::Purchase {
            product_id: Some(Id::parse("p1").unwrap()),
            category: None,
            at: t,
        });
        assert_eq!(code(eligible(&offer(), &c, &s, true, t)), "already_bought");
        let mut s = UserState::default();
        s.sends.push(SendRecord {
            at: t - Duration::hours(10),
            offer_id: Id::parse("o").unwrap(),
            delivery_id: "d".into(),
            held_out: true,
            campaign_id: None,
            store_id: None,
        });
        assert_eq!(
            code(eligible(&offer(), &c, &s, true, t)),
            "not_yet_reeligible"
        );
        assert_eq!(
            code(eligible(&offer(), &c, &s, true, t + Duration::hours(63))),
            "ok"
        );
    }

    /// Each bound of `eligible` at its edge: a temperature equal to the rule's minimum or
    /// maximum is inside it, an affinity equal to the minimum is enough, `new_to_category:
    /// false` asks nothing of past purchases, and an offer is eligible again exactly when
    /// its window has passed, the wait before that counted in whole hours left.
    #[test]
    fn eligibility_bounds_hold_at_their_edges() {
        let t = at(FRIDAY_MORNING);
        let c = ctx(FRIDAY_MORNING, None);
        let s = UserState::default();
        let band = Offer {
            weather: Some(WeatherRule {
                conditions: vec![],
                min_temp_c: Some(5.0),
                max_temp_c: Some(20.0),
            }),
            ..offer()
        };
        for (temp_c, expected) in [
            (4.9, "temperature"),
            (5.0, "ok"),
            (12.0, "ok"),
            (20.0, "ok"),
            (20.1, "temperature"),
        ] {
            let w = Weather {
                condition: Condition::Clear,
                temp_c,
            };
            let c = ctx(FRIDAY_MORNING, Some(w));
            assert_eq!(
                code(eligible(&band, &c, &s, true, t)),
                expected,
                "{temp_c} °C"
            );
        }

        let mut s = UserState::default();
        let fan = Offer {
            audience: Some(Audience {
                min_affinity: Some(0.5),
                new_to_category: false,
            }),
            product_id: None,
            ..offer()
        };
        s.learn("coffee", 0.5);
        let got = s.affinities.get("coffee").copied().unwrap();
        assert!(got >= 0.5, "learnt {got}");
        let exactly = Offer {
            audience: Some(Audience {
                min_affinity: Some(got),
                new_to_category: false,
            }),
            ..fan.clone()
        };
        assert_eq!(code(eligible(&exactly, &c, &s, true, t)), "ok");
        s.add_purchase(crate::state::Purchase {
            product_id: None,
            category: Some("coffee".into()),
            at: t,
        });
        assert_eq!(
            code(eligible(&exactly, &c, &s, true, t)),
            "ok",
            "new_to_category false: a buyer of the category is welcome"
        );

        let window = i64::from(offer().reeligible_after_hours);
        assert!(window >= 3, "the default window is {window} h");
        let mut s = UserState::default();
        s.sends.push(SendRecord {
            at: t,
            offer_id: Id::parse("o").unwrap(),
            delivery_id: "d".into(),
            held_out: false,
            campaign_id: None,
            store_id: None,
        });
        assert_eq!(
            eligible(&offer(), &c, &s, true, t + Duration::hours(2)),
            Err(Reason::NotYetReeligible { hours: window - 2 })
        );
        for (after, expected) in [
            (
                Duration::hours(window) - Duration::seconds(1),
                "not_yet_reeligible",
            ),
            (Duration::hours(window), "ok"),
        ] {
            let got = code(eligible(&offer(), &c, &s, true, t + after));
            assert_eq!(got, expected, "{after} after the send");
        }
    }

    #[test]
    fn decisions_logged_before_the_training_fields_still_read() {
        let old = r#"{"event_id":"e1","user_id":"u1","at":"2026-11-20T12:00:00Z",
            "verdict":"sent","store_id":"s1","offer_id":"o1","score":0.5,"reason":null,
            "context":null,"candidates":[{"store_id":"s1","offer_id":"o1","category":"coffee",
            "distance_m":12.0,"score":0.5,"reason":null}],"model_version":"m1",
            "delivery_id":"d-1"}"#;
        let d: Decision = serde_json::from_str(old).expect("old rows read");
        assert!(!d.personalised);
        assert_eq!(d.candidates[0].affinity, None);
        assert!(!d.candidates[0].bought_category);
    }

    #[test]
    fn outcomes_are_the_opens_redemptions_and_purchases() {
        let cat = Catalog::empty();
        let u = Id::parse("u1").unwrap();
        let ev = |v: serde_json::Value| {
            Event::from_json(&v, Some(&u), at("2026-11-20T12:00:00Z")).unwrap()
        };
        let o = outcome_of(
            &cat,
            &ev(serde_json::json!({"event_id": "e1",
            "type": "notification_opened", "at": "2026-11-20T11:00:00Z", "offer_id": "o1",
            "delivery_id": "d-1"})),
        )
        .expect("an outcome");
        assert_eq!(o.kind, OutcomeKind::Opened);
        assert_eq!(o.delivery_id.as_deref(), Some("d-1"));
        assert_eq!(o.offer_id.as_ref().map(Id::as_str), Some("o1"));
        let p = outcome_of(
            &cat,
            &ev(serde_json::json!({"event_id": "e2", "type": "purchase",
            "at": "2026-11-20T11:00:00Z", "product_id": "p1", "category": "coffee"})),
        )
        .expect("an outcome");
        assert_eq!(
            (p.kind, p.category.as_deref()),
            (OutcomeKind::Purchased, Some("coffee"))
        );
        assert!(
            outcome_of(
                &cat,
                &ev(serde_json::json!({"event_id": "e3", "type": "view",
            "at": "2026-11-20T11:00:00Z", "category": "coffee"}))
            )
            .is_none()
        );
    }
}

#[cfg(test)]
mod decide_tests;
