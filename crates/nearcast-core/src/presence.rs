//! Presence for one fix: the user's track, then every fence it concerns.
//!
//! The **track** is one smoothed point per user (a constant-position Kalman filter whose
//! gain weighs the fix's reported accuracy against how far the user may have walked since
//! the last fix) with a **speed gate**: a fix farther from the track than
//! [`Params::max_speed_mps`] allows, plus [`Params::gate_sigmas`] standard deviations of
//! both positions, is refused as a jump and changes nothing. Fixes refused for
//! [`Params::reset_after`] are believed and the track restarts there.
//!
//! A fix that cannot be placed on the track stands alone and is judged as it is: the first
//! fix, one after [`Params::track_ttl`] of silence, or one stamped no later than the track
//! (a late arrival, or a batch stamped at one instant), which moves presence but not the
//! track. Fences are then judged on the track's position by [`trigger::step`].

use crate::catalog::Catalog;
use crate::event::Fix;
use crate::geofence::haversine_m;
use crate::state::{Track, UserState};
use crate::trigger::{self, Evidence, Params, Transition};
use chrono::{DateTime, Utc};

/// The position a fix is judged at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Standard error, metres.
    pub sd_m: f64,
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
        alone: true,
    };
    let start = |at| Track {
        at,
        lat: fix.lat,
        lon: fix.lon,
        sd_m: fix.accuracy_m.max(p.accuracy_floor_m),
        rejected_since: None,
        pending: Default::default(),
    };
    let Some(t) = state.track.as_mut() else {
        state.track = Some(start(at));
        return Some(alone);
    };
    if at <= t.at {
        // Late, or stamped at the track's instant: judged alone, the track stays.
        return Some(alone);
    }
    if at - t.at > p.track_ttl {
        state.track = Some(start(at));
        return Some(alone);
    }
    let dt = (at - t.at).as_seconds_f64();
    let walk = p.walk_mps * dt;
    let var_pred = t.sd_m * t.sd_m + walk * walk;
    let acc = fix.accuracy_m.max(p.accuracy_floor_m);
    let r = acc * acc;
    let d = haversine_m(t.lat, t.lon, fix.lat, fix.lon);
    if d > p.max_speed_mps * dt + p.gate_sigmas * (var_pred + r).sqrt() {
        let since = *t.rejected_since.get_or_insert(at);
        if at - since < p.reset_after {
            return None;
        }
        state.track = Some(start(at));
        return Some(alone);
    }
    let k = var_pred / (var_pred + r);
    // Moves of metres: interpolating degrees is exact to well under a metre.
    t.lat += k * (fix.lat - t.lat);
    t.lon += k * (fix.lon - t.lon);
    t.sd_m = ((1.0 - k) * var_pred).sqrt();
    t.at = at;
    t.rejected_since = None;
    Some(Judged {
        lat: t.lat,
        lon: t.lon,
        sd_m: t.sd_m,
        alone: dt >= p.alone_after.as_seconds_f64(),
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
    state
        .fences
        .retain(|sid, _| catalog.store_pos.contains_key(sid));
    if let Some(t) = state.track.as_mut() {
        t.pending
            .retain(|sid, _| catalog.store_pos.contains_key(sid));
    }
    let on_track = state.track.as_ref().is_some_and(|t| at > t.at);
    let Some(j) = track(p, state, fix, at) else {
        return Vec::new();
    };
    // A late fix moves presence, not the track or its pending enters.
    let use_pending = on_track || state.track.as_ref().is_some_and(|t| t.at == at);

    let mut hits = Vec::new();
    catalog.index.lookup_into(j.lat, j.lon, &mut hits);
    let mut touched: Vec<u32> = hits.clone();
    touched.extend(
        state
            .fences
            .keys()
            .filter_map(|sid| catalog.store_pos.get(sid).copied()),
    );
    if use_pending && let Some(t) = &state.track {
        touched.extend(
            t.pending
                .keys()
                .filter_map(|sid| catalog.store_pos.get(sid).copied()),
        );
    }
    touched.sort_unstable();
    touched.dedup();

    let mut out = Vec::new();
    for &pos in &touched {
        let store = &catalog.stores[pos as usize];
        let shape = &catalog.index.shapes()[pos as usize];
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
            at,
            alone: j.alone,
        };
        let s = trigger::step(p, state.fences.get(&store.id), pending, &e);
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
