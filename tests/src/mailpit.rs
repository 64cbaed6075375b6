//! Mailpit, the real SMTP server the notifier's e-mail goes to in tests:
//! its REST API as a client, a Mailpit of a test's own that can be stopped
//! and started again, and an SMTP relay that can hold the server's answer
//! to a message (so a sender can be killed after the server took the
//! message and before it heard so).
//!
//! The shared Mailpit keeps every message it receives, so a test that
//! counts messages sees a duplicate. A test's own may run with
//! `--ignore-duplicate-ids` (a second message with a `Message-ID` it holds
//! is accepted and dropped), as a mail store that recognises a resend does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Child;

use crate::eventually;

/// Mailpit's REST API.
#[derive(Clone)]
pub struct Mailpit {
    api: String,
    http: reqwest::Client,
}

impl Mailpit {
    /// The shared Mailpit `scripts/test` starts.
    pub fn shared() -> Self {
        Self::at(&crate::servers().mailpit_url)
    }

    pub fn at(api: &str) -> Self {
        Mailpit {
            api: api.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// The summaries of every message to `address`, newest first.
    pub async fn to(&self, address: &str) -> Vec<Value> {
        let reply = self
            .http
            .get(format!("{}/api/v1/search", self.api))
            .query(&[
                ("query", format!("to:\"{address}\"")),
                ("limit", "500".into()),
            ])
            .send()
            .await
            .unwrap_or_else(|e| panic!("Mailpit at {}: {e}", self.api));
        assert!(
            reply.status().is_success(),
            "Mailpit search: {}",
            reply.status()
        );
        let body: Value = reply.json().await.expect("Mailpit search JSON");
        body["messages"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `address` has at least `n` messages; returns them all.
    pub async fn wait_for(&self, address: &str, n: usize, within: Duration) -> Vec<Value> {
        eventually(&format!("{n} e-mail(s) to {address}"), within, || async {
            let found = self.to(address).await;
            (found.len() >= n).then_some(found)
        })
        .await
    }

    /// One whole message (headers, `Text`, `HTML`) by Mailpit's id.
    pub async fn message(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/api/v1/message/{id}", self.api))
            .send()
            .await
            .expect("Mailpit message")
            .json()
            .await
            .expect("Mailpit message JSON")
    }

    /// One message's headers, by Mailpit's id.
    pub async fn headers(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/api/v1/message/{id}/headers", self.api))
            .send()
            .await
            .expect("Mailpit headers")
            .json()
            .await
            .expect("Mailpit headers JSON")
    }
}

/// A Mailpit of one test's own, on free loopback ports, that the test may
/// stop and start again (same ports, same store).
pub struct OwnMailpit {
    pub smtp: SocketAddr,
    pub api: SocketAddr,
    dir: PathBuf,
    drop_resends: bool,
    child: Option<Child>,
}

impl OwnMailpit {
    /// Keeping every message it receives.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// `drop_resends`: with `--ignore-duplicate-ids`.
    pub async fn start_with(drop_resends: bool) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("taskstream-mailpit-"));
        std::fs::create_dir_all(&dir).expect("mailpit dir");
        let mut m = OwnMailpit {
            smtp: SocketAddr::from(([127, 0, 0, 1], crate::process::free_port())),
            api: SocketAddr::from(([127, 0, 0, 1], crate::process::free_port())),
            dir,
            drop_resends,
            child: None,
        };
        m.resume().await;
        m
    }

    pub fn client(&self) -> Mailpit {
        Mailpit::at(&format!("http://{}", self.api))
    }

    /// SIGKILLs it: connections are refused until [`OwnMailpit::resume`].
    pub async fn stop(&mut self) {
        crate::child::kill(&mut self.child, "mailpit").await;
    }

    /// Starts it (again) and waits until both ports answer.
    pub async fn resume(&mut self) {
        let bin = std::env::var("TASKSTREAM_MAILPIT_BIN").unwrap_or_else(|_| {
            panic!(
                "TASKSTREAM_MAILPIT_BIN is not set (scripts/test sets it; see scripts/infra env)"
            )
        });
        let child = tokio::process::Command::new(&bin)
            .arg("--smtp")
            .arg(self.smtp.to_string())
            .arg("--listen")
            .arg(self.api.to_string())
            .arg("--database")
            .arg(self.dir.join("mailpit.db"))
            .arg("--disable-version-check")
            .args(self.drop_resends.then_some("--ignore-duplicate-ids"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        self.child = Some(child);
        let (smtp, api) = (self.smtp, self.api);
        eventually(
            "the test's Mailpit to answer",
            Duration::from_secs(30),
            || async move {
                let up = TcpStream::connect(smtp).await.is_ok()
                    && reqwest::get(format!("http://{api}/api/v1/info"))
                        .await
                        .is_ok_and(|r| r.status().is_success());
                up.then_some(())
            },
        )
        .await;
    }
}

impl Drop for OwnMailpit {
    fn drop(&mut self) {
        crate::child::kill_and_reap(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An SMTP relay in front of a server that forwards everything, except
/// that once the first message's end (`CRLF.CRLF`) has gone through, the
/// server's answers on that connection are held back for good: the server
/// has the message, the sender never hears so. Later connections (a
/// restarted sender's) are relayed whole.
pub struct HoldingSmtpRelay {
    pub addr: SocketAddr,
    /// Set once some client's message end went through.
    pub held: Arc<AtomicBool>,
}

impl HoldingSmtpRelay {
    pub async fn start(server: SocketAddr) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let held = Arc::new(AtomicBool::new(false));
        let any_held = held.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(server).await else {
                    continue;
                };
                let held = any_held.clone();
                tokio::spawn(relay_holding(client, upstream, held));
            }
        });
        HoldingSmtpRelay { addr, held }
    }
}

/// `held`: whether a message end was held already (then this connection
/// is relayed whole).
async fn relay_holding(client: TcpStream, upstream: TcpStream, held: Arc<AtomicBool>) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = upstream.into_split();
    let ended = Arc::new(AtomicBool::new(false));
    let saw_end = ended.clone();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            tail.extend_from_slice(&buf[..n]);
            // Decided before the bytes reach the server, so its answer
            // to them is already held.
            if tail.windows(5).any(|w| w == b"\r\n.\r\n") && !held.swap(true, Ordering::SeqCst) {
                saw_end.store(true, Ordering::SeqCst);
            }
            let keep = tail.len().saturating_sub(4);
            tail.drain(..keep);
            if server_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if ended.load(Ordering::SeqCst) {
                continue;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(up, down);
}
