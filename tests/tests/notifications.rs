//! The notifier end to end, with every service running and real accounts:
//! reminders and overdue notices arrive once, when due, for tasks still to
//! be done; assignments and project membership by someone else are
//! notified; the inbox pages, counts and marks read, only one's own; a
//! restarted notifier fires what it had scheduled, once, and what fell due
//! while it was down, late; a second consumer group replaying the log
//! creates no duplicate.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tests::clients::AuthClient;
use tests::eventually;
use tests::notify::{in_secs, instant, Team, WAIT};
use uuid::Uuid;

#[tokio::test]
async fn a_reminder_and_an_overdue_notice_arrive_once_and_a_reschedule_moves_them() {
    let t = Team::start().await;
    let project = t.project().await;
    t.bob.set_leads(&[3]).await;

    let due = in_secs(6);
    let task = t
        .ann
        .task(json!({ "title": "ship it", "project_id": project, "assignee_ids": [t.bob.id], "due_at": due }))
        .await;
    // A second task, rescheduled at once: its first times never fire.
    let moved = t
        .ann
        .task(json!({ "title": "later", "project_id": project, "assignee_ids": [t.bob.id], "due_at": in_secs(6) }))
        .await;
    let new_due = in_secs(12);
    t.ann
        .write(
            Method::PATCH,
            &format!("/tasks/{moved}"),
            json!({ "due_at": new_due }),
        )
        .await
        .expect(StatusCode::OK, "reschedule");

    let overdue = t.bob.wait_for("overdue", task).await;
    let reminders = t.bob.about("reminder", task).await;
    assert_eq!(reminders.len(), 1, "one reminder: {reminders:?}");
    assert_eq!(overdue.len(), 1, "one overdue notice: {overdue:?}");
    let (reminder, overdue) = (&reminders[0], &overdue[0]);
    let due = instant(&json!(due));
    assert_eq!(instant(&reminder["data"]["due_at"]), due);
    assert_eq!(reminder["data"]["lead_seconds"], 3);
    assert!(instant(&reminder["created_at"]) >= due - chrono::Duration::seconds(3));
    assert!(instant(&reminder["created_at"]) < due, "{reminder}");
    assert!(instant(&overdue["created_at"]) >= due, "{overdue}");
    for n in [reminder, overdue] {
        assert_eq!(n["late"], false, "{n}");
        assert_eq!(n["read_at"], Value::Null);
        assert_eq!(n["project_id"], project.to_string());
        assert!(n["title"].as_str().unwrap().contains("ship it"), "{n}");
    }
    // The owner, who is not an assignee, is told nothing of it.
    assert!(t.ann.about("reminder", task).await.is_empty());
    assert!(t.ann.about("overdue", task).await.is_empty());

    // The rescheduled task: once each, for the new due time only.
    let overdue = t.bob.wait_for("overdue", moved).await;
    let reminders = t.bob.about("reminder", moved).await;
    let new_due = instant(&json!(new_due));
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert_eq!(instant(&reminders[0]["data"]["due_at"]), new_due);
    assert_eq!(instant(&overdue[0]["data"]["due_at"]), new_due);
    assert!(instant(&reminders[0]["created_at"]) >= new_due - chrono::Duration::seconds(3));

    // Nothing more comes for either.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for task in [task, moved] {
        assert_eq!(t.bob.about("reminder", task).await.len(), 1);
        assert_eq!(t.bob.about("overdue", task).await.len(), 1);
    }
}

#[tokio::test]
async fn nothing_is_sent_for_a_task_completed_cancelled_or_deleted_before_its_time() {
    let t = Team::start().await;
    t.bob.set_leads(&[2]).await;
    let body = |title: &str| json!({ "title": title, "due_at": in_secs(5) });
    let done = t.bob.task(body("done in time")).await;
    let cancelled = t.bob.task(body("cancelled")).await;
    let deleted = t.bob.task(body("deleted")).await;
    let control = t.bob.task(body("still open")).await;
    for status in ["in_progress", "done"] {
        t.bob
            .write(
                Method::POST,
                &format!("/tasks/{done}/status"),
                json!({ "status": status }),
            )
            .await
            .expect(StatusCode::OK, "change status");
    }
    t.bob
        .write(
            Method::POST,
            &format!("/tasks/{cancelled}/status"),
            json!({ "status": "cancelled" }),
        )
        .await
        .expect(StatusCode::OK, "cancel");
    let r = t.bob.commands.delete_task(deleted).await;
    assert!(r.status.is_success(), "delete: {r:?}");

    // The control task, due at the same time, is notified (personal task:
    // the owner is told) ...
    t.bob.wait_for("overdue", control).await;
    assert_eq!(t.bob.about("reminder", control).await.len(), 1);
    // ... the others never are.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for task in [done, cancelled, deleted] {
        for kind in ["reminder", "overdue"] {
            let found = t.bob.about(kind, task).await;
            assert!(found.is_empty(), "{kind} for {task}: {found:?}");
        }
    }
}

#[tokio::test]
async fn assignment_by_someone_else_notifies_and_self_assignment_does_not() {
    let t = Team::start().await;
    let project = t.project().await;
    // ann assigns herself and bob: bob is told, ann is not.
    let task = t
        .ann
        .task(json!({ "title": "pair on it", "project_id": project, "assignee_ids": [t.ann.id, t.bob.id] }))
        .await;
    let assigned = t.bob.wait_for("assigned", task).await;
    assert_eq!(assigned.len(), 1, "{assigned:?}");
    assert!(assigned[0]["body"].as_str().unwrap().contains("pair on it"));
    assert_eq!(assigned[0]["data"]["assigned_by"], t.ann.id.to_string());

    // bob assigns himself a task of his own making, then ann adds cat to
    // it: cat is told (which shows the notifier read bob's change, an
    // earlier version of the same stream), bob never is.
    let own = t
        .bob
        .task(json!({ "title": "mine", "project_id": project, "assignee_ids": [t.bob.id] }))
        .await;
    t.ann
        .write(
            Method::PATCH,
            &format!("/tasks/{own}"),
            json!({ "assignee_ids": [t.bob.id, t.cat.id] }),
        )
        .await
        .expect(StatusCode::OK, "add cat");
    t.cat.wait_for("assigned", own).await;
    assert!(t.bob.about("assigned", own).await.is_empty());
    assert!(t.ann.about("assigned", task).await.is_empty());
    // bob's first assignment is still the only one he has.
    assert_eq!(t.bob.about("assigned", task).await.len(), 1);
}

#[tokio::test]
async fn being_added_to_a_project_or_given_another_role_notifies() {
    let t = Team::start().await;
    let project = t.ann.project("club").await;
    t.ann.add(project, &t.bob, "member").await;
    let added = t.bob.wait_for("project_member_added", project).await;
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["data"]["role"], "member");
    t.ann.set_role(project, &t.bob, "admin").await;
    let changed = t.bob.wait_for("project_role_changed", project).await;
    assert_eq!(
        (
            changed[0]["data"]["from"].clone(),
            changed[0]["data"]["to"].clone()
        ),
        (json!("member"), json!("admin"))
    );
    // The actor, who created the project, is told nothing of her own acts.
    assert!(t.ann.all().await.is_empty());
}

#[tokio::test]
async fn the_inbox_pages_counts_and_marks_read_only_ones_own() {
    let t = Team::start().await;
    let mut projects = Vec::new();
    for i in 0..5 {
        let p = t.ann.project(&format!("p{i}")).await;
        t.ann.add(p, &t.bob, "viewer").await;
        projects.push(p);
    }
    eventually("five notifications", WAIT, || async {
        (t.bob.inbox("").await["unread_count"] == 5).then_some(())
    })
    .await;

    // Pages of two, newest first, each notification once.
    let mut seen: Vec<Value> = Vec::new();
    let mut query = "limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = t.bob.inbox(&query).await;
        pages += 1;
        assert_eq!(page["unread_count"], 5);
        seen.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let ids: Vec<&str> = seen.iter().map(|n| n["id"].as_str().unwrap()).collect();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!((ids.len(), unique.len()), (5, 5), "{ids:?}");
    let keys: Vec<(DateTime<Utc>, &str)> = seen
        .iter()
        .map(|n| (instant(&n["created_at"]), n["id"].as_str().unwrap()))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] > w[1]),
        "newest first: {keys:?}"
    );

    // Read one: it leaves the unread list, and reading again changes nothing.
    let first = ids[0].to_owned();
    for _ in 0..2 {
        let r = t
            .bob
            .notifier
            .request(Method::POST, &format!("/notifications/{first}/read"))
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    }
    let unread = t.bob.inbox("unread=true").await;
    assert_eq!(unread["unread_count"], 4);
    let unread_ids: Vec<&str> = unread["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(unread_ids.len(), 4);
    assert!(!unread_ids.contains(&first.as_str()));
    let read_at = t
        .bob
        .all()
        .await
        .into_iter()
        .find(|n| n["id"] == first.as_str())
        .unwrap()["read_at"]
        .clone();
    assert!(read_at.is_string(), "{read_at}");

    // Someone else's notification, or none at all: 404, and it stays unread for bob.
    let bobs = ids[1];
    for (who, id) in [
        (&t.ann, bobs.to_owned()),
        (&t.bob, Uuid::new_v4().to_string()),
    ] {
        who.notifier
            .request(Method::POST, &format!("/notifications/{id}/read"))
            .await
            .expect_problem(StatusCode::NOT_FOUND, "another's notification");
    }
    assert_eq!(t.bob.inbox("").await["unread_count"], 4);
    assert!(t.ann.all().await.is_empty(), "ann's inbox is her own");

    // A cursor cut for one filter is refused for another; junk is refused.
    let page = t.bob.inbox("limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    for query in [
        format!("unread=true&cursor={cursor}"),
        "cursor=junk".into(),
        "limit=0".into(),
        "sort=x".into(),
    ] {
        let r = t
            .bob
            .notifier
            .request(Method::GET, &format!("/notifications?{query}"))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {r:?}");
    }
    let r = t
        .bob
        .notifier
        .request(Method::GET, "/notifications")
        .token(None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Read all.
    let r = t
        .bob
        .notifier
        .request(Method::POST, "/notifications/read-all")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let unread = t.bob.inbox("unread=true").await;
    assert_eq!(unread["unread_count"], 0);
    assert!(unread["items"].as_array().unwrap().is_empty());
    assert_eq!(t.bob.all().await.len(), 5);
}

#[tokio::test]
async fn settings_default_validate_and_persist() {
    let t = Team::start().await;
    let get = || async {
        t.bob
            .notifier
            .request(Method::GET, "/me/notification-settings")
            .await
            .expect(StatusCode::OK, "GET settings")
    };
    let defaults = get().await;
    assert_eq!(defaults["reminder_lead_times_seconds"], json!([86400]));
    assert_eq!(defaults["email_opt_out"], json!([]));
    for (body, pointer) in [
        (
            json!({ "reminder_lead_times_seconds": [0], "email_opt_out": [] }),
            "/reminder_lead_times_seconds/0",
        ),
        (
            json!({ "reminder_lead_times_seconds": [2592001], "email_opt_out": [] }),
            "/reminder_lead_times_seconds/0",
        ),
        (
            json!({ "reminder_lead_times_seconds": [1, 2, 3, 4, 5, 6], "email_opt_out": [] }),
            "/reminder_lead_times_seconds",
        ),
        (
            json!({ "reminder_lead_times_seconds": [60], "email_opt_out": ["spam"] }),
            "/email_opt_out/0",
        ),
        (
            json!({ "email_opt_out": [] }),
            "/reminder_lead_times_seconds",
        ),
    ] {
        let r = t
            .bob
            .notifier
            .request(Method::PUT, "/me/notification-settings")
            .json(&body)
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {r:?}");
        let pointers = r.pointers();
        assert!(
            pointers.iter().any(|p| p == pointer),
            "{body}: {pointers:?}"
        );
    }
    let put = t
        .bob
        .notifier
        .request(Method::PUT, "/me/notification-settings")
        .json(&json!({ "reminder_lead_times_seconds": [3600, 86400, 3600], "email_opt_out": ["reminder"] }))
        .await
        .expect(StatusCode::OK, "PUT settings");
    assert_eq!(put["reminder_lead_times_seconds"], json!([86400, 3600]));
    assert_eq!(put["email_opt_out"], json!(["reminder"]));
    let read = get().await;
    assert_eq!(read["reminder_lead_times_seconds"], json!([86400, 3600]));
    assert!(read["updated_at"].is_string());
    // Only one's own.
    let anns = t
        .ann
        .notifier
        .request(Method::GET, "/me/notification-settings")
        .await
        .expect(StatusCode::OK, "ann's");
    assert_eq!(anns["reminder_lead_times_seconds"], json!([86400]));
}

#[tokio::test]
async fn a_restarted_notifier_fires_what_it_scheduled_once_and_what_fell_due_meanwhile_late() {
    let mut t = Team::start().await;
    t.bob.set_leads(&[60]).await;
    // Falls due while the notifier is down.
    let missed = t
        .bob
        .task(json!({ "title": "missed", "due_at": in_secs(3) }))
        .await;
    // Falls due after it is back.
    let later = t
        .bob
        .task(json!({ "title": "later", "due_at": in_secs(12) }))
        .await;
    // Completed while the notifier is down, before it falls due: the
    // notifier's own copy of the task still says open when it restarts.
    let done_meanwhile = t
        .bob
        .task(json!({ "title": "done meanwhile", "due_at": in_secs(4) }))
        .await;
    let pool = sqlx::PgPool::connect(&t.sys.deployment.database_url)
        .await
        .expect("postgres");
    eventually("both tasks scheduled", WAIT, || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifier_schedule WHERE task_id = ANY($1) AND kind = 'overdue'",
        )
        .bind([missed, later, done_meanwhile])
        .fetch_one(&pool)
        .await
        .expect("count");
        (n == 3).then_some(())
    })
    .await;

    t.sys.stop_notifier().await;
    for status in ["in_progress", "done"] {
        t.bob
            .write(
                Method::POST,
                &format!("/tasks/{done_meanwhile}/status"),
                json!({ "status": status }),
            )
            .await
            .expect(StatusCode::OK, "done while the notifier is down");
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    t.sys.notifier = t.sys.deployment.spawn_notifier(&t.sys.auth).await;
    t.bob.notifier = t.notifier_client(&t.bob).await;

    let missed_notes = t.bob.wait_for("overdue", missed).await;
    assert_eq!(missed_notes.len(), 1, "{missed_notes:?}");
    assert_eq!(missed_notes[0]["late"], true, "{missed_notes:?}");
    let later_notes = t.bob.wait_for("overdue", later).await;
    assert_eq!(later_notes.len(), 1, "{later_notes:?}");
    assert_eq!(later_notes[0]["late"], false, "{later_notes:?}");
    // A 60 s reminder was already past when each task was created: none.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for task in [missed, later] {
        assert!(t.bob.about("reminder", task).await.is_empty());
        assert_eq!(t.bob.about("overdue", task).await.len(), 1);
    }
    // Nothing for the task that was done when its time came.
    assert!(t.bob.about("overdue", done_meanwhile).await.is_empty());
    let state: String = sqlx::query_scalar(
        "SELECT state FROM notifier_schedule WHERE task_id = $1 AND kind = 'overdue'",
    )
    .bind(done_meanwhile)
    .fetch_one(&pool)
    .await
    .expect("the row");
    assert_eq!(state, "cancelled");
}

#[tokio::test]
async fn a_second_consumer_group_replaying_the_log_creates_no_duplicate() {
    let t = Team::start().await;
    let project = t.project().await;
    t.bob.set_leads(&[2]).await;
    let task = t
        .ann
        .task(json!({ "title": "once", "project_id": project, "assignee_ids": [t.bob.id], "due_at": in_secs(4) }))
        .await;
    t.bob.wait_for("overdue", task).await;
    let before = t.bob.all().await;

    // A notifier of a second group reads the whole log from the start,
    // beside the first.
    let mut config = t.sys.deployment.notifier_config(tests::NO_JWKS);
    config.group_id = format!("replay-{}", Uuid::new_v4().simple());
    let _replaying = t.sys.deployment.spawn_notifier_with(config).await;
    // A new event on each stream that caused a notification: once it is
    // notified, both notifiers have read the stream's earlier events.
    t.ann
        .write(
            Method::PATCH,
            &format!("/projects/{project}/members/{}", t.bob.id),
            json!({ "role": "admin" }),
        )
        .await
        .expect(StatusCode::OK, "change bob's role");
    t.ann
        .write(
            Method::PATCH,
            &format!("/tasks/{task}"),
            json!({ "assignee_ids": [t.bob.id, t.cat.id] }),
        )
        .await
        .expect(StatusCode::OK, "add cat");
    t.bob.wait_for("project_role_changed", project).await;
    t.cat.wait_for("assigned", task).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let after = t.bob.all().await;
    let ids = |v: &[Value]| -> Vec<String> {
        let mut ids: Vec<String> = v
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    // (By id: a notification's deliveries move on meanwhile.)
    let new: Vec<&Value> = after
        .iter()
        .filter(|n| !before.iter().any(|b| b["id"] == n["id"]))
        .collect();
    assert_eq!(new.len(), 1, "only the role change is new: {new:?}");
    assert_eq!(new[0]["kind"], "project_role_changed");
    let mut without_new = ids(&after);
    without_new.retain(|id| new[0]["id"] != id.as_str());
    assert_eq!(without_new, ids(&before));
    for kind in ["assigned", "reminder", "overdue"] {
        assert_eq!(t.bob.about(kind, task).await.len(), 1, "{kind}");
    }
    assert_eq!(t.bob.about("project_member_added", project).await.len(), 1);
    assert_eq!(t.cat.about("assigned", task).await.len(), 1);
}

#[tokio::test]
async fn leaving_a_project_and_deactivation_cancel_what_is_pending() {
    let t = Team::start().await;
    let project = t.project().await;
    for who in [&t.bob, &t.cat] {
        who.set_leads(&[2]).await;
    }
    let bobs = t
        .ann
        .task(json!({ "title": "bob's", "project_id": project, "assignee_ids": [t.bob.id], "due_at": in_secs(5) }))
        .await;
    let cats = t
        .ann
        .task(json!({ "title": "cat's", "project_id": project, "assignee_ids": [t.cat.id], "due_at": in_secs(5) }))
        .await;
    // bob leaves the project (he is unassigned with it: the task falls back
    // to its owner), and an admin deactivates cat.
    let r = t
        .ann
        .commands
        .request(
            Method::DELETE,
            &format!("/projects/{project}/members/{}", t.bob.id),
        )
        .await;
    assert!(r.status.is_success(), "remove bob: {r:?}");
    let auth = AuthClient::new(&t.sys.auth.url(""));
    let (_, admin) = auth.operator_admin(&t.sys.deployment).await;
    let r = auth.deactivate(&admin.access, t.cat.id).await;
    assert!(r.status.is_success(), "deactivate cat: {r:?}");

    // The owner, now the one told about bob's former task, gets its
    // overdue notice at the due time ...
    t.ann.wait_for("overdue", bobs).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // ... bob nothing about it ...
    for kind in ["reminder", "overdue"] {
        assert!(t.bob.about(kind, bobs).await.is_empty(), "{kind}");
    }
    // ... and cat (who can no longer read her inbox) has only the
    // assignment in it.
    let pool = sqlx::PgPool::connect(&t.sys.deployment.database_url)
        .await
        .expect("postgres");
    let cats_notes: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM notifier_notifications WHERE user_id = $1 AND task_id = $2",
    )
    .bind(t.cat.id)
    .bind(cats)
    .fetch_all(&pool)
    .await
    .expect("cat's notifications");
    assert_eq!(cats_notes, vec!["assigned"]);
}

#[tokio::test]
async fn health_metrics_and_the_document_are_served() {
    let t = Team::start().await;
    t.bob.set_leads(&[1]).await;
    let task = t
        .bob
        .task(json!({ "title": "measured", "due_at": in_secs(2) }))
        .await;
    t.bob.wait_for("overdue", task).await;
    let http = tests::http();
    let ready = http
        .get(t.sys.notifier.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    let page = tests::metrics_page(&t.sys.notifier.url("/metrics"))
        .await
        .expect("metrics");
    for series in [
        "notifications_created_total{kind=\"overdue\"}",
        "notifications_created_total{kind=\"reminder\"}",
        "notifier_schedule_lag_seconds",
    ] {
        let value = tests::process::metric(&page, series);
        assert!(value.is_some_and(|v| v >= 0.0), "{series} in {page}");
    }
    let served: Value = http
        .get(t.sys.notifier.url("/openapi.json"))
        .send()
        .await
        .expect("openapi.json")
        .json()
        .await
        .expect("a document");
    let documented = serde_json::to_value(notifier::openapi()).unwrap();
    assert_eq!(
        tests::openapi_operations(&served),
        tests::openapi_operations(&documented)
    );
    let ops = tests::openapi_operations(&served);
    for (m, p) in [
        ("GET", "/notifications"),
        ("POST", "/notifications/{id}/read"),
        ("POST", "/notifications/read-all"),
        ("GET", "/me/notification-settings"),
        ("PUT", "/me/notification-settings"),
    ] {
        assert!(ops.contains(&(m.to_owned(), p.to_owned())), "{m} {p}");
    }
}

#[tokio::test]
async fn changing_lead_times_reschedules_pending_reminders() {
    let t = Team::start().await;
    // With the default lead (a day), a task due in seconds gets no reminder ...
    let task = t
        .bob
        .task(json!({ "title": "soon", "due_at": in_secs(7) }))
        .await;
    let early = t
        .bob
        .task(json!({ "title": "sooner", "due_at": in_secs(2) }))
        .await;
    t.bob.wait_for("overdue", early).await;
    assert!(t.bob.about("reminder", early).await.is_empty());
    // ... until bob asks for one three seconds ahead.
    t.bob.set_leads(&[3]).await;
    let reminders = t.bob.wait_for("reminder", task).await;
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert_eq!(reminders[0]["data"]["lead_seconds"], 3);
    t.bob.wait_for("overdue", task).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(t.bob.about("reminder", task).await.len(), 1);
    assert_eq!(t.bob.about("overdue", task).await.len(), 1);
}

/// `notifier rebuild` (the binary) with the notifier's configuration.
fn run_rebuild(config: &notifier::Config) -> std::process::Output {
    std::process::Command::new(tests::binary("notifier"))
        .arg("rebuild")
        .env_clear()
        .envs(tests::process::service_env(config))
        .output()
        .expect("run notifier rebuild")
}

#[tokio::test]
async fn the_schedule_is_rebuilt_from_the_log_and_nothing_is_sent_twice() {
    let mut t = Team::start().await;
    t.bob.set_leads(&[4]).await;
    let project = t.project().await;
    let assigned = t
        .ann
        .task(json!({ "title": "assigned before", "project_id": project, "assignee_ids": [t.bob.id] }))
        .await;
    t.bob.wait_for("assigned", assigned).await;
    let due = in_secs(14);
    let task = t
        .ann
        .task(
            json!({ "title": "due after the rebuild", "project_id": project, "assignee_ids": [t.bob.id], "due_at": due }),
        )
        .await;
    let jwks = t.sys.auth.url("/.well-known/jwks.json");
    let config = t.sys.deployment.notifier_config(&jwks);

    let pool = sqlx::PgPool::connect(&t.sys.deployment.database_url)
        .await
        .unwrap();
    let pending = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM notifier_schedule WHERE state = 'pending'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    eventually("a reminder and an overdue notice scheduled", WAIT, || {
        let pool = pool.clone();
        async move { (pending(pool).await == 2).then_some(()) }
    })
    .await;

    // With the notifier running, the rebuild refuses and changes nothing.
    let refused = run_rebuild(&config);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("stop every notifier"),
        "{refused:?}"
    );
    assert_eq!(pending(pool.clone()).await, 2);

    // The view is lost (a bad migration, a restore): no tasks, no schedule.
    t.sys.stop_notifier().await;
    sqlx::query("UPDATE notifier_tasks SET due_at = NULL, title = 'corrupted'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM notifier_schedule")
        .execute(&pool)
        .await
        .unwrap();

    let rebuilt = run_rebuild(&config);
    assert!(rebuilt.status.success(), "{rebuilt:?}");
    let said = String::from_utf8_lossy(&rebuilt.stderr);
    assert!(said.contains("rewound"), "{said}");
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM notifier_tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tasks, 0);

    // The notifier started again (same address) re-reads the log: the
    // schedule is back, fires once, and the old notice is not repeated.
    let addr = t
        .sys
        .notifier
        .base
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    t.sys.notifier = t
        .sys
        .deployment
        .spawn_notifier_with(notifier::Config {
            listen_addr: addr,
            ..config
        })
        .await;
    let title: String = eventually("the task folded again", WAIT, || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar("SELECT title FROM notifier_tasks WHERE task_id = $1")
                .bind(task)
                .fetch_optional(&pool)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(title, "due after the rebuild");
    let overdue = t.bob.wait_for("overdue", task).await;
    let reminders = t.bob.about("reminder", task).await;
    assert_eq!(
        (reminders.len(), overdue.len()),
        (1, 1),
        "{reminders:?} {overdue:?}"
    );
    assert_eq!(
        instant(&reminders[0]["data"]["due_at"]),
        instant(&json!(due))
    );
    assert_eq!(t.bob.about("assigned", assigned).await.len(), 1);
    assert_eq!(t.bob.about("assigned", task).await.len(), 1);

    // Nor is anything e-mailed twice: one message per notification.
    let notes = t.bob.all().await;
    assert_eq!(
        notes.len(),
        5,
        "added, two assignments, reminder, overdue: {notes:?}"
    );
    let mail = tests::mailpit::Mailpit::shared();
    mail.wait_for(&t.bob.email, notes.len(), WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut got: Vec<String> = mail
        .to(&t.bob.email)
        .await
        .iter()
        .map(|m| m["MessageID"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = notes
        .iter()
        .map(|n| format!("{}@taskstream.test", n["id"].as_str().unwrap()))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn an_event_that_cannot_apply_is_set_aside_and_stalls_no_one() {
    let t = Team::start().await;
    let project = t.project().await;
    // A creation Postgres refuses to store (a NUL in the title), as a
    // buggy or hostile producer could publish it.
    let poison = created(t.ann.id, None, vec![], "nul \u{0} byte", None);
    Log::of(&t).publish(Uuid::now_v7(), 1, poison).await;

    // What comes after it is applied and notified.
    let task = t
        .ann
        .task(json!({ "title": "after the poison", "project_id": project, "assignee_ids": [t.bob.id] }))
        .await;
    t.bob.wait_for("assigned", task).await;
    let pool = sqlx::PgPool::connect(&t.sys.deployment.database_url)
        .await
        .unwrap();
    let (count, error): (i64, Option<String>) = eventually("the poison set aside", WAIT, || {
        let pool = pool.clone();
        async move {
            let row: (i64, Option<String>) =
                sqlx::query_as("SELECT count(*), max(error) FROM notifier_dead_letters")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (row.0 > 0).then_some(row)
        }
    })
    .await;
    assert_eq!(count, 1);
    assert!(
        error.unwrap().contains("0x00"),
        "the database's reason is kept"
    );
    assert_eq!(
        tests::metric_at(
            &t.sys.notifier.url("/metrics"),
            "notifier_dead_letters_total"
        )
        .await,
        Some(1.0)
    );
}

/// Publishes events straight to their topics, as the relay would (a
/// test's way to choose the order in which the notifier reads events of
/// different topics, or to publish what no command would).
struct Log {
    producer: rdkafka::producer::FutureProducer,
    topics: events::topics::Topics,
    actor: Uuid,
}

impl Log {
    fn of(t: &Team) -> Self {
        Log {
            producer: events::kafka::producer(&tests::servers().kafka_brokers).expect("producer"),
            topics: events::topics::Topics::with_prefix(t.sys.deployment.topic_prefix.clone()),
            actor: t.ann.id,
        }
    }

    /// Publishes `event` as version `version` of `stream`.
    async fn publish(&self, stream: Uuid, version: u64, event: events::Event) {
        let env = events::EventEnvelope::new(
            stream,
            version,
            &event,
            events::EventMeta {
                actor: self.actor,
                correlation_id: Uuid::now_v7(),
                causation_id: None,
                occurred_at: Utc::now(),
            },
        );
        self.producer
            .send(
                events::kafka::EnvelopeRecord::new(&self.topics, &env).as_future_record(),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// A `task.created` of a task `owner` owns, assigned to `assignees`.
fn created(
    owner: Uuid,
    project: Option<Uuid>,
    assignees: Vec<Uuid>,
    title: &str,
    due_at: Option<DateTime<Utc>>,
) -> events::Event {
    events::TaskEvent::Created(events::TaskCreated {
        owner_id: owner,
        project_id: project,
        assignee_ids: assignees,
        title: title.into(),
        description: String::new(),
        status: events::TaskStatus::Todo,
        priority: events::Priority::Medium,
        due_at,
        tags: vec![],
    })
    .into()
}

/// Waits until `task` has `n` pending schedule rows.
async fn wait_pending(pool: &sqlx::PgPool, task: Uuid, n: i64, what: &str) {
    eventually(what, WAIT, || {
        let pool = pool.clone();
        async move {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM notifier_schedule WHERE task_id = $1 AND state = 'pending'",
            )
            .bind(task)
            .fetch_one(&pool)
            .await
            .unwrap();
            (pending == n).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_member_added_back_is_reminded_again_and_a_stale_removal_changes_nothing() {
    let t = Team::start().await;
    let project = t.project().await;
    t.bob.set_leads(&[2]).await;
    let task = t
        .bob
        .task(json!({ "title": "bob's own", "project_id": project, "due_at": in_secs(20) }))
        .await;
    let pool = sqlx::PgPool::connect(&t.sys.deployment.database_url)
        .await
        .unwrap();
    wait_pending(
        &pool,
        task,
        2,
        "bob's reminder and overdue notice scheduled",
    )
    .await;

    // bob leaves: nothing is pending for him; he is added back: his
    // task's reminders are pending again.
    let path = format!("/projects/{project}/members/{}", t.bob.id);
    let r = t.ann.commands.request(Method::DELETE, &path).await;
    assert!(r.status.is_success(), "remove bob: {r:?}");
    wait_pending(&pool, task, 0, "bob's reminders cancelled").await;
    t.ann.add(project, &t.bob, "member").await;
    wait_pending(&pool, task, 2, "bob's reminders pending again").await;

    // His removal delivered again (version 4 of the project: created, bob
    // and cat added, bob removed) is passed over. The role change after it
    // on the same partition shows when it has been read.
    let removal =
        events::ProjectEvent::MemberRemoved(events::ProjectMemberRemoved { user_id: t.bob.id });
    Log::of(&t).publish(project, 4, removal.into()).await;
    t.ann.set_role(project, &t.cat, "admin").await;
    t.cat.wait_for("project_role_changed", project).await;
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifier_schedule WHERE task_id = $1 AND state <> 'cancelled'",
    )
    .bind(task)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(kept, 2, "a stale removal cancelled bob's reminders");

    let overdue = t.bob.wait_for("overdue", task).await;
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert_eq!(t.bob.about("reminder", task).await.len(), 1);
}

#[tokio::test]
async fn a_task_moved_out_of_a_project_is_reminded_whenever_the_deletion_is_read() {
    let t = Team::start().await;
    t.ann.set_leads(&[2]).await;
    let kept = t.ann.project("kept").await;
    let pool = sqlx::PgPool::connect(&t.sys.deployment.database_url)
        .await
        .unwrap();
    let log = Log::of(&t);
    // The order the notifier may read three topics in: a task created in a
    // project, the project's deletion, then the task's move out of it
    // (which happened before the deletion, on another topic).
    let (gone, moved, stayed) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let due = Utc::now() + chrono::Duration::seconds(30);
    log.publish(
        moved,
        1,
        created(t.ann.id, Some(gone), vec![], "moved", Some(due)),
    )
    .await;
    wait_pending(&pool, moved, 2, "the moved task scheduled").await;
    let deleted = events::ProjectEvent::Deleted(events::ProjectDeleted {});
    log.publish(gone, 7, deleted.into()).await;
    wait_pending(&pool, moved, 0, "its reminders cancelled with the project").await;
    // A task of the deleted project whose creation is read only now is
    // never scheduled, nor its assignment told.
    let stayed_created = created(t.ann.id, Some(gone), vec![t.bob.id], "stayed", Some(due));
    log.publish(stayed, 1, stayed_created).await;
    eventually("the stayed task read", WAIT, || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT version FROM notifier_tasks WHERE task_id = $1")
                .bind(stayed)
                .fetch_optional(&pool)
                .await
                .unwrap()
        }
    })
    .await;
    let moved_out = events::TaskEvent::Moved(events::TaskMoved {
        from: Some(gone),
        to: Some(kept),
    });
    log.publish(moved, 2, moved_out.into()).await;

    let overdue = t.ann.wait_for("overdue", moved).await;
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert_eq!(t.ann.about("reminder", moved).await.len(), 1);
    for kind in ["assigned", "reminder", "overdue"] {
        assert!(t.bob.about(kind, stayed).await.is_empty(), "{kind}");
    }
    let stayed_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifier_schedule WHERE task_id = $1")
            .bind(stayed)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stayed_rows, 0);
}

#[tokio::test]
async fn what_is_past_the_retention_is_deleted_unless_still_being_delivered() {
    let sys =
        tests::System::start_with_notifier(|c| c.retention_sweep = Duration::from_secs(1)).await;
    let t = Team::of(sys).await;
    let project = t.project().await;
    t.bob.set_leads(&[60]).await;
    let due = in_secs(3600);
    let mut tasks = Vec::new();
    for title in ["old", "retrying", "recent"] {
        let task = t
            .ann
            .task(json!({ "title": title, "project_id": project, "assignee_ids": [t.bob.id], "due_at": due }))
            .await;
        t.bob.wait_for("assigned", task).await;
        tasks.push(task);
    }
    let [old, retrying, recent] = tasks[..] else {
        unreachable!()
    };
    let pool = sqlx::PgPool::connect(&t.sys.deployment.database_url)
        .await
        .unwrap();
    // Every e-mail of the three sent (Mailpit is up).
    eventually("the e-mails sent", WAIT, || {
        let pool = pool.clone();
        async move {
            let unsent: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM notifier_deliveries WHERE state IN ('pending', 'sending')",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (unsent == 0).then_some(())
        }
    })
    .await;
    // The old task is deleted: its reminders are cancelled.
    let r = t
        .ann
        .commands
        .request(Method::DELETE, &format!("/tasks/{old}"))
        .await;
    assert!(r.status.is_success(), "delete: {r:?}");
    wait_pending(&pool, old, 0, "the old task's reminders cancelled").await;

    // The retrying task's e-mail is being retried still; then ninety-one
    // days pass for the old and the retrying task's notices and for the old
    // task's schedule (in this order: the sweep runs meanwhile).
    sqlx::query(
        "UPDATE notifier_deliveries SET state = 'pending', next_attempt_at = now() + interval '1 hour'
          WHERE notification_id IN (SELECT id FROM notifier_notifications WHERE task_id = $1)",
    )
    .bind(retrying)
    .execute(&pool)
    .await
    .unwrap();
    for sql in [
        "UPDATE notifier_notifications SET created_at = created_at - interval '91 days'
          WHERE task_id = ANY($1)",
        "UPDATE notifier_schedule SET fire_at = fire_at - interval '91 days'
          WHERE task_id = ANY($1) AND state <> 'pending'",
    ] {
        sqlx::query(sql)
            .bind(vec![old, retrying])
            .execute(&pool)
            .await
            .unwrap();
    }

    let count = |sql: &'static str, task: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(task)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    const NOTICES: &str = "SELECT count(*) FROM notifier_notifications WHERE task_id = $1";
    const DELIVERIES: &str = "SELECT count(*) FROM notifier_deliveries d
          JOIN notifier_notifications n ON n.id = d.notification_id WHERE n.task_id = $1";
    const SCHEDULE: &str = "SELECT count(*) FROM notifier_schedule WHERE task_id = $1";
    let old_deliveries: Vec<Uuid> = sqlx::query_scalar(
        "SELECT d.id FROM notifier_deliveries d
           JOIN notifier_notifications n ON n.id = d.notification_id WHERE n.task_id = $1",
    )
    .bind(old)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!old_deliveries.is_empty(), "the old notice was e-mailed");
    eventually("the old task's notice and schedule deleted", WAIT, || {
        let count = &count;
        async move {
            (count(NOTICES, old).await == 0 && count(SCHEDULE, old).await == 0).then_some(())
        }
    })
    .await;
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifier_deliveries WHERE id = ANY($1)")
            .bind(&old_deliveries)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "deliveries go with their notification");
    assert!(t.bob.about("assigned", old).await.is_empty());
    // The notice whose e-mail is being retried stays, with its delivery;
    // the recent one, and the pending schedule, are untouched.
    assert_eq!(count(NOTICES, retrying).await, 1);
    assert_eq!(count(DELIVERIES, retrying).await, 1);
    assert_eq!(t.bob.about("assigned", recent).await.len(), 1);
    assert_eq!(count(SCHEDULE, recent).await, 2);
    let deleted = tests::metric_at(
        &t.sys.notifier.url("/metrics"),
        r#"notifier_retention_deleted_total{table="notifications"}"#,
    )
    .await;
    assert!(deleted >= Some(1.0), "{deleted:?}");
}
