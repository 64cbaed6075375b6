//! The end-to-end test harness: every test gets its own Postgres database,
//! Kafka topic prefix and MongoDB database, and starts the real services on
//! port 0 against the real servers `scripts/test` brought up.

pub mod broker;
mod child;
pub mod clients;
pub mod gateway;
pub mod mailpit;
pub mod mongod;
pub mod notify;
pub mod project_commands;
pub mod project_queries;
pub mod receiver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use service::config::{KafkaSettings, MongoSettings, PostgresSettings};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod faults;
pub mod process;

/// Where the servers are; `scripts/test` exports these, defaults match `scripts/infra`.
pub struct Servers {
    /// An admin database URL (databases are created from here).
    pub postgres_admin_url: String,
    pub kafka_brokers: String,
    pub mongodb_url: String,
    /// Mailpit's SMTP address (`host:port`) and its API's base URL.
    pub smtp: String,
    pub mailpit_url: String,
    /// The S3-compatible object store and its credentials.
    pub s3_url: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
}

pub fn servers() -> &'static Servers {
    static S: OnceLock<Servers> = OnceLock::new();
    S.get_or_init(|| Servers {
        postgres_admin_url: std::env::var("TASKSTREAM_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://taskstream:taskstream@127.0.0.1:55432/postgres".into()),
        kafka_brokers: std::env::var("TASKSTREAM_TEST_KAFKA_BROKERS")
            .unwrap_or_else(|_| "127.0.0.1:9092".into()),
        mongodb_url: std::env::var("TASKSTREAM_TEST_MONGODB_URL")
            .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?retryWrites=false".into()),
        smtp: std::env::var("TASKSTREAM_TEST_SMTP").unwrap_or_else(|_| "127.0.0.1:1025".into()),
        mailpit_url: std::env::var("TASKSTREAM_TEST_MAILPIT_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8025".into()),
        s3_url: std::env::var("TASKSTREAM_TEST_S3_URL")
            .unwrap_or_else(|_| objects::S3Settings::DEFAULT_URL.into()),
        s3_access_key: std::env::var("TASKSTREAM_TEST_S3_ACCESS_KEY")
            .unwrap_or_else(|_| objects::S3Settings::DEV_ACCESS_KEY.into()),
        s3_secret_key: std::env::var("TASKSTREAM_TEST_S3_SECRET_KEY")
            .unwrap_or_else(|_| objects::S3Settings::DEV_SECRET_KEY.into()),
    })
}

/// A unique, lowercase name for this test's resources.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

/// Creates an empty database and returns its URL (migrations are the services' job).
pub async fn fresh_database() -> String {
    use sqlx::Connection;
    let admin = &servers().postgres_admin_url;
    let name = unique("ts_");
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .unwrap_or_else(|e| {
            panic!("postgres at {admin} (is scripts/test running the servers?): {e}")
        });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("TASKSTREAM_TEST_DATABASE_URL has no database path: {admin}"),
    }
}

/// A fresh Ed25519 signing key written to a temporary PEM file.
pub fn signing_key_file() -> PathBuf {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key.to_pkcs8_pem(Default::default()).expect("encode key");
    let path = std::env::temp_dir().join(format!("{}.pem", unique("taskstream-key-")));
    std::fs::write(&path, pem.as_bytes()).expect("write key");
    path
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// One running service: its base URL and the token that stops it.
pub struct Running {
    pub base: String,
    pub stop: CancellationToken,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The settings one test's services share.
#[derive(Clone)]
pub struct Deployment {
    pub database_url: String,
    pub topic_prefix: String,
    pub mongodb_database: String,
    pub signing_key_path: PathBuf,
}

impl Deployment {
    pub async fn fresh() -> Self {
        Deployment {
            database_url: fresh_database().await,
            topic_prefix: unique("t") + "-",
            mongodb_database: unique("ts_"),
            signing_key_path: signing_key_file(),
        }
    }

    /// This deployment's database.
    pub fn postgres(&self) -> PostgresSettings {
        PostgresSettings::new(self.database_url.clone())
    }

    /// The test Kafka, with this deployment's topic prefix.
    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings {
            brokers: servers().kafka_brokers.clone(),
            topic_prefix: self.topic_prefix.clone(),
        }
    }

    /// The test object store, with the default bucket (the services
    /// create it when it is missing). Tests of attachments use a bucket of
    /// their own ([`Deployment::s3_bucket`]).
    pub fn s3(&self) -> objects::S3Settings {
        self.s3_bucket(objects::S3Settings::DEFAULT_BUCKET)
    }

    /// The test object store with `bucket`.
    pub fn s3_bucket(&self, bucket: &str) -> objects::S3Settings {
        let s = servers();
        objects::S3Settings {
            access_key: s.s3_access_key.clone(),
            secret_key: s.s3_secret_key.clone().into(),
            ..objects::S3Settings::development(s.s3_url.clone(), bucket)
        }
    }

    /// The test MongoDB-wire server, with this deployment's database.
    pub fn mongo(&self) -> MongoSettings {
        MongoSettings::new(servers().mongodb_url.clone(), self.mongodb_database.clone())
    }

    pub fn auth_config(&self) -> auth::Config {
        auth::Config {
            listen_addr: any_port(),
            postgres: self.postgres(),
            kafka: self.kafka(),
            signing_key_path: self.signing_key_path.display().to_string(),
            issuer: access::DEFAULT_ISSUER.into(),
            audience: access::DEFAULT_AUDIENCE.into(),
            // High enough that no test is throttled unless it lowers them.
            rate_limit_per_minute: std::num::NonZeroU32::MAX,
            rate_limit_per_email_per_minute: std::num::NonZeroU32::MAX,
            rate_limit_capacity: auth::config::DEFAULT_RATE_LIMIT_CAPACITY,
            http: test_http_limits(),
        }
    }

    /// Creates an admin account the way the operator does (`auth
    /// create-admin`, the same library call), in this deployment's database;
    /// returns its id. Log in with `email` and `password` as usual.
    pub async fn create_admin(&self, email: &str, password: &str) -> Uuid {
        let pool = events::store::connect_and_migrate(&self.database_url, 1)
            .await
            .expect("postgres for create-admin");
        let user = auth::operator::create_admin(&pool, email, password.to_owned(), None)
            .await
            .expect("create admin");
        pool.close().await;
        user.id
    }

    pub async fn spawn_auth(&self) -> Running {
        let app = auth::Application::build(self.auth_config())
            .await
            .expect("auth starts");
        spawn(app.port(), |stop| app.run_until_stopped(stop))
    }

    pub fn command_api_config(&self, jwks_url: &str) -> command_api::Config {
        command_api::Config {
            listen_addr: any_port(),
            postgres: self.postgres(),
            kafka: self.kafka(),
            jwt: access::JwtSettings::new(jwks_url),
            // High enough that no test is throttled unless it lowers it.
            write_quota: service::rate_limit::Quota {
                per_minute: std::num::NonZeroU32::MAX,
                burst: std::num::NonZeroU32::MAX,
            },
            max_live_tasks: std::num::NonZeroU32::MAX,
            projects: Default::default(),
            s3: self.s3(),
            // No sweep: tests share a bucket with one another (and with a
            // dev stack), so every deployment's objects are ones this
            // database does not name. A test of the sweep uses a bucket of
            // its own and turns it on.
            attachments: command_api::attachments::Limits {
                sweep_every: None,
                ..Default::default()
            },
            http: test_http_limits(),
        }
    }

    pub async fn spawn_command_api(&self, auth: &Running) -> Running {
        let config = self.command_api_config(&auth.url("/.well-known/jwks.json"));
        let app = command_api::Application::build(config, None)
            .await
            .expect("command-api starts");
        spawn(app.port(), |stop| app.run_until_stopped(stop))
    }

    pub fn projector_config(&self) -> projector::Config {
        projector::Config {
            listen_addr: any_port(),
            kafka: self.kafka(),
            // One group per deployment, so a restarted projector resumes
            // from the offsets its predecessor committed.
            group_id: format!("projector-{}", self.mongodb_database),
            mongo: self.mongo(),
            batch_max_messages: 500,
            mongodb_write_concern: Default::default(),
        }
    }

    pub async fn spawn_projector(&self) -> Running {
        self.spawn_projector_with(self.projector_config()).await
    }

    pub async fn spawn_projector_with(&self, config: projector::Config) -> Running {
        let app = projector::Application::build(config)
            .await
            .expect("projector starts");
        spawn(app.port(), |stop| app.run_until_stopped(stop))
    }

    pub fn query_api_config(&self, jwks_url: &str) -> query_api::Config {
        query_api::Config {
            listen_addr: any_port(),
            mongo: self.mongo(),
            postgres: self.postgres(),
            jwt: access::JwtSettings::new(jwks_url),
            cursor_secret: unique("cursor-secret-").into(),
            consistency_timeout: Duration::from_secs(2),
            s3: self.s3(),
            http: test_http_limits(),
        }
    }

    /// Trusts this deployment's signing key, exactly as auth's JWKS would,
    /// for tests of the read side that do not run auth.
    pub fn token_verifier(&self) -> access::TokenVerifier {
        let keys =
            auth::keys::SigningKeys::from_pem_file(&self.signing_key_path.display().to_string())
                .expect("test signing key");
        access::TokenVerifier::from_jwks(
            &keys.jwks(),
            access::DEFAULT_ISSUER,
            access::DEFAULT_AUDIENCE,
        )
        .expect("verifier over the test key")
    }

    /// query-api verifying tokens with [`Deployment::token_verifier`] (no auth process).
    pub async fn spawn_query_api_standalone(&self) -> Running {
        self.spawn_query_api_with(self.query_api_config(NO_JWKS))
            .await
    }

    /// command-api with `config`, verifying tokens with
    /// [`Deployment::token_verifier`] (no auth process).
    pub async fn spawn_command_api_with(&self, config: command_api::Config) -> Running {
        let app = command_api::Application::build(config, Some(self.token_verifier()))
            .await
            .expect("command-api starts");
        spawn(app.port(), |stop| app.run_until_stopped(stop))
    }

    /// query-api with `config`, verifying tokens with
    /// [`Deployment::token_verifier`] (no auth process).
    pub async fn spawn_query_api_with(&self, config: query_api::Config) -> Running {
        let app = query_api::Application::build(config, Some(self.token_verifier()))
            .await
            .expect("query-api starts");
        spawn(app.port(), |stop| app.run_until_stopped(stop))
    }

    /// The notifier as the tests run it: its own group per deployment (a
    /// restarted notifier resumes from its predecessor's offsets), a 100 ms
    /// tick, lead times down to 1 s and `late` after 2 s, so that tests
    /// schedule seconds ahead.
    pub fn notifier_config(&self, jwks_url: &str) -> notifier::Config {
        notifier::Config {
            listen_addr: any_port(),
            postgres: self.postgres(),
            kafka: self.kafka(),
            group_id: format!("notifier-{}", self.mongodb_database),
            jwt: access::JwtSettings::new(jwks_url),
            tick: Duration::from_millis(100),
            late_after: Duration::from_secs(2),
            catch_up: Duration::from_secs(24 * 3600),
            min_lead_seconds: 1,
            http: test_http_limits(),
            email: notifier::config::EmailSettings {
                smtp_url: format!("smtp://{}", servers().smtp),
                from: "taskstream <notifications@taskstream.test>".into(),
                timeout: Duration::from_secs(5),
                concurrency: 4,
                retry_window: Duration::from_secs(3600),
            },
            webhooks: notifier::config::WebhookSettings {
                timeout: Duration::from_secs(3),
                concurrency: 16,
                per_endpoint: 4,
                retry_window: Duration::from_secs(3600),
                max_response_bytes: 65_536,
                // The tests' receivers listen on loopback.
                allow_private: true,
            },
            retry_base: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(2),
            retention: Duration::from_secs(90 * 86_400),
            retention_sweep: Duration::from_secs(3600),
        }
    }

    /// The notifier, verifying tokens with auth's JWKS.
    pub async fn spawn_notifier(&self, auth: &Running) -> Running {
        let config = self.notifier_config(&auth.url("/.well-known/jwks.json"));
        let app = notifier::Application::build(config, None)
            .await
            .expect("notifier starts");
        spawn(app.port(), |stop| app.run_until_stopped(stop))
    }

    /// The notifier with `config`, verifying tokens with
    /// [`Deployment::token_verifier`] (no auth process needed).
    pub async fn spawn_notifier_with(&self, config: notifier::Config) -> Running {
        let app = notifier::Application::build(config, Some(self.token_verifier()))
            .await
            .expect("notifier starts");
        spawn(app.port(), |stop| app.run_until_stopped(stop))
    }

    pub async fn spawn_query_api(&self, auth: &Running) -> Running {
        let config = self.query_api_config(&auth.url("/.well-known/jwks.json"));
        let app = query_api::Application::build(config, None)
            .await
            .expect("query-api starts");
        spawn(app.port(), |stop| app.run_until_stopped(stop))
    }
}

fn spawn<F, Fut>(port: u16, run: F) -> Running
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let stop = CancellationToken::new();
    let handle = tokio::spawn(run(stop.clone()));
    Running {
        base: format!("http://127.0.0.1:{port}"),
        stop,
        handle,
    }
}

/// All five services of one deployment.
pub struct System {
    pub deployment: Deployment,
    pub auth: Running,
    pub command: Running,
    pub projector: Running,
    pub query: Running,
    pub notifier: Running,
}

impl System {
    pub async fn start() -> Self {
        Self::start_with(Deployment::fresh().await).await
    }

    pub async fn start_with(deployment: Deployment) -> Self {
        let auth = deployment.spawn_auth().await;
        let command = deployment.spawn_command_api(&auth).await;
        let projector = deployment.spawn_projector().await;
        let query = deployment.spawn_query_api(&auth).await;
        let notifier = deployment.spawn_notifier(&auth).await;
        System {
            deployment,
            auth,
            command,
            projector,
            query,
            notifier,
        }
    }

    /// Stops the in-process notifier (it must stop cleanly), so that
    /// another can take its place.
    pub async fn stop_notifier(&mut self) {
        self.notifier.stop.cancel();
        (&mut self.notifier.handle)
            .await
            .expect("notifier task")
            .expect("notifier stops cleanly");
    }

    /// Every service in-process, the notifier's configuration changed by
    /// `tweak` first.
    pub async fn start_with_notifier(tweak: impl FnOnce(&mut notifier::Config)) -> Self {
        let deployment = Deployment::fresh().await;
        let auth = deployment.spawn_auth().await;
        let command = deployment.spawn_command_api(&auth).await;
        let projector = deployment.spawn_projector().await;
        let query = deployment.spawn_query_api(&auth).await;
        let mut config = deployment.notifier_config(&auth.url("/.well-known/jwks.json"));
        tweak(&mut config);
        let notifier = deployment.spawn_notifier_with(config).await;
        System {
            deployment,
            auth,
            command,
            projector,
            query,
            notifier,
        }
    }
}

/// The production limits, except that one address may hold every
/// connection: every test client connects from 127.0.0.1, as every client
/// does behind a proxy.
pub fn test_http_limits() -> service::http::Limits {
    let d = service::http::Limits::default();
    service::http::Limits {
        max_connections_per_ip: d.max_connections,
        ..d
    }
}

/// The JWKS URL of a service that trusts the deployment's key directly
/// (`spawn_*_with`, no auth process): nothing listens there, nothing asks.
pub const NO_JWKS: &str = "http://127.0.0.1:9/unused-jwks";

/// An HTTP client for tests (no proxy, short timeout).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// The Prometheus page a service serves at `metrics_url` (`None` while it
/// does not answer).
pub async fn metrics_page(metrics_url: &str) -> Option<String> {
    http().get(metrics_url).send().await.ok()?.text().await.ok()
}

/// One un-labelled series (or one written with its labels) of the page at
/// `metrics_url`; `None` while the service does not answer or the series is
/// absent (before its first increment).
pub async fn metric_at(metrics_url: &str, series: &str) -> Option<f64> {
    process::metric(&metrics_page(metrics_url).await?, series)
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Deployment {
    /// Signs an access token with this deployment's key, as auth would,
    /// for tests of the APIs that do not exercise auth's endpoints.
    pub fn token_for(&self, user_id: Uuid, role: events::Role) -> String {
        let keys =
            auth::keys::SigningKeys::from_pem_file(&self.signing_key_path.display().to_string())
                .expect("test signing key");
        let email = format!("{}@example.test", user_id.simple());
        auth::tokens::issue(
            &keys,
            &auth::tokens::AccessTokenRequest {
                user_id,
                email: &email,
                role,
                issuer: access::DEFAULT_ISSUER,
                audience: access::DEFAULT_AUDIENCE,
                ttl: auth::tokens::ACCESS_TOKEN_TTL,
            },
        )
        .expect("sign token")
        .0
    }
}

/// Every `(METHOD, path)` an OpenAPI document describes (methods in upper
/// case, paths as documented).
pub fn openapi_operations(doc: &serde_json::Value) -> std::collections::BTreeSet<(String, String)> {
    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
    let mut ops = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Path of one of the workspace's binaries (`scripts/test` builds them first).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // .../target/debug/deps/<test>-<hash> → .../target/debug/<name>
    let path = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as scripts/test does)",
        path.display()
    );
    path
}
