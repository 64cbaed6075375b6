//! Serving a service's OpenAPI document (`GET /openapi.json`) and a
//! browsable Swagger UI (`GET /docs`) whose assets are compiled into the
//! binary: nothing is fetched from the internet at run time.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use swagger_ui_redist::{SwaggerUi, SwaggerUiStaticFile};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi;

use crate::problem::Problem;

/// Name of the Bearer security scheme in every document.
pub const BEARER: &str = "bearer";

/// Adds the Bearer (JWT) security scheme, the service's title/version, and
/// the problem responses the shared edge gives every operation (see
/// [`add_edge_responses`]).
pub fn finish_document(mut doc: OpenApi, title: &str, description: &str) -> OpenApi {
    doc.info.title = title.to_owned();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.description = Some(description.to_owned());
    add_edge_responses(&mut doc);
    add_bearer_scheme(&mut doc);
    doc
}

/// Declares the Bearer (JWT) scheme named [`BEARER`].
fn add_bearer_scheme(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    let mut http = Http::new(HttpAuthScheme::Bearer);
    http.bearer_format = Some("JWT".into());
    components.add_security_scheme(BEARER, SecurityScheme::Http(http));
}

/// A utoipa modifier declaring the Bearer scheme the handlers'
/// `security(("bearer" = []))` name: `#[openapi(modifiers(&BearerAuth))]`.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        add_bearer_scheme(openapi);
    }
}

/// A response described as `description` whose body is a problem+json.
fn problem_response(description: &str) -> utoipa::openapi::ResponseBuilder {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new().description(description).content(
        "application/problem+json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    )
}

/// The operations the services declare (GET, POST, PUT, PATCH, DELETE) of
/// one path, with their method.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &mut utoipa::openapi::path::Operation)> {
    [
        ("get", &mut item.get),
        ("post", &mut item.post),
        ("put", &mut item.put),
        ("patch", &mut item.patch),
        ("delete", &mut item.delete),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
}

/// Documents a problem answer with `Retry-After` (429, 503) on every
/// write operation (POST, PUT, PATCH, DELETE) of `doc` that does not
/// already describe `code`.
pub fn add_retry_after_response_to_writes(doc: &mut OpenApi, code: &str, description: &str) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::RefOr;
    let response = RefOr::T(
        problem_response(description)
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(<u64 as utoipa::PartialSchema>::schema())
                    .description(Some("Seconds to wait before retrying"))
                    .build(),
            )
            .build(),
    );
    for item in doc.paths.paths.values_mut() {
        for (_, op) in operations(item).filter(|(method, _)| *method != "get") {
            op.responses
                .responses
                .entry(code.to_owned())
                .or_insert_with(|| response.clone());
        }
    }
}

/// Documents the answers every operation can get from the shared edge
/// (`service::json`, `service::http`, the `AuthUser` extractor), where the
/// handler's own annotations do not already: for a JSON body 400 (malformed
/// JSON), 413 (over 64 KiB), 415 (not JSON), 422 (wrong shape, unknown or
/// invalid field); for a path parameter 404 (malformed id); for a Bearer
/// operation 401. One mechanism, so no operation can forget one.
pub fn add_edge_responses(doc: &mut OpenApi) {
    use utoipa::openapi::RefOr;
    let problem = |description: &str| RefOr::T(problem_response(description).build());
    for (path, item) in doc.paths.paths.iter_mut() {
        let has_path_params = path.contains('{');
        for (_, op) in operations(item) {
            let responses = &mut op.responses.responses;
            let mut add = |code: &str, description: &str| {
                responses
                    .entry(code.to_owned())
                    .or_insert_with(|| problem(description));
            };
            if op.request_body.is_some() {
                add("400", "Malformed JSON");
                add(
                    "408",
                    "The body did not arrive within the body-read timeout",
                );
                add("413", "Body over 64 KiB");
                add("415", "Body is not `application/json`");
                add(
                    "422",
                    "A field is missing, unknown, of the wrong type or invalid (see `errors`)",
                );
            }
            if has_path_params {
                add("404", "No such resource (or a malformed id)");
            }
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add(
                    "401",
                    "Missing, malformed, expired or forged bearer token, or a deactivated account",
                );
            }
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .entry("Problem".into())
        .or_insert_with(<Problem as utoipa::PartialSchema>::schema);
    components
        .schemas
        .entry("FieldError".into())
        .or_insert_with(<crate::problem::FieldError as utoipa::PartialSchema>::schema);
}

/// Routes `/openapi.json`, `/docs` and the UI's assets under `/docs/`:
/// public, so shared caches may keep the document and the page five
/// minutes and the (versioned, compiled-in) assets a day.
pub fn routes<S: Clone + Send + Sync + 'static>(doc: OpenApi) -> Router<S> {
    let json: Arc<Vec<u8>> = Arc::new(serde_json::to_vec(&doc).unwrap_or_default());
    let mut ui = SwaggerUi::new();
    ui.title(format!("{} API", doc.info.title));
    ui.config()
        .urls(["/openapi.json"])
        .persist_authorization(true);
    for file in SwaggerUiStaticFile::all() {
        ui.override_file_path(*file, format!("/docs/{}", file.file_name()));
    }
    let page: Arc<String> = Arc::new(
        ui.serve()
            .unwrap_or_else(|e| format!("Swagger UI unavailable: {e}")),
    );
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::CACHE_CONTROL, crate::http::PUBLIC_5_MIN),
                        ],
                        json.as_ref().clone(),
                    )
                }
            }),
        )
        .route(
            "/docs",
            get(move || {
                let page = page.clone();
                async move {
                    (
                        [(header::CACHE_CONTROL, crate::http::PUBLIC_5_MIN)],
                        Html(page.as_ref().clone()),
                    )
                }
            }),
        )
        .route("/docs/{file}", get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    let found = SwaggerUi::static_files()
        .iter()
        .find(|(f, _)| f.file_name() == file);
    match found {
        Some((f, bytes)) => {
            let content_type = match f.file_name().rsplit('.').next() {
                Some("css") => "text/css; charset=utf-8",
                Some("js") => "application/javascript; charset=utf-8",
                Some("png") => "image/png",
                _ => "application/octet-stream",
            };
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, "public, max-age=86400"),
                ],
                *bytes,
            )
                .into_response()
        }
        None => Problem::not_found("no such documentation asset").into_response(),
    }
}
