//! Nearcast's HTTP API: one axum [`Router`] served by `nearcast serve` on one machine and by
//! the Lambda functions on AWS. Handlers parse, call the engine, and map errors; the
//! mapping to status codes lives only in [`ApiError`].
//!
//! Routes:
//! - `POST /v1/events`: a batch of 1-100 events of one user.
//! - `GET`/`PUT /v1/users/{id}/consent`, `DELETE /v1/users/{id}` (erasure).
//! - `GET /v1/users/{id}/presence`: the visits in progress (fences entered, not yet left).
//! - `/v1/admin/stores[/{id}]`, `/v1/admin/offers[/{id}]`, `/v1/admin/policy`,
//!   `POST /v1/admin/simulate`.
//! - `GET /v1/admin/store-clusters?bbox=&grid=`: the stores in a box counted on a grid (a
//!   map zoomed out draws these instead of every fence).
//! - `GET /v1/admin/results[?window_hours=24]`: per offer and model version, from the logs.
//! - `GET /v1/admin/users/{id}/export`: everything held about one person (subject access).
//! - `GET /v1/admin/model`, `POST /v1/admin/model/reload`: the models in service; load the
//!   champion again from its source (a refused artifact leaves the current one serving).
//! - `POST /v1/admin/stores/import[?format=csv|geojson&dry_run=true&time_zone=&radius_m=]`:
//!   a store file (`nearcast_core::import`), every row checked first, applied as one
//!   catalog change or not at all.
//! - `GET /v1/admin/audit[?before=<entry id>&limit=100]`: who changed what, newest first.
//! - `DELETE /v1/admin/users/{id}`: erasure on a data-protection request (admin role).
//! - `GET /healthz`.
//!
//! The admin routes need a role ([`auth`]): viewer to read and simulate, editor to change
//! stores and offers, admin for the policy, models and one person's data.

pub mod auth;
mod campaigns;
mod error;
pub mod openapi;
mod simulate;
mod why;

pub use error::ApiError;

use auth::{Actor, Role};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use nearcast_core::FieldError;
use nearcast_core::config::{CapPolicy, Offer, Store, parse_json};
use nearcast_core::consent::{Consents, Purpose};
use nearcast_core::engine::Engine;
use nearcast_core::event::{Batch, BatchError};
use nearcast_core::ids::Id;
use serde_json::{Value, json};
use std::sync::Arc;

/// Largest request body accepted (a full batch of 100 events is about 20 KB).
pub const MAX_BODY: usize = 1024 * 1024;

/// Largest store file `POST /v1/admin/stores/import` accepts (100k stores as CSV are about
/// 8 MB). API Gateway and Lambda bound it lower on AWS (6 MB per request).
pub const MAX_IMPORT_BODY: usize = 32 * 1024 * 1024;

/// Shared state of the handlers.
pub type AppState = Arc<Engine>;

/// The router for both hosts, with every admin caller an admin named `local`
/// ([`auth::Access::Open`]): for loopback without keys, and tests.
pub fn router(engine: Arc<Engine>) -> Router {
    router_with(engine, auth::Access::Open)
}

/// The router for both hosts, with admin callers known by `access`.
pub fn router_with(engine: Arc<Engine>, access: auth::Access) -> Router {
    let (router, _) = routes();
    router
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Bodies above the limit are cut off while reading, before any parsing.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Outermost: no admin handler runs, and no body is read, before the role check.
        .layer(axum::middleware::from_fn(move |req, next| {
            auth::check(access.clone(), req, next)
        }))
        .with_state(engine)
}

/// Every route with its handler, and the OpenAPI document made from the same annotations:
/// a route and its description cannot disagree (`openapi.rs`).
pub(crate) fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let limited = |(schemas, paths, m): utoipa_axum::router::UtoipaMethodRouter<AppState>| {
        (
            schemas,
            paths,
            m.layer(DefaultBodyLimit::max(MAX_IMPORT_BODY)),
        )
    };
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health))
        .routes(routes!(openapi::serve))
        .routes(routes!(post_events))
        .routes(routes!(get_consent, put_consent))
        .routes(routes!(get_presence))
        .routes(routes!(erase))
        .routes(routes!(list_stores, create_store))
        .routes(routes!(store_clusters))
        .routes(limited(routes!(import_stores)))
        .routes(routes!(get_store, put_store, delete_store))
        .routes(routes!(list_offers, create_offer))
        .routes(routes!(get_offer, put_offer, delete_offer))
        .routes(routes!(campaigns::list, campaigns::create))
        .routes(routes!(
            campaigns::get_one,
            campaigns::put,
            campaigns::delete
        ))
        .routes(routes!(campaigns::set_status))
        .routes(routes!(campaigns::preview))
        .routes(limited(routes!(
            campaigns::coupon_counts,
            campaigns::upload_coupons
        )))
        .routes(routes!(campaigns::redeem))
        .routes(routes!(campaigns::results))
        .routes(routes!(get_policy, put_policy))
        .routes(routes!(simulate::simulate))
        .routes(routes!(results))
        .routes(routes!(export_user))
        .routes(routes!(why::user_decisions))
        .routes(routes!(admin_erase))
        .routes(routes!(audit_log))
        .routes(routes!(whoami))
        .routes(routes!(model_status))
        .routes(routes!(reload_model))
        .routes(routes!(webhook_dead_letters))
        .routes(routes!(redrive_webhooks))
        .split_for_parts()
}

/// The results routes' only parameter, `window_hours` (1 to 8760, else `default`); any
/// other parameter is refused by name.
pub(crate) fn window_hours(
    q: &std::collections::HashMap<String, String>,
    default: i64,
) -> Result<i64, ApiError> {
    let mut hours = default;
    for (k, v) in q {
        if k != "window_hours" {
            return Err(ApiError::invalid(
                k,
                "is not a known parameter (window_hours)",
            ));
        }
        hours = v
            .parse()
            .ok()
            .filter(|h| (1..=24 * 365).contains(h))
            .ok_or_else(|| {
                ApiError::invalid("window_hours", "must be a whole number from 1 to 8760")
            })?;
    }
    Ok(hours)
}

/// Every logged decision and outcome (the results routes read the whole log).
pub(crate) async fn logs(
    engine: &AppState,
) -> Result<
    (
        Vec<nearcast_core::decision::Decision>,
        Vec<nearcast_core::ports::OutcomeRecord>,
    ),
    ApiError,
> {
    let store = engine.store();
    let err = nearcast_core::engine::EngineError::from;
    Ok((
        store.decisions().await.map_err(err)?,
        store.outcomes().await.map_err(err)?,
    ))
}

/// Parses a JSON body: bad UTF-8, malformed JSON and empty bodies name the field `body`.
pub(crate) fn json_body(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "must be a JSON object, got an empty body",
        ));
    }
    if bytes.len() > MAX_BODY {
        return Err(ApiError::TooLarge);
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::invalid("body", "is not valid UTF-8"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid("body", format!("is not valid JSON: {e}")))
}

pub(crate) fn path_id(name: &str, raw: &str) -> Result<Id, ApiError> {
    Id::parse(raw).map_err(|e| ApiError::Invalid(e.within(name)))
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    responses((status = 200, description = "Liveness: store and offer counts, the model in service", body = serde_json::Value, content_type = "application/json"))
)]
async fn health(State(engine): State<AppState>) -> Json<Value> {
    let c = engine.catalog();
    Json(
        json!({"status": "ok", "stores": c.store_count(), "offers": c.offers.len(), "model": engine.ranker().version()}),
    )
}

#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "devices",
    request_body(content = serde_json::Value, content_type = "application/json", description = "A batch: `{\"user_id\", \"events\": [..]}` (docs/formats.md#device-events)", example = json!({"user_id": "zoe", "events": [{"event_id": "z1", "type": "consent", "at": "2026-11-20T08:00:00Z", "purpose": "location", "granted": true, "policy_version": "2026-10"}, {"event_id": "z2", "type": "location", "at": "2026-11-20T08:01:00Z", "lat": 60.1692, "lon": 24.9327, "accuracy_m": 10}]})),
    responses((status = 200, description = "Each event accepted or answered as a duplicate, with its decision", body = serde_json::Value, content_type = "application/json"))
)]
async fn post_events(
    State(engine): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body.map_err(|_| ApiError::TooLarge)?;
    let v = json_body(&bytes)?;
    let batch = match Batch::from_json(&v, engine.now()) {
        Ok(b) => b,
        Err(BatchError::Body(e)) => return Err(ApiError::Invalid(e)),
        Err(BatchError::Events(rejected)) => return Err(ApiError::Events(rejected)),
    };
    let mut results = engine.process_batch(&batch).await?;
    // Each decision without its candidates, as a duplicate's answer carries it too: the
    // device needs the verdict, the offer and the presence, not every offer weighed at
    // every store around it (the decision log keeps those, for the admin routes).
    for r in &mut results {
        if let Some(d) = r.decision.as_mut() {
            d.candidates = Vec::new();
        }
    }
    // Serialised once, straight from the reports.
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        user_id: &'a Id,
        results: &'a [nearcast_core::engine::EventReport],
    }
    Ok((
        StatusCode::OK,
        Json(Answer {
            user_id: &batch.user_id,
            results: &results,
        }),
    )
        .into_response())
}

fn consent_json(user: &Id, c: &Consents) -> Value {
    let mut m = serde_json::Map::new();
    for p in Purpose::ALL {
        let v = match c.get(p) {
            None => json!({"granted": false, "recorded": false}),
            Some(r) => {
                json!({"granted": r.granted, "recorded": true, "at": r.at, "source": r.source, "policy_version": r.policy_version})
            }
        };
        m.insert(p.as_str().to_string(), v);
    }
    json!({"user_id": user, "consents": m})
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}/consent",
    tag = "devices",
    params(("id" = String, Path, example = "anna", description = "user id")),
    responses((status = 200, description = "The user's consents per purpose", body = serde_json::Value, content_type = "application/json"))
)]
async fn get_consent(
    State(engine): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user_id", &id)?;
    let c = engine.consents(&user).await?;
    Ok(Json(consent_json(&user, &c)))
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}/presence",
    tag = "devices",
    params(("id" = String, Path, example = "anna", description = "user id")),
    responses((status = 200, description = "The fences the user is in now", body = serde_json::Value, content_type = "application/json"))
)]
async fn get_presence(
    State(engine): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user_id", &id)?;
    let visits = engine.presence(&user).await?;
    Ok(Json(json!({"user_id": user, "visits": visits})))
}

#[utoipa::path(
    put,
    path = "/v1/users/{id}/consent",
    tag = "devices",
    params(("id" = String, Path, example = "anna", description = "user id")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "Consents to change: `{\"location\": true, \"push\": false, \"policy_version\": \"..\"}`", example = json!({"push": true, "location": true, "policy_version": "2026-10"})),
    responses((status = 200, description = "The user's consents after the change", body = serde_json::Value, content_type = "application/json"))
)]
async fn put_consent(
    State(engine): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user_id", &id)?;
    let v = json_body(&body)?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "must be a JSON object"))?;
    let mut changes = Vec::new();
    let mut policy_version = None;
    for (k, val) in obj {
        if k == "policy_version" {
            match val {
                Value::String(s) if !s.is_empty() && s.len() <= 64 => {
                    policy_version = Some(s.clone())
                }
                _ => {
                    return Err(ApiError::invalid(
                        "policy_version",
                        "must be a string of 1 to 64 bytes",
                    ));
                }
            }
            continue;
        }
        let p = Purpose::parse(k).map_err(|_| {
            ApiError::invalid(
                k,
                "is not a known field (push, location, personalisation, policy_version)",
            )
        })?;
        let g = val
            .as_bool()
            .ok_or_else(|| ApiError::invalid(k, "must be true or false"))?;
        changes.push((p, g));
    }
    if changes.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "must set at least one of push, location, personalisation",
        ));
    }
    let c = engine.set_consents(&user, &changes, policy_version).await?;
    Ok(Json(consent_json(&user, &c)))
}

#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "devices",
    params(("id" = String, Path, example = "anna", description = "user id")),
    responses((status = 200, description = "What the erasure removed", body = serde_json::Value, content_type = "application/json"))
)]
async fn erase(
    State(engine): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user_id", &id)?;
    let e = engine.erase(&user).await?;
    Ok(Json(json!({"user_id": user, "erased_records": e.records})))
}

/// The subject access export: everything Nearcast holds about one person, as stored
/// (docs/privacy.md lists what each part is and how long it is kept).
#[utoipa::path(
    get,
    path = "/v1/admin/users/{id}/export",
    tag = "users",
    params(("id" = String, Path, example = "anna", description = "user id")),
    responses((status = 200, description = "Everything held about the user", body = serde_json::Value, content_type = "application/json"))
)]
async fn export_user(
    State(engine): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user_id", &id)?;
    let d = engine.user_data(&user).await?;
    Ok(Json(json!({
        "user_id": user,
        "profile": d.profile,
        "events": d.events,
        "decisions": d.decisions,
        "deliveries": d.deliveries,
        "outcomes": d.outcomes,
    })))
}

pub(crate) fn parse_with_id<T: serde::de::DeserializeOwned>(
    bytes: &Bytes,
    path_id: Option<&str>,
) -> Result<T, ApiError> {
    let mut v = json_body(bytes)?;
    if let (Some(id), Some(obj)) = (path_id, v.as_object_mut()) {
        match obj.get("id") {
            None => {
                obj.insert("id".into(), Value::String(id.to_string()));
            }
            Some(Value::String(s)) if s == id => {}
            Some(_) => return Err(ApiError::invalid("id", "must match the id in the path")),
        }
    }
    parse_json(&v).map_err(ApiError::Invalid)
}

/// Most stores one page of `GET /v1/admin/stores?limit=` holds.
const MAX_STORE_PAGE: usize = 5_000;

/// `GET /v1/admin/stores[?bbox=minLon,minLat,maxLon,maxLat][&limit=N][&after=<id>]`: every
/// store without parameters; with `bbox`, those whose fence's bounding box meets it (a map
/// loads what it shows); with `limit`, a page in id order and `next_after`, the cursor of
/// the next page (absent on the last).
#[utoipa::path(
    get,
    path = "/v1/admin/stores",
    tag = "stores",
    params(("bbox" = Option<String>, Query, description = "minLon,minLat,maxLon,maxLat: stores whose fence meets the box"), ("limit" = Option<u32>, Query, description = "page size, 1 to 5000"), ("after" = Option<String>, Query, description = "the last id of the previous page")),
    responses((status = 200, description = "Stores (a page of them with bbox, limit or after)", body = serde_json::Value, content_type = "application/json"))
)]
async fn list_stores(
    State(engine): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let c = engine.catalog();
    if q.is_empty() {
        let mut all: Vec<&Store> = c.stores().collect();
        all.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        return Ok(Json(json!({"stores": all})));
    }
    let (mut bbox, mut limit, mut after) = (None, None, None);
    for (k, v) in &q {
        match k.as_str() {
            "bbox" => bbox = Some(parse_bbox(v)?),
            "limit" => {
                limit = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_STORE_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "limit",
                                format!("must be a whole number from 1 to {MAX_STORE_PAGE}"),
                            )
                        })?,
                );
            }
            "after" => after = Some(path_id("after", v)?),
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a known parameter (bbox, limit, after)",
                ));
            }
        }
    }
    let meets = |p: u32| {
        let Some([x0, y0, x1, y1]) = bbox else {
            return true;
        };
        let (lo_x, lo_y, hi_x, hi_y) = fence_box(c.shape(p));
        lo_x <= x1 && hi_x >= x0 && lo_y <= y1 && hi_y >= y0
    };
    let mut hits: Vec<&Store> = c
        .stores_at()
        .filter(|(_, s)| after.as_ref().is_none_or(|a| &s.id > a))
        .filter(|(p, _)| meets(*p))
        .map(|(_, s)| s)
        .collect();
    hits.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let next_after = match limit {
        Some(n) if hits.len() > n => {
            hits.truncate(n);
            hits.last().map(|s| s.id.clone())
        }
        _ => None,
    };
    Ok(Json(json!({"stores": hits, "next_after": next_after})))
}

/// Most cells a side of `GET /v1/admin/store-clusters` may ask for.
const MAX_CLUSTER_GRID: usize = 64;

/// The bounding box of a fence: (min lon, min lat, max lon, max lat).
fn fence_box(shape: &nearcast_core::geofence::Shape) -> (f64, f64, f64, f64) {
    match shape {
        nearcast_core::geofence::Shape::Circle { lat, lon, radius_m } => {
            let dlat = radius_m / 111_320.0;
            let dlon = radius_m / (111_320.0 * lat.to_radians().cos().max(1e-6));
            (lon - dlon, lat - dlat, lon + dlon, lat + dlat)
        }
        nearcast_core::geofence::Shape::Polygon { bbox, .. } => {
            (bbox.min().x, bbox.min().y, bbox.max().x, bbox.max().y)
        }
    }
}

/// `bbox=minLon,minLat,maxLon,maxLat`, checked.
fn parse_bbox(v: &str) -> Result<[f64; 4], ApiError> {
    let n: Vec<f64> = v
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    let ok = n.len() == 4
        && n.iter().all(|x| x.is_finite())
        && (-180.0..=180.0).contains(&n[0])
        && (-180.0..=180.0).contains(&n[2])
        && (-90.0..=90.0).contains(&n[1])
        && (-90.0..=90.0).contains(&n[3])
        && n[0] <= n[2]
        && n[1] <= n[3];
    if ok {
        Ok([n[0], n[1], n[2], n[3]])
    } else {
        Err(ApiError::invalid(
            "bbox",
            "must be minLon,minLat,maxLon,maxLat in degrees, min not above max",
        ))
    }
}

/// `GET /v1/admin/store-clusters?bbox=minLon,minLat,maxLon,maxLat[&grid=N]`: the stores whose
/// fence's centre lies in the box, counted on a grid of N × N cells over it (default 16, at
/// most 64): per cell with stores, their count, the mean of their centres and the box of
/// those centres (where a map zooms to show them), and the total. A map zoomed out over
/// thousands of fences draws these instead.
#[utoipa::path(
    get,
    path = "/v1/admin/store-clusters",
    tag = "stores",
    params(("bbox" = String, Query, description = "minLon,minLat,maxLon,maxLat"), ("grid" = Option<u32>, Query, description = "cells a side, 1 to 64 (default 16)")),
    responses((status = 200, description = "{total, grid, clusters: [{lat, lon, count, bbox}]}", body = serde_json::Value, content_type = "application/json"))
)]
async fn store_clusters(
    State(engine): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (mut bbox, mut grid) = (None, 16usize);
    for (k, v) in &q {
        match k.as_str() {
            "bbox" => bbox = Some(parse_bbox(v)?),
            "grid" => {
                grid = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_CLUSTER_GRID).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "grid",
                            format!("must be a whole number from 1 to {MAX_CLUSTER_GRID}"),
                        )
                    })?;
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a known parameter (bbox, grid)",
                ));
            }
        }
    }
    let [x0, y0, x1, y1] = bbox.ok_or_else(|| ApiError::invalid("bbox", "is required"))?;
    // Per cell: count, sums of the centres, and their box.
    #[derive(Clone, Copy)]
    struct Cell {
        n: u64,
        lat: f64,
        lon: f64,
        bx: [f64; 4],
    }
    let mut cells: std::collections::BTreeMap<usize, Cell> = std::collections::BTreeMap::new();
    let c = engine.catalog();
    let (w, h) = ((x1 - x0).max(1e-12), (y1 - y0).max(1e-12));
    let mut total = 0u64;
    for (p, _) in c.stores_at() {
        let (lo_x, lo_y, hi_x, hi_y) = fence_box(c.shape(p));
        let (lon, lat) = ((lo_x + hi_x) / 2.0, (lo_y + hi_y) / 2.0);
        if !(x0..=x1).contains(&lon) || !(y0..=y1).contains(&lat) {
            continue;
        }
        total += 1;
        let cx = (((lon - x0) / w * grid as f64) as usize).min(grid - 1);
        let cy = (((lat - y0) / h * grid as f64) as usize).min(grid - 1);
        let e = cells.entry(cy * grid + cx).or_insert(Cell {
            n: 0,
            lat: 0.0,
            lon: 0.0,
            bx: [lon, lat, lon, lat],
        });
        e.n += 1;
        e.lat += lat;
        e.lon += lon;
        e.bx = [
            e.bx[0].min(lon),
            e.bx[1].min(lat),
            e.bx[2].max(lon),
            e.bx[3].max(lat),
        ];
    }
    let clusters: Vec<Value> = cells
        .values()
        .map(|e| {
            json!({
                "lat": e.lat / e.n as f64,
                "lon": e.lon / e.n as f64,
                "count": e.n,
                "bbox": e.bx,
            })
        })
        .collect();
    Ok(Json(
        json!({"total": total, "grid": grid, "clusters": clusters}),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/admin/stores/{id}",
    tag = "stores",
    params(("id" = String, Path, example = "osm-node-1007416307", description = "store id")),
    responses((status = 200, description = "The store", body = serde_json::Value, content_type = "application/json"))
)]
async fn get_store(
    State(engine): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Store>, ApiError> {
    let id = path_id("id", &id)?;
    let c = engine.catalog();
    c.store_by_id(&id)
        .map(|s| Json(s.clone()))
        .ok_or_else(|| ApiError::NotFound(format!("store {id}")))
}

#[utoipa::path(
    post,
    path = "/v1/admin/stores",
    tag = "stores",
    request_body(content = serde_json::Value, content_type = "application/json", description = "A store (docs/formats.md#store)", example = json!({"id": "s-new", "name": "Kamppi kiosk", "category": "kiosk", "time_zone": "Europe/Helsinki", "brand": "R-kioski", "tags": ["mall:kamppi"], "opening_hours": "Mo-Su 07:00-22:00", "fence": {"type": "circle", "lat": 60.1692, "lon": 24.9327, "radius_m": 40}})),
    responses((status = 201, description = "Created", body = serde_json::Value, content_type = "application/json"))
)]
async fn create_store(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let s: Store = parse_with_id(&body, None)?;
    if engine.catalog().has_store(&s.id) {
        return Err(ApiError::Conflict(format!(
            "store {} exists; use PUT to replace it",
            s.id
        )));
    }
    engine.put_store(s.clone(), &actor).await?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}

#[utoipa::path(
    put,
    path = "/v1/admin/stores/{id}",
    tag = "stores",
    params(("id" = String, Path, example = "osm-node-1007416307", description = "store id")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "A store", example = json!({"id": "osm-node-1007416307", "name": "Kamppi kiosk", "category": "kiosk", "time_zone": "Europe/Helsinki", "brand": "R-kioski", "tags": ["mall:kamppi"], "opening_hours": "Mo-Su 07:00-22:00", "fence": {"type": "circle", "lat": 60.1692, "lon": 24.9327, "radius_m": 40}})),
    responses((status = 200, description = "Saved", body = serde_json::Value, content_type = "application/json"))
)]
async fn put_store(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Store>, ApiError> {
    let id = path_id("id", &id)?;
    let s: Store = parse_with_id(&body, Some(id.as_str()))?;
    engine.put_store(s.clone(), &actor).await?;
    Ok(Json(s))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/stores/{id}",
    tag = "stores",
    params(("id" = String, Path, example = "osm-node-1007416307", description = "store id")),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_store(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id("id", &id)?;
    engine.delete_store(&id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/admin/offers",
    tag = "offers",
    responses((status = 200, description = "Offers", body = serde_json::Value, content_type = "application/json"))
)]
async fn list_offers(State(engine): State<AppState>) -> Json<Value> {
    Json(json!({"offers": &*engine.catalog().offers}))
}

#[utoipa::path(
    get,
    path = "/v1/admin/offers/{id}",
    tag = "offers",
    params(("id" = String, Path, example = "off-afterwork", description = "offer id")),
    responses((status = 200, description = "The offer", body = serde_json::Value, content_type = "application/json"))
)]
async fn get_offer(
    State(engine): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Offer>, ApiError> {
    let id = path_id("id", &id)?;
    let c = engine.catalog();
    c.offer_pos
        .get(&id)
        .map(|&p| Json(c.offers[p as usize].clone()))
        .ok_or_else(|| ApiError::NotFound(format!("offer {id}")))
}

#[utoipa::path(
    post,
    path = "/v1/admin/offers",
    tag = "offers",
    request_body(content = serde_json::Value, content_type = "application/json", description = "An offer (docs/formats.md#offer)", example = json!({"id": "off-new", "campaign_id": "cmp-rainy-day", "title": "Rain?", "body": "Umbrellas -30 %", "category": "umbrella", "store_categories": ["kiosk"], "weather": {"conditions": ["rain"]}, "trigger": {"type": "enter"}})),
    responses((status = 201, description = "Created", body = serde_json::Value, content_type = "application/json"))
)]
async fn create_offer(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let o: Offer = parse_with_id(&body, None)?;
    if engine.catalog().offer_pos.contains_key(&o.id) {
        return Err(ApiError::Conflict(format!(
            "offer {} exists; use PUT to replace it",
            o.id
        )));
    }
    engine.put_offer(o.clone(), &actor).await?;
    Ok((StatusCode::CREATED, Json(o)).into_response())
}

#[utoipa::path(
    put,
    path = "/v1/admin/offers/{id}",
    tag = "offers",
    params(("id" = String, Path, example = "off-afterwork", description = "offer id")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "An offer", example = json!({"id": "off-afterwork", "campaign_id": "cmp-rainy-day", "title": "Rain?", "body": "Umbrellas -30 %", "category": "umbrella", "store_categories": ["kiosk"], "weather": {"conditions": ["rain"]}, "trigger": {"type": "enter"}})),
    responses((status = 200, description = "Saved", body = serde_json::Value, content_type = "application/json"))
)]
async fn put_offer(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Offer>, ApiError> {
    let id = path_id("id", &id)?;
    let o: Offer = parse_with_id(&body, Some(id.as_str()))?;
    engine.put_offer(o.clone(), &actor).await?;
    Ok(Json(o))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/offers/{id}",
    tag = "offers",
    params(("id" = String, Path, example = "off-afterwork", description = "offer id")),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_offer(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id("id", &id)?;
    engine.delete_offer(&id, &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/admin/policy",
    tag = "policy",
    responses((status = 200, description = "The cap policy", body = serde_json::Value, content_type = "application/json"))
)]
async fn get_policy(State(engine): State<AppState>) -> Json<CapPolicy> {
    Json(engine.catalog().policy.clone())
}

#[utoipa::path(
    put,
    path = "/v1/admin/policy",
    tag = "policy",
    request_body(content = serde_json::Value, content_type = "application/json", description = "A cap policy (docs/formats.md#cap-policy)", example = json!({"per_day": 2, "per_week": 6, "min_gap_minutes": 60, "quiet_start": "21:00:00", "quiet_end": "08:00:00"})),
    responses((status = 200, description = "Saved", body = serde_json::Value, content_type = "application/json"))
)]
async fn put_policy(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Bytes,
) -> Result<Json<CapPolicy>, ApiError> {
    let p: CapPolicy = parse_with_id(&body, None)?;
    engine.put_policy(p.clone(), &actor).await?;
    Ok(Json(p))
}

fn models_json(engine: &Engine) -> Value {
    let challenger = engine
        .challenger()
        .map(|c| json!({"version": c.ranker.version(), "share": c.share}));
    json!({"champion": engine.ranker().version(), "challenger": challenger})
}

#[utoipa::path(
    get,
    path = "/v1/admin/model",
    tag = "model",
    responses((status = 200, description = "The champion and challenger in service", body = serde_json::Value, content_type = "application/json"))
)]
async fn model_status(State(engine): State<AppState>) -> Json<Value> {
    Json(models_json(&engine))
}

#[utoipa::path(
    post,
    path = "/v1/admin/model/reload",
    tag = "model",
    responses((status = 200, description = "The models now in service", body = serde_json::Value, content_type = "application/json"))
)]
async fn reload_model(State(engine): State<AppState>) -> Result<Json<Value>, ApiError> {
    engine.reload_model().await?;
    Ok(Json(models_json(&engine)))
}

#[utoipa::path(
    get,
    path = "/v1/admin/results",
    tag = "results",
    params(("window_hours" = Option<u32>, Query, description = "attribution window, 1 to 8760 hours")),
    responses((status = 200, description = "Per offer and model version", body = serde_json::Value, content_type = "application/json"))
)]
async fn results(
    State(engine): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    use nearcast_core::export::{JoinOptions, join};
    let mut opts = JoinOptions::new(b"results".to_vec());
    opts.window = chrono::Duration::hours(window_hours(&q, opts.window.num_hours())?);
    let (decisions, outcomes) = logs(&engine).await?;
    let r = nearcast_core::results::results(&join(&decisions, &outcomes, &opts));
    Ok(Json(json!({
        "window_hours": opts.window.num_hours(),
        "by_offer": r.by_offer,
        "by_model": r.by_model,
    })))
}

#[utoipa::path(
    post,
    path = "/v1/admin/stores/import",
    tag = "stores",
    params(("format" = Option<String>, Query, description = "csv or geojson"), ("dry_run" = Option<bool>, Query, description = "check only"), ("time_zone" = Option<String>, Query, description = "IANA time zone for rows without one"), ("radius_m" = Option<f64>, Query, description = "circle radius for rows without one")),
    request_body(content = String, content_type = "text/csv", description = "A CSV or GeoJSON store file"),
    responses((status = 200, description = "The import report", body = serde_json::Value, content_type = "application/json"))
)]
async fn import_stores(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    use nearcast_core::import::{Defaults, Format, parse};
    let body = body.map_err(|_| ApiError::TooLargeFor(MAX_IMPORT_BODY))?;
    let mut format = None;
    let mut dry_run = false;
    let mut defaults = Defaults::default();
    for (k, v) in &q {
        match k.as_str() {
            "format" => {
                format = Some(match v.as_str() {
                    "csv" => Format::Csv,
                    "geojson" => Format::Geojson,
                    _ => return Err(ApiError::invalid("format", "must be csv or geojson")),
                });
            }
            "dry_run" => {
                dry_run = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(ApiError::invalid("dry_run", "must be true or false")),
                };
            }
            "time_zone" => {
                nearcast_core::config::parse_tz(v)
                    .map_err(|e| ApiError::Invalid(e.within("time_zone")))?;
                defaults.time_zone = Some(v.clone());
            }
            "radius_m" => {
                defaults.radius_m = v
                    .parse::<f64>()
                    .ok()
                    .filter(|r| {
                        r.is_finite() && *r > 0.0 && *r <= nearcast_core::config::MAX_RADIUS_M
                    })
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "radius_m",
                            format!(
                                "must be a number in (0, {}]",
                                nearcast_core::config::MAX_RADIUS_M
                            ),
                        )
                    })?;
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a known parameter (format, dry_run, time_zone, radius_m)",
                ));
            }
        }
    }
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::invalid("body", "is not valid UTF-8"))?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "body",
            "is empty: send the CSV or GeoJSON file",
        ));
    }
    // The format: the parameter, else the content type, else the first character.
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = format.unwrap_or(if content_type.contains("csv") {
        Format::Csv
    } else if content_type.contains("json") || text.trim_start().starts_with('{') {
        Format::Geojson
    } else {
        Format::Csv
    });
    let parsed = parse(text, format, &defaults).map_err(ApiError::Invalid)?;
    let rejected = serde_json::to_value(&parsed.rejected).unwrap_or_default();
    let warnings = serde_json::to_value(&parsed.warnings).unwrap_or_default();
    let report = |summary: Option<nearcast_core::engine::ImportSummary>, applied: bool| {
        json!({
            "format": format,
            "dry_run": dry_run,
            "applied": applied,
            "rows": parsed.rows,
            "valid_rows": parsed.stores.len(),
            "rejected": rejected,
            "ignored_columns": parsed.ignored_columns,
            "named_by_id": parsed.named_by_id,
            "warnings": warnings,
            "created": summary.map(|s| s.created),
            "updated": summary.map(|s| s.updated),
            "unchanged": summary.map(|s| s.unchanged),
            "stores": summary.map(|s| s.stores),
        })
    };
    if !parsed.rejected.is_empty() {
        if dry_run {
            return Ok(Json(report(None, false)));
        }
        let first = &parsed.rejected[0];
        return Err(ApiError::Rows {
            field: format!("rows[{}].{}", first.row, first.field),
            reason: format!(
                "{} of {} rows are invalid; nothing was applied (fix them, or drop them, and send the file again)",
                parsed.rejected.len(),
                parsed.rows
            ),
            rejected,
        });
    }
    let stores: Vec<Store> = parsed.stores.iter().map(|(_, s)| s.clone()).collect();
    let summary = engine.import_stores(stores, &actor, dry_run).await?;
    Ok(Json(report(Some(summary), !dry_run)))
}

/// Who the caller is and what they may do: the console asks before it shows any button
/// that writes (a viewer's are disabled; the API refuses them anyway).
#[utoipa::path(
    get,
    path = "/v1/admin/me",
    tag = "audit",
    responses((status = 200, description = "The caller's name and role (`viewer`, `editor`, `admin`)", body = serde_json::Value, content_type = "application/json"))
)]
async fn whoami(Extension(actor): Extension<Actor>) -> Json<Value> {
    Json(json!({
        "name": actor.name,
        "role": actor.role.as_str(),
        "can": {
            "edit": actor.role >= Role::Editor,
            "admin": actor.role >= Role::Admin,
        },
    }))
}

/// A `limit` query parameter: a whole number from 1 to `max`.
fn limit_param(v: &str, max: usize) -> Result<usize, ApiError> {
    v.parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid("limit", format!("must be a whole number from 1 to {max}"))
        })
}

/// Most dead letters one page lists.
const MAX_DEAD_LETTERS: usize = 1000;

/// `GET /v1/admin/webhooks/dead-letters?limit=N`: presence webhook messages that failed
/// every attempt, oldest death first (default 100, at most 1000), with whether webhooks
/// are on in this instance.
#[utoipa::path(
    get,
    path = "/v1/admin/webhooks/dead-letters",
    tag = "webhooks",
    params(("limit" = Option<u32>, Query, description = "messages, 1 to 1000 (default 100)")),
    responses((status = 200, description = "{enabled, dead_letters: [{message, attempts, next_at, last_error, dead}]}", body = serde_json::Value, content_type = "application/json"))
)]
async fn webhook_dead_letters(
    State(engine): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut limit = 100;
    for (k, v) in &q {
        match k.as_str() {
            "limit" => limit = limit_param(v, MAX_DEAD_LETTERS)?,
            other => {
                return Err(ApiError::invalid(other, "is not a known parameter (limit)"));
            }
        }
    }
    let dead = engine
        .store()
        .dead_webhooks(limit)
        .await
        .map_err(nearcast_core::engine::EngineError::from)?;
    Ok(Json(
        json!({"enabled": engine.webhooks(), "dead_letters": dead}),
    ))
}

/// `POST /v1/admin/webhooks/dead-letters/redrive`: every dead letter back into the outbox,
/// due now, with its attempts reset; the audit log records who did it (`webhooks.redrive`).
#[utoipa::path(
    post,
    path = "/v1/admin/webhooks/dead-letters/redrive",
    tag = "webhooks",
    responses((status = 200, description = "{redriven: N}", body = serde_json::Value, content_type = "application/json"))
)]
async fn redrive_webhooks(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<Value>, ApiError> {
    let n = engine.redrive_webhooks(&actor).await?;
    Ok(Json(json!({"redriven": n})))
}

#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "audit",
    params(("limit" = Option<u32>, Query, description = "entries, 1 to 1000"), ("before" = Option<String>, Query, description = "an entry id: the next page")),
    responses((status = 200, description = "The audit log, newest first", body = serde_json::Value, content_type = "application/json"))
)]
async fn audit_log(
    State(engine): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut before = None;
    let mut limit = 100;
    for (k, v) in &q {
        match k.as_str() {
            "before" => before = Some(v.as_str()),
            "limit" => limit = limit_param(v, nearcast_core::audit::MAX_AUDIT_PAGE)?,
            other => {
                return Err(ApiError::invalid(
                    other,
                    "is not a known parameter (before, limit)",
                ));
            }
        }
    }
    let entries = engine.audit_log(before, limit).await?;
    // The next page starts below the last entry of a full one.
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id.clone()))
        .flatten();
    Ok(Json(json!({"entries": entries, "next_before": next})))
}

/// Erasure on a data-protection request, by an admin: the same as the device's own
/// `DELETE /v1/users/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/admin/users/{id}",
    tag = "users",
    params(("id" = String, Path, example = "anna", description = "user id")),
    responses((status = 200, description = "What the erasure removed", body = serde_json::Value, content_type = "application/json"))
)]
async fn admin_erase(
    State(engine): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = path_id("user_id", &id)?;
    let e = engine.erase(&user).await?;
    // The log names the admin, never the person erased.
    tracing::info!(admin = %actor.name, records = e.records, "erasure by an admin");
    Ok(Json(json!({"user_id": user, "erased_records": e.records})))
}

#[allow(
    dead_code,
    reason = "kept for handlers that build field errors directly"
)]
fn field(f: &str, r: &str) -> FieldError {
    FieldError::new(f, r)
}
