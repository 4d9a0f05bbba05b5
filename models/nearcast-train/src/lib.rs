//! Nearcast's trainer: a seeded generator of logged decisions, the training of the logistic
//! ranker by FTRL-Proximal over the hashed features of [`nearcast_core::features`] (the same
//! encoder serving uses), held-out evaluation against an offer-popularity baseline, and the
//! `nearcast-ranker/2` artifact that `nearcast_core::ranker::load` loads.
//!
//! The record format of the logged decisions lives in [`data`] only, so that it can follow
//! the export format when that is defined.

pub mod data;
pub mod eval;
pub mod generate;
pub mod train;
