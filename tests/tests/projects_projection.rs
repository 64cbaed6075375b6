//! Project streams through the log: the live projector folds
//! `project-events` into `project_views` (members inside), the task views
//! follow `task.moved` and `task.assignees_changed`, and
//! `projector rebuild projects` rebuilds the same documents from the first
//! event.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use events::kafka::EnvelopeRecord;
use events::topics::Topics;
use events::{
    Event, EventEnvelope, EventMeta, Priority, ProjectCreated, ProjectEvent, ProjectMemberAdded,
    ProjectMemberRemoved, ProjectMemberRoleChanged, ProjectOwnerChanged, ProjectRole,
    TaskAssigneesChanged, TaskCreated, TaskEvent, TaskMoved, TaskStatus,
};
use futures::TryStreamExt;
use mongodb::bson::doc;
use projector::rebuild::{rebuild, RebuildOptions, Target};
use read_model::views::{Applied, ProjectView, TaskView, PROJECT_VIEWS, TASK_VIEWS};
use tests::{eventually, servers, Deployment};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn meta(actor: Uuid) -> EventMeta {
    EventMeta {
        actor,
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        occurred_at: Utc::now(),
    }
}

/// Appends `events` to stream `id` after `versions[id]`, as envelopes.
fn stream(
    versions: &mut BTreeMap<Uuid, u64>,
    id: Uuid,
    actor: Uuid,
    events: Vec<Event>,
) -> Vec<EventEnvelope> {
    let v = versions.entry(id).or_insert(0);
    events
        .into_iter()
        .map(|e| {
            *v += 1;
            EventEnvelope::new(id, *v, &e, meta(actor))
        })
        .collect()
}

async fn publish(topics: &Topics, envelopes: &[EventEnvelope]) {
    let producer = events::kafka::producer(&servers().kafka_brokers).expect("producer");
    for e in envelopes {
        let record = EnvelopeRecord::new(topics, e);
        producer
            .send(record.as_future_record(), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("publish");
    }
}

async fn all<V>(db: &mongodb::Database, collection: &str) -> Vec<V>
where
    V: serde::de::DeserializeOwned + Send + Sync + Unpin,
{
    db.collection::<V>(collection)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read")
}

/// The views a pure fold of `log` gives, by id.
fn folded_projects(log: &[EventEnvelope]) -> Vec<ProjectView> {
    let mut views: BTreeMap<String, ProjectView> = BTreeMap::new();
    for env in log
        .iter()
        .filter(|e| e.stream_type == events::StreamType::Project)
    {
        let id = env.stream_id.to_string();
        if let Ok(Applied::Advanced(v)) = read_model::views::apply_project(views.get(&id), env) {
            views.insert(id, v);
        }
    }
    views.into_values().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn project_streams_fold_into_project_views_and_a_rebuild_gives_the_same_documents() {
    let d = Deployment::fresh().await;
    let topics = Topics::with_prefix(d.topic_prefix.clone());
    events::kafka::ensure_topics(&servers().kafka_brokers, &topics)
        .await
        .expect("topics");
    let _projector = d.spawn_projector().await;
    let db = read_model::mongo::connect(&servers().mongodb_url, &d.mongodb_database)
        .await
        .expect("mongo");

    let (ann, bob, cat) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut versions = BTreeMap::new();
    let mut log = Vec::new();
    let mut projects = Vec::new();
    for n in 0..12 {
        let p = Uuid::now_v7();
        projects.push(p);
        let mut events: Vec<Event> = vec![
            ProjectEvent::Created(ProjectCreated {
                owner_id: ann,
                name: format!("project {n}"),
                description: String::new(),
            })
            .into(),
            ProjectEvent::MemberAdded(ProjectMemberAdded {
                user_id: bob,
                role: ProjectRole::Member,
            })
            .into(),
            ProjectEvent::MemberAdded(ProjectMemberAdded {
                user_id: cat,
                role: ProjectRole::Viewer,
            })
            .into(),
        ];
        if n % 3 == 0 {
            events.push(
                ProjectEvent::MemberRoleChanged(ProjectMemberRoleChanged {
                    user_id: cat,
                    from: ProjectRole::Viewer,
                    to: ProjectRole::Admin,
                })
                .into(),
            );
        }
        if n % 4 == 0 {
            events.push(ProjectEvent::MemberRemoved(ProjectMemberRemoved { user_id: bob }).into());
        }
        if n % 5 == 0 {
            events.push(
                ProjectEvent::OwnerChanged(ProjectOwnerChanged { from: ann, to: cat }).into(),
            );
        }
        if n == 11 {
            events.push(ProjectEvent::Deleted(Default::default()).into());
        }
        log.extend(stream(&mut versions, p, ann, events));
    }
    // A task created in one project, assigned, then moved to another.
    let task = Uuid::now_v7();
    log.extend(stream(
        &mut versions,
        task,
        bob,
        vec![
            TaskEvent::Created(TaskCreated {
                owner_id: bob,
                project_id: Some(projects[1]),
                assignee_ids: vec![bob],
                title: "ship it".into(),
                description: String::new(),
                status: TaskStatus::Todo,
                priority: Priority::High,
                due_at: None,
                tags: vec![],
            })
            .into(),
            TaskEvent::AssigneesChanged(TaskAssigneesChanged {
                assignee_ids: vec![bob, cat],
            })
            .into(),
            TaskEvent::Moved(TaskMoved {
                from: Some(projects[1]),
                to: Some(projects[2]),
            })
            .into(),
        ],
    ));
    publish(&topics, &log).await;

    let expected = folded_projects(&log);
    let live: Vec<ProjectView> = eventually(
        "every project view at its stream's last version",
        Duration::from_secs(60),
        || async {
            let have: Vec<ProjectView> = all(&db, PROJECT_VIEWS).await;
            (have == expected).then_some(have)
        },
    )
    .await;
    assert_eq!(live.len(), 12);
    let deleted: Vec<_> = live.iter().filter(|v| v.deleted).collect();
    assert_eq!(
        deleted.len(),
        1,
        "the deleted project stays as a flagged view"
    );
    let p0 = live
        .iter()
        .find(|v| v.id == projects[0].to_string())
        .unwrap();
    assert_eq!(p0.owner_id, cat.to_string());
    assert_eq!(p0.role_of(&ann.to_string()), Some(ProjectRole::Admin));
    assert_eq!(p0.role_of(&bob.to_string()), None);

    let task_view: TaskView = eventually("the task view", Duration::from_secs(60), || async {
        let views: Vec<TaskView> = all(&db, TASK_VIEWS).await;
        views.into_iter().find(|v| v.version == 3)
    })
    .await;
    assert_eq!(task_view.project_id, Some(projects[2].to_string()));
    assert_eq!(
        task_view.assignee_ids,
        vec![bob.to_string(), cat.to_string()]
    );

    let options = RebuildOptions {
        brokers: servers().kafka_brokers.clone(),
        topics: topics.clone(),
        target: Target::Projects,
        dry_run: false,
        progress: false,
        batch_size: 5,
    };
    let report = rebuild(&db, &options, CancellationToken::new())
        .await
        .expect("rebuild");
    assert!(report.swapped);
    assert_eq!(report.counts.poison, 0);
    assert_eq!(report.counts.gaps, 0);
    let rebuilt: Vec<ProjectView> = all(&db, PROJECT_VIEWS).await;
    assert_eq!(rebuilt, live, "the rebuilt views are the live ones");
}
