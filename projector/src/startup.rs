//! Start-up as a value: build connects and binds; run consumes and serves
//! health/metrics until stopped.

use axum::Router;
use events::kafka;
use events::topics::Topics;
use futures::FutureExt;
use mongodb::Database;
use service::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub struct Application {
    listener: TcpListener,
    router: Router,
    #[allow(dead_code)]
    db: Database,
    #[allow(dead_code)]
    config: Config,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = crate::mongo::connect(&config.mongodb_url, &config.mongodb_database)
            .await
            .map_err(anyhow::Error::msg)?;
        let topics = Topics::with_prefix(config.topic_prefix.clone());
        kafka::ensure_topics(&config.kafka_brokers, &topics)
            .await
            .map_err(|e| anyhow::anyhow!("kafka at {}: {e}", config.kafka_brokers))?;
        let listener = service::http::bind(config.listen_addr).await?;
        let router = service::http::finish(Router::new().merge(service::health::routes(
            readiness(&db, &config.kafka_brokers),
        )));
        Ok(Application {
            listener,
            router,
            db,
            config,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        service::http::serve(self.listener, self.router, shutdown).await
    }
}

fn readiness(db: &Database, brokers: &str) -> Readiness {
    let db = db.clone();
    let brokers = brokers.to_owned();
    Readiness::new()
        .check("mongodb", move || {
            let db = db.clone();
            async move { crate::mongo::ping(&db).await }.boxed()
        })
        .check("kafka", move || {
            let brokers = brokers.clone();
            async move { kafka::ping(&brokers).await }.boxed()
        })
}
