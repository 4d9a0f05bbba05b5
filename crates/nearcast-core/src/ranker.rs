//! Ranking: a model scores each eligible candidate; the best above its offer's threshold wins.
//!
//! Models are trained with linfa (models/nearcast-train) and saved as a versioned JSON
//! artifact (`nearcast-ranker/1`, documented in models/README.md) of one of two kinds:
//!
//! - `logistic`: a logistic regression; the score is a dot product and a sigmoid over the
//!   features of [`crate::features`] ([`LogisticRanker`]).
//! - `tree`: a decision tree whose leaves hold the open rate of the training rows that reach
//!   them; the score is a walk from the root to a leaf ([`TreeRanker`]).
//!
//! [`load`] reads any kind and checks it, so serving needs neither linfa nor ndarray.

use crate::features::{N_FEATURES, schema, schema_hash};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// A kind this version does not score, or a kind without its parameters.
    #[error("model kind {0:?} is not supported (expected \"logistic\" or \"tree\")")]
    Kind(String),
    /// A tree that is not a tree: a child out of range or not after its parent, a feature
    /// index out of range, a non-finite threshold or a leaf value outside [0, 1].
    #[error("model tree is invalid: {0}")]
    Tree(String),
}

/// Loads and checks an artifact of any kind: the one loader serving uses.
///
/// # Errors
/// [`ModelError`] when the JSON, format, schema, kind or parameters are wrong.
pub fn load(text: &str) -> Result<Arc<dyn Ranker>, ModelError> {
    let a: Artifact = serde_json::from_str(text).map_err(|e| ModelError::Parse(e.to_string()))?;
    from_artifact(&a)
}

/// Checks an artifact of any kind and builds its ranker.
///
/// # Errors
/// [`ModelError`] when the format, schema, kind or parameters are wrong.
pub fn from_artifact(a: &Artifact) -> Result<Arc<dyn Ranker>, ModelError> {
    match a.kind.as_str() {
        "logistic" => Ok(Arc::new(LogisticRanker::from_artifact(a)?)),
        "tree" => Ok(Arc::new(TreeRanker::from_artifact(a)?)),
        other => Err(ModelError::Kind(other.to_string())),
    }
}

fn check_format_and_schema(a: &Artifact) -> Result<(), ModelError> {
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
    Ok(())
}

/// The JSON artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// [`FORMAT`].
    pub format: String,
    /// Version label, e.g. `2026-11-23.1`.
    pub version: String,
    /// Model kind: `logistic` or `tree`.
    pub kind: String,
    /// Feature names in order.
    pub features: Vec<String>,
    /// Hash of the feature schema.
    pub schema_hash: String,
    /// Intercept (`logistic`; 0 for a tree).
    pub intercept: f64,
    /// One weight per feature (`logistic`; empty for a tree).
    pub weights: Vec<f64>,
    /// The tree (`tree` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Vec<Node>>,
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
    /// Checks an artifact.
    ///
    /// # Errors
    /// [`ModelError`] when the format, schema or weights are wrong.
    pub fn from_artifact(a: &Artifact) -> Result<Self, ModelError> {
        check_format_and_schema(a)?;
        if a.kind != "logistic" || a.tree.is_some() {
            return Err(ModelError::Kind(a.kind.clone()));
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

/// One node of a tree artifact: a split or a leaf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Node {
    /// Rows with `x[feature] <= threshold` go to node `left`, the others to node `right`.
    /// Children come after their parent in the list (so every walk ends).
    Split {
        /// Feature index in schema order.
        feature: usize,
        /// Threshold.
        threshold: f64,
        /// Index of the left child.
        left: usize,
        /// Index of the right child.
        right: usize,
    },
    /// The score of the rows that reach it: the smoothed open rate of its training rows.
    Leaf {
        /// Score in [0, 1].
        leaf: f64,
    },
}

/// A decision-tree ranker, stored flat for a cache-friendly walk.
#[derive(Debug, Clone)]
pub struct TreeRanker {
    version: String,
    /// Per node: the feature index, or `u32::MAX` for a leaf.
    feature: Vec<u32>,
    /// Per node: the threshold of a split, the score of a leaf.
    value: Vec<f64>,
    /// Per node: the left and right child of a split.
    children: Vec<[u32; 2]>,
}

impl TreeRanker {
    /// Checks a `tree` artifact.
    ///
    /// # Errors
    /// [`ModelError`] when the format, schema, kind or tree are wrong.
    pub fn from_artifact(a: &Artifact) -> Result<Self, ModelError> {
        check_format_and_schema(a)?;
        let nodes = match (&a.tree, a.kind.as_str()) {
            (Some(nodes), "tree") => nodes,
            _ => return Err(ModelError::Kind(a.kind.clone())),
        };
        Self::new(&a.version, nodes)
    }

    /// A ranker from its nodes, checked: the root is node 0, every child index is greater
    /// than its parent's and within the list, features are in range, thresholds finite and
    /// leaves in [0, 1].
    ///
    /// # Errors
    /// [`ModelError::Tree`] naming the first bad node.
    pub fn new(version: &str, nodes: &[Node]) -> Result<Self, ModelError> {
        if nodes.is_empty() || nodes.len() >= u32::MAX as usize {
            return Err(ModelError::Tree(format!("{} nodes", nodes.len())));
        }
        let n = nodes.len();
        let mut r = TreeRanker {
            version: version.into(),
            feature: Vec::with_capacity(n),
            value: Vec::with_capacity(n),
            children: Vec::with_capacity(n),
        };
        for (i, node) in nodes.iter().enumerate() {
            match *node {
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    if feature >= N_FEATURES {
                        return Err(ModelError::Tree(format!(
                            "node {i}: feature {feature} of {N_FEATURES}"
                        )));
                    }
                    if !threshold.is_finite() {
                        return Err(ModelError::Tree(format!(
                            "node {i}: threshold is not finite"
                        )));
                    }
                    for child in [left, right] {
                        if child <= i || child >= n {
                            return Err(ModelError::Tree(format!(
                                "node {i}: child {child} is not after it among {n} nodes"
                            )));
                        }
                    }
                    r.feature.push(feature as u32);
                    r.value.push(threshold);
                    r.children.push([left as u32, right as u32]);
                }
                Node::Leaf { leaf } => {
                    if !(0.0..=1.0).contains(&leaf) {
                        return Err(ModelError::Tree(format!(
                            "node {i}: leaf {leaf} outside [0, 1]"
                        )));
                    }
                    r.feature.push(u32::MAX);
                    r.value.push(leaf);
                    r.children.push([0, 0]);
                }
            }
        }
        Ok(r)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.feature.len()
    }

    /// Never empty once built.
    pub fn is_empty(&self) -> bool {
        self.feature.is_empty()
    }
}

impl Ranker for TreeRanker {
    #[inline]
    fn score(&self, x: &[f64; N_FEATURES]) -> f64 {
        let mut i = 0usize;
        loop {
            let f = self.feature[i];
            if f == u32::MAX {
                return self.value[i];
            }
            let go_right = x[f as usize] > self.value[i];
            i = self.children[i][usize::from(go_right)] as usize;
        }
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
            tree: None,
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
        assert!(matches!(load("{not json"), Err(ModelError::Parse(_))));
    }

    fn tree_artifact() -> Artifact {
        // affinity (0) <= 0.5 ? (distance_km (13) <= 0.1 ? 0.2 : 0.1) : 0.6
        let nodes = serde_json::json!([
            {"feature": 0, "threshold": 0.5, "left": 1, "right": 2},
            {"feature": 13, "threshold": 0.1, "left": 3, "right": 4},
            {"leaf": 0.6},
            {"leaf": 0.2},
            {"leaf": 0.1}
        ]);
        Artifact {
            kind: "tree".into(),
            intercept: 0.0,
            weights: vec![],
            tree: Some(serde_json::from_value(nodes).unwrap()),
            ..artifact()
        }
    }

    #[test]
    fn a_tree_artifact_loads_through_the_one_loader_and_walks_to_its_leaves() {
        let text = serde_json::to_string(&tree_artifact()).unwrap();
        let r = load(&text).unwrap();
        assert_eq!(r.version(), "t1");
        let mut x = [0.0; N_FEATURES];
        x[0] = 0.9;
        assert_eq!(r.score(&x), 0.6);
        x[0] = 0.5; // on the threshold: left
        x[13] = 0.05;
        assert_eq!(r.score(&x), 0.2);
        x[13] = 0.3;
        assert_eq!(r.score(&x), 0.1);
        // The logistic kind loads through the same function.
        let text = serde_json::to_string(&artifact()).unwrap();
        let r = load(&text).unwrap();
        assert!(r.score(&[1.0; N_FEATURES]) > 0.5);
    }

    #[test]
    fn corrupt_trees_and_unknown_kinds_are_refused_with_the_reason() {
        let with = |f: &dyn Fn(&mut Vec<Node>)| {
            let mut a = tree_artifact();
            f(a.tree.as_mut().unwrap());
            let err = load(&serde_json::to_string(&a).unwrap()).err().unwrap();
            err.to_string()
        };
        // A cycle (child before its parent).
        let e = with(&|n| {
            n[1] = Node::Split {
                feature: 13,
                threshold: 0.1,
                left: 0,
                right: 4,
            }
        });
        assert!(e.contains("node 1: child 0"), "{e}");
        // A child out of range.
        let e = with(&|n| {
            n[0] = Node::Split {
                feature: 0,
                threshold: 0.5,
                left: 1,
                right: 9,
            }
        });
        assert!(e.contains("node 0: child 9"), "{e}");
        let e = with(&|n| {
            n[0] = Node::Split {
                feature: N_FEATURES,
                threshold: 0.5,
                left: 1,
                right: 2,
            }
        });
        assert!(e.contains("node 0: feature"), "{e}");
        let e = with(&|n| n[2] = Node::Leaf { leaf: 1.5 });
        assert!(e.contains("node 2: leaf 1.5"), "{e}");
        let e = with(&|n| n.clear());
        assert!(e.contains("0 nodes"), "{e}");

        // A tree kind without a tree, a tree under the logistic kind, an unknown kind.
        let mut a = tree_artifact();
        a.tree = None;
        assert!(matches!(from_artifact(&a), Err(ModelError::Kind(_))));
        let mut a = tree_artifact();
        a.kind = "logistic".into();
        assert!(matches!(from_artifact(&a), Err(ModelError::Kind(_))));
        let mut a = artifact();
        a.kind = "forest".into();
        let e = from_artifact(&a).err().unwrap().to_string();
        assert!(e.contains("\"forest\" is not supported"), "{e}");
        // A tree trained on other features.
        let mut a = tree_artifact();
        a.features.swap(0, 1);
        assert!(matches!(from_artifact(&a), Err(ModelError::Schema { .. })));
        // A node with an unknown field is not silently read as a split.
        let text = serde_json::to_string(&tree_artifact())
            .unwrap()
            .replace(r#"{"leaf":0.6}"#, r#"{"leaf":0.6,"gain":1.0}"#);
        assert!(matches!(load(&text), Err(ModelError::Parse(_))));
        assert!(matches!(load("{not json"), Err(ModelError::Parse(_))));
    }
}
