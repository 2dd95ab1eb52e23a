//! Which slots of a schedule fire now: a pure function of the schedule, the last slot it
//! handled (durable), the time, and its catch-up policy. The server's schedule loop calls it
//! whenever it wakes; tests call it with any time they like.

use super::cron::CronSchedule;
use crate::spec::Catchup;

/// A slot this close to now is on time, not missed: it fires whatever the catch-up policy
/// (like Kubernetes' `startingDeadlineSeconds`). A server that was down longer than this
/// applies the policy.
pub const START_DEADLINE_MS: i64 = 60_000;

/// The default of `catchup_limit`.
pub const DEFAULT_CATCHUP_LIMIT: u32 = 100;

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Slots to start runs for, oldest first.
    pub fire: Vec<i64>,
    /// Missed slots the policy drops: the first and last of them, and whether there are more
    /// than those two.
    pub dropped: Option<(i64, i64)>,
    /// The slot to store as handled (`None`: leave the stored one).
    pub cursor: Option<i64>,
}

/// The slots due at `now`. `cursor` is the last slot handled; a schedule seen for the first
/// time (`None`) starts from `now`, firing nothing from before it.
pub fn due(cron: &CronSchedule, cursor: Option<i64>, now: i64, catchup: Catchup, limit: u32) -> Due {
    let Some(cursor) = cursor else {
        return Due { fire: Vec::new(), dropped: None, cursor: Some(now) };
    };
    let Some(first) = cron.next_after(cursor).filter(|f| *f <= now) else {
        return Due { fire: Vec::new(), dropped: None, cursor: None };
    };
    let keep = match catchup {
        Catchup::All => limit.max(1) as usize,
        Catchup::None | Catchup::Latest => 1,
    };
    let newest = cron.latest_until(cursor, now, keep);
    let Some(&last) = newest.last() else {
        return Due { fire: Vec::new(), dropped: None, cursor: None };
    };
    let fire = match catchup {
        Catchup::None if now - last <= START_DEADLINE_MS => vec![last],
        Catchup::None => Vec::new(),
        Catchup::Latest | Catchup::All => newest,
    };
    let dropped = match fire.first() {
        Some(&f) if f == first => None,
        Some(&f) => Some((first, cron.latest_until(cursor, f - 1, 1).first().copied().unwrap_or(first))),
        None => Some((first, last)),
    };
    Due { fire, dropped, cursor: Some(last) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::cron::parse_time;

    fn ms(s: &str) -> i64 {
        parse_time(s).unwrap()
    }

    #[test]
    fn first_sight_starts_from_now() {
        let c = CronSchedule::parse("0 * * * *", None).unwrap();
        let d = due(&c, None, ms("2026-11-22T10:30:00Z"), Catchup::All, 100);
        assert_eq!(d, Due { fire: vec![], dropped: None, cursor: Some(ms("2026-11-22T10:30:00Z")) });
    }

    #[test]
    fn on_time_slots_fire_and_nothing_before_the_slot() {
        let c = CronSchedule::parse("0 * * * *", None).unwrap();
        let cur = Some(ms("2026-11-22T10:00:00Z"));
        assert_eq!(due(&c, cur, ms("2026-11-22T10:59:59.999Z"), Catchup::None, 1).fire, Vec::<i64>::new());
        for policy in [Catchup::None, Catchup::Latest, Catchup::All] {
            let d = due(&c, cur, ms("2026-11-22T11:00:00.004Z"), policy, 100);
            assert_eq!(d.fire, vec![ms("2026-11-22T11:00:00Z")], "{policy:?}");
            assert_eq!(d.dropped, None);
            assert_eq!(d.cursor, Some(ms("2026-11-22T11:00:00Z")));
        }
    }

    #[test]
    fn missed_slots_follow_the_policy() {
        let c = CronSchedule::parse("0 * * * *", None).unwrap();
        // Down from 10:00 to 15:30: 11, 12, 13, 14, 15 were missed.
        let cur = Some(ms("2026-11-22T10:00:00Z"));
        let now = ms("2026-11-22T15:30:00Z");
        let none = due(&c, cur, now, Catchup::None, 100);
        assert!(none.fire.is_empty());
        assert_eq!(none.dropped, Some((ms("2026-11-22T11:00:00Z"), ms("2026-11-22T15:00:00Z"))));
        assert_eq!(none.cursor, Some(ms("2026-11-22T15:00:00Z")));
        let latest = due(&c, cur, now, Catchup::Latest, 100);
        assert_eq!(latest.fire, vec![ms("2026-11-22T15:00:00Z")]);
        assert_eq!(latest.dropped, Some((ms("2026-11-22T11:00:00Z"), ms("2026-11-22T14:00:00Z"))));
        let all = due(&c, cur, now, Catchup::All, 100);
        assert_eq!(all.fire.len(), 5);
        assert_eq!(all.dropped, None);
        let capped = due(&c, cur, now, Catchup::All, 2);
        assert_eq!(capped.fire, vec![ms("2026-11-22T14:00:00Z"), ms("2026-11-22T15:00:00Z")]);
        assert_eq!(capped.dropped, Some((ms("2026-11-22T11:00:00Z"), ms("2026-11-22T13:00:00Z"))));
        // A restart right after a slot still fires it with `none`: it is on time.
        let d = due(&c, cur, ms("2026-11-22T11:00:20Z"), Catchup::None, 1);
        assert_eq!(d.fire, vec![ms("2026-11-22T11:00:00Z")]);
    }

    #[test]
    fn a_handled_slot_never_fires_again() {
        let c = CronSchedule::parse("*/5 * * * * *", None).unwrap();
        let mut cursor = Some(ms("2026-11-22T00:00:00Z"));
        let mut fired = Vec::new();
        // Wake at odd times, sometimes twice for the same instant.
        for t in [3, 5, 5, 7, 10, 10, 26, 31, 31] {
            let d = due(&c, cursor, ms("2026-11-22T00:00:00Z") + t * 1000, Catchup::All, 100);
            fired.extend(d.fire);
            cursor = d.cursor.or(cursor);
        }
        let secs: Vec<i64> = fired.iter().map(|f| (f - ms("2026-11-22T00:00:00Z")) / 1000).collect();
        assert_eq!(secs, [5, 10, 15, 20, 25, 30]);
    }
}
