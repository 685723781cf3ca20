//! `pack_trailer`: parsing a pack's header and sealed trailer (`pack::parse_pack`).
//!
//! Raw mode parses the input as a whole pack. Sealed mode builds a pack around the input:
//! byte 0 picks data or tree pack, bytes 1..3 give the length of a zero-filled body (`u16`
//! LE), and the rest is the trailer plaintext, sealed as a writer session would seal it. That
//! reaches the trailer decoder and the blob-bounds checks behind the AEAD.

#![no_main]

use bunker_fuzz::{MASTER, SESSION};
use bunker_repo_format::object::{ObjectKind, SESSION_HEADER_LEN};
use bunker_repo_format::pack::{self, PackTrailer};
use libfuzzer_sys::fuzz_target;

/// What every successfully parsed pack must satisfy.
fn check(parsed: &PackTrailer, pack: &[u8]) {
    let trailer_len = u32::from_le_bytes(pack[pack.len() - 4..].try_into().expect("4 bytes"));
    let trailer_offset = (pack.len() - 4 - trailer_len as usize) as u64;
    let mut next = SESSION_HEADER_LEN as u64;
    for entry in &parsed.entries {
        assert_eq!(pack::pack_kind(entry.kind), parsed.kind);
        let end = entry.offset.checked_add(u64::from(entry.length));
        assert!(entry.offset >= next, "blobs overlap or precede the header");
        assert!(
            end.is_some_and(|end| end <= trailer_offset),
            "blob outside the pack body"
        );
        next = end.unwrap_or(u64::MAX);
    }
}

fuzz_target!(|data: &[u8]| {
    // Raw mode.
    if let Ok(parsed) = pack::parse_pack(data, &MASTER, "data/fu/fuzz") {
        check(&parsed, data);
    }

    // Sealed mode.
    let [selector, len_lo, len_hi, plaintext @ ..] = data else {
        return;
    };
    let kind = if selector & 1 == 0 {
        ObjectKind::DataPack
    } else {
        ObjectKind::TreePack
    };
    let body_len = usize::from(u16::from_le_bytes([*len_lo, *len_hi]));
    let mut bytes = kind.header().to_vec();
    bytes.extend_from_slice(SESSION.public());
    bytes.resize(SESSION_HEADER_LEN + body_len, 0);
    let mut aad = b"bunker pack trailer".to_vec();
    aad.extend_from_slice(&bytes[..SESSION_HEADER_LEN]);
    let before = bytes.len();
    SESSION.key().seal_into(&aad, plaintext, &mut bytes);
    let sealed_len = (bytes.len() - before) as u32;
    bytes.extend_from_slice(&sealed_len.to_le_bytes());
    if let Ok(parsed) = pack::parse_pack(&bytes, &MASTER, "data/fu/fuzz") {
        assert_eq!(parsed.kind, kind);
        assert_eq!(&parsed.session_public, SESSION.public());
        check(&parsed, &bytes);
        assert_eq!(
            pack::encode_trailer(&parsed.entries),
            plaintext,
            "trailer encoding is not canonical"
        );
    }
});
