//! `decide` end to end on one user, without any store: consent effects, push tokens,
//! behaviour, stale fixes, enter and dwell, thresholds, the best rejection, the push target.
//! (The engine-level invariants are in `tests/tests`; these pin the pure function.)

use super::*;
use crate::config::{Store, parse_json};
use crate::ranker::Ranker;
use chrono::Duration;
use serde_json::{Value, json};

const NOW: &str = "2026-11-20T10:00:00Z"; // Friday, 12:00 in Helsinki
const STORE: (f64, f64) = (60.1699, 24.9384);
/// A second store 300 m north, a polygon.
const MALL: (f64, f64) = (60.1726, 24.9384);
/// A third store 1 km east, open only in the evening (closed at `NOW`).
const BAR: (f64, f64) = (60.1699, 24.9564);

fn now() -> DateTime<Utc> {
    NOW.parse().unwrap()
}

fn catalog(offers: Vec<Value>) -> Catalog {
    let stores: Vec<Store> = vec![
        parse_json(
            &json!({"id": "s", "name": "S", "category": "cafe", "time_zone": "Europe/Helsinki",
            "fence": {"type": "circle", "lat": STORE.0, "lon": STORE.1, "radius_m": 50}}),
        )
        .unwrap(),
        parse_json(
            &json!({"id": "m", "name": "M", "category": "mall", "time_zone": "Europe/Helsinki",
            "fence": {"type": "polygon", "geometry": {"type": "Polygon", "coordinates": [[
                [MALL.1 - 0.001, MALL.0 - 0.0005], [MALL.1 + 0.001, MALL.0 - 0.0005],
                [MALL.1 + 0.001, MALL.0 + 0.0005], [MALL.1 - 0.001, MALL.0 + 0.0005],
                [MALL.1 - 0.001, MALL.0 - 0.0005]]]}}}),
        )
        .unwrap(),
        parse_json(
            &json!({"id": "b", "name": "B", "category": "bar", "time_zone": "Europe/Helsinki",
            "opening_hours": "Mo-Su 18:00-23:00",
            "fence": {"type": "circle", "lat": BAR.0, "lon": BAR.1, "radius_m": 50}}),
        )
        .unwrap(),
    ];
    let offers = offers.iter().map(|o| parse_json(o).unwrap()).collect();
    let policy = crate::config::CapPolicy {
        per_day: 5,
        per_week: 20,
        min_gap_minutes: 0,
        quiet_start: chrono::NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
        quiet_end: chrono::NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
        global_control: 0.0,
    };
    Catalog::build(stores, offers, policy).unwrap()
}

fn offer(id: &str, store: &str, extra: Value) -> Value {
    merged(
        json!({"id": id, "campaign_id": "c", "title": "T", "body": "B", "category": "coffee",
        "store_ids": [store], "trigger": {"type": "enter"}, "threshold": 0.0}),
        extra,
    )
}

/// `base` with the fields of `extra` set on it.
fn merged(mut base: Value, extra: Value) -> Value {
    if let Value::Object(m) = extra {
        for (k, v) in m {
            base[k] = v;
        }
    }
    base
}

/// An active campaign `c` (the one `offer` names) with the fields of `extra`.
fn campaign(extra: Value) -> crate::campaign::Campaign {
    parse_json(&merged(
        json!({"id": "c", "name": "C", "status": "active"}),
        extra,
    ))
    .unwrap()
}

fn ranker() -> std::sync::Arc<dyn Ranker> {
    crate::ranker::load(include_str!("../../../../models/ranker.json")).unwrap()
}

fn no_weather(_: f64, _: f64, _: DateTime<Utc>) -> Option<Weather> {
    None
}

struct World {
    catalog: Catalog,
    ranker: std::sync::Arc<dyn Ranker>,
    state: UserState,
    now: DateTime<Utc>,
    n: u32,
}

impl World {
    fn new(offers: Vec<Value>) -> World {
        World {
            catalog: catalog(offers),
            ranker: ranker(),
            state: UserState::default(),
            now: now(),
            n: 0,
        }
    }

    /// Feeds one event (its `at` defaults to now); returns what `decide` answered.
    fn feed(&mut self, mut v: Value) -> Outcome {
        self.n += 1;
        v["event_id"] = json!(format!("e{}", self.n));
        if v.get("at").is_none() {
            v["at"] = json!(self.now.to_rfc3339());
        }
        let user = Id::parse("u").unwrap();
        let event = Event::from_json(&v, Some(&user), self.now).unwrap();
        let inputs = Inputs {
            catalog: &self.catalog,
            ranker: self.ranker.as_ref(),
            weather: &no_weather,
            now: self.now,
        };
        let out = decide(&inputs, &self.state, &event);
        self.state = out.state.clone();
        out
    }

    fn consent(&mut self, purpose: &str, granted: bool) {
        self.feed(json!({"type": "consent", "purpose": purpose, "granted": granted}));
    }

    fn onboard(&mut self) {
        for p in ["location", "push", "personalisation"] {
            self.consent(p, true);
        }
        self.feed(json!({"type": "push_token", "platform": "fcm", "token": "t1"}));
    }

    fn fix_at(&mut self, (lat, lon): (f64, f64), at: DateTime<Utc>) -> Decision {
        self.feed(json!({"type": "location", "lat": lat, "lon": lon, "accuracy_m": 5, "at": at.to_rfc3339()}))
            .decision
            .expect("a fix is always decided")
    }

    fn fix(&mut self, p: (f64, f64)) -> Decision {
        let at = self.now;
        self.fix_at(p, at)
    }
}

fn code(d: &Decision) -> &'static str {
    d.reason.as_ref().map_or("", Reason::code)
}

#[test]
fn reason_codes_are_distinct_and_every_reason_reads_as_text() {
    let all = vec![
        Reason::NoConsentLocation,
        Reason::NoConsentPush,
        Reason::NoPushTarget,
        Reason::StaleFix { minutes: 20 },
        Reason::NoTrigger,
        Reason::OutsideSchedule,
        Reason::WeatherUnknown,
        Reason::AudienceNeedsPersonalisation,
        Reason::NotNewToCategory,
        Reason::NotYetReeligible { hours: 3 },
        Reason::BelowThreshold {
            score: 0.1,
            threshold: 0.5,
        },
        Reason::Capped { detail: "x".into() },
        Reason::QuietHours { local: "x".into() },
        Reason::HeldOut {
            campaign: "c".into(),
        },
        Reason::VisitNumber { visit: 1, needs: 2 },
        Reason::OncePerStoreDay,
    ];
    let codes: std::collections::BTreeSet<&str> = all.iter().map(Reason::code).collect();
    assert_eq!(codes.len(), all.len(), "one code per reason");
    assert!(codes.contains("no_consent_location") && codes.contains("held_out"));
    for r in &all {
        assert!(!r.to_string().is_empty(), "{r:?} has a text");
    }
    assert_eq!(
        Reason::StaleFix { minutes: 20 }.to_string(),
        "stale fix (20 min old)"
    );
}

#[test]
fn delivery_ids_are_stable_and_distinct_per_user_and_event() {
    let (u, v) = (Id::parse("u").unwrap(), Id::parse("v").unwrap());
    let (e, f) = (Id::parse("e").unwrap(), Id::parse("f").unwrap());
    let d = delivery_id(&u, &e);
    assert_eq!(d, delivery_id(&u, &e));
    assert!(d.starts_with("d-") && d.len() == 18, "{d}");
    assert!(d[2..].chars().all(|c| c.is_ascii_hexdigit()), "{d}");
    assert_ne!(d, delivery_id(&v, &e));
    assert_ne!(d, delivery_id(&u, &f));
}

#[test]
fn withdrawing_location_forgets_presence_and_personalisation_forgets_tastes() {
    let mut w = World::new(vec![offer("o", "s", json!({}))]);
    w.onboard();
    w.feed(json!({"type": "view", "product_id": "p", "category": "coffee"}));
    assert!(w.state.affinities.contains_key("coffee"));
    assert_eq!(w.fix(STORE).verdict, Verdict::Sent);
    assert!(w.state.fences.contains_key(&Id::parse("s").unwrap()));
    // Granting again keeps both.
    w.consent("location", true);
    w.consent("personalisation", true);
    assert!(!w.state.fences.is_empty() && !w.state.affinities.is_empty());
    w.consent("personalisation", false);
    assert!(w.state.affinities.is_empty(), "tastes forgotten");
    assert!(
        !w.state.fences.is_empty(),
        "presence is not personalisation"
    );
    w.consent("location", false);
    assert!(w.state.fences.is_empty(), "presence forgotten");
    let d = w.fix(STORE);
    assert_eq!(
        (d.verdict, code(&d)),
        (Verdict::Suppressed, "no_consent_location")
    );
}

#[test]
fn the_same_token_keeps_its_endpoint_and_a_new_one_starts_afresh() {
    let mut w = World::new(vec![]);
    w.onboard();
    let target = |w: &World| w.state.push.clone().unwrap();
    let mut t = target(&w);
    t.endpoint = Some("arn:endpoint".into());
    w.state.push = Some(t);
    w.feed(json!({"type": "push_token", "platform": "fcm", "token": "t1"}));
    assert_eq!(
        target(&w).endpoint.as_deref(),
        Some("arn:endpoint"),
        "same token"
    );
    w.feed(json!({"type": "push_token", "platform": "apns", "token": "t1"}));
    assert_eq!(
        target(&w).endpoint,
        None,
        "another platform is another target"
    );
    let mut t = target(&w);
    t.endpoint = Some("arn:2".into());
    t.disabled = true;
    w.state.push = Some(t);
    w.feed(json!({"type": "push_token", "platform": "apns", "token": "t2"}));
    let t = target(&w);
    assert_eq!(
        (t.token.as_str(), t.endpoint, t.disabled),
        ("t2", None, false)
    );
}

#[test]
fn only_purchases_are_kept_as_purchases_and_only_with_consent_do_tastes_move() {
    let mut w = World::new(vec![]);
    w.consent("personalisation", false);
    w.feed(json!({"type": "view", "product_id": "p1", "category": "tea"}));
    w.feed(json!({"type": "purchase", "product_id": "p2", "category": "tea"}));
    assert_eq!(w.state.purchases.len(), 1, "the view is not a purchase");
    assert_eq!(
        w.state.purchases[0].product_id.as_ref().unwrap().as_str(),
        "p2"
    );
    assert!(w.state.affinities.is_empty(), "no consent, no tastes");
    w.consent("personalisation", true);
    w.feed(json!({"type": "add_to_cart", "product_id": "p3", "category": "tea"}));
    assert_eq!(w.state.purchases.len(), 1);
    assert!(w.state.affinities["tea"] > 0.0);
}

#[test]
fn a_stale_fix_moves_presence_but_sends_nothing() {
    let mut w = World::new(vec![offer("o", "s", json!({}))]);
    w.onboard();
    let fresh = w.now - MAX_FIX_AGE;
    let d = w.fix_at(STORE, fresh);
    assert_eq!(
        d.verdict,
        Verdict::Sent,
        "exactly 15 minutes old is still live"
    );
    let mut w = World::new(vec![offer("o", "s", json!({}))]);
    w.onboard();
    let stale = w.now - MAX_FIX_AGE - Duration::seconds(1);
    let d = w.fix_at(STORE, stale);
    assert_eq!((d.verdict, code(&d)), (Verdict::Suppressed, "stale_fix"));
    assert!(
        w.state.fences.contains_key(&Id::parse("s").unwrap()),
        "presence moved"
    );
}

#[test]
fn enter_fires_once_per_visit_and_dwell_after_its_minutes() {
    let mut w = World::new(vec![
        offer("enter", "s", json!({})),
        offer(
            "dwell",
            "s",
            json!({"trigger": {"type": "dwell", "minutes": 10}, "category": "tea"}),
        ),
    ]);
    w.onboard();
    let d = w.fix(STORE);
    assert_eq!(d.offer_id.as_ref().unwrap().as_str(), "enter");
    assert_eq!(
        d.candidates.len(),
        1,
        "dwell has not fired: {:?}",
        d.candidates
    );
    w.now += Duration::minutes(9);
    let d = w.fix(STORE);
    assert_eq!(
        (d.verdict, code(&d)),
        (Verdict::None, "no_trigger"),
        "9 minutes"
    );
    w.now += Duration::minutes(1);
    let d = w.fix(STORE);
    assert_eq!(d.verdict, Verdict::Sent, "10 minutes: {d:?}");
    assert_eq!(d.offer_id.as_ref().unwrap().as_str(), "dwell");
    w.now += Duration::minutes(5);
    let d = w.fix(STORE);
    assert_eq!(d.verdict, Verdict::None, "each offer once per visit");
}

/// An app that reports only when told: the enter's answer says when the first dwell offer
/// falls due, one fix then fires it, its answer names the next, and a visit with no dwell
/// offer left (or none at all) asks for nothing.
#[test]
fn a_quiet_app_is_told_when_to_report_for_its_dwell_offers() {
    let mut w = World::new(vec![
        offer("enter", "s", json!({})),
        offer(
            "dwell-10",
            "s",
            json!({"trigger": {"type": "dwell", "minutes": 10}, "category": "tea"}),
        ),
        offer(
            "dwell-25",
            "s",
            json!({"trigger": {"type": "dwell", "minutes": 25}, "category": "cake"}),
        ),
    ]);
    w.onboard();
    let t0 = w.now;
    let d = w.fix(STORE);
    assert_eq!(d.offer_id.as_ref().unwrap().as_str(), "enter");
    assert_eq!(d.next_fix_by, Some(t0 + Duration::minutes(10)), "{d:?}");
    let due = d.next_fix_by.unwrap();
    // A fix inside that decides nothing repeats no hint (the app keeps the last one), and
    // the presence the app can read still has it.
    w.now = t0 + Duration::minutes(4);
    let d = w.fix(STORE);
    assert_eq!((d.candidates.len(), d.next_fix_by), (0, None), "{d:?}");
    let f = &w.state.fences[&Id::parse("s").unwrap()];
    let p = w.catalog.store_position(&Id::parse("s").unwrap()).unwrap();
    assert_eq!(
        next_dwell_at(&w.catalog, p, f.since, f.dwelt, w.now),
        Some(due)
    );
    // Nothing for six minutes more (the phone lay still), then the one fix asked for.
    w.now = due;
    let d = w.fix(STORE);
    assert_eq!(
        (d.verdict.clone(), d.offer_id.as_ref().map(Id::as_str)),
        (Verdict::Sent, Some("dwell-10")),
        "{d:?}"
    );
    assert_eq!(d.next_fix_by, Some(t0 + Duration::minutes(25)));
    w.now = d.next_fix_by.unwrap();
    let d = w.fix(STORE);
    assert_eq!(
        d.offer_id.as_ref().map(Id::as_str),
        Some("dwell-25"),
        "{d:?}"
    );
    assert_eq!(d.next_fix_by, None, "no dwell offer left in this visit");
    // Outside every fence: nothing to report for.
    let mut w = World::new(vec![offer("enter", "s", json!({}))]);
    w.onboard();
    let d = w.fix(STORE);
    assert_eq!(d.next_fix_by, None, "a store without dwell offers");
}

/// A store running many offers (as a store of a national network does: the visit's list of
/// decided offers is then checked as a set): each offer is still decided once per visit,
/// enter offers at the enter, dwell offers at their minutes, none twice.
#[test]
fn many_offers_at_a_store_are_each_decided_once_per_visit() {
    let mut offers: Vec<Value> = (0..12)
        .map(|k| offer(&format!("e{k}"), "s", json!({})))
        .collect();
    offers.extend((0..12).map(|k| {
        offer(
            &format!("d{k}"),
            "s",
            json!({"trigger": {"type": "dwell", "minutes": 5 + k}}),
        )
    }));
    let mut w = World::new(offers);
    w.onboard();
    let ids = |d: &Decision| -> Vec<String> {
        let mut v: Vec<String> = d
            .candidates
            .iter()
            .map(|c| c.offer_id.to_string())
            .collect();
        v.sort();
        v
    };
    let d = w.fix(STORE);
    let enters: Vec<String> = {
        let mut v: Vec<String> = (0..12).map(|k| format!("e{k}")).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&d), enters, "the enter offers, each once");
    let mut seen = std::collections::BTreeSet::new();
    for minute in 1..=20 {
        w.now += Duration::minutes(1);
        let d = w.fix(STORE);
        for id in ids(&d) {
            assert!(id.starts_with('d'), "{id} at minute {minute}");
            assert!(seen.insert(id.clone()), "{id} decided twice in one visit");
            let need: i64 = id[1..].parse::<i64>().unwrap() + 5;
            assert!(minute >= need, "{id} before its {need} minutes");
        }
    }
    assert_eq!(seen.len(), 12, "every dwell offer once: {seen:?}");
}

/// The visit remembers the longest time inside at which dwell offers were decided, not the
/// offers: a fix that arrives late (stamped before one already decided) decides none of
/// them again, and the record stays a few bytes with two dozen offers at the store. A
/// record written when the visit listed its decided offers is still read: those are not
/// decided again.
#[test]
fn a_visit_remembers_how_long_its_dwell_offers_waited_not_the_offers() {
    let offers: Vec<Value> = (0..12)
        .map(|k| offer(&format!("e{k}"), "s", json!({})))
        .chain((0..12).map(|k| {
            offer(
                &format!("d{k}"),
                "s",
                json!({"trigger": {"type": "dwell", "minutes": 5 + k}}),
            )
        }))
        .collect();
    let mut w = World::new(offers.clone());
    w.onboard();
    let t0 = w.now;
    w.fix(STORE);
    w.now = t0 + Duration::minutes(12);
    let d = w.fix(STORE);
    assert_eq!(
        d.candidates.len(),
        8,
        "d0..d7 at 12 minutes: {:?}",
        d.candidates
    );
    // Stamped at minute 9, arriving now: d0..d4 were decided at minute 12.
    let late = w.fix_at(STORE, t0 + Duration::minutes(9));
    assert!(late.candidates.is_empty(), "{:?}", late.candidates);
    let visit = w.state.fences.values().next().unwrap();
    assert_eq!(visit.dwelt, Some(12));
    assert!(visit.decided.is_empty());
    assert!(serde_json::to_string(visit).unwrap().len() < 120);
    w.now = t0 + Duration::minutes(16);
    let d = w.fix(STORE);
    let got: Vec<&str> = d.candidates.iter().map(|c| c.offer_id.as_str()).collect();
    assert_eq!(got.len(), 4, "d8..d11: {got:?}");
    assert!(got.iter().all(|o| ["d8", "d9", "d10", "d11"].contains(o)));

    // A visit recorded with its decided offers listed (d0 and d3, say, at 8 minutes).
    let mut w = World::new(offers);
    w.onboard();
    let t0 = w.now;
    w.fix(STORE);
    let visit = w.state.fences.values_mut().next().unwrap();
    visit.dwelt = None;
    visit.decided = vec![Id::parse("d0").unwrap(), Id::parse("d3").unwrap()];
    w.now = t0 + Duration::minutes(8);
    let d = w.fix(STORE);
    let mut got: Vec<&str> = d.candidates.iter().map(|c| c.offer_id.as_str()).collect();
    got.sort_unstable();
    assert_eq!(got, ["d1", "d2"], "d0 and d3 were decided before");
}

/// The presence changes of a decision, as `(store, transition, minutes, expired)`.
fn changes(d: &Decision) -> Vec<(String, PresenceTransition, Option<i64>, bool)> {
    d.presence
        .iter()
        .map(|c| (c.store_id.to_string(), c.transition, c.minutes, c.expired))
        .collect()
}

/// 220 m south of the café: outside its fence and the exit band.
const AWAY: (f64, f64) = (STORE.0 - 0.002, STORE.1);

#[test]
fn each_answer_lists_the_visits_it_began_and_ended_whether_or_not_an_offer_went() {
    // No offer at all: presence is still visible.
    let mut w = World::new(vec![]);
    w.onboard();
    let t0 = w.now;
    let d = w.fix(STORE);
    assert_eq!(
        changes(&d),
        [("s".into(), PresenceTransition::Enter, None, false)]
    );
    assert_eq!(d.presence[0].since, t0);
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["presence"][0]["transition"], "enter", "{v}");
    assert!(v["presence"][0].get("expired").is_none(), "{v}");
    w.now += Duration::minutes(10);
    assert!(w.fix(STORE).presence.is_empty(), "still inside");
    w.now += Duration::minutes(1);
    let d = w.fix(AWAY);
    assert!(
        d.presence.is_empty(),
        "one fix outside does not end a visit"
    );
    assert!(serde_json::to_value(&d).unwrap().get("presence").is_none());
    w.now += Duration::minutes(1);
    let d = w.fix(AWAY);
    assert_eq!(
        changes(&d),
        [("s".into(), PresenceTransition::Exit, Some(10), false)],
        "the visit lasted from the enter to the last fix inside"
    );
    assert_eq!(d.presence[0].since, t0);
    assert!(w.state.fences.is_empty());
}

#[test]
fn an_exit_offer_fires_after_a_visit_of_its_length_and_never_after_a_walk_by_or_silence() {
    let offers = || {
        vec![offer(
            "bye",
            "s",
            json!({"trigger": {"type": "exit", "min_minutes": 5, "max_minutes": 60}}),
        )]
    };
    let visit = |minutes: i64| {
        let mut w = World::new(offers());
        w.onboard();
        let d = w.fix(STORE);
        assert_eq!(
            (d.verdict, code(&d)),
            (Verdict::None, "no_trigger"),
            "not on enter"
        );
        w.now += Duration::minutes(minutes);
        w.fix(STORE);
        w.now += Duration::minutes(1);
        w.fix(AWAY);
        w.now += Duration::minutes(1);
        w.fix(AWAY)
    };
    let d = visit(10);
    assert_eq!(d.verdict, Verdict::Sent, "{d:?}");
    assert_eq!(d.offer_id.as_ref().unwrap().as_str(), "bye");
    assert_eq!(d.store_id.as_ref().unwrap().as_str(), "s");
    for (minutes, why) in [
        (2, "shorter than min_minutes"),
        (90, "longer than max_minutes"),
    ] {
        let d = visit(minutes);
        assert_eq!(d.presence.len(), 1, "{why}");
        assert_eq!(
            (d.verdict, code(&d)),
            (Verdict::None, "no_trigger"),
            "{why}"
        );
    }
    let d = visit(5);
    assert_eq!(d.verdict, Verdict::Sent, "bounds are inclusive");
    let d = visit(60);
    assert_eq!(d.verdict, Verdict::Sent, "bounds are inclusive");

    // The app went quiet for hours: the visit is over, but nobody just left the shop.
    let mut w = World::new(offers());
    w.onboard();
    w.fix(STORE);
    w.now += Duration::minutes(10);
    w.fix(STORE);
    w.now += Duration::hours(3);
    let d = w.fix(AWAY);
    assert_eq!(
        changes(&d),
        [("s".into(), PresenceTransition::Exit, Some(10), true)]
    );
    assert_eq!((d.verdict, code(&d)), (Verdict::None, "no_trigger"));
}

#[test]
fn an_exit_trigger_names_its_bad_field() {
    for (trigger, field) in [
        (
            json!({"type": "exit", "min_minutes": 30, "max_minutes": 10}),
            "trigger.min_minutes",
        ),
        (
            json!({"type": "exit", "max_minutes": 1441}),
            "trigger.max_minutes",
        ),
        (json!({"type": "exit", "after_minutes": 3}), "trigger"),
    ] {
        let o = offer("o", "s", json!({"trigger": trigger}));
        let e = parse_json::<crate::config::Offer>(&o)
            .and_then(|o| o.validate().map(|()| o))
            .expect_err("refused");
        assert!(e.field.starts_with(field), "{trigger}: {e:?}");
    }
    let o: crate::config::Offer =
        parse_json(&offer("o", "s", json!({"trigger": {"type": "exit"}}))).unwrap();
    o.validate().unwrap();
    assert_eq!(
        o.trigger,
        Trigger::Exit {
            min_minutes: 0,
            max_minutes: 1440
        }
    );
}

#[test]
fn below_threshold_is_explained_by_the_best_rejected_candidate() {
    let never = offer("never", "s", json!({"threshold": 1.0}));
    let closed = offer(
        "closed",
        "s",
        json!({"ends_at": "2026-01-01T00:00:00Z", "category": "tea"}),
    );
    // Either order of the candidates: the scored one explains.
    let mut w = World::new(vec![closed.clone(), never.clone()]);
    w.onboard();
    let d = w.fix(STORE);
    assert_eq!(d.offer_id.as_ref().unwrap().as_str(), "never", "{d:?}");
    assert_eq!(code(&d), "below_threshold");
    let mut w = World::new(vec![never, closed]);
    w.onboard();
    let d = w.fix(STORE);
    assert_eq!(d.verdict, Verdict::Suppressed);
    assert_eq!(d.candidates.len(), 2);
    // The scored candidate explains the decision, over the one that was never scored.
    assert_eq!(d.offer_id.as_ref().unwrap().as_str(), "never");
    assert_eq!(code(&d), "below_threshold");
    let s = d.score.expect("scored");
    assert!(s > 0.0 && s < 1.0, "{s}");
    assert_eq!(
        d.context.as_ref().map(|c| c.daypart.as_str()),
        Some("midday")
    );
    let closed = d
        .candidates
        .iter()
        .find(|c| c.offer_id.as_str() == "closed")
        .unwrap();
    assert_eq!(
        closed.reason.as_ref().map(Reason::code),
        Some("outside_schedule")
    );
    assert_eq!(closed.score, None);
}

#[test]
fn the_higher_score_wins_and_the_decision_explains_its_store() {
    let mut w = World::new(vec![offer("o", "m", json!({}))]);
    w.onboard();
    let d = w.fix(MALL);
    assert_eq!(d.verdict, Verdict::Sent);
    assert_eq!(d.store_id.as_ref().unwrap().as_str(), "m");
    // The distance is measured to the polygon's centre, not to (0, 0).
    let c = &d.candidates[0];
    assert!(c.distance_m < 5.0, "{}", c.distance_m);
    let ctx = d.context.expect("the context at the chosen store");
    assert_eq!(ctx.weekday, "Fri");
    assert!(!ctx.cell.is_empty());
}

#[test]
fn a_disabled_or_missing_push_target_sends_nothing() {
    let mut w = World::new(vec![offer("o", "s", json!({}))]);
    for p in ["location", "push"] {
        w.consent(p, true);
    }
    let d = w.fix(STORE);
    assert_eq!(
        (d.verdict, code(&d)),
        (Verdict::Suppressed, "no_push_target")
    );
    let mut w = World::new(vec![offer("o", "s", json!({}))]);
    w.onboard();
    let mut t = w.state.push.clone().unwrap();
    t.disabled = true;
    w.state.push = Some(t);
    let d = w.fix(STORE);
    assert_eq!(
        (d.verdict, code(&d)),
        (Verdict::Suppressed, "no_push_target")
    );
    let mut w = World::new(vec![offer("o", "s", json!({}))]);
    w.onboard();
    let out = w.feed(json!({"type": "location", "lat": STORE.0, "lon": STORE.1, "accuracy_m": 5}));
    let push = out.push.expect("an enabled target is sent to");
    assert_eq!(push.token, "t1");
    assert_eq!(Some(push.delivery_id), out.decision.unwrap().delivery_id);
}

#[test]
fn outcomes_are_logged_for_opens_redemptions_and_purchases_only() {
    let w = World::new(vec![offer("o", "s", json!({}))]);
    let user = Id::parse("u").unwrap();
    let ev = |v: Value| Event::from_json(&v, Some(&user), now()).unwrap();
    let at = now().to_rfc3339();
    let opened = ev(
        json!({"event_id": "a", "type": "notification_opened", "at": at, "offer_id": "o", "delivery_id": "d-1"}),
    );
    let o = outcome_of(&w.catalog, &opened).expect("an open is an outcome");
    assert_eq!(o.kind, OutcomeKind::Opened);
    assert_eq!(o.category.as_deref(), Some("coffee"), "from the catalog");
    assert_eq!(o.delivery_id.as_deref(), Some("d-1"));
    let bought = ev(
        json!({"event_id": "b", "type": "purchase", "at": at, "product_id": "p", "category": "tea"}),
    );
    assert_eq!(
        outcome_of(&w.catalog, &bought).unwrap().kind,
        OutcomeKind::Purchased
    );
    let viewed = ev(json!({"event_id": "c", "type": "view", "at": at, "product_id": "p"}));
    assert!(outcome_of(&w.catalog, &viewed).is_none());
}

/// One visit to `store` at `w.now` (a fix inside), then a confirmed exit (two fixes away,
/// a minute apart); answers the enter's decision.
fn visit(w: &mut World, store: (f64, f64)) -> Decision {
    let d = w.fix(store);
    for _ in 0..2 {
        w.now += Duration::minutes(1);
        w.fix(AWAY);
    }
    assert!(w.state.fences.is_empty(), "the visit ended");
    d
}

#[test]
fn an_nth_visit_offer_fires_on_that_visit_only_and_counts_expire() {
    let mut w = World::new(vec![offer(
        "second",
        "s",
        json!({"nth_visit": 2, "reeligible_after_hours": 0}),
    )]);
    w.onboard();
    let d = visit(&mut w, STORE);
    assert_eq!(code(&d), "visit_number");
    assert_eq!(
        d.candidates[0].reason,
        Some(Reason::VisitNumber { visit: 1, needs: 2 })
    );
    w.now += Duration::hours(3);
    let d = visit(&mut w, STORE);
    assert_eq!(d.verdict, Verdict::Sent, "{d:?}");
    w.now += Duration::hours(3);
    assert_eq!(code(&visit(&mut w, STORE)), "visit_number");
    assert_eq!(w.state.visits[&Id::parse("s").unwrap()].count, 3);
    // Counts are kept 90 days after the last visit: after that a visit is the first again.
    w.now += Duration::days(91);
    visit(&mut w, STORE);
    assert_eq!(w.state.visits[&Id::parse("s").unwrap()].count, 1);
    w.now += Duration::hours(3);
    assert_eq!(visit(&mut w, STORE).verdict, Verdict::Sent);
    // Location consent withdrawn: the counts go with the rest of presence.
    w.consent("location", false);
    assert!(w.state.visits.is_empty());
    // A bad number is refused by name.
    let bad = offer("o", "s", json!({"nth_visit": 0}));
    let o: Offer = parse_json(&bad).unwrap();
    assert_eq!(o.validate().unwrap_err().field, "nth_visit");
}

#[test]
fn a_once_per_store_day_offer_skips_a_second_visit_the_same_local_day() {
    let mut w = World::new(vec![
        offer(
            "daily",
            "s",
            json!({"once_per": "store_day", "reeligible_after_hours": 0}),
        ),
        offer("plain", "m", json!({"reeligible_after_hours": 0})),
    ]);
    w.onboard();
    assert_eq!(visit(&mut w, STORE).verdict, Verdict::Sent);
    assert_eq!(visit(&mut w, MALL).verdict, Verdict::Sent);
    w.now += Duration::hours(3); // 15:00 in Helsinki, the same day
    let d = visit(&mut w, STORE);
    assert_eq!(code(&d), "once_per_store_day", "{d:?}");
    assert_eq!(
        visit(&mut w, MALL).verdict,
        Verdict::Sent,
        "once per visit: a second visit fires again"
    );
    // 23:30 in Helsinki is still the same local day; 00:30 is the next.
    w.now = "2026-11-20T21:30:00Z".parse().unwrap();
    assert_eq!(code(&visit(&mut w, STORE)), "once_per_store_day");
    w.now = "2026-11-20T22:30:00Z".parse().unwrap();
    assert_eq!(visit(&mut w, STORE).verdict, Verdict::Sent);
    let daily: Offer = parse_json(&offer("o", "s", json!({"once_per": "store_day"}))).unwrap();
    assert_eq!(
        serde_json::to_value(&daily).unwrap()["once_per"],
        "store_day"
    );
    assert!(parse_json::<Offer>(&offer("o", "s", json!({"once_per": "week"}))).is_err());
}

#[test]
fn an_exit_confirmed_exactly_at_the_presence_lifetime_is_real_and_one_after_it_expired() {
    let bye = || {
        vec![offer(
            "bye",
            "s",
            json!({"trigger": {"type": "exit"}, "reeligible_after_hours": 0}),
        )]
    };
    for (extra, expired) in [(Duration::zero(), false), (Duration::seconds(1), true)] {
        let mut w = World::new(bye());
        w.onboard();
        let t0 = w.now;
        w.fix(STORE);
        // Silent, then two fixes away a minute apart; the second confirms the exit.
        w.now = t0 + crate::trigger::PRESENCE_TTL - Duration::minutes(1) + extra;
        w.fix(AWAY);
        w.now += Duration::minutes(1);
        let d = w.fix(AWAY);
        assert_eq!(
            changes(&d),
            [("s".into(), PresenceTransition::Exit, Some(0), expired)],
            "{extra}"
        );
        assert_eq!(
            d.verdict == Verdict::Sent,
            !expired,
            "an exit offer fires after a real exit only: {d:?}"
        );
    }
}

#[test]
fn an_offer_that_needs_the_store_open_waits_for_its_opening_hours() {
    let offers = || {
        vec![
            offer(
                "open",
                "b",
                json!({"require_open": true, "reeligible_after_hours": 0}),
            ),
            offer(
                "any",
                "s",
                json!({"require_open": false, "reeligible_after_hours": 0}),
            ),
            offer(
                "cafe",
                "m",
                json!({"require_open": true, "reeligible_after_hours": 0}),
            ),
        ]
    };
    let mut w = World::new(offers());
    w.onboard();
    // 12:00 in Helsinki: the bar (18:00-23:00) is closed.
    let d = visit(&mut w, BAR);
    assert_eq!(code(&d), "store_closed", "{d:?}");
    // An offer that does not ask, and a store without opening hours (counted open): sent.
    assert_eq!(visit(&mut w, STORE).verdict, Verdict::Sent);
    assert_eq!(visit(&mut w, MALL).verdict, Verdict::Sent);
    // 19:00: open.
    w.now = "2026-11-20T17:00:00Z".parse().unwrap();
    assert_eq!(visit(&mut w, BAR).verdict, Verdict::Sent);
}

#[test]
fn a_score_equal_to_the_threshold_is_enough() {
    // The score this fix gets, measured with no threshold...
    let mut w = World::new(vec![offer("o", "s", json!({}))]);
    w.onboard();
    let s = w.fix(STORE).score.expect("scored");
    // ...is sent with a threshold of exactly that score, and not with one just above.
    for (threshold, sent) in [(s, true), (s + 1e-9, false)] {
        let mut w = World::new(vec![offer("o", "s", json!({"threshold": threshold}))]);
        w.onboard();
        let d = w.fix(STORE);
        assert_eq!(d.score, Some(s), "the same inputs score the same");
        assert_eq!(d.verdict == Verdict::Sent, sent, "{threshold}: {d:?}");
    }
}

#[test]
fn a_push_sent_at_once_is_not_deferred_and_keeps_the_default_priority() {
    let mut w = World::new(vec![offer("o", "s", json!({}))]);
    w.onboard();
    let at = w.now;
    let out = w.feed(json!({"type": "location", "lat": STORE.0, "lon": STORE.1, "accuracy_m": 5}));
    let push = out.push.expect("sent");
    assert!(!push.deferred, "{push:?}");
    assert_eq!(push.at, at);
    assert_eq!(push.priority, crate::campaign::Priority::High);
    let v = serde_json::to_value(&push).unwrap();
    assert!(
        v.get("deferred").is_none() && v.get("priority").is_none(),
        "{v}"
    );
}

/// `campaign_rules` on its own, one rule at a time: each blocks exactly when its limit is
/// reached (one below passes), only for its own campaign, and the daily cap counts the
/// store's local day, not UTC's.
#[test]
fn campaign_rules_block_on_each_rule_at_its_limit_and_no_sooner() {
    let tz = chrono_tz::Europe::Helsinki;
    let id = Id::parse("c").unwrap();
    let with = |extra: Value| {
        catalog(vec![offer("o", "s", json!({}))])
            .with_campaigns(vec![campaign(extra)])
            .unwrap()
    };
    let rule = |cat: &Catalog, state: &UserState| {
        campaign_rules(cat, 0, state, now(), tz)
            .err()
            .map(|r| r.code())
    };
    let fresh = UserState::default();

    // No defined campaign: nothing to check.
    assert_eq!(
        rule(&catalog(vec![offer("o", "s", json!({}))]), &fresh),
        None
    );
    // Status and schedule.
    assert_eq!(rule(&with(json!({})), &fresh), None);
    assert_eq!(
        rule(&with(json!({"status": "paused"})), &fresh),
        Some("campaign_not_active")
    );
    assert_eq!(
        rule(&with(json!({"starts_at": "2026-11-20T10:00:01Z"})), &fresh),
        Some("outside_schedule")
    );
    assert_eq!(
        rule(&with(json!({"ends_at": "2026-11-20T10:00:00Z"})), &fresh),
        Some("outside_schedule")
    );

    // A budget, a send rate and a coupon pool block only once found spent or empty.
    let cat = with(json!({"budget": 10, "max_per_minute": 5, "coupon_pool": true}));
    assert_eq!(rule(&cat, &fresh), None);
    cat.mark_spent(&crate::campaign::rate_key(
        &id,
        now() - Duration::minutes(1),
    ));
    assert_eq!(
        rule(&cat, &fresh),
        None,
        "last minute's rate is not this one's"
    );
    cat.mark_spent(&crate::campaign::rate_key(&id, now()));
    assert_eq!(rule(&cat, &fresh), Some("rate_limited"));
    let cat = with(json!({"budget": 10, "coupon_pool": true}));
    cat.mark_spent(&crate::campaign::rate_key(&id, now()));
    assert_eq!(
        rule(&cat, &fresh),
        None,
        "no send rate set: its key means nothing"
    );
    cat.mark_coupons_out(&id);
    assert_eq!(rule(&cat, &fresh), Some("coupons_exhausted"));
    cat.mark_spent(&id);
    assert_eq!(rule(&cat, &fresh), Some("budget_spent"));
    let cat = with(json!({}));
    cat.mark_spent(&id);
    cat.mark_coupons_out(&id);
    assert_eq!(
        rule(&cat, &fresh),
        None,
        "no budget and no pool: those marks mean nothing"
    );

    // Sends per user, ever: `total` is reached at `total`, not before.
    let cat = with(json!({"per_user": {"total": 3}}));
    let mut state = UserState::default();
    state.campaign_sends.insert(id.clone(), 2);
    assert_eq!(rule(&cat, &state), None);
    state.campaign_sends.insert(id.clone(), 3);
    assert_eq!(rule(&cat, &state), Some("campaign_capped"));
    state.campaign_sends.clear();
    state.campaign_sends.insert(Id::parse("other").unwrap(), 9);
    assert_eq!(rule(&cat, &state), None, "another campaign's sends");

    // Sends per user per local day (NOW is 12:00 in Helsinki, UTC+2).
    let cat = with(json!({"per_user": {"per_day": 2}}));
    let send = |at: &str, campaign: &str| SendRecord {
        at: at.parse().unwrap(),
        offer_id: Id::parse("o").unwrap(),
        delivery_id: format!("d-{at}-{campaign}"),
        held_out: false,
        campaign_id: Some(Id::parse(campaign).unwrap()),
        store_id: None,
    };
    let mut state = UserState::default();
    // 00:30 local today (22:30 UTC the day before): counts.
    state.sends.push(send("2026-11-19T22:30:00Z", "c"));
    // 23:30 local yesterday (21:30 UTC): does not, nor another campaign's send today.
    state.sends.push(send("2026-11-19T21:30:00Z", "c"));
    state.sends.push(send("2026-11-20T08:00:00Z", "other"));
    state.sends.push(send("2026-11-20T08:30:00Z", "other"));
    assert_eq!(rule(&cat, &state), None, "one of two sent today");
    state.sends.push(send("2026-11-20T09:00:00Z", "c"));
    assert_eq!(rule(&cat, &state), Some("campaign_capped"));
}

/// A campaign's sends per user, ever (`per_user.total`), are counted in the state one per
/// send, and the count stops the campaign at its total, in whichever store.
#[test]
fn a_campaigns_sends_per_user_are_counted_and_stop_it_at_its_total() {
    let mut w = World::new(vec![
        offer("o1", "s", json!({})),
        offer("o2", "m", json!({})),
        offer("o3", "b", json!({})),
    ]);
    w.catalog = w
        .catalog
        .with_campaigns(vec![campaign(json!({"per_user": {"total": 2}}))])
        .unwrap();
    let c = Id::parse("c").unwrap();
    w.onboard();
    assert_eq!(w.fix(STORE).verdict, Verdict::Sent);
    assert_eq!(w.state.campaign_sends.get(&c), Some(&1));
    w.now += Duration::minutes(5);
    assert_eq!(w.fix(MALL).verdict, Verdict::Sent);
    assert_eq!(w.state.campaign_sends.get(&c), Some(&2));
    // 19:00 in Helsinki: the bar is open, the campaign has sent its two.
    w.now += Duration::hours(7);
    let d = w.fix(BAR);
    assert_ne!(d.verdict, Verdict::Sent);
    assert_eq!(code(&d), "campaign_capped", "{d:?}");
    assert_eq!(w.state.campaign_sends.get(&c), Some(&2));
}

/// The global control group (`policy.global_control`) holds a person out of every offer,
/// whatever the campaign's own holdout.
#[test]
fn the_global_control_group_holds_out_of_every_offer() {
    let mut w = World::new(vec![offer("o", "s", json!({}))]);
    w.catalog.policy.global_control = 1.0;
    w.onboard();
    let d = w.fix(STORE);
    assert_ne!(d.verdict, Verdict::Sent);
    assert_eq!(code(&d), "global_control", "{d:?}");
}

/// A push carries the offer's shared coupon code, unless its campaign gives each push a
/// code of its pool: that code is chosen in the send's commit, so the push leaves
/// `decide` without one.
#[test]
fn a_pooled_campaigns_push_leaves_decide_without_the_shared_code() {
    for (pooled, expected) in [(false, Some("SHARED")), (true, None)] {
        let mut w = World::new(vec![offer("o", "s", json!({"coupon": "SHARED"}))]);
        w.catalog = w
            .catalog
            .with_campaigns(vec![campaign(json!({"coupon_pool": pooled}))])
            .unwrap();
        w.onboard();
        let out =
            w.feed(json!({"type": "location", "lat": STORE.0, "lon": STORE.1, "accuracy_m": 5}));
        let push = out.push.expect("sent");
        assert_eq!(push.coupon.as_deref(), expected, "pooled: {pooled}");
    }
}
