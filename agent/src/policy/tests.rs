use super::*;
use bunker_repo_format::retention::CalendarDuration;

const EXAMPLE: &str = r#"
[repository]
url = "/var/lib/bunker/repo"
password_file = "/etc/bunker/password"

[metrics]
listen = "127.0.0.1:9817"
textfile = "/var/lib/node_exporter/bunker.prom"

[[source]]
name = "app-data"
kind = "paths"
paths = ["/srv/app"]
schedule = "0 * * * *"
tags = { service = "app", env = "prod" }

[[source]]
name = "app-volume"
kind = "volume"
device = "/dev/vdb"
quiesce = { fsfreeze = "/srv/app" }
schedule = "@daily"

[[source]]
name = "orders-db"
kind = "command"
command = "pg_dump -Fc orders"
template = "database"
"#;

#[test]
fn the_documented_example_parses() {
    let policy = Policy::parse(EXAMPLE, "agent.toml").unwrap();
    assert_eq!(policy.repository.url, "/var/lib/bunker/repo");
    assert_eq!(
        policy.repository.credentials,
        Credentials::PasswordFile("/etc/bunker/password".into())
    );
    assert_eq!(
        policy.metrics.listen,
        Some("127.0.0.1:9817".parse().unwrap())
    );
    assert_eq!(policy.sources.len(), 3);

    let app = policy.source("app-data").unwrap();
    assert_eq!(
        app.kind,
        SourceKind::Paths {
            paths: vec!["/srv/app".into()],
            excludes: vec![],
            one_file_system: false,
            exclude_if_present: vec![],
            exclude_larger_than: None,
            fixed_chunks: None,
            images_by_content: false,
            change_detection: ChangeDetection::default(),
        }
    );
    assert_eq!(app.tags.get("service").map(String::as_str), Some("app"));
    assert_eq!(app.tags.get("source").map(String::as_str), Some("app-data"));
    assert_eq!(app.schedule.expression(), "0 * * * *");
    assert!(app.retention.is_none());

    let volume = policy.source("app-volume").unwrap();
    assert_eq!(volume.quiesce, Quiesce::Fsfreeze("/srv/app".into()));

    // The database template fills schedule, retention and drills; the source keeps its kind.
    let db = policy.source("orders-db").unwrap();
    assert_eq!(db.schedule.expression(), "0 * * * *");
    assert_eq!(db.timeout, Duration::from_secs(2 * 3600));
    let retention = db.retention.as_ref().unwrap();
    assert_eq!(retention.keep_hourly, Some(24));
    assert_eq!(retention.keep_daily, Some(14));
    assert!(db.verify.is_some());
    assert!(
        matches!(&db.kind, SourceKind::Command { command, .. } if command == "pg_dump -Fc orders")
    );
}

#[test]
fn a_source_overrides_its_template() {
    let text = r#"
[repository]
url = "/r"
key_file = "/etc/bunker/put-only.key"
[[source]]
name = "home"
template = "dev-env"
paths = ["/home/dev"]
schedule = "0 */2 * * *"
retention = { keep_last = 3 }
"#;
    let policy = Policy::parse(text, "p.toml").unwrap();
    let home = policy.source("home").unwrap();
    assert_eq!(home.schedule.expression(), "0 */2 * * *");
    let r = home.retention.as_ref().unwrap();
    assert_eq!((r.keep_last, r.keep_daily), (Some(3), None));
    let SourceKind::Paths { excludes, .. } = &home.kind else {
        panic!("dev-env is a paths template")
    };
    assert!(excludes.contains(&"node_modules".to_owned()));
    assert_eq!(home.tags.get("env").map(String::as_str), Some("dev"));
    // `policy show` prints what will run: template values included.
    let shown = policy.effective_toml();
    assert!(shown.contains("node_modules"), "{shown}");
    assert!(shown.contains("0 */2 * * *"), "{shown}");
    assert!(
        Policy::parse(shown, "shown").is_ok(),
        "the shown policy parses again"
    );
}

#[test]
fn retention_takes_the_rules_bounded_by_time() {
    let text = r#"
[repository]
url = "/r"
password_file = "/p"
[[source]]
name = "app"
kind = "paths"
paths = ["/srv/app"]
schedule = "@hourly"
retention = { keep_within_hourly = "2d", keep_within_daily = "14d", keep_within_weekly = "2m", keep_within_monthly = "1y", keep_within_yearly = "5y" }
"#;
    let policy = Policy::parse(text, "p.toml").unwrap();
    let r = policy.source("app").unwrap().retention.as_ref().unwrap();
    let shown = |d: Option<CalendarDuration>| d.map(|d| d.to_string());
    assert_eq!(shown(r.keep_within_hourly).as_deref(), Some("2d"));
    assert_eq!(shown(r.keep_within_daily).as_deref(), Some("14d"));
    assert_eq!(shown(r.keep_within_weekly).as_deref(), Some("2m"));
    assert_eq!(shown(r.keep_within_monthly).as_deref(), Some("1y"));
    assert_eq!(shown(r.keep_within_yearly).as_deref(), Some("5y"));
    let found = errors(&text.replace("\"14d\"", "\"2w\""));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "source[1].retention.keep_within_daily");
    assert!(found[0].message.contains("unknown unit"), "{found:#?}");
}

fn errors(text: &str) -> Vec<PolicyError> {
    Policy::parse(text, "p.toml").unwrap_err().errors
}

#[test]
fn errors_name_line_and_key() {
    let text = r#"[repository]
url = "/r"
password_file = "/p"

[[source]]
name = "a"
kind = "paths"
paths = ["relative/dir"]
schedule = "61 * * * *"

[[source]]
name = "a"
kind = "command"
command = "true"
device = "/dev/sda"
schedule = "@hourly"
retention = { keep_min = 2 }
forget = true
"#;
    let found = errors(text);
    let summary: Vec<(usize, &str)> = found.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (8, "source[1].paths"),
            (9, "source[1].schedule"),
            (12, "source[2].name"),
            (15, "source[2].device"),
            (17, "source[2].retention"),
            (18, "source[2].forget"),
        ],
        "{found:#?}"
    );
    assert!(found[1].message.contains("outside 0..=59"));
    assert!(
        found[3]
            .message
            .contains("does not apply to a command source")
    );
    let shown = Policy::parse(text, "p.toml").unwrap_err().to_string();
    assert!(
        shown.starts_with("p.toml: line 8, column 9: source[1].paths: "),
        "{shown}"
    );
}

#[test]
fn syntax_and_unknown_keys_are_reported_with_their_line() {
    let found = errors("[repository]\nurl = \"/r\"\npasword_file = \"/p\"\n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 3);
    assert!(found[0].message.contains("unknown field"), "{:?}", found[0]);

    // Every unknown key and wrongly typed value at once, each with its line and key.
    let found = errors(
        "[repository]\npasword_file = \"/p\"\n[[source]]\nname = 3\nkind = \"paths\"\n\
         schedul = \"0 * * * *\"\n[[source]]\nname = \"b\"\npaths = \"/srv\"\n",
    );
    let found: Vec<(usize, &str)> = found.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (2, "repository.pasword_file"),
            (4, "source[1].name"),
            (6, "source[1].schedul"),
            (9, "source[2].paths")
        ]
    );
}

#[test]
fn missing_pieces_are_reported() {
    let found = errors("[[source]]\nname = \"x\"\n");
    let keys: Vec<&str> = found.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"repository"), "{keys:?}");
    assert!(keys.contains(&"source[1].kind"), "{keys:?}");

    let found = errors("[repository]\nurl = \"/r\"\n");
    assert!(found[0].message.contains("exactly one of"), "{found:?}");

    let found = errors(
        "[repository]\nurl=\"/r\"\npassword_file=\"/p\"\n[[source]]\nname=\"v\"\ntemplate=\"volume\"\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "source[1].device");
    assert_eq!(found[0].line, 4, "points at the source");

    let found = errors(
        "[repository]\nurl=\"/r\"\npassword_file=\"/p\"\n[[source]]\nname=\"v\"\ntemplate=\"nope\"\n",
    );
    let unknown = found
        .iter()
        .find(|e| e.key == "source[1].template")
        .unwrap();
    assert!(unknown.message.contains("unknown template"), "{found:?}");
    assert_eq!(unknown.line, 6);
}

#[test]
fn durations() {
    assert_eq!(parse_policy_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(
        parse_policy_duration("1h30m"),
        Ok(Duration::from_secs(5400))
    );
    assert_eq!(
        parse_policy_duration("7d"),
        Ok(Duration::from_secs(7 * 86_400))
    );
    assert!(parse_policy_duration("10").is_err());
    assert!(parse_policy_duration("h").is_err());
    assert!(parse_policy_duration("5x").is_err());
    assert!(parse_policy_duration("99999999999999999999d").is_err());
}

#[test]
fn the_shipped_sample_policies_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/policies");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let policy = Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!policy.sources.is_empty());
            seen += 1;
        }
    }
    assert_eq!(seen, TEMPLATE_NAMES.len(), "one sample per template");
}

#[test]
fn a_btrfs_snapshot_must_cover_every_path_of_its_source() {
    let policy = |paths: &str| {
        format!(
            "[repository]\nurl = \"/r\"\npassword_file = \"/p\"\n\n[[source]]\nname = \"home\"\n\
             kind = \"paths\"\npaths = {paths}\nschedule = \"@daily\"\n\
             quiesce = {{ btrfs_snapshot = \"/srv\" }}\n"
        )
    };
    let ok = Policy::parse(&policy(r#"["/srv/app", "/srv"]"#), "p.toml").unwrap();
    assert_eq!(ok.sources[0].quiesce, Quiesce::BtrfsSnapshot("/srv".into()));
    let found = errors(&policy(r#"["/srv/app", "/srvx/data"]"#));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].line, found[0].key.as_str()),
        (10, "source[1].quiesce.btrfs_snapshot")
    );
    assert!(
        found[0].message.contains("/srvx/data is not inside"),
        "{found:?}"
    );
}

#[test]
fn drill_keys_of_volume_and_database_sources() {
    let text = r#"[repository]
url = "/r"
password_file = "/p"

[[source]]
name = "disk"
template = "volume"
device = "/dev/vdb"
verify = { schedule = "@weekly", fsck = false, mount = true, smoke = "test -d $BUNKER_RESTORE_DIR/etc" }

[[source]]
name = "orders"
kind = "command"
command = "pg_dump -Fc orders"
database = "postgresql"
schedule = "@hourly"
verify = { schedule = "@daily", smoke_sql = ["SELECT count(*) > 0 FROM orders"], database_name = "orders_drill", pg_bin = "/usr/lib/postgresql/16/bin" }

[[source]]
name = "plain"
template = "volume"
device = "/dev/vdc"
"#;
    let policy = Policy::parse(text, "p.toml").unwrap();
    let disk = policy.source("disk").unwrap().verify.as_ref().unwrap();
    assert!(!disk.fsck);
    assert!(disk.mount);
    let plain = policy.source("plain").unwrap().verify.as_ref().unwrap();
    assert!(plain.fsck, "fsck is on by default");
    assert!(!plain.mount, "mount is off by default");
    let orders = policy.source("orders").unwrap();
    assert_eq!(orders.database, Some(Database::Postgresql));
    let verify = orders.verify.as_ref().unwrap();
    assert_eq!(verify.smoke_sql, ["SELECT count(*) > 0 FROM orders"]);
    assert_eq!(verify.database_name.as_deref(), Some("orders_drill"));
    assert_eq!(
        verify.pg_bin.as_deref(),
        Some(Path::new("/usr/lib/postgresql/16/bin"))
    );
    // The drill each source asks for.
    let spec = crate::drill::DrillSpec::for_source(policy.source("disk").unwrap());
    assert!(spec.mount && !spec.fsck && spec.database.is_none());
    let spec = crate::drill::DrillSpec::for_source(orders);
    let database = spec.database.unwrap();
    assert_eq!(
        (database.dump.as_str(), database.name.as_str()),
        ("orders", "orders_drill")
    );
    assert!(!spec.fsck && !spec.mount);
    assert!(
        Policy::parse(policy.effective_toml(), "shown").is_ok(),
        "the shown policy parses again"
    );
}

#[test]
fn drill_keys_that_do_not_fit_the_kind_are_errors_with_their_line() {
    let text = r#"[repository]
url = "/r"
password_file = "/p"

[[source]]
name = "files"
kind = "paths"
paths = ["/srv"]
schedule = "@daily"
database = "postgresql"
verify = { schedule = "@weekly", mount = true, smoke_sql = ["SELECT 1"] }

[[source]]
name = "dump"
kind = "command"
command = "mysqldump app"
schedule = "@daily"
verify = { schedule = "@weekly", fsck = true, pg_bin = "/opt/pg" }

[[source]]
name = "db"
kind = "command"
command = "pg_dump -Fc"
database = "oracle"
schedule = "@daily"

[[source]]
name = "pg"
kind = "command"
command = "pg_dump -Fc"
database = "postgresql"
schedule = "@daily"
verify = { schedule = "@weekly", smoke_sql = [" "], database_name = "a=b", pg_bin = "bin" }
"#;
    let found = errors(text);
    let summary: Vec<(usize, &str)> = found.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            (10, "source[1].database"),
            (11, "source[1].verify.mount"),
            (11, "source[1].verify.smoke_sql"),
            (18, "source[2].verify.fsck"),
            (18, "source[2].verify.pg_bin"),
            (24, "source[3].database"),
            (33, "source[4].verify.smoke_sql"),
            (33, "source[4].verify.database_name"),
            (33, "source[4].verify.pg_bin"),
        ],
        "{found:#?}"
    );
    assert!(
        found[0]
            .message
            .contains("command sources only, not to a paths source")
    );
    assert!(found[1].message.contains("volume sources only"));
    assert!(found[2].message.contains("database sources only"));
    assert!(found[4].message.contains("database sources only"));
    assert!(found[5].message.contains("unknown database \"oracle\""));
    assert!(found[6].message.contains("must not be empty"));
    assert!(found[8].message.contains("absolute path"));
}

#[test]
fn a_schedule_that_never_fires_and_a_zero_timeout_are_errors() {
    let found = errors(
        "[repository]\nurl = \"/r\"\npassword_file = \"/p\"\n\
         [[source]]\nname = \"a\"\nkind = \"paths\"\npaths = [\"/srv\"]\n\
         schedule = \"0 0 30 2 *\"\ntimeout = \"0s\"\nhooks = { pre = \"true\", timeout = \"0s\" }\n",
    );
    let keys: Vec<(usize, &str)> = found.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        keys,
        [
            (8, "source[1].schedule"),
            (9, "source[1].timeout"),
            (10, "source[1].hooks.timeout")
        ],
        "{found:#?}"
    );
    assert!(found[0].message.contains("never fires"), "{found:#?}");
    assert!(found[1].message.contains("timeout of 0"), "{found:#?}");
}

#[test]
fn a_file_that_is_not_utf8_is_a_policy_error_with_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, b"[repository]\nurl = \"/r\xff\"\n").expect("write");
    let Err(LoadError::Invalid(errors)) = Policy::load(&path) else {
        panic!("not reported as an invalid policy");
    };
    assert_eq!((errors.errors[0].line, errors.errors[0].column), (2, 10));
    assert!(errors.errors[0].message.contains("UTF-8"));
}

#[test]
fn one_file_system_is_a_paths_sources_key() {
    let text = r#"[repository]
url = "/r"
password_file = "/p"

[[source]]
name = "root"
kind = "paths"
paths = ["/"]
one_file_system = true
schedule = "@daily"

[[source]]
name = "disk"
kind = "volume"
device = "/dev/vdb"
one_file_system = true
schedule = "@daily"
"#;
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "source[2].one_file_system");
    assert!(
        found[0]
            .message
            .contains("does not apply to a volume source")
    );
    let fixed = text
        .replace(
            "device = \"/dev/vdb\"\none_file_system = true",
            "device = \"/dev/vdb\"",
        )
        .replace(
            "one_file_system = true\nschedule",
            "one_file_system = true\nexclude_caches = true\nexclude_if_present = [\".nobackup\"]\nschedule",
        );
    let policy = Policy::parse(&fixed, "p.toml").expect("valid");
    let Some(SourceKind::Paths {
        one_file_system: true,
        exclude_if_present,
        ..
    }) = policy.source("root").map(|s| &s.kind)
    else {
        panic!("{:?}", policy.source("root"));
    };
    assert_eq!(
        exclude_if_present,
        &vec![TagFile::parse(".nobackup"), TagFile::cache_dir()]
    );
}

#[test]
fn ignore_inode_and_ignore_ctime_set_the_change_detection_of_paths_sources() {
    let text = r#"[repository]
url = "/r"
password_file = "/p"

[[source]]
name = "share"
kind = "paths"
paths = ["/mnt/share"]
ignore_inode = true
schedule = "@daily"

[[source]]
name = "home"
kind = "paths"
paths = ["/home"]
ignore_ctime = true
schedule = "@daily"

[[source]]
name = "dump"
kind = "command"
command = "pg_dumpall"
ignore_ctime = true
schedule = "@daily"
"#;
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "source[3].ignore_ctime");
    assert!(
        found[0]
            .message
            .contains("does not apply to a command source")
    );
    let fixed = text.replace("pg_dumpall\"\nignore_ctime = true", "pg_dumpall\"");
    let policy = Policy::parse(&fixed, "p.toml").expect("valid");
    let detection = |name: &str| match policy.source(name).map(|s| &s.kind) {
        Some(SourceKind::Paths {
            change_detection, ..
        }) => *change_detection,
        other => panic!("{other:?}"),
    };
    let expected = |ignore_inode, ignore_ctime| ChangeDetection {
        read_all: false,
        ignore_inode,
        ignore_ctime,
    };
    assert_eq!(detection("share"), expected(true, false));
    assert_eq!(detection("home"), expected(false, true));
    let bad = errors(&fixed.replace("ignore_inode = true", "ignore_inode = \"yes\""));
    assert_eq!(bad.len(), 1, "{bad:#?}");
}

#[test]
fn images_by_content_is_a_flag_of_paths_sources() {
    let text = r#"[repository]
url = "/r"
password_file = "/p"

[[source]]
name = "vms"
kind = "paths"
paths = ["/var/lib/libvirt/images"]
images_by_content = true
schedule = "@daily"

[[source]]
name = "disk"
kind = "volume"
device = "/dev/vg/data"
images_by_content = true
schedule = "@daily"
"#;
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "source[2].images_by_content");
    assert!(
        found[0]
            .message
            .contains("does not apply to a volume source")
    );
    let fixed = text.replace("data\"\nimages_by_content = true", "data\"");
    let policy = Policy::parse(&fixed, "p.toml").expect("valid");
    match policy.source("vms").map(|s| &s.kind) {
        Some(SourceKind::Paths {
            images_by_content, ..
        }) => assert!(*images_by_content),
        other => panic!("{other:?}"),
    }
}

#[test]
fn exclude_larger_than_is_a_size_of_paths_sources() {
    let text = r#"[repository]
url = "/r"
password_file = "/p"

[[source]]
name = "home"
kind = "paths"
paths = ["/home"]
exclude_larger_than = "1.5G"
schedule = "@daily"

[[source]]
name = "disk"
kind = "volume"
device = "/dev/vdb"
exclude_larger_than = "2X"
schedule = "@daily"
"#;
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "source[2].exclude_larger_than");
    assert!(
        found[0]
            .message
            .contains("does not apply to a volume source")
    );
    let fixed = text.replace(
        "device = \"/dev/vdb\"\nexclude_larger_than = \"2X\"",
        "device = \"/dev/vdb\"",
    );
    let policy = Policy::parse(&fixed, "p.toml").expect("valid");
    let Some(SourceKind::Paths {
        exclude_larger_than,
        ..
    }) = policy.source("home").map(|s| &s.kind)
    else {
        panic!("{:?}", policy.source("home"));
    };
    assert_eq!(*exclude_larger_than, Some(1_610_612_736));
    let bad = errors(&fixed.replace("\"1.5G\"", "\"lots\""));
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert_eq!(bad[0].key, "source[1].exclude_larger_than");
    assert!(bad[0].message.contains("is not a size"), "{bad:#?}");
}

#[test]
fn fixed_chunks_is_a_power_of_two_size_of_paths_sources() {
    let text = r#"[repository]
url = "/r"
password_file = "/p"

[[source]]
name = "pgdata"
kind = "paths"
paths = ["/var/lib/postgresql"]
fixed_chunks = "64K"
schedule = "@daily"

[[source]]
name = "disk"
kind = "volume"
device = "/dev/vdb"
fixed_chunks = "64K"
schedule = "@daily"
"#;
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "source[2].fixed_chunks");
    assert!(
        found[0]
            .message
            .contains("does not apply to a volume source")
    );
    let fixed = text.replace(
        "device = \"/dev/vdb\"\nfixed_chunks = \"64K\"",
        "device = \"/dev/vdb\"",
    );
    let policy = Policy::parse(&fixed, "p.toml").expect("valid");
    let Some(SourceKind::Paths { fixed_chunks, .. }) = policy.source("pgdata").map(|s| &s.kind)
    else {
        panic!("{:?}", policy.source("pgdata"));
    };
    assert_eq!(fixed_chunks.map(FixedChunks::size), Some(64 << 10));
    for (size, why) in [("48K", "not a power of two"), ("lots", "is not a size")] {
        let bad = errors(&fixed.replace("\"64K\"", &format!("{size:?}")));
        assert_eq!(bad.len(), 1, "{bad:#?}");
        assert_eq!(bad[0].key, "source[1].fixed_chunks");
        assert!(bad[0].message.contains(why), "{bad:#?}");
    }
}

#[test]
fn a_path_with_a_parent_component_is_an_error_naming_its_key() {
    // `/srv/data/../other` passes for a path inside the subvolume `/srv/data`, but the
    // backup resolves it to `/srv/other` and reads it live, while the snapshot says it was
    // read from the btrfs snapshot.
    let policy = |paths: &str, subvolume: &str| {
        format!(
            "[repository]\nurl = \"/r\"\npassword_file = \"/p\"\n\n[[source]]\nname = \"home\"\n\
             kind = \"paths\"\npaths = [\"{paths}\"]\nschedule = \"@daily\"\n\
             quiesce = {{ btrfs_snapshot = \"{subvolume}\" }}\n"
        )
    };
    let keys = |found: &[PolicyError]| -> Vec<(usize, String)> {
        assert!(found.iter().all(|e| e.message.contains("..")), "{found:#?}");
        found.iter().map(|e| (e.line, e.key.clone())).collect()
    };
    let found = errors(&policy("/srv/data/../other", "/srv/data"));
    assert_eq!(keys(&found), [(8, "source[1].paths".to_owned())]);
    // A subvolume written with `..` is never a prefix of the resolved paths: all read live.
    let found = errors(&policy("/srv/x/../data/app", "/srv/x/../data"));
    assert_eq!(
        keys(&found),
        [
            (8, "source[1].paths".to_owned()),
            (10, "source[1].quiesce.btrfs_snapshot".to_owned())
        ]
    );
}

#[test]
fn a_drill_schedule_that_never_fires_is_an_error() {
    let found = errors(
        "[repository]\nurl = \"/r\"\npassword_file = \"/p\"\n\
         [[source]]\nname = \"a\"\nkind = \"paths\"\npaths = [\"/srv\"]\n\
         schedule = \"@daily\"\nverify = { schedule = \"0 0 31 4 *\" }\n",
    );
    let keys: Vec<(usize, &str)> = found.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(keys, [(9, "source[1].verify.schedule")], "{found:#?}");
    assert!(found[0].message.contains("never fires"), "{found:#?}");
}
