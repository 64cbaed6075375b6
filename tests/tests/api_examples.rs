//! The worked examples of `docs/api.md` stay true: every ```sh block is run
//! with bash and curl, in the page's order, against the real services, and
//! must answer the status its `# → NNN` line promises, through the real
//! gateway. Every operation of the gateway's OpenAPI document (the whole
//! public API) must have an example on the page. A block whose curl goes
//! elsewhere (a presigned URL of the object store, in a variable) is run
//! and checked the same way, as a step of a flow, not as an operation.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tests::clients::{email, id_of, AuthClient, CommandClient, QueryClient, PASSWORD};
use tests::gateway::Settings;
use tests::project_commands::ProjectCommands;
use tests::{unique, Deployment, System};
use uuid::Uuid;

/// The page's one base URL: the gateway's.
const BASE: &str = "$API";

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md")
}

/// One ```sh block of the page.
#[derive(Debug)]
struct Example {
    /// 1-based line of the opening fence.
    line: usize,
    /// The command, without the status comment.
    script: String,
    status: u16,
    method: String,
    /// The URL's path, variables left in (e.g. `/tasks/$TASK`).
    path: String,
    /// The request goes to another server (e.g. `$UPLOAD_URL`), not the API.
    external: bool,
}

impl Example {
    fn name(&self) -> String {
        format!("docs/api.md:{} ({} {})", self.line, self.method, self.path)
    }
}

fn parse_examples(page: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut lines = page.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let mut script = String::new();
        let mut status = None;
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            if let Some(s) = l.trim().strip_prefix("# →") {
                status =
                    Some(s.trim().parse::<u16>().unwrap_or_else(|_| {
                        panic!("docs/api.md:{}: bad status line {l:?}", i + 1)
                    }));
            } else {
                script.push_str(l);
                script.push('\n');
            }
        }
        let status = status.unwrap_or_else(|| panic!("docs/api.md:{}: no `# → NNN` line", i + 1));
        let (method, path, external) = match request_line(&script) {
            Some((method, path)) => (method, path, false),
            None => {
                let (method, url) = external_line(&script).unwrap_or_else(|| {
                    panic!("docs/api.md:{}: not one curl request: {script}", i + 1)
                });
                (method, url, true)
            }
        };
        assert_eq!(
            script.matches("curl ").count(),
            1,
            "docs/api.md:{}: one curl command per example",
            i + 1
        );
        examples.push(Example {
            line: i + 1,
            script,
            status,
            method,
            path,
            external,
        });
    }
    examples
}

/// `(METHOD, "$VARIABLE")` of a curl command whose URL is a variable other
/// than the API's base URL (a presigned URL).
fn external_line(script: &str) -> Option<(String, String)> {
    let command = script.replace("\\\n", " ");
    let at = command.find("\"$")?;
    let rest = &command[at + 1..];
    let end = rest[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))? + 1;
    let variable = rest[..end].to_owned();
    let words: Vec<&str> = command.split_whitespace().collect();
    let method = match words.iter().position(|w| *w == "-X" || *w == "--request") {
        Some(i) => words.get(i + 1)?.to_string(),
        None => "GET".into(),
    };
    Some((method, variable))
}

/// `(METHOD, path)` of a curl command line.
fn request_line(script: &str) -> Option<(String, String)> {
    let command = script.replace("\\\n", " ");
    let at = command.find(BASE)?;
    let rest = &command[at + BASE.len()..];
    let url_end = rest
        .find(|c: char| c == '"' || c == '\'' || c.is_whitespace())
        .unwrap_or(rest.len());
    let path = rest[..url_end].split('?').next()?.to_owned();
    let words: Vec<&str> = command.split_whitespace().collect();
    let method = match words.iter().position(|w| *w == "-X" || *w == "--request") {
        Some(i) => words.get(i + 1)?.to_string(),
        None if words
            .iter()
            .any(|w| matches!(*w, "-d" | "--data" | "--data-raw" | "--json")) =>
        {
            "POST".into()
        }
        None => "GET".into(),
    };
    Some((method, path))
}

/// True when `path` (with `$VARIABLES` as segments) fits `template` (with `{params}`).
fn path_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

/// Runs one example with bash; `(status, body)`.
async fn run(example: &Example, vars: &[(&str, String)]) -> (String, String) {
    let body_file = std::env::temp_dir().join(unique("taskstream-example-"));
    // The page's curl, plus what the test needs: the status on stdout, the
    // body in a file, no proxy, a timeout.
    let script = format!(
        "curl() {{ command curl -sS --noproxy '*' --max-time 30 -o \"$EXAMPLE_BODY\" -w '%{{http_code}}' \"$@\"; }}\n{}",
        example.script
    );
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .env("EXAMPLE_BODY", &body_file)
        .output()
        .await
        .expect("run bash (and curl)");
    let body = std::fs::read_to_string(&body_file).unwrap_or_default();
    let _ = std::fs::remove_file(&body_file);
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        return (
            format!(
                "exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            body,
        );
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_example_answers_its_documented_status() {
    let page = std::fs::read_to_string(doc_path()).expect("docs/api.md");
    assert!(
        page.lines()
            .next()
            .unwrap_or("")
            .contains(&format!("version {}", env!("CARGO_PKG_VERSION"))),
        "docs/api.md's title names the crates' version {}",
        env!("CARGO_PKG_VERSION")
    );
    for doc in ["openapi.json", "docs"] {
        let link = format!("http://127.0.0.1:8080/{doc}");
        assert!(page.contains(&link), "docs/api.md links {link}");
    }
    let examples = parse_examples(&page);
    assert!(!examples.is_empty(), "docs/api.md has examples");

    let admin_email = email("admin-");
    let system = System::start_with(Deployment::fresh().await).await;
    let gateway = system.start_gateway(&Settings::default()).await;
    let api = gateway.base.clone();

    // Every operation of the public API has an example, and every example
    // is one of its operations.
    let doc = AuthClient::new(&api)
        .get("/openapi.json")
        .await
        .expect(reqwest::StatusCode::OK, "openapi");
    // The operator endpoints (health, readiness, metrics) are each
    // service's own, on its own port.
    let ops: BTreeSet<(String, String)> = tests::openapi_operations(&doc)
        .into_iter()
        .filter(|(_, path)| !["/healthz", "/readyz", "/metrics"].contains(&path.as_str()))
        .collect();
    let missing: Vec<String> = ops
        .iter()
        .filter(|(method, template)| {
            !examples
                .iter()
                .any(|e| !e.external && &e.method == method && path_matches(template, &e.path))
        })
        .map(|(method, template)| format!("{method} {template}"))
        .collect();
    for e in examples.iter().filter(|e| !e.external) {
        assert!(
            ops.iter()
                .any(|(m, t)| *m == e.method && path_matches(t, &e.path)),
            "{}: no such operation in the gateway's /openapi.json",
            e.name()
        );
    }
    assert!(
        missing.is_empty(),
        "operations without an example in docs/api.md:\n  {}",
        missing.join("\n  ")
    );

    // The variables the page describes, from real accounts and tasks.
    // The first admin is the operator's doing (`auth create-admin`).
    system.deployment.create_admin(&admin_email, PASSWORD).await;
    let auth_client = AuthClient::new(&api);
    let admin_token = auth_client.access(&admin_email).await;
    let user_email = email("user-");
    auth_client.registered(&user_email).await;
    let tokens = auth_client.logged_in(&user_email).await;
    let (token, refresh) = (
        tokens["access_token"].as_str().expect("access").to_owned(),
        tokens["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned(),
    );
    let user_id = id_of(&auth_client.registered(&email("managed-")).await).to_string();
    let email = email("new-");
    let command_client = CommandClient::new(&api, &token);
    let create_task = |title: &str| {
        let created = command_client.create_task(&json!({ "title": title, "tags": ["example"] }));
        async move {
            let res = created.await;
            assert_eq!(res.status, 201, "create task");
            assert_eq!(
                res.header("etag"),
                Some("\"1\""),
                "a new task is at version 1, as the page says"
            );
            let consistency = res
                .consistency_token()
                .expect("X-Consistency-Token")
                .to_owned();
            (id_of(&res.body).to_string(), consistency)
        }
    };
    let (task, consistency) = create_task("Review the API reference").await;
    let (old_task, _) = create_task("An old task").await;
    let query_client = QueryClient::new(&api, &token);
    query_client
        .wait_for_task(&task, Duration::from_secs(30))
        .await;
    let projects = ProjectCommands::new(&api, &token);
    let project = projects.created_project("Examples").await;
    let old_project = projects.created_project("An old project").await;
    let user_uuid: Uuid = user_id.parse().expect("a user id");
    projects.added(old_project, user_uuid, "viewer").await;
    let member_email = tests::clients::email("member-");
    let member_id = id_of(&auth_client.registered(&member_email).await).to_string();
    for p in [project, old_project] {
        query_client
            .eventually(
                "the project to be visible",
                Duration::from_secs(30),
                &format!("/projects/{p}"),
                |r| (r.status == 200).then_some(()),
            )
            .await;
    }

    // A notification for the `$TOKEN` user: the admin adds them to a
    // project, and the notifier tells them.
    let me = id_of(
        &auth_client
            .me(&token)
            .await
            .expect(reqwest::StatusCode::OK, "me"),
    );
    // An endpoint of theirs that nothing answers at (the deliveries fail
    // and are retried), to be told of the same notification.
    let notifier = query_client.api().clone();
    let delivery_webhook = id_of(
        &notifier
            .request(reqwest::Method::POST, "/webhooks")
            .json(&json!({ "url": "http://127.0.0.1:9/hook", "events": ["project_member_added"] }))
            .await
            .expect(reqwest::StatusCode::CREATED, "create a webhook"),
    )
    .to_string();
    let admin_projects = ProjectCommands::new(&api, &admin_token);
    let shared = admin_projects.created_project("Shared with the user").await;
    admin_projects.added(shared, me, "member").await;
    let notification = query_client
        .eventually(
            "the user's notification",
            Duration::from_secs(30),
            "/notifications",
            |r| {
                (r.status == 200)
                    .then(|| r.body["items"][0]["id"].as_str().map(str::to_owned))
                    .flatten()
            },
        )
        .await;

    // On `$FILES_TASK`: an upload started (the page sends its bytes and
    // completes it), and an attachment already completed (downloaded, then
    // removed).
    let (files_task, _) = create_task("With files").await;
    let notes = b"hello world\n".to_vec();
    let declare = json!({
        "filename": "notes.txt",
        "content_type": "text/plain",
        "size": notes.len(),
        "sha256": objects::sha256_hex(&notes),
    });
    let start = |body: Value| {
        command_client
            .request(
                reqwest::Method::POST,
                &format!("/tasks/{files_task}/attachments"),
            )
            .json(&body)
    };
    let pending = start(declare.clone())
        .await
        .expect(reqwest::StatusCode::CREATED, "start an upload");
    let upload_url = pending["upload"]["url"].as_str().expect("url").to_owned();
    let attachment = id_of(&pending).to_string();
    let file = start(declare)
        .await
        .expect(reqwest::StatusCode::CREATED, "start another upload");
    let put = tests::http()
        .put(file["upload"]["url"].as_str().expect("url"))
        .header("content-type", "text/plain")
        .header(
            "x-amz-checksum-sha256",
            objects::sha256_hex_to_base64(&objects::sha256_hex(&notes)).expect("base64"),
        )
        .body(notes)
        .send()
        .await
        .expect("PUT the bytes");
    assert!(put.status().is_success(), "PUT: {}", put.status());
    let file = id_of(&file).to_string();
    let completed = command_client
        .request(
            reqwest::Method::POST,
            &format!("/tasks/{files_task}/attachments/{file}/complete"),
        )
        .await;
    let completion = completed
        .consistency_token()
        .expect("X-Consistency-Token")
        .to_owned();
    completed.expect(reqwest::StatusCode::OK, "complete");
    query_client
        .api()
        .request(
            reqwest::Method::GET,
            &format!("/tasks/{files_task}/attachments"),
        )
        .consistency_token(&completion)
        .await
        .expect(reqwest::StatusCode::OK, "the attachment listed");

    // That endpoint disabled while its delivery waits for a retry: the
    // delivery is `skipped`; enabled again, the page sends it again.
    let set_enabled = |enabled: bool| {
        notifier
            .request(
                reqwest::Method::PATCH,
                &format!("/webhooks/{delivery_webhook}"),
            )
            .json(&json!({ "enabled": enabled }))
    };
    set_enabled(false)
        .await
        .expect(reqwest::StatusCode::OK, "disable the webhook");
    let delivery = query_client
        .eventually(
            "the delivery to be skipped",
            Duration::from_secs(30),
            &format!("/webhooks/{delivery_webhook}/deliveries"),
            |r| {
                (r.status == 200 && r.body["items"][0]["state"] == "skipped")
                    .then(|| r.body["items"][0]["id"].as_str().map(str::to_owned))
                    .flatten()
            },
        )
        .await;
    set_enabled(true)
        .await
        .expect(reqwest::StatusCode::OK, "enable the webhook");

    // One of the user's own webhook endpoints (the page creates others).
    let webhook = query_client
        .api()
        .request(reqwest::Method::POST, "/webhooks")
        .json(&json!({ "url": "https://hooks.example.com/examples", "events": ["assigned"] }))
        .await
        .expect(reqwest::StatusCode::CREATED, "create a webhook");
    let webhook = id_of(&webhook).to_string();

    let vars = [
        ("API", api.clone()),
        ("ATTACHMENT", attachment),
        ("UPLOAD_URL", upload_url),
        ("FILE", file),
        ("FILES_TASK", files_task),
        ("EMAIL", email),
        ("TOKEN", token),
        ("REFRESH", refresh),
        ("TASK", task),
        ("CONSISTENCY_TOKEN", consistency),
        ("OLD_TASK", old_task),
        ("ADMIN_TOKEN", admin_token),
        ("USER_ID", user_id),
        ("PROJECT", project.to_string()),
        ("OLD_PROJECT", old_project.to_string()),
        ("MEMBER_EMAIL", member_email),
        ("MEMBER_ID", member_id),
        ("NOTIFICATION", notification),
        ("WEBHOOK", webhook),
        ("DELIVERY_WEBHOOK", delivery_webhook),
        ("DELIVERY", delivery),
    ];
    let mut failures = Vec::new();
    for example in &examples {
        let (status, body) = run(example, &vars).await;
        if status != example.status.to_string() {
            failures.push(format!(
                "{}: documented {}, got {status}: {body}",
                example.name(),
                example.status
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} examples in docs/api.md do not answer as documented:\n  {}",
        failures.len(),
        examples.len(),
        failures.join("\n  ")
    );
}

#[test]
fn the_page_parser_reads_method_path_and_status() {
    let page = "text\n```sh\ncurl -X PATCH \"$API/tasks/$TASK\" \\\n  -H 'If-Match: \"1\"' \\\n  -d '{}'\n# → 200\n```\n\
                ```sh\ncurl \"$API/tasks?limit=2\" -H \"Authorization: Bearer $TOKEN\"\n# → 200\n```\n\
                ```sh\ncurl \"$API/auth/login\" -d '{}'\n# → 401\n```\n";
    let e = parse_examples(page);
    assert_eq!(e.len(), 3);
    assert_eq!(
        (e[0].method.as_str(), e[0].path.as_str()),
        ("PATCH", "/tasks/$TASK")
    );
    assert_eq!(e[0].line, 2);
    assert!(!e[0].script.contains('→'));
    assert_eq!(
        (e[1].method.as_str(), e[1].path.as_str()),
        ("GET", "/tasks")
    );
    assert_eq!((e[2].method.as_str(), e[2].status), ("POST", 401));
    assert!(path_matches("/tasks/{id}", "/tasks/$TASK"));
    assert!(!path_matches("/tasks/{id}", "/tasks/$TASK/history"));
    assert!(!path_matches("/tasks", "/tasks/$TASK"));
    let e = parse_examples(
        "```sh\nprintf 'x' | curl -X PUT \"$UPLOAD_URL\" \\\n  --data-binary @-\n# → 200\n```\n",
    );
    assert_eq!(
        (e[0].method.as_str(), e[0].path.as_str(), e[0].external),
        ("PUT", "$UPLOAD_URL", true)
    );
}
