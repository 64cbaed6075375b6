//! `projector replay`: stream events from the Kafka log to NDJSON for ad-hoc
//! analysis, from the beginning or from a point in time.
//!
//! The replay reads with manual partition assignment and never commits, so it
//! disturbs no consumer group. It stops at the high watermarks it saw when it
//! started: a bounded snapshot of the log, not a tail. A start time is found
//! with Kafka's offsets-for-times lookup, not by scanning from the start.
//! Order: per partition, so each stream's events come out in version order;
//! partitions interleave.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use events::kafka::header_str;
use events::topics::HEADER_TYPE;

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    Beginning,
    Time(DateTime<Utc>),
}

impl std::str::FromStr for ReplayFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("beginning") {
            return Ok(ReplayFrom::Beginning);
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| ReplayFrom::Time(t.with_timezone(&Utc)))
            .map_err(|e| format!("expected `beginning` or an RFC 3339 time, got {s:?}: {e}"))
    }
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub brokers: String,
    pub topics: Vec<String>,
    pub from: ReplayFrom,
    /// Only these event types (by the `type` header); `None` = all.
    pub types: Option<HashSet<String>>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Messages read from the log.
    pub read: u64,
    /// Events written (after the type filter).
    pub written: u64,
    pub elapsed: Duration,
}

impl ReplaySummary {
    pub fn rate(&self) -> f64 {
        self.read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The per-partition range a bounded read covers: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub start: i64,
    pub end: i64,
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer that belongs to no group's bookkeeping (it never commits).
pub fn detached_consumer(brokers: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("taskstream-replay-{}", uuid::Uuid::now_v7()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()?)
}

/// The ranges to read: from `from` up to each partition's current high watermark.
pub fn plan(
    consumer: &BaseConsumer,
    topics: &[String],
    from: ReplayFrom,
) -> anyhow::Result<HashMap<(String, i32), PartitionRange>> {
    let mut ranges = HashMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            anyhow::bail!("topic {topic} does not exist");
        };
        if t.partitions().is_empty() {
            anyhow::bail!("topic {topic} does not exist or has no partitions");
        }
        let mut by_time = TopicPartitionList::new();
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
            ranges.insert(
                (topic.clone(), p.id()),
                PartitionRange {
                    start: low,
                    end: high,
                },
            );
            if let ReplayFrom::Time(at) = from {
                by_time.add_partition_offset(
                    topic,
                    p.id(),
                    Offset::Offset(at.timestamp_millis()),
                )?;
            }
        }
        if matches!(from, ReplayFrom::Time(_)) {
            let found = consumer.offsets_for_times(by_time, TIMEOUT)?;
            for e in found.elements() {
                if let Some(range) = ranges.get_mut(&(e.topic().to_owned(), e.partition())) {
                    range.start = match e.offset() {
                        Offset::Offset(o) => o.max(range.start),
                        // No message at or after the time: nothing to read.
                        _ => range.end,
                    };
                }
            }
        }
    }
    Ok(ranges)
}

/// Reads every message in `ranges` once, calling `visit` for each, in
/// partition order. Stops when every range is exhausted.
pub fn read_ranges(
    consumer: &BaseConsumer,
    ranges: &HashMap<(String, i32), PartitionRange>,
    progress: &ProgressBar,
    mut visit: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut assignment = TopicPartitionList::new();
    let mut remaining: HashSet<(String, i32)> = HashSet::new();
    for ((topic, partition), range) in ranges {
        if range.start < range.end {
            assignment.add_partition_offset(topic, *partition, Offset::Offset(range.start))?;
            remaining.insert((topic.clone(), *partition));
        }
    }
    if remaining.is_empty() {
        return Ok(0);
    }
    consumer.assign(&assignment)?;
    let mut read = 0u64;
    let mut idle_since = Instant::now();
    while !remaining.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            None => {
                if idle_since.elapsed() > Duration::from_secs(60) {
                    anyhow::bail!(
                        "no message from Kafka for 60 s with {} partitions unfinished",
                        remaining.len()
                    );
                }
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(msg)) => {
                idle_since = Instant::now();
                let key = (msg.topic().to_owned(), msg.partition());
                let Some(range) = ranges.get(&key) else {
                    continue;
                };
                if msg.offset() >= range.end {
                    remaining.remove(&key);
                    continue;
                }
                visit(&msg)?;
                read += 1;
                progress.inc(1);
                if msg.offset() + 1 >= range.end {
                    remaining.remove(&key);
                }
            }
        }
    }
    consumer.unassign()?;
    Ok(read)
}

/// A progress bar on stderr with rate and ETA (hidden when `enabled` is false).
pub fn progress_bar(total: u64, enabled: bool, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    let style = ProgressStyle::with_template(&format!(
        "{what} [{{bar:40}}] {{human_pos}}/{{human_len}} events  {{per_sec}}  ETA {{eta}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// Streams the selected events as NDJSON (one envelope per line) to `out`.
pub fn replay(options: &ReplayOptions, out: &mut dyn Write) -> anyhow::Result<ReplaySummary> {
    let started = Instant::now();
    let consumer = detached_consumer(&options.brokers)?;
    let ranges = plan(&consumer, &options.topics, options.from)?;
    let total: i64 = ranges.values().map(|r| (r.end - r.start).max(0)).sum();
    let bar = progress_bar(total as u64, options.progress, "replay");
    let mut written = 0u64;
    let read = read_ranges(&consumer, &ranges, &bar, |msg| {
        if let Some(types) = &options.types {
            match header_str(msg, HEADER_TYPE) {
                Some(t) if types.contains(t) => {}
                _ => return Ok(()),
            }
        }
        if let Some(payload) = msg.payload() {
            out.write_all(payload)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        Ok(())
    })?;
    out.flush()?;
    bar.finish_and_clear();
    Ok(ReplaySummary {
        read,
        written,
        elapsed: started.elapsed(),
    })
}
