//! `key_slot`: the key slot decoder, and opening a decoded slot.
//!
//! Opening runs Argon2id with the slot's own parameters, so it is attempted only for tiny
//! ones (at most 64 KiB): a forged slot may ask for up to 4 GiB, which is valid but would make
//! the fuzzer measure Argon2 instead of our code.

#![no_main]

use bunker_repo_format::keyslot::KeySlot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(slot) = KeySlot::decode(data, "keys/fuzz") {
        assert!(
            slot.kdf.validate().is_ok(),
            "decode returned out-of-bounds KDF parameters"
        );
        assert_eq!(slot.id.as_bytes(), &bunker_repo_format::content_hash(data));
        if slot.kdf.memory_kib <= 64 {
            let _ = slot.open(b"golden-password");
        }
    }
});
