//! A repository held in memory, for tests and dry runs.
//!
//! It keeps the same contracts as the durable backends ("durable" meaning: visible to every
//! later call on the same value) and adds hooks for fault injection.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::{Backend, ObjectMeta, validate_name};
use crate::error::{Error, Result};

/// An in-memory object store.
///
/// Objects are shared immutable buffers, so a `get` copies outside the lock and a reader
/// never sees a write in progress. A panic while the lock is held does not poison the
/// backend: every operation keeps working on the map as the panicking thread left it, which
/// is always consistent because each operation changes it in one step.
#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, Stored>>,
    /// Added to the system clock: lets tests move the storage's clock forward.
    clock_offset: Mutex<Duration>,
}

/// An object's bytes and the storage time it was written at.
#[derive(Clone)]
struct Stored {
    bytes: Arc<Vec<u8>>,
    modified: SystemTime,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes a stored object's bytes in place, bypassing the create-only rule: fault
    /// injection for tests (flip a bit, truncate a pack, ...).
    ///
    /// # Panics
    ///
    /// If no object is named `name`: a test that corrupts nothing would pass vacuously.
    pub fn corrupt(&self, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let mut objects = self.lock();
        match objects.get_mut(name) {
            Some(stored) => f(Arc::make_mut(&mut stored.bytes)),
            None => panic!("MemoryBackend::corrupt: no object named {name:?}"),
        }
    }

    /// Names of all stored objects, sorted.
    pub fn object_names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Moves this backend's clock (the `modified` time of objects written from now on)
    /// forward, as if `by` had passed: grace periods and session timeouts in tests.
    pub fn advance_clock(&self, by: Duration) {
        *self
            .clock_offset
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += by;
    }

    /// The backend's current time.
    pub fn now(&self) -> SystemTime {
        SystemTime::now()
            + *self
                .clock_offset
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Stored>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored object.
    fn object(&self, name: &str) -> Result<Stored> {
        validate_name(name)?;
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                object: name.to_owned(),
            })
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the bytes: a repository's worth of them makes useless output.
        f.debug_struct("MemoryBackend")
            .field("objects", &self.lock().len())
            .finish()
    }
}

/// The model of a request to a remote store that is given up before it is sent: fails
/// with [`Error::Abandoned`] once `abandon` is set.
fn not_abandoned(name: &str, abandon: &AtomicBool) -> Result<()> {
    if abandon.load(Ordering::SeqCst) {
        return Err(Error::Abandoned {
            object: name.to_owned(),
        });
    }
    Ok(())
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".to_owned()
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        validate_name(name)?;
        // Copy before taking the lock, to hold it briefly.
        let stored = Stored {
            bytes: Arc::new(bytes.to_vec()),
            modified: self.now(),
        };
        match self.lock().entry(name.to_owned()) {
            Entry::Occupied(_) => Err(Error::AlreadyExists {
                object: name.to_owned(),
            }),
            Entry::Vacant(slot) => {
                slot.insert(stored);
                Ok(())
            }
        }
    }

    /// A put given up before it started stores nothing (the model of a remote store whose
    /// request was dropped before it was sent).
    fn put_if_absent_abandoning(
        &self,
        name: &str,
        bytes: Vec<u8>,
        abandon: &AtomicBool,
    ) -> Result<()> {
        not_abandoned(name, abandon)?;
        self.put_if_absent(name, &bytes)
    }

    /// A read given up before it started reads nothing.
    fn get_range_to_read_abandoning(
        &self,
        name: &str,
        offset: u64,
        length: u64,
        abandon: &AtomicBool,
    ) -> Result<super::ReadBytes> {
        not_abandoned(name, abandon)?;
        self.get_range_to_read(name, offset, length)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        Ok(self.object(name)?.bytes.as_ref().clone())
    }

    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let bytes = self.object(name)?.bytes;
        let size = bytes.len();
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(length).ok())
            .and_then(|(start, len)| Some(start..start.checked_add(len)?))
            .filter(|range| range.end <= size);
        match range {
            Some(range) => Ok(bytes[range].to_vec()),
            None => Err(Error::corrupt(
                name,
                format!(
                    "range of {length} bytes at offset {offset} runs past the end of the \
                     {size}-byte object"
                ),
            )),
        }
    }

    fn head(&self, name: &str) -> Result<ObjectMeta> {
        let stored = self.object(name)?;
        Ok(ObjectMeta {
            name: name.to_owned(),
            size: stored.bytes.len() as u64,
            modified: stored.modified,
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let objects = self.lock();
        Ok(objects
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, stored)| ObjectMeta {
                name: name.clone(),
                size: stored.bytes.len() as u64,
                modified: stored.modified,
            })
            .collect())
    }

    fn delete(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        self.lock().remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::testing::conformance;

    #[test]
    fn passes_conformance() {
        conformance(&MemoryBackend::new());
    }

    #[test]
    fn corrupt_changes_only_the_named_object() {
        let backend = MemoryBackend::new();
        backend.put_if_absent("data/a", b"abc").expect("put");
        backend.put_if_absent("data/b", b"abc").expect("put");
        backend.corrupt("data/a", |bytes| bytes[1] ^= 1);
        assert_eq!(backend.get("data/a").expect("get"), b"acc");
        assert_eq!(backend.get("data/b").expect("get"), b"abc");
        assert_eq!(backend.object_names(), ["data/a", "data/b"]);
    }

    #[test]
    #[should_panic(expected = "no object named")]
    fn corrupting_a_missing_object_panics() {
        MemoryBackend::new().corrupt("data/a", |bytes| bytes.clear());
    }

    #[test]
    fn survives_a_poisoned_lock() {
        let backend = MemoryBackend::new();
        backend.put_if_absent("config", b"cfg").expect("put");
        let poisoner = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            backend.corrupt("config", |_| panic!("boom"));
        }));
        assert!(poisoner.is_err());
        assert!(backend.objects.is_poisoned());
        assert_eq!(backend.get("config").expect("get"), b"cfg");
        backend
            .put_if_absent("keys/k", b"k")
            .expect("put after poison");
    }
}
