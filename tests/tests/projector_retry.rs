//! A batch the projector retries after a failure folds onto what the view
//! store holds now, never onto the views it remembers writing in the failed
//! attempt: a store that restarts can lose writes it had acknowledged.

use std::time::Duration;

use events::Role;
use mongodb::bson::{doc, Document};
use reqwest::StatusCode;
use serde_json::json;
use tests::clients::CommandClient;
use tests::{eventually, servers, System};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// The journal barrier that ends every batch is refused (a validator on its
/// collection), so the batch that created a task is retried again and
/// again after its view was written, each retry ending with the barrier
/// although it finds its view written. The view is then removed by hand,
/// as a store killed before journaling it would have lost it: the next
/// attempt must write it again. Once the barrier passes, the batch commits with the
/// view in place and the task's next event applies on top of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_batch_writes_again_a_view_the_store_lost_after_acknowledging_it() {
    let sys = System::start().await;
    let db = mongodb::Client::with_uri_str(&servers().mongodb_url)
        .await
        .expect("mongodb")
        .database(&sys.deployment.mongodb_database);
    let refuse_barrier = doc! {
        "$jsonSchema": { "properties": { "batches": { "bsonType": "string" } } }
    };
    if db
        .create_collection(projector::JOURNAL_BARRIER)
        .validator(refuse_barrier.clone())
        .await
        .is_err()
    {
        db.run_command(doc! {
            "collMod": projector::JOURNAL_BARRIER,
            "validator": refuse_barrier,
        })
        .await
        .expect("refuse the barrier");
    }

    let token = sys.deployment.token_for(Uuid::new_v4(), Role::User);
    let commands = CommandClient::new(&sys.command.url(""), &token);
    let (id, _) = commands
        .created(&json!({ "title": "written, then lost" }))
        .await;
    let id = id.to_string();

    let views = db.collection::<Document>("task_views");
    let version_of = |views: mongodb::Collection<Document>, id: String| async move {
        let view = views.find_one(doc! { "_id": &id }).await.ok()??;
        view.get_i64("version").ok()
    };
    eventually("the view written by the first attempt", WAIT, || {
        version_of(views.clone(), id.clone())
    })
    .await;
    // A retry that finds the view in place writes nothing, and must still
    // end with the barrier rather than commit: the batch keeps failing.
    let metrics_url = sys.projector.url("/metrics");
    eventually("the barrier to fail the batch twice", WAIT, || async {
        let failed = tests::metric_at(&metrics_url, "projector_errors_total").await?;
        (failed >= 2.0).then_some(())
    })
    .await;

    // Lost, as by a store killed before its journal had the write.
    for collection in ["task_views", "task_facts"] {
        db.collection::<Document>(collection)
            .delete_one(doc! { "_id": &id })
            .await
            .expect("lose the view");
    }
    let version = eventually("a later attempt to write the view again", WAIT, || {
        version_of(views.clone(), id.clone())
    })
    .await;
    assert_eq!(version, 1);

    db.run_command(doc! { "collMod": projector::JOURNAL_BARRIER, "validator": {} })
        .await
        .expect("let the barrier pass");
    commands
        .patch_task(&id, &json!({ "title": "and its next event" }))
        .await
        .expect(StatusCode::OK, "the task's next event");
    let at_2 = eventually("version 2 in the view", WAIT, || {
        let (views, id) = (views.clone(), id.clone());
        async move {
            let view = views.find_one(doc! { "_id": &id }).await.ok()??;
            (view.get_i64("version").ok()? == 2).then_some(view)
        }
    })
    .await;
    assert_eq!(at_2.get_str("title").expect("title"), "and its next event");
}
