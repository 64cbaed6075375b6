//! Projects on the command side, end to end: real auth (real accounts,
//! several users), real command-api, real Postgres. The roles table over
//! HTTP, the 404 that does not tell a non-member from a missing id,
//! archive, delete, transfer, leaving, assignees, moves, and the race of
//! task writes against a removal, checked in the event store.

use std::collections::HashMap;

use events::store;
use events::{Event, ProjectEvent, TaskEvent};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use tests::clients::{email, id_of, AuthClient, Reply};
use tests::project_commands::ProjectCommands;
use tests::{Deployment, Running};
use uuid::Uuid;

// ------------------------------------------------------------------ harness

struct Ctx {
    dep: Deployment,
    _auth: Running,
    _cmd: Running,
    auth: AuthClient,
    /// command-api's base URL.
    base: String,
    db: PgPool,
}

/// A registered, logged-in account.
struct User {
    id: Uuid,
    email: String,
    /// command-api as this user.
    api: ProjectCommands,
}

async fn setup() -> Ctx {
    setup_with(|c| c).await
}

async fn setup_with(configure: impl FnOnce(command_api::Config) -> command_api::Config) -> Ctx {
    let dep = Deployment::fresh().await;
    let auth = dep.spawn_auth().await;
    // Trusts the deployment's key, as auth's JWKS would.
    let cmd = dep
        .spawn_command_api_with(configure(dep.command_api_config(tests::NO_JWKS)))
        .await;
    let db = store::connect_and_migrate(&dep.database_url, 5)
        .await
        .expect("test database");
    Ctx {
        auth: AuthClient::new(&auth.base),
        base: cmd.base.clone(),
        dep,
        _auth: auth,
        _cmd: cmd,
        db,
    }
}

impl Ctx {
    async fn user(&self, prefix: &str) -> User {
        let email = email(prefix);
        let id = id_of(&self.auth.registered(&email).await);
        let token = self.auth.access(&email).await;
        User {
            id,
            email,
            api: ProjectCommands::new(&self.base, &token),
        }
    }

    /// A project of `owner`'s with `others` added as the given roles.
    async fn team(&self, owner: &User, others: &[(&User, &str)]) -> Uuid {
        let p = owner.api.created_project("Team").await;
        for (u, role) in others {
            owner.api.added(p, u.id, role).await;
        }
        p
    }

    /// The events of one stream, decoded, with their global positions.
    async fn stream(&self, id: Uuid) -> Vec<(i64, Uuid, Option<Uuid>, Event)> {
        let rows = sqlx::query(
            "SELECT global_position, event_id, causation_id FROM events
              WHERE stream_id = $1 ORDER BY version",
        )
        .bind(id)
        .fetch_all(&self.db)
        .await
        .expect("events");
        let envelopes = store::load_stream(&self.db, id).await.expect("load");
        rows.iter()
            .zip(envelopes)
            .map(|(r, e)| {
                (
                    r.get("global_position"),
                    r.get("event_id"),
                    r.get("causation_id"),
                    e.decode().expect("decode"),
                )
            })
            .collect()
    }

    async fn live_count(&self, owner: Uuid) -> i64 {
        sqlx::query_scalar(
            "SELECT coalesce(max(live), 0) FROM live_task_counts WHERE owner_id = $1",
        )
        .bind(owner)
        .fetch_one(&self.db)
        .await
        .expect("live count")
    }

    async fn members(&self, project: Uuid) -> HashMap<Uuid, (String, bool)> {
        sqlx::query("SELECT user_id, role, archived FROM project_members WHERE project_id = $1")
            .bind(project)
            .fetch_all(&self.db)
            .await
            .expect("members")
            .iter()
            .map(|r| (r.get("user_id"), (r.get("role"), r.get("archived"))))
            .collect()
    }
}

fn status(r: &Reply) -> u16 {
    r.status.as_u16()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------ projects

#[tokio::test]
async fn create_answers_the_project_with_headers_and_keeps_the_members_table() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let r = owner
        .api
        .create_project(&json!({ "name": "  Launch  ", "description": "Q3" }))
        .await;
    let body = r.expect(StatusCode::CREATED, "create project");
    let p = id_of(&body);
    assert_eq!(body["name"], "Launch");
    assert_eq!(body["description"], "Q3");
    assert_eq!(body["owner_id"], json!(owner.id));
    assert_eq!(body["my_role"], "owner");
    assert_eq!(body["member_count"], 1);
    assert_eq!(body["archived"], false);
    assert_eq!(body["version"], 1);
    let again = owner
        .api
        .patch_project(p, &json!({ "name": "Launch" }))
        .await;
    assert_eq!(again.etag(), "\"1\"", "a no-op records nothing: {again:?}");
    let r = owner
        .api
        .patch_project(p, &json!({ "name": "Renamed" }))
        .if_match("\"1\"")
        .await;
    assert_eq!(r.etag(), "\"2\"");
    assert_eq!(
        r.consistency_token(),
        Some(
            events::ConsistencyToken {
                stream_id: p,
                version: 2
            }
            .to_string()
            .as_str()
        )
    );
    let stale = owner
        .api
        .patch_project(p, &json!({ "name": "Again" }))
        .if_match("\"1\"")
        .await
        .expect_problem(StatusCode::PRECONDITION_FAILED, "stale If-Match");
    assert_eq!(stale["current_version"], 2);
    let bad = owner
        .api
        .create_project(&json!({ "name": " ", "description": "x".repeat(10_001) }))
        .await;
    assert_eq!(bad.pointers(), vec!["/name", "/description"], "{bad:?}");
    assert_eq!(
        ctx.members(p).await,
        HashMap::from([(owner.id, ("owner".to_owned(), false))])
    );
}

/// The roles table, over HTTP, each cell on a fresh project.
#[tokio::test]
async fn the_role_matrix_over_http() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let admin = ctx.user("admin-").await;
    let member = ctx.user("member-").await;
    let viewer = ctx.user("viewer-").await;
    let outsider = ctx.user("outsider-").await;
    let extra = ctx.user("extra-").await;
    let actors = [&owner, &admin, &member, &viewer, &outsider];
    let fresh = || async {
        ctx.team(
            &owner,
            &[(&admin, "admin"), (&member, "member"), (&viewer, "viewer")],
        )
        .await
    };

    type Expect = [u16; 5];
    // What each of owner, admin, member, viewer, outsider gets.
    let cells: Vec<(&str, Expect)> = vec![
        ("patch", [200, 200, 403, 403, 404]),
        ("archive", [200, 200, 403, 403, 404]),
        ("delete", [204, 403, 403, 403, 404]),
        ("transfer", [200, 403, 403, 403, 404]),
        ("add member", [201, 201, 403, 403, 404]),
        ("add admin", [201, 403, 403, 403, 404]),
        ("viewer → member", [200, 200, 403, 403, 404]),
        ("member → admin", [200, 403, 403, 403, 404]),
        ("demote admin", [200, 403, 403, 403, 404]),
        // The viewer removing themselves is leaving.
        ("remove viewer", [204, 204, 403, 204, 404]),
        // The admin removing themselves is leaving (another admin: below).
        ("remove admin", [204, 204, 403, 403, 404]),
        ("create task", [201, 201, 201, 403, 422]),
    ];
    for (name, expect) in cells {
        for (actor, want) in actors.iter().zip(expect) {
            let p = fresh().await;
            let api = &actor.api;
            let r = match name {
                "patch" => api.patch_project(p, &json!({ "name": "X" })).await,
                "archive" => api.archive(p).await,
                "delete" => api.delete_project(p).await,
                "transfer" => api.transfer(p, member.id).await,
                "add member" => api.add_member(p, extra.id, "member").await,
                "add admin" => api.add_member(p, extra.id, "admin").await,
                "viewer → member" => api.change_role(p, viewer.id, "member").await,
                "member → admin" => api.change_role(p, member.id, "admin").await,
                "demote admin" => api.change_role(p, admin.id, "member").await,
                "remove viewer" => api.remove_member(p, viewer.id).await,
                "remove admin" => api.remove_member(p, admin.id).await,
                "create task" => {
                    api.tasks()
                        .create_task(&json!({ "title": "t", "project_id": p }))
                        .await
                }
                _ => unreachable!(),
            };
            assert_eq!(status(&r), want, "{name} by {}: {r:?}", actor.email);
            if want == 422 {
                assert_eq!(r.pointers(), vec!["/project_id"], "{r:?}");
            }
        }
    }

    // Task writes: edit, status, delete (a member only their own).
    let p = fresh().await;
    let by_member = member.api.created_task_in(p, json!({ "title": "m" })).await;
    let by_owner = owner.api.created_task_in(p, json!({ "title": "o" })).await;
    for (actor, want) in actors.iter().zip([200, 200, 200, 403, 404]) {
        let r = actor
            .api
            .tasks()
            .patch_task(by_owner, &json!({ "title": format!("by {}", actor.email) }))
            .await;
        assert_eq!(status(&r), want, "edit by {}: {r:?}", actor.email);
        let r = actor
            .api
            .tasks()
            .set_status(by_owner, &json!({ "status": "in_progress" }))
            .await;
        assert_eq!(status(&r), want, "status by {}: {r:?}", actor.email);
    }
    let r = member.api.tasks().delete_task(by_owner).await;
    assert_eq!(status(&r), 403, "a member deletes another's task: {r:?}");
    let r = viewer.api.tasks().delete_task(by_member).await;
    assert_eq!(status(&r), 403, "a viewer deletes: {r:?}");
    let r = outsider.api.tasks().delete_task(by_member).await;
    assert_eq!(status(&r), 404, "an outsider deletes: {r:?}");
    let r = member.api.tasks().delete_task(by_member).await;
    assert_eq!(status(&r), 204, "a member deletes their own: {r:?}");
    let before = ctx.live_count(owner.id).await;
    let r = admin.api.tasks().delete_task(by_owner).await;
    assert_eq!(status(&r), 204, "an admin deletes any: {r:?}");
    assert_eq!(
        ctx.live_count(owner.id).await,
        before - 1,
        "the creator's slot is freed"
    );

    // Roles that cannot be given or taken.
    let p = fresh().await;
    let r = owner.api.add_member(p, extra.id, "owner").await;
    assert_eq!(r.pointers(), vec!["/role"], "{r:?}");
    let r = owner.api.change_role(p, member.id, "owner").await;
    assert_eq!(r.pointers(), vec!["/role"], "{r:?}");
    let r = admin.api.change_role(p, owner.id, "member").await;
    assert_eq!(status(&r), 403, "{r:?}");
    let r = owner.api.change_role(p, owner.id, "admin").await;
    assert_eq!(
        r.problem_type().rsplit('/').next(),
        Some("owner-role"),
        "{r:?}"
    );
    let r = owner.api.remove_member(p, outsider.id).await;
    assert_eq!(status(&r), 404, "no such member: {r:?}");
    owner.api.added(p, extra.id, "admin").await;
    let r = admin.api.remove_member(p, extra.id).await;
    assert_eq!(status(&r), 403, "an admin removes another admin: {r:?}");
    let r = admin.api.change_role(p, extra.id, "viewer").await;
    assert_eq!(status(&r), 403, "an admin demotes another admin: {r:?}");
}

#[tokio::test]
async fn a_non_member_gets_the_bytes_of_a_missing_id() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let outsider = ctx.user("outsider-").await;
    let member = ctx.user("member-").await;
    let p = ctx.team(&owner, &[(&member, "member")]).await;
    let task = owner.api.created_task_in(p, json!({ "title": "t" })).await;
    let missing = Uuid::now_v7();
    let o = &outsider.api;
    let pairs: Vec<(Reply, Reply)> = vec![
        (
            o.patch_project(p, &json!({ "name": "x" })).await,
            o.patch_project(missing, &json!({ "name": "x" })).await,
        ),
        (o.archive(p).await, o.archive(missing).await),
        (o.delete_project(p).await, o.delete_project(missing).await),
        (
            o.add_member(p, outsider.id, "member").await,
            o.add_member(missing, outsider.id, "member").await,
        ),
        (
            o.remove_member(p, member.id).await,
            o.remove_member(missing, member.id).await,
        ),
        (
            o.tasks().patch_task(task, &json!({ "title": "x" })).await,
            o.tasks()
                .patch_task(missing, &json!({ "title": "x" }))
                .await,
        ),
        (
            o.tasks().delete_task(task).await,
            o.tasks().delete_task(missing).await,
        ),
        (
            o.move_task(task, None).await,
            o.move_task(missing, None).await,
        ),
    ];
    for (i, (theirs, none)) in pairs.iter().enumerate() {
        assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{i}: {theirs:?}");
        assert_eq!(theirs.raw, none.raw, "{i}: the same bytes");
        assert_eq!(theirs.content_type(), none.content_type(), "{i}");
    }
    // Creating in it: the same words for "exists but not yours" and "none".
    let a = o
        .tasks()
        .create_task(&json!({ "title": "t", "project_id": p }))
        .await;
    let b = o
        .tasks()
        .create_task(&json!({ "title": "t", "project_id": missing }))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{a:?}");
    assert_eq!(a.raw, b.raw);
}

#[tokio::test]
async fn archive_makes_task_writes_409_until_unarchived() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let member = ctx.user("member-").await;
    let p = ctx.team(&owner, &[(&member, "member")]).await;
    let other = owner.api.created_project("Other").await;
    owner.api.added(other, member.id, "member").await;
    let task = member.api.created_task_in(p, json!({ "title": "t" })).await;
    let elsewhere = member
        .api
        .created_task_in(other, json!({ "title": "e" }))
        .await;

    let r = owner.api.archive(p).await.expect(StatusCode::OK, "archive");
    assert_eq!(r["archived"], true);
    assert!(ctx.members(p).await.values().all(|(_, archived)| *archived));
    let again = owner.api.archive(p).await;
    assert_eq!(again.etag(), format!("\"{}\"", r["version"]), "no event");

    let t = member.api.tasks();
    let refusals = vec![
        t.create_task(&json!({ "title": "n", "project_id": p }))
            .await,
        t.patch_task(task, &json!({ "title": "x" })).await,
        t.set_status(task, &json!({ "status": "in_progress" }))
            .await,
        t.patch_task(task, &json!({ "assignee_ids": [member.id] }))
            .await,
        t.delete_task(task).await,
        member.api.move_task(task, Some(other)).await,
        member.api.move_task(elsewhere, Some(p)).await,
    ];
    for (i, r) in refusals.into_iter().enumerate() {
        let body = r.expect_problem(StatusCode::CONFLICT, &format!("write {i}"));
        assert!(
            body["type"]
                .as_str()
                .unwrap_or("")
                .ends_with("/project-archived"),
            "{i}: {body}"
        );
    }
    // Project and member management still work.
    let viewer = ctx.user("viewer-").await;
    owner.api.added(p, viewer.id, "viewer").await;
    assert_eq!(
        ctx.members(p).await[&viewer.id],
        ("viewer".to_owned(), true)
    );
    owner
        .api
        .patch_project(p, &json!({ "description": "frozen" }))
        .await
        .expect(StatusCode::OK, "patch archived");

    let r = owner
        .api
        .unarchive(p)
        .await
        .expect(StatusCode::OK, "unarchive");
    assert_eq!(r["archived"], false);
    assert!(ctx
        .members(p)
        .await
        .values()
        .all(|(_, archived)| !*archived));
    t.patch_task(task, &json!({ "title": "thawed" }))
        .await
        .expect(StatusCode::OK, "write after unarchive");
}

#[tokio::test]
async fn delete_makes_the_project_404_and_frees_its_tasks_slots() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let member = ctx.user("member-").await;
    let p = ctx.team(&owner, &[(&member, "member")]).await;
    let mine = member.api.created_task_in(p, json!({ "title": "a" })).await;
    member.api.created_task_in(p, json!({ "title": "b" })).await;
    let personal = member
        .api
        .tasks()
        .created(&json!({ "title": "own" }))
        .await
        .0;
    assert_eq!(ctx.live_count(member.id).await, 3);

    let before = ctx.stream(mine).await.len();
    let r = owner.api.delete_project(p).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert!(ctx.members(p).await.is_empty(), "no rows left");
    assert_eq!(
        ctx.live_count(member.id).await,
        1,
        "the project's tasks vanish"
    );
    assert_eq!(ctx.stream(mine).await.len(), before, "no task events");

    for r in [
        owner.api.patch_project(p, &json!({ "name": "x" })).await,
        owner.api.delete_project(p).await,
        owner.api.unarchive(p).await,
        owner.api.add_member(p, member.id, "viewer").await,
        member
            .api
            .tasks()
            .patch_task(mine, &json!({ "title": "x" }))
            .await,
        owner.api.tasks().delete_task(mine).await,
    ] {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    }
    let r = member
        .api
        .tasks()
        .create_task(&json!({ "title": "t", "project_id": p }))
        .await;
    assert_eq!(r.pointers(), vec!["/project_id"], "{r:?}");
    member
        .api
        .tasks()
        .patch_task(personal, &json!({ "title": "still mine" }))
        .await
        .expect(StatusCode::OK, "personal tasks are untouched");
}

#[tokio::test]
async fn ownership_moves_by_transfer_and_the_owner_cannot_leave() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let member = ctx.user("member-").await;
    let outsider = ctx.user("outsider-").await;
    let p = ctx.team(&owner, &[(&member, "member")]).await;

    let r = owner.api.remove_member(p, owner.id).await;
    let body = r.expect_problem(StatusCode::CONFLICT, "owner leaves");
    assert!(body["type"]
        .as_str()
        .unwrap_or("")
        .ends_with("/owner-cannot-leave"));
    let r = owner.api.transfer(p, outsider.id).await;
    assert_eq!(r.pointers(), vec!["/user_id"], "{r:?}");

    let r = owner
        .api
        .transfer(p, member.id)
        .await
        .expect(StatusCode::OK, "transfer");
    assert_eq!(r["owner_id"], json!(member.id));
    assert_eq!(r["my_role"], "admin");
    assert_eq!(ctx.members(p).await[&owner.id].0, "admin");
    assert_eq!(ctx.members(p).await[&member.id].0, "owner");
    let events = ctx.stream(p).await;
    assert!(matches!(
        events.last().map(|e| &e.3),
        Some(Event::Project(ProjectEvent::OwnerChanged(o))) if o.from == owner.id && o.to == member.id
    ));

    // The old owner is an admin now: may not delete, may leave.
    let r = owner.api.delete_project(p).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    let r = owner.api.remove_member(p, owner.id).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = owner.api.patch_project(p, &json!({ "name": "x" })).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "left: {r:?}");
    assert!(!ctx.members(p).await.contains_key(&owner.id));
    let r = member.api.delete_project(p).await;
    assert_eq!(
        r.status,
        StatusCode::NO_CONTENT,
        "the new owner deletes: {r:?}"
    );
}

#[tokio::test]
async fn members_are_active_accounts_found_by_email_or_id() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let friend = ctx.user("friend-").await;
    let gone = ctx.user("gone-").await;
    let p = owner.api.created_project("Team").await;

    let shouted = friend.email.to_uppercase();
    let r = owner
        .api
        .add_member_with(
            p,
            &json!({ "email": format!("  {shouted} "), "role": "member" }),
        )
        .await;
    let body = r.expect(StatusCode::CREATED, "add by email");
    assert_eq!(body["user_id"], json!(friend.id));
    assert_eq!(body["email"], friend.email);
    assert_eq!(body["role"], "member");
    assert!(body["display_name"].is_string());
    let r = owner.api.add_member(p, friend.id, "viewer").await;
    let body = r.expect_problem(StatusCode::CONFLICT, "twice");
    assert!(body["type"]
        .as_str()
        .unwrap_or("")
        .ends_with("/already-member"));

    let r = owner
        .api
        .add_member_with(
            p,
            &json!({ "email": "nobody@example.test", "role": "member" }),
        )
        .await;
    assert_eq!(r.pointers(), vec!["/email"], "{r:?}");
    let r = owner.api.add_member(p, Uuid::now_v7(), "member").await;
    assert_eq!(r.pointers(), vec!["/user_id"], "{r:?}");
    let r = owner
        .api
        .add_member_with(
            p,
            &json!({ "email": gone.email, "user_id": gone.id, "role": "member" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "both: {r:?}");
    let r = owner
        .api
        .add_member_with(p, &json!({ "role": "member" }))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "neither: {r:?}");

    let (_, admin) = self_admin(&ctx).await;
    ctx.auth
        .deactivate(&admin, gone.id)
        .await
        .expect(StatusCode::OK, "deactivate");
    let r = owner.api.add_member(p, gone.id, "member").await;
    assert_eq!(r.pointers(), vec!["/user_id"], "deactivated: {r:?}");

    let r = owner
        .api
        .change_role(p, friend.id, "viewer")
        .await
        .expect(StatusCode::OK, "change role");
    assert_eq!(r["role"], "viewer");
    assert_eq!(r["email"], friend.email);
}

async fn self_admin(ctx: &Ctx) -> (Uuid, String) {
    let (id, tokens) = ctx.auth.operator_admin(&ctx.dep).await;
    (id, tokens.access)
}

#[tokio::test]
async fn bounds_on_members_and_projects_are_409_naming_the_limit() {
    let ctx = setup_with(|mut c| {
        c.projects.max_members = 2.try_into().expect("non-zero");
        c.projects.max_projects_per_user = 2.try_into().expect("non-zero");
        c
    })
    .await;
    let owner = ctx.user("owner-").await;
    let a = ctx.user("a-").await;
    let b = ctx.user("b-").await;
    let p = owner.api.created_project("One").await;
    owner.api.added(p, a.id, "member").await;
    let body = owner
        .api
        .add_member(p, b.id, "member")
        .await
        .expect_problem(StatusCode::CONFLICT, "full");
    assert_eq!(body["limit"], 2, "{body}");
    owner.api.created_project("Two").await;
    let body = owner
        .api
        .create_project(&json!({ "name": "Three" }))
        .await
        .expect_problem(StatusCode::CONFLICT, "too many projects");
    assert_eq!(body["limit"], 2, "{body}");
    let r = owner
        .api
        .tasks()
        .create_task(&json!({
            "title": "t",
            "assignee_ids": (0..11).map(|_| Uuid::now_v7()).collect::<Vec<_>>()
        }))
        .await;
    assert_eq!(r.pointers(), vec!["/assignee_ids"], "{r:?}");
}

// ------------------------------------------------------------------ tasks

#[tokio::test]
async fn assignees_must_be_members_and_are_a_set() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let member = ctx.user("member-").await;
    let viewer = ctx.user("viewer-").await;
    let outsider = ctx.user("outsider-").await;
    let p = ctx
        .team(&owner, &[(&member, "member"), (&viewer, "viewer")])
        .await;
    let t = member.api.tasks();

    let r = t
        .create_task(&json!({
            "title": "x", "project_id": p,
            "assignee_ids": [member.id, member.id, outsider.id]
        }))
        .await;
    assert_eq!(r.pointers(), vec!["/assignee_ids/2"], "{r:?}");
    let r = t
        .create_task(&json!({
            "title": "x", "project_id": p,
            "assignee_ids": [viewer.id, member.id, viewer.id]
        }))
        .await;
    let body = r.expect(StatusCode::CREATED, "any role may be assigned");
    assert_eq!(
        ids(&body["assignee_ids"]),
        vec![viewer.id.to_string(), member.id.to_string()]
    );
    assert_eq!(body["project_id"], json!(p));
    let task = id_of(&body);

    let r = t
        .patch_task(task, &json!({ "assignee_ids": [outsider.id] }))
        .await;
    assert_eq!(r.pointers(), vec!["/assignee_ids/0"], "{r:?}");
    let r = t
        .patch_task(task, &json!({ "assignee_ids": [member.id, viewer.id] }))
        .await;
    assert_eq!(r.etag(), "\"1\"", "the same set in another order: no event");
    let r = t.patch_task(task, &json!({ "assignee_ids": null })).await;
    let body = r.expect(StatusCode::OK, "clear");
    assert_eq!(body["assignee_ids"], json!([]));
    let events = ctx.stream(task).await;
    assert!(matches!(
        &events.last().map(|e| &e.3),
        Some(Event::Task(TaskEvent::AssigneesChanged(a))) if a.assignee_ids.is_empty()
    ));

    // Personal tasks: only their owner.
    let r = t
        .create_task(&json!({ "title": "mine", "assignee_ids": [member.id] }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = t
        .create_task(&json!({ "title": "mine", "assignee_ids": [owner.id] }))
        .await;
    assert_eq!(r.pointers(), vec!["/assignee_ids/0"], "{r:?}");
}

#[tokio::test]
async fn moves_need_write_rights_on_both_sides_and_drop_foreign_assignees() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let member = ctx.user("member-").await;
    let helper = ctx.user("helper-").await;
    let a = ctx
        .team(&owner, &[(&member, "member"), (&helper, "member")])
        .await;
    let b = ctx.team(&owner, &[(&member, "member")]).await;
    let c = ctx.team(&owner, &[(&member, "viewer")]).await;
    let outside = owner.api.created_project("Not theirs").await;

    // Personal → project, by its owner.
    let personal = member.api.tasks().created(&json!({ "title": "p" })).await.0;
    let r = member.api.move_task(personal, Some(a)).await;
    let body = r.expect(StatusCode::OK, "personal → a");
    assert_eq!(body["project_id"], json!(a));

    // A → B: the helper, not a member of B, is dropped.
    let task = owner
        .api
        .created_task_in(
            a,
            json!({ "title": "t", "assignee_ids": [member.id, helper.id] }),
        )
        .await;
    let r = member.api.move_task(task, Some(b)).await;
    let body = r.expect(StatusCode::OK, "a → b");
    assert_eq!(body["project_id"], json!(b));
    assert_eq!(ids(&body["assignee_ids"]), vec![member.id.to_string()]);
    let events: Vec<Event> = ctx.stream(task).await.into_iter().map(|e| e.3).collect();
    assert!(
        matches!(
            &events[1..],
            [Event::Task(TaskEvent::Moved(m)), Event::Task(TaskEvent::AssigneesChanged(x))]
                if m.from == Some(a) && m.to == Some(b) && x.assignee_ids == vec![member.id]
        ),
        "{events:?}"
    );
    let r = member.api.move_task(task, Some(b)).await;
    assert_eq!(r.etag(), "\"3\"", "already there: no event");

    // Targets the mover may not write to.
    let r = member.api.move_task(task, Some(c)).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "viewer of the target: {r:?}"
    );
    let r = member.api.move_task(task, Some(outside)).await;
    assert_eq!(
        r.pointers(),
        vec!["/project_id"],
        "not a member of the target: {r:?}"
    );
    let r = member.api.move_task(task, Some(Uuid::now_v7())).await;
    assert_eq!(r.pointers(), vec!["/project_id"], "no such target: {r:?}");
    let r = member
        .api
        .request(reqwest::Method::POST, &format!("/tasks/{task}/move"))
        .json(&json!({}))
        .await;
    assert_eq!(r.pointers(), vec!["/project_id"], "required: {r:?}");

    // Out to personal: only the creator.
    let r = member.api.move_task(task, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "not the creator: {r:?}");
    let r = owner.api.move_task(task, None).await;
    let body = r.expect(StatusCode::OK, "b → personal");
    assert_eq!(body["project_id"], Value::Null);
    assert_eq!(body["assignee_ids"], json!([]));
    let r = member
        .api
        .tasks()
        .patch_task(task, &json!({ "title": "x" }))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "personal again: {r:?}");
    let in_table: i64 = sqlx::query_scalar("SELECT count(*) FROM project_tasks WHERE task_id = $1")
        .bind(task)
        .fetch_one(&ctx.db)
        .await
        .expect("count");
    assert_eq!(in_table, 0);
}

#[tokio::test]
async fn a_removal_takes_the_member_off_their_tasks_with_events() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let admin = ctx.user("admin-").await;
    let member = ctx.user("member-").await;
    let p = ctx
        .team(&owner, &[(&admin, "admin"), (&member, "member")])
        .await;
    let both = owner
        .api
        .created_task_in(
            p,
            json!({ "title": "1", "assignee_ids": [member.id, admin.id] }),
        )
        .await;
    let only = owner
        .api
        .created_task_in(p, json!({ "title": "2", "assignee_ids": [member.id] }))
        .await;
    let untouched = owner
        .api
        .created_task_in(p, json!({ "title": "3", "assignee_ids": [admin.id] }))
        .await;
    let theirs = member.api.created_task_in(p, json!({ "title": "4" })).await;

    let r = admin.api.remove_member(p, member.id).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let removal = ctx.stream(p).await.pop().expect("removal");
    assert!(matches!(
        &removal.3,
        Event::Project(ProjectEvent::MemberRemoved(m)) if m.user_id == member.id
    ));
    for (task, left) in [(both, vec![admin.id]), (only, vec![])] {
        let last = ctx.stream(task).await.pop().expect("event");
        match &last.3 {
            Event::Task(TaskEvent::AssigneesChanged(a)) => assert_eq!(a.assignee_ids, left),
            other => panic!("{other:?}"),
        }
        assert_eq!(last.2, Some(removal.1), "caused by the removal");
        let stored: Vec<Uuid> =
            sqlx::query_scalar("SELECT assignee_ids FROM project_tasks WHERE task_id = $1")
                .bind(task)
                .fetch_one(&ctx.db)
                .await
                .expect("row");
        assert_eq!(stored, left);
    }
    assert_eq!(ctx.stream(untouched).await.len(), 1);
    assert_eq!(ctx.stream(theirs).await.len(), 1, "their own tasks stay");
    let r = member
        .api
        .tasks()
        .patch_task(theirs, &json!({ "title": "x" }))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r = owner
        .api
        .tasks()
        .patch_task(theirs, &json!({ "assignee_ids": [member.id] }))
        .await;
    assert_eq!(r.pointers(), vec!["/assignee_ids/0"], "{r:?}");
}

/// 20 writes by a member race their removal: every accepted write's event
/// comes before the removal's in the log, every refusal is a 404 (422 on
/// `/project_id` for a create), and no write of theirs comes after. Rounds
/// repeat (the member added back) until one mixes acceptances and refusals.
#[tokio::test]
async fn writes_racing_a_removal_commit_before_it_or_are_refused() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let admin = ctx.user("admin-").await;
    let member = ctx.user("member-").await;
    let p = ctx.team(&owner, &[(&admin, "admin")]).await;
    let mut tasks = Vec::new();
    for i in 0..4 {
        let body = json!({ "title": format!("t{i}") });
        tasks.push(owner.api.created_task_in(p, body).await);
    }
    let mut mixed = false;
    for round in 0..4u64 {
        owner.api.added(p, member.id, "member").await;
        let start: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
            .fetch_one(&ctx.db)
            .await
            .expect("position");
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let writes: Vec<_> = (0..20usize)
            .map(|i| {
                let api = member.api.clone();
                let task = tasks[i % tasks.len()];
                let done = done_tx.clone();
                tokio::spawn(async move {
                    // Spread around the removal: some before it, some after.
                    let wait = (i as u64) * (8 + 4 * round);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    let r = if i % 5 == 4 {
                        let body = json!({ "title": format!("new {i}"), "project_id": p });
                        api.tasks().create_task(&body).await
                    } else {
                        let body = json!({ "title": format!("write {round} {i}") });
                        api.tasks().patch_task(task, &body).await
                    };
                    let _ = done.send(());
                    (i, r)
                })
            })
            .collect();
        // Meanwhile the owner assigns them: each assignment lands before
        // the removal (which then takes it off, with an event) or is refused.
        let assigning: Vec<_> = tasks
            .iter()
            .enumerate()
            .map(|(i, task)| {
                let api = owner.api.clone();
                let (task, them, me) = (*task, member.id, owner.id);
                tokio::spawn(async move {
                    let wait = (i as u64) * (5 + round % 4);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    let body = json!({ "assignee_ids": [them, me] });
                    api.tasks().patch_task(task, &body).await
                })
            })
            .collect();
        // The removal goes out once a few writes are answered, while the
        // rest are in flight or yet to come.
        for _ in 0..4 {
            done_rx.recv().await;
        }
        let removal = admin.api.remove_member(p, member.id).await;
        assert_eq!(removal.status, StatusCode::NO_CONTENT, "{removal:?}");
        let mut accepted = 0;
        for w in writes {
            let (i, r) = w.await.expect("write task");
            match (r.status.as_u16(), i % 5 == 4) {
                (200, false) | (201, true) => accepted += 1,
                (404, false) => {}
                (422, true) => assert_eq!(r.pointers(), vec!["/project_id"], "{i}: {r:?}"),
                _ => panic!("write {i}: {r:?}"),
            }
        }
        for a in assigning {
            let r = a.await.expect("assign task");
            match r.status.as_u16() {
                200 => {}
                422 => assert_eq!(r.pointers(), vec!["/assignee_ids/0"], "{r:?}"),
                _ => panic!("assign: {r:?}"),
            }
        }
        let still: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM project_tasks WHERE project_id = $1 AND $2 = ANY(assignee_ids)",
        )
        .bind(p)
        .bind(member.id)
        .fetch_one(&ctx.db)
        .await
        .expect("assignments");
        assert_eq!(still, 0, "round {round}: a removed member is assigned");
        for task in &tasks {
            let last = ctx
                .stream(*task)
                .await
                .into_iter()
                .rev()
                .find_map(|e| match e.3 {
                    Event::Task(TaskEvent::AssigneesChanged(a)) => Some(a.assignee_ids),
                    _ => None,
                });
            assert!(
                !last.unwrap_or_default().contains(&member.id),
                "round {round}: task {task} still assigned in its stream"
            );
        }
        let removed_at: i64 = sqlx::query_scalar(
            "SELECT max(global_position) FROM events
              WHERE stream_id = $1 AND event_type = 'project.member_removed'",
        )
        .bind(p)
        .fetch_one(&ctx.db)
        .await
        .expect("removal event");
        let theirs: Vec<i64> = sqlx::query_scalar(
            "SELECT global_position FROM events
              WHERE actor = $1 AND stream_type = 'task' AND global_position > $2
              ORDER BY global_position",
        )
        .bind(member.id)
        .bind(start)
        .fetch_all(&ctx.db)
        .await
        .expect("their events");
        assert_eq!(
            theirs.len(),
            accepted,
            "round {round}: one event per acceptance"
        );
        assert!(
            theirs.iter().all(|g| *g < removed_at),
            "round {round}: accepted writes at {theirs:?}, the removal at {removed_at}"
        );
        // After the removal's answer, nothing of theirs is accepted.
        let r = member
            .api
            .tasks()
            .patch_task(tasks[0], &json!({ "title": "late" }))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
        eprintln!("round {round}: {accepted} of 20 writes accepted before the removal");
        if accepted > 0 && accepted < 20 {
            mixed = true;
            break;
        }
    }
    assert!(mixed, "no round had writes on both sides of the removal");
}

#[tokio::test]
async fn idempotent_project_writes_replay() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let friend = ctx.user("friend-").await;
    let first = owner
        .api
        .create_project(&json!({ "name": "Once" }))
        .idempotency_key("k1")
        .await;
    let again = owner
        .api
        .create_project(&json!({ "name": "Once" }))
        .idempotency_key("k1")
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.raw, again.raw);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let p = id_of(&first.body);
    let add = |key: &'static str| {
        owner
            .api
            .add_member(p, friend.id, "member")
            .idempotency_key(key)
    };
    let a = add("k2").await;
    let b = add("k2").await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert_eq!(a.raw, b.raw);
    let create = || {
        friend
            .api
            .tasks()
            .create_task(&json!({ "title": "once", "project_id": p }))
            .idempotency_key("t1")
    };
    let a = create().await;
    let b = create().await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert_eq!(a.raw, b.raw, "a create in a project replays");
    let r = friend
        .api
        .remove_member(p, friend.id)
        .idempotency_key("bye")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "leave: {r:?}");
    let r = friend
        .api
        .remove_member(p, friend.id)
        .idempotency_key("bye")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "replayed: {r:?}");
}

#[tokio::test]
async fn a_role_change_applies_to_the_next_write() {
    let ctx = setup().await;
    let owner = ctx.user("owner-").await;
    let user = ctx.user("user-").await;
    let p = ctx.team(&owner, &[(&user, "viewer")]).await;
    let task = owner.api.created_task_in(p, json!({ "title": "t" })).await;
    let write = || {
        user.api
            .tasks()
            .patch_task(task, &json!({ "title": Uuid::now_v7().to_string() }))
    };
    assert_eq!(write().await.status, StatusCode::FORBIDDEN);
    let r = owner
        .api
        .change_role(p, user.id, "member")
        .await
        .expect(StatusCode::OK, "promote");
    assert_eq!(r["role"], "member");
    assert_eq!(ctx.members(p).await[&user.id].0, "member");
    assert_eq!(write().await.status, StatusCode::OK);
    owner
        .api
        .change_role(p, user.id, "viewer")
        .await
        .expect(StatusCode::OK, "demote");
    assert_eq!(write().await.status, StatusCode::FORBIDDEN);
    let events = ctx.stream(p).await;
    assert!(matches!(
        &events.last().map(|e| &e.3),
        Some(Event::Project(ProjectEvent::MemberRoleChanged(c)))
            if c.user_id == user.id && c.to == events::ProjectRole::Viewer
    ));
}
