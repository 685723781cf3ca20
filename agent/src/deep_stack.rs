//! A thread stack deep enough for walking trees.
//!
//! The walks of a backup and a restore recurse once per directory level, a few KiB of
//! stack each. A directory tree thousands of levels deep is legal (and anyone who can
//! write into a backed-up tree can make one), so a walk on an ordinary thread (2 MiB for
//! a spawned one, 8 MiB for a main thread) would overflow its stack and abort the process.
//! Trees nest at most [`MAX_TREE_DEPTH`] levels (backups record deeper directories empty,
//! flagged incomplete, and report them), and every walk runs on a thread with
//! [`DEEP_STACK`] bytes of stack, room for several times that depth. The stack is address
//! space, not memory: the kernel maps pages as the walk first touches them.

pub use bunker_repo_format::tree::MAX_TREE_DEPTH;

/// Stack of a walking thread: 64 KiB per level of [`MAX_TREE_DEPTH`] (the walks take
/// 3-5 KiB per level).
pub const DEEP_STACK: usize = 256 << 20;

/// Runs `work` on a thread with [`DEEP_STACK`] bytes of stack and returns what it returns
/// (a panic in it carries on in the caller). Where no such thread can be started, it runs
/// on the calling thread.
pub fn run<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> T {
    let mut work = Some(work);
    let result = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .stack_size(DEEP_STACK)
            .spawn_scoped(scope, || work.take().map(|work| work()));
        spawned.ok().map(|handle| handle.join())
    });
    match result {
        Some(Ok(Some(value))) => value,
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        // Not started: `work` is still here.
        Some(Ok(None)) | None => match work.take() {
            Some(work) => work(),
            None => unreachable!("the walk ran and returned nothing"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(levels: usize) -> usize {
        // A frame the optimizer cannot drop.
        let frame = std::hint::black_box([levels as u8; 1024]);
        if levels == 0 {
            usize::from(frame[0])
        } else {
            1 + depth(levels - 1)
        }
    }

    #[test]
    fn recursion_far_past_an_ordinary_stack_returns() {
        // 40,000 frames of over 1 KiB: past a spawned thread's 2 MiB and a main thread's 8.
        assert_eq!(run("deep", || depth(40_000)), 40_000);
    }

    #[test]
    fn a_panic_carries_on_in_the_caller() {
        let caught = std::panic::catch_unwind(|| run("deep", || panic!("inside")));
        assert!(caught.is_err());
    }
}
