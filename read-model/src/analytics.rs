//! The analytics projection: one fact document per task (`task_facts`),
//! folded from the task events with the same version guard as the task view
//! and rebuilt by the same replay machinery (`projector rebuild analytics`).
//!
//! Definitions (what query-api's `/analytics` endpoints aggregate):
//!
//! - A *completion* is a `task.status_changed` to `done`. A task that is
//!   done, reopened and done again has two completions, each on its own day.
//! - *Cycle time* of a task: from `task.created` to its last completion.
//!   *Work time*: from the last move to `in_progress` before that completion
//!   to the completion (absent when the task never was in progress then).
//!   Both are kept only while the task is done; reopening clears them until
//!   the next completion.
//! - Deleted tasks leave every figure (their facts are flagged `deleted`).

use bson::doc;
use events::{EventEnvelope, Priority, StreamType, TaskEvent, TaskStatus};
use mongodb::options::IndexOptions;
use mongodb::{Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::fold::{impl_view, next_task_event, Applied, Poison, View};

/// Collection of [`TaskFacts`].
pub const TASK_FACTS: &str = "task_facts";

/// What the analytics need to know about one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFacts {
    #[serde(rename = "_id")]
    pub id: String,
    pub owner_id: String,
    /// `None` for a personal task (and in facts written before projects).
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub assignee_ids: Vec<String>,
    pub status: TaskStatus,
    pub priority: Priority,
    pub created_at: bson::DateTime,
    pub due_at: Option<bson::DateTime>,
    /// Every completion, in order.
    pub completions: Vec<bson::DateTime>,
    /// The last move to `in_progress`.
    pub started_at: Option<bson::DateTime>,
    /// Created → last completion, in seconds, while done.
    pub cycle_seconds: Option<f64>,
    /// Last start → last completion, in seconds, while done.
    pub work_seconds: Option<f64>,
    pub deleted: bool,
    pub version: i64,
}

fn seconds_between(from: bson::DateTime, to: bson::DateTime) -> f64 {
    (to.timestamp_millis() - from.timestamp_millis()) as f64 / 1000.0
}

/// Folds one task event into a task's facts. Pure: no I/O, no clock.
pub(crate) fn apply_facts(
    view: Option<&TaskFacts>,
    env: &EventEnvelope,
) -> Result<Applied<TaskFacts>, Poison> {
    let event = match next_task_event(view.map(View::version).unwrap_or(0), env)? {
        Ok(event) => event,
        Err(skipped) => return Ok(skipped),
    };
    let at = bson::DateTime::from_chrono(env.occurred_at);
    let mut facts = match (view, event) {
        (None, TaskEvent::Created(c)) => {
            let done = c.status == TaskStatus::Done;
            TaskFacts {
                id: env.stream_id.to_string(),
                owner_id: c.owner_id.to_string(),
                project_id: c.project_id.map(|p| p.to_string()),
                assignee_ids: c.assignee_ids.iter().map(ToString::to_string).collect(),
                status: c.status,
                priority: c.priority,
                created_at: at,
                due_at: c.due_at.map(bson::DateTime::from_chrono),
                completions: if done { vec![at] } else { vec![] },
                started_at: (c.status == TaskStatus::InProgress).then_some(at),
                cycle_seconds: done.then_some(0.0),
                work_seconds: None,
                deleted: false,
                version: 0,
            }
        }
        (None, other) => {
            return Err(Poison::NotCreatedFirst(
                events::Event::Task(other).event_type().to_owned(),
            ))
        }
        (Some(f), event) => {
            let mut f = f.clone();
            match event {
                TaskEvent::Created(_) => return Err(Poison::CreatedAgain(env.version)),
                TaskEvent::StatusChanged(s) => {
                    f.status = s.to;
                    match s.to {
                        TaskStatus::InProgress => f.started_at = Some(at),
                        TaskStatus::Done => {
                            f.completions.push(at);
                            f.cycle_seconds = Some(seconds_between(f.created_at, at));
                            f.work_seconds = f.started_at.map(|s| seconds_between(s, at));
                        }
                        TaskStatus::Todo | TaskStatus::Cancelled => {
                            // Reopened or cancelled: no current cycle, and a
                            // start before the reopening does not count for
                            // the next completion.
                            f.cycle_seconds = None;
                            f.work_seconds = None;
                            f.started_at = None;
                        }
                    }
                }
                TaskEvent::PriorityChanged(p) => f.priority = p.to,
                TaskEvent::DueDateChanged(d) => {
                    f.due_at = d.due_at.map(bson::DateTime::from_chrono)
                }
                TaskEvent::Deleted(_) => f.deleted = true,
                TaskEvent::AssigneesChanged(a) => {
                    f.assignee_ids = a.assignee_ids.iter().map(ToString::to_string).collect();
                }
                TaskEvent::Moved(m) => f.project_id = m.to.map(|p| p.to_string()),
                TaskEvent::Updated(_)
                | TaskEvent::AttachmentAdded(_)
                | TaskEvent::AttachmentRemoved(_) => {}
            }
            f
        }
    };
    facts.version = env.version as i64;
    Ok(Applied::Advanced(facts))
}

impl_view!(TaskFacts, TASK_FACTS, StreamType::Task, apply_facts);

/// Indexes of `task_facts`: every analytics query is per owner or per
/// project, and a date range.
pub fn facts_indexes() -> Vec<IndexModel> {
    let named = |keys, name: &str| {
        IndexModel::builder()
            .keys(keys)
            .options(IndexOptions::builder().name(name.to_owned()).build())
            .build()
    };
    vec![
        named(doc! { "owner_id": 1, "created_at": 1 }, "owner_created"),
        named(
            doc! { "owner_id": 1, "completions": 1 },
            "owner_completions",
        ),
        named(doc! { "project_id": 1, "created_at": 1 }, "project_created"),
    ]
}

pub async fn ensure_facts_indexes(
    db: &Database,
    collection: &str,
) -> Result<(), mongodb::error::Error> {
    db.collection::<bson::Document>(collection)
        .create_indexes(facts_indexes())
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};
    use events::{Event, EventMeta, TaskCreated, TaskDeleted, TaskStatusChanged};
    use uuid::Uuid;

    fn env(stream: Uuid, version: u64, minutes: i64, event: TaskEvent) -> EventEnvelope {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 1, 9, 0, 0)
            .single()
            .expect("time");
        let meta = EventMeta {
            actor: Uuid::nil(),
            correlation_id: Uuid::nil(),
            causation_id: None,
            occurred_at: t0 + Duration::minutes(minutes),
        };
        EventEnvelope::new(stream, version, &Event::Task(event), meta)
    }

    fn created() -> TaskEvent {
        TaskEvent::Created(TaskCreated {
            owner_id: Uuid::nil(),
            project_id: None,
            assignee_ids: vec![],
            title: "t".into(),
            description: String::new(),
            status: TaskStatus::Todo,
            priority: Priority::High,
            due_at: None,
            tags: vec![],
        })
    }

    fn to(from: TaskStatus, to: TaskStatus) -> TaskEvent {
        TaskEvent::StatusChanged(TaskStatusChanged { from, to })
    }

    fn fold(events: &[EventEnvelope]) -> TaskFacts {
        let mut facts: Option<TaskFacts> = None;
        for e in events {
            match apply_facts(facts.as_ref(), e).expect("applies") {
                Applied::Advanced(f) => facts = Some(f),
                other => panic!("expected to advance at v{}, got {other:?}", e.version),
            }
        }
        facts.expect("facts")
    }

    use TaskStatus::*;

    #[test]
    fn reopened_task_counts_each_completion_and_measures_the_last_cycle() {
        let id = Uuid::new_v4();
        let f = fold(&[
            env(id, 1, 0, created()),
            env(id, 2, 10, to(Todo, InProgress)),
            env(id, 3, 30, to(InProgress, Done)),
            env(id, 4, 60, to(Done, Todo)),
            env(id, 5, 90, to(Todo, InProgress)),
            env(id, 6, 120, to(InProgress, Done)),
        ]);
        assert_eq!(f.completions.len(), 2, "two completions");
        assert_eq!(
            f.cycle_seconds,
            Some(120.0 * 60.0),
            "created → last completion"
        );
        assert_eq!(
            f.work_seconds,
            Some(30.0 * 60.0),
            "last start → last completion"
        );
        assert_eq!(f.status, Done);
    }

    #[test]
    fn reopening_clears_the_cycle_until_the_next_completion() {
        let id = Uuid::new_v4();
        let f = fold(&[
            env(id, 1, 0, created()),
            env(id, 2, 30, to(Todo, Done)),
            env(id, 3, 60, to(Done, Todo)),
        ]);
        assert_eq!(f.completions.len(), 1);
        assert_eq!(f.cycle_seconds, None);
        assert_eq!(f.work_seconds, None);
    }

    #[test]
    fn completion_without_a_start_has_a_cycle_but_no_work_time() {
        let id = Uuid::new_v4();
        let f = fold(&[env(id, 1, 0, created()), env(id, 2, 45, to(Todo, Done))]);
        assert_eq!(f.cycle_seconds, Some(45.0 * 60.0));
        assert_eq!(f.work_seconds, None);
    }

    #[test]
    fn duplicates_are_skipped_and_gaps_are_not_applied() {
        let id = Uuid::new_v4();
        let first = fold(&[env(id, 1, 0, created())]);
        assert_eq!(
            apply_facts(Some(&first), &env(id, 1, 0, created())).expect("ok"),
            Applied::Duplicate
        );
        let gap = apply_facts(Some(&first), &env(id, 3, 5, to(Todo, Done))).expect("ok");
        assert_eq!(
            gap,
            Applied::Gap {
                expected: 2,
                got: 3
            }
        );
    }

    #[test]
    fn deletion_flags_the_facts() {
        let id = Uuid::new_v4();
        let f = fold(&[
            env(id, 1, 0, created()),
            env(id, 2, 5, TaskEvent::Deleted(TaskDeleted {})),
        ]);
        assert!(f.deleted);
    }
}
