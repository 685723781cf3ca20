//! `forget_marker`: the forget marker body decoder (`ForgetMarker::decode_body`) and opening
//! a stored marker (`ForgetMarker::open`, FORMAT.md §13b).
//!
//! The input is tried as a body plaintext (which must re-encode to the same bytes), as a
//! whole stored marker, and sealed under the forget key, in which case `ForgetMarker::open`
//! must agree with `ForgetMarker::decode_body`.

#![no_main]

use bunker_fuzz::{MASTER, assert_agree, sealed_under};
use bunker_repo_format::forget_marker::ForgetMarker;
use bunker_repo_format::object::ObjectKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = ForgetMarker::decode_body(data);
    if let Ok(marker) = &body {
        assert_eq!(
            marker.encode_body(),
            data,
            "forget marker encoding is not canonical"
        );
    }

    let _ = ForgetMarker::open(data, &MASTER, "forgotten/fuzz");

    let header = ObjectKind::ForgetMarker.header();
    let bytes = sealed_under(&MASTER.forget_key(), b"bunker forget marker", &header, data);
    assert_agree(
        &body,
        &ForgetMarker::open(&bytes, &MASTER, "forgotten/fuzz"),
    );
});
