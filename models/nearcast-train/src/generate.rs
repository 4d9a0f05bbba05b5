//! A seeded generator of realistic logged decisions, for training and testing the ranker
//! before real exports exist. Its assumptions are listed in models/README.md; the numbers
//! are the constants below.
//!
//! The world: users with category tastes and daily routines walk past the real stores of
//! events/stores.json (central Helsinki, © OpenStreetMap contributors, ODbL 1.0) over some
//! weeks; hourly weather follows a Markov chain with a seasonal and daily temperature; each
//! decision scores 1 to 4 candidate offers of the stores within 300 m of the fix, and each
//! candidate is opened with the probability of a *true* response model ([`true_logit`])
//! that the trainer never sees. The output is the training-data format
//! `nearcast-training/1`. Everything is drawn from one `StdRng` seeded with the configured
//! seed, so a seed gives the same file (with the locked `rand` version).

use crate::data::{TrainingCandidate, TrainingRecord};
use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use nearcast_core::context::{Context, Daypart};
use nearcast_core::export::FORMAT;

/// Product groups the generator's world knows (its own simulation, not the model's: the
/// model sees only the category names).
pub const GROUPS: [&str; 6] = ["coffee", "food", "rainwear", "clothing", "grocery", "other"];

/// Maps an offer category of the generated world onto its group.
pub fn group_of(category: &str) -> usize {
    match category {
        "coffee" | "cafe" | "bakery" | "tea" | "pastry" => 0,
        "food" | "restaurant" | "fast_food" | "dining" | "pub" | "bar" | "ice_cream" | "lunch" => 1,
        "umbrella" | "rainwear" | "outdoor" | "raincoat" => 2,
        "clothes" | "clothing" | "shoes" | "fashion" | "boutique" | "department_store" => 3,
        "grocery" | "supermarket" | "convenience" | "deli" | "greengrocer" => 4,
        _ => 5,
    }
}
use nearcast_core::weather::{Condition, Weather};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Time zone of the simulated city.
pub const TZ: Tz = chrono_tz::Europe::Helsinki;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// RNG seed.
    pub seed: u64,
    /// Number of decisions.
    pub decisions: usize,
    /// Number of users.
    pub users: usize,
    /// First local day.
    pub start: NaiveDate,
    /// Number of days.
    pub days: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 7,
            decisions: 200_000,
            users: 2_000,
            start: NaiveDate::from_ymd_opt(2026, 9, 28).expect("valid date"),
            days: 56,
        }
    }
}

/// The stores the generated users walk past: the demo's real places.
const STORES_JSON: &str = include_str!("../../../events/stores.json");

/// Store categories that also sell umbrellas: their stores carry a second offer, in the
/// `umbrella` category.
pub const UMBRELLA_SELLERS: [&str; 3] = ["convenience", "department_store", "supermarket"];

/// Candidates are the offers of stores within this distance of the fix, metres.
pub const NEAR_M: f64 = 300.0;

/// A fix lies within this distance of the store its user is heading to, metres.
pub const FIX_SPREAD_M: f64 = 80.0;

/// Share of a user's decisions near one of their three regular places (the others are
/// anywhere in the area).
pub const REGULAR: f64 = 0.7;

/// Share of users in the holdout group: their chosen candidate is held out, not pushed.
pub const HOLDOUT: f64 = 0.1;

/// Share of decisions that also log a candidate dropped before scoring (by daypart).
pub const DROPPED: f64 = 0.1;

/// One offer of one store.
#[derive(Debug, Clone)]
pub struct Offer {
    /// `off-<store id>` or `off-<store id>-umbrella`.
    pub offer_id: String,
    /// The store's id.
    pub store_id: String,
    /// The offer's category (the store's, or `umbrella`).
    pub category: String,
    /// The store's centre.
    pub lat: f64,
    /// The store's centre.
    pub lon: f64,
}

/// The offers of the stores of events/stores.json: one per store in its category, plus an
/// umbrella offer at [`UMBRELLA_SELLERS`].
pub fn offers() -> Vec<Offer> {
    let stores: Vec<serde_json::Value> =
        serde_json::from_str(STORES_JSON).expect("events/stores.json is valid");
    let mut out = Vec::new();
    for s in &stores {
        let id = s["id"].as_str().expect("store id");
        let category = s["category"].as_str().expect("store category");
        let fence = &s["fence"];
        let (lat, lon) = if fence["type"] == "circle" {
            (
                fence["lat"].as_f64().expect("lat"),
                fence["lon"].as_f64().expect("lon"),
            )
        } else {
            // Mean of the ring's vertices, without the closing one.
            let ring = fence["geometry"]["coordinates"][0]
                .as_array()
                .expect("polygon ring");
            let pts = &ring[..ring.len() - 1];
            let mean = |k: usize| {
                pts.iter()
                    .map(|p| p[k].as_f64().expect("coordinate"))
                    .sum::<f64>()
                    / pts.len() as f64
            };
            (mean(1), mean(0))
        };
        let mut push = |offer_id: String, category: &str| {
            out.push(Offer {
                offer_id,
                store_id: id.to_string(),
                category: category.to_string(),
                lat,
                lon,
            });
        };
        push(format!("off-{id}"), category);
        if UMBRELLA_SELLERS.contains(&category) {
            push(format!("off-{id}-umbrella"), "umbrella");
        }
    }
    out
}

/// Great-circle distance, metres.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const R: f64 = 6_371_008.8;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * R * a.sqrt().asin()
}

/// Probability that a user likes a group (taste drawn from [0.5, 1]; otherwise [0, 0.35]).
pub const LIKE: [f64; GROUPS.len()] = [0.45, 0.50, 0.15, 0.30, 0.40, 0.20];

/// Share of users with personalisation consent.
pub const CONSENT: f64 = 0.8;

/// Share of decisions whose weather was unknown to the decider (the outcome still depends on
/// the real weather).
pub const WEATHER_MISSING: f64 = 0.02;

/// Number of candidates: P(1), P(2), P(3), P(4).
pub const N_CANDIDATES: [f64; 4] = [0.35, 0.30, 0.20, 0.15];

/// The true response model's terms (logit scale), per group where they are arrays.
pub mod truth {
    /// Base logit per group.
    pub const BASE: [f64; 6] = [-4.2, -4.2, -4.5, -4.3, -4.0, -4.4];
    /// Per unit of true taste (taste in [0, 1]).
    pub const AFFINITY: f64 = 2.8;
    /// When the user bought in the group before.
    pub const BOUGHT: f64 = 0.35;
    /// Per km of distance (candidates are 0-300 m away).
    pub const DISTANCE_PER_KM: f64 = -1.2;
    /// Rain, snow or storm.
    pub const WET: [f64; 6] = [0.5, 0.0, 1.6, -0.2, 0.1, 0.0];
    /// Morning (06-11).
    pub const MORNING: [f64; 6] = [0.9, -0.3, 0.0, 0.0, 0.0, 0.0];
    /// Midday (11-14).
    pub const MIDDAY: [f64; 6] = [0.0, 0.9, 0.0, 0.0, 0.1, 0.0];
    /// Evening (17-21): dining out, groceries on the way home.
    pub const EVENING: [f64; 6] = [-0.2, 0.6, 0.0, 0.0, 0.3, 0.0];
    /// Night (21-06), all groups.
    pub const NIGHT: f64 = -0.6;
    /// Saturday or Sunday.
    pub const WEEKEND: [f64; 6] = [0.0, 0.2, 0.0, 0.7, 0.2, 0.1];
    /// Cold raises coffee: `COLD_COFFEE * sigmoid((4 - temp_c) / 1.5)`, a smooth step at 4 °C.
    pub const COLD_COFFEE: f64 = 0.6;
    /// Standard deviation of a hidden per-user responsiveness.
    pub const USER_SD: f64 = 0.4;
}

/// P(redeemed | opened) = `REDEEM_BASE + REDEEM_TASTE * taste`.
pub const REDEEM_BASE: f64 = 0.2;
/// See [`REDEEM_BASE`].
pub const REDEEM_TASTE: f64 = 0.4;
/// P(purchased | not redeemed) = `PURCHASE_BASE + PURCHASE_TASTE * taste`: buying in the
/// category anyway, within the attribution window.
pub const PURCHASE_BASE: f64 = 0.01;
/// See [`PURCHASE_BASE`].
pub const PURCHASE_TASTE: f64 = 0.05;

/// The true logit of a candidate being opened.
#[allow(clippy::too_many_arguments, reason = "the terms of the model")]
pub fn true_logit(
    group: usize,
    daypart: Daypart,
    weekend: bool,
    weather: Weather,
    taste: f64,
    bought: bool,
    distance_m: f64,
    user: f64,
) -> f64 {
    use truth::*;
    let mut z = BASE[group] + AFFINITY * taste + DISTANCE_PER_KM * distance_m / 1000.0 + user;
    if bought {
        z += BOUGHT;
    }
    if weather.condition.is_wet() {
        z += WET[group];
    }
    z += match daypart {
        Daypart::Morning => MORNING[group],
        Daypart::Midday => MIDDAY[group],
        Daypart::Afternoon => 0.0,
        Daypart::Evening => EVENING[group],
        Daypart::Night => NIGHT,
    };
    if weekend {
        z += WEEKEND[group];
    }
    if group == 0 {
        z += COLD_COFFEE * sigmoid((4.0 - weather.temp_c) / 1.5);
    }
    z
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Routines: hourly activity weights (local hours 0-23) on weekdays and at weekends.
struct Routine {
    weekday: [f64; 24],
    weekend: [f64; 24],
}

fn profile(spans: &[(std::ops::RangeInclusive<usize>, f64)], rest: f64) -> [f64; 24] {
    let mut w = [rest; 24];
    for (r, v) in spans {
        for h in r.clone() {
            w[h] = *v;
        }
    }
    w
}

fn routines() -> [Routine; 3] {
    let weekend = profile(&[(10..=18, 2.0), (19..=22, 1.0), (8..=9, 0.7)], 0.1);
    [
        // Commuters: morning and evening peaks, lunch.
        Routine {
            weekday: profile(
                &[
                    (7..=8, 3.0),
                    (9..=9, 1.5),
                    (11..=13, 2.0),
                    (16..=18, 3.0),
                    (19..=21, 1.0),
                    (6..=6, 0.8),
                ],
                0.1,
            ),
            weekend,
        },
        // Daytime people (students, parents, remote workers).
        Routine {
            weekday: profile(
                &[(8..=16, 2.0), (17..=20, 1.2), (21..=22, 0.4), (7..=7, 0.6)],
                0.05,
            ),
            weekend,
        },
        // Evening people (night owls, shift workers).
        Routine {
            weekday: profile(
                &[(11..=14, 1.0), (15..=23, 2.5), (0..=1, 0.8), (2..=3, 0.2)],
                0.05,
            ),
            weekend: profile(&[(12..=23, 2.0), (0..=2, 1.0), (10..=11, 0.8)], 0.1),
        },
    ]
}

/// Share of users per routine.
const ROUTINE_MIX: [f64; 3] = [0.45, 0.30, 0.25];

struct User {
    /// True taste per group, in [0, 1]: drives responses; never logged.
    taste: [f64; GROUPS.len()],
    /// Per category of [`offers`] (sorted names): in-app behaviour history.
    history: Vec<History>,
    /// Offer indices of three regular places.
    regular: [usize; 3],
    holdout: bool,
    consent: bool,
    routine: usize,
    shift: i64,
    responsiveness: f64,
}

/// What the app learnt about a user and one category name before the simulated weeks.
#[derive(Clone, Copy)]
struct History {
    /// The engine's affinity after the user's views, add-to-carts and purchases
    /// (`UserState::learn`: each moves it towards 1 by 0.05, 0.15 and 0.3); 0 without any.
    affinity: f64,
    /// At least one purchase in the category.
    bought: bool,
}

/// Draws an index with probability proportional to `weights`.
fn pick(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Rounds to `decimals` decimal places (so that the JSON shows `8.2`, not `8.200000000000001`).
fn round_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// A Poisson draw (Knuth; fine for the small means used here).
fn poisson(rng: &mut StdRng, mean: f64) -> u32 {
    let limit = (-mean).exp();
    let (mut k, mut p) = (0, rng.random::<f64>());
    while p > limit {
        k += 1;
        p *= rng.random::<f64>();
    }
    k
}

/// In-app behaviour before the simulated weeks: per category name, counts of views,
/// add-to-carts and purchases with means proportional to the user's app engagement and to
/// `taste^1.5` of the category's group; the affinity follows the engine's update rule.
fn history(rng: &mut StdRng, taste: f64, engagement: f64) -> History {
    let rate = engagement * taste.powf(1.5) * rng.random_range(0.5..1.5);
    let (views, carts, purchases) = (
        poisson(rng, 6.0 * rate),
        poisson(rng, 1.2 * rate),
        poisson(rng, 0.5 * rate),
    );
    let mut affinity = 0.0;
    for (n, w) in [(views, 0.05), (carts, 0.15), (purchases, 0.3)] {
        for _ in 0..n {
            affinity += w * (1.0 - affinity);
        }
    }
    History {
        affinity: round_to(affinity, 2),
        bought: purchases > 0,
    }
}

fn user(rng: &mut StdRng, categories: &[&str], n_offers: usize) -> User {
    let mut taste = [0.0; GROUPS.len()];
    for (g, t) in taste.iter_mut().enumerate() {
        *t = if rng.random_bool(LIKE[g]) {
            0.5 + 0.5 * rng.random::<f64>()
        } else {
            0.35 * rng.random::<f64>()
        };
    }
    // App engagement: log-normal, mean about 1.
    let engagement = (0.7 * normal(rng) - 0.25).exp();
    let history = categories
        .iter()
        .map(|c| history(rng, taste[group_of(c)], engagement))
        .collect();
    let regular = [
        rng.random_range(0..n_offers),
        rng.random_range(0..n_offers),
        rng.random_range(0..n_offers),
    ];
    User {
        taste,
        history,
        regular,
        holdout: rng.random_bool(HOLDOUT),
        consent: rng.random_bool(CONSENT),
        routine: pick(rng, &ROUTINE_MIX),
        shift: rng.random_range(-1..=1),
        responsiveness: truth::USER_SD * normal(rng),
    }
}

/// Mean air temperature of a day of the year in Helsinki, °C (coldest around 20 January).
pub fn seasonal_temp(day_of_year: u32) -> f64 {
    6.0 - 11.5 * (std::f64::consts::TAU * (f64::from(day_of_year) - 20.0) / 365.0).cos()
}

/// Hourly weather over `days` local days from `start`: a Markov chain over clear, cloudy and
/// precipitation (snow below 0.5 °C, else rain); temperature = seasonal mean + a daily cycle
/// peaking at 15:00 (damped under clouds) + an AR(1) anomaly.
fn weather_series(rng: &mut StdRng, start: NaiveDate, days: u32) -> Vec<Weather> {
    // States: 0 clear, 1 cloudy, 2 precipitation.
    const P: [[f64; 3]; 3] = [[0.92, 0.07, 0.01], [0.05, 0.88, 0.07], [0.02, 0.13, 0.85]];
    let mut state = 1usize;
    let mut anomaly = 0.0;
    let mut out = Vec::with_capacity(days as usize * 24);
    for d in 0..days {
        let date = start + Duration::days(i64::from(d));
        let mean = seasonal_temp(date.ordinal());
        for h in 0..24u32 {
            state = pick(rng, &P[state]);
            anomaly = 0.97 * anomaly + 0.6 * normal(rng);
            let amplitude = if state == 0 { 3.0 } else { 1.5 };
            let daily = amplitude * (std::f64::consts::TAU * (f64::from(h) - 9.0) / 24.0).sin();
            let temp_c = round_to(
                mean + daily + anomaly - if state == 2 { 0.5 } else { 0.0 },
                1,
            );
            let condition = match state {
                0 => Condition::Clear,
                1 => Condition::Cloudy,
                _ if temp_c < 0.5 => Condition::Snow,
                _ => Condition::Rain,
            };
            out.push(Weather { condition, temp_c });
        }
    }
    out
}

fn local_to_utc(naive: NaiveDateTime) -> chrono::DateTime<Utc> {
    use chrono::LocalResult;
    match TZ.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        // A spring-forward gap: the same wall time an hour later exists.
        LocalResult::None => local_to_utc(naive + Duration::hours(1)),
    }
}

/// Moves a point by `d` metres towards `bearing` (radians from north); fine at city scale.
fn offset(lat: f64, lon: f64, d: f64, bearing: f64) -> (f64, f64) {
    let dlat = d * bearing.cos() / 111_320.0;
    let dlon = d * bearing.sin() / (111_320.0 * lat.to_radians().cos());
    (lat + dlat, lon + dlon)
}

/// Generates `cfg.decisions` records sorted by time; `progress` is told of each batch.
pub fn generate(cfg: &Config, mut progress: impl FnMut(u64)) -> Vec<TrainingRecord> {
    assert!(
        cfg.days > 0 && cfg.users > 0,
        "need at least one day and one user"
    );
    let offers = offers();
    let mut categories: Vec<&str> = offers.iter().map(|o| o.category.as_str()).collect();
    categories.sort_unstable();
    categories.dedup();
    let category_index = |c: &str| categories.binary_search(&c).expect("known category");
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let routines = routines();
    let users: Vec<User> = (0..cfg.users)
        .map(|_| user(&mut rng, &categories, offers.len()))
        .collect();
    // How often each user is near stores with offers: log-normal activity.
    let activity: Vec<f64> = (0..cfg.users)
        .map(|_| (0.6 * normal(&mut rng)).exp())
        .collect();
    let mut cumulative = Vec::with_capacity(cfg.users);
    let mut acc = 0.0;
    for a in &activity {
        acc += a;
        cumulative.push(acc);
    }
    let weather = weather_series(&mut rng, cfg.start, cfg.days);

    let mut out = Vec::with_capacity(cfg.decisions);
    let mut nearby: Vec<(usize, f64)> = Vec::with_capacity(offers.len());
    for i in 0..cfg.decisions {
        let r = rng.random::<f64>() * acc;
        let ui = cumulative.partition_point(|c| *c <= r).min(cfg.users - 1);
        let u = &users[ui];
        let day = rng.random_range(0..cfg.days);
        let date = cfg.start + Duration::days(i64::from(day));
        let weekend_day = date.weekday().number_from_monday() >= 6;
        let routine = &routines[u.routine];
        let weights = if weekend_day {
            &routine.weekend
        } else {
            &routine.weekday
        };
        let hour = (pick(&mut rng, weights) as i64 + u.shift).rem_euclid(24) as u32;
        let (minute, second) = (rng.random_range(0..60), rng.random_range(0..60));
        let naive = date.and_hms_opt(hour, minute, second).expect("valid time");
        let at = local_to_utc(naive);
        let real_weather = weather[day as usize * 24 + hour as usize];
        let logged_weather = (!rng.random_bool(WEATHER_MISSING)).then_some(real_weather);
        let ctx = Context::new(at, TZ, logged_weather);

        // Where: near a regular place or anywhere, within FIX_SPREAD_M of that store.
        let anchor = if rng.random_bool(REGULAR) {
            u.regular[rng.random_range(0..3)]
        } else {
            rng.random_range(0..offers.len())
        };
        let (lat, lon) = offset(
            offers[anchor].lat,
            offers[anchor].lon,
            FIX_SPREAD_M * rng.random::<f64>().sqrt(),
            std::f64::consts::TAU * rng.random::<f64>(),
        );
        nearby.clear();
        nearby.extend(offers.iter().enumerate().filter_map(|(k, o)| {
            let d = distance_m(lat, lon, o.lat, o.lon);
            (d <= NEAR_M).then_some((k, d))
        }));
        let n = (1 + pick(&mut rng, &N_CANDIDATES)).min(nearby.len());
        // A partial Fisher-Yates shuffle picks n distinct nearby offers.
        for k in 0..n {
            let j = rng.random_range(k..nearby.len());
            nearby.swap(k, j);
        }
        let mut candidates = Vec::with_capacity(n + 1);
        for &(k, d) in &nearby[..n] {
            let o = &offers[k];
            let g = group_of(&o.category);
            let h = u.history[category_index(&o.category)];
            let distance_m = round_to(d, 1);
            let z = true_logit(
                g,
                ctx.daypart,
                ctx.weekend,
                real_weather,
                u.taste[g],
                h.bought,
                distance_m,
                u.responsiveness,
            );
            // The simulated collection period shows every scored candidate (see
            // models/README.md), except to the holdout group.
            let sent = !u.holdout;
            let opened = rng.random_bool(sigmoid(z)) && sent;
            let redeemed = opened && rng.random_bool(REDEEM_BASE + REDEEM_TASTE * u.taste[g]);
            let purchased =
                redeemed || rng.random_bool(PURCHASE_BASE + PURCHASE_TASTE * u.taste[g]);
            // Logged as serving sees it: the learnt affinity (0 without behaviour), only
            // with personalisation consent; the score of a naive earlier model.
            let affinity = u.consent.then_some(h.affinity);
            candidates.push(TrainingCandidate {
                offer_id: o.offer_id.clone(),
                category: o.category.clone(),
                store_id: o.store_id.clone(),
                distance_m,
                affinity,
                bought_category: u.consent && h.bought,
                score: Some(round_to(0.05 + 0.1 * affinity.unwrap_or(0.0), 4)),
                reason: None,
                sent,
                held_out: false,
                opened,
                redeemed,
                purchased,
            });
        }
        if u.holdout
            && let Some(c) = candidates.first_mut()
        {
            c.held_out = true;
        }
        if n < nearby.len() && rng.random_bool(DROPPED) {
            let (k, d) = nearby[n];
            let o = &offers[k];
            candidates.push(TrainingCandidate {
                offer_id: o.offer_id.clone(),
                category: o.category.clone(),
                store_id: o.store_id.clone(),
                distance_m: round_to(d, 1),
                affinity: None,
                bought_category: false,
                score: None,
                reason: Some("daypart".into()),
                sent: false,
                held_out: false,
                opened: false,
                redeemed: false,
                purchased: false,
            });
        }
        let local = at.with_timezone(&TZ);
        let cell = h3o::LatLng::new(lat, lon)
            .expect("finite coordinates")
            .to_cell(h3o::Resolution::Nine);
        out.push(TrainingRecord {
            format: FORMAT.to_string(),
            decision_id: format!("gen-{}-{i}", cfg.seed),
            user: format!(
                "u-{:08x}",
                crate::data::fnv1a64(format!("{}:{ui}", cfg.seed).as_bytes()) as u32
            ),
            at,
            local_time: local.to_rfc3339(),
            daypart: ctx.daypart,
            weekday: local.format("%a").to_string(),
            weekend: ctx.weekend,
            cell: cell.to_string(),
            weather: ctx.weather,
            personalised: u.consent,
            model_version: "generator".into(),
            verdict: if u.holdout { "held_out" } else { "sent" }.into(),
            reason: None,
            candidates,
        });
        if (i + 1) % 4096 == 0 {
            progress(4096);
        }
    }
    progress((cfg.decisions % 4096) as u64);
    out.sort_by_key(|d| d.at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> Vec<TrainingRecord> {
        generate(
            &Config {
                seed,
                decisions: 3_000,
                users: 200,
                ..Config::default()
            },
            |_| {},
        )
    }

    #[test]
    fn a_seed_gives_the_same_bytes_and_another_seed_other_data() {
        let bytes = |seed| {
            let mut b = Vec::new();
            crate::data::write(&mut b, &small(seed)).unwrap();
            b
        };
        assert_eq!(bytes(7), bytes(7));
        assert_ne!(bytes(7), bytes(8));
    }

    #[test]
    fn offers_come_from_the_real_stores_and_map_onto_groups() {
        let offers = offers();
        assert!(offers.len() > 76, "one per store plus umbrellas");
        assert!(offers.iter().any(|o| o.category == "umbrella"));
        for o in &offers {
            assert!((60.15..60.19).contains(&o.lat) && (24.92..24.96).contains(&o.lon));
        }
        // Every group has offers.
        for g in 0..GROUPS.len() {
            assert!(offers.iter().any(|o| group_of(&o.category) == g), "{g}");
        }
        assert!((distance_m(60.17, 24.94, 60.171, 24.94) - 111.2).abs() < 0.5);
    }

    #[test]
    fn records_are_valid_sorted_in_range_and_plausible() {
        let ds = small(7);
        assert!(ds.windows(2).all(|w| w[0].at <= w[1].at));
        let cfg = Config::default();
        for d in &ds {
            d.validate().unwrap();
            let local = d.at.with_timezone(&TZ).date_naive();
            assert!(local >= cfg.start && local < cfg.start + Duration::days(i64::from(cfg.days)));
            let scored: Vec<_> = d.candidates.iter().filter(|c| c.reason.is_none()).collect();
            assert!((1..=4).contains(&scored.len()));
            assert_eq!(d.cell.len(), 15);
            for c in &d.candidates {
                assert!((0.0..=NEAR_M).contains(&c.distance_m));
                assert!(c.affinity.is_none() || d.personalised);
                assert!(d.personalised || !c.bought_category);
                assert!(!c.opened || c.sent, "only a pushed offer is opened");
                assert!(!c.redeemed || c.opened);
                assert!(!(c.sent && c.held_out));
            }
            let held = d.candidates.iter().filter(|c| c.held_out).count();
            assert_eq!(d.verdict == "held_out", held == 1, "{}", d.verdict);
        }
        let scored = || ds.iter().flat_map(|d| &d.candidates).filter(|c| c.sent);
        let rate = scored().filter(|c| c.opened).count() as f64 / scored().count() as f64;
        assert!((0.03..0.15).contains(&rate), "open rate {rate}");
        let personalised = ds.iter().filter(|d| d.personalised).count() as f64 / ds.len() as f64;
        assert!((0.7..0.9).contains(&personalised), "{personalised}");
        let held_out = ds.iter().filter(|d| d.verdict == "held_out").count() as f64;
        assert!((0.03..0.2).contains(&(held_out / ds.len() as f64)));
        assert!(
            ds.iter()
                .any(|d| d.candidates.iter().any(|c| c.reason.is_some()))
        );
    }

    #[test]
    fn rain_raises_umbrella_opens_and_mornings_raise_coffee() {
        let ds = generate(
            &Config {
                decisions: 40_000,
                users: 500,
                ..Config::default()
            },
            |_| {},
        );
        let rate = |f: &dyn Fn(&TrainingRecord, &TrainingCandidate) -> bool| {
            let rows: Vec<bool> = ds
                .iter()
                .flat_map(|d| d.candidates.iter().map(move |c| (d, c)))
                .filter(|(d, c)| c.sent && f(d, c))
                .map(|(_, c)| c.opened)
                .collect();
            rows.iter().filter(|o| **o).count() as f64 / rows.len() as f64
        };
        let wet = |d: &TrainingRecord| d.weather.is_some_and(|w| w.condition.is_wet());
        let umbrella_wet = rate(&|d, c| c.category == "umbrella" && wet(d));
        let umbrella_dry = rate(&|d, c| c.category == "umbrella" && !wet(d));
        assert!(
            umbrella_wet > 1.8 * umbrella_dry,
            "{umbrella_wet} vs {umbrella_dry}"
        );
        let coffee_morning =
            rate(&|d, c| group_of(&c.category) == 0 && d.daypart == Daypart::Morning);
        let coffee_other =
            rate(&|d, c| group_of(&c.category) == 0 && d.daypart != Daypart::Morning);
        assert!(
            coffee_morning > 1.3 * coffee_other,
            "{coffee_morning} vs {coffee_other}"
        );
    }
}
