use chrono::{TimeZone, Utc};
use events::{
    EventMeta, TaskCreated, TaskDeleted, TaskDueDateChanged, TaskPriorityChanged,
    TaskStatusChanged, TaskUpdated, UserDeactivated, UserRegistered, UserRoleChanged,
};
use uuid::Uuid;

use super::*;

fn meta(minute: u32) -> EventMeta {
    EventMeta {
        actor: Uuid::nil(),
        correlation_id: Uuid::nil(),
        causation_id: None,
        occurred_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, minute, 0).unwrap(),
    }
}

/// A task stream: created, then one of each change, then deleted.
fn task_stream(id: Uuid, owner: Uuid) -> Vec<EventEnvelope> {
    let events: Vec<Event> = vec![
        TaskEvent::Created(TaskCreated {
            owner_id: owner,
            project_id: None,
            assignee_ids: vec![],
            title: "write the report".into(),
            description: String::new(),
            status: TaskStatus::Todo,
            priority: Priority::Low,
            due_at: None,
            tags: vec!["work".into()],
        })
        .into(),
        TaskEvent::Updated(TaskUpdated {
            title: Some("write the annual report".into()),
            description: Some("all of it".into()),
            tags: None,
        })
        .into(),
        TaskEvent::PriorityChanged(TaskPriorityChanged {
            from: Priority::Low,
            to: Priority::Urgent,
        })
        .into(),
        TaskEvent::DueDateChanged(TaskDueDateChanged {
            due_at: Some(Utc.with_ymd_and_hms(2026, 2, 1, 12, 0, 0).unwrap()),
        })
        .into(),
        TaskEvent::StatusChanged(TaskStatusChanged {
            from: TaskStatus::Todo,
            to: TaskStatus::Done,
        })
        .into(),
        TaskEvent::Deleted(TaskDeleted {}).into(),
    ];
    events
        .iter()
        .enumerate()
        .map(|(i, e)| EventEnvelope::new(id, i as u64 + 1, e, meta(i as u32)))
        .collect()
}

/// Delivers `deliveries` one at a time the way the projector does: a gap
/// leaves the view as it is.
fn deliver(view: Option<TaskView>, deliveries: &[&EventEnvelope]) -> Option<TaskView> {
    deliveries
        .iter()
        .fold(view, |view, env| match apply(view.as_ref(), env) {
            Ok(Applied::Advanced(v)) => Some(v),
            Ok(Applied::Duplicate) | Ok(Applied::Gap { .. }) => view,
            Err(p) => panic!("unexpected poison: {p}"),
        })
}

/// The reference: the stream's first `n` events, in order.
fn prefix(stream: &[EventEnvelope], n: usize) -> Option<TaskView> {
    deliver(None, &stream.iter().take(n).collect::<Vec<_>>())
}

#[test]
fn a_stream_folds_into_the_expected_view() {
    let (id, owner) = (Uuid::new_v4(), Uuid::new_v4());
    let stream = task_stream(id, owner);
    let check = |n: usize, f: &dyn Fn(&TaskView)| {
        let v = prefix(&stream, n).expect("a view after task.created");
        assert_eq!(v.version, n as i64);
        assert_eq!(
            v.updated_at,
            bson::DateTime::from_chrono(meta(n as u32 - 1).occurred_at)
        );
        f(&v);
    };
    check(1, &|v| {
        assert_eq!(v.id, id.to_string());
        assert_eq!(v.owner_id, owner.to_string());
        assert_eq!(v.title, "write the report");
        assert_eq!(v.status, TaskStatus::Todo);
        assert_eq!((v.priority, v.priority_rank), (Priority::Low, 1));
        assert_eq!(v.tags, vec!["work".to_owned()]);
        assert_eq!(v.created_at, v.updated_at);
        assert!(!v.deleted && v.completed_at.is_none() && v.due_at.is_none());
    });
    check(2, &|v| {
        assert_eq!(v.title, "write the annual report");
        assert_eq!(v.description, "all of it");
        assert_eq!(
            v.tags,
            vec!["work".to_owned()],
            "tags absent from the update stay"
        );
    });
    check(3, &|v| {
        assert_eq!((v.priority, v.priority_rank), (Priority::Urgent, 4))
    });
    check(4, &|v| {
        assert_eq!(
            v.due_at.map(bson::DateTime::to_chrono),
            Some(Utc.with_ymd_and_hms(2026, 2, 1, 12, 0, 0).unwrap())
        )
    });
    check(5, &|v| {
        assert_eq!(v.status, TaskStatus::Done);
        assert_eq!(v.completed_at, Some(v.updated_at));
    });
    check(6, &|v| assert!(v.deleted));
}

#[test]
fn versions_at_or_below_the_view_are_skipped_and_gaps_are_never_applied() {
    let stream = task_stream(Uuid::new_v4(), Uuid::new_v4());
    let v2 = prefix(&stream, 2).unwrap();
    assert_eq!(apply(Some(&v2), &stream[0]).unwrap(), Applied::Duplicate);
    assert_eq!(apply(Some(&v2), &stream[1]).unwrap(), Applied::Duplicate);
    assert_eq!(
        apply(Some(&v2), &stream[4]).unwrap(),
        Applied::Gap {
            expected: 3,
            got: 5
        }
    );
    assert_eq!(
        apply(None, &stream[2]).unwrap(),
        Applied::Gap {
            expected: 1,
            got: 3
        }
    );
    assert!(
        matches!(apply(Some(&v2), &stream[2]).unwrap(), Applied::Advanced(v) if v.version == 3)
    );
}

/// Every order of delivery (all 720 permutations of a 6-event stream): after
/// each delivery the view is exactly the in-order fold of its first
/// `version` events (it never skipped one), and once the relay re-delivers
/// the stream in order the view converges to the full fold.
#[test]
fn a_view_never_skips_a_version_and_reorders_converge() {
    let stream = task_stream(Uuid::new_v4(), Uuid::new_v4());
    let full = prefix(&stream, stream.len());
    let mut order: Vec<usize> = (0..stream.len()).collect();
    let mut permutations = 0;
    loop {
        let mut view = None;
        for &i in &order {
            view = deliver(view, &[&stream[i]]);
            let n = view.as_ref().map(|v| v.version as usize).unwrap_or(0);
            assert_eq!(
                view,
                prefix(&stream, n),
                "order {order:?}: skipped a version"
            );
        }
        let redelivered: Vec<&EventEnvelope> = stream.iter().collect();
        assert_eq!(
            deliver(view, &redelivered),
            full,
            "order {order:?} did not converge"
        );
        permutations += 1;
        if !next_permutation(&mut order) {
            break;
        }
    }
    assert_eq!(permutations, 720);
}

#[test]
fn duplicates_leave_the_view_unchanged() {
    let stream = task_stream(Uuid::new_v4(), Uuid::new_v4());
    let full = prefix(&stream, stream.len());
    // Each event twice, then the whole stream again (a relay re-publication).
    let mut deliveries: Vec<&EventEnvelope> = stream.iter().flat_map(|e| [e, e]).collect();
    deliveries.extend(stream.iter());
    assert_eq!(deliver(None, &deliveries), full);
}

#[test]
fn events_that_can_never_apply_are_poison() {
    let (id, owner) = (Uuid::new_v4(), Uuid::new_v4());
    let stream = task_stream(id, owner);
    let v1 = prefix(&stream, 1).unwrap();
    // A stream whose first event is not its creation.
    let updated_first = EventEnvelope {
        version: 1,
        ..stream[1].clone()
    };
    assert!(matches!(
        apply(None, &updated_first),
        Err(Poison::NotCreatedFirst(_))
    ));
    // Created twice.
    let created_again = EventEnvelope {
        version: 2,
        ..stream[0].clone()
    };
    assert!(matches!(
        apply(Some(&v1), &created_again),
        Err(Poison::CreatedAgain(2))
    ));
    // Unknown type, future schema, payload mismatch, wrong stream type.
    let unknown = EventEnvelope {
        event_type: "task.exploded".into(),
        ..stream[1].clone()
    };
    let future = EventEnvelope {
        schema: 99,
        ..stream[1].clone()
    };
    let mismatch = EventEnvelope {
        data: serde_json::json!({ "title": 42 }),
        ..stream[1].clone()
    };
    let user_event = EventEnvelope::new(
        id,
        2,
        &UserEvent::Deactivated(UserDeactivated {}).into(),
        meta(1),
    );
    for env in [unknown, future, mismatch, user_event] {
        assert!(
            apply(Some(&v1), &env).is_err(),
            "{} schema {} should be poison",
            env.event_type,
            env.schema
        );
    }
}

#[test]
fn user_events_fold_into_the_users_view() {
    let id = Uuid::new_v4();
    let events: Vec<Event> = vec![
        UserEvent::Registered(UserRegistered {
            email: "ada@example.test".into(),
            display_name: "Ada".into(),
            role: Role::User,
        })
        .into(),
        UserEvent::RoleChanged(UserRoleChanged {
            from: Role::User,
            to: Role::Admin,
        })
        .into(),
        UserEvent::Deactivated(UserDeactivated {}).into(),
    ];
    let mut view = None;
    for (i, e) in events.iter().enumerate() {
        let env = EventEnvelope::new(id, i as u64 + 1, e, meta(i as u32));
        match apply_user(view.as_ref(), &env).unwrap() {
            Applied::Advanced(v) => view = Some(v),
            other => panic!("expected the view to advance, got {other:?}"),
        }
    }
    let v = view.unwrap();
    assert_eq!(
        (v.email.as_str(), v.role, v.active, v.version),
        ("ada@example.test", Role::Admin, false, 3)
    );
}

#[test]
fn views_round_trip_through_bson() {
    let stream = task_stream(Uuid::new_v4(), Uuid::new_v4());
    let v = prefix(&stream, 5).unwrap();
    let doc = bson::to_document(&v).unwrap();
    assert_eq!(doc.get_str("_id").unwrap(), v.id);
    assert_eq!(doc.get_i32("priority_rank").unwrap(), 4);
    assert_eq!(doc.get_str("status").unwrap(), "done");
    assert!(doc.get_datetime("due_at").is_ok());
    let back: TaskView = bson::from_document(doc).unwrap();
    assert_eq!(back, v);
}

/// Lexicographic next permutation; false after the last one.
fn next_permutation(v: &mut [usize]) -> bool {
    let Some(i) = (1..v.len()).rev().find(|&i| v[i - 1] < v[i]) else {
        return false;
    };
    let j = (i..v.len()).rev().find(|&j| v[j] > v[i - 1]).unwrap();
    v.swap(i - 1, j);
    v[i..].reverse();
    true
}
