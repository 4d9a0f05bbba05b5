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
        /// L2 penalty on the summed log loss.
        #[arg(long, default_value_t = 5.0)]
        alpha: f64,
        /// L-BFGS iterations at most.
        #[arg(long, default_value_t = 200)]
        max_iterations: u64,
        /// Gradient tolerance per training row (on the mean log loss).
        #[arg(long, default_value_t = 1e-6)]
        gradient_tolerance: f64,
        /// Earliest share of decisions to train on.
        #[arg(long, default_value_t = 0.7)]
        train_fraction: f64,
        /// Next share of decisions to choose the kind on; the latest rest is the test set.
        #[arg(long, default_value_t = 0.15)]
        valid_fraction: f64,
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
            alpha,
            max_iterations,
            gradient_tolerance,
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
                alpha,
                max_iterations,
                gradient_tolerance_per_row: gradient_tolerance,
                train_fraction,
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
            println!("kept: {}", t.artifact.kind);
            print!("{}", t.report);
            println!("wrote {} and {}", out.display(), plot.display());
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
