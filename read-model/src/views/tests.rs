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

fn project_stream(id: Uuid, owner: Uuid, other: Uuid) -> Vec<EventEnvelope> {
    use events::{
        ProjectArchived, ProjectCreated, ProjectMemberAdded, ProjectMemberRemoved,
        ProjectMemberRoleChanged, ProjectOwnerChanged, ProjectUnarchived, ProjectUpdated,
    };
    let events: Vec<Event> = vec![
        ProjectEvent::Created(ProjectCreated {
            owner_id: owner,
            name: "Launch".into(),
            description: String::new(),
        })
        .into(),
        ProjectEvent::MemberAdded(ProjectMemberAdded {
            user_id: other,
            role: ProjectRole::Viewer,
        })
        .into(),
        ProjectEvent::MemberRoleChanged(ProjectMemberRoleChanged {
            user_id: other,
            from: ProjectRole::Viewer,
            to: ProjectRole::Member,
        })
        .into(),
        ProjectEvent::Updated(ProjectUpdated {
            name: Some("Launch 2027".into()),
            description: None,
        })
        .into(),
        ProjectEvent::Archived(ProjectArchived {}).into(),
        ProjectEvent::Unarchived(ProjectUnarchived {}).into(),
        ProjectEvent::OwnerChanged(ProjectOwnerChanged {
            from: owner,
            to: other,
        })
        .into(),
        ProjectEvent::MemberRemoved(ProjectMemberRemoved { user_id: owner }).into(),
    ];
    events
        .iter()
        .enumerate()
        .map(|(i, e)| EventEnvelope::new(id, i as u64 + 1, e, meta(i as u32)))
        .collect()
}

fn fold_projects(stream: &[EventEnvelope]) -> Vec<ProjectView> {
    let mut views = Vec::new();
    let mut view: Option<ProjectView> = None;
    for env in stream {
        match apply_project(view.as_ref(), env) {
            Ok(Applied::Advanced(v)) => view = Some(v),
            other => panic!("{}: {other:?}", env.event_type),
        }
        views.extend(view.clone());
    }
    views
}

#[test]
fn project_events_fold_into_the_project_view_with_its_members() {
    let (id, owner, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let stream = project_stream(id, owner, other);
    let views = fold_projects(&stream);
    let (o, x) = (owner.to_string(), other.to_string());
    assert_eq!(views[0].role_of(&o), Some(ProjectRole::Owner));
    assert_eq!(views[0].members.len(), 1);
    assert_eq!(views[1].role_of(&x), Some(ProjectRole::Viewer));
    assert_eq!(views[2].role_of(&x), Some(ProjectRole::Member));
    assert_eq!(views[3].name, "Launch 2027");
    assert!(views[4].archived);
    assert!(!views[5].archived);
    // The old owner stays on as an admin.
    assert_eq!(views[6].owner_id, x);
    assert_eq!(views[6].role_of(&x), Some(ProjectRole::Owner));
    assert_eq!(views[6].role_of(&o), Some(ProjectRole::Admin));
    let last = views.last().unwrap();
    assert_eq!(last.role_of(&o), None, "removed");
    assert_eq!(last.members.len(), 1);
    assert_eq!(last.version, stream.len() as i64);
    assert_eq!(
        last.created_at,
        bson::DateTime::from_chrono(meta(0).occurred_at)
    );
    assert_eq!(
        last.updated_at,
        bson::DateTime::from_chrono(meta(7).occurred_at)
    );
    // Deleted: flagged, kept (its version guards against a re-delivered creation).
    let deleted = EventEnvelope::new(
        id,
        stream.len() as u64 + 1,
        &ProjectEvent::Deleted(events::ProjectDeleted {}).into(),
        meta(9),
    );
    match apply_project(Some(last), &deleted) {
        Ok(Applied::Advanced(v)) => assert!(v.deleted),
        other => panic!("{other:?}"),
    }
    let bson = bson::to_document(last).expect("to bson");
    let back: ProjectView = bson::from_document(bson).expect("from bson");
    assert_eq!(&back, last);
}

#[test]
fn project_views_skip_duplicates_never_apply_over_gaps_and_refuse_poison() {
    let (id, owner, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let stream = project_stream(id, owner, other);
    let views = fold_projects(&stream);
    assert!(matches!(
        apply_project(Some(&views[2]), &stream[1]),
        Ok(Applied::Duplicate)
    ));
    assert!(matches!(
        apply_project(Some(&views[0]), &stream[3]),
        Ok(Applied::Gap {
            expected: 2,
            got: 4
        })
    ));
    let added_first = EventEnvelope {
        version: 1,
        ..stream[1].clone()
    };
    assert!(matches!(
        apply_project(None, &added_first),
        Err(Poison::NotCreatedFirst(_))
    ));
    assert!(matches!(
        apply_project(
            Some(&views[0]),
            &EventEnvelope {
                version: 2,
                ..stream[0].clone()
            }
        ),
        Err(Poison::CreatedAgain(2))
    ));
    // A task event on the project collection is poison, not a project.
    let task = task_stream(Uuid::new_v4(), owner);
    assert!(matches!(
        apply_project(None, &task[0]),
        Err(Poison::WrongStreamType { .. })
    ));
}

#[test]
fn task_views_follow_assignees_and_moves() {
    let (id, owner, project) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut stream = task_stream(id, owner);
    stream.truncate(1);
    let more: Vec<Event> = vec![
        TaskEvent::Moved(events::TaskMoved {
            from: None,
            to: Some(project),
        })
        .into(),
        TaskEvent::AssigneesChanged(events::TaskAssigneesChanged {
            assignee_ids: vec![owner],
        })
        .into(),
        TaskEvent::Moved(events::TaskMoved {
            from: Some(project),
            to: None,
        })
        .into(),
    ];
    for (i, e) in more.iter().enumerate() {
        stream.push(EventEnvelope::new(id, i as u64 + 2, e, meta(i as u32 + 1)));
    }
    let moved = prefix(&stream, 2).unwrap();
    assert_eq!(moved.project_id, Some(project.to_string()));
    assert!(moved.assignee_ids.is_empty());
    let assigned = prefix(&stream, 3).unwrap();
    assert_eq!(assigned.assignee_ids, vec![owner.to_string()]);
    let back = prefix(&stream, 4).unwrap();
    assert_eq!(back.project_id, None);
    assert_eq!(back.assignee_ids, vec![owner.to_string()]);
    // A view stored before projects has neither field; it reads as personal.
    let mut old = bson::to_document(&prefix(&stream, 1).unwrap()).unwrap();
    old.remove("project_id");
    old.remove("assignee_ids");
    let read: TaskView = bson::from_document(old).expect("old view reads");
    assert_eq!(read.project_id, None);
    assert!(read.assignee_ids.is_empty());
}

#[test]
fn task_views_list_completed_attachments_until_removed() {
    let (id, owner, file) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut stream = task_stream(id, owner);
    stream.truncate(1);
    let added = events::TaskAttachmentAdded {
        attachment_id: file,
        filename: "spec.pdf".into(),
        content_type: "application/pdf".into(),
        size: 1024,
        sha256: "ab".repeat(32),
        uploaded_by: owner,
    };
    let more: Vec<Event> = vec![
        TaskEvent::AttachmentAdded(added).into(),
        TaskEvent::AttachmentRemoved(events::TaskAttachmentRemoved {
            attachment_id: file,
        })
        .into(),
    ];
    for (i, e) in more.iter().enumerate() {
        stream.push(EventEnvelope::new(id, i as u64 + 2, e, meta(i as u32 + 1)));
    }
    let with = prefix(&stream, 2).unwrap();
    assert_eq!(
        with.attachments,
        vec![AttachmentView {
            id: file.to_string(),
            filename: "spec.pdf".into(),
            content_type: "application/pdf".into(),
            size: 1024,
            sha256: "ab".repeat(32),
            uploaded_by: owner.to_string(),
            uploaded_at: bson::DateTime::from_chrono(meta(1).occurred_at),
        }]
    );
    assert!(prefix(&stream, 3).unwrap().attachments.is_empty());
    // A view stored before attachments has none.
    let mut old = bson::to_document(&prefix(&stream, 1).unwrap()).unwrap();
    old.remove("attachments");
    let read: TaskView = bson::from_document(old).expect("old view reads");
    assert!(read.attachments.is_empty());
}
