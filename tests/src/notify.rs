//! People who act and are notified, for the notifier's end-to-end tests:
//! each with a command client and a notifier client of their own, and the
//! inbox reads those tests repeat.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::clients::{email, id_of, Api, AuthClient, CommandClient, QueryClient, Reply};
use crate::{eventually, System};

pub const WAIT: Duration = Duration::from_secs(30);

/// One account: its id and clients that act as it.
pub struct Person {
    pub id: Uuid,
    pub email: String,
    pub commands: CommandClient,
    pub notifier: Api,
}

impl Person {
    pub async fn write(&self, method: Method, path: &str, body: Value) -> Reply {
        self.commands.request(method, path).json(&body).await
    }

    /// `GET /notifications?{query}` from the notifier; asserts 200.
    pub async fn inbox(&self, query: &str) -> Value {
        self.notifier
            .request(Method::GET, &format!("/notifications?{query}"))
            .await
            .expect(StatusCode::OK, "GET /notifications")
    }

    /// Every notification of this person's (pages of 200), newest first.
    pub async fn all(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = match &cursor {
                Some(c) => format!("limit=200&cursor={c}"),
                None => "limit=200".to_owned(),
            };
            let page = self.inbox(&query).await;
            out.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// This person's notifications of `kind` about `subject` (a task or
    /// project id).
    pub async fn about(&self, kind: &str, subject: Uuid) -> Vec<Value> {
        let subject = subject.to_string();
        self.all()
            .await
            .into_iter()
            .filter(|n| {
                n["kind"] == kind && (n["task_id"] == subject || n["project_id"] == subject)
            })
            .collect()
    }

    /// Waits until this person has at least one notification of `kind`
    /// about `subject`, and returns them all.
    pub async fn wait_for(&self, kind: &str, subject: Uuid) -> Vec<Value> {
        eventually(
            &format!("a {kind} notification about {subject}"),
            WAIT,
            || async {
                let found = self.about(kind, subject).await;
                (!found.is_empty()).then_some(found)
            },
        )
        .await
    }

    pub async fn set_leads(&self, leads: &[u32]) {
        self.notifier
            .request(Method::PUT, "/me/notification-settings")
            .json(&json!({ "reminder_lead_times_seconds": leads, "email_opt_out": [] }))
            .await
            .expect(StatusCode::OK, "PUT /me/notification-settings");
    }

    /// Creates a task; returns its id.
    pub async fn task(&self, body: Value) -> Uuid {
        id_of(
            &self
                .write(Method::POST, "/tasks", body)
                .await
                .expect(StatusCode::CREATED, "create a task"),
        )
    }

    pub async fn project(&self, name: &str) -> Uuid {
        id_of(
            &self
                .write(Method::POST, "/projects", json!({ "name": name }))
                .await
                .expect(StatusCode::CREATED, "create a project"),
        )
    }

    pub async fn add(&self, project: Uuid, who: &Person, role: &str) {
        self.write(
            Method::POST,
            &format!("/projects/{project}/members"),
            json!({ "email": who.email, "role": role }),
        )
        .await
        .expect(StatusCode::CREATED, "add a member");
    }

    pub async fn set_role(&self, project: Uuid, who: &Person, role: &str) {
        self.write(
            Method::PATCH,
            &format!("/projects/{project}/members/{}", who.id),
            json!({ "role": role }),
        )
        .await
        .expect(StatusCode::OK, "change a member's role");
    }
}

pub struct Team {
    pub sys: System,
    pub ann: Person,
    pub bob: Person,
    pub cat: Person,
}

impl Team {
    pub async fn start() -> Self {
        Self::of(System::start().await).await
    }

    /// Three people registered on `sys`, their notifier clients talking to
    /// `sys.notifier`.
    pub async fn of(sys: System) -> Self {
        let notifier = sys.notifier.url("");
        Self::with_notifier_at(sys, &notifier).await
    }

    /// Three people registered on `sys`, their notifier clients talking to
    /// the notifier at `notifier` (one running as a process, say).
    pub async fn with_notifier_at(sys: System, notifier: &str) -> Self {
        let auth = AuthClient::new(&sys.auth.url(""));
        let mut people = Vec::new();
        for name in ["ann-", "bob-", "cat-"] {
            let address = email(name);
            let id = id_of(&auth.registered(&address).await);
            let token = auth.access(&address).await;
            people.push(Person {
                id,
                email: address,
                commands: CommandClient::new(&sys.command.url(""), &token),
                notifier: QueryClient::new(notifier, &token).api().clone(),
            });
        }
        let cat = people.pop().unwrap();
        let bob = people.pop().unwrap();
        let ann = people.pop().unwrap();
        Team { sys, ann, bob, cat }
    }

    /// A new notifier client for `who`, talking to `sys.notifier` (after
    /// it was started again on another port).
    pub async fn notifier_client(&self, who: &Person) -> Api {
        let token = AuthClient::new(&self.sys.auth.url(""))
            .access(&who.email)
            .await;
        QueryClient::new(&self.sys.notifier.url(""), &token)
            .api()
            .clone()
    }

    /// A project of ann's with bob (and cat) as members.
    pub async fn project(&self) -> Uuid {
        let p = self.ann.project("notified").await;
        self.ann.add(p, &self.bob, "member").await;
        self.ann.add(p, &self.cat, "member").await;
        p
    }
}

/// `secs` seconds from now, as the API takes it.
pub fn in_secs(secs: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn instant(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("an instant: {v}")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
        .with_timezone(&Utc)
}
