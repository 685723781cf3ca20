//! `gc_plan`: opening a GC plan (`GcPlan::decode`, FORMAT.md §14a).
//!
//! The input is tried as a whole stored plan, and sealed under the index key as a writer
//! would seal a body. A body that decodes must encode to the same bytes again.

#![no_main]

use bunker_fuzz::{index_key_object, writer};
use bunker_repo_format::gc_plan::GcPlan;
use bunker_repo_format::object::ObjectKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    index_key_object(
        data,
        ObjectKind::GcPlan,
        b"bunker gc plan",
        |bytes| GcPlan::decode(bytes, writer(), "gc/fuzz"),
        |decoded| decoded.encode(writer()).1,
    );
});
