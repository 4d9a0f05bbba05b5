//! `nearcast-train`: generates logged decisions and trains Nearcast's ranking model.
//!
//! ```text
//! nearcast-train generate --seed 7 --decisions 200000 --out models/data/decisions.jsonl
//! nearcast-train train --data models/data/decisions.jsonl --out models/ranker.json
//! nearcast-train compare models/ranker.json other.json --data models/data/test.jsonl
//! ```

use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nearcast_train::data::Label;
use nearcast_train::{data, eval, generate, train};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "nearcast-train",
    about = "Generates logged decisions and trains Nearcast's ranking model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes seeded synthetic logged decisions in the `nearcast-training/1` format (see
    /// models/README.md).
    Generate {
        /// RNG seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Number of decisions.
        #[arg(long, default_value_t = 200_000)]
        decisions: usize,
        /// Number of users.
        #[arg(long, default_value_t = 2_000)]
        users: usize,
        /// First local day (Europe/Helsinki).
        #[arg(long, default_value = "2026-09-28")]
        start: NaiveDate,
        /// Number of days.
        #[arg(long, default_value_t = 56)]
        days: u32,
        /// Output file (JSON lines).
        #[arg(long)]
        out: PathBuf,
    },
    /// Trains the ranker (logistic regression and a decision tree; the better on validation
    /// is kept) and writes the `nearcast-ranker/1` artifact and its reliability plot.
    Train {
        /// Training data (`nearcast-training/1` JSON lines).
        #[arg(long)]
        data: PathBuf,
        /// Artifact to write.
        #[arg(long, default_value = "models/ranker.json")]
        out: PathBuf,
        /// Reliability plot (PNG) of the test set; default: next to the artifact, with the
        /// extension `.calibration.png`.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Outcome to predict.
        #[arg(long, value_enum, default_value_t = Label::Opened)]
        label: Label,
        /// Model kinds to fit (`auto`: both, the better validation AUC wins).
        #[arg(long, value_enum, default_value_t = train::Kinds::Auto)]
        kind: train::Kinds,
        /// Tree depth at most.
        #[arg(long, default_value_t = 7)]
        tree_depth: usize,
        /// Training rows per tree leaf at least.
        #[arg(long, default_value_t = 200)]
        tree_min_leaf: usize,
        /// Model version label (default: today's date, `YYYY-MM-DD.1`).
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        solver: SolverArgs,
        /// Earliest share of decisions to train on.
        #[arg(long, default_value_t = 0.7)]
        train_fraction: f64,
        /// Next share of decisions to choose the kind on; the latest rest is the test set.
        #[arg(long, default_value_t = 0.15)]
        valid_fraction: f64,
    },
    /// Benchmark driver (bench/sklearn): splits by time, writes the train and test design
    /// matrices for another library to fit on the very same rows, fits linfa's logistic
    /// regression on them (the trainer's own `fit`: scaling, solver and all) and prints its
    /// test AUC, test log loss and fit time as one JSON line.
    BenchLogistic {
        /// Training data (`nearcast-training/1` JSON lines).
        #[arg(long)]
        data: PathBuf,
        /// Directory for `{train,test}_x.f64` (row-major little-endian f64),
        /// `{train,test}_y.u8` and `meta.json` (the feature names).
        #[arg(long)]
        export_dir: PathBuf,
        #[command(flatten)]
        solver: SolverArgs,
        /// Earliest share of decisions to train on; the rest is the test set.
        #[arg(long, default_value_t = 0.8)]
        train_fraction: f64,
    },
    /// Scores a data file with two artifacts and prints their metrics side by side.
    Compare {
        /// First artifact.
        a: PathBuf,
        /// Second artifact.
        b: PathBuf,
        /// Test data (`nearcast-training/1` JSON lines).
        #[arg(long)]
        data: PathBuf,
        /// Outcome to evaluate.
        #[arg(long, value_enum, default_value_t = Label::Opened)]
        label: Label,
    },
}

/// How the logistic regression is fitted.
#[derive(clap::Args, Debug, Clone, Copy)]
struct SolverArgs {
    /// L2 penalty on the summed log loss (L-BFGS only).
    #[arg(long, default_value_t = 5.0, value_parser = non_negative)]
    alpha: f64,
    /// Iterations at most (L-BFGS only).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    max_iterations: u64,
    /// Gradient tolerance per training row, on the mean log loss (L-BFGS only).
    #[arg(long, default_value_t = 1e-6, value_parser = positive)]
    gradient_tolerance: f64,
    /// `auto`: L-BFGS below 250,000 training rows, FTRL from there on.
    #[arg(long, value_enum, default_value_t = train::Solver::Auto)]
    solver: train::Solver,
    /// FTRL: passes over the training rows (default: enough for 6.4 million row updates,
    /// at least 8).
    #[arg(long, value_parser = at_least_one)]
    ftrl_epochs: Option<usize>,
    /// FTRL: rows per update.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    ftrl_batch: usize,
    /// FTRL: learning rate.
    #[arg(long, default_value_t = 0.02, value_parser = positive)]
    ftrl_learning_rate: f64,
}

/// A finite number above 0 (clap names the option when it refuses one).
fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("must be a finite number above 0".into()),
    }
}

/// A finite number, 0 or above.
fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err("must be a finite number, 0 or above".into()),
    }
}

/// A whole number, 1 or above.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err("must be a whole number, 1 or above".into()),
    }
}

impl SolverArgs {
    fn apply(self, cfg: train::Config) -> train::Config {
        train::Config {
            alpha: self.alpha,
            max_iterations: self.max_iterations,
            gradient_tolerance_per_row: self.gradient_tolerance,
            solver: self.solver,
            ftrl_epochs: self.ftrl_epochs,
            ftrl_batch: self.ftrl_batch,
            ftrl_learning_rate: self.ftrl_learning_rate,
            ..cfg
        }
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn bytes_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn spinner() -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    pb
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nearcast-train: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), train::BoxError> {
    match cli.command {
        Command::Generate {
            seed,
            decisions,
            users,
            start,
            days,
            out,
        } => {
            let cfg = generate::Config {
                seed,
                decisions,
                users,
                start,
                days,
            };
            let pb = bar(decisions as u64, "generate");
            let ds = generate::generate(&cfg, |n| pb.inc(n));
            pb.finish();
            if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut w = BufWriter::new(std::fs::File::create(&out)?);
            data::write(&mut w, &ds)?;
            w.flush()?;
            let candidates: usize = ds.iter().map(|d| d.candidates.len()).sum();
            let sent = || ds.iter().flat_map(|d| &d.candidates).filter(|c| c.sent);
            let opened = sent().filter(|c| c.opened).count() as f64 / sent().count().max(1) as f64;
            eprintln!(
                "wrote {} decisions, {candidates} candidates (open rate of pushed offers {:.4}) to {}",
                ds.len(),
                opened,
                out.display()
            );
            Ok(())
        }
        Command::Train {
            data: path,
            out,
            plot,
            label,
            kind,
            tree_depth,
            tree_min_leaf,
            version,
            solver,
            train_fraction,
            valid_fraction,
        } => {
            let len = std::fs::metadata(&path)?.len();
            let pb = bytes_bar(len, "read");
            let loaded = data::read(&path, |n| pb.inc(n as u64))?;
            pb.finish();
            eprintln!(
                "read {} decisions ({})",
                loaded.records.len(),
                loaded.fingerprint
            );
            let version =
                version.unwrap_or_else(|| format!("{}.1", chrono::Utc::now().format("%Y-%m-%d")));
            let cfg = train::Config {
                label,
                kinds: kind,
                tree_depth,
                tree_min_leaf,
                valid_fraction,
                train_fraction,
                ..solver.apply(train::Config::default())
            };
            let bars = train::Bars {
                encode: bar(0, "encode"),
                fit: spinner(),
            };
            let t = train::run(loaded.records, &loaded.fingerprint, &version, &cfg, &bars)?;
            train::write_artifact(&out, &t.artifact)?;
            let plot = plot.unwrap_or_else(|| out.with_extension("calibration.png"));
            eval::plot_calibration(&t.report.calibration, &plot)?;
            println!(
                "trained on {} decisions ({} rows), label {}, version {version}",
                t.train_decisions,
                t.train_rows,
                label.as_str()
            );
            println!("validation (chooses the kind by AUC):");
            println!("{}", eval::header());
            for c in &t.candidates {
                println!("{}", eval::row(c.kind, &c.validation));
            }
            match t.solver {
                Some(solver) if t.artifact.kind == "logistic" => {
                    println!("kept: logistic (fitted by {})", solver.as_str());
                }
                _ => println!("kept: {}", t.artifact.kind),
            }
            print!("{}", t.report);
            println!("wrote {} and {}", out.display(), plot.display());
            Ok(())
        }
        Command::BenchLogistic {
            data: path,
            export_dir,
            solver,
            train_fraction,
        } => {
            let mut records = data::read(&path, |_| {})?.records;
            let (cut, _) = train::split_by_time(&mut records, train_fraction, 0.0);
            let label = Label::Opened;
            let hidden = ProgressBar::hidden();
            let train_rows = data::rows(&records[..cut], label);
            let test_rows = data::rows(&records[cut..], label);
            let (x, y) = train::design(&train_rows, label, &hidden);
            let (tx, ty) = train::design(&test_rows, label, &hidden);
            std::fs::create_dir_all(&export_dir)?;
            std::fs::write(
                export_dir.join("meta.json"),
                serde_json::json!({"features": nearcast_core::features::schema()}).to_string(),
            )?;
            for (name, x, y) in [("train", &x, &y), ("test", &tx, &ty)] {
                let file = std::fs::File::create(export_dir.join(format!("{name}_x.f64")))?;
                let mut w = BufWriter::new(file);
                for v in x.iter() {
                    w.write_all(&v.to_le_bytes())?;
                }
                w.flush()?;
                let labels: Vec<u8> = y.iter().map(|v| u8::from(*v)).collect();
                std::fs::write(export_dir.join(format!("{name}_y.u8")), labels)?;
            }
            let cfg = solver.apply(train::Config::default());
            let n_train = x.nrows();
            let started = std::time::Instant::now();
            let (c, solver) = train::fit(x, y, &cfg)?;
            let fit_seconds = started.elapsed().as_secs_f64();
            let w: [f64; nearcast_core::features::N_FEATURES] =
                c.weights.as_slice().try_into().map_err(|_| "weights")?;
            let r = nearcast_core::ranker::LogisticRanker::new("bench", c.intercept, w);
            let scores: Vec<f64> = eval::score(&r, &test_rows).into_iter().flatten().collect();
            let labels = ty.as_slice().ok_or("labels")?;
            let auc = eval::auc(&scores, labels).ok_or("one class")?;
            let library = match solver {
                train::Solver::Ftrl => "linfa-ftrl",
                _ => "linfa-logistic",
            };
            println!(
                "{}",
                serde_json::json!({
                    "library": library,
                    "solver": solver.as_str(),
                    "log_loss": eval::log_loss(&scores, labels),
                    "train_rows": n_train,
                    "test_rows": tx.nrows(),
                    "features": nearcast_core::features::N_FEATURES,
                    "fit_seconds": fit_seconds,
                    "auc": auc,
                })
            );
            Ok(())
        }
        Command::Compare {
            a,
            b,
            data: path,
            label,
        } => {
            let load = |p: &PathBuf| -> Result<_, train::BoxError> {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                nearcast_core::ranker::load(&text)
                    .map_err(|e| format!("{}: {e}", p.display()).into())
            };
            let (ra, rb) = (load(&a)?, load(&b)?);
            let len = std::fs::metadata(&path)?.len();
            let pb = bytes_bar(len, "read");
            let loaded = data::read(&path, |n| pb.inc(n as u64))?;
            pb.finish();
            print!(
                "{}",
                eval::compare(ra.as_ref(), rb.as_ref(), &loaded.records, label)?
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train_args(extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec!["nearcast-train", "train", "--data", "d.jsonl"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
    }

    #[test]
    fn solver_options_out_of_range_are_refused_naming_the_option() {
        for (flag, value) in [
            ("--ftrl-learning-rate", "0"),
            ("--ftrl-learning-rate", "NaN"),
            ("--ftrl-learning-rate", "-0.1"),
            ("--ftrl-batch", "0"),
            ("--ftrl-epochs", "0"),
            ("--alpha", "-1"),
            ("--alpha", "inf"),
            ("--gradient-tolerance", "0"),
            ("--max-iterations", "0"),
        ] {
            let arg = format!("{flag}={value}");
            let err = train_args(&[&arg]).err().unwrap_or_else(|| {
                panic!("{flag} {value} was accepted");
            });
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
        let ok = train_args(&[
            "--ftrl-learning-rate",
            "0.05",
            "--ftrl-epochs",
            "3",
            "--alpha",
            "0",
        ]);
        assert!(ok.is_ok(), "{:?}", ok.err());
    }
}
