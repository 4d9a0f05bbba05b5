//! Bounded identifiers, validated once at the edge.

use crate::FieldError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest identifier accepted (user, device, event, store, offer, campaign ids).
pub const MAX_ID_LEN: usize = 128;

/// An identifier: 1 to 128 characters from `A-Z a-z 0-9 . _ : -`.
///
/// The alphabet keeps ids safe to embed in store keys (`USER#id`), log lines and file names.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    /// Validates `s` as an identifier.
    ///
    /// # Errors
    /// A [`FieldError`] on the empty field when `s` is empty, too long, or has a character
    /// outside the alphabet; the caller adds the field path.
    ///
    /// # Example
    /// ```
    /// use nearcast_core::ids::Id;
    /// assert!(Id::parse("user-42").is_ok());
    /// assert!(Id::parse("no spaces").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        if s.is_empty() {
            return Err(FieldError::new("", "must not be empty"));
        }
        if s.len() > MAX_ID_LEN {
            return Err(FieldError::new(
                "",
                format!("must be at most {MAX_ID_LEN} characters, got {}", s.len()),
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(FieldError::new(
                "",
                format!("character {c:?} is not allowed (use A-Z a-z 0-9 . _ : -)"),
            ));
        }
        Ok(Self(s.to_string()))
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Id::parse(&s).map_err(|e| serde::de::Error::custom(e.reason))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
