//! Loading many small objects (index segments, snapshots, audit records, heartbeats, GC plans,
//! forget markers) a few at a time.
//!
//! Over S3 each object is a round trip; read one after another, a repository with hundreds
//! of index segments spends seconds waiting before any command starts. [`load_in_order`]
//! loads up to `width` objects at once on scoped threads and hands the results over in the
//! order of the ids, a batch of `width` at a time, so at most `width` loaded objects are in
//! memory whatever their number.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::backend::{Backend, ObjectMeta};
use crate::error::Result;

/// Calls `consume(id, load(id))` for every id, in order, until `consume` returns an error
/// (then no further batch is loaded, and that error is returned); up to `width` loads run
/// at once.
pub(crate) fn load_in_order<I: Sync, T: Send, E>(
    ids: &[I],
    width: usize,
    load: impl Fn(&I) -> T + Sync,
    mut consume: impl FnMut(&I, T) -> Result<(), E>,
) -> Result<(), E> {
    let width = width.max(1);
    if width == 1 {
        for id in ids {
            consume(id, load(id))?;
        }
        return Ok(());
    }
    for batch in ids.chunks(width) {
        let slots: Vec<Mutex<Option<T>>> = batch.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..batch.len() {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let (Some(id), Some(slot)) = (batch.get(i), slots.get(i)) else {
                            break;
                        };
                        let loaded = load(id);
                        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(loaded);
                    }
                });
            }
        });
        for (id, slot) in batch.iter().zip(slots) {
            let loaded = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
            // Every slot was filled: each index of the batch was taken by one thread.
            if let Some(loaded) = loaded {
                consume(id, loaded)?;
            }
        }
    }
    Ok(())
}

/// Reads every object listed under `prefix`, as many at once as `backend` takes small reads
/// (heartbeats, GC plans, forget markers), and calls `consume` with each and its bytes in
/// listing order, until `consume` fails. An object deleted between the listing and its read
/// (by a concurrent prune) is skipped; any other read error goes to `consume`.
pub(crate) fn read_listed(
    backend: &dyn Backend,
    prefix: &str,
    mut consume: impl FnMut(&ObjectMeta, Result<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    let listed = backend.list(prefix)?;
    load_in_order(
        &listed,
        backend.read_hints().small_reads,
        |meta| backend.get(&meta.name),
        |meta, read| match read {
            Err(e) if e.is_not_found() => Ok(()),
            read => consume(meta, read),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[test]
    fn results_come_in_order_with_at_most_width_loads_at_once() {
        let ids: Vec<u32> = (0..23).collect();
        for width in [1, 4, 8, 40] {
            let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let mut seen = Vec::new();
            let done: Result<(), ()> = load_in_order(
                &ids,
                width,
                |id| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Later ids finish first, so order is not completion order.
                    std::thread::sleep(Duration::from_millis(u64::from(30 - id) / 3));
                    running.fetch_sub(1, Ordering::SeqCst);
                    id * 10
                },
                |id, loaded| {
                    seen.push((*id, loaded));
                    Ok(())
                },
            );
            assert!(done.is_ok());
            let expected: Vec<(u32, u32)> = ids.iter().map(|&id| (id, id * 10)).collect();
            assert_eq!(seen, expected, "width {width}");
            let most = most.load(Ordering::SeqCst);
            assert!(
                most <= width && most >= width.min(ids.len()).min(2),
                "width {width}: {most}"
            );
        }
    }

    #[test]
    fn the_first_error_of_consume_stops_the_loading() {
        let ids: Vec<u32> = (0..20).collect();
        let loaded = AtomicUsize::new(0);
        let mut seen = Vec::new();
        let result = load_in_order(
            &ids,
            4,
            |id| {
                loaded.fetch_add(1, Ordering::SeqCst);
                *id
            },
            |id, _| {
                seen.push(*id);
                if *id == 5 {
                    Err(format!("id {id}"))
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(result, Err("id 5".to_owned()));
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(
            loaded.load(Ordering::SeqCst),
            8,
            "two batches of four, no more"
        );
    }
}
