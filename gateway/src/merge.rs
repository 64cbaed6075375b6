//! Merging the services' documents into one, and the route table that
//! falls out of it.
//!
//! Every path of every service is kept except the per-service operations
//! (tag [`OPERATIONS_TAG`]: `/healthz`, `/readyz`, `/metrics`, which each
//! service answers on its own port). A path served by several services
//! becomes one path item holding all their methods; anything the services
//! would have to agree on and do not is a [`MergeError`] naming it: the same
//! method on the same path, the same route spelled with other parameter
//! names, an `operationId`, a component or path-level fields that differ.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Components, ContentBuilder, Info, License, OpenApi, Ref, RefOr, Response, ResponseBuilder,
    Server, Tag,
};

use crate::render::path_regex;
use crate::Backend;

/// The tag of the per-service operations the gateway does not expose.
pub const OPERATIONS_TAG: &str = "operations";

/// An HTTP method an OpenAPI path item can hold, in the order `Allow` lists
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Trace,
}

impl Method {
    pub const ALL: [Method; 8] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
        Method::Trace,
    ];

    /// The method as it appears on the request line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
        }
    }

    /// The methods a documented method is served for: GET implies HEAD
    /// (the services answer HEAD wherever they answer GET).
    fn served(self) -> &'static [Method] {
        match self {
            Method::Get => &[Method::Get, Method::Head],
            Method::Head => &[Method::Head],
            Method::Post => &[Method::Post],
            Method::Put => &[Method::Put],
            Method::Patch => &[Method::Patch],
            Method::Delete => &[Method::Delete],
            Method::Options => &[Method::Options],
            Method::Trace => &[Method::Trace],
        }
    }

    fn slot(self, item: &mut PathItem) -> &mut Option<Operation> {
        match self {
            Method::Get => &mut item.get,
            Method::Head => &mut item.head,
            Method::Post => &mut item.post,
            Method::Put => &mut item.put,
            Method::Patch => &mut item.patch,
            Method::Delete => &mut item.delete,
            Method::Options => &mut item.options,
            Method::Trace => &mut item.trace,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an operation takes a Bearer token: the gateway lets a request's
/// token pick a per-user budget only on [`Access::Bearer`] routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// The operation requires the Bearer scheme: its `security` (or, when
    /// it has none, its document's) is non-empty, has no empty requirement
    /// `{}`, and names only HTTP Bearer schemes.
    Bearer,
    /// Anyone may call it (no requirement, or an empty one).
    Public,
}

impl Access {
    /// The word `routes.map` gives: `bearer` or `public`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Bearer => "bearer",
            Access::Public => "public",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The methods one backend serves on one path with one [`Access`] (HEAD
/// included wherever GET is). A path whose methods on one backend differ in
/// access is two routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub path: String,
    pub backend: Backend,
    pub access: Access,
    pub methods: BTreeSet<Method>,
}

/// The merged document and the routes it was merged from, in path order.
#[derive(Clone)]
pub struct Merged {
    pub document: OpenApi,
    pub routes: Vec<Route>,
}

/// Why the services' documents do not make one document.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{method} {path} is documented by both {first} and {second}")]
    Operation {
        method: Method,
        path: String,
        first: &'static str,
        second: &'static str,
    },
    #[error(
        "{kind} `{name}` differs between {first} and {second}: \
         rename one of them in its service"
    )]
    Component {
        kind: &'static str,
        name: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("operationId `{id}` is used by both {first} and {second}")]
    OperationId {
        id: String,
        first: String,
        second: String,
    },
    #[error("path `{path}`: its {field} differs between {first} and {second}")]
    PathItem {
        path: String,
        field: &'static str,
        first: &'static str,
        second: &'static str,
    },
    #[error("path `{path}` ({service}) is the same route as `{other}` ({other_service})")]
    SameRoute {
        path: String,
        service: &'static str,
        other: String,
        other_service: &'static str,
    },
    #[error("path `{path}` ({service}) cannot be routed: {reason}")]
    Unroutable {
        path: String,
        service: &'static str,
        reason: String,
    },
    #[error(
        "{method} {path} ({service}) requires the security scheme `{scheme}`, which is not \
         an HTTP Bearer scheme of its document: the gateway tells only bearer routes from \
         public ones"
    )]
    Scheme {
        method: Method,
        path: String,
        service: &'static str,
        scheme: String,
    },
    #[error("the document-level security requirements differ between {first} and {second}")]
    Security {
        first: &'static str,
        second: &'static str,
    },
    #[error("cannot serialize the merged document: {0}")]
    Json(#[from] serde_json::Error),
}

/// Merges the backends' documents (in the order given) into one document
/// for the whole public API, and the route table for the gateway. The
/// document also describes the answers the gateway itself gives
/// ([`add_gateway_responses`]).
pub fn merge(documents: Vec<(Backend, OpenApi)>) -> Result<Merged, MergeError> {
    let mut state = State::default();
    let mut descriptions = Vec::new();
    for (backend, doc) in documents {
        descriptions.push((backend, doc.info.description.clone()));
        state.add(backend, doc)?;
    }
    let mut document = OpenApi::default();
    document.info = info(&descriptions);
    document.servers = Some(vec![Server::new("/")]);
    document.paths.paths = state
        .paths
        .into_iter()
        .map(|(p, (_, item))| (p, item))
        .collect();
    document.components = Some(state.components);
    document.tags = (!state.tags.is_empty()).then_some(state.tags);
    document.security = state.security.map(|(_, s)| s);
    add_gateway_responses(&mut document);
    Ok(Merged {
        document,
        routes: state.routes,
    })
}

/// What has been merged so far, with who brought each part (for errors).
#[derive(Default)]
struct State {
    /// Path → (the backend that brought its path-level fields, the item).
    paths: BTreeMap<String, (Backend, PathItem)>,
    /// Route shape (parameters blanked) → the path and backend that use it.
    shapes: BTreeMap<String, (String, Backend)>,
    owners: BTreeMap<(String, Method), Backend>,
    operation_ids: BTreeMap<String, String>,
    components: Components,
    component_owners: BTreeMap<(&'static str, String), Backend>,
    tags: Vec<Tag>,
    security: Option<(Backend, Vec<SecurityRequirement>)>,
    routes: Vec<Route>,
}

impl State {
    fn add(&mut self, backend: Backend, mut doc: OpenApi) -> Result<(), MergeError> {
        let security = DocumentSecurity {
            default: doc.security.clone(),
            bearer_schemes: bearer_schemes(doc.components.as_ref()),
        };
        for (path, item) in std::mem::take(&mut doc.paths.paths) {
            self.add_path(backend, path, item, &security)?;
        }
        if let Some(components) = doc.components {
            self.add_components(backend, components)?;
        }
        for tag in doc.tags.into_iter().flatten() {
            self.add_tag(tag);
        }
        if let Some(security) = doc.security {
            match &self.security {
                Some((first, s)) if *s != security => {
                    return Err(MergeError::Security {
                        first: first.service(),
                        second: backend.service(),
                    })
                }
                Some(_) => {}
                None => self.security = Some((backend, security)),
            }
        }
        Ok(())
    }

    fn add_path(
        &mut self,
        backend: Backend,
        path: String,
        mut item: PathItem,
        security: &DocumentSecurity,
    ) -> Result<(), MergeError> {
        let mut operations = Vec::new();
        for method in Method::ALL {
            if let Some(op) = method.slot(&mut item).take() {
                if !is_operations(&op) {
                    let access = security.access(&op).map_err(|scheme| MergeError::Scheme {
                        method,
                        path: path.clone(),
                        service: backend.service(),
                        scheme,
                    })?;
                    operations.push((method, access, op));
                }
            }
        }
        if operations.is_empty() {
            return Ok(());
        }
        path_regex(&path).map_err(|reason| MergeError::Unroutable {
            path: path.clone(),
            service: backend.service(),
            reason,
        })?;
        let shape = route_shape(&path);
        match self.shapes.get(&shape) {
            Some((other, other_backend)) if *other != path => {
                return Err(MergeError::SameRoute {
                    path,
                    service: backend.service(),
                    other: other.clone(),
                    other_service: other_backend.service(),
                })
            }
            Some(_) => {}
            None => {
                self.shapes.insert(shape, (path.clone(), backend));
            }
        }
        let (first, merged) = self
            .paths
            .entry(path.clone())
            .or_insert_with(|| (backend, PathItem::default()));
        merge_path_fields(&path, *first, merged, backend, &mut item)?;
        let mut methods: BTreeMap<Access, BTreeSet<Method>> = BTreeMap::new();
        for (method, access, op) in operations {
            for &served in method.served() {
                if let Some(owner) = self.owners.insert((path.clone(), served), backend) {
                    return Err(MergeError::Operation {
                        method: served,
                        path,
                        first: owner.service(),
                        second: backend.service(),
                    });
                }
                methods.entry(access).or_default().insert(served);
            }
            if let Some(id) = &op.operation_id {
                let here = format!("{method} {path} ({})", backend.service());
                if let Some(first) = self.operation_ids.insert(id.clone(), here.clone()) {
                    return Err(MergeError::OperationId {
                        id: id.clone(),
                        first,
                        second: here,
                    });
                }
            }
            *method.slot(merged) = Some(op);
        }
        for (access, methods) in methods {
            self.routes.push(Route {
                path: path.clone(),
                backend,
                access,
                methods,
            });
        }
        Ok(())
    }

    fn add_components(
        &mut self,
        backend: Backend,
        components: Components,
    ) -> Result<(), MergeError> {
        let owners = &mut self.component_owners;
        merge_named(
            "schema",
            backend,
            owners,
            &mut self.components.schemas,
            components.schemas,
        )?;
        merge_named(
            "response",
            backend,
            owners,
            &mut self.components.responses,
            components.responses,
        )?;
        merge_named(
            "security scheme",
            backend,
            owners,
            &mut self.components.security_schemes,
            components.security_schemes,
        )
    }

    /// Tags are one per name; the descriptions of a tag two services
    /// declare (`tasks`: commands in one, reads in the other) are joined.
    fn add_tag(&mut self, tag: Tag) {
        if tag.name == OPERATIONS_TAG {
            return;
        }
        match self.tags.iter_mut().find(|t| t.name == tag.name) {
            None => self.tags.push(tag),
            Some(existing) => {
                let description = match (existing.description.take(), tag.description) {
                    (Some(a), Some(b)) if a != b => Some(format!("{a}; {b}")),
                    (a, b) => a.or(b),
                };
                existing.description = description;
                if existing.external_docs.is_none() {
                    existing.external_docs = tag.external_docs;
                }
            }
        }
    }
}

/// What decides an operation's [`Access`] in one service's document.
struct DocumentSecurity {
    /// The document-level `security`, for operations without their own.
    default: Option<Vec<SecurityRequirement>>,
    /// The names of the document's HTTP Bearer security schemes.
    bearer_schemes: BTreeSet<String>,
}

impl DocumentSecurity {
    /// The operation's access; `Err` names a scheme it requires that is not
    /// an HTTP Bearer scheme (the gateway would not know what to make of it).
    fn access(&self, op: &Operation) -> Result<Access, String> {
        let requirements = op.security.as_ref().or(self.default.as_ref());
        let Some(requirements) = requirements.filter(|r| !r.is_empty()) else {
            return Ok(Access::Public);
        };
        let mut names = Vec::new();
        for requirement in requirements {
            // The requirement's scheme names are private fields; its JSON
            // form is `{ "<scheme>": [scopes] }`.
            let value = serde_json::to_value(requirement).unwrap_or_default();
            let Some(schemes) = value.as_object() else {
                return Err(format!("(unreadable requirement {value})"));
            };
            if schemes.is_empty() {
                return Ok(Access::Public);
            }
            names.extend(schemes.keys().cloned());
        }
        match names.into_iter().find(|n| !self.bearer_schemes.contains(n)) {
            Some(other) => Err(other),
            None => Ok(Access::Bearer),
        }
    }
}

/// The names of the HTTP Bearer security schemes among `components`.
fn bearer_schemes(components: Option<&Components>) -> BTreeSet<String> {
    components
        .into_iter()
        .flat_map(|c| c.security_schemes.iter())
        .filter(|(_, scheme)| {
            matches!(scheme, SecurityScheme::Http(http) if http.scheme == HttpAuthScheme::Bearer)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

fn is_operations(op: &Operation) -> bool {
    op.tags
        .as_ref()
        .is_some_and(|tags| tags.iter().any(|t| t == OPERATIONS_TAG))
}

/// A path with its parameter names blanked: two paths of the same shape
/// are one route however their parameters are named.
fn route_shape(path: &str) -> String {
    let mut shape = String::with_capacity(path.len());
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                shape.push_str("{}");
            }
            '}' => in_param = false,
            c if !in_param => shape.push(c),
            _ => {}
        }
    }
    shape
}

/// The fields of a path item outside its operations must agree where two
/// services set them.
fn merge_path_fields(
    path: &str,
    first: Backend,
    into: &mut PathItem,
    backend: Backend,
    from: &mut PathItem,
) -> Result<(), MergeError> {
    fn one<T: PartialEq>(
        path: &str,
        field: &'static str,
        first: Backend,
        backend: Backend,
        into: &mut Option<T>,
        from: Option<T>,
    ) -> Result<(), MergeError> {
        match (into.as_ref(), from) {
            (Some(a), Some(b)) if *a != b => Err(MergeError::PathItem {
                path: path.to_owned(),
                field,
                first: first.service(),
                second: backend.service(),
            }),
            (None, b) => {
                *into = b;
                Ok(())
            }
            _ => Ok(()),
        }
    }
    one(
        path,
        "summary",
        first,
        backend,
        &mut into.summary,
        from.summary.take(),
    )?;
    one(
        path,
        "description",
        first,
        backend,
        &mut into.description,
        from.description.take(),
    )?;
    one(
        path,
        "servers",
        first,
        backend,
        &mut into.servers,
        from.servers.take(),
    )?;
    one(
        path,
        "parameters",
        first,
        backend,
        &mut into.parameters,
        from.parameters.take(),
    )?;
    one(
        path,
        "extensions",
        first,
        backend,
        &mut into.extensions,
        from.extensions.take(),
    )
}

/// Adds `from`'s named components to `into`; the same name must mean the
/// same content.
fn merge_named<T: PartialEq>(
    kind: &'static str,
    backend: Backend,
    owners: &mut BTreeMap<(&'static str, String), Backend>,
    into: &mut BTreeMap<String, T>,
    from: BTreeMap<String, T>,
) -> Result<(), MergeError> {
    for (name, value) in from {
        match into.get(&name) {
            Some(existing) if *existing != value => {
                let first = owners
                    .get(&(kind, name.clone()))
                    .copied()
                    .unwrap_or(backend);
                return Err(MergeError::Component {
                    kind,
                    name,
                    first: first.service(),
                    second: backend.service(),
                });
            }
            Some(_) => {}
            None => {
                owners.insert((kind, name.clone()), backend);
                into.insert(name, value);
            }
        }
    }
    Ok(())
}

/// The statuses the gateway itself answers on every operation.
pub const GATEWAY_STATUSES: [&str; 4] = ["429", "502", "503", "504"];
/// The statuses the gateway itself answers on every operation with a
/// request body (on top of [`GATEWAY_STATUSES`]).
pub const GATEWAY_BODY_STATUSES: [&str; 2] = ["411", "413"];
/// The headers of the gateway's 429 answer.
pub const RATE_LIMIT_HEADERS: [&str; 5] = [
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
];

/// Documents the answers HAProxy gives in front of the services, on every
/// operation of `doc` that does not already describe the status (a
/// service's own description of it stays): 429 (a rate limit, with
/// `Retry-After` and the `RateLimit-*` headers), 502, 503 and 504 (the
/// service failed, is unavailable, or did not answer in time) everywhere;
/// 411 (a body sent with `Transfer-Encoding` instead of `Content-Length`)
/// and 413 (a body over the gateway's limit) where there is a request body.
/// Every body is a problem (the `Problem` schema, added if missing).
pub fn add_gateway_responses(doc: &mut OpenApi) {
    let problem = |description: &str| -> ResponseBuilder {
        ResponseBuilder::new().description(description).content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
    };
    let seconds = |description: &str| {
        HeaderBuilder::new()
            .schema(<u64 as utoipa::PartialSchema>::schema())
            .description(Some(description))
            .build()
    };
    let rate_limited = problem(
        "Too many requests: the gateway's budget for this client address (or, with a \
         Bearer token on a route that takes one, this user's reads or writes) is spent",
    )
    .header(
        RATE_LIMIT_HEADERS[0],
        seconds("Seconds to wait before retrying"),
    )
    .header(
        RATE_LIMIT_HEADERS[1],
        seconds("Requests the spent budget allows per window"),
    )
    .header(
        RATE_LIMIT_HEADERS[2],
        seconds("Requests left in the window (0)"),
    )
    .header(
        RATE_LIMIT_HEADERS[3],
        seconds("Seconds until the window starts over"),
    )
    .header(
        RATE_LIMIT_HEADERS[4],
        HeaderBuilder::new()
            .schema(<String as utoipa::PartialSchema>::schema())
            .description(Some(
                "The spent budget as `<limit>;w=<window seconds>`, e.g. `100;w=10`",
            ))
            .build(),
    )
    .build();
    let every: [(&str, Response); 4] = [
        ("429", rate_limited),
        (
            "502",
            problem(
                "Bad gateway: the service's answer was not valid HTTP or the connection failed",
            )
            .build(),
        ),
        (
            "503",
            problem("Service unavailable: the gateway has no healthy server for this operation")
                .build(),
        ),
        (
            "504",
            problem("Gateway timeout: the service did not answer in time").build(),
        ),
    ];
    let with_body: [(&str, Response); 2] = [
        (
            "411",
            problem(
                "Length required: the body was sent with `Transfer-Encoding` instead of \
                 `Content-Length`",
            )
            .build(),
        ),
        (
            "413",
            problem("Payload too large: the body is over the gateway's limit").build(),
        ),
    ];
    for item in doc.paths.paths.values_mut() {
        for method in Method::ALL {
            let Some(op) = method.slot(item).as_mut() else {
                continue;
            };
            let body = op.request_body.is_some();
            let responses = &mut op.responses.responses;
            let extra = every.iter().chain(with_body.iter().filter(|_| body));
            for (status, response) in extra {
                responses
                    .entry((*status).to_owned())
                    .or_insert_with(|| RefOr::T(response.clone()));
            }
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .entry("Problem".into())
        .or_insert_with(<service::Problem as utoipa::PartialSchema>::schema);
    components
        .schemas
        .entry("FieldError".into())
        .or_insert_with(<service::FieldError as utoipa::PartialSchema>::schema);
}

fn info(descriptions: &[(Backend, Option<String>)]) -> Info {
    let mut text = String::from(
        "The public API of taskstream from one base URL: the gateway routes each \
         operation to the service that serves it.\n",
    );
    for (backend, description) in descriptions {
        text.push_str(&format!("\n- **{}**", backend.service()));
        if let Some(d) = description {
            text.push_str(": ");
            text.push_str(d);
        }
    }
    text.push_str(
        "\n\nEach service also answers `/healthz`, `/readyz`, `/metrics` and its own \
         `/openapi.json` on its own port, for operators; they are not part of this API.",
    );
    let mut info = Info::new("taskstream", env!("CARGO_PKG_VERSION"));
    info.description = Some(text);
    let mut license = License::new(env!("CARGO_PKG_LICENSE"));
    license.identifier = Some(env!("CARGO_PKG_LICENSE").to_owned());
    info.license = Some(license);
    info
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// A document from its JSON: `paths` and `schemas` as OpenAPI writes them.
    fn doc(paths: Value, schemas: Value) -> OpenApi {
        serde_json::from_value(json!({
            "openapi": "3.1.0",
            "info": { "title": "t", "version": "0" },
            "paths": paths,
            "components": { "schemas": schemas },
            "tags": [{ "name": "tasks", "description": "from this service" }],
        }))
        .expect("a valid test document")
    }

    fn op(id: &str) -> Value {
        json!({ "operationId": id, "tags": ["tasks"], "responses": { "200": { "description": "ok" } } })
    }

    fn ops_tagged_operations(id: &str) -> Value {
        json!({ "operationId": id, "tags": ["operations"], "responses": { "200": { "description": "ok" } } })
    }

    fn task_schema(kind: &str) -> Value {
        json!({ "Task": { "type": "object", "properties": { "id": { "type": kind } } } })
    }

    #[test]
    fn a_path_served_by_two_services_becomes_one_item_with_all_methods() {
        let query = doc(
            json!({
                "/tasks/{id}": { "get": op("get_task") },
                "/healthz": { "get": ops_tagged_operations("healthz") },
            }),
            task_schema("string"),
        );
        let command = doc(
            json!({
                "/tasks/{id}": { "patch": op("update_task"), "delete": op("delete_task") },
                "/healthz": { "get": ops_tagged_operations("healthz") },
            }),
            task_schema("string"),
        );
        let merged = merge(vec![(Backend::Query, query), (Backend::Command, command)])
            .expect("the documents merge");
        let value = serde_json::to_value(&merged.document).expect("serializable");
        let item = &value["paths"]["/tasks/{id}"];
        assert_eq!(item["get"]["operationId"], "get_task", "{item}");
        assert_eq!(item["patch"]["operationId"], "update_task", "{item}");
        assert_eq!(item["delete"]["operationId"], "delete_task", "{item}");
        assert_eq!(
            value["paths"].as_object().map(|p| p.len()),
            Some(1),
            "only /tasks/{{id}}: /healthz is an operations path: {}",
            value["paths"]
        );
        assert_eq!(value["info"]["title"], "taskstream");
        assert_eq!(value["openapi"], "3.1.0");
        assert_eq!(value["servers"], json!([{ "url": "/" }]));
        assert_eq!(
            value["tags"],
            json!([{ "name": "tasks", "description": "from this service" }])
        );
        assert!(value["components"]["schemas"]["Task"].is_object());
        assert_eq!(
            routes(&merged),
            vec![
                (
                    "/tasks/{id}",
                    Backend::Query,
                    Access::Public,
                    vec![Method::Get, Method::Head]
                ),
                (
                    "/tasks/{id}",
                    Backend::Command,
                    Access::Public,
                    vec![Method::Patch, Method::Delete]
                ),
            ]
        );
    }

    fn routes(merged: &Merged) -> Vec<(&str, Backend, Access, Vec<Method>)> {
        merged
            .routes
            .iter()
            .map(|r| {
                (
                    r.path.as_str(),
                    r.backend,
                    r.access,
                    r.methods.iter().copied().collect(),
                )
            })
            .collect()
    }

    /// An operation with `security` (absent when `None`).
    fn secured(id: &str, security: Option<Value>) -> Value {
        let mut op = op(id);
        if let Some(security) = security {
            op["security"] = security;
        }
        op
    }

    /// A document whose components hold the Bearer scheme `bearer` and the
    /// API-key scheme `key`.
    fn with_schemes(paths: Value, security: Option<Value>) -> OpenApi {
        let mut doc = serde_json::to_value(doc(paths, json!({}))).expect("serializable");
        doc["components"]["securitySchemes"] = json!({
            "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
            "key": { "type": "apiKey", "in": "header", "name": "X-Key" },
        });
        if let Some(security) = security {
            doc["security"] = security;
        }
        serde_json::from_value(doc).expect("a valid test document")
    }

    #[test]
    fn routes_group_methods_by_path_backend_and_bearer_or_public() {
        let bearer = || Some(json!([{ "bearer": [] }]));
        let auth = with_schemes(
            json!({
                "/auth/me": {
                    "get": secured("me", bearer()),
                    "delete": secured("forget", bearer()),
                    "post": secured("who", None),
                },
                "/auth/login": { "post": secured("login", Some(json!([]))) },
                "/auth/maybe": { "get": secured("maybe", Some(json!([{ "bearer": [] }, {}]))) },
            }),
            None,
        );
        let merged = merge(vec![(Backend::Auth, auth)]).expect("merges");
        assert_eq!(
            routes(&merged),
            vec![
                (
                    "/auth/login",
                    Backend::Auth,
                    Access::Public,
                    vec![Method::Post]
                ),
                (
                    "/auth/maybe",
                    Backend::Auth,
                    Access::Public,
                    vec![Method::Get, Method::Head]
                ),
                (
                    "/auth/me",
                    Backend::Auth,
                    Access::Bearer,
                    vec![Method::Get, Method::Head, Method::Delete]
                ),
                (
                    "/auth/me",
                    Backend::Auth,
                    Access::Public,
                    vec![Method::Post]
                ),
            ]
        );
    }

    #[test]
    fn an_operation_without_security_takes_the_documents() {
        let paths = json!({
            "/a": { "get": secured("a", None), "post": secured("b", Some(json!([]))) },
        });
        let merged = merge(vec![(
            Backend::Query,
            with_schemes(paths, Some(json!([{ "bearer": [] }]))),
        )])
        .expect("merges");
        assert_eq!(
            routes(&merged),
            vec![
                (
                    "/a",
                    Backend::Query,
                    Access::Bearer,
                    vec![Method::Get, Method::Head]
                ),
                ("/a", Backend::Query, Access::Public, vec![Method::Post]),
            ]
        );
    }

    #[test]
    fn a_scheme_that_is_not_bearer_is_an_error_naming_it() {
        for security in [
            json!([{ "key": [] }]),
            json!([{ "bearer": [], "key": [] }]),
            json!([{ "nothing": [] }]),
        ] {
            let paths = json!({ "/a": { "post": secured("a", Some(security.clone())) } });
            let error = merge(vec![(Backend::Command, with_schemes(paths, None))])
                .err()
                .unwrap_or_else(|| panic!("{security} is not bearer"));
            assert!(
                matches!(&error, MergeError::Scheme { method: Method::Post, path, scheme, .. }
                    if path == "/a" && (scheme == "key" || scheme == "nothing")),
                "{error}"
            );
        }
    }

    #[test]
    fn the_gateways_own_answers_are_added_where_an_operation_lacks_them() {
        let mut read = op("read");
        read["responses"]["503"] = json!({ "description": "the service's own" });
        let mut write = op("write");
        write["requestBody"] = json!({
            "content": { "application/json": { "schema": { "type": "object" } } }
        });
        write["responses"]["413"] = json!({ "description": "over 64 KiB" });
        let merged = merge(vec![(
            Backend::Command,
            doc(json!({ "/a": { "get": read, "post": write } }), json!({})),
        )])
        .expect("merges");
        let value = serde_json::to_value(&merged.document).expect("serializable");
        let codes = |method: &str| -> Vec<String> {
            value["paths"]["/a"][method]["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .cloned()
                .collect()
        };
        assert_eq!(codes("get"), ["200", "429", "502", "503", "504"]);
        assert_eq!(
            codes("post"),
            ["200", "411", "413", "429", "502", "503", "504"]
        );
        let responses = |method: &str| &value["paths"]["/a"][method]["responses"];
        assert_eq!(
            responses("get")["503"],
            json!({ "description": "the service's own" })
        );
        assert_eq!(
            responses("post")["413"],
            json!({ "description": "over 64 KiB" })
        );
        for (method, status) in [
            ("get", "429"),
            ("get", "502"),
            ("get", "504"),
            ("post", "411"),
        ] {
            assert_eq!(
                responses(method)[status]["content"]["application/problem+json"]["schema"],
                json!({ "$ref": "#/components/schemas/Problem" }),
                "{method} {status}"
            );
        }
        let headers: Vec<&String> = responses("post")["429"]["headers"]
            .as_object()
            .expect("429 headers")
            .keys()
            .collect();
        let mut expected = RATE_LIMIT_HEADERS.to_vec();
        expected.sort();
        assert_eq!(headers, expected);
        assert!(value["components"]["schemas"]["Problem"].is_object());
        assert!(value["components"]["schemas"]["FieldError"].is_object());
    }

    #[test]
    fn the_same_method_on_the_same_path_in_two_services_is_an_error() {
        let a = doc(
            json!({ "/tasks/{id}": { "get": op("get_task") } }),
            json!({}),
        );
        let b = doc(
            json!({ "/tasks/{id}": { "get": op("read_task") } }),
            json!({}),
        );
        let error = merge(vec![(Backend::Query, a), (Backend::Command, b)])
            .err()
            .expect("a conflict");
        assert!(
            matches!(&error, MergeError::Operation { method: Method::Get, path, .. } if path == "/tasks/{id}"),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "GET /tasks/{id} is documented by both query-api and command-api"
        );
    }

    #[test]
    fn head_documented_where_another_service_serves_get_is_an_error() {
        let a = doc(json!({ "/tasks": { "get": op("list") } }), json!({}));
        let b = doc(json!({ "/tasks": { "head": op("count") } }), json!({}));
        let error = merge(vec![(Backend::Query, a), (Backend::Command, b)])
            .err()
            .expect("HEAD is already served with GET");
        assert!(
            matches!(
                error,
                MergeError::Operation {
                    method: Method::Head,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_component_with_one_name_and_two_contents_is_an_error_naming_it() {
        let a = doc(json!({ "/a": { "get": op("a") } }), task_schema("string"));
        let b = doc(json!({ "/b": { "post": op("b") } }), task_schema("integer"));
        let error = merge(vec![(Backend::Query, a), (Backend::Command, b)])
            .err()
            .expect("a component conflict");
        assert_eq!(
            error.to_string(),
            "schema `Task` differs between query-api and command-api: \
             rename one of them in its service"
        );
    }

    #[test]
    fn one_route_spelled_with_two_parameter_names_is_an_error() {
        let a = doc(json!({ "/tasks/{id}": { "get": op("a") } }), json!({}));
        let b = doc(
            json!({ "/tasks/{task_id}": { "patch": op("b") } }),
            json!({}),
        );
        let error = merge(vec![(Backend::Query, a), (Backend::Command, b)])
            .err()
            .expect("the same route");
        assert!(matches!(error, MergeError::SameRoute { .. }), "{error}");
    }

    #[test]
    fn an_operation_id_used_twice_is_an_error() {
        let a = doc(json!({ "/a": { "get": op("same") } }), json!({}));
        let b = doc(json!({ "/b": { "get": op("same") } }), json!({}));
        let error = merge(vec![(Backend::Query, a), (Backend::Command, b)])
            .err()
            .expect("a duplicate id");
        assert_eq!(
            error.to_string(),
            "operationId `same` is used by both GET /a (query-api) and GET /b (command-api)"
        );
    }

    #[test]
    fn a_path_that_cannot_be_a_map_key_is_an_error() {
        let a = doc(json!({ "/a b": { "get": op("a") } }), json!({}));
        let error = merge(vec![(Backend::Query, a)]).err().expect("unroutable");
        assert!(matches!(error, MergeError::Unroutable { .. }), "{error}");
    }

    #[test]
    fn tags_are_one_per_name_with_the_services_descriptions_joined() {
        let a = doc(json!({ "/a": { "get": op("a") } }), json!({}));
        let mut b = doc(json!({ "/b": { "post": op("b") } }), json!({}));
        b.tags = Some(vec![
            serde_json::from_value(json!({ "name": "tasks", "description": "writes" }))
                .expect("a tag"),
            serde_json::from_value(json!({ "name": "operations" })).expect("a tag"),
        ]);
        let merged = merge(vec![(Backend::Query, a), (Backend::Command, b)]).expect("merges");
        assert_eq!(
            serde_json::to_value(&merged.document.tags).expect("serializable"),
            json!([{ "name": "tasks", "description": "from this service; writes" }])
        );
    }
}
