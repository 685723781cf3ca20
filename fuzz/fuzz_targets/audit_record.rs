//! `audit_record`: the audit record body decoder (`AuditRecord::decode_body`) and opening a
//! stored record (`AuditRecord::open`, FORMAT.md §13a).
//!
//! The input is tried as a body plaintext (which must re-encode to the same bytes), as a
//! whole stored record, and sealed as a writer session would seal it, in which case
//! `AuditRecord::open` must agree with `AuditRecord::decode_body`.

#![no_main]

use std::sync::LazyLock;

use bunker_repo_format::audit::AuditRecord;
use bunker_repo_format::crypto::{MasterKey, SealingSession};
use libfuzzer_sys::fuzz_target;

fn pattern(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// The golden test key (data secret 0x00.., writer secret 0x20..): golden vectors are seeds.
static MASTER: LazyLock<MasterKey> =
    LazyLock::new(|| MasterKey::from_parts(pattern(0x00), pattern(0x20)));
static SESSION: LazyLock<SealingSession> = LazyLock::new(|| MASTER.writer().new_session());

fuzz_target!(|data: &[u8]| {
    let body = AuditRecord::decode_body(data);
    if let Ok(record) = &body {
        assert_eq!(
            record.encode_body(),
            data,
            "audit record encoding is not canonical"
        );
    }

    let _ = AuditRecord::open(data, &MASTER, "audit/fuzz");

    // Sealed mode: the input is the body plaintext.
    let mut bytes = b"BNKRA\x01\0\0".to_vec();
    bytes.extend_from_slice(SESSION.public());
    let aad = [b"bunker audit".as_slice(), &bytes].concat();
    SESSION.key().seal_into(&aad, data, &mut bytes);
    let opened = AuditRecord::open(&bytes, &MASTER, "audit/fuzz");
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
