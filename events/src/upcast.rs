//! Upcasters: old schema versions are read as the current one, never rewritten.
//!
//! Each upcaster turns schema `n` of one event type into schema `n + 1`;
//! [`to_current`] chains them.

use serde_json::{json, Value};

use crate::envelope::DecodeError;
use crate::schema::{current_schema, Priority};

/// Brings a payload of `event_type` at `schema` up to the current schema.
pub fn to_current(event_type: &str, schema: u32, mut data: Value) -> Result<Value, DecodeError> {
    let target = current_schema(event_type)
        .ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
    let mut at = schema;
    while at < target {
        data = match (event_type, at) {
            ("task.created", 1) => task_created_v1_to_v2(data),
            ("task.created", 2) => task_created_v2_to_v3(data),
            _ => {
                return Err(DecodeError::NoUpcaster {
                    event_type: event_type.to_owned(),
                    schema: at,
                })
            }
        };
        at += 1;
    }
    Ok(data)
}

/// `task.created` schema 1 had a numeric `priority` (1 = low … 4 = urgent)
/// and no `tags`; schema 2 names the priority and always carries `tags`.
fn task_created_v1_to_v2(mut data: Value) -> Value {
    if let Some(obj) = data.as_object_mut() {
        // A missing priority was "medium"; an out-of-range number is left as
        // it is so that decoding reports it instead of guessing.
        let priority = match obj.get("priority") {
            None | Some(Value::Null) => Some(Priority::Medium),
            Some(v) => v.as_i64().and_then(Priority::from_rank),
        };
        if let Some(p) = priority {
            obj.insert("priority".into(), json!(p.as_str()));
        }
        obj.entry("tags").or_insert_with(|| json!([]));
    }
    data
}

/// `task.created` schema 2 had no projects and no assignees: every such
/// task is personal and unassigned.
fn task_created_v2_to_v3(mut data: Value) -> Value {
    if let Some(obj) = data.as_object_mut() {
        obj.entry("project_id").or_insert(Value::Null);
        obj.entry("assignee_ids").or_insert_with(|| json!([]));
    }
    data
}
