//! The model registry in Sluice's own API: models, versions (checked), alias moves with
//! their history, rollback, protection, and two versions side by side. MLflow's clients use
//! `/api/2.0/mlflow/registered-models/...` (`mlflow/registry.rs`) over the same registry.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::runs::blocking;
use super::{ApiError, ApiResult, JsonBody, Principal, RequestId};
use crate::driver::Actor;
use crate::registry::{Cause, parse_version};
use crate::security::Permission;
use crate::server::Shared;

fn actor(who: &Principal, request: &RequestId) -> Actor {
    Actor::new(who.actor(), who.role.allows(Permission::Approve), Some(request.0.clone()))
}

fn version(text: &str) -> ApiResult<u64> {
    parse_version(text).map_err(ApiError::bad_request)
}

pub(super) async fn list(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Value>> {
    blocking(move || Ok(Json(shared.engine.models_doc()?))).await
}

pub(super) async fn one(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    blocking(move || Ok(Json(shared.engine.model_doc(&name)?))).await
}

/// The query of one version.
#[derive(Debug, Default, Deserialize)]
pub(super) struct VersionQuery {
    /// Check it now: its files against their digests (hashed again), its registration, its
    /// provenance.
    #[serde(default)]
    check: bool,
}

pub(super) async fn version_one(
    State(shared): State<Arc<Shared>>,
    Path((name, v)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let v = version(&v)?;
    blocking(move || Ok(Json(shared.engine.version_doc(&name, v, q.check)?))).await
}

/// The query of the history.
#[derive(Debug, Default, Deserialize)]
pub(super) struct HistoryQuery {
    alias: Option<String>,
}

pub(super) async fn history(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Value>> {
    blocking(move || Ok(Json(shared.engine.history_doc(&name, q.alias.as_deref())?))).await
}

/// The query of a diff.
#[derive(Debug, Deserialize)]
pub(super) struct DiffQuery {
    from: String,
    to: String,
}

pub(super) async fn diff(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<Value>> {
    let (a, b) = (version(&q.from)?, version(&q.to)?);
    blocking(move || Ok(Json(shared.engine.diff_doc(&name, a, b)?))).await
}

/// The body of `POST /api/v1/models/{name}/aliases/{alias}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveAlias {
    /// The version the alias points at from now on (`3` or `"3"`).
    pub version: Value,
    /// Why, kept with the move.
    #[serde(default)]
    pub reason: String,
}

pub(super) async fn move_alias(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    Path((name, alias)): Path<(String, String)>,
    JsonBody(body): JsonBody<MoveAlias>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let to = match &body.version {
        Value::Number(n) => n
            .as_u64()
            .filter(|v| *v > 0)
            .ok_or_else(|| ApiError::bad_request("`version` must be a version number"))?,
        Value::String(s) => version(s)?,
        _ => return Err(ApiError::bad_request("`version` must be a version number")),
    };
    blocking(move || {
        let actor = actor(&who, &request);
        let cause = Cause { request: actor.request.clone(), ..Cause::default() };
        let m = shared.engine.registry().move_alias(&name, &alias, Some(to), &actor, &body.reason, cause)?;
        Ok((StatusCode::OK, Json(json!({ "v": 1, "move": m }))))
    })
    .await
}

/// The body of a rollback.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rollback {
    /// Why, kept with the move.
    #[serde(default)]
    pub reason: String,
}

pub(super) async fn rollback(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    Path((name, alias)): Path<(String, String)>,
    JsonBody(body): JsonBody<Rollback>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let m =
            shared.engine.registry().rollback_alias(&name, &alias, &actor(&who, &request), &body.reason)?;
        Ok(Json(json!({ "v": 1, "move": m })))
    })
    .await
}

/// The body of `POST /api/v1/models/{name}/aliases/{alias}/protect`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Protect {
    /// Whether only approvers (and `promote:` steps after a passed gate and an approval) may
    /// move the alias.
    pub protected: bool,
}

pub(super) async fn protect(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    Path((name, alias)): Path<(String, String)>,
    JsonBody(body): JsonBody<Protect>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let m =
            shared.engine.registry().protect_alias(&name, &alias, body.protected, &actor(&who, &request))?;
        Ok(Json(json!({ "v": 1, "protected": m.protected })))
    })
    .await
}
