//! Command-line arguments.

use std::ffi::OsString;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use bunker_repo_format::check::ReadData;
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::retention::{CalendarDuration, GroupBy};
use bunker_repo_format::tree::Timestamp;
use clap::{Args, Parser, Subcommand};

use crate::select::SelectArgs;
use crate::values;

/// bunker: deduplicating, encrypted backups you can prove restore.
#[derive(Debug, Parser)]
#[command(name = "bunker", version, max_term_width = 100)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten, next_help_heading = "Global options")]
    pub global: GlobalOptions,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args, Clone)]
pub struct GlobalOptions {
    /// Repository location: a local directory, or `s3://BUCKET/PREFIX` (credentials from
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; AWS_ENDPOINT_URL for other
    /// S3-compatible servers; plain http:// needs BUNKER_S3_ALLOW_HTTP=1 unless on 127.0.0.1).
    #[arg(
        short = 'r',
        long = "repo",
        env = "BUNKER_REPOSITORY",
        global = true,
        value_name = "REPO",
        value_parser = values::location
    )]
    pub repo: Option<String>,
    /// Read the password from this file (first line).
    #[arg(long, env = "BUNKER_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(
        long,
        env = "BUNKER_PASSWORD_COMMAND",
        global = true,
        value_name = "COMMAND"
    )]
    pub password_command: Option<String>,
    /// Unlock the repository with this key file (from `bunker key add --out`) instead of a
    /// password. A put-only key file can back up, but not read, list or delete anything.
    #[arg(long, env = "BUNKER_KEY_FILE", global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Write to the repository at most RATE bytes per second, e.g. `500K`, `10M` (a unit
    /// is required), averaged over time: each object goes at full speed, the next waits.
    #[arg(
        long,
        env = "BUNKER_LIMIT_UPLOAD",
        global = true,
        value_name = "RATE",
        value_parser = values::rate
    )]
    pub limit_upload: Option<NonZeroU64>,
    /// Read from the repository at most RATE bytes per second, as --limit-upload.
    #[arg(
        long,
        env = "BUNKER_LIMIT_DOWNLOAD",
        global = true,
        value_name = "RATE",
        value_parser = values::rate
    )]
    pub limit_download: Option<NonZeroU64>,
    /// This host's cache directory (default: $XDG_CACHE_HOME/bunker, else ~/.cache/bunker).
    /// Per repository, below `<DIR>/<repository id>`: the files cache of backups, check's
    /// rolling state, and copies of an S3 repository's snapshots, index and trees, which
    /// commands then read instead of fetching them again (each copy is checked against
    /// its content hash; check and verify always read the repository itself).
    #[arg(long, env = "BUNKER_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Use no cache: every object is fetched from the repository and backups read no files
    /// cache (they still compare files with the parent snapshot). Wins over --cache-dir.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and directories.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List the entries of a snapshot.
    Ls(LsArgs),
    /// Show what changed between two snapshots, or two paths in them.
    ///
    /// One line per changed path: `+` added, `-` removed, `M` content changed, `T` kind
    /// changed (a file became a directory, ...), and with --metadata `U` metadata only
    /// (mode, owner, mtime, extended attributes). Then a summary, with the data each
    /// side holds that the other does not. Directories whose tree is the same on both
    /// sides are not compared entry by entry.
    Diff(DiffArgs),
    /// Find entries by name or path pattern in every snapshot (or the chosen ones).
    ///
    /// A pattern without `/` matches an entry's name at any depth (`*.conf`, `id_rsa`), one
    /// with `/` its absolute path (`/etc/**/*.conf`); `*` and `?` do not cross `/`, `**`
    /// does (the patterns of `backup --exclude`). Matches are listed per snapshot, oldest
    /// first; a directory unchanged across snapshots with nothing matching is opened once.
    Find(FindArgs),
    /// How much the snapshots hold and what they cost in the repository.
    ///
    /// Restore size is the files and bytes a restore of each snapshot brings back, summed
    /// over the snapshots; unique data is each blob reachable from them counted once, before
    /// and after compression; their ratios are what deduplication and compression save.
    /// Then what the repository stores, per kind of object, and (when every snapshot is
    /// counted) the indexed blobs no snapshot uses, which `prune` removes.
    Stats(StatsArgs),
    /// Restore a snapshot, or a path inside one.
    Restore(RestoreArgs),
    /// Browse snapshots as a read-only filesystem (FUSE) until Ctrl-C or `umount`.
    ///
    /// `snapshots/<time>-<id>/` holds each snapshot's tree (`snapshots/latest` the newest),
    /// `hosts/<host>/` and `tags/<key=value>/` link to the snapshots of a host or with a tag,
    /// `ids/<id>` to each. Files are read from the repository as they are read, each blob
    /// authenticated and re-hashed. The snapshots are those of the moment it mounts. Needs
    /// root (or fusermount3 for a user) and /dev/fuse.
    Mount(MountArgs),
    /// Verify the repository's structure and, with --read-data, every byte.
    Check(CheckArgs),
    /// Remove snapshots by a retention policy (the data goes with `prune`).
    ///
    /// Snapshots are grouped (by host and paths by default) and each group is judged on its
    /// own: a snapshot stays when at least one --keep-* rule keeps it, and the newest
    /// --keep-min of a group always stay. Periods are UTC hours, days, ISO weeks, months and
    /// years; --keep-within counts back from the group's newest snapshot, not from now.
    Forget(ForgetArgs),
    /// Change the tags of snapshots.
    ///
    /// Snapshots are immutable: each whose tags change is written again with the new tags
    /// (a new id; tree, time, host, paths and parent kept) and the old one is forgotten.
    /// Name the snapshots, or select them with --host/--tag/--path; --set replaces all
    /// tags, then --add and --remove apply.
    Tag(TagArgs),
    /// Write snapshots again without the entries that match exclude patterns.
    ///
    /// The way to take out a file backed up by mistake (a secret, a scratch file): each
    /// snapshot holding a match is written again without it (a directory goes with all it
    /// holds), tagged rewritten=<original's short id>, with the patterns added to its
    /// excludes; snapshots where nothing matches are left alone. Patterns are those of
    /// `backup --exclude`. The originals stay unless --forget is given; the bytes leave
    /// the repository once no snapshot uses them and `prune` runs. Volume and stream
    /// snapshots are not rewritten. With no snapshots named, every snapshot the filters
    /// select is examined.
    Rewrite(RewriteArgs),
    /// Delete data no snapshot needs: two-phase, safe while backups run.
    Prune(PruneArgs),
    /// Repair the index, or snapshots that lost data.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Write a snapshot holding every directory tree no snapshot reaches: the files of
    /// snapshots forgotten, deleted or damaged before a prune removed their data.
    ///
    /// Each such tree becomes a directory of the new snapshot's root named by its id
    /// (`/<tree id>/srv/app/...`); the snapshot records the path `/recovered` and the tag
    /// `recovered=<count>`. Run it before the next prunes delete the data (a plan's packs
    /// that a snapshot uses again are kept), and when no prune is running.
    Recover(RecoverArgs),
    /// Manage the repository's key slots (passwords).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a repository object as JSON.
    #[command(subcommand)]
    Cat(CatCommand),
    /// Object Lock maintenance of a locked repository.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Copy snapshots to another repository (created when missing), sending only the data
    /// it lacks.
    ///
    /// The target's password comes from BUNKER_TO_PASSWORD_FILE or BUNKER_TO_PASSWORD. A
    /// target created by `copy` shares this repository's chunker and blob ids (so
    /// deduplication carries over) but has its own data key and password. Snapshots already
    /// in the target are skipped; an interrupted copy is resumed by running it again.
    Copy(CopyArgs),
    /// Validate or show a `bunker-agent` policy file.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// List the audit records: who ran backup, restore, mount, forget, tag, rewrite, prune
    /// and check, where, and how it ended.
    Audit,
    /// The recovery report: per source the last backup and its age against the RPO, the
    /// last passing restore drill and its RTO, bytes stored per service/env tag, and what
    /// is out of policy. Text, --json, or --html FILE (one self-contained page).
    Report(ReportArgs),
    /// Restore drill: restore snapshots into a fresh target, verify every byte and all
    /// metadata against the snapshot, run a smoke command, time it, audit it.
    ///
    /// Without SNAPSHOT, drills the latest snapshot of each source (snapshots grouped by
    /// their `source` tag, untagged ones by host and paths) and fails on each snapshot that
    /// cannot be read. Exit codes: 20 the restore failed (or a snapshot cannot be read), 21
    /// the restored data differs, 22 a check failed (fsck, mount, database, smoke); the
    /// highest wins.
    Verify(VerifyArgs),
    /// List self-service restores (`restore --expire`) with their owner and expiry, or
    /// remove the expired ones (`restores expire`).
    Restores(RestoresArgs),
    /// List this host's cache directories (one per repository: files cache, rolling check
    /// state, copies of an S3 repository's metadata) with their size and last use, or
    /// remove those unused for a while.
    ///
    /// Needs no repository or password. A cache directory only saves work: without it, a
    /// backup that cannot read a parent snapshot (a put-only key) reads every file again.
    Cache(CacheArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    ///
    /// E.g. `bunker completion bash > /etc/bash_completion.d/bunker`, or for zsh into a
    /// directory on `$fpath` as `_bunker`. Needs no repository.
    Completion(CompletionArgs),
}

/// `bunker completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `bunker cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Remove the directories not used for --max-unused.
    #[arg(long)]
    pub cleanup: bool,
    /// How long a directory may go unused before --cleanup removes it (e.g. 12h, 30d).
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = values::duration)]
    pub max_unused: Duration,
}

/// `bunker report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Write the report as one self-contained HTML page (inline CSS and SVG charts).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// The agent policy (sources, RPOs, verify windows).
    #[command(flatten)]
    pub policy: PolicyFileArg,
    /// Exit with code 23 when any source is out of policy.
    #[arg(long)]
    pub strict: bool,
}

/// `bunker verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// `latest`, `latest~N` (the Nth before it) or an id prefix; default: the latest snapshot of each source.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,
    /// Restore into DIR (must not exist or be empty) instead of a temporary directory;
    /// with several drills, one subdirectory per snapshot.
    #[arg(long, short = 't', value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Shell command run against the restored data (sh -c, with BUNKER_RESTORE_DIR,
    /// BUNKER_SNAPSHOT and, for volumes, BUNKER_RESTORE_IMAGE); non-zero fails the drill.
    #[arg(long, value_name = "CMD")]
    pub smoke: Option<String>,
    /// Do not run `fsck -n -f` on a restored volume image.
    #[arg(long)]
    pub no_fsck: bool,
    /// Mount a restored volume image read-only and run the smoke command inside it
    /// (BUNKER_RESTORE_DIR is the mountpoint); root only.
    #[arg(long)]
    pub mount: bool,
    /// Leave the restored target in place (also when the drill fails).
    #[arg(long)]
    pub keep: bool,
    /// The policy whose source settings drive each drill (the snapshot's `source` tag
    /// names the source): `verify.smoke`, `fsck`, `mount`, and the database step of a
    /// source with `database = "postgresql"`. --smoke, --no-fsck and --mount override.
    #[command(flatten)]
    pub policy: PolicyFileArg,
    /// Which snapshots `latest` picks from (without SNAPSHOT: which sources' latest are
    /// drilled).
    #[command(flatten, next_help_heading = "Choosing snapshots")]
    pub select: SelectArgs,
}

/// `bunker policy`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file; every problem is reported with its line and key (a TOML syntax
    /// error or an unknown key stops the check: it is reported alone).
    Check {
        /// The policy file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the effective policy: every template applied.
    Show {
        /// The policy file.
        #[arg(value_name = "FILE", default_value = bunker_agent::policy::DEFAULT_POLICY_PATH)]
        file: PathBuf,
    },
}

/// `bunker copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The target repository.
    #[arg(long, value_name = "REPO", value_parser = values::location)]
    pub to: String,
    /// Snapshots to copy (`latest`, `latest~N` or id prefixes; default: all).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
}

/// `bunker init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Argon2id memory cost of the key slot, in KiB.
    #[arg(
        long,
        default_value_t = KdfParams::default().memory_kib,
        value_name = "KIB",
        value_parser = clap::value_parser!(u32).range(8..=4 << 20)
    )]
    pub kdf_memory_kib: u32,
    /// Argon2id passes.
    #[arg(
        long,
        default_value_t = KdfParams::default().iterations,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    pub kdf_iterations: u32,
    /// Argon2id lanes (filled in parallel on the available cores).
    #[arg(
        long,
        default_value_t = KdfParams::default().parallelism,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    pub kdf_lanes: u32,
    /// How new data is written.
    #[command(flatten)]
    pub params: RepositoryParamArgs,
}

/// The repository parameters `init` sets (and `repair config` sets again).
#[derive(Debug, Args)]
pub struct RepositoryParamArgs {
    /// zstd level for new data (0 stores data uncompressed).
    #[arg(
        long,
        default_value_t = 3,
        value_name = "LEVEL",
        value_parser = clap::value_parser!(i32).range(0..=22)
    )]
    pub compression: i32,
    /// Fixed chunk size for volume backups, in KiB (a power of two, 4 KiB..64 MiB).
    #[arg(long, default_value_t = 1024, value_name = "KIB", value_parser = values::volume_chunk_kib)]
    pub volume_chunk_kib: u32,
    /// Write every object locked (S3 Object Lock; read-only files with a recorded
    /// retain-until date on a local directory). The bucket must have Object Lock enabled.
    #[arg(long, value_name = "MODE", value_parser = ["governance", "compliance"], requires = "lock_period")]
    pub lock_mode: Option<String>,
    /// How long each object stays locked after it is written, e.g. `30d`, `720h`, `1y`.
    #[arg(long, value_name = "PERIOD", requires = "lock_mode", value_parser = values::lock_period)]
    pub lock_period: Option<Duration>,
}

/// `bunker lock`.
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Extend the locks of the objects live snapshots need, where they would lapse within
    /// the lock period.
    Extend(LockExtendArgs),
}

/// `bunker lock extend`.
#[derive(Debug, Args)]
pub struct LockExtendArgs {
    /// Only show what would be extended.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// `bunker backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(
        required_unless_present_any = [
            "stdin",
            "stdin_from_command",
            "volume",
            "files_from",
            "files_from_verbatim",
            "files_from_raw"
        ],
        conflicts_with_all = ["stdin", "stdin_from_command", "volume"],
        value_name = "PATH"
    )]
    pub paths: Vec<PathBuf>,
    /// Back up the paths listed in FILE too, one per line (blank lines and lines starting
    /// with `#` are skipped; `-` reads standard input; repeatable).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["stdin", "stdin_from_command", "volume"])]
    pub files_from: Vec<PathBuf>,
    /// As --files-from, but every line is a path as written (only blank lines skipped).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["stdin", "stdin_from_command", "volume"])]
    pub files_from_verbatim: Vec<PathBuf>,
    /// As --files-from, but the paths are separated by NUL bytes (`find ... -print0`), so
    /// any name, one with a newline included, can be listed.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["stdin", "stdin_from_command", "volume"])]
    pub files_from_raw: Vec<PathBuf>,
    /// Back up standard input as one file (named by --stdin-filename).
    #[arg(long, conflicts_with = "stdin_from_command")]
    pub stdin: bool,
    /// Run this shell command and back up its output as one file (named by
    /// --stdin-filename); a non-zero exit writes no snapshot. E.g. `pg_dump -Fc orders`.
    #[arg(long, value_name = "COMMAND")]
    pub stdin_from_command: Option<String>,
    /// The file name a --stdin or --stdin-from-command backup is stored under.
    #[arg(long, default_value = "stdin", value_name = "NAME")]
    pub stdin_filename: String,
    /// Back up a block device or disk image with fixed-size chunks instead of paths.
    #[arg(long, value_name = "DEVICE_OR_IMAGE", conflicts_with_all = ["excludes", "with_atime"])]
    pub volume: Option<PathBuf>,
    /// Name of the volume in the snapshot (default: the device's base name).
    #[arg(long, value_name = "NAME", requires = "volume")]
    pub name: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = values::tag)]
    pub tags: Vec<(String, String)>,
    /// Host name to record (default: this machine's).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Snapshot time (RFC 3339; default: now).
    #[arg(long, value_name = "TIME", value_parser = values::time)]
    pub time: Option<Timestamp>,
    /// Leave out entries matching this pattern (repeatable). Without `/` it matches names
    /// at any depth; with `/`, absolute paths.
    #[arg(long = "exclude", short = 'e', value_name = "GLOB", value_parser = values::exclude)]
    pub excludes: Vec<String>,
    /// Read exclude patterns from FILE, one per line (blank lines and lines starting with
    /// `#` are skipped; repeatable).
    #[arg(long, value_name = "FILE", conflicts_with = "volume")]
    pub exclude_file: Vec<PathBuf>,
    /// Leave out every directory that holds a file NAME (`NAME:HEADER`: one that starts
    /// with HEADER), e.g. `.nobackup` (repeatable).
    #[arg(long, value_name = "NAME[:HEADER]", conflicts_with = "volume")]
    pub exclude_if_present: Vec<String>,
    /// Leave out cache directories: those holding a CACHEDIR.TAG file with the signature of
    /// the Cache Directory Tagging Specification.
    #[arg(long, conflicts_with = "volume")]
    pub exclude_caches: bool,
    /// Leave out regular files larger than SIZE (e.g. `500M`, `2G`); a file named as a path
    /// to back up is backed up whatever its size.
    #[arg(long, value_name = "SIZE", value_parser = values::size, conflicts_with = "volume")]
    pub exclude_larger_than: Option<u64>,
    /// Stay on the filesystem of each path given: a directory on another filesystem (a
    /// mount point: /proc, a network share, another disk) is recorded empty, and named on
    /// stderr.
    #[arg(long, short = 'x', conflicts_with = "volume")]
    pub one_file_system: bool,
    /// Parent snapshot (default: the latest of this host and these paths).
    #[arg(long, value_name = "SNAPSHOT")]
    pub parent: Option<String>,
    /// Record access times too (each backup then rewrites the trees whose access times
    /// moved).
    #[arg(long)]
    pub with_atime: bool,
    /// Read every file again: neither the parent snapshot nor the files cache is trusted to
    /// say a file is unchanged (the parent is still recorded as this snapshot's).
    #[arg(long, conflicts_with_all = ["stdin", "stdin_from_command", "volume"])]
    pub force: bool,
    /// Tell an unchanged file by its size and modification time alone: neither inode,
    /// device nor status-change time (for network and FUSE filesystems that renumber
    /// files on each mount).
    #[arg(long, conflicts_with_all = ["stdin", "stdin_from_command", "volume"])]
    pub ignore_inode: bool,
    /// Do not compare status-change times to tell an unchanged file (`chmod`, `chown` and
    /// new links move them without touching the content).
    #[arg(long, conflicts_with_all = ["stdin", "stdin_from_command", "volume"])]
    pub ignore_ctime: bool,
    /// Cut the files read into chunks of SIZE (`64K`, a power of two from 4K to 8M) at the
    /// multiples of SIZE in each file, instead of content-defined chunks: for files rewritten
    /// in place a page at a time (database data directories, disk images), where a changed
    /// page then re-stores one chunk. Unchanged files keep the chunks they have.
    #[arg(long, value_name = "SIZE", value_parser = values::fixed_chunks, conflicts_with_all = ["stdin", "stdin_from_command", "volume"])]
    pub fixed_chunks: Option<bunker_agent::backup::FixedChunks>,
    /// Cut disk images found among the files (a partition table, a filesystem's superblock
    /// or a virtual disk's header at their start: VM disks, `dd` copies) by content, as other
    /// files. By default they are cut at the repository's volume chunk size, as `--volume`
    /// cuts a disk.
    #[arg(long, conflicts_with_all = ["stdin", "stdin_from_command", "volume", "fixed_chunks"])]
    pub images_by_content: bool,
    /// Skip opening and re-hashing each new blob before it is packed (measurements only).
    #[arg(long, hide = true)]
    pub skip_verify: bool,
    /// Do everything but store: read, chunk, compress and seal as a backup does and report
    /// what it would add, leaving the repository and the files cache exactly as they were.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Write no snapshot when nothing changed since the parent snapshot (the same paths,
    /// every entry in them and its metadata the same; the directories on the way to them
    /// may change): frequent backups of a quiet tree leave no trail of identical snapshots. The recovery report ages a source by its newest snapshot, which
    /// a skipped backup does not renew.
    #[arg(long, conflicts_with_all = ["stdin", "stdin_from_command", "volume"])]
    pub skip_if_unchanged: bool,
    /// Name each file read as it goes: `new PATH` or `changed PATH` (unchanged files are
    /// not read, so not named). With --json, JSON lines on stderr. With --dry-run: what a
    /// backup would read, to try exclude patterns.
    #[arg(short = 'v', long, conflicts_with_all = ["stdin", "stdin_from_command", "volume"])]
    pub verbose: bool,
}

/// `bunker snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Which snapshots to list.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Only the newest N snapshots that match (default 1 when given without a number);
    /// with --group-by, the newest N of each group.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1")]
    pub latest: Option<usize>,
    /// List the snapshots in groups: a comma-separated subset of host, paths and tags
    /// (how `forget` groups them), each group under its own heading (`--json`: objects
    /// with `group_key` and `snapshots`).
    #[arg(long, short = 'g', value_name = "FIELDS", value_parser = values::group_by)]
    pub group_by: Option<GroupBy>,
}

/// `bunker ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// `latest`, `latest~N` (the Nth before it) or an id prefix, optionally followed by `:PATH` (any bytes).
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    pub snapshot: OsString,
    /// Show mode, owner, size and time too.
    #[arg(short, long)]
    pub long: bool,
    /// Which snapshots `latest` picks from.
    #[command(flatten, next_help_heading = "Choosing `latest`")]
    pub select: SelectArgs,
}

impl Command {
    /// Whether the command watches for SIGINT/SIGTERM and stops at a safe point (what it
    /// has done stays valid, nothing half-committed): it gets the cancel flag.
    pub fn stops_at_safe_points(&self) -> bool {
        matches!(
            self,
            Command::Backup(_)
                | Command::Restore(_)
                | Command::Forget(_)
                | Command::Copy(_)
                | Command::Verify(_)
                | Command::Mount(_)
        )
    }
}

/// `bunker diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old side: `latest`, `latest~N` (the Nth before it) or an id prefix, optionally followed by `:PATH`.
    #[arg(value_name = "OLD[:PATH]")]
    pub old: OsString,
    /// The new side: `latest`, `latest~N` (the Nth before it) or an id prefix, optionally followed by `:PATH`.
    #[arg(value_name = "NEW[:PATH]")]
    pub new: OsString,
    /// List paths whose metadata alone changed (`U`) too.
    #[arg(long)]
    pub metadata: bool,
    /// Which snapshots `latest` picks from.
    #[command(flatten, next_help_heading = "Choosing `latest`")]
    pub select: SelectArgs,
}

/// `bunker stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Count only these snapshots (`latest`, `latest~N` or id prefixes); by default every snapshot that
    /// matches the filters.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Which snapshots are counted (and which `latest` means).
    #[command(flatten, next_help_heading = "Snapshots counted")]
    pub select: SelectArgs,
}

/// `bunker find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// Patterns; an entry matching any of them is listed.
    #[arg(value_name = "PATTERN", required = true, value_parser = values::exclude)]
    pub patterns: Vec<String>,
    /// Search only this snapshot (`latest`, `latest~N` (the Nth before it) or an id prefix; repeatable).
    #[arg(long = "snapshot", short = 's', value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Show mode, owner, size and time too.
    #[arg(short, long)]
    pub long: bool,
    /// Which snapshots are searched (and which `latest` means).
    #[command(flatten, next_help_heading = "Snapshots searched")]
    pub select: SelectArgs,
}

/// `bunker restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// `latest`, `latest~N` (the Nth before it) or an id prefix, optionally followed by `:PATH` (any bytes).
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    pub snapshot: OsString,
    /// Directory to restore into (created if missing).
    #[arg(
        long,
        short = 't',
        value_name = "DIR",
        required_unless_present_any = ["stdout", "volume_target"],
        conflicts_with_all = ["stdout", "volume_target"]
    )]
    pub target: Option<PathBuf>,
    /// Write a volume snapshot back to this block device or image file (images stay
    /// sparse; on a device, holes are written as zeros).
    #[arg(long, value_name = "DEVICE_OR_IMAGE", conflicts_with = "stdout")]
    pub volume_target: Option<PathBuf>,
    /// Stream one file (SNAPSHOT:FILE) or a volume snapshot to stdout, in order; a
    /// directory (SNAPSHOT:DIR, or the whole snapshot) as a tar archive whose extraction
    /// gives what --target gives (GNU format, extended attributes as PAX records).
    #[arg(long)]
    pub stdout: bool,
    /// A self-service restore: record a lease so the target is removed after DURATION
    /// (e.g. 30m, 4h, 7d) by `bunker restores expire` or the agent. The target must be a
    /// new or empty directory (or a new image file).
    #[arg(long, value_name = "DURATION", conflicts_with = "stdout", value_parser = values::duration)]
    pub expire: Option<Duration>,
    /// With --expire: who the restore is for (default: the invoking user; SUDO_USER under
    /// sudo).
    #[arg(long, value_name = "NAME", requires = "expire")]
    pub owner: Option<String>,
    /// Restore only entries whose path in the snapshot matches (and what is below a
    /// matching directory; the directories on the way come too). The patterns of `backup
    /// --exclude`: without `/` a name at any depth, with `/` an absolute path. Repeatable.
    #[arg(
        long = "include",
        value_name = "PATTERN",
        conflicts_with_all = ["stdout", "volume_target"],
        value_parser = values::exclude
    )]
    pub includes: Vec<String>,
    /// Leave out entries whose path in the snapshot matches, and what is below them; wins
    /// over --include. Repeatable.
    #[arg(
        long = "exclude",
        value_name = "PATTERN",
        conflicts_with_all = ["stdout", "volume_target"],
        value_parser = values::exclude
    )]
    pub excludes: Vec<String>,
    /// After a restore without errors, delete what the target holds and the snapshot does
    /// not, inside the paths the backup was given (not beside them) and among the entries
    /// --include/--exclude select: the target becomes the snapshot's directory. Never
    /// crosses into another filesystem.
    #[arg(long, conflicts_with_all = ["stdout", "volume_target"])]
    pub delete: bool,
    /// Write nothing: report what the restore would write, what is already in place (each
    /// file read and hashed), content the repository lost, and with --delete what would go.
    #[arg(short = 'n', long, conflicts_with_all = ["stdout", "volume_target", "expire"])]
    pub dry_run: bool,
    /// What to do with an entry the target already holds where the snapshot has one. A
    /// directory there is always merged into; this decides for the entries in it
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        default_value_t = OverwriteArg::Always,
        conflicts_with_all = ["stdout", "volume_target"]
    )]
    pub overwrite: OverwriteArg,
    /// Read every file back once written (or the volume, once restored) and check each
    /// chunk against the snapshot: a file that differs is an error (exit 5) and is left
    /// without its metadata. With --overwrite if-changed, a file already there of the
    /// snapshot's size and time is read and hashed too (and rewritten if it differs)
    #[arg(long, conflicts_with_all = ["stdout", "dry_run"])]
    pub verify: bool,
    /// The policy whose `agent.restore_roots` and `agent.state_dir` apply.
    #[command(flatten)]
    pub policy: PolicyFileArg,
    /// Which snapshots `latest` picks from.
    #[command(flatten, next_help_heading = "Choosing `latest`")]
    pub select: SelectArgs,
}

/// `restore --overwrite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OverwriteArg {
    /// Replace it unless it is a file with the snapshot's content (read and hashed)
    Always,
    /// As always, but a file of the snapshot's size and modification time is taken as in
    /// place without reading it
    IfChanged,
    /// Replace it only when the snapshot's entry is newer (modification time); else keep
    /// it as it is
    IfNewer,
    /// Keep it as it is: only what is missing is restored
    Never,
}

impl From<OverwriteArg> for bunker_agent::restore::Overwrite {
    fn from(arg: OverwriteArg) -> Self {
        match arg {
            OverwriteArg::Always => Self::Always,
            OverwriteArg::IfChanged => Self::IfChanged,
            OverwriteArg::IfNewer => Self::IfNewer,
            OverwriteArg::Never => Self::Never,
        }
    }
}

/// `--policy FILE`: the agent policy a command follows (restore roots, lease directory,
/// RPOs, drill settings).
#[derive(Debug, Args, Clone, Default)]
pub struct PolicyFileArg {
    /// The agent policy file (default: /etc/bunker/agent.toml when it exists; without a
    /// policy, restores may go anywhere, leases live in ~/.local/state/bunker/restores,
    /// and drills use only the command-line settings).
    #[arg(long = "policy", env = "BUNKER_POLICY", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// `bunker restores`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RestoresArgs {
    /// Remove expired restores instead of listing them.
    #[command(subcommand)]
    pub command: Option<RestoresCommand>,
    /// List every owner's restores (default: only the invoking user's).
    #[arg(long)]
    pub all: bool,
    /// The policy whose `agent.state_dir` holds the leases.
    #[command(flatten)]
    pub policy: PolicyFileArg,
}

/// `bunker restores ...`.
#[derive(Debug, Subcommand)]
pub enum RestoresCommand {
    /// Remove the targets of expired restores and their leases (what the agent does on
    /// schedule). Removal never follows symlinks and never leaves the restore roots.
    Expire(RestoresExpireArgs),
}

/// `bunker restores expire`.
#[derive(Debug, Args)]
pub struct RestoresExpireArgs {
    /// Only these leases (ids or unique prefixes).
    #[arg(value_name = "LEASE")]
    pub leases: Vec<String>,
    /// Also remove restores that have not expired yet: the named leases, or all of the
    /// invoking user's.
    #[arg(long)]
    pub now: bool,
    /// The policy whose `agent.state_dir` holds the leases and whose restore roots apply.
    #[command(flatten)]
    pub policy: PolicyFileArg,
}

/// `bunker tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The snapshots (`latest`, `latest~N` or id prefixes); with none, every snapshot the filters select.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Replace all tags with these (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = values::tag)]
    pub set: Vec<(String, String)>,
    /// Add this tag (repeatable).
    #[arg(long = "add", value_name = "KEY=VALUE", value_parser = values::tag)]
    pub add: Vec<(String, String)>,
    /// Remove this tag (repeatable).
    #[arg(long = "remove", value_name = "KEY=VALUE", value_parser = values::tag)]
    pub remove: Vec<(String, String)>,
    /// Which snapshots are changed (and which `latest` means).
    #[command(flatten, next_help_heading = "Snapshots changed")]
    pub select: SelectArgs,
}

/// `bunker rewrite`.
#[derive(Debug, Args)]
pub struct RewriteArgs {
    /// The snapshots (`latest`, `latest~N` or id prefixes); with none, every snapshot the filters select.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Leave out entries matching this pattern (repeatable). Without `/` it matches names
    /// at any depth; with `/`, absolute paths.
    #[arg(long = "exclude", short = 'e', value_name = "GLOB", value_parser = values::exclude)]
    pub excludes: Vec<String>,
    /// Read exclude patterns from FILE, one per line (blank lines and lines starting with
    /// `#` are skipped; repeatable).
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Forget each original once its rewritten snapshot is stored.
    #[arg(long)]
    pub forget: bool,
    /// Show what would be left out of which snapshot; write nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Which snapshots are examined (and which `latest` means).
    #[command(flatten, next_help_heading = "Snapshots examined")]
    pub select: SelectArgs,
}

/// `bunker mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// An empty directory to mount on.
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Let other users in too (each file's owner and mode still apply).
    #[arg(long)]
    pub allow_other: bool,
    /// Read the list of snapshots again at most this often, when a directory of the
    /// layout is looked into: new snapshots appear, forgotten ones go (`0s`: every time).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = values::duration)]
    pub refresh: Duration,
    /// Which snapshots are shown.
    #[command(flatten, next_help_heading = "Snapshots shown")]
    pub select: SelectArgs,
}

/// `bunker forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Forget exactly these snapshots (ids, unique prefixes, `latest` or `latest~N`) instead
    /// of applying --keep-* rules; with --host, --tag or --path each must match them
    /// (`latest` is the newest that does).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Keep the newest N snapshots.
    #[arg(long, short = 'l', value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, short = 'H', value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, short = 'd', value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, short = 'w', value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, short = 'm', value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, short = 'y', value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this duration of the group's newest snapshot
    /// (e.g. 30d, 12h, 1y2m3d4h; m is months).
    #[arg(long, value_name = "DURATION", value_parser = values::calendar_duration)]
    pub keep_within: Option<CalendarDuration>,
    /// Keep the newest snapshot of each hour that has one, within this duration of the
    /// group's newest snapshot.
    #[arg(long, value_name = "DURATION", value_parser = values::calendar_duration)]
    pub keep_within_hourly: Option<CalendarDuration>,
    /// Same per day (e.g. --keep-within-daily 7d).
    #[arg(long, value_name = "DURATION", value_parser = values::calendar_duration)]
    pub keep_within_daily: Option<CalendarDuration>,
    /// Same per ISO week.
    #[arg(long, value_name = "DURATION", value_parser = values::calendar_duration)]
    pub keep_within_weekly: Option<CalendarDuration>,
    /// Same per month.
    #[arg(long, value_name = "DURATION", value_parser = values::calendar_duration)]
    pub keep_within_monthly: Option<CalendarDuration>,
    /// Same per year.
    #[arg(long, value_name = "DURATION", value_parser = values::calendar_duration)]
    pub keep_within_yearly: Option<CalendarDuration>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "KEY=VALUE", value_parser = values::tag)]
    pub keep_tags: Vec<(String, String)>,
    /// Never remove the newest N snapshots of a group, whatever the rules say.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub keep_min: u32,
    /// Group by a comma-separated subset of host, paths and tags ("" for one group); the
    /// tags rewrite and repair add (rewritten=, repaired=) do not count.
    #[arg(
        long,
        short = 'g',
        default_value = "host,paths",
        value_name = "FIELDS",
        value_parser = values::group_by
    )]
    pub group_by: GroupBy,
    /// Show what would be removed, remove nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run `prune` afterwards (its JSON follows the forget JSON as a second line).
    #[arg(long)]
    pub prune: bool,
    /// With --prune: the grace period (see `bunker prune --help`).
    #[arg(
        long,
        default_value = "24h",
        value_name = "DURATION",
        requires = "prune",
        value_parser = values::duration
    )]
    pub grace: Duration,
    /// With --prune: unused space tolerated, in percent.
    #[arg(
        long,
        default_value = "5",
        value_name = "PERCENT",
        requires = "prune",
        value_parser = values::percent
    )]
    pub max_unused: f64,
    /// With --prune: most bytes to repack.
    #[arg(long, value_name = "SIZE", requires = "prune", value_parser = values::size)]
    pub max_repack: Option<u64>,
    /// With --prune: delete the audit records stored more than DURATION ago (see `bunker
    /// prune --help`).
    #[arg(long, value_name = "DURATION", requires = "prune", value_parser = values::duration)]
    pub keep_audit: Option<Duration>,
    /// Only these snapshots are considered; the others stay.
    #[command(flatten, next_help_heading = "Snapshots considered")]
    pub select: SelectArgs,
}

/// `bunker check`.
///
/// The structure (snapshots, trees, index, pack trailers) is always checked in full; the
/// options below choose which packs are also read byte by byte.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read every pack in full and verify every blob.
    #[arg(long, conflicts_with_all = ["read_data_subset", "max_duration"])]
    pub read_data: bool,
    /// Read part of the packs: `N/M` reads subset N of M (deterministic by pack id, so
    /// 1/M .. M/M together read every pack once), `P%` a random P percent of them.
    #[arg(
        long,
        value_name = "N/M|P%",
        conflicts_with = "max_duration",
        value_parser = values::read_data_subset
    )]
    pub read_data_subset: Option<ReadData>,
    /// Rolling verification: read the packs least recently verified first until DURATION
    /// (e.g. 45m, 1h, 1d) has passed, and remember what was found intact in the local cache.
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub max_duration: Option<Duration>,
}

/// `bunker repair ...`.
#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Index every pack that the index lacks or lists wrongly, from the packs' own
    /// trailers; replace damaged index segments.
    Index(RepairIndexArgs),
    /// Replace each broken snapshot by one without the files whose data is lost (tagged
    /// repaired=<old id>); intact snapshots are never touched.
    Snapshots(RepairSnapshotsArgs),
    /// Rebuild a damaged or missing config from a key slot the password opens. Give the
    /// parameters `init` was given (--compression, --volume-chunk-kib, --lock-mode,
    /// --lock-period): they steer only how new data is written.
    Config(RepairConfigArgs),
    /// Salvage damaged packs: copy every blob that still opens into new packs, take the
    /// damaged packs out of the index and delete them. The next backup then stores the
    /// lost blobs again (instead of deduplicating against the damaged copies), and the
    /// snapshots that refer to them are whole again.
    Packs(RepairPacksArgs),
}

/// `bunker repair config`.
#[derive(Debug, Args)]
pub struct RepairConfigArgs {
    /// The parameters to write, as `init` took them.
    #[command(flatten)]
    pub params: RepositoryParamArgs,
    /// Show what would be written, change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// `bunker repair packs`.
#[derive(Debug, Args)]
pub struct RepairPacksArgs {
    /// The damaged packs, as `check --read-data` names them (`data/ab/<id>`) or by id;
    /// none: read every pack to find them.
    #[arg(value_name = "PACK")]
    pub packs: Vec<String>,
    /// Show what would be done, change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// `bunker repair index`.
#[derive(Debug, Args)]
pub struct RepairIndexArgs {
    /// Show what would be done, change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// `bunker repair snapshots`.
#[derive(Debug, Args)]
pub struct RepairSnapshotsArgs {
    /// Show what would be done, change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Do not read the packs: only missing packs, unindexed blobs and unreadable trees are
    /// found, not damaged bytes inside packs (much faster).
    #[arg(long)]
    pub no_read_data: bool,
}

/// `bunker key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List key slots.
    List,
    /// Add a key slot for a new password (from BUNKER_NEW_PASSWORD, --new-password-file or a
    /// prompt), or with --out write a key file instead.
    Add(KeyAddArgs),
    /// Remove a key slot (not the one in use).
    Remove {
        /// Key slot id or unique prefix.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Change the password: add a slot for the new one, remove the one in use.
    Passwd(NewPasswordArgs),
}

/// `bunker key add`.
#[derive(Debug, Args)]
pub struct KeyAddArgs {
    /// Write a key file (mode 0600) instead of adding a key slot; it is not overwritten if it
    /// exists. Without --put-only it holds the full key.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// With --out: a put-only key, for agents: it backs up and deduplicates against the
    /// whole repository but cannot read any backup (every command but `backup` refuses it).
    #[arg(long, requires = "out")]
    pub put_only: bool,
    /// The new password and label of a key slot.
    #[command(flatten)]
    pub password: NewPasswordArgs,
}

/// Where a new password comes from.
#[derive(Debug, Args)]
pub struct NewPasswordArgs {
    /// Read the new password from this file.
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// A label for the slot.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// `bunker cat ...`.
#[derive(Debug, Subcommand)]
pub enum CatCommand {
    /// The repository config.
    Config,
    /// A snapshot.
    Snapshot {
        /// `latest`, `latest~N` (the Nth before it) or an id prefix.
        #[arg(value_name = "SNAPSHOT")]
        id: String,
    },
}

/// `bunker recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Print the trees that would be recovered and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `bunker prune`.
#[derive(Debug, Args, Clone)]
pub struct PruneArgs {
    /// How long a condemned pack waits, on the storage's clock, before it is deleted (e.g.
    /// `24h`, `30m`, `0` to plan and delete in one run on a single-writer repository).
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = values::duration)]
    pub grace: Duration,
    /// Unused space tolerated in partly used packs, in percent of all pack bytes.
    #[arg(long, default_value = "5", value_name = "PERCENT", value_parser = values::percent)]
    pub max_unused: f64,
    /// Most bytes to repack in one run (e.g. `10G`; default unlimited).
    #[arg(long, value_name = "SIZE", value_parser = values::size)]
    pub max_repack: Option<u64>,
    /// Delete the audit records stored more than DURATION ago on the storage's clock (e.g.
    /// `400d`), each once its lock lapsed. Without it, every record is kept.
    #[arg(long, value_name = "DURATION", value_parser = values::duration)]
    pub keep_audit: Option<Duration>,
    /// Print what would be done and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every argument of `command` and its subcommands, with the command's path.
    fn arguments(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in command.get_arguments() {
            out.push((path.to_owned(), arg.clone()));
        }
        for sub in command.get_subcommands() {
            arguments(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn the_arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    /// A heading set by a flattened group carries over to the fields declared after it, so
    /// a command's own options would be listed under the snapshot filters' heading.
    #[test]
    fn only_snapshot_filters_and_global_options_sit_under_a_heading() {
        let mut all = Vec::new();
        let mut command = Cli::command();
        command.build();
        arguments(&command, "bunker", &mut all);
        for (path, arg) in all {
            let id = arg.get_id().as_str();
            match arg.get_help_heading() {
                None => assert!(
                    !arg.is_global_set(),
                    "{path} --{id}: a global option without its heading"
                ),
                Some("Global options") => {
                    assert!(
                        arg.is_global_set(),
                        "{path} --{id}: not global, under Global options"
                    )
                }
                Some(heading) => assert!(
                    ["host", "tags", "paths"].contains(&id),
                    "{path} --{id}: listed under the snapshot filters' heading {heading:?}"
                ),
            }
        }
    }
}
