//! The services as real operating-system processes: the workspace binaries,
//! configured only through the environment variables they read, so a test
//! can SIGTERM, SIGKILL and restart them exactly as an operator would.
//!
//! Each process writes its stdout and stderr (the JSON logs) to a file in the
//! temporary directory; a failed wait names that file and prints its tail.
//! The file is removed when the `Service` is dropped, unless the test is
//! failing.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{binary, http, unique, Deployment};

/// How long a service may take to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A port nobody listens on right now (the service binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub use service::config::kv;

enum NotReady {
    Exited(ExitStatus),
    Other(String),
}

/// One service binary running as a child process on a fixed port.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts `name` (a workspace binary) with exactly `env` added to the
    /// inherited environment; `port` is the one its listen address names.
    /// `RUST_LOG` defaults to `info` so the log file says what happened.
    pub fn start(name: &'static str, port: u16, env: &[(String, String)]) -> Service {
        let log =
            std::env::temp_dir().join(format!("{}.log", unique(&format!("taskstream-{name}-"))));
        let mut service = Service {
            name,
            port,
            base: format!("http://127.0.0.1:{port}"),
            env: env.to_vec(),
            child: None,
            log,
        };
        service.spawn();
        service
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", self.log.display()));
        let err = out.try_clone().expect("log file handle");
        let mut cmd = Command::new(binary(self.name));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.name));
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The file holding this service's output, across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Panics with `what`, the log file's path and its last lines.
    fn fail(&self, what: &str) -> ! {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        panic!(
            "{}: {what}\nlog: {}\n--- last lines ---\n{tail}",
            self.name,
            self.log.display()
        );
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("try_wait")
    }

    /// Starts `name` on a free port with the environment `env(port)` and
    /// waits until it is ready. If something else took the port between
    /// choosing and binding it, tries another.
    pub async fn start_ready(
        name: &'static str,
        env: impl Fn(u16) -> Vec<(String, String)>,
    ) -> Service {
        let mut attempt = 1;
        loop {
            let port = free_port();
            let mut s = Service::start(name, port, &env(port));
            match s.until_ready().await {
                Ok(()) => return s,
                Err(NotReady::Exited(_))
                    if attempt < 3 && s.log_text().contains("cannot listen") =>
                {
                    attempt += 1;
                }
                Err(NotReady::Exited(status)) => {
                    s.fail(&format!("exited before it was ready: {status}"))
                }
                Err(NotReady::Other(why)) => s.fail(&why),
            }
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200 `{"status":"ready"}`; panics if the
    /// process exits first or does not get there within [`READY_TIMEOUT`].
    pub async fn wait_ready(&mut self) {
        match self.until_ready().await {
            Ok(()) => {}
            Err(NotReady::Exited(status)) => {
                self.fail(&format!("exited before it was ready: {status}"))
            }
            Err(NotReady::Other(why)) => self.fail(&why),
        }
    }

    async fn until_ready(&mut self) -> Result<(), NotReady> {
        let url = self.url("/readyz");
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = http();
        loop {
            if self.child.is_none() {
                return Err(NotReady::Other(
                    "waited for readiness of a process that is not running".into(),
                ));
            }
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Err(NotReady::Exited(status));
            }
            if let Ok(res) = client.get(&url).send().await {
                if res.status() == 200 {
                    let body: serde_json::Value = res.json().await.expect("readyz json");
                    if body["status"] != "ready" {
                        return Err(NotReady::Other(format!("/readyz answered 200 with {body}")));
                    }
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(NotReady::Other(format!(
                    "not ready at {url} within {READY_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, signal: &str) {
        let pid = match self.pid() {
            Some(pid) => pid.to_string(),
            None => self.fail(&format!("cannot send SIG{signal}: not running")),
        };
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill");
        if !sent.success() {
            self.fail(&format!("could not send SIG{signal} to {pid}"));
        }
    }

    /// Waits up to `within` for the process to exit; `None` if it did not.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the process must exit successfully within `within`.
    pub fn terminate(&mut self, within: Duration) {
        self.signal("TERM");
        match self.wait_exit(within) {
            Some(status) if status.success() => {}
            Some(status) => self.fail(&format!("exited with {status} after SIGTERM")),
            None => {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                self.fail(&format!("did not stop within {within:?} of SIGTERM"));
            }
        }
    }

    /// SIGKILL (no chance to clean up), and waits until the process is gone.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        match self.wait_exit(Duration::from_secs(10)) {
            Some(status) => {
                use std::os::unix::process::ExitStatusExt;
                if status.signal() != Some(9) {
                    self.fail(&format!("ended with {status}, not by SIGKILL"));
                }
            }
            None => self.fail("still running 10 s after SIGKILL"),
        }
    }

    /// Starts the binary again with the same environment (and so the same
    /// port) after [`Service::terminate`] or [`Service::kill9`], and waits
    /// until it is ready.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The log is kept only when the test fails, for the post-mortem.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The environment variables that configure a service as the given
/// config does (its `to_env`: the names its `from_env` reads), so the
/// in-process `Deployment::*_config` stays the one source of the test
/// settings.
pub fn service_env(c: &impl service::config::ServiceConfig) -> Vec<(String, String)> {
    c.to_env()
}

fn on_port(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

impl Deployment {
    /// auth as a process, ready.
    pub async fn spawn_auth_process(&self) -> Service {
        Service::start_ready("auth", |port| {
            service_env(&auth::Config {
                listen_addr: on_port(port),
                ..self.auth_config()
            })
        })
        .await
    }

    /// command-api as a process trusting `auth`'s JWKS, ready.
    pub async fn spawn_command_api_process(&self, auth: &Service) -> Service {
        let jwks = auth.url("/.well-known/jwks.json");
        Service::start_ready("command-api", |port| {
            service_env(&command_api::Config {
                listen_addr: on_port(port),
                ..self.command_api_config(&jwks)
            })
        })
        .await
    }

    /// The projector as a process with [`Deployment::projector_config`], ready.
    pub async fn spawn_projector_process(&self) -> Service {
        self.spawn_projector_process_with(self.projector_config())
            .await
    }

    /// The projector as a process with `config` (its listen address is
    /// replaced by a free port), ready.
    pub async fn spawn_projector_process_with(&self, config: projector::Config) -> Service {
        Service::start_ready("projector", |port| {
            service_env(&projector::Config {
                listen_addr: on_port(port),
                ..config.clone()
            })
        })
        .await
    }

    /// The notifier as a process with `config` (see
    /// [`Deployment::notifier_config`]; its listen address is replaced by a
    /// free port), ready.
    pub async fn spawn_notifier_process_with(&self, config: notifier::Config) -> Service {
        Service::start_ready("notifier", |port| {
            service_env(&notifier::Config {
                listen_addr: on_port(port),
                ..config.clone()
            })
        })
        .await
    }

    /// query-api as a process trusting `auth`'s JWKS, ready. Tokens from
    /// [`Deployment::token_for`] verify too: auth serves the same key.
    pub async fn spawn_query_api_process(&self, auth: &Service) -> Service {
        let jwks = auth.url("/.well-known/jwks.json");
        Service::start_ready("query-api", |port| {
            service_env(&query_api::Config {
                listen_addr: on_port(port),
                ..self.query_api_config(&jwks)
            })
        })
        .await
    }
}

/// All four services of one deployment, each its own process. The same
/// shape as [`crate::System`] (`base`, `url(path)`), so a test can switch.
pub struct ProcessSystem {
    pub deployment: Deployment,
    pub auth: Service,
    pub command: Service,
    pub projector: Service,
    pub query: Service,
}

impl ProcessSystem {
    pub async fn start() -> Self {
        Self::start_with(Deployment::fresh().await).await
    }

    /// Starts auth first (the APIs fetch its JWKS at start), then the rest.
    pub async fn start_with(deployment: Deployment) -> Self {
        let auth = deployment.spawn_auth_process().await;
        let (command, projector, query) = tokio::join!(
            deployment.spawn_command_api_process(&auth),
            deployment.spawn_projector_process(),
            deployment.spawn_query_api_process(&auth),
        );
        ProcessSystem {
            deployment,
            auth,
            command,
            projector,
            query,
        }
    }

    /// SIGTERM to every service (consumers first); each must exit cleanly.
    pub fn terminate(&mut self, within: Duration) {
        for s in [
            &mut self.projector,
            &mut self.query,
            &mut self.command,
            &mut self.auth,
        ] {
            s.terminate(within);
        }
    }
}

/// Reads one un-labelled counter or gauge from a Prometheus text page
/// (`None` when the series is absent, e.g. before its first increment).
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        (series == name).then(|| value.trim().parse().ok())?
    })
}
