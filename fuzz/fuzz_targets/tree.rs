//! `tree`: decoding a tree blob's plaintext (`Tree::decode`).
//!
//! A tree that decodes must re-encode to the same bytes (tree blobs are content-addressed, so
//! the encoding has to be canonical), be accepted by `Tree::new`, and answer the accessors a
//! reader uses (`get`, `Entry::size`) without panicking.

#![no_main]

use bunker_repo_format::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Tree::decode(data) else {
        return;
    };
    assert_eq!(tree.encode(), data, "tree encoding is not canonical");
    for entry in tree.entries() {
        let _ = entry.size();
        let _ = entry.node.kind_name();
        assert!(tree.get(&entry.name).is_some_and(|found| found == entry));
    }
    let rebuilt = Tree::new(tree.entries().to_vec()).expect("a decoded tree is a valid tree");
    assert_eq!(rebuilt, tree);
});
