//! Bunker's S3 backend: repositories in an S3 bucket (AWS or an S3-compatible server),
//! optionally with Object Lock.
//!
//! A crate of its own so that `bunker-repo-format` (and the fuzz targets built on it) do not
//! compile an HTTP, TLS and async stack. [`S3Backend`] implements the synchronous
//! [`Backend`](bunker_repo_format::backend::Backend) trait by running `object_store`'s async
//! client on a small internal tokio runtime. [`S3Location`] parses `s3://BUCKET/PREFIX` and
//! the standard `AWS_*` environment variables.

mod backend;
mod backoff;
mod errors;
mod location;
mod raw;
pub mod testing;

pub use backend::S3Backend;
pub use location::{ALLOW_HTTP_VAR, S3Location};
pub use raw::LockInfo;
