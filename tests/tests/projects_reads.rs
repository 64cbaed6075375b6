//! The read side of projects against real servers: streams are written
//! into the event store with the `project_members` rows command-api keeps
//! in the same transaction (`tests::project_queries::Ledger`), relayed to
//! Kafka, folded by the real projector and read through query-api.
//!
//! Membership decides every read at once: a removed member or a deleted
//! project is refused while the views still hold the old data (the relay
//! is stopped to keep them so), and a refusal is the same 404 as a missing
//! id, byte for byte.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{Duration as TimeDelta, DurationRound, Utc};
use events::{Priority, ProjectArchived, ProjectEvent, ProjectRole, Role, TaskStatus};
use mongodb::bson::doc;
use read_model::views::{ProjectView, PROJECT_VIEWS};
use reqwest::StatusCode;
use serde_json::Value;
use tests::clients::{id_of, QueryClient, Reply};
use tests::project_queries::{projected, Ledger, ProjectQueries, Relay};
use tests::{servers, Deployment, Running};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// One deployment: the ledger and its relay, the projector, query-api,
/// and the views' database.
struct World {
    d: Deployment,
    ledger: Ledger,
    relay: Option<Relay>,
    _projector: Running,
    query: Running,
    db: mongodb::Database,
}

impl World {
    async fn start() -> World {
        let d = Deployment::fresh().await;
        let ledger = Ledger::open(&d).await;
        let relay = Some(ledger.relay(&d).await);
        let projector = d.spawn_projector().await;
        let query = d.spawn_query_api_standalone().await;
        let db = read_model::mongo::connect(&servers().mongodb_url, &d.mongodb_database)
            .await
            .expect("mongo");
        World {
            d,
            ledger,
            relay,
            _projector: projector,
            query,
            db,
        }
    }

    /// A registered user (a `user.registered` in the log) and their client.
    async fn person(&self, name: &str) -> (Uuid, QueryClient) {
        let id = Uuid::now_v7();
        let email = format!("{name}-{}@example.test", id.simple());
        let token = self.ledger.user(id, &email, name).await;
        self.settle(&token).await;
        (id, self.client(id))
    }

    fn client(&self, id: Uuid) -> QueryClient {
        QueryClient::new(&self.query.url(""), &self.d.token_for(id, Role::User))
    }

    async fn settle(&self, token: &str) {
        projected(&self.db, token, WAIT).await;
    }
}

fn ids(page: &Value) -> Vec<Uuid> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {page}"))
        .iter()
        .map(id_of)
        .collect()
}

fn set(v: impl IntoIterator<Item = Uuid>) -> BTreeSet<Uuid> {
    v.into_iter().collect()
}

/// The ids of every page of `GET /tasks?query`, following the cursor.
async fn all_pages(who: &QueryClient, query: &str) -> Vec<Uuid> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let q = match &cursor {
            Some(c) => format!("{query}&cursor={c}"),
            None => query.to_owned(),
        };
        let page = who
            .list_tasks(&q)
            .await
            .expect(StatusCode::OK, &format!("GET /tasks?{q}"));
        out.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("more than 100 pages of {query}");
}

async fn listed(who: &QueryClient, query: &str) -> BTreeSet<Uuid> {
    set(all_pages(who, query).await)
}

/// A refusal and a missing id answer alike: status, content type, body bytes.
fn same_404(what: &str, refused: &Reply, missing: &Reply) {
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{what}: {refused:?}");
    assert_eq!(
        missing.status,
        StatusCode::NOT_FOUND,
        "{what} (missing): {missing:?}"
    );
    assert_eq!(
        refused.content_type(),
        missing.content_type(),
        "{what}: content type"
    );
    assert_eq!(
        refused.raw, missing.raw,
        "{what}: {refused:?} vs {missing:?}"
    );
}

/// Every read about `project` and `task` by `who` is the 404 a missing id
/// gets.
async fn refused_everywhere(who: &QueryClient, project: Uuid, task: Uuid) {
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    for (refused, missing) in [
        (format!("/projects/{project}"), format!("/projects/{p}")),
        (
            format!("/projects/{project}/members"),
            format!("/projects/{p}/members"),
        ),
        (format!("/tasks/{task}"), format!("/tasks/{t}")),
        (
            format!("/tasks/{task}/history"),
            format!("/tasks/{t}/history"),
        ),
        (
            format!("/analytics/summary?project_id={project}"),
            format!("/analytics/summary?project_id={p}"),
        ),
        (
            format!("/analytics/cycle-time?project_id={project}"),
            format!("/analytics/cycle-time?project_id={p}"),
        ),
        (
            format!("/analytics/throughput?project_id={project}"),
            format!("/analytics/throughput?project_id={p}"),
        ),
        (
            format!("/analytics/assignees?project_id={project}"),
            format!("/analytics/assignees?project_id={p}"),
        ),
    ] {
        same_404(&refused, &who.get(&refused).await, &who.get(&missing).await);
    }
    // Lists: the project's tasks are nowhere, even when asked for by id.
    assert!(
        !listed(who, "limit=200").await.contains(&task),
        "listed after refusal"
    );
    assert_eq!(
        listed(who, &format!("project_id={project}")).await,
        BTreeSet::new()
    );
    assert!(!ids(&who
        .list_projects("")
        .await
        .expect(StatusCode::OK, "projects"))
    .contains(&project));
}

#[tokio::test(flavor = "multi_thread")]
async fn membership_decides_every_read_and_a_removal_or_delete_applies_at_once() {
    let mut w = World::start().await;
    let (ann, ann_q) = w.person("Ann").await;
    let (bob, bob_q) = w.person("Bob").await;
    let (cat, cat_q) = w.person("Cat").await;
    let (_, eve_q) = w.person("Eve").await;

    let (p, _) = w.ledger.project(ann, "Launch").await;
    w.ledger.add_member(p, ann, bob, ProjectRole::Member).await;
    let p_token = w.ledger.add_member(p, ann, cat, ProjectRole::Viewer).await;
    let (a1, _) = w.ledger.task(ann, None, &[], "ann's own").await;
    let (b1, _) = w.ledger.task(bob, None, &[], "bob's own").await;
    let (t1, _) = w.ledger.task(ann, Some(p), &[bob], "t1").await;
    let (t2, _) = w.ledger.task(bob, Some(p), &[], "t2").await;
    let (t3, _) = w.ledger.task(ann, Some(p), &[ann, bob], "t3").await;
    let t3_token = w
        .ledger
        .status_at(t3, bob, TaskStatus::Todo, TaskStatus::Done, Utc::now())
        .await;
    // The tasks are projected before the project: until then the project's
    // tasks are still decided by the membership rows.
    for t in [&t3_token, &p_token] {
        w.settle(t).await;
    }
    for (task, _) in [(a1, 0), (b1, 0), (t1, 0), (t2, 0)] {
        w.settle(&format!("{}.1", task.simple())).await;
    }

    // Lists: personal tasks plus the tasks of every project one belongs to.
    let project_tasks = set([t1, t2, t3]);
    let with = |extra: Uuid| {
        let mut s = project_tasks.clone();
        s.insert(extra);
        s
    };
    assert_eq!(listed(&ann_q, "").await, with(a1));
    assert_eq!(listed(&bob_q, "").await, with(b1));
    assert_eq!(listed(&cat_q, "").await, project_tasks);
    assert_eq!(listed(&eve_q, "").await, BTreeSet::new());

    // Filters.
    assert_eq!(listed(&bob_q, "assignee=me").await, set([t1, t3]));
    assert_eq!(listed(&bob_q, "assignee=none").await, set([b1, t2]));
    assert_eq!(listed(&bob_q, &format!("assignee={ann}")).await, set([t3]));
    assert_eq!(
        listed(&bob_q, &format!("project_id={p}")).await,
        project_tasks
    );
    assert_eq!(
        listed(&bob_q, &format!("project_id={p}&assignee=me&status=done")).await,
        set([t3])
    );
    let unknown = Uuid::now_v7();
    assert_eq!(
        listed(&bob_q, &format!("project_id={unknown}")).await,
        BTreeSet::new()
    );
    assert_eq!(
        listed(&bob_q, &format!("project_id={unknown},{p}")).await,
        project_tasks
    );
    assert_eq!(
        listed(&eve_q, &format!("project_id={p}")).await,
        BTreeSet::new()
    );
    assert_eq!(
        listed(&ann_q, &format!("owner_id={ann}")).await,
        set([a1, t1, t3])
    );
    let r = bob_q.list_tasks("assignee=someone").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.pointers(), ["assignee"]);
    let many: Vec<String> = (0..21).map(|_| Uuid::now_v7().to_string()).collect();
    let r = bob_q
        .list_tasks(&format!("project_id={}", many.join(",")))
        .await;
    assert_eq!(r.pointers(), ["project_id"], "{r:?}");

    // Single reads: personal-and-own, or a member of the task's project.
    for (who, task, ok) in [
        (&bob_q, t1, true),
        (&cat_q, t2, true),
        (&bob_q, a1, false),
        (&ann_q, b1, false),
        (&eve_q, t1, false),
    ] {
        let r = who.get_task(task).await;
        let h = who.history(task).await;
        if ok {
            assert_eq!((r.status, h.status), (StatusCode::OK, StatusCode::OK));
        } else {
            let missing = Uuid::now_v7();
            same_404("task", &r, &who.get_task(missing).await);
            same_404("history", &h, &who.history(missing).await);
        }
    }
    let t3_read = cat_q.get_task(t3).await.expect(StatusCode::OK, "t3");
    assert_eq!(t3_read["project_id"], p.to_string());
    assert_eq!(t3_read["assignee_ids"], serde_json::json!([ann, bob]));
    // History: the envelope's fields and the actor's name.
    let history = cat_q.history(t3).await.expect(StatusCode::OK, "history");
    let items = history["items"].as_array().expect("items");
    let got: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or(""),
                e["actor"].as_str().unwrap_or(""),
                e["actor_display_name"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    let (ann_s, bob_s) = (ann.to_string(), bob.to_string());
    assert_eq!(
        got,
        [
            ("task.created", ann_s.as_str(), "Ann"),
            ("task.status_changed", bob_s.as_str(), "Bob"),
        ]
    );
    assert_eq!(items[0]["stream_id"], t3.to_string());
    assert_eq!(items[0]["version"], 1);

    // Projects.
    let page = bob_q
        .list_projects("")
        .await
        .expect(StatusCode::OK, "projects");
    assert_eq!(ids(&page), [p]);
    let project = &page["items"][0];
    assert_eq!(project["my_role"], "member");
    assert_eq!(project["member_count"], 3);
    assert_eq!(project["name"], "Launch");
    assert_eq!(project["owner_id"], ann.to_string());
    assert_eq!(project["archived"], false);
    let r = cat_q.get_project(p).await;
    assert_eq!(r.etag(), "\"3\"");
    let one = r.expect(StatusCode::OK, "GET /projects/{id}");
    assert_eq!(one["my_role"], "viewer");
    assert_eq!(one["version"], 3);
    let r = cat_q.get_project(p).if_none_match("\"3\"").await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.etag(), "\"3\"");
    assert_eq!(
        cat_q.get_project(p).if_none_match("\"2\"").await.status,
        StatusCode::OK
    );
    let members = cat_q.members(p).await.expect(StatusCode::OK, "members");
    let got: Vec<(String, String, String)> = members["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap_or("").to_owned(),
                m["display_name"].as_str().unwrap_or("").to_owned(),
                m["role"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let row = |id: Uuid, name: &str, role: &str| (id.to_string(), name.to_owned(), role.to_owned());
    assert_eq!(
        got,
        [
            row(ann, "Ann", "owner"),
            row(bob, "Bob", "member"),
            row(cat, "Cat", "viewer")
        ]
    );
    assert!(members["items"][1]["email"]
        .as_str()
        .is_some_and(|e| e.starts_with("Bob-")));

    // Consistency tokens: a project's accepted from members only; a task's
    // in a project from its members.
    assert_eq!(
        cat_q
            .get_project(p)
            .consistency_token(&p_token)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        cat_q.get_task(t3).consistency_token(&t3_token).await.status,
        StatusCode::OK
    );
    for token in [&p_token, &t3_token] {
        let r = eve_q.list_tasks("").consistency_token(token).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
        assert_eq!(r.pointers(), ["X-Consistency-Token"]);
    }

    // A non-member is refused everywhere, as for a missing id.
    refused_everywhere(&eve_q, p, t1).await;

    // Removal, with the relay stopped: the views keep Bob as a member and
    // the project's tasks as they were; the membership table does not.
    w.relay = None;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.ledger.remove_member(p, ann, bob).await;
    refused_everywhere(&bob_q, p, t1).await;
    assert_eq!(listed(&bob_q, "").await, set([b1]), "only Bob's own task");
    let view =
        w.db.collection::<ProjectView>(PROJECT_VIEWS)
            .find_one(doc! { "_id": p.to_string() })
            .await
            .expect("read")
            .expect("view");
    assert!(
        view.role_of(&bob.to_string()).is_some(),
        "the view still lists Bob: the refusal came from the table"
    );
    // A task Bob created in the project is the project's, not his.
    same_404(
        "bob's project task",
        &bob_q.get_task(t2).await,
        &bob_q.get_task(Uuid::now_v7()).await,
    );
    assert_eq!(cat_q.get_task(t2).await.status, StatusCode::OK);

    // Delete, still unprojected: every member loses every read at once.
    w.ledger.delete_project(p, ann).await;
    for who in [&ann_q, &cat_q] {
        refused_everywhere(who, p, t3).await;
    }
    assert_eq!(listed(&ann_q, "").await, set([a1]));

    // Once projected, the flagged view is never served, even to a row
    // that should not be there.
    w.relay = Some(w.ledger.relay(&w.d).await);
    crate_wait_deleted(&w, p).await;
    w.ledger.stale_row(p, ann, ProjectRole::Owner).await;
    let r = ann_q.get_project(p).await;
    same_404(
        "deleted project",
        &r,
        &ann_q.get_project(Uuid::now_v7()).await,
    );
    assert_eq!(
        ids(&ann_q.list_projects("").await.expect(StatusCode::OK, "list")),
        Vec::<Uuid>::new()
    );
}

async fn crate_wait_deleted(w: &World, p: Uuid) {
    tests::eventually("the project view to be flagged deleted", WAIT, || async {
        let v =
            w.db.collection::<ProjectView>(PROJECT_VIEWS)
                .find_one(doc! { "_id": p.to_string() })
                .await
                .ok()
                .flatten()?;
        v.deleted.then_some(())
    })
    .await
}

/// A seeded task: id, project, assignees, priority, done.
type Seeded = (Uuid, Option<Uuid>, Vec<Uuid>, Priority, bool);

#[tokio::test(flavor = "multi_thread")]
async fn lists_page_through_personal_and_project_tasks_with_every_filter() {
    let w = World::start().await;
    let (me, me_q) = w.person("Me").await;
    let (other, _) = w.person("Other").await;
    let (p1, _) = w.ledger.project(me, "one").await;
    let (p2, _) = w.ledger.project(other, "two").await;
    let (outside, _) = w.ledger.project(other, "outside").await;
    w.ledger
        .add_member(p2, other, me, ProjectRole::Viewer)
        .await;
    w.ledger
        .add_member(p1, me, other, ProjectRole::Member)
        .await;

    let mut tasks: Vec<Seeded> = Vec::new();
    let mut last = String::new();
    let priorities = Priority::ALL;
    for i in 0..27usize {
        let (owner, project) = match i % 4 {
            0 => (me, None),
            1 => (me, Some(p1)),
            2 => (other, Some(p1)),
            _ => (other, Some(p2)),
        };
        let assignees = match i % 3 {
            0 => vec![],
            1 => vec![me],
            _ => vec![other],
        };
        let assignees = if project.is_none() && assignees == [other] {
            vec![]
        } else {
            assignees
        };
        let priority = priorities[i % 4];
        let (id, token) = w
            .ledger
            .task_at(
                owner,
                project,
                &assignees,
                &format!("task {i}"),
                priority,
                Utc::now(),
            )
            .await;
        last = token;
        let done = i % 5 == 0;
        if done {
            last = w
                .ledger
                .status_at(id, owner, TaskStatus::Todo, TaskStatus::Done, Utc::now())
                .await;
        }
        tasks.push((id, project, assignees, priority, done));
    }
    // Not visible to me: someone else's personal tasks and an outside project.
    let (hidden1, _) = w.ledger.task(other, None, &[], "other's own").await;
    let (hidden2, _) = w.ledger.task(other, Some(outside), &[], "outside").await;
    w.settle(&last).await;
    for id in [hidden1, hidden2] {
        w.settle(&format!("{}.1", id.simple())).await;
    }
    for (id, ..) in &tasks {
        w.settle(&format!("{}.1", id.simple())).await;
    }

    let expect =
        |pick: &dyn Fn(&Seeded) -> bool| set(tasks.iter().filter(|t| pick(t)).map(|t| t.0));
    let cases: Vec<(String, BTreeSet<Uuid>)> = vec![
        (String::new(), expect(&|_| true)),
        ("status=done".into(), expect(&|t| t.4)),
        (format!("project_id={p1}"), expect(&|t| t.1 == Some(p1))),
        (
            format!("project_id={p1},{p2},{outside}"),
            expect(&|t| t.1.is_some()),
        ),
        ("assignee=me".into(), expect(&|t| t.2 == [me])),
        ("assignee=none".into(), expect(&|t| t.2.is_empty())),
        (format!("assignee={other}"), expect(&|t| t.2 == [other])),
        (
            format!("project_id={p2}&assignee=me&priority=high,urgent"),
            expect(&|t| {
                t.1 == Some(p2) && t.2 == [me] && matches!(t.3, Priority::High | Priority::Urgent)
            }),
        ),
    ];
    for sort in [
        "-created_at",
        "created_at",
        "priority",
        "-updated_at",
        "due_at",
    ] {
        for (filter, want) in &cases {
            let query = format!("{filter}&sort={sort}&limit=4");
            let got = all_pages(&me_q, &query).await;
            assert_eq!(got.len(), set(got.clone()).len(), "{query}: an item twice");
            assert_eq!(&set(got.clone()), want, "{query}");
            if sort == "created_at" {
                // Ids are v7, created in order: the order is the ids'.
                let mut sorted = got.clone();
                sorted.sort();
                assert_eq!(got, sorted, "{query}");
            }
        }
    }

    // A cursor belongs to its filters, the new ones included.
    let page = me_q
        .list_tasks(&format!("project_id={p1}&limit=2"))
        .await
        .expect(StatusCode::OK, "first page");
    let cursor = page["next_cursor"].as_str().expect("a cursor").to_owned();
    for other_filters in [
        format!("project_id={p2}&limit=2&cursor={cursor}"),
        format!("project_id={p1}&assignee=me&limit=2&cursor={cursor}"),
        format!("limit=2&cursor={cursor}"),
    ] {
        let r = me_q.list_tasks(&other_filters).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{other_filters}: {r:?}");
        assert_eq!(r.pointers(), ["cursor"]);
    }
    // Someone else's cursor is not theirs.
    let r = w
        .client(other)
        .list_tasks(&format!("project_id={p1}&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(r.pointers(), ["cursor"], "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_projects_list_pages_with_my_role_and_the_archived_filter() {
    let w = World::start().await;
    let (me, me_q) = w.person("Me").await;
    let (other, other_q) = w.person("Other").await;
    let mut mine: Vec<(Uuid, &str, bool)> = Vec::new();
    let mut last = String::new();
    for i in 0..7 {
        let (owner, role) = match i % 3 {
            0 => (me, "owner"),
            1 => (other, "admin"),
            _ => (other, "viewer"),
        };
        let (p, t) = w.ledger.project(owner, &format!("project {i}")).await;
        last = t;
        if owner != me {
            let r = role.parse::<ProjectRole>().expect("role");
            last = w.ledger.add_member(p, other, me, r).await;
        }
        let archived = i % 2 == 1;
        if archived {
            last = w
                .ledger
                .project_event(p, owner, ProjectEvent::Archived(ProjectArchived {}))
                .await;
        }
        w.settle(&last).await;
        mine.push((p, role, archived));
    }
    // Not mine.
    let (theirs, t) = w.ledger.project(other, "theirs").await;
    w.settle(&t).await;
    let _ = last;

    let pages = |query: String| {
        let me_q = me_q.clone();
        async move {
            let mut out: Vec<(Uuid, String, bool)> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let q = match &cursor {
                    Some(c) => format!("{query}&cursor={c}"),
                    None => query.clone(),
                };
                let page = me_q
                    .list_projects(&q)
                    .await
                    .expect(StatusCode::OK, &format!("GET /projects?{q}"));
                let items = page["items"].as_array().expect("items");
                assert!(items.len() <= 3, "{page}");
                for p in items {
                    out.push((
                        id_of(p),
                        p["my_role"].as_str().unwrap_or("").to_owned(),
                        p["archived"].as_bool().unwrap_or(false),
                    ));
                }
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => return out,
                }
            }
        }
    };
    let want = |pick: &dyn Fn(bool) -> bool| -> Vec<(Uuid, String, bool)> {
        mine.iter()
            .filter(|m| pick(m.2))
            .map(|m| (m.0, m.1.to_owned(), m.2))
            .collect()
    };
    assert_eq!(pages("limit=3".into()).await, want(&|_| true));
    assert_eq!(pages("limit=3&archived=true".into()).await, want(&|a| a));
    assert_eq!(pages("limit=3&archived=false".into()).await, want(&|a| !a));
    assert!(ids(&other_q
        .list_projects("")
        .await
        .expect(StatusCode::OK, "theirs"))
    .contains(&theirs));

    let first = me_q
        .list_projects("limit=3")
        .await
        .expect(StatusCode::OK, "first");
    let cursor = first["next_cursor"].as_str().expect("cursor");
    for bad in [
        format!("archived=true&limit=3&cursor={cursor}"),
        "limit=0".to_owned(),
        "archived=maybe".to_owned(),
        "sort=name".to_owned(),
    ] {
        let r = me_q.list_projects(&bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {r:?}");
    }
    let r = other_q
        .list_projects(&format!("limit=3&cursor={cursor}"))
        .await;
    assert_eq!(r.pointers(), ["cursor"], "another caller's cursor: {r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_cover_one_project_for_its_members_and_per_assignee() {
    let w = World::start().await;
    let (ann, ann_q) = w.person("Ann").await;
    let (bob, bob_q) = w.person("Bob").await;
    let (_, eve_q) = w.person("Eve").await;
    let (p, _) = w.ledger.project(ann, "figures").await;
    let token = w.ledger.add_member(p, ann, bob, ProjectRole::Viewer).await;
    w.settle(&token).await;

    let d0 = (Utc::now() - TimeDelta::days(5))
        .duration_trunc(TimeDelta::days(1))
        .expect("trunc");
    let h = TimeDelta::hours;
    // (assignees, hours to done) per project task.
    let plan: Vec<(Vec<Uuid>, Option<i64>)> = vec![
        (vec![ann], Some(2)),
        (vec![ann], Some(4)),
        (vec![bob], Some(10)),
        (vec![ann, bob], Some(6)),
        (vec![bob], None),
        (vec![], Some(1)),
        (vec![], None),
    ];
    let mut tokens = Vec::new();
    for (i, (assignees, done)) in plan.iter().enumerate() {
        let (id, t) = w
            .ledger
            .task_at(
                ann,
                Some(p),
                assignees,
                &format!("p{i}"),
                Priority::High,
                d0,
            )
            .await;
        tokens.push(t);
        if let Some(hours) = done {
            tokens.push(
                w.ledger
                    .status_at(id, ann, TaskStatus::Todo, TaskStatus::Done, d0 + h(*hours))
                    .await,
            );
        }
    }
    // Ann's personal tasks: one done, one open.
    let (own, t) = w
        .ledger
        .task_at(ann, None, &[], "own", Priority::Low, d0)
        .await;
    tokens.push(t);
    tokens.push(
        w.ledger
            .status_at(own, ann, TaskStatus::Todo, TaskStatus::Done, d0 + h(3))
            .await,
    );
    let (_, t) = w
        .ledger
        .task_at(ann, None, &[], "own open", Priority::Low, d0)
        .await;
    tokens.push(t);
    for t in &tokens {
        w.settle(t).await;
    }
    // The analytics projection follows the same events in its own
    // collection; wait until it has every task.
    tests::eventually("the task facts", WAIT, || async {
        let n =
            w.db.collection::<mongodb::bson::Document>("task_facts")
                .count_documents(doc! {})
                .await
                .ok()?;
        (n == 9).then_some(())
    })
    .await;
    tests::eventually("the last completion in the facts", WAIT, || async {
        let n =
            w.db.collection::<mongodb::bson::Document>("task_facts")
                .count_documents(doc! { "status": "done" })
                .await
                .ok()?;
        (n == 6).then_some(())
    })
    .await;

    let range = format!("from={}", (d0 - TimeDelta::days(1)).format("%Y-%m-%d"));
    // Without project_id: Ann's personal tasks only, as before projects.
    let mine = ann_q
        .analytics(&format!("summary?{range}"))
        .await
        .expect(StatusCode::OK, "summary");
    assert_eq!(mine["by_status"]["done"], 1, "{mine}");
    assert_eq!(mine["by_status"]["todo"], 1, "{mine}");
    // With it: the project's tasks, for any member (a viewer too).
    for who in [&ann_q, &bob_q] {
        let s = who
            .analytics(&format!("summary?{range}&project_id={p}"))
            .await
            .expect(StatusCode::OK, "project summary");
        assert_eq!(s["by_status"]["done"], 5, "{s}");
        assert_eq!(s["by_status"]["todo"], 2, "{s}");
        assert_eq!(s["by_priority"]["high"], 7, "{s}");
        let c = who
            .analytics(&format!("cycle-time?{range}&project_id={p}"))
            .await
            .expect(StatusCode::OK, "project cycle time");
        assert_eq!(c["overall"]["cycle"]["count"], 5, "{c}");
        assert_eq!(c["overall"]["cycle"]["p50_seconds"], 4.0 * 3600.0, "{c}");
        let t = who
            .analytics(&format!("throughput?{range}&project_id={p}"))
            .await
            .expect(StatusCode::OK, "project throughput");
        let total: u64 = t["buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .map(|b| b["completed"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(total, 5, "{t}");
    }
    let r = ann_q
        .analytics(&format!("summary?project_id={p}&owner_id={ann}"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");

    // Per assignee.
    let report = bob_q
        .analytics(&format!("assignees?{range}&project_id={p}"))
        .await
        .expect(StatusCode::OK, "assignees");
    let by: HashMap<String, &Value> = report["assignees"]
        .as_array()
        .expect("assignees")
        .iter()
        .map(|a| (a["user_id"].as_str().unwrap_or("").to_owned(), a))
        .collect();
    assert_eq!(by.len(), 2, "{report}");
    let a = by[&ann.to_string()];
    assert_eq!(
        (&a["display_name"], &a["completed"], &a["open"]),
        (&Value::from("Ann"), &Value::from(3), &Value::from(0)),
        "{report}"
    );
    assert_eq!(a["times"]["cycle"]["count"], 3);
    assert_eq!(a["times"]["cycle"]["mean_seconds"], 4.0 * 3600.0, "{a}");
    let b = by[&bob.to_string()];
    assert_eq!(
        (&b["display_name"], &b["completed"], &b["open"]),
        (&Value::from("Bob"), &Value::from(2), &Value::from(1)),
        "{report}"
    );
    assert_eq!(b["times"]["cycle"]["p90_seconds"], 10.0 * 3600.0, "{b}");
    // Most completions first.
    assert_eq!(report["assignees"][0]["user_id"], ann.to_string());
    let none = &report["unassigned"];
    assert_eq!(
        (&none["user_id"], &none["completed"], &none["open"]),
        (&Value::Null, &Value::from(1), &Value::from(1))
    );

    // Not a member: the same 404 as a project that does not exist.
    let missing = Uuid::now_v7();
    for what in ["summary", "cycle-time", "throughput", "assignees"] {
        same_404(
            what,
            &eve_q.analytics(&format!("{what}?project_id={p}")).await,
            &eve_q
                .analytics(&format!("{what}?project_id={missing}"))
                .await,
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_member_reads_at_once_moves_follow_the_task_and_admins_filter_by_owner() {
    let mut w = World::start().await;
    let (ann, ann_q) = w.person("Ann").await;
    let (bob, bob_q) = w.person("Bob").await;
    let (dan, dan_q) = w.person("Dan").await;
    let (p, _) = w.ledger.project(ann, "first").await;
    let (q, _) = w.ledger.project(ann, "second").await;
    w.ledger.add_member(q, ann, bob, ProjectRole::Member).await;
    let (task, _) = w.ledger.task(ann, Some(p), &[], "travels").await;
    let (bobs, _) = w.ledger.task(bob, None, &[], "bob's own").await;
    let (bob_in_p, t) = w.ledger.task(bob, Some(q), &[], "bob's in q").await;
    w.settle(&t).await;
    for id in [task, bobs] {
        w.settle(&format!("{}.1", id.simple())).await;
    }
    // A task Bob created in q is not listed by an admin who is no member.
    let admin = w.d.token_for(Uuid::now_v7(), Role::Admin);
    let admin_q = ann_q.as_user(&admin);
    assert_eq!(
        listed(&admin_q, &format!("owner_id={bob}")).await,
        set([bobs]),
        "an admin sees another user's personal tasks, not their projects'"
    );
    let r = ann_q.list_tasks(&format!("owner_id={bob}")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(
        listed(&bob_q, &format!("owner_id={bob}")).await,
        set([bobs, bob_in_p])
    );

    // Dan is added to p with the relay stopped: the project view does not
    // know him yet, the table does, and every read follows the table.
    w.relay = None;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.ledger.add_member(p, ann, dan, ProjectRole::Viewer).await;
    let seen = dan_q
        .get_project(p)
        .await
        .expect(StatusCode::OK, "dan reads p");
    assert_eq!(seen["my_role"], "viewer");
    assert_eq!(seen["member_count"], 1, "the view has not seen the add yet");
    assert_eq!(listed(&dan_q, "").await, set([task]));
    assert_eq!(dan_q.history(task).await.status, StatusCode::OK);
    w.relay = Some(w.ledger.relay(&w.d).await);

    // The task moves from p to q. The history (from the log) follows at
    // once; the views once the move is projected.
    let moved = w.ledger.move_task(task, ann, Some(p), Some(q)).await;
    same_404(
        "history after the move",
        &dan_q.history(task).await,
        &dan_q.history(Uuid::now_v7()).await,
    );
    assert_eq!(bob_q.history(task).await.status, StatusCode::OK);
    w.settle(&moved).await;
    same_404(
        "task after the move",
        &dan_q.get_task(task).await,
        &dan_q.get_task(Uuid::now_v7()).await,
    );
    assert_eq!(listed(&dan_q, "").await, BTreeSet::new());
    let read = bob_q
        .get_task(task)
        .consistency_token(&moved)
        .await
        .expect(StatusCode::OK, "bob reads the moved task with its token");
    assert_eq!(read["project_id"], q.to_string());
    assert_eq!(
        listed(&bob_q, &format!("project_id={q}")).await,
        set([task, bob_in_p])
    );
    // Out of every project: the creator's personal task again.
    let home = w.ledger.move_task(task, ann, Some(q), None).await;
    w.settle(&home).await;
    assert!(listed(&ann_q, "").await.contains(&task));
    assert!(!listed(&bob_q, "").await.contains(&task));
    same_404(
        "personal again",
        &bob_q.history(task).await,
        &bob_q.history(Uuid::now_v7()).await,
    );
}
