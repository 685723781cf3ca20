//! A `command` source on a real PostgreSQL: the agent backs up `pg_dump -Fc`, the dump is
//! restored into a fresh cluster, and row counts and a checksum query match.
//!
//! Needs root (PostgreSQL runs as the `postgres` user through `runuser`) and the Debian
//! `postgresql` package, which the test command installs. Outside CI the test is skipped
//! with a note when they are missing.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::postgres::{Cluster, as_postgres, pg_bin};
use common::*;

const CHECKSUM: &str =
    "select count(*) || ':' || md5(string_agg(id || '=' || payload, ',' order by id)) from items";

#[test]
fn pg_dump_is_backed_up_by_the_agent_and_restores_into_a_fresh_cluster() {
    let Some(bin) = pg_bin().filter(|_| is_root()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this test as root with PostgreSQL installed by scripts/test.sh"
        );
        note("SKIPPED: needs root and the postgresql package");
        return;
    };
    let t = TestDir::new();
    // PostgreSQL runs as `postgres`: it must reach its directories.
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let source = Cluster::start(&bin, &t.path(), "source");
    source.psql("postgres", "create database orders");
    source.psql(
        "orders",
        "create table items (id int primary key, payload text not null);\
         insert into items select g, md5(g::text) || repeat('x', g % 97) from generate_series(1, 20000) g;",
    );
    let before = source.psql("orders", CHECKSUM);
    assert!(before.starts_with("20000:"), "{before}");

    let b = t.bunker();
    b.init();
    let password = t.join("password");
    fs::write(&password, format!("{PASSWORD}\n")).expect("password file");
    let policy = t.join("agent.toml");
    fs::write(
        &policy,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[repository]\nurl = \"{}\"\npassword_file = \"{}\"\n\
             [[source]]\nname = \"orders-db\"\ntemplate = \"database\"\n\
             command = \"pg_dump -Fc -h 127.0.0.1 -p {} -U postgres orders\"\n",
            t.join("state").display(),
            b.repo().display(),
            password.display(),
            source.port
        ),
    )
    .expect("policy");
    let out = agent_run_once(&policy, "orders-db", &t.join("cache"));
    out.ok();
    let report = &out.json()[0];
    assert_eq!(report["outcome"], "succeeded", "{out}");
    assert_eq!(report["consistency"], "application");

    // Change the source afterwards: the restore must bring back the dumped state.
    source.psql("orders", "delete from items where id % 2 = 0");

    let target = t.join("restored");
    b.restore("latest:/orders-db", &target).ok();
    let dump = target.join("orders-db");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(&dump, fs::Permissions::from_mode(0o644)).expect("chmod");

    let fresh = Cluster::start(&bin, &t.path(), "fresh");
    fresh.psql("postgres", "create database orders");
    as_postgres(
        &bin.join("pg_restore"),
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &fresh.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "orders",
            "--exit-on-error",
            dump.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(fresh.psql("orders", CHECKSUM), before);
}
