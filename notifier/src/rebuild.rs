//! `notifier rebuild`: the notifier's folded state (tasks, projects, users)
//! and its schedule rebuilt from the first event of the log.
//!
//! The schedule is a view of the log; the inbox and the deliveries are not
//! (they record what was sent) and are kept. The rebuild:
//!
//! 1. refuses while the notifier's consumer group has members (a running
//!    notifier would keep writing the state being reset);
//! 2. commits the group's offsets at the beginning of every partition of
//!    the task, project and user topics;
//! 3. empties `notifier_tasks`, `notifier_projects`, `notifier_users` and
//!    `notifier_schedule` in one transaction.
//!
//! The notifier started next folds the whole log again, its inbox API
//! serving as usual meanwhile. Nothing is sent twice: a schedule row or an
//! event notice re-created by the replay has the id it had (UUID v5 of its
//! cause), and a notification whose id exists is not inserted again, nor
//! delivered again. Nothing fires early: a row fires only once the notifier
//! has applied every event of its task and user (see
//! [`crate::store::fire_due`]). Killed between steps 2 and 3, the replay
//! re-applies events onto the old state, which the version guards make a
//! no-op; running the rebuild again completes it.

use std::time::Duration;

use anyhow::Context;
use events::topics::Topics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use service::config::ExposeSecret;

use crate::config::Config;

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// What a rebuild reset.
#[derive(Debug, Default)]
pub struct Report {
    /// Partitions whose offset now points at their first event.
    pub partitions: usize,
    /// Events the notifier will read again.
    pub events: i64,
    /// Rows removed from the folded tables and the schedule.
    pub tasks: u64,
    pub projects: u64,
    pub users: u64,
    pub schedule: u64,
}

/// Resets the notifier's state and offsets as described above.
pub async fn rebuild(config: &Config) -> anyhow::Result<Report> {
    let pool = events::store::connect_and_migrate(config.postgres.url.expose_secret(), 2).await?;
    let topics = Topics::with_prefix(config.kafka.topic_prefix.clone());
    let brokers = config.kafka.brokers.clone();
    let group = config.group_id.clone();
    let mut report = tokio::task::spawn_blocking(move || rewind(&brokers, &group, &topics))
        .await
        .context("the Kafka step panicked")??;
    let mut tx = pool.begin().await?;
    for (table, count) in [
        ("notifier_schedule", &mut report.schedule),
        ("notifier_tasks", &mut report.tasks),
        ("notifier_projects", &mut report.projects),
        ("notifier_users", &mut report.users),
    ] {
        *count = sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    Ok(report)
}

/// Steps 1 and 2: refuses a group with members, then commits the low
/// watermark of every partition as the group's offset.
fn rewind(brokers: &str, group: &str, topics: &Topics) -> anyhow::Result<Report> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("kafka: cannot create a client")?;
    let groups = consumer
        .fetch_group_list(Some(group), KAFKA_TIMEOUT)
        .with_context(|| format!("kafka at {brokers}: cannot describe group {group}"))?;
    if let Some(live) = groups.groups().iter().find(|g| g.name() == group) {
        if !live.members().is_empty() {
            anyhow::bail!(
                "consumer group {group} has {} member(s): stop every notifier first",
                live.members().len()
            );
        }
    }
    let mut report = Report::default();
    let mut offsets = TopicPartitionList::new();
    for topic in [
        topics.task_events(),
        topics.project_events(),
        topics.user_events(),
    ] {
        let metadata = consumer
            .fetch_metadata(Some(&topic), KAFKA_TIMEOUT)
            .with_context(|| format!("kafka: no metadata for {topic}"))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p.id(), KAFKA_TIMEOUT)
                    .with_context(|| format!("kafka: no offsets for {topic}/{}", p.id()))?;
                offsets.add_partition_offset(&topic, p.id(), Offset::Offset(low))?;
                report.partitions += 1;
                report.events += high - low;
            }
        }
    }
    if report.partitions > 0 {
        consumer
            .commit(&offsets, CommitMode::Sync)
            .with_context(|| format!("kafka: cannot commit group {group}'s offsets"))?;
    }
    Ok(report)
}
