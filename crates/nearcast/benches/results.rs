//! A campaign's results from its cells, on the embedded SQLite store, with 1,000,000 logged
//! decisions behind them: what `GET /v1/admin/campaigns/{id}/results` does (read the cells
//! of the days asked for, add them up, compute the intervals), for the whole campaign, by
//! day, by store, one week by day and by store, one month by store and a range of whole
//! months with days at either end by store. The decisions are spread over `RESULTS_STORES` stores
//! (default 200), `RESULTS_DAYS` days (default 30) and 2 variants, each decision in one
//! cell with its arm and outcomes; the cells are written by commits as the engine writes
//! them (a few per commit).
//!
//! Besides criterion's medians it prints the p50 and p99 of 200 calls of each kind, as the
//! goal (p99 under 50 ms) is about the tail.
//!
//! `cargo bench -p nearcast --bench results`

use chrono::NaiveDate;
use criterion::{Criterion, criterion_group, criterion_main};
use nearcast::store::{SqliteStore, Sync};
use nearcast_core::campaign_results::{
    By, Cell, CellKey, CellLevel, Money, store_cells, summarise,
};
use nearcast_core::ids::Id;
use nearcast_core::ports::{Commit, StateStore};
use std::hint::black_box;
use std::time::Instant;

const DECISIONS: u64 = 1_000_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stores, days) = (env("RESULTS_STORES", 200), env("RESULTS_DAYS", 30));
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("r.db"), Sync::Normal).unwrap();
    let campaign = Id::parse("cmp-results").unwrap();
    let day0: NaiveDate = "2026-11-01".parse().unwrap();
    // Each decision's cell and what it did, as the engine would count it; committed in
    // groups of 1,000 decisions, each commit adding to the cells it touched.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let t = Instant::now();
    let per_commit = 1_000;
    for k in 0..DECISIONS / per_commit {
        let mut deltas = std::collections::BTreeMap::<CellKey, Cell>::new();
        for _ in 0..per_commit {
            let key = CellKey {
                day: day0 + chrono::Duration::days(next(days) as i64),
                store: format!("s{}", next(stores)),
                variant: if next(2) == 0 { "a" } else { "b" }.into(),
            };
            let cell = deltas.entry(key).or_default();
            cell.triggered += 1;
            match next(10) {
                0..=3 => {
                    *cell.suppressed.entry("capped".into()).or_default() += 1;
                }
                4..=5 => {
                    cell.eligible += 1;
                    *cell
                        .suppressed
                        .entry("another_offer_chosen".into())
                        .or_default() += 1;
                }
                6 => {
                    cell.eligible += 1;
                    cell.held_out.n += 1;
                    cell.held_out.visited += u64::from(next(5) == 0);
                    cell.held_out.purchased += u64::from(next(8) == 0);
                }
                _ => {
                    cell.eligible += 1;
                    let a = &mut cell.treated;
                    a.n += 1;
                    a.opened += u64::from(next(3) == 0);
                    a.visited += u64::from(next(4) == 0);
                    a.redeemed += u64::from(next(10) == 0);
                    if next(6) == 0 {
                        a.purchased += 1;
                        let amount = 5.0 + next(40) as f64;
                        let m = a.revenue.entry("EUR".into()).or_insert(Money::default());
                        m.sum += amount;
                        m.sum_sq += amount * amount;
                    }
                }
            }
        }
        let commit = Commit {
            cells: nearcast_core::campaign_results::with_rollups(
                deltas
                    .into_iter()
                    .map(|(k, v)| ((campaign.clone(), k), v))
                    .collect(),
            ),
            events: vec![(
                Id::parse(&format!("e{k}")).unwrap(),
                nearcast_core::ports::EventResult {
                    kind: "location".into(),
                    decision: None,
                },
            )],
            ..Commit::new(Id::parse("bench-user").unwrap(), 0)
        };
        rt.block_on(store.commit(&commit)).unwrap();
    }
    let cells = rt
        .block_on(store.campaign_cells(&campaign, CellLevel::StoreDays, None, None))
        .unwrap();
    let rollups = rt
        .block_on(store.campaign_cells(&campaign, CellLevel::Days, None, None))
        .unwrap();
    let months = rt
        .block_on(store.campaign_cells(&campaign, CellLevel::StoreMonths, None, None))
        .unwrap();
    assert_eq!(
        months.values().map(|c| c.triggered).sum::<u64>(),
        DECISIONS,
        "and in its store's month"
    );
    assert_eq!(
        rollups.values().map(|c| c.triggered).sum::<u64>(),
        DECISIONS,
        "and in its day's roll-up"
    );
    let triggered: u64 = cells.values().map(|c| c.triggered).sum();
    assert_eq!(triggered, DECISIONS, "every decision is in a cell");
    println!(
        "results: {DECISIONS} decisions in {} cells ({stores} stores x {days} days x 2 variants), {} day roll-ups and {} store months, written in {:.1} s",
        cells.len(),
        rollups.len(),
        months.len(),
        t.elapsed().as_secs_f64()
    );

    let week = (
        day0 + chrono::Duration::days(7),
        day0 + chrono::Duration::days(13),
    );
    // The second day of the first month to the second last of the third (or of the last
    // month of the layout): whole months inside, edge days at both ends.
    let ragged = (
        day0 + chrono::Duration::days(1),
        day0 + chrono::Duration::days(days as i64 - 2),
    );
    let cases: [(&str, Option<NaiveDate>, Option<NaiveDate>, Option<By>); 7] = [
        ("whole campaign", None, None, None),
        ("by day", None, None, Some(By::Day)),
        ("by store", None, None, Some(By::Store)),
        ("one week by day", Some(week.0), Some(week.1), Some(By::Day)),
        (
            "one week by store",
            Some(week.0),
            Some(week.1),
            Some(By::Store),
        ),
        (
            "one month by store",
            Some(day0),
            Some(day0 + chrono::Duration::days(29)),
            Some(By::Store),
        ),
        (
            "all but the first and last day by store",
            Some(ragged.0),
            Some(ragged.1),
            Some(By::Store),
        ),
    ];
    let answer = |from, to, by| {
        let cells = if by == Some(By::Store) {
            rt.block_on(store_cells(&store, &campaign, from, to))
        } else {
            rt.block_on(store.campaign_cells(&campaign, CellLevel::Days, from, to))
        }
        .unwrap();
        let r = summarise(&cells, from, to, by);
        // What the route writes back.
        serde_json::to_vec(&r).unwrap().len()
    };
    for (name, from, to, by) in cases {
        let mut times: Vec<f64> = (0..200)
            .map(|_| {
                let t = Instant::now();
                black_box(answer(from, to, by));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "results: {name}: p50 {:.2} ms, p99 {:.2} ms (200 calls)",
            times[100], times[197]
        );
    }
    let mut g = c.benchmark_group("campaign_results");
    g.sample_size(20);
    for (name, from, to, by) in cases {
        g.bench_function(name, |b| b.iter(|| black_box(answer(from, to, by))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
