//! Presence webhooks: a back end is told, by a signed HTTP POST, whenever a person's visit
//! to a store begins or ends.
//!
//! - **Durable from the commit.** The engine writes one [`WebhookMessage`] per location
//!   event that entered or left fences, in the same atomic commit as the presence it
//!   reports (a transactional outbox): a transition that happened is never lost, one that
//!   did not happen (a commit refused) is never announced.
//! - **At least once, with a dedupe id.** [`WebhookRelay`] posts each message until the
//!   receiver answers 2xx. Every attempt carries the same `webhook-id` (derived from the
//!   person and the event, so it never changes); a receiver that has seen an id answers 2xx
//!   and ignores it. Two relays (or a relay that died after posting, before recording it)
//!   may post a message twice; never zero times.
//! - **Retried with backoff, then dead-lettered.** A failed attempt (no answer within the
//!   timeout, a network error, any status but 2xx, a redirect) is tried again after
//!   [`RetryPolicy::backoff`] (10 s doubling to an hour, ±20 % jitter); after
//!   [`RetryPolicy::max_attempts`] the message moves to the dead letters, where
//!   `GET /v1/admin/webhooks/dead-letters` lists it and a redrive puts it back.
//! - **Signed** the [Standard Webhooks](https://www.standardwebhooks.com/) way:
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">` under a
//!   `whsec_` secret, so receivers verify with an existing library. Several secrets may be
//!   configured during a rotation; each signs and the header carries every signature.
//!
//! A message holds the person's id, the event's id and time, and the stores entered or
//! left: no position. Erasure deletes a person's messages, delivered or not.

use crate::decision::{Decision, PresenceChange};
use crate::ids::Id;
use crate::ports::{BoxFuture, Clock, StateStore, StoreError};
use chrono::{DateTime, Duration, Utc};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Days a dead letter is kept (DynamoDB: the `ttl` of messages and dead letters; SQLite:
/// the hourly prune).
pub const KEEP_DAYS: i64 = 30;

/// The `type` of every presence message.
pub const PRESENCE_CHANGED: &str = "presence.changed";

/// One event's presence changes, to be posted to the back end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookMessage {
    /// The dedupe id (`webhook-id`): `msg_` and 16 hex digits from the person and the event.
    pub id: String,
    /// The person.
    pub user_id: Id,
    /// The location event that caused the changes.
    pub event_id: Id,
    /// The event's time.
    pub at: DateTime<Utc>,
    /// The fences entered or left, in store order.
    pub changes: Vec<PresenceChange>,
}

impl WebhookMessage {
    /// The message for a decision that changed presence; `None` when it changed none.
    pub fn of(d: &Decision) -> Option<WebhookMessage> {
        if d.presence.is_empty() {
            return None;
        }
        Some(WebhookMessage {
            id: message_id(&d.user_id, &d.event_id),
            user_id: d.user_id.clone(),
            event_id: d.event_id.clone(),
            at: d.at,
            changes: d.presence.clone(),
        })
    }

    /// The request body: `{"type", "timestamp", "data"}` as Standard Webhooks suggests,
    /// `data` holding the person, the event and the changes.
    pub fn body(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            timestamp: DateTime<Utc>,
            data: Data<'a>,
        }
        #[derive(Serialize)]
        struct Data<'a> {
            user_id: &'a Id,
            event_id: &'a Id,
            at: DateTime<Utc>,
            changes: &'a [PresenceChange],
        }
        serde_json::to_string(&Body {
            kind: PRESENCE_CHANGED,
            timestamp: self.at,
            data: Data {
                user_id: &self.user_id,
                event_id: &self.event_id,
                at: self.at,
                changes: &self.changes,
            },
        })
        .expect("serialisable")
    }
}

/// The dedupe id of `user`'s event `event`: the same for every attempt and every resend.
pub fn message_id(user: &Id, event: &Id) -> String {
    format!(
        "msg_{:016x}",
        crate::holdout::stable_hash(&["webhook", user.as_str(), event.as_str()])
    )
}

/// A message in the outbox (or among the dead letters) with its delivery so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// The message.
    pub message: WebhookMessage,
    /// Attempts made (or started: a lease counts one).
    pub attempts: u32,
    /// When the next attempt is due (for a dead letter: when it died).
    pub next_at: DateTime<Utc>,
    /// What the last failed attempt met, without the receiver's answer body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Whether it is a dead letter (no further attempts until redriven).
    #[serde(default)]
    pub dead: bool,
}

impl WebhookRecord {
    /// A message just committed, due now.
    pub fn new(message: WebhookMessage, now: DateTime<Utc>) -> Self {
        WebhookRecord {
            message,
            attempts: 0,
            next_at: now,
            last_error: None,
            dead: false,
        }
    }
}

/// What an attempt came to, for [`StateStore::settle_webhook`].
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookOutcome {
    /// The receiver answered 2xx: the message leaves the outbox.
    Delivered,
    /// Failed; try again at `at`.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// What failed.
        error: String,
    },
    /// Failed for the last time: the message moves to the dead letters.
    Dead {
        /// What failed.
        error: String,
    },
}

/// How messages are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts before a message is dead-lettered.
    pub max_attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// How long an attempt holds its message before another relay may take it (longer
    /// than the request timeout).
    pub lease: Duration,
}

impl RetryPolicy {
    /// 10 attempts over about 2 h 40 min: 10 s, 20 s, 40 s, … up to an hour apart.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        first_backoff: Duration::seconds(10),
        max_backoff: Duration::hours(1),
        lease: Duration::seconds(60),
    };

    /// The wait after the `attempts`-th failed attempt (1 = the first) of message `id`:
    /// [`RetryPolicy::first_backoff`] doubled per further failure, at most
    /// [`RetryPolicy::max_backoff`], times a factor in [0.8, 1.2) drawn from the id and
    /// the attempt (so messages that failed together do not all come back at once).
    pub fn backoff(&self, attempts: u32, id: &str) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        let base = self
            .first_backoff
            .num_milliseconds()
            .saturating_mul(1i64 << doublings)
            .min(self.max_backoff.num_milliseconds());
        let h = crate::holdout::stable_hash(&["backoff", id, &attempts.to_string()]);
        let factor = 0.8 + 0.4 * ((h >> 11) as f64 / (1u64 << 53) as f64);
        Duration::milliseconds((base as f64 * factor) as i64)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::DEFAULT
    }
}

/// A signing secret: `whsec_` and the base64 of at least 16 random bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`.
    ///
    /// # Errors
    /// Without the prefix, with invalid base64, or a key under 16 bytes.
    pub fn parse(s: &str) -> Result<Self, String> {
        use base64::Engine as _;
        let b64 = s
            .trim()
            .strip_prefix("whsec_")
            .ok_or("a webhook secret starts with whsec_ (then base64 of 16 to 64 random bytes)")?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("a webhook secret's part after whsec_ must be base64: {e}"))?;
        if !(16..=64).contains(&key.len()) {
            return Err(format!(
                "a webhook secret holds 16 to 64 bytes, this one {}",
                key.len()
            ));
        }
        Ok(WebhookSecret(key))
    }

    /// Parses one or more secrets separated by spaces or commas (several during a
    /// rotation: every one signs).
    ///
    /// # Errors
    /// As [`WebhookSecret::parse`], or none given.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        let v = s
            .split([' ', ','])
            .filter(|p| !p.is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if v.is_empty() {
            return Err("no webhook secret given".into());
        }
        Ok(v)
    }

    /// `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        use base64::Engine as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

/// One POST to the back end.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRequest {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`: when this attempt was signed, Unix seconds.
    pub timestamp: i64,
    /// `webhook-signature`: one `v1,…` per secret, separated by spaces.
    pub signature: String,
    /// The JSON body.
    pub body: String,
}

/// Posts a request to the configured URL: the HTTP client of the host.
pub trait WebhookSender: Send + Sync {
    /// `Ok` on a 2xx answer; otherwise what went wrong (status or error; never the
    /// answer's body, which may hold anything).
    fn post<'a>(&'a self, request: &'a WebhookRequest) -> BoxFuture<'a, Result<(), String>>;

    /// [`WebhookSender::post`] of a request it keeps.
    fn post_owned(&self, request: WebhookRequest) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.post(&request).await })
    }
}

/// What one pass of the relay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Messages the receiver took.
    pub delivered: usize,
    /// Attempts that failed and will be retried.
    pub retried: usize,
    /// Messages dead-lettered.
    pub dead: usize,
    /// Messages another relay held (leased) or that were erased meanwhile.
    pub skipped: usize,
}

/// Posts due messages from the outbox: at least once each, retried with backoff,
/// dead-lettered after the last attempt.
pub struct WebhookRelay {
    store: Arc<dyn StateStore>,
    sender: Arc<dyn WebhookSender>,
    secrets: Vec<WebhookSecret>,
    policy: RetryPolicy,
    clock: Arc<dyn Clock>,
}

/// Attempts in flight at once in one pass.
const CONCURRENCY: usize = 16;

impl WebhookRelay {
    /// A relay posting through `sender`, signing with every one of `secrets`.
    pub fn new(
        store: Arc<dyn StateStore>,
        sender: Arc<dyn WebhookSender>,
        secrets: Vec<WebhookSecret>,
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        WebhookRelay {
            store,
            sender,
            secrets,
            policy,
            clock,
        }
    }

    /// The signed request for `m`, signed now.
    pub fn request(&self, m: &WebhookMessage) -> WebhookRequest {
        let timestamp = self.clock.now().timestamp();
        let body = m.body();
        let signature = self
            .secrets
            .iter()
            .map(|s| s.sign(&m.id, timestamp, &body))
            .collect::<Vec<_>>()
            .join(" ");
        WebhookRequest {
            id: m.id.clone(),
            timestamp,
            signature,
            body,
        }
    }

    /// One pass: every message due now (at most `limit`), [`CONCURRENCY`] at a time: the
    /// group leased together, posted concurrently, settled together.
    ///
    /// # Errors
    /// When the store fails (messages it did not settle are tried again when their lease
    /// ends).
    pub async fn run_once(&self, limit: usize) -> Result<RelayReport, StoreError> {
        let due = self.store.due_webhooks(self.clock.now(), limit).await?;
        self.attempt_all(&due).await
    }

    /// Posts messages just committed (by this process, from the decisions it answered),
    /// without reading the outbox: each is leased as a first attempt, so one that another
    /// relay took meanwhile is skipped. What fails waits in the outbox for the next pass.
    ///
    /// # Errors
    /// As [`WebhookRelay::run_once`].
    pub async fn deliver_fresh(
        &self,
        messages: &[WebhookMessage],
    ) -> Result<RelayReport, StoreError> {
        let fresh: Vec<WebhookRecord> = messages
            .iter()
            .map(|m| WebhookRecord::new(m.clone(), DateTime::UNIX_EPOCH))
            .collect();
        self.attempt_all(&fresh).await
    }

    async fn attempt_all(&self, due: &[WebhookRecord]) -> Result<RelayReport, StoreError> {
        let mut report = RelayReport::default();
        for chunk in due.chunks(CONCURRENCY) {
            // The lease counts the attempt and holds the message for its length, so another
            // relay leaves it alone and a relay that dies mid-attempt only delays it.
            let leases: Vec<(Id, String, u32)> = chunk
                .iter()
                .map(|r| (r.message.user_id.clone(), r.message.id.clone(), r.attempts))
                .collect();
            let until = self.clock.now() + self.policy.lease;
            let leased = self.store.lease_webhooks(&leases, until).await?;
            let mine: Vec<&WebhookRecord> = chunk
                .iter()
                .zip(&leased)
                .filter_map(|(r, &ok)| ok.then_some(r))
                .collect();
            report.skipped += chunk.len() - mine.len();
            let answers = join_all(
                mine.iter()
                    .map(|r| self.sender.post_owned(self.request(&r.message))),
            )
            .await;
            let mut settles = Vec::with_capacity(mine.len());
            for (r, answer) in mine.into_iter().zip(answers) {
                let m = &r.message;
                let attempts = r.attempts + 1;
                let outcome = match answer {
                    Ok(()) => {
                        report.delivered += 1;
                        WebhookOutcome::Delivered
                    }
                    Err(error) if attempts >= self.policy.max_attempts => {
                        tracing::warn!(webhook = %m.id, attempts, %error, "webhook dead-lettered");
                        report.dead += 1;
                        WebhookOutcome::Dead { error }
                    }
                    Err(error) => {
                        let at = self.clock.now() + self.policy.backoff(attempts, &m.id);
                        tracing::info!(webhook = %m.id, attempts, %error, retry_at = %at, "webhook attempt failed");
                        report.retried += 1;
                        WebhookOutcome::Retry { at, error }
                    }
                };
                settles.push((m.user_id.clone(), m.id.clone(), outcome));
            }
            self.store.settle_webhooks(&settles).await?;
        }
        Ok(report)
    }
}

/// Runs futures concurrently on the current task, answers in order.
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in pinned.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("finished")).collect()
}

/// Settles `outcome` on an outbox kept as a list (the in-memory store, and the reference
/// the other stores are tested against). Nothing when `id` is not in the outbox.
pub fn settle_in(
    outbox: &mut Vec<WebhookRecord>,
    dead: &mut Vec<WebhookRecord>,
    id: &str,
    outcome: WebhookOutcome,
    now: DateTime<Utc>,
) {
    let Some(i) = outbox.iter().position(|r| r.message.id == id) else {
        return;
    };
    match outcome {
        WebhookOutcome::Delivered => {
            outbox.remove(i);
        }
        WebhookOutcome::Retry { at, error } => {
            outbox[i].next_at = at;
            outbox[i].last_error = Some(error);
        }
        WebhookOutcome::Dead { error } => {
            let mut r = outbox.remove(i);
            r.dead = true;
            r.next_at = now;
            r.last_error = Some(error);
            dead.push(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        // The vector the Standard Webhooks reference libraries test with: a receiver's
        // library verifies what Nearcast signs.
        let s = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            s.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_checked_and_listed() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err(), "5 bytes");
        let two = WebhookSecret::parse_list(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .unwrap();
        assert_eq!(two.len(), 2);
        assert!(WebhookSecret::parse_list(" , ").is_err());
        assert_eq!(
            format!("{:?}", two[0]),
            "WebhookSecret(..)",
            "never printed"
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_bounded_jitter() {
        let p = RetryPolicy::DEFAULT;
        let mut total = Duration::zero();
        for n in 1..=p.max_attempts {
            let base = (10_000i64 << (n - 1)).min(3_600_000);
            for id in ["msg_a", "msg_b", "msg_c"] {
                let b = p.backoff(n, id).num_milliseconds();
                assert!(
                    (base * 8 / 10..base * 12 / 10).contains(&b),
                    "attempt {n}: {b} ms against {base}"
                );
            }
            total += p.backoff(n, "msg_a");
        }
        assert_ne!(p.backoff(3, "msg_a"), p.backoff(3, "msg_b"), "jittered");
        assert!(
            total > Duration::hours(2) && total < Duration::hours(4),
            "{total}"
        );
        assert_eq!(p.backoff(1000, "x"), p.backoff(1000, "x"), "no overflow");
    }

    #[test]
    fn the_body_names_the_person_the_event_and_the_stores_and_no_place() {
        let m = WebhookMessage {
            id: message_id(&Id::parse("u1").unwrap(), &Id::parse("e1").unwrap()),
            user_id: Id::parse("u1").unwrap(),
            event_id: Id::parse("e1").unwrap(),
            at: "2026-11-20T10:00:00Z".parse().unwrap(),
            changes: vec![PresenceChange {
                store_id: Id::parse("s1").unwrap(),
                transition: crate::decision::PresenceTransition::Enter,
                since: "2026-11-20T10:00:00Z".parse().unwrap(),
                minutes: None,
                expired: false,
            }],
        };
        let v: serde_json::Value = serde_json::from_str(&m.body()).unwrap();
        assert_eq!(v["type"], "presence.changed");
        assert_eq!(v["data"]["user_id"], "u1");
        assert_eq!(v["data"]["changes"][0]["store_id"], "s1");
        assert_eq!(v["data"]["changes"][0]["transition"], "enter");
        assert!(!m.body().contains("lat") && !m.body().contains("lon"));
        assert_eq!(
            m.id,
            message_id(&Id::parse("u1").unwrap(), &Id::parse("e1").unwrap())
        );
        assert_ne!(
            m.id,
            message_id(&Id::parse("u1").unwrap(), &Id::parse("e2").unwrap())
        );
    }
}
