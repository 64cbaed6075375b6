//! Attachments end to end: real auth, command-api, projector and
//! query-api, and the real S3-compatible store (versitygw from
//! `scripts/infra`), one bucket per test. Bytes go up and come down through
//! the presigned URLs the APIs hand out, compared by SHA-256; what is in
//! the store is checked by listing the bucket.

use std::sync::Arc;
use std::time::Duration;

use objects::{sha256_hex, ObjectStore, S3Settings};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tests::clients::{email, id_of, Api, AuthClient, CommandClient, QueryClient, Reply};
use tests::faults::{url_addr, via, Relay};
use tests::project_commands::ProjectCommands;
use tests::{eventually, servers, unique, Deployment, Running};
use uuid::Uuid;

// ------------------------------------------------------------------ harness

struct Ctx {
    _dep: Deployment,
    _auth: Running,
    cmd: Running,
    _projector: Running,
    query: Running,
    auth: AuthClient,
    /// The test's bucket, as the services' own address reaches it.
    store: ObjectStore,
    /// The relay between the services and the store, when the test cuts it.
    relay: Option<Arc<Relay>>,
}

struct User {
    id: Uuid,
    token: String,
}

/// The store's address as the services reach it, and as clients do:
/// another host name for the same server, so a URL naming the internal one
/// would be visible.
fn public_url() -> String {
    servers().s3_url.replace("127.0.0.1", "localhost")
}

struct Options {
    command: Box<dyn FnOnce(&mut command_api::Config)>,
    presign: Duration,
    relay: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            command: Box::new(|_| {}),
            presign: Duration::from_secs(300),
            relay: false,
        }
    }
}

async fn setup() -> Ctx {
    setup_with(Options::default()).await
}

async fn setup_with(options: Options) -> Ctx {
    let dep = Deployment::fresh().await;
    let bucket = unique("tsa");
    let mut s3 = S3Settings {
        public_url: public_url(),
        presign_expiry: options.presign,
        ..dep.s3_bucket(&bucket)
    };
    let store = ObjectStore::new(&s3).expect("test store");
    let relay = if options.relay {
        let relay = Relay::start(url_addr(&s3.url)).await;
        s3.url = via(&s3.url, relay.addr());
        Some(relay)
    } else {
        None
    };
    let auth = dep.spawn_auth().await;
    let jwks = auth.url("/.well-known/jwks.json");
    let mut command = dep.command_api_config(&jwks);
    command.s3 = s3.clone();
    // Objects go as soon as their URL expired, so tests see them go; the
    // test of the grace sets one.
    command.attachments.upload_grace = Duration::ZERO;
    (options.command)(&mut command);
    let cmd = dep.spawn_command_api_with(command).await;
    let projector = dep.spawn_projector().await;
    let query = dep
        .spawn_query_api_with(query_api::Config {
            s3,
            ..dep.query_api_config(&jwks)
        })
        .await;
    store.ensure_bucket().await.expect("test bucket");
    Ctx {
        auth: AuthClient::new(&auth.base),
        _dep: dep,
        _auth: auth,
        cmd,
        _projector: projector,
        query,
        store,
        relay,
    }
}

/// What a client declares for `bytes`.
fn declared(filename: &str, content_type: &str, bytes: &[u8]) -> Value {
    json!({
        "filename": filename,
        "content_type": content_type,
        "size": bytes.len(),
        "sha256": sha256_hex(bytes),
    })
}

/// A client of the object store that follows no redirect (the store's
/// answers are read as they are).
fn raw_http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Sends `bytes` as the upload instructions say.
async fn put(upload: &Value, bytes: Vec<u8>) -> reqwest::Response {
    put_with(upload, bytes, &[]).await
}

/// Sends `bytes` as the upload instructions say, with `extra` headers.
async fn put_with(upload: &Value, bytes: Vec<u8>, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut req = raw_http().put(upload["url"].as_str().expect("url"));
    for (name, value) in upload["headers"].as_object().expect("headers") {
        // reqwest sets Content-Length from the body.
        if !name.eq_ignore_ascii_case("content-length") {
            req = req.header(name, value.as_str().expect("header"));
        }
    }
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    req.body(bytes).send().await.expect("PUT to the store")
}

impl Ctx {
    async fn user(&self, prefix: &str) -> User {
        let email = email(prefix);
        let id = id_of(&self.auth.registered(&email).await);
        User {
            id,
            token: self.auth.access(&email).await,
        }
    }

    fn commands(&self, u: &User) -> CommandClient {
        CommandClient::new(&self.cmd.base, &u.token)
    }

    fn projects(&self, u: &User) -> ProjectCommands {
        ProjectCommands::new(&self.cmd.base, &u.token)
    }

    fn cmd_api(&self, u: &User) -> Api {
        self.commands(u).api().clone()
    }

    fn query_api(&self, u: &User) -> Api {
        QueryClient::new(&self.query.base, &u.token).api().clone()
    }

    async fn task(&self, u: &User) -> Uuid {
        self.commands(u)
            .created(&json!({"title": "with files"}))
            .await
            .0
    }

    async fn start_upload(&self, u: &User, task: Uuid, body: &Value) -> Reply {
        self.cmd_api(u)
            .request(Method::POST, &format!("/tasks/{task}/attachments"))
            .json(body)
            .await
    }

    async fn complete(&self, u: &User, task: Uuid, attachment: Uuid) -> Reply {
        self.cmd_api(u)
            .request(
                Method::POST,
                &format!("/tasks/{task}/attachments/{attachment}/complete"),
            )
            .await
    }

    async fn remove(&self, u: &User, task: Uuid, attachment: Uuid) -> Reply {
        self.cmd_api(u)
            .request(
                Method::DELETE,
                &format!("/tasks/{task}/attachments/{attachment}"),
            )
            .await
    }

    async fn list(&self, u: &User, task: Uuid, token: Option<&str>) -> Reply {
        let mut call = self
            .query_api(u)
            .request(Method::GET, &format!("/tasks/{task}/attachments"));
        if let Some(t) = token {
            call = call.consistency_token(t);
        }
        call.await
    }

    /// `GET …/download` without following the redirect.
    async fn download(&self, u: &User, task: Uuid, attachment: Uuid) -> reqwest::Response {
        raw_http()
            .get(
                self.query
                    .url(&format!("/tasks/{task}/attachments/{attachment}/download")),
            )
            .bearer_auth(&u.token)
            .send()
            .await
            .expect("download")
    }

    /// Declares, uploads and completes `bytes`; returns the attachment id
    /// and the completion's consistency token.
    async fn attached(&self, u: &User, task: Uuid, name: &str, bytes: &[u8]) -> (Uuid, String) {
        let started = self
            .start_upload(u, task, &declared(name, "text/plain", bytes))
            .await
            .expect(StatusCode::CREATED, "start an upload");
        let r = put(&started["upload"], bytes.to_vec()).await;
        assert!(r.status().is_success(), "PUT: {}", r.status());
        let id = id_of(&started);
        let done = self.complete(u, task, id).await;
        let token = done
            .consistency_token()
            .unwrap_or_else(|| panic!("complete: {done:?}"))
            .to_owned();
        done.expect(StatusCode::OK, "complete");
        (id, token)
    }

    /// The keys in the test's bucket under `task`'s prefix.
    async fn objects_of(&self, task: Uuid) -> Vec<String> {
        self.store
            .list(&format!("tasks/{task}/"))
            .await
            .expect("list the bucket")
    }
}

fn bytes_of(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn an_upload_through_presigned_urls_is_listed_once_completed_and_downloads_the_same_bytes() {
    let ctx = setup().await;
    let ann = ctx.user("ann").await;
    let (task, created) = ctx
        .commands(&ann)
        .created(&json!({"title": "with files"}))
        .await;
    let created = created.consistency_token().unwrap().to_owned();
    let bytes = bytes_of(300_000, 7);
    let started = ctx
        .start_upload(
            &ann,
            task,
            &declared("report \"v2\" é.html", "text/html", &bytes),
        )
        .await
        .expect(StatusCode::CREATED, "start an upload");
    let id = id_of(&started);
    let upload = &started["upload"];
    assert_eq!(upload["method"], "PUT");
    let url = upload["url"].as_str().unwrap();
    // Built for the public address, never the internal one.
    assert!(url.starts_with(&public_url()), "{url}");
    assert!(!url.contains("127.0.0.1"), "{url}");
    assert_eq!(upload["headers"]["Content-Length"], bytes.len().to_string());

    let r = put(upload, bytes.clone()).await;
    assert!(r.status().is_success(), "PUT: {}", r.status());
    // Uploaded but not completed: listed nowhere.
    let listed = ctx
        .list(&ann, task, Some(&created))
        .await
        .expect(StatusCode::OK, "list");
    assert_eq!(listed["items"], json!([]));

    let done = ctx.complete(&ann, task, id).await;
    let token = done.consistency_token().unwrap().to_owned();
    let resource = done.expect(StatusCode::OK, "complete");
    assert_eq!(resource["id"], id.to_string());
    assert_eq!(resource["size"], bytes.len());
    assert_eq!(resource["sha256"], sha256_hex(&bytes));
    assert_eq!(resource["uploaded_by"], ann.id.to_string());
    // Completing again answers the same and records nothing more.
    let again = ctx.complete(&ann, task, id).await;
    assert_eq!(again.etag(), format!("\"{}\"", 2));
    assert_eq!(again.expect(StatusCode::OK, "complete again"), resource);

    let listed = ctx
        .list(&ann, task, Some(&token))
        .await
        .expect(StatusCode::OK, "list");
    assert_eq!(listed["items"], json!([resource]));
    let read = ctx
        .query_api(&ann)
        .request(Method::GET, &format!("/tasks/{task}"))
        .consistency_token(&token)
        .await
        .expect(StatusCode::OK, "the task");
    assert_eq!(read["attachments"], json!([resource]));

    let redirect = ctx.download(&ann, task, id).await;
    assert_eq!(redirect.status(), StatusCode::FOUND);
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&public_url()), "{location}");
    let got = raw_http().get(&location).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    let disposition = got.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''report%20%22v2%22%20%C3%A9.html"),
        "{disposition}"
    );
    assert_eq!(got.headers()["content-type"], "text/html");
    let body = got.bytes().await.unwrap();
    assert_eq!(sha256_hex(&body), sha256_hex(&bytes));

    // The upload URL still works after completion, and takes headers it
    // does not sign: the same bytes sent again with a Content-Encoding are
    // still served as the bytes themselves, never to be decoded.
    let again = put_with(upload, bytes.clone(), &[("content-encoding", "gzip")]).await;
    assert!(again.status().is_success(), "{}", again.status());
    let redirect = ctx.download(&ann, task, id).await;
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let got = raw_http().get(&location).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    let encoding = got
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        matches!(encoding.as_deref(), None | Some("identity")),
        "{encoding:?}"
    );
}

#[tokio::test]
async fn a_wrong_size_or_checksum_is_refused_at_upload_or_at_completion() {
    let ctx = setup().await;
    let ann = ctx.user("ann").await;
    let task = ctx.task(&ann).await;
    let bytes = bytes_of(10_000, 1);
    let started = ctx
        .start_upload(&ann, task, &declared("a.txt", "text/plain", &bytes))
        .await
        .expect(StatusCode::CREATED, "start");
    let id = id_of(&started);

    // Completing before the bytes are there.
    let early = ctx.complete(&ann, task, id).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{early:?}");
    assert!(early.problem_type().ends_with("upload-missing"));

    // Another length, and the same length with other bytes: the store
    // refuses both (the length and the checksum are signed).
    let shorter = put(&started["upload"], bytes[..9_999].to_vec()).await;
    assert!(shorter.status().is_client_error(), "{}", shorter.status());
    let mut other = bytes.clone();
    other[0] ^= 1;
    let tampered = put(&started["upload"], other.clone()).await;
    assert!(tampered.status().is_client_error(), "{}", tampered.status());
    assert_eq!(ctx.objects_of(task).await, Vec::<String>::new());

    // Bytes put there by someone holding the store's keys (not through the
    // URL): completion checks them itself.
    let key = objects::attachment_key(task, id);
    let direct = raw_http()
        .put(ctx.store.presign_put_internal(&key, None))
        .body(other)
        .send()
        .await
        .unwrap();
    assert!(direct.status().is_success(), "{}", direct.status());
    let refused = ctx.complete(&ann, task, id).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{refused:?}"
    );
    assert!(refused.problem_type().ends_with("upload-mismatch"));
    let direct = raw_http()
        .put(ctx.store.presign_put_internal(&key, None))
        .body(bytes[..100].to_vec())
        .send()
        .await
        .unwrap();
    assert!(direct.status().is_success());
    let refused = ctx.complete(&ann, task, id).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{refused:?}"
    );

    // The right bytes with a header the URL does not sign: the store keeps
    // the Content-Encoding, which downloads would be decoded by, so
    // completion refuses the object.
    let encoded = put_with(
        &started["upload"],
        bytes.clone(),
        &[("content-encoding", "gzip")],
    )
    .await;
    assert!(encoded.status().is_success(), "{}", encoded.status());
    let refused = ctx.complete(&ann, task, id).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{refused:?}"
    );
    assert!(refused.body["detail"]
        .as_str()
        .unwrap()
        .contains("Content-Encoding"));

    // The right bytes through the URL: accepted.
    let ok = put(&started["upload"], bytes.clone()).await;
    assert!(ok.status().is_success(), "{}", ok.status());
    ctx.complete(&ann, task, id)
        .await
        .expect(StatusCode::OK, "complete");
}

#[tokio::test]
async fn expired_urls_are_refused() {
    let ctx = setup_with(Options {
        presign: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let ann = ctx.user("ann").await;
    let task = ctx.task(&ann).await;
    let bytes = bytes_of(1000, 3);
    let late = ctx
        .start_upload(&ann, task, &declared("late.txt", "text/plain", &bytes))
        .await
        .expect(StatusCode::CREATED, "start");
    let (id, _) = ctx.attached(&ann, task, "b.txt", &bytes).await;
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = put(&late["upload"], bytes.clone()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "an expired upload URL");

    let location = eventually(
        "the download's redirect",
        Duration::from_secs(10),
        || async {
            let r = ctx.download(&ann, task, id).await;
            (r.status() == StatusCode::FOUND)
                .then(|| r.headers()["location"].to_str().unwrap().to_owned())
        },
    )
    .await;
    assert_eq!(
        raw_http().get(&location).send().await.unwrap().status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = raw_http().get(&location).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "an expired download URL");
}

#[tokio::test]
async fn a_non_member_gets_404_everywhere_and_a_viewer_may_only_read() {
    let ctx = setup().await;
    let (owner, viewer, outsider) = (
        ctx.user("owner").await,
        ctx.user("viewer").await,
        ctx.user("outsider").await,
    );
    let team = ctx.projects(&owner).created_project("Team").await;
    ctx.projects(&owner).added(team, viewer.id, "viewer").await;
    let task = ctx
        .projects(&owner)
        .created_task_in(team, json!({"title": "shared"}))
        .await;
    let bytes = bytes_of(5000, 9);
    let (id, token) = ctx.attached(&owner, task, "spec.txt", &bytes).await;
    let pending = ctx
        .start_upload(&owner, task, &declared("p.txt", "text/plain", &bytes))
        .await
        .expect(StatusCode::CREATED, "a pending upload");
    let pending = id_of(&pending);

    // What a missing task answers, for comparison.
    let missing = Uuid::now_v7();
    let cmd_missing = ctx
        .start_upload(&outsider, missing, &declared("x.txt", "text/plain", &bytes))
        .await;
    assert_eq!(cmd_missing.status, StatusCode::NOT_FOUND);
    let query_missing = ctx.list(&outsider, missing, None).await;
    assert_eq!(query_missing.status, StatusCode::NOT_FOUND);

    let same = |r: Reply, want: &Reply, what: &str| {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{what}: {r:?}");
        assert_eq!(r.body, want.body, "{what}");
    };
    same(
        ctx.start_upload(&outsider, task, &declared("x.txt", "text/plain", &bytes))
            .await,
        &cmd_missing,
        "create",
    );
    same(
        ctx.complete(&outsider, task, pending).await,
        &cmd_missing,
        "complete",
    );
    same(
        ctx.complete(&outsider, task, id).await,
        &cmd_missing,
        "complete a completed one",
    );
    same(
        ctx.remove(&outsider, task, id).await,
        &cmd_missing,
        "delete",
    );
    ctx.list(&owner, task, Some(&token))
        .await
        .expect(StatusCode::OK, "caught up");
    same(
        ctx.list(&outsider, task, None).await,
        &query_missing,
        "list",
    );
    let d = ctx.download(&outsider, task, id).await;
    assert_eq!(d.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        d.json::<Value>().await.unwrap(),
        query_missing.body,
        "download"
    );
    let read = ctx
        .query_api(&outsider)
        .request(Method::GET, &format!("/tasks/{task}"))
        .await;
    same(read, &query_missing, "the task");

    // A viewer reads and downloads, but may not attach or delete.
    let listed = ctx
        .list(&viewer, task, None)
        .await
        .expect(StatusCode::OK, "viewer lists");
    assert_eq!(listed["items"][0]["id"], id.to_string());
    assert_eq!(
        ctx.download(&viewer, task, id).await.status(),
        StatusCode::FOUND
    );
    let r = ctx
        .start_upload(&viewer, task, &declared("v.txt", "text/plain", &bytes))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(
        ctx.remove(&viewer, task, id).await.status,
        StatusCode::FORBIDDEN
    );
    // Someone else's pending upload is no one else's to complete.
    let r = ctx.complete(&viewer, task, pending).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");

    // A member removed from the project, completing their own upload
    // (whose bytes never arrived), learns nothing of the store: the task
    // is missing to them.
    let member = ctx.user("member").await;
    ctx.projects(&owner).added(team, member.id, "member").await;
    let theirs = ctx
        .start_upload(&member, task, &declared("m.txt", "text/plain", &bytes))
        .await
        .expect(StatusCode::CREATED, "the member's upload");
    let r = ctx.projects(&owner).remove_member(team, member.id).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    same(
        ctx.complete(&member, task, id_of(&theirs)).await,
        &cmd_missing,
        "complete after removal",
    );
    same(
        ctx.remove(&member, task, id_of(&theirs)).await,
        &cmd_missing,
        "cancel after removal",
    );
}

#[tokio::test]
async fn limits_and_bad_declarations_are_422_naming_what_is_wrong() {
    let ctx = setup_with(Options {
        command: Box::new(|c| {
            c.attachments.max_bytes = 1000;
            c.attachments.max_per_task = 2;
            c.attachments.max_bytes_per_user = 2500;
            c.attachments.upload_grace = Duration::from_secs(900);
        }),
        ..Options::default()
    })
    .await;
    let ann = ctx.user("ann").await;
    let task = ctx.task(&ann).await;
    let small = bytes_of(900, 1);
    let limit = |r: Reply, name: &str| {
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {r:?}");
        assert!(r.problem_type().ends_with("attachment-limit"), "{r:?}");
        assert_eq!(r.body["limit"], name, "{r:?}");
    };
    limit(
        ctx.start_upload(
            &ann,
            task,
            &declared("big.bin", "text/plain", &bytes_of(1001, 0)),
        )
        .await,
        "max_bytes",
    );
    for (field, body) in [
        ("/filename", declared("a/b.txt", "text/plain", &small)),
        ("/filename", declared("..", "text/plain", &small)),
        ("/filename", declared("a\u{7}.txt", "text/plain", &small)),
        (
            "/filename",
            declared(&"x".repeat(256), "text/plain", &small),
        ),
        ("/filename", declared("", "text/plain", &small)),
        (
            "/content_type",
            declared("a.exe", "application/x-msdownload", &small),
        ),
        (
            "/content_type",
            declared("a.txt", "text/plain; charset=utf-8", &small),
        ),
        (
            "/sha256",
            json!({"filename": "a", "content_type": "text/plain", "size": 1, "sha256": "abc"}),
        ),
    ] {
        let r = ctx.start_upload(&ann, task, &body).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {r:?}");
        assert_eq!(r.pointers(), vec![field.to_owned()], "{r:?}");
    }
    // Two per task, pending ones counted.
    ctx.start_upload(&ann, task, &declared("1.txt", "text/plain", &small))
        .await
        .expect(StatusCode::CREATED, "first");
    ctx.attached(&ann, task, "2.txt", &small).await;
    limit(
        ctx.start_upload(&ann, task, &declared("3.txt", "text/plain", &small))
            .await,
        "max_per_task",
    );
    // 2,500 bytes per user over every task: 1,800 taken, 900 more is too many.
    let other = ctx.task(&ann).await;
    limit(
        ctx.start_upload(&ann, other, &declared("4.txt", "text/plain", &small))
            .await,
        "max_bytes_per_user",
    );
    let last = ctx
        .start_upload(
            &ann,
            other,
            &declared("5.txt", "text/plain", &bytes_of(700, 2)),
        )
        .await
        .expect(StatusCode::CREATED, "within the user's bytes");
    // Cancelled, its bytes count until its object is gone from the store
    // (once nothing sent to its URL can still arrive): cancelling and
    // starting again cannot store more than the cap.
    let r = ctx.remove(&ann, other, id_of(&last)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    limit(
        ctx.start_upload(
            &ann,
            other,
            &declared("6.txt", "text/plain", &bytes_of(700, 3)),
        )
        .await,
        "max_bytes_per_user",
    );
}

#[tokio::test]
async fn a_pending_upload_can_be_cancelled_and_no_one_holds_a_tasks_slots_for_long() {
    let ctx = setup_with(Options {
        command: Box::new(|c| {
            c.attachments.max_per_task = 3;
            c.attachments.max_pending_per_user = 2;
        }),
        presign: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let (ann, bob) = (ctx.user("ann").await, ctx.user("bob").await);
    let team = ctx.projects(&ann).created_project("Team").await;
    ctx.projects(&ann).added(team, bob.id, "member").await;
    let task = ctx
        .projects(&ann)
        .created_task_in(team, json!({"title": "shared"}))
        .await;
    let bytes = bytes_of(3000, 4);
    let start = |u: &User, name: &str| {
        let body = declared(name, "text/plain", &bytes);
        let api = ctx.cmd_api(u);
        async move {
            api.request(Method::POST, &format!("/tasks/{task}/attachments"))
                .json(&body)
                .await
        }
    };

    // Bob starts two uploads and never completes them; a third is refused
    // by the per-user cap, so a slot of the task is still free for Ann.
    let first = id_of(&start(&bob, "1.txt").await.expect(StatusCode::CREATED, "1"));
    let second = start(&bob, "2.txt").await.expect(StatusCode::CREATED, "2");
    let r = start(&bob, "3.txt").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{r:?}");
    assert_eq!(r.body["limit"], "max_pending_per_user", "{r:?}");
    let (anns, _) = ctx.attached(&ann, task, "a.txt", &bytes).await;

    // The task is full until one of Bob's uploads is cancelled; any writer
    // of the task may cancel it, as they may delete an attachment.
    let r = start(&ann, "b.txt").await;
    assert_eq!(r.body["limit"], "max_per_task", "{r:?}");
    assert!(put(&second["upload"], bytes.clone())
        .await
        .status()
        .is_success());
    let r = ctx.remove(&ann, task, id_of(&second)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let r = ctx.remove(&bob, task, first).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    for cancelled in [first, id_of(&second)] {
        let r = ctx.remove(&bob, task, cancelled).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "cancel twice: {r:?}");
        let r = ctx.complete(&bob, task, cancelled).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "complete cancelled: {r:?}");
    }
    start(&bob, "4.txt")
        .await
        .expect(StatusCode::CREATED, "Bob's slots are free again");

    // The cancelled upload's object leaves the bucket once its URL expired;
    // the completed attachment's stays, and is the only one listed.
    let anns_key = objects::attachment_key(task, anns);
    eventually(
        "the cancelled upload's object to go",
        Duration::from_secs(15),
        || async { (ctx.objects_of(task).await == vec![anns_key.clone()]).then_some(()) },
    )
    .await;
    let r = ctx.remove(&ann, task, anns).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let listed = ctx
        .list(&ann, task, r.consistency_token())
        .await
        .expect(StatusCode::OK, "list");
    assert_eq!(listed["items"], json!([]), "{listed}");
}

#[tokio::test]
async fn abandoned_uploads_and_the_objects_of_deleted_attachments_tasks_and_projects_leave_the_bucket(
) {
    let ctx = setup_with(Options {
        command: Box::new(|c| {
            c.attachments.upload_ttl = Duration::from_secs(1);
            c.attachments.sweep_every = Some(Duration::from_secs(1));
        }),
        presign: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let ann = ctx.user("ann").await;
    let bytes = bytes_of(2000, 5);
    let gone = |task: Uuid, what: &'static str| {
        let ctx = &ctx;
        async move {
            eventually(what, Duration::from_secs(15), || async {
                ctx.objects_of(task).await.is_empty().then_some(())
            })
            .await
        }
    };

    // Uploaded, never completed.
    let abandoned = ctx.task(&ann).await;
    let started = ctx
        .start_upload(&ann, abandoned, &declared("a.txt", "text/plain", &bytes))
        .await
        .expect(StatusCode::CREATED, "start");
    assert!(put(&started["upload"], bytes.clone())
        .await
        .status()
        .is_success());
    assert_eq!(ctx.objects_of(abandoned).await.len(), 1);
    gone(abandoned, "the abandoned upload's object to go").await;
    let r = ctx.complete(&ann, abandoned, id_of(&started)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");

    // A removed attachment; the other one stays.
    let task = ctx.task(&ann).await;
    let (kept, _) = ctx.attached(&ann, task, "kept.txt", &bytes).await;
    let (removed, _) = ctx.attached(&ann, task, "removed.txt", &bytes).await;
    let r = ctx.remove(&ann, task, removed).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let token = r.consistency_token().unwrap().to_owned();
    assert_eq!(
        ctx.remove(&ann, task, removed).await.status,
        StatusCode::NOT_FOUND
    );
    eventually(
        "the removed object to go",
        Duration::from_secs(15),
        || async {
            (ctx.objects_of(task).await == vec![objects::attachment_key(task, kept)]).then_some(())
        },
    )
    .await;
    let listed = ctx
        .list(&ann, task, Some(&token))
        .await
        .expect(StatusCode::OK, "list");
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["id"], kept.to_string());

    // A deleted task.
    ctx.commands(&ann).delete_task(task).await;
    gone(task, "the deleted task's objects to go").await;

    // A deleted project's tasks.
    let team = ctx.projects(&ann).created_project("Team").await;
    let in_team = ctx
        .projects(&ann)
        .created_task_in(team, json!({"title": "t"}))
        .await;
    ctx.attached(&ann, in_team, "t.txt", &bytes).await;
    assert_eq!(ctx.objects_of(in_team).await.len(), 1);
    let r = ctx.projects(&ann).delete_project(team).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    gone(in_team, "the deleted project's objects to go").await;

    // An object no row names (say, a PUT that landed after its object was
    // deleted) is swept once no upload can still be arriving; a completed
    // attachment's object, and keys that are not attachments', stay.
    let task = ctx.task(&ann).await;
    let (kept, _) = ctx.attached(&ann, task, "kept.txt", &bytes).await;
    let orphan = objects::attachment_key(task, Uuid::now_v7());
    let foreign = format!("notes/{}", Uuid::now_v7());
    for key in [&orphan, &foreign] {
        let r = raw_http()
            .put(ctx.store.presign_put_internal(key, None))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    eventually(
        "the orphan to be swept",
        Duration::from_secs(20),
        || async {
            (ctx.objects_of(task).await == vec![objects::attachment_key(task, kept)]).then_some(())
        },
    )
    .await;
    assert_eq!(ctx.store.list("notes/").await.unwrap(), vec![foreign]);
}

#[tokio::test]
async fn with_the_store_down_the_api_answers_503_and_nothing_half_done_is_visible() {
    // A removed object is deleted once its upload URL has expired: short
    // URLs, so that the test sees it go.
    let ctx = setup_with(Options {
        relay: true,
        presign: Duration::from_secs(15),
        ..Options::default()
    })
    .await;
    let relay = ctx.relay.clone().unwrap();
    let ann = ctx.user("ann").await;
    let task = ctx.task(&ann).await;
    let bytes = bytes_of(4000, 4);
    let (done, token) = ctx.attached(&ann, task, "done.txt", &bytes).await;
    ctx.list(&ann, task, Some(&token))
        .await
        .expect(StatusCode::OK, "caught up");
    let start_once = || {
        ctx.cmd_api(&ann)
            .request(Method::POST, &format!("/tasks/{task}/attachments"))
            .idempotency_key("up-once")
            .json(&declared("up.txt", "text/plain", &bytes))
    };
    let started = start_once().await.expect(StatusCode::CREATED, "start");
    let pending = id_of(&started);
    // The client still reaches the store; the services do not.
    assert!(put(&started["upload"], bytes.clone())
        .await
        .status()
        .is_success());
    relay.cut();

    let unavailable = |r: &Reply, what: &str| {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {r:?}");
        assert!(r.header("retry-after").is_some(), "{what}: {r:?}");
        assert_eq!(r.content_type(), "application/problem+json");
    };
    unavailable(
        &ctx.start_upload(&ann, task, &declared("n.txt", "text/plain", &bytes))
            .await,
        "create",
    );
    // A retry of a create that succeeded is answered as the first time.
    let retried = start_once().await.expect(StatusCode::CREATED, "retried");
    assert_eq!(retried, started);
    unavailable(&ctx.complete(&ann, task, pending).await, "complete");
    let d = ctx.download(&ann, task, done).await;
    assert_eq!(d.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(d.headers().contains_key("retry-after"));
    // A removal still records its event; the object waits in the queue.
    let r = ctx.remove(&ann, task, done).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    let token = r.consistency_token().unwrap().to_owned();
    let listed = ctx
        .list(&ann, task, Some(&token))
        .await
        .expect(StatusCode::OK, "list");
    assert_eq!(listed["items"], json!([]), "nothing half-done is listed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ctx.objects_of(task).await.len(),
        2,
        "nothing deleted while down"
    );

    relay.restore().await;
    eventually(
        "the removed object to go",
        Duration::from_secs(40),
        || async {
            (ctx.objects_of(task).await == vec![objects::attachment_key(task, pending)])
                .then_some(())
        },
    )
    .await;
    let r = ctx.complete(&ann, task, pending).await;
    let token = r.consistency_token().unwrap().to_owned();
    r.expect(StatusCode::OK, "complete once the store is back");
    let listed = ctx
        .list(&ann, task, Some(&token))
        .await
        .expect(StatusCode::OK, "list");
    assert_eq!(listed["items"][0]["id"], pending.to_string());
}
