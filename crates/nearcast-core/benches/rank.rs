//! Scoring one candidate (features + logistic model) and loading the model artifact.

use criterion::{Criterion, criterion_group, criterion_main};
use nearcast_core::context::Context;
use nearcast_core::features::{self, Input, N_FEATURES};
use nearcast_core::ranker::{LogisticRanker, Ranker};
use nearcast_core::weather::{Condition, Weather};
use std::hint::black_box;

const MODEL: &str = include_str!("../../../models/ranker.json");

fn bench(c: &mut Criterion) {
    let ranker = LogisticRanker::from_json(MODEL).unwrap();
    let ctx = Context::new(
        "2026-11-20T07:30:00Z".parse().unwrap(),
        chrono_tz::Europe::Helsinki,
        Some(Weather {
            condition: Condition::Rain,
            temp_c: 4.0,
        }),
    );
    c.bench_function("score_one_candidate", |b| {
        let mut x = [0.0; N_FEATURES];
        b.iter(|| {
            let input = Input::new(black_box("coffee"), &ctx, black_box(42.0), Some(0.4), false);
            features::encode(&input, &mut x);
            black_box(ranker.score(&x))
        })
    });
    c.bench_function("load_model_artifact", |b| {
        b.iter(|| black_box(LogisticRanker::from_json(black_box(MODEL)).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
