//! `POST /v1/admin/simulate`: what would the live configuration decide for a hypothetical
//! user walking a given path? Runs the real engine against a throwaway in-memory store
//! seeded with the live stores, offers and policy, so nothing live is touched.
//!
//! Body: `{"user": {"consents": {"push": true, ...}, "affinities": {"coffee": 0.6},
//! "purchases": [{"product_id": "..", "category": ".."}]}, "weather": {"condition": "rain",
//! "temp_c": 4}, "events": [{"type": "location", "at": "..", "lat": .., "lon": ..,
//! "accuracy_m": ..}, ...]}`. `user` and `weather` are optional (all consents granted; the
//! live weather source). `event_id` may be left out of events.

use crate::{ApiError, AppState, json_body};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use nearcast_core::consent::{ConsentRecord, Purpose};
use nearcast_core::engine::Engine;
use nearcast_core::event::{Event, Fields, MAX_BATCH, Platform};
use nearcast_core::ids::Id;
use nearcast_core::memory::{InMemoryStateStore, RecordingNotifier};
use nearcast_core::ports::{BoxFuture, Clock, Commit, ManualClock, StateStore, WeatherSource};
use nearcast_core::state::{Purchase, PushTarget, UserState};
use nearcast_core::weather::Weather;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

struct Fixed(Weather);

impl WeatherSource for Fixed {
    fn weather(
        &self,
        _: f64,
        _: f64,
        _: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'_, Option<Weather>> {
        let w = self.0;
        Box::pin(async move { Some(w) })
    }
}

#[utoipa::path(
    post,
    path = "/v1/admin/simulate",
    tag = "simulate",
    request_body(content = serde_json::Value, content_type = "application/json", description = "A path of events and optional profile, weather and time", example = json!({"weather": {"condition": "rain", "temp_c": 4}, "events": [{"type": "location", "at": "2026-11-20T10:00:00Z", "lat": 60.1692, "lon": 24.9327, "accuracy_m": 10}]})),
    responses((status = 200, description = "What the live configuration would decide", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn simulate(
    State(live): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v = json_body(&body)?;
    let mut f = Fields::of(&v).map_err(ApiError::Invalid)?;
    let events = f
        .req("events")
        .map_err(ApiError::Invalid)?
        .as_array()
        .ok_or_else(|| ApiError::invalid("events", "must be an array"))?;
    let user_v = f.opt("user").cloned();
    let weather_v = f.opt("weather").cloned();
    f.finish().map_err(ApiError::Invalid)?;
    if events.is_empty() || events.len() > MAX_BATCH * 10 {
        return Err(ApiError::invalid(
            "events",
            format!("must hold 1 to {} events", MAX_BATCH * 10),
        ));
    }
    let weather: Arc<dyn WeatherSource> = match weather_v {
        None => live.weather(),
        Some(w) => Arc::new(Fixed(
            nearcast_core::config::parse_json::<Weather>(&w)
                .map_err(|e| ApiError::Invalid(e.within("weather")))?,
        )),
    };
    let sim_user = Id::parse("simulated-user").expect("valid id");
    let mut parsed = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let mut e = e.clone();
        if let Some(o) = e.as_object_mut() {
            o.entry("event_id")
                .or_insert_with(|| Value::String(format!("sim-{i}")));
        }
        let far = chrono::DateTime::<chrono::Utc>::MAX_UTC - chrono::Duration::days(2);
        parsed.push(
            Event::from_json(&e, Some(&sim_user), far)
                .map_err(|err| ApiError::Invalid(err.within(&format!("events[{i}]"))))?,
        );
    }
    parsed.sort_by_key(|e| e.at);
    let start = parsed.first().map(|e| e.at).expect("non-empty");
    let state = user_state(user_v.as_ref(), start)?;

    let catalog = live.catalog();
    let store = Arc::new(InMemoryStateStore::new());
    let clock = ManualClock::new(start);
    for s in catalog.stores() {
        store
            .put_store(s)
            .await
            .map_err(nearcast_core::engine::EngineError::from)?;
    }
    for o in catalog.offers.iter() {
        store
            .put_offer(o)
            .await
            .map_err(nearcast_core::engine::EngineError::from)?;
    }
    // Campaigns as they are (a draft sends nothing here either); budgets count from zero.
    let changes: Vec<nearcast_core::audit::ConfigChange> = catalog
        .campaigns
        .iter()
        .cloned()
        .map(nearcast_core::audit::ConfigChange::PutCampaign)
        .collect();
    if !changes.is_empty() {
        let entry = nearcast_core::audit::AuditEntry::new(
            start,
            &nearcast_core::audit::Actor::system("simulation"),
            "catalog.load",
        );
        store
            .apply_config(&changes, &entry)
            .await
            .map_err(nearcast_core::engine::EngineError::from)?;
    }
    store
        .put_policy(&catalog.policy)
        .await
        .map_err(nearcast_core::engine::EngineError::from)?;
    store
        .commit(&Commit {
            state: Some(state),
            ..Commit::new(sim_user.clone(), 0)
        })
        .await
        .map_err(nearcast_core::engine::EngineError::from)?;
    let engine = Engine::new(
        store,
        Arc::new(RecordingNotifier::new()),
        weather,
        Arc::new(clock.clone()) as Arc<dyn Clock>,
        live.ranker(),
    )
    .await?;
    let mut decisions = Vec::new();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent = 0u64;
    for e in &parsed {
        clock.set(e.at);
        let r = engine.process(e).await?;
        if let Some(d) = r.decision {
            if d.verdict == nearcast_core::decision::Verdict::Sent {
                sent += 1;
            } else if let Some(reason) = &d.reason {
                *by_reason.entry(reason.code().to_string()).or_default() += 1;
            }
            decisions.push(d);
        }
    }
    Ok(Json(
        json!({"decisions": decisions, "summary": {"events": parsed.len(), "sent": sent, "not_sent_by_reason": by_reason}}),
    ))
}

fn user_state(v: Option<&Value>, at: chrono::DateTime<chrono::Utc>) -> Result<UserState, ApiError> {
    let mut s = UserState {
        push: Some(PushTarget {
            platform: Platform::Fcm,
            token: "simulated".into(),
            endpoint: None,
            disabled: false,
            locale: None,
        }),
        ..UserState::default()
    };
    let grant = |s: &mut UserState, p: Purpose, g: bool| {
        s.consents.set(
            p,
            ConsentRecord {
                granted: g,
                at: at - chrono::Duration::seconds(1),
                source: "simulation".into(),
                policy_version: None,
            },
        );
    };
    for p in Purpose::ALL {
        grant(&mut s, p, true);
    }
    let Some(v) = v else { return Ok(s) };
    let mut f = Fields::of(v).map_err(|e| ApiError::Invalid(e.within("user")))?;
    if let Some(c) = f.opt("consents") {
        let obj = c
            .as_object()
            .ok_or_else(|| ApiError::invalid("user.consents", "must be an object"))?;
        for (k, g) in obj {
            let p = Purpose::parse(k)
                .map_err(|e| ApiError::Invalid(e.within(&format!("user.consents.{k}"))))?;
            let g = g.as_bool().ok_or_else(|| {
                ApiError::invalid(format!("user.consents.{k}"), "must be true or false")
            })?;
            grant(&mut s, p, g);
        }
    }
    if let Some(l) = f
        .opt_str("locale", 35)
        .map_err(|e| ApiError::Invalid(e.within("user")))?
    {
        let l = nearcast_core::campaign::parse_locale(l)
            .map_err(|e| ApiError::Invalid(e.within("user.locale")))?;
        if let Some(p) = s.push.as_mut() {
            p.locale = Some(l);
        }
    }
    if let Some(a) = f.opt("affinities") {
        let obj = a
            .as_object()
            .ok_or_else(|| ApiError::invalid("user.affinities", "must be an object"))?;
        for (k, x) in obj {
            let x = x
                .as_f64()
                .filter(|x| (0.0..=1.0).contains(x))
                .ok_or_else(|| {
                    ApiError::invalid(format!("user.affinities.{k}"), "must be a number in [0, 1]")
                })?;
            s.affinities.insert(k.clone(), x);
        }
    }
    if let Some(p) = f.opt("purchases") {
        let arr = p
            .as_array()
            .ok_or_else(|| ApiError::invalid("user.purchases", "must be an array"))?;
        for (i, item) in arr.iter().enumerate() {
            let at_field = format!("user.purchases[{i}]");
            let mut pf = Fields::of(item).map_err(|e| ApiError::Invalid(e.within(&at_field)))?;
            let product_id = pf
                .opt_id("product_id")
                .map_err(|e| ApiError::Invalid(e.within(&at_field)))?;
            let category = pf
                .opt_str("category", 64)
                .map_err(|e| ApiError::Invalid(e.within(&at_field)))?
                .map(str::to_string);
            pf.finish()
                .map_err(|e| ApiError::Invalid(e.within(&at_field)))?;
            s.add_purchase(Purchase {
                product_id,
                category,
                at,
            });
        }
    }
    f.finish()
        .map_err(|e| ApiError::Invalid(e.within("user")))?;
    Ok(s)
}
