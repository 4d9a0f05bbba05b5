//! The push messages as SNS publishes them (`MessageStructure=json`), built here rather
//! than in the SNS adapter so that the admin API can preview the exact payload of a
//! campaign's variants on both hosts, and the embedded outbox writes the same bytes.

use crate::decision::Push;
use crate::ports::NotifyError;
use serde_json::json;

/// The largest message published: the APNs and FCM payload limit, 4 KB.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// Appended to a truncated body or title.
const ELLIPSIS: char = '…';

/// The platform payload (the value of the `APNS`/`GCM` key, before it is made a string).
///
/// Both platforms carry the delivery and offer ids and, when the push has them, the
/// coupon code, the deep link and the campaign variant. APNs gets them as custom keys
/// next to `aps` (`mutable-content` set when there is an image, so a notification service
/// extension can fetch it); FCM as string `data` values, the image as the notification's
/// `image`, with the push's `priority`. APNs takes its priority from a header, not the
/// payload ([`crate::campaign::Priority::apns`]; SNS's message attribute).
fn platform_payload(push: &Push, key: &str, title: &str, body: &str) -> serde_json::Value {
    let mut extra = serde_json::Map::new();
    extra.insert("delivery_id".into(), json!(push.delivery_id));
    extra.insert("offer_id".into(), json!(push.offer_id.to_string()));
    if let Some(c) = &push.coupon {
        extra.insert("coupon".into(), json!(c));
    }
    if let Some(l) = &push.deep_link {
        extra.insert("deep_link".into(), json!(l));
    }
    if let Some(v) = &push.variant_id {
        extra.insert("variant_id".into(), json!(v.to_string()));
    }
    if key.starts_with("APNS") {
        let mut aps = serde_json::Map::new();
        aps.insert("alert".into(), json!({"title": title, "body": body}));
        if let Some(i) = &push.image_url {
            aps.insert("mutable-content".into(), json!(1));
            extra.insert("image_url".into(), json!(i));
        }
        let mut root = serde_json::Map::new();
        root.insert("aps".into(), serde_json::Value::Object(aps));
        root.extend(extra);
        serde_json::Value::Object(root)
    } else {
        let mut notification = serde_json::Map::new();
        notification.insert("title".into(), json!(title));
        notification.insert("body".into(), json!(body));
        if let Some(i) = &push.image_url {
            notification.insert("image".into(), json!(i));
        }
        json!({
            "notification": notification,
            "data": extra,
            "priority": push.priority.fcm(),
        })
    }
}

/// The platform payload of `push` under `key` (`APNS`, `APNS_SANDBOX` or `GCM`) as the
/// device receives it, within [`MAX_PAYLOAD_BYTES`] as [`build_message`] cuts it.
///
/// # Errors
/// As [`build_message`].
pub fn device_payload(push: &Push, key: &str) -> Result<serde_json::Value, NotifyError> {
    let message: serde_json::Value = serde_json::from_str(&build_message(push, key)?)
        .map_err(|e| NotifyError::Permanent(e.to_string()))?;
    let inner = message[key].as_str().unwrap_or("{}");
    serde_json::from_str(inner).map_err(|e| NotifyError::Permanent(e.to_string()))
}

fn render(push: &Push, key: &str, title: &str, body: &str) -> String {
    let inner = platform_payload(push, key, title, body).to_string();
    let mut outer = serde_json::Map::new();
    outer.insert("default".into(), json!(body));
    outer.insert(key.into(), json!(inner));
    serde_json::Value::Object(outer).to_string()
}

/// `text` cut to its first `end` bytes (a char boundary), with an ellipsis if cut.
fn cut(text: &str, end: usize) -> String {
    if end >= text.len() {
        return text.to_string();
    }
    let mut s = String::with_capacity(end + ELLIPSIS.len_utf8());
    s.push_str(&text[..end]);
    s.push(ELLIPSIS);
    s
}

/// The longest cut of `text` for which `fits` holds, if any. The rendered size grows with
/// the cut, so a binary search over the char boundaries finds it.
fn longest_fit(text: &str, fits: impl Fn(&str) -> bool) -> Option<String> {
    let ends: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    // Invariant: ends[..lo] fit (or lo == 0), ends[hi..] do not.
    let (mut lo, mut hi) = (0usize, ends.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(&cut(text, ends[mid])) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    (lo > 0).then(|| cut(text, ends[lo - 1]))
}

/// The message published for `push` under platform key `key` (`APNS`, `APNS_SANDBOX` or
/// `GCM`), with `MessageStructure=json`:
///
/// ```json
/// {"default": "<body>",
///  "APNS": "{\"aps\":{\"alert\":{\"title\":..,\"body\":..}},\"delivery_id\":..,\"offer_id\":..}"}
/// {"default": "<body>",
///  "GCM": "{\"notification\":{\"title\":..,\"body\":..},\"data\":{\"delivery_id\":..,\"offer_id\":..,\"coupon\":..}}"}
/// ```
///
/// (`coupon`, `deep_link`, `variant_id` and the image only when the push has them; see
/// `platform_payload`.) At most [`MAX_PAYLOAD_BYTES`] bytes: the body,
/// then if need be the title, is cut on a char boundary and ends with `…`.
///
/// # Errors
/// [`NotifyError::Permanent`] when even an empty title and body do not fit (huge ids).
pub fn build_message(push: &Push, key: &str) -> Result<String, NotifyError> {
    let fits = |title: &str, body: &str| render(push, key, title, body).len() <= MAX_PAYLOAD_BYTES;
    if fits(&push.title, &push.body) {
        return Ok(render(push, key, &push.title, &push.body));
    }
    if let Some(body) = longest_fit(&push.body, |b| fits(&push.title, b)) {
        return Ok(render(push, key, &push.title, &body));
    }
    if let Some(title) = longest_fit(&push.title, |t| fits(t, "")) {
        return Ok(render(push, key, &title, ""));
    }
    Err(NotifyError::Permanent(format!(
        "SNS Publish: payload over {MAX_PAYLOAD_BYTES} bytes even without title and body"
    )))
}
