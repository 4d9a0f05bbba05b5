//! Enter, dwell and exit for one fence, with hysteresis and confirmation in time.
//!
//! GPS fixes jitter by tens of metres, drift by tens more in street canyons, and now and
//! then jump hundreds of metres. Presence is therefore judged on the user's *track* (the
//! fixes smoothed and gated, see `presence.rs`), and moves per store like this:
//!
//! * **Enter** when the judged position is inside the fence, its fix's accuracy radius is
//!   at most [`Params::max_enter_accuracy_m`] (a 500 m cell-tower position cannot show that
//!   someone is at a 50 m café), and either
//!   - the fix stands alone (the first fix, or one [`Params::alone_after`] after the
//!     previous: an app that reports rarely still gets its enter on one good fix), or
//!   - the track has been inside for [`Params::enter_confirm`], each time by at least
//!     [`Params::enter_depth_m`] plus [`Params::enter_depth_per_accuracy`] of the accuracy
//!     the phone has lately been reporting (a phone whose fixes are poor is usually off by
//!     more, so a walk past the fence's edge must not look like a visit).
//! * **Stay** while the judged position is inside, or outside by no more than
//!   [`Params::exit_margin_m`] plus its own standard error.
//! * **Exit** once the judged position has stayed beyond that band for
//!   [`Params::exit_confirm`] (one fix never ends a visit), or when presence was last
//!   confirmed more than [`Params::presence_ttl`] ago (the app stopped reporting).
//!
//! Each offer is decided at most once per visit; an exit needs time beyond the band, so
//! jitter shorter than [`Params::exit_confirm`] never brings a second enter.

use crate::state::FenceState;
use chrono::{DateTime, Duration, Utc};

/// Largest accuracy radius (metres) with which a fix may enter a fence.
pub const MAX_ENTER_ACCURACY_M: f64 = 100.0;
/// Distance beyond the fence edge (metres), on top of the position's standard error, that
/// counts as leaving.
pub const EXIT_MARGIN_M: f64 = 40.0;
/// Presence not confirmed for this long has ended.
pub const PRESENCE_TTL: Duration = Duration::hours(2);

/// The presence rules' parameters. The service uses [`Params::DEFAULT`]; the evaluation in
/// `bench/presence` measures them (and was used to choose them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Largest accuracy radius with which a fix may enter, metres.
    pub max_enter_accuracy_m: f64,
    /// How far inside the edge the judged position must be to enter, metres...
    pub enter_depth_m: f64,
    /// ...plus this share of the fixes' recent reported accuracy (a phone that reports
    /// poor accuracy is usually also off by more).
    pub enter_depth_per_accuracy: f64,
    /// How long the judged position must stay inside before an enter, when fixes come
    /// often.
    pub enter_confirm: Duration,
    /// A fix this long after the previous one stands alone: it may enter by itself.
    pub alone_after: Duration,
    /// Band beyond the edge, on top of the standard error, that still counts as inside.
    pub exit_margin_m: f64,
    /// How long the judged position must stay beyond the band before an exit.
    pub exit_confirm: Duration,
    /// Presence not confirmed for this long has ended.
    pub presence_ttl: Duration,
    /// The fastest a fix may move from the track, metres a second (beyond the track's and
    /// the fix's own uncertainty); faster fixes are refused as jumps.
    pub max_speed_mps: f64,
    /// Standard deviations of slack the speed gate allows.
    pub gate_sigmas: f64,
    /// Smallest error assumed for a fix whatever accuracy it reports, metres.
    pub accuracy_floor_m: f64,
    /// How fast the track's position becomes uncertain between fixes, metres a second
    /// (the walking speed the smoother allows for).
    pub walk_mps: f64,
    /// Fixes refused as jumps for this long are believed: the track restarts there.
    pub reset_after: Duration,
    /// A track not fed for this long is forgotten; the next fix starts a new one.
    pub track_ttl: Duration,
}

impl Params {
    /// The parameters the service runs with.
    pub const DEFAULT: Params = Params {
        max_enter_accuracy_m: MAX_ENTER_ACCURACY_M,
        enter_depth_m: 0.0,
        enter_depth_per_accuracy: 0.2,
        enter_confirm: Duration::seconds(10),
        alone_after: Duration::seconds(30),
        exit_margin_m: EXIT_MARGIN_M,
        exit_confirm: Duration::seconds(60),
        presence_ttl: PRESENCE_TTL,
        max_speed_mps: 50.0,
        gate_sigmas: 3.0,
        accuracy_floor_m: 10.0,
        walk_mps: 2.0,
        reset_after: Duration::seconds(30),
        track_ttl: Duration::minutes(5),
    };
}

impl Default for Params {
    fn default() -> Self {
        Params::DEFAULT
    }
}

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

/// What one fix shows about one fence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// How far outside the fence the judged position is, metres (0 inside).
    pub outside_m: f64,
    /// How far inside the fence it is, metres (0 outside).
    pub depth_m: f64,
    /// Standard error of the judged position, metres.
    pub sd_m: f64,
    /// The fix's reported accuracy radius, metres.
    pub accuracy_m: f64,
    /// The recent fixes' reported accuracy, smoothed, metres (the fix's own when alone).
    pub recent_accuracy_m: f64,
    /// The fix's time.
    pub at: DateTime<Utc>,
    /// Whether the fix stands alone (no recent fix to confirm it with).
    pub alone: bool,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The transition.
    pub transition: Transition,
    /// The new presence (`None` = outside).
    pub state: Option<FenceState>,
    /// Since when an enter has been waiting for confirmation, if it is.
    pub pending: Option<DateTime<Utc>>,
}

fn entered(at: DateTime<Utc>) -> Option<FenceState> {
    Some(FenceState {
        since: at,
        last_seen: at,
        dwelt: None,
        decided: Vec::new(),
        out_since: None,
    })
}

/// Moves one fence's presence given what a fix shows.
///
/// `prev` is the presence before the fix, `pending` since when an enter has been waiting.
pub fn step(
    p: &Params,
    prev: Option<&FenceState>,
    pending: Option<DateTime<Utc>>,
    e: &Evidence,
) -> Step {
    step_owned(p, prev.cloned(), pending, e)
}

/// [`step`] on a presence the caller hands over (its list of offers decided is moved,
/// not copied).
pub fn step_owned(
    p: &Params,
    prev: Option<FenceState>,
    pending: Option<DateTime<Utc>>,
    e: &Evidence,
) -> Step {
    let at = e.at;
    let inside = e.outside_m <= 0.0;
    // A fix on the track must be deep enough for the accuracy the phone has been reporting;
    // a lone fix cannot be weighed against others and enters on its own, as it always did.
    let depth_needed = if e.alone {
        p.enter_depth_m
    } else {
        p.enter_depth_m + p.enter_depth_per_accuracy * e.recent_accuracy_m
    };
    let may_enter = inside
        && e.depth_m >= depth_needed
        && e.accuracy_m <= p.max_enter_accuracy_m
        && e.sd_m <= p.max_enter_accuracy_m;
    let enter_or_wait = || -> Step {
        if !may_enter {
            return Step {
                transition: Transition::Outside,
                state: None,
                pending: None,
            };
        }
        let since = pending.map_or(at, |s| s.min(at));
        if e.alone || at - since >= p.enter_confirm {
            Step {
                transition: Transition::Enter,
                state: entered(at),
                pending: None,
            }
        } else {
            Step {
                transition: Transition::Outside,
                state: None,
                pending: Some(since),
            }
        }
    };
    match prev {
        None => enter_or_wait(),
        Some(ref s) if at - s.last_seen > p.presence_ttl => {
            // The visit ended while the app was silent; this fix may start a new one.
            let next = enter_or_wait();
            if next.transition == Transition::Enter {
                next
            } else {
                Step {
                    transition: Transition::Exit,
                    ..next
                }
            }
        }
        Some(mut s) => {
            if e.outside_m > p.exit_margin_m + e.sd_m {
                let since = s.out_since.map_or(at, |o| o.min(at));
                if at - since >= p.exit_confirm {
                    return Step {
                        transition: Transition::Exit,
                        state: None,
                        pending: None,
                    };
                }
                s.out_since = Some(since);
            } else {
                s.out_since = None;
                if inside {
                    s.last_seen = s.last_seen.max(at);
                }
            }
            Step {
                transition: Transition::Inside {
                    minutes: (at - s.since).num_minutes(),
                },
                state: Some(s),
                pending: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: Params = Params::DEFAULT;

    fn t(secs: i64) -> DateTime<Utc> {
        "2026-11-20T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::seconds(secs)
    }

    /// A fix judged `out` metres outside (negative: that deep inside), with standard error
    /// and accuracy `acc`, at `secs`, on the track (not alone).
    fn ev(out: f64, acc: f64, secs: i64) -> Evidence {
        Evidence {
            outside_m: out.max(0.0),
            depth_m: (-out).max(0.0),
            sd_m: acc,
            accuracy_m: acc,
            recent_accuracy_m: acc,
            at: t(secs),
            alone: false,
        }
    }

    fn alone(out: f64, acc: f64, secs: i64) -> Evidence {
        Evidence {
            alone: true,
            ..ev(out, acc, secs)
        }
    }

    fn inside_since(secs: i64) -> FenceState {
        FenceState {
            since: t(secs),
            last_seen: t(secs),
            dwelt: None,
            decided: Vec::new(),
            out_since: None,
        }
    }

    fn run(prev: Option<&FenceState>, pending: Option<DateTime<Utc>>, e: Evidence) -> Step {
        step(&P, prev, pending, &e)
    }

    #[test]
    fn a_lone_good_fix_inside_enters_at_once() {
        let s = run(None, None, alone(-30.0, 10.0, 0));
        assert_eq!(s.transition, Transition::Enter);
        assert_eq!(s.state.unwrap().since, t(0));
        assert_eq!(s.pending, None);
    }

    #[test]
    fn on_the_track_an_enter_waits_for_its_confirmation_exactly() {
        let c = P.enter_confirm.num_seconds();
        let s = run(None, None, ev(-30.0, 10.0, 0));
        assert_eq!((s.transition, s.pending), (Transition::Outside, Some(t(0))));
        assert!(s.state.is_none());
        let s = run(None, s.pending, ev(-30.0, 10.0, c - 1));
        assert_eq!((s.transition, s.pending), (Transition::Outside, Some(t(0))));
        let s = run(None, s.pending, ev(-30.0, 10.0, c));
        assert_eq!(s.transition, Transition::Enter);
        assert_eq!(s.state.unwrap().since, t(c));
        assert_eq!(s.pending, None);
    }

    #[test]
    fn one_fix_outside_resets_a_waiting_enter() {
        let s = run(None, Some(t(0)), ev(3.0, 10.0, 10));
        assert_eq!((s.transition, s.pending), (Transition::Outside, None));
        let s = run(None, s.pending, ev(-30.0, 10.0, 30));
        assert_eq!(
            (s.transition, s.pending),
            (Transition::Outside, Some(t(30)))
        );
        // So does one inside but not deep enough for its accuracy.
        let s = run(None, Some(t(0)), ev(-1.0, 10.0, 10));
        assert_eq!((s.transition, s.pending), (Transition::Outside, None));
    }

    #[test]
    fn entering_needs_the_depth_for_its_accuracy_and_a_good_accuracy() {
        let p = Params {
            enter_depth_m: 5.0,
            enter_depth_per_accuracy: 0.5,
            ..P
        };
        // On the track, confirmed: 5 m plus half the recent accuracy of 10 m: 10 m deep.
        let c = P.enter_confirm.num_seconds();
        let at = |depth: f64, recent: f64| Evidence {
            recent_accuracy_m: recent,
            ..ev(-depth, 10.0, c)
        };
        let go = |e: Evidence| step(&p, None, Some(t(0)), &e).transition;
        assert_eq!(go(at(9.9, 10.0)), Transition::Outside);
        assert_eq!(go(at(10.0, 10.0)), Transition::Enter);
        // A phone reporting 30 m lately must be 20 m deep.
        assert_eq!(go(at(19.9, 30.0)), Transition::Outside);
        assert_eq!(go(at(20.0, 30.0)), Transition::Enter);
        // Alone, the fixed depth only.
        let lone = |depth: f64| Evidence {
            recent_accuracy_m: 30.0,
            ..alone(-depth, 10.0, 0)
        };
        assert_eq!(
            step(&p, None, None, &lone(4.9)).transition,
            Transition::Outside
        );
        assert_eq!(
            step(&p, None, None, &lone(5.0)).transition,
            Transition::Enter
        );
        // The defaults: 0.2 of the recent accuracy, for fixes on the track...
        assert_eq!(P.enter_depth_per_accuracy, 0.2);
        let c = P.enter_confirm.num_seconds();
        assert_eq!(
            run(None, Some(t(0)), ev(-1.9, 10.0, c)).transition,
            Transition::Outside
        );
        assert_eq!(
            run(None, Some(t(0)), ev(-2.0, 10.0, c)).transition,
            Transition::Enter
        );
        // ...while a lone fix needs only to be inside.
        assert_eq!(
            run(None, None, alone(0.0, 10.0, 0)).transition,
            Transition::Enter
        );
        assert_eq!(
            run(None, None, alone(0.01, 10.0, 0)).transition,
            Transition::Outside
        );
        // A coarse fix never enters, however deep.
        let coarse = Evidence {
            recent_accuracy_m: 0.0,
            ..alone(-5000.0, P.max_enter_accuracy_m + 0.1, 0)
        };
        assert_eq!(run(None, None, coarse).transition, Transition::Outside);
        let ok = Evidence {
            recent_accuracy_m: 0.0,
            ..alone(-5000.0, P.max_enter_accuracy_m, 0)
        };
        assert_eq!(run(None, None, ok).transition, Transition::Enter);
    }

    #[test]
    fn an_exit_waits_for_its_confirmation_beyond_the_band_exactly() {
        let p = inside_since(0);
        let band = P.exit_margin_m + 10.0;
        let c = P.exit_confirm.num_seconds();
        // At the band's edge the visit goes on and nothing waits.
        let s = run(Some(&p), None, ev(band, 10.0, 100));
        assert_eq!(s.transition, Transition::Inside { minutes: 1 });
        assert_eq!(s.state.as_ref().unwrap().out_since, None);
        // A fix just outside is no confirmation: last_seen stays.
        assert_eq!(s.state.unwrap().last_seen, t(0));
        // Beyond it, the exit waits...
        let s = run(Some(&p), None, ev(band + 0.01, 10.0, 100));
        assert_eq!(s.transition, Transition::Inside { minutes: 1 });
        let w = s.state.unwrap();
        assert_eq!(w.out_since, Some(t(100)));
        let s = run(Some(&w), None, ev(500.0, 10.0, 100 + c - 1));
        assert_eq!(s.transition, Transition::Inside { minutes: 2 });
        // ...until the confirmation has passed.
        let s = run(Some(&w), None, ev(500.0, 10.0, 100 + c));
        assert_eq!((s.transition, s.state), (Transition::Exit, None));
        // Back within the band, the wait starts over.
        let s = run(Some(&w), None, ev(band, 10.0, 100 + c - 1));
        assert_eq!(s.state.unwrap().out_since, None);
    }

    #[test]
    fn presence_expires_after_the_ttl_and_not_at_it() {
        let p = inside_since(0);
        let ttl = P.presence_ttl.num_seconds();
        let s = run(Some(&p), None, ev(0.0, 10.0, ttl));
        assert_eq!(s.transition, Transition::Inside { minutes: ttl / 60 });
        assert_eq!(s.state.unwrap().last_seen, t(ttl));
        // Past it, a lone fix deep inside with good accuracy starts a new visit...
        let s = run(Some(&p), None, alone(-30.0, 10.0, ttl + 1));
        assert_eq!(s.transition, Transition::Enter);
        assert_eq!(s.state.unwrap().since, t(ttl + 1));
        // ...an inside fix too coarse to enter, or one outside, ends it.
        let s = run(Some(&p), None, alone(-30.0, 150.0, ttl + 1));
        assert_eq!((s.transition, s.state), (Transition::Exit, None));
        let s = run(Some(&p), None, alone(5.0, 10.0, ttl + 1));
        assert_eq!((s.transition, s.state), (Transition::Exit, None));
        // On the track an inside fix ends it and waits to enter again.
        let s = run(Some(&p), None, ev(-30.0, 10.0, ttl + 1));
        assert_eq!(
            (s.transition, s.state, s.pending),
            (Transition::Exit, None, Some(t(ttl + 1)))
        );
    }

    #[test]
    fn only_a_later_inside_fix_confirms_presence() {
        let p = inside_since(10);
        let s = run(Some(&p), None, ev(0.0, 10.0, 5));
        assert_eq!(s.state.unwrap().last_seen, t(10));
        let s = run(Some(&p), None, ev(0.0, 10.0, 10));
        assert_eq!(s.state.unwrap().last_seen, t(10));
        let s = run(Some(&p), None, ev(0.0, 10.0, 11));
        assert_eq!(s.state.unwrap().last_seen, t(11));
    }

    #[test]
    fn dwell_minutes_count_from_the_enter() {
        let s = run(None, None, alone(-30.0, 10.0, 0));
        let s = run(s.state.as_ref(), None, ev(0.0, 10.0, 7 * 60));
        assert_eq!(s.transition, Transition::Inside { minutes: 7 });
    }

    proptest! {
        /// Any sequence of fixes a phone can produce (inside or any distance outside, any
        /// accuracy, on the track or alone, at any times) never brings a
        /// second enter while the judged position never stays beyond the exit band for the
        /// exit confirmation: no flapping, whatever the jitter.
        #[test]
        fn jitter_shorter_than_the_exit_confirmation_never_enters_twice(
            fixes in prop::collection::vec(
                (prop_oneof![Just(0.0), -50.0..0.0f64, 0.0..10_000.0f64],
                 0.0..100_000.0f64, any::<bool>(), 0i64..600),
                1..200),
        ) {
            let mut s = run(None, None, alone(-30.0, 10.0, 0)).state;
            let mut pending = None;
            let mut now = 0i64;
            // When the judged position went beyond the band, if it is there now.
            let mut beyond_since: Option<i64> = None;
            let c = P.exit_confirm.num_seconds();
            for (out, acc, lone, gap) in fixes {
                // Each gap is shorter than the confirmation, so is every stretch beyond
                // the band that a fix back inside ends.
                now += gap % c;
                let e = Evidence { alone: lone, ..ev(out, acc, now) };
                if t(now) - s.as_ref().unwrap().last_seen > P.presence_ttl {
                    // Unconfirmed for the TTL: the visit may end; stop here.
                    break;
                }
                let beyond = e.outside_m > P.exit_margin_m + e.sd_m;
                if beyond {
                    let since = *beyond_since.get_or_insert(now);
                    if now - since >= c {
                        // Out long enough: an exit may come; stop here.
                        break;
                    }
                } else {
                    beyond_since = None;
                }
                let st = step(&P, s.as_ref(), pending, &e);
                prop_assert!(
                    matches!(st.transition, Transition::Inside { .. }),
                    "got {:?} at {} for {:?}", st.transition, now, e
                );
                prop_assert!(st.state.is_some());
                s = st.state;
                pending = st.pending;
            }
        }

        /// The exit band and confirmation are what ends a visit: staying beyond the band
        /// for the confirmation always exits, and no enter can come before that.
        #[test]
        fn leaving_for_the_confirmation_always_exits(
            out in 0.0..10_000.0f64, acc in 0.0..200.0f64, start in 0i64..7200,
        ) {
            let p = inside_since(0);
            let far = P.exit_margin_m + acc + out + 0.01;
            let s = run(Some(&p), None, ev(far, acc, start));
            prop_assert_eq!(s.transition, Transition::Inside { minutes: start / 60 });
            let s = run(s.state.as_ref(), None, ev(far, acc, start + P.exit_confirm.num_seconds()));
            prop_assert_eq!(s.transition, Transition::Exit);
        }
    }
}
