//! `bunker mount`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bunker_agent::Cancel;
use bunker_agent::mount::{Refresh, SnapshotFs};
use fuser::{Config, MountOption, SessionACL};

use crate::args::{GlobalOptions, MountArgs};
use crate::select::chosen_snapshots;
use crate::{exit, repo};

/// Serves the snapshots until the filesystem is unmounted (`umount`, or Ctrl-C/SIGTERM,
/// which unmount it); exit 0 then.
pub fn run(global: &GlobalOptions, args: &MountArgs, cancel: &Cancel) -> Result<u8> {
    let mountpoint = &args.mountpoint;
    // The kernel would mount over a file, or hide what a directory holds.
    let mut listing = std::fs::read_dir(mountpoint)
        .with_context(|| format!("cannot mount at {}", mountpoint.display()))?;
    if listing.next().is_some() {
        bail!(
            "cannot mount at {}: the directory is not empty",
            mountpoint.display()
        );
    }
    let repository = repo::open(global, "mount")?;
    let filter = args.select.filter()?;
    let snapshots = chosen_snapshots(&repository, &filter, &[])?;
    let index = repository.load_index_for_reading()?.index;
    let owner = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let shown = snapshots.len();
    let refresh = Refresh {
        every: args.refresh,
        select: Box::new(move |snapshot| filter.matches(snapshot)),
    };
    let filesystem = SnapshotFs::new(Arc::new(repository), index, snapshots, owner, Some(refresh));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("bunker".into()),
        MountOption::Subtype("bunker".into()),
        MountOption::DefaultPermissions,
    ];
    config.acl = if args.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(4);
    let session = fuser::Session::new(filesystem, mountpoint, &config)
        .with_context(|| format!("cannot mount at {}", mountpoint.display()))?;
    eprintln!(
        "bunker: {} snapshot(s) at {}; Ctrl-C or `umount {}` to stop",
        shown,
        mountpoint.display(),
        mountpoint.display()
    );
    serve(session, mountpoint, cancel)?;
    Ok(exit::OK)
}

/// How long a Ctrl-C waits for processes with files open in the mount to let go.
const LET_GO: Duration = Duration::from_secs(3);

/// Runs the session until it is unmounted (`umount`), or until `cancel` fires: then the
/// mount is detached at once, and once the processes that still have files open in it let
/// go (or after [`LET_GO`]; they lose them) the command ends.
fn serve(
    mut session: fuser::Session<SnapshotFs>,
    mountpoint: &Path,
    cancel: &Cancel,
) -> Result<()> {
    let mut unmounter = session.unmount_callable();
    let server = std::thread::Builder::new()
        .name("bunker-mount".into())
        .spawn(move || session.run())
        .context("starting the filesystem's thread")?;
    while !server.is_finished() {
        if cancel.is_cancelled() {
            // Busy (a process has a file or directory open in it): detached lazily.
            if unmounter.unmount().is_err() {
                nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH)
                    .with_context(|| format!("cannot unmount {}", mountpoint.display()))?;
            }
            let deadline = Instant::now() + LET_GO;
            while !server.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !server.is_finished() {
                eprintln!(
                    "bunker: unmounted {}; processes that still had files open in it lose them",
                    mountpoint.display()
                );
                return Ok(());
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match server.join() {
        Ok(result) => result.with_context(|| format!("serving {}", mountpoint.display())),
        Err(_) => bail!("the filesystem's thread panicked"),
    }
}
