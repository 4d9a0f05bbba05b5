//! Consent per purpose. Unknown means no.

use crate::FieldError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a consent is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Receiving push notifications.
    Push,
    /// Using the device location for offers.
    Location,
    /// Using the user's history and tastes to rank offers.
    Personalisation,
}

impl Purpose {
    /// All purposes.
    pub const ALL: [Purpose; 3] = [Purpose::Push, Purpose::Location, Purpose::Personalisation];

    /// Parses the wire name.
    ///
    /// # Errors
    /// When `s` is not `push`, `location` or `personalisation`.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s {
            "push" => Ok(Purpose::Push),
            "location" => Ok(Purpose::Location),
            "personalisation" | "personalization" => Ok(Purpose::Personalisation),
            other => Err(FieldError::new(
                "",
                format!("unknown purpose {other:?}; expected push, location or personalisation"),
            )),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Push => "push",
            Purpose::Location => "location",
            Purpose::Personalisation => "personalisation",
        }
    }
}

/// One recorded consent decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// Granted (true) or withdrawn (false).
    pub granted: bool,
    /// When the user decided.
    pub at: DateTime<Utc>,
    /// Where it came from: `event` (device batch) or `api` (consent endpoint).
    pub source: String,
    /// Policy version the user agreed to, if given.
    pub policy_version: Option<String>,
}

/// A user's consents. A purpose with no record is not granted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Consents {
    /// Push notifications.
    pub push: Option<ConsentRecord>,
    /// Location use.
    pub location: Option<ConsentRecord>,
    /// Personalisation.
    pub personalisation: Option<ConsentRecord>,
}

impl Consents {
    /// Whether `purpose` is granted (unknown means no).
    pub fn granted(&self, purpose: Purpose) -> bool {
        self.get(purpose).is_some_and(|r| r.granted)
    }

    /// The record for `purpose`.
    pub fn get(&self, purpose: Purpose) -> Option<&ConsentRecord> {
        match purpose {
            Purpose::Push => self.push.as_ref(),
            Purpose::Location => self.location.as_ref(),
            Purpose::Personalisation => self.personalisation.as_ref(),
        }
    }

    /// Records a decision. An older decision never overrides a newer one, so a late-arriving
    /// event cannot resurrect a withdrawn consent.
    pub fn set(&mut self, purpose: Purpose, record: ConsentRecord) {
        let slot = match purpose {
            Purpose::Push => &mut self.push,
            Purpose::Location => &mut self.location,
            Purpose::Personalisation => &mut self.personalisation,
        };
        if slot.as_ref().is_none_or(|old| old.at <= record.at) {
            *slot = Some(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(granted: bool, t: &str) -> ConsentRecord {
        ConsentRecord {
            granted,
            at: t.parse().unwrap(),
            source: "event".into(),
            policy_version: None,
        }
    }

    #[test]
    fn purposes_have_their_wire_names_and_parse_back() {
        for (p, name) in [
            (Purpose::Push, "push"),
            (Purpose::Location, "location"),
            (Purpose::Personalisation, "personalisation"),
        ] {
            assert_eq!(p.as_str(), name);
            assert_eq!(Purpose::parse(name).unwrap(), p);
        }
        assert_eq!(
            Purpose::parse("personalization").unwrap(),
            Purpose::Personalisation
        );
        assert!(Purpose::parse("marketing").is_err());
    }

    #[test]
    fn unknown_consent_means_no() {
        let c = Consents::default();
        for p in Purpose::ALL {
            assert!(!c.granted(p));
        }
    }

    #[test]
    fn an_older_grant_does_not_undo_a_newer_withdrawal() {
        let mut c = Consents::default();
        c.set(Purpose::Push, rec(false, "2026-11-20T12:00:00Z"));
        c.set(Purpose::Push, rec(true, "2026-11-20T11:00:00Z"));
        assert!(!c.granted(Purpose::Push));
        c.set(Purpose::Push, rec(true, "2026-11-20T13:00:00Z"));
        assert!(c.granted(Purpose::Push));
    }
}
