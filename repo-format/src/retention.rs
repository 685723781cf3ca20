//! Retention: which snapshots `forget` keeps, by restic's rules.
//!
//! [`apply`] is pure: snapshots and a [`RetentionPolicy`] in, one [`Group`] of
//! [`Decision`]s per host/paths/tags group out. Nothing is deleted here: the caller deletes
//! the snapshots whose decision says `keep: false`
//! ([`Repository::delete_snapshot`](crate::Repository::delete_snapshot)), so a dry run is the
//! same computation without the deletes.
//!
//! # Rules
//!
//! Snapshots are grouped ([`GroupBy`], host and paths by default) and every group is judged
//! on its own, newest snapshot first (equal times: larger id first). A snapshot is kept when
//! at least one rule keeps it; each rule that does adds its name to the decision's reasons:
//!
//! - `keep_last N` (`last`): the newest N snapshots.
//! - `keep_hourly/daily/weekly/monthly/yearly N` (`hourly`, ...): walking newest to oldest,
//!   a snapshot is kept when its period (hour, day, ISO 8601 week, month, year, all in UTC)
//!   differs from the period of the last snapshot that rule kept, while the rule has quota
//!   left; each keep uses one of its N. So N daily keeps the newest snapshot of each of the
//!   N most recent days that have a snapshot. As in restic (0.16 and later), a rule with
//!   quota left when it reaches the group's oldest snapshot keeps that one too, even when
//!   it shares a period with a newer kept snapshot (reason `daily (oldest)` and so on):
//!   a young group keeps its full history length.
//! - `keep_within D` (`within 30d`): every snapshot strictly after the group's reference
//!   time minus D. As in restic, the reference is the newest snapshot of the group that is
//!   not in the future (relative to `now`), **not** `now`: a group that stopped getting
//!   backups keeps its last D of history instead of losing everything. Snapshots in the
//!   future are always within; a group with only future snapshots keeps them all.
//! - `keep_within_hourly/daily/weekly/monthly/yearly D` (`daily within 7d`, ...): the
//!   period rules bounded by time instead of a count: the newest snapshot of each period
//!   that has one, among the snapshots `keep_within D` would keep (restic's
//!   `--keep-within-daily` and so on). No oldest-snapshot extra: the bound, not a quota,
//!   ends the rule.
//! - `keep_tags` (`tag env=prod`): every snapshot carrying one of these tags.
//! - `keep_min N` (`keep-min`): the newest N snapshots of a group are never removed,
//!   whatever the other rules say, so a flood of new snapshots (a looping script) cannot
//!   push every real backup out of a `keep_last` window. `keep-min` is a reason only for
//!   snapshots no other rule keeps.
//!
//! A policy without any keep rule is refused ([`RetentionPolicy::check`]): it would remove
//! every snapshot (but `keep_min`'s), which is never what an empty command line means.
//! A count of `Some(0)` is no rule, as in restic.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use jiff::Span;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::snapshot::{Snapshot, is_provenance_tag};
use crate::tree::Timestamp;

/// A calendar duration for `keep_within`: years, months, days and hours.
///
/// Written `1y2m3d4h` (any subset, any order; `m` is months). Months and years are calendar
/// months and years: subtracting one month from March 31 gives the last day of February
/// (jiff clamps to the end of the month, where restic's Go arithmetic would overflow into
/// early March).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CalendarDuration {
    /// Years (`y`).
    pub years: u32,
    /// Calendar months (`m`).
    pub months: u32,
    /// Days (`d`).
    pub days: u32,
    /// Hours (`h`).
    pub hours: u32,
}

impl CalendarDuration {
    /// True when every part is zero.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// `time` minus this duration, calendar-wise in UTC; `None` when the result falls before
    /// the earliest time jiff represents (year -9999), i.e. when there is no lower bound.
    fn before(&self, time: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let span = Span::new()
            .try_years(self.years)
            .and_then(|s| s.try_months(self.months))
            .and_then(|s| s.try_days(self.days))
            .and_then(|s| s.try_hours(self.hours))
            .ok()?;
        let start = time.to_zoned(TimeZone::UTC);
        start.checked_sub(span).ok().map(|z| z.timestamp())
    }
}

impl fmt::Display for CalendarDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (value, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for CalendarDuration {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        parse_duration(text)
    }
}

/// Parses a `keep_within` duration: numbers with units `y` (years), `m` (calendar months),
/// `d` (days) and `h` (hours), e.g. `30d`, `12h`, `1y2m3d4h`. Each unit at most once; the
/// whole duration must not be zero (it would keep nothing).
pub fn parse_duration(text: &str) -> Result<CalendarDuration> {
    let invalid = |why: &str| {
        Error::Invalid(format!(
            "{text:?} is not a duration ({why}); write e.g. 30d, 12h or 1y2m3d4h"
        ))
    };
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut duration = CalendarDuration::default();
    let mut seen = String::new();
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let field = match c {
            'y' => &mut duration.years,
            'm' => &mut duration.months,
            'd' => &mut duration.days,
            'h' => &mut duration.hours,
            _ => {
                return Err(invalid(&format!(
                    "unknown unit {c:?}; units are y, m, d, h"
                )));
            }
        };
        if digits.is_empty() {
            return Err(invalid(&format!("no number before {c:?}")));
        }
        if seen.contains(c) {
            return Err(invalid(&format!("{c:?} given twice")));
        }
        seen.push(c);
        *field = digits
            .parse()
            .map_err(|_| invalid(&format!("{digits} is too large")))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(invalid(&format!("{digits} has no unit")));
    }
    if duration.is_zero() {
        return Err(invalid("it is zero, which keeps nothing"));
    }
    Ok(duration)
}

/// Which snapshots to keep. Every field is a rule; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the newest N snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent hours with snapshots.
    pub keep_hourly: Option<u32>,
    /// Same per day.
    pub keep_daily: Option<u32>,
    /// Same per ISO 8601 week (Monday to Sunday, numbered within the ISO week-year).
    pub keep_weekly: Option<u32>,
    /// Same per calendar month.
    pub keep_monthly: Option<u32>,
    /// Same per calendar year.
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this duration of the group's newest (non-future) snapshot.
    pub keep_within: Option<CalendarDuration>,
    /// Keep the newest snapshot of each hour that has one, within this duration of the
    /// group's newest (non-future) snapshot.
    pub keep_within_hourly: Option<CalendarDuration>,
    /// Same per day.
    pub keep_within_daily: Option<CalendarDuration>,
    /// Same per ISO 8601 week.
    pub keep_within_weekly: Option<CalendarDuration>,
    /// Same per calendar month.
    pub keep_within_monthly: Option<CalendarDuration>,
    /// Same per calendar year.
    pub keep_within_yearly: Option<CalendarDuration>,
    /// Keep every snapshot that has one of these `(key, value)` tags.
    pub keep_tags: Vec<(String, String)>,
    /// Never remove the newest N snapshots of a group. Not a rule by itself.
    pub keep_min: u32,
}

impl Default for RetentionPolicy {
    /// No rule, and `keep_min` 1.
    fn default() -> Self {
        Self {
            keep_last: None,
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            keep_within: None,
            keep_within_hourly: None,
            keep_within_daily: None,
            keep_within_weekly: None,
            keep_within_monthly: None,
            keep_within_yearly: None,
            keep_tags: Vec::new(),
            keep_min: 1,
        }
    }
}

impl RetentionPolicy {
    /// True when at least one rule can keep a snapshot (`keep_min` does not count).
    pub fn has_rule(&self) -> bool {
        self.counted_rules().next().is_some()
            || self.keep_within.is_some_and(|d| !d.is_zero())
            || self.bounded_rules().next().is_some()
            || !self.keep_tags.is_empty()
    }

    /// Fails with [`Error::Invalid`] when the policy has no rule.
    pub fn check(&self) -> Result<()> {
        if self.has_rule() {
            Ok(())
        } else {
            Err(Error::Invalid(
                "the retention policy has no keep rule (last, hourly, daily, weekly, monthly, \
                 yearly, within, within-hourly ... within-yearly or tag), so nothing would be \
                 kept; refusing to forget every snapshot"
                    .into(),
            ))
        }
    }

    /// The period rules with a non-zero count, in the order reasons are listed.
    fn counted_rules(&self) -> impl Iterator<Item = (Period, u32)> {
        [
            (Period::Last, self.keep_last),
            (Period::Hourly, self.keep_hourly),
            (Period::Daily, self.keep_daily),
            (Period::Weekly, self.keep_weekly),
            (Period::Monthly, self.keep_monthly),
            (Period::Yearly, self.keep_yearly),
        ]
        .into_iter()
        .filter_map(|(period, count)| count.filter(|&n| n > 0).map(|n| (period, n)))
    }

    /// The period rules bounded by a non-zero duration, in the order reasons are listed.
    fn bounded_rules(&self) -> impl Iterator<Item = (Period, CalendarDuration)> {
        [
            (Period::Hourly, self.keep_within_hourly),
            (Period::Daily, self.keep_within_daily),
            (Period::Weekly, self.keep_within_weekly),
            (Period::Monthly, self.keep_within_monthly),
            (Period::Yearly, self.keep_within_yearly),
        ]
        .into_iter()
        .filter_map(|(period, duration)| {
            duration
                .filter(|d| !d.is_zero())
                .map(|duration| (period, duration))
        })
    }
}

/// What snapshots are grouped by before the policy applies to each group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupBy {
    /// Group by host name.
    pub host: bool,
    /// Group by the set of backed-up paths.
    pub paths: bool,
    /// Group by the set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    /// Host and paths.
    fn default() -> Self {
        Self {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = Error;

    /// A comma-separated subset of `host`, `paths` and `tags`; empty means one group.
    fn from_str(text: &str) -> Result<Self> {
        let mut group_by = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in text.split(',').filter(|p| !p.is_empty()) {
            match part {
                "host" => group_by.host = true,
                "paths" => group_by.paths = true,
                "tags" => group_by.tags = true,
                other => {
                    return Err(Error::Invalid(format!(
                        "cannot group by {other:?}: give a comma-separated list of host, paths and tags"
                    )));
                }
            }
        }
        Ok(group_by)
    }
}

/// The key of a group: the grouped-by fields of its snapshots, `None` for the others.
/// Paths and tags are sorted, so their order in a snapshot does not matter; the tags a
/// rewrite or a repair adds are left out ([`is_provenance_tag`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// Host name, when grouping by host.
    pub host: Option<String>,
    /// Sorted paths, when grouping by paths.
    pub paths: Option<Vec<Vec<u8>>>,
    /// Sorted tags, when grouping by tags.
    pub tags: Option<Vec<(String, String)>>,
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

impl GroupKey {
    /// The key of `snapshot`'s group.
    pub fn of(snapshot: &Snapshot, group_by: GroupBy) -> Self {
        GroupKey {
            host: group_by.host.then(|| snapshot.host.clone()),
            paths: group_by.paths.then(|| sorted(snapshot.paths.clone())),
            tags: group_by.tags.then(|| {
                let tags = snapshot.tags.iter();
                sorted(
                    tags.filter(|(key, _)| !is_provenance_tag(key))
                        .cloned()
                        .collect(),
                )
            }),
        }
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time.
    pub time: Timestamp,
    /// True to keep it; false to remove it. Always equal to `!reasons.is_empty()`.
    pub keep: bool,
    /// The rules that keep it (`last`, `daily`, `within 30d`, `tag env=prod`, `keep-min`,
    /// ...); empty for a snapshot to remove.
    pub reasons: Vec<String>,
}

/// One group of snapshots and the verdict on each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// What the snapshots of the group have in common.
    pub key: GroupKey,
    /// One decision per snapshot of the group, newest first.
    pub decisions: Vec<Decision>,
}

impl Group {
    /// The decisions to keep.
    pub fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.keep)
    }

    /// The decisions to remove.
    pub fn removed(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

/// Applies `policy` to `snapshots`, grouped by `group_by`; `now` only tells which snapshots
/// are in the future (for `keep_within`). Groups come sorted by key; every snapshot appears
/// in exactly one decision. Fails when the policy has no rule ([`RetentionPolicy::check`]).
pub fn apply(
    snapshots: &[(SnapshotId, Snapshot)],
    policy: &RetentionPolicy,
    group_by: GroupBy,
    now: Timestamp,
) -> Result<Vec<Group>> {
    policy.check()?;
    let mut groups: BTreeMap<GroupKey, Vec<(SnapshotId, &Snapshot)>> = BTreeMap::new();
    for (id, snapshot) in snapshots {
        groups
            .entry(GroupKey::of(snapshot, group_by))
            .or_default()
            .push((*id, snapshot));
    }
    Ok(groups
        .into_iter()
        .map(|(key, members)| Group {
            key,
            decisions: decide(members, policy, to_jiff(now)),
        })
        .collect())
}

/// A period rule: its reason name and how it buckets a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// The period a snapshot falls in, for one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    /// Position in the group: every snapshot is its own bucket for `last`.
    Position(usize),
    Hour(Date, i8),
    Day(Date),
    /// ISO week-year and week.
    Week(i16, i8),
    Month(i16, i8),
    Year(i16),
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Last => "last",
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    fn bucket(self, position: usize, time: DateTime) -> Bucket {
        let date = time.date();
        match self {
            Period::Last => Bucket::Position(position),
            Period::Hourly => Bucket::Hour(date, time.hour()),
            Period::Daily => Bucket::Day(date),
            Period::Weekly => {
                let week = date.iso_week_date();
                Bucket::Week(week.year(), week.week())
            }
            Period::Monthly => Bucket::Month(date.year(), date.month()),
            Period::Yearly => Bucket::Year(date.year()),
        }
    }
}

/// A period rule while walking a group.
struct PeriodRule {
    period: Period,
    quota: u32,
    last: Option<Bucket>,
}

/// A period rule bounded by time while walking a group.
struct BoundedRule {
    period: Period,
    duration: CalendarDuration,
    bound: Within,
    last: Option<Bucket>,
}

/// Our timestamp as jiff's, clamped to jiff's range (years -9999 to 9999): a snapshot time
/// outside it is a damaged clock, and sorting it to the edge is all that matters.
fn to_jiff(time: Timestamp) -> jiff::Timestamp {
    let nsec = i32::try_from(time.nsec.min(999_999_999)).unwrap_or(0);
    jiff::Timestamp::new(time.sec, nsec).unwrap_or(if time.sec < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    })
}

/// Which times `keep_within` keeps in one group.
enum Within {
    /// Every snapshot (no reference time, or the duration reaches before year -9999).
    All,
    /// Snapshots strictly after this time.
    After(jiff::Timestamp),
}

impl Within {
    fn contains(&self, time: jiff::Timestamp) -> bool {
        match self {
            Within::All => true,
            Within::After(bound) => time > *bound,
        }
    }
}

fn within_bound(
    times: &[jiff::Timestamp],
    duration: CalendarDuration,
    now: jiff::Timestamp,
) -> Within {
    let reference = times.iter().copied().filter(|t| *t <= now).max();
    match reference.and_then(|r| duration.before(r)) {
        Some(bound) => Within::After(bound),
        None => Within::All,
    }
}

/// The decisions of one non-empty group.
fn decide(
    mut members: Vec<(SnapshotId, &Snapshot)>,
    policy: &RetentionPolicy,
    now: jiff::Timestamp,
) -> Vec<Decision> {
    members.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
    let times: Vec<jiff::Timestamp> = members.iter().map(|(_, s)| to_jiff(s.time)).collect();
    let within = policy
        .keep_within
        .filter(|d| !d.is_zero())
        .map(|d| (d, within_bound(&times, d, now)));
    let mut rules: Vec<PeriodRule> = policy
        .counted_rules()
        .map(|(period, quota)| PeriodRule {
            period,
            quota,
            last: None,
        })
        .collect();
    let mut bounded: Vec<BoundedRule> = policy
        .bounded_rules()
        .map(|(period, duration)| BoundedRule {
            period,
            duration,
            bound: within_bound(&times, duration, now),
            last: None,
        })
        .collect();
    let oldest = members.len().saturating_sub(1);
    let keep_min = usize::try_from(policy.keep_min).unwrap_or(usize::MAX);
    let mut decisions = Vec::with_capacity(members.len());
    for (position, ((id, snapshot), time)) in members.iter().zip(&times).enumerate() {
        let mut reasons = Vec::new();
        let civil = TimeZone::UTC.to_datetime(*time);
        for rule in rules.iter_mut().filter(|r| r.quota > 0) {
            let bucket = rule.period.bucket(position, civil);
            if rule.last != Some(bucket) {
                reasons.push(rule.period.name().to_owned());
            } else if position == oldest {
                reasons.push(format!("{} (oldest)", rule.period.name()));
            } else {
                continue;
            }
            rule.last = Some(bucket);
            rule.quota -= 1;
        }
        if let Some((duration, bound)) = &within
            && bound.contains(*time)
        {
            reasons.push(format!("within {duration}"));
        }
        for rule in bounded.iter_mut().filter(|r| r.bound.contains(*time)) {
            let bucket = rule.period.bucket(position, civil);
            if rule.last != Some(bucket) {
                reasons.push(format!("{} within {}", rule.period.name(), rule.duration));
                rule.last = Some(bucket);
            }
        }
        for (key, value) in &policy.keep_tags {
            if snapshot.tags.iter().any(|(k, v)| k == key && v == value) {
                reasons.push(format!("tag {key}={value}"));
            }
        }
        if reasons.is_empty() && position < keep_min {
            reasons.push("keep-min".to_owned());
        }
        decisions.push(Decision {
            id: *id,
            time: snapshot.time,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;
    use proptest::prelude::*;

    fn ts(text: &str) -> Timestamp {
        let t: jiff::Timestamp = text.parse().unwrap();
        Timestamp {
            sec: t.as_second(),
            nsec: u32::try_from(t.subsec_nanosecond()).unwrap(),
        }
    }

    /// `(key, value)` tags.
    type Tags<'a> = &'a [(&'a str, &'a str)];

    /// A snapshot's time and tags, and the expected reasons (comma-joined).
    type Case<'a> = (&'a str, Tags<'a>, &'a str);

    fn snapshot(time: Timestamp, host: &str, paths: &[&str], tags: Tags<'_>) -> Snapshot {
        Snapshot {
            time,
            host: host.into(),
            username: "root".into(),
            paths: paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            parent: None,
            tree: BlobId::from_bytes([0; 32]),
            source_kind: Default::default(),
            consistency: Default::default(),
            consistency_detail: String::new(),
            excludes: Vec::new(),
            summary: Default::default(),
            errors: Vec::new(),
            program_version: "test".into(),
        }
    }

    fn id(n: usize) -> SnapshotId {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&(n as u64).to_be_bytes());
        SnapshotId::from_bytes(bytes)
    }

    /// No rule and `keep_min` 0: each case sets only what it tests.
    fn none() -> RetentionPolicy {
        RetentionPolicy {
            keep_min: 0,
            ..RetentionPolicy::default()
        }
    }

    fn within(text: &str) -> Option<CalendarDuration> {
        Some(parse_duration(text).unwrap())
    }

    const FAR_FUTURE: &str = "2100-01-01T00:00:00Z";

    /// Applies `policy` to one group of snapshots with the given times and tags, and checks
    /// the reasons of each (comma-joined, empty for removed). `cases` are newest first;
    /// they are handed to `apply` oldest first, so the sort is tested too. Ids descend
    /// with the cases, so equal times keep case order (larger id first).
    fn check(policy: RetentionPolicy, now: &str, cases: &[Case<'_>]) {
        let snapshots: Vec<(SnapshotId, Snapshot)> = cases
            .iter()
            .enumerate()
            .rev()
            .map(|(n, (time, tags, _))| {
                (
                    id(cases.len() - n),
                    snapshot(ts(time), "h", &["/src"], tags),
                )
            })
            .collect();
        let groups = apply(&snapshots, &policy, GroupBy::default(), ts(now)).unwrap();
        assert_eq!(groups.len(), 1);
        let decisions = &groups[0].decisions;
        assert_eq!(decisions.len(), cases.len());
        for (n, (decision, (time, _, expected))) in decisions.iter().zip(cases).enumerate() {
            assert_eq!(decision.id, id(cases.len() - n), "order at {time}");
            assert_eq!(decision.reasons.join(","), *expected, "reasons of {time}");
            assert_eq!(decision.keep, !expected.is_empty(), "keep of {time}");
        }
    }

    /// `name: policy, [time => reasons, ...];` with times newest first.
    macro_rules! cases {
        ($($name:ident: $policy:expr, [$($time:literal => $reasons:literal),* $(,)?];)*) => {
            $(
                #[test]
                fn $name() {
                    check($policy, FAR_FUTURE, &[$(($time, &[], $reasons)),*]);
                }
            )*
        };
    }

    cases! {
        last_keeps_the_newest_n: RetentionPolicy { keep_last: Some(2), ..none() }, [
            "2024-03-01T05:00:00Z" => "last",
            "2024-03-01T04:00:00Z" => "last",
            "2024-03-01T03:00:00Z" => "",
            "2024-03-01T02:00:00Z" => "",
            "2024-03-01T01:00:00Z" => "",
        ];
        last_with_more_quota_than_snapshots_keeps_all: RetentionPolicy { keep_last: Some(10), ..none() }, [
            "2024-03-01T05:00:00Z" => "last",
            "2024-03-01T05:00:00Z" => "last",
            "2024-03-01T04:00:00Z" => "last",
        ];
        hourly_keeps_the_newest_of_each_hour: RetentionPolicy { keep_hourly: Some(2), ..none() }, [
            "2024-03-01T10:50:00Z" => "hourly",
            "2024-03-01T10:10:00Z" => "",
            "2024-03-01T09:59:59Z" => "hourly",
            "2024-03-01T09:00:00Z" => "",
            "2024-03-01T08:30:00Z" => "",
        ];
        hourly_buckets_are_utc_hours: RetentionPolicy { keep_hourly: Some(5), ..none() }, [
            "2024-03-01T10:30:00+02:00" => "hourly",
            "2024-03-01T08:10:00Z" => "",
            "2024-03-01T09:10:00+02:00" => "hourly",
            "2024-03-01T07:00:00Z" => "hourly (oldest)",
        ];
        hourly_skips_empty_hours: RetentionPolicy { keep_hourly: Some(2), ..none() }, [
            "2024-03-01T10:00:00Z" => "hourly",
            "2024-02-28T10:00:00Z" => "hourly",
            "2024-02-27T10:00:00Z" => "",
        ];
        daily_across_the_year_end: RetentionPolicy { keep_daily: Some(3), ..none() }, [
            "2024-01-01T00:30:00Z" => "daily",
            "2023-12-31T23:59:59Z" => "daily",
            "2023-12-31T12:00:00Z" => "",
            "2023-12-30T08:00:00Z" => "daily",
            "2023-12-29T08:00:00Z" => "",
        ];
        daily_with_quota_left_keeps_the_oldest_too: RetentionPolicy { keep_daily: Some(5), ..none() }, [
            "2024-05-02T10:00:00Z" => "daily",
            "2024-05-02T09:00:00Z" => "",
            "2024-05-01T10:00:00Z" => "daily",
            "2024-05-01T08:00:00Z" => "daily (oldest)",
        ];
        daily_leap_day: RetentionPolicy { keep_daily: Some(2), ..none() }, [
            "2024-03-01T00:00:00Z" => "daily",
            "2024-02-29T23:59:59.999999999Z" => "daily",
            "2024-02-29T00:00:00Z" => "",
        ];
        weekly_iso_week_spans_the_new_year: RetentionPolicy { keep_weekly: Some(2), ..none() }, [
            // 2024-12-30 (Monday) to 2025-01-05 is ISO week 2025-W01.
            "2025-01-02T12:00:00Z" => "weekly",
            "2024-12-30T00:00:00Z" => "",
            // Sunday 2024-12-29 ends 2024-W52.
            "2024-12-29T23:59:59Z" => "weekly",
            "2024-12-23T00:00:00Z" => "",
            "2024-12-22T12:00:00Z" => "",
            "2024-12-16T00:00:00Z" => "",
        ];
        weekly_week_53: RetentionPolicy { keep_weekly: Some(5), ..none() }, [
            // Sunday 2021-01-03 and Monday 2020-12-28 are both in 2020-W53.
            "2021-01-04T00:00:00Z" => "weekly",
            "2021-01-03T10:00:00Z" => "weekly",
            "2020-12-28T10:00:00Z" => "",
            "2020-12-27T10:00:00Z" => "weekly",
        ];
        weekly_same_week_number_in_another_year: RetentionPolicy { keep_weekly: Some(5), ..none() }, [
            // Both are week 10, of different years.
            "2024-03-06T00:00:00Z" => "weekly",
            "2023-03-08T00:00:00Z" => "weekly",
        ];
        monthly_month_ends: RetentionPolicy { keep_monthly: Some(3), ..none() }, [
            "2024-03-01T00:00:00Z" => "monthly",
            "2024-02-29T23:00:00Z" => "monthly",
            "2024-02-01T00:00:00Z" => "",
            "2024-01-31T23:59:59Z" => "monthly",
            "2023-12-31T00:00:00Z" => "",
        ];
        yearly_year_ends: RetentionPolicy { keep_yearly: Some(3), ..none() }, [
            "2025-01-01T00:00:00Z" => "yearly",
            "2024-12-31T23:59:59Z" => "yearly",
            "2024-01-01T00:00:00Z" => "",
            "2023-06-01T00:00:00Z" => "yearly",
            "2022-06-01T00:00:00Z" => "",
        ];
        rules_combine_and_list_every_reason: RetentionPolicy {
            keep_last: Some(1),
            keep_daily: Some(2),
            keep_monthly: Some(2),
            ..none()
        }, [
            "2024-05-02T10:00:00Z" => "last,daily,monthly",
            "2024-05-02T09:00:00Z" => "",
            "2024-05-01T10:00:00Z" => "daily",
            "2024-04-30T10:00:00Z" => "monthly",
            "2024-04-29T10:00:00Z" => "",
            "2024-03-31T10:00:00Z" => "",
        ];
        zero_counts_are_no_rule: RetentionPolicy { keep_last: Some(0), keep_daily: Some(1), ..none() }, [
            "2024-05-02T10:00:00Z" => "daily",
            "2024-05-02T09:00:00Z" => "",
        ];
        within_keeps_strictly_after_newest_minus_duration: RetentionPolicy { keep_within: within("1d"), ..none() }, [
            "2024-06-30T12:00:00Z" => "within 1d",
            "2024-06-29T12:00:01Z" => "within 1d",
            "2024-06-29T12:00:00Z" => "",
            "2024-06-01T00:00:00Z" => "",
        ];
        within_months_are_calendar_months_clamped_to_the_month_end: RetentionPolicy { keep_within: within("1m"), ..none() }, [
            // 2024-03-31 minus one month is 2024-02-29.
            "2024-03-31T00:00:00Z" => "within 1m",
            "2024-02-29T00:00:01Z" => "within 1m",
            "2024-02-29T00:00:00Z" => "",
        ];
        within_combined_units: RetentionPolicy { keep_within: within("1y1m1d1h"), ..none() }, [
            // 2024-03-02T02:00 minus 1y1m1d1h is 2023-02-01T01:00.
            "2024-03-02T02:00:00Z" => "within 1y1m1d1h",
            "2023-02-01T01:00:01Z" => "within 1y1m1d1h",
            "2023-02-01T01:00:00Z" => "",
        ];
        keep_min_overrides_everything: RetentionPolicy {
            keep_tags: vec![("never".into(), "matches".into())],
            keep_min: 2,
            ..none()
        }, [
            "2024-05-02T10:00:00Z" => "keep-min",
            "2024-05-02T09:00:00Z" => "keep-min",
            "2024-05-01T10:00:00Z" => "",
        ];
        keep_min_is_a_reason_only_when_nothing_else_keeps: RetentionPolicy {
            keep_last: Some(1),
            keep_min: 3,
            ..none()
        }, [
            "2024-05-02T10:00:00Z" => "last",
            "2024-05-02T09:00:00Z" => "keep-min",
            "2024-05-01T10:00:00Z" => "keep-min",
            "2024-05-01T09:00:00Z" => "",
        ];
        keep_min_larger_than_the_group: RetentionPolicy { keep_last: Some(1), keep_min: 100, ..none() }, [
            "2024-05-02T10:00:00Z" => "last",
            "2024-05-02T09:00:00Z" => "keep-min",
        ];
    }

    #[test]
    fn within_daily_keeps_the_newest_of_each_day_inside_the_bound() {
        // 2d before the newest non-future snapshot (06-30 12:00) is 06-28 12:00.
        let policy = RetentionPolicy {
            keep_within_daily: within("2d"),
            ..none()
        };
        check(
            policy,
            "2024-07-01T00:00:00Z",
            &[
                ("2024-06-30T12:00:00Z", &[], "daily within 2d"),
                ("2024-06-30T06:00:00Z", &[], ""),
                ("2024-06-29T23:00:00Z", &[], "daily within 2d"),
                ("2024-06-29T01:00:00Z", &[], ""),
                ("2024-06-28T13:00:00Z", &[], "daily within 2d"),
                ("2024-06-28T12:00:00Z", &[], ""),
                ("2024-06-27T12:00:00Z", &[], ""),
            ],
        );
    }

    #[test]
    fn bounded_rules_combine_with_each_other_and_with_counts() {
        // From 2024-06-30 12:00 (a Sunday): hourly within 2h keeps hours 12, 11 and 10
        // (after 10:00); weekly within 1m the newest of ISO weeks 26 to 22 (after 05-30
        // 12:00; week 21 is older); last 1.
        let policy = RetentionPolicy {
            keep_last: Some(1),
            keep_within_hourly: within("2h"),
            keep_within_weekly: within("1m"),
            ..none()
        };
        check(
            policy,
            FAR_FUTURE,
            &[
                (
                    "2024-06-30T12:00:00Z",
                    &[],
                    "last,hourly within 2h,weekly within 1m",
                ),
                ("2024-06-30T11:30:00Z", &[], "hourly within 2h"),
                ("2024-06-30T11:00:00Z", &[], ""),
                ("2024-06-30T10:30:00Z", &[], "hourly within 2h"),
                ("2024-06-30T10:00:00Z", &[], ""),
                ("2024-06-23T10:00:00Z", &[], "weekly within 1m"),
                ("2024-06-12T10:00:00Z", &[], "weekly within 1m"),
                ("2024-06-03T10:00:00Z", &[], "weekly within 1m"),
                ("2024-06-01T10:00:00Z", &[], "weekly within 1m"),
                ("2024-05-31T10:00:00Z", &[], ""),
                ("2024-05-30T13:00:00Z", &[], ""),
                ("2024-05-20T10:00:00Z", &[], ""),
            ],
        );
    }

    #[test]
    fn a_bounded_rule_alone_is_a_rule() {
        let policy = RetentionPolicy {
            keep_within_yearly: within("3y"),
            ..none()
        };
        assert!(policy.has_rule());
        assert!(none().check().is_err());
    }

    #[test]
    fn within_is_measured_from_the_newest_snapshot_not_now() {
        let policy = RetentionPolicy {
            keep_within: within("1d"),
            ..none()
        };
        check(
            policy,
            "2030-01-01T00:00:00Z",
            &[
                ("2024-06-30T12:00:00Z", &[], "within 1d"),
                ("2024-06-30T00:00:00Z", &[], "within 1d"),
                ("2024-06-28T00:00:00Z", &[], ""),
            ],
        );
    }

    #[test]
    fn within_ignores_future_snapshots_as_reference() {
        let policy = RetentionPolicy {
            keep_within: within("1d"),
            ..none()
        };
        check(
            policy,
            "2024-06-30T00:00:00Z",
            &[
                ("2024-07-05T00:00:00Z", &[], "within 1d"),
                ("2024-06-29T12:00:00Z", &[], "within 1d"),
                ("2024-06-28T13:00:00Z", &[], "within 1d"),
                ("2024-06-28T11:00:00Z", &[], ""),
            ],
        );
        // Only future snapshots: no reference, all within.
        let policy = RetentionPolicy {
            keep_within: within("1h"),
            ..none()
        };
        check(
            policy,
            "2024-06-30T00:00:00Z",
            &[
                ("2025-07-05T00:00:00Z", &[], "within 1h"),
                ("2024-07-05T00:00:00Z", &[], "within 1h"),
            ],
        );
    }

    #[test]
    fn within_longer_than_the_calendar_keeps_everything() {
        let policy = RetentionPolicy {
            keep_within: within("4000000000y"),
            ..none()
        };
        check(
            policy,
            FAR_FUTURE,
            &[
                ("2024-06-30T00:00:00Z", &[], "within 4000000000y"),
                ("-009000-01-01T00:00:00Z", &[], "within 4000000000y"),
            ],
        );
    }

    #[test]
    fn tags_keep_exact_key_value_matches() {
        let policy = RetentionPolicy {
            keep_tags: vec![("env".into(), "prod".into()), ("keep".into(), "yes".into())],
            ..none()
        };
        check(
            policy,
            FAR_FUTURE,
            &[
                ("2024-05-05T00:00:00Z", &[("env", "dev")], ""),
                ("2024-05-04T00:00:00Z", &[("env", "prod")], "tag env=prod"),
                ("2024-05-03T00:00:00Z", &[("prod", "env")], ""),
                (
                    "2024-05-02T00:00:00Z",
                    &[("keep", "yes"), ("env", "prod")],
                    "tag env=prod,tag keep=yes",
                ),
                ("2024-05-01T00:00:00Z", &[], ""),
            ],
        );
    }

    #[test]
    fn reasons_are_listed_in_rule_order() {
        let policy = RetentionPolicy {
            keep_last: Some(1),
            keep_hourly: Some(1),
            keep_daily: Some(1),
            keep_weekly: Some(1),
            keep_monthly: Some(1),
            keep_yearly: Some(1),
            keep_within: within("1h"),
            keep_within_hourly: within("1h"),
            keep_within_daily: within("1h"),
            keep_within_weekly: within("1h"),
            keep_within_monthly: within("1h"),
            keep_within_yearly: within("1h"),
            keep_tags: vec![("a".into(), "b".into())],
            keep_min: 1,
        };
        check(
            policy,
            FAR_FUTURE,
            &[(
                "2024-05-05T00:00:00Z",
                &[("a", "b")],
                "last,hourly,daily,weekly,monthly,yearly,within 1h,hourly within 1h,\
                 daily within 1h,weekly within 1h,monthly within 1h,yearly within 1h,tag a=b",
            )],
        );
    }

    #[test]
    fn a_policy_without_rules_is_refused() {
        let snapshots = vec![(id(0), snapshot(ts("2024-01-01T00:00:00Z"), "h", &[], &[]))];
        let now = ts(FAR_FUTURE);
        for policy in [
            RetentionPolicy::default(),
            RetentionPolicy {
                keep_min: 5,
                ..none()
            },
            RetentionPolicy {
                keep_last: Some(0),
                keep_hourly: Some(0),
                keep_daily: Some(0),
                keep_weekly: Some(0),
                keep_monthly: Some(0),
                keep_yearly: Some(0),
                keep_within: Some(CalendarDuration::default()),
                ..none()
            },
        ] {
            assert!(!policy.has_rule());
            let err = apply(&snapshots, &policy, GroupBy::default(), now).unwrap_err();
            assert!(err.to_string().contains("nothing would be kept"), "{err}");
        }
        // Even with nothing to judge.
        assert!(apply(&[], &RetentionPolicy::default(), GroupBy::default(), now).is_err());
        let ok = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        assert_eq!(apply(&[], &ok, GroupBy::default(), now).unwrap(), vec![]);
    }

    /// Snapshots of two hosts, two path sets (in two orders) and two tag sets.
    fn mixed() -> Vec<(SnapshotId, Snapshot)> {
        let spec: [(&str, &str, &[&str], Tags<'_>); 6] = [
            ("2024-01-01T00:00:00Z", "a", &["/x", "/y"], &[("t", "1")]),
            ("2024-01-02T00:00:00Z", "a", &["/y", "/x"], &[("t", "2")]),
            ("2024-01-03T00:00:00Z", "a", &["/z"], &[("t", "1")]),
            ("2024-01-04T00:00:00Z", "b", &["/x", "/y"], &[("t", "1")]),
            ("2024-01-05T00:00:00Z", "b", &["/x", "/y"], &[("t", "2")]),
            ("2024-01-06T00:00:00Z", "b", &["/z"], &[]),
        ];
        spec.iter()
            .enumerate()
            .map(|(n, (time, host, paths, tags))| (id(n), snapshot(ts(time), host, paths, tags)))
            .collect()
    }

    /// Per group: (host, paths, tags) of the key, and the kept and removed snapshot numbers.
    type Summary = Vec<(
        Option<String>,
        Option<Vec<String>>,
        Option<Vec<String>>,
        Vec<usize>,
        Vec<usize>,
    )>;

    fn summarize(groups: &[Group]) -> Summary {
        let number = |d: &Decision| (0..6).find(|&n| id(n) == d.id).unwrap();
        groups
            .iter()
            .map(|g| {
                (
                    g.key.host.clone(),
                    g.key.paths.as_ref().map(|ps| {
                        ps.iter()
                            .map(|p| String::from_utf8(p.clone()).unwrap())
                            .collect()
                    }),
                    g.key
                        .tags
                        .as_ref()
                        .map(|ts| ts.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                    g.kept().map(number).collect(),
                    g.removed().map(number).collect(),
                )
            })
            .collect()
    }

    macro_rules! grouping_cases {
        ($($name:ident: $group_by:literal => [$(($host:expr, $paths:expr, $tags:expr, $kept:expr, $removed:expr)),* $(,)?];)*) => {
            $(
                #[test]
                fn $name() {
                    let policy = RetentionPolicy { keep_last: Some(1), ..none() };
                    let group_by: GroupBy = $group_by.parse().unwrap();
                    let groups = apply(&mixed(), &policy, group_by, ts(FAR_FUTURE)).unwrap();
                    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
                    let expected: Summary = vec![$((
                        $host.map(str::to_owned),
                        $paths.map(|p: &[&str]| s(p)),
                        $tags.map(|t: &[&str]| s(t)),
                        $kept.to_vec(),
                        $removed.to_vec(),
                    )),*];
                    assert_eq!(summarize(&groups), expected);
                }
            )*
        };
    }

    const NO: Option<&str> = None;
    const ANY: Option<&[&str]> = None;

    grouping_cases! {
        group_by_host_and_paths_by_default: "host,paths" => [
            (Some("a"), Some(&["/x", "/y"][..]), ANY, [1], [0]),
            (Some("a"), Some(&["/z"][..]), ANY, [2], []),
            (Some("b"), Some(&["/x", "/y"][..]), ANY, [4], [3]),
            (Some("b"), Some(&["/z"][..]), ANY, [5], []),
        ];
        group_by_host: "host" => [
            (Some("a"), ANY, ANY, [2], [1, 0]),
            (Some("b"), ANY, ANY, [5], [4, 3]),
        ];
        group_by_paths: "paths" => [
            (NO, Some(&["/x", "/y"][..]), ANY, [4], [3, 1, 0]),
            (NO, Some(&["/z"][..]), ANY, [5], [2]),
        ];
        group_by_tags: "tags" => [
            (NO, ANY, Some(&[][..]), [5], []),
            (NO, ANY, Some(&["t=1"][..]), [3], [2, 0]),
            (NO, ANY, Some(&["t=2"][..]), [4], [1]),
        ];
        group_by_everything: "host,paths,tags" => [
            (Some("a"), Some(&["/x", "/y"][..]), Some(&["t=1"][..]), [0], []),
            (Some("a"), Some(&["/x", "/y"][..]), Some(&["t=2"][..]), [1], []),
            (Some("a"), Some(&["/z"][..]), Some(&["t=1"][..]), [2], []),
            (Some("b"), Some(&["/x", "/y"][..]), Some(&["t=1"][..]), [3], []),
            (Some("b"), Some(&["/x", "/y"][..]), Some(&["t=2"][..]), [4], []),
            (Some("b"), Some(&["/z"][..]), Some(&[][..]), [5], []),
        ];
        group_by_nothing: "" => [
            (NO, ANY, ANY, [5], [4, 3, 2, 1, 0]),
        ];
    }

    /// A rewritten or repaired snapshot carries a tag naming its original: grouping by tags
    /// leaves it out, or each such snapshot would be a group of its own, never forgotten.
    #[test]
    fn grouping_by_tags_leaves_out_the_tags_of_rewrites_and_repairs() {
        let snapshots: Vec<(SnapshotId, Snapshot)> = [
            (0, &[("env", "prod")][..], "2026-01-01T00:00:00Z"),
            (
                1,
                &[("env", "prod"), ("rewritten", "aaaa1111")][..],
                "2026-01-02T00:00:00Z",
            ),
            (
                2,
                &[("repaired", "bbbb2222"), ("env", "prod")][..],
                "2026-01-03T00:00:00Z",
            ),
            (
                3,
                &[("env", "test"), ("rewritten", "cccc3333")][..],
                "2026-01-04T00:00:00Z",
            ),
        ]
        .into_iter()
        .map(|(n, tags, time)| (id(n), snapshot(ts(time), "h", &["/src"], tags)))
        .collect();
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..none()
        };
        let groups = apply(&snapshots, &policy, "tags".parse().unwrap(), ts(FAR_FUTURE)).unwrap();
        type Ids = Vec<SnapshotId>;
        type GroupVerdict = (Vec<(String, String)>, Ids, Ids);
        let summary: Vec<GroupVerdict> = groups
            .iter()
            .map(|g| {
                let kept = g.decisions.iter().filter(|d| d.keep).map(|d| d.id);
                let removed = g.decisions.iter().filter(|d| !d.keep).map(|d| d.id);
                (
                    g.key.tags.clone().unwrap(),
                    kept.collect(),
                    removed.collect(),
                )
            })
            .collect();
        let tag = |v: &str| vec![("env".to_owned(), v.to_owned())];
        assert_eq!(
            summary,
            [
                (tag("prod"), vec![id(2)], vec![id(1), id(0)]),
                (tag("test"), vec![id(3)], vec![]),
            ]
        );
    }

    #[test]
    fn group_by_parses_and_defaults() {
        assert_eq!(
            GroupBy::default(),
            GroupBy {
                host: true,
                paths: true,
                tags: false
            }
        );
        assert_eq!("paths,host".parse::<GroupBy>().unwrap(), GroupBy::default());
        assert_eq!(
            "tags".parse::<GroupBy>().unwrap(),
            GroupBy {
                host: false,
                paths: false,
                tags: true
            }
        );
        for bad in ["hosts", "host,path", "host;paths", "HOST"] {
            assert!(bad.parse::<GroupBy>().is_err(), "{bad}");
        }
    }

    macro_rules! duration_cases {
        ($($text:literal => $expected:expr,)*) => {
            #[test]
            fn durations_parse() {
                $(
                    let expected: Option<(u32, u32, u32, u32)> = $expected;
                    let parsed = parse_duration($text)
                        .map(|d| (d.years, d.months, d.days, d.hours))
                        .ok();
                    assert_eq!(parsed, expected, "{:?}", $text);
                )*
            }
        };
    }

    duration_cases! {
        "30d" => Some((0, 0, 30, 0)),
        "12h" => Some((0, 0, 0, 12)),
        "1y2m3d4h" => Some((1, 2, 3, 4)),
        "4h3d" => Some((0, 0, 3, 4)),
        "6m" => Some((0, 6, 0, 0)),
        "0y1h" => Some((0, 0, 0, 1)),
        "4294967295d" => Some((0, 0, 4_294_967_295, 0)),
        "" => None,
        "d" => None,
        "30" => None,
        "30x" => None,
        "30D" => None,
        "1d1d" => None,
        "0d" => None,
        "0y0h" => None,
        "-1d" => None,
        "1.5d" => None,
        " 1d" => None,
        "1d " => None,
        "4294967296d" => None,
        "1w" => None,
    }

    #[test]
    fn durations_display_round_trip() {
        for text in ["30d", "12h", "1y2m3d4h", "6m", "1y1h"] {
            assert_eq!(parse_duration(text).unwrap().to_string(), text);
        }
        assert_eq!(parse_duration("4h3d").unwrap().to_string(), "3d4h");
        assert_eq!(CalendarDuration::default().to_string(), "0h");
        let err = parse_duration("1w").unwrap_err().to_string();
        assert!(err.contains("unknown unit 'w'"), "{err}");
    }

    #[test]
    fn out_of_range_times_do_not_panic() {
        let policy = RetentionPolicy {
            keep_daily: Some(3),
            keep_within: within("1y"),
            ..none()
        };
        let snapshots: Vec<_> = [i64::MIN, -1, 0, i64::MAX]
            .iter()
            .enumerate()
            .map(|(n, &sec)| {
                let time = Timestamp {
                    sec,
                    nsec: 999_999_999,
                };
                (id(n), snapshot(time, "h", &[], &[]))
            })
            .collect();
        let groups = apply(&snapshots, &policy, GroupBy::default(), ts(FAR_FUTURE)).unwrap();
        assert_eq!(groups[0].decisions.len(), 4);
    }

    fn arbitrary_policy() -> impl Strategy<Value = RetentionPolicy> {
        let count = || proptest::option::of(0u32..4);
        (
            (count(), count(), count(), count(), count(), count()),
            proptest::option::of((0u32..2, 0u32..3, 0u32..10, 0u32..30)),
            proptest::bool::ANY,
            0u32..5,
            (
                proptest::option::of(0u32..20),
                proptest::option::of(0u32..4),
            ),
        )
            .prop_map(
                |(
                    (last, hourly, daily, weekly, monthly, yearly),
                    within,
                    tag,
                    keep_min,
                    (daily_days, weekly_months),
                )| {
                    RetentionPolicy {
                        keep_last: last,
                        keep_hourly: hourly,
                        keep_daily: daily,
                        keep_weekly: weekly,
                        keep_monthly: monthly,
                        keep_yearly: yearly,
                        keep_within: within.map(|(years, months, days, hours)| CalendarDuration {
                            years,
                            months,
                            days,
                            hours,
                        }),
                        keep_within_hourly: None,
                        keep_within_daily: daily_days.map(|days| CalendarDuration {
                            days,
                            ..CalendarDuration::default()
                        }),
                        keep_within_weekly: weekly_months.map(|months| CalendarDuration {
                            months,
                            ..CalendarDuration::default()
                        }),
                        keep_within_monthly: None,
                        keep_within_yearly: None,
                        keep_tags: if tag {
                            vec![("k".into(), "1".into())]
                        } else {
                            Vec::new()
                        },
                        keep_min,
                    }
                },
            )
    }

    fn arbitrary_snapshots() -> impl Strategy<Value = Vec<(SnapshotId, Snapshot)>> {
        // Two years around 2024, so every period rule has several buckets to choose from;
        // coarse steps make equal times and equal buckets common.
        let member = (0i64..2 * 365 * 24, 0u8..3, 0u8..3, 0u8..3);
        proptest::collection::vec(member, 0..40).prop_map(|members| {
            members
                .into_iter()
                .enumerate()
                .map(|(n, (hours, host, path, tag))| {
                    let time = Timestamp {
                        sec: 1_700_000_000 + hours * 3600 / 2,
                        nsec: 0,
                    };
                    let host = ["a", "b", "c"][host as usize];
                    let path = ["/x", "/y", "/z"][path as usize];
                    let tags: &[(&str, &str)] = match tag {
                        0 => &[],
                        1 => &[("k", "1")],
                        _ => &[("k", "2")],
                    };
                    (id(n), snapshot(time, host, &[path], tags))
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn keep_min_newest_are_kept_and_removed_ones_have_no_reason(
            snapshots in arbitrary_snapshots(),
            policy in arbitrary_policy(),
            group_by in (proptest::bool::ANY, proptest::bool::ANY, proptest::bool::ANY)
                .prop_map(|(host, paths, tags)| GroupBy { host, paths, tags }),
            now_hours in 0i64..3 * 365 * 24,
        ) {
            let now = Timestamp { sec: 1_700_000_000 + now_hours * 3600 / 2, nsec: 0 };
            let Ok(groups) = apply(&snapshots, &policy, group_by, now) else {
                prop_assert!(!policy.has_rule());
                return Ok(());
            };
            prop_assert!(policy.has_rule());
            let mut seen: Vec<SnapshotId> = Vec::new();
            for group in &groups {
                prop_assert!(!group.decisions.is_empty());
                for (position, decision) in group.decisions.iter().enumerate() {
                    prop_assert_eq!(decision.keep, !decision.reasons.is_empty());
                    if position < policy.keep_min as usize {
                        prop_assert!(decision.keep, "newest {} must be kept", policy.keep_min);
                    }
                    if position < policy.keep_last.unwrap_or(0) as usize {
                        prop_assert!(decision.reasons.iter().any(|r| r == "last"));
                    }
                    let (_, snapshot) = snapshots.iter().find(|(id, _)| *id == decision.id).unwrap();
                    prop_assert_eq!(&GroupKey::of(snapshot, group_by), &group.key);
                    prop_assert_eq!(snapshot.time, decision.time);
                    seen.push(decision.id);
                }
                for pair in group.decisions.windows(2) {
                    prop_assert!((pair[0].time, pair[0].id) > (pair[1].time, pair[1].id));
                }
            }
            seen.sort();
            let mut all: Vec<SnapshotId> = snapshots.iter().map(|(id, _)| *id).collect();
            all.sort();
            prop_assert_eq!(seen, all);
        }

        #[test]
        fn durations_round_trip(years in 0u32..100, months in 0u32..100, days in 0u32..1000, hours in 0u32..1000) {
            let duration = CalendarDuration { years, months, days, hours };
            prop_assume!(!duration.is_zero());
            prop_assert_eq!(parse_duration(&duration.to_string()).unwrap(), duration);
        }
    }
}
