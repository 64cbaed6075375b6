//! The object store (any S3-compatible server) as command-api and
//! query-api use it: settings read alike by both, presigned URLs that
//! clients upload to and download from, and the few calls the services
//! make themselves (HEAD, DELETE, create the bucket, list, read).
//!
//! Requests are signed with `rusty-s3` (sans-IO: it builds and signs URLs,
//! sends nothing) and sent with the workspace's reqwest, so no S3 SDK is
//! compiled in. Two views of one bucket: the services talk to
//! `{PREFIX}_S3_URL`; a URL handed to a client is built for
//! `{PREFIX}_S3_PUBLIC_URL`, so behind a proxy a client never receives an
//! internal host name.
//!
//! Bytes never pass through the services: a client PUTs to a presigned URL
//! that signs `content-length` and `x-amz-checksum-sha256`, so the store
//! refuses any other size or checksum, and the service checks both again
//! with a HEAD before it records the attachment.

mod settings;

use std::time::Duration;

use base64::Engine;
use rusty_s3::actions::{
    CreateBucket, DeleteObject, GetObject, HeadBucket, HeadObject, ListObjectsV2, PutObject,
    S3Action,
};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

pub use settings::S3Settings;

/// The store key of a task's attachment, the one name both services use:
/// one prefix per task, so a task's objects can be listed.
pub fn attachment_key(task_id: uuid::Uuid, attachment_id: uuid::Uuid) -> String {
    format!("tasks/{task_id}/{attachment_id}")
}

/// How long a URL the service signs for its own call stays valid.
const OWN_CALL_EXPIRY: Duration = Duration::from_secs(60);
/// A call of the service's own to the store; beyond it the store is "down".
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call to the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Unreachable, timed out, or a 5xx: worth retrying later (503 to a client).
    #[error("the object store is unavailable: {0}")]
    Unavailable(String),
    /// The store answered something this code does not expect.
    #[error("the object store refused: {0}")]
    Refused(String),
}

impl StoreError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }

    fn status(what: &str, status: reqwest::StatusCode) -> Self {
        if status.is_server_error() {
            StoreError::Unavailable(format!("{what}: {status}"))
        } else {
            StoreError::Refused(format!("{what}: {status}"))
        }
    }
}

/// What a HEAD says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// `x-amz-checksum-sha256` (base64), when the store keeps it.
    pub checksum_sha256: Option<String>,
    /// `Content-Encoding` the uploader stored with the object (a header a
    /// presigned PUT cannot forbid), if any.
    pub content_encoding: Option<String>,
}

/// What reading an object to hash it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hashed {
    /// No such object.
    Missing,
    /// Longer than the bound given: not the object declared.
    TooLarge,
    /// Lowercase hex SHA-256.
    Sha256(String),
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    /// `None` when the store gave no instant this code can read.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A presigned upload: the client sends `method` to `url` with exactly
/// `headers` and the bytes, before `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUpload {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// One bucket of an S3-compatible store, as a service reaches it and as
/// its clients do.
#[derive(Clone)]
pub struct ObjectStore {
    internal: Bucket,
    public: Bucket,
    credentials: Credentials,
    http: reqwest::Client,
    presign_expiry: Duration,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("internal", &self.internal.base_url().as_str())
            .field("public", &self.public.base_url().as_str())
            .field("bucket", &self.internal.name())
            .finish()
    }
}

/// The base64 of a SHA-256 given as 64 hex digits (`None` if it is not).
pub fn sha256_hex_to_base64(hex: &str) -> Option<String> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    bytes.map(|b| base64::engine::general_purpose::STANDARD.encode(b))
}

/// Lowercase hex of `bytes`' SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ObjectStore {
    pub fn new(settings: &S3Settings) -> Result<Self, String> {
        let bucket = |url: &str| {
            let url = url.parse().map_err(|e| format!("not a URL: {url}: {e}"))?;
            Bucket::new(
                url,
                UrlStyle::Path,
                settings.bucket.clone(),
                settings.region.clone(),
            )
            .map_err(|e| format!("{e}"))
        };
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(ObjectStore {
            internal: bucket(&settings.url)?,
            public: bucket(&settings.public_url)?,
            credentials: Credentials::new(
                settings.access_key.clone(),
                settings.secret_key.expose_secret().to_owned(),
            ),
            http,
            presign_expiry: settings.presign_expiry,
        })
    }

    pub fn bucket(&self) -> &str {
        self.internal.name()
    }

    /// How long a presigned URL stays valid.
    pub fn presign_expiry(&self) -> Duration {
        self.presign_expiry
    }

    /// A PUT of exactly `size` bytes whose SHA-256 is `sha256_base64`,
    /// signed for the public address: the store refuses another length or
    /// checksum, and the URL expires after the configured time.
    pub fn presign_put(
        &self,
        key: &str,
        size: u64,
        sha256_base64: &str,
        content_type: &str,
    ) -> PresignedUpload {
        let size = size.to_string();
        let mut put = PutObject::new(&self.public, Some(&self.credentials), key);
        put.headers_mut().insert("content-length", size.clone());
        put.headers_mut()
            .insert("x-amz-checksum-sha256", sha256_base64.to_owned());
        put.headers_mut()
            .insert("content-type", content_type.to_owned());
        let url = put.sign(self.presign_expiry);
        PresignedUpload {
            method: "PUT",
            url: url.to_string(),
            headers: vec![
                ("Content-Length".into(), size),
                ("Content-Type".into(), content_type.to_owned()),
                ("x-amz-checksum-sha256".into(), sha256_base64.to_owned()),
            ],
            expires_at: chrono::Utc::now()
                + chrono::Duration::from_std(self.presign_expiry).unwrap_or_default(),
        }
    }

    /// A GET for the public address whose answer carries
    /// `Content-Disposition: attachment` with `filename`, `content_type`
    /// and no content coding, whatever the object was stored with.
    pub fn presign_get(&self, key: &str, filename: &str, content_type: &str) -> String {
        let mut get = GetObject::new(&self.public, Some(&self.credentials), key);
        get.query_mut().insert(
            "response-content-disposition",
            content_disposition(filename),
        );
        get.query_mut()
            .insert("response-content-type", content_type.to_owned());
        // An upload URL takes headers it does not sign, Content-Encoding
        // among them: served with one, the bytes would be decoded into
        // others than those whose checksum was verified.
        get.query_mut()
            .insert("response-content-encoding", "identity");
        get.sign(self.presign_expiry).to_string()
    }

    /// Sends a call of the service's own; no answer is `Unavailable`.
    async fn send(&self, call: reqwest::RequestBuilder) -> Result<reqwest::Response, StoreError> {
        call.send().await.map_err(StoreError::from_reqwest)
    }

    /// The status a HEAD of the bucket answers.
    async fn head_bucket(&self) -> Result<reqwest::StatusCode, StoreError> {
        let url = HeadBucket::new(&self.internal, Some(&self.credentials)).sign(OWN_CALL_EXPIRY);
        Ok(self.send(self.http.head(url)).await?.status())
    }

    /// Whether the store answers at all: a HEAD of the bucket. Any answer
    /// below 500 counts (credentials without `s3:ListBucket` get a 403
    /// from a store that is up); no answer, or a 5xx, is `Unavailable`.
    pub async fn probe(&self) -> Result<(), StoreError> {
        match self.head_bucket().await? {
            status if status.is_server_error() => Err(StoreError::status("head bucket", status)),
            _ => Ok(()),
        }
    }

    /// Creates the bucket unless it exists.
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self.head_bucket().await?.is_success() {
            return Ok(());
        }
        let create = CreateBucket::new(&self.internal, &self.credentials).sign(OWN_CALL_EXPIRY);
        let r = self.send(self.http.put(create)).await?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        // Created, or created meanwhile by another service.
        if status.is_success() || body.contains("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        Err(StoreError::status(
            &format!("create bucket ({body})"),
            status,
        ))
    }

    /// The object's size and checksum, or `None` when there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        // Every x-amz-* header must be signed, or the store refuses the call.
        let mut head = HeadObject::new(&self.internal, Some(&self.credentials), key);
        head.headers_mut().insert("x-amz-checksum-mode", "ENABLED");
        let url = head.sign(OWN_CALL_EXPIRY);
        let r = self
            .send(self.http.head(url).header("x-amz-checksum-mode", "ENABLED"))
            .await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(StoreError::status("head", r.status()));
        }
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let size = header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StoreError::Refused("head: no content-length".into()))?;
        Ok(Some(ObjectInfo {
            size,
            checksum_sha256: header("x-amz-checksum-sha256"),
            content_encoding: header("content-encoding").filter(|v| !v.is_empty()),
        }))
    }

    /// The object's SHA-256 by reading it, up to `max_bytes`.
    pub async fn hash(&self, key: &str, max_bytes: u64) -> Result<Hashed, StoreError> {
        let url =
            GetObject::new(&self.internal, Some(&self.credentials), key).sign(OWN_CALL_EXPIRY);
        let mut r = self
            .send(self.http.get(url).timeout(Duration::from_secs(120)))
            .await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Hashed::Missing);
        }
        if !r.status().is_success() {
            return Err(StoreError::status("get", r.status()));
        }
        let mut hasher = Sha256::new();
        let mut read = 0u64;
        while let Some(chunk) = r.chunk().await.map_err(StoreError::from_reqwest)? {
            read += chunk.len() as u64;
            if read > max_bytes {
                return Ok(Hashed::TooLarge);
            }
            hasher.update(&chunk);
        }
        Ok(Hashed::Sha256(hex(&hasher.finalize())))
    }

    /// Deletes the object (a missing one is not an error).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let url =
            DeleteObject::new(&self.internal, Some(&self.credentials), key).sign(OWN_CALL_EXPIRY);
        let r = self.send(self.http.delete(url)).await?;
        if r.status().is_success() || r.status() == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(StoreError::status("delete", r.status()))
        }
    }

    /// The keys under `prefix` (the first page, at most 1,000: for tests
    /// and operators).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let (page, _) = self.list_page(prefix, None).await?;
        Ok(page.into_iter().map(|o| o.key).collect())
    }

    /// One page (at most 1,000) of the objects under `prefix`, from
    /// `continuation` (the token a previous page gave); with the token of
    /// the next page, if there is one.
    pub async fn list_page(
        &self,
        prefix: &str,
        continuation: Option<&str>,
    ) -> Result<(Vec<Listed>, Option<String>), StoreError> {
        let mut list = ListObjectsV2::new(&self.internal, Some(&self.credentials));
        list.with_prefix(prefix);
        if let Some(token) = continuation {
            list.with_continuation_token(token);
        }
        let url = list.sign(OWN_CALL_EXPIRY);
        let r = self.send(self.http.get(url)).await?;
        if !r.status().is_success() {
            return Err(StoreError::status("list", r.status()));
        }
        let body = r.text().await.map_err(StoreError::from_reqwest)?;
        let parsed = ListObjectsV2::parse_response(&body)
            .map_err(|e| StoreError::Refused(format!("list: {e}")))?;
        let page = parsed
            .contents
            .into_iter()
            .map(|o| Listed {
                last_modified: chrono::DateTime::parse_from_rfc3339(&o.last_modified)
                    .ok()
                    .map(|t| t.with_timezone(&chrono::Utc)),
                key: o.key,
            })
            .collect();
        Ok((page, parsed.next_continuation_token))
    }

    /// A PUT signed for the service's own address (benchmarks, tests),
    /// with the `x-amz-checksum-sha256` (base64) it must carry, if any.
    pub fn presign_put_internal(&self, key: &str, sha256_base64: Option<&str>) -> String {
        let mut put = PutObject::new(&self.internal, Some(&self.credentials), key);
        if let Some(sum) = sha256_base64 {
            put.headers_mut()
                .insert("x-amz-checksum-sha256", sum.to_owned());
        }
        put.sign(self.presign_expiry).to_string()
    }

    /// A GET signed for the service's own address (benchmarks, tests).
    pub fn presign_get_internal(&self, key: &str) -> String {
        GetObject::new(&self.internal, Some(&self.credentials), key)
            .sign(self.presign_expiry)
            .to_string()
    }
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266): an ASCII
/// fallback with quotes, backslashes and non-ASCII replaced, and the exact
/// name percent-encoded.
pub fn content_disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = filename
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_sha256_becomes_base64() {
        let hex = sha256_hex(b"hello");
        assert_eq!(
            sha256_hex_to_base64(&hex).as_deref(),
            Some("LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=")
        );
        assert_eq!(sha256_hex_to_base64("zz"), None);
        assert_eq!(sha256_hex_to_base64(&"g".repeat(64)), None);
    }

    #[test]
    fn content_disposition_has_an_ascii_fallback_and_the_exact_name() {
        assert_eq!(
            content_disposition("a \"b\".txt"),
            "attachment; filename=\"a _b_.txt\"; filename*=UTF-8''a%20%22b%22.txt"
        );
        assert_eq!(
            content_disposition("é.png"),
            "attachment; filename=\"_.png\"; filename*=UTF-8''%C3%A9.png"
        );
    }
}
