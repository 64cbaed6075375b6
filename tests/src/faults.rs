//! Fault injection in front of a real server: a TCP relay on a loopback
//! port that forwards to the server until it is cut. Cutting drops every
//! relayed connection and refuses new ones, as a crashed or partitioned
//! server would look to its clients; restoring lets connections through
//! again. The server behind it keeps running for every other test.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    /// Cancelled on `cut`: the listener closes and every relayed connection ends.
    generation: std::sync::Mutex<CancellationToken>,
}

impl Relay {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Arc<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind relay");
        let relay = Arc::new(Relay {
            addr: listener.local_addr().expect("relay addr"),
            target,
            generation: std::sync::Mutex::new(CancellationToken::new()),
        });
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: TcpListener) {
        let cut = self.generation.lock().expect("relay lock").clone();
        let target = self.target;
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    // Dropping the listener: new connections are refused.
                    _ = cut.cancelled() => return,
                };
                let cut = cut.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every relayed connection and stops listening: connecting is
    /// refused, as with a server that is down.
    pub fn cut(&self) {
        let mut g = self.generation.lock().expect("relay lock");
        g.cancel();
        *g = CancellationToken::new();
    }

    /// Listens on the same port again.
    pub async fn restore(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(g) = self.generation.lock() {
            g.cancel();
        }
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
