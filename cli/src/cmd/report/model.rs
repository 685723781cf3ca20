//! The recovery report as data: one row per source, the cost per service/env tag, and what
//! is out of policy. Built from snapshots, `verify` audit records and (optionally) the
//! agent policy; the text, JSON and HTML renderings only format it.

use std::collections::BTreeMap;

use bunker_agent::policy::{self, Policy, Quiesce};
use bunker_repo_format::SnapshotId;
use bunker_repo_format::audit::AuditRecord;
use bunker_repo_format::snapshot::{ConsistencyLevel, Snapshot};
use bunker_repo_format::tree::Timestamp;
use serde::Serialize;

use crate::output::rfc3339;

/// The tags whose values the cost section sums `bytes_stored` over.
pub const COST_TAGS: [&str; 2] = ["service", "env"];

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When it was made (RFC 3339).
    pub generated: String,
    /// The repository it describes.
    pub repository: String,
    /// The policy file in effect, if any.
    pub policy: Option<String>,
    /// One row per source.
    pub sources: Vec<SourceRow>,
    /// Sum of `bytes_stored` over every snapshot.
    pub total_bytes_stored: u64,
    /// Bytes first stored by the snapshots carrying each value of each cost tag.
    pub cost: Vec<CostTag>,
    /// Every finding, source by source.
    pub out_of_policy: Vec<Finding>,
    /// `verify` records that name neither a known source nor a snapshot still present.
    pub unattributed_drills: usize,
}

/// One source: a policy source, a `source` tag, or untagged snapshots of one host and paths.
#[derive(Debug, Serialize)]
pub struct SourceRow {
    /// The policy source name / `source` tag, or `host:paths` for untagged snapshots.
    pub name: String,
    /// Whether the policy in effect lists it.
    pub in_policy: bool,
    /// The policy template it uses.
    pub template: Option<String>,
    /// `files`, `volume` or `stream`.
    pub kind: String,
    /// Host of the newest snapshot.
    pub host: Option<String>,
    /// `service` tag of the newest snapshot (else the policy's).
    pub service: Option<String>,
    /// `env` tag of the newest snapshot (else the policy's).
    pub env: Option<String>,
    /// Number of snapshots.
    pub snapshots: usize,
    /// Recovery point objective, from the policy.
    pub rpo_seconds: Option<u64>,
    /// The newest snapshot.
    pub last_backup: Option<Backup>,
    /// `ok`, `late`, `no-backup` or `no-rpo`.
    pub rpo_status: &'static str,
    /// The consistency level the policy implies (`crash`, `application`), if any.
    pub expected_consistency: Option<&'static str>,
    /// How recent a passing drill must be, from the policy.
    pub verify_window_seconds: Option<u64>,
    /// The newest drill that passed.
    pub last_passing_drill: Option<Drill>,
    /// The newest drill, whatever its outcome.
    pub last_drill: Option<Drill>,
    /// `passed`, `failed`, `stale` (passed, but before the window) or `never`.
    pub drill_status: &'static str,
    /// Reason codes of the findings of this source.
    pub out_of_policy: Vec<&'static str>,
    /// Every snapshot, oldest first (the size chart).
    pub history: Vec<Backup>,
    /// Every drill, oldest first (the restore-time chart).
    pub drills: Vec<Drill>,
}

/// One snapshot, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    /// Snapshot id (hex).
    pub snapshot: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Unix seconds of `time`.
    pub unix: i64,
    /// Seconds between `time` and the report.
    pub age_seconds: i64,
    /// `none`, `crash` or `application`.
    pub consistency: &'static str,
    /// Bytes of content.
    pub bytes: u64,
    /// Plaintext bytes new to the repository.
    pub bytes_added: u64,
    /// Bytes of packs this backup wrote.
    pub bytes_stored: u64,
}

/// One restore drill, from a `verify` audit record.
#[derive(Debug, Clone, Serialize)]
pub struct Drill {
    /// When it started (RFC 3339).
    pub time: String,
    /// Unix seconds of `time`.
    pub unix: i64,
    /// The snapshot drilled (hex).
    pub snapshot: Option<String>,
    /// `passed` or `failed`.
    pub outcome: String,
    /// `cli` or `agent`.
    pub drill: Option<String>,
    /// Where it restored to.
    pub target: String,
    /// Time to restore (the RTO), in milliseconds.
    pub restore_ms: Option<u64>,
    /// Time to verify, in milliseconds.
    pub verify_ms: Option<u64>,
    /// The whole drill, in milliseconds.
    pub duration_ms: u64,
    /// The checks that ran after verification (`fsck`, `mount`, `database`, `smoke`).
    pub checks: Vec<String>,
    /// When failed: `restore`, `mismatch`, `fsck`, `mount`, `database` or `smoke`.
    pub failure: Option<String>,
    /// When failed: the first error line.
    pub error: Option<String>,
    /// Whether it started within the source's verify window (`None`: no window).
    pub within_window: Option<bool>,
}

/// The cost of one tag key.
#[derive(Debug, Serialize)]
pub struct CostTag {
    /// `service` or `env`.
    pub tag: &'static str,
    /// One entry per value, largest first; `value` null for snapshots without the tag.
    pub values: Vec<CostEntry>,
}

/// Bytes first stored by the snapshots carrying one tag value.
#[derive(Debug, Serialize)]
pub struct CostEntry {
    /// The tag value (`None`: snapshots without the tag).
    pub value: Option<String>,
    /// Sum of their `bytes_stored`.
    pub bytes_stored: u64,
    /// How many snapshots.
    pub snapshots: usize,
}

/// Why a source is out of policy.
#[derive(Debug, Serialize)]
pub struct Finding {
    /// The source row's name.
    pub source: String,
    /// `no-backup`, `backup-older-than-rpo`, `no-passing-drill-in-window`,
    /// `last-drill-failed`, `consistency-below-expected` or `snapshot-unreadable` (its
    /// source cannot be known).
    pub reason: &'static str,
    /// In words, with the figures.
    pub detail: String,
}

/// What the report is made from.
pub struct Inputs<'a> {
    /// Every snapshot.
    pub snapshots: &'a [(SnapshotId, Snapshot)],
    /// Every audit record (only `verify` ones are used).
    pub audit: &'a [AuditRecord],
    /// The policy in effect, with its file name.
    pub policy: Option<(&'a Policy, String)>,
    /// The repository's location.
    pub repository: String,
    /// The report's "now".
    pub now: Timestamp,
}

/// Which row a snapshot belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey {
    /// `source=NAME`.
    Source(String),
    /// No `source` tag: host and paths.
    HostPaths(String, Vec<String>),
}

impl GroupKey {
    fn of(snapshot: &Snapshot) -> GroupKey {
        match snapshot.tag("source") {
            Some(name) if !name.is_empty() => GroupKey::Source(name.to_owned()),
            _ => GroupKey::HostPaths(
                snapshot.host.clone(),
                snapshot
                    .paths
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect(),
            ),
        }
    }

    fn name(&self) -> String {
        match self {
            GroupKey::Source(name) => name.clone(),
            GroupKey::HostPaths(host, paths) => format!("{host}:{}", paths.join(" ")),
        }
    }
}

/// Builds the report.
pub fn build(inputs: &Inputs<'_>) -> Report {
    let policy = inputs.policy.as_ref().map(|(p, _)| *p);
    // Rows: policy sources in file order, then everything else by name.
    let mut keys: Vec<GroupKey> = policy
        .map(|p| {
            p.sources
                .iter()
                .map(|s| GroupKey::Source(s.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut snapshots_of: BTreeMap<GroupKey, Vec<&(SnapshotId, Snapshot)>> = BTreeMap::new();
    let mut group_of_snapshot = BTreeMap::new();
    for entry in inputs.snapshots {
        let key = GroupKey::of(&entry.1);
        group_of_snapshot.insert(entry.0, key.clone());
        snapshots_of.entry(key).or_default().push(entry);
    }
    let mut drills_of: BTreeMap<GroupKey, Vec<&AuditRecord>> = BTreeMap::new();
    let mut unattributed_drills = 0;
    for record in inputs.audit.iter().filter(|r| r.operation == "verify") {
        let key = match detail(record, "source") {
            Some(name) if !name.is_empty() => Some(GroupKey::Source(name.to_owned())),
            _ => record
                .snapshot
                .and_then(|id| group_of_snapshot.get(&id).cloned()),
        };
        match key {
            Some(key) => drills_of.entry(key).or_default().push(record),
            None => unattributed_drills += 1,
        }
    }
    let mut others: Vec<GroupKey> = snapshots_of
        .keys()
        .chain(drills_of.keys())
        .filter(|k| !keys.contains(k))
        .cloned()
        .collect();
    others.sort();
    others.dedup();
    keys.extend(others);

    let mut sources = Vec::new();
    let mut out_of_policy = Vec::new();
    for key in keys {
        let policy_source = match &key {
            GroupKey::Source(name) => policy.and_then(|p| p.source(name)),
            GroupKey::HostPaths(..) => None,
        };
        let mut snapshots: Vec<&(SnapshotId, Snapshot)> =
            snapshots_of.remove(&key).unwrap_or_default();
        snapshots.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        let mut drills: Vec<&AuditRecord> = drills_of.remove(&key).unwrap_or_default();
        drills.sort_by_key(|r| r.time);
        let (row, findings) = source_row(&key, policy_source, &snapshots, &drills, inputs.now);
        out_of_policy.extend(findings);
        sources.push(row);
    }

    Report {
        generated: rfc3339(inputs.now),
        repository: inputs.repository.clone(),
        policy: inputs.policy.as_ref().map(|(_, file)| file.clone()),
        sources,
        total_bytes_stored: inputs
            .snapshots
            .iter()
            .map(|(_, s)| s.summary.bytes_stored)
            .sum(),
        cost: cost(inputs.snapshots),
        out_of_policy,
        unattributed_drills,
    }
}

fn source_row(
    key: &GroupKey,
    source: Option<&policy::Source>,
    snapshots: &[&(SnapshotId, Snapshot)],
    records: &[&AuditRecord],
    now: Timestamp,
) -> (SourceRow, Vec<Finding>) {
    let name = key.name();
    let newest = snapshots.last().map(|(_, s)| s);
    let history: Vec<Backup> = snapshots.iter().map(|(id, s)| backup(id, s, now)).collect();
    let last_backup = history.last().cloned();
    let rpo = source.and_then(|s| s.rpo);
    let window = source.and_then(|s| s.verify.as_ref()).map(|v| v.window);
    let drills: Vec<Drill> = records
        .iter()
        .map(|r| drill(r, window.map(|w| now.sec - secs(w))))
        .collect();
    let last_passing_drill = drills.iter().rev().find(|d| d.outcome == "passed").cloned();
    let last_drill = drills.last().cloned();
    let expected = source.and_then(expected_consistency);
    let tag = |tag: &str| {
        newest
            .and_then(|s| s.tag(tag))
            .or_else(|| source.and_then(|s| s.tags.get(tag)).map(String::as_str))
            .map(str::to_owned)
    };

    let mut findings = Vec::new();
    let mut find = |reason: &'static str, detail: String| {
        findings.push(Finding {
            source: name.clone(),
            reason,
            detail,
        });
    };
    let rpo_status = match (&last_backup, rpo) {
        (None, _) => {
            if source.is_some() {
                find("no-backup", "no snapshot of this source".into());
            }
            "no-backup"
        }
        (Some(_), None) => "no-rpo",
        (Some(b), Some(rpo)) if b.age_seconds > secs(rpo) => {
            find(
                "backup-older-than-rpo",
                format!(
                    "the newest snapshot is {} old; the RPO is {}",
                    duration(b.age_seconds),
                    duration(secs(rpo))
                ),
            );
            "late"
        }
        (Some(_), Some(_)) => "ok",
    };
    let drill_status = match (&last_drill, &last_passing_drill) {
        (None, _) => "never",
        (Some(last), _) if last.outcome != "passed" => "failed",
        (Some(_), Some(pass)) if pass.within_window == Some(false) => "stale",
        _ => "passed",
    };
    if let Some(window) = window {
        let within = last_passing_drill
            .as_ref()
            .is_some_and(|d| d.within_window == Some(true));
        if !within {
            find(
                "no-passing-drill-in-window",
                match &last_passing_drill {
                    Some(d) => format!(
                        "the last passing drill was {} ago; the verify window is {}",
                        duration(now.sec - d.unix),
                        duration(secs(window))
                    ),
                    None => format!(
                        "no drill has passed; the verify window is {}",
                        duration(secs(window))
                    ),
                },
            );
        }
    }
    if let Some(last) = last_drill.as_ref().filter(|d| d.outcome != "passed") {
        find(
            "last-drill-failed",
            format!(
                "the drill of {} at {} failed{}{}",
                last.snapshot
                    .as_deref()
                    .map_or("an unknown snapshot", |s| s.get(..8).unwrap_or(s)),
                last.time,
                last.failure
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default(),
                last.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
            ),
        );
    }
    if let (Some(expected), Some(newest)) = (expected, newest)
        && rank(newest.consistency) < rank(expected)
    {
        find(
            "consistency-below-expected",
            format!(
                "the newest snapshot's consistency is {}; {} expects {}",
                newest.consistency.name(),
                source
                    .and_then(|s| s.template.as_deref())
                    .map_or_else(|| "the policy".to_owned(), |t| format!("template {t:?}")),
                expected.name()
            ),
        );
    }

    let row = SourceRow {
        in_policy: source.is_some(),
        template: source.and_then(|s| s.template.clone()),
        kind: newest
            .map(|s| s.source_kind.name())
            .or_else(|| source.map(|s| policy_kind(&s.kind)))
            .unwrap_or("files")
            .to_owned(),
        host: newest.map(|s| s.host.clone()),
        service: tag("service"),
        env: tag("env"),
        snapshots: snapshots.len(),
        rpo_seconds: rpo.map(|d| d.as_secs()),
        last_backup,
        rpo_status,
        expected_consistency: expected.map(ConsistencyLevel::name),
        verify_window_seconds: window.map(|d| d.as_secs()),
        last_passing_drill,
        last_drill,
        drill_status,
        out_of_policy: findings.iter().map(|f| f.reason).collect(),
        history,
        drills,
        name,
    };
    (row, findings)
}

fn backup(id: &SnapshotId, s: &Snapshot, now: Timestamp) -> Backup {
    Backup {
        snapshot: id.to_hex(),
        time: rfc3339(s.time),
        unix: s.time.sec,
        age_seconds: now.sec.saturating_sub(s.time.sec),
        consistency: s.consistency.name(),
        bytes: s.summary.bytes,
        bytes_added: s.summary.bytes_added,
        bytes_stored: s.summary.bytes_stored,
    }
}

/// A drill from its record; `window_start` (Unix seconds) decides `within_window`.
fn drill(record: &AuditRecord, window_start: Option<i64>) -> Drill {
    let number = |key: &str| detail(record, key).and_then(|v| v.parse().ok());
    let text = |key: &str| detail(record, key).map(str::to_owned);
    Drill {
        time: rfc3339(record.time),
        unix: record.time.sec,
        snapshot: record.snapshot.map(|s| s.to_hex()),
        outcome: record.outcome.clone(),
        drill: text("drill"),
        target: record.target.clone(),
        restore_ms: number("restore_ms"),
        verify_ms: number("verify_ms"),
        duration_ms: record.duration_ms,
        checks: detail(record, "checks")
            .map(|list| list.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        failure: text("failure"),
        error: text("error"),
        within_window: window_start.map(|start| record.time.sec >= start),
    }
}

fn detail<'a>(record: &'a AuditRecord, key: &str) -> Option<&'a str> {
    record
        .details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The level a policy source's snapshots should reach: application for the database
/// template, command sources and quiesce commands; crash for volumes and filesystem
/// freezes or snapshots; nothing for plain paths.
fn expected_consistency(source: &policy::Source) -> Option<ConsistencyLevel> {
    let template = source.template.as_deref();
    if template == Some("database")
        || matches!(source.kind, policy::SourceKind::Command { .. })
        || matches!(source.quiesce, Quiesce::Commands { .. })
    {
        Some(ConsistencyLevel::Application)
    } else if template == Some("volume")
        || matches!(source.kind, policy::SourceKind::Volume { .. })
        || matches!(
            source.quiesce,
            Quiesce::Fsfreeze(_) | Quiesce::BtrfsSnapshot(_)
        )
    {
        Some(ConsistencyLevel::Crash)
    } else {
        None
    }
}

fn rank(level: ConsistencyLevel) -> u8 {
    match level {
        ConsistencyLevel::None => 0,
        ConsistencyLevel::Crash => 1,
        ConsistencyLevel::Application => 2,
    }
}

fn policy_kind(kind: &policy::SourceKind) -> &'static str {
    match kind {
        policy::SourceKind::Paths { .. } => "files",
        policy::SourceKind::Volume { .. } => "volume",
        policy::SourceKind::Command { .. } => "stream",
    }
}

fn cost(snapshots: &[(SnapshotId, Snapshot)]) -> Vec<CostTag> {
    COST_TAGS
        .iter()
        .map(|&tag| {
            let mut sums: BTreeMap<Option<String>, (u64, usize)> = BTreeMap::new();
            for (_, s) in snapshots {
                let sum = sums.entry(s.tag(tag).map(str::to_owned)).or_default();
                sum.0 = sum.0.saturating_add(s.summary.bytes_stored);
                sum.1 += 1;
            }
            let mut values: Vec<CostEntry> = sums
                .into_iter()
                .map(|(value, (bytes_stored, snapshots))| CostEntry {
                    value,
                    bytes_stored,
                    snapshots,
                })
                .collect();
            values.sort_by_key(|entry| std::cmp::Reverse(entry.bytes_stored));
            CostTag { tag, values }
        })
        .collect()
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `3d 4h`, `2h 5m`, `45m`, `30s`: the two largest units.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// `2026-11-22T08:00:01.5Z` -> `2026-11-22 08:00` (the report's times are UTC).
pub fn utc_minute(rfc3339: &str) -> String {
    rfc3339
        .get(..16)
        .map_or_else(|| rfc3339.to_owned(), |t| t.replace('T', " "))
}

/// Milliseconds as `850 ms`, `12.3 s`, `4m 10s`.
pub fn millis(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m {}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunker_repo_format::snapshot::Summary;

    const DAY: i64 = 86_400;

    fn snapshot(source: Option<&str>, sec: i64, stored: u64) -> Snapshot {
        Snapshot {
            time: Timestamp { sec, nsec: 0 },
            tags: source
                .map(|s| vec![("source".to_owned(), s.to_owned())])
                .unwrap_or_default(),
            summary: Summary {
                bytes_stored: stored,
                ..Summary::default()
            },
            ..crate::test_support::snapshot()
        }
    }

    fn drill_record(sec: i64, snapshot: SnapshotId, source: &str, outcome: &str) -> AuditRecord {
        AuditRecord {
            time: Timestamp { sec, nsec: 0 },
            host: "h".into(),
            user: "u".into(),
            operation: "verify".into(),
            target: "/tmp/t".into(),
            outcome: outcome.into(),
            duration_ms: 10,
            snapshot: Some(snapshot),
            details: vec![
                ("source".into(), source.into()),
                ("restore_ms".into(), "7".into()),
            ],
        }
    }

    #[test]
    fn an_old_pass_is_stale_and_drills_find_untagged_rows_by_snapshot() {
        let policy = Policy::parse(
            "[repository]\nurl = \"/r\"\npassword_file = \"/p\"\n\
             [[source]]\nname = \"app\"\nkind = \"paths\"\npaths = [\"/data\"]\n\
             schedule = \"@daily\"\nverify = { schedule = \"@daily\", window = \"2d\" }\n",
            "test.toml",
        )
        .unwrap();
        let now = 100 * DAY;
        let (app, loose) = (
            SnapshotId::from_bytes([1; 32]),
            SnapshotId::from_bytes([2; 32]),
        );
        let snapshots = vec![
            (app, snapshot(Some("app"), now - DAY, 10)),
            (loose, snapshot(None, now - DAY, 5)),
        ];
        let audit = vec![
            drill_record(now - 5 * DAY, app, "app", "passed"),
            drill_record(now - DAY, loose, "", "passed"),
            drill_record(now - DAY, SnapshotId::from_bytes([3; 32]), "", "failed"),
            AuditRecord {
                operation: "restore".into(),
                ..drill_record(now, app, "app", "failed")
            },
        ];
        let report = build(&Inputs {
            snapshots: &snapshots,
            audit: &audit,
            policy: Some((&policy, "test.toml".into())),
            repository: "/r".into(),
            now: Timestamp { sec: now, nsec: 0 },
        });
        let app_row = &report.sources[0];
        assert_eq!(app_row.drill_status, "stale");
        assert_eq!(app_row.rpo_status, "no-rpo");
        assert_eq!(app_row.out_of_policy, ["no-passing-drill-in-window"]);
        assert_eq!(app_row.drills.len(), 1, "the restore record is no drill");
        let loose_row = &report.sources[1];
        assert_eq!(loose_row.name, "h:/data");
        assert!(!loose_row.in_policy);
        assert_eq!(loose_row.drill_status, "passed");
        assert_eq!(
            loose_row.last_passing_drill.as_ref().unwrap().restore_ms,
            Some(7)
        );
        assert_eq!(report.unattributed_drills, 1);
        assert_eq!(report.total_bytes_stored, 15);
        assert_eq!(report.cost[0].values[0].value, None);
        assert_eq!(report.cost[0].values[0].bytes_stored, 15);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(-5), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3_600), "1h");
        assert_eq!(duration(3 * 3_600 + 300), "3h 5m");
        assert_eq!(duration(2 * DAY + 3_600 + 60), "2d 1h");
        assert_eq!(millis(850), "850 ms");
        assert_eq!(millis(12_345), "12.3 s");
        assert_eq!(millis(250_000), "4m 10s");
    }
}
