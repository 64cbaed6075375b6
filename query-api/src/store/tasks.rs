//! Reads of the task views: one task, a filtered keyset page, and the
//! version a view holds (what a consistency token waits for).
//!
//! A list is always scoped by [`Visible`] first (personal tasks of one
//! owner, tasks of a set of projects), decided by the caller from the
//! membership table; the views are never asked who may see what.

use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};
use events::TaskStatus;
use futures::TryStreamExt;
use mongodb::Database;
use read_model::views::{TaskView, PROJECT_VIEWS, TASK_VIEWS, USER_VIEWS};
use uuid::Uuid;

use super::StoreError;
use crate::cursor::Position;
use crate::params::{Assignee, ListQuery};

/// The tasks a list may show before its filters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Visible {
    /// Whose personal tasks (no project) are in the list; `None`: nobody's.
    pub personal_of: Option<Uuid>,
    /// The projects whose tasks are in the list.
    pub projects: Vec<Uuid>,
    /// Only tasks created by this user (`owner_id`).
    pub created_by: Option<Uuid>,
    /// The caller (what `assignee=me` names).
    pub caller: Uuid,
}

impl Visible {
    /// True when nothing can be listed (no query needs to run).
    pub fn is_empty(&self) -> bool {
        self.personal_of.is_none() && self.projects.is_empty()
    }
}

/// The view of task `id`, deleted or not, whoever owns it.
pub async fn find(db: &Database, id: Uuid) -> Result<Option<TaskView>, StoreError> {
    db.collection::<TaskView>(TASK_VIEWS)
        .find_one(doc! { "_id": id.to_string() })
        .await
        .map_err(StoreError::views("reading a task failed"))
}

/// One page of the `visible` tasks that `q` selects, in `q`'s order,
/// strictly after `after`; and whether more follow.
pub async fn page(
    db: &Database,
    visible: &Visible,
    q: &ListQuery,
    after: Option<&Position>,
    now: DateTime<Utc>,
) -> Result<(Vec<TaskView>, bool), StoreError> {
    if visible.is_empty() {
        return Ok((Vec::new(), false));
    }
    let base = filter(visible, q, now);
    fetch_page(db, base, q, after)
        .await
        .map_err(StoreError::views("listing tasks failed"))
}

/// The version the views hold for a stream (task, project or user), 0 if
/// none.
pub async fn projected_version(db: &Database, stream_id: Uuid) -> Result<u64, StoreError> {
    let id = stream_id.to_string();
    for collection in [TASK_VIEWS, PROJECT_VIEWS, USER_VIEWS] {
        let found = db
            .collection::<Document>(collection)
            .find_one(doc! { "_id": &id })
            .projection(doc! { "version": 1 })
            .await
            .map_err(StoreError::views("reading a view version failed"))?;
        if let Some(d) = found {
            let v = match d.get("version") {
                Some(Bson::Int64(v)) => *v,
                Some(Bson::Int32(v)) => i64::from(*v),
                _ => 0,
            };
            return Ok(v.max(0) as u64);
        }
    }
    Ok(0)
}

/// Which documents `visible` covers: the personal tasks of one owner
/// (`project_id` null or absent, as in views written before projects) and
/// the tasks of the listed projects.
fn scope(visible: &Visible) -> Document {
    let projects: Vec<String> = visible.projects.iter().map(Uuid::to_string).collect();
    let mut any = Vec::new();
    if let Some(owner) = visible.personal_of {
        any.push(doc! { "owner_id": owner.to_string(), "project_id": Bson::Null });
    }
    match projects.as_slice() {
        [] => {}
        [one] => any.push(doc! { "project_id": one }),
        _ => any.push(doc! { "project_id": { "$in": projects } }),
    }
    match any.len() {
        1 => any.remove(0),
        _ => doc! { "$or": any },
    }
}

/// The selection of a list request (everything but the cursor).
fn filter(visible: &Visible, q: &ListQuery, now: DateTime<Utc>) -> Document {
    let date = |t: &DateTime<Utc>| Bson::DateTime(bson::DateTime::from_chrono(*t));
    let mut all = vec![scope(visible), doc! { "deleted": false }];
    if let Some(owner) = visible.created_by {
        all.push(doc! { "owner_id": owner.to_string() });
    }
    match q.assignee.map(|a| (a, a.user(visible.caller))) {
        None => {}
        Some((Assignee::Nobody, _)) | Some((_, None)) => {
            // Empty, or absent in views written before assignees.
            all.push(doc! { "assignee_ids.0": { "$exists": false } });
        }
        Some((_, Some(user))) => all.push(doc! { "assignee_ids": user.to_string() }),
    }
    if !q.statuses.is_empty() {
        let s: Vec<&str> = q.statuses.iter().map(|s| s.as_str()).collect();
        all.push(doc! { "status": { "$in": s } });
    }
    if !q.priorities.is_empty() {
        let p: Vec<&str> = q.priorities.iter().map(|p| p.as_str()).collect();
        all.push(doc! { "priority": { "$in": p } });
    }
    if let Some(t) = &q.due_before {
        all.push(doc! { "due_at": { "$lt": date(t) } });
    }
    if let Some(t) = &q.due_after {
        all.push(doc! { "due_at": { "$gt": date(t) } });
    }
    if let Some(t) = &q.created_before {
        all.push(doc! { "created_at": { "$lt": date(t) } });
    }
    if let Some(t) = &q.created_after {
        all.push(doc! { "created_at": { "$gt": date(t) } });
    }
    if let Some(t) = &q.updated_since {
        all.push(doc! { "updated_at": { "$gte": date(t) } });
    }
    if let Some(tag) = &q.tag {
        all.push(doc! { "tags": tag });
    }
    if let Some(text) = &q.q {
        all.push(doc! { "title": { "$regex": escape_regex(text), "$options": "i" } });
    }
    if q.overdue {
        all.push(doc! {
            "due_at": { "$lt": date(&now) },
            "status": { "$in": [TaskStatus::Todo.as_str(), TaskStatus::InProgress.as_str()] },
        });
    }
    doc! { "$and": all }
}

/// Escapes every ASCII punctuation character, so user text matches literally.
fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The sort value of a view for a cursor: milliseconds for dates, the rank for priority.
pub fn sort_value(v: &TaskView, field: &str) -> Option<i64> {
    match field {
        "due_at" => v.due_at.map(|t| t.timestamp_millis()),
        "created_at" => Some(v.created_at.timestamp_millis()),
        "updated_at" => Some(v.updated_at.timestamp_millis()),
        "priority_rank" => Some(i64::from(v.priority_rank)),
        _ => None,
    }
}

fn sort_bson(field: &str, value: i64) -> Bson {
    match field {
        "priority_rank" => Bson::Int32(value.clamp(i32::MIN.into(), i32::MAX.into()) as i32),
        _ => Bson::DateTime(bson::DateTime::from_millis(value)),
    }
}

/// Reads one page (keyset: strictly after `after` in the sort order) and
/// says whether more follow. Absent due dates sort after every date in
/// both directions, so `due_at` pages walk the dated tasks first and then
/// the undated ones by id.
async fn fetch_page(
    db: &Database,
    base: Document,
    q: &ListQuery,
    after: Option<&Position>,
) -> Result<(Vec<TaskView>, bool), mongodb::error::Error> {
    let collection = db.collection::<TaskView>(TASK_VIEWS);
    let field = q.sort.field();
    let (dir, cmp) = if q.sort.descending() {
        (-1, "$lt")
    } else {
        (1, "$gt")
    };
    let want = q.limit + 1;
    let find = |conditions: Vec<Document>, sort: Document, limit: usize| {
        let collection = collection.clone();
        async move {
            collection
                .find(doc! { "$and": conditions })
                .sort(sort)
                .limit(limit as i64)
                .await?
                .try_collect::<Vec<TaskView>>()
                .await
        }
    };
    let keyset = |p: &Position, value: i64| {
        let v = sort_bson(field, value);
        doc! { "$or": [
            { field: { cmp: v.clone() } },
            { field: v, "_id": { cmp: &p.id } },
        ] }
    };
    let mut items = Vec::new();
    let in_dated_phase = after.is_none_or(|p| p.value.is_some());
    if in_dated_phase {
        let mut conditions = vec![base.clone()];
        if q.sort.nullable() {
            conditions.push(doc! { field: { "$ne": Bson::Null } });
        }
        if let Some((p, v)) = after.and_then(|p| p.value.map(|v| (p, v))) {
            conditions.push(keyset(p, v));
        }
        items = find(conditions, doc! { field: dir, "_id": dir }, want).await?;
    }
    if q.sort.nullable() && items.len() < want {
        let mut conditions = vec![base, doc! { field: Bson::Null }];
        if let Some(p) = after.filter(|p| p.value.is_none()) {
            conditions.push(doc! { "_id": { cmp: &p.id } });
        }
        let rest = find(conditions, doc! { "_id": dir }, want - items.len()).await?;
        items.extend(rest);
    }
    let more = items.len() > q.limit;
    items.truncate(q.limit);
    Ok((items, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_escaping_keeps_text_literal() {
        assert_eq!(escape_regex("a.b*(c)"), r"a\.b\*\(c\)");
        assert_eq!(escape_regex("Überweisung 50%"), r"Überweisung 50\%");
    }
}
