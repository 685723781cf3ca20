//! Garbage-collection plans: the packs a prune run condemned.
//!
//! Phase 1 of prune writes a plan; a later run deletes the packs it names once the grace
//! period has passed on the storage's clock and they are still unreferenced. Writers read
//! every plan and never deduplicate against a condemned pack: they store such blobs anew.
//! Plans are sealed with the index key, which writers hold.

use crate::blob::BlobKind;
use crate::codec::{DecodeError, Decoder, Encoder};
use crate::crypto::WriterKey;
use crate::error::{Error, Result};
use crate::id::{PackId, content_hash};
use crate::object::{HEADER_LEN, ObjectKind};
use crate::tree::{Timestamp, decode_timestamp, encode_timestamp};

const BODY_VERSION: u8 = 1;

/// A plan's content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcPlan {
    /// When the planning run made it (client clock; informational).
    pub client_time: Timestamp,
    /// The condemned packs and the kind of blobs they hold.
    pub packs: Vec<(PackId, BlobKind)>,
}

fn aad(header: &[u8]) -> Vec<u8> {
    let mut aad = b"bunker gc plan".to_vec();
    aad.extend_from_slice(header);
    aad
}

impl GcPlan {
    /// Seals the plan and names it (`gc/<hex>`).
    pub fn encode(&self, writer: &WriterKey) -> (String, Vec<u8>) {
        let mut body = Encoder::new();
        body.u8(BODY_VERSION);
        encode_timestamp(&mut body, self.client_time);
        body.count(self.packs.len());
        for (pack, kind) in &self.packs {
            body.raw(pack.as_bytes()).u8(kind.byte());
        }
        let header = ObjectKind::GcPlan.header();
        let mut out = header.to_vec();
        writer
            .index_key()
            .seal_into(&aad(&header), &body.finish(), &mut out);
        let name = ObjectKind::GcPlan.name(&hex::encode(content_hash(&out)));
        (name, out)
    }

    /// Opens a plan.
    pub fn decode(bytes: &[u8], writer: &WriterKey, object: &str) -> Result<Self> {
        ObjectKind::GcPlan.check_header(bytes, object)?;
        let body = writer
            .index_key()
            .open(&aad(&bytes[..HEADER_LEN]), &bytes[HEADER_LEN..])
            .map_err(|_| Error::corrupt(object, "gc plan does not authenticate"))?;
        let corrupt = |e: DecodeError| Error::corrupt(object, e.to_string());
        let mut dec = Decoder::new(&body);
        dec.version("gc plan version", BODY_VERSION)
            .map_err(|e| Error::decoding(object, e))?;
        let client_time = decode_timestamp(&mut dec, "client time").map_err(corrupt)?;
        let count = dec.count(33, "pack count").map_err(corrupt)?;
        let mut packs = Vec::with_capacity(count);
        for _ in 0..count {
            let pack = PackId::from_bytes(dec.array("pack id").map_err(corrupt)?);
            let byte = dec.u8("blob kind").map_err(corrupt)?;
            let kind = BlobKind::from_byte(byte)
                .ok_or_else(|| Error::corrupt(object, format!("unknown blob kind {byte}")))?;
            packs.push((pack, kind));
        }
        dec.finish().map_err(corrupt)?;
        Ok(Self { client_time, packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn plan_round_trips(packs in proptest::collection::vec((any::<[u8; 32]>(), any::<bool>()), 0..20), sec: i64, nsec in 0u32..1_000_000_000) {
            let master = MasterKey::from_parts([1; 32], [2; 32]);
            let plan = GcPlan {
                client_time: Timestamp { sec, nsec },
                packs: packs.into_iter().map(|(p, tree)| (PackId::from_bytes(p), if tree { BlobKind::Tree } else { BlobKind::Data })).collect(),
            };
            let (name, bytes) = plan.encode(master.writer());
            prop_assert!(name.starts_with("gc/"));
            prop_assert_eq!(GcPlan::decode(&bytes, master.writer(), &name).unwrap(), plan);
            let mut broken = bytes.clone();
            broken[HEADER_LEN + 3] ^= 1;
            prop_assert!(GcPlan::decode(&broken, master.writer(), &name).is_err());
        }
    }

    #[test]
    fn a_plan_with_a_second_of_nanoseconds_is_refused() {
        let master = MasterKey::from_parts([1; 32], [2; 32]);
        let plan = GcPlan {
            client_time: Timestamp {
                sec: 5,
                nsec: 1_000_000_000,
            },
            packs: vec![(PackId::from_bytes([3; 32]), BlobKind::Data)],
        };
        let (name, bytes) = plan.encode(master.writer());
        let error = GcPlan::decode(&bytes, master.writer(), &name).unwrap_err();
        assert!(
            error.to_string().contains("1000000000 nanoseconds"),
            "{error}"
        );
    }
}
