//! Logged decisions: the JSON-lines record format the trainer reads and the generator
//! writes. Everything that knows this format is in this module, so that it can follow the
//! export format when that is defined (see models/README.md).
//!
//! One decision per line:
//!
//! ```json
//! {"at":"2026-10-06T05:12:40Z","daypart":"morning","weekend":false,
//!  "weather":{"condition":"rain","temp_c":4.0},"personalised":true,
//!  "candidates":[{"category":"coffee","distance_m":40.0,"affinity":0.6,
//!                 "bought_category":false,"opened":true}]}
//! ```

use chrono::{DateTime, Utc};
use nearcast_core::context::Daypart;
use nearcast_core::features::{self, Input, N_FEATURES};
use nearcast_core::weather::Weather;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{BufRead, Write};
use std::path::Path;

/// One logged decision: a moment, its context and the candidates that were scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// When the decision was made (UTC, RFC 3339).
    pub at: DateTime<Utc>,
    /// Daypart in the store's local time, as computed when deciding.
    pub daypart: Daypart,
    /// Saturday or Sunday in the store's local time.
    pub weekend: bool,
    /// Weather at the store, if it was known.
    #[serde(default)]
    pub weather: Option<Weather>,
    /// Whether the user had given personalisation consent.
    pub personalised: bool,
    /// The candidates scored in this decision (one or more).
    pub candidates: Vec<Candidate>,
}

/// One candidate offer of a decision and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// Offer category (mapped onto a product group by `features::group_of`).
    pub category: String,
    /// Distance from the fix to the store's fence centre, metres.
    pub distance_m: f64,
    /// The user's affinity for the category; absent without personalisation consent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<f64>,
    /// Whether the user bought in the category before (only meaningful with consent).
    #[serde(default)]
    pub bought_category: bool,
    /// The label: whether the offer was opened.
    pub opened: bool,
}

impl Decision {
    /// The feature input of candidate `c`, built exactly as serving builds it
    /// (`nearcast_core::decision`): without consent there is no affinity, with consent a
    /// missing affinity counts as 0.
    pub fn input<'a>(&self, c: &'a Candidate) -> Input<'a> {
        Input {
            category: &c.category,
            daypart: self.daypart,
            weekend: self.weekend,
            weather: self.weather,
            distance_m: c.distance_m,
            affinity: self.personalised.then(|| c.affinity.unwrap_or(0.0)),
            bought_category: c.bought_category,
        }
    }

    /// Writes the feature vector of candidate `c` through `features::encode`, the one code
    /// path shared with serving.
    pub fn encode(&self, c: &Candidate, out: &mut [f64; N_FEATURES]) {
        features::encode(&self.input(c), out);
    }
}

/// Why a data file could not be read.
#[derive(Debug)]
pub enum DataError {
    /// I/O failed.
    Io(std::io::Error),
    /// A line is not a decision record.
    Parse {
        /// 1-based line number.
        line: usize,
        /// What serde said.
        message: String,
    },
    /// A record is well-formed but unusable.
    Invalid {
        /// 1-based line number.
        line: usize,
        /// Why.
        message: String,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Io(e) => write!(f, "reading decisions: {e}"),
            DataError::Parse { line, message } => {
                write!(f, "line {line}: not a decision record: {message}")
            }
            DataError::Invalid { line, message } => write!(f, "line {line}: {message}"),
        }
    }
}

impl std::error::Error for DataError {}

impl From<std::io::Error> for DataError {
    fn from(e: std::io::Error) -> Self {
        DataError::Io(e)
    }
}

/// A data set read from a file: the decisions and a fingerprint of the file.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Decisions in file order.
    pub decisions: Vec<Decision>,
    /// Fingerprint of the file's bytes and row counts, stored in the artifact.
    pub fingerprint: String,
}

/// FNV-1a, 64 bits: a stable hash of the data file's bytes.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The fingerprint stored as the artifact's `training_data`.
pub fn fingerprint(bytes: &[u8], decisions: &[Decision]) -> String {
    let candidates: usize = decisions.iter().map(|d| d.candidates.len()).sum();
    format!(
        "fnv1a64:{:016x};decisions={};candidates={candidates}",
        fnv1a64(bytes),
        decisions.len()
    )
}

/// Parses JSON lines (blank lines are skipped) and checks each record.
///
/// # Errors
/// [`DataError`] naming the first bad line.
pub fn parse(bytes: &[u8], mut on_line: impl FnMut(usize)) -> Result<Vec<Decision>, DataError> {
    let mut out = Vec::new();
    for (i, line) in bytes.lines().enumerate() {
        let line_no = i + 1;
        let line = line?;
        on_line(line.len() + 1);
        if line.trim().is_empty() {
            continue;
        }
        let d: Decision = serde_json::from_str(&line).map_err(|e| DataError::Parse {
            line: line_no,
            message: e.to_string(),
        })?;
        check(&d).map_err(|message| DataError::Invalid {
            line: line_no,
            message,
        })?;
        out.push(d);
    }
    Ok(out)
}

fn check(d: &Decision) -> Result<(), String> {
    if d.candidates.is_empty() {
        return Err("a decision has no candidates".into());
    }
    for c in &d.candidates {
        if !c.distance_m.is_finite() || c.distance_m < 0.0 {
            return Err(format!("distance_m {} is not a distance", c.distance_m));
        }
        if let Some(a) = c.affinity
            && !a.is_finite()
        {
            return Err("affinity is not finite".into());
        }
    }
    if let Some(w) = d.weather
        && !w.temp_c.is_finite()
    {
        return Err("temp_c is not finite".into());
    }
    Ok(())
}

/// Reads a data file and fingerprints it; `on_bytes` is told how many bytes were consumed
/// (for a progress bar).
///
/// # Errors
/// [`DataError`] when the file can't be read or a line is bad.
pub fn read(path: &Path, on_bytes: impl FnMut(usize)) -> Result<Loaded, DataError> {
    let bytes = std::fs::read(path)?;
    let decisions = parse(&bytes, on_bytes)?;
    let fingerprint = fingerprint(&bytes, &decisions);
    Ok(Loaded {
        decisions,
        fingerprint,
    })
}

/// Writes decisions as JSON lines.
///
/// # Errors
/// When writing fails.
pub fn write(out: &mut impl Write, decisions: &[Decision]) -> std::io::Result<()> {
    for d in decisions {
        serde_json::to_writer(&mut *out, d)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"at": "2026-10-06T05:12:40Z", "daypart": "morning", "weekend": false, "weather": {"condition": "rain", "temp_c": 4.0}, "personalised": true, "candidates": [{"category": "coffee", "distance_m": 40.0, "affinity": 0.6, "bought_category": false, "opened": true}, {"category": "clothing", "distance_m": 120.5, "affinity": 0.1, "bought_category": true, "opened": false}]}"#;

    #[test]
    fn the_documented_example_parses_and_round_trips() {
        let ds = parse(EXAMPLE.as_bytes(), |_| {}).unwrap();
        assert_eq!(ds.len(), 1);
        assert_eq!(ds[0].candidates.len(), 2);
        let mut buf = Vec::new();
        write(&mut buf, &ds).unwrap();
        assert_eq!(parse(&buf, |_| {}).unwrap(), ds);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let text = format!("{EXAMPLE}\n\n{{\"at\": 3}}\n");
        match parse(text.as_bytes(), |_| {}) {
            Err(DataError::Parse { line, .. }) => assert_eq!(line, 3),
            other => panic!("{other:?}"),
        }
        let empty = EXAMPLE.replace(r#""candidates": ["#, r#""candidates": [], "x": ["#);
        assert!(parse(empty.as_bytes(), |_| {}).is_err());
    }

    #[test]
    fn features_follow_consent_like_serving() {
        let mut d = parse(EXAMPLE.as_bytes(), |_| {}).unwrap().remove(0);
        let mut x = [0.0; N_FEATURES];
        d.encode(&d.candidates[1].clone(), &mut x);
        assert_eq!(&x[0..3], &[0.1, 1.0, 1.0]);
        d.personalised = false;
        d.encode(&d.candidates[1].clone(), &mut x);
        assert_eq!(&x[0..3], &[0.0, 0.0, 0.0]);
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a64(b"ab"), fnv1a64(b"ba"));
    }
}
