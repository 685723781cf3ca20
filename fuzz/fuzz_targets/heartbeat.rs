//! `heartbeat`: opening a session heartbeat (`Heartbeat::decode`, FORMAT.md §14a).
//!
//! The input is tried as a whole stored heartbeat, and sealed under the index key as a
//! writer would seal a body. A body that decodes must encode to the same bytes again.

#![no_main]

use bunker_fuzz::{index_key_object, writer};
use bunker_repo_format::object::ObjectKind;
use bunker_repo_format::session::Heartbeat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    index_key_object(
        data,
        ObjectKind::Heartbeat,
        b"bunker heartbeat",
        |bytes| Heartbeat::decode(bytes, writer(), "sessions/fuzz"),
        |decoded| decoded.encode(writer()).1,
    );
});
