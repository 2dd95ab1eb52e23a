//! Tokens and the audit log through the API (`sluice token`, `sluice audit` when a server
//! holds the data folder).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::runs::blocking;
use super::{ApiError, ApiResult, JsonBody, Principal, RequestId};
use crate::security::Role;
use crate::security::audit::Action;
use crate::security::tokens;
use crate::server::Shared;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    /// 1 to 64 letters, digits, `.`, `_`, `-`; unique among active tokens.
    pub name: String,
    /// viewer, runner, editor, approver, admin or events.
    pub role: String,
    /// How long it lasts, such as `90d`; for ever when not given.
    #[serde(default)]
    pub expires: Option<String>,
}

pub(super) async fn tokens(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Value>> {
    let now = shared.engine.now_ms();
    let list: Vec<Value> = shared.engine.store().tokens()?.iter().map(|t| t.public(now)).collect();
    Ok(Json(json!({ "v": 1, "tokens": list })))
}

/// What `token create` does, here or on a folder no server holds.
pub fn create(
    engine: &crate::driver::Engine,
    name: &str,
    role: Role,
    expires_in: Option<std::time::Duration>,
    actor: &str,
    request: Option<&str>,
) -> Result<tokens::Minted, String> {
    let now = engine.now_ms();
    let store = engine.store();
    let existing = store.tokens().map_err(|e| e.to_string())?;
    if existing.iter().any(|t| t.name == name && t.state(now) == "active") {
        return Err(format!(
            "an active token is already named `{name}`; revoke it first or pick another name"
        ));
    }
    let expires_at = expires_in.map(|d| now.saturating_add(d.as_millis().min(i64::MAX as u128) as i64));
    let minted = tokens::mint(name, role, expires_at, actor, now)?;
    store.put_token(&minted.record).map_err(|e| e.to_string())?;
    let after = json!({ "id": minted.record.id, "role": role, "expires_at": expires_at });
    store
        .audit(Action::new(actor, "token.create", format!("token:{name}")).after(after).request(request), now)
        .map_err(|e| e.to_string())?;
    store.flush().map_err(|e| e.to_string())?;
    Ok(minted)
}

/// What `token revoke` does: every active token of that name (or with that id).
pub fn revoke(
    engine: &crate::driver::Engine,
    name: &str,
    actor: &str,
    request: Option<&str>,
) -> Result<Vec<tokens::TokenRecord>, String> {
    let now = engine.now_ms();
    let store = engine.store();
    let mut revoked = Vec::new();
    for mut t in store.tokens().map_err(|e| e.to_string())? {
        if (t.name == name || t.id == name) && t.revoked_at.is_none() {
            t.revoked_at = Some(now);
            store.put_token(&t).map_err(|e| e.to_string())?;
            let before = json!({ "state": "active", "id": t.id });
            store
                .audit(
                    Action::new(actor, "token.revoke", format!("token:{}", t.name))
                        .before(before)
                        .after(json!({ "state": "revoked" }))
                        .request(request),
                    now,
                )
                .map_err(|e| e.to_string())?;
            revoked.push(t);
        }
    }
    if revoked.is_empty() {
        return Err(format!("no active token is named `{name}`"));
    }
    store.flush().map_err(|e| e.to_string())?;
    Ok(revoked)
}

pub(super) async fn create_token(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    JsonBody(body): JsonBody<CreateToken>,
) -> ApiResult<Response> {
    let role = Role::parse(&body.role).map_err(ApiError::bad_request)?;
    tokens::check_name(&body.name).map_err(ApiError::bad_request)?;
    let expires = match body.expires.as_deref() {
        None => None,
        Some(t) => Some(
            humantime::parse_duration(t.trim())
                .map_err(|e| ApiError::bad_request(format!("expires: `{t}` is not a duration ({e})")))?,
        ),
    };
    let minted = blocking(move || {
        create(&shared.engine, &body.name, role, expires, &who.actor(), Some(&request.0))
            .map_err(ApiError::conflict)
    })
    .await?;
    let now = minted.record.created_at;
    let body = json!({ "v": 1, "token": minted.token, "record": minted.record.public(now) });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(super) async fn revoke_token(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = shared.clone();
    let revoked = blocking(move || {
        revoke(&s.engine, &name, &who.actor(), Some(&request.0)).map_err(ApiError::not_found)
    })
    .await?;
    let now = shared.engine.now_ms();
    Ok(Json(json!({ "v": 1, "revoked": revoked.iter().map(|t| t.public(now)).collect::<Vec<_>>() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Entries at or after this time (RFC 3339) or sequence (`#120`).
    since: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn audit(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let filter = crate::security::audit::Filter::parse(q.since.as_deref(), q.actor, q.action)
            .map_err(ApiError::bad_request)?;
        let entries = shared.engine.store().audit_filtered(&filter, q.limit.unwrap_or(1000).min(100_000))?;
        Ok(Json(json!({ "v": 1, "entries": entries })))
    })
    .await
}

pub(super) async fn verify_audit(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Value>> {
    blocking(move || {
        let verdict = shared
            .engine
            .store()
            .verify_audit(shared.engine.signing_key().public(), None)
            .map_err(ApiError::internal)?;
        Ok(Json(json!({ "v": 1, "verdict": verdict })))
    })
    .await
}
