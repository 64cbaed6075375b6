//! Consumer lag per owned partition, reported by the live consumer's
//! context and appended to `/metrics` (see `startup`).

use std::collections::HashSet;
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};

/// Consumer lag per partition this consumer owns, as of librdkafka's last
/// statistics. Kept here rather than in the process's metrics recorder,
/// which cannot forget a series: a partition given up in a rebalance is
/// removed at once (its lag is another member's to report, and a summed lag
/// must not count it twice). [`Lag::render`] appends the series to
/// `/metrics` (see `startup`).
#[derive(Default)]
pub struct Lag(std::sync::Mutex<LagState>);

#[derive(Default)]
struct LagState {
    owned: HashSet<(String, i32)>,
    lag: std::collections::BTreeMap<(String, i32), i64>,
}

impl Lag {
    fn lock(&self) -> std::sync::MutexGuard<'_, LagState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn assigned(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        for e in tpl.elements() {
            state.owned.insert((e.topic().to_owned(), e.partition()));
        }
    }

    fn revoked(&self, tpl: &TopicPartitionList) {
        let mut state = self.lock();
        for e in tpl.elements() {
            let key = (e.topic().to_owned(), e.partition());
            state.owned.remove(&key);
            state.lag.remove(&key);
        }
    }

    /// `projector_consumer_lag{topic, partition}` in the Prometheus text format.
    pub fn render(&self) -> String {
        let state = self.lock();
        if state.lag.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "# HELP projector_consumer_lag Messages not yet committed, per partition this projector owns.\n# TYPE projector_consumer_lag gauge\n",
        );
        for ((topic, partition), lag) in &state.lag {
            out.push_str(&format!(
                "projector_consumer_lag{{topic=\"{topic}\",partition=\"{partition}\"}} {lag}\n"
            ));
        }
        out
    }
}

/// The consumer's context: lag from the periodic statistics, ownership from
/// the rebalance callbacks.
#[derive(Default)]
pub struct LagReporter {
    lag: Arc<Lag>,
}

impl LagReporter {
    /// The lag this consumer reports.
    pub fn lag(&self) -> Arc<Lag> {
        Arc::clone(&self.lag)
    }
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        let mut state = self.lag.lock();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue;
                // partitions not desired belong to another group member.
                let key = (topic.clone(), *partition);
                if *partition < 0 || !p.desired || p.hi_offset < 0 || !state.owned.contains(&key) {
                    continue;
                }
                // Nothing committed yet: the group starts from the beginning.
                let from = if p.committed_offset >= 0 {
                    p.committed_offset
                } else {
                    p.lo_offset.max(0)
                };
                state.lag.insert(key, (p.hi_offset - from).max(0));
            }
        }
    }
}

impl ConsumerContext for LagReporter {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.lag.revoked(tpl);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.lag.assigned(tpl);
        }
    }
}
