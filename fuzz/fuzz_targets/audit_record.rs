//! `audit_record`: the audit record body decoder (`AuditRecord::decode_body`) and opening a
//! stored record (`AuditRecord::open`, FORMAT.md §13a).
//!
//! The input is tried as a body plaintext (which must re-encode to the same bytes), as a
//! whole stored record, and sealed as a writer session would seal it, in which case
//! `AuditRecord::open` must agree with `AuditRecord::decode_body`.

#![no_main]

use bunker_fuzz::{MASTER, assert_agree, sealed_by_session};
use bunker_repo_format::audit::AuditRecord;
use bunker_repo_format::object::ObjectKind;
use libfuzzer_sys::fuzz_target;

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

    let bytes = sealed_by_session(ObjectKind::Audit, b"bunker audit", data);
    assert_agree(&body, &AuditRecord::open(&bytes, &MASTER, "audit/fuzz"));
});
