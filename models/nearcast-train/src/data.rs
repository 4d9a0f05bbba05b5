//! Reading and writing the training-data format `nearcast-training/1`
//! ([`nearcast_core::export`]; docs/training-data.md): one JSON line per logged decision,
//! as `nearcast export` writes it and the generator writes it. This module is the trainer's
//! only reader, and it decides which candidates are training rows and what their label is.
//!
//! - Rows: for `opened` and `redeemed` only pushed candidates (`sent`) have an observed
//!   outcome, so only they are rows; for `purchased` every candidate that was scored (no
//!   drop `reason`) is a row, pushed, held out or passed over.
//! - Features: the model's encoder reads [`TrainingRecord::input`], the same input serving
//!   builds.

use nearcast_core::export::FORMAT;
pub use nearcast_core::export::{TrainingCandidate, TrainingRecord};
use std::fmt;
use std::io::{BufRead, Write};
use std::path::Path;

/// The outcome a model learns to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Label {
    /// The push was opened within the attribution window (the default).
    #[default]
    Opened,
    /// The offer's coupon was redeemed.
    Redeemed,
    /// The user bought in the offer's category.
    Purchased,
}

impl Label {
    /// Name as on the command line and in artifacts.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Opened => "opened",
            Label::Redeemed => "redeemed",
            Label::Purchased => "purchased",
        }
    }

    /// The label of a candidate.
    pub fn of(self, c: &TrainingCandidate) -> bool {
        match self {
            Label::Opened => c.opened,
            Label::Redeemed => c.redeemed,
            Label::Purchased => c.purchased,
        }
    }

    /// Whether the candidate's outcome is observed for this label (see the module docs).
    pub fn observed(self, c: &TrainingCandidate) -> bool {
        match self {
            Label::Opened | Label::Redeemed => c.sent,
            Label::Purchased => c.reason.is_none(),
        }
    }
}

/// One decision's training rows: the record and the indices of its observed candidates.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// The decision.
    pub record: &'a TrainingRecord,
    /// Its candidates that are rows for the label.
    pub candidates: &'a [TrainingCandidate],
    label: Label,
}

impl<'a> Rows<'a> {
    /// The observed candidates.
    pub fn iter(&self) -> impl Iterator<Item = &'a TrainingCandidate> + use<'a> {
        let label = self.label;
        self.candidates.iter().filter(move |c| label.observed(c))
    }

    /// The labels of the observed candidates.
    pub fn labels(&self) -> Vec<bool> {
        let label = self.label;
        self.iter().map(|c| label.of(c)).collect()
    }
}

/// The decisions with at least one row for `label`, with their rows.
pub fn rows(records: &[TrainingRecord], label: Label) -> Vec<Rows<'_>> {
    records
        .iter()
        .map(|r| Rows {
            record: r,
            candidates: &r.candidates,
            label,
        })
        .filter(|rows| rows.iter().next().is_some())
        .collect()
}

/// Why a data file could not be read.
#[derive(Debug)]
pub enum DataError {
    /// I/O failed.
    Io(std::io::Error),
    /// A line is not a record, or a field is wrong: the message names the field.
    Line {
        /// 1-based line number.
        line: usize,
        /// The field and what is wrong with it.
        message: String,
    },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Io(e) => write!(f, "reading training data: {e}"),
            DataError::Line { line, message } => {
                write!(f, "line {line}: not a {FORMAT} record: {message}")
            }
        }
    }
}

impl std::error::Error for DataError {}

impl From<std::io::Error> for DataError {
    fn from(e: std::io::Error) -> Self {
        DataError::Io(e)
    }
}

/// A data set read from a file: the records and a fingerprint of the file.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Records in file order.
    pub records: Vec<TrainingRecord>,
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
pub fn fingerprint(bytes: &[u8], records: &[TrainingRecord]) -> String {
    let candidates: usize = records.iter().map(|d| d.candidates.len()).sum();
    format!(
        "fnv1a64:{:016x};decisions={};candidates={candidates}",
        fnv1a64(bytes),
        records.len()
    )
}

/// Parses one line: serde errors carry the path of the field (`candidates[1].sent`), then
/// [`TrainingRecord::validate`] (a missing or null `weather.temp_c` is an unknown
/// temperature).
fn parse_line(line: &str) -> Result<TrainingRecord, String> {
    let de = &mut serde_json::Deserializer::from_str(line);
    let r: TrainingRecord = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })?;
    r.validate()?;
    Ok(r)
}

/// Parses JSON lines (blank lines are skipped) and checks each record; `on_bytes` is told
/// how many bytes each line consumed (for a progress bar).
///
/// # Errors
/// [`DataError`] naming the first bad line and its field.
pub fn parse(
    bytes: &[u8],
    mut on_bytes: impl FnMut(usize),
) -> Result<Vec<TrainingRecord>, DataError> {
    let mut out = Vec::new();
    for (i, line) in bytes.lines().enumerate() {
        let line = line?;
        on_bytes(line.len() + 1);
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_line(&line).map_err(|message| DataError::Line {
            line: i + 1,
            message,
        })?);
    }
    Ok(out)
}

/// Reads a data file and fingerprints it.
///
/// # Errors
/// [`DataError`] when the file can't be read or a line is bad.
pub fn read(path: &Path, on_bytes: impl FnMut(usize)) -> Result<Loaded, DataError> {
    let bytes = std::fs::read(path)?;
    let records = parse(&bytes, on_bytes)?;
    let fingerprint = fingerprint(&bytes, &records);
    Ok(Loaded {
        records,
        fingerprint,
    })
}

/// Writes records as JSON lines.
///
/// # Errors
/// When writing fails.
pub fn write(out: &mut impl Write, records: &[TrainingRecord]) -> std::io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *out, r)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"format":"nearcast-training/1","decision_id":"e1","user":"u-3f2a","at":"2026-10-06T05:12:40Z","local_time":"2026-10-06T08:12:40+03:00","daypart":"morning","weekday":"Tue","weekend":false,"cell":"891126d3a47ffff","weather":{"condition":"rain","temp_c":4.0},"personalised":true,"model_version":"2026-11-23.1","verdict":"sent","reason":null,"candidates":[{"offer_id":"o1","category":"coffee","store_id":"s1","distance_m":40.0,"affinity":0.6,"bought_category":false,"score":0.31,"reason":null,"sent":true,"held_out":false,"opened":true,"redeemed":false,"purchased":true},{"offer_id":"o2","category":"clothes","store_id":"s2","distance_m":120.5,"affinity":0.1,"bought_category":true,"score":0.05,"reason":null,"sent":false,"held_out":false,"opened":false,"redeemed":false,"purchased":false},{"offer_id":"o3","category":"books","store_id":"s3","distance_m":80.0,"affinity":null,"bought_category":false,"score":null,"reason":"daypart","sent":false,"held_out":false,"opened":false,"redeemed":false,"purchased":false}]}"#;

    #[test]
    fn the_documented_example_parses_and_round_trips() {
        let ds = parse(EXAMPLE.as_bytes(), |_| {}).unwrap();
        assert_eq!(ds.len(), 1);
        assert_eq!(ds[0].candidates.len(), 3);
        let mut buf = Vec::new();
        write(&mut buf, &ds).unwrap();
        assert_eq!(parse(&buf, |_| {}).unwrap(), ds);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number_and_field() {
        let err = |text: String| parse(text.as_bytes(), |_| {}).unwrap_err().to_string();
        let e = err(format!("{EXAMPLE}\n\n{{\"format\": 3}}\n"));
        assert!(e.starts_with("line 3: "), "{e}");
        assert!(e.contains("format"), "{e}");
        let e = err(EXAMPLE.replacen(r#""sent":true"#, r#""sent":"yes""#, 1));
        assert!(e.starts_with("line 1: "), "{e}");
        assert!(e.contains("candidates[0].sent"), "{e}");
        let e = err(EXAMPLE.replacen(r#""distance_m":40.0"#, r#""distance_m":-4.0"#, 1));
        assert!(e.contains("candidates[0].distance_m"), "{e}");
        let e = err(EXAMPLE.replacen(r#""affinity":0.1"#, r#""affinity":1.1"#, 1));
        assert!(e.contains("candidates[1].affinity"), "{e}");
        let e = err(EXAMPLE.replacen("nearcast-training/1", "nearcast-training/9", 1));
        assert!(e.contains("format: expected"), "{e}");
        let e = err(EXAMPLE.replacen(r#""cell""#, r#""lat":60.1,"cell""#, 1));
        assert!(e.contains("unknown field `lat`"), "{e}");
        let e = err(format!("{EXAMPLE}\n{{not json\n"));
        assert!(e.starts_with("line 2: "), "{e}");
    }

    #[test]
    fn rows_are_the_candidates_whose_label_is_observed() {
        let ds = parse(EXAMPLE.as_bytes(), |_| {}).unwrap();
        let opened = rows(&ds, Label::Opened);
        assert_eq!(
            opened[0].iter().map(|c| &c.offer_id).collect::<Vec<_>>(),
            ["o1"]
        );
        assert_eq!(opened[0].labels(), [true]);
        let purchased = rows(&ds, Label::Purchased);
        assert_eq!(
            purchased[0].iter().map(|c| &c.offer_id).collect::<Vec<_>>(),
            ["o1", "o2"]
        );
        assert_eq!(purchased[0].labels(), [true, false]);
        assert_eq!(rows(&ds, Label::Redeemed)[0].labels(), [false]);
        // A decision without a pushed candidate has no rows for `opened`.
        let mut r = ds[0].clone();
        r.candidates[0].sent = false;
        assert!(rows(&[r], Label::Opened).is_empty());
    }

    #[test]
    fn features_follow_consent_like_serving() {
        let mut d = parse(EXAMPLE.as_bytes(), |_| {}).unwrap().remove(0);
        let shared = d.shared();
        let x = d.input(&d.candidates[1], &shared);
        assert_eq!((x.affinity, x.bought_category), (Some(0.1), true));
        assert_eq!(x.history, [("clothes", 0.1), ("coffee", 0.6)]);
        d.personalised = false;
        let shared = d.shared();
        let x = d.input(&d.candidates[1], &shared);
        assert_eq!(x.affinity, None);
        assert!(x.history.is_empty());
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a64(b"ab"), fnv1a64(b"ba"));
    }
}
