//! Training: the time-based split into train / validation / test, the design matrix built
//! only through `features::encode`, the linfa fits (logistic regression with its label
//! mapping, fitted by L-BFGS or, on large data, by FTRL-Proximal, on standardized features;
//! a decision tree whose leaves get the training open rate), the choice of kind by
//! validation AUC, the test evaluation and the `nearcast-ranker/1` artifact.

use crate::data::{Label, Rows, TrainingRecord, encode};
use crate::eval::{self, Metrics, Popularity, Report};
use indicatif::ProgressBar;
use linfa::Dataset;
use linfa::traits::Fit;
use linfa::traits::FitWith;
use linfa_ftrl::Ftrl;
use linfa_logistic::LogisticRegression;
use linfa_trees::{DecisionTree, TreeNode};
use ndarray::{Array1, Array2, Axis, ShapeBuilder, Slice};
use nearcast_core::features::{N_FEATURES, schema, schema_hash};
use nearcast_core::ranker::{self, Artifact, FORMAT, LogisticRanker, Node, Ranker, TreeRanker};
use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::sync::Arc;

/// Boxed error of the trainer.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Which model kinds to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Kinds {
    /// Both; the one with the better validation AUC is kept.
    #[default]
    Auto,
    /// Logistic regression only.
    Logistic,
    /// Decision tree only.
    Tree,
}

/// How the logistic regression is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Solver {
    /// L-BFGS below [`FTRL_FROM_ROWS`] training rows, FTRL from there on.
    #[default]
    Auto,
    /// linfa-logistic: L-BFGS to the penalised optimum (the gradient tolerance).
    Lbfgs,
    /// linfa-ftrl: FTRL-Proximal in mini-batches, a fixed number of passes.
    Ftrl,
}

/// From this many training rows on, [`Solver::Auto`] fits by FTRL: on 1 million rows it is
/// about 7 times faster than L-BFGS with the same test AUC and log loss to 0.0001
/// (docs/performance.md). Below it, L-BFGS takes a few seconds at most, reaches the
/// penalised optimum exactly, and FTRL's fixed budget of row updates would be many passes
/// over few rows.
pub const FTRL_FROM_ROWS: usize = 250_000;

/// FTRL's default budget of row updates: 8 passes over 800,000 rows. At the default learning
/// rate, 8 passes over 1 million rows and 32 over 200,000 both end within 0.0001 of the
/// L-BFGS optimum's test log loss (docs/performance.md).
pub const FTRL_ROW_UPDATES: usize = 6_400_000;

/// FTRL passes for `rows` training rows: enough for [`FTRL_ROW_UPDATES`], at least 8.
pub fn ftrl_epochs(rows: usize) -> usize {
    FTRL_ROW_UPDATES.div_ceil(rows.max(1)).max(8)
}

impl Solver {
    /// The solver used for `rows` training rows.
    pub fn pick(self, rows: usize) -> Solver {
        match self {
            Solver::Auto if rows >= FTRL_FROM_ROWS => Solver::Ftrl,
            Solver::Auto => Solver::Lbfgs,
            other => other,
        }
    }

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Solver::Auto => "auto",
            Solver::Lbfgs => "lbfgs",
            Solver::Ftrl => "ftrl",
        }
    }
}

/// Hyper-parameters and split.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The outcome to predict.
    pub label: Label,
    /// Model kinds to fit.
    pub kinds: Kinds,
    /// L2 penalty (linfa's `alpha`, on the *summed* log loss, so it is weak for large data;
    /// it mostly pins the directions the one-hot groups and dayparts leave free, which makes
    /// L-BFGS converge in few iterations).
    pub alpha: f64,
    /// L-BFGS iterations at most.
    pub max_iterations: u64,
    /// Stop when the gradient norm of the summed loss falls below this times the number of
    /// rows (a tolerance on the *mean* loss, so it means the same for any data size).
    pub gradient_tolerance_per_row: f64,
    /// How the logistic regression is fitted.
    pub solver: Solver,
    /// FTRL: passes over the training rows (`None`: [`ftrl_epochs`]).
    pub ftrl_epochs: Option<usize>,
    /// FTRL: rows per update.
    pub ftrl_batch: usize,
    /// FTRL: learning rate (linfa-ftrl's `alpha`).
    pub ftrl_learning_rate: f64,
    /// Tree depth at most.
    pub tree_depth: usize,
    /// Training rows per tree leaf at least.
    pub tree_min_leaf: usize,
    /// Earliest share of decisions (by time) to train on.
    pub train_fraction: f64,
    /// The next share, to choose the model kind on; the latest rest is the test set.
    pub valid_fraction: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            label: Label::Opened,
            kinds: Kinds::Auto,
            alpha: 5.0,
            max_iterations: 200,
            gradient_tolerance_per_row: 1e-6,
            solver: Solver::Auto,
            ftrl_epochs: None,
            ftrl_batch: 64,
            ftrl_learning_rate: 0.02,
            tree_depth: 7,
            tree_min_leaf: 200,
            train_fraction: 0.7,
            valid_fraction: 0.15,
        }
    }
}

/// Sorts records by time (stable) and returns the two cut indices: `[..a]` trains,
/// `[a..b]` validates, `[b..]` tests, so every evaluation sees later data than training.
pub fn split_by_time(records: &mut [TrainingRecord], train: f64, valid: f64) -> (usize, usize) {
    assert!(
        train >= 0.0 && valid >= 0.0 && train + valid <= 1.0,
        "fractions in [0, 1] summing to at most 1"
    );
    records.sort_by_key(|d| d.at);
    let n = records.len() as f64;
    let a = (n * train).round() as usize;
    let b = (n * (train + valid)).round() as usize;
    (a, b.max(a))
}

/// One row per observed candidate, features from `features::encode` only.
pub fn design(
    decisions: &[Rows<'_>],
    label: Label,
    progress: &ProgressBar,
) -> (Array2<f64>, Array1<bool>) {
    let rows: usize = decisions.iter().map(|d| d.iter().count()).sum();
    let mut x = Array2::<f64>::zeros((rows, N_FEATURES));
    let mut y = Array1::<bool>::from_elem(rows, false);
    let mut buf = [0.0; N_FEATURES];
    let mut r = 0;
    for (i, d) in decisions.iter().enumerate() {
        for c in d.iter() {
            encode(d.record, c, &mut buf);
            x.row_mut(r).iter_mut().zip(&buf).for_each(|(o, v)| *o = *v);
            y[r] = label.of(c);
            r += 1;
        }
        if i % 4096 == 4095 {
            progress.inc(4096);
        }
    }
    progress.inc((decisions.len() % 4096) as u64);
    (x, y)
}

/// Fitted coefficients, oriented so that sigmoid(intercept + w·x) = P(label).
#[derive(Debug, Clone, PartialEq)]
pub struct Coefficients {
    /// Intercept.
    pub intercept: f64,
    /// One weight per feature, in schema order.
    pub weights: Vec<f64>,
}

/// Column means and standard deviations of a design matrix.
///
/// The logistic regression is fitted on standardized columns, `(x - mean) / scale`: the
/// features are all in [0, 1] but their spreads differ by two orders of magnitude (a
/// category flag set on 1 % of rows against the hour), and on equal spreads L-BFGS
/// needs about half the iterations and FTRL's per-coordinate steps suit every column.
/// The fitted weights are mapped back to the raw features ([`Scaling::unscale`]), so the
/// artifact and serving never see the scaling. A constant column (a feature the training
/// rows never varied, e.g. a category without offers yet) becomes all zeros, keeps scale 1
/// and gets weight 0: the data say nothing about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    /// Column means.
    pub mean: Vec<f64>,
    /// Column standard deviations (1 where a column is constant).
    pub scale: Vec<f64>,
    /// Whether each column varies in the training rows.
    pub varies: Vec<bool>,
}

impl Scaling {
    /// Measures the columns of `x` (two passes over the rows).
    pub fn of(x: &Array2<f64>) -> Scaling {
        let n = x.nrows().max(1) as f64;
        let mut mean = vec![0.0; x.ncols()];
        for row in x.rows() {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; x.ncols()];
        for row in x.rows() {
            var.iter_mut()
                .zip(row)
                .zip(&mean)
                .for_each(|((s, v), m)| *s += (v - m) * (v - m));
        }
        let sd: Vec<f64> = var.into_iter().map(|s| (s / n).sqrt()).collect();
        let varies: Vec<bool> = sd.iter().map(|sd| *sd > 1e-9).collect();
        let scale = sd
            .iter()
            .zip(&varies)
            .map(|(sd, v)| if *v { *sd } else { 1.0 })
            .collect();
        Scaling {
            mean,
            scale,
            varies,
        }
    }

    /// Standardizes `x` in place.
    pub fn apply(&self, x: &mut Array2<f64>) {
        for mut row in x.rows_mut() {
            row.iter_mut()
                .zip(self.mean.iter().zip(&self.scale))
                .for_each(|(v, (m, s))| *v = (*v - m) / s);
        }
    }

    /// Coefficients on standardized columns → the same function of the raw features:
    /// `b + Σ w_j (x_j - m_j) / s_j = (b - Σ w_j m_j / s_j) + Σ (w_j / s_j) x_j`, with
    /// weight 0 for a constant column (on the training rows it was all zeros, so the
    /// fitted function there is unchanged).
    pub fn unscale(&self, intercept: f64, weights: &[f64]) -> Coefficients {
        let weights: Vec<f64> = weights
            .iter()
            .zip(self.scale.iter().zip(&self.varies))
            .map(|(w, (s, v))| if *v { w / s } else { 0.0 })
            .collect();
        let shift: f64 = weights.iter().zip(&self.mean).map(|(w, m)| w * m).sum();
        Coefficients {
            intercept: intercept - shift,
            weights,
        }
    }
}

/// Fits the logistic regression on the design matrix, on standardized columns
/// ([`Scaling`]), with the configured [`Solver`]; returns the coefficients of the raw
/// features and the solver used.
///
/// L-BFGS (linfa-logistic) minimises the summed log loss plus `alpha / 2 |w|²` until the
/// gradient tolerance. linfa labels the *more frequent* class as its positive class (the
/// probability it predicts), which for a few-percent open rate is `opened = false`; the
/// coefficients are negated in that case so that they give P(label = true), as serving
/// expects. The matrix is handed to it in column-major order: its gradient is one dot
/// product per column, which then reads contiguous memory.
///
/// FTRL (linfa-ftrl) makes [`ftrl_epochs`] passes in batches of `ftrl_batch` rows in time
/// order, with a constant column for the intercept and no L1 or L2 penalty; the intercept
/// is then set to its optimum for the fitted weights ([`fit_intercept`]).
///
/// # Errors
/// When linfa fails (e.g. a single class) or the fitted model ranks positive rows lower
/// than the rest on average (a wrong sign).
pub fn fit(
    mut x: Array2<f64>,
    y: Array1<bool>,
    cfg: &Config,
) -> Result<(Coefficients, Solver), BoxError> {
    let positives = y.iter().filter(|v| **v).count();
    if positives == 0 || positives == y.len() {
        return Err("the training rows have a single class".into());
    }
    let scaling = Scaling::of(&x);
    scaling.apply(&mut x);
    let solver = cfg.solver.pick(x.nrows());
    let (intercept, weights, x) = match solver {
        Solver::Ftrl => fit_ftrl(x, &y, cfg)?,
        _ => fit_lbfgs(x, &y, cfg)?,
    };
    check_order(
        x.rows()
            .into_iter()
            .map(|row| intercept + row.iter().zip(&weights).map(|(v, w)| v * w).sum::<f64>()),
        &y,
    )?;
    Ok((scaling.unscale(intercept, &weights), solver))
}

/// L-BFGS on the standardized matrix; returns (intercept, weights) for P(label = true)
/// and the matrix (column-major) for the sign check.
fn fit_lbfgs(
    x: Array2<f64>,
    y: &Array1<bool>,
    cfg: &Config,
) -> Result<(f64, Vec<f64>, Array2<f64>), BoxError> {
    let rows = x.nrows() as f64;
    let mut columns = Array2::<f64>::zeros(x.raw_dim().f());
    columns.assign(&x);
    drop(x);
    let dataset = Dataset::new(columns, y.clone());
    let model = LogisticRegression::<f64>::default()
        .alpha(cfg.alpha)
        .max_iterations(cfg.max_iterations)
        .gradient_tolerance(cfg.gradient_tolerance_per_row * rows)
        .fit(&dataset)?;
    let sign = if model.labels().pos.class { 1.0 } else { -1.0 };
    let weights = model.params().iter().map(|w| sign * w).collect();
    Ok((sign * model.intercept(), weights, dataset.records))
}

/// FTRL on the standardized matrix plus a constant column; returns (intercept, weights)
/// and the matrix without the constant column.
fn fit_ftrl(
    x: Array2<f64>,
    y: &Array1<bool>,
    cfg: &Config,
) -> Result<(f64, Vec<f64>, Array2<f64>), BoxError> {
    let d = x.ncols();
    let mut with_one = Array2::<f64>::ones((x.nrows(), d + 1));
    with_one
        .slice_axis_mut(Axis(1), Slice::from(0..d))
        .assign(&x);
    drop(x);
    let params = {
        use linfa::ParamGuard;
        Ftrl::params()
            .alpha(cfg.ftrl_learning_rate)
            .beta(1.0)
            .l1_ratio(0.0)
            .l2_ratio(0.0)
            .check()?
    };
    let batch = cfg.ftrl_batch.max(1);
    let mut model: Option<Ftrl<f64>> = None;
    let epochs = cfg
        .ftrl_epochs
        .unwrap_or_else(|| ftrl_epochs(with_one.nrows()));
    for _ in 0..epochs.max(1) {
        let mut start = 0;
        while start < with_one.nrows() {
            let end = (start + batch).min(with_one.nrows());
            let rows = Slice::from(start..end);
            let part = linfa::DatasetBase::new(
                with_one.slice_axis(Axis(0), rows),
                y.slice_axis(Axis(0), rows),
            );
            model = Some(params.fit_with(model.take(), &part)?);
            start = end;
        }
    }
    let w = model.ok_or("no training rows")?.get_weights();
    let weights: Vec<f64> = w.iter().take(d).copied().collect();
    let x = with_one.slice_axis(Axis(1), Slice::from(0..d)).to_owned();
    let margins: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|row| row.iter().zip(&weights).map(|(v, w)| v * w).sum())
        .collect();
    let intercept = fit_intercept(&margins, y, w[d]);
    Ok((intercept, weights, x))
}

/// The intercept that minimises the log loss with the other weights fixed (Newton's
/// method from `start`): FTRL's last passes leave it off the optimum on small data, where
/// it shows as a mean score away from the base rate. At the optimum the mean predicted
/// probability equals the training base rate.
fn fit_intercept(margins: &[f64], y: &Array1<bool>, start: f64) -> f64 {
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let mut b = start;
    for _ in 0..50 {
        let (mut g, mut h) = (0.0, 0.0);
        for (m, label) in margins.iter().zip(y) {
            let p = sigmoid(m + b);
            g += p - f64::from(u8::from(*label));
            h += p * (1.0 - p);
        }
        if h <= 0.0 {
            break;
        }
        let step = g / h;
        b -= step.clamp(-5.0, 5.0);
        if step.abs() < 1e-10 {
            break;
        }
    }
    b
}

/// Refuses a model under which positive rows score lower on average than the rest.
fn check_order(scores: impl Iterator<Item = f64>, y: &Array1<bool>) -> Result<(), BoxError> {
    let (mut pos, mut neg) = ((0.0, 0usize), (0.0, 0usize));
    for (s, label) in scores.zip(y) {
        let acc = if *label { &mut pos } else { &mut neg };
        acc.0 += s;
        acc.1 += 1;
    }
    let (mp, mn) = (pos.0 / pos.1.max(1) as f64, neg.0 / neg.1.max(1) as f64);
    if mp <= mn {
        return Err(format!("fitted model scores positive rows lower ({mp:.4}) than the rest ({mn:.4}): label mapping is wrong").into());
    }
    Ok(())
}

fn logistic(c: &Coefficients, version: &str) -> Result<LogisticRanker, BoxError> {
    let w: [f64; N_FEATURES] = c
        .weights
        .as_slice()
        .try_into()
        .map_err(|_| format!("{} weights for {N_FEATURES} features", c.weights.len()))?;
    Ok(LogisticRanker::new(version, c.intercept, w))
}

/// Leaf values are smoothed towards the overall rate by this many pseudo-rows.
pub const LEAF_PRIOR_ROWS: f64 = 10.0;

/// Fits a decision tree (linfa-trees, Gini) and returns its nodes in artifact order.
///
/// linfa's tree predicts a class and prunes subtrees that predict the same class, which
/// with a few-percent positive rate would leave a single leaf; positive rows are therefore
/// weighted (by the whole number nearest the negative-to-positive ratio) so that both
/// classes weigh about the same, and the tree's *structure* is kept. Each
/// leaf's score is then the positive rate of the (unweighted) training rows that reach it,
/// smoothed by [`LEAF_PRIOR_ROWS`], so scores are probabilities.
///
/// # Errors
/// When linfa fails or the tree ranks positive rows lower than the rest.
pub fn fit_tree(x: Array2<f64>, y: Array1<bool>, cfg: &Config) -> Result<Vec<Node>, BoxError> {
    let n = y.len() as f64;
    let pos = y.iter().filter(|v| **v).count() as f64;
    if pos == 0.0 || pos == n {
        return Err("the training rows have a single class".into());
    }
    // Whole-number weights keep linfa's f32 running sums exact (up to 2^24 in total).
    let up = ((n - pos) / pos).round().max(1.0);
    if (n - pos) + up * pos > f64::from(1u32 << 24) {
        return Err(format!("{n} rows are too many for one tree (at most about 8 million)").into());
    }
    let weights: Array1<f32> = y.iter().map(|v| if *v { up as f32 } else { 1.0 }).collect();
    let targets: Array1<usize> = y.iter().map(|v| usize::from(*v)).collect();
    let dataset = Dataset::new(x, targets).with_weights(weights);
    let tree = DecisionTree::<f64, usize>::params()
        .max_depth(Some(cfg.tree_depth))
        .min_weight_leaf(cfg.tree_min_leaf as f32)
        .min_weight_split(2.0 * cfg.tree_min_leaf as f32)
        .min_impurity_decrease(1e-7)
        .fit(&dataset)?;
    let mut nodes = Vec::new();
    flatten(tree.root_node(), &mut nodes);
    // Leaf scores: the open rate of the training rows reaching each leaf.
    let mut counts = vec![(0.0, 0.0); nodes.len()];
    let mut buf = [0.0; N_FEATURES];
    for (row, label) in dataset.records().rows().into_iter().zip(&y) {
        row.iter().zip(buf.iter_mut()).for_each(|(v, o)| *o = *v);
        let leaf = walk(&nodes, &buf);
        counts[leaf].0 += f64::from(u8::from(*label));
        counts[leaf].1 += 1.0;
    }
    let overall = pos / n;
    for (node, (p, k)) in nodes.iter_mut().zip(counts) {
        if let Node::Leaf { leaf } = node {
            *leaf = round_score((p + LEAF_PRIOR_ROWS * overall) / (k + LEAF_PRIOR_ROWS));
        }
    }
    let ranker = TreeRanker::new("check", &nodes)?;
    check_order(
        dataset.records().rows().into_iter().map(|row| {
            row.iter().zip(buf.iter_mut()).for_each(|(v, o)| *o = *v);
            ranker.score(&buf)
        }),
        &y,
    )?;
    Ok(nodes)
}

fn round_score(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// Appends `node` and its subtree in pre-order (children after their parent).
fn flatten(node: &TreeNode<f64, usize>, out: &mut Vec<Node>) -> usize {
    let at = out.len();
    let children = node.children();
    match (node.is_leaf(), children[0], children[1]) {
        (false, Some(left), Some(right)) => {
            let (feature, threshold, _) = node.split();
            out.push(Node::Leaf { leaf: 0.0 });
            let l = flatten(left, out);
            let r = flatten(right, out);
            out[at] = Node::Split {
                feature,
                threshold,
                left: l,
                right: r,
            };
        }
        _ => out.push(Node::Leaf { leaf: 0.0 }),
    }
    at
}

/// Index of the leaf `x` reaches (the same rule as `TreeRanker::score`).
fn walk(nodes: &[Node], x: &[f64; N_FEATURES]) -> usize {
    let mut i = 0;
    loop {
        match nodes[i] {
            Node::Leaf { .. } => return i,
            Node::Split {
                feature,
                threshold,
                left,
                right,
            } => i = if x[feature] <= threshold { left } else { right },
        }
    }
}

/// A candidate model: its kind, its artifact's parameters and its validation metrics.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// `logistic` or `tree`.
    pub kind: &'static str,
    /// Validation metrics.
    pub validation: Metrics,
    intercept: f64,
    weights: Vec<f64>,
    tree: Option<Vec<Node>>,
}

/// The result of a training run.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The artifact of the chosen kind (already checked by `ranker::from_artifact`).
    pub artifact: Artifact,
    /// Test evaluation of the chosen model, with the baselines.
    pub report: Report,
    /// Every kind fitted, with its validation metrics.
    pub candidates: Vec<Candidate>,
    /// Decisions trained on.
    pub train_decisions: usize,
    /// Rows trained on.
    pub train_rows: usize,
    /// How the logistic regression was fitted (`None` when none was).
    pub solver: Option<Solver>,
}

/// Progress bars of a run (hidden ones in tests).
pub struct Bars {
    /// Encoding the training decisions.
    pub encode: ProgressBar,
    /// The fits (a spinner).
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

fn artifact(version: &str, training_data: &str, c: &Candidate) -> Artifact {
    Artifact {
        format: FORMAT.to_string(),
        version: version.to_string(),
        kind: c.kind.to_string(),
        features: schema(),
        schema_hash: schema_hash(),
        intercept: c.intercept,
        weights: c.weights.clone(),
        tree: c.tree.clone(),
        training_data: training_data.to_string(),
        metrics: BTreeMap::new(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

/// Splits by time, fits the configured kinds on the earliest part, keeps the one with the
/// best validation AUC, evaluates it and the baselines on the latest part, builds the
/// artifact.
///
/// # Errors
/// When there is too little data, a fit fails or the artifact does not load.
pub fn run(
    mut records: Vec<TrainingRecord>,
    training_data: &str,
    version: &str,
    cfg: &Config,
    bars: &Bars,
) -> Result<Trained, BoxError> {
    let (a, b) = split_by_time(&mut records, cfg.train_fraction, cfg.valid_fraction);
    let train = crate::data::rows(&records[..a], cfg.label);
    let valid = crate::data::rows(&records[a..b], cfg.label);
    let test = crate::data::rows(&records[b..], cfg.label);
    if train.is_empty() || valid.is_empty() || test.is_empty() {
        return Err(format!(
            "{} decisions give {} / {} / {} decisions with {} rows for train / validation / test: too few",
            records.len(),
            train.len(),
            valid.len(),
            test.len(),
            cfg.label.as_str()
        )
        .into());
    }
    bars.encode.set_length(train.len() as u64);
    let (x, y) = design(&train, cfg.label, &bars.encode);
    bars.encode.finish();
    let train_rows = x.nrows();
    bars.fit
        .enable_steady_tick(std::time::Duration::from_millis(120));
    let valid_labels: Vec<Vec<bool>> = valid.iter().map(Rows::labels).collect();
    let mut candidates = Vec::new();
    let mut solver_used = None;
    if cfg.kinds != Kinds::Tree {
        bars.fit.set_message(format!(
            "fitting logistic regression on {train_rows} rows x {N_FEATURES} features"
        ));
        let (c, solver) = fit(x.clone(), y.clone(), cfg)?;
        solver_used = Some(solver);
        let r = logistic(&c, version)?;
        candidates.push(Candidate {
            kind: "logistic",
            validation: eval::metrics(&valid_labels, &eval::score(&r, &valid), true),
            intercept: c.intercept,
            weights: c.weights,
            tree: None,
        });
    }
    if cfg.kinds != Kinds::Logistic {
        bars.fit.set_message(format!(
            "fitting a decision tree (depth {}) on {train_rows} rows x {N_FEATURES} features",
            cfg.tree_depth
        ));
        let nodes = fit_tree(x, y, cfg)?;
        let r = TreeRanker::new(version, &nodes)?;
        candidates.push(Candidate {
            kind: "tree",
            validation: eval::metrics(&valid_labels, &eval::score(&r, &valid), true),
            intercept: 0.0,
            weights: Vec::new(),
            tree: Some(nodes),
        });
    }
    bars.fit
        .finish_with_message(format!("fitted {} model kind(s)", candidates.len()));
    let best = candidates
        .iter()
        .max_by(|p, q| p.validation.auc.total_cmp(&q.validation.auc))
        .expect("at least one kind");
    let training_data = format!("{training_data};label={}", cfg.label.as_str());
    let mut artifact = artifact(version, &training_data, best);
    // Evaluate with exactly what serving loads.
    let served: Arc<dyn Ranker> = ranker::from_artifact(&artifact)?;
    let report = Report::new(
        &test,
        &eval::score(served.as_ref(), &test),
        &Popularity::fit(&train, cfg.label),
        cfg.label,
    );
    artifact.metrics = report.to_map();
    for c in &candidates {
        artifact.metrics.insert(
            format!("valid_auc_{}", c.kind),
            round_score(c.validation.auc),
        );
        artifact.metrics.insert(
            format!("valid_hit_at_1_{}", c.kind),
            round_score(c.validation.hit_at_1),
        );
    }
    artifact
        .metrics
        .insert("train_decisions".into(), train.len() as f64);
    artifact
        .metrics
        .insert("train_rows".into(), train_rows as f64);
    artifact
        .metrics
        .insert("valid_decisions".into(), valid.len() as f64);
    Ok(Trained {
        artifact,
        report,
        candidates,
        train_decisions: train.len(),
        train_rows,
        solver: solver_used,
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
    ranker::load(&text)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, &text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate;

    fn records(decisions: usize, seed: u64) -> Vec<TrainingRecord> {
        generate::generate(
            &generate::Config {
                seed,
                decisions,
                ..generate::Config::default()
            },
            |_| {},
        )
    }

    fn trained(decisions: usize, seed: u64, cfg: &Config) -> Trained {
        run(
            records(decisions, seed),
            "test",
            "test-1",
            cfg,
            &Bars::hidden(),
        )
        .unwrap()
    }

    #[test]
    fn the_split_is_by_time_train_then_validation_then_test() {
        let mut ds = records(1_000, 7);
        ds.reverse();
        let (a, b) = split_by_time(&mut ds, 0.7, 0.15);
        assert_eq!((a, b), (700, 850));
        let last = |part: &[TrainingRecord]| part.iter().map(|d| d.at).max().unwrap();
        assert!(ds[a..b].iter().all(|d| d.at >= last(&ds[..a])));
        assert!(ds[b..].iter().all(|d| d.at >= last(&ds[a..b])));
    }

    /// The stated margins on held-out generated data (the latest 15 % of 40,000 decisions):
    /// the model leads offer popularity by at least 0.05 AUC and 0.03 hit@1, and nearest
    /// store by at least 0.10 AUC and 0.05 hit@1.
    #[test]
    fn on_held_out_data_the_model_beats_both_baselines_by_the_stated_margins() {
        let t = trained(
            40_000,
            11,
            &Config {
                kinds: Kinds::Logistic,
                ..Config::default()
            },
        );
        let r = &t.report;
        eprintln!("{r}");
        for (name, base, auc_margin, hit_margin) in [
            ("popularity", r.popularity, 0.05, 0.03),
            ("nearest", r.nearest, 0.10, 0.05),
        ] {
            assert!(
                r.model.auc >= base.auc + auc_margin,
                "AUC {} vs {name} {}",
                r.model.auc,
                base.auc
            );
            assert!(
                r.model.hit_at_1 >= base.hit_at_1 + hit_margin,
                "hit@1 {} vs {name} {}",
                r.model.hit_at_1,
                base.hit_at_1
            );
            assert!(r.model.hit_at_3 >= base.hit_at_3, "hit@3 vs {name}");
        }
        assert!(r.popularity.hit_at_1 > r.random_hit_at_1);
        // Calibrated: the mean score is near the held-out open rate, and the bins too.
        assert!(
            (r.mean_score / r.base_rate - 1.0).abs() < 0.2,
            "mean score {} vs base rate {}",
            r.mean_score,
            r.base_rate
        );
        assert!(eval::calibration_error(&r.calibration) < 0.02);

        // The artifact loads in serving; the weights have the signs of the true model.
        let text = serde_json::to_string(&t.artifact).unwrap();
        ranker::load(&text).unwrap();
        let w = |name: &str| {
            t.artifact.weights[t.artifact.features.iter().position(|f| f == name).unwrap()]
        };
        assert!(w("affinity") > 1.0);
        assert!(w("rainwear_x_wet") > 0.5);
        assert!(w("coffee_x_morning") > 0.3);
        assert!(w("distance_km") < 0.5);
        assert!(t.artifact.training_data.ends_with(";label=opened"));
        for m in [
            "auc",
            "hit_at_3",
            "nearest_auc",
            "popularity_hit_at_1",
            "valid_auc_logistic",
            "calibration_error",
        ] {
            assert!(t.artifact.metrics.contains_key(m), "{m}");
        }
    }

    #[test]
    fn a_tree_is_fitted_stored_and_scored_with_its_training_rates() {
        let ds = records(20_000, 5);
        let rows = crate::data::rows(&ds, Label::Opened);
        let (x, y) = design(&rows, Label::Opened, &ProgressBar::hidden());
        let cfg = Config {
            tree_depth: 4,
            tree_min_leaf: 100,
            ..Config::default()
        };
        let nodes = fit_tree(x.clone(), y.clone(), &cfg).unwrap();
        assert!(
            nodes.len() >= 7,
            "a tree, not a stump: {} nodes",
            nodes.len()
        );
        let r = TreeRanker::new("t", &nodes).unwrap();
        // Each leaf's score is the smoothed positive rate of the training rows reaching it.
        let overall = y.iter().filter(|v| **v).count() as f64 / y.len() as f64;
        let mut counts = vec![(0.0, 0.0); nodes.len()];
        let mut buf = [0.0; N_FEATURES];
        for (row, label) in x.rows().into_iter().zip(&y) {
            row.iter().zip(buf.iter_mut()).for_each(|(v, o)| *o = *v);
            let leaf = walk(&nodes, &buf);
            counts[leaf].0 += f64::from(u8::from(*label));
            counts[leaf].1 += 1.0;
            let Node::Leaf { leaf: value } = nodes[leaf] else {
                panic!("walk ends at a leaf")
            };
            assert_eq!(r.score(&buf), value);
        }
        for (i, (p, n)) in counts.iter().enumerate() {
            if let Node::Leaf { leaf } = nodes[i] {
                let want = (p + LEAF_PRIOR_ROWS * overall) / (n + LEAF_PRIOR_ROWS);
                assert!((leaf - want).abs() < 1e-6, "leaf {i}: {leaf} vs {want}");
            }
        }
        // Through a whole run, restricted to trees: the artifact is a tree and it ranks.
        let t = run(
            ds,
            "test",
            "tree-1",
            &Config {
                kinds: Kinds::Tree,
                ..cfg
            },
            &Bars::hidden(),
        )
        .unwrap();
        assert_eq!(t.artifact.kind, "tree");
        assert!(t.artifact.weights.is_empty());
        let served = ranker::load(&serde_json::to_string(&t.artifact).unwrap()).unwrap();
        assert_eq!(served.version(), "tree-1");
        assert!(t.report.model.auc > t.report.popularity.auc, "{}", t.report);
        assert_eq!(t.candidates.len(), 1);
    }

    #[test]
    fn auto_keeps_the_kind_with_the_better_validation_auc() {
        let t = trained(
            12_000,
            3,
            &Config {
                tree_depth: 3,
                ..Config::default()
            },
        );
        assert_eq!(t.candidates.len(), 2);
        let best = t
            .candidates
            .iter()
            .max_by(|a, b| a.validation.auc.total_cmp(&b.validation.auc))
            .unwrap();
        assert_eq!(t.artifact.kind, best.kind);
        assert!(t.artifact.metrics.contains_key("valid_auc_tree"));
        assert!(t.artifact.metrics.contains_key("valid_auc_logistic"));
    }

    #[test]
    fn the_purchase_label_trains_on_every_scored_candidate() {
        let ds = records(12_000, 4);
        let opened: usize = crate::data::rows(&ds, Label::Opened)
            .iter()
            .map(|d| d.iter().count())
            .sum();
        let purchased: usize = crate::data::rows(&ds, Label::Purchased)
            .iter()
            .map(|d| d.iter().count())
            .sum();
        // Held-out users' candidates are rows for purchases, not for opens.
        assert!(purchased > opened, "{purchased} vs {opened}");
        let t = run(
            ds,
            "test",
            "p-1",
            &Config {
                label: Label::Purchased,
                kinds: Kinds::Logistic,
                ..Config::default()
            },
            &Bars::hidden(),
        )
        .unwrap();
        assert_eq!(t.report.label, Label::Purchased);
        assert!(t.artifact.training_data.ends_with(";label=purchased"));
        assert!(t.report.model.auc > 0.55, "{}", t.report);
    }

    #[test]
    fn ftrl_reaches_the_lbfgs_model_on_the_same_rows() {
        let ds = records(60_000, 5);
        let fit_with = |solver| {
            run(
                ds.clone(),
                "test",
                "test-1",
                &Config {
                    kinds: Kinds::Logistic,
                    solver,
                    ..Config::default()
                },
                &Bars::hidden(),
            )
            .unwrap()
        };
        let (lbfgs, ftrl) = (fit_with(Solver::Lbfgs), fit_with(Solver::Ftrl));
        assert_eq!(
            (lbfgs.solver, ftrl.solver),
            (Some(Solver::Lbfgs), Some(Solver::Ftrl))
        );
        assert_ne!(lbfgs.artifact.weights, ftrl.artifact.weights);
        let (a, b) = (&lbfgs.report.model, &ftrl.report.model);
        eprintln!("lbfgs {a:?}\nftrl {b:?}");
        assert!((a.auc - b.auc).abs() < 0.005, "AUC {} vs {}", a.auc, b.auc);
        assert!(
            (a.hit_at_1 - b.hit_at_1).abs() < 0.01,
            "hit@1 {} vs {}",
            a.hit_at_1,
            b.hit_at_1
        );
        let (la, lb) = (a.log_loss.unwrap(), b.log_loss.unwrap());
        assert!(lb < la * 1.005, "log loss {lb} vs {la}");
        assert!(eval::calibration_error(&ftrl.report.calibration) < 0.02);
        assert!(b.auc >= ftrl.report.popularity.auc + 0.05);
    }

    #[test]
    fn a_feature_that_never_varied_gets_weight_zero_with_either_solver() {
        let ds = records(4_000, 9);
        let rows = crate::data::rows(&ds, Label::Opened);
        let (mut x, y) = design(&rows, Label::Opened, &ProgressBar::hidden());
        // Make sure at least one column never varies.
        x.column_mut(N_FEATURES - 1).fill(0.0);
        let idle: Vec<usize> = (0..N_FEATURES)
            .filter(|&j| x.column(j).iter().all(|v| *v == x[[0, j]]))
            .collect();
        assert!(idle.contains(&(N_FEATURES - 1)));
        for solver in [Solver::Lbfgs, Solver::Ftrl] {
            let cfg = Config {
                solver,
                ..Config::default()
            };
            let (c, _) = fit(x.clone(), y.clone(), &cfg).unwrap();
            for &j in &idle {
                assert_eq!(c.weights[j], 0.0, "{solver:?}: feature {j}");
            }
            assert!(c.weights.iter().any(|w| *w != 0.0));
        }
    }

    #[test]
    fn auto_fits_by_ftrl_from_the_stated_row_count() {
        assert_eq!(Solver::Auto.pick(FTRL_FROM_ROWS - 1), Solver::Lbfgs);
        assert_eq!(Solver::Auto.pick(FTRL_FROM_ROWS), Solver::Ftrl);
        assert_eq!(Solver::Lbfgs.pick(10 * FTRL_FROM_ROWS), Solver::Lbfgs);
        assert_eq!(Solver::Ftrl.pick(10), Solver::Ftrl);
        assert_eq!(ftrl_epochs(1_000_000), 8);
        assert_eq!(ftrl_epochs(200_000), 32);
        assert_eq!(ftrl_epochs(0), FTRL_ROW_UPDATES);
    }

    #[test]
    fn fewer_ftrl_passes_leave_the_log_loss_higher() {
        // The budget of row updates matters: one pass over these rows is far from the
        // optimum that the default budget reaches.
        let ds = records(20_000, 3);
        let loss = |epochs| {
            let t = run(
                ds.clone(),
                "test",
                "test-1",
                &Config {
                    kinds: Kinds::Logistic,
                    solver: Solver::Ftrl,
                    ftrl_epochs: epochs,
                    ..Config::default()
                },
                &Bars::hidden(),
            )
            .unwrap();
            t.report.model.log_loss.unwrap()
        };
        let (one, default) = (loss(Some(1)), loss(None));
        assert!(default < one, "default budget {default} vs one pass {one}");
    }

    proptest::proptest! {
        #[test]
        fn unscaled_coefficients_score_raw_rows_as_the_fit_scored_standardized_ones(
            rows in proptest::collection::vec(proptest::collection::vec(0.0f64..1.0, 4), 2..40),
            constant in 0.0f64..1.0,
            weights in proptest::collection::vec(-5.0f64..5.0, 5),
            intercept in -5.0f64..5.0,
        ) {
            // Four varying columns and a constant one (scale 1, its weight kept).
            let n = rows.len();
            let raw = Array2::from_shape_fn((n, 5), |(i, j)| if j == 4 { constant } else { rows[i][j] });
            let scaling = Scaling::of(&raw);
            proptest::prop_assert_eq!(scaling.scale[4], 1.0);
            let mut standardized = raw.clone();
            scaling.apply(&mut standardized);
            proptest::prop_assert!(!scaling.varies[4]);
            let c = scaling.unscale(intercept, &weights);
            proptest::prop_assert_eq!(c.weights[4], 0.0);
            for (r, s) in raw.rows().into_iter().zip(standardized.rows()) {
                let dot = |x: ndarray::ArrayView1<f64>, w: &[f64]| x.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
                let fitted = intercept + dot(s, &weights);
                let served = c.intercept + dot(r, &c.weights);
                proptest::prop_assert!((fitted - served).abs() < 1e-6, "{fitted} vs {served}");
            }
        }
    }

    #[test]
    fn the_label_mapping_is_fixed_whichever_class_linfa_calls_positive() {
        // Mostly-opened data: linfa's positive class is `true` here, unlike in real data.
        let mut ds = records(3_000, 7);
        for d in &mut ds {
            for c in &mut d.candidates {
                c.opened = !c.opened;
            }
        }
        let rows = crate::data::rows(&ds, Label::Opened);
        let (x, y) = design(&rows, Label::Opened, &ProgressBar::hidden());
        let (c, _) = fit(x, y, &Config::default()).unwrap();
        let affinity = c.weights[0];
        assert!(
            affinity < 0.0,
            "inverted labels must give a negative affinity weight, got {affinity}"
        );
    }

    #[test]
    fn too_little_data_is_refused_with_the_reason() {
        let e = run(records(5, 1), "t", "t", &Config::default(), &Bars::hidden())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("too few"), "{e}");
    }

    #[test]
    fn the_shipped_artifact_loads_with_the_serving_schema() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ranker.json");
        let text = std::fs::read_to_string(path).unwrap();
        let ranker = ranker::load(&text).unwrap();
        let a: Artifact = serde_json::from_str(&text).unwrap();
        assert_eq!(a.schema_hash, schema_hash());
        assert_eq!(a.features, schema());
        assert!(a.kind == "logistic" || a.kind == "tree", "{}", a.kind);
        assert!(
            a.training_data.starts_with("fnv1a64:") && a.training_data.ends_with(";label=opened"),
            "{}",
            a.training_data
        );
        for m in [
            "auc",
            "log_loss",
            "hit_at_1",
            "hit_at_3",
            "base_rate",
            "popularity_auc",
            "popularity_hit_at_1",
            "nearest_auc",
            "nearest_hit_at_1",
            "valid_auc_logistic",
            "valid_auc_tree",
        ] {
            assert!(a.metrics.contains_key(m), "{m}");
        }
        assert!(a.metrics["auc"] > a.metrics["popularity_auc"]);
        assert!(a.metrics["hit_at_1"] > a.metrics["nearest_hit_at_1"]);
        assert!(text.len() < 64 * 1024, "commit-sized: {} bytes", text.len());
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
