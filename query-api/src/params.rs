//! The query parameters of `GET /tasks`, parsed (not merely validated):
//! once a [`ListQuery`] exists, every value in it is meaningful.

use axum::extract::Query;
use axum::http::Uri;
use chrono::{DateTime, Utc};
use events::{Priority, TaskStatus};
use serde::{Deserialize, Serialize};
use service::{FieldError, Problem};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;
/// Longer title searches are refused: a regex over every title costs per byte.
pub const MAX_Q_LEN: usize = 200;
/// The most projects one `project_id` filter may name.
pub const MAX_PROJECT_IDS: usize = 20;

/// The `assignee` filter of `GET /tasks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignee {
    /// `me`: assigned to the caller (among others, maybe).
    Me,
    /// `none`: assigned to nobody.
    Nobody,
    /// `<user id>`: assigned to that user (among others, maybe).
    User(Uuid),
}

impl Assignee {
    /// The user the filter names, `None` for `none`.
    pub fn user(self, caller: Uuid) -> Option<Uuid> {
        match self {
            Assignee::Me => Some(caller),
            Assignee::Nobody => None,
            Assignee::User(u) => Some(u),
        }
    }
}

/// The orders `GET /tasks` can return; ties are broken by task id in the
/// same direction, so every order is total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub enum Sort {
    #[serde(rename = "due_at")]
    DueAt,
    #[serde(rename = "-due_at")]
    DueAtDesc,
    #[serde(rename = "created_at")]
    CreatedAt,
    #[default]
    #[serde(rename = "-created_at")]
    CreatedAtDesc,
    #[serde(rename = "updated_at")]
    UpdatedAt,
    #[serde(rename = "-updated_at")]
    UpdatedAtDesc,
    #[serde(rename = "priority")]
    Priority,
    #[serde(rename = "-priority")]
    PriorityDesc,
}

impl Sort {
    pub const ALL: [Sort; 8] = [
        Sort::DueAt,
        Sort::DueAtDesc,
        Sort::CreatedAt,
        Sort::CreatedAtDesc,
        Sort::UpdatedAt,
        Sort::UpdatedAtDesc,
        Sort::Priority,
        Sort::PriorityDesc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Sort::DueAt => "due_at",
            Sort::DueAtDesc => "-due_at",
            Sort::CreatedAt => "created_at",
            Sort::CreatedAtDesc => "-created_at",
            Sort::UpdatedAt => "updated_at",
            Sort::UpdatedAtDesc => "-updated_at",
            Sort::Priority => "priority",
            Sort::PriorityDesc => "-priority",
        }
    }

    /// The view field sorted on.
    pub fn field(self) -> &'static str {
        match self {
            Sort::DueAt | Sort::DueAtDesc => "due_at",
            Sort::CreatedAt | Sort::CreatedAtDesc => "created_at",
            Sort::UpdatedAt | Sort::UpdatedAtDesc => "updated_at",
            Sort::Priority | Sort::PriorityDesc => "priority_rank",
        }
    }

    pub fn descending(self) -> bool {
        self.as_str().starts_with('-')
    }

    /// Only `due_at` can be absent; absent values sort last either way.
    pub fn nullable(self) -> bool {
        matches!(self, Sort::DueAt | Sort::DueAtDesc)
    }
}

impl std::str::FromStr for Sort {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sort::ALL.into_iter().find(|v| v.as_str() == s).ok_or(())
    }
}

/// A parsed `GET /tasks` request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListQuery {
    /// `owner_id` (admins only); `None` = the caller.
    pub owner_id: Option<Uuid>,
    pub statuses: Vec<TaskStatus>,
    pub priorities: Vec<Priority>,
    pub due_before: Option<DateTime<Utc>>,
    pub due_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub created_after: Option<DateTime<Utc>>,
    pub updated_since: Option<DateTime<Utc>>,
    pub tag: Option<String>,
    pub q: Option<String>,
    pub overdue: bool,
    /// `project_id`: only tasks of these projects (sorted, deduplicated;
    /// empty = no project filter). Projects the caller is not a member of
    /// select nothing.
    pub project_ids: Vec<Uuid>,
    pub assignee: Option<Assignee>,
    pub sort: Sort,
    pub limit: usize,
    pub cursor: Option<String>,
}

/// The query parameters, for the OpenAPI document (parsing is [`ListQuery::parse`]).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListTasksParams {
    /// Only tasks in one of these states (comma-separated).
    #[param(style = Form, explode = false, inline)]
    status: Option<Vec<TaskStatus>>,
    /// Only tasks with one of these priorities (comma-separated).
    #[param(style = Form, explode = false, inline)]
    priority: Option<Vec<Priority>>,
    /// Due strictly before this instant (RFC 3339).
    due_before: Option<DateTime<Utc>>,
    /// Due strictly after this instant (RFC 3339).
    due_after: Option<DateTime<Utc>>,
    /// Created strictly before this instant (RFC 3339).
    created_before: Option<DateTime<Utc>>,
    /// Created strictly after this instant (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    /// Changed at or after this instant (RFC 3339).
    updated_since: Option<DateTime<Utc>>,
    /// Carrying this tag.
    tag: Option<String>,
    /// Case-insensitive substring of the title.
    q: Option<String>,
    /// `true`: due in the past and neither done nor cancelled; `false` (the
    /// default) does not filter.
    overdue: Option<bool>,
    /// Order of the items (default `-created_at`); ties by id.
    #[param(inline)]
    sort: Option<Sort>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page, with the same filters and sort.
    cursor: Option<String>,
    /// Only tasks of these projects (comma-separated, at most 20). A
    /// project the caller is not a member of (or that does not exist)
    /// selects nothing; it is never an error. Personal tasks are left out
    /// when this is given.
    #[param(style = Form, explode = false)]
    project_id: Option<Vec<Uuid>>,
    /// `me`, `none` (assigned to nobody) or a user id: only tasks assigned
    /// to that user (or to nobody).
    assignee: Option<String>,
    /// Only tasks created by this user. Another user's id is for admins
    /// only (403 otherwise): an admin then also sees that user's personal
    /// tasks, and project tasks only of projects the admin belongs to.
    owner_id: Option<Uuid>,
}

const KNOWN: &[&str] = &[
    "status",
    "priority",
    "due_before",
    "due_after",
    "created_before",
    "created_after",
    "updated_since",
    "tag",
    "q",
    "overdue",
    "sort",
    "limit",
    "cursor",
    "owner_id",
    "project_id",
    "assignee",
];

/// The query string's name/value pairs, in order (repeats kept).
pub fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, Problem> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|Query(p)| p)
        .map_err(|e| Problem::bad_request(format!("malformed query string: {e}")))
}

/// A 400 listing each bad parameter.
pub fn invalid(errors: Vec<FieldError>) -> Problem {
    let detail = match errors.as_slice() {
        [one] => format!("query parameter `{}`: {}", one.pointer, one.detail),
        _ => format!(
            "query parameters {} are invalid",
            errors
                .iter()
                .map(|e| format!("`{}`", e.pointer))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Problem::new(
        axum::http::StatusCode::BAD_REQUEST,
        "invalid-query",
        "Invalid query parameters",
        detail,
    )
    .with_errors(errors)
}

impl ListQuery {
    /// Parses decoded `(name, value)` pairs. Every problem is reported,
    /// each naming its parameter.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, Problem> {
        let mut q = ListQuery {
            limit: DEFAULT_LIMIT,
            ..ListQuery::default()
        };
        let mut errors = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            let name = name.as_str();
            let Some(&known) = KNOWN.iter().find(|k| **k == name) else {
                errors.push(FieldError::new(name, "unknown query parameter"));
                continue;
            };
            let multi = matches!(known, "status" | "priority" | "project_id");
            if !multi && seen.contains(&known) {
                errors.push(FieldError::new(known, "given more than once"));
                continue;
            }
            seen.push(known);
            let mut err = |detail: String| errors.push(FieldError::new(known, detail));
            match known {
                "status" => {
                    match parse_list::<TaskStatus>(value, "todo, in_progress, done, cancelled") {
                        Ok(v) => q.statuses.extend(v),
                        Err(e) => err(e),
                    }
                }
                "priority" => match parse_list::<Priority>(value, "low, medium, high, urgent") {
                    Ok(v) => q.priorities.extend(v),
                    Err(e) => err(e),
                },
                "due_before" => q.due_before = instant(value).map_err(&mut err).ok(),
                "due_after" => q.due_after = instant(value).map_err(&mut err).ok(),
                "created_before" => q.created_before = instant(value).map_err(&mut err).ok(),
                "created_after" => q.created_after = instant(value).map_err(&mut err).ok(),
                "updated_since" => q.updated_since = instant(value).map_err(&mut err).ok(),
                "tag" if value.is_empty() => err("must not be empty".into()),
                "tag" => q.tag = Some(value.clone()),
                "q" if value.is_empty() => err("must not be empty".into()),
                "q" if value.chars().count() > MAX_Q_LEN => {
                    err(format!("at most {MAX_Q_LEN} characters"))
                }
                "q" => q.q = Some(value.clone()),
                "overdue" => match value.as_str() {
                    "true" => q.overdue = true,
                    "false" => q.overdue = false,
                    _ => err("expected `true` or `false`".into()),
                },
                "sort" => match value.parse::<Sort>() {
                    Ok(s) => q.sort = s,
                    Err(()) => err(format!(
                        "unknown sort `{value}`; expected one of {}",
                        Sort::ALL.map(Sort::as_str).join(", ")
                    )),
                },
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => q.limit = n,
                    _ => err(format!("expected an integer from 1 to {MAX_LIMIT}")),
                },
                "cursor" if value.is_empty() => err("must not be empty".into()),
                "cursor" => q.cursor = Some(value.clone()),
                "owner_id" => match uuid::Uuid::try_parse(value) {
                    Ok(id) => q.owner_id = Some(id),
                    Err(_) => err("expected a user id (UUID)".into()),
                },
                "project_id" => match parse_list::<Uuid>(value, "project ids (UUIDs)") {
                    Ok(v) => q.project_ids.extend(v),
                    Err(_) => err("expected project ids (UUIDs), comma-separated".into()),
                },
                "assignee" => match value.as_str() {
                    "me" => q.assignee = Some(Assignee::Me),
                    "none" => q.assignee = Some(Assignee::Nobody),
                    other => match Uuid::try_parse(other) {
                        Ok(id) => q.assignee = Some(Assignee::User(id)),
                        Err(_) => err("expected `me`, `none` or a user id (UUID)".into()),
                    },
                },
                _ => err("unknown query parameter".into()),
            }
        }
        q.project_ids.sort();
        q.project_ids.dedup();
        if q.project_ids.len() > MAX_PROJECT_IDS {
            errors.push(FieldError::new(
                "project_id",
                format!("at most {MAX_PROJECT_IDS} projects"),
            ));
        }
        if errors.is_empty() {
            q.statuses.sort_by_key(|s| s.as_str());
            q.statuses.dedup();
            q.priorities.sort();
            q.priorities.dedup();
            Ok(q)
        } else {
            Err(invalid(errors))
        }
    }

    /// Everything that selects and orders the list, in a canonical form:
    /// a cursor is only valid for the exact list it was cut from (the
    /// caller's, with the same filters; the caller's memberships are not
    /// part of it: joining or leaving a project between pages changes the
    /// rest of the list, not the cursor's validity).
    pub fn fingerprint(&self, caller: Uuid) -> String {
        let t = |v: &Option<DateTime<Utc>>| {
            v.map(|t| t.timestamp_micros().to_string())
                .unwrap_or_default()
        };
        let statuses: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
        let priorities: Vec<&str> = self.priorities.iter().map(|p| p.as_str()).collect();
        let projects: Vec<String> = self.project_ids.iter().map(Uuid::to_string).collect();
        let assignee = match self.assignee {
            None => String::new(),
            Some(Assignee::Me) => "me".to_owned(),
            Some(Assignee::Nobody) => "none".to_owned(),
            Some(Assignee::User(u)) => u.to_string(),
        };
        serde_json::json!([
            caller.to_string(),
            self.owner_id.map(|o| o.to_string()),
            projects,
            assignee,
            statuses,
            priorities,
            t(&self.due_before),
            t(&self.due_after),
            t(&self.created_before),
            t(&self.created_after),
            t(&self.updated_since),
            self.tag,
            self.q,
            self.overdue,
            self.sort.as_str(),
        ])
        .to_string()
    }
}

fn parse_list<T: std::str::FromStr>(raw: &str, expected: &str) -> Result<Vec<T>, String> {
    raw.split(',')
        .map(str::trim)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| format!("unknown value `{v}`; expected one of {expected}"))
        })
        .collect()
}

fn instant(raw: &str) -> Result<DateTime<Utc>, String> {
    service::time::parse_rfc3339(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lists_each_parameter() {
        let p = invalid(vec![FieldError::new("a", "x"), FieldError::new("b", "y")]);
        assert_eq!(p.status, 400);
        assert_eq!(p.errors.len(), 2);
    }

    fn parse(query: &str) -> Result<ListQuery, Problem> {
        let pairs: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        ListQuery::parse(&pairs)
    }

    /// `(query, parameters named in the 400, or none if it parses)`
    #[test]
    fn bad_parameters_are_named() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("status=todo,done&priority=low&priority=urgent", &[]),
            ("sort=-priority&limit=200&overdue=true&q=a.b*", &[]),
            (
                "due_before=2026-01-01T00:00:00Z&created_after=2026-01-01T00:00:00.123456Z",
                &[],
            ),
            ("colour=red", &["colour"]),
            ("status=todo,finished", &["status"]),
            ("priority=critical", &["priority"]),
            ("sort=title", &["sort"]),
            ("limit=0", &["limit"]),
            ("limit=201", &["limit"]),
            ("limit=ten", &["limit"]),
            ("due_before=yesterday", &["due_before"]),
            ("updated_since=2026-01-01", &["updated_since"]),
            ("overdue=yes", &["overdue"]),
            ("owner_id=me", &["owner_id"]),
            ("sort=due_at&sort=-due_at", &["sort"]),
            ("tag=", &["tag"]),
            ("limit=0&sort=x&foo=1", &["limit", "sort", "foo"]),
            (
                "assignee=me&project_id=00000000-0000-0000-0000-000000000001",
                &[],
            ),
            ("assignee=none", &[]),
            ("assignee=00000000-0000-0000-0000-000000000001", &[]),
            ("assignee=someone", &["assignee"]),
            ("assignee=me&assignee=none", &["assignee"]),
            ("project_id=abc", &["project_id"]),
            ("project_id=", &["project_id"]),
        ];
        for (query, named) in cases {
            match parse(query) {
                Ok(_) => assert!(
                    named.is_empty(),
                    "{query:?} parsed; expected 400 naming {named:?}"
                ),
                Err(p) => {
                    assert_eq!(p.status, 400, "{query:?}: {p:?}");
                    let got: Vec<&str> = p.errors.iter().map(|e| e.pointer.as_str()).collect();
                    assert_eq!(&got, named, "{query:?}: {p:?}");
                }
            }
        }
    }

    #[test]
    fn defaults_and_multi_values() {
        let q = parse("status=done,todo&status=todo&priority=urgent,low").unwrap();
        assert_eq!(q.statuses, vec![TaskStatus::Done, TaskStatus::Todo]);
        assert_eq!(q.priorities, vec![Priority::Low, Priority::Urgent]);
        assert_eq!((q.sort, q.limit), (Sort::CreatedAtDesc, DEFAULT_LIMIT));
    }

    #[test]
    fn the_fingerprint_ignores_order_and_limit_but_not_filters() {
        let owner = Uuid::new_v4();
        let a = parse("status=todo,done&limit=5")
            .unwrap()
            .fingerprint(owner);
        let b = parse("status=done&status=todo&limit=7")
            .unwrap()
            .fingerprint(owner);
        let c = parse("status=done").unwrap().fingerprint(owner);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            a,
            parse("status=todo,done")
                .unwrap()
                .fingerprint(Uuid::new_v4())
        );
        let p1 = Uuid::from_u128(1);
        let p2 = Uuid::from_u128(2);
        let with = |q: &str| parse(q).unwrap().fingerprint(owner);
        assert_eq!(
            with(&format!("project_id={p1},{p2}")),
            with(&format!("project_id={p2}&project_id={p1},{p2}"))
        );
        assert_ne!(with(&format!("project_id={p1}")), with(""));
        assert_ne!(
            with(&format!("project_id={p1}")),
            with(&format!("project_id={p2}"))
        );
        assert_ne!(with("assignee=me"), with("assignee=none"));
        assert_ne!(with("assignee=me"), with(""));
        assert_ne!(with(&format!("owner_id={owner}")), with(""));
    }

    #[test]
    fn at_most_twenty_projects() {
        let ids = |n: u128| {
            (1..=n)
                .map(|i| Uuid::from_u128(i).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            parse(&format!("project_id={}", ids(20)))
                .unwrap()
                .project_ids
                .len(),
            20
        );
        let e = parse(&format!("project_id={}", ids(21))).unwrap_err();
        assert_eq!(e.errors[0].pointer, "project_id");
    }
}
