//! The one error type of the repository crate.

use crate::codec::DecodeError;
use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading or writing a repository.
///
/// Variants are kept distinct so that callers (retries, the CLI's exit codes, `check`) can
/// match on what happened instead of parsing messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An object's bytes do not decode, do not authenticate or do not hash to their name.
    #[error("{object}: corrupt: {reason}")]
    Corrupt {
        /// Object name (e.g. `data/ab/ab12...`) or a description of the record.
        object: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A named object does not exist in the backend.
    #[error("{object}: not found")]
    NotFound {
        /// Object name.
        object: String,
    },
    /// A create-only write found the object already present.
    #[error("{object}: already exists")]
    AlreadyExists {
        /// Object name.
        object: String,
    },
    /// There is no repository at the given location.
    #[error("no repository at {location}")]
    RepositoryNotFound {
        /// Where we looked.
        location: String,
    },
    /// A repository already exists where `init` was asked to create one.
    #[error("a repository already exists at {location}")]
    RepositoryExists {
        /// Where it exists.
        location: String,
    },
    /// No key slot opens with the given password.
    #[error("wrong password: none of the {slots} key slot(s) in {location} opens with it")]
    WrongPassword {
        /// Where the repository is.
        location: String,
        /// How many key slots were tried.
        slots: usize,
    },
    /// The object or repository uses a version or feature this build does not understand.
    #[error("{object}: unsupported: {what}")]
    Unsupported {
        /// Object name.
        object: String,
        /// What is not supported.
        what: String,
    },
    /// A caller-supplied value is not acceptable (bad parameter, unknown snapshot, ...).
    #[error("{0}")]
    Invalid(String),
    /// An operation needs a key the caller does not hold.
    #[error(
        "{operation} needs the repository's full key: this is a put-only key, which can back up but cannot read backups"
    )]
    KeyLacksReadAccess {
        /// What was attempted.
        operation: &'static str,
    },
    /// A key file is missing, unreadable, damaged, or belongs to another repository.
    #[error("key file {file}: {reason}")]
    KeyFile {
        /// The key file's path.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The storage refuses to delete or overwrite an object whose lock has not lapsed.
    #[error("{object}: locked until {until} ({location} refuses to delete it)")]
    Locked {
        /// Object name.
        object: String,
        /// Where the repository is.
        location: String,
        /// The retain-until date, as the storage reported it (or `unknown`).
        until: String,
    },
    /// A write or read was given up before the store answered, because its command was
    /// asked to stop ([`Backend::put_if_absent_abandoning`](crate::backend::Backend::put_if_absent_abandoning),
    /// [`Backend::get_range_to_read_abandoning`](crate::backend::Backend::get_range_to_read_abandoning)):
    /// after a write, whether the object was stored is unknown.
    #[error("{object}: request abandoned: the command was interrupted")]
    Abandoned {
        /// Object name.
        object: String,
    },
    /// An I/O error from the operating system or a storage service.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the object or path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Builds a [`Error::Corrupt`].
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// The error for a record of `object` that did not decode: [`Error::Unsupported`] for a
    /// version this build cannot read (format §16), [`Error::Corrupt`] for anything else.
    pub fn decoding(object: impl Into<String>, error: DecodeError) -> Self {
        Self::decoding_in(object, "", error)
    }

    /// Like [`Error::decoding`], for a record inside `object` named by `section` (such as
    /// `"trailer: "`), which prefixes the reason.
    pub fn decoding_in(object: impl Into<String>, section: &str, error: DecodeError) -> Self {
        match error {
            DecodeError::UnsupportedVersion { .. } => Error::Unsupported {
                object: object.into(),
                what: format!("{section}{error}"),
            },
            _ => Error::corrupt(object, format!("{section}{error}")),
        }
    }

    /// Builds an [`Error::Io`] naming what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the error means the object is missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True when the error says something about the object itself (missing, damaged, of a
    /// format this build cannot read), not about reaching it: only such errors are damage
    /// for `check` and `repair`. A timeout or an unreachable storage proves nothing.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::NotFound { .. } | Error::Unsupported { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_version_refusal_decodes_to_unsupported() {
        let newer = DecodeError::UnsupportedVersion {
            field: "trailer version",
            found: 2,
            supported: 1,
        };
        match Error::decoding_in("data/ab", "trailer: ", newer) {
            Error::Unsupported { object, what } => {
                assert_eq!(object, "data/ab");
                assert_eq!(
                    what,
                    "trailer: trailer version 2 is not supported (this build reads 1)"
                );
            }
            other => panic!("expected unsupported, got {other:?}"),
        }
        for damaged in [
            DecodeError::Trailing(3),
            DecodeError::invalid("blob kind", "unknown kind 9"),
        ] {
            let reason = format!("trailer: {damaged}");
            match Error::decoding_in("data/ab", "trailer: ", damaged) {
                Error::Corrupt { object, reason: r } => {
                    assert_eq!(object, "data/ab");
                    assert_eq!(r, reason);
                }
                other => panic!("expected corrupt, got {other:?}"),
            }
        }
    }
}
