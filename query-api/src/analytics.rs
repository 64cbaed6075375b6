//! `/analytics/...`: figures aggregated from the analytics projection
//! (`task_facts`, one document per task, see `read_model::analytics` for the
//! definitions). The projection is maintained and rebuilt like the task view;
//! these handlers only aggregate it.
//!
//! Scope: without parameters, the caller's personal tasks (no project);
//! `project_id` (members only, any role; 404 otherwise, as for a project
//! that does not exist) the tasks of one project; an admin's `owner_id` or
//! `all=true` another user's personal tasks or every task.
//! `GET /analytics/assignees` gives per-assignee completions and cycle
//! times for the same scopes (meant for a project).
//!
//! Ranges are `[from, to)` in UTC; `from`/`to` are RFC 3339 times or
//! `YYYY-MM-DD` dates (a date `to` includes that whole day). Default: the
//! last 30 days up to now. Ranges are limited to 366 days.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use events::{Priority, TaskStatus};
use read_model::analytics::TaskFacts;
use serde::Serialize;
use service::{FieldError, Problem};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::params::{invalid, query_pairs};
use crate::startup::AppState;
use crate::store;
use access::AuthUser;

/// Longest range one request may aggregate.
pub const MAX_RANGE_DAYS: i64 = 366;

/// Throughput bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    Day,
    /// ISO weeks, starting on Monday.
    Week,
}

/// The parameters every analytics endpoint accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub scope: Scope,
    pub bucket: Bucket,
}

/// Whose tasks are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One user's personal tasks.
    Owner(Uuid),
    /// One project's tasks (the caller's membership is checked by the
    /// handler, against `project_members`).
    Project(Uuid),
    /// Every user's (admins only).
    All,
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AnalyticsParams {
    /// Start of the range (inclusive): RFC 3339 time or `YYYY-MM-DD`. Default: `to` minus 30 days.
    from: Option<String>,
    /// End of the range (exclusive; a date includes that day): RFC 3339 time or `YYYY-MM-DD`. Default: now.
    to: Option<String>,
    /// Admins only: another user's figures.
    owner_id: Option<Uuid>,
    /// Admins only: `true` aggregates every user's tasks.
    all: Option<bool>,
    /// The tasks of this project (members only; 404 otherwise); not with
    /// `owner_id` or `all`. Without it: the caller's personal tasks.
    project_id: Option<Uuid>,
}

#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ThroughputParams {
    /// `day` (default) or `week` (ISO weeks, Monday first).
    #[param(inline)]
    bucket: Option<Bucket>,
    /// Start of the range (inclusive): RFC 3339 time or `YYYY-MM-DD`. Default: `to` minus 30 days.
    from: Option<String>,
    /// End of the range (exclusive; a date includes that day): RFC 3339 time or `YYYY-MM-DD`. Default: now.
    to: Option<String>,
    /// Admins only: another user's figures.
    owner_id: Option<Uuid>,
    /// Admins only: `true` aggregates every user's tasks.
    all: Option<bool>,
    /// The tasks of this project (members only; 404 otherwise); not with
    /// `owner_id` or `all`. Without it: the caller's personal tasks.
    project_id: Option<Uuid>,
}

fn parse_time(name: &str, value: &str, end_of_day: bool) -> Result<DateTime<Utc>, FieldError> {
    let t = parse_time_unchecked(name, value, end_of_day)?;
    service::time::storable(t).map_err(|e| FieldError::new(name, e))
}

fn parse_time_unchecked(
    name: &str,
    value: &str,
    end_of_day: bool,
) -> Result<DateTime<Utc>, FieldError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    match NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        Ok(d) => {
            let d = if end_of_day {
                d.succ_opt().unwrap_or(d)
            } else {
                d
            };
            d.and_hms_opt(0, 0, 0)
                .map(|t| Utc.from_utc_datetime(&t))
                .ok_or_else(|| FieldError::new(name, "not a valid date"))
        }
        Err(_) => Err(FieldError::new(
            name,
            "expected an RFC 3339 time or a YYYY-MM-DD date",
        )),
    }
}

impl AnalyticsQuery {
    /// Parses the query string; `bucket` is accepted only where `allow_bucket`.
    pub fn parse(
        pairs: &[(String, String)],
        user: &AuthUser,
        now: DateTime<Utc>,
        allow_bucket: bool,
    ) -> Result<Self, Problem> {
        let mut errors = Vec::new();
        let (mut from, mut to, mut owner, mut all, mut bucket) =
            (None, None, None, false, Bucket::Day);
        let mut project = None;
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            if seen.contains(&name.as_str()) {
                errors.push(FieldError::new(name.clone(), "given more than once"));
                continue;
            }
            match name.as_str() {
                "from" => match parse_time("from", value, false) {
                    Ok(t) => from = Some(t),
                    Err(e) => errors.push(e),
                },
                "to" => match parse_time("to", value, true) {
                    Ok(t) => to = Some(t),
                    Err(e) => errors.push(e),
                },
                "owner_id" => match Uuid::try_parse(value) {
                    Ok(id) => owner = Some(id),
                    Err(_) => errors.push(FieldError::new("owner_id", "not a UUID")),
                },
                "project_id" => match Uuid::try_parse(value) {
                    Ok(id) => project = Some(id),
                    Err(_) => errors.push(FieldError::new("project_id", "not a UUID")),
                },
                "all" => match value.as_str() {
                    "true" => all = true,
                    "false" => all = false,
                    _ => errors.push(FieldError::new("all", "expected `true` or `false`")),
                },
                "bucket" if allow_bucket => match value.as_str() {
                    "day" => bucket = Bucket::Day,
                    "week" => bucket = Bucket::Week,
                    _ => errors.push(FieldError::new("bucket", "expected `day` or `week`")),
                },
                other => {
                    errors.push(FieldError::new(other.to_owned(), "unknown parameter"));
                    continue;
                }
            }
            seen.push(name.as_str());
        }
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        let to = to.unwrap_or(now);
        let from = from.unwrap_or(to - Duration::days(30));
        if from >= to {
            return Err(invalid(vec![FieldError::new(
                "from",
                "must be before `to`",
            )]));
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(invalid(vec![FieldError::new(
                "to",
                format!("the range may span at most {MAX_RANGE_DAYS} days"),
            )]));
        }
        if project.is_some() && (all || owner.is_some()) {
            return Err(invalid(vec![FieldError::new(
                "project_id",
                "cannot be combined with `owner_id` or `all`",
            )]));
        }
        let scope = if let Some(p) = project {
            Scope::Project(p)
        } else {
            match (all, owner) {
                (true, Some(_)) => {
                    return Err(invalid(vec![FieldError::new(
                        "all",
                        "cannot be combined with `owner_id`",
                    )]))
                }
                (true, None) if user.is_admin() => Scope::All,
                (false, Some(o)) if o == user.id || user.is_admin() => Scope::Owner(o),
                (true, None) | (false, Some(_)) => {
                    return Err(Problem::forbidden(
                        "only admins may read other users' analytics",
                    ))
                }
                (false, None) => Scope::Owner(user.id),
            }
        };
        Ok(AnalyticsQuery {
            from,
            to,
            scope,
            bucket,
        })
    }
}

// ------------------------------------------------------------------ figures

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DayCount {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Summary {
    #[schema(value_type = String, format = DateTime)]
    pub from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub to: DateTime<Utc>,
    /// Current tasks by status (all time, deleted tasks excluded).
    pub by_status: BTreeMap<String, u64>,
    /// Current tasks by priority (all time, deleted tasks excluded).
    pub by_priority: BTreeMap<String, u64>,
    /// Tasks created per UTC day of the range (every day listed).
    pub created_per_day: Vec<DayCount>,
    /// Completions per UTC day of the range (a reopened task that is done
    /// again counts once per completion).
    pub completed_per_day: Vec<DayCount>,
    /// Of the tasks created in the range, the fraction done now; null if none.
    pub completion_rate: Option<f64>,
    /// Open tasks (todo, in progress) whose due time has passed.
    pub overdue: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Durations {
    pub count: u64,
    /// Nearest-rank percentiles; null when there is no task.
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub mean_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CycleTimes {
    /// Created → last completion.
    pub cycle: Durations,
    /// Last start (in progress) → last completion, for tasks that were started.
    pub work: Durations,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CycleTimeReport {
    #[schema(value_type = String, format = DateTime)]
    pub from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub to: DateTime<Utc>,
    /// Over done tasks whose last completion is in the range.
    pub overall: CycleTimes,
    pub by_priority: BTreeMap<String, CycleTimes>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BucketCount {
    /// First instant of the bucket (a UTC midnight; Mondays for weeks).
    #[schema(value_type = String, format = DateTime)]
    pub start: DateTime<Utc>,
    pub completed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Throughput {
    pub bucket: Bucket,
    #[schema(value_type = String, format = DateTime)]
    pub from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub to: DateTime<Utc>,
    /// Every bucket that overlaps the range, in order.
    pub buckets: Vec<BucketCount>,
}

fn in_range(t: DateTime<Utc>, q: &AnalyticsQuery) -> bool {
    t >= q.from && t < q.to
}

fn day_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.from_utc_datetime(&t.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default())
}

fn bucket_start(t: DateTime<Utc>, bucket: Bucket) -> DateTime<Utc> {
    let day = day_start(t);
    match bucket {
        Bucket::Day => day,
        Bucket::Week => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
    }
}

fn buckets_between(from: DateTime<Utc>, to: DateTime<Utc>, bucket: Bucket) -> Vec<DateTime<Utc>> {
    let step = match bucket {
        Bucket::Day => Duration::days(1),
        Bucket::Week => Duration::days(7),
    };
    let mut out = Vec::new();
    let mut at = bucket_start(from, bucket);
    while at < to {
        out.push(at);
        at += step;
    }
    out
}

fn per_day(times: impl Iterator<Item = DateTime<Utc>>, q: &AnalyticsQuery) -> Vec<DayCount> {
    let mut counts: BTreeMap<DateTime<Utc>, u64> = buckets_between(q.from, q.to, Bucket::Day)
        .into_iter()
        .map(|d| (d, 0))
        .collect();
    for t in times.filter(|t| in_range(*t, q)) {
        *counts.entry(day_start(t)).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(d, count)| DayCount {
            date: d.format("%Y-%m-%d").to_string(),
            count,
        })
        .collect()
}

pub fn summary(facts: &[TaskFacts], q: &AnalyticsQuery, now: DateTime<Utc>) -> Summary {
    let mut by_status: BTreeMap<String, u64> = TaskStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    let mut by_priority: BTreeMap<String, u64> = Priority::ALL
        .iter()
        .map(|p| (p.as_str().to_owned(), 0))
        .collect();
    let mut created_in_range = 0u64;
    let mut done_of_created = 0u64;
    let mut overdue = 0u64;
    for f in facts {
        *by_status.entry(f.status.as_str().to_owned()).or_default() += 1;
        *by_priority
            .entry(f.priority.as_str().to_owned())
            .or_default() += 1;
        if in_range(f.created_at.to_chrono(), q) {
            created_in_range += 1;
            if f.status == TaskStatus::Done {
                done_of_created += 1;
            }
        }
        if f.status.is_open() && f.due_at.is_some_and(|d| d.to_chrono() < now) {
            overdue += 1;
        }
    }
    Summary {
        from: q.from,
        to: q.to,
        by_status,
        by_priority,
        created_per_day: per_day(facts.iter().map(|f| f.created_at.to_chrono()), q),
        completed_per_day: per_day(
            facts
                .iter()
                .flat_map(|f| f.completions.iter().map(|c| c.to_chrono())),
            q,
        ),
        completion_rate: (created_in_range > 0)
            .then(|| done_of_created as f64 / created_in_range as f64),
        overdue,
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn durations(mut values: Vec<f64>) -> Durations {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Durations {
        count: n as u64,
        p50_seconds: percentile(&values, 50.0),
        p90_seconds: percentile(&values, 90.0),
        mean_seconds: (n > 0).then(|| values.iter().sum::<f64>() / n as f64),
    }
}

fn cycle_times<'a>(facts: impl Iterator<Item = &'a TaskFacts> + Clone) -> CycleTimes {
    CycleTimes {
        cycle: durations(facts.clone().filter_map(|f| f.cycle_seconds).collect()),
        work: durations(facts.filter_map(|f| f.work_seconds).collect()),
    }
}

pub fn cycle_time(facts: &[TaskFacts], q: &AnalyticsQuery) -> CycleTimeReport {
    let done: Vec<&TaskFacts> = facts
        .iter()
        .filter(|f| f.status == TaskStatus::Done && f.cycle_seconds.is_some())
        .filter(|f| {
            f.completions
                .last()
                .is_some_and(|c| in_range(c.to_chrono(), q))
        })
        .collect();
    let by_priority = Priority::ALL
        .iter()
        .map(|p| {
            (
                p.as_str().to_owned(),
                cycle_times(done.iter().copied().filter(|f| f.priority == *p)),
            )
        })
        .collect();
    CycleTimeReport {
        from: q.from,
        to: q.to,
        overall: cycle_times(done.iter().copied()),
        by_priority,
    }
}

pub fn throughput(facts: &[TaskFacts], q: &AnalyticsQuery) -> Throughput {
    let mut counts: BTreeMap<DateTime<Utc>, u64> = buckets_between(q.from, q.to, q.bucket)
        .into_iter()
        .map(|b| (b, 0))
        .collect();
    for c in facts.iter().flat_map(|f| f.completions.iter()) {
        let t = c.to_chrono();
        if in_range(t, q) {
            *counts.entry(bucket_start(t, q.bucket)).or_default() += 1;
        }
    }
    Throughput {
        bucket: q.bucket,
        from: q.from,
        to: q.to,
        buckets: counts
            .into_iter()
            .map(|(start, completed)| BucketCount { start, completed })
            .collect(),
    }
}

/// One assignee's figures (or the unassigned tasks').
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AssigneeFigures {
    /// `null` for the tasks assigned to nobody.
    pub user_id: Option<Uuid>,
    /// From the users view; `null` when unknown (and for the unassigned).
    pub display_name: Option<String>,
    /// Completions in the range of tasks assigned to this user now.
    pub completed: u64,
    /// Tasks assigned to this user now that are open (todo, in progress).
    pub open: u64,
    /// Cycle and work times of the tasks assigned to this user now that
    /// are done, their last completion in the range.
    pub times: CycleTimes,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AssigneeReport {
    #[schema(value_type = String, format = DateTime)]
    pub from: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub to: DateTime<Utc>,
    /// One entry per user assigned to at least one task of the scope, most
    /// completions first (ties by user id). A task with several assignees
    /// counts for each.
    pub assignees: Vec<AssigneeFigures>,
    /// The tasks assigned to nobody.
    pub unassigned: AssigneeFigures,
}

/// Per-assignee figures. Attribution is to the task's assignees *now*
/// (the facts keep the current set, not the set at each completion).
pub fn by_assignee(facts: &[TaskFacts], q: &AnalyticsQuery) -> AssigneeReport {
    let figures = |user_id: Option<Uuid>, of: &[&TaskFacts]| {
        let done: Vec<&TaskFacts> = of
            .iter()
            .copied()
            .filter(|f| f.status == TaskStatus::Done && f.cycle_seconds.is_some())
            .filter(|f| {
                f.completions
                    .last()
                    .is_some_and(|c| in_range(c.to_chrono(), q))
            })
            .collect();
        AssigneeFigures {
            user_id,
            display_name: None,
            completed: of
                .iter()
                .flat_map(|f| f.completions.iter())
                .filter(|c| in_range(c.to_chrono(), q))
                .count() as u64,
            open: of.iter().filter(|f| f.status.is_open()).count() as u64,
            times: cycle_times(done.iter().copied()),
        }
    };
    let mut per_user: BTreeMap<Uuid, Vec<&TaskFacts>> = BTreeMap::new();
    let mut nobody = Vec::new();
    for f in facts {
        let users: Vec<Uuid> = f
            .assignee_ids
            .iter()
            .filter_map(|a| Uuid::try_parse(a).ok())
            .collect();
        if users.is_empty() {
            nobody.push(f);
        }
        for u in users {
            per_user.entry(u).or_default().push(f);
        }
    }
    let mut assignees: Vec<AssigneeFigures> = per_user
        .iter()
        .map(|(u, of)| figures(Some(*u), of))
        .collect();
    assignees.sort_by(|a, b| {
        b.completed
            .cmp(&a.completed)
            .then(a.user_id.cmp(&b.user_id))
    });
    AssigneeReport {
        from: q.from,
        to: q.to,
        assignees,
        unassigned: figures(None, &nobody),
    }
}

// ----------------------------------------------------------------- handlers

/// The facts of the query's scope, after checking a project scope against
/// the caller's membership (the same 404 as a project that does not exist).
async fn scoped_facts(
    state: &AppState,
    user: &AuthUser,
    q: &AnalyticsQuery,
) -> Result<Vec<TaskFacts>, Problem> {
    if let Scope::Project(p) = q.scope {
        if store::members::role_in(&state.pool, p, user.id)
            .await?
            .is_none()
        {
            return Err(Problem::not_found("no project with this id"));
        }
    }
    Ok(store::analytics::facts(&state.db, q.scope).await?)
}

/// Counts by status and priority, created and completed per day, completion rate, overdue.
#[utoipa::path(
    get,
    path = "/analytics/summary",
    tag = "analytics",
    params(AnalyticsParams),
    responses(
        (status = 200, description = "The caller's figures for the range", body = Summary),
        (status = 400, description = "Unknown parameter or bad value", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The views' database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 403, description = "`owner_id` or `all` given by a non-admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`project_id` names a project the caller is not a member of, or none", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_summary(
    user: AuthUser,
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Response, Problem> {
    let now = Utc::now();
    let q = AnalyticsQuery::parse(&query_pairs(&uri)?, &user, now, false)?;
    let facts = scoped_facts(&state, &user, &q).await?;
    Ok(axum::Json(summary(&facts, &q, now)).into_response())
}

/// Cycle time (created → done) and work time (in progress → done): p50, p90, mean, per priority.
#[utoipa::path(
    get,
    path = "/analytics/cycle-time",
    tag = "analytics",
    params(AnalyticsParams),
    responses(
        (status = 200, description = "Cycle and work times of tasks completed in the range", body = CycleTimeReport),
        (status = 400, description = "Unknown parameter or bad value", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The views' database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 403, description = "`owner_id` or `all` given by a non-admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`project_id` names a project the caller is not a member of, or none", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_cycle_time(
    user: AuthUser,
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Response, Problem> {
    let q = AnalyticsQuery::parse(&query_pairs(&uri)?, &user, Utc::now(), false)?;
    let facts = scoped_facts(&state, &user, &q).await?;
    Ok(axum::Json(cycle_time(&facts, &q)).into_response())
}

/// Tasks completed per day or ISO week.
#[utoipa::path(
    get,
    path = "/analytics/throughput",
    tag = "analytics",
    params(ThroughputParams),
    responses(
        (status = 200, description = "Completions per bucket", body = Throughput),
        (status = 400, description = "Unknown parameter or bad value", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The views' database is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 403, description = "`owner_id` or `all` given by a non-admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`project_id` names a project the caller is not a member of, or none", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_throughput(
    user: AuthUser,
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Response, Problem> {
    let q = AnalyticsQuery::parse(&query_pairs(&uri)?, &user, Utc::now(), true)?;
    let facts = scoped_facts(&state, &user, &q).await?;
    Ok(axum::Json(throughput(&facts, &q)).into_response())
}

/// Per assignee: completions in the range, open tasks now, cycle and work
/// times; and the same for the unassigned tasks.
#[utoipa::path(
    get,
    path = "/analytics/assignees",
    tag = "analytics",
    params(AnalyticsParams),
    responses(
        (status = 200, description = "Figures per assignee (the task's assignees now; a task with several counts for each)", body = AssigneeReport),
        (status = 400, description = "Unknown parameter or bad value, or `all=true` (per-assignee figures are per project)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token, or a deactivated account", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A store is unreachable", body = Problem, content_type = "application/problem+json", headers(
            ("Retry-After" = u64, description = "Seconds to wait before retrying"),
        )),
        (status = 403, description = "`owner_id` or `all` given by a non-admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`project_id` names a project the caller is not a member of, or none", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_assignees(
    user: AuthUser,
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Response, Problem> {
    let q = AnalyticsQuery::parse(&query_pairs(&uri)?, &user, Utc::now(), false)?;
    // Per assignee is per project (or one's own tasks): across every
    // project, the report and its look-up of names would grow with the
    // number of accounts.
    if q.scope == Scope::All {
        return Err(crate::params::invalid(vec![service::FieldError::new(
            "all",
            "per-assignee figures are per project: give `project_id` instead",
        )]));
    }
    let facts = scoped_facts(&state, &user, &q).await?;
    let mut report = by_assignee(&facts, &q);
    let ids: Vec<Uuid> = report.assignees.iter().filter_map(|a| a.user_id).collect();
    let users = store::users::by_ids(&state.db, &ids).await?;
    for a in &mut report.assignees {
        a.display_name = a
            .user_id
            .and_then(|u| users.get(&u))
            .map(|u| u.display_name.clone());
    }
    Ok(axum::Json(report).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 50.0), Some(5.0));
        assert_eq!(percentile(&v, 90.0), Some(9.0));
        assert_eq!(percentile(&[7.0], 90.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-11-25 is a Wednesday.
        let t = Utc
            .with_ymd_and_hms(2026, 11, 25, 15, 0, 0)
            .single()
            .expect("time");
        assert_eq!(
            bucket_start(t, Bucket::Week),
            Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
                .single()
                .expect("monday")
        );
        assert_eq!(
            bucket_start(t, Bucket::Day),
            Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0)
                .single()
                .expect("day")
        );
    }

    #[test]
    fn parameters_are_parsed_and_checked() {
        let user = AuthUser {
            id: Uuid::new_v4(),
            email: "a@b.c".into(),
            role: events::Role::User,
        };
        let now = Utc
            .with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
            .single()
            .expect("now");
        let p = |pairs: &[(&str, &str)]| {
            let owned: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            AnalyticsQuery::parse(&owned, &user, now, true)
        };
        let q = p(&[]).expect("defaults");
        assert_eq!((q.to, q.to - q.from), (now, Duration::days(30)));
        let q = p(&[("from", "2026-11-01"), ("to", "2026-11-02")]).expect("dates");
        assert_eq!(
            q.to - q.from,
            Duration::days(2),
            "a date `to` includes its day"
        );
        for bad in [
            vec![("from", "yesterday")],
            vec![("bucket", "month")],
            vec![("color", "red")],
            vec![("from", "2026-11-02"), ("to", "2026-11-01")],
            vec![("from", "2020-01-01"), ("to", "2026-01-01")],
        ] {
            assert_eq!(p(&bad).expect_err("rejected").status, 400, "{bad:?}");
        }
        assert_eq!(p(&[("all", "true")]).expect_err("not admin").status, 403);
        assert_eq!(
            p(&[("owner_id", &Uuid::new_v4().to_string())])
                .expect_err("not admin")
                .status,
            403
        );
    }
}
