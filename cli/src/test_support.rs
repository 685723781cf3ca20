//! What the unit tests of several modules build alike.

use bunker_repo_format::BlobId;
use bunker_repo_format::snapshot::{ConsistencyLevel, Snapshot, SourceKind, Summary};
use bunker_repo_format::tree::Timestamp;

/// A snapshot of `/data` by `u` on `h` at time 0, untagged, with an empty summary: tests
/// change what they need with struct update syntax.
pub fn snapshot() -> Snapshot {
    Snapshot {
        time: Timestamp { sec: 0, nsec: 0 },
        host: "h".into(),
        username: "u".into(),
        paths: vec![b"/data".to_vec()],
        tags: Vec::new(),
        parent: None,
        tree: BlobId::from_bytes([0; 32]),
        source_kind: SourceKind::Files,
        consistency: ConsistencyLevel::Crash,
        consistency_detail: String::new(),
        excludes: Vec::new(),
        summary: Summary::default(),
        errors: Vec::new(),
        program_version: "test".into(),
    }
}
