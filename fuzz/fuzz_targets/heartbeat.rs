//! `heartbeat`: opening a session heartbeat (`Heartbeat::decode`, FORMAT.md §14a).
//!
//! The input is tried as a whole stored heartbeat, and sealed under the index key as a
//! writer would seal a body. A body that decodes must encode to the same bytes again.

#![no_main]

use bunker_fuzz::{sealed_under, writer};
use bunker_repo_format::object::ObjectKind;
use bunker_repo_format::session::Heartbeat;
use libfuzzer_sys::fuzz_target;

const CONTEXT: &[u8] = b"bunker heartbeat";

fuzz_target!(|data: &[u8]| {
    let _ = Heartbeat::decode(data, writer(), "sessions/fuzz");

    let header = ObjectKind::Heartbeat.header();
    let bytes = sealed_under(writer().index_key(), CONTEXT, &header, data);
    if let Ok(heartbeat) = Heartbeat::decode(&bytes, writer(), "sessions/fuzz") {
        let (_, again) = heartbeat.encode(writer());
        let body = writer()
            .index_key()
            .open(&[CONTEXT, &header].concat(), &again[header.len()..])
            .expect("a heartbeat bunker sealed opens");
        assert_eq!(body, data, "heartbeat encoding is not canonical");
    }
});
