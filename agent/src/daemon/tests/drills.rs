//! Drill scheduling, waiting, coverage, seeding and state, driven by the test's clock.

use std::collections::BTreeMap;

use bunker_repo_format::audit::AuditRecord;
use bunker_repo_format::tree::Timestamp;

use super::super::drills::{DrillOutcome, Waiting, coverage, plan_drills, seed_last_pass};
use super::super::state::DrillState;
use super::*;

/// `hourly` backs up every hour and is drilled daily at 03:00 (window two days); `nightly`
/// has no drills.
fn drilled_sources() -> Vec<Source> {
    super::sources("verify = { schedule = \"0 3 * * *\", window = \"2d\" }")
}

fn started(ticks: &[Tick]) -> Vec<&str> {
    ticks
        .iter()
        .filter_map(|t| match t {
            Tick::Start(n) => Some(n.as_str()),
            Tick::Skip(_) => None,
        })
        .collect()
}

fn set(names: &[&str]) -> HashSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn drills_follow_their_own_schedule_and_first_start_catches_nothing_up() {
    let sources = drilled_sources();
    let mut state = AgentState::default();
    let idle = HashSet::new();
    let at = super::at;
    assert!(plan_drills(&sources, &mut state, &idle, "h", &at("2026-11-22T02:40")).is_empty());
    assert!(plan_drills(&sources, &mut state, &idle, "h", &at("2026-11-22T02:59:59")).is_empty());
    let ticks = plan_drills(&sources, &mut state, &idle, "h", &at("2026-11-22T03:00"));
    assert_eq!(
        started(&ticks),
        ["hourly"],
        "only sources with verify settings"
    );
    assert_eq!(
        state.sources["hourly"].drill.last_slot,
        Some(super::second("2026-11-22T03:00"))
    );
    // The drill slot is separate from the backup slot, and never runs twice.
    assert_eq!(state.sources["hourly"].last_slot, None);
    assert!(plan_drills(&sources, &mut state, &idle, "h", &at("2026-11-22T03:00:30")).is_empty());
    assert!(plan_drills(&sources, &mut state, &idle, "h", &at("2026-11-23T02:59")).is_empty());
    let ticks = plan_drills(&sources, &mut state, &idle, "h", &at("2026-11-23T03:00"));
    assert_eq!(started(&ticks), ["hourly"]);
    assert!(
        !state.sources.contains_key("nightly")
            || state.sources["nightly"].drill == DrillState::default()
    );
}

#[test]
fn missed_drill_slots_are_caught_up_once() {
    let sources = drilled_sources();
    let mut state = AgentState::default();
    state.source("hourly").drill.last_slot = Some(super::second("2026-11-18T03:00"));
    let idle = HashSet::new();
    // Down for four nights: one drill.
    let ticks = plan_drills(
        &sources,
        &mut state,
        &idle,
        "h",
        &super::at("2026-11-22T05:40"),
    );
    assert_eq!(started(&ticks), ["hourly"]);
    assert_eq!(
        state.sources["hourly"].drill.last_slot,
        Some(super::second("2026-11-22T03:00"))
    );
    assert!(
        plan_drills(
            &sources,
            &mut state,
            &idle,
            "h",
            &super::at("2026-11-22T06:00")
        )
        .is_empty()
    );
}

#[test]
fn a_drill_still_running_skips_its_slot() {
    let sources = drilled_sources();
    let mut state = AgentState::default();
    state.source("hourly").drill.last_slot = Some(super::second("2026-11-21T03:00"));
    let ticks = plan_drills(
        &sources,
        &mut state,
        &set(&["hourly"]),
        "h",
        &super::at("2026-11-22T03:00"),
    );
    assert_eq!(ticks, [Tick::Skip("hourly".into())]);
    assert_eq!(state.sources["hourly"].drill.runs["skipped"], 1);
}

#[test]
fn jitter_delays_a_drill_by_the_sources_offset() {
    let sources = super::sources("jitter = \"30m\"\nverify = { schedule = \"0 3 * * *\" }");
    let offset = i64::try_from(jitter_offset("web-1", &sources[0]).as_secs()).unwrap();
    let mut state = AgentState::default();
    state.source("hourly").drill.last_slot = Some(super::second("2026-11-21T03:00"));
    let slot = super::second("2026-11-22T03:00");
    let zoned = |s: i64| {
        jiff::Timestamp::from_second(s)
            .unwrap()
            .to_zoned(TimeZone::UTC)
    };
    let idle = HashSet::new();
    if offset > 0 {
        assert!(
            plan_drills(
                &sources,
                &mut state,
                &idle,
                "web-1",
                &zoned(slot + offset - 1)
            )
            .is_empty()
        );
    }
    let ticks = plan_drills(&sources, &mut state, &idle, "web-1", &zoned(slot + offset));
    assert_eq!(started(&ticks), ["hourly"]);
}

#[test]
fn a_drill_waits_for_the_running_backup_of_its_source_and_a_backup_for_the_drill() {
    let mut waiting = Waiting::default();
    // A drill due while its source backs up waits; another source's drill does not.
    waiting.drill("hourly");
    waiting.drill("nightly");
    let (backups, drills) = waiting.ready(&set(&["hourly"]), &set(&[]));
    assert!(backups.is_empty());
    assert_eq!(drills, ["nightly"]);
    let (_, drills) = waiting.ready(&set(&["hourly"]), &set(&["nightly"]));
    assert!(drills.is_empty(), "still backing up");
    // The backup finished: the drill starts (and drills the snapshot just made).
    let (_, drills) = waiting.ready(&set(&[]), &set(&["nightly"]));
    assert_eq!(drills, ["hourly"]);
    assert_eq!(waiting.ready(&set(&[]), &set(&[])), (vec![], vec![]));

    // Both due at once: the backup goes first, the drill waits for it.
    waiting.backup("hourly");
    waiting.drill("hourly");
    let (backups, drills) = waiting.ready(&set(&[]), &set(&[]));
    assert_eq!(backups, ["hourly"]);
    assert!(drills.is_empty());
    let (_, drills) = waiting.ready(&set(&["hourly"]), &set(&[]));
    assert!(drills.is_empty());
    let (_, drills) = waiting.ready(&set(&[]), &set(&[]));
    assert_eq!(drills, ["hourly"]);

    // A backup slot during a drill of the source waits for the drill.
    waiting.backup("hourly");
    let (backups, _) = waiting.ready(&set(&[]), &set(&["hourly"]));
    assert!(backups.is_empty());
    let (backups, _) = waiting.ready(&set(&[]), &set(&[]));
    assert_eq!(backups, ["hourly"]);
}

fn passing_drill(source: &str, finished: i64) -> AgentState {
    let mut state = AgentState::default();
    state.source(source).drill.last_pass = Some(finished);
    state
}

#[test]
fn coverage_counts_a_pass_within_the_window_only() {
    let sources = drilled_sources();
    let now = super::second("2026-11-22T12:00");
    let two_days = 2 * 86_400;
    assert_eq!(
        coverage(&sources, &AgentState::default(), now),
        [("hourly".to_owned(), false)],
        "never drilled; a source without verify settings is not counted"
    );
    let inside = passing_drill("hourly", now - two_days);
    assert_eq!(
        coverage(&sources, &inside, now),
        [("hourly".to_owned(), true)]
    );
    let outside = passing_drill("hourly", now - two_days - 1);
    assert_eq!(
        coverage(&sources, &outside, now),
        [("hourly".to_owned(), false)]
    );
    // A failed drill after the pass uncovers the source until the next pass.
    let mut failed = passing_drill("hourly", now - 60);
    failed.source("hourly").drill.last_outcome = Some("failed".into());
    assert_eq!(
        coverage(&sources, &failed, now),
        [("hourly".to_owned(), false)]
    );
    failed.source("hourly").drill.last_outcome = Some("cancelled".into());
    assert_eq!(
        coverage(&sources, &failed, now),
        [("hourly".to_owned(), true)]
    );

    // The metrics: per source, and the fleet ratio.
    let both = [("a".to_owned(), true), ("b".to_owned(), false)];
    let text = metrics::render_drills(&inside, &both);
    assert!(
        text.contains("bunker_drill_covered{source=\"a\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("bunker_drill_covered{source=\"b\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("bunker_drill_coverage_ratio 0.500\n"),
        "{text}"
    );
    assert!(
        text.contains("bunker_drill_last_pass_timestamp_seconds{source=\"hourly\"} "),
        "{text}"
    );
    assert!(!metrics::render_drills(&inside, &[]).contains("bunker_drill_coverage_ratio "));
}

fn verify_record(source: &str, sec: i64, outcome: &str) -> AuditRecord {
    AuditRecord {
        time: Timestamp { sec, nsec: 0 },
        host: "web-1".into(),
        user: "root".into(),
        operation: "verify".into(),
        target: "/tmp/x".into(),
        outcome: outcome.into(),
        duration_ms: 4_500,
        snapshot: None,
        details: vec![("source".into(), source.into())],
    }
}

#[test]
fn a_lost_state_takes_its_last_passing_drill_from_the_audit_records() {
    let sources = drilled_sources();
    let records = vec![
        verify_record("hourly", 1_000, "passed"),
        verify_record("hourly", 3_000, "passed"),
        verify_record("hourly", 5_000, "failed"),
        verify_record("nightly", 9_000, "passed"),
        verify_record("other", 9_000, "passed"),
    ];
    let mut state = AgentState::default();
    assert_eq!(seed_last_pass(&mut state, &sources, &records), ["hourly"]);
    // The newest passing drill of that source, when it finished.
    assert_eq!(state.sources["hourly"].drill.last_pass, Some(3_004));
    assert!(!state.sources.contains_key("nightly"), "no verify settings");
    // A state that has one keeps it.
    let mut kept = passing_drill("hourly", 2_000);
    assert!(seed_last_pass(&mut kept, &sources, &records).is_empty());
    assert_eq!(kept.sources["hourly"].drill.last_pass, Some(2_000));
}

#[test]
fn old_state_files_without_drills_load_and_drills_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let old = r#"{"sources":{"hourly":{"last_slot":100,"last_outcome":"succeeded","last_success":90,
        "last_duration":1.5,"consecutive_failures":0,"runs":{"succeeded":3}}}}"#;
    std::fs::write(dir.path().join(state::STATE_FILE), old).unwrap();
    let mut state = AgentState::load(dir.path());
    let hourly = &state.sources["hourly"];
    assert_eq!(hourly.last_slot, Some(100));
    assert_eq!(hourly.runs["succeeded"], 3);
    assert_eq!(hourly.drill, DrillState::default());

    state.source("hourly").drill = DrillState {
        last_slot: Some(200),
        last_pass: Some(190),
        failures: 2,
        runs: BTreeMap::from([("passed".to_owned(), 1)]),
        ..DrillState::default()
    };
    state.save(dir.path()).unwrap();
    assert_eq!(AgentState::load(dir.path()), state);

    // A damaged state file is set aside with a warning, not silently overwritten.
    std::fs::write(dir.path().join(state::STATE_FILE), b"{\"sources\": [").unwrap();
    let (loaded, warning) = AgentState::load_checked(dir.path());
    assert_eq!(loaded, AgentState::default());
    assert!(warning.is_some_and(|w| w.contains("unreadable")));
    let aside = dir.path().join(format!("{}.unreadable", state::STATE_FILE));
    assert_eq!(std::fs::read(aside).unwrap(), b"{\"sources\": [");
    assert!(!dir.path().join(state::STATE_FILE).exists());
    assert_eq!(
        AgentState::load_checked(dir.path()),
        (AgentState::default(), None)
    );
}

#[test]
fn a_drill_of_a_source_without_snapshots_fails_with_the_reason_and_is_recorded() {
    use bunker_repo_format::backend::{Backend, MemoryBackend};
    use bunker_repo_format::keyslot::KdfParams;
    use bunker_repo_format::{InitOptions, Repository};

    let temp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(temp.path()).unwrap();
    let text = format!(
        "[agent]\nstate_dir = \"{0}/state\"\n\
         [repository]\nurl = \"/r\"\npassword_file = \"/p\"\n\
         [[source]]\nname = \"hourly\"\nkind = \"paths\"\npaths = [\"/srv\"]\nschedule = \"0 * * * *\"\n\
         verify = {{ schedule = \"0 3 * * *\" }}\n",
        base.display()
    );
    let policy = Policy::parse(&text, "test").unwrap();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let options = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    let repository = Repository::init(Arc::clone(&backend), b"pw", options).unwrap();
    // A damaged snapshot: whose it is cannot be told, so it is named and left out.
    let damaged = "ab".repeat(32);
    backend
        .put_if_absent(&format!("snapshots/{damaged}"), b"not a snapshot")
        .unwrap();
    let open_backend = Arc::clone(&backend);
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let logged = Arc::clone(&lines);
    let agent = Agent {
        policy,
        context: JobContext {
            host: "web-1".into(),
            username: "root".into(),
            watchdog: None,
            cache_root: None,
            state_dir: None,
        },
        open_repository: Arc::new(move || {
            Repository::open(Arc::clone(&open_backend), b"pw").map_err(|e| e.to_string())
        }),
        log: Arc::new(move |line: &str| logged.lock().unwrap().push(line.to_owned())),
        metrics_text: new_metrics_text(),
    };
    let runs = agent.drill_now(&[], &Cancel::new()).unwrap();
    assert_eq!(runs.len(), 1);
    assert!(
        matches!(&runs[0].outcome, DrillOutcome::Failed(e) if e == "no snapshot of source hourly from host web-1"),
        "{:?}",
        runs[0].outcome
    );
    let warned = format!(
        "hourly: warning: snapshot {} cannot be read and is left out of the drill",
        &damaged[..8]
    );
    assert!(
        lines.lock().unwrap().iter().any(|l| l.starts_with(&warned)),
        "{:?}",
        lines.lock().unwrap()
    );
    assert!(matches!(
        agent.drill_now(&["nope".into()], &Cancel::new()),
        Err(AgentError::UnknownSource(name)) if name == "nope"
    ));

    let (records, _) = repository.load_audit().unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0].1;
    assert_eq!(
        (record.operation.as_str(), record.outcome.as_str()),
        ("verify", "failed")
    );
    let detail = |key: &str| {
        record
            .details
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(detail("source"), Some("hourly"));
    assert_eq!(detail("drill"), Some("agent"));
    assert_eq!(detail("failure"), Some("restore"));
    assert_eq!(
        detail("error"),
        Some("no snapshot of source hourly from host web-1")
    );

    let state = AgentState::load(&base.join("state"));
    let drill = &state.sources["hourly"].drill;
    assert_eq!(drill.last_outcome.as_deref(), Some("failed"));
    assert_eq!(drill.failures, 1);
    assert_eq!(drill.last_pass, None);
    let journal = std::fs::read_to_string(base.join("state").join(state::JOURNAL_FILE)).unwrap();
    let line: serde_json::Value = serde_json::from_str(journal.trim()).unwrap();
    assert_eq!(line["kind"], "drill");
    assert_eq!(
        line["error"],
        "no snapshot of source hourly from host web-1"
    );
    let metrics = agent.metrics_text.lock().unwrap().clone();
    assert!(
        metrics.contains("bunker_drill_last_success{source=\"hourly\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bunker_drill_failures_total{source=\"hourly\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bunker_drill_coverage_ratio 0.000\n"),
        "{metrics}"
    );
}

/// Every metric name a rule's expression uses, in the agent's exported set.
#[test]
fn the_alert_rules_parse_and_name_only_metrics_the_agent_exports() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/prometheus-alerts.yml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let mut exported = String::new();
    exported.push_str(&metrics::render(
        &AgentState::default(),
        &[],
        &BTreeMap::new(),
        0,
    ));
    exported.push_str(&metrics::render_drills(
        &AgentState::default(),
        &[("s".into(), true)],
    ));
    exported.push_str(&metrics::render_leases(0, 0));
    let exported: HashSet<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(
        metric_names("bunker_a{l=\"bunker_not\"} > on(source) bunker_b"),
        ["bunker_a", "bunker_b"]
    );
    let mut alerts = Vec::new();
    for group in docs[0]["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let expr = rule["expr"].as_str().unwrap();
            assert!(rule["labels"]["severity"].as_str().is_some(), "{name}");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{name}");
            let used = metric_names(expr);
            assert!(!used.is_empty(), "{name}: {expr}");
            for metric in used {
                assert!(
                    exported.contains(metric.as_str()),
                    "{name} uses {metric}, not exported"
                );
            }
            alerts.push(name.to_owned());
        }
    }
    assert!(
        alerts.contains(&"BunkerDrillFailed".to_owned()),
        "{alerts:?}"
    );
    assert!(
        alerts.contains(&"BunkerDrillCoverageBelowOne".to_owned()),
        "{alerts:?}"
    );
}

/// The `bunker_...` identifiers in a PromQL expression, outside label matchers' strings.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut quoted = false;
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
        } else {
            if word.starts_with("bunker_") {
                names.push(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    names
}
