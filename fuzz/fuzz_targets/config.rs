//! `config`: the plaintext header decoder and the sealed body decoder.
//!
//! Raw mode decodes the input as a whole `config` object. Sealed mode seals the input as the
//! body under the config key (the key is derived from the writer secret, which this target
//! holds), so the body decoder is reached past the AEAD check too.

#![no_main]

use std::sync::LazyLock;

use bunker_fuzz::{pattern, sealed_under, writer};
use bunker_repo_format::config::{Config, ConfigHeader, FeatureFlags, Operation, RepositoryParams};
use bunker_repo_format::keyslot::KdfParams;
use libfuzzer_sys::fuzz_target;

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
    let bytes = config.encode(writer());
    let (_, body_offset) = Config::decode_header(&bytes).expect("valid header");
    bytes[..body_offset].to_vec()
});

fn check(config: &Config) {
    for operation in [Operation::Read, Operation::Write, Operation::Prune] {
        let _ = config.check_features(operation);
    }
    let again =
        Config::decode(&config.encode(writer()), writer()).expect("re-encoded config decodes");
    assert_eq!(&again, config);
}

fuzz_target!(|data: &[u8]| {
    // Raw mode.
    if let Ok((header, body_offset)) = Config::decode_header(data) {
        assert!(body_offset <= data.len());
        let _ = header.kdf.validate();
    }
    if let Ok(config) = Config::decode(data, writer()) {
        check(&config);
    }

    // Sealed mode: the input is the body plaintext.
    let object = sealed_under(writer().config_key(), b"bunker config", &HEADER, data);
    if let Ok(config) = Config::decode(&object, writer()) {
        check(&config);
    }
});
