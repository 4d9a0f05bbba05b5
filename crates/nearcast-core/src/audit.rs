//! Who changed the configuration, when, and from what to what.
//!
//! Every change of a store, an offer or the cap policy is written together with an
//! [`AuditEntry`], in the same transaction as the change itself (see
//! [`StateStore::apply_config`](crate::ports::StateStore::apply_config)): a change without
//! its entry, or an entry for a change that did not happen, cannot be observed. Entries
//! name the marketer by the name the host authenticated (an API key's name, a JWT's
//! subject), never a device user: the log holds no personal data of the people offers are
//! for.

use crate::campaign::Campaign;
use crate::config::{CapPolicy, Offer, Store};
use crate::ids::Id;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a marketer may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the configuration, results, the audit log; simulates.
    Viewer,
    /// And changes stores and offers.
    Editor,
    /// And changes the cap policy, reloads models, reads and erases one person's data.
    Admin,
}

impl Role {
    /// The role's name as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    /// Parses `viewer`, `editor` or `admin` (exactly, lower case).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who asked for a change, as the host authenticated them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The API key's name, or the JWT's subject.
    pub name: String,
    /// Their role.
    pub role: Role,
}

impl Actor {
    /// The actor of changes made by the host itself (a configuration folder loaded at
    /// start, the demo).
    pub fn system(what: &str) -> Self {
        Self {
            name: format!("nearcast ({what})"),
            role: Role::Admin,
        }
    }
}

/// One configuration change, as applied to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigChange {
    /// Creates or replaces a store.
    PutStore(Store),
    /// Deletes a store.
    DeleteStore(Id),
    /// Creates or replaces an offer.
    PutOffer(Offer),
    /// Deletes an offer.
    DeleteOffer(Id),
    /// Replaces the cap policy.
    PutPolicy(CapPolicy),
    /// Creates or replaces a campaign.
    PutCampaign(Campaign),
    /// Deletes a campaign.
    DeleteCampaign(Id),
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// A unique id (time-ordered: entries sort by it).
    pub id: String,
    /// When the change was applied (the server's clock).
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// What: `store.put`, `store.delete`, `store.import`, `offer.put`, `offer.delete`,
    /// `campaign.put`, `campaign.status`, `campaign.delete`, `policy.put`, `catalog.load`.
    pub action: String,
    /// The store or offer id (none for the policy and whole-catalog loads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The object before the change (none when it was created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The object after the change (none when it was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

impl AuditEntry {
    /// An entry stamped `at`, with a time-ordered unique id.
    pub fn new(at: DateTime<Utc>, actor: &Actor, action: &str) -> Self {
        Self {
            id: entry_id(at),
            at,
            actor: actor.clone(),
            action: action.to_string(),
            target: None,
            before: None,
            after: None,
        }
    }

    /// The same entry about `target`.
    pub fn target(mut self, target: &Id) -> Self {
        self.target = Some(target.to_string());
        self
    }

    /// The same entry with the object before and after the change.
    pub fn change<T: Serialize>(mut self, before: Option<&T>, after: Option<&T>) -> Self {
        let v = |x: &T| serde_json::to_value(x).unwrap_or(Value::Null);
        self.before = before.map(v);
        self.after = after.map(v);
        self
    }
}

/// A time-ordered id: the instant in microseconds (fixed width, so ids sort as instants),
/// then random bits so that entries of two processes in one microsecond differ. Within a
/// process ids strictly increase in the order entries are made, even when the clock does
/// not move (a test's or a replay's clock) or steps back.
fn entry_id(at: DateTime<Utc>) -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let wanted = at.timestamp_micros().max(0);
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(wanted.max(last + 1))
        })
        .unwrap_or(0);
    let micros = wanted.max(prev + 1);
    let r = RandomState::new().hash_one(micros) as u32;
    format!("{micros:020}-{r:08x}")
}

/// Most entries one page of `GET /v1/admin/audit` returns.
pub const MAX_AUDIT_PAGE: usize = 500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_viewer_editor_admin_and_parse_exactly() {
        assert!(Role::Viewer < Role::Editor && Role::Editor < Role::Admin);
        for r in [Role::Viewer, Role::Editor, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::parse(""), None);
    }

    #[test]
    fn entry_ids_sort_as_their_instants() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ids: Vec<String> = (0..50)
            .map(|i| entry_id(t0 + chrono::Duration::microseconds(i * 997)))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        // A clock that does not move, or steps back, still gives increasing ids.
        let (a, b, c) = (
            entry_id(t0),
            entry_id(t0),
            entry_id(t0 - chrono::Duration::hours(1)),
        );
        assert!(a < b && b < c, "{a} {b} {c}");
    }
}
