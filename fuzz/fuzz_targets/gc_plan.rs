//! `gc_plan`: opening a GC plan (`GcPlan::decode`, FORMAT.md §14a).
//!
//! The input is tried as a whole stored plan, and sealed under the index key as a writer
//! would seal a body. A body that decodes must encode to the same bytes again.

#![no_main]

use bunker_fuzz::{sealed_under, writer};
use bunker_repo_format::gc_plan::GcPlan;
use bunker_repo_format::object::ObjectKind;
use libfuzzer_sys::fuzz_target;

const CONTEXT: &[u8] = b"bunker gc plan";

fuzz_target!(|data: &[u8]| {
    let _ = GcPlan::decode(data, writer(), "gc/fuzz");

    let header = ObjectKind::GcPlan.header();
    let bytes = sealed_under(writer().index_key(), CONTEXT, &header, data);
    if let Ok(plan) = GcPlan::decode(&bytes, writer(), "gc/fuzz") {
        let (_, again) = plan.encode(writer());
        let body = writer()
            .index_key()
            .open(&[CONTEXT, &header].concat(), &again[header.len()..])
            .expect("a plan bunker sealed opens");
        assert_eq!(body, data, "gc plan encoding is not canonical");
    }
});
