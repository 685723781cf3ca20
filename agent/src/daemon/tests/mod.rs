//! The scheduler's decisions, driven by a clock the test controls.

use super::*;
use crate::policy::Policy;

mod drills;

fn sources(extra: &str) -> Vec<Source> {
    let text = format!(
        "[repository]\nurl = \"/r\"\npassword_file = \"/p\"\n\
         [[source]]\nname = \"hourly\"\nkind = \"paths\"\npaths = [\"/srv\"]\nschedule = \"0 * * * *\"\n{extra}\n\
         [[source]]\nname = \"nightly\"\nkind = \"paths\"\npaths = [\"/srv\"]\nschedule = \"30 2 * * *\"\n"
    );
    Policy::parse(&text, "test").unwrap().sources
}

fn at(text: &str) -> Zoned {
    text.parse::<jiff::civil::DateTime>()
        .unwrap()
        .to_zoned(TimeZone::UTC)
        .unwrap()
}

fn second(text: &str) -> i64 {
    at(text).timestamp().as_second()
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

#[test]
fn first_start_catches_nothing_up_then_runs_each_slot() {
    let sources = sources("");
    let mut state = AgentState::default();
    let idle = HashSet::new();
    assert!(plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-22T05:40")).is_empty());
    assert!(plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-22T05:59:59")).is_empty());
    let ticks = plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-22T06:00"));
    assert_eq!(started(&ticks), ["hourly"]);
    // The same slot never runs twice.
    assert!(plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-22T06:00:30")).is_empty());
    let ticks = plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-23T02:30"));
    assert_eq!(started(&ticks), ["hourly", "nightly"]);
}

#[test]
fn missed_slots_are_caught_up_once() {
    let sources = sources("");
    let mut state = AgentState::default();
    state.source("hourly").last_slot = Some(second("2026-11-22T01:00"));
    state.source("nightly").last_slot = Some(second("2026-11-19T02:30"));
    let idle = HashSet::new();
    // Down since 01:00 (hourly) and for three nights: one run each.
    let ticks = plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-22T05:40"));
    assert_eq!(started(&ticks), ["hourly", "nightly"]);
    assert_eq!(
        state.sources["hourly"].last_slot,
        Some(second("2026-11-22T05:00"))
    );
    assert_eq!(
        state.sources["nightly"].last_slot,
        Some(second("2026-11-22T02:30"))
    );
    assert!(plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-22T05:50")).is_empty());
}

#[test]
fn a_running_source_skips_its_slot() {
    let sources = sources("");
    let mut state = AgentState::default();
    state.source("hourly").last_slot = Some(second("2026-11-22T05:00"));
    state.source("nightly").last_slot = Some(second("2026-11-22T02:30"));
    let busy: HashSet<String> = ["hourly".to_owned()].into();
    let ticks = plan_tick(&sources, &mut state, &busy, "h", &at("2026-11-22T06:00"));
    assert_eq!(ticks, [Tick::Skip("hourly".into())]);
    assert_eq!(state.sources["hourly"].runs["skipped"], 1);
    // The skipped slot is not run later: the next one is.
    let idle = HashSet::new();
    assert!(plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-22T06:10")).is_empty());
    let ticks = plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-22T07:00"));
    assert_eq!(started(&ticks), ["hourly"]);
}

#[test]
fn a_last_slot_left_in_the_future_by_a_clock_jump_does_not_stop_the_schedule() {
    // The clock ran years ahead for a while (a bad RTC at boot), the agent ran its slots
    // then, and NTP set it right: the last slots recorded are in the future.
    let sources = sources("");
    let mut state = AgentState::default();
    state.source("hourly").last_slot = Some(second("2036-01-01T05:00"));
    state.source("nightly").last_slot = Some(second("2036-01-01T02:30"));
    let idle = HashSet::new();
    let _ = plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-22T05:40"));
    let ticks = plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-22T06:00"));
    assert_eq!(started(&ticks), ["hourly"], "backups stopped for years");
    let ticks = plan_tick(&sources, &mut state, &idle, "h", &at("2026-11-23T02:30"));
    assert_eq!(started(&ticks), ["hourly", "nightly"]);
}

#[test]
fn two_agents_never_back_up_the_same_source_at_once() {
    use bunker_repo_format::backend::{Backend, MemoryBackend};
    use bunker_repo_format::keyslot::KdfParams;
    use bunker_repo_format::{InitOptions, Repository};

    // `bunker-agent run --once SOURCE` while the daemon backs the source up: two processes
    // with one state directory. A second run of a source must not start while the first
    // goes on (a btrfs source's second run would delete the first's snapshot under it).
    let temp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(temp.path()).unwrap();
    let busy = base.join("busy");
    let text = format!(
        "[agent]\nstate_dir = \"{0}/state\"\n\
         [repository]\nurl = \"/r\"\npassword_file = \"/p\"\n\
         [[source]]\nname = \"db\"\nkind = \"command\"\ncommand = \"echo dump\"\n\
         schedule = \"0 * * * *\"\n\
         hooks = {{ pre = \"mkdir '{1}' || exit 9; sleep 1; rmdir '{1}'\" }}\n",
        base.display(),
        busy.display()
    );
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let options = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    Repository::init(Arc::clone(&backend), b"pw", options).unwrap();
    let agent = || {
        let backend = Arc::clone(&backend);
        Agent {
            policy: Policy::parse(&text, "test").unwrap(),
            context: JobContext {
                host: "web-1".into(),
                username: "root".into(),
                watchdog: None,
                cache_root: None,
                state_dir: None,
            },
            open_repository: Arc::new(move || {
                Repository::open(Arc::clone(&backend), b"pw").map_err(|e| e.to_string())
            }),
            log: Arc::new(|_: &str| {}),
            metrics_text: new_metrics_text(),
        }
    };
    let (first, second) = (agent(), agent());
    let names = ["db".to_owned()];
    let reports: Vec<JobReport> = thread::scope(|scope| {
        let runs = [&first, &second]
            .map(|agent| scope.spawn(|| agent.run_once(&names, &Cancel::new()).unwrap().jobs));
        runs.into_iter()
            .flat_map(|run| run.join().unwrap())
            .collect()
    });
    assert_eq!(reports.len(), 2);
    for report in &reports {
        assert!(
            report.hooks.iter().all(|h| h.code != Some(9)),
            "the two runs of db overlapped: {report:?}"
        );
    }
    let succeeded = reports.iter().filter(|r| r.succeeded()).count();
    assert_eq!(succeeded, 1, "{reports:#?}");
    let refused = reports.iter().find(|r| !r.succeeded()).unwrap();
    assert!(
        matches!(&refused.outcome, JobOutcome::Failed(e) if e.contains("already")),
        "{refused:?}"
    );
}

#[test]
fn jitter_delays_each_host_by_a_fixed_offset() {
    let sources = sources("jitter = \"30m\"");
    let hourly = &sources[0];
    let offsets: Vec<Duration> = ["web-1", "web-2", "web-3", "db-1"]
        .iter()
        .map(|h| jitter_offset(h, hourly))
        .collect();
    assert!(offsets.iter().all(|o| *o < Duration::from_secs(1800)));
    assert!(offsets.windows(2).any(|w| w[0] != w[1]), "hosts spread out");
    assert_eq!(
        jitter_offset("web-1", hourly),
        offsets[0],
        "stable per host"
    );

    let mut state = AgentState::default();
    state.source("hourly").last_slot = Some(second("2026-11-22T05:00"));
    state.source("nightly").last_slot = Some(second("2026-11-22T02:30"));
    let idle = HashSet::new();
    let offset = i64::try_from(offsets[0].as_secs()).unwrap();
    let slot = second("2026-11-22T06:00");
    let before = jiff::Timestamp::from_second(slot + offset - 1)
        .unwrap()
        .to_zoned(TimeZone::UTC);
    let due = jiff::Timestamp::from_second(slot + offset)
        .unwrap()
        .to_zoned(TimeZone::UTC);
    if offset > 0 {
        assert!(plan_tick(&sources, &mut state, &idle, "web-1", &before).is_empty());
    }
    let ticks = plan_tick(&sources, &mut state, &idle, "web-1", &due);
    assert_eq!(started(&ticks), ["hourly"]);
}

#[test]
fn the_daemon_removes_expired_restores_audits_them_and_counts_them() {
    use crate::lease::{LEASE_VERSION, Lease, new_lease_id};
    use bunker_repo_format::backend::{Backend, MemoryBackend};
    use bunker_repo_format::keyslot::KdfParams;
    use bunker_repo_format::{InitOptions, Repository};

    let temp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(temp.path()).unwrap();
    let text = format!(
        "[agent]\nstate_dir = \"{0}/state\"\nrestore_roots = [\"{0}/restore\"]\n\
         [repository]\nurl = \"/r\"\npassword_file = \"/p\"\n\
         [[source]]\nname = \"hourly\"\nkind = \"paths\"\npaths = [\"/srv\"]\nschedule = \"0 * * * *\"\n",
        base.display()
    );
    let policy = Policy::parse(&text, "test").unwrap();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let options = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    let repository = Repository::init(Arc::clone(&backend), b"pw", options).unwrap();
    let open_backend = Arc::clone(&backend);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
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
    // The metrics read the real clock, so the leases are dated around it.
    let now = jiff::Timestamp::now().as_second();
    let mut leases = Vec::new();
    for (name, hours) in [("expired", -1), ("active", 3)] {
        let target = base.join("restore").join(name);
        std::fs::create_dir_all(target.join("d")).unwrap();
        std::fs::write(target.join("d/f"), name).unwrap();
        let lease = Lease {
            version: LEASE_VERSION,
            id: new_lease_id(&target),
            owner: "alice".into(),
            host: "web-1".into(),
            source: "hourly".into(),
            snapshot: "cd".repeat(32),
            path: "/".into(),
            target,
            kind: "files".into(),
            bytes: 1,
            created: now - 5 * 3600,
            expires: now + hours * 3600,
        };
        agent.lease_dir().create(&lease).unwrap();
        leases.push(lease);
    }
    agent.publish(&AgentState::default(), &[]);
    let metrics = agent.metrics_text.lock().unwrap().clone();
    assert!(metrics.contains("bunker_restores_active 1\n"), "{metrics}");
    assert!(metrics.contains("bunker_restores_expired 1\n"), "{metrics}");

    // Two hours earlier nothing is due; at `now` exactly the expired target goes.
    assert!(agent.expire_leases(now - 2 * 3600).is_empty());
    let done = agent.expire_leases(now);
    assert_eq!(done.len(), 1, "{:?}", lines.lock().unwrap());
    assert!(!leases[0].target.exists());
    assert_eq!(
        std::fs::read(leases[1].target.join("d/f")).unwrap(),
        b"active"
    );
    let (records, _) = repository.load_audit().unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0].1;
    assert_eq!(record.operation, "restore-expire");
    assert_eq!(record.outcome, "removed");
    assert_eq!(record.target, leases[0].target.display().to_string());
    assert!(
        lines.lock().unwrap()[0].contains("removed"),
        "{:?}",
        lines.lock().unwrap()
    );
    agent.publish(&AgentState::default(), &[]);
    let metrics = agent.metrics_text.lock().unwrap().clone();
    assert!(metrics.contains("bunker_restores_expired 0\n"), "{metrics}");
    assert_eq!(agent.lease_dir().counts(now).unwrap(), (1, 0));
    assert_eq!(agent.lease_dir().counts(now + 4 * 3600).unwrap(), (0, 1));
}
