//! Ranking: a model scores each eligible candidate; the best above its offer's threshold wins.
//!
//! The shipped model is a logistic regression trained with linfa (models/nearcast-train)
//! and saved as a versioned JSON artifact. Scoring is a dot product and a sigmoid over the
//! features of [`crate::features`], so serving needs neither linfa nor ndarray.

use crate::features::{N_FEATURES, schema, schema_hash};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Artifact format identifier; bumped on incompatible changes.
pub const FORMAT: &str = "nearcast-ranker/1";

/// Scores candidates.
pub trait Ranker: Send + Sync {
    /// Probability-like score in [0, 1] of a positive response.
    fn score(&self, features: &[f64; N_FEATURES]) -> f64;
    /// Model version, recorded with every decision.
    fn version(&self) -> &str;
}

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not JSON or not the artifact's shape.
    #[error("model artifact is not valid: {0}")]
    Parse(String),
    /// Another format.
    #[error("model artifact format {got:?} is not supported (expected {FORMAT:?})")]
    Format {
        /// Format found.
        got: String,
    },
    /// Trained on other features.
    #[error(
        "model feature schema {got} does not match serving schema {want}: retrain with this version"
    )]
    Schema {
        /// Hash in the artifact.
        got: String,
        /// Hash of the serving code.
        want: String,
    },
    /// Wrong number of weights or a non-finite weight.
    #[error("model weights are invalid: {0}")]
    Weights(String),
}

/// The JSON artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// [`FORMAT`].
    pub format: String,
    /// Version label, e.g. `2026-11-23.1`.
    pub version: String,
    /// Model kind (`logistic`).
    pub kind: String,
    /// Feature names in order.
    pub features: Vec<String>,
    /// Hash of the feature schema.
    pub schema_hash: String,
    /// Intercept.
    pub intercept: f64,
    /// One weight per feature.
    pub weights: Vec<f64>,
    /// Fingerprint of the training data.
    pub training_data: String,
    /// Evaluation metrics on held-out data.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// A logistic-regression ranker.
#[derive(Debug, Clone)]
pub struct LogisticRanker {
    version: String,
    intercept: f64,
    weights: [f64; N_FEATURES],
}

impl LogisticRanker {
    /// Loads and checks an artifact.
    ///
    /// # Errors
    /// [`ModelError`] when the JSON, format, schema or weights are wrong.
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let a: Artifact =
            serde_json::from_str(text).map_err(|e| ModelError::Parse(e.to_string()))?;
        Self::from_artifact(&a)
    }

    /// Checks an artifact.
    ///
    /// # Errors
    /// [`ModelError`] when the format, schema or weights are wrong.
    pub fn from_artifact(a: &Artifact) -> Result<Self, ModelError> {
        if a.format != FORMAT {
            return Err(ModelError::Format {
                got: a.format.clone(),
            });
        }
        if a.schema_hash != schema_hash() || a.features != schema() {
            return Err(ModelError::Schema {
                got: a.schema_hash.clone(),
                want: schema_hash(),
            });
        }
        if a.weights.len() != N_FEATURES {
            return Err(ModelError::Weights(format!(
                "{} weights for {N_FEATURES} features",
                a.weights.len()
            )));
        }
        if !a.intercept.is_finite() || a.weights.iter().any(|w| !w.is_finite()) {
            return Err(ModelError::Weights("a weight is not finite".into()));
        }
        let mut weights = [0.0; N_FEATURES];
        weights.copy_from_slice(&a.weights);
        Ok(LogisticRanker {
            version: a.version.clone(),
            intercept: a.intercept,
            weights,
        })
    }

    /// A ranker with the given weights (tests and the trainer).
    pub fn new(version: &str, intercept: f64, weights: [f64; N_FEATURES]) -> Self {
        LogisticRanker {
            version: version.into(),
            intercept,
            weights,
        }
    }
}

impl Ranker for LogisticRanker {
    #[inline]
    fn score(&self, x: &[f64; N_FEATURES]) -> f64 {
        let z = self.intercept + self.weights.iter().zip(x).map(|(w, x)| w * x).sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }

    fn version(&self) -> &str {
        &self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact() -> Artifact {
        Artifact {
            format: FORMAT.into(),
            version: "t1".into(),
            kind: "logistic".into(),
            features: schema(),
            schema_hash: schema_hash(),
            intercept: -1.0,
            weights: vec![0.5; N_FEATURES],
            training_data: "test".into(),
            metrics: BTreeMap::new(),
            created_at: "2026-11-23T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_good_artifact_loads_and_scores_in_range() {
        let r = LogisticRanker::from_artifact(&artifact()).unwrap();
        let s = r.score(&[1.0; N_FEATURES]);
        assert!(s > 0.5 && s < 1.0);
        assert_eq!(r.version(), "t1");
    }

    #[test]
    fn mismatched_or_corrupt_artifacts_are_refused() {
        let mut a = artifact();
        a.features.swap(0, 1);
        assert!(matches!(
            LogisticRanker::from_artifact(&a),
            Err(ModelError::Schema { .. })
        ));
        let mut a = artifact();
        a.weights.pop();
        assert!(matches!(
            LogisticRanker::from_artifact(&a),
            Err(ModelError::Weights(_))
        ));
        let mut a = artifact();
        a.format = "other/9".into();
        assert!(matches!(
            LogisticRanker::from_artifact(&a),
            Err(ModelError::Format { .. })
        ));
        assert!(matches!(
            LogisticRanker::from_json("{not json"),
            Err(ModelError::Parse(_))
        ));
    }
}
