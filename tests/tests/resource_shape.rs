//! One resource, one shape: what command-api answers a write with and
//! what query-api serves for the same task at the same version are the
//! same JSON, field by field, and both OpenAPI documents describe it with
//! the same schema.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tests::clients::{Api, CommandClient, QueryClient, Reply};
use tests::{Deployment, Running};
use uuid::Uuid;

struct Sides {
    commands: CommandClient,
    queries: QueryClient,
    _command: Running,
    _query: Running,
    _projector: Running,
}

impl Sides {
    async fn start() -> Self {
        let dep = Deployment::fresh().await;
        let command = dep
            .spawn_command_api_with(dep.command_api_config(tests::NO_JWKS))
            .await;
        let projector = dep.spawn_projector().await;
        let query = dep.spawn_query_api_standalone().await;
        let token = dep.token_for(Uuid::now_v7(), events::Role::User);
        Sides {
            commands: CommandClient::new(&command.url(""), &token),
            queries: QueryClient::new(&query.url(""), &token),
            _command: command,
            _query: query,
            _projector: projector,
        }
    }

    /// Sends a write, reads the task back from query-api at the version
    /// written (its consistency token), asserts the two are the same JSON,
    /// and returns the write's answer.
    async fn write_then_read(
        &self,
        method: Method,
        path: &str,
        body: Value,
        expect: StatusCode,
    ) -> Value {
        let what = format!("{method} {path} {body}");
        let written: Reply = self.commands.request(method, path).json(&body).await;
        let token = written.consistency_token().unwrap_or_default().to_owned();
        let written = written.expect(expect, &what);
        let id = written["id"].as_str().expect("an id");
        let read = self
            .queries
            .get_task(id)
            .consistency_token(&token)
            .await
            .expect(StatusCode::OK, &format!("GET /tasks/{id}"));
        assert_same_task(&what, &written, &read);
        written
    }
}

/// A service's OpenAPI document (served without a token).
async fn openapi(api: &Api) -> Value {
    api.request(Method::GET, "/openapi.json")
        .token(None)
        .await
        .expect(StatusCode::OK, "the OpenAPI document")
}

/// Every key of each is a key of the other, with the same value.
fn assert_same_task(what: &str, written: &Value, read: &Value) {
    let (Some(w), Some(r)) = (written.as_object(), read.as_object()) else {
        panic!("{what}: not two objects:\nwrite answered {written}\nread served {read}");
    };
    assert_eq!(
        keys(written),
        keys(read),
        "{what}: the write answered other fields than the read serves"
    );
    for (field, value) in w {
        assert_eq!(
            Some(value),
            r.get(field),
            "{what}: `{field}` differs (write answered, read served)"
        );
    }
}

/// An object's keys, sorted (JSON objects have no order).
fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    keys
}

/// The task resource's fields, sorted.
const FIELDS: [&str; 15] = [
    "assignee_ids",
    "attachments",
    "completed_at",
    "created_at",
    "description",
    "due_at",
    "id",
    "owner_id",
    "priority",
    "project_id",
    "status",
    "tags",
    "title",
    "updated_at",
    "version",
];

#[tokio::test]
async fn a_write_answers_the_task_as_the_read_side_serves_it() {
    let sides = Sides::start().await;

    // Every field set; a due date finer than a millisecond, which the views
    // keep to the millisecond.
    let created = sides
        .write_then_read(
            Method::POST,
            "/tasks",
            json!({
                "title": "Write the report",
                "description": "Figures for the third quarter",
                "priority": "high",
                "due_at": "2030-01-02T03:04:05.123456Z",
                "tags": ["work", "q3"]
            }),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["due_at"], "2030-01-02T03:04:05.123Z", "{created}");
    let id = created["id"].as_str().expect("an id");

    let edit = json!({"title": "Write the final report", "tags": ["work", "q3", "final"]});
    let path = format!("/tasks/{id}");
    sides
        .write_then_read(Method::PATCH, &path, edit, StatusCode::OK)
        .await;

    let path = format!("/tasks/{id}/status");
    let started = json!({"status": "in_progress"});
    let started = sides
        .write_then_read(Method::POST, &path, started, StatusCode::OK)
        .await;
    assert_eq!(started["completed_at"], Value::Null, "{started}");

    let done = json!({"status": "done"});
    let done = sides
        .write_then_read(Method::POST, &path, done, StatusCode::OK)
        .await;
    assert_eq!(keys(&done), FIELDS, "{done}");
    // A personal task: `project_id` is its one null (projects' tasks are
    // compared in projects_reads).
    for field in FIELDS.into_iter().filter(|f| *f != "project_id") {
        assert!(
            !done[field].is_null(),
            "`{field}` is set on a completed task with every field given: {done}"
        );
    }
    assert_eq!(done["status"], "done");
    assert_eq!(done["completed_at"], done["updated_at"], "{done}");
    assert_eq!(
        done["version"], 4,
        "created, updated, two status changes: {done}"
    );
}

/// The schema a response of `method path` with `status` points to.
fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: &str) -> &'a Value {
    let schema =
        &doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"];
    let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    else {
        panic!("{method} {path} {status} names no schema: {schema}");
    };
    &doc["components"]["schemas"][name]
}

#[tokio::test]
async fn both_documents_describe_the_task_with_one_schema() {
    let sides = Sides::start().await;
    let commands = openapi(sides.commands.api()).await;
    let queries = openapi(sides.queries.api()).await;

    let read = response_schema(&queries, "/tasks/{id}", "get", "200");
    for (path, method, status) in [
        ("/tasks", "post", "201"),
        ("/tasks/{id}", "patch", "200"),
        ("/tasks/{id}/status", "post", "200"),
    ] {
        let written = response_schema(&commands, path, method, status);
        assert_eq!(
            written, read,
            "{method} {path} {status} describes the task otherwise than GET /tasks/{{id}}"
        );
    }

    let properties = &read["properties"];
    assert_eq!(keys(properties), FIELDS, "{read}");
    for instant in ["created_at", "updated_at", "due_at", "completed_at"] {
        assert_eq!(
            properties[instant]["format"], "date-time",
            "{instant}: {read}"
        );
    }
    // The enums are named schemas, and each document defines them alike.
    for name in ["TaskStatus", "Priority"] {
        assert_eq!(
            commands["components"]["schemas"][name], queries["components"]["schemas"][name],
            "{name}"
        );
    }
}
