//! A MongoDB-wire server (SecantusDB) of a test's own, for tests that kill
//! the store: the shared server of `scripts/infra` serves every other test
//! and must stay up.
//!
//! The same installation `scripts/infra` keeps in the cache
//! (`TASKSTREAM_SECANTUSD`, else
//! `${TASKSTREAM_CACHE:-$HOME/.cache/taskstream}/secantusdb-<version>/venv/bin/secantusd-py`
//! with the version of `scripts/lib/infra.sh`), on a free port, with its
//! data on disk under a temporary directory. It can be SIGKILLed and
//! started again on the same port and data.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::unique;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct MongoServer {
    dir: PathBuf,
    port: u16,
    binary: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// The `secantusd-py` executable (see the module docs).
pub fn secantusd() -> PathBuf {
    if let Some(p) = std::env::var_os("TASKSTREAM_SECANTUSD") {
        return PathBuf::from(p);
    }
    let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/infra.sh");
    let text =
        std::fs::read_to_string(&infra).unwrap_or_else(|e| panic!("read {}: {e}", infra.display()));
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("TS_SECANTUS_VERSION="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .expect("TS_SECANTUS_VERSION in scripts/lib/infra.sh");
    let cache = std::env::var_os("TASKSTREAM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/taskstream")
        });
    let path = cache.join(format!("secantusdb-{version}/venv/bin/secantusd-py"));
    assert!(
        path.exists(),
        "{} is missing (run scripts/infra up, or set TASKSTREAM_SECANTUSD)",
        path.display()
    );
    path
}

impl MongoServer {
    /// Starts a server on a fresh data directory; returns once it answers a ping.
    pub async fn start() -> MongoServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let dir = std::env::temp_dir().join(unique("taskstream-mongo-"));
        std::fs::create_dir_all(dir.join("data")).expect("mongo dir");
        let mut server = MongoServer {
            dir,
            port,
            binary: secantusd(),
            child: None,
            starts: 0,
        };
        server.restart().await;
        server
    }

    /// The connection string for clients.
    pub fn url(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?retryWrites=false", self.port)
    }

    /// Starts the server on its port and data (after [`MongoServer::kill`]).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        self.starts += 1;
        let log = self.dir.join(format!("mongo-{}.log", self.starts));
        let out = std::fs::File::create(&log).expect("mongo log");
        let child = Command::new(&self.binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--storage-path")
            .arg(self.dir.join("data"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("start secantusd-py");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                panic!(
                    "the test MongoDB server exited while starting: {status}; log {}",
                    log.display()
                );
            }
            if self.answers().await {
                break;
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "the test MongoDB server not ready after {READY_TIMEOUT:?}; log {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn answers(&self) -> bool {
        let Ok(mut options) = mongodb::options::ClientOptions::parse(self.url()).await else {
            return false;
        };
        options.server_selection_timeout = Some(Duration::from_millis(300));
        let Ok(client) = mongodb::Client::with_options(options) else {
            return false;
        };
        client
            .database("admin")
            .run_command(mongodb::bson::doc! { "ping": 1 })
            .await
            .is_ok()
    }

    /// SIGKILL, then waits until the process is gone.
    pub async fn kill(&mut self) {
        crate::child::kill(&mut self.child, "the test MongoDB server").await;
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        crate::child::kill_and_reap(&mut self.child);
        if std::thread::panicking() {
            eprintln!("test MongoDB files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
