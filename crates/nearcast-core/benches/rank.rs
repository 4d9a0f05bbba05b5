//! Scoring one candidate (features + model, for each model kind) and loading the model
//! artifact through `ranker::load`.

use criterion::{Criterion, criterion_group, criterion_main};
use nearcast_core::context::Context;
use nearcast_core::features::{self, Input, N_FEATURES};
use nearcast_core::ranker::{self, Artifact, Node};
use nearcast_core::weather::{Condition, Weather};
use std::hint::black_box;

const MODEL: &str = include_str!("../../../models/ranker.json");

/// A full binary tree of the given depth over the first features (the shape of a trained
/// tree at its depth limit: every walk takes `depth` steps).
fn tree_artifact(depth: u32) -> String {
    let mut a: Artifact = serde_json::from_str(MODEL).unwrap();
    let splits = (1usize << depth) - 1;
    let mut nodes = Vec::new();
    for i in 0..(2 * splits + 1) {
        if i < splits {
            nodes.push(Node::Split {
                feature: i % N_FEATURES,
                threshold: 0.5,
                left: 2 * i + 1,
                right: 2 * i + 2,
            });
        } else {
            nodes.push(Node::Leaf {
                leaf: (i % 100) as f64 / 100.0,
            });
        }
    }
    a.kind = "tree".into();
    a.intercept = 0.0;
    a.weights = vec![];
    a.tree = Some(nodes);
    serde_json::to_string(&a).unwrap()
}

fn bench(c: &mut Criterion) {
    let ctx = Context::new(
        "2026-11-20T07:30:00Z".parse().unwrap(),
        chrono_tz::Europe::Helsinki,
        Some(Weather {
            condition: Condition::Rain,
            temp_c: 4.0,
        }),
    );
    let tree = tree_artifact(8);
    for (name, text) in [("logistic", MODEL), ("tree_depth8", tree.as_str())] {
        let ranker = ranker::load(text).unwrap();
        c.bench_function(&format!("score_one_candidate/{name}"), |b| {
            let mut x = [0.0; N_FEATURES];
            b.iter(|| {
                let input =
                    Input::new(black_box("coffee"), &ctx, black_box(42.0), Some(0.4), false);
                features::encode(&input, &mut x);
                black_box(ranker.score(&x))
            })
        });
        c.bench_function(&format!("load_model_artifact/{name}"), |b| {
            b.iter(|| black_box(ranker::load(black_box(text)).unwrap()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
