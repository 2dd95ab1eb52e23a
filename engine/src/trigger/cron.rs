//! Cron expressions in a time zone: parsing (5, 6 or 7 fields) and the next slot after an
//! instant, with daylight-saving changes resolved the way crontab users expect.
//!
//! The `cron` crate reads six or seven fields with seconds first, numbers weekdays 1-7 from
//! Sunday and requires both day fields to match. A five-field expression is crontab's: it
//! gets a `0` seconds field, its weekdays (0-7, 0 and 7 Sunday) are rewritten as names, and
//! when both the day-of-month and the weekday are restricted a day matching *either* fires
//! (as in crontab and Kubernetes), computed as the earlier of two schedules.
//!
//! Slots are computed on the wall clock of the zone and then placed on the time line:
//! - a wall time that does not exist (the hour skipped when clocks go forward) fires at the
//!   same distance after the change: 02:30 on a night that jumps from 02:00 to 03:00 fires at
//!   03:30 (and a slot that would land on or before the previous fire is dropped);
//! - a wall time that exists twice (the hour repeated when clocks go back) fires once, at
//!   its first occurrence.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Why a schedule does not parse: its time zone, or its expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("{0}")]
    Zone(String),
    #[error("{0}")]
    Expression(String),
}

/// A parsed schedule in its zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// One schedule, or two whose union is the crontab "either day matches" rule.
    parts: Vec<cron::Schedule>,
    tz: Tz,
    expression: String,
}

impl CronSchedule {
    /// Parses `expression` in `timezone` (an IANA name; `None` is UTC).
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<CronSchedule, CronError> {
        let tz = match timezone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                CronError::Zone(format!(
                    "`{name}` is not an IANA time zone (such as `UTC`, `Europe/Berlin`, `Asia/Dubai`)"
                ))
            })?,
        };
        Self::parse_in(expression, tz).map_err(CronError::Expression)
    }

    fn parse_in(expression: &str, tz: Tz) -> Result<CronSchedule, String> {
        let text = expression.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!(
                    "`{other}` is not a cron macro (@yearly, @monthly, @weekly, @daily, @hourly)"
                ));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let sources: Vec<String> = match fields.len() {
            5 => {
                let [min, hour, dom, month, dow] = [fields[0], fields[1], fields[2], fields[3], fields[4]];
                let dow = crontab_weekdays(dow)?;
                let dom_any = dom == "*" || dom == "?";
                let dow_any = dow == "*";
                if !dom_any && !dow_any {
                    vec![format!("0 {min} {hour} {dom} {month} *"), format!("0 {min} {hour} * {month} {dow}")]
                } else {
                    vec![format!("0 {min} {hour} {dom} {month} {dow}")]
                }
            }
            6 | 7 => vec![fields.join(" ")],
            n => {
                return Err(format!(
                    "`{text}` has {n} fields; a cron expression has 5 (min hour day month weekday) or 6-7 (sec min hour day month weekday [year])"
                ));
            }
        };
        let mut parts = Vec::new();
        for source in &sources {
            let s = cron::Schedule::from_str(source)
                .map_err(|e| format!("`{text}` is not a valid cron expression: {e}"))?;
            parts.push(s);
        }
        Ok(CronSchedule { parts, tz, expression: text.to_string() })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first slot strictly after `after_ms` (ms since the epoch), or `None` when the
    /// expression has no more slots (a past year).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = Utc.timestamp_millis_opt(after_ms).single()?;
        // The wall time to search from: the local time of `after` (its first reading when
        // it is ambiguous). Searching the wall clock as if it were UTC keeps the crate away
        // from zone transitions; they are resolved below.
        let mut wall = after.with_timezone(&self.tz).naive_local();
        // A few wall slots may map onto or before `after` (a repeated hour, a gap); skip them.
        for _ in 0..1000 {
            let next_wall = self.next_wall(wall)?;
            let at = self.place(next_wall);
            if at > after_ms {
                return Some(at);
            }
            wall = next_wall;
        }
        None
    }

    /// The slots in `(from_ms, to_ms]`, at most `limit` of them (the earliest).
    pub fn slots_between(&self, from_ms: i64, to_ms: i64, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut cursor = from_ms;
        while out.len() < limit {
            match self.next_after(cursor) {
                Some(at) if at <= to_ms => {
                    out.push(at);
                    cursor = at;
                }
                _ => break,
            }
        }
        out
    }

    /// The newest `k` slots in `(from_ms, to_ms]`, oldest first. Walks back from `to_ms`,
    /// so it costs `k` steps however many slots the interval holds.
    pub fn latest_until(&self, from_ms: i64, to_ms: i64, k: usize) -> Vec<i64> {
        let Some(to) = Utc.timestamp_millis_opt(to_ms).single() else { return Vec::new() };
        // Start a little past `to` on the wall clock: a zone change can move a wall slot
        // after `to` onto the time line before it.
        let mut wall = to.with_timezone(&self.tz).naive_local() + chrono::Duration::hours(3);
        let mut out: Vec<i64> = Vec::new();
        while out.len() < k {
            let as_utc = Utc.from_utc_datetime(&wall);
            let Some(prev) = self.parts.iter().filter_map(|p| p.after(&as_utc).next_back()).max() else {
                break;
            };
            wall = prev.naive_utc();
            let at = self.place(wall);
            if at <= from_ms - 3 * 3_600_000 {
                break;
            }
            if at > from_ms && at <= to_ms && !out.contains(&at) {
                out.push(at);
            }
        }
        out.sort_unstable();
        out
    }

    /// The next wall-clock slot after `wall` of any part.
    fn next_wall(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        let as_utc = Utc.from_utc_datetime(&wall);
        self.parts.iter().filter_map(|p| p.after(&as_utc).next()).min().map(|d| d.naive_utc())
    }

    /// Puts a wall time of the zone on the time line (see the module's rules).
    fn place(&self, wall: NaiveDateTime) -> i64 {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => t.timestamp_millis(),
            LocalResult::Ambiguous(first, _) => first.timestamp_millis(),
            LocalResult::None => {
                // In a gap: read the wall time with the offset in force before the gap.
                let before = wall - chrono::Duration::hours(3);
                let offset = match self.tz.from_local_datetime(&before) {
                    LocalResult::Single(t) | LocalResult::Ambiguous(_, t) => t.offset().fix(),
                    LocalResult::None => return Utc.from_utc_datetime(&wall).timestamp_millis(),
                };
                (wall - chrono::Duration::seconds(offset.local_minus_utc() as i64))
                    .and_utc()
                    .timestamp_millis()
            }
        }
    }
}

use chrono::Offset;

/// Rewrites crontab's weekday field (0-7, 0 and 7 Sunday, names, ranges, lists, steps) as a
/// list of names the `cron` crate reads the same way.
fn crontab_weekdays(field: &str) -> Result<String, String> {
    const NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let day = |t: &str| -> Result<u32, String> {
        if let Ok(n) = t.parse::<u32>() {
            return if n <= 7 { Ok(n % 7) } else { Err(format!("weekday `{t}` is not 0-7")) };
        }
        let lower = t.to_ascii_lowercase();
        NAMES
            .iter()
            .position(|n| lower.starts_with(&n.to_ascii_lowercase()) && lower.len() >= 3)
            .map(|i| i as u32)
            .ok_or_else(|| format!("`{t}` is not a weekday (0-7 or SUN-SAT)"))
    };
    let mut days = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().map_err(|_| format!("`{s}` in `{field}` is not a step"))?;
                if s == 0 {
                    return Err(format!("a step of 0 in `{field}`"));
                }
                (r, s)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (0, 6)
        } else if let Some((a, b)) = range.split_once('-') {
            // 7 as the end of a range means Sunday at the end of the week (5-7 = Fri-Sun).
            let hi = if b == "7" { 7 } else { day(b)? };
            (day(a)?, hi)
        } else {
            let d = day(range)?;
            (d, if step > 1 { 6 } else { d })
        };
        if lo > hi {
            return Err(format!("the range `{range}` in `{field}` runs backwards"));
        }
        let mut d = lo;
        while d <= hi {
            days[(d % 7) as usize] = true;
            d += step;
        }
    }
    if days.iter().all(|d| *d) {
        return Ok("*".into());
    }
    Ok(days.iter().enumerate().filter(|(_, on)| **on).map(|(i, _)| NAMES[i]).collect::<Vec<_>>().join(","))
}

/// Formats ms since the epoch as RFC 3339 in UTC.
pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Parses an RFC 3339 time, or a date (midnight UTC), into ms since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis());
    }
    Err(format!("`{text}` is not a time: use RFC 3339 (2026-11-22T03:00:00Z) or a date (2026-11-22)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        parse_time(s).unwrap()
    }

    fn next(expr: &str, tz: Option<&str>, after: &str) -> String {
        let c = CronSchedule::parse(expr, tz).unwrap();
        rfc3339(c.next_after(ms(after)).unwrap())
    }

    #[test]
    fn five_six_and_seven_fields() {
        assert_eq!(next("*/15 * * * *", None, "2026-11-22T10:07:00Z"), "2026-11-22T10:15:00.000Z");
        assert_eq!(next("30 3 * * *", None, "2026-11-22T03:30:00Z"), "2026-11-23T03:30:00.000Z");
        assert_eq!(next("*/10 * * * * *", None, "2026-11-22T10:07:01Z"), "2026-11-22T10:07:10.000Z");
        assert_eq!(next("0 0 12 1 1 * 2030", None, "2026-11-22T00:00:00Z"), "2030-01-01T12:00:00.000Z");
        assert_eq!(next("@daily", None, "2026-11-22T10:00:00Z"), "2026-11-23T00:00:00.000Z");
        assert!(
            CronSchedule::parse("0 0 12 1 1 * 2020", None).unwrap().next_after(ms("2026-01-01")).is_none()
        );
    }

    #[test]
    fn crontab_weekdays_count_from_sunday_zero() {
        // 2026-11-22 is a Sunday.
        assert_eq!(next("0 9 * * 1", None, "2026-11-22T00:00:00Z"), "2026-11-23T09:00:00.000Z");
        assert_eq!(next("0 9 * * 0", None, "2026-11-21T10:00:00Z"), "2026-11-22T09:00:00.000Z");
        assert_eq!(next("0 9 * * 7", None, "2026-11-21T10:00:00Z"), "2026-11-22T09:00:00.000Z");
        assert_eq!(next("0 9 * * 1-5", None, "2026-11-21T10:00:00Z"), "2026-11-23T09:00:00.000Z");
        assert_eq!(next("0 9 * * 5-7", None, "2026-11-23T10:00:00Z"), "2026-11-27T09:00:00.000Z");
        assert_eq!(next("0 9 * * SAT,sun", None, "2026-11-23T10:00:00Z"), "2026-11-28T09:00:00.000Z");
        assert_eq!(crontab_weekdays("*/2").unwrap(), "Sun,Tue,Thu,Sat");
    }

    #[test]
    fn restricted_day_and_weekday_match_either() {
        // The 1st of the month OR a Monday, as crontab reads it.
        let c = CronSchedule::parse("0 0 1 * 1", None).unwrap();
        let got: Vec<String> =
            c.slots_between(ms("2026-11-22"), ms("2026-12-08"), 10).into_iter().map(rfc3339).collect();
        assert_eq!(
            got,
            [
                "2026-11-23T00:00:00.000Z",
                "2026-11-30T00:00:00.000Z",
                "2026-12-01T00:00:00.000Z",
                "2026-12-07T00:00:00.000Z"
            ]
        );
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // 03:00 in Dubai (UTC+4, no DST) is 23:00 UTC the day before.
        assert_eq!(next("0 3 * * *", Some("Asia/Dubai"), "2026-11-22T00:00:00Z"), "2026-11-22T23:00:00.000Z");
        // New York springs forward on 2026-03-08 at 02:00 -> 03:00: 02:30 does not exist that
        // night and fires at 03:30 EDT (07:30Z); the next night it is 02:30 EDT again.
        let c = CronSchedule::parse("30 2 * * *", Some("America/New_York")).unwrap();
        let got: Vec<String> = c
            .slots_between(ms("2026-03-07T00:00:00Z"), ms("2026-03-10T00:00:00Z"), 10)
            .into_iter()
            .map(rfc3339)
            .collect();
        assert_eq!(got, ["2026-03-07T07:30:00.000Z", "2026-03-08T07:30:00.000Z", "2026-03-09T06:30:00.000Z"]);
        // It falls back on 2026-11-01 at 02:00 -> 01:00: 01:30 happens twice and fires once.
        let c = CronSchedule::parse("30 1 * * *", Some("America/New_York")).unwrap();
        let got: Vec<String> = c
            .slots_between(ms("2026-10-31T00:00:00Z"), ms("2026-11-03T00:00:00Z"), 10)
            .into_iter()
            .map(rfc3339)
            .collect();
        assert_eq!(got, ["2026-10-31T05:30:00.000Z", "2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z"]);
        // Every 20 minutes through the skipped hour: no slot twice, none out of order.
        let c = CronSchedule::parse("*/20 * * * *", Some("America/New_York")).unwrap();
        let got = c.slots_between(ms("2026-03-08T06:00:00Z"), ms("2026-03-08T08:00:00Z"), 20);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    }

    #[test]
    fn latest_slots_walk_back_cheaply() {
        let c = CronSchedule::parse("* * * * * *", None).unwrap();
        // A year of one-second slots: only the newest three are looked at.
        let got = c.latest_until(ms("2025-11-22T00:00:00Z"), ms("2026-11-22T00:00:10.500Z"), 3);
        assert_eq!(
            got.into_iter().map(rfc3339).collect::<Vec<_>>(),
            ["2026-11-22T00:00:08.000Z", "2026-11-22T00:00:09.000Z", "2026-11-22T00:00:10.000Z"]
        );
        let c = CronSchedule::parse("0 3 * * *", None).unwrap();
        assert_eq!(c.latest_until(ms("2026-11-20T03:00:00Z"), ms("2026-11-22T12:00:00Z"), 10).len(), 2);
    }

    #[test]
    fn bad_expressions_say_why() {
        for (expr, tz, want) in [
            ("* * * *", None, "has 4 fields"),
            ("61 * * * *", None, "not a valid cron expression"),
            ("0 9 * * 8", None, "not 0-7"),
            ("0 9 * * FUNDAY", None, "not a weekday"),
            ("@often", None, "not a cron macro"),
            ("0 9 * * *", Some("Mars/Olympus"), "not an IANA time zone"),
        ] {
            let err = CronSchedule::parse(expr, tz).unwrap_err();
            assert!(err.to_string().contains(want), "{expr}: {err}");
            assert_eq!(matches!(err, CronError::Zone(_)), tz.is_some(), "{expr}: {err:?}");
        }
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_time("2026-11-22").unwrap(), ms("2026-11-22T00:00:00Z"));
    }
}
