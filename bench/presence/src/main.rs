//! Evaluates Nearcast's presence rules (`nearcast_core::presence::update`, the code the
//! service runs for every location event) on simulated pedestrian walks between real
//! Helsinki stores, and reports how well the enters match the visits people made.
//!
//! See bench/presence/README.md for the model of the walks, the GPS errors, the fences and
//! the definitions of visit, detection and extra enter.

use chrono::{DateTime, Duration, Utc};
use nearcast_core::catalog::Catalog;
use nearcast_core::config::{CapPolicy, Store, parse_json};
use nearcast_core::event::Fix;
use nearcast_core::presence;
use nearcast_core::state::UserState;
use nearcast_core::trigger::{Params, Transition};
use serde_json::json;
use std::f64::consts::PI;

/// Seconds between fixes.
const DT_S: f64 = 2.0;
/// Time truly inside that makes a visit, seconds.
const VISIT_MIN_INSIDE_S: f64 = 60.0;
/// Truly this far outside the fence ends a visit, metres.
const LEAVE_M: f64 = 50.0;
/// Truly outside for this long ends a visit, seconds.
const LEAVE_AFTER_S: f64 = 180.0;
/// An enter this long after the last moment truly inside still belongs to the visit, seconds.
const LATE_S: f64 = 60.0;
/// An enter this long before the person truly got in still counts for the visit, seconds.
const EARLY_S: f64 = 30.0;
/// Noise added per axis and fix in the noisy variant, metres.
const NOISE_M: f64 = 15.0;

const LAT0: f64 = 60.1715;
const LON0: f64 = 24.944;
const M_PER_DEG: f64 = 111_195.0;

// ------------------------------------------------------------------ random numbers

/// SplitMix64: small, seedable, the same on every platform.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f(&mut self) -> f64 {
        (self.u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.f()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.f() * n as f64) as usize % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        self.f() < p
    }
    fn normal(&mut self) -> f64 {
        let u = self.f().max(1e-300);
        let v = self.f();
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
    }
}

// ------------------------------------------------------------------ geometry

#[derive(Debug, Clone, Copy, PartialEq)]
struct P {
    x: f64,
    y: f64,
}

impl P {
    fn add(self, o: P) -> P {
        P {
            x: self.x + o.x,
            y: self.y + o.y,
        }
    }
    fn sub(self, o: P) -> P {
        P {
            x: self.x - o.x,
            y: self.y - o.y,
        }
    }
    fn mul(self, k: f64) -> P {
        P {
            x: self.x * k,
            y: self.y * k,
        }
    }
    fn len(self) -> f64 {
        self.x.hypot(self.y)
    }
    fn polar(r: f64, a: f64) -> P {
        P {
            x: r * a.cos(),
            y: r * a.sin(),
        }
    }
}

fn to_ll(p: P) -> (f64, f64) {
    (
        LAT0 + p.y / M_PER_DEG,
        LON0 + p.x / (M_PER_DEG * LAT0.to_radians().cos()),
    )
}

fn to_xy(lat: f64, lon: f64) -> P {
    P {
        x: (lon - LON0) * M_PER_DEG * LAT0.to_radians().cos(),
        y: (lat - LAT0) * M_PER_DEG,
    }
}

// ------------------------------------------------------------------ stores

#[derive(Debug, Clone)]
struct Poi {
    id: String,
    at: P,
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Shops, cafés, restaurants, bars, pharmacies and banks from the OpenStreetMap extract.
fn load_pois(path: &str) -> Vec<Poi> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = text.lines();
    let header = split_csv(lines.next().expect("header"));
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    let (ty, id, shop, amenity, lat, lon) = (
        col("osm_type"),
        col("osm_id"),
        col("shop"),
        col("amenity"),
        col("lat"),
        col("lon"),
    );
    const AMENITIES: [&str; 9] = [
        "restaurant",
        "cafe",
        "fast_food",
        "pub",
        "bar",
        "pharmacy",
        "bank",
        "ice_cream",
        "cinema",
    ];
    lines
        .filter(|l| !l.trim().is_empty())
        .map(split_csv)
        .filter(|r| !r[shop].is_empty() || AMENITIES.contains(&r[amenity].as_str()))
        .filter_map(|r| {
            Some(Poi {
                id: format!("osm-{}-{}", r[ty], r[id]),
                at: to_xy(r[lat].parse().ok()?, r[lon].parse().ok()?),
            })
        })
        .collect()
}

// ------------------------------------------------------------------ walks

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A store the walk stops at (inside its fence).
    Destination,
    /// A store the person stands beside, outside its fence.
    EdgeStand,
    /// The route crosses the fence.
    Through,
    /// The route grazes the fence just inside its edge.
    GrazeIn,
    /// The route passes just outside the fence.
    GrazeOut,
}

#[derive(Debug, Clone)]
struct FenceSpec {
    store: String,
    centre: P,
    /// Circle radius, or a square's half side (apothem).
    r: f64,
    /// `Some(angle)`: a square rotated by the angle; `None`: a circle.
    square: Option<f64>,
    role: Role,
}

impl FenceSpec {
    fn store(&self) -> Store {
        let fence = match self.square {
            None => {
                let (lat, lon) = to_ll(self.centre);
                json!({"type": "circle", "lat": lat, "lon": lon, "radius_m": self.r})
            }
            Some(a) => {
                let mut ring: Vec<serde_json::Value> = (0..4)
                    .map(|k| {
                        let c = P::polar(self.r * 2f64.sqrt(), a + PI / 4.0 + k as f64 * PI / 2.0);
                        let (lat, lon) = to_ll(self.centre.add(c));
                        json!([lon, lat])
                    })
                    .collect();
                ring.push(ring[0].clone());
                json!({"type": "polygon", "geometry": {"type": "Polygon", "coordinates": [ring]}})
            }
        };
        parse_json(
            &json!({"id": self.store, "name": self.store, "category": "shop",
            "time_zone": "Europe/Helsinki", "fence": fence}),
        )
        .expect("valid store")
    }
}

struct Walk {
    /// The true position every [`DT_S`] seconds.
    path: Vec<P>,
    fences: Vec<FenceSpec>,
}

fn walk_to(path: &mut Vec<P>, rng: &mut Rng, to: P) {
    let from = *path.last().expect("started");
    let v = rng.range(1.0, 1.6);
    let d = to.sub(from).len();
    let n = (d / (v * DT_S)).ceil().max(1.0) as usize;
    for k in 1..=n {
        path.push(from.add(to.sub(from).mul(k as f64 / n as f64)));
    }
}

fn stand(path: &mut Vec<P>, rng: &mut Rng, at: P) {
    // 1 to 20 minutes, log-uniform.
    let secs = (60f64.ln() + rng.f() * (20f64.ln())).exp();
    let n = (secs / DT_S) as usize;
    walk_to(path, rng, at);
    for _ in 0..n {
        path.push(at.add(P::polar(rng.range(0.0, 0.5), rng.range(0.0, 2.0 * PI))));
    }
}

fn distance_to_path(p: P, path: &[P]) -> f64 {
    path.iter()
        .map(|q| q.sub(p).len())
        .fold(f64::INFINITY, f64::min)
}

fn fence_shape(rng: &mut Rng, grid: f64) -> Option<f64> {
    rng.chance(0.35).then_some(grid + rng.range(-0.2, 0.2))
}

/// One walk: 5 to 9 stores, each reached along an L-shaped route on the street grid, with
/// stops inside their fences, now and then a wait beside another store, and fences on
/// stores near the route placed to be crossed, grazed inside or passed just outside.
fn make_walk(seed: u64, pois: &[Poi]) -> Walk {
    let mut rng = Rng::new(seed);
    let grid = rng.range(0.0, PI / 2.0);
    let u = P::polar(1.0, grid);
    let mut used = std::collections::HashSet::new();
    let mut fences = Vec::new();
    let start = &pois[rng.below(pois.len())];
    used.insert(start.id.clone());
    let mut path = vec![start.at.add(P::polar(10.0, rng.range(0.0, 2.0 * PI)))];
    let stops = 5 + rng.below(5);
    for _ in 0..stops {
        let cur = *path.last().expect("started");
        let mut dest = None;
        for _ in 0..200 {
            let p = &pois[rng.below(pois.len())];
            let d = p.at.sub(cur).len();
            if (150.0..600.0).contains(&d) && !used.contains(&p.id) {
                dest = Some(p.clone());
                break;
            }
        }
        let Some(dest) = dest else { break };
        used.insert(dest.id.clone());
        let r = rng.range(20.0, 80.0);
        let square = fence_shape(&mut rng, grid);
        let stop = dest
            .at
            .add(P::polar(rng.range(0.0, 0.5) * r, rng.range(0.0, 2.0 * PI)));
        fences.push(FenceSpec {
            store: dest.id.clone(),
            centre: dest.at,
            r,
            square,
            role: Role::Destination,
        });
        // The route: along the grid's first axis, then its second.
        let delta = stop.sub(cur);
        let along = delta.x * u.x + delta.y * u.y;
        let corner = cur.add(u.mul(along));
        let legs = [corner, stop];
        let wait_at = rng.chance(0.35).then(|| rng.range(0.2, 0.8));
        for (li, &to) in legs.iter().enumerate() {
            if li == 0
                && let Some(frac) = wait_at
            {
                // A wait beside a store near the first leg, outside its fence.
                let from = *path.last().expect("started");
                let spot = from.add(to.sub(from).mul(frac));
                let near = pois
                    .iter()
                    .filter(|p| !used.contains(&p.id))
                    .map(|p| (p, p.at.sub(spot).len()))
                    .filter(|(_, d)| (40.0..100.0).contains(d))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                let gap = rng.range(15.0, 30.0);
                if let Some((p, d)) = near.filter(|(_, d)| d - gap >= 20.0) {
                    used.insert(p.id.clone());
                    fences.push(FenceSpec {
                        store: p.id.clone(),
                        centre: p.at,
                        r: (d - gap).max(20.0),
                        square: None,
                        role: Role::EdgeStand,
                    });
                    walk_to(&mut path, &mut rng, spot);
                    stand(&mut path, &mut rng, spot);
                }
            }
            walk_to(&mut path, &mut rng, to);
        }
        stand(&mut path, &mut rng, stop);
    }
    // Fences on stores near the route: crossed, grazed inside, passed just outside.
    let mut near: Vec<(Poi, f64)> = pois
        .iter()
        .filter(|p| !used.contains(&p.id))
        .filter_map(|p| {
            let d = distance_to_path(p.at, &path);
            (d < 90.0).then(|| (p.clone(), d))
        })
        .collect();
    let want = 3 * stops;
    while !near.is_empty() && fences.len() < stops + want {
        let (p, d) = near.swap_remove(rng.below(near.len()));
        let (role, r) = match rng.below(3) {
            0 => (Role::Through, d + rng.range(15.0, 40.0)),
            1 => (Role::GrazeIn, d + rng.range(3.0, 10.0)),
            _ => (Role::GrazeOut, d - rng.range(5.0, 20.0)),
        };
        if !(20.0..=80.0).contains(&r) {
            continue;
        }
        fences.push(FenceSpec {
            store: p.id.clone(),
            centre: p.at,
            r,
            // Squares only where the role does not depend on the exact edge.
            square: (role == Role::Through)
                .then(|| fence_shape(&mut rng, grid))
                .flatten(),
            role,
        });
    }
    Walk { path, fences }
}

// ------------------------------------------------------------------ GPS errors

/// What a phone reports along a walk: slowly varying street-canyon bias (AR(1), 5 to 20 m
/// RMS, drawn per walk), white jitter, bursts of jumps of hundreds of metres, and an
/// accuracy radius loosely related to the real error.
/// The phone's fixes along `path` (position and reported accuracy), and the path as the phone
/// recorded it: the true path plus the street-canyon bias and the jitter, without the
/// outliers (what a real trace, cleaned of its outliers, would show as the walk).
fn phone_fixes(seed: u64, path: &[P]) -> (Vec<(P, f64)>, Vec<P>) {
    let mut rng = Rng::new(seed ^ 0x005E_ED0F_F1C5);
    let bias_rms = rng.range(5.0, 20.0);
    let tau = rng.range(60.0, 300.0);
    let a = (-DT_S / tau).exp();
    let sb = bias_rms / 2f64.sqrt();
    let jitter = rng.range(2.0, 5.0);
    let mut b = P {
        x: sb * rng.normal(),
        y: sb * rng.normal(),
    };
    let mut burst = 0usize;
    let mut jump = P { x: 0.0, y: 0.0 };
    let mut jump_aware = false;
    let mut recorded = Vec::with_capacity(path.len());
    let fixes = path
        .iter()
        .map(|&t| {
            let k = (1.0 - a * a).sqrt() * sb;
            b = P {
                x: a * b.x + k * rng.normal(),
                y: a * b.y + k * rng.normal(),
            };
            let e = b.add(P {
                x: jitter * rng.normal(),
                y: jitter * rng.normal(),
            });
            let err = e.len();
            let mut acc = ((0.5 * err + 5.0).ln() + 0.4 * rng.normal()).exp();
            if burst == 0 && rng.chance(1.0 / 400.0) {
                burst = 1 + rng.below(5);
                jump = P::polar(rng.range(150.0, 1000.0), rng.range(0.0, 2.0 * PI));
                jump_aware = rng.chance(0.5);
            }
            let mut at = t.add(e);
            recorded.push(at);
            if burst > 0 {
                burst -= 1;
                at = at.add(jump);
                if jump_aware {
                    acc = rng.range(50.0, 300.0);
                }
            }
            (at, acc.clamp(3.0, 500.0))
        })
        .collect();
    (fixes, recorded)
}

// ------------------------------------------------------------------ scoring

#[derive(Debug, Default, Clone, Copy)]
struct Score {
    walks: usize,
    fixes: usize,
    fences: usize,
    visits: usize,
    detected: usize,
    second: usize,
    extra: usize,
    passes: usize,
    passes_entered: usize,
    enters: usize,
    delays: [usize; 4],
}

impl Score {
    fn add(&mut self, o: &Score) {
        self.walks += o.walks;
        self.fixes += o.fixes;
        self.fences += o.fences;
        self.visits += o.visits;
        self.detected += o.detected;
        self.second += o.second;
        self.extra += o.extra;
        self.passes += o.passes;
        self.passes_entered += o.passes_entered;
        self.enters += o.enters;
        for k in 0..4 {
            self.delays[k] += o.delays[k];
        }
    }
    fn pct(a: usize, b: usize) -> f64 {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    }
}

/// A stretch of time a fence truly held the person: from getting in until leaving, which
/// is being truly more than [`LEAVE_M`] outside, or truly outside at all for
/// [`LEAVE_AFTER_S`] (or the walk's end). `end` is the last moment inside plus [`LATE_S`]:
/// an enter up to then belongs to the episode.
struct Episode {
    fence: usize,
    start: f64,
    end: f64,
    inside_s: f64,
}

fn episodes(cat: &Catalog, path: &[P]) -> Vec<Episode> {
    let mut out = Vec::new();
    for (f, _) in cat.stores_at() {
        let shape = cat.shape(f);
        let f = f as usize;
        let mut cur: Option<(Episode, f64)> = None;
        for (i, &p) in path.iter().enumerate() {
            let t = i as f64 * DT_S;
            let (lat, lon) = to_ll(p);
            let inside = shape.contains(lat, lon);
            match cur.as_mut() {
                None if inside => {
                    cur = Some((
                        Episode {
                            fence: f,
                            start: t,
                            end: t,
                            inside_s: DT_S,
                        },
                        t,
                    ));
                }
                None => {}
                Some((e, last_in)) => {
                    if inside {
                        e.inside_s += DT_S;
                        *last_in = t;
                    } else if shape.distance_outside_m(lat, lon) > LEAVE_M
                        || t - *last_in >= LEAVE_AFTER_S
                    {
                        e.end = *last_in + LATE_S;
                        out.push(cur.take().expect("some").0);
                    }
                }
            }
        }
        if let Some((mut e, last_in)) = cur {
            e.end = last_in + LATE_S;
            out.push(e);
        }
    }
    out
}

fn t0() -> DateTime<Utc> {
    "2026-11-20T10:00:00Z".parse().expect("time")
}

/// The service's presence update for the fix `(position, accuracy)` stamped `t` seconds
/// into the walk.
fn feed(
    params: &Params,
    cat: &Catalog,
    state: &mut UserState,
    (p, acc): (P, f64),
    t: f64,
) -> Vec<(u32, Transition)> {
    let (lat, lon) = to_ll(p);
    let fix = Fix {
        lat,
        lon,
        accuracy_m: acc,
    };
    let at = t0() + Duration::milliseconds((t * 1000.0) as i64);
    presence::update(params, cat, state, &fix, at)
}

/// What the enters are graded against.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Grading {
    /// The walker's true path: a visit 5 m inside a fence counts even when the phone's bias
    /// put every fix of it 10 m outside.
    TruePath,
    /// The path as the phone recorded it, outliers removed (true path + bias + jitter): how
    /// visits are labelled on real recorded traces, where nothing else is known.
    Recorded,
}

impl Grading {
    fn name(self) -> &'static str {
        match self {
            Grading::TruePath => "true path",
            Grading::Recorded => "recorded",
        }
    }
}

fn run_walk(
    params: &Params,
    seed: u64,
    pois: &[Poi],
    noisy: bool,
    every: usize,
    grading: Grading,
) -> Score {
    let w = make_walk(seed, pois);
    let stores: Vec<Store> = w.fences.iter().map(FenceSpec::store).collect();
    let cat = Catalog::build(stores, Vec::new(), CapPolicy::default()).expect("catalog");
    let (mut fixes, recorded) = phone_fixes(seed, &w.path);
    let graded_path = match grading {
        Grading::TruePath => &w.path,
        Grading::Recorded => &recorded,
    };
    let truth = episodes(&cat, graded_path);
    if noisy {
        let mut rng = Rng::new(seed ^ 0x0015_0015);
        for (p, _) in &mut fixes {
            *p = p.add(P {
                x: NOISE_M * rng.normal(),
                y: NOISE_M * rng.normal(),
            });
        }
    }
    // Run the service's presence code over the fixes.
    let mut state = UserState::default();
    let mut enters: Vec<(usize, f64)> = Vec::new();
    let mut exits: Vec<(usize, f64)> = Vec::new();
    let mut present_at_start = vec![false; truth.len()];
    let mut present = vec![false; w.fences.len()];
    let mut next_start: Vec<(f64, usize)> = truth
        .iter()
        .enumerate()
        .map(|(k, e)| (e.start - EARLY_S, k))
        .collect();
    next_start.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut ns = 0;
    for (i, &(p, acc)) in fixes.iter().enumerate() {
        let t = i as f64 * DT_S;
        while ns < next_start.len() && next_start[ns].0 <= t {
            let k = next_start[ns].1;
            present_at_start[k] = present[truth[k].fence];
            ns += 1;
        }
        if i % every != 0 {
            continue;
        }
        for (f, tr) in feed(params, &cat, &mut state, (p, acc), t) {
            match tr {
                Transition::Enter => {
                    enters.push((f as usize, t));
                    present[f as usize] = true;
                }
                Transition::Exit => {
                    present[f as usize] = false;
                    exits.push((f as usize, t));
                }
                _ => {}
            }
        }
    }
    let mut s = Score {
        walks: 1,
        fixes: fixes.len().div_ceil(every),
        fences: w.fences.len(),
        enters: enters.len(),
        ..Score::default()
    };
    let mut per_episode = vec![0usize; truth.len()];
    let mut first_delay = vec![f64::INFINITY; truth.len()];
    for &(f, t) in &enters {
        let hit = truth
            .iter()
            .position(|e| e.fence == f && t >= e.start - EARLY_S && t <= e.end);
        match hit {
            Some(k) => {
                per_episode[k] += 1;
                first_delay[k] = first_delay[k].min(t - truth[k].start);
            }
            None => {
                s.extra += 1;
                if std::env::var_os("PRESENCE_DEBUG").is_some() {
                    let (lat, lon) = to_ll(graded_path[(t / DT_S) as usize]);
                    let out = cat.shape(f as u32).distance_outside_m(lat, lon);
                    let eps: Vec<(f64, f64)> = truth
                        .iter()
                        .filter(|e| e.fence == f)
                        .map(|e| (e.start, e.end))
                        .collect();
                    eprintln!(
                        "seed {seed} unmatched enter {:?} at {t} truly {out:.0} m out, episodes {eps:?}",
                        w.fences[f].role
                    );
                }
            }
        }
    }
    for (k, e) in truth.iter().enumerate() {
        let n = per_episode[k];
        // Present since before the episode's window, with no exit before its first enter:
        // the episode was already covered.
        let first_enter = enters
            .iter()
            .filter(|x| x.0 == e.fence && x.1 >= e.start - EARLY_S && x.1 <= e.end)
            .map(|x| x.1)
            .fold(f64::INFINITY, f64::min);
        let already = present_at_start[k]
            && !exits
                .iter()
                .any(|x| x.0 == e.fence && x.1 >= e.start - EARLY_S && x.1 <= first_enter);
        let repeats = if already { n } else { n.saturating_sub(1) };
        s.extra += repeats;
        if repeats > 0 && std::env::var_os("PRESENCE_DEBUG").is_some() {
            eprintln!(
                "seed {seed} repeat x{repeats} {:?} inside {}s episode {}-{} enters {:?} exits {:?}",
                w.fences[e.fence].role,
                e.inside_s,
                e.start,
                e.end,
                enters
                    .iter()
                    .filter(|x| x.0 == e.fence)
                    .map(|x| x.1)
                    .collect::<Vec<_>>(),
                exits
                    .iter()
                    .filter(|x| x.0 == e.fence)
                    .map(|x| x.1)
                    .collect::<Vec<_>>()
            );
        }
        if e.inside_s >= VISIT_MIN_INSIDE_S {
            s.visits += 1;
            s.second += repeats;
            if n == 0 && !already && std::env::var_os("PRESENCE_DEBUG").is_some() {
                eprintln!(
                    "seed {seed} missed {:?} r {:.0} square {} inside {}s at {}",
                    w.fences[e.fence].role,
                    w.fences[e.fence].r,
                    w.fences[e.fence].square.is_some(),
                    e.inside_s,
                    e.start
                );
            }
            if n > 0 || already {
                s.detected += 1;
                let d = if already { 0.0 } else { first_delay[k] };
                let b = match d {
                    d if d <= 10.0 => 0,
                    d if d <= 30.0 => 1,
                    d if d <= 60.0 => 2,
                    _ => 3,
                };
                s.delays[b] += 1;
            }
        } else {
            s.passes += 1;
            if n > 0 || already {
                s.passes_entered += 1;
            }
        }
    }
    s
}

// ------------------------------------------------------------------ main

fn parse_range(r: &str) -> std::ops::RangeInclusive<u64> {
    let (a, b) = r.split_once('-').unwrap_or((r, r));
    a.parse().expect("seed")..=b.parse().expect("seed")
}

fn set(p: &mut Params, kv: &str) {
    let (k, v) = kv.split_once('=').expect("--set name=value");
    let x: f64 = v.parse().expect("number");
    let secs = Duration::milliseconds((x * 1000.0) as i64);
    match k {
        "max_enter_accuracy_m" => p.max_enter_accuracy_m = x,
        "enter_depth_m" => p.enter_depth_m = x,
        "enter_depth_per_accuracy" => p.enter_depth_per_accuracy = x,
        "enter_confirm_s" => p.enter_confirm = secs,
        "alone_after_s" => p.alone_after = secs,
        "exit_margin_m" => p.exit_margin_m = x,
        "exit_confirm_s" => p.exit_confirm = secs,
        "max_speed_mps" => p.max_speed_mps = x,
        "gate_sigmas" => p.gate_sigmas = x,
        "accuracy_floor_m" => p.accuracy_floor_m = x,
        "walk_mps" => p.walk_mps = x,
        "reset_after_s" => p.reset_after = secs,
        "track_ttl_s" => p.track_ttl = secs,
        other => panic!("unknown parameter {other}"),
    }
}

/// The rule before the track: enter on one fix inside, exit on one fix beyond 30 m plus
/// its accuracy, nothing smoothed or refused.
fn baseline() -> Params {
    Params {
        enter_depth_m: 0.0,
        enter_depth_per_accuracy: 0.0,
        exit_margin_m: 30.0,
        enter_confirm: Duration::zero(),
        exit_confirm: Duration::zero(),
        max_speed_mps: f64::INFINITY,
        accuracy_floor_m: 0.0,
        walk_mps: 1e9,
        ..Params::DEFAULT
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut params = Params::DEFAULT;
    let mut sets: Vec<(String, std::ops::RangeInclusive<u64>)> = Vec::new();
    let mut pois_path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../data/helsinki_osm_pois.csv").to_string();
    let mut json_out = false;
    // Send one fix in `every` (an app that reports less often than every 2 s).
    let mut every = 1usize;
    let mut label = String::from("default");
    let mut gradings = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pois" => pois_path = args.next().expect("--pois FILE"),
            "--seeds" => {
                let r = args.next().expect("--seeds A-B");
                sets.push((format!("seeds {r}"), parse_range(&r)));
            }
            "--tune" => sets.push(("tune (walks 1-40)".into(), 1..=40)),
            "--held-out" => sets.push(("held-out (walks 1001-1060)".into(), 1001..=1060)),
            "--set" => {
                set(&mut params, &args.next().expect("--set name=value"));
                label = "custom".into();
            }
            "--baseline" => {
                params = baseline();
                label = "baseline".into();
            }
            "--json" => json_out = true,
            "--graded-by" => gradings.push(match args.next().as_deref() {
                Some("true") => Grading::TruePath,
                Some("recorded") => Grading::Recorded,
                _ => panic!("--graded-by true|recorded"),
            }),
            "--every" => {
                let secs: f64 = args
                    .next()
                    .expect("--every SECONDS")
                    .parse()
                    .expect("seconds");
                every = ((secs / DT_S).round() as usize).max(1);
            }
            other => panic!("unknown argument {other}; see bench/presence/README.md"),
        }
    }
    if sets.is_empty() {
        sets.push(("tune (walks 1-40)".into(), 1..=40));
        sets.push(("held-out (walks 1001-1060)".into(), 1001..=1060));
    }
    if gradings.is_empty() {
        gradings = vec![Grading::TruePath, Grading::Recorded];
    }
    let pois = load_pois(&pois_path);
    if !json_out {
        println!(
            "presence rules: {label}; {} stores from {pois_path}; a fix every {} s",
            pois.len(),
            every as f64 * DT_S
        );
        println!(
            "{:<10} {:<28} {:<6} {:>5} {:>7} {:>6} {:>6} {:>9} {:>7} {:>6} {:>9} {:>6} {:>8}  enter delay <=10/30/60/>60 s",
            "graded by",
            "set",
            "fixes",
            "walks",
            "n",
            "fences",
            "visits",
            "detected",
            "second",
            "extra",
            "extra/vis",
            "passes",
            "pass-ent"
        );
    }
    for grading in gradings {
        for (name, range) in &sets {
            for noisy in [false, true] {
                let mut total = Score::default();
                for seed in range.clone() {
                    total.add(&run_walk(&params, seed, &pois, noisy, every, grading));
                }
                let variant = if noisy { "+15 m" } else { "raw" };
                if json_out {
                    println!(
                        "{}",
                        json!({"graded_by": grading.name(), "set": name, "variant": variant, "params": label, "every_s": every as f64 * DT_S, "walks": total.walks,
                        "fixes": total.fixes, "fences": total.fences, "visits": total.visits,
                        "detected_pct": Score::pct(total.detected, total.visits),
                        "second_enters": total.second, "extra_enters": total.extra,
                        "extra_pct_of_visits": Score::pct(total.extra, total.visits),
                        "passes": total.passes,
                        "passes_entered_pct": Score::pct(total.passes_entered, total.passes),
                        "enters": total.enters, "delay_buckets": total.delays})
                    );
                } else {
                    println!(
                        "{:<10} {:<28} {:<6} {:>5} {:>7} {:>6} {:>6} {:>8.1}% {:>7} {:>6} {:>8.1}% {:>6} {:>7.1}%  {:?}",
                        grading.name(),
                        name,
                        variant,
                        total.walks,
                        total.fixes,
                        total.fences,
                        total.visits,
                        Score::pct(total.detected, total.visits),
                        total.second,
                        total.extra,
                        Score::pct(total.extra, total.visits),
                        total.passes,
                        Score::pct(total.passes_entered, total.passes),
                        total.delays
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order fixes arrive in, as a phone that batches and retries delivers them: batches
    /// of 5-30 fixes, each shuffled; one batch in 8 held back behind the next; one in 20
    /// delivered twice. Each fix keeps its own time stamp.
    fn arrival(seed: u64, n: usize) -> Vec<usize> {
        let mut rng = Rng::new(seed ^ 0xA11_0DE5);
        let mut batches: Vec<Vec<usize>> = Vec::new();
        let mut i = 0;
        while i < n {
            let len = (5 + rng.below(26)).min(n - i);
            let mut b: Vec<usize> = (i..i + len).collect();
            for k in (1..b.len()).rev() {
                b.swap(k, rng.below(k + 1));
            }
            batches.push(b);
            i += len;
        }
        let mut k = 0;
        while k + 1 < batches.len() {
            if rng.chance(1.0 / 8.0) {
                batches.swap(k, k + 1);
                k += 1;
            }
            k += 1;
        }
        let mut out = Vec::new();
        for b in batches {
            out.extend_from_slice(&b);
            if rng.chance(1.0 / 20.0) {
                out.extend_from_slice(&b);
            }
        }
        out
    }

    /// Real store layouts and simulated walks (the bench's own), fixes delivered in batches
    /// that arrive shuffled, late and twice: no visit is entered twice, few enters fall
    /// outside any visit and most visits are still found, nobody is ever held inside more
    /// than a handful of fences, and no fence is entered that the walk never came within
    /// 100 m of.
    #[test]
    fn fixes_in_any_arrival_order_never_enter_a_visit_twice() {
        let pois = load_pois(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/helsinki_osm_pois.csv"
        ));
        let params = Params::DEFAULT;
        let (mut visits, mut detected, mut extra) = (0, 0, 0);
        for seed in [1u64, 2, 3, 1001, 1002, 1003] {
            let w = make_walk(seed, &pois);
            let stores: Vec<Store> = w.fences.iter().map(FenceSpec::store).collect();
            let cat = Catalog::build(stores, Vec::new(), CapPolicy::default()).expect("catalog");
            let truth = episodes(&cat, &w.path);
            let (fixes, _) = phone_fixes(seed, &w.path);
            let mut state = UserState::default();
            let mut enters: Vec<(usize, f64)> = Vec::new();
            let mut max_held = 0;
            for i in arrival(seed, fixes.len()) {
                let t = i as f64 * DT_S;
                for (f, tr) in feed(&params, &cat, &mut state, fixes[i], t) {
                    if tr == Transition::Enter {
                        enters.push((f as usize, t));
                    }
                }
                max_held = max_held.max(state.fences.len());
            }
            for &(f, t) in &enters {
                let shape = cat.shape(f as u32);
                let nearest = w
                    .path
                    .iter()
                    .map(|&p| {
                        let (lat, lon) = to_ll(p);
                        shape.distance_outside_m(lat, lon)
                    })
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    nearest <= 100.0,
                    "seed {seed}: fence {f} entered at {t} s, never nearer than {nearest:.0} m"
                );
            }
            for e in &truth {
                let n = enters
                    .iter()
                    .filter(|x| x.0 == e.fence && x.1 >= e.start - EARLY_S && x.1 <= e.end)
                    .count();
                assert!(
                    n <= 1,
                    "seed {seed}: fence {} entered {n} times in the visit {}-{} s",
                    e.fence,
                    e.start,
                    e.end
                );
            }
            let in_visit = |f: usize, t: f64, e: &Episode| {
                e.fence == f && t >= e.start - EARLY_S && t <= e.end
            };
            extra += enters
                .iter()
                .filter(|&&(f, t)| !truth.iter().any(|e| in_visit(f, t, e)))
                .count();
            for e in truth.iter().filter(|e| e.inside_s >= VISIT_MIN_INSIDE_S) {
                visits += 1;
                if enters.iter().any(|&(f, t)| in_visit(f, t, e)) {
                    detected += 1;
                }
            }
            assert!(max_held <= 8, "seed {seed}: {max_held} fences held at once");
        }
        // Enters outside any visit stay few (in order: 4 for these 119 visits; judging late
        // fixes on their own made it 47), and the visits are still found (in order: 112).
        eprintln!("{visits} visits, {detected} detected, {extra} extra enters");
        assert!(
            extra * 100 <= visits * 15,
            "{extra} enters outside any visit for {visits} visits"
        );
        assert!(
            detected * 100 >= visits * 80,
            "{detected} of {visits} visits detected"
        );
    }

    /// Graded against the path the phone recorded (what labels a real trace), the service's
    /// rules enter no visit twice and almost nothing outside a recorded visit, raw or with
    /// 15 m of noise; graded against the true path, the same enters include the waits just
    /// outside fences that the phone's bias put inside, so the recorded grading finds fewer
    /// extra enters. The recorded path is the fixes without their outliers.
    #[test]
    fn graded_by_the_recorded_path_nothing_is_entered_twice_and_little_outside_a_visit() {
        let pois = load_pois(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/helsinki_osm_pois.csv"
        ));
        let params = Params::DEFAULT;
        for noisy in [false, true] {
            let (mut rec, mut tru) = (Score::default(), Score::default());
            for seed in [1u64, 2, 3, 4, 1001, 1002, 1003, 1004] {
                rec.add(&run_walk(&params, seed, &pois, noisy, 1, Grading::Recorded));
                tru.add(&run_walk(&params, seed, &pois, noisy, 1, Grading::TruePath));
            }
            eprintln!("noisy {noisy}: recorded {rec:?}\ntrue path {tru:?}");
            assert_eq!(rec.enters, tru.enters, "the same enters, graded twice");
            assert_eq!(rec.second, 0, "second enters in a recorded visit");
            assert!(
                rec.extra * 100 <= rec.visits,
                "{} extra enters for {} recorded visits",
                rec.extra,
                rec.visits
            );
            assert!(rec.extra <= tru.extra, "{rec:?} against {tru:?}");
            assert!(
                rec.detected * 100 >= rec.visits * 85,
                "{} of {} recorded visits detected",
                rec.detected,
                rec.visits
            );
        }
        // The recorded path is the fixes, except where an outlier burst displaced them.
        let w = make_walk(7, &pois);
        let (fixes, recorded) = phone_fixes(7, &w.path);
        assert_eq!(fixes.len(), recorded.len());
        let displaced = fixes
            .iter()
            .zip(&recorded)
            .filter(|(f, r)| f.0.sub(**r).len() > 1e-9)
            .count();
        assert!(
            displaced > 0 && displaced * 100 < 3 * fixes.len(),
            "{displaced} of {} fixes displaced",
            fixes.len()
        );
        assert!(fixes.iter().zip(&recorded).all(|(f, r)| {
            let d = f.0.sub(*r).len();
            d < 1e-9 || d >= 150.0
        }));
    }

    /// Issue 12's goals on the second held-out set (walks 2001-2060, never used to choose
    /// the parameters), graded against the recorded path: at least 97 % of visits detected
    /// raw and 93 % with 15 m of noise, at most 2 % extra enters with noise, no second enter.
    #[test]
    fn the_service_parameters_meet_the_goals_on_walks_they_were_not_chosen_on() {
        let pois = load_pois(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/helsinki_osm_pois.csv"
        ));
        let params = Params::DEFAULT;
        for noisy in [false, true] {
            let mut rec = Score::default();
            for seed in 2001u64..=2060 {
                rec.add(&run_walk(&params, seed, &pois, noisy, 1, Grading::Recorded));
            }
            eprintln!("noisy {noisy}: {rec:?}");
            assert_eq!(rec.second, 0, "second enters within a visit");
            let least = if noisy { 93 } else { 97 };
            assert!(
                rec.detected * 100 >= rec.visits * least,
                "{} of {} visits detected",
                rec.detected,
                rec.visits
            );
            if noisy {
                assert!(
                    rec.extra * 100 <= rec.visits * 2,
                    "{} extra enters for {} visits",
                    rec.extra,
                    rec.visits
                );
            }
        }
    }
}
