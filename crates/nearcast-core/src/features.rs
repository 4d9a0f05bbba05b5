//! Features of one (user, offer, store, context) candidate: the one code path used by the
//! ranker in serving and by the trainer (invariant 6). Both call [`encode`]; nothing else
//! builds a feature vector.

use crate::context::{Context, Daypart};
use crate::holdout::stable_hash;
use crate::weather::Weather;

/// Product groups the model distinguishes; offer categories map onto them.
pub const GROUPS: [&str; 6] = ["coffee", "food", "rainwear", "clothing", "grocery", "other"];

/// Maps an offer or store category to its group.
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

/// Context flags crossed with each group.
const CROSSES: [&str; 6] = ["wet", "morning", "midday", "evening", "weekend", "cold"];

/// Number of features.
pub const N_FEATURES: usize = 3 + 4 + 5 + 1 + 1 + GROUPS.len() + GROUPS.len() * CROSSES.len();

/// Feature names, in vector order: the schema the model artifact must match.
pub fn schema() -> Vec<String> {
    let mut v: Vec<String> = [
        "affinity",
        "personalised",
        "bought_category",
        "wet",
        "cold",
        "warm",
        "weather_known",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(
        Daypart::ALL
            .iter()
            .map(|d| format!("daypart_{}", d.as_str())),
    );
    v.push("weekend".into());
    v.push("distance_km".into());
    v.extend(GROUPS.iter().map(|g| format!("group_{g}")));
    for g in GROUPS {
        for c in CROSSES {
            v.push(format!("{g}_x_{c}"));
        }
    }
    debug_assert_eq!(v.len(), N_FEATURES);
    v
}

/// A stable hash of the schema (names and order), stored in model artifacts.
pub fn schema_hash() -> String {
    let names = schema();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    format!("{:016x}", stable_hash(&refs))
}

/// What the features are computed from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Offer category.
    pub category: &'a str,
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
    /// Whether the user bought in the category before (only with personalisation consent).
    pub bought_category: bool,
}

impl<'a> Input<'a> {
    /// The input for a candidate in a context.
    pub fn new(
        category: &'a str,
        ctx: &Context,
        distance_m: f64,
        affinity: Option<f64>,
        bought_category: bool,
    ) -> Self {
        Input {
            category,
            daypart: ctx.daypart,
            weekend: ctx.weekend,
            weather: ctx.weather,
            distance_m,
            affinity,
            bought_category,
        }
    }
}

/// Writes the feature vector of `input` into `out`.
pub fn encode(input: &Input<'_>, out: &mut [f64; N_FEATURES]) {
    out.fill(0.0);
    let wet = input.weather.is_some_and(|w| w.condition.is_wet());
    let cold = input.weather.is_some_and(|w| w.temp_c < 5.0);
    out[0] = input.affinity.unwrap_or(0.0).clamp(0.0, 1.0);
    out[1] = f64::from(u8::from(input.affinity.is_some()));
    out[2] = f64::from(u8::from(input.affinity.is_some() && input.bought_category));
    out[3] = f64::from(u8::from(wet));
    out[4] = f64::from(u8::from(cold));
    out[5] = f64::from(u8::from(input.weather.is_some_and(|w| w.temp_c > 18.0)));
    out[6] = f64::from(u8::from(input.weather.is_some()));
    let dp = Daypart::ALL
        .iter()
        .position(|d| *d == input.daypart)
        .unwrap_or(0);
    out[7 + dp] = 1.0;
    out[12] = f64::from(u8::from(input.weekend));
    out[13] = (input.distance_m.max(0.0) / 1000.0).min(1.0);
    let g = group_of(input.category);
    out[14 + g] = 1.0;
    let flags = [
        wet,
        input.daypart == Daypart::Morning,
        input.daypart == Daypart::Midday,
        input.daypart == Daypart::Evening,
        input.weekend,
        cold,
    ];
    let base = 14 + GROUPS.len() + g * CROSSES.len();
    for (k, f) in flags.iter().enumerate() {
        out[base + k] = f64::from(u8::from(*f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_has_one_name_per_feature_and_a_stable_hash() {
        let s = schema();
        assert_eq!(s.len(), N_FEATURES);
        let unique: std::collections::HashSet<_> = s.iter().collect();
        assert_eq!(unique.len(), N_FEATURES);
        assert_eq!(schema_hash(), schema_hash());
    }

    #[test]
    fn without_personalisation_user_features_are_zero() {
        let ctx = Context::new(
            "2026-11-20T07:00:00Z".parse().unwrap(),
            chrono_tz::Europe::Helsinki,
            None,
        );
        let mut x = [0.0; N_FEATURES];
        encode(&Input::new("coffee", &ctx, 40.0, None, true), &mut x);
        assert_eq!(&x[0..3], &[0.0, 0.0, 0.0]);
        encode(&Input::new("coffee", &ctx, 40.0, Some(0.8), true), &mut x);
        assert_eq!(&x[0..3], &[0.8, 1.0, 1.0]);
    }
}
