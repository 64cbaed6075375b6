//! One resource, one shape: what command-api answers a write with and
//! what query-api serves for the same task at the same version are the
//! same JSON, field by field, and both OpenAPI documents describe it with
//! the same schema.

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Map, Value};
use tests::{http, Deployment, Running};
use uuid::Uuid;

struct Sides {
    client: Client,
    token: String,
    command: Running,
    query: Running,
    _projector: Running,
}

impl Sides {
    async fn start() -> Self {
        let dep = Deployment::fresh().await;
        let command = dep
            .spawn_command_api_with(dep.command_api_config("http://127.0.0.1:9/unused-jwks"))
            .await;
        let projector = dep.spawn_projector().await;
        let query = dep.spawn_query_api_standalone().await;
        Sides {
            client: http(),
            token: dep.token_for(Uuid::now_v7(), events::Role::User),
            command,
            query,
            _projector: projector,
        }
    }

    /// A write's answer (status checked) and its consistency token.
    async fn write(
        &self,
        method: Method,
        path: &str,
        body: Value,
        expect: StatusCode,
    ) -> (Value, String) {
        let res = self
            .client
            .request(method.clone(), self.command.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("command-api answers");
        let status = res.status();
        let token = res
            .headers()
            .get("x-consistency-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let answer: Value = res.json().await.expect("a JSON body");
        assert_eq!(status, expect, "{method} {path}: {answer}");
        (answer, token)
    }

    /// `GET /tasks/{id}` once the view has caught up with `token`.
    async fn read(&self, id: &str, token: &str) -> Value {
        let res = self
            .client
            .get(self.query.url(&format!("/tasks/{id}")))
            .bearer_auth(&self.token)
            .header("x-consistency-token", token)
            .send()
            .await
            .expect("query-api answers");
        let status = res.status();
        let body: Value = res.json().await.expect("a JSON body");
        assert_eq!(status, StatusCode::OK, "GET /tasks/{id}: {body}");
        body
    }

    async fn openapi(&self, side: &Running) -> Value {
        self.client
            .get(side.url("/openapi.json"))
            .send()
            .await
            .expect("the document is served")
            .json()
            .await
            .expect("the document is JSON")
    }
}

/// Every key of each is a key of the other, with the same value.
fn assert_same_task(what: &str, written: &Value, read: &Value) {
    let (Some(w), Some(r)) = (written.as_object(), read.as_object()) else {
        panic!("{what}: not two objects:\nwrite answered {written}\nread served {read}");
    };
    let keys = |m: &Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(w),
        keys(r),
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

#[tokio::test]
async fn a_write_answers_the_task_as_the_read_side_serves_it() {
    let sides = Sides::start().await;

    // Every field set; a due date finer than a millisecond, which the views
    // keep to the millisecond.
    let (created, token) = sides
        .write(
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
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["due_at"], "2030-01-02T03:04:05.123Z", "{created}");
    assert_same_task("POST /tasks", &created, &sides.read(&id, &token).await);

    let (patched, token) = sides
        .write(
            Method::PATCH,
            &format!("/tasks/{id}"),
            json!({"title": "Write the final report", "tags": ["work", "q3", "final"]}),
            StatusCode::OK,
        )
        .await;
    assert_same_task(
        "PATCH /tasks/{id}",
        &patched,
        &sides.read(&id, &token).await,
    );

    let status = format!("/tasks/{id}/status");
    let (started, token) = sides
        .write(
            Method::POST,
            &status,
            json!({"status": "in_progress"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(started["completed_at"], Value::Null, "{started}");
    assert_same_task(
        "POST /tasks/{id}/status in_progress",
        &started,
        &sides.read(&id, &token).await,
    );

    let (done, token) = sides
        .write(
            Method::POST,
            &status,
            json!({"status": "done"}),
            StatusCode::OK,
        )
        .await;
    let read = sides.read(&id, &token).await;
    assert_same_task("POST /tasks/{id}/status done", &done, &read);
    let fields = done.as_object().expect("an object");
    for field in [
        "id",
        "owner_id",
        "title",
        "description",
        "status",
        "priority",
        "due_at",
        "tags",
        "created_at",
        "updated_at",
        "completed_at",
        "version",
    ] {
        assert!(
            fields.get(field).is_some_and(|v| !v.is_null()),
            "`{field}` is set on a completed task with every field given: {done}"
        );
    }
    assert_eq!(fields.len(), 12, "{done}");
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
    let commands = sides.openapi(&sides.command).await;
    let queries = sides.openapi(&sides.query).await;

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

    let properties = read["properties"].as_object().expect("properties");
    let mut names: Vec<&str> = properties.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "completed_at",
            "created_at",
            "description",
            "due_at",
            "id",
            "owner_id",
            "priority",
            "status",
            "tags",
            "title",
            "updated_at",
            "version"
        ]
    );
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
