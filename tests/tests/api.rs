//! The HTTP API through the router (`oneshot`, no socket): happy paths for every route, and
//! invariant 5: every malformed request gets a 4xx naming the field and changes no state,
//! on the embedded host (SQLite) and on the AWS host (API Gateway events into DynamoDB).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nearcast_tests::*;
use serde_json::{Value, json};
use tower::ServiceExt;

/// One request through the router. On DynamoDB (the AWS host) it goes the way AWS brings
/// it: as an API Gateway HTTP API (v2) event, converted by lambda_http as the Lambda
/// runtime does (binary bodies base64-encoded, as API Gateway sends them).
async fn call(h: &Harness, method: &str, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let app = nearcast_api::router(h.engine.clone());
    let bytes = body.into().collect().await.unwrap().to_bytes();
    let req = if h.dynamo_table.is_some() {
        let mut event: Value = serde_json::from_str(include_str!(
            "../../events/lambda/apigw-v2-post-events.json"
        ))
        .unwrap();
        let route = format!("{method} {uri}");
        event["routeKey"] = json!(route);
        event["rawPath"] = json!(uri);
        event["requestContext"]["routeKey"] = json!(route);
        event["requestContext"]["http"]["method"] = json!(method);
        event["requestContext"]["http"]["path"] = json!(uri);
        match std::str::from_utf8(&bytes) {
            Ok(text) => {
                event["body"] = json!(text);
                event["isBase64Encoded"] = json!(false);
            }
            Err(_) => {
                use base64::Engine as _;
                event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(&bytes));
                event["isBase64Encoded"] = json!(true);
            }
        }
        if bytes.is_empty() {
            event["body"] = Value::Null;
        }
        lambda_http::request::from_str(&event.to_string())
            .expect("an API Gateway v2 request")
            .map(|b| Body::from(b.to_vec()))
    } else {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .unwrap()
    };
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    (status, v)
}

fn fix(id: &str) -> Value {
    json!({"event_id": id, "type": "location", "at": noon().to_rfc3339(), "lat": store_point(0).0, "lon": store_point(0).1, "accuracy_m": 10})
}

fn batch(events: Vec<Value>) -> String {
    json!({"user_id": "u1", "events": events}).to_string()
}

/// Everything a request could have changed: every row of every table (outcomes, policy
/// and catalog included), the user as the engine reads it, and the catalog it serves.
async fn snapshot(h: &Harness) -> String {
    let rows = dump(h).await.expect("a store with tables");
    let user = h.store.load_user(&id("u1")).await.unwrap();
    let c = h.engine.catalog();
    format!(
        "{rows:#?} {} {:?} {} {} {:?}",
        user.version,
        user.state,
        serde_json::to_string(&c.stores().collect::<Vec<_>>()).unwrap(),
        serde_json::to_string(&c.offers).unwrap(),
        c.policy,
    )
}

fn with(mut v: Value, k: &str, x: Value) -> Value {
    v[k] = x;
    v
}

#[tokio::test]
async fn malformed_requests_get_a_4xx_naming_the_field_and_change_nothing_on_sqlite() {
    malformed_requests_change_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_naming_the_field_and_change_nothing_on_dynamodb() {
    malformed_requests_change_nothing(Backend::Dynamo).await;
}

async fn malformed_requests_change_nothing(backend: Backend) {
    let h = harness(backend, 2, policy(5)).await;
    // Some state first, so "unchanged" means something.
    let onboard: Vec<Value> = ["push", "location", "personalisation"]
        .iter()
        .map(|p| json!({"event_id": format!("c-{p}"), "type": "consent", "at": noon().to_rfc3339(), "purpose": p, "granted": true}))
        .collect();
    let (s, _) = call(&h, "POST", "/v1/events", batch(onboard)).await;
    assert_eq!(s, StatusCode::OK);
    // A token, a push, its open, a purchase: deliveries and outcomes hold rows too.
    let at = noon().to_rfc3339();
    let (s, v) = call(&h, "POST", "/v1/events", batch(vec![
        json!({"event_id": "tok", "type": "push_token", "at": at, "platform": "fcm", "token": "tok-u1"}),
        fix("f0"),
    ])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][1]["decision"]["verdict"], "sent", "{v}");
    let delivery = v["results"][1]["decision"]["delivery_id"]
        .as_str()
        .map(str::to_string);
    let (s, v) = call(&h, "POST", "/v1/events", batch(vec![
        json!({"event_id": "open", "type": "notification_opened", "at": at, "offer_id": "o0", "delivery_id": delivery}),
        json!({"event_id": "buy", "type": "purchase", "at": at, "product_id": "p1", "category": "coffee",
            "amount": 4.2, "currency": "EUR", "order_id": "ord-1", "channel": "in_store", "store_id": "s0"}),
    ])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let store_ok = json!({"id": "s9", "name": "New", "category": "cafe", "time_zone": "Europe/Helsinki",
        "fence": {"type": "circle", "lat": 60.17, "lon": 24.94, "radius_m": 50}});
    let offer_ok = json!({"id": "o9", "campaign_id": "c9", "title": "T", "body": "B", "category": "coffee",
        "store_ids": ["s0"], "trigger": {"type": "enter"}});
    let too_many: Vec<Value> = (0..101).map(|i| fix(&format!("e{i}"))).collect();
    let big = format!(
        "{{\"user_id\": \"u1\", \"events\": [{}]}}",
        vec![fix("x").to_string(); 1].join(",")
    ) + &" ".repeat(10 * 1024 * 1024);
    let polygon = |coords: Value| {
        with(
            store_ok.clone(),
            "fence",
            json!({"type": "polygon", "geometry": {"type": "Polygon", "coordinates": coords}}),
        )
    };

    // A campaign with a coupon pool, so refused uploads and redemptions have rows to spare.
    let (s, v) = call(
        &h,
        "PUT",
        "/v1/admin/campaigns/cpool",
        json!({"id": "cpool", "name": "Pool", "coupon_pool": true}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = call(
        &h,
        "POST",
        "/v1/admin/campaigns/cpool/coupons",
        "code\nP-1\nP-2\n",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let campaign_ok = json!({"id": "cpool", "name": "Pool", "coupon_pool": true});
    let cases: Vec<(&str, &str, &str, Body, u16, &str)> = vec![
        ("empty body", "POST", "/v1/events", Body::empty(), 400, "body"),
        ("not json", "POST", "/v1/events", Body::from("{\"user_id\": "), 400, "body"),
        ("bad utf-8", "POST", "/v1/events", Body::from(vec![b'{', 0xff, 0xfe, b'}']), 400, "body"),
        ("json array", "POST", "/v1/events", Body::from("[]"), 400, ""),
        ("10 MB body", "POST", "/v1/events", Body::from(big), 413, "body"),
        ("missing user", "POST", "/v1/events", Body::from(json!({"events": [fix("a")]}).to_string()), 400, "user_id"),
        ("bad user id", "POST", "/v1/events", Body::from(json!({"user_id": "a b", "events": [fix("a")]}).to_string()), 400, "user_id"),
        ("unknown batch field", "POST", "/v1/events", Body::from(json!({"user_id": "u1", "events": [fix("a")], "x": 1}).to_string()), 400, "x"),
        ("events not array", "POST", "/v1/events", Body::from(json!({"user_id": "u1", "events": {}}).to_string()), 400, "events"),
        ("empty batch", "POST", "/v1/events", Body::from(batch(vec![])), 400, "events"),
        ("batch of 101", "POST", "/v1/events", Body::from(batch(too_many)), 400, "events"),
        ("lat out of range", "POST", "/v1/events", Body::from(batch(vec![with(fix("a"), "lat", json!(91))])), 400, "events[0].lat"),
        ("lon out of range", "POST", "/v1/events", Body::from(batch(vec![with(fix("a"), "lon", json!(-181))])), 400, "events[0].lon"),
        ("NaN lat", "POST", "/v1/events", Body::from(batch(vec![with(fix("a"), "lat", json!("NaN"))])), 400, "events[0].lat"),
        ("lat as string", "POST", "/v1/events", Body::from(batch(vec![with(fix("a"), "lat", json!("60.1"))])), 400, "events[0].lat"),
        ("negative accuracy", "POST", "/v1/events", Body::from(batch(vec![with(fix("a"), "accuracy_m", json!(-3))])), 400, "events[0].accuracy_m"),
        ("far future", "POST", "/v1/events", Body::from(batch(vec![with(fix("a"), "at", json!("2099-01-01T00:00:00Z"))])), 400, "events[0].at"),
        ("bad timestamp", "POST", "/v1/events", Body::from(batch(vec![with(fix("a"), "at", json!("noon"))])), 400, "events[0].at"),
        ("unknown event type", "POST", "/v1/events", Body::from(batch(vec![with(fix("a"), "type", json!("teleport"))])), 400, "events[0].type"),
        ("unknown event field", "POST", "/v1/events", Body::from(batch(vec![with(fix("a"), "speed", json!(3))])), 400, "events[0].speed"),
        ("missing lat", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "location", "at": noon().to_rfc3339(), "lon": 24.9, "accuracy_m": 5})])), 400, "events[0].lat"),
        ("good then bad: nothing applied", "POST", "/v1/events", Body::from(batch(vec![fix("good"), with(fix("bad"), "lat", json!(1e9))])), 400, "events[1].lat"),
        ("duplicate ids in batch", "POST", "/v1/events", Body::from(batch(vec![fix("a"), fix("a")])), 400, "events[1].event_id"),
        ("bad consent purpose", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "consent", "at": noon().to_rfc3339(), "purpose": "marketing", "granted": true})])), 400, "events[0].purpose"),
        ("bad platform", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "push_token", "at": noon().to_rfc3339(), "platform": "sms", "token": "x"})])), 400, "events[0].platform"),
        ("bad locale", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "push_token", "at": noon().to_rfc3339(), "platform": "fcm", "token": "x", "locale": "english please"})])), 400, "events[0].locale"),
        ("purchase without product", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "purchase", "at": noon().to_rfc3339()})])), 400, "events[0].product_id"),
        ("consent not bool", "PUT", "/v1/users/u1/consent", Body::from(json!({"push": "yes"}).to_string()), 400, "push"),
        ("consent unknown purpose", "PUT", "/v1/users/u1/consent", Body::from(json!({"ads": true}).to_string()), 400, "ads"),
        ("consent empty", "PUT", "/v1/users/u1/consent", Body::from("{}"), 400, "body"),
        ("bad user id in path", "DELETE", "/v1/users/a%20b", Body::empty(), 400, "user_id"),
        ("bad user id in presence path", "GET", "/v1/users/a%20b/presence", Body::empty(), 400, "user_id"),
        ("store bad time zone", "POST", "/v1/admin/stores", Body::from(with(store_ok.clone(), "time_zone", json!("Europe/Atlantis")).to_string()), 400, "time_zone"),
        ("store negative radius", "POST", "/v1/admin/stores", Body::from(with(store_ok.clone(), "fence", json!({"type": "circle", "lat": 60.17, "lon": 24.94, "radius_m": -1})).to_string()), 400, "fence.radius_m"),
        ("store NaN-ish lat", "POST", "/v1/admin/stores", Body::from(with(store_ok.clone(), "fence", json!({"type": "circle", "lat": "NaN", "lon": 24.94, "radius_m": 10})).to_string()), 400, "fence.lat"),
        ("store unknown field", "POST", "/v1/admin/stores", Body::from(with(store_ok.clone(), "colour", json!("red")).to_string()), 400, "colour"),
        ("geojson open ring", "POST", "/v1/admin/stores", Body::from(polygon(json!([[[24.9, 60.1], [24.91, 60.1], [24.91, 60.11]]])).to_string()), 400, "fence.geometry.coordinates[0]"),
        ("geojson self-intersecting", "POST", "/v1/admin/stores", Body::from(polygon(json!([[[24.9, 60.1], [24.91, 60.11], [24.91, 60.1], [24.9, 60.11], [24.9, 60.1]]])).to_string()), 400, "fence.geometry.coordinates"),
        ("geojson wrong type", "POST", "/v1/admin/stores", Body::from(with(store_ok.clone(), "fence", json!({"type": "polygon", "geometry": {"type": "Point", "coordinates": [24.9, 60.1]}})).to_string()), 400, "fence.geometry.type"),
        ("offer unknown store", "POST", "/v1/admin/offers", Body::from(with(offer_ok.clone(), "store_ids", json!(["nope"])).to_string()), 400, "store_ids[0]"),
        ("offer threshold > 1", "POST", "/v1/admin/offers", Body::from(with(offer_ok.clone(), "threshold", json!(1.5)).to_string()), 400, "threshold"),
        ("offer bad daypart", "POST", "/v1/admin/offers", Body::from(with(offer_ok.clone(), "dayparts", json!(["brunch"])).to_string()), 400, "dayparts[0]"),
        ("offer dwell 0 min", "POST", "/v1/admin/offers", Body::from(with(offer_ok.clone(), "trigger", json!({"type": "dwell", "minutes": 0})).to_string()), 400, "trigger.minutes"),
        ("policy zero cap", "PUT", "/v1/admin/policy", Body::from(json!({"per_day": 0, "per_week": 5, "min_gap_minutes": 0, "quiet_start": "21:00:00", "quiet_end": "08:00:00"}).to_string()), 400, "per_day"),
        ("path id mismatch", "PUT", "/v1/admin/stores/s1", Body::from(store_ok.to_string()), 400, "id"),
        ("opened with a bad offer id", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "notification_opened", "at": noon().to_rfc3339(), "offer_id": "a b"})])), 400, "events[0].offer_id"),
        ("redeemed with a long delivery id", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "coupon_redeemed", "at": noon().to_rfc3339(), "offer_id": "o0", "delivery_id": "d".repeat(65)})])), 400, "events[0].delivery_id"),
        ("purchase amount without currency", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "purchase", "at": noon().to_rfc3339(), "category": "coffee", "amount": 4.5})])), 400, "events[0].currency"),
        ("purchase currency not ISO 4217", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "purchase", "at": noon().to_rfc3339(), "category": "coffee", "amount": 4.5, "currency": "eur"})])), 400, "events[0].currency"),
        ("purchase amount negative", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "purchase", "at": noon().to_rfc3339(), "category": "coffee", "amount": -1, "currency": "EUR"})])), 400, "events[0].amount"),
        ("purchase channel unknown", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "purchase", "at": noon().to_rfc3339(), "category": "coffee", "channel": "telepathy"})])), 400, "events[0].channel"),
        ("amount on a view", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "view", "at": noon().to_rfc3339(), "category": "coffee", "amount": 4.5, "currency": "EUR"})])), 400, "events[0].amount"),
        ("redeemed code with a space", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "coupon_redeemed", "at": noon().to_rfc3339(), "offer_id": "o1", "code": "A B"})])), 400, "events[0].code"),
        ("purchase category not a string", "POST", "/v1/events", Body::from(batch(vec![json!({"event_id": "a", "type": "purchase", "at": noon().to_rfc3339(), "product_id": "p2", "category": 5})])), 400, "events[0].category"),
        ("policy unknown field", "PUT", "/v1/admin/policy", Body::from(json!({"per_day": 3, "per_week": 5, "min_gap_minutes": 0, "quiet_start": "21:00:00", "quiet_end": "08:00:00", "x": 1}).to_string()), 400, "x"),
        ("policy partial (PUT replaces the whole policy)", "PUT", "/v1/admin/policy", Body::from(json!({"per_day": 3}).to_string()), 400, "per_week"),
        ("policy bad quiet time", "PUT", "/v1/admin/policy", Body::from(json!({"per_day": 3, "per_week": 5, "min_gap_minutes": 0, "quiet_start": "25:00:00", "quiet_end": "08:00:00"}).to_string()), 400, "quiet_start"),
        ("simulate no events", "POST", "/v1/admin/simulate", Body::from(json!({"events": []}).to_string()), 400, "events"),
        ("coupon file with a bad code", "POST", "/v1/admin/campaigns/cpool/coupons", Body::from("code\nQ-1\nA B\n"), 400, "rows[3].code"),
        ("coupon file repeating a code", "POST", "/v1/admin/campaigns/cpool/coupons", Body::from("Q-1\nQ-1\n"), 400, "rows[2].code"),
        ("coupon already in a pool", "POST", "/v1/admin/campaigns/cpool/coupons", Body::from("Q-1\nP-2\n"), 400, "rows[2].code"),
        ("coupon file without a code", "POST", "/v1/admin/campaigns/cpool/coupons", Body::from("code\n\n"), 400, "body"),
        ("coupon upload with an unknown parameter", "POST", "/v1/admin/campaigns/cpool/coupons?size=2", Body::from("Q-1\n"), 400, "size"),
        ("redemption of a malformed code", "POST", "/v1/admin/redemptions", Body::from(json!({"code": "a b"}).to_string()), 400, "code"),
        ("redemption with an unknown field", "POST", "/v1/admin/redemptions", Body::from(json!({"code": "P-1", "till": 3}).to_string()), 400, "till"),
        ("results from a day that does not exist", "GET", "/v1/admin/campaigns/cpool/results?from=2026-02-30", Body::empty(), 400, "from"),
        ("campaign with a zero send rate", "PUT", "/v1/admin/campaigns/cpool", Body::from(with(campaign_ok.clone(), "max_per_minute", json!(0)).to_string()), 400, "max_per_minute"),
        ("campaign deferring over a day", "PUT", "/v1/admin/campaigns/cpool", Body::from(with(campaign_ok.clone(), "defer_minutes", json!(1441)).to_string()), 400, "defer_minutes"),
        ("campaign waiting for presence without deferral", "PUT", "/v1/admin/campaigns/cpool", Body::from(with(campaign_ok.clone(), "defer_only_if_present", json!(true)).to_string()), 400, "defer_only_if_present"),
        ("variant with an unknown priority", "PUT", "/v1/admin/campaigns/cpool", Body::from(with(campaign_ok.clone(), "variants", json!([{"id": "a", "default_locale": "en", "content": {"en": {"title": "T", "body": "B"}}, "priority": "urgent"}])).to_string()), 400, "variants[0].priority"),
        ("store with unreadable opening hours", "PUT", "/v1/admin/stores/s9", Body::from(with(store_ok.clone(), "opening_hours", json!("Mon - Fri 11am - 11pm")).to_string()), 400, "opening_hours"),
        ("store with an upper-case tag", "PUT", "/v1/admin/stores/s9", Body::from(with(store_ok.clone(), "tags", json!(["Flagship"])).to_string()), 400, "tags[0]"),
        ("offer with a bad store tag", "PUT", "/v1/admin/offers/o9", Body::from(with(offer_ok.clone(), "store_tags", json!(["a b"])).to_string()), 400, "store_tags[0]"),
        ("offer for visit 0", "PUT", "/v1/admin/offers/o9", Body::from(with(offer_ok.clone(), "nth_visit", json!(0)).to_string()), 400, "nth_visit"),
        ("offer once per week", "PUT", "/v1/admin/offers/o9", Body::from(with(offer_ok.clone(), "once_per", json!("week")).to_string()), 400, "once_per"),
    ];
    assert!(cases.len() >= 25);
    // The profile is compared as the store reads it (DynamoDB keeps it deflated).
    let rows = snapshot(&h).await;
    for held in ["tok-u1", "notification_opened", "p1", "per_day", "P-2"] {
        assert!(rows.contains(held), "the snapshot covers {held}: {rows}");
    }
    let before = snapshot(&h).await;
    for (name, method, uri, body, want, field) in cases {
        let (status, v) = call(&h, method, uri, body).await;
        assert_eq!(status.as_u16(), want, "{name}: {v}");
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], json!(field), "{name}: {v}");
        }
        assert!(
            v["error"]["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{name}: a reason is given: {v}"
        );
        assert_eq!(snapshot(&h).await, before, "{name}: state changed");
    }
}

#[tokio::test]
async fn a_location_batch_answers_each_event_with_its_decision() {
    let h = harness(Backend::Sqlite, 2, policy(5)).await;
    let mut events: Vec<Value> = ["push", "location", "personalisation"]
        .iter()
        .map(|p| json!({"event_id": format!("c-{p}"), "type": "consent", "at": noon().to_rfc3339(), "purpose": p, "granted": true}))
        .collect();
    events.push(json!({"event_id": "t", "type": "push_token", "at": noon().to_rfc3339(), "platform": "apns", "token": "ab12"}));
    events.push(fix("f1"));
    let (s, v) = call(&h, "POST", "/v1/events", batch(events.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert!(results.iter().all(|r| r["status"] == "accepted"));
    assert_eq!(results[4]["decision"]["verdict"], "sent");
    assert_eq!(results[4]["decision"]["offer_id"], "o0");
    // Resending the same batch: all duplicates, same decision, no second push.
    let (_, v2) = call(&h, "POST", "/v1/events", batch(events)).await;
    assert!(
        v2["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "duplicate")
    );
    assert_eq!(v2["results"][4]["decision"]["verdict"], "sent");
    // The answer carries the decision without the candidates weighed, the first time and
    // as a duplicate alike (the idempotency record keeps what was answered); the decision
    // log keeps them.
    assert_eq!(v["results"][4]["decision"]["candidates"], json!([]), "{v}");
    assert_eq!(v2["results"][4]["decision"], v["results"][4]["decision"]);
    let logged = h.store.decisions().await.unwrap();
    assert!(
        logged
            .iter()
            .any(|d| d.event_id.as_str() == "f1" && !d.candidates.is_empty()),
        "{logged:?}"
    );
    // The idempotency record itself holds no candidates: a duplicate seen by the engine
    // answers the stored decision, without them.
    let again =
        nearcast_core::event::Event::from_json(&fix("f1"), Some(&id("u1")), noon()).unwrap();
    let r = h.engine.process(&again).await.unwrap();
    assert_eq!(r.status, "duplicate");
    let d = r.decision.unwrap();
    assert_eq!(d.verdict, nearcast_core::decision::Verdict::Sent);
    assert!(d.candidates.is_empty(), "{d:?}");
    assert_eq!(h.notifier.sent().len(), 1);
    // The token never appears in an answer.
    assert!(!v.to_string().contains("ab12"));
}

#[tokio::test]
async fn consent_erasure_admin_and_simulation_routes_work() {
    let h = harness(Backend::Sqlite, 2, policy(5)).await;
    let (s, v) = call(&h, "GET", "/v1/users/u7/consent", Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["consents"]["push"]["granted"], false, "unknown means no");
    let (s, v) = call(
        &h,
        "PUT",
        "/v1/users/u7/consent",
        Body::from(
            json!({"push": true, "location": true, "policy_version": "2026-10"}).to_string(),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["consents"]["push"]["granted"], true);
    assert_eq!(v["consents"]["personalisation"]["granted"], false);
    let (s, v) = call(&h, "DELETE", "/v1/users/u7", Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["erased_records"].as_u64().unwrap() >= 1);
    assert_eq!(h.sqlite.as_ref().unwrap().rows_about(&id("u7")).unwrap(), 0);

    let store = json!({"name": "Kiosk", "category": "kiosk", "time_zone": "Europe/Helsinki",
        "fence": {"type": "polygon", "geometry": {"type": "Polygon", "coordinates": [[[24.95, 60.17], [24.951, 60.17], [24.951, 60.1705], [24.95, 60.1705], [24.95, 60.17]]]}}});
    let (s, _) = call(
        &h,
        "PUT",
        "/v1/admin/stores/k1",
        Body::from(store.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(&h, "GET", "/v1/admin/stores/k1", Body::empty()).await;
    assert_eq!((s, v["name"].clone()), (StatusCode::OK, json!("Kiosk")));
    let offer = json!({"id": "ko", "campaign_id": "kc", "title": "Rain?", "body": "Umbrellas at the kiosk", "category": "umbrella",
        "store_ids": ["k1"], "trigger": {"type": "enter"}, "threshold": 0.0, "weather": {"conditions": ["rain"]}});
    let (s, _) = call(
        &h,
        "POST",
        "/v1/admin/offers",
        Body::from(offer.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = call(
        &h,
        "POST",
        "/v1/admin/offers",
        Body::from(offer.to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = call(&h, "POST", "/v1/admin/simulate", Body::from(json!({"events": [
        {"type": "location", "at": noon().to_rfc3339(), "lat": 60.17025, "lon": 24.9505, "accuracy_m": 5}]}).to_string())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["decisions"][0]["offer_id"], "ko");
    assert_eq!(v["summary"]["sent"], 1);
    let (s, v) = call(&h, "POST", "/v1/admin/simulate", Body::from(json!({"weather": {"condition": "clear", "temp_c": 10},
        "events": [{"type": "location", "at": noon().to_rfc3339(), "lat": 60.17025, "lon": 24.9505, "accuracy_m": 5}]}).to_string())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["decisions"][0]["reason"]["code"], "weather");
    assert_eq!(
        h.store.deliveries().await.unwrap().len(),
        0,
        "simulation touches nothing live"
    );
    let (s, _) = call(&h, "DELETE", "/v1/admin/offers/ko", Body::empty()).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&h, "DELETE", "/v1/admin/offers/ko", Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = call(&h, "GET", "/healthz", Body::empty()).await;
    assert_eq!((s, v["stores"].clone()), (StatusCode::OK, json!(3)));
    let (s, _) = call(&h, "GET", "/nope", Body::empty()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Presence through the API on both hosts: each location answer lists the visits it began
/// or ended, `GET /v1/users/{id}/presence` shows the visit in progress, both say when the
/// store's dwell offer falls due (the fix the app should send by then), and a bad id is a
/// 400 naming `user_id`.
async fn presence_is_in_each_answer_and_readable_by_the_app(backend: Backend) {
    let h = harness(backend, 2, policy(5)).await;
    let dwell = json!({"id": "o-dwell", "campaign_id": "c-dwell", "title": "T", "body": "B",
        "category": "tea", "store_ids": ["s0"], "trigger": {"type": "dwell", "minutes": 15}});
    let (s, v) = call(
        &h,
        "PUT",
        "/v1/admin/offers/o-dwell",
        Body::from(dwell.to_string()),
    )
    .await;
    assert!(s.is_success(), "{v}");
    let consent = ["push", "location"].map(|p| json!({"event_id": format!("c-{p}"), "type": "consent", "at": noon().to_rfc3339(), "purpose": p, "granted": true}));
    let (s, v) = call(&h, "POST", "/v1/events", batch(consent.to_vec())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let at = |minutes: i64| noon() + chrono::Duration::minutes(minutes);
    let fix_at = |event: &str, minutes: i64, (lat, lon): (f64, f64)| json!({"event_id": event, "type": "location", "at": at(minutes).to_rfc3339(), "lat": lat, "lon": lon, "accuracy_m": 10});
    let post = |event: Value, minutes: i64| {
        h.clock.set(at(minutes));
        call(&h, "POST", "/v1/events", batch(vec![event]))
    };
    let (s, v) = post(fix_at("f1", 0, store_point(0)), 0).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let enter = &v["results"][0]["decision"]["presence"];
    assert_eq!(
        enter,
        &json!([{"store_id": "s0", "transition": "enter", "since": at(0)}]),
        "{v}"
    );
    assert_eq!(
        v["results"][0]["decision"]["next_fix_by"],
        json!(at(15)),
        "{v}"
    );
    let (s, v) = post(fix_at("f2", 10, store_point(0)), 10).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["results"][0]["decision"].get("presence").is_none(), "{v}");
    let (s, v) = call(&h, "GET", "/v1/users/u1/presence", Body::empty()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({"user_id": "u1", "visits": [{"store_id": "s0", "since": at(0),
            "last_seen": at(10), "minutes": 10, "leaving": false, "next_dwell_at": at(15)}]})
    );
    // Walking away (250 m south): leaving after one fix, gone after a minute.
    let away = (store_point(0).0 - 0.00225, store_point(0).1);
    post(fix_at("f3", 11, away), 11).await;
    let (_, v) = call(&h, "GET", "/v1/users/u1/presence", Body::empty()).await;
    assert_eq!(v["visits"][0]["leaving"], true, "{v}");
    let (_, v) = post(fix_at("f4", 12, away), 12).await;
    assert_eq!(
        v["results"][0]["decision"]["presence"],
        json!([{"store_id": "s0", "transition": "exit", "since": at(0), "minutes": 10}]),
        "{v}"
    );
    let (_, v) = call(&h, "GET", "/v1/users/u1/presence", Body::empty()).await;
    assert_eq!(v["visits"], json!([]), "{v}");
    let (_, v) = call(&h, "GET", "/v1/users/nobody/presence", Body::empty()).await;
    assert_eq!(v["visits"], json!([]), "{v}");
    let (s, v) = call(&h, "GET", "/v1/users/a%20b/presence", Body::empty()).await;
    assert_eq!(
        (s, &v["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("user_id")),
        "{v}"
    );
}

#[tokio::test]
async fn presence_is_in_each_answer_and_readable_by_the_app_on_sqlite() {
    presence_is_in_each_answer_and_readable_by_the_app(Backend::Sqlite).await;
}

#[tokio::test]
async fn presence_is_in_each_answer_and_readable_by_the_app_on_dynamodb() {
    presence_is_in_each_answer_and_readable_by_the_app(Backend::Dynamo).await;
}
