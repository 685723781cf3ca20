//! Cron schedules: the five-field expressions policy files use (`minute hour day-of-month
//! month day-of-week`), plus `@hourly`, `@daily`, `@weekly`, `@monthly` and `@yearly`.
//!
//! Fields take `*`, numbers, ranges (`1-5`), steps (`*/15`, `0-30/10`), lists (`1,15`) and
//! English names for months and weekdays (`jan`, `mon`). Sunday is `0` or `7`. As in Vixie
//! cron, when both day fields are restricted a day matches if either one does. Times are
//! civil times in a time zone; a time that a daylight-saving jump skips runs at the first
//! instant after the gap. In an hour a daylight-saving end repeats, a schedule that fires
//! every hour keeps its slots in both passes; any other runs in the first pass only, once.

use std::fmt;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{ToSpan, Zoned};

/// Why an expression is not a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad schedule {expression:?}: {reason}")]
pub struct ScheduleError {
    /// The expression as written.
    pub expression: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed cron expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    expression: String,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    day_of_month_restricted: bool,
    day_of_week_restricted: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.expression)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's allowed range and names (names map to `first + index`).
struct Field {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    names_start: u32,
}

impl Schedule {
    /// Parses a five-field expression or an `@` macro.
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let error = |reason: String| ScheduleError {
            expression: expression.to_owned(),
            reason,
        };
        let trimmed = expression.trim();
        let expanded = match trimmed {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => {
                return Err(error(format!("unknown macro {other}")));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(error(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        };
        let spec = |text: &str, field: &Field| parse_field(text, field).map_err(&error);
        let minutes = spec(minute, &MINUTE)?;
        let hours = spec(hour, &HOUR)?;
        let days_of_month = spec(dom, &DAY_OF_MONTH)?;
        let months = spec(month, &MONTH)?;
        let mut days_of_week = spec(dow, &DAY_OF_WEEK)?;
        // 7 is Sunday too.
        if days_of_week & (1 << 7) != 0 {
            days_of_week |= 1;
        }
        Ok(Schedule {
            expression: trimmed.to_owned(),
            minutes,
            hours: u32::try_from(hours).map_err(|_| error("hour out of range".into()))?,
            days_of_month: u32::try_from(days_of_month)
                .map_err(|_| error("day out of range".into()))?,
            months: u16::try_from(months).map_err(|_| error("month out of range".into()))?,
            days_of_week: u8::try_from(days_of_week & 0x7f)
                .map_err(|_| error("weekday out of range".into()))?,
            day_of_month_restricted: !dom.starts_with('*'),
            day_of_week_restricted: !dow.starts_with('*'),
        })
    }

    /// True when the hour field allows every hour (`*`, `*/1`, `0-23`).
    fn every_hour(&self) -> bool {
        self.hours == (1 << 24) - 1
    }

    /// The expression as written (macros kept).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        // As cron: a field written with `*` (`*`, `*/3`) still has its own days; only
        // when neither starts with `*` does either field's day suffice.
        if self.day_of_month_restricted && self.day_of_week_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first time strictly after `after` at which the schedule fires, in `after`'s time
    /// zone. `None` when it never fires (e.g. `0 0 31 2 *`) within eight years.
    pub fn next_after(&self, after: &Zoned) -> Option<Zoned> {
        let tz = after.time_zone().clone();
        // Start at the next whole minute.
        let start = after
            .datetime()
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?;
        let next = self.scan(start.checked_add(1.minute()).ok()?, &tz, after);
        // In the first pass of an hour a daylight-saving end repeats, the slots of its
        // second pass come after `after` at civil times before it: look there too.
        let repeated = match tz.to_ambiguous_zoned(after.datetime()).offset() {
            AmbiguousOffset::Fold {
                before,
                after: later,
            } if after.offset() == before && self.every_hour() => {
                let back = before.duration_since(later);
                start
                    .checked_sub(back)
                    .ok()
                    .and_then(|from| self.scan(from, &tz, after))
            }
            _ => None,
        };
        match (next, repeated) {
            (Some(a), Some(b)) => Some(if b.timestamp() < a.timestamp() { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// The first civil minute from `from` on that the schedule matches and that falls after
    /// `after`, as an instant in `tz`.
    fn scan(&self, from: DateTime, tz: &TimeZone, after: &Zoned) -> Option<Zoned> {
        let mut at = from;
        let limit = from.checked_add(8.years()).ok()?;
        while at < limit {
            let date = at.date();
            if self.months & (1 << date.month()) == 0 {
                at = first_of_next_month(date)?;
                continue;
            }
            if !self.day_matches(date) {
                at = date.tomorrow().ok()?.to_datetime(Time::midnight());
                continue;
            }
            if self.hours & (1 << at.hour()) == 0 {
                at = next_hour(at)?;
                continue;
            }
            if self.minutes & (1 << at.minute()) == 0 {
                at = at.checked_add(1.minute()).ok()?;
                continue;
            }
            if let Some(zoned) = resolve(at, tz, after, self.every_hour()) {
                return Some(zoned);
            }
            at = at.checked_add(1.minute()).ok()?;
        }
        None
    }
}

/// The first instant after `after` that the civil time `at` has in `tz`: a time skipped by
/// a daylight-saving gap resolves to the instant after the gap; a time repeated by a fold
/// has two instants, both slots of a schedule that fires `every_hour` (as cron runs its
/// wildcard-hour jobs through the repeated hour), only the first of any other (a fixed-time
/// job runs once).
fn resolve(at: DateTime, tz: &TimeZone, after: &Zoned, every_hour: bool) -> Option<Zoned> {
    let ambiguous = tz.to_ambiguous_zoned(at);
    let candidates = match ambiguous.offset() {
        AmbiguousOffset::Fold { .. } => [
            ambiguous.clone().earlier().ok(),
            every_hour.then(|| ambiguous.later().ok()).flatten(),
        ],
        _ => [ambiguous.later().ok(), None],
    };
    candidates
        .into_iter()
        .flatten()
        .filter(|zoned| zoned.timestamp() > after.timestamp())
        .min_by_key(Zoned::timestamp)
}

fn first_of_next_month(date: Date) -> Option<DateTime> {
    let first = date.first_of_month().checked_add(1.month()).ok()?;
    Some(first.to_datetime(Time::midnight()))
}

fn next_hour(at: DateTime) -> Option<DateTime> {
    let truncated = at.with().minute(0).build().ok()?;
    truncated.checked_add(1.hour()).ok()
}

const MINUTE: Field = Field {
    what: "minute",
    min: 0,
    max: 59,
    names: &[],
    names_start: 0,
};
const HOUR: Field = Field {
    what: "hour",
    min: 0,
    max: 23,
    names: &[],
    names_start: 0,
};
const DAY_OF_MONTH: Field = Field {
    what: "day of month",
    min: 1,
    max: 31,
    names: &[],
    names_start: 0,
};
const MONTH: Field = Field {
    what: "month",
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
    names_start: 1,
};
const DAY_OF_WEEK: Field = Field {
    what: "day of week",
    min: 0,
    max: 7,
    names: &WEEKDAY_NAMES,
    names_start: 0,
};

/// A field as a bit set of the values it allows.
fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let mut set = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad step {step:?} in the {} field", field.what))?;
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (field.min, field.max)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(low, field)?, value(high, field)?)
        } else {
            let single = value(range, field)?;
            // `5/15` means from 5 to the end in steps of 15.
            let high = if part.contains('/') {
                field.max
            } else {
                single
            };
            (single, high)
        };
        if low > high {
            return Err(format!(
                "range {range:?} runs backwards in the {} field",
                field.what
            ));
        }
        let mut v = low;
        while v <= high {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = field.names.iter().position(|n| *n == lower) {
        return Ok(field.names_start + index as u32);
    }
    let v: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a valid {}", field.what))?;
    if v < field.min || v > field.max {
        return Err(format!(
            "{v} is outside {}..={} for the {}",
            field.min, field.max, field.what
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> Zoned {
        let dt: DateTime = text.parse().unwrap();
        dt.to_zoned(TimeZone::UTC).unwrap()
    }

    fn next(expr: &str, after: &str) -> String {
        let schedule = Schedule::parse(expr).unwrap();
        let z = schedule.next_after(&utc(after)).unwrap();
        z.datetime().to_string()
    }

    #[test]
    fn common_expressions() {
        assert_eq!(next("0 * * * *", "2026-11-22T04:30"), "2026-11-22T05:00:00");
        assert_eq!(next("0 * * * *", "2026-11-22T05:00"), "2026-11-22T06:00:00");
        assert_eq!(
            next("*/15 * * * *", "2026-11-22T04:31:10"),
            "2026-11-22T04:45:00"
        );
        assert_eq!(
            next("30 2 * * *", "2026-11-22T04:30"),
            "2026-11-23T02:30:00"
        );
        assert_eq!(next("@daily", "2026-12-31T23:59"), "2027-01-01T00:00:00");
        assert_eq!(
            next("0 0 1 jan *", "2026-03-01T00:00"),
            "2027-01-01T00:00:00"
        );
        // 2026-11-22 is a Sunday: the next Monday 03:00.
        assert_eq!(
            next("0 3 * * mon", "2026-11-22T04:30"),
            "2026-11-23T03:00:00"
        );
        assert_eq!(next("0 3 * * 7", "2026-11-22T02:30"), "2026-11-22T03:00:00");
        assert_eq!(
            next("0 12 29 2 *", "2026-03-01T00:00"),
            "2028-02-29T12:00:00"
        );
        assert_eq!(
            next("5/20 1-3 * * *", "2026-11-22T01:30"),
            "2026-11-22T01:45:00"
        );
    }

    #[test]
    fn a_stepped_star_in_a_day_field_still_restricts_it() {
        // Every third day of the month (1, 4, 7, ...): 2026-12-05 is not one of them.
        assert_eq!(
            next("0 0 */3 * *", "2026-12-04T00:00"),
            "2026-12-07T00:00:00"
        );
        // Every fifth weekday from Sunday (Sunday, Friday): the 5th of December 2026 is a
        // Saturday, the 6th a Sunday.
        assert_eq!(
            next("0 0 * * */5", "2026-12-04T00:00"),
            "2026-12-06T00:00:00"
        );
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 1st of the month or any Friday; 2026-11-27 is a Friday.
        assert_eq!(
            next("0 0 1 * fri", "2026-11-22T00:00"),
            "2026-11-27T00:00:00"
        );
        assert_eq!(
            next("0 0 1 * fri", "2026-11-28T00:00"),
            "2026-12-01T00:00:00"
        );
    }

    #[test]
    fn impossible_dates_never_fire() {
        let schedule = Schedule::parse("0 0 31 2 *").unwrap();
        assert!(schedule.next_after(&utc("2026-01-01T00:00")).is_none());
    }

    #[test]
    fn daylight_saving_gap_runs_after_the_gap() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        // 2026-03-29 02:00-03:00 does not exist in Berlin.
        let after = "2026-03-29T01:00"
            .parse::<DateTime>()
            .unwrap()
            .to_zoned(tz)
            .unwrap();
        let schedule = Schedule::parse("30 2 * * *").unwrap();
        let z = schedule.next_after(&after).unwrap();
        assert_eq!(z.datetime().to_string(), "2026-03-29T03:30:00");
    }

    #[test]
    fn the_repeated_hour_of_a_daylight_saving_end_keeps_its_slots() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        // 2026-10-25: 03:00 CEST (01:00 UTC) goes back to 02:00 CET; 02:00-03:00 happens
        // twice. An hourly schedule runs at 00:00 UTC (02:00 CEST) and 01:00 UTC (02:00 CET),
        // not two hours apart.
        let utc = |text: &str| {
            text.parse::<DateTime>()
                .unwrap()
                .to_zoned(TimeZone::UTC)
                .unwrap()
                .with_time_zone(tz.clone())
        };
        let hourly = Schedule::parse("0 * * * *").unwrap();
        let mut at = utc("2026-10-24T23:00");
        let mut fired = Vec::new();
        for _ in 0..4 {
            at = hourly.next_after(&at).unwrap();
            fired.push(at.timestamp().to_string());
        }
        assert_eq!(
            fired,
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T03:00:00Z"
            ]
        );
        // Every quarter of an hour, through both passes of the hour.
        let quarterly = Schedule::parse("*/15 * * * *").unwrap();
        let mut at = utc("2026-10-24T23:50");
        let mut fired = Vec::new();
        for _ in 0..10 {
            at = quarterly.next_after(&at).unwrap();
            fired.push(at.timestamp().as_second());
        }
        let gaps: Vec<i64> = fired.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g == 900), "{fired:?}");
        // A fixed time in the repeated hour runs once, in its first pass.
        let daily = Schedule::parse("30 2 * * *").unwrap();
        let first = daily.next_after(&utc("2026-10-24T12:00")).unwrap();
        assert_eq!(first.timestamp().to_string(), "2026-10-25T00:30:00Z");
        let next = daily.next_after(&first).unwrap();
        assert_eq!(next.timestamp().to_string(), "2026-10-26T01:30:00Z");
    }

    #[test]
    fn bad_expressions_are_refused_with_reasons() {
        for (expr, reason) in [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "outside 0..=59"),
            ("* 24 * * *", "outside 0..=23"),
            ("* * 0 * *", "outside 1..=31"),
            ("* * * 13 *", "outside 1..=12"),
            ("* * * * 8", "outside 0..=7"),
            ("*/0 * * * *", "bad step"),
            ("5-1 * * * *", "runs backwards"),
            ("x * * * *", "not a valid minute"),
            ("@often", "unknown macro"),
        ] {
            let err = Schedule::parse(expr).unwrap_err();
            assert!(err.reason.contains(reason), "{expr}: {err}");
        }
    }
}
