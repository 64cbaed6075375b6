//! Webhook deliveries over HTTP, signed the Standard Webhooks way.
//!
//! The body is built from the notification row alone, so every attempt of
//! a delivery carries the same bytes under the same `webhook-id` (the
//! delivery's id): a receiver de-duplicates on that id. Only
//! `webhook-timestamp` and the signature over it change between attempts.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::SecondsFormat;
use hmac::{Hmac, Mac};
use reqwest::Url;
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

use super::guard::{self, GuardedResolver};
use crate::config::WebhookSettings;
use crate::delivery::{Channel, Job, Notification, Outcome, Sender, Target};

/// Every request's `user-agent`.
pub const USER_AGENT: &str = "taskstream-webhooks/1";
/// A secret's prefix; the rest is the standard base64 of the key.
pub const SECRET_PREFIX: &str = "whsec_";
/// How much of a refusing answer's body a failure reason keeps.
const REASON_BODY_BYTES: usize = 200;

/// Sends webhook deliveries with one HTTP client: redirects off, no
/// proxy, a timeout per request, and (unless private addresses are
/// allowed) the [`guard`] on every connection.
pub struct WebhookSender {
    client: reqwest::Client,
    allow_private: bool,
    max_response_bytes: usize,
}

impl WebhookSender {
    pub fn new(settings: &WebhookSettings) -> reqwest::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(settings.timeout)
            .user_agent(USER_AGENT)
            .pool_idle_timeout(Duration::from_secs(30));
        if !settings.allow_private {
            builder = builder.dns_resolver(std::sync::Arc::new(GuardedResolver));
        }
        Ok(WebhookSender {
            client: builder.build()?,
            allow_private: settings.allow_private,
            max_response_bytes: settings.max_response_bytes,
        })
    }

    /// Why `url` may not be sent to as it stands, if it may not: it does
    /// not parse, or its host is a literal non-public IP (a literal is
    /// never resolved, so the resolver's guard does not see it).
    fn refusal(&self, url: &str) -> Option<String> {
        let parsed = match Url::parse(url) {
            Ok(u) => u,
            Err(e) => return Some(format!("the endpoint's URL does not parse: {e}")),
        };
        if self.allow_private {
            return None;
        }
        let ip = literal_ip(&parsed)?;
        (!guard::is_public(ip)).then(|| {
            format!(
                "refused: {ip} is not a public address, and webhooks may reach only public ones"
            )
        })
    }

    /// Reads at most `max_response_bytes` of `response`'s body, keeping
    /// the first few hundred bytes for a failure reason.
    async fn read_capped(&self, mut response: reqwest::Response) -> String {
        let mut kept = Vec::new();
        let mut read = 0usize;
        while read < self.max_response_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = REASON_BODY_BYTES.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        String::from_utf8_lossy(&kept).trim().to_owned()
    }
}

impl Sender for WebhookSender {
    fn channel(&self) -> Channel {
        Channel::Webhook
    }

    async fn send(&self, job: &Job) -> Outcome {
        let Target::Webhook { url, secret, .. } = &job.target else {
            return failed(None, "not a webhook delivery".into(), true);
        };
        // A URL that does not parse, or names a non-public address
        // literally, fails the same way on every retry: given up on at once
        // (the endpoint is disabled and its owner told, to fix it).
        if let Some(reason) = self.refusal(url) {
            return failed(None, reason, true);
        }
        let body = payload(&job.notification);
        let timestamp = chrono::Utc::now().timestamp();
        let signature = match sign(secret, job.id, timestamp, &body) {
            Ok(s) => s,
            Err(reason) => return failed(None, reason, true),
        };
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", job.id.to_string())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "no answer in time"
                } else {
                    "request failed"
                };
                // Without the URL: a hook's URL is often a credential
                // (a token in its path or query), and this reason is logged
                // and stored.
                let e = e.without_url();
                return failed(None, format!("{what}: {}", chain(&e)), false);
            }
        };
        let status = response.status();
        let code = Some(i32::from(status.as_u16()));
        let answer = self.read_capped(response).await;
        if status.is_success() {
            Outcome::Delivered { status: code }
        } else if answer.is_empty() {
            failed(code, format!("HTTP {status}"), false)
        } else {
            failed(code, format!("HTTP {status}: {answer}"), false)
        }
    }
}

/// The host of `url` when it is an IP address. The URL parser has already
/// normalised every IPv4 spelling (`0x7f.1`, `2130706433`) to dotted
/// decimal, and IPv6 literals come in brackets.
pub fn literal_ip(url: &Url) -> Option<std::net::IpAddr> {
    let host = url.host_str()?;
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()
}

fn failed(status: Option<i32>, reason: String, permanent: bool) -> Outcome {
    Outcome::Failed {
        status,
        reason,
        permanent,
    }
}

/// An error and its causes, one after another: reqwest's own message is
/// "error sending request", the reason (a refused address, a reset) is
/// further down.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The JSON body of a delivery, from the notification row only.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: PayloadData<'a>,
}

#[derive(Serialize)]
struct PayloadData<'a> {
    id: Uuid,
    user_id: Uuid,
    kind: &'a str,
    title: &'a str,
    body: &'a str,
    task_id: Option<Uuid>,
    project_id: Option<Uuid>,
    data: &'a serde_json::Value,
    late: bool,
    created_at: String,
}

/// The body every attempt of a delivery of `n` sends, byte for byte.
pub fn payload(n: &Notification) -> Vec<u8> {
    let created_at = n.created_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let p = Payload {
        kind: &n.kind,
        timestamp: created_at.clone(),
        data: PayloadData {
            id: n.id,
            user_id: n.user_id,
            kind: &n.kind,
            title: &n.title,
            body: &n.body,
            task_id: n.task_id,
            project_id: n.project_id,
            data: &n.data,
            late: n.late,
            created_at,
        },
    };
    serde_json::to_vec(&p).unwrap_or_default()
}

/// The key of a `whsec_` secret, or why it is not one.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("the secret does not start with `{SECRET_PREFIX}`"))?;
    STANDARD
        .decode(encoded)
        .map_err(|e| format!("the secret is not base64 after `{SECRET_PREFIX}`: {e}"))
}

/// `webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub fn sign(secret: &str, id: Uuid, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = secret_key(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification() -> Notification {
        Notification {
            id: Uuid::from_u128(42),
            user_id: Uuid::from_u128(1),
            kind: "assigned".into(),
            task_id: Some(Uuid::from_u128(9)),
            project_id: None,
            title: "Assigned: ship it".into(),
            body: "ann assigned you".into(),
            data: serde_json::json!({ "assigned_by": "x" }),
            late: false,
            created_at: chrono::DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
        }
    }

    #[test]
    fn the_payload_is_the_notification_and_the_same_every_time() {
        let n = notification();
        let body = payload(&n);
        assert_eq!(body, payload(&n));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "assigned");
        assert_eq!(v["timestamp"], "2026-09-21T14:13:20.123456Z");
        assert_eq!(v["data"]["id"], n.id.to_string());
        assert_eq!(v["data"]["task_id"], Uuid::from_u128(9).to_string());
        assert_eq!(v["data"]["project_id"], serde_json::Value::Null);
        assert_eq!(v["data"]["data"]["assigned_by"], "x");
        assert_eq!(v["data"]["created_at"], v["timestamp"]);
    }

    // The example of the Standard Webhooks specification's reference
    // libraries (svix): a known secret, id, timestamp and body.
    #[test]
    fn the_signature_matches_the_reference_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id: Uuid = "5d2f1b4e-4f3e-4c1a-9b3a-2b1c0d9e8f7a".parse().unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, id, 1_614_265_330, body).unwrap();
        // Recomputed independently of `sign`.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.1614265330.{{\"test\": 2432232314}}").as_bytes());
        let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(sig, want);
        assert!(sign("nope", id, 1, body).is_err());
        assert!(sign("whsec_***", id, 1, body).is_err());
    }

    fn sender(allow_private: bool) -> WebhookSender {
        WebhookSender::new(&WebhookSettings {
            timeout: Duration::from_secs(1),
            concurrency: 1,
            per_endpoint: 1,
            retry_window: Duration::from_secs(1),
            max_response_bytes: 1024,
            allow_private,
        })
        .unwrap()
    }

    fn job(url: String) -> Job {
        Job {
            id: Uuid::from_u128(5),
            attempt: 1,
            notification: notification(),
            target: Target::Webhook {
                endpoint: Uuid::from_u128(6),
                url,
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            },
        }
    }

    /// A local endpoint: `/moved` redirects to `/ok`, `/ok` is a 200,
    /// `/big` a 500 with a megabyte of body.
    async fn endpoint() -> String {
        use axum::routing::post;
        let app = axum::Router::new()
            .route(
                "/moved",
                post(|| async {
                    (
                        axum::http::StatusCode::TEMPORARY_REDIRECT,
                        [("location", "/ok")],
                    )
                }),
            )
            .route("/ok", post(|| async { "fine" }))
            .route(
                "/big",
                post(|| async {
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "x".repeat(1 << 20),
                    )
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_a_long_answer_is_cut_short() {
        let base = endpoint().await;
        let s = sender(true);
        assert_eq!(
            s.send(&job(format!("{base}/ok"))).await,
            Outcome::Delivered { status: Some(200) }
        );
        match s.send(&job(format!("{base}/moved"))).await {
            Outcome::Failed {
                status: Some(307),
                permanent: false,
                ..
            } => {}
            other => panic!("a redirect: {other:?}"),
        }
        match s.send(&job(format!("{base}/big"))).await {
            Outcome::Failed {
                status: Some(500),
                reason,
                ..
            } => assert!(reason.len() < 300, "{} bytes", reason.len()),
            other => panic!("a 500: {other:?}"),
        }
        // Refused by the guard before any connection, for good: a literal
        // address does not change on a retry.
        match sender(false).send(&job(format!("{base}/ok"))).await {
            Outcome::Failed {
                reason,
                permanent: true,
                ..
            } => {
                assert!(reason.contains("127.0.0.1"), "{reason}")
            }
            other => panic!("loopback: {other:?}"),
        }
    }

    #[test]
    fn literal_non_public_hosts_are_refused_before_sending() {
        let s = sender(false);
        for url in [
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://0x7f.1/",
            "http://169.254.169.254/latest",
        ] {
            let r = s.refusal(url).unwrap_or_else(|| panic!("{url} allowed"));
            assert!(r.contains("not a public address"), "{url}: {r}");
        }
        assert_eq!(s.refusal("https://8.8.8.8/hook"), None);
        assert_eq!(s.refusal("https://example.com/hook"), None);
        assert_eq!(sender(true).refusal("http://127.0.0.1/"), None);
    }
}
