//! `snapshot`: the snapshot body decoder (`Snapshot::decode_body`) and opening a stored
//! snapshot (`Snapshot::open`).
//!
//! The input is tried as a body plaintext (which must re-encode to the same bytes), as a
//! whole stored snapshot, and sealed as a writer session would seal it, in which case
//! `Snapshot::open` must agree with `Snapshot::decode_body`.

#![no_main]

use bunker_fuzz::{MASTER, assert_agree, sealed_by_session};
use bunker_repo_format::object::ObjectKind;
use bunker_repo_format::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Snapshot::decode_body(data);
    if let Ok(snapshot) = &body {
        assert_eq!(
            snapshot.encode_body(),
            data,
            "snapshot encoding is not canonical"
        );
        let _ = snapshot.tag("commit");
    }

    let _ = Snapshot::open(data, &MASTER, "snapshots/fuzz");

    let bytes = sealed_by_session(ObjectKind::Snapshot, b"bunker snapshot", data);
    assert_agree(&body, &Snapshot::open(&bytes, &MASTER, "snapshots/fuzz"));
});
