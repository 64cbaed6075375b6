//! The read side of projects, for tests: query-api calls for projects, and
//! a [`Ledger`] that writes project and task streams straight into the
//! event store, each event together with the `project_members` rows
//! command-api keeps in the same transaction, so query-api (which decides
//! access from those rows) and the projector (which folds the relayed
//! events) see exactly what command-api would leave behind.
//!
//! ```ignore
//! let ledger = Ledger::open(&deployment).await;
//! let relay = ledger.relay(&deployment).await; // publishes the outbox
//! let (project, token) = ledger.project(ann, "Launch").await;
//! ledger.add_member(project, ann, bob, ProjectRole::Member).await;
//! ```

use chrono::{DateTime, Utc};
use events::store::{self, ExpectedVersion};
use events::{
    ConsistencyToken, Event, EventMeta, Priority, ProjectCreated, ProjectDeleted, ProjectEvent,
    ProjectMemberAdded, ProjectMemberRemoved, ProjectRole, Role, TaskAssigneesChanged, TaskCreated,
    TaskEvent, TaskMoved, TaskStatus, TaskStatusChanged, UserEvent, UserRegistered,
};
use mongodb::bson::{doc, Bson, Document};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clients::{Call, QueryClient};
use crate::Deployment;

/// query-api's project reads.
pub trait ProjectQueries {
    /// `GET /projects?{query}` (`query` may be empty).
    fn list_projects(&self, query: &str) -> Call;
    /// `GET /projects/{id}`.
    fn get_project(&self, id: impl std::fmt::Display) -> Call;
    /// `GET /projects/{id}/members`.
    fn members(&self, id: impl std::fmt::Display) -> Call;
}

impl ProjectQueries for QueryClient {
    fn list_projects(&self, query: &str) -> Call {
        if query.is_empty() {
            self.get("/projects")
        } else {
            self.get(&format!("/projects?{query}"))
        }
    }

    fn get_project(&self, id: impl std::fmt::Display) -> Call {
        self.get(&format!("/projects/{id}"))
    }

    fn members(&self, id: impl std::fmt::Display) -> Call {
        self.get(&format!("/projects/{id}/members"))
    }
}

/// Writes streams into one deployment's event store as command-api would.
#[derive(Clone)]
pub struct Ledger {
    pub pool: PgPool,
}

/// What the `project_members` table gets with an event.
enum Rows {
    None,
    Insert(Uuid, Uuid, ProjectRole),
    Delete(Uuid, Uuid),
    DeleteProject(Uuid),
}

/// A relay publishing the ledger's outbox to Kafka; stops when dropped.
pub struct Relay {
    stop: CancellationToken,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Ledger {
    /// Connects to the deployment's database (migrating it).
    pub async fn open(d: &Deployment) -> Ledger {
        Ledger {
            pool: store::connect_and_migrate(&d.database_url, 4)
                .await
                .expect("postgres for the ledger"),
        }
    }

    /// Creates the deployment's topics and starts publishing the outbox
    /// (the relay command-api runs), until the returned guard is dropped.
    pub async fn relay(&self, d: &Deployment) -> Relay {
        let topics = events::topics::Topics::with_prefix(d.topic_prefix.clone());
        let brokers = &crate::servers().kafka_brokers;
        events::kafka::ensure_topics(brokers, &topics)
            .await
            .expect("topics");
        let producer = events::kafka::producer(brokers).expect("producer");
        let relay = events::relay::OutboxRelay::new(
            self.pool.clone(),
            producer,
            topics,
            events::relay::RelayConfig::default(),
        );
        let stop = CancellationToken::new();
        tokio::spawn(relay.run(stop.clone()));
        Relay { stop }
    }

    /// Appends `events` to `stream` at `at` and changes the membership rows,
    /// in one transaction; returns the write's consistency token.
    async fn write(
        &self,
        stream: Uuid,
        actor: Uuid,
        at: DateTime<Utc>,
        events: &[Event],
        rows: Rows,
    ) -> String {
        let mut tx = self.pool.begin().await.expect("begin");
        let meta = EventMeta {
            actor,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            occurred_at: at,
        };
        let envelopes = store::append(&mut tx, stream, ExpectedVersion::Any, events, meta)
            .await
            .expect("append");
        match rows {
            Rows::None => {}
            Rows::Insert(project, user, role) => {
                sqlx::query(
                    "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, $3)",
                )
                .bind(project)
                .bind(user)
                .bind(role.as_str())
                .execute(&mut *tx)
                .await
                .expect("insert member");
            }
            Rows::Delete(project, user) => {
                sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
                    .bind(project)
                    .bind(user)
                    .execute(&mut *tx)
                    .await
                    .expect("delete member");
            }
            Rows::DeleteProject(project) => {
                sqlx::query("DELETE FROM project_members WHERE project_id = $1")
                    .bind(project)
                    .execute(&mut *tx)
                    .await
                    .expect("delete members");
            }
        }
        tx.commit().await.expect("commit");
        let last = envelopes.last().expect("an event");
        ConsistencyToken {
            stream_id: last.stream_id,
            version: last.version,
        }
        .to_string()
    }

    /// `user.registered` for `id` (what auth writes on registration).
    pub async fn user(&self, id: Uuid, email: &str, display_name: &str) -> String {
        let e = Event::User(UserEvent::Registered(UserRegistered {
            email: email.to_owned(),
            display_name: display_name.to_owned(),
            role: Role::User,
        }));
        self.write(id, id, Utc::now(), &[e], Rows::None).await
    }

    /// `project.created` by `owner`, who becomes its owner row.
    pub async fn project(&self, owner: Uuid, name: &str) -> (Uuid, String) {
        let id = Uuid::now_v7();
        let e = Event::Project(ProjectEvent::Created(ProjectCreated {
            owner_id: owner,
            name: name.to_owned(),
            description: format!("about {name}"),
        }));
        let token = self
            .write(
                id,
                owner,
                Utc::now(),
                &[e],
                Rows::Insert(id, owner, ProjectRole::Owner),
            )
            .await;
        (id, token)
    }

    /// An event on a project stream, without row changes (archive, update).
    pub async fn project_event(&self, project: Uuid, actor: Uuid, event: ProjectEvent) -> String {
        self.write(
            project,
            actor,
            Utc::now(),
            &[Event::Project(event)],
            Rows::None,
        )
        .await
    }

    pub async fn add_member(
        &self,
        project: Uuid,
        actor: Uuid,
        user: Uuid,
        role: ProjectRole,
    ) -> String {
        let e = Event::Project(ProjectEvent::MemberAdded(ProjectMemberAdded {
            user_id: user,
            role,
        }));
        self.write(
            project,
            actor,
            Utc::now(),
            &[e],
            Rows::Insert(project, user, role),
        )
        .await
    }

    pub async fn remove_member(&self, project: Uuid, actor: Uuid, user: Uuid) -> String {
        let e = Event::Project(ProjectEvent::MemberRemoved(ProjectMemberRemoved {
            user_id: user,
        }));
        self.write(
            project,
            actor,
            Utc::now(),
            &[e],
            Rows::Delete(project, user),
        )
        .await
    }

    pub async fn delete_project(&self, project: Uuid, actor: Uuid) -> String {
        let e = Event::Project(ProjectEvent::Deleted(ProjectDeleted {}));
        self.write(
            project,
            actor,
            Utc::now(),
            &[e],
            Rows::DeleteProject(project),
        )
        .await
    }

    /// `task.created` (schema 3) by `owner` at `at`; returns the task id and token.
    pub async fn task_at(
        &self,
        owner: Uuid,
        project: Option<Uuid>,
        assignees: &[Uuid],
        title: &str,
        priority: Priority,
        at: DateTime<Utc>,
    ) -> (Uuid, String) {
        let id = Uuid::now_v7();
        let e = Event::Task(TaskEvent::Created(TaskCreated {
            owner_id: owner,
            project_id: project,
            assignee_ids: assignees.to_vec(),
            title: title.to_owned(),
            description: String::new(),
            status: TaskStatus::Todo,
            priority,
            due_at: None,
            tags: vec![],
        }));
        let token = self.write(id, owner, at, &[e], Rows::None).await;
        (id, token)
    }

    /// [`Ledger::task_at`] now, medium priority.
    pub async fn task(
        &self,
        owner: Uuid,
        project: Option<Uuid>,
        assignees: &[Uuid],
        title: &str,
    ) -> (Uuid, String) {
        self.task_at(
            owner,
            project,
            assignees,
            title,
            Priority::Medium,
            Utc::now(),
        )
        .await
    }

    pub async fn status_at(
        &self,
        task: Uuid,
        actor: Uuid,
        from: TaskStatus,
        to: TaskStatus,
        at: DateTime<Utc>,
    ) -> String {
        let e = Event::Task(TaskEvent::StatusChanged(TaskStatusChanged { from, to }));
        self.write(task, actor, at, &[e], Rows::None).await
    }

    pub async fn assign(&self, task: Uuid, actor: Uuid, assignees: &[Uuid]) -> String {
        let e = Event::Task(TaskEvent::AssigneesChanged(TaskAssigneesChanged {
            assignee_ids: assignees.to_vec(),
        }));
        self.write(task, actor, Utc::now(), &[e], Rows::None).await
    }

    pub async fn move_task(
        &self,
        task: Uuid,
        actor: Uuid,
        from: Option<Uuid>,
        to: Option<Uuid>,
    ) -> String {
        let e = Event::Task(TaskEvent::Moved(TaskMoved { from, to }));
        self.write(task, actor, Utc::now(), &[e], Rows::None).await
    }

    /// Puts a `project_members` row back without an event (a stale row, to
    /// show that a deleted project's view is never served).
    pub async fn stale_row(&self, project: Uuid, user: Uuid, role: ProjectRole) {
        sqlx::query("INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, $3)")
            .bind(project)
            .bind(user)
            .bind(role.as_str())
            .execute(&self.pool)
            .await
            .expect("insert a stale row");
    }
}

/// Waits until the views (task, project or user) hold `token`'s version.
pub async fn projected(db: &mongodb::Database, token: &str, within: std::time::Duration) {
    let token: ConsistencyToken = token.parse().expect("a consistency token");
    let id = token.stream_id.to_string();
    crate::eventually(&format!("the views to reach {token}"), within, || {
        let id = id.clone();
        async move {
            for collection in ["task_views", "project_views", "users"] {
                let found = db
                    .collection::<Document>(collection)
                    .find_one(doc! { "_id": &id })
                    .await
                    .ok()
                    .flatten();
                if let Some(d) = found {
                    let v = match d.get("version") {
                        Some(Bson::Int64(v)) => *v as u64,
                        Some(Bson::Int32(v)) => *v as u64,
                        _ => 0,
                    };
                    return (v >= token.version).then_some(());
                }
            }
            None
        }
    })
    .await
}
