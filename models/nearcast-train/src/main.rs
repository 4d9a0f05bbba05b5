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
    /// Trains the ranker (a logistic regression over hashed features, fitted by
    /// FTRL-Proximal) and writes the `nearcast-ranker/2` artifact and its reliability plot.
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
        /// Model version label (default: today's date, `YYYY-MM-DD.1`).
        #[arg(long)]
        version: Option<String>,
        /// The hash space has 2^bits weights.
        #[arg(long, default_value_t = nearcast_core::features::DEFAULT_HASH_BITS,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(nearcast_core::features::MAX_HASH_BITS)))]
        hash_bits: u32,
        /// Features and crosses, comma-separated (default: the default spec; see
        /// models/README.md).
        #[arg(long, value_delimiter = ',')]
        features: Option<Vec<String>>,
        #[command(flatten)]
        ftrl: FtrlArgs,
        /// Earliest share of decisions to train on.
        #[arg(long, default_value_t = 0.7)]
        train_fraction: f64,
        /// Next share of decisions to choose the number of passes on; the latest rest is the
        /// test set.
        #[arg(long, default_value_t = 0.15)]
        valid_fraction: f64,
        /// Test on the decisions at or after this time (RFC 3339) instead of the latest
        /// share; the earlier ones train and validate in the ratio of the two fractions.
        #[arg(long)]
        test_from: Option<chrono::DateTime<chrono::Utc>>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Evaluates an artifact on a data file: the metrics, both baselines (their
    /// popularity is the file's own, so it is an optimistic baseline), calibration and
    /// per-category hit@k.
    Evaluate {
        /// The artifact.
        model: PathBuf,
        /// Test data (`nearcast-training/1` JSON lines).
        #[arg(long)]
        data: PathBuf,
        /// Outcome to evaluate.
        #[arg(long, value_enum, default_value_t = Label::Opened)]
        label: Label,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
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
        /// Print the metrics as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// How FTRL-Proximal fits.
#[derive(clap::Args, Debug, Clone, Copy)]
struct FtrlArgs {
    /// Learning rate scale (alpha).
    #[arg(long, default_value_t = train::Ftrl::default().alpha, value_parser = positive)]
    ftrl_alpha: f64,
    /// Learning rate smoothing (beta).
    #[arg(long, default_value_t = train::Ftrl::default().beta, value_parser = non_negative)]
    ftrl_beta: f64,
    /// L1 penalty.
    #[arg(long, default_value_t = train::Ftrl::default().l1, value_parser = non_negative)]
    l1: f64,
    /// L2 penalty.
    #[arg(long, default_value_t = train::Ftrl::default().l2, value_parser = non_negative)]
    l2: f64,
    /// Passes over the training rows at most (the best on validation is kept).
    #[arg(long, default_value_t = train::Ftrl::default().epochs, value_parser = at_least_one)]
    epochs: usize,
}

impl FtrlArgs {
    fn params(self) -> train::Ftrl {
        train::Ftrl {
            alpha: self.ftrl_alpha,
            beta: self.ftrl_beta,
            l1: self.l1,
            l2: self.l2,
            epochs: self.epochs,
        }
    }
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
            version,
            hash_bits,
            features,
            ftrl,
            train_fraction,
            valid_fraction,
            test_from,
            json,
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
            let mut spec = nearcast_core::features::Spec {
                hash_bits,
                ..Default::default()
            };
            if let Some(f) = features {
                spec.features = f;
            }
            spec.encoder()?;
            let cfg = train::Config {
                label,
                spec,
                ftrl: ftrl.params(),
                valid_fraction,
                train_fraction,
                test_from,
                ..train::Config::default()
            };
            let bars = train::Bars {
                encode: bar(0, "encode"),
                fit: bar(0, "fit"),
            };
            let t = train::run(loaded.records, &loaded.fingerprint, &version, &cfg, &bars)?;
            train::write_artifact(&out, &t.artifact)?;
            let plot = plot.unwrap_or_else(|| out.with_extension("calibration.png"));
            eval::plot_calibration(&t.report.calibration, &plot)?;
            if json {
                let mut v = t.report.to_json();
                v["version"] = version.clone().into();
                v["train_decisions"] = t.train_decisions.into();
                v["train_rows"] = t.train_rows.into();
                v["fit"] = t.artifact.fit.clone().into();
                v["weights"] = t.artifact.weights.len().into();
                v["valid_log_loss"] = t.valid_log_loss.clone().into();
                println!("{v}");
                return Ok(());
            }
            println!(
                "trained on {} decisions ({} rows), label {}, version {version}",
                t.train_decisions,
                t.train_rows,
                label.as_str()
            );
            println!(
                "fit: {}; validation log loss per pass: {:?}; {} non-zero weights of {}",
                t.artifact.fit,
                t.valid_log_loss
                    .iter()
                    .map(|v| (v * 1e4).round() / 1e4)
                    .collect::<Vec<_>>(),
                t.artifact.weights.len(),
                t.artifact.spec.size()
            );
            print!("{}", t.report);
            println!("wrote {} and {}", out.display(), plot.display());
            Ok(())
        }
        Command::Evaluate {
            model,
            data: path,
            label,
            json,
        } => {
            let r = load_model(&model)?;
            let len = std::fs::metadata(&path)?.len();
            let pb = bytes_bar(len, "read");
            let loaded = data::read(&path, |n| pb.inc(n as u64))?;
            pb.finish();
            let rows = data::rows(&loaded.records, label);
            if rows.is_empty() {
                return Err(format!("no decision has a row for label {}", label.as_str()).into());
            }
            let scores = eval::score(r.as_ref(), &rows);
            let report =
                eval::Report::new(&rows, &scores, &eval::Popularity::fit(&rows, label), label);
            if json {
                let mut v = report.to_json();
                v["version"] = r.version().into();
                println!("{v}");
            } else {
                println!("model {} on {}", r.version(), path.display());
                print!("{report}");
            }
            Ok(())
        }
        Command::Compare {
            a,
            b,
            data: path,
            label,
            json,
        } => {
            let (ra, rb) = (load_model(&a)?, load_model(&b)?);
            let len = std::fs::metadata(&path)?.len();
            let pb = bytes_bar(len, "read");
            let loaded = data::read(&path, |n| pb.inc(n as u64))?;
            pb.finish();
            if json {
                let rows = data::rows(&loaded.records, label);
                if rows.is_empty() {
                    return Err(
                        format!("no decision has a row for label {}", label.as_str()).into(),
                    );
                }
                let pop = eval::Popularity::fit(&rows, label);
                let ja = eval::Report::new(&rows, &eval::score(ra.as_ref(), &rows), &pop, label);
                let jb = eval::Report::new(&rows, &eval::score(rb.as_ref(), &rows), &pop, label);
                println!(
                    "{}",
                    serde_json::json!({"a": {"version": ra.version(), "report": ja.to_json()},
                                       "b": {"version": rb.version(), "report": jb.to_json()}})
                );
                return Ok(());
            }
            print!(
                "{}",
                eval::compare(ra.as_ref(), rb.as_ref(), &loaded.records, label)?
            );
            Ok(())
        }
    }
}

fn load_model(
    p: &PathBuf,
) -> Result<std::sync::Arc<dyn nearcast_core::ranker::Ranker>, train::BoxError> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    nearcast_core::ranker::load(&text).map_err(|e| format!("{}: {e}", p.display()).into())
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
    fn fit_options_out_of_range_are_refused_naming_the_option() {
        for (flag, value) in [
            ("--ftrl-alpha", "0"),
            ("--ftrl-alpha", "NaN"),
            ("--ftrl-beta", "-1"),
            ("--l1", "-0.1"),
            ("--l2", "inf"),
            ("--epochs", "0"),
            ("--hash-bits", "0"),
            ("--hash-bits", "30"),
            ("--test-from", "yesterday"),
        ] {
            let arg = format!("{flag}={value}");
            let err = train_args(&[&arg]).err().unwrap_or_else(|| {
                panic!("{flag} {value} was accepted");
            });
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
        let ok = train_args(&[
            "--ftrl-alpha",
            "0.05",
            "--epochs",
            "3",
            "--l1",
            "0",
            "--features",
            "bias,category,category*cell8",
            "--test-from",
            "2026-11-01T00:00:00Z",
            "--json",
        ]);
        assert!(ok.is_ok(), "{:?}", ok.err());
    }

    #[test]
    fn evaluate_takes_a_model_a_separate_file_and_json() {
        let cli = Cli::try_parse_from([
            "nearcast-train",
            "evaluate",
            "m.json",
            "--data",
            "test.jsonl",
            "--label",
            "purchased",
            "--json",
        ])
        .unwrap();
        match cli.command {
            Command::Evaluate {
                model,
                data,
                label,
                json,
            } => {
                assert_eq!(model, PathBuf::from("m.json"));
                assert_eq!(data, PathBuf::from("test.jsonl"));
                assert_eq!(label, Label::Purchased);
                assert!(json);
            }
            _ => panic!("not evaluate"),
        }
        assert!(Cli::try_parse_from(["nearcast-train", "evaluate", "m.json"]).is_err());
    }
}
