//! The conformance suite every [`Backend`] must pass.
//!
//! [`conformance`] checks each contract in the [`Backend`] docs against a live backend. It
//! is public so that backends and wrappers in other crates (S3, retry, limit, ...) run the
//! very same checks. It reports failures by panicking, like the assertions in a test.

// A test helper: a failed check is meant to panic with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Display;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use super::Backend;
use crate::error::{Error, Result};

/// Runs the conformance suite against `backend`, panicking at the first broken contract.
///
/// `backend` must start empty, and it is left empty when the suite passes. The suite checks:
/// - `put_if_absent` then `get` returns the exact bytes (empty, small and 3 MiB objects);
/// - a second `put_if_absent` of a name fails with `AlreadyExists` and keeps the original;
/// - `get`, `get_range` and `head` of a missing object fail with `NotFound`;
/// - `get_range` and `get_range_to_read` return exact slices (empty and whole ones
///   included) and fail with `Corrupt`, naming the object, for a range past the end;
///   `will_read` hints before them change nothing, past the end or for a missing object;
/// - `head` reports the size, `list` returns exactly the names under a prefix (whole or
///   partial segments), and `delete` removes and is idempotent;
/// - invalid names are rejected with `Invalid`;
/// - puts of distinct names from 8 threads all land, and of 8 threads racing to put one
///   name exactly one wins, the rest get `AlreadyExists`, and no reader ever sees anything
///   but one writer's whole object.
pub fn conformance(backend: &dyn Backend) {
    assert_empty(backend, "the backend must start empty");
    put_then_get(backend);
    put_never_overwrites(backend);
    missing_objects(backend);
    ranges(backend);
    listing(backend);
    deletion(backend);
    invalid_names(backend);
    concurrent_distinct_puts(backend);
    racing_puts_of_one_name(backend);
    assert_empty(backend, "the suite left objects behind");
}

fn put_then_get(backend: &dyn Backend) {
    let cases = [
        ("conformance/empty", Vec::new()),
        ("conformance/small", b"hello, backend".to_vec()),
        ("conformance/large", pattern(1, 3 << 20)),
    ];
    for (name, bytes) in &cases {
        put(backend, name, bytes);
        same(&get(backend, name), bytes, format_args!("get {name}"));
        let meta = ok(backend.head(name), format_args!("head {name}"));
        assert_eq!(
            (meta.name.as_str(), meta.size),
            (*name, bytes.len() as u64),
            "head {name}"
        );
    }
    remove_all(backend, cases.map(|(name, _)| name));
}

fn put_never_overwrites(backend: &dyn Backend) {
    put(backend, "config", b"first");
    for second in [&b"second, longer"[..], b""] {
        let result = backend.put_if_absent("config", second);
        already_exists(result, format_args!("second put of config {second:?}"));
    }
    // The same bytes again: refused, or success (a store that retries a write whose answer
    // was lost cannot tell its own earlier attempt from this one).
    let result = backend.put_if_absent("config", b"first");
    if result.is_err() {
        already_exists(result, "second put of config with the same bytes");
    }
    same(
        &get(backend, "config"),
        b"first",
        "config after failed puts",
    );
    remove_all(backend, ["config"]);
}

fn missing_objects(backend: &dyn Backend) {
    // `data/00/present` makes `data` and `data/00` prefixes of an object, but not objects.
    put(backend, "data/00/present", b"x");
    #[rustfmt::skip]
    let missing = ["data/00/missing", "missing", "data/00", "data", "data/0", "data/00/present/x"];
    for name in missing {
        not_found(backend.get(name), format_args!("get of missing {name}"));
        not_found(backend.head(name), format_args!("head of missing {name}"));
        let range = backend.get_range(name, 0, 0);
        not_found(range, format_args!("get_range of missing {name}"));
    }
    remove_all(backend, ["data/00/present"]);
}

fn ranges(backend: &dyn Backend) {
    let name = "data/1f/ranges";
    let bytes = pattern(2, 1000);
    put(backend, name, &bytes);
    #[rustfmt::skip]
    let within = [(0, 0), (0, 1), (0, 1000), (1, 10), (500, 500), (999, 1), (1000, 0)];
    for (offset, length) in within {
        let what = format!("get_range {offset}+{length}");
        let expected = &bytes[offset as usize..(offset + length) as usize];
        same(
            &ok(backend.get_range(name, offset, length), &what),
            expected,
            &what,
        );
        let what = format!("get_range_to_read {offset}+{length}");
        backend.will_read(name, offset, length);
        let read = ok(backend.get_range_to_read(name, offset, length), &what);
        same(&read, expected, &what);
    }
    #[rustfmt::skip]
    let past_end = [(0, 1001), (1000, 1), (1001, 0), (999, 2), (5000, 10), (1, u64::MAX), (u64::MAX, 2)];
    for (offset, length) in past_end {
        // A hint past the end, or for a missing object, is ignored.
        backend.will_read(name, offset, length);
        backend.will_read("data/never-written", offset, length);
        let what = format!("get_range {offset}+{length} past the end");
        match backend.get_range(name, offset, length) {
            Err(Error::Corrupt { object, .. }) => {
                assert_eq!(object, name, "{what}: names another object")
            }
            other => panic!("{what}: expected Corrupt, got {}", describe(&other)),
        }
        match backend.get_range_to_read(name, offset, length) {
            Err(Error::Corrupt { object, .. }) => {
                assert_eq!(object, name, "{what} (to read): names another object")
            }
            other => panic!(
                "{what} (to read): expected Corrupt, got {}",
                describe(&other)
            ),
        }
    }
    same(&get(backend, name), &bytes, "object after ranged reads");
    remove_all(backend, [name]);
}

fn listing(backend: &dyn Backend) {
    #[rustfmt::skip]
    let all = [
        "config", "dataset", "data/ab/ab01", "data/ab/ab02", "data/ac/ac01", "data/b0/b001",
        "index/i1", "keys/k1",
    ];
    for (i, name) in all.iter().enumerate() {
        put(backend, name, &pattern(i as u64, 10 * i));
    }
    // Each prefix with how many fixture names it matches (guarding the fixture itself).
    #[rustfmt::skip]
    let prefixes = [
        ("", 8), ("data/", 4), ("data/a", 3), ("data/ab/", 2), ("data/ab/ab01", 1), ("data", 5),
        ("d", 5), ("keys/", 1), ("index/i", 1), ("zzz/", 0), ("data/ff", 0),
        ("data/ab/ab013", 0), ("configs", 0),
    ];
    for (prefix, count) in prefixes {
        let mut expected: Vec<(String, u64)> = (all.iter().enumerate())
            .filter(|(_, name)| name.starts_with(prefix))
            .map(|(i, name)| ((*name).to_owned(), 10 * i as u64))
            .collect();
        assert_eq!(expected.len(), count, "fixture for prefix {prefix:?}");
        expected.sort();
        let listed = ok(backend.list(prefix), format_args!("list {prefix:?}"));
        for meta in &listed {
            let head = ok(backend.head(&meta.name), format_args!("head {}", meta.name));
            assert_eq!(head, *meta, "list and head agree on {}", meta.name);
            assert!(
                meta.modified > std::time::SystemTime::UNIX_EPOCH,
                "{} has no storage time",
                meta.name
            );
        }
        let mut listed: Vec<(String, u64)> = listed.into_iter().map(|m| (m.name, m.size)).collect();
        listed.sort();
        assert_eq!(listed, expected, "list {prefix:?}");
    }
    remove_all(backend, all);
}

fn deletion(backend: &dyn Backend) {
    let name = "snapshots/s1";
    put(backend, name, b"snapshot");
    put(backend, "snapshots/s2", b"other");
    ok(backend.delete(name), "delete snapshot");
    not_found(backend.get(name), "get after delete");
    not_found(backend.head(name), "head after delete");
    assert_eq!(
        names(backend, "snapshots/"),
        ["snapshots/s2"],
        "list after delete"
    );
    ok(backend.delete(name), "second delete of the same object");
    ok(
        backend.delete("snapshots/never-existed"),
        "delete of an object that never existed",
    );
    same(
        &get(backend, "snapshots/s2"),
        b"other",
        "other object after delete",
    );
    remove_all(backend, ["snapshots/s2"]);
}

fn invalid_names(backend: &dyn Backend) {
    #[rustfmt::skip]
    let bad = ["", "../x", "a//b", "a/./b", "a/../b", "/x", "x/", "..", ".", "a b", "a\\b"];
    for name in bad {
        let result = backend.put_if_absent(name, b"x");
        invalid(result, format_args!("put of invalid name {name:?}"));
    }
    assert_empty(backend, "a rejected put stored something");
}

fn concurrent_distinct_puts(backend: &dyn Backend) {
    let object = |thread: usize, i: usize| {
        let seed = thread * 4 + i;
        (
            format!("conc/t{thread}/o{i}"),
            pattern(seed as u64, 10_000 + 977 * seed),
        )
    };
    let start = Barrier::new(8);
    thread::scope(|scope| {
        for t in 0..8 {
            let start = &start;
            scope.spawn(move || {
                start.wait();
                for i in 0..4 {
                    let (name, bytes) = object(t, i);
                    put(backend, &name, &bytes);
                }
            });
        }
    });
    let mut expected = Vec::new();
    for (t, i) in (0..8).flat_map(|t| (0..4).map(move |i| (t, i))) {
        let (name, bytes) = object(t, i);
        same(&get(backend, &name), &bytes, &name);
        expected.push(name);
    }
    expected.sort();
    assert_eq!(
        names(backend, "conc/"),
        expected,
        "list after concurrent puts"
    );
    remove_all(backend, expected.iter().map(String::as_str));
}

fn racing_puts_of_one_name(backend: &dyn Backend) {
    for round in 0..4 {
        let name = format!("race/r{round}");
        // Different lengths and contents, so a mix of two writers cannot pass for either.
        let payloads: Vec<Vec<u8>> = (0..8)
            .map(|w| pattern(100 + 8 * round + w as u64, (256 << 10) + 1000 * w))
            .collect();
        let start = Barrier::new(9);
        let writers_done = AtomicBool::new(false);
        let results: Vec<Result<()>> = thread::scope(|scope| {
            // A reader polls throughout the race: it may find nothing, never part of an object.
            let reader = scope.spawn(|| {
                start.wait();
                loop {
                    let done = writers_done.load(Ordering::Acquire);
                    match backend.get(&name) {
                        Ok(bytes) => assert!(
                            payloads.contains(&bytes),
                            "{name}: a reader saw {} bytes that are no writer's whole object",
                            bytes.len()
                        ),
                        Err(Error::NotFound { .. }) => {}
                        Err(e) => panic!("{name}: reading during the race: {e}"),
                    }
                    if done {
                        break;
                    }
                }
            });
            let writers: Vec<_> = (payloads.iter())
                .map(|payload| {
                    let (start, name) = (&start, &name);
                    scope.spawn(move || {
                        start.wait();
                        backend.put_if_absent(name, payload)
                    })
                })
                .collect();
            let results = writers
                .into_iter()
                .map(|w| w.join().expect("writer thread"))
                .collect();
            writers_done.store(true, Ordering::Release);
            reader.join().expect("reader thread");
            results
        });
        let winners: Vec<usize> = (0..8).filter(|&w| results[w].is_ok()).collect();
        assert_eq!(
            winners.len(),
            1,
            "{name}: {} of 8 racing puts succeeded",
            winners.len()
        );
        for (w, result) in results
            .into_iter()
            .enumerate()
            .filter(|&(w, _)| w != winners[0])
        {
            already_exists(result, format_args!("{name}: losing writer {w}"));
        }
        let stored = get(backend, &name);
        same(
            &stored,
            &payloads[winners[0]],
            format_args!("{name}, the winning writer's bytes"),
        );
        remove_all(backend, [name.as_str()]);
    }
}

/// Panics unless `result` is [`Error::NotFound`].
fn not_found<T>(result: Result<T>, what: impl Display) {
    fails(result, Expected::NotFound, what);
}

/// Panics unless `result` is [`Error::AlreadyExists`].
fn already_exists<T>(result: Result<T>, what: impl Display) {
    fails(result, Expected::AlreadyExists, what);
}

/// Panics unless `result` is [`Error::Invalid`].
fn invalid<T>(result: Result<T>, what: impl Display) {
    fails(result, Expected::Invalid, what);
}

/// The error kinds the suite expects.
#[derive(Debug, Clone, Copy)]
enum Expected {
    NotFound,
    AlreadyExists,
    Invalid,
}

/// Panics unless `result` is an error of the `expected` kind.
fn fails<T>(result: Result<T>, expected: Expected, what: impl Display) {
    let matched = matches!(
        (&result, expected),
        (Err(Error::NotFound { .. }), Expected::NotFound)
            | (Err(Error::AlreadyExists { .. }), Expected::AlreadyExists)
            | (Err(Error::Invalid(_)), Expected::Invalid)
    );
    assert!(
        matched,
        "{what}: expected {expected:?}, got {}",
        describe(&result)
    );
}

/// Describes a result without dumping a payload of megabytes.
fn describe<T>(result: &Result<T>) -> String {
    match result {
        Ok(_) => "Ok".to_owned(),
        Err(e) => format!("error {e:?}"),
    }
}

/// Panics unless `got` equals `expected`, without dumping either.
fn same(got: &[u8], expected: &[u8], what: impl Display) {
    if got != expected {
        let first_difference = got.iter().zip(expected).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, expected {}; first difference at {first_difference:?}",
            got.len(),
            expected.len()
        );
    }
}

/// Stores an object, panicking if that fails.
fn put(backend: &dyn Backend, name: &str, bytes: &[u8]) {
    ok(
        backend.put_if_absent(name, bytes),
        format_args!("put {name}"),
    );
}

/// Reads an object, panicking if that fails.
fn get(backend: &dyn Backend, name: &str) -> Vec<u8> {
    ok(backend.get(name), format_args!("get {name}"))
}

/// Panics unless the backend holds no objects.
fn assert_empty(backend: &dyn Backend, what: impl Display) {
    let left = names(backend, "");
    assert!(
        left.is_empty(),
        "{}: {what}: holds {left:?}",
        backend.location()
    );
}

/// Unwraps `result`, panicking with `what` and the error.
fn ok<T>(result: Result<T>, what: impl Display) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Sorted names of the objects under `prefix`.
fn names(backend: &dyn Backend, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = ok(backend.list(prefix), format_args!("list {prefix:?}"))
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    names
}

/// Deletes the named objects, checking that each is gone.
fn remove_all<'a>(backend: &dyn Backend, names: impl IntoIterator<Item = &'a str>) {
    for name in names {
        ok(backend.delete(name), format_args!("delete {name}"));
        not_found(backend.head(name), format_args!("head of deleted {name}"));
    }
}

/// `len` pseudo-random bytes from `seed` (splitmix64), so that distinct objects differ
/// everywhere and shifted or mixed copies are caught.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}
