//! The S3 requests `object_store` has no API for, presigned with its signer and sent with
//! reqwest: HEAD for the lock headers, versioned DELETE, PutObjectRetention,
//! GetObjectLockConfiguration, and ListObjectsV2 (`object_store`'s listing fails as a whole
//! on the first key it cannot parse as a `Path`, such as `p/data//x`, which anyone allowed
//! to put can store).

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
/// retention and lock settings, and listing pages of at most 1000 keys).
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

/// One object of a listing, its key as stored (decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// One page of a ListObjectsV2 answer.
#[derive(Debug, Default, PartialEq, Eq)]
struct ListPage {
    objects: Vec<Listed>,
    /// `NextContinuationToken`, when the answer is truncated.
    next: Option<String>,
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

    /// ListObjectsV2 of every key that starts with `prefix` (a whole key prefix, e.g.
    /// `repo/data/`), page after page. Keys the server sends URL-encoded are decoded; keys
    /// that do not decode to UTF-8 are left out (they name nothing bunker stores).
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        let mut tokens = std::collections::HashSet::new();
        loop {
            let page = self.list_page(prefix, token.as_deref(), None).await?;
            objects.extend(page.objects);
            let Some(next) = page.next else {
                return Ok(objects);
            };
            // A server that sends a token again would be listed forever.
            if !tokens.insert(next.clone()) {
                return Err(self.list_error(
                    prefix,
                    Kind::Other,
                    &format!("the server repeated continuation token {next:?}"),
                ));
            }
            token = Some(next);
        }
    }

    /// One listing request of at most one key under `prefix`: fails as a listing would
    /// (a missing bucket, refused credentials), reads no key.
    pub(crate) async fn probe(&self, prefix: &str) -> Result<()> {
        self.list_page(prefix, None, Some(1)).await.map(|_| ())
    }

    /// One page of ListObjectsV2 under `prefix`, continuing at `token`.
    async fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: Option<u32>,
    ) -> Result<ListPage> {
        let mut query = vec![("list-type", "2"), ("encoding-type", "url")];
        if !prefix.is_empty() {
            query.push(("prefix", prefix));
        }
        if let Some(token) = token {
            query.push(("continuation-token", token));
        }
        let max_keys = max_keys.map(|n| n.to_string());
        if let Some(max_keys) = &max_keys {
            query.push(("max-keys", max_keys));
        }
        let reply = self
            .send_to(Method::GET, &Path::default(), prefix, &query, None)
            .await?;
        if !(200..300).contains(&reply.status) {
            let detail = if reply.body.is_empty() {
                format!("HTTP {}", reply.status)
            } else {
                format!("HTTP {}: {}", reply.status, reply.body)
            };
            // A listing finds no "missing object": a 404 that names no bucket is the
            // server's to explain.
            let kind = match classify(Some(reply.status), &detail) {
                Kind::NotFound | Kind::AlreadyExists => Kind::Other,
                kind => kind,
            };
            return Err(self.list_error(prefix, kind, &detail));
        }
        parse_list(&reply.body).map_err(|why| {
            self.list_error(
                prefix,
                Kind::Other,
                &format!("unreadable listing from the server: {why}"),
            )
        })
    }

    /// The error of listing `prefix`: names the bucket and the prefix.
    fn list_error(&self, prefix: &str, kind: Kind, detail: &str) -> Error {
        let key = prefix.trim_end_matches('/');
        to_error(kind, "listing", &self.location.bucket, key, key, detail)
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
        self.send_to(method, &path, &key, query, body).await
    }

    /// [`Self::send`] to `path` (the bucket itself when empty); `key` names it in messages.
    async fn send_to(
        &self,
        method: Method,
        path: &Path,
        key: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply> {
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
                .signed_url_opts(method.clone(), path, URL_LIFETIME, &options)
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
                    let body = match response.text().await {
                        Ok(body) => body,
                        // A read (GET, HEAD) whose answer broke off is sent again: a
                        // truncated listing must not pass for a whole one.
                        Err(e) if method == Method::GET || method == Method::HEAD => {
                            if last {
                                return Err(Error::io(
                                    context("reading the answer for"),
                                    std::io::Error::other(e.to_string()),
                                ));
                            }
                            backoff.wait().await;
                            continue;
                        }
                        Err(_) => String::new(),
                    };
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

/// Parses a ListObjectsV2 answer (`ListBucketResult`): its objects and, when it is
/// truncated, the token of the next page. Keys are decoded when the answer says they are
/// URL-encoded (`EncodingType` `url`); an object whose key does not decode to UTF-8 is
/// left out.
fn parse_list(body: &str) -> std::result::Result<ListPage, String> {
    use quick_xml::events::Event;

    #[derive(Default)]
    struct Entry {
        key: Option<String>,
        size: Option<String>,
        modified: Option<String>,
    }
    let mut reader = quick_xml::Reader::from_str(body);
    let mut open: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut entries: Vec<Entry> = Vec::new();
    let (mut url_encoded, mut truncated, mut next) = (false, None, None);
    let mut root = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", reader.error_position()))?;
        let xml = |e: quick_xml::Error| e.to_string();
        // An element that ends, with its text.
        let ended = match event {
            Event::Start(start) => {
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if open.is_empty() && name != "ListBucketResult" {
                    return Err(format!("expected a ListBucketResult, got <{name}>"));
                }
                root = true;
                open.push(name);
                if open.len() == 2 && open[1] == "Contents" {
                    entries.push(Entry::default());
                }
                text.clear();
                None
            }
            Event::Empty(empty) => {
                let name = String::from_utf8_lossy(empty.local_name().as_ref()).into_owned();
                if open.is_empty() {
                    return Err(format!("expected a ListBucketResult, got <{name}/>"));
                }
                open.push(name);
                Some(String::new())
            }
            Event::Text(t) => {
                text.push_str(&t.xml10_content().map_err(|e| xml(e.into()))?);
                None
            }
            Event::CData(t) => {
                text.push_str(&t.xml10_content().map_err(|e| xml(e.into()))?);
                None
            }
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(xml)? {
                    text.push(c);
                } else {
                    let name = r.decode().map_err(|e| xml(e.into()))?;
                    let resolved = quick_xml::escape::resolve_xml_entity(&name)
                        .ok_or_else(|| format!("unknown entity &{name};"))?;
                    text.push_str(resolved);
                }
                None
            }
            Event::End(_) => Some(std::mem::take(&mut text)),
            Event::Eof => break,
            _ => None,
        };
        let Some(value) = ended else { continue };
        let path: Vec<&str> = open.iter().map(String::as_str).collect();
        match path.as_slice() {
            ["ListBucketResult", "EncodingType"] => url_encoded = value.trim() == "url",
            ["ListBucketResult", "IsTruncated"] => truncated = Some(value.trim() == "true"),
            ["ListBucketResult", "NextContinuationToken"] => next = Some(value),
            ["ListBucketResult", "Contents", field] => {
                let entry = entries.last_mut().ok_or("a field outside Contents")?;
                match *field {
                    "Key" => entry.key = Some(value),
                    "Size" => entry.size = Some(value),
                    "LastModified" => entry.modified = Some(value),
                    _ => {}
                }
            }
            _ => {}
        }
        open.pop();
    }
    if !open.is_empty() {
        return Err(format!("the answer ends inside <{}>", open.join("><")));
    }
    if !root {
        return Err("no ListBucketResult in the answer".to_owned());
    }
    let next = match (truncated, next) {
        (Some(true), Some(token)) if !token.is_empty() => Some(token),
        (Some(true), _) => return Err("truncated, without a NextContinuationToken".to_owned()),
        _ => None,
    };
    let mut objects = Vec::with_capacity(entries.len());
    for entry in entries {
        let key = entry.key.ok_or("an object without a Key")?;
        let size = entry.size.ok_or_else(|| format!("{key:?} has no Size"))?;
        let size = size
            .trim()
            .parse()
            .map_err(|_| format!("{key:?} has an unreadable Size {size:?}"))?;
        let modified = entry
            .modified
            .ok_or_else(|| format!("{key:?} has no LastModified"))?;
        let modified = parse_date(&modified)
            .ok_or_else(|| format!("{key:?} has an unreadable LastModified {modified:?}"))?;
        let key = if url_encoded {
            match url_decode(&key) {
                Some(key) => key,
                None => continue,
            }
        } else {
            key
        };
        objects.push(Listed {
            key,
            size,
            modified,
        });
    }
    Ok(ListPage { objects, next })
}

/// Decodes a key S3 sent URL-encoded (`%XX`, and `+` for a space); `None` when it does not
/// decode to UTF-8.
fn url_decode(text: &str) -> Option<String> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let [hi, lo, tail @ ..] = rest else {
                    return None;
                };
                let value = hex(*hi)? * 16 + hex(*lo)?;
                bytes.push(u8::try_from(value).ok()?);
                rest = tail;
            }
            _ => bytes.push(b),
        }
    }
    String::from_utf8(bytes).ok()
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

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn keys(page: &ListPage) -> Vec<&str> {
        page.objects.iter().map(|o| o.key.as_str()).collect()
    }

    #[test]
    fn a_listing_page_gives_decoded_keys_sizes_dates_and_the_next_token() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bkt</Name><Prefix>p/</Prefix><KeyCount>7</KeyCount><MaxKeys>1000</MaxKeys>
  <EncodingType>url</EncodingType>
  <IsTruncated>true</IsTruncated>
  <ContinuationToken>previous</ContinuationToken>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=&amp;x</NextContinuationToken>
  <Contents>
    <Key>p/data/ab/pack</Key>
    <LastModified>2026-09-21T14:13:21.000Z</LastModified>
    <ETag>&quot;e&quot;</ETag><Size>4</Size><StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents><Key>p/data//stray</Key><LastModified>2026-09-21T14:13:22.000Z</LastModified><Size>1</Size><StorageClass/></Contents>
  <Contents><Key>p/snapshots/x%01y</Key><LastModified>2026-09-21T14:13:23.000Z</LastModified><Size>2</Size></Contents>
  <Contents><Key>p/a+b%2Bc</Key><LastModified>2026-09-21T14:13:24.000Z</LastModified><Size>3</Size></Contents>
  <Contents><Key>p/caf%C3%A9</Key><LastModified>2026-09-21T14:13:25.000Z</LastModified><Size>5</Size></Contents>
  <Contents><Key>p/not-utf8-%FF</Key><LastModified>2026-09-21T14:13:26.000Z</LastModified><Size>6</Size></Contents>
  <Contents><Key>p/broken-%4</Key><LastModified>2026-09-21T14:13:27.000Z</LastModified><Size>7</Size></Contents>
</ListBucketResult>"#;
        let page = parse_list(body).expect("a page");
        assert_eq!(
            page.next.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=&x")
        );
        assert_eq!(
            keys(&page),
            [
                "p/data/ab/pack",
                "p/data//stray",
                "p/snapshots/x\u{1}y",
                "p/a b+c",
                "p/café"
            ]
        );
        assert_eq!(
            page.objects[0],
            Listed {
                key: "p/data/ab/pack".into(),
                size: 4,
                modified: at(1_790_000_001),
            }
        );
        assert_eq!(page.objects[4].size, 5);
        assert_eq!(page.objects[4].modified, at(1_790_000_005));
    }

    #[test]
    fn a_last_page_without_url_encoding_keeps_keys_as_sent_with_entities_resolved() {
        // A server that ignores encoding-type=url sends keys as they are, XML-escaped.
        let body = "<ListBucketResult><Name>bkt</Name><IsTruncated>false</IsTruncated>\
            <NextContinuationToken>ignored</NextContinuationToken>\
            <Contents><Key>p/a&amp;b&#60;c&#x3e;d&apos;+%41</Key>\
            <LastModified>2026-09-21T14:13:21Z</LastModified><Size>0</Size></Contents>\
            <Contents><Key><![CDATA[p/<cdata>]]></Key>\
            <LastModified>2026-09-21T14:13:21Z</LastModified><Size>10</Size></Contents>\
            <CommonPrefixes><Prefix>p/x/</Prefix></CommonPrefixes>\
            </ListBucketResult>";
        let page = parse_list(body).expect("a page");
        assert_eq!(page.next, None);
        assert_eq!(keys(&page), ["p/a&b<c>d'+%41", "p/<cdata>"]);
        assert_eq!(page.objects[1].size, 10);

        let empty = parse_list(
            "<?xml version=\"1.0\"?><ListBucketResult><KeyCount>0</KeyCount>\
             <IsTruncated>false</IsTruncated></ListBucketResult>",
        )
        .expect("an empty page");
        assert_eq!(empty, ListPage::default());
    }

    #[test]
    fn an_unreadable_listing_is_an_error_not_an_empty_or_last_page() {
        let object = "<Contents><Key>p/k</Key><LastModified>2026-09-21T14:13:21Z</LastModified>\
                      <Size>1</Size></Contents>";
        for (body, why) in [
            ("", "no ListBucketResult"),
            (
                "<html><body>proxy says hi</body></html>",
                "expected a ListBucketResult",
            ),
            (
                "<Error><Code>AccessDenied</Code></Error>",
                "expected a ListBucketResult",
            ),
            (
                "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
                "without a NextContinuationToken",
            ),
            (
                &format!("<ListBucketResult><IsTruncated>false</IsTruncated>{object}"),
                "ends inside <ListBucketResult>",
            ),
            (
                "<ListBucketResult><Contents><Key>p/k</Key><Size>x</Size>\
                 <LastModified>2026-09-21T14:13:21Z</LastModified></Contents></ListBucketResult>",
                "unreadable Size",
            ),
            (
                "<ListBucketResult><Contents><Key>p/k</Key><Size>1</Size></Contents>\
                 </ListBucketResult>",
                "no LastModified",
            ),
            (
                "<ListBucketResult><Contents><Key>p/&bogus;</Key></Contents></ListBucketResult>",
                "unknown entity &bogus;",
            ),
            (
                "<ListBucketResult><Contents></Key></ListBucketResult>",
                "at byte",
            ),
        ] {
            let err = parse_list(body).expect_err(body);
            assert!(err.contains(why), "{body}: {err}");
        }
    }

    #[test]
    fn url_decoding_of_keys() {
        assert_eq!(url_decode("a%2Fb+c%25").as_deref(), Some("a/b c%"));
        assert_eq!(url_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(url_decode("%"), None);
        assert_eq!(url_decode("%4"), None);
        assert_eq!(url_decode("%g0"), None);
        assert_eq!(url_decode("%C3"), None);
    }
}
