//! Rollouts in the API: list, show, start, and a person's pause, resume, abort and promote
//! (`sluice rollout ...` uses these). Starting and driving need the approver role: a
//! rollout ends by moving an alias.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::runs::blocking;
use super::{ApiError, ApiResult, JsonBody, Principal, RequestId};
use crate::rollout::Input;
use crate::rollout::spec::{RouteBy, Strategy};
use crate::security::Permission;
use crate::server::Shared;
use crate::server::rollouts::{self, RolloutError, StartRollout};

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        match e {
            RolloutError::NotFound(m) => ApiError::not_found(m),
            RolloutError::Conflict(m) => ApiError::conflict(m),
            RolloutError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_rollout", m),
            RolloutError::Internal(m) => ApiError::internal(m),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    model: Option<String>,
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let all = shared.engine.store().rollouts()?;
        let list: Vec<Value> = all
            .iter()
            .rev()
            .filter(|r| q.model.as_ref().is_none_or(|m| &r.model == m))
            .take(200)
            .map(rollouts::doc)
            .collect();
        Ok(Json(json!({ "v": 1, "rollouts": list })))
    })
    .await
}

pub(super) async fn one(
    State(shared): State<Arc<Shared>>,
    Path(target): Path<String>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let r = rollouts::find(&shared, &target)?;
        let serving = shared.serving.summary(&r.model);
        Ok(Json(json!({ "v": 1, "rollout": rollouts::doc(&r), "serving": serving })))
    })
    .await
}

/// A rollout to start.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    pub model: String,
    pub version: u64,
    /// The alias the candidate takes over (default `production`).
    #[serde(default)]
    pub alias: Option<String>,
    pub strategy: Strategy,
    #[serde(default)]
    pub route_by: Option<RouteBy>,
}

pub(super) async fn start(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    JsonBody(b): JsonBody<StartBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    blocking(move || {
        let r = rollouts::start(
            &shared,
            StartRollout {
                model: b.model,
                version: b.version,
                alias: b.alias.unwrap_or_else(|| crate::serving::SERVED_ALIAS.to_string()),
                strategy: b.strategy,
                route_by: b.route_by,
                by: who.actor(),
                may_move_protected: who.role.allows(Permission::Approve),
                request: Some(request.0.clone()),
            },
        )?;
        Ok((StatusCode::CREATED, Json(json!({ "v": 1, "rollout": rollouts::doc(&r) }))))
    })
    .await
}

/// Why a person pauses or aborts.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ControlBody {
    #[serde(default)]
    pub reason: Option<String>,
}

async fn control(
    shared: Arc<Shared>,
    who: Principal,
    request: RequestId,
    target: String,
    input: impl FnOnce(String) -> Input + Send + 'static,
    body: ControlBody,
) -> ApiResult<Json<Value>> {
    let reason = body.reason.unwrap_or_default();
    crate::registry::check_reason("a reason", &reason).map_err(ApiError::bad_request)?;
    blocking(move || {
        let by = who.actor();
        let why = if reason.is_empty() { format!("by {by}") } else { format!("{reason} (by {by})") };
        let r = rollouts::control(&shared, &target, input(why), &by, Some(&request.0))?;
        Ok(Json(json!({ "v": 1, "rollout": rollouts::doc(&r) })))
    })
    .await
}

macro_rules! control_handler {
    ($name:ident, $input:expr) => {
        pub(super) async fn $name(
            State(shared): State<Arc<Shared>>,
            Extension(who): Extension<Principal>,
            Extension(request): Extension<RequestId>,
            Path(target): Path<String>,
            JsonBody(body): JsonBody<ControlBody>,
        ) -> ApiResult<Json<Value>> {
            control(shared, who, request, target, $input, body).await
        }
    };
}

control_handler!(pause, Input::Pause);
control_handler!(resume, |_| Input::Resume);
control_handler!(abort, Input::Abort);
control_handler!(promote, |_| Input::Promote);
