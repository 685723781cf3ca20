//! `forget_marker`: the forget marker body decoder (`ForgetMarker::decode_body`) and opening
//! a stored marker (`ForgetMarker::open`, FORMAT.md §13b).
//!
//! The input is tried as a body plaintext (which must re-encode to the same bytes), as a
//! whole stored marker, and sealed under the forget key, in which case `ForgetMarker::open`
//! must agree with `ForgetMarker::decode_body`.

#![no_main]

use std::sync::LazyLock;

use bunker_repo_format::crypto::MasterKey;
use bunker_repo_format::forget_marker::ForgetMarker;
use libfuzzer_sys::fuzz_target;

fn pattern(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// The golden test key (data secret 0x00.., writer secret 0x20..): golden vectors are seeds.
static MASTER: LazyLock<MasterKey> =
    LazyLock::new(|| MasterKey::from_parts(pattern(0x00), pattern(0x20)));

const HEADER: &[u8; 8] = b"BNKRF\x01\0\0";

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

    // Sealed mode: the input is the body plaintext.
    let mut bytes = HEADER.to_vec();
    MASTER.forget_key().seal_into(
        &[b"bunker forget marker".as_slice(), HEADER].concat(),
        data,
        &mut bytes,
    );
    let opened = ForgetMarker::open(&bytes, &MASTER, "forgotten/fuzz");
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
