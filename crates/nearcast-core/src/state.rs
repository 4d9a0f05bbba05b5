//! What Nearcast keeps about a user: consents, push target, tastes, purchases, fence
//! presence and recent sends. No location trail: a fence state keeps only which store,
//! since when, and when last confirmed; the presence track keeps one point, the smoothed
//! position of the last fix, replaced by every fix and forgotten after minutes of silence.

use crate::consent::Consents;
use crate::event::Platform;
use crate::ids::Id;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most categories whose affinity is kept per user.
pub const MAX_AFFINITIES: usize = 32;
/// Most purchases remembered per user (oldest forgotten first).
pub const MAX_PURCHASES: usize = 200;
/// How long sends are remembered (the weekly cap's window plus slack).
pub const SEND_MEMORY: Duration = Duration::days(8);
/// How long a store's visit count is kept after the last visit to it (an offer's
/// `nth_visit` counts visits within this; the logs' retention).
pub const VISIT_MEMORY: Duration = Duration::days(90);
/// Most stores whose visit count is kept per user (the least recently visited forgotten
/// first).
pub const MAX_VISIT_COUNTS: usize = 64;

/// A user's state, stored as one record and replaced as a whole under a version check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    /// Consents per purpose.
    pub consents: Consents,
    /// Where pushes go.
    pub push: Option<PushTarget>,
    /// Category -> affinity in [0, 1], learnt from behaviour (only with personalisation consent).
    pub affinities: BTreeMap<String, f64>,
    /// What the user bought (product ids and categories), newest last.
    pub purchases: Vec<Purchase>,
    /// Store id -> presence, for stores the user is inside.
    pub fences: BTreeMap<Id, FenceState>,
    /// Recent sends and holdouts, newest last.
    pub sends: Vec<SendRecord>,
    /// The presence track: the last fix smoothed, and fences waiting for an enter to be
    /// confirmed (see `presence.rs`). Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<Track>,
    /// Defined campaign id -> decisions to send (or hold out) this user ever made for it:
    /// what a campaign's `per_user.total` counts. Only campaigns with such a cap.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub campaign_sends: BTreeMap<Id, u32>,
    /// Store id -> visits to it (enters) within [`VISIT_MEMORY`] of the last one: what an
    /// offer's `nth_visit` reads. A count and a date per store, never the visits
    /// themselves; at most [`MAX_VISIT_COUNTS`] stores; forgotten with location consent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub visits: BTreeMap<Id, VisitCount>,
    /// Decisions of defined campaigns that sent or held out, while their conversion window
    /// is open: what later visits, opens, redemptions and purchases count against in the
    /// campaign's results (at most [`crate::campaign_results::MAX_EXPOSURES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposures: Vec<crate::campaign_results::Exposure>,
    /// Redemptions and purchases of the last [`crate::decision::MAX_FIX_AGE`] (by the
    /// host's clock; at most [`crate::campaign_results::MAX_RECENT_OUTCOMES`], with only
    /// what counting needs: time, offer, category, delivery, amount): a decision that
    /// arrives after one of them but is stamped before it (a fix delayed in a batch or a
    /// queue) counts it, as the logs do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_outcomes: Vec<crate::ports::OutcomeRecord>,
    /// The user's last [`RECENT_EVENTS`] accepted events, as digests of their ids: what
    /// tells a resent event from a new one before anything is decided, in the record that
    /// every batch reads and writes anyway (see [`RecentEvents`]).
    #[serde(default, skip_serializing_if = "RecentEvents::is_empty")]
    pub recent: RecentEvents,
}

/// How many of a user's last accepted events [`UserState::recent`] remembers.
pub const RECENT_EVENTS: usize = 32;

/// Digests of a user's last [`RECENT_EVENTS`] accepted event ids, oldest first, each with
/// an upper bound of its time; the newest event time ever accepted; and an upper bound of
/// the times of every event no longer remembered (the **horizon**).
///
/// An event found here is a resend and answers "duplicate" without being decided again.
/// An event not found here that is stamped after the horizon is new: a resend of a
/// forgotten event carries the forgotten event's time, which is not after the horizon. No
/// lookup is needed for the usual traffic, which comes in order or a little shuffled.
/// Any other event may be a resend this memory has forgotten, and the engine asks the
/// store for its idempotency key ([`crate::ports::StateStore::event_result`]); a location
/// fix with no key (a routine fix forgotten here, or a new fix older than the 33rd newest
/// event) is then judged as a late fix that moves no presence, so that no resend has an
/// effect its first answer did not have.
/// Kept only for a store that does not keep a key for every event
/// ([`crate::ports::StateStore::keeps_every_event_key`]: DynamoDB keeps one for every event
/// that did more than move the presence track, see `nearcast_aws`).
///
/// Each entry is 8 bytes: the first 6 bytes of the id's SHA-256 and the seconds between
/// the event and the newest event (rounded down, at most 65,535: 18 hours). Ids are
/// digested, not kept: the digests say nothing about the events. Two ids share a digest
/// with a chance of 2^-48 per pair; the worst a collision does is answer one of the
/// person's own events as a duplicate of another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentEvents {
    /// (digest, whole seconds before `newest`), oldest first.
    entries: std::collections::VecDeque<(u64, u16)>,
    /// The newest event time accepted, in microseconds since the epoch.
    newest: Option<i64>,
    /// No forgotten event is stamped after this (microseconds since the epoch).
    horizon: Option<i64>,
}

/// The binary form's version byte (the first form, without times, has none).
const RECENT_FORM: u8 = 2;

const MICROS: i64 = 1_000_000;

impl RecentEvents {
    /// The digest of an event id: the first 6 bytes of its SHA-256.
    pub fn digest(event: &Id) -> u64 {
        use sha2::Digest;
        let d = sha2::Sha256::digest(event.as_str().as_bytes());
        u64::from_be_bytes([0, 0, d[0], d[1], d[2], d[3], d[4], d[5]])
    }

    /// Whether `event` is among the remembered ones.
    pub fn contains(&self, event: &Id) -> bool {
        let d = Self::digest(event);
        self.entries.iter().any(|(e, _)| *e == d)
    }

    /// Whether an event stamped `at` that is not among the remembered ones may still be
    /// a resend of a forgotten one: it is not stamped after the horizon.
    pub fn may_have_forgotten(&self, at: DateTime<Utc>) -> bool {
        self.horizon.is_some_and(|h| at.timestamp_micros() <= h)
    }

    /// Remembers `event`, stamped `at`, forgetting the oldest beyond [`RECENT_EVENTS`]
    /// (the horizon moves up to the forgotten one's time).
    pub fn remember(&mut self, event: &Id, at: DateTime<Utc>) {
        let at = at.timestamp_micros();
        let behind = |newest: i64, t: i64| {
            u16::try_from(newest.saturating_sub(t).max(0) / MICROS).unwrap_or(u16::MAX)
        };
        match self.newest {
            Some(n) if at > n => {
                // Every bound stays where it was (to the second below): its seconds
                // behind grow with the newest time.
                for (_, b) in &mut self.entries {
                    *b = behind(at, n - i64::from(*b) * MICROS);
                }
                self.newest = Some(at);
            }
            Some(_) => {}
            None => self.newest = Some(at),
        }
        let newest = self.newest.unwrap_or(at);
        self.entries
            .push_back((Self::digest(event), behind(newest, at)));
        while self.entries.len() > RECENT_EVENTS {
            if let Some((_, b)) = self.entries.pop_front() {
                let bound = newest - i64::from(b) * MICROS;
                self.horizon = Some(self.horizon.map_or(bound, |h| h.max(bound)));
            }
        }
    }

    /// Whether nothing was ever remembered.
    pub fn is_empty(&self) -> bool {
        self.newest.is_none() && self.entries.is_empty() && self.horizon.is_none()
    }

    /// How many events are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The binary form (a store's binary attribute): the version byte 2, the newest time
    /// and the horizon (8 bytes each, big-endian microseconds, `i64::MIN` for none), then
    /// the entries, oldest first: the digest's 6 bytes and the seconds behind (2 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + 8 * self.entries.len());
        out.push(RECENT_FORM);
        out.extend_from_slice(&self.newest.unwrap_or(i64::MIN).to_be_bytes());
        out.extend_from_slice(&self.horizon.unwrap_or(i64::MIN).to_be_bytes());
        for (d, b) in &self.entries {
            out.extend_from_slice(&d.to_be_bytes()[2..]);
            out.extend_from_slice(&b.to_be_bytes());
        }
        out
    }

    /// Reads [`Self::to_bytes`]' form, or the first form (the newest time, then 8-byte
    /// digests, no times: each is taken as stamped at the newest time, and the horizon as
    /// the newest time, since what it forgot is not known); `None` when it is neither.
    /// More than [`RECENT_EVENTS`] entries keep the newest.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let word = |c: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            i64::from_be_bytes(a)
        };
        let time = |t: i64| (t != i64::MIN).then_some(t);
        let mut r = if b.len() >= 17 && b.len() % 8 == 1 && b[0] == RECENT_FORM {
            Self {
                newest: time(word(&b[1..9])),
                horizon: time(word(&b[9..17])),
                entries: b[17..]
                    .chunks_exact(8)
                    .map(|c| {
                        let d = u64::from_be_bytes([0, 0, c[0], c[1], c[2], c[3], c[4], c[5]]);
                        (d, u16::from_be_bytes([c[6], c[7]]))
                    })
                    .collect(),
            }
        } else if b.len() >= 8 && b.len() % 8 == 0 {
            let newest = time(word(&b[..8]));
            Self {
                newest,
                horizon: newest,
                entries: b[8..]
                    .chunks_exact(8)
                    .map(|c| ((word(c) as u64) >> 16, 0))
                    .collect(),
            }
        } else {
            return None;
        };
        let Some(newest) = r.newest else {
            return (r.entries.is_empty() && r.horizon.is_none()).then_some(r);
        };
        while r.entries.len() > RECENT_EVENTS {
            if let Some((_, b)) = r.entries.pop_front() {
                let bound = newest - i64::from(b) * MICROS;
                r.horizon = Some(r.horizon.map_or(bound, |h| h.max(bound)));
            }
        }
        Some(r)
    }
}

/// In JSON: the binary form in hex, 16 digits a word.
impl Serialize for RecentEvents {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use std::fmt::Write;
        let bytes = self.to_bytes();
        let mut out = String::with_capacity(2 * bytes.len());
        for b in bytes {
            let _ = write!(out, "{b:02x}");
        }
        s.serialize_str(&out)
    }
}

impl<'de> Deserialize<'de> for RecentEvents {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("recent: expected the hex of its binary form");
        if !s.is_ascii() || s.len() % 2 != 0 {
            return Err(bad());
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad())?;
        Self::from_bytes(&bytes).ok_or_else(bad)
    }
}

/// How often a user has visited one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitCount {
    /// Visits (enters), this one included while it lasts.
    pub count: u32,
    /// When the last one began.
    pub last: DateTime<Utc>,
}

/// The presence track of one user: one smoothed point on a grid of about 11 × 6 m
/// ([`crate::presence::TRACK_GRID_DEG`]), never a trail. Every fix replaces it; it is forgotten when the next fix comes more than
/// [`crate::trigger::Params::track_ttl`] later, when location consent is withdrawn, and
/// on erasure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// Time of the last fix taken into the track.
    pub at: DateTime<Utc>,
    /// Smoothed latitude, degrees.
    pub lat: f64,
    /// Smoothed longitude, degrees.
    pub lon: f64,
    /// Standard error of the smoothed position, metres.
    pub sd_m: f64,
    /// The fixes' reported accuracy, smoothed, metres.
    #[serde(default)]
    pub acc_m: f64,
    /// Since when fixes have been refused as impossible jumps, if the last one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_since: Option<DateTime<Utc>>,
    /// Store id -> since when the smoothed position has been inside its fence, for fences
    /// not entered yet (an enter waits for confirmation when fixes come often).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<Id, DateTime<Utc>>,
}

/// A device push target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushTarget {
    /// Platform.
    pub platform: Platform,
    /// Device token (never logged).
    pub token: String,
    /// Platform endpoint (SNS) once created.
    pub endpoint: Option<String>,
    /// Set when the platform reported the endpoint disabled; never used again.
    #[serde(default)]
    pub disabled: bool,
    /// The app's locale, when it said (campaign text is chosen by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// A purchase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    /// Product id, if given.
    pub product_id: Option<Id>,
    /// Category, if given.
    pub category: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Presence in one store's fence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FenceState {
    /// When the user entered.
    pub since: DateTime<Utc>,
    /// Last fix that confirmed presence.
    pub last_seen: DateTime<Utc>,
    /// The longest time inside (minutes) at which this visit's dwell offers were decided:
    /// an offer that dwells that long or less was decided in this visit, and is not again
    /// (each offer is decided once per visit; an enter offer fires only at the visit's
    /// enter, an exit offer only at its exit). A few bytes, whatever the store's offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwelt: Option<i64>,
    /// Offers decided during this visit, as states written before `dwelt` listed them
    /// (read, never added to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decided: Vec<Id>,
    /// Since when the smoothed position has been beyond the exit margin, while the exit
    /// waits for confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_since: Option<DateTime<Utc>>,
}

/// One push sent (or held out) to the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRecord {
    /// When.
    pub at: DateTime<Utc>,
    /// Offer.
    pub offer_id: Id,
    /// Delivery id.
    pub delivery_id: String,
    /// Held out rather than sent: counts for the offer's re-eligibility and the
    /// campaign's caps per user, not for the global caps.
    pub held_out: bool,
    /// The offer's campaign, when it is a defined campaign (its caps per user count it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<Id>,
    /// The store it was decided at (an offer's `once_per: store_day` reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<Id>,
}

impl UserState {
    /// Counts a visit to `store` beginning at `at`: visits older than [`VISIT_MEMORY`]
    /// start the count again, and past [`MAX_VISIT_COUNTS`] stores the least recently
    /// visited is forgotten.
    pub fn count_visit(&mut self, store: &Id, at: DateTime<Utc>) {
        self.visits.retain(|_, v| at - v.last <= VISIT_MEMORY);
        let v = self
            .visits
            .entry(store.clone())
            .or_insert(VisitCount { count: 0, last: at });
        v.count = v.count.saturating_add(1);
        v.last = v.last.max(at);
        while self.visits.len() > MAX_VISIT_COUNTS {
            let Some(oldest) = self
                .visits
                .iter()
                .min_by_key(|(_, v)| v.last)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.visits.remove(&oldest);
        }
    }

    /// Whether the user bought `product` or, when `product` is `None`, anything in `category`.
    pub fn bought(&self, product: Option<&Id>, category: &str) -> bool {
        self.purchases.iter().any(|p| match product {
            Some(id) => p.product_id.as_ref() == Some(id),
            None => p.category.as_deref() == Some(category),
        })
    }

    /// Whether the user bought anything in `category`.
    pub fn bought_category(&self, category: &str) -> bool {
        self.purchases
            .iter()
            .any(|p| p.category.as_deref() == Some(category))
    }

    /// Records a purchase, forgetting the oldest beyond [`MAX_PURCHASES`].
    pub fn add_purchase(&mut self, p: Purchase) {
        self.purchases.push(p);
        if self.purchases.len() > MAX_PURCHASES {
            let excess = self.purchases.len() - MAX_PURCHASES;
            self.purchases.drain(..excess);
        }
    }

    /// Moves a category's affinity towards 1 by `weight` (0..1), keeping the strongest
    /// [`MAX_AFFINITIES`] categories.
    pub fn learn(&mut self, category: &str, weight: f64) {
        let a = self.affinities.entry(category.to_string()).or_insert(0.0);
        *a += weight * (1.0 - *a);
        if self.affinities.len() > MAX_AFFINITIES
            && let Some(weakest) = self
                .affinities
                .iter()
                .filter(|(k, _)| k.as_str() != category)
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k.clone())
        {
            self.affinities.remove(&weakest);
        }
    }

    /// Forgets sends older than [`SEND_MEMORY`].
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.sends.retain(|s| now - s.at <= SEND_MEMORY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: usize) -> Vec<Id> {
        (0..n)
            .map(|i| Id::parse(&format!("ev-{i}")).unwrap())
            .collect()
    }

    proptest! {
        /// The last 32 events are remembered and no earlier one is; every forgotten event
        /// is at or before the horizon, whatever the order of times; an event after the
        /// horizon is new; and both encodings read back as they were written.
        #[test]
        fn recent_events_remember_exactly_the_last_ones(
            micros in proptest::collection::vec(
                prop_oneof![0i64..2_000_000_000, 0i64..100_000_000_000], 0..100)
        ) {
            let n = micros.len();
            let all = ids(n);
            let t0: DateTime<Utc> = "2026-11-20T10:00:00Z".parse().unwrap();
            let at = |i: usize| t0 + Duration::microseconds(micros[i]);
            let mut r = RecentEvents::default();
            prop_assert!(!r.may_have_forgotten(t0 - Duration::days(365)));
            for (i, e) in all.iter().enumerate() {
                r.remember(e, at(i));
            }
            prop_assert_eq!(r.len(), n.min(RECENT_EVENTS));
            for (i, e) in all.iter().enumerate() {
                let kept = i + RECENT_EVENTS >= n;
                prop_assert_eq!(r.contains(e), kept, "event {}", i);
                // A forgotten event is never taken for new.
                prop_assert!(kept || r.may_have_forgotten(at(i)), "event {}", i);
            }
            // The horizon is the latest forgotten time, give or take the second each
            // entry's time is rounded to (or 18 hours for an entry that far behind).
            let forgotten = (0..n.saturating_sub(RECENT_EVENTS)).map(at).max();
            match forgotten {
                None => prop_assert!(!r.may_have_forgotten(t0 - Duration::days(365))),
                Some(f) => {
                    let newest = (0..n).map(at).max().unwrap();
                    let slack = if newest - f > Duration::hours(18) {
                        newest - f
                    } else {
                        Duration::seconds(1) * i32::try_from(n).unwrap()
                    };
                    prop_assert!(!r.may_have_forgotten(f + slack + Duration::microseconds(1)));
                }
            }
            if let Some(newest) = (0..n).map(at).max() {
                prop_assert!(!r.may_have_forgotten(newest + Duration::microseconds(1)));
            }
            prop_assert!(!r.contains(&Id::parse("never-sent").unwrap()));
            let bytes = r.to_bytes();
            prop_assert_eq!(bytes.len(), 17 + 8 * r.len());
            prop_assert_eq!(RecentEvents::from_bytes(&bytes), Some(r.clone()));
            let state = UserState { recent: r.clone(), ..UserState::default() };
            let text = serde_json::to_string(&state).unwrap();
            let back: UserState = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back.recent, r);
        }
    }

    /// In time order (the usual traffic), the horizon is the forgotten event's own time to
    /// the second: a fix a few seconds late needs no lookup.
    #[test]
    fn in_order_the_horizon_follows_the_forgotten_event() {
        let t0: DateTime<Utc> = "2026-11-20T10:00:00Z".parse().unwrap();
        let mut r = RecentEvents::default();
        for (i, e) in ids(40).iter().enumerate() {
            r.remember(e, t0 + Duration::seconds(2 * i as i64));
        }
        // Events 0..8 forgotten; event 7 was stamped t0 + 14 s.
        assert!(r.may_have_forgotten(t0 + Duration::seconds(14)));
        assert!(!r.may_have_forgotten(t0 + Duration::seconds(15)));
    }

    #[test]
    fn recent_events_refuse_what_they_did_not_write() {
        assert_eq!(RecentEvents::from_bytes(&[0; 7]), None);
        assert_eq!(RecentEvents::from_bytes(&[]), None);
        assert_eq!(RecentEvents::from_bytes(&[0; 12]), None);
        assert_eq!(
            RecentEvents::from_bytes(&[2; 17]),
            Some(RecentEvents {
                entries: Default::default(),
                newest: Some(i64::from_be_bytes([2; 8])),
                horizon: Some(i64::from_be_bytes([2; 8])),
            })
        );
        // Entries without a newest time.
        let mut none = vec![2u8];
        none.extend_from_slice(&i64::MIN.to_be_bytes());
        none.extend_from_slice(&i64::MIN.to_be_bytes());
        assert!(RecentEvents::from_bytes(&none).is_some_and(|r| r.is_empty()));
        none.extend_from_slice(&[1; 8]);
        assert_eq!(RecentEvents::from_bytes(&none), None);
        for bad in [r#""abc""#, r#""zzzzzzzzzzzzzzzz""#, r#""00""#, "12"] {
            assert!(serde_json::from_str::<RecentEvents>(bad).is_err(), "{bad}");
        }
        // A state written before the field existed reads as remembering nothing.
        let before = serde_json::to_string(&UserState::default()).unwrap();
        assert!(!before.contains("recent\""), "{before}");
        let s: UserState = serde_json::from_str(&before).unwrap();
        assert!(s.recent.is_empty());
        // The digest is SHA-256's first 6 bytes, stable across versions and hosts.
        let abc = Id::parse("abc").unwrap();
        assert_eq!(RecentEvents::digest(&abc), 0xba78_16bf_8f01);
        // The first form (the newest time, 8-byte digests): read with every event at the
        // newest time, and the horizon there too.
        let mut first = 1_000_000i64.to_be_bytes().to_vec();
        first.extend_from_slice(&0xba78_16bf_8f01_cfeau64.to_be_bytes());
        let r = RecentEvents::from_bytes(&first).unwrap();
        assert!(r.contains(&abc));
        assert_eq!(r.len(), 1);
        let t = DateTime::<Utc>::from_timestamp_micros(1_000_000).unwrap();
        assert!(r.may_have_forgotten(t));
        assert!(!r.may_have_forgotten(t + Duration::microseconds(1)));
    }

    #[test]
    fn visit_counts_stay_bounded_and_forget_the_least_recent_store() {
        let t0: DateTime<Utc> = "2026-11-20T10:00:00Z".parse().unwrap();
        let mut s = UserState::default();
        let store = |i: usize| Id::parse(&format!("s{i}")).unwrap();
        for i in 0..=MAX_VISIT_COUNTS {
            s.count_visit(&store(i), t0 + Duration::minutes(i as i64));
        }
        assert_eq!(s.visits.len(), MAX_VISIT_COUNTS);
        assert!(!s.visits.contains_key(&store(0)), "the least recent goes");
        // Visiting the oldest kept store again makes it recent; the next new one evicts s2.
        let later = t0 + Duration::hours(2);
        s.count_visit(&store(1), later);
        assert_eq!(s.visits[&store(1)].count, 2);
        s.count_visit(&store(999), later);
        assert!(s.visits.contains_key(&store(1)));
        assert!(!s.visits.contains_key(&store(2)));
        // A visit past the memory forgets every older count.
        s.count_visit(&store(1), later + VISIT_MEMORY + Duration::seconds(1));
        assert_eq!(s.visits.len(), 1, "{:?}", s.visits);
        assert_eq!(s.visits[&store(1)].count, 1);
    }
}
