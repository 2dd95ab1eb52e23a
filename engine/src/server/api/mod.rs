//! The HTTP API, versioned under `/api/v1` (JSON; documented at `/api/v1/openapi.json`).
//!
//! Every request passes two layers before its handler: the in-flight limit (more than
//! `max_in_flight` requests at once get 429) and `access::authorize`, the one place that
//! decides who may do what, by the permission each route declares in [`endpoints`]. Bodies are read with a size cap (413) and parsed strictly (400 with the
//! field that is wrong).

mod access;
pub mod admin;
pub mod artifacts;
mod events;
mod guard;
mod mlflow;
mod models;
mod oip;
mod openapi;
mod pipelines;
mod rollouts;
mod runs;
mod serving;
mod session;
mod ui;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde::de::DeserializeOwned;
use serde_json::json;

pub(crate) use crate::security::Permission;
pub(crate) use access::{Failures, Peer, Principal, RequestId};
pub(crate) use events::{count as count_event, internal_event};
pub(crate) use session::Sessions;
pub(crate) use ui::{Layouts, MAX_STREAMS};

use super::{LaunchError, Shared};

/// An error answer: a status, a stable code, and a sentence.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub(super) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub(super) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "v": 1, "error": { "code": self.code, "message": self.message } });
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<LaunchError> for ApiError {
    fn from(e: LaunchError) -> Self {
        match e {
            LaunchError::Draining => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "the server is shutting down; try again when it is back",
            ),
            LaunchError::Engine(crate::driver::EngineError::Invalid(m)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unrunnable", m)
            }
            LaunchError::Engine(crate::driver::EngineError::LowSpace(m)) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", m)
            }
            LaunchError::Engine(e) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<crate::driver::EngineError> for ApiError {
    fn from(e: crate::driver::EngineError) -> Self {
        use crate::driver::EngineError;
        use crate::store::StoreError;
        match e {
            EngineError::Store(StoreError::NoRun(id)) => ApiError::not_found(format!("there is no run {id}")),
            EngineError::Store(StoreError::Refused(crate::store::Refusal::NotFound, m)) => {
                ApiError::not_found(m)
            }
            EngineError::Store(StoreError::Refused(crate::store::Refusal::Exists, m)) => {
                ApiError::conflict(m)
            }
            EngineError::Store(StoreError::Refused(crate::store::Refusal::Invalid, m)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", m)
            }
            EngineError::Store(StoreError::Refused(crate::store::Refusal::Forbidden, m)) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", m)
            }
            EngineError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            EngineError::Invalid(m) => ApiError::conflict(m),
            EngineError::NotFound(m) => ApiError::not_found(m),
            EngineError::LowSpace(m) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", m)
            }
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        crate::driver::EngineError::from(e).into()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// A JSON request body: read up to the size cap, parsed strictly. An empty body reads as
/// `{}`.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a body up to the size cap.
pub(crate) async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is larger than the server's limit",
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("the body is not valid JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("the body does not fit: {inner}"))
        } else {
            ApiError::bad_request(format!("the body's `{path}` is wrong: {inner}"))
        }
    })
}

/// A run id from a path: `12` (or `r12`, as older versions printed it).
pub(crate) fn run_id(text: &str) -> ApiResult<u64> {
    text.strip_prefix('r')
        .unwrap_or(text)
        .parse()
        .map_err(|_| ApiError::bad_request(format!("`{text}` is not a run id (a number such as 12)")))
}

/// The route a request matched (its template, such as `/api/v1/runs/{run}`), handed back
/// out to the access log.
#[derive(Debug, Clone)]
pub(crate) struct Route(pub String);

/// One structured line per request: method, route (its template, so run ids do not make
/// every line a new route), status, and the latency until the answer's head.
async fn access_log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let route = resp.extensions().get::<Route>().map_or("unmatched", |r| r.0.as_str());
    crate::metrics::http(method.as_str(), route, resp.status().as_u16(), start.elapsed());
    tracing::info!(
        target: "sluice::http",
        method = %method,
        route,
        status = resp.status().as_u16(),
        latency_ms = start.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

async fn limit(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // Health answers whatever the load: it takes no slot and does no work.
    if path == "/api/v1/health" || path == "/api/v1/ready" {
        return next.run(req).await;
    }
    if path.starts_with("/api/v1/events/") && req.method() == Method::POST {
        let Ok(_permit) = shared.events_in_flight.try_acquire() else {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many events are being taken in at once; retry shortly",
            )
            .into_response();
        };
        return next.run(req).await;
    }
    let Ok(_permit) = shared.in_flight.try_acquire() else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            format!("more than {} requests are in flight; retry shortly", shared.opts.max_in_flight),
        )
        .into_response();
    };
    next.run(req).await
}

/// `GET /metrics`: every metric in Prometheus' text format (`crate::metrics`).
async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
        crate::metrics::render(),
    )
        .into_response()
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "v": 1, "status": "ok" }))
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "draining", "the server is shutting down")
            .into_response();
    }
    let c = shared.catalog();
    axum::Json(
        json!({ "v": 1, "status": "ready", "pipelines": c.pipelines.len(), "invalid": c.invalid.len() }),
    )
    .into_response()
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not a method of {} (see /api/v1/openapi.json)", req.method(), req.uri().path()),
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no API route {} {} (see /api/v1/openapi.json)",
        req.method(),
        req.uri().path()
    ))
}

/// One route: its method, path, the permission it needs, and its handler.
pub(crate) struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub permission: Permission,
    pub(crate) handler: MethodRouter<Arc<Shared>>,
}

pub(crate) fn ep(
    method: Method,
    path: &'static str,
    permission: Permission,
    handler: MethodRouter<Arc<Shared>>,
) -> Endpoint {
    Endpoint { method, path, permission, handler }
}

/// THE table of routes. A route exists only through it, so none is without its permission;
/// the OpenAPI document takes each operation's permission from here too.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    use Permission::*;
    let (g, p) = (Method::GET, Method::POST);
    vec![
        ep(g.clone(), "/", Public, get(ui::index)),
        ep(g.clone(), "/ui/{file}", Public, get(ui::file)),
        ep(p.clone(), "/ui/login", Public, post(session::login)),
        ep(p.clone(), "/ui/logout", Read, post(session::logout)),
        ep(g.clone(), "/ui/session", Public, get(session::current)),
        ep(g.clone(), "/api/v1/stream", Read, get(ui::stream)),
        ep(g.clone(), "/api/v1/pipelines/{name}/graph", Read, get(ui::pipeline_graph)),
        ep(g.clone(), "/api/v1/runs/{run}/graph", Read, get(ui::run_graph)),
        ep(g.clone(), "/api/v1/health", Public, get(health)),
        ep(g.clone(), "/api/v1/ready", Public, get(ready)),
        ep(g.clone(), "/api/v1/openapi.json", Read, get(openapi::document)),
        ep(g.clone(), "/metrics", Read, get(metrics)),
        ep(g.clone(), "/api/v1/pipelines", Read, get(pipelines::list)),
        ep(g.clone(), "/api/v1/pipelines/{name}", Read, get(pipelines::one)),
        ep(p.clone(), "/api/v1/pipelines/{name}/runs", Run, post(runs::start)),
        ep(p.clone(), "/api/v1/pipelines/{name}/backfill", Run, post(pipelines::backfill)),
        ep(g.clone(), "/api/v1/runs", Read, get(runs::list)),
        ep(g.clone(), "/api/v1/runs/{run}", Read, get(runs::one)),
        ep(g.clone(), "/api/v1/runs/{run}/wait", Read, get(runs::wait)),
        ep(p.clone(), "/api/v1/runs/{run}/cancel", Run, post(runs::cancel)),
        ep(p.clone(), "/api/v1/runs/{run}/retry", Run, post(runs::retry)),
        ep(p.clone(), "/api/v1/runs/{run}/tags", Run, post(runs::set_tags)),
        ep(g.clone(), "/api/v1/compare", Read, get(runs::compare)),
        ep(g.clone(), "/api/v1/runs/{run}/steps/{step}/logs", Read, get(runs::logs)),
        ep(p.clone(), "/api/v1/runs/{run}/steps/{step}/approve", Approve, post(runs::approve)),
        ep(p.clone(), "/api/v1/runs/{run}/steps/{step}/reject", Approve, post(runs::reject)),
        ep(g.clone(), "/api/v1/artifacts", Read, get(artifacts::list)),
        ep(g.clone(), "/api/v1/artifacts/{digest}", Read, get(artifacts::one)),
        ep(g.clone(), "/api/v1/artifacts/{digest}/content", Read, get(artifacts::content)),
        ep(g.clone(), "/api/v1/artifacts/{digest}/provenance", Read, get(artifacts::provenance)),
        ep(g.clone(), "/api/v1/artifacts/{digest}/verify", Read, get(artifacts::verify)),
        ep(g.clone(), "/api/v1/signing-key", Read, get(artifacts::signing_key)),
        ep(g.clone(), "/api/v1/lineage/{digest}", Read, get(artifacts::lineage)),
        ep(g.clone(), "/api/v1/runs/{run}/steps/{step}/lineage", Read, get(artifacts::step_lineage)),
        ep(g.clone(), "/api/v1/runs/{run}/steps/{step}/cache", Read, get(artifacts::step_cache)),
        ep(g.clone(), "/api/v1/runs/{run}/metrics", Read, get(artifacts::run_metrics)),
        ep(p.clone(), "/api/v1/gc", Admin, post(artifacts::gc)),
        ep(g.clone(), "/api/v1/models", Read, get(models::list)),
        ep(g.clone(), "/api/v1/models/{name}", Read, get(models::one)),
        ep(g.clone(), "/api/v1/models/{name}/versions/{version}", Read, get(models::version_one)),
        ep(g.clone(), "/api/v1/models/{name}/history", Read, get(models::history)),
        ep(g.clone(), "/api/v1/models/{name}/diff", Read, get(models::diff)),
        ep(p.clone(), "/api/v1/models/{name}/aliases/{alias}", Edit, post(models::move_alias)),
        ep(p.clone(), "/api/v1/models/{name}/aliases/{alias}/rollback", Edit, post(models::rollback)),
        ep(p.clone(), "/api/v1/models/{name}/aliases/{alias}/protect", Approve, post(models::protect)),
        ep(p.clone(), "/api/v1/models/{name}/predict", Predict, post(serving::predict)),
        ep(
            p.clone(),
            "/api/v1/models/{name}/versions/{version}/predict",
            Predict,
            post(serving::predict_version),
        ),
        ep(p.clone(), "/api/v1/models/{name}/feedback", Predict, post(serving::feedback)),
        ep(g.clone(), "/api/v1/models/{name}/serving", Read, get(serving::record)),
        ep(g.clone(), "/api/v1/models/{name}/drift", Read, get(serving::drift)),
        ep(g.clone(), "/api/v1/rollouts", Read, get(rollouts::list)),
        ep(p.clone(), "/api/v1/rollouts", Approve, post(rollouts::start)),
        ep(g.clone(), "/api/v1/rollouts/{target}", Read, get(rollouts::one)),
        ep(p.clone(), "/api/v1/rollouts/{target}/pause", Approve, post(rollouts::pause)),
        ep(p.clone(), "/api/v1/rollouts/{target}/resume", Approve, post(rollouts::resume)),
        ep(p.clone(), "/api/v1/rollouts/{target}/abort", Approve, post(rollouts::abort)),
        ep(p.clone(), "/api/v1/rollouts/{target}/promote", Approve, post(rollouts::promote)),
        ep(g.clone(), "/v2", Predict, get(oip::server_metadata)),
        ep(g.clone(), "/v2/health/live", Public, get(oip::live)),
        ep(g.clone(), "/v2/health/ready", Public, get(oip::ready)),
        ep(g.clone(), "/v2/models/{name}", Predict, get(oip::model_metadata)),
        ep(g.clone(), "/v2/models/{name}/ready", Predict, get(oip::model_ready)),
        ep(g.clone(), "/v2/models/{name}/versions/{version}", Predict, get(oip::version_metadata)),
        ep(g.clone(), "/v2/models/{name}/versions/{version}/ready", Predict, get(oip::version_ready)),
        ep(p.clone(), "/v2/models/{name}/infer", Predict, post(oip::infer)),
        ep(p.clone(), "/v2/models/{name}/versions/{version}/infer", Predict, post(oip::infer_version)),
        ep(g.clone(), "/api/v1/events", Read, get(events::list)),
        ep(g.clone(), "/api/v1/events/{key}", Read, get(events::one)),
        ep(p.clone(), "/api/v1/events/{key}", Ingest, post(events::receive)),
        ep(g.clone(), "/api/v1/tokens", Admin, get(admin::tokens)),
        ep(p.clone(), "/api/v1/tokens", Admin, post(admin::create_token)),
        ep(p.clone(), "/api/v1/tokens/{name}/revoke", Admin, post(admin::revoke_token)),
        ep(g.clone(), "/api/v1/audit", Audit, get(admin::audit)),
        ep(g, "/api/v1/audit/verify", Audit, get(admin::verify_audit)),
    ]
    .into_iter()
    .chain(mlflow::endpoints())
    .collect()
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    let body_limit = shared.opts.body_limit;
    let mut router = Router::new();
    for e in endpoints() {
        let gate = access::Gate { shared: shared.clone(), permission: e.permission, path: e.path };
        router = router
            .route(e.path, e.handler.route_layer(middleware::from_fn_with_state(gate, access::authorize)));
    }
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(shared.clone(), limit))
        .layer(middleware::from_fn_with_state(shared.clone(), guard::read_whole_body))
        .layer(middleware::from_fn_with_state(shared.clone(), guard::same_origin))
        .layer(middleware::from_fn(access::request_id))
        .layer(middleware::from_fn(mlflow::mlflow_errors))
        .layer(middleware::from_fn(oip::oip_errors))
        .layer(middleware::from_fn(access_log))
        .with_state(shared)
}
