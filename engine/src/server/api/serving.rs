//! Predictions from served models in Sluice's API: `POST /api/v1/models/{name}/predict`
//! (`name` alone: the served alias or the rollout's routing; `name@alias`: that alias), and
//! `.../versions/{v}/predict`; feedback with the ground truth; each version's serving record.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::runs::blocking;
use super::{ApiError, ApiResult, JsonBody};
use crate::registry::parse_version;
use crate::server::Shared;
use crate::serving::{ServeError, Target, input};

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::NotFound(m) => ApiError::not_found(m),
            ServeError::Invalid(i) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", i.to_string())
            }
            ServeError::Refused(m) => ApiError::conflict(m),
            ServeError::Internal(m) => ApiError::internal(m),
        }
    }
}

/// A prediction body: JSON, where `NaN` and `Infinity` are read to be refused by name.
pub(super) fn body_value(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(&input::tolerate_non_finite(bytes))
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

async fn serve(
    shared: Arc<Shared>,
    name: String,
    target: Target,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body = body_value(&body)?;
    blocking(move || {
        let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        let key = shared.serving.route_key(&name, &header, &body);
        let p = shared.serving.predict(&name, &target, &body, key.as_deref())?;
        Ok(Json(p.doc()))
    })
    .await
}

pub(super) async fn predict(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let (name, target) = Target::parse(&name);
    serve(shared, name, target, headers, body).await
}

pub(super) async fn predict_version(
    State(shared): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let v = parse_version(&version).map_err(ApiError::bad_request)?;
    serve(shared, name, Target::Version(v), headers, body).await
}

/// A label as a class name: `"1"`, `1` and `true` all name their text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Label {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl Label {
    fn text(&self) -> String {
        match self {
            Label::Text(s) => s.clone(),
            Label::Number(n) => n.to_string(),
            Label::Bool(b) => b.to_string(),
        }
    }
}

/// Ground truth for an earlier prediction: `label` for a request of one row, `labels` (one
/// per row) for more.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Feedback {
    request_id: String,
    #[serde(default)]
    label: Option<Label>,
    #[serde(default)]
    labels: Option<Vec<Label>>,
}

pub(super) async fn feedback(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    JsonBody(f): JsonBody<Feedback>,
) -> ApiResult<Json<Value>> {
    let labels: Vec<String> = match (&f.label, &f.labels) {
        (Some(l), None) => vec![l.text()],
        (None, Some(ls)) => ls.iter().map(Label::text).collect(),
        _ => return Err(ApiError::bad_request("give `label` (one row) or `labels` (one per row), not both")),
    };
    let (name, _) = Target::parse(&name);
    blocking(move || {
        let (version, rows) = shared.serving.feedback(&name, &f.request_id, &labels)?;
        Ok(Json(
            json!({ "v": 1, "model": name, "version": version, "request_id": f.request_id, "rows": rows }),
        ))
    })
    .await
}

pub(super) async fn record(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let (name, _) = Target::parse(&name);
    Ok(Json(shared.serving.summary(&name)))
}

pub(super) async fn drift(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let (name, _) = Target::parse(&name);
    Ok(Json(json!({ "v": 1, "model": name, "drift": shared.serving.drift(&name) })))
}
