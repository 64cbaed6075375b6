//! A Kafka broker of a test's own, for tests that stop Kafka: the shared
//! broker of `scripts/infra` serves every other test and must stay up.
//!
//! One single-node KRaft process (broker and controller) from the Kafka
//! installation `scripts/infra` keeps in the cache, on two free ports, with
//! its data under a temporary directory. It can be stopped (SIGTERM, as an
//! operator would) or killed (SIGKILL) and started again on the same ports
//! and data, so clients configured with [`Broker::bootstrap`] reconnect to
//! the same cluster with its topics and messages.
//!
//! Where Kafka is: `TASKSTREAM_KAFKA_HOME` (`scripts/test` and
//! `scripts/infra env` export it), else the cache path `scripts/infra` uses,
//! `${TASKSTREAM_CACHE:-$HOME/.cache/taskstream}/kafka-<version>` with the
//! version of `scripts/kafka/pom.xml`. Java comes from `PATH`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::unique;

/// How long a (re)start may take before the test fails: a JVM start is a few
/// seconds on an idle machine, much more on a loaded one.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a SIGTERM'd broker may take to shut down.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Broker {
    dir: PathBuf,
    port: u16,
    controller_port: u16,
    libs: PathBuf,
    child: Option<Child>,
    /// Starts so far (the log of each goes to its own file).
    starts: u32,
}

/// The Kafka installation's jar directory (see the module docs).
pub fn kafka_libs() -> PathBuf {
    let home = match std::env::var_os("TASKSTREAM_KAFKA_HOME") {
        Some(h) => PathBuf::from(h),
        None => {
            let pom = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka/pom.xml");
            let pom = std::fs::read_to_string(&pom)
                .unwrap_or_else(|e| panic!("read {}: {e}", pom.display()));
            let version = pom
                .split_once("<kafka.version>")
                .and_then(|(_, rest)| rest.split_once("</kafka.version>"))
                .map(|(v, _)| v.trim().to_owned())
                .expect("<kafka.version> in scripts/kafka/pom.xml");
            let cache = std::env::var_os("TASKSTREAM_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/taskstream")
                });
            cache.join(format!("kafka-{version}"))
        }
    };
    let libs = home.join("libs");
    assert!(
        libs.join(".").exists() && std::fs::read_dir(&libs).is_ok_and(|mut d| d.next().is_some()),
        "no Kafka jars in {} (run scripts/infra up, or set TASKSTREAM_KAFKA_HOME)",
        libs.display()
    );
    libs
}

fn free_port() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("free port")
}

/// A KRaft cluster id: 16 random bytes, URL-safe base64 without padding,
/// as `kafka-storage random-uuid` prints them (never starting with '-').
fn cluster_id() -> String {
    use base64::Engine;
    loop {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

impl Broker {
    /// Formats a fresh data directory and starts the broker; returns once it
    /// answers a metadata request.
    pub async fn start() -> Broker {
        let libs = kafka_libs();
        let (client, controller) = (free_port(), free_port());
        let port = client.local_addr().unwrap().port();
        let controller_port = controller.local_addr().unwrap().port();
        drop((client, controller));
        let dir = std::env::temp_dir().join(unique("taskstream-kafka-"));
        std::fs::create_dir_all(dir.join("data")).expect("broker dir");
        let mut broker = Broker {
            dir,
            port,
            controller_port,
            libs,
            child: None,
            starts: 0,
        };
        broker.write_config();
        broker.format().await;
        broker.restart().await;
        broker
    }

    /// `bootstrap.servers` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn write_config(&self) {
        let (dir, port, cport) = (self.dir.display(), self.port, self.controller_port);
        let server = format!(
            "# A test's own single-node KRaft broker (tests/src/broker.rs).
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{cport}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={dir}/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=1
num.io.threads=2
# After a SIGKILL the restarted broker waits for its dead incarnation's
# session to expire before it is unfenced (9 s by default).
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
"
        );
        std::fs::write(self.dir.join("server.properties"), server).expect("server.properties");
        let log4j = "status = warn
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = WARN
";
        std::fs::write(self.dir.join("log4j2.properties"), log4j).expect("log4j2.properties");
    }

    /// `java` with the classpath and settings of a small, fast-starting JVM.
    fn java(&self, log: &Path) -> Command {
        let out = std::fs::File::create(log).expect("broker log");
        let mut cmd = Command::new("java");
        cmd.current_dir(&self.dir)
            .arg("-Xms64m")
            .arg("-Xmx384m")
            // Start-up time matters more than peak throughput here.
            .arg("-XX:TieredStopAtLevel=1")
            .arg("-XX:+UseSerialGC")
            .arg("-Djava.awt.headless=true")
            .arg(format!(
                "-Dlog4j2.configurationFile=file:{}",
                self.dir.join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .kill_on_drop(true);
        cmd
    }

    async fn format(&self) {
        let log = self.dir.join("format.log");
        let status = self
            .java(&log)
            .args(["kafka.tools.StorageTool", "format", "--standalone", "-t"])
            .arg(cluster_id())
            .arg("-c")
            .arg(self.dir.join("server.properties"))
            .status()
            .await
            .expect("run kafka StorageTool (is java on PATH?)");
        assert!(
            status.success(),
            "StorageTool format: {status}\n{}",
            tail(&log)
        );
    }

    /// Starts the broker on its ports and data (after [`Broker::stop`] or
    /// [`Broker::kill`]); returns once it answers a metadata request.
    pub async fn restart(&mut self) {
        assert!(!self.is_running(), "the broker is already running");
        self.starts += 1;
        let log = self.log();
        let child = self
            .java(&log)
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .spawn()
            .expect("start kafka (is java on PATH?)");
        self.child = Some(child);
        let started = Instant::now();
        let bootstrap = self.bootstrap();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                panic!(
                    "the test broker exited while starting: {status}\n{}",
                    tail(&log)
                );
            }
            if answers_metadata(&bootstrap).await {
                break;
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "the test broker on {bootstrap} not ready after {READY_TIMEOUT:?}\n{}",
                tail(&log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "test broker on {bootstrap} ready in {:.1?} (start {})",
            started.elapsed(),
            self.starts
        );
    }

    /// SIGTERM, then waits until the process has exited (a clean shutdown).
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the broker is running");
        let pid = child.id().expect("broker pid").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success(), "could not signal the test broker");
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => eprintln!("test broker stopped: {}", status.expect("wait")),
            Err(_) => {
                let _ = child.kill().await;
                panic!("the test broker did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
        }
    }

    /// SIGKILL, then waits until the process is gone.
    pub async fn kill(&mut self) {
        crate::child::kill(&mut self.child, "the test broker").await;
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("broker-{}.log", self.starts))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        crate::child::kill_and_reap(&mut self.child);
        if std::thread::panicking() {
            eprintln!("test broker files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A metadata request that lists at least one broker.
async fn answers_metadata(bootstrap: &str) -> bool {
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let Ok(consumer) = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("log_level", "0")
            .create::<BaseConsumer>()
        else {
            return false;
        };
        consumer
            .fetch_metadata(None, Duration::from_secs(1))
            .is_ok_and(|m| !m.brokers().is_empty())
    })
    .await
    .unwrap_or(false)
}

/// The last lines of a log file, for failure messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(30);
    format!("--- {} ---\n{}", path.display(), lines[from..].join("\n"))
}
