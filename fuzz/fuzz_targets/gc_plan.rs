//! `gc_plan`: opening a GC plan (`GcPlan::decode`, FORMAT.md §14a).
//!
//! The input is tried as a whole stored plan, and sealed under the index key as a writer
//! would seal a body. A body that decodes must encode to the same bytes again.

#![no_main]

use std::sync::LazyLock;

use bunker_repo_format::crypto::{MasterKey, WriterKey};
use bunker_repo_format::gc_plan::GcPlan;
use libfuzzer_sys::fuzz_target;

fn pattern(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// The golden test key (data secret 0x00.., writer secret 0x20..): golden vectors are seeds.
static WRITER: LazyLock<WriterKey> = LazyLock::new(|| {
    MasterKey::from_parts(pattern(0x00), pattern(0x20))
        .writer()
        .clone()
});

const HEADER: &[u8; 8] = b"BNKRG\x01\0\0";
const CONTEXT: &[u8] = b"bunker gc plan";

fuzz_target!(|data: &[u8]| {
    let _ = GcPlan::decode(data, &WRITER, "gc/fuzz");

    let mut bytes = HEADER.to_vec();
    WRITER
        .index_key()
        .seal_into(&[CONTEXT, HEADER].concat(), data, &mut bytes);
    if let Ok(plan) = GcPlan::decode(&bytes, &WRITER, "gc/fuzz") {
        let (_, again) = plan.encode(&WRITER);
        let body = WRITER
            .index_key()
            .open(&[CONTEXT, HEADER].concat(), &again[HEADER.len()..])
            .expect("a plan bunker sealed opens");
        assert_eq!(body, data, "gc plan encoding is not canonical");
    }
});
