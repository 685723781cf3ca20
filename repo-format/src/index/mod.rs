//! Index segments map blob ids to their place in packs; [`Index`] is the in-memory lookup
//! built from them.

mod id_set;
mod loader;
mod lookup;
mod packs;
mod records;
mod segment;

pub use id_set::BlobIdSet;
pub use loader::IndexLoader;
pub use lookup::{BlobLocation, Index};
pub use packs::PackTable;
#[cfg(test)]
pub(crate) use segment::encode_segment_with_versions;
pub use segment::{
    IndexSegment, IndexedPack, WriterView, decode_segment, decode_segment_ids, encode_segment,
};
