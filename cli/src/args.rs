//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// bunker: deduplicating, encrypted backups you can prove restore.
#[derive(Debug, Parser)]
#[command(name = "bunker", version, about, max_term_width = 100)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalOptions,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args, Clone)]
pub struct GlobalOptions {
    /// Repository location: a local directory.
    #[arg(
        short = 'r',
        long = "repo",
        env = "BUNKER_REPOSITORY",
        global = true,
        value_name = "REPO"
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
    /// Restore a snapshot, or a path inside one.
    Restore(RestoreArgs),
    /// Verify the repository's structure and, with --read-data, every byte.
    Check(CheckArgs),
    /// Manage the repository's key slots (passwords).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a repository object as JSON.
    #[command(subcommand)]
    Cat(CatCommand),
}

/// `bunker init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Argon2id memory cost of the key slot, in KiB.
    #[arg(long, default_value_t = 65536, value_name = "KIB")]
    pub kdf_memory_kib: u32,
    /// Argon2id passes.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub kdf_iterations: u32,
    /// zstd level for new data (0 stores data uncompressed).
    #[arg(long, default_value_t = 3, value_name = "LEVEL")]
    pub compression: i32,
}

/// `bunker backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Snapshot time (RFC 3339; default: now).
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// Leave out entries matching this pattern (repeatable). Without `/` it matches names
    /// at any depth; with `/`, absolute paths.
    #[arg(long = "exclude", short = 'e', value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Parent snapshot (default: the latest of this host and these paths).
    #[arg(long, value_name = "SNAPSHOT")]
    pub parent: Option<String>,
    /// Record access times too (each backup then rewrites the trees whose access times
    /// moved).
    #[arg(long)]
    pub with_atime: bool,
}

/// `bunker snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only snapshots with this tag (repeatable; all must match).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Only snapshots of this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

/// `bunker ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// `latest` or an id prefix, optionally followed by `:PATH`.
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    pub snapshot: String,
    /// Show mode, owner, size and time too.
    #[arg(short, long)]
    pub long: bool,
}

/// `bunker restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// `latest` or an id prefix, optionally followed by `:PATH`.
    #[arg(value_name = "SNAPSHOT[:PATH]")]
    pub snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(long, short = 't', value_name = "DIR")]
    pub target: PathBuf,
}

/// `bunker check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read every pack in full and verify every blob.
    #[arg(long)]
    pub read_data: bool,
}

/// `bunker key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List key slots.
    List,
    /// Add a key slot for a new password (from BUNKER_NEW_PASSWORD, --new-password-file or a prompt).
    Add(NewPasswordArgs),
    /// Remove a key slot (not the one in use).
    Remove {
        /// Key slot id or unique prefix.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Change the password: add a slot for the new one, remove the one in use.
    Passwd(NewPasswordArgs),
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
        /// `latest` or an id prefix.
        #[arg(value_name = "SNAPSHOT")]
        id: String,
    },
}
