//! Ranking: a model scores each eligible candidate; the best above its offer's threshold wins.
//!
//! Models are trained by models/nearcast-train and saved as a versioned JSON artifact
//! (`nearcast-ranker/2`, documented in models/README.md): a logistic regression over the
//! hashed sparse features of [`crate::features`], with the feature [`Spec`] it was trained
//! with (encoding version, hash space size, feature list) and the spec's hash. Serving
//! encodes each candidate with the artifact's own spec, so serving and training share one
//! code path whatever features a model uses.
//!
//! [`load`] reads and checks an artifact, so serving needs no training library. Artifacts
//! of the earlier format (`nearcast-ranker/1`, a fixed list of features) are refused with a
//! message saying to retrain.

use crate::features::{Encoder, Features, Input, Spec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Artifact format identifier; bumped on incompatible changes.
pub const FORMAT: &str = "nearcast-ranker/2";

/// Scores candidates.
pub trait Ranker: Send + Sync {
    /// Probability-like score in [0, 1] of a positive response.
    fn score(&self, input: &Input<'_>) -> f64;
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
    #[error("model artifact format {got:?} is not supported (expected {FORMAT:?}){hint}")]
    Format {
        /// Format found.
        got: String,
        /// What to do about it.
        hint: String,
    },
    /// A feature spec this build does not encode, or a spec hash that does not match it.
    #[error("model feature schema {got} cannot be served by this version: {why}")]
    Schema {
        /// Hash in the artifact.
        got: String,
        /// Why.
        why: String,
    },
    /// A weight index out of the hash space, a repeated index or a non-finite weight.
    #[error("model weights are invalid: {0}")]
    Weights(String),
    /// A kind this version does not score.
    #[error("model kind {0:?} is not supported (expected \"logistic\")")]
    Kind(String),
}

/// Loads and checks an artifact: the one loader serving uses.
///
/// # Errors
/// [`ModelError`] when the JSON, format, spec, kind or weights are wrong.
pub fn load(text: &str) -> Result<Arc<dyn Ranker>, ModelError> {
    // The format first, so an artifact of another format is named as such rather than as
    // a parse error of its fields.
    #[derive(Deserialize)]
    struct Format {
        #[serde(default)]
        format: String,
    }
    let f: Format = serde_json::from_str(text).map_err(|e| ModelError::Parse(e.to_string()))?;
    if f.format != FORMAT {
        return Err(format_error(&f.format));
    }
    let a: Artifact = serde_json::from_str(text).map_err(|e| ModelError::Parse(e.to_string()))?;
    from_artifact(&a)
}

fn format_error(got: &str) -> ModelError {
    let hint = if got == "nearcast-ranker/1" {
        ": it was trained on the fixed feature list of earlier versions; retrain it with \
         `nearcast-train train` (models/README.md)"
    } else {
        ""
    };
    ModelError::Format {
        got: got.to_string(),
        hint: hint.to_string(),
    }
}

/// Checks an artifact and builds its ranker.
///
/// # Errors
/// [`ModelError`] when the format, spec, kind or weights are wrong.
pub fn from_artifact(a: &Artifact) -> Result<Arc<dyn Ranker>, ModelError> {
    Ok(Arc::new(LogisticRanker::from_artifact(a)?))
}

/// The JSON artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// [`FORMAT`].
    pub format: String,
    /// Version label, e.g. `2026-11-23.1`.
    pub version: String,
    /// Model kind: `logistic`.
    pub kind: String,
    /// The features the model was trained on and how they are encoded.
    pub spec: Spec,
    /// [`Spec::hash`] of `spec`.
    pub schema_hash: String,
    /// How the weights were fitted (e.g. `ftrl-proximal alpha=0.1 beta=1 l1=1 l2=1 epochs=3`).
    #[serde(default)]
    pub fit: String,
    /// The non-zero weights: `[index, weight]` pairs, indices ascending. The intercept is
    /// the weight of the `bias` feature.
    pub weights: Vec<(u32, f64)>,
    /// Fingerprint of the training data.
    pub training_data: String,
    /// Evaluation metrics on held-out data.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// A logistic-regression ranker over hashed features.
#[derive(Debug, Clone)]
pub struct LogisticRanker {
    version: String,
    encoder: Encoder,
    weights: Vec<f64>,
}

impl LogisticRanker {
    /// Checks an artifact.
    ///
    /// # Errors
    /// [`ModelError`] when the format, spec, kind or weights are wrong.
    pub fn from_artifact(a: &Artifact) -> Result<Self, ModelError> {
        if a.format != FORMAT {
            return Err(format_error(&a.format));
        }
        if a.kind != "logistic" {
            return Err(ModelError::Kind(a.kind.clone()));
        }
        if a.schema_hash != a.spec.hash() {
            return Err(ModelError::Schema {
                got: a.schema_hash.clone(),
                why: format!("it does not match its spec (hash {})", a.spec.hash()),
            });
        }
        let encoder = a.spec.encoder().map_err(|why| ModelError::Schema {
            got: a.schema_hash.clone(),
            why,
        })?;
        let mut weights = vec![0.0; a.spec.size()];
        let mut last: Option<u32> = None;
        for &(i, w) in &a.weights {
            if i as usize >= weights.len() {
                return Err(ModelError::Weights(format!(
                    "index {i} outside the hash space of {}",
                    weights.len()
                )));
            }
            if last.is_some_and(|l| l >= i) {
                return Err(ModelError::Weights(format!(
                    "index {i} repeated or out of order"
                )));
            }
            if !w.is_finite() {
                return Err(ModelError::Weights(format!("weight {i} is not finite")));
            }
            weights[i as usize] = w;
            last = Some(i);
        }
        Ok(LogisticRanker {
            version: a.version.clone(),
            encoder,
            weights,
        })
    }

    /// The margin (log-odds) of already encoded features.
    pub fn margin(&self, x: &Features) -> f64 {
        x.dot(&self.weights)
    }
}

/// The logistic function, safe for any margin.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl Ranker for LogisticRanker {
    fn score(&self, input: &Input<'_>) -> f64 {
        // The features are summed as they are made: nothing is allocated per candidate.
        let mut z = 0.0;
        self.encoder
            .visit(input, |i, v| z += self.weights[i as usize] * v);
        sigmoid(z)
    }

    fn version(&self) -> &str {
        &self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use crate::features::Features;

    fn artifact() -> Artifact {
        let spec = Spec::default();
        Artifact {
            format: FORMAT.into(),
            version: "t1".into(),
            kind: "logistic".into(),
            schema_hash: spec.hash(),
            spec,
            fit: "test".into(),
            weights: vec![(0, -1.0), (7, 0.5)],
            training_data: "test".into(),
            metrics: BTreeMap::new(),
            created_at: "2026-11-23T00:00:00Z".into(),
        }
    }

    fn input_score(r: &dyn Ranker) -> f64 {
        let ctx = Context::new(
            "2026-11-20T07:00:00Z".parse().unwrap(),
            chrono_tz::Europe::Helsinki,
            None,
        );
        r.score(&Input::new(
            &ctx,
            ("o", "s", "c"),
            None,
            10.0,
            (None, false, &[]),
        ))
    }

    #[test]
    fn a_good_artifact_loads_and_scores_the_sigmoid_of_its_weights() {
        let mut a = artifact();
        let r = load(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(r.version(), "t1");
        let s = input_score(r.as_ref());
        assert!(s > 0.0 && s < 1.0);
        // The score is the sigmoid of the summed weights of the input's features.
        let mut x = Features::default();
        let ctx = Context::new(
            "2026-11-20T07:00:00Z".parse().unwrap(),
            chrono_tz::Europe::Helsinki,
            None,
        );
        a.spec.encoder().unwrap().encode(
            &Input::new(&ctx, ("o", "s", "c"), None, 10.0, (None, false, &[])),
            &mut x,
        );
        a.weights = {
            let mut idx = x.idx.clone();
            idx.sort();
            idx.dedup();
            idx.into_iter().map(|i| (i, 0.1)).collect()
        };
        let r = from_artifact(&a).unwrap();
        let z: f64 = x.val.iter().map(|v| 0.1 * v).sum();
        assert!((input_score(r.as_ref()) - sigmoid(z)).abs() < 1e-12);
        assert!(sigmoid(-1e6) >= 0.0 && sigmoid(1e6) <= 1.0);
    }

    #[test]
    fn mismatched_or_corrupt_artifacts_are_refused_with_the_reason() {
        let refuse = |a: &Artifact| load(&serde_json::to_string(a).unwrap()).err().unwrap();
        let mut a = artifact();
        a.spec.features.swap(0, 1);
        let e = refuse(&a).to_string();
        assert!(e.contains("schema") && e.contains("does not match"), "{e}");
        let mut a = artifact();
        a.spec.features.push("colour".into());
        a.schema_hash = a.spec.hash();
        let e = refuse(&a).to_string();
        assert!(e.contains("schema") && e.contains("colour"), "{e}");
        let mut a = artifact();
        a.weights.push((1 << 20, 1.0));
        assert!(matches!(refuse(&a), ModelError::Weights(_)));
        let mut a = artifact();
        a.weights = vec![(3, 1.0), (3, 1.0)];
        assert!(matches!(refuse(&a), ModelError::Weights(_)));
        let mut a = artifact();
        a.weights[0].1 = f64::NAN;
        // JSON has no NaN: serde writes null, which is not a number.
        assert!(matches!(refuse(&a), ModelError::Parse(_)));
        assert!(matches!(from_artifact(&a), Err(ModelError::Weights(_))));
        let mut a = artifact();
        a.kind = "tree".into();
        assert!(matches!(refuse(&a), ModelError::Kind(_)));
        let mut a = artifact();
        a.format = "other/9".into();
        assert!(matches!(refuse(&a), ModelError::Format { .. }));
        assert!(matches!(load("{not json"), Err(ModelError::Parse(_))));
    }

    #[test]
    fn a_model_of_the_earlier_format_is_refused_with_a_message_to_retrain() {
        let old = r#"{"format":"nearcast-ranker/1","version":"2026-11-23.4","kind":"logistic",
            "features":["affinity"],"schema_hash":"0123","intercept":0.1,"weights":[0.2],
            "training_data":"x","metrics":{},"created_at":"2026-11-23T00:00:00Z"}"#;
        let e = load(old).err().unwrap().to_string();
        assert!(
            e.contains("nearcast-ranker/1") && e.contains("retrain"),
            "{e}"
        );
    }
}
