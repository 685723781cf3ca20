//! `snapshot`: the snapshot body decoder (`Snapshot::decode_body`) and opening a stored
//! snapshot (`Snapshot::open`).
//!
//! The input is tried as a body plaintext (which must re-encode to the same bytes), as a
//! whole stored snapshot, and sealed as a writer session would seal it, in which case
//! `Snapshot::open` must agree with `Snapshot::decode_body`.

#![no_main]

use std::sync::LazyLock;

use bunker_repo_format::crypto::{MasterKey, SealingSession};
use bunker_repo_format::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fn pattern(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// The golden test key (data secret 0x00.., writer secret 0x20..): golden vectors are seeds.
static MASTER: LazyLock<MasterKey> =
    LazyLock::new(|| MasterKey::from_parts(pattern(0x00), pattern(0x20)));
static SESSION: LazyLock<SealingSession> = LazyLock::new(|| MASTER.writer().new_session());

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

    // Sealed mode: the input is the body plaintext.
    let mut bytes = b"BNKRS\x01\0\0".to_vec();
    bytes.extend_from_slice(SESSION.public());
    let mut aad = b"bunker snapshot".to_vec();
    aad.extend_from_slice(&bytes);
    SESSION.key().seal_into(&aad, data, &mut bytes);
    let opened = Snapshot::open(&bytes, &MASTER, "snapshots/fuzz");
    match (&body, &opened) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "open and decode_body disagree: {:?} vs {:?}",
            body.is_ok(),
            opened.is_ok()
        ),
    }
});
