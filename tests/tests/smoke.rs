//! Smoke test of the whole installation: the four real binaries start
//! against the real Postgres, Kafka and MongoDB-wire servers, report ready,
//! stop cleanly on SIGTERM; a message produced to the event topic is read
//! back by a consumer; bad configuration fails start-up fast and says why;
//! every variable a service reads round-trips through its config, is in
//! README.md's table, and is the only kind compose sets.

use service::config::ServiceConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use service::config::{read_from, ConfigError, ExposeSecret, MongoSettings};
use tests::process::{free_port, kv, ProcessSystem, Service};
use tests::{binary, http, servers, unique, Deployment};

#[tokio::test(flavor = "multi_thread")]
async fn four_binaries_start_report_ready_and_stop_on_sigterm() {
    let d = Deployment::fresh().await;
    let s = servers();
    let (auth_port, command_port, query_port, projector_port) =
        (free_port(), free_port(), free_port(), free_port());
    let jwks = format!("http://127.0.0.1:{auth_port}/.well-known/jwks.json");

    let mut auth = Service::start(
        "auth",
        auth_port,
        &[
            kv("AUTH_LISTEN_ADDR", format!("127.0.0.1:{auth_port}")),
            kv("AUTH_DATABASE_URL", &d.database_url),
            kv("AUTH_KAFKA_BROKERS", &s.kafka_brokers),
            kv("AUTH_KAFKA_TOPIC_PREFIX", &d.topic_prefix),
            kv("AUTH_SIGNING_KEY_PATH", d.signing_key_path.display()),
        ],
    );
    auth.wait_ready().await;
    let mut command = Service::start(
        "command-api",
        command_port,
        &[
            kv(
                "COMMAND_API_LISTEN_ADDR",
                format!("127.0.0.1:{command_port}"),
            ),
            kv("COMMAND_API_DATABASE_URL", &d.database_url),
            kv("COMMAND_API_KAFKA_BROKERS", &s.kafka_brokers),
            kv("COMMAND_API_KAFKA_TOPIC_PREFIX", &d.topic_prefix),
            kv("COMMAND_API_JWKS_URL", &jwks),
            // The object store's credentials: required outside development mode.
            kv("COMMAND_API_S3_URL", &s.s3_url),
            kv("COMMAND_API_S3_ACCESS_KEY", &s.s3_access_key),
            kv("COMMAND_API_S3_SECRET_KEY", &s.s3_secret_key),
        ],
    );
    let mut query = Service::start(
        "query-api",
        query_port,
        &[
            kv("QUERY_API_LISTEN_ADDR", format!("127.0.0.1:{query_port}")),
            kv("QUERY_API_DATABASE_URL", &d.database_url),
            kv("QUERY_API_MONGODB_URL", &s.mongodb_url),
            kv("QUERY_API_MONGODB_DATABASE", &d.mongodb_database),
            kv("QUERY_API_JWKS_URL", &jwks),
            // A secret of its own: outside development mode there is no default.
            kv("QUERY_API_CURSOR_SECRET", unique("smoke-cursor-secret-")),
            kv("QUERY_API_S3_URL", &s.s3_url),
            kv("QUERY_API_S3_ACCESS_KEY", &s.s3_access_key),
            kv("QUERY_API_S3_SECRET_KEY", &s.s3_secret_key),
        ],
    );
    let mut projector = Service::start(
        "projector",
        projector_port,
        &[
            kv(
                "PROJECTOR_LISTEN_ADDR",
                format!("127.0.0.1:{projector_port}"),
            ),
            kv("PROJECTOR_KAFKA_BROKERS", &s.kafka_brokers),
            kv("PROJECTOR_KAFKA_TOPIC_PREFIX", &d.topic_prefix),
            kv("PROJECTOR_GROUP_ID", unique("smoke-")),
            kv("PROJECTOR_MONGODB_URL", &s.mongodb_url),
            kv("PROJECTOR_MONGODB_DATABASE", &d.mongodb_database),
        ],
    );
    command.wait_ready().await;
    query.wait_ready().await;
    projector.wait_ready().await;

    for port in [auth_port, command_port, query_port, projector_port] {
        let healthz = http()
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(healthz.status(), 200, "healthz on {port}");
        let metrics = http()
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(metrics.status(), 200, "metrics on {port}");
        let ct = metrics.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            ct.starts_with("text/plain"),
            "metrics content type on {port}: {ct}"
        );
        // The health requests above are counted by the request metrics.
        let text = metrics.text().await.expect("metrics body");
        assert!(
            text.contains("http_requests_total"),
            "no request metrics on {port}:\n{text}"
        );
    }

    for mut service in [projector, query, command, auth] {
        service.terminate(Duration::from_secs(30));
    }
}

/// The process harness itself: the four services of a deployment as
/// processes; one killed with SIGKILL comes back on the same port and
/// settings, and all stop cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_killed_with_sigkill_restarts_with_the_same_settings() {
    let mut sys = ProcessSystem::start().await;
    let pid = sys.projector.pid().expect("running");
    sys.projector.kill9();
    assert_eq!(sys.projector.pid(), None);
    assert!(
        http()
            .get(sys.projector.url("/healthz"))
            .send()
            .await
            .is_err(),
        "the killed projector still answers"
    );
    sys.projector.restart().await;
    assert_ne!(sys.projector.pid(), Some(pid));
    let page = http()
        .get(sys.projector.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(page.contains("http_requests_total"), "{page}");
    // query-api still verifies tokens from auth's JWKS.
    let token = sys
        .deployment
        .token_for(uuid::Uuid::new_v4(), events::Role::User);
    let res = http()
        .get(sys.query.url("/tasks"))
        .bearer_auth(token)
        .send()
        .await
        .expect("query-api");
    assert_eq!(res.status(), 200);
    sys.terminate(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_produced_to_the_task_topic_is_consumed_back() {
    let d = Deployment::fresh().await;
    let brokers = &servers().kafka_brokers;
    let topics = events::topics::Topics::with_prefix(d.topic_prefix.clone());
    events::kafka::ensure_topics(brokers, &topics)
        .await
        .expect("topics");

    let producer: FutureProducer = events::kafka::producer(brokers).expect("producer");
    let key = uuid::Uuid::new_v4().to_string();
    let payload = format!("{{\"smoke\":\"{}\"}}", unique(""));
    producer
        .send(
            FutureRecord::to(&topics.task_events())
                .key(&key)
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("smoke-"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&topics.task_events()])
        .expect("subscribe");
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30 s")
        .expect("kafka message");
    assert_eq!(msg.key(), Some(key.as_bytes()));
    assert_eq!(msg.payload(), Some(payload.as_bytes()));
}

/// Runs `binary` with `env` and expects it to exit non-zero quickly with
/// `expected` in its error output.
fn assert_fails_fast(name: &str, env: &[(String, String)], expected: &str) {
    let started = Instant::now();
    let mut child = Command::new(binary(name))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} with {env:?} did not exit within 30 s (expected a fast failure naming {expected:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        !status.success(),
        "{name} with {env:?} should fail, exited {status}"
    );
    assert!(
        stderr.contains(expected),
        "{name} with {env:?}: expected {expected:?} in its error output, got:\n{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_fails_start_up_naming_the_cause() {
    let d = Deployment::fresh().await;
    let key = kv("AUTH_SIGNING_KEY_PATH", d.signing_key_path.display());
    let db = kv("AUTH_DATABASE_URL", &d.database_url);
    let port = free_port();
    let listen = kv("AUTH_LISTEN_ADDR", format!("127.0.0.1:{port}"));

    assert_fails_fast(
        "auth",
        &[kv("AUTH_LISTEN_ADDR", "not-an-address"), key.clone()],
        "AUTH_LISTEN_ADDR",
    );
    assert_fails_fast(
        "query-api",
        &[kv("QUERY_API_LISTEN_ADDR", "127.0.0.1:http")],
        "QUERY_API_LISTEN_ADDR",
    );
    // More projects per user than query-api reads memberships for.
    assert_fails_fast(
        "command-api",
        &[kv("COMMAND_API_MAX_PROJECTS_PER_USER", "1001")],
        "COMMAND_API_MAX_PROJECTS_PER_USER",
    );
    assert_fails_fast(
        "auth",
        &[
            listen.clone(),
            db.clone(),
            kv("AUTH_SIGNING_KEY_PATH", "/nonexistent/key.pem"),
        ],
        "/nonexistent/key.pem",
    );
    assert_fails_fast(
        "auth",
        &[
            listen.clone(),
            key.clone(),
            kv(
                "AUTH_DATABASE_URL",
                "postgres://taskstream:taskstream@127.0.0.1:1/x",
            ),
        ],
        "postgres",
    );
    assert_fails_fast(
        "projector",
        &[
            kv(
                "PROJECTOR_LISTEN_ADDR",
                format!("127.0.0.1:{}", free_port()),
            ),
            kv(
                "PROJECTOR_MONGODB_URL",
                "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=2000",
            ),
        ],
        "mongodb",
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    assert_fails_fast(
        "auth",
        &[
            kv("AUTH_LISTEN_ADDR", taken_addr),
            key,
            db,
            kv("AUTH_KAFKA_BROKERS", &servers().kafka_brokers),
            kv("AUTH_KAFKA_TOPIC_PREFIX", &d.topic_prefix),
        ],
        "cannot listen",
    );
}

/// Every environment variable each service binary reads, from its
/// config's own list (checked in each crate against what `from_env` asks
/// for), the operator command's password and the log filter.
fn variables_read() -> BTreeMap<&'static str, BTreeSet<String>> {
    let log = service::config::LOG_FILTER_VAR.to_owned();
    let mut auth = auth::Config::vars();
    auth.push(auth::config::ADMIN_PASSWORD_VAR.to_owned());
    [
        ("auth", auth),
        ("command-api", command_api::Config::vars()),
        ("query-api", query_api::Config::vars()),
        ("projector", projector::Config::vars()),
        ("notifier", notifier::Config::vars()),
    ]
    .into_iter()
    .map(|(service, mut vars)| {
        vars.push(log.clone());
        (service, vars.into_iter().collect())
    })
    .collect()
}

/// `config` written as variables (as the process harness does) and read
/// back writes the same variables; it reads exactly those it lists, and
/// writes all of them but development mode (which no config records).
fn check_round_trip<C: ServiceConfig>(
    service: &str,
    config: &C,
    from_env: impl FnOnce() -> Result<C, ConfigError>,
) {
    let (written, listed) = (config.to_env(), C::vars());
    let (rewritten, asked) = read_from(&written, || from_env().map(|c| c.to_env()));
    let rewritten =
        rewritten.unwrap_or_else(|e| panic!("{service} reads back its own variables: {e}"));
    assert_eq!(rewritten, written, "{service} reads back what it writes");
    let listed: BTreeSet<String> = listed.into_iter().collect();
    assert_eq!(
        asked, listed,
        "{service} reads exactly the variables it lists"
    );
    let unwritten: Vec<&String> = listed
        .iter()
        .filter(|var| !written.iter().any(|(name, _)| name == *var))
        .collect();
    assert!(
        unwritten
            .iter()
            .all(|var| *var == service::config::DEVELOPMENT_VAR),
        "{service} does not write {unwritten:?}"
    );
}

#[test]
fn every_config_reads_back_what_it_writes_and_never_prints_a_secret() {
    let d = Deployment {
        database_url: "postgres://taskstream:pg-s3cr3t@db:5432/ts".into(),
        topic_prefix: "t-".into(),
        mongodb_database: "views".into(),
        signing_key_path: "/keys/jwt-signing.pem".into(),
    };
    let mongo = MongoSettings::new("mongodb://reader:mongo-s3cr3t@mongo:27017/", "views");
    let jwks = "http://auth:8081/.well-known/jwks.json";

    let auth = d.auth_config();
    check_round_trip("auth", &auth, auth::Config::from_env);
    let command = d.command_api_config(jwks);
    check_round_trip("command-api", &command, command_api::Config::from_env);
    let query = query_api::Config {
        mongo: mongo.clone(),
        ..d.query_api_config(jwks)
    };
    check_round_trip("query-api", &query, query_api::Config::from_env);
    let projector = projector::Config {
        mongo,
        ..d.projector_config()
    };
    check_round_trip("projector", &projector, projector::Config::from_env);
    let notifier = d.notifier_config(jwks);
    check_round_trip("notifier", &notifier, notifier::Config::from_env);

    let cursor_secret = query.cursor_secret.expose_secret().to_owned();
    for shown in [
        format!("{auth:?}"),
        format!("{command:?}"),
        format!("{query:?}"),
        format!("{projector:?}"),
    ] {
        for secret in ["pg-s3cr3t", "mongo-s3cr3t", &cursor_secret] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("[REDACTED]"), "{shown}");
    }
}

fn repository_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names in code spans of the table rows of README.md's configuration
/// section.
fn readme_configuration_variables(readme: &str) -> BTreeSet<String> {
    let start = readme
        .find("\n## Configuration\n")
        .expect("README.md has a configuration section");
    let section = &readme[start + 1..];
    let section = section[1..]
        .find("\n## ")
        .map_or(section, |end| &section[..end + 1]);
    section
        .lines()
        .filter(|line| line.starts_with('|'))
        .flat_map(|line| line.split('`').skip(1).step_by(2))
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_lists_every_variable_the_services_read() {
    let listed = readme_configuration_variables(&repository_file("README.md"));
    let missing: Vec<String> = variables_read()
        .into_values()
        .flatten()
        .filter(|var| !listed.contains(var))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's configuration table lacks {missing:?}"
    );
}

/// The variable names set under `environment:` of each entry under
/// `services:` (map form `NAME: value` or list form `- NAME=value`).
fn compose_environment(compose: &str) -> BTreeMap<String, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut in_services, mut service, mut in_environment) = (false, None::<String>, false);
    for line in compose.lines() {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        match line.len() - line.trim_start().len() {
            0 => {
                in_services = item == "services:";
                service = None;
                in_environment = false;
            }
            2 if in_services => {
                service = item.strip_suffix(':').map(str::to_owned);
                in_environment = false;
            }
            4 => in_environment = item == "environment:",
            _ if in_environment => {
                let entry = item.trim_start_matches('-').trim_start();
                let name: String = entry
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if let Some(service) = &service {
                    found.entry(service.clone()).or_default().push(name);
                }
            }
            _ => {}
        }
    }
    found
}

#[test]
fn compose_sets_only_variables_the_services_read() {
    let compose = compose_environment(&repository_file("compose/docker-compose.yml"));
    for (service, read) in variables_read() {
        let set = compose
            .get(service)
            .unwrap_or_else(|| panic!("compose/docker-compose.yml configures no {service}"));
        let unread: Vec<&String> = set.iter().filter(|var| !read.contains(*var)).collect();
        assert!(
            unread.is_empty(),
            "compose/docker-compose.yml sets {unread:?} for {service}, which reads only {read:?}"
        );
    }
}
