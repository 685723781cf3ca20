//! Leases on real directories: written atomically, listed, expired by a clock the test
//! controls.

use std::fs;
use std::os::unix::fs::symlink;

use super::*;

const HOUR: i64 = 3600;
const T0: i64 = 1_795_000_000;

struct Setup {
    _temp: tempfile::TempDir,
    base: PathBuf,
    dir: LeaseDir,
    roots: RestoreRoots,
}

fn setup() -> Setup {
    let temp = tempfile::tempdir().unwrap();
    let base = fs::canonicalize(temp.path()).unwrap();
    fs::create_dir_all(base.join("restore")).unwrap();
    let roots = RestoreRoots::new(&[base.join("restore")]).unwrap();
    Setup {
        dir: LeaseDir::new(base.join("state/restores")),
        _temp: temp,
        base,
        roots,
    }
}

fn lease(target: &Path, expires: i64) -> Lease {
    Lease {
        version: LEASE_VERSION,
        id: new_lease_id(target),
        owner: "alice".into(),
        host: "web-1".into(),
        source: "orders-db".into(),
        snapshot: "ab".repeat(32),
        path: "/var/lib".into(),
        target: target.to_owned(),
        kind: "files".into(),
        bytes: 42,
        created: T0,
        expires,
    }
}

fn leased_tree(s: &Setup, name: &str, expires: i64) -> Lease {
    let target = s.base.join("restore").join(name);
    fs::create_dir_all(target.join("sub")).unwrap();
    fs::write(target.join("sub/file"), name.as_bytes()).unwrap();
    let lease = lease(&target, expires);
    s.dir.create(&lease).unwrap();
    lease
}

#[test]
fn a_lease_round_trips_through_its_file() {
    let s = setup();
    let lease = leased_tree(&s, "a", T0 + 4 * HOUR);
    let file = s.dir.path().join(format!("{}.json", lease.id));
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"expires\": \"2026-11-18T"), "{text}");
    let listed = s.dir.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].lease.as_ref().unwrap(), &lease);
    // No temporary file is left, and the directory is private.
    let names: Vec<_> = fs::read_dir(s.dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(s.dir.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // The same id is never overwritten.
    assert!(s.dir.create(&lease).is_err());
}

#[test]
fn unreadable_and_future_lease_files_are_reported_not_trusted() {
    let s = setup();
    leased_tree(&s, "a", T0);
    fs::write(s.dir.path().join("0123456789abcdef.json"), b"{ not json").unwrap();
    let future = format!(
        "{{\"version\": 9, \"id\": \"fedcba9876543210\", \"target\": \"{}\"}}",
        s.base.join("etc").display()
    );
    fs::write(s.dir.path().join("fedcba9876543210.json"), future).unwrap();
    fs::write(s.dir.path().join("notes.txt"), b"ignored").unwrap();
    let listed = s.dir.list().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed[0].lease.is_ok());
    let errors: Vec<String> = listed[1..]
        .iter()
        .map(|l| l.lease.as_ref().unwrap_err().to_string())
        .collect();
    assert!(errors[1].contains("version 9 is newer"), "{errors:?}");
    // Expiry skips what it cannot read.
    let done = expire(&s.dir, &s.roots, T0 + HOUR, &|l| l.is_expired(T0 + HOUR)).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(s.dir.counts(T0 + HOUR).unwrap(), (0, 0));
}

#[test]
fn expiry_removes_exactly_the_expired_target() {
    let s = setup();
    let outside = s.base.join("precious");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("data"), b"keep me").unwrap();
    let old = leased_tree(&s, "old", T0 + HOUR);
    symlink(&outside, old.target.join("sub/escape")).unwrap();
    let young = leased_tree(&s, "young", T0 + 8 * HOUR);
    let sibling = s.base.join("restore/unleased");
    fs::create_dir_all(&sibling).unwrap();
    assert_eq!(s.dir.counts(T0).unwrap(), (2, 0));
    assert_eq!(s.dir.counts(T0 + 2 * HOUR).unwrap(), (1, 1));

    // Not yet due: nothing happens.
    let now = T0 + HOUR - 1;
    assert!(
        expire(&s.dir, &s.roots, now, &|l| l.is_expired(now))
            .unwrap()
            .is_empty()
    );
    let now = T0 + 2 * HOUR;
    let done = expire(&s.dir, &s.roots, now, &|l| l.is_expired(now)).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].lease.id, old.id);
    assert_eq!(done[0].action, ExpiryAction::Removed);
    assert!(!old.target.exists());
    assert_eq!(fs::read(outside.join("data")).unwrap(), b"keep me");
    assert!(sibling.is_dir());
    assert_eq!(fs::read(young.target.join("sub/file")).unwrap(), b"young");
    let left: Vec<String> = s
        .dir
        .list()
        .unwrap()
        .into_iter()
        .map(|l| l.lease.unwrap().id)
        .collect();
    assert_eq!(left, std::slice::from_ref(&young.id));

    let record = audit_record(&done[0], "web-1", "root");
    assert_eq!(record.operation, "restore-expire");
    assert_eq!(record.outcome, "removed");
    assert_eq!(record.target, old.target.display().to_string());
    assert_eq!(record.snapshot.map(|s| s.to_hex()), Some(old.snapshot));
    assert_eq!(record.details[0], ("lease".to_owned(), old.id));
}

#[test]
fn a_target_already_gone_just_drops_its_lease() {
    let s = setup();
    let lease = leased_tree(&s, "gone", T0);
    fs::remove_dir_all(&lease.target).unwrap();
    let done = expire(&s.dir, &s.roots, T0, &|l| l.is_expired(T0)).unwrap();
    assert_eq!(done[0].action, ExpiryAction::AlreadyGone);
    assert!(s.dir.list().unwrap().is_empty());
}

#[test]
fn targets_that_left_the_roots_are_refused_and_keep_their_lease() {
    let s = setup();
    // A root itself, a path whose parent became a symlink out of the root, `/`.
    let root = lease(&s.base.join("restore"), T0);
    s.dir.create(&root).unwrap();
    let real = s.base.join("elsewhere/victim");
    fs::create_dir_all(&real).unwrap();
    symlink(s.base.join("elsewhere"), s.base.join("restore/swapped")).unwrap();
    let swapped = lease(&s.base.join("restore/swapped/victim"), T0);
    s.dir.create(&swapped).unwrap();
    let slash = lease(Path::new("/"), T0);
    s.dir.create(&slash).unwrap();
    let outside = lease(&s.base.join("elsewhere"), T0);
    s.dir.create(&outside).unwrap();

    let done = expire(&s.dir, &s.roots, T0, &|l| l.is_expired(T0)).unwrap();
    assert_eq!(done.len(), 4);
    for expiry in &done {
        assert!(
            matches!(
                expiry.action,
                ExpiryAction::Refused(_) | ExpiryAction::Failed(_)
            ),
            "{expiry:?}"
        );
    }
    let swapped_action = &done
        .iter()
        .find(|e| e.lease.id == swapped.id)
        .unwrap()
        .action;
    assert!(
        swapped_action.error().unwrap().contains("symlink"),
        "{swapped_action:?}"
    );
    assert!(real.is_dir());
    assert!(s.base.join("restore").is_dir());
    assert_eq!(s.dir.list().unwrap().len(), 4);
    assert_eq!(s.dir.counts(T0).unwrap(), (0, 4));
}
