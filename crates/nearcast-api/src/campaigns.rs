//! `/v1/admin/campaigns`: campaigns with their status, budget and variants, and previews
//! of the exact push payloads their variants make.

use crate::auth::Actor;
use crate::error::ApiError;
use crate::{AppState, json_body, parse_with_id, path_id};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nearcast_core::campaign::{Campaign, Priority, Status, render_text};
use nearcast_core::coupon::{CouponCounts, Redemption, Upload, check_code, parse_codes};
use nearcast_core::decision::Push;
use nearcast_core::event::{Fields, Platform};
use nearcast_core::ids::Id;
use nearcast_core::payload::{MAX_PAYLOAD_BYTES, build_message, device_payload};
use serde::Serialize;
use serde_json::{Value, json};

/// A campaign as the API answers it: the campaign, what it has sent, what is left of its
/// budget, and the offers that name it.
#[derive(Serialize)]
struct View {
    #[serde(flatten)]
    campaign: Campaign,
    sent: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_left: Option<u64>,
    offers: Vec<Id>,
    /// The coupon pool's counts, for a campaign with a pool or codes.
    #[serde(skip_serializing_if = "Option::is_none")]
    coupons: Option<CouponCounts>,
}

fn view(engine: &AppState, campaign: Campaign, sent: u64) -> View {
    let offers = engine
        .catalog()
        .offers
        .iter()
        .filter(|o| o.campaign_id == campaign.id)
        .map(|o| o.id.clone())
        .collect();
    View {
        budget_left: campaign.budget.map(|b| b.saturating_sub(sent)),
        campaign,
        sent,
        offers,
        coupons: None,
    }
}

/// [`view`] with the coupon pool's counts (one more read).
async fn full_view(engine: &AppState, campaign: Campaign, sent: u64) -> Result<View, ApiError> {
    let counts = engine.coupon_counts(&campaign.id).await?;
    let mut v = view(engine, campaign, sent);
    if v.campaign.coupon_pool || counts.total > 0 {
        v.coupons = Some(counts);
    }
    Ok(v)
}

#[utoipa::path(
    get,
    path = "/v1/admin/campaigns",
    tag = "campaigns",
    responses((status = 200, description = "Campaigns with their sends, budget left and offers", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn list(State(engine): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut views = Vec::new();
    for (c, sent) in engine.campaigns().await? {
        views.push(full_view(&engine, c, sent).await?);
    }
    Ok(Json(json!({ "campaigns": views })))
}

#[utoipa::path(
    get,
    path = "/v1/admin/campaigns/{id}",
    tag = "campaigns",
    params(("id" = String, Path, example = "cmp-rainy-day", description = "campaign id")),
    responses((status = 200, description = "The campaign", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn get_one(
    State(engine): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id("id", &id)?;
    let (c, sent) = engine.campaign(&id).await?;
    Ok(Json(full_view(&engine, c, sent).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/admin/campaigns",
    tag = "campaigns",
    request_body(content = serde_json::Value, content_type = "application/json", description = "A campaign (docs/formats.md#campaign)", example = json!({"id": "cmp-new", "name": "Morning coffee", "status": "draft", "holdout": 0.1, "budget": 100, "variants": [{"id": "a", "default_locale": "en", "content": {"en": {"title": "Coffee at {store}", "body": "Half price with {coupon}"}}}]})),
    responses((status = 201, description = "Created", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn create(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c: Campaign = parse_with_id(&body, None)?;
    if engine.catalog().campaign(&c.id).is_some() {
        return Err(ApiError::Conflict(format!(
            "campaign {} exists; use PUT to replace it",
            c.id
        )));
    }
    engine.put_campaign(c.clone(), &actor).await?;
    Ok((StatusCode::CREATED, Json(view(&engine, c, 0))).into_response())
}

#[utoipa::path(
    put,
    path = "/v1/admin/campaigns/{id}",
    tag = "campaigns",
    params(("id" = String, Path, example = "cmp-rainy-day", description = "campaign id")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "A campaign", example = json!({"id": "cmp-rainy-day", "name": "Morning coffee", "status": "draft", "holdout": 0.1, "budget": 100, "variants": [{"id": "a", "default_locale": "en", "content": {"en": {"title": "Coffee at {store}", "body": "Half price with {coupon}"}}}]})),
    responses((status = 200, description = "Saved", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn put(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = path_id("id", &id)?;
    let c: Campaign = parse_with_id(&body, Some(id.as_str()))?;
    engine.put_campaign(c, &actor).await?;
    let (c, sent) = engine.campaign(&id).await?;
    Ok(Json(full_view(&engine, c, sent).await?).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/admin/campaigns/{id}",
    tag = "campaigns",
    params(("id" = String, Path, example = "cmp-rainy-day", description = "campaign id")),
    responses((status = 204, description = "Deleted"))
)]
pub(crate) async fn delete(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id("id", &id)?;
    engine.delete_campaign(&id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/admin/campaigns/{id}/status {"status": "paused"}`.
#[utoipa::path(
    post,
    path = "/v1/admin/campaigns/{id}/status",
    tag = "campaigns",
    params(("id" = String, Path, example = "cmp-rainy-day", description = "campaign id")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "`{\"status\": \"draft\" | \"active\" | \"paused\" | \"ended\"}`", example = json!({"status": "paused"})),
    responses((status = 200, description = "The campaign", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn set_status(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = path_id("id", &id)?;
    let v = json_body(&body)?;
    let mut f = Fields::of(&v).map_err(ApiError::Invalid)?;
    let s = f.str("status", 16).map_err(ApiError::Invalid)?;
    let status: Status = serde_json::from_value(Value::String(s.to_string())).map_err(|_| {
        ApiError::invalid(
            "status",
            format!("must be draft, active, paused or ended, got {s:?}"),
        )
    })?;
    f.finish().map_err(ApiError::Invalid)?;
    let c = engine.set_campaign_status(&id, status, &actor).await?;
    let sent = engine.campaign(&id).await?.1;
    Ok(Json(full_view(&engine, c, sent).await?).into_response())
}

/// `POST /v1/admin/campaigns/{id}/preview`: the exact APNs and FCM payloads of each
/// variant (or, without variants, of each offer of the campaign), as a device would
/// receive them, with their sizes. Body (all optional): `store_id` (for `{store}`; default
/// the first store the campaign's first offer runs at), `locale`, `coupon` (for
/// `{coupon}`; default the offer's code).
/// The code a preview of a coupon-pool campaign shows when none is given.
pub const SAMPLE_COUPON: &str = "SAMPLE-CODE";

#[utoipa::path(
    post,
    path = "/v1/admin/campaigns/{id}/preview",
    tag = "campaigns",
    params(("id" = String, Path, example = "cmp-rainy-day", description = "campaign id")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "`{\"store_id\", \"locale\", \"coupon\"}`, all optional", example = json!({"locale": "fi-FI", "coupon": "RAIN-7"})),
    responses((status = 200, description = "Each variant's APNs and FCM payloads", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn preview(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = path_id("id", &id)?;
    let v = if body.is_empty() {
        json!({})
    } else {
        json_body(&body)?
    };
    let mut f = Fields::of(&v).map_err(ApiError::Invalid)?;
    let store_id = f.opt_id("store_id").map_err(ApiError::Invalid)?;
    let locale = f
        .opt_str("locale", 35)
        .map_err(ApiError::Invalid)?
        .map(|l| {
            nearcast_core::campaign::parse_locale(l)
                .map_err(|e| ApiError::Invalid(e.within("locale")))
        })
        .transpose()?;
    let coupon = f
        .opt_str("coupon", 64)
        .map_err(ApiError::Invalid)?
        .map(str::to_string);
    f.finish().map_err(ApiError::Invalid)?;

    let (campaign, _) = engine.campaign(&id).await?;
    let cat = engine.catalog();
    let offers: Vec<_> = cat.offers.iter().filter(|o| o.campaign_id == id).collect();
    let store = match &store_id {
        Some(s) => Some(
            cat.store_by_id(s)
                .ok_or_else(|| ApiError::invalid("store_id", format!("no store with id {s:?}")))?,
        ),
        None => offers.first().and_then(|o| {
            o.store_ids
                .iter()
                .find_map(|s| cat.store_by_id(s))
                .or_else(|| {
                    cat.stores()
                        .find(|s| o.store_categories.contains(&s.category))
                })
        }),
    };
    let store_name = store.map_or("{store}", |s| s.name.as_str());
    let offer = offers.first();
    // The code shown: the one asked for, else the offer's shared code, else, for a campaign
    // whose pushes each take a code from its pool, a sample in the pool's alphabet (the
    // codes themselves are not shown to whoever previews).
    let coupon = coupon
        .or_else(|| offer.and_then(|o| o.coupon.clone()))
        .or_else(|| campaign.coupon_pool.then(|| SAMPLE_COUPON.to_string()));
    // (variant id, locale, title, body, deep link, image)
    type Text = (
        Option<Id>,
        Option<String>,
        String,
        String,
        Option<String>,
        Option<String>,
        Priority,
    );
    let texts: Vec<Text> = if campaign.variants.is_empty() {
        offers
            .iter()
            .map(|o| {
                let (t, b) = (o.title.clone(), o.body.clone());
                (None, None, t, b, None, None, Priority::default())
            })
            .collect()
    } else {
        campaign
            .variants
            .iter()
            .map(|v| {
                let (l, m) = v.message_for(locale.as_deref());
                (
                    Some(v.id.clone()),
                    Some(l.to_string()),
                    m.title.clone(),
                    m.body.clone(),
                    v.deep_link.clone(),
                    v.image_url.clone(),
                    v.priority,
                )
            })
            .collect()
    };
    let mut previews = Vec::with_capacity(texts.len());
    for (variant_id, locale, title, body, deep_link, image_url, priority) in texts {
        let title = render_text(&title, store_name, coupon.as_deref());
        let body = render_text(&body, store_name, coupon.as_deref());
        let push = Push {
            delivery_id: "d-0000000000000000".into(),
            user_id: Id::parse("preview").expect("valid id"),
            platform: Platform::Apns,
            token: String::new(),
            endpoint: None,
            offer_id: offer.map_or_else(|| id.clone(), |o| o.id.clone()),
            campaign_id: id.clone(),
            store_id: store.map_or_else(|| id.clone(), |s| s.id.clone()),
            title: title.clone(),
            body: body.clone(),
            coupon: coupon.clone(),
            variant_id: variant_id.clone(),
            locale: locale.clone(),
            deep_link,
            image_url,
            priority,
            deferred: false,
            score: 0.0,
            model_version: String::new(),
            at: engine.now(),
        };
        let mut out = serde_json::Map::new();
        let mut sizes = serde_json::Map::new();
        let mut cut = false;
        for (name, key) in [("apns", "APNS"), ("fcm", "GCM")] {
            let message = build_message(&push, key)
                .map_err(|e| ApiError::invalid("variants", e.to_string()))?;
            let payload = device_payload(&push, key)
                .map_err(|e| ApiError::invalid("variants", e.to_string()))?;
            let (t, b) = if key == "GCM" {
                (
                    &payload["notification"]["title"],
                    &payload["notification"]["body"],
                )
            } else {
                (
                    &payload["aps"]["alert"]["title"],
                    &payload["aps"]["alert"]["body"],
                )
            };
            cut |= t.as_str() != Some(title.as_str()) || b.as_str() != Some(body.as_str());
            sizes.insert(name.into(), json!(message.len()));
            out.insert(name.into(), payload);
        }
        previews.push(json!({
            "variant_id": variant_id,
            "locale": locale,
            "priority": priority,
            // What goes beside the payload: APNs takes its priority as a header.
            "apns_headers": {"apns-priority": priority.apns()},
            "title": title,
            "body": body,
            "payloads": out,
            "bytes": sizes,
            "max_bytes": MAX_PAYLOAD_BYTES,
            "cut": cut,
        }));
    }
    Ok(Json(json!({
        "campaign_id": id,
        "store_id": store.map(|s| s.id.clone()),
        "previews": previews,
    })))
}

/// `POST /v1/admin/campaigns/{id}/coupons[?dry_run=true]`: a pool of unique codes as CSV
/// (one code per line, an optional `code` header). Every row is checked first (format,
/// repeats within the file, codes already in any pool); one bad row and nothing is added,
/// with every bad row reported (`rows[<line>].code`). Answers the pool's counts.
#[utoipa::path(
    post,
    path = "/v1/admin/campaigns/{id}/coupons",
    tag = "coupons",
    params(("id" = String, Path, example = "cmp-rainy-day", description = "campaign id"), ("dry_run" = Option<bool>, Query, description = "check only")),
    request_body(content = String, content_type = "text/csv", description = "One code per line, optional header `code`"),
    responses((status = 200, description = "Dry run: the codes would be added", body = serde_json::Value, content_type = "application/json"), (status = 201, description = "Added; the pool counts", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn upload_coupons(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|_| ApiError::TooLargeFor(crate::MAX_IMPORT_BODY))?;
    let id = path_id("id", &id)?;
    let mut dry_run = false;
    for (k, v) in &q {
        match (k.as_str(), v.as_str()) {
            ("dry_run", "true" | "1") => dry_run = true,
            ("dry_run", "false" | "0") => dry_run = false,
            ("dry_run", _) => return Err(ApiError::invalid("dry_run", "must be true or false")),
            (other, _) => {
                return Err(ApiError::invalid(
                    other,
                    "is not a known parameter (dry_run)",
                ));
            }
        }
    }
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::invalid("body", "is not valid UTF-8"))?;
    let rows_error = |rejected: Vec<nearcast_core::coupon::RejectedCode>, total: usize| {
        let first = &rejected[0];
        ApiError::Rows {
            field: format!("rows[{}].code", first.line),
            reason: format!(
                "{} of {total} codes are refused; nothing was added",
                rejected.len()
            ),
            rejected: serde_json::to_value(&rejected).unwrap_or_default(),
        }
    };
    let codes = match parse_codes(text).map_err(ApiError::Invalid)? {
        Ok(codes) => codes,
        Err(rejected) => {
            let total = text.lines().filter(|l| !l.trim().is_empty()).count();
            return Err(rows_error(rejected, total));
        }
    };
    match engine.upload_coupons(&id, &codes, &actor, dry_run).await? {
        Upload::Added(n) => {
            let counts = engine.coupon_counts(&id).await?;
            let status = if dry_run {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((
                status,
                Json(json!({
                    "campaign_id": id,
                    "dry_run": dry_run,
                    "applied": !dry_run,
                    "codes": n,
                    "coupons": counts,
                })),
            )
                .into_response())
        }
        Upload::Existing(existing) => {
            // Report them by line, as the file has them.
            let lines = line_numbers(text);
            let rejected = existing
                .into_iter()
                .map(|c| nearcast_core::coupon::RejectedCode {
                    line: lines.get(c.as_str()).copied().unwrap_or(0),
                    code: c,
                    reason: "is in a coupon pool already (codes are never given twice)".into(),
                })
                .collect();
            Err(rows_error(rejected, codes.len()))
        }
    }
}

fn line_numbers(text: &str) -> std::collections::HashMap<&str, usize> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (l.trim().trim_matches('"').trim(), i + 1))
        .collect()
}

/// `GET /v1/admin/campaigns/{id}/coupons`: the pool's counts.
#[utoipa::path(
    get,
    path = "/v1/admin/campaigns/{id}/coupons",
    tag = "coupons",
    params(("id" = String, Path, example = "cmp-rainy-day", description = "campaign id")),
    responses((status = 200, description = "The pool counts", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn coupon_counts(
    State(engine): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id("id", &id)?;
    engine.campaign(&id).await?;
    let counts = engine.coupon_counts(&id).await?;
    Ok(Json(json!({
        "campaign_id": id,
        "total": counts.total,
        "issued": counts.issued,
        "free": counts.free(),
        "redeemed": counts.redeemed,
    }))
    .into_response())
}

/// `POST /v1/admin/redemptions {"code": "...", "order_id": "..."}`, for a till or a web
/// shop: 200 the first time a code that was sent is redeemed (with its campaign, offer
/// and delivery; the outcome is logged against the delivery for results), 409 every
/// later time (`already_redeemed`, with when) or for a code never sent (`not_issued`),
/// 404 for a code no pool has. A retry with the same `order_id` after a lost answer gets
/// 200 again, marked `"repeated": true`.
#[utoipa::path(
    post,
    path = "/v1/admin/redemptions",
    tag = "coupons",
    request_body(content = serde_json::Value, content_type = "application/json", description = "`{\"code\": \"..\", \"order_id\": \"..\"}`", example = json!({"code": "RAIN-62UPJ4", "order_id": "till-1"})),
    responses((status = 200, description = "Redeemed (or the same order again)", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn redeem(
    State(engine): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = json_body(&body)?;
    let mut f = Fields::of(&v).map_err(ApiError::Invalid)?;
    let code = f.str("code", 200).map_err(ApiError::Invalid)?.to_string();
    check_code(&code).map_err(|e| ApiError::invalid("code", e))?;
    let order_id = f
        .opt_str("order_id", 128)
        .map_err(ApiError::Invalid)?
        .map(str::to_string);
    f.finish().map_err(ApiError::Invalid)?;
    let conflict = |code_: &str, reason: String, extra: Value| {
        let mut e = json!({"code": code_, "field": "code", "reason": reason});
        if let (Some(m), Value::Object(x)) = (e.as_object_mut(), extra) {
            m.extend(x);
        }
        (StatusCode::CONFLICT, Json(json!({ "error": e }))).into_response()
    };
    Ok(
        match engine.redeem_coupon(&code, order_id.as_deref()).await? {
            Redemption::Redeemed {
                campaign_id,
                offer_id,
                delivery_id,
                ..
            } => Json(json!({
                "code": code,
                "result": "redeemed",
                "campaign_id": campaign_id,
                "offer_id": offer_id,
                "delivery_id": delivery_id,
                "order_id": order_id,
            }))
            .into_response(),
            Redemption::AlreadyRedeemed {
                redeemed_at,
                order_id: first,
                ..
            } if first.is_some() && first == order_id => Json(json!({
                "code": code,
                "result": "redeemed",
                "repeated": true,
                "redeemed_at": redeemed_at,
                "order_id": order_id,
            }))
            .into_response(),
            Redemption::AlreadyRedeemed { redeemed_at, .. } => conflict(
                "already_redeemed",
                format!("code {code} was redeemed at {}", redeemed_at.to_rfc3339()),
                json!({ "redeemed_at": redeemed_at }),
            ),
            Redemption::NotIssued => conflict(
                "not_issued",
                format!("code {code} was never sent to anyone"),
                json!({}),
            ),
            Redemption::Unknown => return Err(ApiError::NotFound(format!("coupon code {code}"))),
        },
    )
}

/// `GET /v1/admin/campaigns/{id}/results[?from=&to=&by=day|store|variant]`: treated
/// against held out (and the global control group), per campaign and variant, on visits,
/// redemptions, purchases and revenue within the campaign's conversion window, each
/// difference with its 95 % interval and a verdict; the variants compared by chi-squared;
/// the funnel; and the breakdown asked for. Days are the stores' local days, `from` and
/// `to` inclusive.
#[utoipa::path(
    get,
    path = "/v1/admin/campaigns/{id}/results",
    tag = "results",
    params(
        ("id" = String, Path, example = "cmp-rainy-day", description = "campaign id"),
        ("from" = Option<String>, Query, description = "first day, YYYY-MM-DD (store's local day)"),
        ("to" = Option<String>, Query, description = "last day, YYYY-MM-DD, inclusive"),
        ("by" = Option<String>, Query, description = "breakdown: day, store or variant"),
    ),
    responses((status = 200, description = "Arms, lifts with intervals, variant tests, funnel, breakdown", body = serde_json::Value, content_type = "application/json"))
)]
pub(crate) async fn results(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    use nearcast_core::campaign_results::{By, CellLevel, summarise, window_of};
    let id = path_id("id", &id)?;
    let (mut from, mut to, mut by) = (None, None, None);
    let day = |k: &str, v: &str| {
        v.parse::<chrono::NaiveDate>()
            .map_err(|_| ApiError::invalid(k, format!("must be a day as YYYY-MM-DD, got {v:?}")))
    };
    for (k, v) in &q {
        match k.as_str() {
            "from" => from = Some(day(k, v)?),
            "to" => to = Some(day(k, v)?),
            "by" => {
                by = Some(By::parse(v).ok_or_else(|| {
                    ApiError::invalid("by", format!("must be day, store or variant, got {v:?}"))
                })?);
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a known parameter (from, to, by)",
                ));
            }
        }
    }
    if let (Some(f), Some(t)) = (from, to)
        && t < f
    {
        return Err(ApiError::invalid("to", "must not be before from"));
    }
    // The catalog's copy of the campaign (no read of the store's configuration); one made
    // since the last refresh is read from the store.
    let cached = engine.catalog().campaign(&id).cloned();
    let campaign = match cached {
        Some(c) => c,
        None => engine.campaign(&id).await?.0,
    };
    // The cells the commits keep up to date: the days' roll-ups (a row per day and
    // variant), or for a breakdown by store the stores' whole months and the days at
    // either end; never the log.
    let cells = if by == Some(By::Store) {
        nearcast_core::campaign_results::store_cells(engine.store().as_ref(), &id, from, to).await
    } else {
        engine
            .store()
            .campaign_cells(&id, CellLevel::Days, from, to)
            .await
    }
    .map_err(nearcast_core::engine::EngineError::from)?;
    let r = summarise(&cells, from, to, by);
    Ok(Json(json!({
        "campaign_id": id,
        "window_hours": window_of(&campaign).num_hours(),
        "from": from,
        "to": to,
        "by": by,
        "results": r,
    }))
    .into_response())
}
