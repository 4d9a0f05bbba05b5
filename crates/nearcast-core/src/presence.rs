//! Presence for one fix: the user's track, then every fence it concerns.
//!
//! The **track** is one smoothed point per user (a constant-position Kalman filter whose
//! gain weighs the fix's reported accuracy against how far the user may have walked since
//! the last fix) with a **speed gate**: a fix farther from the track than
//! [`Params::max_speed_mps`] allows, plus [`Params::gate_sigmas`] standard deviations of
//! both positions, is refused as a jump and changes nothing. Fixes refused for
//! [`Params::reset_after`] are believed and the track restarts there.
//!
//! The track keeps one point, never a trail, and keeps it on a grid of [`TRACK_GRID_DEG`]
//! (about 11 × 6 m), rounded up or down at random (from the fix's time, so a retried event
//! gives the same state) so that the smoothing stays unbiased; the fix at hand is judged
//! at the unrounded smoothed position.
//!
//! A fix stamped before the track, within the track's lifetime, arrived late: the track
//! holds newer evidence and the fix changes nothing (phones batch, retry and deliver out of
//! order; judged on their own, such fixes re-entered fences already left). A fix that
//! cannot be placed on the track stands alone and is judged as it is: the first fix, one
//! after [`Params::track_ttl`] of silence, or one stamped at the track's instant (a batch
//! stamped at one instant), which moves presence but not the track, unless the speed gate
//! against the track refuses it. Fences are then judged on the track's position by [`trigger::step`].

use crate::catalog::Catalog;
use crate::event::Fix;
use crate::geofence::haversine_m;
use crate::state::{Track, UserState};
use crate::trigger::{self, Evidence, Params, Transition};
use chrono::{DateTime, Utc};

/// Time constant of the smoothed reported accuracy, seconds.
const ACCURACY_SMOOTHING_S: f64 = 30.0;

/// The grid the track's position is kept on, degrees: 1e-4° is about 11 m north-south and,
/// at 60° N, 6 m east-west. The stored point is never the fix's own.
pub const TRACK_GRID_DEG: f64 = 1e-4;

/// Rounds to the grid.
fn coarse(deg: f64) -> f64 {
    (deg / TRACK_GRID_DEG).round() * TRACK_GRID_DEG
}

/// Rounds to the grid up or down at random, with the chance of rounding up equal to how
/// far up the value lies: the stored point is unbiased, so smoothing over many fixes still
/// converges, although each stored point is coarse. `u` in [0, 1) is derived from the fix,
/// so the same event always gives the same state.
fn dithered(deg: f64, u: f64) -> f64 {
    (deg / TRACK_GRID_DEG + u).floor() * TRACK_GRID_DEG
}

/// Two numbers in [0, 1) from the fix's time: deterministic, and unrelated to the place.
fn dither(at: DateTime<Utc>) -> (f64, f64) {
    let h = crate::holdout::stable_hash(&["track", &at.timestamp_micros().to_string()]);
    (
        (h >> 40) as f64 / (1u64 << 24) as f64,
        ((h >> 16) & 0xFF_FFFF) as f64 / (1u64 << 24) as f64,
    )
}

/// The position a fix is judged at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Standard error, metres.
    pub sd_m: f64,
    /// Recent reported accuracy, smoothed, metres.
    pub acc_m: f64,
    /// Whether the fix stands alone.
    pub alone: bool,
}

/// Feeds a fix into the user's track. Returns the position to judge presence at, or
/// `None` when the fix was refused as an impossible jump.
pub fn track(p: &Params, state: &mut UserState, fix: &Fix, at: DateTime<Utc>) -> Option<Judged> {
    let alone = Judged {
        lat: fix.lat,
        lon: fix.lon,
        sd_m: fix.accuracy_m,
        acc_m: fix.accuracy_m,
        alone: true,
    };
    let start = |at| Track {
        at,
        lat: coarse(fix.lat),
        lon: coarse(fix.lon),
        sd_m: fix.accuracy_m.max(p.accuracy_floor_m),
        acc_m: fix.accuracy_m,
        rejected_since: None,
        pending: Default::default(),
    };
    let Some(t) = state.track.as_mut() else {
        state.track = Some(start(at));
        return Some(alone);
    };
    let acc = fix.accuracy_m.max(p.accuracy_floor_m);
    let r = acc * acc;
    // The speed gate: farther from the track than the time between them allows.
    let jump = |t: &Track, dt: f64| {
        let walk = p.walk_mps * dt;
        let var_pred = t.sd_m * t.sd_m + walk * walk;
        let d = haversine_m(t.lat, t.lon, fix.lat, fix.lon);
        (
            d > p.max_speed_mps * dt + p.gate_sigmas * (var_pred + r).sqrt(),
            var_pred,
        )
    };
    if at < t.at && t.at - at <= p.track_ttl {
        // Late: the track already holds newer evidence, and presence follows the newest.
        // A late fix changes nothing. Judged alone, fixes that phones batch and deliver
        // shuffled, late or twice entered fences the person had already left (on the
        // presence bench's walks delivered that way: 47 enters outside any visit against
        // 4 in order; `fixes_in_any_arrival_order_never_enter_a_visit_twice`).
        return None;
    }
    if at <= t.at {
        // Stamped at the track's instant (some apps stamp a batch when they upload it), or
        // a fix older than the track's lifetime behind a track stamped ahead (a device
        // clock running fast): judged alone, the track stays. One the track rules out (3
        // km from it at the same instant) is refused, and changes nothing: otherwise a
        // batch of fixes stamped at one instant all over a city would enter every fence
        // they touch at once. The times are not trusted to the second: the gate allows at
        // least `alone_after` between them.
        let dt = (t.at - at).max(p.alone_after);
        if t.at - at <= p.track_ttl && jump(t, dt.as_seconds_f64()).0 {
            return None;
        }
        return Some(alone);
    }
    if at - t.at > p.track_ttl {
        state.track = Some(start(at));
        return Some(alone);
    }
    let dt = (at - t.at).as_seconds_f64();
    let (is_jump, var_pred) = jump(t, dt);
    if is_jump {
        let since = *t.rejected_since.get_or_insert(at);
        if at - since < p.reset_after {
            return None;
        }
        state.track = Some(start(at));
        return Some(alone);
    }
    if dt >= p.alone_after.as_seconds_f64() {
        // A rare fix: the track has little to add; it restarts at the fix, which stands
        // alone (an enter still waiting keeps waiting).
        let pending = std::mem::take(&mut t.pending);
        let mut fresh = start(at);
        fresh.pending = pending;
        state.track = Some(fresh);
        return Some(alone);
    }
    let k = var_pred / (var_pred + r);
    // Moves of metres: interpolating degrees is exact to well under a metre.
    let (lat, lon) = (t.lat + k * (fix.lat - t.lat), t.lon + k * (fix.lon - t.lon));
    let (ua, ub) = dither(at);
    (t.lat, t.lon) = (dithered(lat, ua), dithered(lon, ub));
    t.sd_m = ((1.0 - k) * var_pred).sqrt();
    // Reported accuracy, smoothed over about half a minute.
    let a = 1.0 - (-dt / ACCURACY_SMOOTHING_S).exp();
    t.acc_m += a * (fix.accuracy_m - t.acc_m);
    t.at = at;
    t.rejected_since = None;
    Some(Judged {
        lat,
        lon,
        sd_m: t.sd_m,
        acc_m: t.acc_m,
        alone: false,
    })
}

/// Moves the user's presence for one fix: the track, then each fence the judged position
/// is in, the user is in, or an enter is waiting for. Returns every transition other than
/// staying outside, by store position, in store order.
pub fn update(
    p: &Params,
    catalog: &Catalog,
    state: &mut UserState,
    fix: &Fix,
    at: DateTime<Utc>,
) -> Vec<(u32, Transition)> {
    // Presence of stores that no longer exist is dropped.
    state.fences.retain(|sid, _| catalog.has_store(sid));
    if let Some(t) = state.track.as_mut() {
        t.pending.retain(|sid, _| catalog.has_store(sid));
    }
    let on_track = state.track.as_ref().is_some_and(|t| at > t.at);
    let Some(j) = track(p, state, fix, at) else {
        return Vec::new();
    };
    // A late fix moves presence, not the track or its pending enters.
    let use_pending = on_track || state.track.as_ref().is_some_and(|t| t.at == at);

    let mut hits = Vec::new();
    catalog.lookup_into(j.lat, j.lon, &mut hits);
    let mut touched: Vec<u32> = hits.clone();
    touched.extend(
        state
            .fences
            .keys()
            .filter_map(|sid| catalog.store_position(sid)),
    );
    if use_pending && let Some(t) = &state.track {
        touched.extend(
            t.pending
                .keys()
                .filter_map(|sid| catalog.store_position(sid)),
        );
    }
    touched.sort_unstable();
    touched.dedup();

    let mut out = Vec::new();
    for &pos in &touched {
        let store = &catalog.store(pos);
        let shape = &catalog.shape(pos);
        let (outside_m, depth_m) = if hits.binary_search(&pos).is_ok() {
            (0.0, shape.depth_m(j.lat, j.lon))
        } else {
            (
                shape
                    .distance_outside_m(j.lat, j.lon)
                    .max(f64::MIN_POSITIVE),
                0.0,
            )
        };
        let pending = if use_pending {
            state
                .track
                .as_ref()
                .and_then(|t| t.pending.get(&store.id).copied())
        } else {
            None
        };
        let e = Evidence {
            outside_m,
            depth_m,
            sd_m: j.sd_m,
            accuracy_m: fix.accuracy_m,
            recent_accuracy_m: j.acc_m,
            at,
            alone: j.alone,
        };
        let s = trigger::step_owned(p, state.fences.remove(&store.id), pending, &e);
        match s.state {
            Some(f) => {
                state.fences.insert(store.id.clone(), f);
            }
            None => {
                state.fences.remove(&store.id);
            }
        }
        if use_pending && let Some(t) = state.track.as_mut() {
            match s.pending {
                Some(since) => {
                    t.pending.insert(store.id.clone(), since);
                }
                None => {
                    t.pending.remove(&store.id);
                }
            }
        }
        if s.transition != Transition::Outside {
            out.push((pos, s.transition));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CapPolicy, Store, parse_json};
    use crate::ids::Id;
    use chrono::Duration;
    use serde_json::json;

    const P: Params = Params::DEFAULT;
    const SHOP: (f64, f64) = (60.17, 24.94);

    fn catalog() -> Catalog {
        let s: Store = parse_json(&json!({"id": "s", "name": "S", "category": "cafe",
            "time_zone": "Europe/Helsinki",
            "fence": {"type": "circle", "lat": SHOP.0, "lon": SHOP.1, "radius_m": 50}}))
        .unwrap();
        Catalog::build(vec![s], Vec::new(), CapPolicy::default()).unwrap()
    }

    fn t(secs: i64) -> DateTime<Utc> {
        "2026-11-20T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(secs)
    }

    /// A fix `north` metres north of the shop's centre.
    fn fix(north: f64, acc: f64) -> Fix {
        Fix {
            lat: SHOP.0 + north / 111_195.0,
            lon: SHOP.1,
            accuracy_m: acc,
        }
    }

    fn feed(c: &Catalog, s: &mut UserState, north: f64, acc: f64, secs: i64) -> Vec<Transition> {
        update(&P, c, s, &fix(north, acc), t(secs))
            .into_iter()
            .map(|(_, tr)| tr)
            .collect()
    }

    fn inside(s: &UserState) -> bool {
        s.fences.contains_key(&Id::parse("s").unwrap())
    }

    #[test]
    fn the_first_fix_stands_alone_and_enters_when_inside() {
        let c = catalog();
        let mut s = UserState::default();
        assert_eq!(feed(&c, &mut s, 0.0, 10.0, 0), vec![Transition::Enter]);
        let tr = s.track.as_ref().unwrap();
        assert_eq!((tr.at, tr.acc_m), (t(0), 10.0));
        // Alone, inside is enough.
        let mut s = UserState::default();
        assert_eq!(feed(&c, &mut s, 49.0, 10.0, 0), vec![Transition::Enter]);
        let mut s = UserState::default();
        assert!(feed(&c, &mut s, 51.0, 10.0, 0).is_empty());
        assert!(!inside(&s));
    }

    #[test]
    fn frequent_fixes_enter_only_after_the_confirmation() {
        let c = catalog();
        let mut s = UserState::default();
        assert!(feed(&c, &mut s, 300.0, 10.0, 0).is_empty());
        // Walking in, a fix every 2 s: the track follows, the enter waits for its confirmation inside.
        let mut entered_at = None;
        for k in 1..200 {
            let north = (300.0 - 3.0 * k as f64).max(0.0);
            let trs = feed(&c, &mut s, north, 10.0, 2 * k);
            if trs.contains(&Transition::Enter) {
                entered_at = Some(2 * k);
                break;
            }
        }
        let at = entered_at.expect("entered");
        let pending_from = at - P.enter_confirm.num_seconds();
        assert!(pending_from > 0);
        // The track was inside since then, and not a whole confirmation before.
        assert!(inside(&s));
        assert!(s.track.as_ref().unwrap().pending.is_empty());
    }

    #[test]
    fn a_rare_fix_enters_on_its_own() {
        let c = catalog();
        let mut s = UserState::default();
        assert!(feed(&c, &mut s, 300.0, 10.0, 0).is_empty());
        let gap = P.alone_after.num_seconds();
        assert!(
            feed(&c, &mut s, 0.0, 10.0, gap - 1).is_empty(),
            "on the track"
        );
        let mut s = UserState::default();
        feed(&c, &mut s, 300.0, 10.0, 0);
        assert_eq!(feed(&c, &mut s, 0.0, 10.0, gap), vec![Transition::Enter]);
    }

    #[test]
    fn a_jump_is_refused_until_it_has_lasted() {
        let c = catalog();
        let mut s = UserState::default();
        feed(&c, &mut s, 5000.0, 5.0, 0);
        let before = s.track.clone().unwrap();
        // 5 km in 2 s: refused, nothing moves.
        assert!(feed(&c, &mut s, 0.0, 5.0, 2).is_empty());
        let tr = s.track.clone().unwrap();
        assert_eq!((tr.lat, tr.lon, tr.at), (before.lat, before.lon, before.at));
        assert_eq!(tr.rejected_since, Some(t(2)));
        assert!(!inside(&s));
        // Still refused just before the reset...
        let r = P.reset_after.num_seconds();
        assert!(feed(&c, &mut s, 0.0, 5.0, 2 + r - 1).is_empty());
        // ...believed once it has lasted: the track restarts there, alone.
        assert_eq!(feed(&c, &mut s, 0.0, 5.0, 2 + r), vec![Transition::Enter]);
        let tr = s.track.unwrap();
        assert_eq!((tr.at, tr.rejected_since), (t(2 + r), None));
    }

    #[test]
    fn a_move_the_gate_allows_is_smoothed_by_accuracy() {
        let mut s = UserState::default();
        let north = |j: Judged| (j.lat - SHOP.0) * 111_195.0;
        let j0 = track(&P, &mut s, &fix(200.0, 10.0), t(0)).unwrap();
        assert!(j0.alone);
        // 10 m on in 2 s with 10 m accuracy: the judged position moves part of the way.
        let j = track(&P, &mut s, &fix(210.0, 10.0), t(2)).unwrap();
        assert!(!j.alone);
        let from = s.track.as_ref().map(|_| north(j0)).unwrap();
        let moved = north(j) - from;
        assert!(moved > 1.0 && moved < 9.0, "{moved}");
        // A fix reporting 2 km accuracy barely moves it.
        let before = (s.track.as_ref().unwrap().lat - SHOP.0) * 111_195.0;
        let j = track(&P, &mut s, &fix(400.0, 2000.0), t(4)).unwrap();
        let moved = north(j) - before;
        assert!(moved > 0.0 && moved < 1.0, "{moved}");
    }

    #[test]
    fn a_late_fix_changes_nothing_and_one_at_the_tracks_instant_is_judged_alone() {
        let c = catalog();
        let mut s = UserState::default();
        feed(&c, &mut s, 300.0, 10.0, 10);
        let before = s.clone();
        // Inside the shop 10 s before the track: the track is newer, nothing changes.
        assert!(feed(&c, &mut s, 0.0, 10.0, 0).is_empty());
        assert_eq!(s, before);
        // Inside, then a late fix from outside: still inside, no exit.
        let mut s = UserState::default();
        for k in 0..40 {
            feed(&c, &mut s, 0.0, 5.0, 2 * k);
        }
        assert!(inside(&s));
        let before = s.clone();
        assert!(feed(&c, &mut s, 400.0, 5.0, 40).is_empty());
        assert_eq!(s, before);
        // At the same instant, when the gate allows it: judged alone, the track stays.
        let mut s = UserState::default();
        assert!(feed(&c, &mut s, 55.0, 10.0, 10).is_empty());
        let before = s.track.clone();
        assert_eq!(feed(&c, &mut s, 0.0, 20.0, 10), vec![Transition::Enter]);
        assert_eq!(s.track, before);
    }

    #[test]
    fn a_late_fix_the_track_rules_out_is_refused() {
        let c = catalog();
        // 3 km from the track at the same instant, or 5 s before it: refused, no change
        // (the gate allows 30 s between them: 1.5 km at 50 m/s).
        for late in [0, 5] {
            let mut s = UserState::default();
            feed(&c, &mut s, 3000.0, 10.0, 10);
            let before = s.clone();
            assert!(feed(&c, &mut s, 0.0, 10.0, 10 - late).is_empty());
            assert_eq!(s, before, "{late}");
        }
        // A batch stamped at one instant all over the map enters at most what its first
        // fix entered, however many fences it touches.
        let mut s = UserState::default();
        assert!(feed(&c, &mut s, 3000.0, 10.0, 10).is_empty());
        for k in 0..50 {
            assert!(
                feed(
                    &c,
                    &mut s,
                    (k % 3) as f64 * 20.0 - 1600.0 * (k % 2) as f64,
                    10.0,
                    10
                )
                .is_empty()
            );
        }
        assert!(s.fences.is_empty());
        // Long after the track (past its lifetime), a late fix stands alone again.
        let mut s = UserState::default();
        let ttl = P.track_ttl.num_seconds();
        feed(&c, &mut s, 3000.0, 10.0, ttl + 10);
        assert_eq!(feed(&c, &mut s, 0.0, 10.0, 0), vec![Transition::Enter]);
    }

    #[test]
    fn the_track_is_forgotten_after_its_ttl() {
        let c = catalog();
        let mut s = UserState::default();
        feed(&c, &mut s, 5000.0, 10.0, 0);
        let ttl = P.track_ttl.num_seconds();
        // 5 km in 5 minutes and a second is past the gate only because the track expired.
        assert_eq!(
            feed(&c, &mut s, 0.0, 10.0, ttl + 1),
            vec![Transition::Enter]
        );
        assert_eq!(s.track.as_ref().unwrap().at, t(ttl + 1));
    }

    #[test]
    fn an_exit_needs_the_track_beyond_the_band_for_the_confirmation() {
        let c = catalog();
        let mut s = UserState::default();
        feed(&c, &mut s, 0.0, 10.0, 0);
        assert!(inside(&s));
        // Walk out at 1.5 m/s, a fix every 2 s, to 400 m north; then stay there.
        let mut exit_at = None;
        for k in 1..600 {
            let north = (3.0 * k as f64).min(400.0);
            if feed(&c, &mut s, north, 10.0, 2 * k).contains(&Transition::Exit) {
                exit_at = Some(2 * k);
                break;
            }
        }
        let at = exit_at.expect("left");
        assert!(!inside(&s));
        // It took at least the confirmation beyond the band (which starts 90 m out at the
        // earliest: 50 m radius, 40 m margin), so not before 60 s of walking plus 60 s.
        assert!(at >= 60 + P.exit_confirm.num_seconds(), "{at}");
    }

    #[test]
    fn presence_of_a_removed_store_is_dropped() {
        let c = catalog();
        let mut s = UserState::default();
        feed(&c, &mut s, 0.0, 10.0, 0);
        assert!(inside(&s));
        let empty = Catalog::empty();
        update(&P, &empty, &mut s, &fix(0.0, 10.0), t(2));
        assert!(s.fences.is_empty());
    }

    #[test]
    fn the_track_keeps_one_point_on_the_grid_and_the_same_fix_gives_the_same_state() {
        let c = catalog();
        let on_grid = |d: f64| {
            let k = d / TRACK_GRID_DEG;
            (k - k.round()).abs() < 1e-6
        };
        let mut s = UserState::default();
        let mut walk = Vec::new();
        for k in 0..30 {
            let f = Fix {
                lat: SHOP.0 + 0.000_012_345 * f64::from(k),
                lon: SHOP.1 + 0.000_006_789 * f64::from(k),
                accuracy_m: 8.0,
            };
            update(&P, &c, &mut s, &f, t(2 * i64::from(k)));
            let tr = s.track.as_ref().unwrap();
            assert!(on_grid(tr.lat) && on_grid(tr.lon), "{tr:?}");
            walk.push(s.clone());
        }
        // Deterministic: replaying the same fixes gives the same states.
        let mut again = UserState::default();
        for (k, want) in walk.iter().enumerate() {
            let k = k as i32;
            let f = Fix {
                lat: SHOP.0 + 0.000_012_345 * f64::from(k),
                lon: SHOP.1 + 0.000_006_789 * f64::from(k),
                accuracy_m: 8.0,
            };
            update(&P, &c, &mut again, &f, t(2 * i64::from(k)));
            assert_eq!(&again, want);
        }
        // Unbiased: a track fed the same point for long settles within a grid step of it.
        let mut s = UserState::default();
        let target = (SHOP.0 + 0.000_037, SHOP.1 + 0.000_061);
        for k in 0..600 {
            let f = Fix {
                lat: target.0,
                lon: target.1,
                accuracy_m: 10.0,
            };
            update(&P, &c, &mut s, &f, t(2 * k));
        }
        let tr = s.track.unwrap();
        assert!((tr.lat - target.0).abs() <= TRACK_GRID_DEG);
        assert!((tr.lon - target.1).abs() <= TRACK_GRID_DEG);
    }
}
