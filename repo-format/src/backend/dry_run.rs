//! A wrapper that reads from a store and writes nothing to it, for dry runs.
//!
//! [`DryRunBackend`] answers reads, heads and listings from the store it wraps, and keeps
//! every write to itself: a put is remembered by name, size and time (so that a later
//! head, listing or create-only put sees it, as the writer expects) and its bytes are
//! dropped; a delete or a retention change of a stored object succeeds without reaching
//! the store. A command run on it does all its work, with every figure it would report,
//! and leaves the store exactly as it was: `bunker backup --dry-run`.
//!
//! Reading back an object it was given fails with [`Error::Unsupported`]: the bytes are
//! gone. So it does not pass [`testing::conformance`](super::testing::conformance), and it
//! serves only commands that never read what they wrote (a backup does not).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::{Backend, ObjectMeta, ReadBytes, ReadHints, validate_name};
use crate::error::{Error, Result};

/// Reads from the wrapped store; keeps writes to itself (see the module documentation).
pub struct DryRunBackend {
    store: Arc<dyn Backend>,
    /// What was "written", by name; deletes of these remove them.
    written: Mutex<BTreeMap<String, ObjectMeta>>,
}

impl DryRunBackend {
    /// Wraps `store`.
    pub fn new(store: Arc<dyn Backend>) -> Self {
        Self {
            store,
            written: Mutex::new(BTreeMap::new()),
        }
    }

    /// The objects that would have been written (and not deleted again), by name.
    pub fn would_write(&self) -> Vec<ObjectMeta> {
        self.written().values().cloned().collect()
    }

    fn written(&self) -> MutexGuard<'_, BTreeMap<String, ObjectMeta>> {
        self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails for an object this wrapper was given: its bytes were never kept.
    fn not_written(&self, name: &str) -> Result<()> {
        if self.written().contains_key(name) {
            return Err(Error::Unsupported {
                object: name.to_owned(),
                what: "reading an object a dry run did not store".to_owned(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for DryRunBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DryRunBackend")
            .field("store", &self.store)
            .field("written", &self.written().len())
            .finish()
    }
}

impl Backend for DryRunBackend {
    fn location(&self) -> String {
        self.store.location()
    }

    fn read_hints(&self) -> ReadHints {
        self.store.read_hints()
    }

    fn put_concurrency(&self) -> usize {
        self.store.put_concurrency()
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        validate_name(name)?;
        let taken = || Error::AlreadyExists {
            object: name.to_owned(),
        };
        if self.written().contains_key(name) {
            return Err(taken());
        }
        match self.store.head(name) {
            Ok(_) => return Err(taken()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let meta = ObjectMeta {
            name: name.to_owned(),
            size: bytes.len() as u64,
            modified: SystemTime::now(),
        };
        match self.written().entry(name.to_owned()) {
            std::collections::btree_map::Entry::Occupied(_) => Err(taken()),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(meta);
                Ok(())
            }
        }
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.not_written(name)?;
        self.store.get(name)
    }

    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.not_written(name)?;
        self.store.get_range(name, offset, length)
    }

    fn get_range_to_read(&self, name: &str, offset: u64, length: u64) -> Result<ReadBytes> {
        self.not_written(name)?;
        self.store.get_range_to_read(name, offset, length)
    }

    fn get_range_to_read_abandoning(
        &self,
        name: &str,
        offset: u64,
        length: u64,
        abandon: &AtomicBool,
    ) -> Result<ReadBytes> {
        self.not_written(name)?;
        self.store
            .get_range_to_read_abandoning(name, offset, length, abandon)
    }

    fn will_read(&self, name: &str, offset: u64, length: u64) {
        self.store.will_read(name, offset, length);
    }

    fn head(&self, name: &str) -> Result<ObjectMeta> {
        if let Some(meta) = self.written().get(name) {
            return Ok(meta.clone());
        }
        self.store.head(name)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut listed = self.store.list(prefix)?;
        listed.extend(
            self.written()
                .range(prefix.to_owned()..)
                .take_while(|(name, _)| name.starts_with(prefix))
                .map(|(_, meta)| meta.clone()),
        );
        Ok(listed)
    }

    fn list_temps(&self) -> Result<Vec<ObjectMeta>> {
        self.store.list_temps()
    }

    fn remove_temp(&self, _name: &str) -> Result<()> {
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        self.written().remove(name);
        Ok(())
    }

    fn enable_lock(&self, policy: super::LockPolicy) -> Result<()> {
        let _ = policy;
        Ok(())
    }

    fn retained_until(&self, name: &str) -> Result<Option<SystemTime>> {
        if self.written().contains_key(name) {
            return Ok(None);
        }
        self.store.retained_until(name)
    }

    fn extend_retention(&self, name: &str, until: SystemTime) -> Result<()> {
        let _ = until;
        self.head(name).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    fn store_with(objects: &[(&str, &[u8])]) -> Arc<MemoryBackend> {
        let store = Arc::new(MemoryBackend::new());
        for (name, bytes) in objects {
            store.put_if_absent(name, bytes).expect("put into memory");
        }
        store
    }

    #[test]
    fn reads_come_from_the_store_and_writes_never_reach_it() {
        let store = store_with(&[("data/aa/old", b"stored bytes"), ("keys/k", b"key")]);
        let dry = DryRunBackend::new(store.clone());

        assert_eq!(dry.get("data/aa/old").expect("get"), b"stored bytes");
        assert_eq!(dry.get_range("data/aa/old", 7, 5).expect("range"), b"bytes");

        dry.put_if_absent("data/bb/new", b"twelve bytes")
            .expect("put");
        dry.put_if_absent_owned("snapshots/s", b"snap".to_vec())
            .expect("owned put");
        assert!(matches!(
            dry.put_if_absent("data/bb/new", b"again"),
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            dry.put_if_absent("data/aa/old", b"other"),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(dry.head("data/bb/new").expect("head").size, 12);
        let mut listed: Vec<String> = dry
            .list("data/")
            .expect("list")
            .into_iter()
            .map(|m| m.name)
            .collect();
        listed.sort();
        assert_eq!(listed, ["data/aa/old", "data/bb/new"]);
        assert!(matches!(
            dry.get("data/bb/new"),
            Err(Error::Unsupported { .. })
        ));

        dry.delete("data/aa/old")
            .expect("delete of a stored object");
        dry.delete("data/bb/new")
            .expect("delete of a written object");
        assert!(dry.head("data/bb/new").expect_err("deleted").is_not_found());
        let names: Vec<String> = dry.would_write().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["snapshots/s"]);

        // The store holds exactly what it held.
        let mut stored: Vec<String> = store
            .list("")
            .expect("list the store")
            .into_iter()
            .map(|m| m.name)
            .collect();
        stored.sort();
        assert_eq!(stored, ["data/aa/old", "keys/k"]);
        assert_eq!(store.get("data/aa/old").expect("get"), b"stored bytes");
    }
}
