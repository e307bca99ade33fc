//! Cron schedules as CronJobs write them: five fields (minute, hour, day of month, month, day
//! of week) with `*`, `?`, lists, ranges, steps and month and weekday names, or a macro
//! (`@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`, `@yearly`/`@annually`). As in
//! Vixie cron (and Kubernetes' parser), when both day fields are restricted a day matching
//! either is a match.

use k8s_openapi::jiff::ToSpan;
use k8s_openapi::jiff::civil::{Date, DateTime};

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Day of month and day of week both restricted: either matches.
    either_day: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's allowed values in `min..=max` as a bit set, and whether it was `*` (or `?`).
fn field(text: &str, min: u32, max: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + min);
        }
        s.parse::<u32>().map_err(|_| {
            format!(
                "{s:?} is not a number{}",
                if names.is_empty() { "" } else { " or a name" }
            )
        })
    };
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step {s:?} is not a number"))?;
                if step == 0 {
                    return Err(format!("step of {part:?} must be positive"));
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            star = step.is_none() && text.split(',').count() == 1;
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `N/step` runs from N to the end, as in Vixie cron.
            (v, if step.is_some() { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        let step = step.unwrap_or(1);
        // (A step past the range ends it: `*/4000000000` must neither overflow nor spin.)
        let mut v = Some(lo);
        while let Some(x) = v.filter(|x| *x <= hi) {
            bits |= 1 << x;
            v = x.checked_add(step);
        }
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parse a schedule; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => return Err(format!("unknown schedule macro {t:?}")),
            t => t,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields.as_slice() else {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        };
        let (minutes, _) = field(minute, 0, 59, &[]).map_err(|e| format!("minute: {e}"))?;
        let (hours, _) = field(hour, 0, 23, &[]).map_err(|e| format!("hour: {e}"))?;
        let (days, any_day) = field(dom, 1, 31, &[]).map_err(|e| format!("day of month: {e}"))?;
        let (months, _) = field(month, 1, 12, &MONTHS).map_err(|e| format!("month: {e}"))?;
        let (mut weekdays, any_weekday) =
            field(dow, 0, 7, &WEEKDAYS).map_err(|e| format!("day of week: {e}"))?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        Ok(Schedule {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            either_day: !any_day && !any_weekday,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// Whether the minute `t` (seconds ignored) is one of the schedule's.
    pub fn matches(&self, t: DateTime) -> bool {
        self.months & (1 << t.month()) != 0
            && self.day_matches(t.date())
            && self.hours & (1 << t.hour()) != 0
            && self.minutes & (1 << t.minute()) != 0
    }

    /// The first scheduled minute after `t`, within five years (none for a schedule that never
    /// comes, like February 30th).
    pub fn next_after(&self, t: DateTime) -> Option<DateTime> {
        let mut t = t
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let end = t.checked_add(5.years()).ok()?;
        while t < end {
            // Skip whole months, days and hours that cannot match.
            if self.months & (1 << t.month()) == 0 {
                t = t
                    .first_of_month()
                    .start_of_day()
                    .checked_add(1.month())
                    .ok()?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.start_of_day().checked_add(1.day()).ok()?;
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) != 0 {
                return Some(t);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }

    /// The last scheduled minute at or before `t` and after `since`.
    pub fn last_between(&self, since: DateTime, t: DateTime) -> Option<DateTime> {
        let mut found = None;
        let mut cursor = since;
        while let Some(next) = self.next_after(cursor) {
            if next > t {
                break;
            }
            found = Some(next);
            cursor = next;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::civil::date;

    fn at(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> DateTime {
        date(y, mo, d).at(h, mi, 0, 0)
    }

    #[test]
    fn schedules_parse_as_cron_reads_them() {
        let every = Schedule::parse("* * * * *").expect("every minute");
        assert!(every.matches(at(2026, 11, 25, 22, 43)));
        let s = Schedule::parse("*/15 9-17 * * MON-FRI").expect("office hours");
        assert!(s.matches(at(2026, 11, 25, 9, 45))); // a Wednesday
        assert!(!s.matches(at(2026, 11, 25, 9, 46)));
        assert!(!s.matches(at(2026, 11, 28, 10, 0))); // a Saturday
        assert_eq!(Schedule::parse("@daily"), Schedule::parse("0 0 * * *"));
        assert_eq!(Schedule::parse("0 0 * * 7"), Schedule::parse("0 0 * * sun"));
        // Both day fields restricted: either matches (the 1st, or any Monday).
        let s = Schedule::parse("0 0 1 * 1").expect("either day");
        assert!(s.matches(at(2026, 12, 1, 0, 0))); // a Tuesday, the 1st
        assert!(s.matches(at(2026, 11, 30, 0, 0))); // a Monday
        assert!(!s.matches(at(2026, 12, 2, 0, 0)));
        // Steps as large as they come: the first value only.
        let sparse = Schedule::parse("1 1-23/4294967295 1/4294967295 * *").expect("huge steps");
        assert!(sparse.matches(at(2026, 12, 1, 1, 1)));
        assert!(!sparse.matches(at(2026, 12, 2, 1, 1)));
        assert!(!sparse.matches(at(2026, 12, 1, 2, 1)));
        for bad in [
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "*/0 * * * *",
            "* * * FOO *",
            "@often",
            "5-1 * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_next_and_last_times_are_found() {
        let s = Schedule::parse("30 2 * * *").expect("daily at 2:30");
        assert_eq!(
            s.next_after(at(2026, 11, 25, 22, 43)),
            Some(at(2026, 11, 26, 2, 30))
        );
        assert_eq!(
            s.next_after(at(2026, 12, 31, 3, 0)),
            Some(at(2027, 1, 1, 2, 30))
        );
        let leap = Schedule::parse("0 12 29 2 *").expect("leap days");
        assert_eq!(
            leap.next_after(at(2026, 1, 1, 0, 0)),
            Some(at(2028, 2, 29, 12, 0))
        );
        assert_eq!(
            Schedule::parse("0 0 30 2 *")
                .expect("never")
                .next_after(at(2026, 1, 1, 0, 0)),
            None
        );
        let every = Schedule::parse("*/10 * * * *").expect("every 10 minutes");
        assert_eq!(
            every.last_between(at(2026, 11, 25, 22, 0), at(2026, 11, 25, 22, 43)),
            Some(at(2026, 11, 25, 22, 40))
        );
        assert_eq!(
            every.last_between(at(2026, 11, 25, 22, 40), at(2026, 11, 25, 22, 43)),
            None
        );
    }
}
