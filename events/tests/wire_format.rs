//! Golden fixtures pin the wire format: each file under `fixtures/` is an
//! envelope exactly as it travels on Kafka. Decoding it and encoding the
//! decoded event again must give the same JSON, so an accidental change of a
//! field name, tag, enum spelling or timestamp format fails here.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use events::{Event, EventEnvelope, EventMeta, Priority, TaskEvent, TaskStatus};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Re-encodes `event` in an envelope carrying the fixture's identity fields.
fn reencode(original: &EventEnvelope, event: &Event) -> Value {
    let meta = EventMeta {
        actor: original.actor,
        correlation_id: original.correlation_id,
        causation_id: original.causation_id,
        occurred_at: original.occurred_at,
    };
    let mut env = EventEnvelope::new(original.stream_id, original.version, event, meta);
    env.event_id = original.event_id;
    serde_json::to_value(&env).expect("serialise envelope")
}

#[test]
fn every_current_event_type_round_trips_byte_for_byte() {
    let names = [
        "task.created",
        "task.updated",
        "task.status_changed",
        "task.priority_changed",
        "task.due_date_changed",
        "task.deleted",
        "task.assignees_changed",
        "task.moved",
        "task.attachment_added",
        "task.attachment_removed",
        "project.created",
        "project.updated",
        "project.archived",
        "project.unarchived",
        "project.deleted",
        "project.member_added",
        "project.member_role_changed",
        "project.member_removed",
        "project.owner_changed",
        "user.registered",
        "user.role_changed",
        "user.deactivated",
        "user.reactivated",
    ];
    for (t, _, _) in events::schema::EVENT_TYPES {
        assert!(names.contains(t), "event type {t} has no golden fixture");
    }
    for name in names {
        let golden = fixture(&format!("{name}.json"));
        let env: EventEnvelope =
            serde_json::from_value(golden.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(env.event_type, name);
        let event = env.decode().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(event.event_type(), name);
        assert_eq!(
            event.schema(),
            env.schema,
            "{name}: fixture is not at the current schema"
        );
        assert_eq!(
            reencode(&env, &event),
            golden,
            "{name}: wire format changed"
        );
    }
}

#[test]
fn task_created_schema_1_is_upcast_to_the_current_schema() {
    let env: EventEnvelope =
        serde_json::from_value(fixture("task.created.v1.json")).expect("v1 envelope");
    assert_eq!(env.schema, 1);
    match env.decode().expect("v1 decodes") {
        Event::Task(TaskEvent::Created(c)) => {
            assert_eq!(c.priority, Priority::High, "numeric priority 3 is high");
            assert!(c.tags.is_empty(), "v1 had no tags");
            assert_eq!(c.status, TaskStatus::Todo);
            assert_eq!(c.title, "Legacy task");
        }
        other => panic!("expected task.created, got {other:?}"),
    }
}

#[test]
fn task_created_schema_2_is_upcast_to_a_personal_unassigned_task() {
    let env: EventEnvelope =
        serde_json::from_value(fixture("task.created.v2.json")).expect("v2 envelope");
    assert_eq!(env.schema, 2);
    match env.decode().expect("v2 decodes") {
        Event::Task(TaskEvent::Created(c)) => {
            assert_eq!(c.project_id, None, "schema 2 tasks are personal");
            assert!(
                c.assignee_ids.is_empty(),
                "schema 2 tasks have no assignees"
            );
            assert_eq!(c.title, "Write the quarterly report");
            assert_eq!(c.tags, ["work", "q4"]);
        }
        other => panic!("expected task.created, got {other:?}"),
    }
    // Schema 1 goes through both upcasters.
    let v1: EventEnvelope =
        serde_json::from_value(fixture("task.created.v1.json")).expect("v1 envelope");
    match v1.decode().expect("v1 decodes") {
        Event::Task(TaskEvent::Created(c)) => {
            assert_eq!(c.project_id, None);
            assert!(c.assignee_ids.is_empty());
        }
        other => panic!("expected task.created, got {other:?}"),
    }
}

#[test]
fn a_project_event_on_a_task_stream_type_is_still_read_by_its_type() {
    // The envelope's stream type and the event's own are checked by the
    // readers (the projector dead-letters a mismatch); decoding goes by `type`.
    let env: EventEnvelope =
        serde_json::from_value(fixture("project.member_added.json")).expect("envelope");
    match env.decode().expect("decodes") {
        Event::Project(events::ProjectEvent::MemberAdded(m)) => {
            assert_eq!(m.role, events::ProjectRole::Member);
        }
        other => panic!("expected project.member_added, got {other:?}"),
    }
    assert_eq!(env.stream_type, events::StreamType::Project);
}

#[test]
fn decoding_rejects_what_it_cannot_read() {
    let base = fixture("task.status_changed.json");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        serde_json::from_value::<EventEnvelope>(v)
            .expect("envelope")
            .decode()
    };
    let unknown_type = with(&|v| v["type"] = "task.exploded".into());
    assert!(
        matches!(unknown_type, Err(events::DecodeError::UnknownType(_))),
        "{unknown_type:?}"
    );
    let future = with(&|v| v["schema"] = 99.into());
    assert!(
        matches!(future, Err(events::DecodeError::FutureSchema { .. })),
        "{future:?}"
    );
    let bad_payload = with(&|v| v["data"]["to"] = "sideways".into());
    assert!(
        matches!(bad_payload, Err(events::DecodeError::Payload { .. })),
        "{bad_payload:?}"
    );
    let extra_field = with(&|v| v["data"]["password_hash"] = "x".into());
    assert!(
        matches!(extra_field, Err(events::DecodeError::Payload { .. })),
        "{extra_field:?}"
    );
    let v1_bad_priority = {
        let mut v = fixture("task.created.v1.json");
        v["data"]["priority"] = 9.into();
        serde_json::from_value::<EventEnvelope>(v)
            .expect("envelope")
            .decode()
    };
    assert!(
        matches!(v1_bad_priority, Err(events::DecodeError::Payload { .. })),
        "{v1_bad_priority:?}"
    );
    assert!(EventEnvelope::from_json(b"{not json").is_err());
    let mut unknown_envelope_field = base.clone();
    unknown_envelope_field["extra"] = true.into();
    assert!(serde_json::from_value::<EventEnvelope>(unknown_envelope_field).is_err());
}

#[test]
fn timestamps_are_rfc3339_utc_with_microseconds() {
    let t: DateTime<Utc> = "2026-11-25T09:30:00.123456789+02:00".parse().expect("time");
    let meta = EventMeta {
        actor: uuid::Uuid::nil(),
        correlation_id: uuid::Uuid::nil(),
        causation_id: None,
        occurred_at: t,
    };
    let env = EventEnvelope::new(
        uuid::Uuid::nil(),
        1,
        &Event::Task(TaskEvent::Deleted(Default::default())),
        meta,
    );
    let json = serde_json::to_value(&env).expect("json");
    assert_eq!(json["occurred_at"], "2026-11-25T07:30:00.123456Z");
    assert_eq!(env.event_id.get_version_num(), 7, "event ids are UUID v7");
}

#[test]
fn consistency_tokens_round_trip_and_reject_garbage() {
    let token = events::ConsistencyToken {
        stream_id: uuid::Uuid::new_v4(),
        version: 42,
    };
    let parsed: events::ConsistencyToken = token.to_string().parse().expect("round trip");
    assert_eq!(parsed, token);
    for bad in [
        "",
        "abc",
        "abc.1",
        ".1",
        "00000000000000000000000000000000.0",
        "x.y.z",
        "00000000000000000000000000000000.-1",
    ] {
        assert!(
            bad.parse::<events::ConsistencyToken>().is_err(),
            "{bad:?} parsed"
        );
    }
}
