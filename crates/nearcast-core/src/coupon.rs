//! Coupon pools: unique codes a campaign hands out, one per push, and redeems once.
//!
//! A marketer uploads a pool of codes for a campaign (`coupon_pool: true`) as CSV. At send
//! the engine picks one of the pool's free codes and the store assigns it to the delivery
//! in the send's own commit, on condition that it is still free: a code is never given
//! twice, even under concurrency (the loser of a race picks again). A point of sale or web
//! shop redeems a code once (`POST /v1/admin/redemptions`): the first call answers the
//! code's campaign and delivery, every later one that it was redeemed, and the redemption
//! is logged as an outcome of the user the code was sent to.
//!
//! A code's link to its user is the delivery it went out with and the user's id on the
//! code's record; an erasure of the user removes both, keeping only that the code was
//! issued (and redeemed), so it is never reused (docs/privacy.md).

use crate::FieldError;
use crate::ids::Id;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest code accepted.
pub const MAX_CODE_LEN: usize = 64;

/// Most codes one upload may carry.
pub const MAX_UPLOAD_CODES: usize = 100_000;

/// How many free codes the engine reads to pick one at random: concurrent sends of one
/// campaign then rarely pick the same code (a pick that lost the race is retried).
pub const PICK_FROM: usize = 16;

/// Checks a code: 1 to 64 characters from `A-Z a-z 0-9 - _` (what a till can scan and a
/// person can type).
///
/// # Errors
/// What is wrong with it.
pub fn check_code(code: &str) -> Result<(), String> {
    if code.is_empty() {
        return Err("must not be empty".into());
    }
    if code.len() > MAX_CODE_LEN {
        return Err(format!(
            "must be at most {MAX_CODE_LEN} characters, got {}",
            code.len()
        ));
    }
    if let Some(c) = code
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
    {
        return Err(format!(
            "character {c:?} is not allowed (use A-Z a-z 0-9 - _)"
        ));
    }
    Ok(())
}

/// A row of an upload that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedCode {
    /// Line in the file, from 1.
    pub line: usize,
    /// The code as read (cut to 80 characters).
    pub code: String,
    /// Why.
    pub reason: String,
}

/// Reads an upload: one code per line, an optional header line `code`, blank lines
/// skipped, surrounding spaces and double quotes removed. A line with a comma is refused
/// (one column only), as are codes that fail [`check_code`] and codes repeated within the
/// file (each repeat after the first).
///
/// # Errors
/// Every refused row, when any is (then nothing is taken), or a [`FieldError`] for a
/// file with no code or too many.
pub fn parse_codes(csv: &str) -> Result<Result<Vec<String>, Vec<RejectedCode>>, FieldError> {
    let mut codes = Vec::new();
    let mut rejected = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, raw) in csv.lines().enumerate() {
        let line = i + 1;
        let cell = raw.trim().trim_matches('"').trim();
        if cell.is_empty() || (line == 1 && cell.eq_ignore_ascii_case("code")) {
            continue;
        }
        let shown: String = cell.chars().take(80).collect();
        let refuse = |reason: String| RejectedCode {
            line,
            code: shown.clone(),
            reason,
        };
        if cell.contains(',') {
            rejected.push(refuse("one column only: the code".into()));
        } else if let Err(e) = check_code(cell) {
            rejected.push(refuse(e));
        } else if let Some(first) = seen.insert(cell.to_string(), line) {
            seen.insert(cell.to_string(), first);
            rejected.push(refuse(format!("repeats the code of line {first}")));
        } else {
            codes.push(cell.to_string());
        }
        if codes.len() + rejected.len() > MAX_UPLOAD_CODES {
            return Err(FieldError::new(
                "body",
                format!("at most {MAX_UPLOAD_CODES} codes per upload"),
            ));
        }
    }
    if codes.is_empty() && rejected.is_empty() {
        return Err(FieldError::new("body", "no code in the file"));
    }
    Ok(if rejected.is_empty() {
        Ok(codes)
    } else {
        Err(rejected)
    })
}

/// A code to assign in a send's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponIssue {
    /// The campaign whose pool it is from.
    pub campaign_id: Id,
    /// The code.
    pub code: String,
    /// The delivery it goes out with.
    pub delivery_id: String,
    /// The offer sent.
    pub offer_id: Id,
}

/// A pool's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponCounts {
    /// Codes uploaded.
    pub total: u64,
    /// Codes given out (redeemed ones included).
    pub issued: u64,
    /// Codes redeemed.
    pub redeemed: u64,
}

impl CouponCounts {
    /// Codes not given out yet.
    pub fn free(&self) -> u64 {
        self.total.saturating_sub(self.issued)
    }
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// All codes were added.
    Added(u64),
    /// These codes exist already (in this pool or another); nothing was added.
    Existing(Vec<String>),
}

/// What a redemption found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Redemption {
    /// Redeemed now.
    Redeemed {
        /// The campaign.
        campaign_id: Id,
        /// The offer it was sent with.
        offer_id: Option<Id>,
        /// The delivery it was sent with (none once its user was erased).
        delivery_id: Option<String>,
        /// The user it was sent to (none once erased); the outcome is logged for them.
        #[serde(skip)]
        user_id: Option<Id>,
    },
    /// Redeemed before, at this time.
    AlreadyRedeemed {
        /// When.
        redeemed_at: DateTime<Utc>,
        /// The order it was redeemed for, if the till gave one.
        order_id: Option<String>,
        /// The offer it was sent with (not answered: for counting a redemption whose
        /// first attempt stopped before its results were counted).
        #[serde(skip)]
        offer_id: Option<Id>,
        /// The delivery it was sent with (none once its user was erased; not answered).
        #[serde(skip)]
        delivery_id: Option<String>,
        /// The user it was sent to (none once erased; not answered).
        #[serde(skip)]
        user_id: Option<Id>,
    },
    /// The code is in a pool but was never given out.
    NotIssued,
    /// No pool has this code.
    Unknown,
}

/// The event id a redemption's outcome is logged under: one per code, so a retried
/// redemption logs nothing twice.
pub fn redemption_event_id(code: &str) -> Id {
    Id::parse(&format!("redemption:{code}")).expect("codes use the id alphabet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_takes_a_header_quotes_and_blank_lines() {
        let codes = parse_codes("code\n\"RAIN-0001\"\n\n RAIN-0002 \r\nRAIN_3\n")
            .unwrap()
            .unwrap();
        assert_eq!(codes, ["RAIN-0001", "RAIN-0002", "RAIN_3"]);
    }

    #[test]
    fn an_upload_reports_every_bad_row_with_its_line() {
        let long = "X".repeat(65);
        let csv = format!("code\nA1\nA1\nB 2\n{long}\nC,3\nD4\n");
        let rejected = parse_codes(&csv).unwrap().unwrap_err();
        let lines: Vec<(usize, &str)> = rejected
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(lines.len(), 4, "{rejected:?}");
        assert_eq!(lines[0], (3, "repeats the code of line 2"));
        assert_eq!(lines[1].0, 4);
        assert!(lines[1].1.contains("' '"), "{}", lines[1].1);
        assert_eq!(lines[2].0, 5);
        assert!(lines[2].1.contains("at most 64"));
        assert_eq!(lines[3], (6, "one column only: the code"));
    }

    #[test]
    fn an_empty_or_oversized_upload_is_refused() {
        assert_eq!(parse_codes("code\n\n").unwrap_err().field, "body");
        let many: String = (0..=MAX_UPLOAD_CODES).map(|i| format!("C{i}\n")).collect();
        assert!(
            parse_codes(&many)
                .unwrap_err()
                .reason
                .contains("at most 100000")
        );
    }

    #[test]
    fn every_valid_code_makes_a_valid_event_id() {
        assert_eq!(
            redemption_event_id("RAIN-0001_x").as_str(),
            "redemption:RAIN-0001_x"
        );
        let c = "Z".repeat(MAX_CODE_LEN);
        assert!(check_code(&c).is_ok());
        redemption_event_id(&c);
    }
}
