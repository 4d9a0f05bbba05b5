//! `GET /v1/admin/users/{id}/decisions`: why a person was or was not sent an offer. The
//! decisions kept for them (newest first), narrowed to one offer or campaign, each with
//! the reason the offer lost, a count per reason, and what stands in the way now (consent,
//! push target, the campaign's status) even when no decision ever considered the offer.

use crate::error::ApiError;
use crate::{AppState, path_id};
use axum::Json;
use axum::extract::{Path, Query, State};
use nearcast_core::consent::Purpose;
use nearcast_core::decision::Verdict;
use nearcast_core::ids::Id;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// Most decisions one answer lists.
const MAX_LIMIT: usize = 500;

#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}/decisions",
    tag = "users",
    params(("id" = String, Path, example = "anna", description = "user id"), ("offer_id" = Option<String>, Query, description = "an offer"), ("campaign_id" = Option<String>, Query, description = "a campaign"), ("limit" = Option<u32>, Query, description = "decisions to list, 1 to 500")),
    responses((status = 200, description = "Why the user was or was not sent an offer", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn user_decisions(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("id", &id)?;
    let (mut offer, mut campaign, mut limit) = (None::<Id>, None::<Id>, 50usize);
    for (k, v) in &q {
        match k.as_str() {
            "offer_id" => offer = Some(path_id("offer_id", v)?),
            "campaign_id" => campaign = Some(path_id("campaign_id", v)?),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "limit",
                            format!("must be a whole number from 1 to {MAX_LIMIT}"),
                        )
                    })?;
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a known parameter (offer_id, campaign_id, limit)",
                ));
            }
        }
    }
    let cat = engine.catalog();
    let campaign_of = |o: &Id| {
        cat.offer_pos
            .get(o)
            .map(|&k| cat.offers[k as usize].campaign_id.clone())
    };
    let wanted = |o: &Id| {
        offer.as_ref().is_none_or(|w| w == o)
            && campaign
                .as_ref()
                .is_none_or(|c| campaign_of(o).as_ref() == Some(c))
    };
    let data = engine.user_data(&user).await?;
    let mut rows = Vec::new();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let (mut considered, mut sent, mut held_out) = (0u64, 0u64, 0u64);
    for d in data.decisions.iter().rev() {
        // The candidate of the asked offer (or the chosen one), with its own reason.
        let chosen = d.offer_id.as_ref().filter(|o| wanted(o));
        let cand = d
            .candidates
            .iter()
            .find(|c| Some(&c.offer_id) == chosen)
            .or_else(|| d.candidates.iter().find(|c| wanted(&c.offer_id)));
        let Some(c) = cand else { continue };
        considered += 1;
        let won = d.offer_id.as_ref() == Some(&c.offer_id);
        let outcome = match (won, d.verdict) {
            (true, Verdict::Sent) => {
                sent += 1;
                "sent".to_string()
            }
            (true, Verdict::HeldOut) => {
                held_out += 1;
                "held_out".to_string()
            }
            _ => {
                let code = match &c.reason {
                    Some(r) => r.code().to_string(),
                    // Eligible and scored, but another offer was chosen.
                    None => "another_offer_chosen".to_string(),
                };
                *by_reason.entry(code.clone()).or_default() += 1;
                code
            }
        };
        if rows.len() < limit {
            rows.push(json!({
                "event_id": d.event_id,
                "at": d.at,
                "store_id": c.store_id,
                "offer_id": c.offer_id,
                "outcome": outcome,
                "why": c.reason.as_ref().map(ToString::to_string),
                "score": c.score,
                "chosen_offer_id": d.offer_id,
                "verdict": d.verdict,
                "variant_id": if won { d.variant_id.clone() } else { None },
                "catalog_version": d.catalog_version,
                "context": d.context,
            }));
        }
    }
    // What stands in the way now, whatever the log holds.
    let mut now: Vec<String> = Vec::new();
    match &data.profile {
        None => now.push("nothing is stored about this user (never seen, or erased)".into()),
        Some(p) => {
            for (purpose, what) in [
                (Purpose::Push, "no push consent"),
                (Purpose::Location, "no location consent"),
            ] {
                if !p.consents.granted(purpose) {
                    now.push(what.into());
                }
            }
            if p.push.as_ref().is_none_or(|t| t.disabled) {
                now.push("no usable push token".into());
            }
        }
    }
    let asked_campaign = campaign
        .clone()
        .or_else(|| offer.as_ref().and_then(campaign_of));
    if let Some(o) = &offer
        && !cat.offer_pos.contains_key(o)
    {
        now.push(format!("offer {o} is not in the catalog"));
    }
    if let Some(c) = asked_campaign.as_ref().and_then(|c| cat.campaign(c)) {
        if let Err(b) = c.running(engine.now()) {
            now.push(match b {
                nearcast_core::campaign::CampaignBlock::NotActive(s) => {
                    format!("campaign {} is {}", c.id, s.as_str())
                }
                nearcast_core::campaign::CampaignBlock::OutsideSchedule => {
                    format!("campaign {} is outside its schedule", c.id)
                }
            });
        }
        if c.budget.is_some() && cat.budget_spent(&c.id) {
            now.push(format!("campaign {} has spent its budget", c.id));
        }
        if c.coupon_pool {
            let counts = engine.coupon_counts(&c.id).await?;
            if counts.free() == 0 {
                now.push(format!(
                    "campaign {} has given out every coupon code ({} of {})",
                    c.id, counts.issued, counts.total
                ));
            }
        }
    }
    let summary = if considered == 0 {
        "no kept decision considered it: the user was not seen entering a fence where it runs \
         while it could trigger"
            .to_string()
    } else if let Some((code, n)) = by_reason.iter().max_by_key(|(_, n)| **n) {
        format!(
            "considered {considered} time(s): sent {sent}, held out {held_out}; most often not \
             sent because {code} ({n})"
        )
    } else {
        format!("considered {considered} time(s): sent {sent}, held out {held_out}")
    };
    Ok(Json(json!({
        "user_id": user,
        "offer_id": offer,
        "campaign_id": campaign,
        "considered": considered,
        "sent": sent,
        "held_out": held_out,
        "not_sent_by_reason": by_reason,
        "blocking_now": now,
        "summary": summary,
        "decisions": rows,
    })))
}
