//! Campaigns: what a marketer launches. A campaign groups offers (each offer names its
//! `campaign_id`) and owns what must be the same for all of them: the status and
//! schedule, the holdout share, the budget of sends, caps per user, the message variants
//! with their text per locale, deep link and image, and the conversion the results count.
//!
//! An offer whose campaign is not defined runs as before (always active, its own title
//! and body, the largest holdout share among the campaign's offers), so catalogs written
//! before campaigns existed keep working.

use crate::FieldError;
use crate::holdout::stable_hash;
use crate::ids::Id;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most variants a campaign may have.
pub const MAX_VARIANTS: usize = 8;
/// Most locales one variant may carry.
pub const MAX_LOCALES: usize = 32;
/// Largest budget of sends a campaign may have.
pub const MAX_BUDGET: u64 = 1_000_000_000;
/// Tokens a title or body may hold, replaced at send.
pub const TOKENS: [&str; 2] = ["{store}", COUPON_TOKEN];

/// The token for the push's coupon code.
pub const COUPON_TOKEN: &str = "{coupon}";

/// Where a campaign stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being written: sends nothing.
    #[default]
    Draft,
    /// Sends within its schedule.
    Active,
    /// Stopped for now: sends nothing, may be activated again.
    Paused,
    /// Over for good: sends nothing.
    Ended,
}

impl Status {
    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Ended => "ended",
        }
    }

    /// Whether a campaign may go from `self` to `to`: an ended campaign stays ended (its
    /// results are final), anything else may change.
    pub fn may_become(self, to: Status) -> bool {
        self != Status::Ended || to == Status::Ended
    }
}

/// Caps per user for one campaign, on top of the global cap policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerUser {
    /// Pushes of this campaign per user per local day of the store.
    pub per_day: Option<u32>,
    /// Pushes of this campaign per user, ever.
    pub total: Option<u32>,
}

/// The outcome a campaign is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversionEvent {
    /// A visit to one of the campaign's stores.
    Visit,
    /// The push was opened.
    Open,
    /// The coupon was redeemed.
    Redemption,
    /// A purchase.
    Purchase,
}

/// The primary conversion and how long after the decision it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversion {
    /// What counts.
    pub event: ConversionEvent,
    /// Hours after the decision, 1 to 720.
    pub within_hours: u32,
}

/// The text of a message in one locale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Push title; may hold `{store}` and `{coupon}`.
    pub title: String,
    /// Push body; may hold `{store}` and `{coupon}`.
    pub body: String,
}

/// One variant of a campaign's message (A/B/n).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Variant id, unique in the campaign.
    pub id: Id,
    /// Share of the draw, relative to the other variants' weights (1 to 100; default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Locale -> text (`en`, `fi`, `sv-FI`...).
    pub content: BTreeMap<String, Message>,
    /// The locale used when the user's is not in `content`.
    pub default_locale: String,
    /// Where opening the push leads (`https://...` or an app scheme `shop://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep_link: Option<String>,
    /// An image shown with the push (`https://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// How urgently the platforms deliver it: `high` (the default: the person is at the
    /// store now) or `normal` (delivered when it suits the device's power state).
    #[serde(default, skip_serializing_if = "Priority::is_high")]
    pub priority: Priority,
}

/// A push's delivery priority, as the platforms take it: APNs' `apns-priority` header
/// (10 or 5; SNS's `AWS.SNS.MOBILE.APNS.PRIORITY` attribute) and FCM's message `priority`
/// (`high` or `normal`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Delivered at once, waking the device (APNs 10, FCM `high`).
    #[default]
    High,
    /// Delivered when it suits the device's power state (APNs 5, FCM `normal`).
    Normal,
}

impl Priority {
    /// Whether this is the default, `high`.
    #[must_use]
    pub fn is_high(&self) -> bool {
        *self == Self::High
    }

    /// The `apns-priority` value: `10` or `5`.
    #[must_use]
    pub fn apns(self) -> &'static str {
        match self {
            Self::High => "10",
            Self::Normal => "5",
        }
    }

    /// FCM's `priority`: `high` or `normal`.
    #[must_use]
    pub fn fcm(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
        }
    }
}

fn one() -> u32 {
    1
}

/// A campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// Campaign id; offers name it in `campaign_id`.
    pub id: Id,
    /// Display name.
    pub name: String,
    /// Draft, active, paused or ended (default draft).
    #[serde(default)]
    pub status: Status,
    /// Start of the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    /// End of the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// Share of users held out of every offer of the campaign, in [0, 0.5].
    #[serde(default)]
    pub holdout: f64,
    /// Most pushes the campaign sends, in total (held-out decisions are not sends). The
    /// count is kept in the same atomic commit as each send, so it is never exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// Most pushes the campaign sends in one minute of the server's clock (a send rate,
    /// so a campaign that lights up a whole city does not push everyone in the same second
    /// or flood a store). Counted like the budget, in each send's own commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_minute: Option<u32>,
    /// Capped, not lost: a push held back only by quiet hours or the minimum gap is sent
    /// at the first moment the caps allow, if that comes within this many minutes (1 to
    /// 1440); the push is committed now, with that time, and the outbox relay sends it
    /// then (consent checked again). None: such a push is dropped (`quiet_hours`, `capped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defer_minutes: Option<u32>,
    /// With `defer_minutes`: a deferred push is sent at its time only if the person is
    /// still at the store then (a visit in progress there); otherwise it is dropped, its
    /// cap given back. False (the default): sent anyway within `defer_minutes`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub defer_only_if_present: bool,
    /// Caps per user for this campaign.
    #[serde(default)]
    pub per_user: PerUser,
    /// The message variants (empty: each offer's own title and body).
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// The outcome the campaign is judged by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Conversion>,
    /// Each push carries a unique code from the campaign's coupon pool (uploaded as CSV,
    /// assigned in the send's own commit, never given twice); `{coupon}` in the text is
    /// that code. With an empty pool the campaign sends nothing (`coupons_exhausted`).
    /// Without a pool, `{coupon}` is the offer's shared code, if any.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub coupon_pool: bool,
}

/// Checks a text field of a message: not empty, bounded, no control characters, and no
/// token other than [`TOKENS`].
fn check_message_text(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    crate::config::check_text(field, s, max)?;
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        let tail = &rest[start..];
        let Some(end) = tail.find('}') else {
            return Err(FieldError::new(field, "has a '{' without its '}'"));
        };
        let token = &tail[..=end];
        if !TOKENS.contains(&token) {
            return Err(FieldError::new(
                field,
                format!(
                    "unknown token {token}; known tokens are {}",
                    TOKENS.join(", ")
                ),
            ));
        }
        rest = &tail[end + 1..];
    }
    Ok(())
}

/// Parses a locale tag (`en`, `fi-FI`, `zh_Hant_TW`): a 2–3 letter language, then
/// subtags of 1–8 letters or digits, joined by `-` or `_`; at most 35 characters. Answers
/// it normalised: lower-case language, `-` as the separator, as written otherwise.
///
/// # Errors
/// When it is not such a tag.
pub fn parse_locale(s: &str) -> Result<String, FieldError> {
    let bad = || {
        FieldError::new(
            "",
            format!("must be a locale such as \"en\" or \"fi-FI\", got {s:?}"),
        )
    };
    if s.is_empty() || s.len() > 35 {
        return Err(bad());
    }
    let mut parts = s.split(['-', '_']);
    let lang = parts.next().ok_or_else(bad)?;
    if !(2..=3).contains(&lang.len()) || !lang.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(bad());
    }
    let mut out = lang.to_ascii_lowercase();
    for p in parts {
        if !(1..=8).contains(&p.len()) || !p.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        out.push('-');
        out.push_str(p);
    }
    Ok(out)
}

fn check_url(field: &str, s: &str, app_schemes: bool) -> Result<(), FieldError> {
    if s.len() > 1024 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(FieldError::new(
            field,
            "must be a URL of at most 1024 bytes without spaces",
        ));
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(FieldError::new(
            field,
            "must be an absolute URL (scheme://...)",
        ));
    };
    let scheme_ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '-'));
    if !scheme_ok || rest.is_empty() {
        return Err(FieldError::new(
            field,
            "must be an absolute URL (scheme://...)",
        ));
    }
    if !app_schemes && scheme != "https" {
        return Err(FieldError::new(field, "must be an https:// URL"));
    }
    if matches!(scheme, "javascript" | "data" | "file") {
        return Err(FieldError::new(
            field,
            format!("scheme {scheme:?} is not allowed"),
        ));
    }
    Ok(())
}

impl Variant {
    fn validate(&self) -> Result<(), FieldError> {
        if !(1..=100).contains(&self.weight) {
            return Err(FieldError::new(
                "weight",
                format!("must be in [1, 100], got {}", self.weight),
            ));
        }
        if self.content.is_empty() {
            return Err(FieldError::new(
                "content",
                "give the text in at least one locale",
            ));
        }
        if self.content.len() > MAX_LOCALES {
            return Err(FieldError::new(
                "content",
                format!("at most {MAX_LOCALES} locales"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (locale, m) in &self.content {
            let at = format!("content.{locale}");
            let norm = parse_locale(locale).map_err(|e| e.within(&at))?;
            if !seen.insert(norm.to_ascii_lowercase()) {
                return Err(FieldError::new(at, "the same locale is given twice"));
            }
            check_message_text(&format!("{at}.title"), &m.title, 100)?;
            check_message_text(&format!("{at}.body"), &m.body, 500)?;
        }
        if !self.content.contains_key(&self.default_locale) {
            return Err(FieldError::new(
                "default_locale",
                format!(
                    "must be one of the content's locales, got {:?}",
                    self.default_locale
                ),
            ));
        }
        if let Some(u) = &self.deep_link {
            check_url("deep_link", u, true)?;
        }
        if let Some(u) = &self.image_url {
            check_url("image_url", u, false)?;
        }
        Ok(())
    }

    /// The message for `locale` (the user's, if known): the same locale, else the same
    /// language (`fi-FI` -> `fi`, `fi` -> `fi-FI`), else the default locale. Answers the
    /// locale chosen and its text.
    pub fn message_for(&self, locale: Option<&str>) -> (&str, &Message) {
        if let Some(want) = locale.and_then(|l| parse_locale(l).ok()) {
            let lang = want.split('-').next().unwrap_or_default().to_string();
            let norm = |k: &str| parse_locale(k).unwrap_or_default().to_ascii_lowercase();
            let want_l = want.to_ascii_lowercase();
            let exact = self.content.iter().find(|(k, _)| norm(k) == want_l);
            let language = || self.content.iter().find(|(k, _)| norm(k) == lang);
            let same_language = || {
                self.content
                    .iter()
                    .find(|(k, _)| norm(k).split('-').next() == Some(lang.as_str()))
            };
            if let Some((k, m)) = exact.or_else(language).or_else(same_language) {
                return (k.as_str(), m);
            }
        }
        let m = &self.content[&self.default_locale];
        (self.default_locale.as_str(), m)
    }
}

impl Campaign {
    /// Checks texts, ranges, the schedule and every variant.
    ///
    /// # Errors
    /// The first [`FieldError`], e.g. `variants[1].content.fi.title`.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(FieldError::new("name", "must be 1 to 200 bytes, not blank"));
        }
        if self.name.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "must not contain control characters",
            ));
        }
        if let (Some(s), Some(e)) = (self.starts_at, self.ends_at)
            && e <= s
        {
            return Err(FieldError::new("ends_at", "must be after starts_at"));
        }
        if !(self.holdout.is_finite() && (0.0..=0.5).contains(&self.holdout)) {
            return Err(FieldError::new(
                "holdout",
                format!("must be a number in [0, 0.5], got {}", self.holdout),
            ));
        }
        if let Some(b) = self.budget
            && !(1..=MAX_BUDGET).contains(&b)
        {
            return Err(FieldError::new(
                "budget",
                format!("must be in [1, {MAX_BUDGET}], got {b}"),
            ));
        }
        if let Some(r) = self.max_per_minute
            && !(1..=1_000_000).contains(&r)
        {
            return Err(FieldError::new(
                "max_per_minute",
                format!("must be in [1, 1000000], got {r}"),
            ));
        }
        if let Some(m) = self.defer_minutes
            && !(1..=1440).contains(&m)
        {
            return Err(FieldError::new(
                "defer_minutes",
                format!("must be in [1, 1440], got {m}"),
            ));
        }
        if self.defer_only_if_present && self.defer_minutes.is_none() {
            return Err(FieldError::new(
                "defer_only_if_present",
                "needs defer_minutes (only a deferred push waits to be sent)",
            ));
        }
        if let Some(d) = self.per_user.per_day
            && !(1..=50).contains(&d)
        {
            return Err(FieldError::new(
                "per_user.per_day",
                format!("must be in [1, 50], got {d}"),
            ));
        }
        if let Some(t) = self.per_user.total
            && !(1..=10_000).contains(&t)
        {
            return Err(FieldError::new(
                "per_user.total",
                format!("must be in [1, 10000], got {t}"),
            ));
        }
        if let (Some(d), Some(t)) = (self.per_user.per_day, self.per_user.total)
            && t < d
        {
            return Err(FieldError::new(
                "per_user.total",
                "must not be below per_user.per_day",
            ));
        }
        if self.variants.len() > MAX_VARIANTS {
            return Err(FieldError::new(
                "variants",
                format!(
                    "at most {MAX_VARIANTS} variants, got {}",
                    self.variants.len()
                ),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, v) in self.variants.iter().enumerate() {
            let at = format!("variants[{i}]");
            if !ids.insert(&v.id) {
                return Err(FieldError::new(
                    format!("{at}.id"),
                    format!("duplicate variant id {:?}", v.id.as_str()),
                ));
            }
            v.validate().map_err(|e| e.within(&at))?;
        }
        if let Some(c) = &self.conversion
            && !(1..=720).contains(&c.within_hours)
        {
            return Err(FieldError::new(
                "conversion.within_hours",
                format!("must be in [1, 720], got {}", c.within_hours),
            ));
        }
        Ok(())
    }

    /// Whether the campaign sends at `at`: active and within its schedule.
    pub fn running(&self, at: DateTime<Utc>) -> Result<(), CampaignBlock> {
        if self.status != Status::Active {
            return Err(CampaignBlock::NotActive(self.status));
        }
        if self.starts_at.is_some_and(|s| at < s) || self.ends_at.is_some_and(|e| at >= e) {
            return Err(CampaignBlock::OutsideSchedule);
        }
        Ok(())
    }

    /// The variant `user` gets: a stable weighted draw on (user, campaign), independent of
    /// the holdout draw, so a user always sees the same variant of a campaign on every host
    /// and after restarts. `None` when the campaign has no variants.
    pub fn variant_for(&self, user: &Id) -> Option<&Variant> {
        let total: u64 = self.variants.iter().map(|v| u64::from(v.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut x = stable_hash(&["variant", user.as_str(), self.id.as_str()]) % total;
        for v in &self.variants {
            let w = u64::from(v.weight);
            if x < w {
                return Some(v);
            }
            x -= w;
        }
        self.variants.last()
    }
}

/// Why a campaign sends nothing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignBlock {
    /// Its status is not active.
    NotActive(Status),
    /// Outside its schedule.
    OutsideSchedule,
}

/// The key the send rate of campaign `id` is counted under in the minute of `now` (the
/// server's clock): a budget of `max_per_minute` sends for that minute alone.
pub fn rate_key(id: &Id, now: DateTime<Utc>) -> Id {
    // A long id is hashed so the key stays within the 128 characters of an id.
    let base = if id.as_str().len() > 100 {
        format!("h{:016x}", crate::holdout::stable_hash(&[id.as_str()]))
    } else {
        id.to_string()
    };
    Id::parse(&format!("{base}.rate.{}", now.format("%Y%m%d%H%M")))
        .expect("ids and digits make an id")
}

/// Whether `key` is a send-rate key ([`rate_key`]).
pub fn is_rate_key(key: &Id) -> bool {
    key.as_str().contains(".rate.")
}

/// Replaces the tokens of a title or body.
pub fn render_text(text: &str, store_name: &str, coupon: Option<&str>) -> String {
    text.replace("{store}", store_name)
        .replace("{coupon}", coupon.unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_json;
    use serde_json::json;

    fn campaign() -> serde_json::Value {
        json!({"id": "rainy", "name": "Rainy-day umbrellas", "status": "active", "holdout": 0.1,
            "budget": 100, "per_user": {"per_day": 1, "total": 3},
            "variants": [
                {"id": "a", "weight": 1, "default_locale": "en",
                 "content": {"en": {"title": "Rain at {store}?", "body": "Umbrellas -20 % with {coupon}"},
                             "fi": {"title": "Sataako {store}?", "body": "Sateenvarjot -20 %"}},
                 "deep_link": "shop://umbrellas", "image_url": "https://cdn.example/u.png"},
                {"id": "b", "weight": 3, "default_locale": "fi",
                 "content": {"fi": {"title": "Sateenvarjot", "body": "Nyt {store}"},
                             "sv-FI": {"title": "Paraplyer", "body": "Nu i {store}"}}}],
            "conversion": {"event": "visit", "within_hours": 72}})
    }

    fn parse(v: serde_json::Value) -> Result<Campaign, FieldError> {
        let c: Campaign = parse_json(&v)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn every_rule_names_its_field() {
        assert!(parse(campaign()).is_ok());
        for (pointer, bad, field) in [
            ("/holdout", json!(0.7), "holdout"),
            ("/budget", json!(0), "budget"),
            ("/max_per_minute", json!(0), "max_per_minute"),
            ("/defer_minutes", json!(1441), "defer_minutes"),
            (
                "/defer_only_if_present",
                json!(true),
                "defer_only_if_present",
            ),
            ("/status", json!("running"), "status"),
            ("/per_user/per_day", json!(0), "per_user.per_day"),
            ("/per_user/total", json!(0), "per_user.total"),
            ("/variants/1/weight", json!(0), "variants[1].weight"),
            (
                "/variants/0/default_locale",
                json!("de"),
                "variants[0].default_locale",
            ),
            (
                "/variants/0/deep_link",
                json!("javascript://x"),
                "variants[0].deep_link",
            ),
            (
                "/variants/0/image_url",
                json!("http://cdn/x.png"),
                "variants[0].image_url",
            ),
            ("/variants/1/id", json!("a"), "variants[1].id"),
            (
                "/variants/0/content/fi/title",
                json!("{name} hei"),
                "variants[0].content.fi.title",
            ),
            (
                "/variants/0/content/en/body",
                json!(""),
                "variants[0].content.en.body",
            ),
            (
                "/conversion/within_hours",
                json!(0),
                "conversion.within_hours",
            ),
            ("/colour", json!("red"), "colour"),
        ] {
            let mut v = campaign();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            v.pointer_mut(parent).unwrap()[key] = bad;
            let e = parse(v).unwrap_err();
            assert_eq!(e.field, field, "{pointer}: {e:?}");
        }
        let mut v9 = campaign();
        let one = v9["variants"][0].clone();
        v9["variants"] = json!(
            (0..9)
                .map(|i| {
                    let mut x = one.clone();
                    x["id"] = json!(format!("v{i}"));
                    x
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(parse(v9).unwrap_err().field, "variants");
        let mut bad_locale = campaign();
        bad_locale["variants"][1]["content"]["english!"] = json!({"title": "t", "body": "b"});
        assert_eq!(
            parse(bad_locale).unwrap_err().field,
            "variants[1].content.english!"
        );
        let mut order = campaign();
        order["starts_at"] = json!("2026-12-10T00:00:00Z");
        order["ends_at"] = json!("2026-12-01T00:00:00Z");
        assert_eq!(parse(order).unwrap_err().field, "ends_at");
    }

    #[test]
    fn the_message_follows_the_users_locale_with_fallbacks() {
        let c = parse(campaign()).unwrap();
        let (a, b) = (&c.variants[0], &c.variants[1]);
        assert_eq!(a.message_for(Some("fi")).0, "fi");
        assert_eq!(a.message_for(Some("fi-FI")).0, "fi", "language of a region");
        assert_eq!(a.message_for(Some("EN_gb")).0, "en");
        assert_eq!(a.message_for(Some("de")).0, "en", "default");
        assert_eq!(a.message_for(None).0, "en");
        assert_eq!(a.message_for(Some("not a locale")).0, "en");
        assert_eq!(
            b.message_for(Some("sv")).0,
            "sv-FI",
            "a region of the language"
        );
        assert_eq!(b.message_for(Some("sv-fi")).0, "sv-FI");
        assert_eq!(
            render_text(&a.content["en"].body, "Kamppi", Some("RAIN-7")),
            "Umbrellas -20 % with RAIN-7"
        );
    }

    #[test]
    fn the_variant_draw_is_stable_and_follows_the_weights() {
        let c = parse(campaign()).unwrap();
        let users: Vec<Id> = (0..20_000)
            .map(|i| Id::parse(&format!("u{i}")).unwrap())
            .collect();
        let b = users
            .iter()
            .filter(|u| c.variant_for(u).unwrap().id.as_str() == "b")
            .count();
        // Weights 1:3, so b gets 75 % (± 1.5 points, about 7 standard errors).
        assert!((14_700..=15_300).contains(&b), "b drawn {b} of 20000");
        // Stable: pinned for a few users, so a change of the draw is noticed.
        let pinned: Vec<&str> = users[..16]
            .iter()
            .map(|u| c.variant_for(u).unwrap().id.as_str())
            .collect();
        assert_eq!(pinned, PINNED);
        // Independent of the holdout draw: the held-out share is the same in each variant.
        let held_b = users
            .iter()
            .filter(|u| c.variant_for(u).unwrap().id.as_str() == "b")
            .filter(|u| crate::holdout::held_out(u, &c.id, 0.1))
            .count();
        let share = held_b as f64 / b as f64;
        assert!((0.085..=0.115).contains(&share), "held out in b: {share}");
        let none = Campaign {
            variants: vec![],
            ..c
        };
        assert!(none.variant_for(&users[0]).is_none());
    }

    const PINNED: [&str; 16] = [
        "b", "b", "b", "b", "b", "b", "b", "b", "b", "b", "b", "b", "b", "b", "a", "b",
    ];

    #[test]
    fn status_and_schedule_gate_sending() {
        let mut c = parse(campaign()).unwrap();
        let t = "2026-12-05T12:00:00Z".parse().unwrap();
        assert_eq!(c.running(t), Ok(()));
        c.status = Status::Paused;
        assert_eq!(c.running(t), Err(CampaignBlock::NotActive(Status::Paused)));
        c.status = Status::Active;
        c.ends_at = Some(t);
        assert_eq!(c.running(t), Err(CampaignBlock::OutsideSchedule));
        assert!(!Status::Ended.may_become(Status::Active));
        assert!(Status::Paused.may_become(Status::Active));
        assert_eq!(parse_locale("FI_fi").unwrap(), "fi-fi");
        assert!(parse_locale("e").is_err());
    }
}
