//! Turning S3 failures into the repository's typed errors, with one clear line each.

use std::io;

use bunker_repo_format::Error;

/// What went wrong, as far as the repository cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The object does not exist.
    NotFound,
    /// A create-only put found the object present.
    AlreadyExists,
    /// The bucket does not exist.
    NoSuchBucket,
    /// The credentials are missing, unknown or wrong.
    BadCredentials,
    /// The credentials are valid but lack the right (or Object Lock refused).
    AccessDenied,
    /// The bucket lacks Object Lock (or versioning) for a locked write.
    NoObjectLock,
    /// Anything else.
    Other,
}

/// Classifies an error from its HTTP status (if known) and its message or S3 error code.
pub(crate) fn classify(status: Option<u16>, text: &str) -> Kind {
    let has = |code: &str| text.contains(code);
    if has("NoSuchBucket") {
        Kind::NoSuchBucket
    } else if has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("ExpiredToken")
        || has("InvalidToken")
        || has("NoCredentialProviders")
    {
        Kind::BadCredentials
    } else if matches!(status, Some(401 | 403)) {
        // Before the Object Lock wording: a refusal can name the lock action it refuses
        // (`s3:GetBucketObjectLockConfiguration`), which is a missing permission.
        if status == Some(401) {
            Kind::BadCredentials
        } else {
            Kind::AccessDenied
        }
    } else if has("Object Lock") || has("ObjectLockConfiguration") || has("object lock") {
        Kind::NoObjectLock
    } else {
        match status {
            Some(404) => Kind::NotFound,
            Some(412) => Kind::AlreadyExists,
            Some(401) => Kind::BadCredentials,
            Some(403) => Kind::AccessDenied,
            _ => Kind::Other,
        }
    }
}

/// Builds the repository error for `kind`. `what` says what was done (`writing`, ...),
/// `bucket` and `key` where; `detail` is the server's message, kept for `Other`.
pub(crate) fn to_error(
    kind: Kind,
    what: &str,
    bucket: &str,
    key: &str,
    name: &str,
    detail: &str,
) -> Error {
    let detail = one_line(detail);
    let io_error = |io_kind: io::ErrorKind, message: String| {
        Error::io(
            format!("{what} s3://{bucket}/{key}"),
            io::Error::new(io_kind, message),
        )
    };
    match kind {
        Kind::NotFound => Error::NotFound {
            object: name.to_owned(),
        },
        Kind::AlreadyExists => Error::AlreadyExists {
            object: name.to_owned(),
        },
        Kind::NoSuchBucket => io_error(
            io::ErrorKind::NotFound,
            format!("bucket {bucket} does not exist (or is in another region than AWS_REGION)"),
        ),
        Kind::BadCredentials => io_error(
            io::ErrorKind::PermissionDenied,
            "the credentials are not accepted: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY \
             (and AWS_SESSION_TOKEN)"
                .to_owned(),
        ),
        Kind::AccessDenied => io_error(
            io::ErrorKind::PermissionDenied,
            format!("access denied by the server ({detail})"),
        ),
        Kind::NoObjectLock => Error::Unsupported {
            object: format!("s3://{bucket}"),
            what: format!(
                "the bucket has no Object Lock enabled, which a locked repository needs \
                 (create the bucket with Object Lock enabled) ({detail})"
            ),
        },
        Kind::Other => io_error(io::ErrorKind::Other, detail),
    }
}

/// The message on one line, shortened to something readable.
pub(crate) fn one_line(text: &str) -> String {
    const HEAD: usize = 120;
    const TAIL: usize = 200;
    let line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        // object_store repeats its own prefix at each level of the chain.
        .replace("Generic S3 error: Generic S3 error:", "Generic S3 error:");
    if line.len() <= HEAD + TAIL + 5 {
        return line;
    }
    // The start says what was done, the end is the innermost cause: keep both.
    let mut head_end = HEAD;
    while !line.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = line.len() - TAIL;
    while !line.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    format!("{} ... {}", &line[..head_end], &line[tail_start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_keeps_its_start_and_its_innermost_cause() {
        let text = format!(
            "Generic S3 error: Generic S3 error: Error performing GET {} after 10 retries: \
             tcp connect error: Connection refused (os error 111)",
            "x".repeat(400)
        );
        let line = one_line(&text);
        assert!(line.len() < 340, "{line}");
        assert!(
            line.starts_with("Generic S3 error: Error performing GET"),
            "{line}"
        );
        assert!(
            line.ends_with("Connection refused (os error 111)"),
            "{line}"
        );
        assert!(line.contains(" ... "), "{line}");
    }

    #[test]
    fn codes_win_over_statuses() {
        assert_eq!(
            classify(Some(404), "<Code>NoSuchBucket</Code>"),
            Kind::NoSuchBucket
        );
        assert_eq!(
            classify(Some(403), "InvalidAccessKeyId"),
            Kind::BadCredentials
        );
        assert_eq!(classify(Some(403), "AccessDenied"), Kind::AccessDenied);
        assert_eq!(classify(Some(404), "NoSuchKey"), Kind::NotFound);
        assert_eq!(classify(Some(412), ""), Kind::AlreadyExists);
        assert_eq!(
            classify(Some(400), "Bucket is missing Object Lock Configuration"),
            Kind::NoObjectLock
        );
        assert_eq!(classify(Some(500), "InternalError"), Kind::Other);
        // A refused lock action is a missing permission, not a bucket without the lock.
        assert_eq!(
            classify(
                Some(403),
                "User: arn:aws:iam::1:user/b is not authorized to perform: \
                 s3:GetBucketObjectLockConfiguration"
            ),
            Kind::AccessDenied
        );
    }

    #[test]
    fn messages_name_bucket_and_key_on_one_line() {
        let e = to_error(
            Kind::NoSuchBucket,
            "reading",
            "bkt",
            "p/config",
            "config",
            "x",
        );
        assert_eq!(
            e.to_string(),
            "reading s3://bkt/p/config: bucket bkt does not exist (or is in another region than AWS_REGION)"
        );
        let e = to_error(
            Kind::Other,
            "writing",
            "bkt",
            "k",
            "k",
            "line one\n  line two",
        );
        assert_eq!(e.to_string(), "writing s3://bkt/k: line one line two");
    }
}
