//! The S3 requests `object_store` has no API for, presigned with its signer and sent with
//! reqwest: HEAD for the lock headers, versioned DELETE, PutObjectRetention, and
//! GetObjectLockConfiguration.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bunker_repo_format::{Error, Result};
use md5::{Digest, Md5};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::signer::{Method, SignedUrlOptions, Signer};

use crate::backoff::Backoff;
use crate::errors::{Kind, classify, to_error};
use crate::location::S3Location;

/// How long a presigned URL stays valid (it is used at once).
const URL_LIFETIME: Duration = Duration::from_secs(300);
/// Attempts of a request that fails transiently: waits of 0.1 s doubling to 10 s between
/// them, about 40 s in all.
const ATTEMPTS: u32 = 11;
/// Longest wait to connect, and for a whole request (they are small: HEAD, DELETE,
/// retention and lock settings).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The current version of an object and its lock, from HeadObject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// `x-amz-version-id` (absent on unversioned buckets).
    pub version: Option<String>,
    /// `x-amz-object-lock-mode` (`GOVERNANCE` or `COMPLIANCE`).
    pub mode: Option<String>,
    /// `x-amz-object-lock-retain-until-date`.
    pub retain_until: Option<SystemTime>,
}

/// Sends presigned requests for one bucket.
#[derive(Debug)]
pub(crate) struct RawClient {
    signer: Arc<AmazonS3>,
    http: reqwest::Client,
    location: S3Location,
}

/// A response's status and body.
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl RawClient {
    pub(crate) fn new(signer: Arc<AmazonS3>, location: S3Location) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| {
                Error::io(
                    "starting the S3 client",
                    std::io::Error::other(e.to_string()),
                )
            })?;
        Ok(Self {
            signer,
            http,
            location,
        })
    }

    /// HeadObject: version and lock of `name`.
    pub(crate) async fn head(&self, name: &str) -> Result<LockInfo> {
        let reply = self.send(Method::HEAD, name, &[], None).await?;
        self.check(&reply, "reading the lock of", name)?;
        let header = |key: &str| {
            reply
                .headers
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retain_until = match header("x-amz-object-lock-retain-until-date") {
            Some(text) => Some(parse_date(&text).ok_or_else(|| {
                Error::corrupt(
                    name,
                    format!("the server gave an unreadable lock date {text:?}"),
                )
            })?),
            None => None,
        };
        Ok(LockInfo {
            version: header("x-amz-version-id").filter(|v| v != "null"),
            mode: header("x-amz-object-lock-mode"),
            retain_until,
        })
    }

    /// DeleteObject of one version; Object Lock makes the server refuse it (403).
    pub(crate) async fn delete_version(&self, name: &str, version: &str) -> Result<()> {
        let reply = self
            .send(Method::DELETE, name, &[("versionId", version)], None)
            .await?;
        if reply.status == 403 {
            // A refusal is the lock's when the server says so, or while the lock holds by
            // our clock; a refusal of an object whose lock lapsed (or that has none) is a
            // missing permission (s3:DeleteObjectVersion), which no waiting cures.
            let (retain_until, known) = match self.head(name).await {
                Ok(info) => (info.retain_until, true),
                Err(_) => (None, false),
            };
            let says_lock = reply.body.to_ascii_lowercase().contains("object lock");
            let holds = retain_until.is_some_and(|until| until > SystemTime::now());
            if says_lock || holds || !known {
                return Err(Error::Locked {
                    object: name.to_owned(),
                    location: self.location.url(),
                    until: retain_until
                        .map(format_date)
                        .unwrap_or_else(|| format!("unknown (server said: {})", reply.body.trim())),
                });
            }
        }
        self.check(&reply, "deleting", name)
    }

    /// DeleteObject without a version: on a versioned bucket the server adds a delete
    /// marker (and refuses nothing, locked or not). Returns the marker's version id.
    pub(crate) async fn delete_current(&self, name: &str) -> Result<Option<String>> {
        let reply = self.send(Method::DELETE, name, &[], None).await?;
        self.check(&reply, "deleting", name)?;
        Ok(reply
            .headers
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| *v != "null")
            .map(str::to_owned))
    }

    /// PutObjectRetention: locks version `version` of `name` until `until` in `mode`.
    pub(crate) async fn put_retention(
        &self,
        name: &str,
        version: &str,
        mode: &str,
        until: SystemTime,
    ) -> Result<()> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{mode}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            format_date(until)
        );
        let reply = self
            .send(
                Method::PUT,
                name,
                &[("retention", ""), ("versionId", version)],
                Some(body.into_bytes()),
            )
            .await?;
        self.check(&reply, "extending the lock of", name)
    }

    /// GetObjectLockConfiguration of the bucket: fails unless Object Lock is enabled.
    pub(crate) async fn check_object_lock(&self) -> Result<()> {
        let reply = self
            .send(Method::GET, "", &[("object-lock", "")], None)
            .await?;
        let enabled = reply.status == 200 && reply.body.contains("<ObjectLockEnabled>Enabled<");
        if enabled {
            return Ok(());
        }
        // No configuration (404, ObjectLockConfigurationNotFoundError) or one that is not
        // enabled: no Object Lock. A server error or a refusal says nothing about it.
        let kind = match (reply.status, classify(Some(reply.status), &reply.body)) {
            (200 | 404, _) => Kind::NoObjectLock,
            (_, Kind::NotFound | Kind::AlreadyExists) => Kind::Other,
            (_, kind) => kind,
        };
        let detail = format!("HTTP {}: {}", reply.status, reply.body.trim());
        Err(to_error(
            kind,
            "checking Object Lock on",
            &self.location.bucket,
            "",
            "",
            &detail,
        ))
    }

    /// Maps a non-2xx reply to an error.
    fn check(&self, reply: &Reply, what: &str, name: &str) -> Result<()> {
        if (200..300).contains(&reply.status) {
            return Ok(());
        }
        let detail = if reply.body.is_empty() {
            format!("HTTP {}", reply.status)
        } else {
            format!("HTTP {}: {}", reply.status, reply.body)
        };
        let kind = classify(Some(reply.status), &detail);
        let key = self.location.key(name);
        Err(to_error(
            kind,
            what,
            &self.location.bucket,
            &key,
            name,
            &detail,
        ))
    }

    /// Presigns and sends one request (to the bucket itself when `name` is empty),
    /// retrying connection failures, throttling and 5xx with exponential backoff.
    async fn send(
        &self,
        method: Method,
        name: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply> {
        let key = if name.is_empty() {
            String::new()
        } else {
            self.location.key(name)
        };
        let path = Path::parse(&key)
            .map_err(|e| Error::Invalid(format!("invalid object name {name:?}: {e}")))?;
        let mut options = SignedUrlOptions::new().with_query(query.iter().copied());
        let md5 = body
            .as_ref()
            .map(|body| base64::engine::general_purpose::STANDARD.encode(Md5::digest(body)));
        if let Some(md5) = &md5 {
            let value = http::HeaderValue::from_str(md5)
                .map_err(|e| Error::Invalid(format!("content-md5: {e}")))?;
            options =
                options.with_signed_header(http::HeaderName::from_static("content-md5"), value);
        }
        let context = |what: &str| format!("{what} s3://{}/{key}", self.location.bucket);
        let mut backoff = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(10));
        for attempt in 1..=ATTEMPTS {
            let url = self
                .signer
                .signed_url_opts(method.clone(), &path, URL_LIFETIME, &options)
                .await
                .map_err(|e| {
                    Error::Invalid(format!("{}: {e}", context("signing a request for")))
                })?;
            let mut request = self.http.request(method.clone(), url.as_str());
            if let (Some(md5), Some(body)) = (&md5, &body) {
                request = request
                    .header(http::HeaderName::from_static("content-md5"), md5)
                    .body(body.clone());
            }
            let last = attempt == ATTEMPTS;
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let body = response.text().await.unwrap_or_default();
                    let transient = status >= 500 || status == 429 || body.contains("SlowDown");
                    if !transient || last {
                        return Ok(Reply {
                            status,
                            headers,
                            body,
                        });
                    }
                }
                Err(e) if last => {
                    return Err(Error::io(
                        context("sending a request for"),
                        std::io::Error::other(e.to_string()),
                    ));
                }
                Err(_) => {}
            }
            backoff.wait().await;
        }
        Err(Error::io(
            context("sending a request for"),
            std::io::Error::other("no attempt was made"),
        ))
    }
}

/// Parses an S3 date (`2026-12-22T04:00:00.000Z`).
fn parse_date(text: &str) -> Option<SystemTime> {
    jiff::Timestamp::from_str(text.trim())
        .ok()
        .map(SystemTime::from)
}

/// Formats a date the way S3 expects it, rounded up to the second.
pub(crate) fn format_date(time: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(time).unwrap_or(jiff::Timestamp::MAX);
    let rounded = if ts.subsec_nanosecond() > 0 {
        ts.checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap_or(ts)
    } else {
        ts
    };
    rounded.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_round_up() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_250);
        assert_eq!(format_date(t), "2026-09-21T14:13:21Z");
        assert_eq!(
            parse_date("2026-09-21T14:13:21.000Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_001))
        );
        assert_eq!(parse_date("yesterday"), None);
    }
}
