//! Start-up as a value: build connects, prepares the views and subscribes;
//! run consumes and serves health/metrics until stopped.

use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use events::kafka;
use events::topics::Topics;
use futures::FutureExt;
use mongodb::Database;
use service::config::ExposeSecret;
use service::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumer::{BatchSettings, Projector};
use crate::lag::Lag;
use rdkafka::consumer::Consumer;

pub struct Application {
    listener: TcpListener,
    router: Router,
    projector: Projector,
}

impl Application {
    /// Connects to MongoDB (and creates the views' indexes), prepares the
    /// Kafka topics, joins the consumer group, binds the port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = read_model::mongo::connect_with(
            config.mongo.url.expose_secret(),
            &config.mongo.database,
            Some(config.mongodb_write_concern.write_concern()),
        )
        .await?;
        tracing::info!(write_concern = %config.mongodb_write_concern, "view writes");
        read_model::ensure_indexes(&db)
            .await
            .context("mongodb: cannot create the view indexes")?;
        let topics = Topics::with_prefix(config.kafka.topic_prefix.clone());
        kafka::ensure_topics(&config.kafka.brokers, &topics)
            .await
            .map_err(|e| anyhow::anyhow!("kafka at {}: {e}", config.kafka.brokers))?;
        let consumer = crate::consumer::consumer(&config.kafka.brokers, &config.group_id)?;
        let lag = consumer.context().lag();
        let producer = kafka::producer(&config.kafka.brokers)?;
        let projector = Projector::new(
            consumer,
            producer,
            db.clone(),
            topics,
            BatchSettings {
                max_messages: config.batch_max_messages.max(1),
                journal_barrier: config.mongodb_write_concern
                    != crate::config::WriteConcernSetting::Acknowledged,
                ..BatchSettings::default()
            },
            &config.kafka.brokers,
        )?;
        let listener = service::http::bind(config.listen_addr).await?;
        let router = service::http::finish(
            Router::new()
                .merge(service::health::routes(readiness(
                    &db,
                    &config.kafka.brokers,
                )))
                .layer(axum::middleware::from_fn_with_state(lag, with_lag)),
        );
        Ok(Application {
            listener,
            router,
            projector,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Consumes and serves until `shutdown`; the batch in hand is finished
    /// and committed before this returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let consuming = tokio::spawn(self.projector.run(shutdown.clone()));
        let served = service::http::serve(self.listener, self.router, shutdown.clone()).await;
        shutdown.cancel();
        if let Err(e) = consuming.await {
            tracing::error!(error = %e, "the consumer loop panicked");
        }
        served
    }
}

/// Appends the consumer lag of the partitions this projector owns to
/// `/metrics` (see [`Lag`]: the process recorder cannot drop a series).
async fn with_lag(State(lag): State<Arc<Lag>>, req: Request, next: Next) -> Response {
    let metrics = req.uri().path() == "/metrics";
    let res = next.run(req).await;
    if !metrics || !res.status().is_success() {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let Ok(page) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut page = page.to_vec();
    page.extend_from_slice(lag.render().as_bytes());
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(page))
}

fn readiness(db: &Database, brokers: &str) -> Readiness {
    let db = db.clone();
    let brokers = brokers.to_owned();
    Readiness::new()
        .check("mongodb", move || {
            let db = db.clone();
            async move { read_model::mongo::ping(&db).await }.boxed()
        })
        .check("kafka", move || {
            let brokers = brokers.clone();
            async move { kafka::ping(&brokers).await }.boxed()
        })
}
