//! The real gateway (HAProxy with `gateway/haproxy.cfg`) in front of one
//! test's services: the same configuration file operators run, configured
//! only through the `GATEWAY_*` variables it documents.
//!
//! HAProxy runs in the foreground as a child process; its access log (one
//! JSON object per line, on standard output) goes to a file the test can
//! read, its own messages (standard error) to another. The process is
//! killed when the `Gateway` is dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::process::free_port;
use crate::{eventually, http, unique};

/// The repository's gateway directory (configuration, maps, document).
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gateway")
}

/// The configuration file every deployment runs.
pub fn config_file() -> PathBuf {
    dir().join("haproxy.cfg")
}

/// The `haproxy` executable: `TASKSTREAM_HAPROXY`, else the one on `PATH`,
/// else Debian's `/usr/sbin/haproxy` (`scripts/infra up` installs it).
pub fn haproxy() -> PathBuf {
    if let Ok(path) = std::env::var("TASKSTREAM_HAPROXY") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| "/usr/sbin/haproxy".into())
}

/// The settings a test may change; everything else keeps the file's defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub anonymous_per_10s: u32,
    pub user_reads_per_10s: u32,
    pub user_writes_per_10s: u32,
    pub auth_failures_per_10s: u32,
    /// Networks whose `X-Forwarded-For` the gateway believes.
    pub trusted_proxies: Vec<String>,
    pub request_timeout: Duration,
    pub max_connections_per_ip: u32,
    /// HAProxy's threads (`GATEWAY_THREADS`).
    pub threads: u32,
    /// Another configuration file to run instead of `gateway/haproxy.cfg`
    /// (a benchmark's baseline), read with the same variables.
    pub config: Option<PathBuf>,
}

impl Default for Settings {
    /// Budgets no functional test reaches; the limits' own tests lower them.
    fn default() -> Self {
        Settings {
            anonymous_per_10s: 100_000,
            user_reads_per_10s: 100_000,
            user_writes_per_10s: 100_000,
            auth_failures_per_10s: 100_000,
            trusted_proxies: Vec::new(),
            request_timeout: Duration::from_secs(10),
            max_connections_per_ip: 1_000,
            threads: 1,
            config: None,
        }
    }
}

/// Where the gateway sends each service's traffic (`host:port`).
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub auth: String,
    pub command: String,
    pub query: String,
    pub notifier: String,
}

impl Upstreams {
    /// From the services' base URLs (`http://127.0.0.1:<port>`): auth,
    /// command-api, query-api, notifier.
    pub fn from_bases([auth, command, query, notifier]: [&str; 4]) -> Self {
        let addr = |base: &str| base.trim_start_matches("http://").to_owned();
        Upstreams {
            auth: addr(auth),
            command: addr(command),
            query: addr(query),
            notifier: addr(notifier),
        }
    }
}

/// One running HAProxy.
pub struct Gateway {
    /// `http://127.0.0.1:<port>`: the one base URL of the API.
    pub base: String,
    /// The Prometheus page, `http://127.0.0.1:<port>/metrics`.
    pub metrics_url: String,
    log: PathBuf,
    messages: PathBuf,
    trusted: PathBuf,
    child: Option<Child>,
}

impl Gateway {
    /// Starts HAProxy in front of `upstreams` and waits until it answers.
    pub async fn start(upstreams: &Upstreams, settings: &Settings) -> Gateway {
        let port = free_port();
        let metrics_port = free_port();
        let tmp = std::env::temp_dir();
        let log = tmp.join(format!("{}.log", unique("taskstream-gateway-")));
        let messages = log.with_extension("messages");
        let trusted = tmp.join(format!("{}.lst", unique("taskstream-trusted-")));
        std::fs::write(&trusted, settings.trusted_proxies.join("\n") + "\n")
            .expect("write trusted proxies");
        let out = std::fs::File::create(&log).expect("gateway log file");
        let err = std::fs::File::create(&messages).expect("gateway messages file");
        let env = environment(port, metrics_port, upstreams, settings, &trusted);
        let child = Command::new(haproxy())
            .arg("-db")
            .arg("-f")
            .arg(settings.config.clone().unwrap_or_else(config_file))
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {} (installed by scripts/infra up): {e}",
                    haproxy().display()
                )
            });
        let gateway = Gateway {
            base: format!("http://127.0.0.1:{port}"),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            log,
            messages,
            trusted,
            child: Some(child),
        };
        let health = gateway.url("/healthz");
        let log_path = gateway.log.clone();
        eventually(
            &format!(
                "the gateway on {} (log {})",
                gateway.base,
                log_path.display()
            ),
            Duration::from_secs(20),
            || {
                let health = health.clone();
                async move {
                    let r = http().get(&health).send().await.ok()?;
                    r.status().is_success().then_some(())
                }
            },
        )
        .await;
        gateway
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The access log so far: one JSON object per request. A line that is
    /// not one fails the test; a last line still being written (no newline
    /// yet) is left for the next read.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("an access log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// HAProxy's process id (to read its CPU time, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// The access line of the request with `request_id`, once written.
    pub async fn access_line(&self, request_id: &str) -> serde_json::Value {
        eventually(
            &format!("the access line of request {request_id}"),
            Duration::from_secs(10),
            || async {
                self.access_log()
                    .into_iter()
                    .find(|l| l["request_id"] == request_id)
            },
        )
        .await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        crate::child::kill_and_reap(&mut self.child);
        let _ = std::fs::remove_file(&self.trusted);
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
            let _ = std::fs::remove_file(&self.messages);
        } else {
            eprintln!(
                "gateway logs kept: {} and {}",
                self.log.display(),
                self.messages.display()
            );
        }
    }
}

/// The `GATEWAY_*` variables for one instance.
fn environment(
    port: u16,
    metrics_port: u16,
    upstreams: &Upstreams,
    s: &Settings,
    trusted: &Path,
) -> Vec<(String, String)> {
    let millis = s.request_timeout.as_millis().max(1);
    [
        ("GATEWAY_LISTEN", format!("127.0.0.1:{port}")),
        (
            "GATEWAY_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        ),
        ("GATEWAY_AUTH_ADDR", upstreams.auth.clone()),
        ("GATEWAY_COMMAND_ADDR", upstreams.command.clone()),
        ("GATEWAY_QUERY_ADDR", upstreams.query.clone()),
        ("GATEWAY_NOTIFIER_ADDR", upstreams.notifier.clone()),
        ("GATEWAY_TRUSTED_PROXIES", trusted.display().to_string()),
        ("GATEWAY_ANONYMOUS_PER_10S", s.anonymous_per_10s.to_string()),
        (
            "GATEWAY_USER_READS_PER_10S",
            s.user_reads_per_10s.to_string(),
        ),
        (
            "GATEWAY_USER_WRITES_PER_10S",
            s.user_writes_per_10s.to_string(),
        ),
        (
            "GATEWAY_AUTH_FAILURES_PER_10S",
            s.auth_failures_per_10s.to_string(),
        ),
        ("GATEWAY_REQUEST_TIMEOUT", format!("{millis}ms")),
        (
            "GATEWAY_MAX_CONNECTIONS_PER_IP",
            s.max_connections_per_ip.to_string(),
        ),
        ("GATEWAY_THREADS", s.threads.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `haproxy -c` on the configuration with its defaults, warnings fatal:
/// the exit status and everything it printed.
pub fn check_config() -> (bool, String) {
    let out = std::process::Command::new(haproxy())
        .args(["-dW", "-c", "-f"])
        .arg(config_file())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", haproxy().display()));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

impl crate::System {
    /// A gateway in front of this system's services.
    pub async fn start_gateway(&self, settings: &Settings) -> Gateway {
        Gateway::start(
            &Upstreams::from_bases([
                &self.auth.base,
                &self.command.base,
                &self.query.base,
                &self.notifier.base,
            ]),
            settings,
        )
        .await
    }
}
