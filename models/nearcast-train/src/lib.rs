//! Nearcast's trainer: a seeded generator of logged decisions, the training of the logistic
//! ranker with linfa over the features of [`nearcast_core::features::encode`] (the same code
//! path as serving), held-out evaluation against an offer-popularity baseline, and the
//! `nearcast-ranker/1` artifact that `nearcast_core::ranker::LogisticRanker` loads.
//!
//! The record format of the logged decisions lives in [`data`] only, so that it can follow
//! the export format when that is defined.

pub mod data;
pub mod eval;
pub mod generate;
pub mod train;
