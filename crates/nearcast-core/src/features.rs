//! Features of one (user, offer, store, context) candidate: the one code path used by the
//! ranker in serving and by the trainer (invariant 6). Both call [`Encoder::encode`] with an
//! [`Input`]; nothing else builds a feature vector.
//!
//! Features are sparse and hashed, as in large-scale click models (McMahan et al., "Ad Click
//! Prediction: a View from the Trenches", 2013): every base feature turns the input into
//! tokens (`category=coffee`, `cell8=<H3 cell>`, `hour_of_week=31`, ...), every cross
//! `a*b` into the pairs of their tokens, and each token is hashed into a space of
//! `2^hash_bits` weights. Nothing in the code lists categories, offers, stores or places:
//! the model learns whatever the catalogue has.
//!
//! A missing input (no weather, no consent, no cell) gives **no token**: the feature is
//! absent, so its weight is not used, rather than an indicator that the intercept would
//! have to compensate.
//!
//! Which features a model uses, and the size of its hash space, are its [`Spec`], stored in
//! the model artifact with its hash, so serving encodes exactly as training did.

use crate::context::{Context, Daypart};
use crate::holdout::stable_hash;
use crate::weather::Weather;
use chrono::{Datelike, Timelike};
use h3o::{CellIndex, Resolution};
use serde::{Deserialize, Serialize};

/// Version of the feature encoding (how tokens are made and hashed). Bumped whenever the
/// same spec would encode differently.
pub const SPEC_VERSION: u32 = 2;

/// Hash space size (bits) of the default spec.
pub const DEFAULT_HASH_BITS: u32 = 18;

/// Largest hash space a spec may ask for (serving keeps `2^bits` weights in memory).
pub const MAX_HASH_BITS: u32 = 24;

/// The base features, by name. Crosses are written `a*b`.
///
/// | name | tokens (value 1 unless said) | absent when |
/// |---|---|---|
/// | `bias` | one constant token | never |
/// | `offer`, `store`, `category` | the id or name | never |
/// | `cell7`, `cell8`, `cell9` | the fix's H3 cell at resolution 7 (about 5 km²), 8 (0.7 km²), 9 (0.1 km²) | no cell |
/// | `hour_of_week` | local weekday × 24 + hour | no local time |
/// | `daypart`, `weekend` | the local daypart, weekend or not | never |
/// | `weather` | the condition | weather missing |
/// | `temp` | a temperature band (below 0, 0–5, 5–10, 10–18, 18–25, above 25 °C) | weather missing |
/// | `distance` | a distance band (below 50, 100, 200, 400 m, farther) | never |
/// | `affinity` | one token, value = the user's affinity for the category | no consent |
/// | `bought` | bought in the category before | no consent, or not bought |
/// | `history` | one token per category the user has an affinity for, value = the affinity | no consent |
pub const BASE: [&str; 16] = [
    "bias",
    "offer",
    "store",
    "category",
    "cell7",
    "cell8",
    "cell9",
    "hour_of_week",
    "daypart",
    "weekend",
    "weather",
    "temp",
    "distance",
    "affinity",
    "bought",
    "history",
];

/// The features of the default spec: every base feature, and the crosses of the category
/// and the offer with place, time, weather and the user's history.
pub const DEFAULT_FEATURES: [&str; 31] = [
    "bias",
    "offer",
    "store",
    "category",
    "cell7",
    "cell8",
    "cell9",
    "hour_of_week",
    "daypart",
    "weekend",
    "weather",
    "temp",
    "distance",
    "affinity",
    "bought",
    "history",
    "category*cell7",
    "category*cell8",
    "category*cell9",
    "category*hour_of_week",
    "category*daypart",
    "category*weekend",
    "category*weather",
    "category*temp",
    "category*distance",
    "category*history",
    "category*affinity",
    "offer*daypart",
    "offer*weather",
    "offer*cell8",
    "store*category",
];

/// A model's feature specification: stored in its artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// [`SPEC_VERSION`] of the encoding the model was trained with.
    pub version: u32,
    /// The hash space has `2^hash_bits` weights.
    pub hash_bits: u32,
    /// Base features and crosses (`a*b`) in use.
    pub features: Vec<String>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            version: SPEC_VERSION,
            hash_bits: DEFAULT_HASH_BITS,
            features: DEFAULT_FEATURES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Spec {
    /// A stable hash of the spec (version, hash space, features in order), stored in model
    /// artifacts next to it.
    pub fn hash(&self) -> String {
        let mut parts = vec![format!("v{}", self.version), format!("b{}", self.hash_bits)];
        parts.extend(self.features.iter().cloned());
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        format!("{:016x}", stable_hash(&refs))
    }

    /// Number of weights of the hash space.
    pub fn size(&self) -> usize {
        1usize << self.hash_bits
    }

    /// The encoder of this spec.
    ///
    /// # Errors
    /// Names what this build cannot encode: another encoding version, a hash space out of
    /// range, an unknown feature, a repeated feature.
    pub fn encoder(&self) -> Result<Encoder, String> {
        if self.version != SPEC_VERSION {
            return Err(format!(
                "feature encoding version {} (this build encodes version {SPEC_VERSION})",
                self.version
            ));
        }
        if !(1..=MAX_HASH_BITS).contains(&self.hash_bits) {
            return Err(format!(
                "hash_bits {} outside 1..={MAX_HASH_BITS}",
                self.hash_bits
            ));
        }
        if self.features.is_empty() {
            return Err("no features".into());
        }
        let base = |name: &str| {
            BASE.iter()
                .position(|b| *b == name)
                .ok_or_else(|| format!("unknown feature {name:?}"))
        };
        let mut terms = Vec::with_capacity(self.features.len());
        for (i, f) in self.features.iter().enumerate() {
            if self.features[..i].contains(f) {
                return Err(format!("feature {f:?} listed twice"));
            }
            let term = match f.split_once('*') {
                None => Term {
                    a: base(f)?,
                    b: None,
                    seed: fnv(f.as_bytes()),
                },
                Some((a, b)) => Term {
                    a: base(a)?,
                    b: Some(base(b)?),
                    seed: fnv(f.as_bytes()),
                },
            };
            terms.push(term);
        }
        let needed = terms
            .iter()
            .fold(0u16, |m, t| m | 1 << t.a | t.b.map_or(0, |b| 1 << b));
        Ok(Encoder {
            terms,
            mask: (1u64 << self.hash_bits) - 1,
            needed,
        })
    }
}

#[derive(Debug, Clone)]
struct Term {
    a: usize,
    b: Option<usize>,
    seed: u64,
}

/// Encodes inputs by a [`Spec`].
#[derive(Debug, Clone)]
pub struct Encoder {
    terms: Vec<Term>,
    mask: u64,
    /// Bit `b` set when base feature `b` is used by some term.
    needed: u16,
}

/// A sparse feature vector: hashed indices and their values (an index may repeat when two
/// tokens collide; their values add up).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    /// Indices into the hash space.
    pub idx: Vec<u32>,
    /// Values, one per index.
    pub val: Vec<f64>,
}

impl Features {
    /// `Σ w[idx] · val`.
    #[inline]
    pub fn dot(&self, w: &[f64]) -> f64 {
        self.idx
            .iter()
            .zip(&self.val)
            .map(|(i, v)| w[*i as usize] * v)
            .sum()
    }
}

/// FNV-1a, 64 bits.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A 64-bit mix of two hashes (SplitMix64's finaliser).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_add(0x9e37_79b9_7f4a_7c15).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn band(v: f64, edges: &[f64]) -> u64 {
    edges.iter().take_while(|e| v >= **e).count() as u64
}

// Positions of the base features in [`BASE`].
const BIAS: usize = 0;
const OFFER: usize = 1;
const STORE: usize = 2;
const CATEGORY: usize = 3;
const CELL7: usize = 4;
const CELL8: usize = 5;
const CELL9: usize = 6;
const HOUR_OF_WEEK: usize = 7;
const DAYPART: usize = 8;
const WEEKEND: usize = 9;
const WEATHER: usize = 10;
const TEMP: usize = 11;
const DISTANCE: usize = 12;
const AFFINITY: usize = 13;
const BOUGHT: usize = 14;
const HISTORY: usize = 15;

/// Tokens of all base features fit on the stack unless the history is this long.
const STACK_TOKENS: usize = 64;

impl Encoder {
    /// Appends the tokens (hash, value) of base feature `b` to `out`; returns how many.
    fn tokens(b: usize, x: &Input<'_>, out: &mut [(u64, f64)]) -> usize {
        let mut n = 0;
        let mut push = |t: (u64, f64)| {
            out[n] = t;
            n += 1;
        };
        let one = |h: u64| (h, 1.0);
        match b {
            BIAS => push(one(0)),
            OFFER => push(one(fnv(x.offer_id.as_bytes()))),
            STORE => push(one(fnv(x.store_id.as_bytes()))),
            CATEGORY => push(one(fnv(x.category.as_bytes()))),
            CELL7 | CELL8 | CELL9 => {
                let res = match b {
                    CELL7 => Resolution::Seven,
                    CELL8 => Resolution::Eight,
                    _ => Resolution::Nine,
                };
                if let Some(c) = x.cell.and_then(|c| c.parent(res)) {
                    push(one(u64::from(c)));
                }
            }
            HOUR_OF_WEEK => {
                if let Some(h) = x.hour_of_week {
                    push(one(u64::from(h)));
                }
            }
            DAYPART => {
                let d = Daypart::ALL.iter().position(|d| *d == x.daypart);
                push(one(d.unwrap_or(0) as u64));
            }
            WEEKEND => push(one(u64::from(x.weekend))),
            WEATHER => {
                if let Some(w) = x.weather {
                    push(one(fnv(w.condition.as_str().as_bytes())));
                }
            }
            TEMP => {
                if let Some(w) = x.weather.filter(|w| w.temp_c.is_finite()) {
                    push(one(band(w.temp_c, &[0.0, 5.0, 10.0, 18.0, 25.0])));
                }
            }
            DISTANCE => push(one(band(
                x.distance_m.max(0.0),
                &[50.0, 100.0, 200.0, 400.0],
            ))),
            AFFINITY => {
                if let Some(a) = x.affinity {
                    push((0, a.clamp(0.0, 1.0)));
                }
            }
            BOUGHT => {
                if x.affinity.is_some() && x.bought_category {
                    push(one(0));
                }
            }
            HISTORY => {
                for (c, a) in x.history {
                    push((fnv(c.as_bytes()), a.clamp(0.0, 1.0)));
                }
            }
            _ => unreachable!("a base feature position is below BASE.len()"),
        }
        n
    }

    /// Calls `f(index, value)` for each feature of `input`, in the spec's order: the one
    /// encoding serving and training share. Allocates nothing unless the user's history is
    /// longer than about fifty categories.
    pub fn visit(&self, input: &Input<'_>, mut f: impl FnMut(u32, f64)) {
        let history = if self.needed & (1 << HISTORY) != 0 {
            input.history.len()
        } else {
            0
        };
        let mut stack = [(0u64, 0.0f64); STACK_TOKENS];
        let mut heap = Vec::new();
        let buf: &mut [(u64, f64)] = if history + BASE.len() <= STACK_TOKENS {
            &mut stack
        } else {
            heap.resize(history + BASE.len(), (0, 0.0));
            &mut heap
        };
        // Each base feature's tokens, once: buf[ranges[b].0..ranges[b].1].
        let mut ranges = [(0usize, 0usize); BASE.len()];
        let mut n = 0;
        for (b, r) in ranges.iter_mut().enumerate() {
            if self.needed & (1 << b) != 0 {
                let k = Self::tokens(b, input, &mut buf[n..]);
                *r = (n, n + k);
                n += k;
            }
        }
        let buf = &buf[..n];
        let toks = |b: usize| &buf[ranges[b].0..ranges[b].1];
        for t in &self.terms {
            match t.b {
                None => {
                    for (h, v) in toks(t.a) {
                        f((mix(t.seed, *h) & self.mask) as u32, *v);
                    }
                }
                Some(b) => {
                    for (ha, va) in toks(t.a) {
                        let seed = mix(t.seed, *ha);
                        for (hb, vb) in toks(b) {
                            f((mix(seed, *hb) & self.mask) as u32, va * vb);
                        }
                    }
                }
            }
        }
    }

    /// Writes the features of `input` into `out` (cleared first).
    pub fn encode(&self, input: &Input<'_>, out: &mut Features) {
        out.idx.clear();
        out.val.clear();
        self.visit(input, |i, v| {
            out.idx.push(i);
            out.val.push(v);
        });
    }
}

/// The user's history as features see it: the categories with a positive affinity, each
/// once (the first affinity given), sorted by name. Serving and training both build it from
/// the decision's candidates (each candidate carries the user's affinity for its category).
pub fn history<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<f64>)>) -> Vec<(&'a str, f64)> {
    let mut out: Vec<(&str, f64)> = Vec::new();
    for (c, a) in pairs {
        if let Some(a) = a.filter(|a| *a > 0.0)
            && !out.iter().any(|(k, _)| *k == c)
        {
            out.push((c, a));
        }
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// What the features are computed from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Offer id.
    pub offer_id: &'a str,
    /// Store id.
    pub store_id: &'a str,
    /// Offer category.
    pub category: &'a str,
    /// H3 cell of the fix (any resolution from 9 down; coarser resolutions are its parents).
    pub cell: Option<CellIndex>,
    /// Local hour of the week at the store: weekday from Monday (0) × 24 + hour.
    pub hour_of_week: Option<u32>,
    /// Daypart at the store.
    pub daypart: Daypart,
    /// Weekend at the store.
    pub weekend: bool,
    /// Weather at the store.
    pub weather: Option<Weather>,
    /// Distance from the fix to the store's fence centre, metres.
    pub distance_m: f64,
    /// The user's affinity for the category; `None` without personalisation consent.
    pub affinity: Option<f64>,
    /// Whether the user bought in the category before (used only with consent).
    pub bought_category: bool,
    /// The user's history ([`history`]); empty without consent.
    pub history: &'a [(&'a str, f64)],
}

/// The hour of the week of a local time.
pub fn hour_of_week(weekday: chrono::Weekday, hour: u32) -> u32 {
    weekday.num_days_from_monday() * 24 + hour
}

impl<'a> Input<'a> {
    /// The input for a candidate in a context; `personal` features are given without
    /// consent as `None` and an empty history.
    pub fn new(
        ctx: &Context,
        offer: (&'a str, &'a str, &'a str),
        cell: Option<CellIndex>,
        distance_m: f64,
        personal: (Option<f64>, bool, &'a [(&'a str, f64)]),
    ) -> Self {
        let (offer_id, store_id, category) = offer;
        let (affinity, bought_category, history) = personal;
        Input {
            offer_id,
            store_id,
            category,
            cell,
            hour_of_week: Some(hour_of_week(ctx.local.weekday(), ctx.local.hour())),
            daypart: ctx.daypart,
            weekend: ctx.weekend,
            weather: ctx.weather,
            distance_m,
            affinity,
            bought_category,
            history,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weather::Condition;

    fn ctx(weather: Option<Weather>) -> Context {
        Context::new(
            "2026-11-20T07:00:00Z".parse().unwrap(),
            chrono_tz::Europe::Helsinki,
            weather,
        )
    }

    fn cell() -> Option<CellIndex> {
        "891126d3303ffff".parse().ok()
    }

    #[test]
    fn the_default_spec_is_valid_and_its_hash_follows_every_part() {
        let s = Spec::default();
        s.encoder().unwrap();
        assert_eq!(s.hash(), Spec::default().hash());
        let mut t = s.clone();
        t.hash_bits += 1;
        assert_ne!(t.hash(), s.hash());
        let mut t = s.clone();
        t.features.swap(0, 1);
        assert_ne!(t.hash(), s.hash());
        let mut t = s.clone();
        t.version += 1;
        assert_ne!(t.hash(), s.hash());
    }

    #[test]
    fn specs_this_build_cannot_encode_are_refused_with_the_reason() {
        let with = |f: &dyn Fn(&mut Spec)| {
            let mut s = Spec::default();
            f(&mut s);
            s.encoder().unwrap_err()
        };
        assert!(with(&|s| s.version = 1).contains("version 1"));
        assert!(with(&|s| s.hash_bits = 40).contains("hash_bits 40"));
        assert!(with(&|s| s.features.push("colour".into())).contains("\"colour\""));
        assert!(with(&|s| s.features.push("category*colour".into())).contains("\"colour\""));
        assert!(with(&|s| s.features.push("bias".into())).contains("twice"));
        assert!(with(&|s| s.features.clear()).contains("no features"));
    }

    fn encode(x: &Input<'_>) -> Features {
        let mut f = Features::default();
        Spec::default().encoder().unwrap().encode(x, &mut f);
        f
    }

    #[test]
    fn any_category_name_gets_its_own_features() {
        let c = ctx(None);
        let a = encode(&Input::new(
            &c,
            ("o", "s", "kombucha"),
            cell(),
            40.0,
            (None, false, &[]),
        ));
        let b = encode(&Input::new(
            &c,
            ("o", "s", "yarn"),
            cell(),
            40.0,
            (None, false, &[]),
        ));
        assert_eq!(a.idx.len(), b.idx.len());
        let differing = a.idx.iter().zip(&b.idx).filter(|(x, y)| x != y).count();
        // Every term with the category differs: the category, its crosses with cells,
        // hour, daypart, weekend and distance, and store*category (the weather, history and
        // affinity crosses are absent: no weather, no consent).
        assert_eq!(differing, 9);
        assert!(a.val.iter().all(|v| *v == 1.0));
    }

    #[test]
    fn a_missing_input_is_an_absent_feature_not_an_indicator() {
        let rain = Some(Weather {
            condition: Condition::Rain,
            temp_c: 4.0,
        });
        let hist = [("tea", 0.5)];
        let with = encode(&Input::new(
            &ctx(rain),
            ("o", "s", "coffee"),
            cell(),
            40.0,
            (Some(0.8), true, &hist),
        ));
        let without = encode(&Input::new(
            &ctx(None),
            ("o", "s", "coffee"),
            cell(),
            40.0,
            (Some(0.8), true, &hist),
        ));
        // weather, temp, category*weather, category*temp, offer*weather: five fewer.
        assert_eq!(with.idx.len(), without.idx.len() + 5);
        assert!(without.idx.iter().all(|i| with.idx.contains(i)));
        // Without consent the user's features are absent too.
        let anonymous = encode(&Input::new(
            &ctx(rain),
            ("o", "s", "coffee"),
            cell(),
            40.0,
            (None, true, &[]),
        ));
        // affinity, bought, history, category*history, category*affinity.
        assert_eq!(with.idx.len(), anonymous.idx.len() + 5);
        let no_cell = encode(&Input::new(
            &ctx(rain),
            ("o", "s", "coffee"),
            None,
            40.0,
            (Some(0.8), true, &hist),
        ));
        // cell7-9, category*cell7-9, offer*cell8.
        assert_eq!(with.idx.len(), no_cell.idx.len() + 7);
    }

    #[test]
    fn history_keeps_positive_affinities_once_sorted() {
        let h = history([
            ("tea", Some(0.4)),
            ("bread", Some(0.0)),
            ("coffee", Some(0.2)),
            ("tea", Some(0.9)),
            ("yarn", None),
        ]);
        assert_eq!(h, [("coffee", 0.2), ("tea", 0.4)]);
    }

    #[test]
    fn hour_of_week_counts_from_monday() {
        // 07:00 UTC is 09:00 in Helsinki, Friday.
        let f = Input::new(&ctx(None), ("o", "s", "c"), None, 0.0, (None, false, &[]));
        assert_eq!(f.hour_of_week, Some(4 * 24 + 9));
    }
    #[test]
    fn base_positions_name_their_features() {
        let named = [
            (BIAS, "bias"),
            (OFFER, "offer"),
            (STORE, "store"),
            (CATEGORY, "category"),
            (CELL7, "cell7"),
            (CELL8, "cell8"),
            (CELL9, "cell9"),
            (HOUR_OF_WEEK, "hour_of_week"),
            (DAYPART, "daypart"),
            (WEEKEND, "weekend"),
            (WEATHER, "weather"),
            (TEMP, "temp"),
            (DISTANCE, "distance"),
            (AFFINITY, "affinity"),
            (BOUGHT, "bought"),
            (HISTORY, "history"),
        ];
        assert_eq!(named.len(), BASE.len());
        for (i, name) in named {
            assert_eq!(BASE[i], name);
        }
    }

    /// The encoding of spec version 2, fixed: a change of hashing, token order or values
    /// would silently change what every shipped model's weights mean.
    #[test]
    fn the_encoding_of_a_full_input_is_that_of_spec_version_2() {
        let hist = [("coffee", 0.4), ("tea", 0.5)];
        let rain = Some(Weather {
            condition: Condition::Rain,
            temp_c: 4.0,
        });
        let f = encode(&Input::new(
            &ctx(rain),
            ("o1", "s1", "coffee"),
            cell(),
            120.0,
            (Some(0.4), true, &hist),
        ));
        let got: Vec<String> = f
            .idx
            .iter()
            .zip(&f.val)
            .map(|(i, v)| format!("{i}:{v}"))
            .collect();
        assert_eq!(
            got.join(","),
            "149567:1,65565:1,241182:1,65939:1,5099:1,161080:1,25036:1,173865:1,170145:1,\
             107682:1,77205:1,88465:1,26721:1,84782:0.4,120609:1,252368:0.4,178768:0.5,\
             67418:1,95058:1,163959:1,100970:1,253691:1,192233:1,157042:1,118303:1,32490:1,\
             227914:0.4,29048:0.5,245484:0.4,180903:1,37977:1,174852:1,239641:1"
        );
    }

    #[test]
    fn a_history_longer_than_the_stack_buffer_encodes_every_category() {
        let names: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        let hist: Vec<(&str, f64)> = names.iter().map(|n| (n.as_str(), 0.5)).collect();
        let x = Input::new(
            &ctx(None),
            ("o", "s", "c0"),
            None,
            10.0,
            (Some(0.5), false, &hist),
        );
        let f = encode(&x);
        // One feature per category for `history` and for `category*history`.
        let short = encode(&Input::new(
            &ctx(None),
            ("o", "s", "c0"),
            None,
            10.0,
            (Some(0.5), false, &hist[..1]),
        ));
        assert_eq!(f.idx.len(), short.idx.len() + 2 * 99);
        assert!(short.idx.iter().all(|i| f.idx.contains(i)));
    }
}
