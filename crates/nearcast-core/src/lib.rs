//! Nearcast's core: everything that turns a device event into an explained push decision,
//! with no I/O and no cloud dependency.
//!
//! The pipeline for one location fix (see `docs/architecture.md`):
//!
//! ```text
//! validate -> idempotency -> consent -> H3 cell -> geofence index -> enter/dwell state
//!          -> eligibility (schedule, daypart, weather, audience, already bought)
//!          -> features -> ranker -> threshold -> holdout -> caps -> notifier
//! ```
//!
//! I/O happens behind the small traits in [`ports`]: the state store, the notifier, the
//! weather source and the clock. The embedded host (`nearcast`) and the AWS functions
//! implement them; this crate only decides.
#![deny(missing_docs)]

/// A log filter directive every host adds to its own: geometry libraries trace the
/// coordinates they work on at debug level (store shapes, and they could be fixes), and
/// Nearcast logs no location, whatever level an operator asks for.
pub const QUIET_GEOMETRY_LOGS: &str = "geo=warn";

pub mod audit;
pub mod campaign;
pub mod campaign_results;
pub mod caps;
pub mod catalog;
pub mod config;
pub mod consent;
pub mod context;
pub mod coupon;
pub mod decision;
pub mod engine;
pub mod error;
pub mod event;
pub mod export;
pub mod features;
pub mod geofence;
pub mod holdout;
pub mod ids;
pub mod import;
pub mod memory;
pub mod model_store;
pub mod payload;
pub mod ports;
pub mod presence;
pub mod ranker;
pub mod results;
pub mod snapshot;
pub mod state;
pub mod stats;
pub mod trigger;
pub mod weather;
pub mod webhook;

pub use error::FieldError;
