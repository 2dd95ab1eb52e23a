//! MLflow's REST API 2.0, so that MLflow's clients (`mlflow`, `MlflowClient`) track runs and
//! use the registry of a Sluice server unchanged: `/api/2.0/mlflow/...` for experiments,
//! runs, metrics, params, tags and the registry, and `/api/2.0/mlflow-artifacts/...`, the
//! artifact proxy, which keeps what clients upload in the content-addressed store.
//!
//! The wire rules are MLflow's (docs/mlflow.md): a GET's fields are in its query string, other
//! methods send JSON; ids and versions are strings, int64s numbers or decimal strings; errors
//! are `{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": ...}` with MLflow's statuses,
//! never a 5xx for a client's mistake (MLflow's client retries those for minutes). Every
//! route is in [`super::endpoints`] with its permission, like the rest of the API.

pub(crate) mod artifacts;
mod experiments;
mod registry;
mod runs;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Map, Value, json};

use super::{Endpoint, Permission, ep};
use crate::server::Shared;
use crate::store::{Refusal, StoreError};

/// An MLflow error answer.
#[derive(Debug)]
pub(crate) struct MlflowError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl MlflowError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        MlflowError {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_PARAMETER_VALUE",
            message: message.into(),
        }
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        MlflowError {
            status: StatusCode::NOT_FOUND,
            code: "RESOURCE_DOES_NOT_EXIST",
            message: message.into(),
        }
    }
    pub(crate) fn exists(message: impl Into<String>) -> Self {
        MlflowError {
            status: StatusCode::BAD_REQUEST,
            code: "RESOURCE_ALREADY_EXISTS",
            message: message.into(),
        }
    }
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        MlflowError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "INTERNAL_ERROR",
            message: message.into(),
        }
    }
}

impl IntoResponse for MlflowError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error_code": self.code, "message": self.message }))).into_response()
    }
}

impl From<StoreError> for MlflowError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(Refusal::NotFound, m) => MlflowError::not_found(m),
            StoreError::Refused(Refusal::Exists, m) => MlflowError::exists(m),
            StoreError::Refused(Refusal::Invalid, m) => MlflowError::invalid(m),
            StoreError::Refused(Refusal::Forbidden, m) => {
                MlflowError { status: StatusCode::FORBIDDEN, code: "PERMISSION_DENIED", message: m }
            }
            e => MlflowError::internal(e.to_string()),
        }
    }
}

impl From<crate::driver::EngineError> for MlflowError {
    fn from(e: crate::driver::EngineError) -> Self {
        use crate::driver::EngineError;
        match e {
            EngineError::Store(s) => s.into(),
            EngineError::Forbidden(m) => {
                MlflowError { status: StatusCode::FORBIDDEN, code: "PERMISSION_DENIED", message: m }
            }
            EngineError::NotFound(m) => MlflowError::not_found(m),
            EngineError::Invalid(m) => MlflowError::invalid(m),
            e => MlflowError::internal(e.to_string()),
        }
    }
}

pub(crate) type MlResult<T> = Result<T, MlflowError>;

/// Blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> MlResult<T> + Send + 'static,
) -> MlResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MlflowError::internal(format!("the request crashed: {e}")))?
}

/// A request's fields: a GET's query string (a repeated key gives a list), or the JSON body
/// of the other methods (DELETE too).
pub(crate) struct Fields(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = MlflowError;

    async fn from_request(req: Request, state: &S) -> Result<Self, MlflowError> {
        let query = req.uri().query().map(query_fields).unwrap_or_default();
        if req.method() == Method::GET {
            return Ok(Fields(query));
        }
        let bytes = super::read_body(req, state).await.map_err(|e| MlflowError::invalid(e.message))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields(query));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(Fields(m)),
            Ok(_) => Err(MlflowError::invalid("the request body must be a JSON object")),
            Err(e) => Err(MlflowError::invalid(format!("the request body is not valid JSON: {e}"))),
        }
    }
}

/// Parses `a=1&b=x&b=y` into `{a: "1", b: ["x", "y"]}` (percent-decoded, `+` a space).
fn query_fields(q: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
        };
        let (k, v) = (decode(k), Value::String(decode(v)));
        match out.get_mut(&k) {
            Some(Value::Array(list)) => list.push(v),
            Some(one) => *one = Value::Array(vec![one.take(), v]),
            None => {
                out.insert(k, v);
            }
        }
    }
    out
}

impl Fields {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A string field, if given (a number is taken as its text).
    pub(crate) fn str(&self, name: &str) -> MlResult<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Array(a)) if a.len() == 1 => match &a[0] {
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(MlflowError::invalid(format!("`{name}` must be a string"))),
            },
            Some(_) => Err(MlflowError::invalid(format!("`{name}` must be a string"))),
        }
    }

    /// A string field that must be given.
    pub(crate) fn need(&self, name: &str) -> MlResult<String> {
        self.str(name)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| MlflowError::invalid(format!("Missing value for required parameter '{name}'")))
    }

    /// The run a request names: `run_id`, or `run_uuid` as older clients send it.
    pub(crate) fn run_id(&self) -> MlResult<String> {
        match self.str("run_id")?.filter(|s| !s.is_empty()) {
            Some(id) => Ok(id),
            None => self
                .need("run_uuid")
                .map_err(|_| MlflowError::invalid("Missing value for required parameter 'run_id'")),
        }
    }

    /// An int64 field: a number or a decimal string.
    pub(crate) fn int(&self, name: &str) -> MlResult<Option<i64>> {
        int_value(name, self.get(name))
    }

    /// A list of strings (a single string counts as a list of one).
    pub(crate) fn strings(&self, name: &str) -> MlResult<Vec<String>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(MlflowError::invalid(format!("`{name}` must be a list of strings"))),
                })
                .collect(),
            Some(_) => Err(MlflowError::invalid(format!("`{name}` must be a list of strings"))),
        }
    }

    /// A list of `{key, value}` objects (tags, params).
    pub(crate) fn pairs(&self, name: &str) -> MlResult<Vec<(String, String)>> {
        let Some(v) = self.get(name) else { return Ok(Vec::new()) };
        let Value::Array(items) = v else {
            return Err(MlflowError::invalid(format!("`{name}` must be a list of {{key, value}} objects")));
        };
        items.iter().map(|i| pair(name, i)).collect()
    }
}

/// An int64 value: a number or a decimal string (`None` when absent, null or empty).
pub(crate) fn int_value(name: &str, v: Option<&Value>) -> MlResult<Option<i64>> {
    let bad = || MlflowError::invalid(format!("`{name}` must be an integer"));
    match v.filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// One `{key, value}` object.
pub(crate) fn pair(field: &str, item: &Value) -> MlResult<(String, String)> {
    let bad =
        || MlflowError::invalid(format!("each of `{field}` must be a {{key, value}} object of strings"));
    let Value::Object(o) = item else { return Err(bad()) };
    let key = match o.get("key") {
        Some(Value::String(k)) => k.clone(),
        _ => return Err(bad()),
    };
    let value = match o.get("value") {
        Some(Value::String(v)) => v.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        None | Some(Value::Null) => String::new(),
        _ => return Err(bad()),
    };
    Ok((key, value))
}

/// A metric value: a number, or `"NaN"`/`"Infinity"`/`"-Infinity"` as proto JSON writes them
/// (refused: Sluice records finite numbers only).
pub(crate) fn metric_value(key: &str, v: Option<&Value>) -> MlResult<f64> {
    let value = match v {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => match s.as_str() {
            "NaN" | "nan" => f64::NAN,
            "Infinity" | "inf" => f64::INFINITY,
            "-Infinity" | "-inf" => f64::NEG_INFINITY,
            other => other
                .trim()
                .parse()
                .map_err(|_| MlflowError::invalid(format!("the metric `{key}` has no numeric value")))?,
        },
        _ => {
            return Err(MlflowError::invalid(format!(
                "Missing value for required parameter 'value' of metric `{key}`"
            )));
        }
    };
    crate::tracking::check_value(key, value).map_err(MlflowError::invalid)?;
    Ok(value)
}

/// `[{key, value}]`, as MLflow writes tags and params.
pub(crate) fn key_values<'a>(m: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
    Value::Array(m.into_iter().map(|(k, v)| json!({ "key": k, "value": v })).collect())
}

/// A page of `items` from an opaque token (the offset, base64), and the next page's token.
pub(crate) fn page<T>(
    mut items: Vec<T>,
    max: usize,
    token: Option<&str>,
) -> MlResult<(Vec<T>, Option<String>)> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let offset = match token.filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => b64
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse::<usize>().ok()))
            .ok_or_else(|| MlflowError::invalid("the page_token is not one this server gave"))?,
    };
    let total = items.len();
    let start = offset.min(total);
    let end = start.saturating_add(max).min(total);
    let next = (end < total).then(|| b64.encode(format!("offset:{end}")));
    items.truncate(end);
    Ok((items.split_off(start), next))
}

/// `max_results`, defaulted and capped.
pub(crate) fn max_results(f: &Fields, default: usize, cap: usize) -> MlResult<usize> {
    match f.int("max_results")? {
        None => Ok(default),
        Some(n) if n < 1 => Err(MlflowError::invalid("`max_results` must be at least 1")),
        Some(n) if n as usize > cap => {
            Err(MlflowError::invalid(format!("`max_results` may be at most {cap}")))
        }
        Some(n) => Ok(n as usize),
    }
}

/// Who a request's principal is, as tracking records users.
pub(crate) fn user_of(who: &super::Principal) -> String {
    who.name.clone()
}

/// One MLflow route: method, path, permission, handler and what it does (for the API
/// document).
pub(crate) struct Route {
    pub method: Method,
    pub path: &'static str,
    pub permission: Permission,
    pub summary: &'static str,
    pub handler: MethodRouter<Arc<Shared>>,
}

fn route(
    method: Method,
    path: &'static str,
    permission: Permission,
    summary: &'static str,
    handler: MethodRouter<Arc<Shared>>,
) -> Route {
    Route { method, path, permission, summary, handler }
}

/// Every MLflow route.
pub(crate) fn routes() -> Vec<Route> {
    use Permission::*;
    let (g, p) = (Method::GET, Method::POST);
    macro_rules! at {
        ($p:literal) => {
            concat!("/api/2.0/mlflow", $p)
        };
    }
    vec![
        route(
            g.clone(),
            at!("/experiments/get-by-name"),
            Read,
            "MLflow: an experiment by name",
            get(experiments::get_by_name),
        ),
        route(
            g.clone(),
            at!("/experiments/get"),
            Read,
            "MLflow: an experiment by id",
            get(experiments::get_one),
        ),
        route(
            p.clone(),
            at!("/experiments/create"),
            Run,
            "MLflow: create an experiment",
            post(experiments::create),
        ),
        route(
            p.clone(),
            at!("/experiments/search"),
            Read,
            "MLflow: search experiments",
            post(experiments::search),
        ),
        route(
            g.clone(),
            at!("/experiments/search"),
            Read,
            "MLflow: search experiments",
            get(experiments::search),
        ),
        route(
            p.clone(),
            at!("/experiments/update"),
            Run,
            "MLflow: rename an experiment",
            post(experiments::update),
        ),
        route(
            p.clone(),
            at!("/experiments/delete"),
            Run,
            "MLflow: delete an experiment (marked deleted)",
            post(experiments::delete),
        ),
        route(
            p.clone(),
            at!("/experiments/restore"),
            Run,
            "MLflow: restore a deleted experiment",
            post(experiments::restore),
        ),
        route(
            p.clone(),
            at!("/experiments/set-experiment-tag"),
            Run,
            "MLflow: set an experiment's tag",
            post(experiments::set_tag),
        ),
        route(p.clone(), at!("/runs/create"), Run, "MLflow: create a run", post(runs::create)),
        route(
            g.clone(),
            at!("/runs/get"),
            Read,
            "MLflow: a run, with its newest metrics, params and tags",
            get(runs::get_one),
        ),
        route(
            p.clone(),
            at!("/runs/update"),
            Run,
            "MLflow: set a run's status, end time or name",
            post(runs::update),
        ),
        route(
            p.clone(),
            at!("/runs/delete"),
            Run,
            "MLflow: delete a run (marked deleted)",
            post(runs::delete),
        ),
        route(p.clone(), at!("/runs/restore"), Run, "MLflow: restore a deleted run", post(runs::restore)),
        route(p.clone(), at!("/runs/log-metric"), Run, "MLflow: log a metric point", post(runs::log_metric)),
        route(
            p.clone(),
            at!("/runs/log-parameter"),
            Run,
            "MLflow: log a param (a param never changes)",
            post(runs::log_param),
        ),
        route(p.clone(), at!("/runs/set-tag"), Run, "MLflow: set a run's tag", post(runs::set_tag)),
        route(p.clone(), at!("/runs/delete-tag"), Run, "MLflow: delete a run's tag", post(runs::delete_tag)),
        route(
            p.clone(),
            at!("/runs/log-batch"),
            Run,
            "MLflow: log metrics, params and tags at once",
            post(runs::log_batch),
        ),
        route(
            p.clone(),
            at!("/runs/search"),
            Read,
            "MLflow: search runs with MLflow's filter and order-by grammar",
            post(runs::search),
        ),
        route(
            g.clone(),
            at!("/metrics/get-history"),
            Read,
            "MLflow: every point of a run's metric",
            get(runs::history),
        ),
        route(
            p.clone(),
            at!("/logged-models/search"),
            Read,
            "MLflow 3: search logged models (Sluice keeps none: always empty)",
            post(runs::logged_models),
        ),
        route(
            p.clone(),
            at!("/registered-models/create"),
            Edit,
            "MLflow: create a registered model",
            post(registry::create_model),
        ),
        route(
            g.clone(),
            at!("/registered-models/get"),
            Read,
            "MLflow: a registered model, its latest version and aliases",
            get(registry::get_model),
        ),
        route(
            g.clone(),
            at!("/registered-models/search"),
            Read,
            "MLflow: search registered models",
            get(registry::search_models),
        ),
        route(
            Method::PATCH,
            at!("/registered-models/update"),
            Edit,
            "MLflow: set a registered model's description",
            axum::routing::patch(registry::update_model),
        ),
        route(
            Method::DELETE,
            at!("/registered-models/delete"),
            Approve,
            "MLflow: delete a registered model (none of its aliases may point anywhere)",
            axum::routing::delete(registry::delete_model),
        ),
        route(
            p.clone(),
            at!("/registered-models/set-tag"),
            Edit,
            "MLflow: set a registered model's tag",
            post(registry::set_model_tag),
        ),
        route(
            Method::DELETE,
            at!("/registered-models/delete-tag"),
            Edit,
            "MLflow: delete a registered model's tag",
            axum::routing::delete(registry::delete_model_tag),
        ),
        route(
            p.clone(),
            at!("/registered-models/alias"),
            Edit,
            "MLflow: point an alias at a version (checked; a protected alias needs an approver); the move is kept",
            post(registry::set_alias),
        ),
        route(
            Method::DELETE,
            at!("/registered-models/alias"),
            Edit,
            "MLflow: remove an alias (kept in its history)",
            axum::routing::delete(registry::delete_alias),
        ),
        route(
            g.clone(),
            at!("/registered-models/alias"),
            Read,
            "MLflow: the version an alias points at",
            get(registry::get_by_alias),
        ),
        route(
            p.clone(),
            at!("/registered-models/get-latest-versions"),
            Read,
            "MLflow: the latest version, or the versions at the aliases named as stages",
            post(registry::latest_versions),
        ),
        route(
            g.clone(),
            at!("/registered-models/get-latest-versions"),
            Read,
            "MLflow: the latest version, or the versions at the aliases named as stages",
            get(registry::latest_versions),
        ),
        route(
            p.clone(),
            at!("/model-versions/create"),
            Edit,
            "MLflow: register a version from files logged to a run (`runs:/` or `mlflow-artifacts:/`), signed",
            post(registry::create_version),
        ),
        route(
            g.clone(),
            at!("/model-versions/get"),
            Read,
            "MLflow: a model version",
            get(registry::get_version),
        ),
        route(
            g.clone(),
            at!("/model-versions/search"),
            Read,
            "MLflow: search model versions",
            get(registry::search_versions),
        ),
        route(
            g.clone(),
            at!("/model-versions/get-download-uri"),
            Read,
            "MLflow: where a version's files are read through the artifact proxy",
            get(registry::download_uri),
        ),
        route(
            Method::PATCH,
            at!("/model-versions/update"),
            Edit,
            "MLflow: set a version's description",
            axum::routing::patch(registry::update_version),
        ),
        route(
            Method::DELETE,
            at!("/model-versions/delete"),
            Approve,
            "MLflow: delete a version (no alias may point at it)",
            axum::routing::delete(registry::delete_version),
        ),
        route(
            p.clone(),
            at!("/model-versions/set-tag"),
            Edit,
            "MLflow: set a version's tag",
            post(registry::set_version_tag),
        ),
        route(
            Method::DELETE,
            at!("/model-versions/delete-tag"),
            Edit,
            "MLflow: delete a version's tag",
            axum::routing::delete(registry::delete_version_tag),
        ),
        route(
            Method::PUT,
            "/api/2.0/mlflow-artifacts/artifacts/{*path}",
            Run,
            "MLflow's artifact proxy: upload a file (its raw bytes) into the artifact store",
            axum::routing::put(artifacts::upload),
        ),
        route(
            g.clone(),
            "/api/2.0/mlflow-artifacts/artifacts/{*path}",
            Read,
            "MLflow's artifact proxy: a file's bytes, checked against its digest",
            get(artifacts::download),
        ),
        route(
            g.clone(),
            "/api/2.0/mlflow-artifacts/artifacts",
            Read,
            "MLflow's artifact proxy: a folder's files and folders (`?path=`)",
            get(artifacts::list),
        ),
        route(
            g,
            "/api/3.0/mlflow/server-info",
            Read,
            "MLflow 3: what this server offers (no multipart or presigned transfers)",
            get(server_info),
        ),
    ]
}

/// The routes as the API's route table takes them.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    routes().into_iter().map(|r| ep(r.method, r.path, r.permission, r.handler)).collect()
}

async fn server_info() -> axum::Json<Value> {
    axum::Json(json!({
        "store_type": "SluiceStore",
        "workspaces_enabled": false,
        "multipart_uploads_enabled": false,
        "multipart_downloads_enabled": false,
        "artifacts_presigned_only": false,
    }))
}

/// What a step attempt's token may call: what training code does with MLflow's client
/// (experiments looked up or made, runs made and logged to, artifacts logged and read, model
/// versions registered and read); never alias moves, deletions, or Sluice's own API.
pub(crate) fn scoped_allows(method: &Method, route: &str) -> bool {
    const READS: &[&str] = &[
        "/api/2.0/mlflow/experiments/get-by-name",
        "/api/2.0/mlflow/experiments/get",
        "/api/2.0/mlflow/experiments/search",
        "/api/2.0/mlflow/runs/get",
        "/api/2.0/mlflow/runs/search",
        "/api/2.0/mlflow/metrics/get-history",
        "/api/2.0/mlflow/logged-models/search",
        "/api/3.0/mlflow/server-info",
        "/api/2.0/mlflow-artifacts/artifacts",
        "/api/2.0/mlflow-artifacts/artifacts/{*path}",
        "/api/2.0/mlflow/registered-models/get",
        "/api/2.0/mlflow/registered-models/search",
        "/api/2.0/mlflow/registered-models/get-latest-versions",
        "/api/2.0/mlflow/model-versions/get",
        "/api/2.0/mlflow/model-versions/search",
        "/api/2.0/mlflow/model-versions/get-download-uri",
    ];
    const WRITES: &[&str] = &[
        "/api/2.0/mlflow/experiments/create",
        "/api/2.0/mlflow/runs/create",
        "/api/2.0/mlflow/runs/update",
        "/api/2.0/mlflow/runs/log-metric",
        "/api/2.0/mlflow/runs/log-parameter",
        "/api/2.0/mlflow/runs/set-tag",
        "/api/2.0/mlflow/runs/delete-tag",
        "/api/2.0/mlflow/runs/log-batch",
        "/api/2.0/mlflow-artifacts/artifacts/{*path}",
        "/api/2.0/mlflow/registered-models/create",
        "/api/2.0/mlflow/model-versions/create",
    ];
    let reads = *method == Method::GET
        || (*method == Method::POST
            && matches!(
                route,
                "/api/2.0/mlflow/experiments/search"
                    | "/api/2.0/mlflow/runs/search"
                    | "/api/2.0/mlflow/logged-models/search"
                    | "/api/2.0/mlflow/registered-models/get-latest-versions"
            ));
    if reads && READS.contains(&route)
        || (*method == Method::GET && route == "/api/2.0/mlflow/registered-models/alias")
    {
        return true;
    }
    matches!(*method, Method::POST | Method::PUT) && WRITES.contains(&route)
}

/// Whether `who` may write to the tracking run `r`: a step attempt's token to its own run and
/// the runs it made; anyone else (with the route's permission) to any run but a pipeline
/// step's, which only that step writes (its metrics are what gates compare).
pub(crate) fn may_write(
    who: &super::Principal,
    r: &crate::tracking::TrackingRun,
) -> Result<(), (Refusal, String)> {
    match (&who.scope, &r.task) {
        (Some(own), _) if *own == r.id || r.user == who.name => Ok(()),
        (Some(_), _) => Err((
            Refusal::Forbidden,
            format!(
                "`{}` writes only to its own tracking run and the runs it made, not `{}`",
                who.name, r.id
            ),
        )),
        (None, Some(t)) => Err((
            Refusal::Forbidden,
            format!(
                "run `{}` is the tracking run of step `{}` of run {} ({}): only that step writes to it",
                r.id, t.step, t.run, t.pipeline
            ),
        )),
        (None, None) => Ok(()),
    }
}

/// Whether a path is MLflow's (its errors take MLflow's shape).
pub(crate) fn is_mlflow_path(path: &str) -> bool {
    path.starts_with("/api/2.0/") || path.starts_with("/api/3.0/")
}

/// Gives the errors the layers in front of the MLflow routes make (a missing token, a role
/// that may not, a body too large, an unknown route) MLflow's shape, so that its client
/// raises what its users expect.
pub(crate) async fn mlflow_errors(req: Request, next: Next) -> Response {
    if !is_mlflow_path(req.uri().path()) {
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_success() || status.is_redirection() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return (
            status,
            axum::Json(json!({ "error_code": "INTERNAL_ERROR", "message": "the answer could not be read" })),
        )
            .into_response();
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if v.get("error_code").is_some() {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let message = v["error"]["message"].as_str().unwrap_or("the request failed").to_string();
    let code = match (status, v["error"]["code"].as_str()) {
        (StatusCode::UNAUTHORIZED, _) => "UNAUTHENTICATED",
        (StatusCode::FORBIDDEN, _) => "PERMISSION_DENIED",
        (StatusCode::NOT_FOUND, Some("not_found")) if message.starts_with("no API route") => {
            "ENDPOINT_NOT_FOUND"
        }
        (StatusCode::NOT_FOUND, _) => "RESOURCE_DOES_NOT_EXIST",
        (StatusCode::METHOD_NOT_ALLOWED, _) => "ENDPOINT_NOT_FOUND",
        (StatusCode::TOO_MANY_REQUESTS, _) => "REQUEST_LIMIT_EXCEEDED",
        (StatusCode::PAYLOAD_TOO_LARGE, _) => "INVALID_PARAMETER_VALUE",
        (StatusCode::SERVICE_UNAVAILABLE, _) => "TEMPORARILY_UNAVAILABLE",
        (s, _) if s.is_server_error() => "INTERNAL_ERROR",
        _ => "BAD_REQUEST",
    };
    let body = serde_json::to_vec(&json!({ "error_code": code, "message": message })).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_give_fields_and_lists() {
        let f = Fields(query_fields("name=a+b&order_by=x&order_by=y%20DESC&max_results=10&e="));
        assert_eq!(f.str("name").unwrap().as_deref(), Some("a b"));
        assert_eq!(f.strings("order_by").unwrap(), ["x", "y DESC"]);
        assert_eq!(f.int("max_results").unwrap(), Some(10));
        assert_eq!(f.int("e").unwrap(), None);
        assert!(f.need("nope").unwrap_err().message.contains("'nope'"));
    }

    #[test]
    fn pages_follow_their_tokens() {
        let items: Vec<u32> = (0..5).collect();
        let (first, next) = page(items.clone(), 2, None).unwrap();
        assert_eq!(first, [0, 1]);
        let (second, next) = page(items.clone(), 2, next.as_deref()).unwrap();
        assert_eq!(second, [2, 3]);
        let (last, next) = page(items.clone(), 2, next.as_deref()).unwrap();
        assert_eq!((last, next), (vec![4], None));
        assert!(page(items, 2, Some("garbage!")).is_err());
    }

    #[test]
    fn metric_values_are_finite_numbers() {
        assert_eq!(metric_value("m", Some(&json!(0.5))).unwrap(), 0.5);
        assert_eq!(metric_value("m", Some(&json!("2.5"))).unwrap(), 2.5);
        assert!(metric_value("m", Some(&json!("NaN"))).unwrap_err().message.contains("finite"));
        assert!(metric_value("m", Some(&json!("-Infinity"))).is_err());
        assert!(metric_value("m", None).is_err());
    }
}
