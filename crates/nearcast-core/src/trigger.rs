//! Enter and dwell with hysteresis.
//!
//! GPS fixes jitter by tens of metres, so a user standing at a fence's edge produces a
//! stream of "inside, outside, inside" fixes. Nearcast keeps presence per store and moves
//! it with hysteresis:
//!
//! * **Enter** when a fix's centre is inside the fence and its accuracy radius is at most
//!   [`MAX_ENTER_ACCURACY_M`]: a coarse fix (a cell-tower position of 500 m) cannot show
//!   that someone is at a 50 m café.
//! * **Stay** while fixes are inside, or outside by no more than [`EXIT_MARGIN_M`] plus the
//!   fix's own accuracy radius: an uncertain fix just outside is not evidence of leaving.
//! * **Exit** on a fix farther out than that, or when presence was last confirmed more than
//!   [`PRESENCE_TTL`] ago (the app stopped reporting).
//!
//! Each offer is decided at most once per visit, so jitter never yields a second enter
//! decision. Dwell offers are decided on the first fix at least N minutes after entering.

use crate::state::FenceState;
use chrono::{DateTime, Duration, Utc};

/// Largest accuracy radius (metres) with which a fix may enter a fence.
pub const MAX_ENTER_ACCURACY_M: f64 = 100.0;
/// Distance beyond the fence edge (metres), on top of the fix's accuracy, that counts as leaving.
pub const EXIT_MARGIN_M: f64 = 30.0;
/// Presence not confirmed for this long has ended.
pub const PRESENCE_TTL: Duration = Duration::hours(2);

/// What a fix means for one store's fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Just entered.
    Enter,
    /// Still inside, for this many minutes.
    Inside {
        /// Minutes since entering.
        minutes: i64,
    },
    /// Just left (or presence expired).
    Exit,
    /// Outside and staying outside.
    Outside,
}

/// Moves one fence's presence given a fix.
///
/// `distance_outside_m` is how far outside the fence the fix's centre is (0 when inside).
/// Returns the transition and the new presence (`None` = outside).
pub fn step(
    prev: Option<&FenceState>,
    distance_outside_m: f64,
    accuracy_m: f64,
    at: DateTime<Utc>,
) -> (Transition, Option<FenceState>) {
    let inside = distance_outside_m <= 0.0;
    match prev {
        Some(p) if at - p.last_seen > PRESENCE_TTL => {
            // The visit ended while the app was silent; this fix may start a new one.
            if inside && accuracy_m <= MAX_ENTER_ACCURACY_M {
                (
                    Transition::Enter,
                    Some(FenceState {
                        since: at,
                        last_seen: at,
                        decided: Vec::new(),
                    }),
                )
            } else {
                (Transition::Exit, None)
            }
        }
        Some(p) => {
            if distance_outside_m > EXIT_MARGIN_M + accuracy_m {
                (Transition::Exit, None)
            } else {
                let mut s = p.clone();
                if inside {
                    s.last_seen = s.last_seen.max(at);
                }
                (
                    Transition::Inside {
                        minutes: (at - s.since).num_minutes(),
                    },
                    Some(s),
                )
            }
        }
        None if inside && accuracy_m <= MAX_ENTER_ACCURACY_M => (
            Transition::Enter,
            Some(FenceState {
                since: at,
                last_seen: at,
                decided: Vec::new(),
            }),
        ),
        None => (Transition::Outside, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(min: i64) -> DateTime<Utc> {
        "2026-11-20T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(min)
    }

    fn inside_since(min: i64) -> FenceState {
        FenceState {
            since: t(min),
            last_seen: t(min),
            decided: Vec::new(),
        }
    }

    #[test]
    fn presence_expires_after_the_ttl_and_not_at_it() {
        let p = inside_since(0);
        let ttl = PRESENCE_TTL.num_minutes();
        // Exactly at the TTL the visit goes on (and is confirmed).
        let (tr, s) = step(Some(&p), 0.0, 10.0, t(ttl));
        assert_eq!(tr, Transition::Inside { minutes: ttl });
        assert_eq!(s.unwrap().last_seen, t(ttl));
        // Past it, an inside fix with good accuracy starts a new visit...
        let (tr, s) = step(Some(&p), 0.0, 10.0, t(ttl + 1));
        assert_eq!(tr, Transition::Enter);
        assert_eq!(s.unwrap().since, t(ttl + 1));
        // ...an inside fix too coarse to enter, or one outside, ends it.
        assert_eq!(
            step(Some(&p), 0.0, 150.0, t(ttl + 1)),
            (Transition::Exit, None)
        );
        assert_eq!(
            step(Some(&p), 5.0, 10.0, t(ttl + 1)),
            (Transition::Exit, None)
        );
    }

    #[test]
    fn leaving_needs_the_margin_plus_the_accuracy_exactly() {
        let p = inside_since(0);
        let edge = EXIT_MARGIN_M + 10.0;
        let (tr, s) = step(Some(&p), edge, 10.0, t(5));
        assert_eq!(tr, Transition::Inside { minutes: 5 });
        // A fix just outside confirms nothing: last_seen stays.
        assert_eq!(s.unwrap().last_seen, t(0));
        assert_eq!(
            step(Some(&p), edge + 0.01, 10.0, t(5)),
            (Transition::Exit, None)
        );
    }

    #[test]
    fn only_a_later_inside_fix_confirms_presence() {
        let p = inside_since(10);
        // An older fix (arriving late) does not move last_seen back.
        let (_, s) = step(Some(&p), 0.0, 10.0, t(5));
        assert_eq!(s.unwrap().last_seen, t(10));
        // One at the same instant changes nothing, a later one moves it.
        let (_, s) = step(Some(&p), 0.0, 10.0, t(10));
        assert_eq!(s.unwrap().last_seen, t(10));
        let (_, s) = step(Some(&p), 0.0, 10.0, t(11));
        assert_eq!(s.unwrap().last_seen, t(11));
    }

    #[test]
    fn enter_then_dwell_then_exit() {
        let (tr, s) = step(None, 0.0, 10.0, t(0));
        assert_eq!(tr, Transition::Enter);
        let (tr, s) = step(s.as_ref(), 0.0, 10.0, t(7));
        assert_eq!(tr, Transition::Inside { minutes: 7 });
        let (tr, s) = step(s.as_ref(), 100.0, 10.0, t(8));
        assert_eq!(tr, Transition::Exit);
        assert!(s.is_none());
    }

    #[test]
    fn a_coarse_fix_does_not_enter() {
        assert_eq!(step(None, 0.0, 500.0, t(0)).0, Transition::Outside);
    }

    #[test]
    fn presence_expires_after_silence() {
        let (_, s) = step(None, 0.0, 10.0, t(0));
        let (tr, s2) = step(s.as_ref(), 0.0, 10.0, t(200));
        assert_eq!(tr, Transition::Enter, "a new visit after two silent hours");
        assert_eq!(s2.unwrap().since, t(200));
    }

    proptest! {
        /// Jitter at the edge: fixes alternating inside and up to 30 m + accuracy outside
        /// never produce a second enter.
        #[test]
        fn edge_jitter_never_enters_twice(jitter in prop::collection::vec((0.0..30.0f64, 0.0..60.0f64, any::<bool>()), 1..200)) {
            let (tr, mut s) = step(None, 0.0, 10.0, t(0));
            prop_assert_eq!(tr, Transition::Enter);
            for (i, (out, acc, is_in)) in jitter.into_iter().enumerate() {
                let d = if is_in { 0.0 } else { out.min(EXIT_MARGIN_M + acc) };
                let (tr, next) = step(s.as_ref(), d, acc, t(i as i64 / 4));
                prop_assert!(matches!(tr, Transition::Inside { .. }), "got {:?}", tr);
                s = next;
            }
        }
    }
}
