//! `config`: the plaintext header decoder and the sealed body decoder.
//!
//! Raw mode decodes the input as a whole `config` object. Sealed mode seals the input as the
//! body under the config key (the key is derived from the writer secret, which this target
//! holds), so the body decoder is reached past the AEAD check too.

#![no_main]

use std::sync::LazyLock;

use bunker_repo_format::config::{Config, ConfigHeader, FeatureFlags, Operation, RepositoryParams};
use bunker_repo_format::crypto::{MasterKey, WriterKey};
use bunker_repo_format::keyslot::KdfParams;
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

/// The plaintext header of a valid config.
static HEADER: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let config = Config {
        header: ConfigHeader {
            repository_id: pattern(0x40),
            features: FeatureFlags::default(),
            kdf: KdfParams::insecure_for_tests(),
        },
        params: RepositoryParams::default(),
    };
    let bytes = config.encode(&WRITER);
    let (_, body_offset) = Config::decode_header(&bytes).expect("valid header");
    bytes[..body_offset].to_vec()
});

fn check(config: &Config) {
    for operation in [Operation::Read, Operation::Write, Operation::Prune] {
        let _ = config.check_features(operation);
    }
    let again =
        Config::decode(&config.encode(&WRITER), &WRITER).expect("re-encoded config decodes");
    assert_eq!(&again, config);
}

fuzz_target!(|data: &[u8]| {
    // Raw mode.
    if let Ok((header, body_offset)) = Config::decode_header(data) {
        assert!(body_offset <= data.len());
        let _ = header.kdf.validate();
    }
    if let Ok(config) = Config::decode(data, &WRITER) {
        check(&config);
    }

    // Sealed mode: the input is the body plaintext.
    let mut aad = b"bunker config".to_vec();
    aad.extend_from_slice(&HEADER);
    let mut object = HEADER.clone();
    object.extend_from_slice(&WRITER.config_key().seal(&aad, data));
    if let Ok(config) = Config::decode(&object, &WRITER) {
        check(&config);
    }
});
