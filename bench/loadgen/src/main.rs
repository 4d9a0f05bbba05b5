//! `nearcast-loadgen`: generates a large configuration for `nearcast serve` and measures
//! its event throughput and latency on loopback. See bench/README.md.

mod config;
mod http;
mod rng;
mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "nearcast-loadgen",
    version,
    about = "Load driver for `nearcast serve`"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes DIR/stores.json and DIR/offers.json (deterministic for a seed).
    GenConfig {
        /// Number of stores.
        #[arg(long, default_value_t = 10_000)]
        stores: usize,
        /// Number of offers.
        #[arg(long, default_value_t = 1_000)]
        offers: usize,
        /// Output folder (created).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the generator.
        #[arg(long, default_value_t = 20_261_120)]
        seed: u64,
    },
    /// Posts location batches from keep-alive connections and reports throughput and latency.
    Run {
        /// Server address, host:port (loopback).
        #[arg(long)]
        addr: String,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Distinct users.
        #[arg(long, default_value_t = 2000)]
        users: usize,
        /// Location events per request (1..=100).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=100))]
        batch: u16,
        /// Seconds of load (the measured phase; the warm-up comes before).
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        /// Stop after this many events even if time is left.
        #[arg(long, default_value_t = 2_000_000)]
        max_events: u64,
        /// User id prefix.
        #[arg(long, default_value = "lg-u")]
        user_prefix: String,
        /// Skip the consent / push-token warm-up (users already warmed up).
        #[arg(long)]
        no_warmup: bool,
        /// Per-request timeout, seconds.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
        /// Seed of the fixes' positions and the user picks.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// PID of the server, to report its CPU time and memory over the run (Linux).
        #[arg(long)]
        server_pid: Option<u32>,
        /// Let every connection pick any user (by default connections use disjoint users, so
        /// one user's batches never race each other).
        #[arg(long)]
        shared_users: bool,
        /// Seconds of event time between two fixes of a user's walk.
        #[arg(long, default_value_t = 2.0)]
        fix_interval: f64,
        /// Every fix at a uniformly random point of the box, a batch stamped at one instant
        /// (the pattern before walks; no phone produces it).
        #[arg(long)]
        scatter: bool,
        /// Driver threads (1: a current-thread runtime, leaving the CPUs to the server).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Print the human table on stderr and one JSON line on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::GenConfig {
            stores,
            offers,
            out,
            seed,
        } => match config::gen_config(stores, offers, seed, &out) {
            Ok(s) => {
                println!(
                    "wrote {} stores ({} polygons) and {} offers to {}; ~{:.1} % of uniform fixes in the box fall inside a fence",
                    s.stores,
                    s.polygons,
                    s.offers,
                    out.display(),
                    s.hit_fraction * 100.0
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}: {e}", out.display());
                ExitCode::FAILURE
            }
        },
        Command::Run {
            addr,
            connections,
            users,
            batch,
            duration,
            max_events,
            user_prefix,
            no_warmup,
            timeout,
            seed,
            server_pid,
            threads,
            json,
            shared_users,
            fix_interval,
            scatter,
        } => {
            if connections == 0
                || users == 0
                || !(fix_interval > 0.0 && fix_interval <= 3600.0)
                || duration.is_nan()
                || duration <= 0.0
                || timeout.is_nan()
                || timeout <= 0.0
            {
                eprintln!(
                    "error: --connections, --users, --duration, --timeout and --fix-interval (at most 3600) must be positive"
                );
                return ExitCode::from(2);
            }
            let params = run::Params {
                addr,
                connections,
                users,
                batch: usize::from(batch),
                duration: Duration::from_secs_f64(duration),
                max_events,
                user_prefix,
                no_warmup,
                timeout: Duration::from_secs_f64(timeout),
                seed,
                server_pid,
                shared_users,
                fix_interval,
                scatter,
            };
            let rt = if threads <= 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()
            }
            .expect("tokio runtime");
            match rt.block_on(run::run(params, json)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(3),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
