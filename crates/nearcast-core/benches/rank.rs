//! Scoring one candidate (hashed features + model) and loading the model artifact through
//! `ranker::load`.

use criterion::{Criterion, criterion_group, criterion_main};
use nearcast_core::context::Context;
use nearcast_core::features::Input;
use nearcast_core::ranker;
use nearcast_core::weather::{Condition, Weather};
use std::hint::black_box;

const MODEL: &str = include_str!("../../../models/ranker.json");

fn bench(c: &mut Criterion) {
    let ctx = Context::new(
        "2026-11-20T07:30:00Z".parse().unwrap(),
        chrono_tz::Europe::Helsinki,
        Some(Weather {
            condition: Condition::Rain,
            temp_c: 4.0,
        }),
    );
    let cell = "891126d3303ffff".parse().ok();
    let history = [("coffee", 0.4), ("food", 0.2)];
    let ranker = ranker::load(MODEL).unwrap();
    c.bench_function("score_one_candidate/logistic", |b| {
        b.iter(|| {
            let input = Input::new(
                &ctx,
                (
                    black_box("off-morning-coffee"),
                    "osm-node-606996912",
                    "coffee",
                ),
                cell,
                black_box(42.0),
                (Some(0.4), false, &history),
            );
            black_box(ranker.score(&input))
        })
    });
    c.bench_function("load_model_artifact/logistic", |b| {
        b.iter(|| black_box(ranker::load(black_box(MODEL)).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
