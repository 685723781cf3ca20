//! The S3 backend against a real S3-compatible server (moto, started by scripts/test.sh).

use std::time::{Duration, SystemTime};

use bunker_backend_s3::S3Backend;
use bunker_backend_s3::testing::{create_bucket, location, test_endpoint, unique_bucket};
use bunker_repo_format::Error;
use bunker_repo_format::backend::testing::conformance;
use bunker_repo_format::backend::{Backend, LockMode, LockPolicy};

#[test]
fn passes_conformance_under_a_prefix() {
    let Some(endpoint) = test_endpoint("passes_conformance_under_a_prefix") else {
        return;
    };
    let bucket = unique_bucket("conf");
    create_bucket(&endpoint, &bucket, false);
    // A neighbour under another prefix must stay invisible and untouched.
    let neighbour = S3Backend::connect(location(&endpoint, &bucket, "other")).unwrap();
    neighbour.put_if_absent("config", b"neighbour").unwrap();
    let backend = S3Backend::connect(location(&endpoint, &bucket, "repo/one")).unwrap();
    conformance(&backend);
    assert_eq!(neighbour.get("config").unwrap(), b"neighbour");
}

#[test]
fn passes_conformance_in_a_whole_lock_bucket() {
    let Some(endpoint) = test_endpoint("passes_conformance_in_a_whole_lock_bucket") else {
        return;
    };
    // Object Lock enabled on the bucket but no lock asked: the integrity header lets
    // uploads in, and plain deletes work.
    let bucket = unique_bucket("conf-lock");
    create_bucket(&endpoint, &bucket, true);
    let backend = S3Backend::connect(location(&endpoint, &bucket, "")).unwrap();
    conformance(&backend);
}

#[test]
fn missing_bucket_and_repository_are_clear_errors() {
    let Some(endpoint) = test_endpoint("missing_bucket_and_repository_are_clear_errors") else {
        return;
    };
    let err = S3Backend::connect(location(&endpoint, "no-such-bucket-here", "p")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "listing s3://no-such-bucket-here/p: bucket no-such-bucket-here does not exist \
         (or is in another region than AWS_REGION)"
    );
    let bucket = unique_bucket("empty");
    create_bucket(&endpoint, &bucket, false);
    let err = S3Backend::open(location(&endpoint, &bucket, "p")).unwrap_err();
    assert!(matches!(err, Error::RepositoryNotFound { .. }), "{err}");
    assert_eq!(err.to_string(), format!("no repository at s3://{bucket}/p"));
    let backend = S3Backend::create(location(&endpoint, &bucket, "p")).unwrap();
    backend.put_if_absent("config", b"c").unwrap();
    let again = S3Backend::create(location(&endpoint, &bucket, "p")).unwrap_err();
    assert!(matches!(again, Error::RepositoryExists { .. }), "{again}");
    assert_eq!(
        S3Backend::open(location(&endpoint, &bucket, "p"))
            .unwrap()
            .get("config")
            .unwrap(),
        b"c"
    );
}

#[test]
fn a_lock_needs_a_bucket_with_object_lock() {
    let Some(endpoint) = test_endpoint("a_lock_needs_a_bucket_with_object_lock") else {
        return;
    };
    let bucket = unique_bucket("nolock");
    create_bucket(&endpoint, &bucket, false);
    let backend = S3Backend::connect(location(&endpoint, &bucket, "")).unwrap();
    let policy = LockPolicy {
        mode: LockMode::Governance,
        period: Duration::from_secs(86400),
    };
    let err = backend.enable_lock(policy).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&bucket) && text.contains("Object Lock"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn locked_objects_cannot_be_deleted_and_locks_extend() {
    let Some(endpoint) = test_endpoint("locked_objects_cannot_be_deleted_and_locks_extend") else {
        return;
    };
    let bucket = unique_bucket("lock");
    create_bucket(&endpoint, &bucket, true);
    let backend = S3Backend::connect(location(&endpoint, &bucket, "r")).unwrap();
    let period = Duration::from_secs(2 * 86400);
    backend
        .enable_lock(LockPolicy {
            mode: LockMode::Compliance,
            period,
        })
        .unwrap();
    let before = SystemTime::now();
    backend
        .put_if_absent("data/ab/pack", b"pack bytes")
        .unwrap();
    let info = backend.lock_info("data/ab/pack").unwrap();
    assert_eq!(info.mode.as_deref(), Some("COMPLIANCE"));
    let until = info.retain_until.expect("a retain-until date");
    assert!(until >= before + period, "locked for less than the period");
    assert!(
        until <= before + period + Duration::from_secs(3600),
        "locked far too long"
    );

    // Deleting through the backend removes the version, which the server refuses.
    let err = backend.delete("data/ab/pack").unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert_eq!(backend.get("data/ab/pack").unwrap(), b"pack bytes");

    let later = until + Duration::from_secs(86400);
    backend.extend_retention("data/ab/pack", later).unwrap();
    let extended = backend.retained_until("data/ab/pack").unwrap().unwrap();
    assert_eq!(extended, later);
    // Never backwards.
    backend.extend_retention("data/ab/pack", before).unwrap();
    assert_eq!(
        backend.retained_until("data/ab/pack").unwrap(),
        Some(extended)
    );
}

/// A TCP proxy in front of the S3 server that passes everything, except that the answer
/// to the first request whose start line contains `target` is read from the server and
/// never sent on: the client's connection is closed instead, as when a network drops
/// after the server did the work. Returns the proxy's endpoint.
fn answer_losing_proxy(server: &str, target: &'static str) -> String {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let upstream = server
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
    let fired = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let drop_next = Arc::new(AtomicBool::new(false));
            let (mut from_client, mut to_server) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let (fired_up, drop_up) = (Arc::clone(&fired), Arc::clone(&drop_next));
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 64 << 10];
                while let Ok(n) = from_client.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    let head = String::from_utf8_lossy(&buffer[..n.min(512)]).into_owned();
                    let first_line = head.lines().next().unwrap_or_default();
                    if first_line.starts_with("PUT ")
                        && first_line.contains(target)
                        && !fired_up.swap(true, Ordering::SeqCst)
                    {
                        drop_up.store(true, Ordering::SeqCst);
                    }
                    if to_server.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_server.shutdown(Shutdown::Write);
            });
            let (mut from_server, mut to_client) = (server, client);
            std::thread::spawn(move || {
                let mut buffer = vec![0u8; 64 << 10];
                while let Ok(n) = from_server.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    if drop_next.load(Ordering::SeqCst) {
                        // The server answered (so the object is stored): lose the answer.
                        let _ = to_client.shutdown(Shutdown::Both);
                        let _ = from_server.shutdown(Shutdown::Both);
                        return;
                    }
                    if to_client.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_client.shutdown(Shutdown::Write);
            });
        }
    });
    endpoint
}

#[test]
fn a_create_whose_answer_is_lost_is_retried_and_succeeds() {
    let Some(endpoint) = test_endpoint("a_create_whose_answer_is_lost_is_retried_and_succeeds")
    else {
        return;
    };
    let bucket = unique_bucket("lost");
    create_bucket(&endpoint, &bucket, false);
    let proxy = answer_losing_proxy(&endpoint, "/snapshots/");
    let backend = S3Backend::connect(location(&proxy, &bucket, "p")).unwrap();
    // The first attempt lands but its answer is lost; the retry finds our bytes.
    backend.put_if_absent("snapshots/aa", b"ours").unwrap();
    assert_eq!(backend.get("snapshots/aa").unwrap(), b"ours");
    // Someone else's object under the name is still a conflict.
    let err = backend
        .put_if_absent("snapshots/aa", b"theirs")
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
}

/// Stores `bytes` under the raw `key` with an unsigned PUT (the test server does not check
/// signatures), as any client of the bucket could, whatever the key.
fn raw_put(endpoint: &str, bucket: &str, key: &str, bytes: &[u8]) {
    use std::io::{Read, Write};
    let host = endpoint.strip_prefix("http://").expect("http:// endpoint");
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    let head = format!(
        "PUT /{bucket}/{key} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        bytes.len()
    );
    stream.write_all(head.as_bytes()).expect("send");
    stream.write_all(bytes).expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    assert!(reply.starts_with("HTTP/1.1 200"), "PUT {key}: {reply}");
}

#[test]
fn listing_pages_past_a_thousand_objects() {
    let Some(endpoint) = test_endpoint("listing_pages_past_a_thousand_objects") else {
        return;
    };
    let bucket = unique_bucket("many");
    create_bucket(&endpoint, &bucket, false);
    let backend = S3Backend::connect(location(&endpoint, &bucket, "p")).unwrap();
    for i in 0..1100 {
        raw_put(
            &endpoint,
            &bucket,
            &format!("p/data/{:02x}/obj{i:04}", i % 3),
            b"x",
        );
    }
    // A neighbour whose prefix starts with ours, and an object named like our prefix.
    raw_put(&endpoint, &bucket, "p2/data/00/obj0000", b"x");
    raw_put(&endpoint, &bucket, "p", b"x");
    raw_put(&endpoint, &bucket, "p/data", b"x");
    let data = backend.list("data/").unwrap();
    assert_eq!(data.len(), 1100);
    assert_eq!(backend.list("data/01/").unwrap().len(), 367);
    assert_eq!(backend.list("data/01/obj000").unwrap().len(), 3);
    let mut all: Vec<String> = backend
        .list("")
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    all.sort();
    assert_eq!(all.len(), 1101, "{:?}", &all[..3]);
    assert_eq!(all[0], "data");
}

#[test]
fn a_foreign_object_with_an_unusual_key_does_not_break_listings() {
    let Some(endpoint) =
        test_endpoint("a_foreign_object_with_an_unusual_key_does_not_break_listings")
    else {
        return;
    };
    let bucket = unique_bucket("stray");
    create_bucket(&endpoint, &bucket, false);
    let backend = S3Backend::connect(location(&endpoint, &bucket, "p")).unwrap();
    backend.put_if_absent("data/ab/pack", b"pack").unwrap();
    backend.put_if_absent("snapshots/aa", b"snapshot").unwrap();
    // Anyone allowed to put (an agent's put-only credentials) can store such keys: empty,
    // `.` and `..` segments, a control character, characters XML escapes, non-ASCII.
    for key in [
        "p/data//stray",
        "p/data/./x",
        "p/snapshots/../y",
        "p/snapshots/x%01y",
        "p/index/a%26b%3Cc%3E",
        "p/data/caf%C3%A9",
        "p//top",
        "p/./top",
    ] {
        raw_put(&endpoint, &bucket, key, b"x");
    }
    let names = |prefix: &str| -> Vec<String> {
        let mut names: Vec<String> = backend
            .list(prefix)
            .unwrap_or_else(|e| panic!("listing {prefix:?} with stray keys: {e}"))
            .into_iter()
            .map(|m| m.name)
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("data/"), ["data/ab/pack"]);
    assert_eq!(names("snapshots/"), ["snapshots/aa"]);
    assert!(names("index/").is_empty());
    assert_eq!(names(""), ["data/ab/pack", "snapshots/aa"]);
    let listed = backend.list("snapshots/").unwrap();
    assert_eq!(listed[0].size, 8);
    // Connecting lists the prefix too: the stray keys directly under it do not stop it.
    let again = S3Backend::open(location(&endpoint, &bucket, "p"));
    assert!(
        matches!(again, Err(Error::RepositoryNotFound { .. })),
        "{again:?}"
    );
}
