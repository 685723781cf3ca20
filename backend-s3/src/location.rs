//! Where an S3 repository lives and how to reach it: `s3://BUCKET/PREFIX` plus the
//! standard AWS environment variables.

use std::fmt;

use bunker_repo_format::{Error, Result};

/// Environment variable that allows plain-HTTP endpoints other than the loopback address.
pub const ALLOW_HTTP_VAR: &str = "BUNKER_S3_ALLOW_HTTP";

/// Bucket, key prefix and connection settings of an S3 repository.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix of the repository's objects, without leading or trailing `/` (may be
    /// empty: the repository then fills the bucket).
    pub prefix: String,
    /// Region (`AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`).
    pub region: String,
    /// Endpoint override for S3-compatible servers (`AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Access key id (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (`AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials (`AWS_SESSION_TOKEN`).
    pub session_token: Option<String>,
    /// Whether plain `http://` endpoints may be used.
    pub allow_http: bool,
}

impl fmt::Debug for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("S3Location")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

impl S3Location {
    /// True when `repo` names an S3 repository (`s3://...`).
    pub fn is_s3_url(repo: &str) -> bool {
        repo.starts_with("s3://")
    }

    /// Parses `s3://BUCKET[/PREFIX]` and reads the connection settings from the process
    /// environment.
    pub fn from_url_and_env(url: &str) -> Result<Self> {
        Self::from_url(url, |name| std::env::var(name).ok())
    }

    /// Parses `s3://BUCKET[/PREFIX]`, reading settings through `env`.
    ///
    /// Plain HTTP is allowed when `BUNKER_S3_ALLOW_HTTP=1`, or without it when the endpoint
    /// is on the loopback address (`http://127.0.0.1`, `http://[::1]`, `http://localhost`).
    pub fn from_url(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let invalid = |why: &str| Error::Invalid(format!("repository {url:?}: {why}"));
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("expected s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(invalid(
                "the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'",
            ));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            bunker_repo_format::backend::validate_name(prefix).map_err(|_| {
                invalid("the prefix must be '/'-separated letters, digits, '-', '_' or '.'")
            })?;
        }
        let nonempty = |name: &str| env(name).filter(|v| !v.is_empty());
        let endpoint = nonempty("AWS_ENDPOINT_URL_S3").or_else(|| nonempty("AWS_ENDPOINT_URL"));
        let opted_in = nonempty(ALLOW_HTTP_VAR).is_some_and(|v| v == "1" || v == "true");
        let loopback = endpoint.as_deref().is_some_and(is_loopback_http);
        let allow_http = opted_in || loopback;
        if let Some(endpoint) = &endpoint
            && endpoint.starts_with("http://")
            && !allow_http
        {
            return Err(Error::Invalid(format!(
                "endpoint {endpoint} is plain HTTP: set {ALLOW_HTTP_VAR}=1 to allow it"
            )));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            region: nonempty("AWS_REGION")
                .or_else(|| nonempty("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".to_owned()),
            endpoint,
            access_key_id: nonempty("AWS_ACCESS_KEY_ID"),
            secret_access_key: nonempty("AWS_SECRET_ACCESS_KEY"),
            session_token: nonempty("AWS_SESSION_TOKEN"),
            allow_http,
        })
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The key of object `name` in the bucket.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

/// True for `http://` URLs on the loopback interface.
fn is_loopback_http(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default().to_owned()
    };
    matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn parses_bucket_prefix_and_settings() {
        let vars = [
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ENDPOINT_URL", "https://s3.example.net"),
        ];
        let loc = S3Location::from_url("s3://my-bucket/hosts/web1/", env(&vars)).unwrap();
        assert_eq!(
            (loc.bucket.as_str(), loc.prefix.as_str()),
            ("my-bucket", "hosts/web1")
        );
        assert_eq!(loc.region, "eu-west-3");
        assert_eq!(loc.endpoint.as_deref(), Some("https://s3.example.net"));
        assert!(!loc.allow_http);
        assert_eq!(loc.key("config"), "hosts/web1/config");
        assert_eq!(loc.url(), "s3://my-bucket/hosts/web1");
        assert!(
            !format!("{loc:?}").contains("secret"),
            "Debug prints the secret"
        );
        let bare = S3Location::from_url("s3://bkt", env(&[])).unwrap();
        assert_eq!(
            (bare.prefix.as_str(), bare.key("config").as_str()),
            ("", "config")
        );
        assert_eq!(bare.region, "us-east-1");
    }

    #[test]
    fn plain_http_needs_loopback_or_the_opt_in() {
        let local = [("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")];
        assert!(
            S3Location::from_url("s3://bkt/p", env(&local))
                .unwrap()
                .allow_http
        );
        let remote = [("AWS_ENDPOINT_URL", "http://minio.lan:9000")];
        let err = S3Location::from_url("s3://bkt/p", env(&remote)).unwrap_err();
        assert!(err.to_string().contains(ALLOW_HTTP_VAR), "{err}");
        let opted = [
            ("AWS_ENDPOINT_URL", "http://minio.lan:9000"),
            (ALLOW_HTTP_VAR, "1"),
        ];
        assert!(
            S3Location::from_url("s3://bkt/p", env(&opted))
                .unwrap()
                .allow_http
        );
        let sneaky = [("AWS_ENDPOINT_URL", "http://127.0.0.1.evil.net")];
        assert!(S3Location::from_url("s3://bkt/p", env(&sneaky)).is_err());
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        for bad in [
            "s3://",
            "s3://AB",
            "s3://bucket_x/p",
            "s3://bkt/a//b",
            "s3://bkt/../x",
            "gs://bkt",
        ] {
            let err = S3Location::from_url(bad, env(&[])).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }
}
