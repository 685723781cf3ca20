//! Helpers for tests against the local S3 test server (moto), shared by this crate's and
//! the CLI's tests.
//!
//! `scripts/test.sh` starts the server and exports its URL in [`ENDPOINT_VAR`]. Without it,
//! [`test_endpoint`] skips loudly; in CI (`CI=true`) it panics instead, so a missing server
//! fails the run rather than passing silently.

// Test helpers: a failure is meant to panic with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::location::S3Location;

/// Environment variable holding the test server's URL (`http://127.0.0.1:PORT`).
pub const ENDPOINT_VAR: &str = "BUNKER_TEST_S3_ENDPOINT";

/// The test server's URL, or `None` (after a loud message) when it is not running outside CI.
pub fn test_endpoint(test: &str) -> Option<String> {
    match std::env::var(ENDPOINT_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {ENDPOINT_VAR} is not set in CI: the S3 test server must run")
        }
        _ => {
            eprintln!(
                "\n*** SKIPPED {test}: no S3 test server ({ENDPOINT_VAR} unset); \
                 run scripts/test.sh to start one ***\n"
            );
            None
        }
    }
}

/// A bucket name unique to this process and call.
pub fn unique_bucket(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("bunker-{tag}-{}-{n}", std::process::id())
}

/// Creates `bucket` on the test server, with Object Lock (and so versioning) enabled if
/// `object_lock`. The test server does not check signatures, so the request is unsigned.
pub fn create_bucket(endpoint: &str, bucket: &str, object_lock: bool) {
    let host = endpoint.strip_prefix("http://").expect("http:// endpoint");
    let mut stream = TcpStream::connect(host).expect("connect to the S3 test server");
    let lock = if object_lock {
        "x-amz-bucket-object-lock-enabled: true\r\n"
    } else {
        ""
    };
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n{lock}Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read reply");
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "creating bucket {bucket}: {}",
        reply.lines().next().unwrap_or_default()
    );
}

/// The location of `s3://bucket/prefix` on the test server, with its dummy credentials.
pub fn location(endpoint: &str, bucket: &str, prefix: &str) -> S3Location {
    let url = format!("s3://{bucket}/{prefix}");
    S3Location::from_url(&url, |name| match name {
        "AWS_ENDPOINT_URL" => Some(endpoint.to_owned()),
        "AWS_ACCESS_KEY_ID" => Some("testing".to_owned()),
        "AWS_SECRET_ACCESS_KEY" => Some("testing".to_owned()),
        "AWS_REGION" => Some("us-east-1".to_owned()),
        _ => None,
    })
    .expect("test location")
}

/// The environment variables a `bunker` process needs to reach the test server.
pub fn env_vars(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
}
