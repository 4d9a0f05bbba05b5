//! Evaluation: rank-based AUC, log loss, calibration, hit@1 and hit@3 within each
//! decision's candidates, and the two baselines a model has to beat on the same split:
//! offer popularity and nearest store.

use crate::data::{Label, Rows};
use nearcast_core::ranker::Ranker;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// Area under the ROC curve by ranks (Mann-Whitney U): the probability that a random
/// positive scores above a random negative, ties counting one half. `None` when there are
/// no positives or no negatives.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let n_pos = labels.iter().filter(|l| **l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0; // mean of ranks i+1..=j
        let pos = idx[i..j].iter().filter(|k| labels[**k]).count();
        rank_sum += avg_rank * pos as f64;
        i = j;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Mean binary cross-entropy of probabilities (clamped to [1e-15, 1 - 1e-15]).
pub fn log_loss(probs: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(probs.len(), labels.len(), "one label per probability");
    if probs.is_empty() {
        return f64::NAN;
    }
    let eps = 1e-15;
    let sum: f64 = probs
        .iter()
        .zip(labels)
        .map(|(p, y)| {
            let p = p.clamp(eps, 1.0 - eps);
            if *y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    sum / probs.len() as f64
}

/// hit@k over decisions with at least one positive: the share whose k top-scored
/// candidates include a positive. Ties are broken at random and the decision counts the
/// probability of a hit, so a scorer that can't tell candidates apart is not credited
/// with luck. `None` when no decision has a positive.
pub fn hit_at_k<'a>(
    decisions: impl IntoIterator<Item = (&'a [f64], &'a [bool])>,
    k: usize,
) -> Option<f64> {
    let (mut hits, mut n) = (0.0, 0usize);
    for (scores, labels) in decisions {
        assert_eq!(scores.len(), labels.len(), "one label per score");
        if !labels.iter().any(|l| *l) {
            continue;
        }
        n += 1;
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
        let mut slots = k;
        let mut i = 0;
        while i < idx.len() && slots > 0 {
            let mut j = i + 1;
            while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
                j += 1;
            }
            let size = j - i;
            let pos = idx[i..j].iter().filter(|x| labels[**x]).count();
            if pos > 0 {
                // P(at least one positive among `take` drawn from the tied group).
                let take = slots.min(size);
                let mut miss = 1.0;
                for t in 0..take {
                    miss *= (size - pos).saturating_sub(t) as f64 / (size - t) as f64;
                }
                hits += 1.0 - miss;
                break;
            }
            slots = slots.saturating_sub(size);
            i = j;
        }
    }
    (n > 0).then(|| hits / n as f64)
}

/// hit@1: [`hit_at_k`] with k = 1.
pub fn hit_at_1<'a>(decisions: impl IntoIterator<Item = (&'a [f64], &'a [bool])>) -> Option<f64> {
    hit_at_k(decisions, 1)
}

/// The offer-popularity baseline: a candidate's score is its offer's positive rate in the
/// training rows, smoothed towards the overall rate by [`Popularity::PRIOR_ROWS`]
/// pseudo-rows; an offer never seen in training scores the overall rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Popularity {
    rate: HashMap<String, f64>,
    overall: f64,
}

impl Popularity {
    /// Weight of the overall rate in an offer's rate, in rows.
    pub const PRIOR_ROWS: f64 = 20.0;

    /// Positive rates of the training rows.
    pub fn fit(train: &[Rows<'_>], label: Label) -> Self {
        let mut counts: HashMap<&str, (f64, f64)> = HashMap::new();
        let (mut pos, mut all) = (0.0_f64, 0.0_f64);
        for d in train {
            for c in d.iter() {
                let y = f64::from(u8::from(label.of(c)));
                let e = counts.entry(c.offer_id.as_str()).or_default();
                e.0 += y;
                e.1 += 1.0;
                pos += y;
                all += 1.0;
            }
        }
        let overall = pos / all.max(1.0);
        let rate = counts
            .into_iter()
            .map(|(k, (p, n))| {
                (
                    k.to_string(),
                    (p + Self::PRIOR_ROWS * overall) / (n + Self::PRIOR_ROWS),
                )
            })
            .collect();
        Popularity { rate, overall }
    }

    /// Score of an offer.
    pub fn score(&self, offer_id: &str) -> f64 {
        self.rate.get(offer_id).copied().unwrap_or(self.overall)
    }
}

/// Metrics of one scorer on held-out decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// AUC over all rows.
    pub auc: f64,
    /// Log loss over all rows; `None` for a scorer whose scores are not probabilities.
    pub log_loss: Option<f64>,
    /// hit@1 over decisions with a positive.
    pub hit_at_1: f64,
    /// hit@3 over decisions with a positive.
    pub hit_at_3: f64,
}

/// Scores per decision (same shape as the decisions' rows) and their metrics.
pub fn metrics(labels: &[Vec<bool>], scores: &[Vec<f64>], probabilities: bool) -> Metrics {
    let flat_s: Vec<f64> = scores.iter().flatten().copied().collect();
    let flat_l: Vec<bool> = labels.iter().flatten().copied().collect();
    let pairs = || {
        scores
            .iter()
            .zip(labels)
            .map(|(s, l)| (s.as_slice(), l.as_slice()))
    };
    Metrics {
        auc: auc(&flat_s, &flat_l).unwrap_or(f64::NAN),
        log_loss: probabilities.then(|| log_loss(&flat_s, &flat_l)),
        hit_at_1: hit_at_k(pairs(), 1).unwrap_or(f64::NAN),
        hit_at_3: hit_at_k(pairs(), 3).unwrap_or(f64::NAN),
    }
}

/// Scores of every row of every decision, through a serving ranker and the one feature path.
pub fn score(ranker: &dyn Ranker, decisions: &[Rows<'_>]) -> Vec<Vec<f64>> {
    decisions
        .iter()
        .map(|d| {
            let shared = d.record.shared();
            d.iter()
                .map(|c| ranker.score(&d.record.input(c, &shared)))
                .collect()
        })
        .collect()
}

/// The model's metrics on the rows of one category.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryMetrics {
    /// The category.
    pub category: String,
    /// Held-out rows of the category.
    pub rows: usize,
    /// Their positive rate.
    pub base_rate: f64,
    /// Their mean score (calibration: near `base_rate`).
    pub mean_score: f64,
    /// Decisions with a positive of this category.
    pub decisions_with_positive: usize,
    /// Of those, the share whose top-scored candidate is a positive.
    pub hit_at_1: f64,
    /// Of those, the share with a positive among the three top-scored candidates.
    pub hit_at_3: f64,
}

/// Per-category metrics, categories by name.
pub fn by_category(test: &[Rows<'_>], scores: &[Vec<f64>]) -> Vec<CategoryMetrics> {
    let mut acc: std::collections::BTreeMap<&str, (usize, f64, f64, Vec<(Vec<f64>, Vec<bool>)>)> =
        std::collections::BTreeMap::new();
    for (d, s) in test.iter().zip(scores) {
        let labels = d.labels();
        let cands: Vec<_> = d.iter().collect();
        for ((c, y), v) in cands.iter().zip(&labels).zip(s) {
            let e = acc.entry(c.category.as_str()).or_default();
            e.0 += 1;
            e.1 += f64::from(u8::from(*y));
            e.2 += v;
        }
        let mut seen: Vec<&str> = Vec::new();
        for (c, y) in cands.iter().zip(&labels) {
            if *y && !seen.contains(&c.category.as_str()) {
                seen.push(c.category.as_str());
                acc.entry(c.category.as_str())
                    .or_default()
                    .3
                    .push((s.clone(), labels.clone()));
            }
        }
    }
    acc.into_iter()
        .map(|(category, (rows, pos, sum, decisions))| {
            let pairs = || decisions.iter().map(|(s, l)| (s.as_slice(), l.as_slice()));
            CategoryMetrics {
                category: category.to_string(),
                rows,
                base_rate: pos / rows.max(1) as f64,
                mean_score: sum / rows.max(1) as f64,
                decisions_with_positive: decisions.len(),
                hit_at_1: hit_at_k(pairs(), 1).unwrap_or(f64::NAN),
                hit_at_3: hit_at_k(pairs(), 3).unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// One bin of a reliability table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    /// Lowest score in the bin.
    pub from: f64,
    /// Highest score in the bin.
    pub to: f64,
    /// Rows.
    pub rows: usize,
    /// Mean score.
    pub mean_score: f64,
    /// Observed positive rate.
    pub rate: f64,
}

/// Reliability table: rows sorted by score in `bins` bins of (nearly) equal counts, each
/// with its mean score and observed rate. A calibrated model has `mean_score ≈ rate`.
pub fn calibration(scores: &[f64], labels: &[bool], bins: usize) -> Vec<Bin> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let n = idx.len();
    (0..bins)
        .filter_map(|b| {
            let (lo, hi) = (b * n / bins, (b + 1) * n / bins);
            let part = &idx[lo..hi];
            (!part.is_empty()).then(|| {
                let rows = part.len();
                Bin {
                    from: scores[part[0]],
                    to: scores[part[rows - 1]],
                    rows,
                    mean_score: part.iter().map(|k| scores[*k]).sum::<f64>() / rows as f64,
                    rate: part.iter().filter(|k| labels[**k]).count() as f64 / rows as f64,
                }
            })
        })
        .collect()
}

/// Expected calibration error: the row-weighted mean |mean score − rate| of the bins.
pub fn calibration_error(bins: &[Bin]) -> f64 {
    let rows: usize = bins.iter().map(|b| b.rows).sum();
    bins.iter()
        .map(|b| b.rows as f64 * (b.mean_score - b.rate).abs())
        .sum::<f64>()
        / rows.max(1) as f64
}

/// Draws the reliability plot as a PNG (600×600): the diagonal in grey, the bins as blue
/// points joined by a line (x = mean score, y = observed rate), on a square scale from 0 to
/// the largest value; grid lines every 0.05. No text, so no system fonts are needed; the
/// reliability table printed next to it gives the numbers.
///
/// # Errors
/// When the file cannot be written.
pub fn plot_calibration(
    bins: &[Bin],
    path: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use plotters::prelude::*;
    let top = bins
        .iter()
        .flat_map(|b| [b.mean_score, b.rate])
        .fold(0.05_f64, f64::max)
        * 1.05;
    let root = BitMapBackend::new(path, (600, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .build_cartesian_2d(0.0..top, 0.0..top)
        .map_err(|e| e.to_string())?;
    let grid = RGBColor(225, 225, 225);
    let mut g = 0.05;
    while g < top {
        chart
            .draw_series(LineSeries::new([(g, 0.0), (g, top)], grid))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new([(0.0, g), (top, g)], grid))
            .map_err(|e| e.to_string())?;
        g += 0.05;
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (top, top)],
            RGBColor(120, 120, 120),
        ))
        .map_err(|e| e.to_string())?;
    let pts: Vec<(f64, f64)> = bins.iter().map(|b| (b.mean_score, b.rate)).collect();
    chart
        .draw_series(LineSeries::new(pts.clone(), BLUE.stroke_width(2)))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(pts.iter().map(|p| Circle::new(*p, 5, BLUE.filled())))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// The evaluation of a model on held-out decisions, with its baselines.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The label evaluated.
    pub label: Label,
    /// The model.
    pub model: Metrics,
    /// The offer-popularity baseline.
    pub popularity: Metrics,
    /// The nearest-store baseline (closer scores higher).
    pub nearest: Metrics,
    /// Expected hit@1 of a random pick (AUC 0.5 by construction).
    pub random_hit_at_1: f64,
    /// Positive rate of the held-out rows.
    pub base_rate: f64,
    /// Mean model score of the held-out rows.
    pub mean_score: f64,
    /// Reliability table of the model (10 equal-count bins).
    pub calibration: Vec<Bin>,
    /// Held-out decisions with rows.
    pub decisions: usize,
    /// Held-out rows.
    pub rows: usize,
    /// Held-out decisions with at least one positive (hit@k's denominator).
    pub decisions_with_positive: usize,
    /// The model per category.
    pub by_category: Vec<CategoryMetrics>,
}

impl Report {
    /// Evaluates `model` (scores in [0, 1], shaped like `test`'s rows) and both baselines
    /// on `test`.
    pub fn new(
        test: &[Rows<'_>],
        model: &[Vec<f64>],
        popularity: &Popularity,
        label: Label,
    ) -> Report {
        let labels: Vec<Vec<bool>> = test.iter().map(Rows::labels).collect();
        let pop: Vec<Vec<f64>> = test
            .iter()
            .map(|d| d.iter().map(|c| popularity.score(&c.offer_id)).collect())
            .collect();
        let nearest: Vec<Vec<f64>> = test
            .iter()
            .map(|d| d.iter().map(|c| -c.distance_m).collect())
            .collect();
        let flat_s: Vec<f64> = model.iter().flatten().copied().collect();
        let flat_l: Vec<bool> = labels.iter().flatten().copied().collect();
        let rows = flat_l.len();
        let positive = flat_l.iter().filter(|l| **l).count();
        let with_positive: Vec<&Vec<bool>> =
            labels.iter().filter(|l| l.iter().any(|x| *x)).collect();
        let random_hit_at_1 = with_positive
            .iter()
            .map(|l| l.iter().filter(|x| **x).count() as f64 / l.len() as f64)
            .sum::<f64>()
            / with_positive.len().max(1) as f64;
        Report {
            label,
            model: metrics(&labels, model, true),
            popularity: metrics(&labels, &pop, true),
            nearest: metrics(&labels, &nearest, false),
            random_hit_at_1,
            base_rate: positive as f64 / rows.max(1) as f64,
            mean_score: flat_s.iter().sum::<f64>() / rows.max(1) as f64,
            calibration: calibration(&flat_s, &flat_l, 10),
            decisions: test.len(),
            rows,
            decisions_with_positive: with_positive.len(),
            by_category: by_category(test, model),
        }
    }

    /// The whole report as JSON (`--json`); a metric that is not defined is `null`.
    pub fn to_json(&self) -> serde_json::Value {
        let m = |m: &Metrics| {
            serde_json::json!({"auc": finite(m.auc), "log_loss": m.log_loss.and_then(finite),
                "hit_at_1": finite(m.hit_at_1), "hit_at_3": finite(m.hit_at_3)})
        };
        serde_json::json!({
            "label": self.label.as_str(),
            "decisions": self.decisions,
            "rows": self.rows,
            "decisions_with_positive": self.decisions_with_positive,
            "base_rate": finite(self.base_rate),
            "mean_score": finite(self.mean_score),
            "model": m(&self.model),
            "popularity": m(&self.popularity),
            "nearest": m(&self.nearest),
            "random_hit_at_1": finite(self.random_hit_at_1),
            "calibration_error": finite(calibration_error(&self.calibration)),
            "calibration": self.calibration.iter().map(|b| serde_json::json!({
                "from": b.from, "to": b.to, "rows": b.rows,
                "mean_score": finite(b.mean_score), "observed": finite(b.rate)})).collect::<Vec<_>>(),
            "by_category": self.by_category.iter().map(|c| serde_json::json!({
                "category": c.category, "rows": c.rows, "base_rate": finite(c.base_rate),
                "mean_score": finite(c.mean_score),
                "decisions_with_positive": c.decisions_with_positive,
                "hit_at_1": finite(c.hit_at_1), "hit_at_3": finite(c.hit_at_3)})).collect::<Vec<_>>(),
        })
    }

    /// The metrics stored in the artifact (finite values only: JSON has no NaN).
    pub fn to_map(&self) -> std::collections::BTreeMap<String, f64> {
        let mut entries = vec![("random_hit_at_1".to_string(), self.random_hit_at_1)];
        for (prefix, m) in [
            ("", self.model),
            ("popularity_", self.popularity),
            ("nearest_", self.nearest),
        ] {
            for (k, v) in [
                ("auc", Some(m.auc)),
                ("log_loss", m.log_loss),
                ("hit_at_1", Some(m.hit_at_1)),
                ("hit_at_3", Some(m.hit_at_3)),
            ] {
                if let Some(v) = v {
                    entries.push((format!("{prefix}{k}"), v));
                }
            }
        }
        entries.extend(
            [
                ("base_rate", self.base_rate),
                ("mean_score", self.mean_score),
                ("calibration_error", calibration_error(&self.calibration)),
                ("test_decisions", self.decisions as f64),
                ("test_rows", self.rows as f64),
                (
                    "test_decisions_with_positive",
                    self.decisions_with_positive as f64,
                ),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        entries
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k, round6(v)))
            .collect()
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// Formats a metrics row.
pub fn row(name: &str, m: &Metrics) -> String {
    let ll = m
        .log_loss
        .map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
    format!(
        "{name:<12} {:>8.4} {:>9} {:>8.4} {:>8.4}",
        m.auc, ll, m.hit_at_1, m.hit_at_3
    )
}

/// The header of [`row`].
pub fn header() -> String {
    format!(
        "{:<12} {:>8} {:>9} {:>8} {:>8}",
        "scorer", "AUC", "log loss", "hit@1", "hit@3"
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "test (label {}): {} decisions, {} rows, base rate {:.4}, mean score {:.4}, {} decisions with a positive",
            self.label.as_str(),
            self.decisions,
            self.rows,
            self.base_rate,
            self.mean_score,
            self.decisions_with_positive
        )?;
        writeln!(f, "{}", header())?;
        for (name, m) in [
            ("model", self.model),
            ("popularity", self.popularity),
            ("nearest", self.nearest),
        ] {
            writeln!(f, "{}", row(name, &m))?;
        }
        writeln!(
            f,
            "{:<12} {:>8.4} {:>9} {:>8.4} {:>8}",
            "random", 0.5, "-", self.random_hit_at_1, "-"
        )?;
        writeln!(
            f,
            "calibration (10 equal-count bins; error {:.4}):",
            calibration_error(&self.calibration)
        )?;
        writeln!(
            f,
            "{:>17} {:>8} {:>10} {:>9}",
            "score range", "rows", "mean score", "observed"
        )?;
        for b in &self.calibration {
            writeln!(
                f,
                "{:>8.4}-{:<8.4} {:>8} {:>10.4} {:>9.4}",
                b.from, b.to, b.rows, b.mean_score, b.rate
            )?;
        }
        writeln!(
            f,
            "by category (hit@k over decisions with a positive of the category):"
        )?;
        writeln!(
            f,
            "{:<20} {:>8} {:>9} {:>10} {:>9} {:>8} {:>8}",
            "category", "rows", "observed", "mean score", "decisions", "hit@1", "hit@3"
        )?;
        for c in &self.by_category {
            writeln!(
                f,
                "{:<20} {:>8} {:>9.4} {:>10.4} {:>9} {:>8.4} {:>8.4}",
                c.category,
                c.rows,
                c.base_rate,
                c.mean_score,
                c.decisions_with_positive,
                c.hit_at_1,
                c.hit_at_3
            )?;
        }
        Ok(())
    }
}

/// Metrics of two models on the same records, side by side (with the nearest-store
/// baseline for reference), as printed by `nearcast-train compare`.
///
/// # Errors
/// When the records have no row for the label.
pub fn compare(
    a: &dyn Ranker,
    b: &dyn Ranker,
    records: &[crate::data::TrainingRecord],
    label: Label,
) -> Result<String, String> {
    let rows = crate::data::rows(records, label);
    if rows.is_empty() {
        return Err(format!(
            "no decision has a row for label {}",
            label.as_str()
        ));
    }
    let labels: Vec<Vec<bool>> = rows.iter().map(Rows::labels).collect();
    let flat_l: Vec<bool> = labels.iter().flatten().copied().collect();
    let evaluate = |r: &dyn Ranker| {
        let s = score(r, &rows);
        let flat: Vec<f64> = s.iter().flatten().copied().collect();
        let bins = calibration(&flat, &flat_l, 10);
        let mean = flat.iter().sum::<f64>() / flat.len().max(1) as f64;
        (metrics(&labels, &s, true), calibration_error(&bins), mean)
    };
    let (ma, ca, mean_a) = evaluate(a);
    let (mb, cb, mean_b) = evaluate(b);
    let nearest: Vec<Vec<f64>> = rows
        .iter()
        .map(|d| d.iter().map(|c| -c.distance_m).collect())
        .collect();
    let mn = metrics(&labels, &nearest, false);
    let base = flat_l.iter().filter(|l| **l).count() as f64 / flat_l.len() as f64;
    let mut out = format!(
        "label {}: {} decisions, {} rows, base rate {base:.4}\n",
        label.as_str(),
        rows.len(),
        flat_l.len()
    );
    let (va, vb) = (a.version(), b.version());
    out += &format!(
        "{:<18} {:>14} {:>14} {:>10} {:>10}\n",
        "metric", va, vb, "B - A", "nearest"
    );
    let line = |name: &str, x: f64, y: f64, n: Option<f64>| {
        let n = n.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        format!("{name:<18} {x:>14.4} {y:>14.4} {:>+10.4} {n:>10}\n", y - x)
    };
    out += &line("AUC", ma.auc, mb.auc, Some(mn.auc));
    out += &line(
        "log loss",
        ma.log_loss.unwrap_or(f64::NAN),
        mb.log_loss.unwrap_or(f64::NAN),
        None,
    );
    out += &line("hit@1", ma.hit_at_1, mb.hit_at_1, Some(mn.hit_at_1));
    out += &line("hit@3", ma.hit_at_3, mb.hit_at_3, Some(mn.hit_at_3));
    out += &line("calibration error", ca, cb, None);
    out += &line("mean score", mean_a, mean_b, None);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_of_known_examples() {
        // Perfect, reversed, and the classic 0.75 example.
        assert!(close(
            auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]).unwrap(),
            1.0
        ));
        assert!(close(
            auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]).unwrap(),
            0.0
        ));
        assert!(close(
            auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap(),
            0.75
        ));
        // All tied: one half; a tie between one positive and one negative counts one half.
        assert!(close(
            auc(&[0.5; 6], &[true, false, true, false, false, false]).unwrap(),
            0.5
        ));
        // pos {0.3, 0.5}, neg {0.3, 0.1}: pairs (0.3>0.1)=1, (0.3=0.3)=0.5, (0.5>0.3)=1, (0.5>0.1)=1 -> 3.5/4
        assert!(close(
            auc(&[0.3, 0.5, 0.3, 0.1], &[true, true, false, false]).unwrap(),
            0.875
        ));
        // Order of the input doesn't matter.
        assert!(close(
            auc(&[0.1, 0.3, 0.3, 0.5], &[false, false, true, true]).unwrap(),
            0.875
        ));
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(auc(&[], &[]), None);
    }

    #[test]
    fn auc_matches_pair_counting() {
        // A deterministic pseudo-random set with many ties.
        let mut s = Vec::new();
        let mut l = Vec::new();
        let mut x: u64 = 12345;
        for _ in 0..300 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s.push(((x >> 33) % 17) as f64 / 16.0);
            l.push((x >> 20).is_multiple_of(3));
        }
        let mut num = 0.0;
        let mut den = 0.0;
        for i in 0..s.len() {
            for j in 0..s.len() {
                if l[i] && !l[j] {
                    den += 1.0;
                    num += if s[i] > s[j] {
                        1.0
                    } else if s[i] == s[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        assert!((auc(&s, &l).unwrap() - num / den).abs() < 1e-12);
    }

    #[test]
    fn log_loss_of_known_examples() {
        assert!(close(
            log_loss(&[0.5, 0.5], &[true, false]),
            std::f64::consts::LN_2
        ));
        assert!(close(log_loss(&[0.9], &[true]), -(0.9f64).ln()));
        assert!(close(log_loss(&[0.9], &[false]), -(0.1f64).ln()));
        assert!(log_loss(&[1.0], &[false]).is_finite());
    }

    #[test]
    fn compare_prints_both_models_side_by_side_with_their_difference() {
        /// Scores by the affinity alone, with a sign.
        struct Aff(f64, &'static str);
        impl Ranker for Aff {
            fn score(&self, x: &nearcast_core::features::Input<'_>) -> f64 {
                nearcast_core::ranker::sigmoid(-3.0 + self.0 * x.affinity.unwrap_or(0.0))
            }
            fn version(&self) -> &str {
                self.1
            }
        }
        let ds = crate::generate::generate(
            &crate::generate::Config {
                decisions: 3_000,
                users: 200,
                ..crate::generate::Config::default()
            },
            |_| {},
        );
        // A: affinity only; B: the negated affinity (worse).
        let (a, b) = (Aff(2.0, "A-1"), Aff(-2.0, "B-1"));
        let out = compare(&a, &b, &ds, Label::Opened).unwrap();
        eprintln!("{out}");
        let rows = crate::data::rows(&ds, Label::Opened);
        let labels: Vec<Vec<bool>> = rows.iter().map(Rows::labels).collect();
        let ma = metrics(&labels, &score(&a, &rows), true);
        let mb = metrics(&labels, &score(&b, &rows), true);
        assert!(
            ma.auc > 0.55 && (ma.auc + mb.auc - 1.0).abs() < 1e-9,
            "mirror images"
        );
        let auc_line = out.lines().find(|l| l.starts_with("AUC")).unwrap();
        let fields: Vec<&str> = auc_line.split_whitespace().collect();
        assert_eq!(fields[1], format!("{:.4}", ma.auc));
        assert_eq!(fields[2], format!("{:.4}", mb.auc));
        assert_eq!(fields[3], format!("{:+.4}", mb.auc - ma.auc));
        assert!(out.contains("A-1") && out.contains("B-1"));
        assert!(out.lines().any(|l| l.starts_with("hit@3")));
        // Records without a row for the label: a clear error.
        let mut none = ds[..10].to_vec();
        none.iter_mut()
            .flat_map(|d| &mut d.candidates)
            .for_each(|c| c.sent = false);
        let e = compare(&a, &b, &none, Label::Opened).unwrap_err();
        assert!(e.contains("no decision has a row for label opened"), "{e}");
    }

    #[test]
    fn hit_at_3_counts_a_positive_among_the_three_best_and_splits_ties() {
        let d: Vec<(Vec<f64>, Vec<bool>)> = vec![
            (vec![0.9, 0.8, 0.7, 0.1], vec![false, false, true, false]), // hit
            (vec![0.9, 0.8, 0.7, 0.1], vec![false, false, false, true]), // miss
            // Two slots left for four tied, one positive: 1 - (3/4)(2/3) = 1/2.
            (
                vec![0.9, 0.5, 0.5, 0.5, 0.5],
                vec![false, true, false, false, false],
            ),
            (vec![0.1, 0.2], vec![true, false]), // fewer than three: hit
        ];
        let h = hit_at_k(d.iter().map(|(s, l)| (s.as_slice(), l.as_slice())), 3).unwrap();
        assert!(close(h, 2.5 / 4.0), "{h}");
    }

    #[test]
    fn calibration_bins_have_equal_counts_and_their_rates() {
        let scores: Vec<f64> = (0..100).map(|i| f64::from(i) / 100.0).collect();
        // Positive when the score is at least 0.5: the top half.
        let labels: Vec<bool> = scores.iter().map(|s| *s >= 0.5).collect();
        let bins = calibration(&scores, &labels, 4);
        assert_eq!(bins.len(), 4);
        assert!(bins.iter().all(|b| b.rows == 25));
        assert_eq!(
            bins.iter().map(|b| b.rate).collect::<Vec<_>>(),
            [0.0, 0.0, 1.0, 1.0]
        );
        assert!(close(bins[0].mean_score, 0.12));
        assert!(close(bins[3].from, 0.75) && close(bins[3].to, 0.99));
        // |0.12-0|, |0.37-0|, |0.62-1|, |0.87-1| averaged.
        assert!(close(
            calibration_error(&bins),
            (0.12 + 0.37 + 0.38 + 0.13) / 4.0
        ));
    }

    #[test]
    fn per_category_metrics_and_the_json_report_add_up_to_the_whole() {
        let ds = crate::generate::generate(
            &crate::generate::Config {
                decisions: 2_000,
                users: 200,
                ..crate::generate::Config::default()
            },
            |_| {},
        );
        let rows = crate::data::rows(&ds, Label::Purchased);
        // A scorer that ranks by distance only.
        let scores: Vec<Vec<f64>> = rows
            .iter()
            .map(|d| d.iter().map(|c| 1.0 / (1.0 + c.distance_m)).collect())
            .collect();
        let r = Report::new(
            &rows,
            &scores,
            &Popularity::fit(&rows, Label::Purchased),
            Label::Purchased,
        );
        let total: usize = r.by_category.iter().map(|c| c.rows).sum();
        assert_eq!(total, r.rows);
        assert!(r.by_category.len() > 5);
        // One category by hand.
        let cat = &r.by_category[0];
        let (mut n, mut pos, mut sum) = (0usize, 0usize, 0.0);
        let mut hit = 0usize;
        let mut with = 0usize;
        for (d, s) in rows.iter().zip(&scores) {
            let labels = d.labels();
            let cands: Vec<_> = d.iter().collect();
            for ((c, y), v) in cands.iter().zip(&labels).zip(s) {
                if c.category == cat.category {
                    n += 1;
                    pos += usize::from(*y);
                    sum += v;
                }
            }
            if cands
                .iter()
                .zip(&labels)
                .any(|(c, y)| *y && c.category == cat.category)
            {
                with += 1;
                let best = (0..s.len()).max_by(|a, b| s[*a].total_cmp(&s[*b])).unwrap();
                hit += usize::from(labels[best]);
            }
        }
        assert_eq!((cat.rows, cat.decisions_with_positive), (n, with));
        assert!((cat.base_rate - pos as f64 / n as f64).abs() < 1e-12);
        assert!((cat.mean_score - sum / n as f64).abs() < 1e-12);
        // Ties are split in hit@k; distances of one store tie, so allow for them.
        assert!(
            (cat.hit_at_1 - hit as f64 / with as f64).abs() < 0.2,
            "{} vs {hit}/{with}",
            cat.hit_at_1
        );
        // The JSON report carries the same numbers.
        let j = r.to_json();
        assert_eq!(j["label"], "purchased");
        assert_eq!(j["rows"], r.rows);
        assert_eq!(j["model"]["auc"], r.model.auc);
        assert_eq!(j["by_category"][0]["category"], cat.category.as_str());
        assert_eq!(j["by_category"][0]["rows"], cat.rows);
        assert_eq!(
            j["calibration"].as_array().unwrap().len(),
            r.calibration.len()
        );
        assert!(j["nearest"]["log_loss"].is_null(), "not a probability");
        // And the table prints every category.
        let text = r.to_string();
        assert!(r.by_category.iter().all(|c| text.contains(&c.category)));
    }

    #[test]
    fn the_reliability_plot_is_a_png() {
        let dir = std::env::temp_dir().join(format!("nearcast-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("calibration.png");
        let bins = calibration(&[0.1, 0.2, 0.3, 0.4], &[false, false, true, true], 2);
        plot_calibration(&bins, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hit_at_1_skips_decisions_without_opens_and_splits_ties() {
        let d: Vec<(Vec<f64>, Vec<bool>)> = vec![
            (vec![0.9, 0.1], vec![true, false]),              // hit
            (vec![0.9, 0.1], vec![false, true]),              // miss
            (vec![0.5, 0.5], vec![true, false]),              // tie: 1/2
            (vec![0.2, 0.3, 0.1], vec![false, false, false]), // skipped
            (vec![0.7], vec![true]),                          // hit
        ];
        let h = hit_at_1(d.iter().map(|(s, l)| (s.as_slice(), l.as_slice()))).unwrap();
        assert!(close(h, 2.5 / 4.0));
        assert_eq!(hit_at_1(std::iter::empty()), None);
    }
}
