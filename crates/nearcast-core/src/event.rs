//! Device events and their strict validation.
//!
//! Events arrive as JSON. They are parsed by hand from [`serde_json::Value`] rather than by
//! derived deserialisers so that every rejection names the exact field (`events[3].lat`),
//! unknown fields and unknown event types are rejected by name, and numbers are checked for
//! range and finiteness before anything touches state.

use crate::FieldError;
use crate::ids::Id;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// Most events one batch may carry.
pub const MAX_BATCH: usize = 100;
/// Longest free-text value (product names, categories, tokens) accepted.
pub const MAX_TEXT: usize = 256;
/// Longest push token accepted (APNs tokens are 64 hex chars, FCM tokens about 160).
pub const MAX_TOKEN: usize = 4096;
/// How far in the future an event timestamp may be (device clocks drift).
pub const MAX_FUTURE: Duration = Duration::hours(24);
/// Largest GPS accuracy radius accepted, in metres.
pub const MAX_ACCURACY_M: f64 = 100_000.0;

/// A validated event of one user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Client-generated id, the idempotency key.
    pub event_id: Id,
    /// Whose event it is.
    pub user_id: Id,
    /// When it happened on the device (UTC).
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
}

/// What an event says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A location fix.
    Location(Fix),
    /// A behaviour event about a product.
    Behaviour(Behaviour),
    /// The device registered (or rotated) its push token.
    PushToken {
        /// Push platform.
        platform: Platform,
        /// The token; never logged.
        #[serde(skip_serializing)]
        token: String,
        /// The app's locale (`fi-FI`), for the campaign text in the user's language.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        locale: Option<String>,
    },
    /// The user changed a consent.
    Consent {
        /// Which purpose.
        purpose: crate::consent::Purpose,
        /// Granted or withdrawn.
        granted: bool,
        /// Policy version the user saw.
        policy_version: Option<String>,
    },
}

impl EventKind {
    /// The wire name of the event type.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Location(_) => "location",
            EventKind::Behaviour(b) => b.action.as_str(),
            EventKind::PushToken { .. } => "push_token",
            EventKind::Consent { .. } => "consent",
        }
    }
}

/// A location fix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fix {
    /// Latitude in degrees, finite, in [-90, 90].
    pub lat: f64,
    /// Longitude in degrees, finite, in [-180, 180].
    pub lon: f64,
    /// Radius of 68 % confidence in metres, finite, in [0, 100 000].
    pub accuracy_m: f64,
}

/// Push platforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Apple Push Notification service.
    Apns,
    /// Firebase Cloud Messaging.
    Fcm,
}

/// Behaviour actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Looked at a product.
    View,
    /// Put a product in the cart.
    AddToCart,
    /// Bought a product.
    Purchase,
    /// Opened a push notification.
    NotificationOpened,
    /// Redeemed an offer's coupon.
    CouponRedeemed,
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::AddToCart => "add_to_cart",
            Action::Purchase => "purchase",
            Action::NotificationOpened => "notification_opened",
            Action::CouponRedeemed => "coupon_redeemed",
        }
    }
}

/// A behaviour event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Behaviour {
    /// What the user did.
    pub action: Action,
    /// Product concerned (view, add_to_cart, purchase).
    pub product_id: Option<Id>,
    /// Product category, e.g. `coffee`.
    pub category: Option<String>,
    /// Offer concerned (notification_opened, coupon_redeemed).
    pub offer_id: Option<Id>,
    /// The push concerned, when the app knows it (notification_opened, coupon_redeemed):
    /// the `delivery_id` of the push payload. Attributes the outcome to that decision.
    pub delivery_id: Option<String>,
    /// A purchase's amount, currency, order, channel and store; a redemption's code.
    pub detail: crate::ports::OutcomeDetail,
}

/// The largest purchase amount accepted, in any currency.
pub const MAX_AMOUNT: f64 = 10_000_000.0;

/// The known event types, listed in rejections of unknown ones.
pub const EVENT_TYPES: &[&str] = &[
    "location",
    "view",
    "add_to_cart",
    "purchase",
    "notification_opened",
    "coupon_redeemed",
    "push_token",
    "consent",
];

/// A JSON object taken apart field by field; rejects fields nobody asked for.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    taken: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// Starts on `v`, which must be an object.
    ///
    /// # Errors
    /// When `v` is not an object.
    pub fn of(v: &'a Value) -> Result<Self, FieldError> {
        match v {
            Value::Object(map) => Ok(Self {
                map,
                taken: Vec::new(),
            }),
            other => Err(FieldError::new(
                "",
                format!("must be a JSON object, got {}", kind_of(other)),
            )),
        }
    }

    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.taken.push(name);
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A required field (null counts as missing).
    ///
    /// # Errors
    /// When missing.
    pub fn req(&mut self, name: &'static str) -> Result<&'a Value, FieldError> {
        self.get(name)
            .ok_or_else(|| FieldError::new(name, "is required"))
    }

    /// An optional field.
    pub fn opt(&mut self, name: &'static str) -> Option<&'a Value> {
        self.get(name)
    }

    /// A required string of at most `max` bytes, without control characters.
    ///
    /// # Errors
    /// Missing, wrong type, empty or too long.
    pub fn str(&mut self, name: &'static str, max: usize) -> Result<&'a str, FieldError> {
        let v = self.req(name)?;
        text(v, max).map_err(|e| e.within(name))
    }

    /// An optional string.
    ///
    /// # Errors
    /// Wrong type, empty or too long.
    pub fn opt_str(
        &mut self,
        name: &'static str,
        max: usize,
    ) -> Result<Option<&'a str>, FieldError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => text(v, max).map(Some).map_err(|e| e.within(name)),
        }
    }

    /// A required identifier.
    ///
    /// # Errors
    /// Missing or not a valid [`Id`].
    pub fn id(&mut self, name: &'static str) -> Result<Id, FieldError> {
        let s = self.str(name, usize::MAX)?;
        Id::parse(s).map_err(|e| e.within(name))
    }

    /// An optional identifier.
    ///
    /// # Errors
    /// Not a valid [`Id`].
    pub fn opt_id(&mut self, name: &'static str) -> Result<Option<Id>, FieldError> {
        match self.opt_str(name, usize::MAX)? {
            None => Ok(None),
            Some(s) => Id::parse(s).map(Some).map_err(|e| e.within(name)),
        }
    }

    /// A required finite number in `[lo, hi]`.
    ///
    /// # Errors
    /// Missing, wrong type, not finite or out of range.
    pub fn num(&mut self, name: &'static str, lo: f64, hi: f64) -> Result<f64, FieldError> {
        let v = self.req(name)?;
        number(v, lo, hi).map_err(|e| e.within(name))
    }

    /// A required boolean.
    ///
    /// # Errors
    /// Missing or wrong type.
    pub fn bool(&mut self, name: &'static str) -> Result<bool, FieldError> {
        match self.req(name)? {
            Value::Bool(b) => Ok(*b),
            other => Err(FieldError::new(
                name,
                format!("must be true or false, got {}", kind_of(other)),
            )),
        }
    }

    /// A required RFC 3339 timestamp with offset.
    ///
    /// # Errors
    /// Missing or unparseable.
    pub fn time(&mut self, name: &'static str) -> Result<DateTime<Utc>, FieldError> {
        let s = self.str(name, 64)?;
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                FieldError::new(
                    name,
                    format!("must be an RFC 3339 timestamp with offset, got {s:?}"),
                )
            })
    }

    /// Rejects any field not taken so far.
    ///
    /// # Errors
    /// The first unknown field, alphabetically.
    pub fn finish(self) -> Result<(), FieldError> {
        let mut unknown: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.taken.contains(&k.as_str()))
            .collect();
        unknown.sort();
        match unknown.first() {
            None => Ok(()),
            Some(k) => Err(FieldError::new(k.as_str(), "is not a known field")),
        }
    }
}

/// How a JSON value's type is named in messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string value of at most `max` bytes without control characters.
///
/// # Errors
/// Wrong type, empty, too long, or control characters.
pub fn text(v: &Value, max: usize) -> Result<&str, FieldError> {
    match v {
        Value::String(s) if s.is_empty() => Err(FieldError::new("", "must not be empty")),
        Value::String(s) if s.len() > max => Err(FieldError::new(
            "",
            format!("must be at most {max} bytes, got {}", s.len()),
        )),
        Value::String(s) if s.chars().any(char::is_control) => {
            Err(FieldError::new("", "must not contain control characters"))
        }
        Value::String(s) => Ok(s),
        other => Err(FieldError::new(
            "",
            format!("must be a string, got {}", kind_of(other)),
        )),
    }
}

/// A finite number in `[lo, hi]`.
///
/// # Errors
/// Wrong type, not finite, or out of range.
pub fn number(v: &Value, lo: f64, hi: f64) -> Result<f64, FieldError> {
    // serde_json never yields NaN or infinity from JSON text, but a NaN written as the
    // string "NaN" or an out-of-range literal is caught here.
    let x = match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| FieldError::new("", "must be a finite number"))?,
        other => {
            return Err(FieldError::new(
                "",
                format!("must be a number, got {}", kind_of(other)),
            ));
        }
    };
    if !x.is_finite() {
        return Err(FieldError::new("", "must be a finite number"));
    }
    if x < lo || x > hi {
        // A lower bound of the smallest positive number means "above zero": said so,
        // not printed as 2.2e-308 in full.
        let range = if lo > 0.0 && lo <= f64::MIN_POSITIVE {
            format!("(0, {hi}]")
        } else {
            format!("[{lo}, {hi}]")
        };
        return Err(FieldError::new("", format!("must be in {range}, got {x}")));
    }
    Ok(x)
}

impl Event {
    /// Parses and validates one event object. `default_user` fills in `user_id` for events
    /// posted in a batch (the batch names the user once); `now` bounds timestamps.
    ///
    /// # Errors
    /// The first [`FieldError`] found, with a field path relative to the event object.
    ///
    /// # Example
    /// ```
    /// use nearcast_core::event::{Event, EventKind};
    /// let now = chrono::Utc::now();
    /// let v = serde_json::json!({"event_id": "e1", "user_id": "u1", "type": "location",
    ///     "at": now.to_rfc3339(), "lat": 60.17, "lon": 24.94, "accuracy_m": 12.0});
    /// let e = Event::from_json(&v, None, now).unwrap();
    /// assert!(matches!(e.kind, EventKind::Location(_)));
    /// let bad = serde_json::json!({"event_id": "e1", "user_id": "u1", "type": "location",
    ///     "at": now.to_rfc3339(), "lat": 91.0, "lon": 24.94, "accuracy_m": 12.0});
    /// assert_eq!(Event::from_json(&bad, None, now).unwrap_err().field, "lat");
    /// ```
    pub fn from_json(
        v: &Value,
        default_user: Option<&Id>,
        now: DateTime<Utc>,
    ) -> Result<Event, FieldError> {
        let mut f = Fields::of(v)?;
        let ty = f.str("type", 64)?;
        if !EVENT_TYPES.contains(&ty) {
            return Err(FieldError::new(
                "type",
                format!(
                    "unknown event type {ty:?}; expected one of {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        let event_id = f.id("event_id")?;
        let user_id = match (f.opt_id("user_id")?, default_user) {
            (Some(u), Some(d)) if &u != d => {
                return Err(FieldError::new("user_id", "must match the batch's user_id"));
            }
            (Some(u), _) => u,
            (None, Some(d)) => d.clone(),
            (None, None) => return Err(FieldError::new("user_id", "is required")),
        };
        let at = f.time("at")?;
        if at > now + MAX_FUTURE {
            return Err(FieldError::new(
                "at",
                format!(
                    "must not be more than 24 h in the future, got {}",
                    at.to_rfc3339()
                ),
            ));
        }
        let kind = match ty {
            "location" => EventKind::Location(Fix {
                lat: f.num("lat", -90.0, 90.0)?,
                lon: f.num("lon", -180.0, 180.0)?,
                accuracy_m: f.num("accuracy_m", 0.0, MAX_ACCURACY_M)?,
            }),
            "push_token" => {
                let p = f.str("platform", 16)?;
                let platform = match p {
                    "apns" => Platform::Apns,
                    "fcm" => Platform::Fcm,
                    other => {
                        return Err(FieldError::new(
                            "platform",
                            format!("must be \"apns\" or \"fcm\", got {other:?}"),
                        ));
                    }
                };
                let token = f.str("token", MAX_TOKEN)?.to_string();
                let locale = match f.opt_str("locale", 35)? {
                    Some(l) => {
                        Some(crate::campaign::parse_locale(l).map_err(|e| e.within("locale"))?)
                    }
                    None => None,
                };
                EventKind::PushToken {
                    platform,
                    token,
                    locale,
                }
            }
            "consent" => {
                let p = f.str("purpose", 32)?;
                let purpose = crate::consent::Purpose::parse(p).map_err(|e| e.within("purpose"))?;
                let granted = f.bool("granted")?;
                let policy_version = f.opt_str("policy_version", 64)?.map(str::to_string);
                EventKind::Consent {
                    purpose,
                    granted,
                    policy_version,
                }
            }
            action => {
                let action = match action {
                    "view" => Action::View,
                    "add_to_cart" => Action::AddToCart,
                    "purchase" => Action::Purchase,
                    "notification_opened" => Action::NotificationOpened,
                    _ => Action::CouponRedeemed,
                };
                let product_id = f.opt_id("product_id")?;
                let category = f.opt_str("category", MAX_TEXT)?.map(str::to_string);
                let offer_id = f.opt_id("offer_id")?;
                let delivery_id = match action {
                    Action::NotificationOpened | Action::CouponRedeemed => {
                        f.opt_str("delivery_id", 64)?.map(str::to_string)
                    }
                    _ => None,
                };
                let detail = match action {
                    Action::Purchase => purchase_detail(&mut f)?,
                    Action::CouponRedeemed => crate::ports::OutcomeDetail {
                        code: f
                            .opt_str("code", 64)?
                            .map(|c| {
                                crate::coupon::check_code(c)
                                    .map(|()| c.to_string())
                                    .map_err(|reason| FieldError::new("code", reason))
                            })
                            .transpose()?,
                        ..Default::default()
                    },
                    _ => Default::default(),
                };
                match action {
                    Action::View | Action::AddToCart | Action::Purchase
                        if product_id.is_none() && category.is_none() =>
                    {
                        return Err(FieldError::new(
                            "product_id",
                            format!("is required for {} (or give category)", action.as_str()),
                        ));
                    }
                    Action::NotificationOpened | Action::CouponRedeemed if offer_id.is_none() => {
                        return Err(FieldError::new(
                            "offer_id",
                            format!("is required for {}", action.as_str()),
                        ));
                    }
                    _ => {}
                }
                EventKind::Behaviour(Behaviour {
                    action,
                    product_id,
                    category,
                    offer_id,
                    delivery_id,
                    detail,
                })
            }
        };
        f.finish()?;
        Ok(Event {
            event_id,
            user_id,
            at,
            kind,
        })
    }
}

/// A purchase's optional details: `amount` (0 to [`MAX_AMOUNT`]) with its `currency`
/// (ISO 4217, three capital letters; each needs the other), `order_id` (1-64 bytes),
/// `channel` and `store_id`.
fn purchase_detail(f: &mut Fields<'_>) -> Result<crate::ports::OutcomeDetail, FieldError> {
    let amount = match f.opt("amount") {
        None => None,
        Some(v) => Some(number(v, 0.0, MAX_AMOUNT).map_err(|e| e.within("amount"))?),
    };
    let currency = f.opt_str("currency", 3)?;
    if let Some(c) = currency
        && !(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(FieldError::new(
            "currency",
            format!("must be an ISO 4217 code of three capital letters (EUR), got {c:?}"),
        ));
    }
    match (amount, currency) {
        (Some(_), None) => {
            return Err(FieldError::new("currency", "is required with amount"));
        }
        (None, Some(_)) => return Err(FieldError::new("amount", "is required with currency")),
        _ => {}
    }
    let channel = match f.opt_str("channel", 32)? {
        None => None,
        Some(c) => Some(crate::ports::Channel::parse(c).ok_or_else(|| {
            FieldError::new(
                "channel",
                format!("must be in_store, online or click_and_collect, got {c:?}"),
            )
        })?),
    };
    Ok(crate::ports::OutcomeDetail {
        amount,
        currency: currency.map(str::to_string),
        order_id: f.opt_str("order_id", 64)?.map(str::to_string),
        channel,
        store_id: f.opt_id("store_id")?,
        code: None,
    })
}

/// A validated batch: one user's events, 1 to [`MAX_BATCH`] of them.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The user all events belong to.
    pub user_id: Id,
    /// The events, in the order posted.
    pub events: Vec<Event>,
}

/// One event's rejection inside a batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// Position in the batch.
    pub index: usize,
    /// The event id, when it could be read.
    pub event_id: Option<String>,
    /// The error, with the full path (`events[3].lat`).
    #[serde(flatten)]
    pub error: FieldError,
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchError {
    /// The body itself is wrong (not an object, missing `events`, too many events...).
    Body(FieldError),
    /// One or more events are invalid; none of the batch is applied.
    Events(Vec<Rejection>),
}

impl Batch {
    /// Parses a batch body `{"user_id": "...", "events": [...]}`.
    ///
    /// Validation is all-or-nothing: if any event is invalid the whole batch is refused and
    /// every invalid event is listed, so a client fixes or drops those and resends the rest
    /// (resending accepted ones is harmless: event ids are idempotency keys).
    ///
    /// # Errors
    /// [`BatchError`] naming each bad field.
    pub fn from_json(v: &Value, now: DateTime<Utc>) -> Result<Batch, BatchError> {
        let mut f = Fields::of(v).map_err(BatchError::Body)?;
        let user_id = f.id("user_id").map_err(BatchError::Body)?;
        let events = match f.req("events").map_err(BatchError::Body)? {
            Value::Array(a) => a,
            other => {
                return Err(BatchError::Body(FieldError::new(
                    "events",
                    format!("must be an array, got {}", kind_of(other)),
                )));
            }
        };
        f.finish().map_err(BatchError::Body)?;
        if events.is_empty() {
            return Err(BatchError::Body(FieldError::new(
                "events",
                "must hold at least 1 event",
            )));
        }
        if events.len() > MAX_BATCH {
            return Err(BatchError::Body(FieldError::new(
                "events",
                format!("must hold at most {MAX_BATCH} events, got {}", events.len()),
            )));
        }
        let mut parsed = Vec::with_capacity(events.len());
        let mut rejections = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for (i, ev) in events.iter().enumerate() {
            let prefix = format!("events[{i}]");
            let event_id = ev
                .get("event_id")
                .and_then(Value::as_str)
                .map(str::to_string);
            match Event::from_json(ev, Some(&user_id), now) {
                Ok(e) if !ids.insert(e.event_id.clone()) => rejections.push(Rejection {
                    index: i,
                    event_id,
                    error: FieldError::new(
                        format!("{prefix}.event_id"),
                        "appears twice in this batch",
                    ),
                }),
                Ok(e) => parsed.push(e),
                Err(e) => rejections.push(Rejection {
                    index: i,
                    event_id,
                    error: e.within(&prefix),
                }),
            }
        }
        if rejections.is_empty() {
            Ok(Batch {
                user_id,
                events: parsed,
            })
        } else {
            Err(BatchError::Events(rejections))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-20T12:00:00Z".parse().unwrap()
    }

    fn fix(extra: Value) -> Value {
        let mut v = json!({"event_id": "e1", "type": "location", "at": "2026-11-20T11:59:00Z",
            "lat": 60.17, "lon": 24.94, "accuracy_m": 10});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    fn field_of(v: Value) -> String {
        Event::from_json(&v, Some(&Id::parse("u1").unwrap()), now())
            .unwrap_err()
            .field
    }

    #[test]
    fn location_fields_are_range_checked_by_name() {
        assert_eq!(field_of(fix(json!({"lat": 90.5}))), "lat");
        assert_eq!(field_of(fix(json!({"lon": -180.01}))), "lon");
        assert_eq!(field_of(fix(json!({"lat": "NaN"}))), "lat");
        assert_eq!(field_of(fix(json!({"accuracy_m": -1}))), "accuracy_m");
        assert_eq!(field_of(fix(json!({"at": "yesterday"}))), "at");
        assert_eq!(field_of(fix(json!({"at": "2026-11-22T12:00:01Z"}))), "at");
        assert_eq!(field_of(fix(json!({"altitude": 3}))), "altitude");
        assert_eq!(field_of(fix(json!({"type": "teleport"}))), "type");
        assert_eq!(field_of(fix(json!({"event_id": "a b"}))), "event_id");
        assert_eq!(field_of(fix(json!({"user_id": "u2"}))), "user_id");
    }

    #[test]
    fn batch_rejects_whole_batch_and_lists_each_bad_event() {
        let body = json!({"user_id": "u1", "events": [fix(json!({})), fix(json!({"event_id": "e2", "lat": 100}))]});
        match Batch::from_json(&body, now()) {
            Err(BatchError::Events(r)) => {
                assert_eq!(r.len(), 1);
                assert_eq!(r[0].error.field, "events[1].lat");
            }
            other => panic!("expected rejection, got {other:?}"),
        }
    }

    #[test]
    fn batch_bounds_are_enforced() {
        let many: Vec<Value> = (0..101)
            .map(|i| fix(json!({"event_id": format!("e{i}")})))
            .collect();
        let body = json!({"user_id": "u1", "events": many});
        assert!(
            matches!(Batch::from_json(&body, now()), Err(BatchError::Body(e)) if e.field == "events")
        );
        let body = json!({"user_id": "u1", "events": []});
        assert!(
            matches!(Batch::from_json(&body, now()), Err(BatchError::Body(e)) if e.field == "events")
        );
        let body = json!({"user_id": "u1", "events": [fix(json!({})), fix(json!({}))]});
        assert!(
            matches!(Batch::from_json(&body, now()), Err(BatchError::Events(r)) if r[0].error.field == "events[1].event_id")
        );
    }

    #[test]
    fn opens_and_redemptions_may_name_their_delivery() {
        let u = Id::parse("u1").unwrap();
        let opened = json!({"event_id": "e2", "type": "notification_opened",
            "at": "2026-11-20T11:59:00Z", "offer_id": "o1", "delivery_id": "d-00ff"});
        let e = Event::from_json(&opened, Some(&u), now()).unwrap();
        let EventKind::Behaviour(b) = e.kind else {
            panic!("behaviour")
        };
        assert_eq!(b.delivery_id.as_deref(), Some("d-00ff"));
        // A purchase names no delivery: the field is refused by name.
        let bought = json!({"event_id": "e3", "type": "purchase", "at": "2026-11-20T11:59:00Z",
            "category": "coffee", "delivery_id": "d-00ff"});
        assert_eq!(field_of(bought), "delivery_id");
        let long = json!({"event_id": "e2", "type": "coupon_redeemed",
            "at": "2026-11-20T11:59:00Z", "offer_id": "o1", "delivery_id": "d".repeat(65)});
        assert_eq!(field_of(long), "delivery_id");
    }

    #[test]
    fn a_range_open_at_zero_is_written_as_such() {
        let e = number(&json!(0), f64::MIN_POSITIVE, 50_000.0).unwrap_err();
        assert_eq!(e.reason, "must be in (0, 50000], got 0");
        let e = number(&json!(-1), 0.0, 1.0).unwrap_err();
        assert_eq!(e.reason, "must be in [0, 1], got -1");
        assert_eq!(number(&json!(0.5), f64::MIN_POSITIVE, 1.0).unwrap(), 0.5);
    }

    #[test]
    fn a_purchase_carries_its_amount_order_channel_and_store() {
        let u = Id::parse("u1").unwrap();
        let bought = json!({"event_id": "e1", "type": "purchase", "at": "2026-11-20T11:59:00Z",
            "category": "coffee", "amount": 4.2, "currency": "EUR", "order_id": "ord-77",
            "channel": "click_and_collect", "store_id": "s9"});
        let e = Event::from_json(&bought, Some(&u), now()).unwrap();
        let EventKind::Behaviour(b) = &e.kind else {
            panic!("behaviour")
        };
        assert_eq!(b.detail.amount, Some(4.2));
        assert_eq!(b.detail.currency.as_deref(), Some("EUR"));
        assert_eq!(b.detail.order_id.as_deref(), Some("ord-77"));
        assert_eq!(
            b.detail.channel,
            Some(crate::ports::Channel::ClickAndCollect)
        );
        assert_eq!(b.detail.store_id, Some(Id::parse("s9").unwrap()));
        // The logged outcome keeps them (and its JSON round-trips, flattened).
        let cat =
            crate::catalog::Catalog::build(vec![], vec![], crate::config::CapPolicy::default())
                .unwrap();
        let o = crate::decision::outcome_of(&cat, &e).unwrap();
        assert_eq!(o.detail, b.detail);
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(
            (v["amount"].as_f64(), v["channel"].as_str()),
            (Some(4.2), Some("click_and_collect"))
        );
        assert_eq!(
            serde_json::from_value::<crate::ports::OutcomeRecord>(v).unwrap(),
            o
        );
        // Each needs the other; a code is checked; an amount is refused on a view.
        let no_currency = json!({"event_id": "e2", "type": "purchase", "at": "2026-11-20T11:59:00Z",
            "category": "coffee", "amount": 1});
        assert_eq!(field_of(no_currency), "currency");
        let code = json!({"event_id": "e3", "type": "coupon_redeemed", "at": "2026-11-20T11:59:00Z",
            "offer_id": "o1", "code": "RAIN-001"});
        let e = Event::from_json(&code, Some(&u), now()).unwrap();
        let EventKind::Behaviour(b) = &e.kind else {
            panic!("behaviour")
        };
        assert_eq!(b.detail.code.as_deref(), Some("RAIN-001"));
    }
}
