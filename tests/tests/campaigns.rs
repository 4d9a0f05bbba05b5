//! Campaigns through the admin API and the engine, on the embedded store (SQLite) and on
//! DynamoDB (moto): a budget that runs out exactly under 50 concurrent sends, variants and
//! locales in what is pushed, status, schedule, holdout and caps per user, previews of the
//! exact payloads, and 4xx answers naming the field that change no state.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nearcast_api::auth::{Access, Role};
use nearcast_core::campaign::Campaign;
use nearcast_core::campaign_results::CellLevel;
use nearcast_core::coupon::Redemption;
use nearcast_core::ports::DeliveryStatus;
use nearcast_tests::*;
use serde_json::{Value, json};
use tower::ServiceExt;

fn keys() -> Access {
    api_keys(&[
        ("vic", Role::Viewer),
        ("eddie", Role::Editor),
        ("ada", Role::Admin),
    ])
}

async fn call(h: &Harness, who: &str, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let (status, v, _) = admin_call(h.engine.clone(), keys(), Some(who), method, uri, body).await;
    (status, v)
}

/// The decision of one fix of `user` at store 0 at noon.
async fn decide_at_store_0(h: &Harness, user: &str) -> nearcast_core::decision::Decision {
    h.engine
        .process(&fix_at(user, &format!("{user}-f"), 0, noon()))
        .await
        .unwrap()
        .decision
        .unwrap()
}

/// Onboards `users`, then sends one fix each at store 0 at `at`, all at once; answers the
/// decisions in the users' order.
async fn race(
    h: &Harness,
    users: &[String],
    at: chrono::DateTime<chrono::Utc>,
) -> Vec<nearcast_core::decision::Decision> {
    for (i, u) in users.iter().enumerate() {
        onboard(h, u, i).await;
    }
    let tasks: Vec<_> = users
        .iter()
        .map(|u| {
            let engine = h.engine.clone();
            let e = fix_at(u, &format!("{u}-fix"), 0, at);
            tokio::spawn(async move { engine.process(&e).await.unwrap() })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap().decision.expect("a location decision"));
    }
    out
}

/// The campaign the catalog's offers (`campaign_id` `c1`) belong to.
fn rainy(status: &str, budget: u64) -> Value {
    json!({"id": "c1", "name": "Rainy-day umbrellas", "status": status, "budget": budget,
        "variants": [
            {"id": "a", "weight": 1, "default_locale": "en",
             "content": {"en": {"title": "Rain at {store}?", "body": "Umbrellas -20 % with {coupon}"},
                         "fi": {"title": "Sataako {store}?", "body": "Sateenvarjot -20 % koodilla {coupon}"}},
             "deep_link": "shop://umbrellas", "image_url": "https://cdn.example.com/u.png"},
            {"id": "b", "weight": 1, "default_locale": "fi", "priority": "normal",
             "content": {"fi": {"title": "Sateenvarjot {store}", "body": "Nyt -20 %"},
                         "en": {"title": "Umbrellas at {store}", "body": "Now -20 %"}}}],
        "conversion": {"event": "visit", "within_hours": 72}})
}

/// Sets a user up, with their app in Finnish for every other user.
async fn onboard(h: &Harness, user: &str, i: usize) {
    let at = noon() - chrono::Duration::minutes(5);
    let mut events = onboarding(user, noon());
    if i % 2 == 0 {
        events.push(event(
            user,
            json!({"event_id": format!("{user}-loc"), "type": "push_token", "at": at.to_rfc3339(),
                   "platform": "fcm", "token": "tok-123", "locale": "fi-FI"}),
        ));
    }
    for e in &events {
        h.engine.process(e).await.unwrap();
    }
}

async fn a_budget_runs_out_exactly_under_fifty_concurrent_sends(backend: Backend) {
    let h = harness(backend, 1, policy(3)).await;
    let (status, v) = call(
        &h,
        "eddie",
        "PUT",
        "/v1/admin/campaigns/c1",
        rainy("active", 10),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["sent"].as_u64(), v["budget_left"].as_u64()),
        (Some(0), Some(10))
    );
    assert_eq!(v["offers"], json!(["o0"]));
    let users: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
    let mut spent = 0;
    for d in race(&h, &users, noon()).await {
        assert!(d.catalog_version.is_some(), "{d:?}");
        match d.verdict {
            nearcast_core::decision::Verdict::Sent => {}
            _ => {
                assert_eq!(d.reason.as_ref().unwrap().code(), "budget_spent", "{d:?}");
                spent += 1;
            }
        }
    }
    let sent = h.notifier.sent();
    assert_eq!(
        (sent.len(), spent),
        (10, 40),
        "exactly the budget, never one over"
    );
    assert_eq!(h.store.campaign_sends(&id("c1")).await.unwrap(), 10);
    let (_, v) = call(&h, "vic", "GET", "/v1/admin/campaigns/c1", Value::Null).await;
    assert_eq!(
        (v["sent"].as_u64(), v["budget_left"].as_u64()),
        (Some(10), Some(0))
    );

    // Each push carries the user's stable variant, in the user's language or the
    // variant's default, with the tokens filled in.
    let campaign: Campaign = serde_json::from_value(rainy("active", 10)).unwrap();
    for p in &sent {
        let i: usize = p.user_id.as_str()[1..].parse().unwrap();
        let v = campaign.variant_for(&p.user_id).unwrap();
        let want_locale = if i % 2 == 0 {
            "fi"
        } else {
            v.default_locale.as_str()
        };
        let m = &v.content[want_locale];
        assert_eq!(p.variant_id.as_ref(), Some(&v.id));
        assert_eq!(p.locale.as_deref(), Some(want_locale));
        assert_eq!(p.title, m.title.replace("{store}", "Store 0"), "{p:?}");
        assert!(!p.body.contains('{'), "{p:?}");
        assert_eq!(p.deep_link, v.deep_link);
        assert_eq!(p.image_url, v.image_url);
        assert_eq!(p.priority, v.priority, "each variant's own priority");
    }

    // Raising the budget lets the campaign send again at once, one more and no more.
    let (status, _) = call(
        &h,
        "eddie",
        "PUT",
        "/v1/admin/campaigns/c1",
        rainy("active", 11),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for (i, u) in ["late1", "late2"].into_iter().enumerate() {
        onboard(&h, u, i).await;
        let d = h
            .engine
            .process(&fix_at(u, &format!("{u}-fix"), 0, noon()))
            .await
            .unwrap();
        let d = d.decision.unwrap();
        let want = if i == 0 { "Sent" } else { "Suppressed" };
        assert_eq!(format!("{:?}", d.verdict), want, "{u}: {d:?}");
    }
    assert_eq!(h.notifier.sent().len(), 11);
    assert_eq!(h.store.campaign_sends(&id("c1")).await.unwrap(), 11);
}

#[tokio::test]
async fn a_budget_runs_out_exactly_under_fifty_concurrent_sends_on_sqlite() {
    a_budget_runs_out_exactly_under_fifty_concurrent_sends(Backend::InterleavedSqlite).await;
}

#[tokio::test]
async fn a_budget_runs_out_exactly_under_fifty_concurrent_sends_on_dynamodb() {
    a_budget_runs_out_exactly_under_fifty_concurrent_sends(Backend::InterleavedDynamo).await;
}

/// What a visit of `user` to store `store` at `minutes` after noon decided: `sent` or the
/// reason code (a second fix a minute later when the first only began confirming the enter).
async fn reason_of(h: &Harness, user: &str, store: usize, minutes: i64) -> String {
    for k in 0..3 {
        let at = noon() + chrono::Duration::minutes(minutes + k);
        h.clock.set(at);
        let d = h
            .engine
            .process(&fix_at(
                user,
                &format!("{user}-{store}-{minutes}-{k}"),
                store,
                at,
            ))
            .await
            .unwrap()
            .decision
            .unwrap();
        match (&d.verdict, &d.reason) {
            (nearcast_core::decision::Verdict::Sent, _) => return "sent".into(),
            (_, Some(r)) if r.code() != "no_trigger" => return r.code().to_string(),
            _ => {}
        }
    }
    "no_trigger".into()
}

#[tokio::test]
async fn status_caps_holdout_previews_and_refusals_on_the_embedded_store() {
    let h = harness(Backend::Sqlite, 40, policy(10)).await;
    let rows = dump(&h).await;

    // Refusals name the field and change nothing.
    for (body, field) in [
        (json!({"id": "c1", "name": "x", "holdout": 0.7}), "holdout"),
        (json!({"id": "c1", "name": "x", "budget": 0}), "budget"),
        (json!({"id": "c1", "name": "x", "status": "live"}), "status"),
        (json!({"id": "c1", "name": "x", "colour": "red"}), "colour"),
        (
            {
                let mut v = rainy("active", 5);
                v["variants"][1]["content"]["fi"]["title"] = json!("Hei {name}");
                v
            },
            "variants[1].content.fi.title",
        ),
    ] {
        let (status, v) = call(&h, "eddie", "PUT", "/v1/admin/campaigns/c1", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let (status, v) = call(
        &h,
        "vic",
        "PUT",
        "/v1/admin/campaigns/c1",
        rainy("active", 5),
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (StatusCode::FORBIDDEN, Some("role"))
    );
    assert_eq!(dump(&h).await, rows, "refusals change no state");

    // A draft sends nothing and says why; activating it (an editor) sends.
    let (status, _) = call(
        &h,
        "eddie",
        "POST",
        "/v1/admin/campaigns",
        rainy("draft", 1000),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = call(
        &h,
        "eddie",
        "POST",
        "/v1/admin/campaigns",
        rainy("draft", 1000),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    onboard(&h, "anna", 0).await;
    assert_eq!(reason_of(&h, "anna", 0, 0).await, "campaign_not_active");
    onboard(&h, "bo", 1).await;
    let (status, v) = call(
        &h,
        "vic",
        "POST",
        "/v1/admin/campaigns/c1/status",
        json!({"status": "active"}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (StatusCode::FORBIDDEN, Some("role"))
    );
    let (status, v) = call(
        &h,
        "eddie",
        "POST",
        "/v1/admin/campaigns/c1/status",
        json!({"status": "active"}),
    )
    .await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::OK, Some("active")),
        "{v}"
    );
    assert_eq!(reason_of(&h, "bo", 1, 20).await, "sent");

    // Caps per user per campaign: one a day.
    let mut capped = rainy("active", 1000);
    capped["per_user"] = json!({"per_day": 1});
    let (status, _) = call(&h, "eddie", "PUT", "/v1/admin/campaigns/c1", capped).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reason_of(&h, "bo", 2, 40).await, "campaign_capped");

    // Paused: nothing; the audit log says who paused it.
    let (status, _) = call(
        &h,
        "eddie",
        "POST",
        "/v1/admin/campaigns/c1/status",
        json!({"status": "paused"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    onboard(&h, "bert", 1).await;
    assert_eq!(reason_of(&h, "bert", 3, 60).await, "campaign_not_active");
    let (_, audit) = call(&h, "vic", "GET", "/v1/admin/audit?limit=1", Value::Null).await;
    let last = &audit["entries"][0];
    assert_eq!(
        (
            last["action"].as_str(),
            last["actor"]["name"].as_str(),
            last["target"].as_str()
        ),
        (Some("campaign.status"), Some("eddie"), Some("c1")),
        "{audit}"
    );
    assert_eq!(last["before"]["status"], "active");
    assert_eq!(last["after"]["status"], "paused");

    // Ended stays ended; a campaign offers name cannot be deleted.
    for s in ["ended"] {
        let (status, _) = call(
            &h,
            "eddie",
            "POST",
            "/v1/admin/campaigns/c1/status",
            json!({"status": s}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, v) = call(
        &h,
        "eddie",
        "POST",
        "/v1/admin/campaigns/c1/status",
        json!({"status": "active"}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("status"))
    );
    let (status, v) = call(&h, "eddie", "DELETE", "/v1/admin/campaigns/c1", Value::Null).await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );

    // Previews: each variant's exact payloads, within 4 KB, coupon and deep link on both
    // platforms, in the asked locale, for a viewer.
    let (status, v) = call(
        &h,
        "vic",
        "POST",
        "/v1/admin/campaigns/c1/preview",
        json!({"locale": "fi", "coupon": "RAIN-7", "store_id": "s3"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let previews = v["previews"].as_array().unwrap();
    assert_eq!(previews.len(), 2);
    let a = &previews[0];
    assert_eq!(a["variant_id"], "a");
    assert_eq!(a["locale"], "fi");
    assert_eq!(
        a["payloads"]["apns"]["aps"]["alert"]["title"],
        "Sataako Store 3?"
    );
    assert_eq!(a["payloads"]["apns"]["coupon"], "RAIN-7");
    assert_eq!(a["payloads"]["apns"]["deep_link"], "shop://umbrellas");
    assert_eq!(a["payloads"]["apns"]["aps"]["mutable-content"], 1);
    assert_eq!(a["payloads"]["fcm"]["data"]["coupon"], "RAIN-7");
    assert_eq!(
        a["payloads"]["fcm"]["notification"]["image"],
        "https://cdn.example.com/u.png"
    );
    assert_eq!(
        a["payloads"]["fcm"]["notification"]["body"],
        "Sateenvarjot -20 % koodilla RAIN-7"
    );
    // Priority: variant a is high (the default), b normal; APNs takes it as a header.
    assert_eq!(a["priority"], "high");
    assert_eq!(a["apns_headers"]["apns-priority"], "10");
    assert_eq!(a["payloads"]["fcm"]["priority"], "high");
    let b = &previews[1];
    assert_eq!(b["priority"], "normal");
    assert_eq!(b["apns_headers"]["apns-priority"], "5");
    assert_eq!(b["payloads"]["fcm"]["priority"], "normal");
    for p in previews {
        for k in ["apns", "fcm"] {
            assert!(p["bytes"][k].as_u64().unwrap() <= 4096, "{p}");
        }
        assert_eq!(p["cut"], false);
    }
    let (status, v) = call(
        &h,
        "vic",
        "POST",
        "/v1/admin/campaigns/c1/preview",
        json!({"store_id": "nope"}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("store_id"))
    );
    let (status, _) = call(
        &h,
        "vic",
        "POST",
        "/v1/admin/campaigns/zz/preview",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The holdout share is the campaign's, whatever its offers say: exactly the users the
/// stable draw puts in the group are held out.
#[tokio::test]
async fn the_holdout_share_is_the_campaigns() {
    let h = harness(Backend::Memory, 1, policy(10)).await;
    let mut c = rainy("active", 1000);
    c["holdout"] = json!(0.5);
    let (status, _) = call(&h, "eddie", "PUT", "/v1/admin/campaigns/c1", c).await;
    assert_eq!(status, StatusCode::OK);
    let mut held = 0;
    for i in 0..40 {
        let u = format!("h{i}");
        onboard(&h, &u, i).await;
        let d = decide_at_store_0(&h, &u).await;
        let want = nearcast_core::holdout::held_out(&id(&u), &id("c1"), 0.5);
        assert_eq!(
            d.verdict == nearcast_core::decision::Verdict::HeldOut,
            want,
            "{u}: {d:?}"
        );
        assert_eq!(d.campaign_id, Some(id("c1")));
        assert!(d.variant_id.is_some());
        held += usize::from(want);
    }
    assert!((8..=32).contains(&held), "{held} of 40 held out at 50 %");
    // Held-out decisions spend no budget.
    assert_eq!(
        h.store.campaign_sends(&id("c1")).await.unwrap(),
        40 - held as u64
    );
}

/// "Why wasn't anna sent this offer?": the decisions that considered it, with the reason
/// each time, a count per reason, and what stands in the way now.
#[tokio::test]
async fn an_admin_can_ask_why_a_user_was_not_sent_an_offer() {
    let h = harness(Backend::Sqlite, 3, policy(10)).await;
    let (status, _) = call(
        &h,
        "eddie",
        "PUT",
        "/v1/admin/campaigns/c1",
        rainy("draft", 10),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    onboard(&h, "anna", 0).await;
    assert_eq!(reason_of(&h, "anna", 0, 0).await, "campaign_not_active");
    // The route is an admin's: personal data.
    let (status, v) = call(
        &h,
        "eddie",
        "GET",
        "/v1/admin/users/anna/decisions?offer_id=o0",
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (StatusCode::FORBIDDEN, Some("role"))
    );
    let app = nearcast_api::router(h.engine.clone());
    let get = |uri: &str| {
        let app = app.clone();
        let uri = uri.to_string();
        async move {
            let resp = app
                .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (status, v) = get("/v1/admin/users/anna/decisions?offer_id=o0").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["considered"], 1, "{v}");
    assert_eq!(v["not_sent_by_reason"]["campaign_not_active"], 1, "{v}");
    assert_eq!(v["decisions"][0]["outcome"], "campaign_not_active");
    assert!(v["decisions"][0]["catalog_version"].is_string(), "{v}");
    assert_eq!(v["blocking_now"], json!(["campaign c1 is draft"]), "{v}");
    // An offer never considered: said so, with nothing in the way of the user.
    let (_, v) = get("/v1/admin/users/anna/decisions?offer_id=o2").await;
    assert_eq!(v["considered"], 0);
    assert!(
        v["summary"].as_str().unwrap().contains("no kept decision"),
        "{v}"
    );
    // Someone never seen.
    let (_, v) = get("/v1/admin/users/zed/decisions").await;
    assert_eq!(v["considered"], 0);
    assert!(
        v["blocking_now"][0]
            .as_str()
            .unwrap()
            .contains("nothing is stored"),
        "{v}"
    );
    for (uri, field) in [
        ("/v1/admin/users/anna/decisions?limit=0", "limit"),
        ("/v1/admin/users/anna/decisions?colour=red", "colour"),
        (
            "/v1/admin/users/anna/decisions?offer_id=bad%20id",
            "offer_id",
        ),
    ] {
        let (status, v) = get(uri).await;
        assert_eq!(
            (status, v["error"]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{uri}"
        );
    }
}

/// The global control group: a share of all users never sent any campaign's push (held
/// out with `global_control`), drawn once per user for every campaign; the policy refuses a
/// share above 0.2 naming the field.
#[tokio::test]
async fn the_global_control_group_is_held_out_of_every_campaign() {
    let mut p = policy(10);
    p.global_control = 0.2;
    let h = harness(Backend::Sqlite, 1, p).await;
    let (status, _) = call(
        &h,
        "eddie",
        "PUT",
        "/v1/admin/campaigns/c1",
        rainy("active", 1000),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut control = 0;
    for i in 0..60 {
        let u = format!("g{i}");
        onboard(&h, &u, i).await;
        let d = decide_at_store_0(&h, &u).await;
        let want = nearcast_core::holdout::in_global_control(&id(&u), 0.2);
        let code = d.reason.as_ref().map(|r| r.code());
        if want {
            control += 1;
            assert_eq!(
                (d.verdict, code),
                (
                    nearcast_core::decision::Verdict::HeldOut,
                    Some("global_control")
                ),
                "{u}"
            );
        } else {
            assert_eq!(
                d.verdict,
                nearcast_core::decision::Verdict::Sent,
                "{u}: {d:?}"
            );
        }
    }
    assert!((3..=24).contains(&control), "{control} of 60 at 20 %");
    assert_eq!(h.notifier.sent().len(), 60 - control);
    let app = nearcast_api::router(h.engine.clone());
    let mut body = serde_json::to_value(policy(10)).unwrap();
    body["global_control"] = json!(0.5);
    let resp = app
        .oneshot(
            Request::builder()
                .method("PUT")
                .uri("/v1/admin/policy")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["field"], "global_control", "{v}");
}

/// One admin request with a raw body (a CSV file), as `who`.
async fn call_raw(h: &Harness, who: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let app = nearcast_api::router_with(h.engine.clone(), keys());
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "text/csv")
        .header("authorization", format!("Bearer {}", key_of(who)))
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A campaign with a coupon pool, end to end through the admin API and the engine: an
/// upload with bad rows is refused whole with each row named, a dry run adds nothing, a
/// code already in a pool refuses the file; 8 users race for 5 codes, so 5 pushes go out
/// with 5 different codes from the pool (in the text and in both platforms' payloads) and
/// 3 decisions say `coupons_exhausted`; a new upload lets the campaign send again; a till
/// redeems a code once (200, and 200 again for the same order after a lost answer), then
/// gets 409; the redemption is the user's outcome against the delivery.
async fn a_coupon_pool_gives_each_code_once_and_redeems_it_once(backend: Backend) {
    let h = harness(backend, 1, policy(3)).await;
    let mut c = rainy("active", 100);
    c["coupon_pool"] = json!(true);
    let (status, v) = call(&h, "eddie", "PUT", "/v1/admin/campaigns/c1", c).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["coupons"],
        json!({"total": 0, "issued": 0, "redeemed": 0})
    );
    let uri = "/v1/admin/campaigns/c1/coupons";

    // Refusals change nothing.
    let (status, _) = call_raw(&h, "vic", uri, "code\nRAIN-001\n").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = call_raw(&h, "eddie", uri, "code\nRAIN-001\nRAIN-001\nBAD CODE\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "invalid_rows");
    assert_eq!(v["error"]["field"], "rows[3].code");
    assert_eq!(v["error"]["rejected"].as_array().unwrap().len(), 2);
    let (status, v) = call_raw(&h, "eddie", "/v1/admin/campaigns/c1/coupons?size=9", "A\n").await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("size"))
    );
    let (status, v) = call_raw(&h, "eddie", "/v1/admin/campaigns/nope/coupons", "A\n").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let five: String = (1..=5).map(|i| format!("RAIN-00{i}\n")).collect();
    let (status, v) = call_raw(&h, "eddie", &format!("{uri}?dry_run=true"), &five).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["applied"].as_bool(), v["codes"].as_u64()),
        (Some(false), Some(5))
    );
    assert_eq!(v["coupons"]["total"], 0);
    let audit_before = h.store.audit_log(None, 100).await.unwrap().len();

    let (status, v) = call_raw(&h, "eddie", uri, &format!("code\n{five}")).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["coupons"],
        json!({"total": 5, "issued": 0, "redeemed": 0})
    );
    let audit = h.store.audit_log(None, 100).await.unwrap();
    assert_eq!(audit.len(), audit_before + 1);
    assert_eq!(
        (audit[0].action.as_str(), audit[0].actor.name.as_str()),
        ("coupons.upload", "eddie")
    );
    assert!(
        !serde_json::to_string(&audit[0])
            .unwrap()
            .contains("RAIN-00"),
        "no code in the audit log"
    );
    // A preview shows a sample code, never one of the pool's.
    let (status, v) = call(
        &h,
        "vic",
        "POST",
        "/v1/admin/campaigns/c1/preview",
        json!({"locale": "en"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["previews"][0]["body"], "Umbrellas -20 % with SAMPLE-CODE");
    assert_eq!(
        v["previews"][0]["payloads"]["apns"]["coupon"],
        "SAMPLE-CODE"
    );
    assert!(!v.to_string().contains("RAIN-00"), "{v}");
    let (status, v) = call_raw(&h, "eddie", uri, "NEW-1\nRAIN-004\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "rows[2].code");
    assert!(
        v["error"]["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("already")
    );

    // 8 users race for 5 codes.
    let users: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    let mut exhausted = 0;
    for d in race(&h, &users, noon()).await {
        if d.verdict != nearcast_core::decision::Verdict::Sent {
            assert_eq!(
                d.reason.as_ref().unwrap().code(),
                "coupons_exhausted",
                "{d:?}"
            );
            exhausted += 1;
        }
    }
    let sent = h.notifier.sent();
    assert_eq!((sent.len(), exhausted), (5, 3));
    // On DynamoDB each code given out is linked to its person for as long as the logs are
    // kept (erasure finds it there), then expires.
    if let Some(table) = &h.dynamo_table {
        let now = chrono::Utc::now().timestamp();
        let links: Vec<i64> = nearcast_tests::scan_table(table)
            .await
            .iter()
            .filter(|(k, _)| k.contains(" / LINK#"))
            .map(|(_, a)| {
                a["ttl"]
                    .trim_start_matches("N(\"")
                    .trim_end_matches("\")")
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(links.len(), 5);
        for ttl in links {
            assert!(
                (ttl - now - nearcast_aws::LOG_TTL_SECS).abs() < 600,
                "a code's link expires with the logs: {ttl} against {now}"
            );
        }
    }
    let mut codes: Vec<String> = sent.iter().map(|p| p.coupon.clone().unwrap()).collect();
    codes.sort();
    assert_eq!(
        codes,
        (1..=5).map(|i| format!("RAIN-00{i}")).collect::<Vec<_>>()
    );
    for p in &sent {
        let code = p.coupon.as_deref().unwrap();
        assert!(
            !p.title.contains("{coupon}") && !p.body.contains("{coupon}"),
            "{p:?}"
        );
        if p.variant_id.as_ref().map(|v| v.as_str()) == Some("a") {
            assert!(p.body.ends_with(code), "{}", p.body);
        }
        let apns = nearcast_core::payload::device_payload(p, "APNS").unwrap();
        let fcm = nearcast_core::payload::device_payload(p, "GCM").unwrap();
        assert_eq!(
            (apns["coupon"].as_str(), fcm["data"]["coupon"].as_str()),
            (Some(code), Some(code))
        );
    }
    let (_, v) = call(&h, "vic", "GET", uri, Value::Null).await;
    assert_eq!(
        v,
        json!({"campaign_id": "c1", "total": 5, "issued": 5, "free": 0, "redeemed": 0})
    );

    // Why did the others get nothing? The pool, then and now.
    let mut explained = 0;
    for u in &users {
        let uri = format!("/v1/admin/users/{u}/decisions?campaign_id=c1");
        let (status, v) = call(&h, "ada", "GET", &uri, Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        if v["not_sent_by_reason"]["coupons_exhausted"] == 1 {
            explained += 1;
            let now = v["blocking_now"].to_string();
            assert!(now.contains("every coupon code (5 of 5)"), "{v}");
        }
    }
    assert_eq!(explained, 3);

    // More codes: the campaign sends again.
    let (status, _) = call_raw(&h, "eddie", uri, "RAIN-006\n").await;
    assert_eq!(status, StatusCode::CREATED);
    onboard(&h, "late", 1).await;
    assert_eq!(
        decide_at_store_0(&h, "late").await.verdict,
        nearcast_core::decision::Verdict::Sent
    );
    assert_eq!(
        h.notifier.sent().last().unwrap().coupon.as_deref(),
        Some("RAIN-006")
    );

    // Redemption at a till.
    let p = &sent[0];
    let code = p.coupon.clone().unwrap();
    let redeem = |body: Value, who: &'static str| {
        let h = &h;
        async move { call(h, who, "POST", "/v1/admin/redemptions", body).await }
    };
    let (status, _) = redeem(json!({"code": code}), "vic").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (body, field) in [
        (json!({"code": "a b"}), "code"),
        (json!({"code": code, "till": 3}), "till"),
        (json!({}), "code"),
        (json!({"code": code, "order_id": 5}), "order_id"),
    ] {
        let (status, v) = redeem(body.clone(), "eddie").await;
        assert_eq!(
            (status, v["error"]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{body}: {v}"
        );
    }
    let (status, v) = redeem(json!({"code": code, "order_id": "o-1"}), "eddie").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["delivery_id"].as_str(), Some(p.delivery_id.as_str()));
    assert_eq!(v["offer_id"], "o0");
    assert_eq!(v["campaign_id"], "c1");
    let (status, v) = redeem(json!({"code": code, "order_id": "o-1"}), "eddie").await;
    assert_eq!(
        (status, v["repeated"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
    let (status, v) = redeem(json!({"code": code, "order_id": "o-2"}), "eddie").await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "already_redeemed");
    assert!(v["error"]["redeemed_at"].is_string());
    let (status, _) = redeem(json!({"code": "NOPE-1"}), "eddie").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A redemption whose first attempt stopped after the code was marked redeemed and
    // before its results were counted (the host died between the two commits): the
    // till's retry gets "redeemed" again, and the results count it, once.
    let q = &sent[1];
    let code2 = q.coupon.clone().unwrap();
    let redeemed_then = nearcast_core::ports::Clock::now(&h.clock);
    let first = h
        .store
        .redeem_coupon(&code2, redeemed_then, Some("o-7"))
        .await
        .unwrap();
    assert!(matches!(first, Redemption::Redeemed { .. }), "{first:?}");
    let counted = || async {
        let (_, v) = call(
            &h,
            "vic",
            "GET",
            "/v1/admin/campaigns/c1/results",
            Value::Null,
        )
        .await;
        v["results"]["all"]["treated"]["redeemed"].as_u64()
    };
    assert_eq!(counted().await, Some(1), "not yet counted");
    for _ in 0..2 {
        let (status, v) = redeem(json!({"code": code2, "order_id": "o-7"}), "eddie").await;
        assert_eq!(
            (status, v["repeated"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{v}"
        );
        assert_eq!(counted().await, Some(2), "counted once by the retry");
    }
    let outcomes = h.store.user_data(&p.user_id).await.unwrap().outcomes;
    let r: Vec<_> = outcomes
        .iter()
        .filter(|o| o.kind == nearcast_core::ports::OutcomeKind::Redeemed)
        .collect();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].delivery_id.as_deref(), Some(p.delivery_id.as_str()));
    assert_eq!(r[0].offer_id, Some(id("o0")));
    let (_, v) = call(&h, "vic", "GET", "/v1/admin/campaigns/c1", Value::Null).await;
    assert_eq!(
        v["coupons"],
        json!({"total": 6, "issued": 6, "redeemed": 2})
    );

    // The campaign's results count the redemptions against the pushes that carried the codes.
    let (status, v) = call(
        &h,
        "vic",
        "GET",
        "/v1/admin/campaigns/c1/results",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["window_hours"], 72, "the campaign's conversion deadline");
    let all = &v["results"]["all"];
    assert_eq!(all["treated"]["n"], 6, "{v}");
    assert_eq!(all["treated"]["redeemed"], 2, "{v}");
    assert_eq!(all["redemption_lift"]["verdict"], "too_small", "{v}");
    let (status, v) = call(
        &h,
        "vic",
        "GET",
        "/v1/admin/campaigns/c1/results?from=2026-13-01",
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("from"))
    );
    for (q, field) in [
        ("by=week", "by"),
        ("window_hours=24", "window_hours"),
        ("from=2026-11-21&to=2026-11-20", "to"),
    ] {
        let (status, v) = call(
            &h,
            "vic",
            "GET",
            &format!("/v1/admin/campaigns/c1/results?{q}"),
            Value::Null,
        )
        .await;
        assert_eq!(
            (status, v["error"]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{q}: {v}"
        );
    }
    // The funnel and a breakdown by day: the sends and the redemption, on their day.
    let (status, v) = call(
        &h,
        "vic",
        "GET",
        "/v1/admin/campaigns/c1/results?by=day",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["results"]["funnel"]["sent"], 6, "{v}");
    assert_eq!(v["results"]["funnel"]["redeemed"], 2, "{v}");
    let rows = v["results"]["rows"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| r["treated"]["n"].as_u64().unwrap())
            .sum::<u64>(),
        6,
        "{v}"
    );
}

#[tokio::test]
async fn a_coupon_pool_gives_each_code_once_and_redeems_it_once_on_sqlite() {
    a_coupon_pool_gives_each_code_once_and_redeems_it_once(Backend::InterleavedSqlite).await;
}

#[tokio::test]
async fn a_coupon_pool_gives_each_code_once_and_redeems_it_once_on_dynamodb() {
    a_coupon_pool_gives_each_code_once_and_redeems_it_once(Backend::InterleavedDynamo).await;
}

/// Stores with a brand, tags and opening hours; offers that run at a brand's stores, at
/// stores with a tag, and only while the store is open. Noon UTC of the harness is 12:00 in
/// Helsinki on a Friday.
#[tokio::test]
async fn offers_target_brands_and_tags_and_can_wait_for_the_store_to_open() {
    let h = harness(Backend::Sqlite, 3, policy(10)).await;
    let store = |i: usize, brand: &str, tags: Value, hours: &str| {
        let (lat, lon) = store_point(i);
        json!({"id": format!("s{i}"), "name": format!("Store {i}"), "category": "grocery",
            "time_zone": "Europe/Helsinki", "brand": brand, "tags": tags,
            "address": format!("Mannerheimintie {i}, Helsinki"), "opening_hours": hours,
            "fence": {"type": "circle", "lat": lat, "lon": lon, "radius_m": 50}})
    };
    for (i, s) in [
        store(
            0,
            "K-Market",
            json!(["flagship"]),
            "Mo-Fr 08:00-21:00; Sa 09:00-18:00",
        ),
        store(1, "Alepa", json!(["mall:kamppi"]), "Mo-Fr 14:00-22:00"),
        store(2, "Alepa", json!([]), "24/7"),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, v) = call(&h, "eddie", "PUT", &format!("/v1/admin/stores/s{i}"), s).await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    // The old offers name the stores by id; replace them with ones by brand and by tag.
    for i in 0..3 {
        call(
            &h,
            "eddie",
            "DELETE",
            &format!("/v1/admin/offers/o{i}"),
            Value::Null,
        )
        .await;
    }
    let offer = |id: &str, extra: Value| {
        let mut o = json!({"id": id, "campaign_id": "c1", "title": "Bread", "body": "Fresh",
            "category": "bread", "trigger": {"type": "enter"}, "threshold": 0.0,
            "require_open": true});
        o.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        o
    };
    for o in [
        offer("alepa", json!({"store_brands": ["Alepa"]})),
        offer("flagship", json!({"store_tags": ["flagship"]})),
    ] {
        let (status, v) = call(&h, "eddie", "POST", "/v1/admin/offers", o).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let cat = h.engine.catalog();
    let at = |p: usize| -> Vec<&str> {
        cat.offers_at(p as u32)
            .map(|k| cat.offers[k as usize].id.as_str())
            .collect()
    };
    assert_eq!(
        (at(0), at(1), at(2)),
        (vec!["flagship"], vec!["alepa"], vec!["alepa"])
    );

    // At noon on Friday: s0 and s2 are open, s1 opens at 14:00.
    for (i, u) in ["ann", "bob", "cid"].iter().enumerate() {
        onboard(&h, u, 1).await;
        assert_eq!(
            reason_of(&h, u, i, 0).await,
            ["sent", "store_closed", "sent"][i],
            "s{i}"
        );
    }

    // Refusals name the field and change nothing.
    let before = h.store.list_stores().await.unwrap();
    for (body, field) in [
        (
            store(0, "K", json!([]), "Mon - Fri 11am - 11pm"),
            "opening_hours",
        ),
        (store(0, "K", json!(["ok", "Not OK"]), "24/7"), "tags[1]"),
        (store(0, "K", json!(["a", "a"]), "24/7"), "tags[1]"),
        (store(0, "", json!([]), "24/7"), "brand"),
    ] {
        let (status, v) = call(&h, "eddie", "PUT", "/v1/admin/stores/s0", body).await;
        assert_eq!(
            (status, v["error"]["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{v}"
        );
    }
    let (status, v) = call(
        &h,
        "eddie",
        "POST",
        "/v1/admin/offers",
        offer("bad", json!({"store_tags": ["Mall"]})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("store_tags[0]")),
        "{v}"
    );
    assert_eq!(h.store.list_stores().await.unwrap(), before);
}

/// A send rate: at most `max_per_minute` pushes of the campaign in one minute of the
/// server's clock, counted in each send's commit like the budget, so 10 users at once get
/// 3 pushes and 7 `rate_limited`; the next minute sends again.
async fn a_send_rate_holds_per_minute_under_concurrency(backend: Backend) {
    let h = harness(backend, 1, policy(3)).await;
    let mut c = rainy("active", 1000);
    c["max_per_minute"] = json!(3);
    let (status, v) = call(&h, "eddie", "PUT", "/v1/admin/campaigns/c1", c).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let wave = |k: usize| {
        let users: Vec<String> = (0..10).map(|i| format!("w{k}-{i}")).collect();
        let h = &h;
        async move {
            let at = noon() + chrono::Duration::minutes(k as i64);
            h.clock.set(at);
            let mut codes = std::collections::BTreeMap::new();
            for d in race(h, &users, at).await {
                let code = d.reason.as_ref().map_or("sent", |r| r.code()).to_string();
                *codes.entry(code).or_insert(0) += 1;
            }
            codes
        }
    };
    let first = wave(0).await;
    assert_eq!(first.get("sent"), Some(&3), "{first:?}");
    assert_eq!(first.get("rate_limited"), Some(&7), "{first:?}");
    let second = wave(1).await;
    assert_eq!(second.get("sent"), Some(&3), "{second:?}");
    assert_eq!(h.notifier.sent().len(), 6);
    assert_eq!(
        h.store.campaign_sends(&id("c1")).await.unwrap(),
        6,
        "the budget counts all"
    );
    let (status, v) = call(
        &h,
        "eddie",
        "PUT",
        "/v1/admin/campaigns/c1",
        json!({"id": "c1", "name": "x", "max_per_minute": 0}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("max_per_minute"))
    );
    // On DynamoDB a minute's count expires a day after its last send (the budget's count,
    // which must last, has no expiry).
    if let Some(table) = &h.dynamo_table {
        let now = chrono::Utc::now().timestamp();
        let counts = nearcast_tests::scan_table(table).await;
        let ttl = |a: &std::collections::BTreeMap<String, String>| -> Option<i64> {
            a.get("ttl").map(|t| {
                t.trim_start_matches("N(\"")
                    .trim_end_matches("\")")
                    .parse()
                    .unwrap()
            })
        };
        let rates: Vec<i64> = counts
            .iter()
            .filter(|(k, _)| k.starts_with("BUDGET#") && k.contains(".rate."))
            .map(|(k, a)| ttl(a).unwrap_or_else(|| panic!("{k} has no ttl")))
            .collect();
        assert_eq!(rates.len(), 2, "one count per minute: {:?}", counts.keys());
        for t in rates {
            assert!(
                (t - now - 24 * 3600).abs() < 600,
                "a minute's count expires a day on: {t} against {now}"
            );
        }
        let budget = counts
            .iter()
            .find(|(k, _)| k.as_str() == "BUDGET#c1 / SENDS")
            .expect("the budget's count");
        assert_eq!(ttl(budget.1), None, "{budget:?}");
    }
    // The embedded host forgets a minute's count ten minutes on.
    if let Some(db) = &h.sqlite {
        let before = db.count("campaign_sends").unwrap();
        db.prune(noon() + chrono::Duration::minutes(30), &Default::default())
            .unwrap();
        assert_eq!(
            db.count("campaign_sends").unwrap(),
            before - 2,
            "the two minutes' rate rows"
        );
    }
}

#[tokio::test]
async fn a_send_rate_holds_per_minute_under_concurrency_on_sqlite() {
    a_send_rate_holds_per_minute_under_concurrency(Backend::InterleavedSqlite).await;
}

#[tokio::test]
async fn a_send_rate_holds_per_minute_under_concurrency_on_dynamodb() {
    a_send_rate_holds_per_minute_under_concurrency(Backend::InterleavedDynamo).await;
}

/// Capped, not lost: a campaign with `defer_minutes` sends a push held back by quiet hours
/// or the minimum gap at the first moment the caps allow, if that comes soon enough; the
/// relay sends it then, once, and not at all if the person withdrew push consent meanwhile.
async fn quiet_hours_and_the_gap_defer_a_push_instead_of_dropping_it(backend: Backend) {
    let mut p = policy(5);
    p.quiet_start = chrono::NaiveTime::from_hms_opt(21, 0, 0).unwrap();
    p.quiet_end = chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap();
    p.min_gap_minutes = 60;
    let h = harness(backend, 3, p).await;
    let mut c = rainy("active", 100);
    c["defer_minutes"] = json!(720);
    let (status, v) = call(&h, "eddie", "PUT", "/v1/admin/campaigns/c1", c.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let relay = |minutes_after_noon: i64| {
        h.clock
            .set(noon() + chrono::Duration::minutes(minutes_after_noon));
        let engine = h.engine.clone();
        async move {
            engine
                .relay_pending(chrono::Duration::seconds(30), 100)
                .await
                .unwrap()
        }
    };

    // 21:30 in Helsinki (19:30Z): quiet until 08:00 (06:00Z next day), 10.5 h away.
    onboard(&h, "nina", 0).await;
    onboard(&h, "olli", 1).await;
    assert_eq!(reason_of(&h, "nina", 0, 570).await, "sent");
    let d = &h.store.decisions().await.unwrap();
    let nina = d.iter().find(|d| d.user_id.as_str() == "nina").unwrap();
    let at_eight: chrono::DateTime<chrono::Utc> = "2026-11-21T06:00:00Z".parse().unwrap();
    assert_eq!(nina.deferred_until, Some(at_eight));
    assert!(h.notifier.sent().is_empty(), "nothing in the quiet hours");
    assert_eq!(relay(600).await, 0, "still quiet at 22:00");
    // olli is deferred too, then withdraws push consent before the morning.
    assert_eq!(reason_of(&h, "olli", 1, 575).await, "sent");
    h.engine
        .process(&event(
            "olli",
            json!({"event_id": "olli-off", "type": "consent", "at": (noon() + chrono::Duration::minutes(580)).to_rfc3339(),
                   "purpose": "push", "granted": false, "policy_version": "2026-10"}),
        ))
        .await
        .unwrap();
    // 08:00:30 the next morning: nina's push goes, once; olli's does not.
    assert_eq!(relay(20 * 60 + 1).await, 1);
    assert_eq!(relay(20 * 60 + 5).await, 0);
    let sent = h.notifier.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].user_id.as_str(), sent[0].at), ("nina", at_eight));

    // The minimum gap: nina was sent at 08:00; a visit at 08:20 waits until 09:00.
    assert_eq!(reason_of(&h, "nina", 2, 20 * 60 + 20).await, "sent");
    assert_eq!(h.notifier.sent().len(), 1);
    assert_eq!(relay(21 * 60 + 1).await, 1);
    assert_eq!(
        h.notifier.sent()[1].at,
        at_eight + chrono::Duration::hours(1)
    );

    // Without deferral (or past its limit) they are dropped, as before.
    c["defer_minutes"] = json!(30);
    call(&h, "eddie", "PUT", "/v1/admin/campaigns/c1", c).await;
    onboard(&h, "pia", 0).await;
    assert_eq!(reason_of(&h, "pia", 0, 630).await, "quiet_hours");
}

/// `defer_only_if_present`: a deferred push goes at its time only to a person still at the
/// store then; one who is not there any more (silent since the evening) is not sent it,
/// and the cap it held is given back.
async fn a_deferred_push_can_wait_for_the_person_to_be_still_there(backend: Backend) {
    let mut p = policy(5);
    p.quiet_start = chrono::NaiveTime::from_hms_opt(21, 0, 0).unwrap();
    p.quiet_end = chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap();
    let h = harness(backend, 3, p).await;
    let mut c = rainy("active", 100);
    c["defer_minutes"] = json!(720);
    c["defer_only_if_present"] = json!(true);
    let (status, v) = call(&h, "eddie", "PUT", "/v1/admin/campaigns/c1", c).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // Both visit a store at 21:30 in Helsinki: deferred until 08:00.
    onboard(&h, "rita", 0).await;
    onboard(&h, "sami", 1).await;
    assert_eq!(reason_of(&h, "rita", 0, 570).await, "sent");
    assert_eq!(reason_of(&h, "sami", 1, 572).await, "sent");
    assert!(h.notifier.sent().is_empty());
    // rita is still at her store at 07:59 (the same visit: no new trigger); sami's app has
    // said nothing since the evening.
    let morning = noon() + chrono::Duration::minutes(20 * 60 - 1);
    h.clock.set(morning);
    let d = h
        .engine
        .process(&fix_at("rita", "rita-morning", 0, morning))
        .await
        .unwrap()
        .decision
        .unwrap();
    assert_ne!(d.verdict, nearcast_core::decision::Verdict::Sent, "{d:?}");
    h.clock.set(noon() + chrono::Duration::minutes(20 * 60 + 1));
    let relayed = h
        .engine
        .relay_pending(chrono::Duration::seconds(30), 100)
        .await
        .unwrap();
    assert_eq!(relayed, 1);
    let sent = h.notifier.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].user_id.as_str(), "rita");
    assert!(sent[0].deferred);
    // sami's push is not sent, now or later, and his cap is free again.
    for _ in 0..2 {
        h.engine
            .relay_pending(chrono::Duration::seconds(30), 100)
            .await
            .unwrap();
    }
    assert_eq!(h.notifier.sent().len(), 1);
    let sami = h.store.load_user(&id("sami")).await.unwrap().state;
    assert!(sami.sends.is_empty(), "{:?}", sami.sends);
    let statuses: Vec<_> = h
        .store
        .deliveries()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.push.user_id.to_string(), d.status))
        .collect();
    assert!(
        statuses.contains(&("sami".into(), DeliveryStatus::Failed)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("rita".into(), DeliveryStatus::Sent)),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_deferred_push_can_wait_for_the_person_to_be_still_there_on_sqlite() {
    a_deferred_push_can_wait_for_the_person_to_be_still_there(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_deferred_push_can_wait_for_the_person_to_be_still_there_on_dynamodb() {
    a_deferred_push_can_wait_for_the_person_to_be_still_there(Backend::Dynamo).await;
}

#[tokio::test]
async fn quiet_hours_and_the_gap_defer_a_push_instead_of_dropping_it_on_sqlite() {
    quiet_hours_and_the_gap_defer_a_push_instead_of_dropping_it(Backend::Sqlite).await;
}

#[tokio::test]
async fn quiet_hours_and_the_gap_defer_a_push_instead_of_dropping_it_on_dynamodb() {
    quiet_hours_and_the_gap_defer_a_push_instead_of_dropping_it(Backend::Dynamo).await;
}

/// The results' cells, kept up to date in each commit, equal a recomputation from the
/// logs (`cells_from_logs` over the store's decisions and outcomes, what `nearcast export`
/// reads) for a mix of sends, holdouts, suppressions, opens, redemptions (in the app and at
/// a till), purchases with amounts and outcomes outside the window; and the visits, which
/// only the cells count, are those made after a push.
async fn results_cells_equal_a_recomputation_from_the_logs(backend: Backend) {
    use nearcast_core::campaign_results::{cells_from_logs, summarise};
    // One push a day: the walk to a second store is capped (the funnel's suppressions).
    let h = harness(backend, 3, policy(1)).await;
    let mut c = rainy("active", 1000);
    c["holdout"] = json!(0.3);
    c["coupon_pool"] = json!(true);
    let (status, v) = call(&h, "eddie", "PUT", "/v1/admin/campaigns/c1", c).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let codes: String = (0..60).map(|i| format!("CELL-{i:03}\n")).collect();
    let (status, v) = call_raw(&h, "eddie", "/v1/admin/campaigns/c1/coupons", &codes).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let users: Vec<String> = (0..30).map(|i| format!("cell{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        onboard(&h, u, i).await;
    }
    let at = |m: i64| noon() + chrono::Duration::minutes(m);
    let mut expected_visits = 0;
    for (i, u) in users.iter().enumerate() {
        h.clock.set(at(0));
        let d = h
            .engine
            .process(&fix_at(u, &format!("{u}-a"), i % 3, at(0)))
            .await
            .unwrap()
            .decision
            .unwrap();
        let offer = d.offer_id.clone().map(|o| o.to_string());
        let delivery = d.delivery_id.clone();
        let exposed = matches!(
            d.verdict,
            nearcast_core::decision::Verdict::Sent | nearcast_core::decision::Verdict::HeldOut
        );
        let ev = |id: &str, v: Value| {
            let mut v = v;
            v["event_id"] = json!(format!("{u}-{id}"));
            event(u, v)
        };
        let mut later = Vec::new();
        if let (Some(o), Some(dl)) = (&offer, &delivery) {
            if i % 2 == 0 {
                later.push(ev("open", json!({"type": "notification_opened", "at": at(1).to_rfc3339(), "offer_id": o, "delivery_id": dl})));
            }
            if i % 5 == 0 {
                later.push(ev(
                    "redeem",
                    json!({"type": "coupon_redeemed", "at": at(30).to_rfc3339(), "offer_id": o}),
                ));
            }
        }
        if i % 3 == 0 {
            // Two purchases in the offer's category (they add up), one in another.
            later.push(ev("buy1", json!({"type": "purchase", "at": at(40).to_rfc3339(), "category": "coffee", "amount": 2.5, "currency": "EUR"})));
            later.push(ev("buy2", json!({"type": "purchase", "at": at(50).to_rfc3339(), "category": "coffee", "amount": 4.0, "currency": "EUR", "channel": "in_store", "store_id": "s0"})));
            later.push(ev("buy3", json!({"type": "purchase", "at": at(55).to_rfc3339(), "category": "tea", "amount": 9.0, "currency": "EUR"})));
        }
        if i % 4 == 1 {
            // Past the 72 h window: counts for nothing.
            let late = noon() + chrono::Duration::hours(80);
            let v = json!({"user_id": u, "event_id": format!("{u}-late"), "type": "purchase", "at": late.to_rfc3339(), "category": "coffee", "amount": 100.0, "currency": "EUR"});
            later.push(nearcast_core::event::Event::from_json(&v, None, late).unwrap());
        }
        for e in &later {
            h.clock.set(e.at.max(at(0)));
            h.engine.process(e).await.unwrap();
        }
        // Every other person walks on to another of the campaign's stores: a new visit.
        if i % 2 == 1 {
            let t = at(90);
            h.clock.set(t);
            h.engine
                .process(&fix_at(u, &format!("{u}-b"), (i + 1) % 3, t))
                .await
                .unwrap();
            expected_visits += u64::from(exposed);
        }
    }
    // A till redeems two codes that were pushed.
    let issued: Vec<_> = h
        .store
        .deliveries()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|d| d.push.coupon.clone())
        .take(2)
        .collect();
    assert_eq!(issued.len(), 2);
    for code in &issued {
        let (status, v) = call(
            &h,
            "eddie",
            "POST",
            "/v1/admin/redemptions",
            json!({"code": code, "order_id": format!("till-{code}")}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }

    let (campaign, _) = h.engine.campaign(&id("c1")).await.unwrap();
    let offers: std::collections::HashSet<_> = (0..3).map(|i| id(&format!("o{i}"))).collect();
    let decisions = h.store.decisions().await.unwrap();
    let outcomes = h.store.outcomes().await.unwrap();
    let from_logs = cells_from_logs(&campaign, &offers, &decisions, &outcomes);
    let mut kept = h
        .store
        .campaign_cells(&id("c1"), CellLevel::StoreDays, None, None)
        .await
        .unwrap();
    let all = summarise(&kept, None, None, None);
    // The days' roll-ups are the sums of the cells of each day and variant.
    let rollups = h
        .store
        .campaign_cells(&id("c1"), CellLevel::Days, None, None)
        .await
        .unwrap();
    assert!(rollups.keys().all(|k| k.store == "*") && !rollups.is_empty());
    assert_eq!(
        summarise(
            &rollups,
            None,
            None,
            Some(nearcast_core::campaign_results::By::Day)
        )
        .rows,
        summarise(
            &kept,
            None,
            None,
            Some(nearcast_core::campaign_results::By::Day)
        )
        .rows
    );
    assert_eq!(
        all.all.treated.visited + all.all.held_out.visited + all.all.global_control.visited,
        expected_visits
    );
    assert!(expected_visits > 0);
    for cell in kept.values_mut() {
        for a in [
            &mut cell.treated,
            &mut cell.held_out,
            &mut cell.global_control,
        ] {
            a.visited = 0;
        }
    }
    assert_eq!(kept, from_logs, "the cells equal the logs' recomputation");
    // Enough happened for the comparison to mean something.
    let r = summarise(&from_logs, None, None, None);
    assert!(
        r.all.treated.n >= 10 && r.all.held_out.n >= 3,
        "{:?}",
        r.funnel
    );
    assert!(
        r.all.treated.opened > 0 && r.all.treated.redeemed >= 2 && r.all.treated.purchased > 0,
        "{:?}",
        r.all.treated
    );
    assert!(
        r.funnel.suppressed.values().sum::<u64>() > 0,
        "{:?}",
        r.funnel
    );
    assert_eq!(
        r.all.treated.revenue["EUR"].sum + r.all.held_out.revenue.get("EUR").map_or(0.0, |m| m.sum),
        6.5 * 10.0
    );
    // The route answers from the cells, the visits included.
    let (status, v) = call(
        &h,
        "vic",
        "GET",
        "/v1/admin/campaigns/c1/results?by=store",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let f = &v["results"]["funnel"];
    assert_eq!(f["sent"], r.funnel.sent, "{v}");
    assert_eq!(v["results"]["rows"].as_array().unwrap().len(), 3, "{v}");
    let visited = v["results"]["all"]["treated"]["visited"].as_u64().unwrap()
        + v["results"]["all"]["held_out"]["visited"].as_u64().unwrap();
    assert!(visited > 0 && visited <= expected_visits, "{v}");
}

#[tokio::test]
async fn results_cells_equal_a_recomputation_from_the_logs_in_memory() {
    results_cells_equal_a_recomputation_from_the_logs(Backend::Memory).await;
}

#[tokio::test]
async fn results_cells_equal_a_recomputation_from_the_logs_on_sqlite() {
    results_cells_equal_a_recomputation_from_the_logs(Backend::Sqlite).await;
}

#[tokio::test]
async fn results_cells_equal_a_recomputation_from_the_logs_on_dynamodb() {
    results_cells_equal_a_recomputation_from_the_logs(Backend::Dynamo).await;
}

/// Outcomes in any order and with any timestamp (before the decision, inside or past the
/// window, of the offer's category or not, opens naming the right or a wrong delivery),
/// some arriving before the decision they follow (stamped after it: the decision's fix
/// was delayed 14 minutes, as in a batch or a queue): the cells the commits keep equal the
/// recomputation from the logs, whatever the order the outcomes arrive in.
#[test]
fn results_cells_equal_the_logs_for_outcomes_in_any_order_and_at_any_time() {
    use nearcast_core::campaign_results::cells_from_logs;
    use proptest::prelude::*;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // (user, kind, minutes after noon, right category/delivery, amount in cents, arrives
    // before the decision)
    let outcome = (
        0usize..6,
        0u8..3,
        -120i64..(80 * 60),
        any::<bool>(),
        0u32..5000,
        any::<bool>(),
    );
    let config = ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    // The fixes are stamped at noon and arrive this much later.
    let delay = chrono::Duration::minutes(14);
    proptest!(config, |(outcomes in proptest::collection::vec(outcome, 0..40))| {
        rt.block_on(async {
            let h = harness(Backend::Memory, 3, policy(5)).await;
            let mut c = rainy("active", 1000);
            c["holdout"] = json!(0.4);
            let (status, _) = call(&h, "eddie", "PUT", "/v1/admin/campaigns/c1", c).await;
            prop_assert_eq!(status, StatusCode::OK);
            for i in 0..6 {
                onboard(&h, &format!("p{i}"), i).await;
            }
            let body = |k: usize, u: usize, kind: u8, at: chrono::DateTime<chrono::Utc>, right: bool, cents: u32, offer: &str, delivery: &str| {
                let user = format!("p{u}");
                let mut v = match kind {
                    0 => json!({"type": "notification_opened", "offer_id": offer, "delivery_id": delivery}),
                    1 => json!({"type": "coupon_redeemed", "offer_id": if right { offer } else { "o9" }}),
                    _ => json!({"type": "purchase", "category": if right { "coffee" } else { "tea" },
                                "amount": f64::from(cents) / 100.0, "currency": "EUR", "order_id": format!("ord-{k}")}),
                };
                v["user_id"] = json!(user);
                v["event_id"] = json!(format!("{user}-o{k}"));
                v["at"] = json!(at.to_rfc3339());
                v
            };
            // Early: stamped between the fix and its arrival, processed before it. An open
            // cannot name a delivery not yet made. A person's state keeps the last
            // MAX_RECENT_OUTCOMES for decisions still to come: more early ones than that
            // per person arrive late instead.
            let mut kept = [0usize; 6];
            let outcomes: Vec<_> = outcomes
                .into_iter()
                .map(|(u, kind, minutes, right, cents, early)| {
                    let early = early && (kind == 0 || {
                        kept[u] += 1;
                        kept[u] <= nearcast_core::campaign_results::MAX_RECENT_OUTCOMES
                    });
                    (u, kind, minutes, right, cents, early)
                })
                .collect();
            for (k, (u, kind, minutes, right, cents, early)) in outcomes.iter().enumerate() {
                if !early {
                    continue;
                }
                let at = noon() + chrono::Duration::minutes(minutes.rem_euclid(14));
                let offer = format!("o{}", u % 3);
                let v = body(k, *u, *kind, at, *right, *cents, &offer, "d-0000000000000000");
                h.clock.set(at);
                let e = nearcast_core::event::Event::from_json(&v, None, at).unwrap();
                h.engine.process(&e).await.unwrap();
            }
            let mut deliveries = Vec::new();
            h.clock.set(noon() + delay);
            for i in 0..6 {
                let u = format!("p{i}");
                let d = h.engine.process(&fix_at(&u, &format!("{u}-a"), i % 3, noon())).await.unwrap().decision.unwrap();
                deliveries.push((d.offer_id.map(|o| o.to_string()).unwrap_or_else(|| "o0".into()), d.delivery_id.unwrap_or_default()));
            }
            for (k, (u, kind, minutes, right, cents, early)) in outcomes.iter().enumerate() {
                if *early {
                    continue;
                }
                let at = noon() + chrono::Duration::minutes(*minutes);
                let (offer, delivery) = &deliveries[*u];
                let delivery = if *right { delivery.clone() } else { "d-0000000000000000".into() };
                let v = body(k, *u, *kind, at, *right, *cents, offer, &delivery);
                let now = at.max(noon() + delay);
                h.clock.set(now);
                let e = nearcast_core::event::Event::from_json(&v, None, now).unwrap();
                h.engine.process(&e).await.unwrap();
            }
            let (campaign, _) = h.engine.campaign(&id("c1")).await.unwrap();
            let offers: std::collections::HashSet<_> = (0..3).map(|i| id(&format!("o{i}"))).collect();
            let from_logs = cells_from_logs(&campaign, &offers, &h.store.decisions().await.unwrap(), &h.store.outcomes().await.unwrap());
            // What a person's state keeps of outcomes for late decisions holds no order id.
            for i in 0..6 {
                let st = h.store.load_user(&id(&format!("p{i}"))).await.unwrap().state;
                prop_assert!(!serde_json::to_string(&st).unwrap().contains("ord-"), "{:?}", st.recent_outcomes);
            }
            let mut kept = h.store.campaign_cells(&id("c1"), CellLevel::StoreDays, None, None).await.unwrap();
            for cell in kept.values_mut() {
                for a in [&mut cell.treated, &mut cell.held_out, &mut cell.global_control] {
                    a.visited = 0;
                    for m in a.revenue.values_mut() {
                        // Sums of the same amounts in another order: equal to the cent.
                        m.sum = (m.sum * 100.0).round() / 100.0;
                        m.sum_sq = (m.sum_sq * 100.0).round() / 100.0;
                    }
                }
            }
            let mut logs = from_logs;
            for cell in logs.values_mut() {
                for a in [&mut cell.treated, &mut cell.held_out, &mut cell.global_control] {
                    for m in a.revenue.values_mut() {
                        m.sum = (m.sum * 100.0).round() / 100.0;
                        m.sum_sq = (m.sum_sq * 100.0).round() / 100.0;
                    }
                }
            }
            prop_assert_eq!(kept, logs);
            Ok(())
        })?;
    });
}
