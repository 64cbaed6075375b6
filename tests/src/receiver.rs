//! A webhook receiver for the tests: a real HTTP server on 127.0.0.1 that
//! checks every request's Standard Webhooks signature with its own
//! implementation of the documented algorithm (HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed by the base64 after
//! `whsec_`), refuses stale timestamps, records what it got, and answers
//! as the test scripts it: a status, never, or once the test releases it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How far a `webhook-timestamp` may be from now (the Standard Webhooks
/// libraries' default tolerance).
pub const TOLERANCE_SECONDS: i64 = 300;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// This status at once.
    Status(u16),
    /// Never (until the receiver is dropped).
    Hang,
    /// This status, once [`Receiver::release`] is called.
    Held(u16),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: i64,
    pub body: Vec<u8>,
    pub content_type: String,
    pub user_agent: String,
    /// The signature is the one the secret gives, and the timestamp fresh.
    pub verified: bool,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("a JSON body ({e}): {:?}", self.body))
    }
}

struct Inner {
    key: Vec<u8>,
    script: Mutex<VecDeque<Reply>>,
    otherwise: Mutex<Reply>,
    seen: Mutex<Vec<Received>>,
    released: watch::Sender<bool>,
    stop: CancellationToken,
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    /// `http://127.0.0.1:{port}/hook`.
    pub url: String,
    pub port: u16,
    secret: String,
    inner: Arc<Inner>,
}

impl Receiver {
    /// A receiver with a fresh secret, answering 204 unless scripted.
    pub async fn start() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self::start_with(&format!("whsec_{}", STANDARD.encode(key))).await
    }

    /// A receiver checking signatures with `secret`, on a free port.
    pub async fn start_with(secret: &str) -> Self {
        Self::start_on(0, secret).await
    }

    /// A receiver on `port` (0: any free one).
    pub async fn start_on(port: u16, secret: &str) -> Self {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .expect("base64 after whsec_");
        let inner = Arc::new(Inner {
            key,
            script: Mutex::new(VecDeque::new()),
            otherwise: Mutex::new(Reply::Status(204)),
            seen: Mutex::new(Vec::new()),
            released: watch::channel(false).0,
            stop: CancellationToken::new(),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let app = Router::new().fallback(receive).with_state(inner.clone());
        let stop = inner.stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            port,
            secret: secret.to_owned(),
            inner,
        }
    }

    /// The secret to register the endpoint with.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The next requests are answered with `replies`, in order; then as
    /// [`Receiver::otherwise`] says.
    pub fn script(&self, replies: &[Reply]) {
        self.inner
            .script
            .lock()
            .unwrap()
            .extend(replies.iter().copied());
    }

    /// How requests beyond the script are answered.
    pub fn otherwise(&self, reply: Reply) {
        *self.inner.otherwise.lock().unwrap() = reply;
    }

    /// Lets every held request (and every later one) answer.
    pub fn release(&self) {
        self.inner.released.send_replace(true);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests came, and returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        crate::eventually(
            &format!("{n} webhook request(s) at {}", self.url),
            timeout,
            || async {
                let seen = self.received();
                (seen.len() >= n).then_some(seen)
            },
        )
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.inner.stop.cancel();
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The Standard Webhooks check: one of the space-separated `v1,` entries
/// of `signature` is base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub fn verify(key: &[u8], id: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = header(&headers, "webhook-id");
    let ts_text = header(&headers, "webhook-timestamp");
    let timestamp: i64 = ts_text.parse().unwrap_or(i64::MIN);
    let fresh = timestamp != i64::MIN
        && (chrono::Utc::now().timestamp() - timestamp).abs() <= TOLERANCE_SECONDS;
    let verified = !id.is_empty()
        && fresh
        && verify(
            &inner.key,
            &id,
            &ts_text,
            &body,
            &header(&headers, "webhook-signature"),
        );
    inner.seen.lock().unwrap().push(Received {
        id,
        timestamp,
        body: body.to_vec(),
        content_type: header(&headers, "content-type"),
        user_agent: header(&headers, "user-agent"),
        verified,
        at: Instant::now(),
    });
    if !verified {
        return StatusCode::UNAUTHORIZED;
    }
    let reply = inner
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| *inner.otherwise.lock().unwrap());
    let status = match reply {
        Reply::Status(s) => s,
        Reply::Hang => {
            inner.stop.cancelled().await;
            503
        }
        Reply::Held(s) => {
            let mut released = inner.released.subscribe();
            tokio::select! {
                _ = released.wait_for(|r| *r) => {}
                _ = inner.stop.cancelled() => {}
            }
            s
        }
    };
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_the_right_signature_among_several_and_nothing_else() {
        let key = b"0123456789abcdef0123456789abcdef";
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(b"msg_1.1700000000.{}");
        let good = STANDARD.encode(mac.finalize().into_bytes());
        assert!(verify(
            key,
            "msg_1",
            "1700000000",
            b"{}",
            &format!("v1,{good}")
        ));
        assert!(verify(
            key,
            "msg_1",
            "1700000000",
            b"{}",
            &format!("v1,bad v1,{good}")
        ));
        assert!(!verify(
            key,
            "msg_1",
            "1700000001",
            b"{}",
            &format!("v1,{good}")
        ));
        assert!(!verify(
            key,
            "msg_1",
            "1700000000",
            b"{ }",
            &format!("v1,{good}")
        ));
        assert!(!verify(
            key,
            "msg_1",
            "1700000000",
            b"{}",
            &format!("v2,{good}")
        ));
    }
}
