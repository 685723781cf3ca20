//! Exit codes, and which errors map to them.

use std::io;
use std::process::ExitCode;

use bunker_agent::backup::BackupError;
use bunker_agent::copy::CopyError;
use bunker_agent::lease::LeaseError;
use bunker_agent::restore::RestoreError;
use bunker_repo_format::Error;

/// Success.
pub const OK: u8 = 0;
/// A fatal error.
pub const FATAL: u8 = 1;
/// The backup finished, but some source files could not be read.
pub const PARTIAL_BACKUP: u8 = 3;
/// `check` found damage.
pub const DAMAGE_FOUND: u8 = 4;
/// The restore finished, but some files could not be restored.
pub const RESTORE_INCOMPLETE: u8 = 5;
/// `bunker-agent run --once`: at least one job wrote no snapshot.
pub const JOB_FAILED: u8 = 6;
/// The policy file is invalid (`policy check`, `bunker-agent`), or names no such source.
pub const POLICY_INVALID: u8 = 7;
/// There is no repository at the given location.
pub const NO_REPOSITORY: u8 = 10;
/// The storage a command writes to (the repository's, typically) has no space left, or
/// the quota is used up. Nothing that was stored is lost: free space and run it again.
pub const STORAGE_FULL: u8 = 11;
/// No key slot opens with the password.
pub const WRONG_PASSWORD: u8 = 12;
/// The key is put-only: the command needs to read backups.
pub const PUT_ONLY_KEY: u8 = 13;
/// The key file is missing, unreadable, damaged, or for another repository.
pub const BAD_KEY_FILE: u8 = 14;
/// The restore target is outside the policy's restore roots (or may not carry a lease).
pub const OUTSIDE_RESTORE_ROOTS: u8 = 15;
/// `verify`: the restore failed (a damaged or missing object).
pub const VERIFY_RESTORE_FAILED: u8 = 20;
/// `verify`: the restored bytes or metadata differ from the snapshot.
pub const VERIFY_MISMATCH: u8 = 21;
/// `verify`: the smoke step (smoke command, fsck, database smoke SQL) failed.
pub const VERIFY_SMOKE_FAILED: u8 = 22;
/// `report --strict`: at least one source is out of policy.
pub const REPORT_OUT_OF_POLICY: u8 = 23;
/// Interrupted by SIGINT or SIGTERM.
pub const INTERRUPTED: u8 = 130;

/// The exit code of a drill's failed step (`bunker verify`, `bunker-agent drill`).
pub fn drill_failure(failure: bunker_agent::drill::Failure) -> u8 {
    use bunker_agent::drill::Failure;
    match failure {
        Failure::Restore => VERIFY_RESTORE_FAILED,
        Failure::Mismatch => VERIFY_MISMATCH,
        Failure::Smoke | Failure::Fsck | Failure::Mount | Failure::Database => VERIFY_SMOKE_FAILED,
    }
}

/// What `main` does with an error: the exit code, and whether to print it.
pub struct Outcome {
    /// Exit code.
    pub code: ExitCode,
    /// False for a closed stdout pipe, which is not worth a message.
    pub print: bool,
}

fn repository_code(error: &Error) -> u8 {
    match error {
        Error::RepositoryNotFound { .. } => NO_REPOSITORY,
        Error::WrongPassword { .. } => WRONG_PASSWORD,
        Error::KeyLacksReadAccess { .. } => PUT_ONLY_KEY,
        Error::KeyFile { .. } => BAD_KEY_FILE,
        Error::Abandoned { .. } => INTERRUPTED,
        _ => FATAL,
    }
}

/// An error and its causes on one line, each said once. Many errors already end with the
/// text of their source (an I/O error's context names what was done, then says why), which
/// `{:#}` would print a second time.
pub fn message(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Classifies an error from a command.
pub fn classify(error: &anyhow::Error) -> Outcome {
    let mut code = FATAL;
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<io::Error>() {
            match e.kind() {
                io::ErrorKind::BrokenPipe => {
                    return Outcome {
                        code: ExitCode::from(OK),
                        print: false,
                    };
                }
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                    code = STORAGE_FULL;
                    break;
                }
                _ => {}
            }
        }
        let found = if let Some(e) = cause.downcast_ref::<Error>() {
            repository_code(e)
        } else if let Some(e) = cause.downcast_ref::<BackupError>() {
            match e {
                BackupError::Interrupted => INTERRUPTED,
                BackupError::Repository(e) => repository_code(e),
                _ => FATAL,
            }
        } else if cause
            .downcast_ref::<bunker_agent::policy::PolicyErrors>()
            .is_some()
        {
            POLICY_INVALID
        } else if let Some(bunker_agent::daemon::AgentError::UnknownSource(_)) =
            cause.downcast_ref::<bunker_agent::daemon::AgentError>()
        {
            POLICY_INVALID
        } else if let Some(e) = cause.downcast_ref::<CopyError>() {
            match e {
                CopyError::Interrupted => INTERRUPTED,
                CopyError::Repository(e) => repository_code(e),
                _ => FATAL,
            }
        } else if let Some(e) = cause.downcast_ref::<LeaseError>() {
            match e {
                LeaseError::OutsideRoots { .. } | LeaseError::Unleasable { .. } => {
                    OUTSIDE_RESTORE_ROOTS
                }
                _ => FATAL,
            }
        } else if let Some(e) = cause.downcast_ref::<RestoreError>() {
            match e {
                RestoreError::Interrupted => INTERRUPTED,
                RestoreError::Repository(e) => repository_code(e),
                _ => FATAL,
            }
        } else {
            FATAL
        };
        if found != FATAL {
            code = found;
            break;
        }
    }
    Outcome {
        code: ExitCode::from(code),
        print: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_says_each_cause_once() {
        let os = io::Error::from_raw_os_error(28);
        let repeated = anyhow::Error::new(Error::io("writing a pack to r/.tmp-1", os));
        assert_eq!(
            message(&repeated),
            "writing a pack to r/.tmp-1: No space left on device (os error 28)"
        );
        let wrapped = anyhow::Error::new(io::Error::from_raw_os_error(2)).context("opening src");
        assert_eq!(
            message(&wrapped),
            "opening src: No such file or directory (os error 2)"
        );
        assert_eq!(classify(&repeated).code, ExitCode::from(STORAGE_FULL));
        assert_eq!(classify(&wrapped).code, ExitCode::from(FATAL));
    }

    /// Every exit code bunker can end with: the constants above, and clap's 2 for bad
    /// arguments. README.md, docs/RUNBOOK.md and docs/OPERATIONS.md list them all.
    const ALL: [u8; 19] = [
        OK,
        FATAL,
        2,
        PARTIAL_BACKUP,
        DAMAGE_FOUND,
        RESTORE_INCOMPLETE,
        JOB_FAILED,
        POLICY_INVALID,
        NO_REPOSITORY,
        STORAGE_FULL,
        WRONG_PASSWORD,
        PUT_ONLY_KEY,
        BAD_KEY_FILE,
        OUTSIDE_RESTORE_ROOTS,
        VERIFY_RESTORE_FAILED,
        VERIFY_MISMATCH,
        VERIFY_SMOKE_FAILED,
        REPORT_OUT_OF_POLICY,
        INTERRUPTED,
    ];

    /// The codes of the table under the line `header` of a Markdown document: the first
    /// cell of each row, where `20 / 21 / 22` stands for three.
    fn table_codes(document: &str, header: &str) -> Vec<u8> {
        let mut lines = document.lines().skip_while(|line| *line != header).skip(2);
        let mut codes = Vec::new();
        while let Some(row) = lines.next().filter(|line| line.starts_with('|')) {
            let cell = row.split('|').nth(1).expect("a table row has a first cell");
            for code in cell.split('/') {
                codes.push(code.trim().parse().expect("an exit code"));
            }
        }
        codes
    }

    #[test]
    fn the_documented_exit_codes_are_the_ones_in_use() {
        let mut all = ALL.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), ALL.len(), "two exit codes share a number");
        let readme = include_str!("../../README.md");
        let runbook = include_str!("../../docs/RUNBOOK.md");
        assert_eq!(table_codes(readme, "| exit code | meaning |"), all);
        assert_eq!(table_codes(runbook, "| code | meaning |"), all);
        let operations = include_str!("../../docs/OPERATIONS.md");
        assert_eq!(table_codes(operations, "| Code | Meaning | Action |"), all);
    }
}
