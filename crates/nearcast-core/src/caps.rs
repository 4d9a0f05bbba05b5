//! Frequency caps and quiet hours.

use crate::config::CapPolicy;
use crate::state::SendRecord;
use chrono::{DateTime, Duration, NaiveTime, Utc};
use chrono_tz::Tz;

/// Why the caps stop a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapBlock {
    /// Local time is within quiet hours.
    QuietHours {
        /// Local time, `HH:MM`.
        local: String,
    },
    /// Daily cap reached.
    Daily {
        /// Pushes today.
        sent: u32,
        /// Limit.
        limit: u32,
    },
    /// Weekly cap reached.
    Weekly {
        /// Pushes in the last 7 days.
        sent: u32,
        /// Limit.
        limit: u32,
    },
    /// Too soon after the previous push.
    MinGap {
        /// Minutes since the last push.
        minutes: i64,
        /// Required gap.
        limit: u32,
    },
}

impl std::fmt::Display for CapBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapBlock::QuietHours { local } => write!(f, "quiet hours ({local} local)"),
            CapBlock::Daily { sent, limit } => write!(f, "capped: {sent}/{limit} today"),
            CapBlock::Weekly { sent, limit } => write!(f, "capped: {sent}/{limit} this week"),
            CapBlock::MinGap { minutes, limit } => {
                write!(f, "capped: {minutes} min since last push (gap {limit} min)")
            }
        }
    }
}

/// Whether `t` falls in the quiet window `[start, end)`, which may wrap midnight.
pub fn in_quiet_hours(t: NaiveTime, start: NaiveTime, end: NaiveTime) -> bool {
    match start.cmp(&end) {
        std::cmp::Ordering::Equal => false,
        std::cmp::Ordering::Less => t >= start && t < end,
        std::cmp::Ordering::Greater => t >= start || t < end,
    }
}

/// The first moment after `now` at which the caps would let a push through, if quiet hours
/// or the minimum gap is all that holds it now: the end of the quiet hours in the store's
/// time zone, or the last send plus the gap (whichever is later when both hold), checked
/// again at that moment (a daily or weekly cap reached then is not waited out). `None`
/// when a cap other than those two holds, or nothing does.
pub fn next_allowed(
    policy: &CapPolicy,
    sends: &[SendRecord],
    now: DateTime<Utc>,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    let mut at = now;
    for _ in 0..3 {
        match check(policy, sends, at, tz) {
            Ok(()) => return (at > now).then_some(at),
            Err(CapBlock::QuietHours { .. }) => {
                let local = at.with_timezone(&tz);
                let mut day = local.date_naive();
                if local.time() >= policy.quiet_end {
                    day = day.succ_opt()?;
                }
                // The first instant at or after the local end (a gap in the clocks moves
                // it to the next valid local time).
                let end = day.and_time(policy.quiet_end);
                at = (0..3)
                    .find_map(|h| (end + Duration::hours(h)).and_local_timezone(tz).earliest())?
                    .with_timezone(&Utc);
            }
            Err(CapBlock::MinGap { .. }) => {
                // `check` blocks on the gap only when `at - last < gap`, so this is always
                // later than `at`: the loop moves on.
                let last = sends.iter().filter(|s| !s.held_out).map(|s| s.at).max()?;
                at = last + Duration::minutes(i64::from(policy.min_gap_minutes));
            }
            Err(_) => return None,
        }
    }
    None
}

/// Checks the caps for a push to a user at `now`, given their recent sends (held-out
/// records do not count) and the store's time zone for the local day and quiet hours.
///
/// `now` and every [`SendRecord::at`] are the host's clock at the moment of the decision,
/// never a device's timestamp, so the order in which events arrive and the times devices
/// stamp on them cannot beat the caps. A send stamped after `now` (another host whose clock
/// runs slightly ahead) blocks as the minimum gap does, whatever the gap (even 0).
///
/// # Errors
/// The first [`CapBlock`] that applies.
pub fn check(
    policy: &CapPolicy,
    sends: &[SendRecord],
    now: DateTime<Utc>,
    tz: Tz,
) -> Result<(), CapBlock> {
    let local = now.with_timezone(&tz);
    if in_quiet_hours(local.time(), policy.quiet_start, policy.quiet_end) {
        return Err(CapBlock::QuietHours {
            local: local.format("%H:%M").to_string(),
        });
    }
    let sent: Vec<DateTime<Utc>> = sends.iter().filter(|s| !s.held_out).map(|s| s.at).collect();
    if let Some(&last) = sent.iter().max() {
        let since = now - last;
        if since < Duration::minutes(i64::from(policy.min_gap_minutes)) {
            return Err(CapBlock::MinGap {
                minutes: since.num_minutes().max(0),
                limit: policy.min_gap_minutes,
            });
        }
    }
    let today = local.date_naive();
    let day = sent
        .iter()
        .filter(|&&at| at.with_timezone(&tz).date_naive() == today)
        .count() as u32;
    if day >= policy.per_day {
        return Err(CapBlock::Daily {
            sent: day,
            limit: policy.per_day,
        });
    }
    let week = sent
        .iter()
        .filter(|&&at| now - at < Duration::days(7))
        .count() as u32;
    if week >= policy.per_week {
        return Err(CapBlock::Weekly {
            sent: week,
            limit: policy.per_week,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Id;
    use proptest::prelude::*;

    fn rec(at: DateTime<Utc>) -> SendRecord {
        SendRecord {
            at,
            offer_id: Id::parse("o").unwrap(),
            delivery_id: "d".into(),
            held_out: false,
            campaign_id: None,
            store_id: None,
        }
    }

    fn noon() -> DateTime<Utc> {
        "2026-11-20T10:00:00Z".parse().unwrap() // 12:00 in Helsinki
    }

    #[test]
    fn the_next_allowed_moment_is_the_end_of_quiet_hours_or_of_the_gap() {
        let hki = chrono_tz::Europe::Helsinki;
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let p = CapPolicy::default(); // quiet 21:00-08:00, gap 60 min, 2 a day
        // 22:30 and 01:00 local: 08:00 local the next morning; 07:30: half an hour on.
        for at in ["2026-11-20T20:30:00Z", "2026-11-20T23:00:00Z"] {
            assert_eq!(
                next_allowed(&p, &[], t(at), hki),
                Some(t("2026-11-21T06:00:00Z"))
            );
        }
        assert_eq!(
            next_allowed(&p, &[], t("2026-11-21T05:30:00Z"), hki),
            Some(t("2026-11-21T06:00:00Z"))
        );
        // Allowed now, or held by the daily cap: nothing to wait for.
        assert_eq!(next_allowed(&p, &[], noon(), hki), None);
        let two = [
            rec(noon() - Duration::hours(3)),
            rec(noon() - Duration::hours(2)),
        ];
        assert_eq!(next_allowed(&p, &two, noon(), hki), None);
        // The gap: 20 minutes after a send, 40 more.
        let one = [rec(noon() - Duration::minutes(20))];
        assert_eq!(
            next_allowed(&p, &one, noon(), hki),
            Some(noon() + Duration::minutes(40))
        );
        // A send at 20:30 local: the gap would end at 21:30, in quiet hours: 08:00.
        let evening = t("2026-11-20T18:30:00Z");
        assert_eq!(
            next_allowed(&p, &[rec(evening)], evening + Duration::minutes(10), hki),
            Some(t("2026-11-21T06:00:00Z"))
        );
        // The end of quiet hours in a time zone where the clocks go forward at 03:00: a
        // quiet end of 03:30 on that night is 04:30 local (the first valid time).
        let mut q = p.clone();
        q.quiet_start = NaiveTime::from_hms_opt(1, 0, 0).unwrap();
        q.quiet_end = NaiveTime::from_hms_opt(3, 30, 0).unwrap();
        let night = t("2027-03-28T00:00:00Z"); // 02:00 EET, the night of the change
        let end = next_allowed(&q, &[], night, hki).unwrap();
        assert_eq!(end.with_timezone(&hki).format("%H:%M").to_string(), "04:30");
    }

    #[test]
    fn quiet_hours_wrap_midnight() {
        let p = CapPolicy::default();
        let late: DateTime<Utc> = "2026-11-20T20:30:00Z".parse().unwrap(); // 22:30 local
        assert!(matches!(
            check(&p, &[], late, chrono_tz::Europe::Helsinki),
            Err(CapBlock::QuietHours { .. })
        ));
        let early: DateTime<Utc> = "2026-11-20T05:30:00Z".parse().unwrap(); // 07:30 local
        assert!(matches!(
            check(&p, &[], early, chrono_tz::Europe::Helsinki),
            Err(CapBlock::QuietHours { .. })
        ));
        assert!(check(&p, &[], noon(), chrono_tz::Europe::Helsinki).is_ok());
    }

    #[test]
    fn quiet_hours_within_one_day_hold_from_start_to_end_exclusive() {
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        let (start, end) = (t(13, 0), t(14, 0));
        assert!(!in_quiet_hours(t(12, 59), start, end));
        assert!(in_quiet_hours(t(13, 0), start, end));
        assert!(in_quiet_hours(t(13, 30), start, end));
        assert!(!in_quiet_hours(t(14, 0), start, end));
        assert!(!in_quiet_hours(t(20, 0), start, end));
        // Wrapping midnight: 22:00 to 08:00.
        let (start, end) = (t(22, 0), t(8, 0));
        assert!(in_quiet_hours(t(22, 0), start, end));
        assert!(in_quiet_hours(t(3, 0), start, end));
        assert!(!in_quiet_hours(t(8, 0), start, end));
        assert!(!in_quiet_hours(t(21, 59), start, end));
        // Equal ends: no quiet hours.
        assert!(!in_quiet_hours(t(13, 0), t(13, 0), t(13, 0)));
    }

    #[test]
    fn blocks_explain_themselves() {
        let text = |b: CapBlock| b.to_string();
        assert_eq!(
            text(CapBlock::QuietHours {
                local: "22:30".into()
            }),
            "quiet hours (22:30 local)"
        );
        assert_eq!(
            text(CapBlock::Daily { sent: 2, limit: 2 }),
            "capped: 2/2 today"
        );
        assert_eq!(
            text(CapBlock::Weekly { sent: 6, limit: 6 }),
            "capped: 6/6 this week"
        );
        assert_eq!(
            text(CapBlock::MinGap {
                minutes: 5,
                limit: 60
            }),
            "capped: 5 min since last push (gap 60 min)"
        );
    }

    #[test]
    fn a_send_stamped_after_now_blocks_whatever_the_gap() {
        let p = CapPolicy {
            per_day: 5,
            per_week: 7,
            min_gap_minutes: 0,
            quiet_start: NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
            quiet_end: NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
            global_control: 0.0,
        };
        let tz = chrono_tz::Europe::Helsinki;
        // 23:59:30 local; another host stamped a send 1 minute later, tomorrow locally.
        let now: DateTime<Utc> = "2026-11-20T21:59:30Z".parse().unwrap();
        assert_eq!(
            check(&p, &[rec(now + Duration::minutes(1))], now, tz),
            Err(CapBlock::MinGap {
                minutes: 0,
                limit: 0
            })
        );
        // A send at now with no gap required does not block by the gap.
        assert!(check(&p, &[rec(now)], now, tz).is_ok());
        // Today's sends count, yesterday's do not.
        let one = CapPolicy { per_day: 1, ..p };
        assert_eq!(
            check(&one, &[rec(now - Duration::hours(23))], now, tz),
            Err(CapBlock::Daily { sent: 1, limit: 1 })
        );
        assert!(check(&one, &[rec(now - Duration::days(1))], now, tz).is_ok());
    }

    #[test]
    fn the_week_is_seven_days_to_the_instant() {
        let p = CapPolicy {
            per_day: 5,
            per_week: 1,
            min_gap_minutes: 0,
            quiet_start: NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
            quiet_end: NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
            global_control: 0.0,
        };
        let tz = chrono_tz::Europe::Helsinki;
        let almost = [rec(noon() - Duration::days(7) + Duration::seconds(1))];
        assert_eq!(
            check(&p, &almost, noon(), tz),
            Err(CapBlock::Weekly { sent: 1, limit: 1 })
        );
        let week = [rec(noon() - Duration::days(7))];
        assert!(check(&p, &week, noon(), tz).is_ok());
    }

    #[test]
    fn daily_weekly_and_gap_caps_block() {
        let p = CapPolicy {
            per_day: 2,
            per_week: 3,
            min_gap_minutes: 60,
            ..CapPolicy::default()
        };
        let tz = chrono_tz::Europe::Helsinki;
        let gap = [rec(noon() - Duration::minutes(30))];
        assert!(matches!(
            check(&p, &gap, noon(), tz),
            Err(CapBlock::MinGap { minutes: 30, .. })
        ));
        let day = [
            rec(noon() - Duration::hours(2)),
            rec(noon() - Duration::hours(1)),
        ];
        assert_eq!(
            check(&p, &day, noon(), tz),
            Err(CapBlock::Daily { sent: 2, limit: 2 })
        );
        let week = [
            rec(noon() - Duration::days(3)),
            rec(noon() - Duration::days(2)),
            rec(noon() - Duration::days(1)),
        ];
        assert_eq!(
            check(&p, &week, noon(), tz),
            Err(CapBlock::Weekly { sent: 3, limit: 3 })
        );
    }

    proptest! {
        /// Invariant 3 at the rule level: if sends are only ever added when `check` passes,
        /// no local day ever holds more than `per_day`, no 7-day window more than
        /// `per_week`, and no two sends are closer than the gap.
        #[test]
        fn caps_hold_over_any_sequence(
            per_day in 1u32..5, extra_week in 0u32..6, gap in 0u32..120,
            steps in prop::collection::vec(1i64..400, 1..300),
        ) {
            let p = CapPolicy { per_day, per_week: per_day + extra_week, min_gap_minutes: gap, ..CapPolicy::default() };
            let tz = chrono_tz::Europe::Helsinki;
            let mut now = noon();
            let mut sends: Vec<SendRecord> = Vec::new();
            for s in steps {
                now += Duration::minutes(s);
                if check(&p, &sends, now, tz).is_ok() {
                    sends.push(rec(now));
                }
            }
            for (i, a) in sends.iter().enumerate() {
                let same_day = sends.iter().filter(|b| b.at.with_timezone(&tz).date_naive() == a.at.with_timezone(&tz).date_naive()).count();
                prop_assert!(same_day as u32 <= p.per_day);
                let window = sends.iter().filter(|b| b.at <= a.at && a.at - b.at < Duration::days(7)).count();
                prop_assert!(window as u32 <= p.per_week);
                if i > 0 {
                    prop_assert!((a.at - sends[i - 1].at).num_minutes() >= i64::from(gap));
                }
            }
        }

        /// A deferred push never beats the caps: whatever the quiet hours (wrapping
        /// midnight or not), the gap, the earlier sends, the time zone and the moment, a
        /// moment `next_allowed` gives is later than now and one the caps allow; it is given
        /// whenever quiet hours alone hold, and never when the caps allow now.
        #[test]
        fn the_next_allowed_moment_is_always_allowed(
            start_min in 0u32..1440, end_min in 0u32..1440, gap in 0u32..180, per_day in 1u32..4,
            offsets in prop::collection::vec(-2000i64..600, 0..4),
            now_min in 0i64..(14 * 1440),
            zone in 0usize..4,
        ) {
            let t = |m: u32| NaiveTime::from_hms_opt(m / 60, m % 60, 0).unwrap();
            let p = CapPolicy {
                per_day, per_week: per_day * 7, min_gap_minutes: gap,
                quiet_start: t(start_min), quiet_end: t(end_min), ..CapPolicy::default()
            };
            let tz = [chrono_tz::Europe::Helsinki, chrono_tz::America::New_York,
                chrono_tz::Australia::Lord_Howe, chrono_tz::UTC][zone];
            // Two weeks from 21 March 2027: the European and American clock changes.
            let now = "2027-03-21T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(now_min);
            let sends: Vec<SendRecord> = offsets.iter().map(|o| rec(now + Duration::minutes(*o))).collect();
            let allowed_now = check(&p, &sends, now, tz).is_ok();
            match next_allowed(&p, &sends, now, tz) {
                Some(at) => {
                    prop_assert!(at > now);
                    prop_assert!(check(&p, &sends, at, tz).is_ok(), "{at} is not allowed");
                    prop_assert!(!allowed_now);
                }
                None => {
                    let quiet_only = sends.is_empty()
                        && matches!(check(&p, &sends, now, tz), Err(CapBlock::QuietHours { .. }));
                    prop_assert!(!quiet_only, "quiet hours alone, and no moment given");
                }
            }
        }
    }
}
