//! Evaluation: rank-based AUC, log loss, hit@1 per decision, and the offer-popularity
//! baseline the model has to beat.

use crate::data::Decision;
use nearcast_core::features::{GROUPS, group_of};
use std::fmt;

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

/// hit@1 over decisions that had at least one opened candidate: the share whose top-scored
/// candidate was opened. When several candidates tie for the top score, the decision counts
/// the expected hit of a random pick among them (the opened share of the tied set), so a
/// baseline that can't tell two candidates apart is not credited with the lucky one.
/// `None` when no decision had an opened candidate.
pub fn hit_at_1<'a>(decisions: impl IntoIterator<Item = (&'a [f64], &'a [bool])>) -> Option<f64> {
    let (mut hits, mut n) = (0.0, 0usize);
    for (scores, labels) in decisions {
        assert_eq!(scores.len(), labels.len(), "one label per score");
        if !labels.iter().any(|l| *l) {
            continue;
        }
        let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let tied: Vec<usize> = (0..scores.len()).filter(|k| scores[*k] == top).collect();
        hits += tied.iter().filter(|k| labels[**k]).count() as f64 / tied.len() as f64;
        n += 1;
    }
    (n > 0).then(|| hits / n as f64)
}

/// The offer-popularity baseline: the score of a candidate is the training open rate of its
/// category's product group (smoothed towards the overall rate by one pseudo-candidate).
#[derive(Debug, Clone, PartialEq)]
pub struct Popularity {
    /// Open rate per group of `features::GROUPS`.
    pub rate: [f64; GROUPS.len()],
}

impl Popularity {
    /// Open rates of the training decisions.
    pub fn fit(train: &[Decision]) -> Self {
        let mut opened = [0.0; GROUPS.len()];
        let mut seen = [0.0; GROUPS.len()];
        for c in train.iter().flat_map(|d| &d.candidates) {
            let g = group_of(&c.category);
            seen[g] += 1.0;
            opened[g] += f64::from(u8::from(c.opened));
        }
        let overall = opened.iter().sum::<f64>() / seen.iter().sum::<f64>().max(1.0);
        let mut rate = [0.0; GROUPS.len()];
        for g in 0..GROUPS.len() {
            rate[g] = (opened[g] + overall) / (seen[g] + 1.0);
        }
        Popularity { rate }
    }

    /// Score of a category.
    pub fn score(&self, category: &str) -> f64 {
        self.rate[group_of(category)]
    }
}

/// Metrics of one scorer on held-out decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// AUC over all candidates.
    pub auc: f64,
    /// Log loss over all candidates.
    pub log_loss: f64,
    /// hit@1 over decisions with an opened candidate.
    pub hit_at_1: f64,
}

/// Scores per decision (same shape as the decisions' candidates) and their metrics.
pub fn metrics(decisions: &[Decision], scores: &[Vec<f64>]) -> Metrics {
    let labels: Vec<Vec<bool>> = decisions
        .iter()
        .map(|d| d.candidates.iter().map(|c| c.opened).collect())
        .collect();
    let flat_s: Vec<f64> = scores.iter().flatten().copied().collect();
    let flat_l: Vec<bool> = labels.iter().flatten().copied().collect();
    Metrics {
        auc: auc(&flat_s, &flat_l).unwrap_or(f64::NAN),
        log_loss: log_loss(&flat_s, &flat_l),
        hit_at_1: hit_at_1(
            scores
                .iter()
                .zip(&labels)
                .map(|(s, l)| (s.as_slice(), l.as_slice())),
        )
        .unwrap_or(f64::NAN),
    }
}

/// The evaluation of a model on held-out decisions, with its baselines.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The model.
    pub model: Metrics,
    /// The offer-popularity baseline.
    pub popularity: Metrics,
    /// Expected hit@1 of a random pick (AUC 0.5 by construction).
    pub random_hit_at_1: f64,
    /// Open rate of the held-out candidates.
    pub base_rate: f64,
    /// Mean model score of the held-out candidates (calibration: compare with `base_rate`).
    pub mean_score: f64,
    /// Held-out decisions.
    pub decisions: usize,
    /// Held-out candidates.
    pub candidates: usize,
    /// Held-out decisions with at least one opened candidate (hit@1's denominator).
    pub decisions_with_open: usize,
}

impl Report {
    /// Evaluates `model` (scores in [0, 1]) and the popularity baseline on `test`.
    pub fn new(test: &[Decision], model: &[Vec<f64>], popularity: &Popularity) -> Report {
        let pop: Vec<Vec<f64>> = test
            .iter()
            .map(|d| {
                d.candidates
                    .iter()
                    .map(|c| popularity.score(&c.category))
                    .collect()
            })
            .collect();
        let candidates: usize = test.iter().map(|d| d.candidates.len()).sum();
        let opened = test
            .iter()
            .flat_map(|d| &d.candidates)
            .filter(|c| c.opened)
            .count();
        let with_open: Vec<&Decision> = test
            .iter()
            .filter(|d| d.candidates.iter().any(|c| c.opened))
            .collect();
        let random_hit_at_1 = with_open
            .iter()
            .map(|d| {
                d.candidates.iter().filter(|c| c.opened).count() as f64 / d.candidates.len() as f64
            })
            .sum::<f64>()
            / with_open.len().max(1) as f64;
        Report {
            model: metrics(test, model),
            popularity: metrics(test, &pop),
            random_hit_at_1,
            base_rate: opened as f64 / candidates.max(1) as f64,
            mean_score: model.iter().flatten().sum::<f64>() / candidates.max(1) as f64,
            decisions: test.len(),
            candidates,
            decisions_with_open: with_open.len(),
        }
    }

    /// The metrics stored in the artifact (finite values only: JSON has no NaN).
    pub fn to_map(&self) -> std::collections::BTreeMap<String, f64> {
        let entries = [
            ("auc", self.model.auc),
            ("log_loss", self.model.log_loss),
            ("hit_at_1", self.model.hit_at_1),
            ("popularity_auc", self.popularity.auc),
            ("popularity_log_loss", self.popularity.log_loss),
            ("popularity_hit_at_1", self.popularity.hit_at_1),
            ("random_hit_at_1", self.random_hit_at_1),
            ("base_rate", self.base_rate),
            ("mean_score", self.mean_score),
            ("test_decisions", self.decisions as f64),
            ("test_candidates", self.candidates as f64),
            ("test_decisions_with_open", self.decisions_with_open as f64),
        ];
        entries
            .into_iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.to_string(), round6(v)))
            .collect()
    }
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "held-out: {} decisions, {} candidates, base rate {:.4}, mean score {:.4}, {} decisions with an open",
            self.decisions,
            self.candidates,
            self.base_rate,
            self.mean_score,
            self.decisions_with_open
        )?;
        writeln!(
            f,
            "{:<12} {:>8} {:>9} {:>8}",
            "scorer", "AUC", "log loss", "hit@1"
        )?;
        for (name, m) in [("model", self.model), ("popularity", self.popularity)] {
            writeln!(
                f,
                "{name:<12} {:>8.4} {:>9.4} {:>8.4}",
                m.auc, m.log_loss, m.hit_at_1
            )?;
        }
        writeln!(
            f,
            "{:<12} {:>8.4} {:>9} {:>8.4}",
            "random", 0.5, "-", self.random_hit_at_1
        )
    }
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
