//! Typed clients for the three APIs, so an end-to-end test reads like the
//! API it exercises: `AuthClient::new(&auth.base).login(&email, PASSWORD)`,
//! `CommandClient::new(&cmd.base, &token).create_task(&body).if_match(etag)`,
//! `QueryClient::new(&query.base, &token).list_tasks("status=open")`.
//!
//! Every call is a [`Call`]: add headers with its builder methods, then
//! `.await` it (or [`Call::send`]) for a [`Reply`] whose body is already
//! read. Tests that send hostile requests (malformed JSON, odd headers, raw
//! TCP) use `client.api().raw()`: the reqwest client and the URL builder.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::http;

/// The password tests register accounts with.
pub const PASSWORD: &str = "correct horse battery staple";

/// A unique address at `example.test`, starting with `prefix`.
pub fn email(prefix: &str) -> String {
    format!("{}@example.test", crate::unique(prefix))
}

/// The `id` of a JSON resource (an account, a task) as a UUID.
pub fn id_of(resource: &Value) -> Uuid {
    resource["id"]
        .as_str()
        .and_then(|s| Uuid::try_parse(s).ok())
        .unwrap_or_else(|| panic!("no id in {resource}"))
}

/// The JSON pointers a validation problem names, in order.
pub fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["pointer"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One answer, read whole: status, headers, the raw body and its JSON
/// (`Null` when the body is not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Reply {
    async fn read(res: reqwest::Response) -> Reply {
        let status = res.status();
        let headers = res.headers().clone();
        let raw = res.bytes().await.expect("response body").to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            raw,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `ETag`, or "" when there is none.
    pub fn etag(&self) -> &str {
        self.header("etag").unwrap_or("")
    }

    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    pub fn consistency_token(&self) -> Option<&str> {
        self.header("x-consistency-token")
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }

    /// The body as text (lossy), for failure messages and text pages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The body as JSON; panics when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.raw)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as JSON, if it is JSON.
    pub fn try_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.raw).ok()
    }

    /// The status and the JSON body, for tests that look at both.
    pub fn status_and_body(self) -> (StatusCode, Value) {
        (self.status, self.body)
    }

    /// The validation problem's pointers.
    pub fn pointers(&self) -> Vec<String> {
        pointers(&self.body)
    }

    /// The problem's `type`, or "".
    pub fn problem_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }

    /// Asserts `status` and a JSON body; returns the body.
    pub fn expect(self, status: StatusCode, what: &str) -> Value {
        let text = self.text();
        assert_eq!(
            self.status, status,
            "{what}: expected {status}, got {}: {text}",
            self.status
        );
        serde_json::from_slice(&self.raw)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
    }

    /// Asserts a problem+json answer with `status` (also in its `status`
    /// member); returns the body.
    pub fn expect_problem(self, status: StatusCode, what: &str) -> Value {
        let content_type = self.content_type().to_owned();
        let body = self.expect(status, what);
        assert_eq!(
            content_type, "application/problem+json",
            "{what}: content type of {body}"
        );
        assert_eq!(body["status"], status.as_u16(), "{what}: {body}");
        body
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, String::from_utf8_lossy(&self.raw))
    }
}

/// A service's base URL, a bearer token (or none) and a client: what the
/// three typed clients share.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Fail the test on any 5xx answer (the command side never owes one).
    refuse_server_errors: bool,
}

impl Api {
    fn new(base: &str, token: Option<String>) -> Api {
        Api {
            http: http(),
            base: base.trim_end_matches('/').to_owned(),
            token,
            refuse_server_errors: false,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The bare client and this API's URL builder, for requests no typed
    /// method should make (hostile bodies, odd headers).
    pub fn raw(&self) -> (&reqwest::Client, impl Fn(&str) -> String + '_) {
        (&self.http, move |path: &str| self.url(path))
    }

    /// The same API as the holder of `token`.
    pub fn as_user(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// Any request to this API, with its token.
    pub fn request(&self, method: Method, path: &str) -> Call {
        Call {
            api: self.clone(),
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }
}

/// One request being built; `.await` sends it.
pub struct Call {
    api: Api,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Call {
    pub fn json(mut self, body: &Value) -> Self {
        self.body = Some(serde_json::to_vec(body).expect("json"));
        self.header("content-type", "application/json")
    }

    /// A body of any bytes with `content_type`.
    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        self.body = Some(body);
        self.header("content-type", content_type)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Replaces the client's bearer token for this request (`None`: anonymous).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.api.token = token;
        self
    }

    pub fn if_match(self, etag: &str) -> Self {
        self.header("if-match", etag)
    }

    pub fn if_none_match(self, etag: &str) -> Self {
        self.header("if-none-match", etag)
    }

    pub fn idempotency_key(self, key: &str) -> Self {
        self.header("idempotency-key", key)
    }

    pub fn request_id(self, id: &str) -> Self {
        self.header("x-request-id", id)
    }

    pub fn consistency_token(self, token: &str) -> Self {
        self.header("x-consistency-token", token)
    }

    pub async fn send(self) -> Reply {
        let Call {
            api,
            method,
            path,
            headers,
            body,
        } = self;
        let mut req = api.http.request(method.clone(), api.url(&path));
        if let Some(t) = &api.token {
            req = req.bearer_auth(t);
        }
        for (n, v) in &headers {
            req = req.header(n, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let reply = Reply::read(res).await;
        assert!(
            !(api.refuse_server_errors && reply.status.is_server_error()),
            "{method} {path} answered {reply:?}"
        );
        reply
    }
}

impl IntoFuture for Call {
    type Output = Reply;
    type IntoFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// An access and a refresh token, as login and refresh answer them.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl From<Value> for Tokens {
    fn from(v: Value) -> Self {
        assert_eq!(v["token_type"], "Bearer", "{v}");
        assert_eq!(v["expires_in"], 900, "{v}");
        Tokens {
            access: v["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("no access_token in {v}"))
                .to_owned(),
            refresh: v["refresh_token"]
                .as_str()
                .unwrap_or_else(|| panic!("no refresh_token in {v}"))
                .to_owned(),
        }
    }
}

/// auth's API: accounts, tokens, the admin endpoints, the JWKS.
#[derive(Clone)]
pub struct AuthClient {
    api: Api,
}

impl AuthClient {
    /// Anonymous; the calls that need a caller take its access token.
    pub fn new(base: &str) -> Self {
        AuthClient {
            api: Api::new(base, None),
        }
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    /// `GET path`, anonymous.
    pub fn get(&self, path: &str) -> Call {
        self.api.request(Method::GET, path)
    }

    /// `POST path` with a JSON body, anonymous.
    pub fn post(&self, path: &str, body: &Value) -> Call {
        self.api.request(Method::POST, path).json(body)
    }

    fn as_caller(&self, method: Method, path: &str, token: &str) -> Call {
        self.api.request(method, path).token(Some(token.to_owned()))
    }

    /// `POST /auth/register` with any body.
    pub fn register_with(&self, body: &Value) -> Call {
        self.post("/auth/register", body)
    }

    pub fn register(&self, email: &str, password: &str) -> Call {
        self.register_with(&json!({ "email": email, "password": password }))
    }

    pub fn login(&self, email: &str, password: &str) -> Call {
        self.post(
            "/auth/login",
            &json!({ "email": email, "password": password }),
        )
    }

    pub fn refresh(&self, refresh_token: &str) -> Call {
        self.post("/auth/refresh", &json!({ "refresh_token": refresh_token }))
    }

    pub fn logout(&self, refresh_token: &str) -> Call {
        self.post("/auth/logout", &json!({ "refresh_token": refresh_token }))
    }

    pub fn me(&self, token: &str) -> Call {
        self.as_caller(Method::GET, "/auth/me", token)
    }

    pub fn jwks(&self) -> Call {
        self.api.request(Method::GET, "/.well-known/jwks.json")
    }

    /// `PATCH /admin/users/{id}/role`.
    pub fn set_role(&self, token: &str, id: impl std::fmt::Display, role: &str) -> Call {
        self.as_caller(Method::PATCH, &format!("/admin/users/{id}/role"), token)
            .json(&json!({ "role": role }))
    }

    pub fn deactivate(&self, token: &str, id: impl std::fmt::Display) -> Call {
        self.as_caller(
            Method::POST,
            &format!("/admin/users/{id}/deactivate"),
            token,
        )
    }

    pub fn reactivate(&self, token: &str, id: impl std::fmt::Display) -> Call {
        self.as_caller(
            Method::POST,
            &format!("/admin/users/{id}/reactivate"),
            token,
        )
    }

    /// `GET /admin/users{query}` (`query` empty or starting with `?`).
    pub fn list_users(&self, token: &str, query: &str) -> Call {
        self.as_caller(Method::GET, &format!("/admin/users{query}"), token)
    }

    /// Any request as the holder of `token`.
    pub fn request(&self, method: Method, path: &str, token: &str) -> Call {
        self.as_caller(method, path, token)
    }

    /// Registers `email` with [`PASSWORD`]; asserts 201 and returns the account.
    pub async fn registered(&self, email: &str) -> Value {
        self.register(email, PASSWORD)
            .await
            .expect(StatusCode::CREATED, &format!("register {email}"))
    }

    /// Logs `email` in with [`PASSWORD`]; asserts 200 and returns the body.
    pub async fn logged_in(&self, email: &str) -> Value {
        self.login(email, PASSWORD)
            .await
            .expect(StatusCode::OK, &format!("login {email}"))
    }

    /// Logs `email` in with [`PASSWORD`]; returns the checked token pair.
    pub async fn tokens(&self, email: &str) -> Tokens {
        Tokens::from(self.logged_in(email).await)
    }

    /// Logs `email` in with [`PASSWORD`]; returns the access token.
    pub async fn access(&self, email: &str) -> String {
        self.logged_in(email).await["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// An admin made as the operator makes one (`auth create-admin`) in
    /// `deployment`, logged in: its id and tokens.
    pub async fn operator_admin(&self, deployment: &crate::Deployment) -> (Uuid, Tokens) {
        let email = email("boss-");
        let id = deployment.create_admin(&email, PASSWORD).await;
        let tokens = self.tokens(&email).await;
        let me = self
            .me(&tokens.access)
            .await
            .expect(StatusCode::OK, "admin's me");
        assert_eq!(me["role"], "admin", "operator-made admin: {me}");
        (id, tokens)
    }

    /// A new account, logged in: its access token.
    pub async fn user(&self, email: &str) -> String {
        self.registered(email).await;
        self.access(email).await
    }
}

/// One auth service of a test's own and a client for it (which it derefs to).
pub struct AuthApp {
    pub running: crate::Running,
    pub deployment: crate::Deployment,
    client: AuthClient,
}

impl std::ops::Deref for AuthApp {
    type Target = AuthClient;

    fn deref(&self) -> &AuthClient {
        &self.client
    }
}

impl AuthApp {
    pub fn new(deployment: crate::Deployment, running: crate::Running) -> Self {
        AuthApp {
            client: AuthClient::new(&running.base),
            running,
            deployment,
        }
    }

    /// auth in-process on a fresh deployment.
    pub async fn start() -> Self {
        let deployment = crate::Deployment::fresh().await;
        let running = deployment.spawn_auth().await;
        Self::new(deployment, running)
    }

    /// An operator-made admin, logged in: its id and tokens.
    pub async fn admin_tokens(&self) -> (Uuid, Tokens) {
        self.client.operator_admin(&self.deployment).await
    }

    /// An operator-made admin, logged in: its id and access token.
    pub async fn admin_access(&self) -> (Uuid, String) {
        let (id, tokens) = self.admin_tokens().await;
        (id, tokens.access)
    }
}

/// command-api's task commands, as one caller.
#[derive(Clone)]
pub struct CommandClient {
    api: Api,
}

impl CommandClient {
    pub fn new(base: &str, token: &str) -> Self {
        CommandClient {
            api: Api::new(base, Some(token.to_owned())),
        }
    }

    /// Every later answer must be below 500 (the test fails otherwise).
    pub fn refusing_server_errors(mut self) -> Self {
        self.api.refuse_server_errors = true;
        self
    }

    /// The same client as the holder of `token`.
    pub fn as_user(&self, token: &str) -> Self {
        CommandClient {
            api: self.api.as_user(token),
        }
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Any request with this client's token.
    pub fn request(&self, method: Method, path: &str) -> Call {
        self.api.request(method, path)
    }

    /// `POST /tasks`.
    pub fn create_task(&self, body: &Value) -> Call {
        self.request(Method::POST, "/tasks").json(body)
    }

    /// `PATCH /tasks/{id}`.
    pub fn patch_task(&self, id: impl std::fmt::Display, body: &Value) -> Call {
        self.request(Method::PATCH, &format!("/tasks/{id}"))
            .json(body)
    }

    /// `POST /tasks/{id}/status`.
    pub fn set_status(&self, id: impl std::fmt::Display, body: &Value) -> Call {
        self.request(Method::POST, &format!("/tasks/{id}/status"))
            .json(body)
    }

    /// `DELETE /tasks/{id}`.
    pub fn delete_task(&self, id: impl std::fmt::Display) -> Call {
        self.request(Method::DELETE, &format!("/tasks/{id}"))
    }

    /// Creates a task; asserts 201 and returns its id and the reply.
    pub async fn created(&self, body: &Value) -> (Uuid, Reply) {
        let r = self.create_task(body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
        (id_of(&r.body), r)
    }
}

/// query-api's reads, as one caller.
#[derive(Clone)]
pub struct QueryClient {
    api: Api,
}

impl QueryClient {
    pub fn new(base: &str, token: &str) -> Self {
        QueryClient {
            api: Api::new(base, Some(token.to_owned())),
        }
    }

    /// The same client as the holder of `token`.
    pub fn as_user(&self, token: &str) -> Self {
        QueryClient {
            api: self.api.as_user(token),
        }
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    /// `GET path` with this client's token.
    pub fn get(&self, path: &str) -> Call {
        self.api.request(Method::GET, path)
    }

    /// `GET /tasks/{id}`.
    pub fn get_task(&self, id: impl std::fmt::Display) -> Call {
        self.get(&format!("/tasks/{id}"))
    }

    /// `GET /tasks?{query}` (filters, sort, cursor, limit; `query` may be empty).
    pub fn list_tasks(&self, query: &str) -> Call {
        if query.is_empty() {
            self.get("/tasks")
        } else {
            self.get(&format!("/tasks?{query}"))
        }
    }

    /// `GET /tasks/{id}/history`.
    pub fn history(&self, id: impl std::fmt::Display) -> Call {
        self.get(&format!("/tasks/{id}/history"))
    }

    /// `GET /analytics/{what}` (`what` may carry a query string).
    pub fn analytics(&self, what: &str) -> Call {
        self.get(&format!("/analytics/{what}"))
    }

    /// `GET path`; asserts 200 and returns the body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path)
            .await
            .expect(StatusCode::OK, &format!("GET {path}"))
    }

    /// Waits until a read with `consistency_token` answers 200 (the write
    /// it names is projected), or panics after `within`.
    pub async fn wait_visible(&self, consistency_token: &str, within: Duration) {
        crate::eventually("the view to reflect the write", within, || async {
            let r = self
                .list_tasks("limit=1")
                .consistency_token(consistency_token)
                .await;
            (r.status == 200).then_some(())
        })
        .await;
    }

    /// Waits until `GET /tasks/{id}` answers 200, or panics after `within`.
    pub async fn wait_for_task(&self, id: impl std::fmt::Display, within: Duration) {
        let path = format!("/tasks/{id}");
        self.eventually("the task to be visible", within, &path, |r| {
            (r.status == 200).then_some(())
        })
        .await
    }

    /// Polls `GET path` until `check` accepts the reply, or panics after
    /// `within` naming `what`.
    pub async fn eventually<T>(
        &self,
        what: &str,
        within: Duration,
        path: &str,
        check: impl Fn(&Reply) -> Option<T>,
    ) -> T {
        crate::eventually(what, within, || async { check(&self.get(path).await) }).await
    }
}
