//! Proof of immutability with an agent's put-only key (issue 5, item 7): in a bucket with
//! Object Lock (compliance), an admin and an agent holding only a put-only key file back
//! up; then every object of every kind (config, key slot, data and tree packs, index
//! segments, snapshots, audit records, and whatever else is stored) is attacked: `forget`
//! and `prune --grace 0` with the key file (refused, exit 13), a versioned DELETE (refused
//! by the server), a plain overwrite PUT and a plain DELETE (they only add a version or a
//! delete marker; the locked original stays readable), and a create-only put (refused).
//! The operator then removes the attacker's unlocked versions, and the full key restores
//! every snapshot exactly.
//!
//! The S3 test server (moto) does not enforce IAM policies, so the raw requests carry the
//! test credentials, which hold every right; an agent's credentials (put, get, list) are a
//! subset of them, so every refusal here comes from Object Lock alone.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bunker_backend_s3::S3Backend;
use bunker_backend_s3::testing::{create_bucket, env_vars, location, test_endpoint, unique_bucket};
use bunker_repo_format::Error;
use bunker_repo_format::backend::Backend;
use common::*;

/// Object kinds that must be present (and are attacked) after the backups.
const KINDS: [&str; 7] = [
    "config",
    "keys/",
    "data/",
    "tree/",
    "index/",
    "snapshots/",
    "audit/",
];

/// `cp -a src dst`: the expected tree of one snapshot, metadata included.
fn keep_copy(src: &Path, dst: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("run cp -a");
    assert!(
        status.success(),
        "cp -a {} {}",
        src.display(),
        dst.display()
    );
}

/// One stored object as it was before the attacks.
struct Original {
    name: String,
    version: String,
    bytes: Vec<u8>,
}

#[test]
fn put_only_agent_can_neither_delete_nor_overwrite_a_locked_repository() {
    let Some(endpoint) =
        test_endpoint("put_only_agent_can_neither_delete_nor_overwrite_a_locked_repository")
    else {
        return;
    };
    let t = TestDir::new();
    let bucket = unique_bucket("put-only-lock");
    create_bucket(&endpoint, &bucket, true);
    let mut admin = t
        .bunker()
        .with_repo(Some(Path::new(&format!("s3://{bucket}/r"))));
    for (key, value) in env_vars(&endpoint) {
        admin = admin.with_env(key, value);
    }
    admin
        .run([
            "init",
            "--kdf-memory-kib",
            "1024",
            "--kdf-iterations",
            "1",
            "--lock-mode",
            "compliance",
            "--lock-period",
            "2d",
        ])
        .ok();
    let src = t.join("src");
    write_random_file(&src.join("db/base.bin"), 1, 1_500_000);
    write_random_file(&src.join("db/wal.bin"), 2, 200_000);
    write_file(&src.join("etc/app.conf"), b"listen = 8080\n");
    chmod(&src.join("etc/app.conf"), 0o600);
    admin.backup(&[&src], &["--host", "admin"]).ok();
    keep_copy(&src, &t.join("expected-0"));

    let key = t.join("agent.key");
    admin
        .run([
            "key".as_ref(),
            "add".as_ref(),
            "--put-only".as_ref(),
            "--out".as_ref(),
            key.as_os_str(),
        ])
        .ok();
    let agent = admin.with_password(None).with_env("BUNKER_KEY_FILE", &key);
    for round in 1..=2u64 {
        write_random_file(&src.join("db/wal.bin"), 2 + round, 200_000 + round);
        write_file(
            &src.join(format!("db/segment-{round}.bin")),
            &random_bytes(10 + round, 300_000),
        );
        agent.backup(&[&src], &["--host", "agent"]).ok();
        keep_copy(&src, &t.join(format!("expected-{round}")));
    }
    let snapshots = admin.snapshots();
    assert_eq!(snapshots.len(), 3, "{snapshots:?}");

    // Every object, the agent's included, is locked in compliance mode.
    let s3 = S3Backend::connect(location(&endpoint, &bucket, "r")).expect("connect");
    let objects = s3.list("").expect("list");
    for kind in KINDS {
        assert!(
            objects.iter().any(|o| o.name.starts_with(kind)),
            "no {kind} object: {objects:?}"
        );
    }
    let mut originals = Vec::new();
    for object in &objects {
        let info = s3.lock_info(&object.name).expect("head");
        assert_eq!(info.mode.as_deref(), Some("COMPLIANCE"), "{}", object.name);
        originals.push(Original {
            name: object.name.clone(),
            version: info.version.expect("a version id"),
            bytes: s3.get(&object.name).expect("get"),
        });
    }
    let current_versions = || -> BTreeMap<String, Option<String>> {
        s3.list("")
            .expect("list")
            .into_iter()
            .map(|o| {
                let version = s3.lock_info(&o.name).expect("head").version;
                (o.name, version)
            })
            .collect()
    };
    let before = current_versions();

    // bunker's own destructive commands with the put-only key file: refused, exit 13,
    // nothing changed.
    for args in [
        &["forget", "--keep-last", "1"][..],
        &["forget", "--keep-last", "1", "--prune", "--grace", "0"][..],
        &["prune", "--grace", "0"][..],
        &["prune", "--grace", "0", "--max-unused", "0"][..],
    ] {
        let out = agent.run(args);
        out.code(13);
        assert!(
            out.stderr.contains("needs the repository's full key")
                && out.stderr.contains("put-only key"),
            "{out}"
        );
    }
    assert_eq!(
        current_versions(),
        before,
        "a refused command changed the bucket"
    );

    // Raw S3 requests against every object.
    let mut attacker_versions = Vec::new();
    for original in &originals {
        let Original {
            name,
            version,
            bytes,
        } = original;
        // A versioned delete of the locked version: refused by the server.
        match s3.delete_version(name, version) {
            Err(Error::Locked { object, .. }) => assert_eq!(&object, name),
            other => panic!("versioned delete of {name}: expected Locked, got {other:?}"),
        }
        // bunker's create-only put: refused.
        assert!(
            matches!(
                s3.put_if_absent(name, b"x"),
                Err(Error::AlreadyExists { .. })
            ),
            "create-only put over {name}"
        );
        // A plain overwrite PUT only adds a version (unlocked) on top.
        s3.overwrite_unconditionally(name, b"encrypted by ransomware")
            .expect("overwrite");
        let overwrite = s3.lock_info(name).expect("head").version.expect("version");
        assert_ne!(
            &overwrite, version,
            "{name}: the overwrite made no new version"
        );
        assert_eq!(s3.get(name).expect("get"), b"encrypted by ransomware");
        // A plain DELETE only hides it behind a delete marker.
        let marker = s3
            .delete_unversioned(name)
            .expect("plain delete")
            .expect("a delete marker version");
        assert!(
            s3.get(name).is_err_and(|e| e.is_not_found()),
            "{name} still visible after a plain delete"
        );
        // The original is intact, still locked, and its versioned delete still refused.
        assert_eq!(
            &s3.get_version(name, version).expect("original version"),
            bytes,
            "{name}"
        );
        assert!(matches!(
            s3.delete_version(name, version),
            Err(Error::Locked { .. })
        ));
        attacker_versions.push((name.clone(), overwrite, marker));
    }
    // With the data hidden, the repository does not open: nothing is silently wrong.
    assert_ne!(admin.run(["snapshots"]).code, 0);

    // The operator removes what the attacker added (unlocked, so the server allows it);
    // every original is back, byte for byte.
    for (name, overwrite, marker) in &attacker_versions {
        s3.delete_version(name, marker)
            .expect("remove the delete marker");
        s3.delete_version(name, overwrite)
            .expect("remove the attacker's version");
    }
    for Original {
        name,
        version,
        bytes,
    } in &originals
    {
        assert_eq!(&s3.get(name).expect("get"), bytes, "{name} after recovery");
        let info = s3.lock_info(name).expect("head");
        assert_eq!(info.version.as_ref(), Some(version), "{name}");
        assert_eq!(info.mode.as_deref(), Some("COMPLIANCE"), "{name}");
    }
    assert_eq!(current_versions(), before);

    // The full key restores every snapshot exactly, and the data checks out.
    admin.run(["check", "--read-data"]).ok();
    let mut snapshots = admin.snapshots();
    snapshots.sort_by(|a, b| str_field(a, "time").cmp(str_field(b, "time")));
    assert_eq!(snapshots.len(), 3);
    for (i, snap) in snapshots.iter().enumerate() {
        let target = t.join(format!("restore-{i}"));
        admin.restore(str_field(snap, "id"), &target).ok();
        compare_tree_contents(&t.join(format!("expected-{i}")), &under(&target, &src));
    }
}
