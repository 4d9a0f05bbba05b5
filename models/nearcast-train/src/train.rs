//! Training: the time-based split, the design matrix built only through
//! `features::encode`, the linfa logistic fit with its label mapping, the held-out
//! evaluation and the `nearcast-ranker/1` artifact.

use crate::data::Decision;
use crate::eval::{Popularity, Report};
use indicatif::ProgressBar;
use linfa::Dataset;
use linfa::traits::Fit;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use nearcast_core::features::{N_FEATURES, schema, schema_hash};
use nearcast_core::ranker::{Artifact, FORMAT, LogisticRanker, Ranker};
use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;

/// Boxed error of the trainer.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Hyper-parameters and split.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// L2 penalty (linfa's `alpha`, on the *summed* log loss, so it is weak for large data;
    /// it mostly pins the directions the one-hot groups and dayparts leave free, which makes
    /// L-BFGS converge in few iterations).
    pub alpha: f64,
    /// L-BFGS iterations at most.
    pub max_iterations: u64,
    /// Stop when the gradient norm of the summed loss falls below this times the number of
    /// rows (a tolerance on the *mean* loss, so it means the same for any data size).
    pub gradient_tolerance_per_row: f64,
    /// Earliest share of decisions (by time) to train on; the rest is held out.
    pub train_fraction: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            alpha: 5.0,
            max_iterations: 200,
            gradient_tolerance_per_row: 1e-6,
            train_fraction: 0.8,
        }
    }
}

/// Sorts decisions by time (stable) and returns the index where the held-out part starts:
/// the earliest `fraction` of decisions train, the latest are held out.
pub fn split_by_time(decisions: &mut [Decision], fraction: f64) -> usize {
    assert!((0.0..=1.0).contains(&fraction), "fraction in [0, 1]");
    decisions.sort_by_key(|d| d.at);
    ((decisions.len() as f64) * fraction).round() as usize
}

/// One row per candidate, features from `features::encode` only; label = opened.
pub fn design(decisions: &[Decision], progress: &ProgressBar) -> (Array2<f64>, Array1<bool>) {
    let rows: usize = decisions.iter().map(|d| d.candidates.len()).sum();
    let mut x = Array2::<f64>::zeros((rows, N_FEATURES));
    let mut y = Array1::<bool>::from_elem(rows, false);
    let mut buf = [0.0; N_FEATURES];
    let mut r = 0;
    for (i, d) in decisions.iter().enumerate() {
        for c in &d.candidates {
            d.encode(c, &mut buf);
            x.row_mut(r).iter_mut().zip(&buf).for_each(|(o, v)| *o = *v);
            y[r] = c.opened;
            r += 1;
        }
        if i % 4096 == 4095 {
            progress.inc(4096);
        }
    }
    progress.inc((decisions.len() % 4096) as u64);
    (x, y)
}

/// Fitted coefficients, oriented so that sigmoid(intercept + w·x) = P(opened).
#[derive(Debug, Clone, PartialEq)]
pub struct Coefficients {
    /// Intercept.
    pub intercept: f64,
    /// One weight per feature, in schema order.
    pub weights: Vec<f64>,
}

/// Fits the logistic regression on the design matrix.
///
/// linfa labels the *more frequent* class as its positive class (the probability it
/// predicts), which for a few-percent open rate is `opened = false`; the coefficients are
/// negated in that case so that they give P(opened = true), as serving expects.
///
/// # Errors
/// When linfa fails (e.g. a single class) or the fitted model ranks opened candidates lower
/// than the rest on average (a wrong sign).
pub fn fit(x: Array2<f64>, y: Array1<bool>, cfg: &Config) -> Result<Coefficients, BoxError> {
    let rows = x.nrows() as f64;
    let dataset = Dataset::new(x, y);
    let model = LogisticRegression::<f64>::default()
        .alpha(cfg.alpha)
        .max_iterations(cfg.max_iterations)
        .gradient_tolerance(cfg.gradient_tolerance_per_row * rows)
        .fit(&dataset)?;
    let sign = if model.labels().pos.class { 1.0 } else { -1.0 };
    let c = Coefficients {
        intercept: sign * model.intercept(),
        weights: model.params().iter().map(|w| sign * w).collect(),
    };
    check_sign(&c, dataset.records(), dataset.targets())?;
    Ok(c)
}

/// Refuses coefficients under which opened candidates score lower on average than the rest.
fn check_sign(c: &Coefficients, x: &Array2<f64>, y: &Array1<bool>) -> Result<(), BoxError> {
    let ranker = ranker(c, "check")?;
    let (mut pos, mut neg) = ((0.0, 0usize), (0.0, 0usize));
    let mut buf = [0.0; N_FEATURES];
    for (row, label) in x.rows().into_iter().zip(y) {
        row.iter().zip(buf.iter_mut()).for_each(|(v, o)| *o = *v);
        let s = ranker.score(&buf);
        let acc = if *label { &mut pos } else { &mut neg };
        acc.0 += s;
        acc.1 += 1;
    }
    let (mp, mn) = (pos.0 / pos.1.max(1) as f64, neg.0 / neg.1.max(1) as f64);
    if mp <= mn {
        return Err(format!("fitted model scores opened candidates lower ({mp:.4}) than the rest ({mn:.4}): label mapping is wrong").into());
    }
    Ok(())
}

fn ranker(c: &Coefficients, version: &str) -> Result<LogisticRanker, BoxError> {
    let w: [f64; N_FEATURES] = c
        .weights
        .as_slice()
        .try_into()
        .map_err(|_| format!("{} weights for {N_FEATURES} features", c.weights.len()))?;
    Ok(LogisticRanker::new(version, c.intercept, w))
}

/// Scores of every candidate of every decision, through the serving ranker.
pub fn score(ranker: &dyn Ranker, decisions: &[Decision]) -> Vec<Vec<f64>> {
    let mut buf = [0.0; N_FEATURES];
    decisions
        .iter()
        .map(|d| {
            d.candidates
                .iter()
                .map(|c| {
                    d.encode(c, &mut buf);
                    ranker.score(&buf)
                })
                .collect()
        })
        .collect()
}

/// The result of a training run.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The artifact (already checked by `LogisticRanker::from_artifact`).
    pub artifact: Artifact,
    /// Held-out evaluation.
    pub report: Report,
    /// Decisions trained on.
    pub train_decisions: usize,
    /// Candidate rows trained on.
    pub train_rows: usize,
}

/// Progress bars of a run (hidden ones in tests).
pub struct Bars {
    /// Encoding the training decisions.
    pub encode: ProgressBar,
    /// The fit (a spinner).
    pub fit: ProgressBar,
}

impl Bars {
    /// Bars that draw nothing.
    pub fn hidden() -> Self {
        Bars {
            encode: ProgressBar::hidden(),
            fit: ProgressBar::hidden(),
        }
    }
}

/// Splits by time, fits on the earliest part, evaluates on the latest, builds the artifact.
///
/// # Errors
/// When there is too little data, the fit fails or the artifact does not load.
pub fn run(
    mut decisions: Vec<Decision>,
    training_data: &str,
    version: &str,
    cfg: &Config,
    bars: &Bars,
) -> Result<Trained, BoxError> {
    let cut = split_by_time(&mut decisions, cfg.train_fraction);
    let (train, test) = decisions.split_at(cut);
    if train.is_empty() || test.is_empty() {
        return Err(format!(
            "{} decisions are too few to split {}/{}",
            decisions.len(),
            cfg.train_fraction,
            1.0 - cfg.train_fraction
        )
        .into());
    }
    bars.encode.set_length(train.len() as u64);
    let (x, y) = design(train, &bars.encode);
    bars.encode.finish();
    let train_rows = x.nrows();
    bars.fit
        .enable_steady_tick(std::time::Duration::from_millis(120));
    bars.fit.set_message(format!(
        "fitting logistic regression on {train_rows} candidates x {N_FEATURES} features"
    ));
    let started = std::time::Instant::now();
    let coefficients = fit(x, y, cfg)?;
    bars.fit.finish_with_message(format!(
        "fitted in {:.1} s",
        started.elapsed().as_secs_f64()
    ));

    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut artifact = Artifact {
        format: FORMAT.to_string(),
        version: version.to_string(),
        kind: "logistic".to_string(),
        features: schema(),
        schema_hash: schema_hash(),
        intercept: coefficients.intercept,
        weights: coefficients.weights,
        training_data: training_data.to_string(),
        metrics: BTreeMap::new(),
        created_at,
    };
    // Evaluate with exactly what serving loads.
    let served = LogisticRanker::from_artifact(&artifact)?;
    let report = Report::new(test, &score(&served, test), &Popularity::fit(train));
    artifact.metrics = report.to_map();
    artifact
        .metrics
        .insert("train_decisions".into(), train.len() as f64);
    artifact
        .metrics
        .insert("train_candidates".into(), train_rows as f64);
    Ok(Trained {
        artifact,
        report,
        train_decisions: train.len(),
        train_rows,
    })
}

/// Writes the artifact as pretty JSON, atomically (a temporary file renamed over `path`),
/// after checking that it loads.
///
/// # Errors
/// When it does not load or cannot be written.
pub fn write_artifact(path: &Path, artifact: &Artifact) -> Result<(), BoxError> {
    let mut text = serde_json::to_string_pretty(artifact)?;
    text.push('\n');
    LogisticRanker::from_json(&text)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate;

    fn trained(decisions: usize, seed: u64) -> Trained {
        let ds = generate::generate(
            &generate::Config {
                seed,
                decisions,
                ..generate::Config::default()
            },
            |_| {},
        );
        run(ds, "test", "test-1", &Config::default(), &Bars::hidden()).unwrap()
    }

    #[test]
    fn the_split_is_by_time_and_the_held_out_part_is_the_latest() {
        let mut ds = generate::generate(
            &generate::Config {
                decisions: 1_000,
                users: 100,
                ..generate::Config::default()
            },
            |_| {},
        );
        ds.reverse();
        let cut = split_by_time(&mut ds, 0.8);
        assert_eq!(cut, 800);
        let last_train = ds[..cut].iter().map(|d| d.at).max().unwrap();
        assert!(ds[cut..].iter().all(|d| d.at >= last_train));
    }

    #[test]
    fn a_small_generated_set_trains_a_model_that_beats_popularity() {
        let t = trained(20_000, 11);
        let r = &t.report;
        eprintln!("{r}");
        assert!(
            r.model.auc >= r.popularity.auc + 0.03,
            "AUC {} vs popularity {}",
            r.model.auc,
            r.popularity.auc
        );
        assert!(
            r.model.hit_at_1 > r.popularity.hit_at_1,
            "hit@1 {} vs popularity {}",
            r.model.hit_at_1,
            r.popularity.hit_at_1
        );
        assert!(r.popularity.hit_at_1 > r.random_hit_at_1);
        // Roughly calibrated: the mean score is near the held-out open rate.
        assert!(
            (r.mean_score / r.base_rate - 1.0).abs() < 0.3,
            "mean score {} vs base rate {}",
            r.mean_score,
            r.base_rate
        );

        // The artifact loads in serving and scores opened candidates higher on average.
        let text = serde_json::to_string(&t.artifact).unwrap();
        let served = LogisticRanker::from_json(&text).unwrap();
        let ds = generate::generate(
            &generate::Config {
                seed: 12,
                decisions: 5_000,
                ..generate::Config::default()
            },
            |_| {},
        );
        let scores = score(&served, &ds);
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for (d, s) in ds.iter().zip(&scores) {
            for (c, s) in d.candidates.iter().zip(s) {
                if c.opened { pos.push(*s) } else { neg.push(*s) }
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(
            mean(&pos) > 1.5 * mean(&neg),
            "{} vs {}",
            mean(&pos),
            mean(&neg)
        );

        // The weights have the signs of the true model where it is clear.
        let w = |name: &str| {
            t.artifact.weights[t.artifact.features.iter().position(|f| f == name).unwrap()]
        };
        assert!(w("affinity") > 1.0);
        assert!(w("rainwear_x_wet") > 0.5);
        assert!(w("coffee_x_morning") > 0.3);
        assert!(w("distance_km") < 0.5);
    }

    #[test]
    fn the_label_mapping_is_fixed_whichever_class_linfa_calls_positive() {
        // Mostly-opened data: linfa's positive class is `true` here, unlike in real data.
        let mut ds = generate::generate(
            &generate::Config {
                decisions: 3_000,
                users: 200,
                ..generate::Config::default()
            },
            |_| {},
        );
        for d in &mut ds {
            for c in &mut d.candidates {
                c.opened = !c.opened;
            }
        }
        let (x, y) = design(&ds, &ProgressBar::hidden());
        let c = fit(x, y, &Config::default()).unwrap();
        let affinity = c.weights[0];
        assert!(
            affinity < 0.0,
            "inverted labels must give a negative affinity weight, got {affinity}"
        );
    }

    #[test]
    fn the_shipped_artifact_loads_with_the_serving_schema() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ranker.json");
        let text = std::fs::read_to_string(path).unwrap();
        let ranker = LogisticRanker::from_json(&text).unwrap();
        let a: Artifact = serde_json::from_str(&text).unwrap();
        assert_eq!(a.schema_hash, schema_hash());
        assert_eq!(a.features, schema());
        assert_eq!(a.kind, "logistic");
        assert!(
            a.training_data.starts_with("fnv1a64:"),
            "{}",
            a.training_data
        );
        for m in [
            "auc",
            "log_loss",
            "hit_at_1",
            "base_rate",
            "popularity_auc",
            "popularity_hit_at_1",
        ] {
            assert!(a.metrics.contains_key(m), "{m}");
        }
        assert!(a.metrics["auc"] > a.metrics["popularity_auc"]);
        assert!(text.len() < 16 * 1024, "commit-sized: {} bytes", text.len());
        // Scores are probabilities and favour a keen coffee drinker on a rainy morning.
        let ctx = nearcast_core::context::Context::new(
            "2026-11-20T06:30:00Z".parse().unwrap(),
            chrono_tz::Europe::Helsinki,
            Some(nearcast_core::weather::Weather {
                condition: nearcast_core::weather::Condition::Rain,
                temp_c: 2.0,
            }),
        );
        let mut x = [0.0; N_FEATURES];
        nearcast_core::features::encode(
            &nearcast_core::features::Input::new("coffee", &ctx, 40.0, Some(0.9), true),
            &mut x,
        );
        let keen = ranker.score(&x);
        nearcast_core::features::encode(
            &nearcast_core::features::Input::new("coffee", &ctx, 40.0, Some(0.05), false),
            &mut x,
        );
        let cool = ranker.score(&x);
        assert!(keen > cool && keen < 1.0 && cool > 0.0, "{keen} {cool}");
    }
}
