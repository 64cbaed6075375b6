//! Projects end to end, with every service running and real accounts: a
//! team shares a project, membership decides every answer on both sides
//! the moment a change is answered, a deleted project's tasks vanish from
//! every read, and rebuilding the project and task views from the log
//! gives the same answers.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tests::clients::{email, id_of, AuthClient, CommandClient, QueryClient, Reply};
use tests::{servers, System};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// One account: its id, and clients that act as it.
struct Person {
    id: Uuid,
    email: String,
    commands: CommandClient,
    queries: QueryClient,
}

struct Team {
    sys: System,
    ann: Person,
    bob: Person,
    cat: Person,
    dan: Person,
}

impl Team {
    async fn start() -> Self {
        let sys = System::start().await;
        let auth = AuthClient::new(&sys.auth.url(""));
        let mut people = Vec::new();
        for name in ["ann-", "bob-", "cat-", "dan-"] {
            let address = email(name);
            let id = id_of(&auth.registered(&address).await);
            let token = auth.access(&address).await;
            people.push(Person {
                id,
                email: address,
                commands: CommandClient::new(&sys.command.url(""), &token),
                queries: QueryClient::new(&sys.query.url(""), &token),
            });
        }
        let dan = people.pop().unwrap();
        let cat = people.pop().unwrap();
        let bob = people.pop().unwrap();
        let ann = people.pop().unwrap();
        Team {
            sys,
            ann,
            bob,
            cat,
            dan,
        }
    }
}

async fn write(who: &Person, method: Method, path: &str, body: Option<Value>) -> Reply {
    let call = who.commands.request(method, path);
    match body {
        Some(b) => call.json(&b).await,
        None => call.await,
    }
}

/// `POST /projects` by `owner`; returns the project id.
async fn project(owner: &Person, name: &str) -> Uuid {
    let r = write(
        owner,
        Method::POST,
        "/projects",
        Some(json!({ "name": name })),
    )
    .await;
    id_of(&r.expect(StatusCode::CREATED, "create a project"))
}

async fn add(by: &Person, project: Uuid, who: &Person, role: &str) -> Reply {
    write(
        by,
        Method::POST,
        &format!("/projects/{project}/members"),
        Some(json!({ "email": who.email, "role": role })),
    )
    .await
}

/// Creates a task in `project` as `by`; returns its id and consistency token.
async fn task_in(by: &Person, project: Uuid, title: &str, assignees: &[Uuid]) -> (Uuid, String) {
    let r = write(
        by,
        Method::POST,
        "/tasks",
        Some(json!({ "title": title, "project_id": project, "assignee_ids": assignees })),
    )
    .await;
    let token = r.consistency_token().expect("a token").to_owned();
    (
        id_of(&r.expect(StatusCode::CREATED, "create a task")),
        token,
    )
}

/// The ids `GET /tasks?<query>` lists for `who` (one page of 200).
async fn listed(who: &Person, query: &str, token: Option<&str>) -> Vec<Uuid> {
    let mut call = who.queries.list_tasks(query);
    if let Some(t) = token {
        call = call.consistency_token(t);
    }
    let page = call.await.expect(StatusCode::OK, "GET /tasks");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(id_of)
        .collect()
}

async fn status_of(who: &Person, path: &str) -> StatusCode {
    who.queries.get(path).await.status
}

/// Every read endpoint about `project` and `task`, as `who` sees it.
async fn reads_of(who: &Person, project: Uuid, task: Uuid) -> Vec<(String, StatusCode)> {
    let mut out = Vec::new();
    for path in [
        format!("/projects/{project}"),
        format!("/projects/{project}/members"),
        format!("/tasks/{task}"),
        format!("/tasks/{task}/history"),
        format!("/analytics/summary?project_id={project}"),
    ] {
        let status = status_of(who, &path).await;
        out.push((path, status));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_team_shares_a_project_and_access_follows_membership_at_once_on_both_sides() {
    let t = Team::start().await;
    let p = project(&t.ann, "Launch").await;
    add(&t.ann, p, &t.bob, "member")
        .await
        .expect(StatusCode::CREATED, "add bob");
    let added = add(&t.ann, p, &t.cat, "viewer").await;
    let cat_added = added.consistency_token().expect("token").to_owned();
    added.expect(StatusCode::CREATED, "add cat");

    // Bob creates a task assigned to himself and ann; everyone in the
    // project sees it, dan (no member) does not.
    let (task, token) = task_in(&t.bob, p, "Ship it", &[t.bob.id, t.ann.id]).await;
    for who in [&t.ann, &t.bob, &t.cat] {
        assert!(listed(who, "limit=200", Some(&token)).await.contains(&task));
    }
    assert!(!listed(&t.dan, "limit=200", None).await.contains(&task));
    let missing = Uuid::now_v7();
    for (path, other) in [
        (format!("/tasks/{task}"), format!("/tasks/{missing}")),
        (format!("/projects/{p}"), format!("/projects/{missing}")),
    ] {
        let hidden = t.dan.queries.get(&path).await;
        let absent = t.dan.queries.get(&other).await;
        assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            hidden.raw, absent.raw,
            "{path}: a non-member's 404 is a missing id's"
        );
    }
    // The new viewer sees the project once their add is answered.
    let seen = t
        .cat
        .queries
        .get(&format!("/projects/{p}"))
        .consistency_token(&cat_added)
        .await
        .expect(StatusCode::OK, "cat reads the project");
    assert_eq!(seen["my_role"], "viewer");
    // A viewer reads but cannot write.
    let refused = write(
        &t.cat,
        Method::PATCH,
        &format!("/tasks/{task}"),
        Some(json!({ "title": "mine now" })),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused:?}");
    // Filters: by project, by assignee.
    assert_eq!(
        listed(&t.ann, &format!("project_id={p}"), None).await,
        vec![task]
    );
    assert_eq!(listed(&t.ann, "assignee=me", None).await, vec![task]);
    assert!(listed(&t.cat, "assignee=me", None).await.is_empty());

    // Ann removes bob. Once the answer is in, bob gets 404 everywhere and
    // his assignment is gone (with an event), though the views may lag.
    let removed = write(
        &t.ann,
        Method::DELETE,
        &format!("/projects/{p}/members/{}", t.bob.id),
        None,
    )
    .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{removed:?}");
    for (path, status) in reads_of(&t.bob, p, task).await {
        assert_eq!(status, StatusCode::NOT_FOUND, "bob after removal: {path}");
    }
    assert!(!listed(&t.bob, "limit=200", None).await.contains(&task));
    assert!(listed(&t.bob, &format!("project_id={p}"), None)
        .await
        .is_empty());
    // Nor does the token of his own write tell him anything any more.
    let stale = t
        .bob
        .queries
        .list_tasks("limit=1")
        .consistency_token(&token)
        .await;
    assert_eq!(
        stale.status,
        StatusCode::BAD_REQUEST,
        "a removed member's token of a task he created: {stale:?}"
    );
    let late = write(
        &t.bob,
        Method::POST,
        &format!("/tasks/{task}/status"),
        Some(json!({ "status": "in_progress" })),
    )
    .await;
    assert_eq!(late.status, StatusCode::NOT_FOUND, "{late:?}");
    let assignees = t
        .ann
        .queries
        .eventually("bob unassigned", WAIT, &format!("/tasks/{task}"), |r| {
            let ids = r.body["assignee_ids"].as_array()?.clone();
            (!ids.contains(&json!(t.bob.id))).then_some(ids)
        })
        .await;
    assert_eq!(assignees, vec![json!(t.ann.id)]);
    let history = t
        .ann
        .queries
        .get_json(&format!("/tasks/{task}/history"))
        .await;
    let types: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types, ["task.created", "task.assignees_changed"]);

    // Cat, promoted to member, may now write; the role change applies at once.
    write(
        &t.ann,
        Method::PATCH,
        &format!("/projects/{p}/members/{}", t.cat.id),
        Some(json!({ "role": "member" })),
    )
    .await
    .expect(StatusCode::OK, "promote cat");
    write(
        &t.cat,
        Method::PATCH,
        &format!("/tasks/{task}"),
        Some(json!({ "title": "Ship it today" })),
    )
    .await
    .expect(StatusCode::OK, "cat edits as a member");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_project_takes_its_tasks_out_of_every_read_at_once() {
    let t = Team::start().await;
    let p = project(&t.ann, "Short-lived").await;
    add(&t.ann, p, &t.bob, "admin")
        .await
        .expect(StatusCode::CREATED, "add bob");
    let (task, token) = task_in(&t.bob, p, "Doomed", &[]).await;
    let personal = write(
        &t.ann,
        Method::POST,
        "/tasks",
        Some(json!({ "title": "mine" })),
    )
    .await;
    let personal = id_of(&personal.expect(StatusCode::CREATED, "a personal task"));
    assert!(listed(&t.ann, "limit=200", Some(&token))
        .await
        .contains(&task));

    // An admin may not delete the project; the owner may.
    let by_admin = write(&t.bob, Method::DELETE, &format!("/projects/{p}"), None).await;
    assert_eq!(by_admin.status, StatusCode::FORBIDDEN, "{by_admin:?}");
    let deleted = write(&t.ann, Method::DELETE, &format!("/projects/{p}"), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    for who in [&t.ann, &t.bob] {
        for (path, status) in reads_of(who, p, task).await {
            assert_eq!(status, StatusCode::NOT_FOUND, "after the delete: {path}");
        }
        assert!(!listed(who, "limit=200", None).await.contains(&task));
    }
    assert_eq!(listed(&t.ann, "limit=200", None).await, vec![personal]);
    let projects = t.ann.queries.get_json("/projects").await;
    assert_eq!(projects["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuilding_the_project_and_task_views_gives_the_same_answers() {
    use projector::rebuild::{rebuild, RebuildOptions, Target};
    let t = Team::start().await;
    let mut tokens = Vec::new();
    let mut projects = Vec::new();
    for n in 0..3 {
        let p = project(&t.ann, &format!("project {n}")).await;
        add(&t.ann, p, &t.bob, "member")
            .await
            .expect(StatusCode::CREATED, "add bob");
        if n > 0 {
            add(&t.ann, p, &t.cat, "viewer")
                .await
                .expect(StatusCode::CREATED, "add cat");
        }
        for i in 0..4 {
            let (_, token) = task_in(&t.bob, p, &format!("task {n}.{i}"), &[t.bob.id]).await;
            tokens.push(token);
        }
        projects.push(p);
    }
    write(
        &t.ann,
        Method::POST,
        &format!("/projects/{}/archive", projects[2]),
        None,
    )
    .await
    .expect(StatusCode::OK, "archive");
    let moved = write(
        &t.ann,
        Method::POST,
        "/tasks",
        Some(json!({ "title": "to be moved", "project_id": projects[0] })),
    )
    .await;
    let moved = id_of(&moved.expect(StatusCode::CREATED, "create"));
    let r = write(
        &t.ann,
        Method::POST,
        &format!("/tasks/{moved}/move"),
        Some(json!({ "project_id": projects[1] })),
    )
    .await;
    tokens.push(r.consistency_token().expect("token").to_owned());
    r.expect(StatusCode::OK, "move");
    for token in &tokens {
        t.ann.queries.wait_visible(token, WAIT).await;
    }

    async fn answers(t: &Team, projects: &[Uuid]) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for who in [&t.ann, &t.bob, &t.cat] {
            for path in [
                "/projects?limit=200".to_owned(),
                "/tasks?limit=200".to_owned(),
            ]
            .into_iter()
            .chain(projects.iter().flat_map(|p| {
                [
                    format!("/projects/{p}"),
                    format!("/projects/{p}/members"),
                    format!("/tasks?project_id={p}&sort=priority"),
                ]
            })) {
                let r = who.queries.get(&path).await;
                out.push((format!("{} {path} {}", who.email, r.status), r.body));
            }
        }
        out
    }
    let before = answers(&t, &projects).await;
    let db = read_model::mongo::connect(&servers().mongodb_url, &t.sys.deployment.mongodb_database)
        .await
        .expect("mongo");
    for target in [Target::Projects, Target::Tasks] {
        let options = RebuildOptions {
            brokers: servers().kafka_brokers.clone(),
            topics: events::topics::Topics::with_prefix(t.sys.deployment.topic_prefix.clone()),
            target,
            dry_run: false,
            progress: false,
            batch_size: 7,
        };
        let report = rebuild(&db, &options, tokio_util::sync::CancellationToken::new())
            .await
            .expect("rebuild");
        assert!(report.swapped, "{target:?} swapped in");
        assert_eq!(report.counts.poison, 0);
    }
    let after = answers(&t, &projects).await;
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "the same answer after the rebuild");
    }
}
