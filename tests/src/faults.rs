//! Fault injection in front of a real server: a TCP relay on a loopback
//! port that forwards to the server until it is cut. Cutting drops every
//! relayed connection and refuses new ones, as a crashed or partitioned
//! server would look to its clients; restoring lets connections through
//! again. The server behind it keeps running for every other test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Cancelled on `cut`: every relayed connection ends.
    generation: std::sync::Mutex<CancellationToken>,
    stop: CancellationToken,
}

impl Relay {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Arc<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind relay");
        let relay = Arc::new(Relay {
            addr: listener.local_addr().expect("relay addr"),
            up: Arc::new(AtomicBool::new(true)),
            generation: std::sync::Mutex::new(CancellationToken::new()),
            stop: CancellationToken::new(),
        });
        let r = relay.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = r.stop.cancelled() => return,
                };
                if !r.up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cut = r.generation.lock().expect("relay lock").clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        relay
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut g = self.generation.lock().expect("relay lock");
        g.cancel();
        *g = CancellationToken::new();
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
        self.generation.lock().map(|g| g.cancel()).ok();
    }
}

/// `host:port` of a URL such as `postgres://u:p@127.0.0.1:5432/db` or
/// `mongodb://127.0.0.1:27017/?x=y`.
pub fn url_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let hostport = rest.split(['/', '?']).next().unwrap_or(rest);
    hostport
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap_or_else(|e| panic!("not host:port in {url}: {e}"))
}

/// `url` with its `host:port` replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let old = url_addr(url).to_string();
    let old_local = old.replace("127.0.0.1", "localhost");
    if url.contains(&old) {
        url.replacen(&old, &addr.to_string(), 1)
    } else {
        url.replacen(&old_local, &addr.to_string(), 1)
    }
}
