//! `index_segment`: decoding an index segment, whole (`decode_segment`, master key) and the
//! writer's view (`decode_segment_ids`, writer key).
//!
//! Raw mode decodes the input as a whole segment. Sealed mode splits the input into the two
//! section plaintexts (bytes 0..2: id-section length, `u16` LE; then the id section; the rest
//! is the locations section) and seals them as a writer session would, so the section
//! decoders are reached behind the AEAD.

#![no_main]

use bunker_fuzz::{MASTER, SESSION};
use bunker_repo_format::content_hash;
use bunker_repo_format::index::{IndexSegment, decode_segment, decode_segment_ids, encode_segment};
use bunker_repo_format::object::ObjectKind;
use libfuzzer_sys::fuzz_target;

const NAME: &str = "index/fuzz";

/// What every successfully decoded segment must satisfy.
fn check(segment: &IndexSegment, bytes: &[u8]) {
    let view = decode_segment_ids(bytes, MASTER.writer(), NAME)
        .expect("the writer view of a readable segment decodes");
    assert_eq!(view.packs.len(), segment.packs.len());
    for ((id, kind, blob_ids), pack) in view.packs.iter().zip(&segment.packs) {
        assert_eq!((id, kind), (&pack.id, &pack.kind));
        assert!(blob_ids.iter().eq(pack.blobs.iter().map(|b| &b.id)));
        assert!(pack.blobs.iter().all(|b| b.kind == pack.kind));
    }
    let again = encode_segment(segment, MASTER.writer(), &SESSION);
    assert_eq!(
        &decode_segment(&again, &MASTER, NAME).expect("re-encoded segment decodes"),
        segment
    );
}

fuzz_target!(|data: &[u8]| {
    // Raw mode.
    if let Ok(segment) = decode_segment(data, &MASTER, NAME) {
        check(&segment, data);
    }
    let _ = decode_segment_ids(data, MASTER.writer(), NAME);

    // Sealed mode.
    let [len_lo, len_hi, rest @ ..] = data else {
        return;
    };
    let ids_len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(rest.len());
    let (ids, locations) = rest.split_at(ids_len);
    let mut bytes = ObjectKind::Index.header().to_vec();
    bytes.extend_from_slice(SESSION.public());
    let header = bytes.clone();
    let mut ids_aad = b"bunker index ids".to_vec();
    ids_aad.extend_from_slice(&header);
    let sealed_ids = MASTER.writer().index_key().seal(&ids_aad, ids);
    let mut locations_aad = b"bunker index locations".to_vec();
    locations_aad.extend_from_slice(&header);
    locations_aad.extend_from_slice(&content_hash(&sealed_ids));
    bytes.extend_from_slice(&(sealed_ids.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&sealed_ids);
    SESSION
        .key()
        .seal_into(&locations_aad, locations, &mut bytes);
    if let Ok(segment) = decode_segment(&bytes, &MASTER, NAME) {
        check(&segment, &bytes);
    }
});
