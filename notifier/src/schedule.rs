//! What a task's schedule should hold: pure functions, no I/O, no clock.
//!
//! A task that is open (todo or in progress), not deleted and has a due
//! time is scheduled for each recipient (its assignees, else its owner):
//! one `reminder` per lead time the recipient set, at `due_at - lead`, and
//! one `overdue` notice at `due_at`. Every row's id is a UUID v5 of what
//! it is (kind, task, user, due time, lead), and becomes the id of the
//! notification it fires: a redelivered event schedules the same rows, a
//! new due time new ones.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use events::TaskStatus;
use uuid::Uuid;

/// The namespace of every id the notifier derives (UUID v5).
const NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_7469_6669_6572_8000_0000_0000_0015);

/// What a schedule row fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Reminder,
    Overdue,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Reminder => "reminder",
            Kind::Overdue => "overdue",
        }
    }
}

/// The task as the schedule needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFacts {
    pub task_id: Uuid,
    pub owner_id: Uuid,
    pub assignee_ids: Vec<Uuid>,
    pub status: TaskStatus,
    pub due_at: Option<DateTime<Utc>>,
    pub deleted: bool,
}

impl TaskFacts {
    /// Who is told about this task: its assignees, or its owner when it has none.
    pub fn recipients(&self) -> Vec<Uuid> {
        if self.assignee_ids.is_empty() {
            vec![self.owner_id]
        } else {
            self.assignee_ids.clone()
        }
    }

    /// The due time, while the task is still to be done.
    pub fn pending_due(&self) -> Option<DateTime<Utc>> {
        if self.deleted || !self.status.is_open() {
            return None;
        }
        self.due_at
    }
}

/// One row of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub id: Uuid,
    pub task_id: Uuid,
    pub user_id: Uuid,
    pub kind: Kind,
    pub due_at: DateTime<Utc>,
    pub fire_at: DateTime<Utc>,
    pub lead_seconds: i32,
}

/// The id of a schedule row, and of the notification it becomes.
pub fn slot_id(
    kind: Kind,
    task: Uuid,
    user: Uuid,
    due_at: DateTime<Utc>,
    lead_seconds: i32,
) -> Uuid {
    let name = format!(
        "{}/{task}/{user}/{}/{lead_seconds}",
        kind.as_str(),
        due_at.trunc_subsecs(6).timestamp_micros()
    );
    derived_id(&name)
}

/// The id of a notification caused by one event, for one user.
pub fn event_notification_id(event_id: Uuid, user: Uuid) -> Uuid {
    derived_id(&format!("event/{event_id}/{user}"))
}

/// An id derived from `name` in the notifier's namespace: the same name,
/// the same id, in every notifier and every rebuild.
pub fn derived_id(name: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

/// The rows `user` should have for `task`, whatever the time (`leads`: the
/// user's lead times in seconds). Empty when the task is not pending or
/// the user is not one of its recipients.
pub fn ideal(task: &TaskFacts, user: Uuid, leads: &[i32]) -> Vec<Slot> {
    let Some(due) = task.pending_due().map(|d| d.trunc_subsecs(6)) else {
        return Vec::new();
    };
    if !task.recipients().contains(&user) {
        return Vec::new();
    }
    let slot = |kind, lead: i32| Slot {
        id: slot_id(kind, task.task_id, user, due, lead),
        task_id: task.task_id,
        user_id: user,
        kind,
        due_at: due,
        fire_at: due - Duration::seconds(i64::from(lead)),
        lead_seconds: lead,
    };
    let mut slots: Vec<Slot> = leads
        .iter()
        .filter(|l| **l > 0)
        .map(|l| slot(Kind::Reminder, *l))
        .collect();
    slots.push(slot(Kind::Overdue, 0));
    slots
}

/// Whether a row of the ideal schedule is still worth inserting when it is
/// scheduled at `scheduled_at` (when the change that asks for it happened)
/// and written at `now`: a reminder only if its time was still ahead when
/// the change happened; any row only if its time is at most `catch_up`
/// past (what fell due while the notifier was down is sent, late, within
/// that grace; older news is not news).
pub fn worth_inserting(
    slot: &Slot,
    scheduled_at: DateTime<Utc>,
    now: DateTime<Utc>,
    catch_up: Duration,
) -> bool {
    let ahead_then = slot.kind == Kind::Overdue || slot.fire_at > scheduled_at;
    ahead_then && slot.fire_at >= now - catch_up
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn task(assignees: Vec<Uuid>, status: TaskStatus, due: Option<&str>) -> TaskFacts {
        TaskFacts {
            task_id: Uuid::from_u128(1),
            owner_id: Uuid::from_u128(2),
            assignee_ids: assignees,
            status,
            due_at: due.map(at),
            deleted: false,
        }
    }

    #[test]
    fn recipients_are_the_assignees_else_the_owner() {
        let owner = Uuid::from_u128(2);
        let bob = Uuid::from_u128(3);
        let t = task(vec![], TaskStatus::Todo, Some("2030-01-02T00:00:00Z"));
        assert_eq!(ideal(&t, owner, &[3600]).len(), 2);
        assert!(ideal(&t, bob, &[3600]).is_empty());
        let t = task(vec![bob], TaskStatus::Todo, Some("2030-01-02T00:00:00Z"));
        assert!(ideal(&t, owner, &[3600]).is_empty());
        let slots = ideal(&t, bob, &[3600, 86400]);
        let kinds: Vec<_> = slots.iter().map(|s| (s.kind, s.fire_at)).collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Reminder, at("2030-01-01T23:00:00Z")),
                (Kind::Reminder, at("2030-01-01T00:00:00Z")),
                (Kind::Overdue, at("2030-01-02T00:00:00Z")),
            ]
        );
    }

    #[test]
    fn nothing_is_scheduled_for_a_task_done_cancelled_deleted_or_without_due_time() {
        let owner = Uuid::from_u128(2);
        for status in [TaskStatus::Done, TaskStatus::Cancelled] {
            assert!(ideal(
                &task(vec![], status, Some("2030-01-02T00:00:00Z")),
                owner,
                &[60]
            )
            .is_empty());
        }
        assert!(ideal(&task(vec![], TaskStatus::Todo, None), owner, &[60]).is_empty());
        let mut deleted = task(vec![], TaskStatus::InProgress, Some("2030-01-02T00:00:00Z"));
        deleted.deleted = true;
        assert!(ideal(&deleted, owner, &[60]).is_empty());
    }

    #[test]
    fn ids_are_stable_for_the_same_cause_and_new_for_a_new_due_time() {
        let (t, u) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let due = at("2030-01-02T00:00:00Z");
        assert_eq!(
            slot_id(Kind::Reminder, t, u, due, 60),
            slot_id(Kind::Reminder, t, u, due, 60)
        );
        assert_ne!(
            slot_id(Kind::Reminder, t, u, due, 60),
            slot_id(Kind::Reminder, t, u, at("2030-01-02T00:00:01Z"), 60)
        );
        assert_ne!(
            slot_id(Kind::Reminder, t, u, due, 60),
            slot_id(Kind::Overdue, t, u, due, 60)
        );
        assert_ne!(
            event_notification_id(t, u),
            event_notification_id(t, Uuid::from_u128(3))
        );
    }

    #[test]
    fn a_reminder_already_past_when_scheduled_is_skipped_and_catch_up_is_bounded() {
        let owner = Uuid::from_u128(2);
        let t = task(vec![], TaskStatus::Todo, Some("2030-01-02T00:00:00Z"));
        let slots = ideal(&t, owner, &[86400]);
        let (reminder, overdue) = (&slots[0], &slots[1]);
        let day = Duration::hours(24);
        // Scheduled an hour before due: the 24 h reminder was already past.
        let then = at("2030-01-01T23:00:00Z");
        assert!(!worth_inserting(reminder, then, then, day));
        assert!(worth_inserting(overdue, then, then, day));
        // Scheduled two days before, read (after downtime) a day and a half late.
        let then = at("2029-12-31T00:00:00Z");
        let now = at("2030-01-01T12:00:00Z");
        assert!(worth_inserting(reminder, then, now, day));
        // ... or later: the reminder is past the grace, the overdue notice not yet.
        let now = at("2030-01-02T12:00:00Z");
        assert!(!worth_inserting(reminder, then, now, day));
        assert!(worth_inserting(overdue, then, now, day));
        assert!(!worth_inserting(
            overdue,
            then,
            at("2030-01-04T00:00:01Z"),
            day
        ));
    }
}
