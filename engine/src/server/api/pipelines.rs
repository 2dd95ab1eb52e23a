//! Pipelines: what the server runs (and which files it could not load), one pipeline with
//! its stored versions, and backfills of its schedule.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::runs::{blocking, unknown_pipeline};
use super::{ApiError, ApiResult, JsonBody};
use crate::server::Shared;
use crate::server::catalog::Entry;
use crate::server::schedules::{Fired, fire};
use crate::trigger::cron::{parse_time, rfc3339};

/// The most slots one backfill may create.
pub(crate) const MAX_BACKFILL: usize = 10_000;

/// The body of `POST /api/v1/pipelines/{name}/backfill`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Backfill {
    /// The first instant (RFC 3339, or a date for midnight UTC); a slot at it is included.
    pub from: String,
    /// The last instant; a slot at it is included.
    pub to: String,
}

fn summary(shared: &Shared, e: &Entry) -> Value {
    let plan = &e.plan;
    let now = shared.engine.now_ms();
    let schedule = plan.spec.schedule.as_ref().map(|s| {
        json!({
            "cron": s.cron,
            "timezone": s.timezone.as_deref().unwrap_or("UTC"),
            "catchup": s.catchup,
            "overlap": s.overlap,
            "enabled": s.enabled,
            "next": e.schedule.as_ref().and_then(|c| c.next_after(now)).map(rfc3339),
            "next_fires": next_fires(e, now, 3),
        })
    });
    // The newest runs, from the index by pipeline (a few records, however many are stored).
    let filter = crate::store::RunFilter { pipeline: Some(plan.name().to_string()), ..Default::default() };
    let last: Vec<Value> = shared
        .engine
        .store()
        .run_page(&filter, 5)
        .map(|p| p.runs)
        .unwrap_or_default()
        .iter()
        .map(|r| json!({ "id": r.id, "state": r.state, "trigger": r.trigger, "created_at": rfc3339(r.created_at) }))
        .collect();
    json!({
        "name": plan.name(),
        "description": plan.spec.description,
        "file": plan.path.display().to_string(),
        "version": plan.hash,
        "steps": plan.ids,
        "params": plan.spec.params,
        // Names and where each is read from; never a value.
        "secrets": plan.spec.secrets,
        "schedule": schedule,
        "on": plan.spec.on,
        "going": shared.launcher().runs_of(plan.name()),
        "last_runs": last,
    })
}

/// The schedule's next `n` fire times after `now`.
fn next_fires(e: &Entry, now: i64, n: usize) -> Vec<String> {
    let Some(c) = e.schedule.as_ref() else { return Vec::new() };
    let mut out = Vec::new();
    let mut at = now;
    while out.len() < n {
        match c.next_after(at) {
            Some(t) if t > at => {
                out.push(rfc3339(t));
                at = t;
            }
            _ => break,
        }
    }
    out
}

pub(super) async fn list(State(shared): State<Arc<Shared>>) -> ApiResult<Json<Value>> {
    // Each summary reads its pipeline's newest runs from the store: off the async threads.
    blocking(move || {
        let c = shared.catalog();
        let pipelines: Vec<Value> = c.pipelines.values().map(|e| summary(&shared, e)).collect();
        Ok(Json(json!({ "v": 1, "pipelines": pipelines, "invalid": c.invalid })))
    })
    .await
}

pub(super) async fn one(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    blocking(move || {
        let c = shared.catalog();
        let Some(e) = c.pipelines.get(&name) else { return Err(unknown_pipeline(&shared, &name)) };
        let mut v = summary(&shared, e);
        let versions: Vec<Value> = shared
            .engine
            .store()
            .dag_versions(&name)?
            .into_iter()
            .map(|d| json!({ "version": d.hash, "file": d.path, "stored_at": rfc3339(d.stored_at) }))
            .collect();
        v["versions"] = json!(versions);
        v["v"] = json!(1);
        Ok(Json(v))
    })
    .await
}

pub(super) async fn backfill(
    State(shared): State<Arc<Shared>>,
    axum::extract::Extension(who): axum::extract::Extension<super::Principal>,
    axum::extract::Extension(request): axum::extract::Extension<super::RequestId>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<Backfill>,
) -> ApiResult<Response> {
    let c = shared.catalog();
    let Some(entry) = c.pipelines.get(&name).cloned() else { return Err(unknown_pipeline(&shared, &name)) };
    let Some(cron) = entry.schedule.clone() else {
        return Err(ApiError::conflict(format!(
            "the pipeline `{name}` has no (enabled) schedule to backfill"
        )));
    };
    let from = parse_time(&body.from).map_err(ApiError::bad_request)?;
    let to = parse_time(&body.to).map_err(ApiError::bad_request)?;
    if from > to {
        return Err(ApiError::bad_request(format!("`from` ({}) is after `to` ({})", body.from, body.to)));
    }
    let slots = cron.slots_between(from - 1, to, MAX_BACKFILL + 1);
    if slots.len() > MAX_BACKFILL {
        return Err(ApiError::bad_request(format!(
            "the range holds more than {MAX_BACKFILL} slots of `{}`; backfill it in parts",
            cron.expression()
        )));
    }
    let s = shared.clone();
    let (audited, span) = (name.clone(), json!({ "from": body.from, "to": body.to, "slots": slots.len() }));
    blocking(move || {
        let action =
            crate::security::audit::Action::new(who.actor(), "run.backfill", format!("pipeline:{audited}"))
                .after(span)
                .request(Some(&request.0));
        s.engine.audit(action)?;
        s.engine.store().flush()?;
        Ok(())
    })
    .await?;
    let s = shared.clone();
    let results = blocking(move || {
        Ok(slots
            .into_iter()
            .map(|slot| (slot, fire(&s, &entry, slot, crate::store::Trigger::Backfill, true)))
            .collect::<Vec<_>>())
    })
    .await?;
    let mut created = Vec::new();
    let mut existing = Vec::new();
    let mut failed = Vec::new();
    for (slot, r) in results {
        match r {
            Fired::Run(id) => created.push(json!({ "slot": rfc3339(slot), "run": id })),
            Fired::Held(id) => existing.push(json!({ "slot": rfc3339(slot), "run": id })),
            Fired::Skipped(_) => {}
            Fired::Failed(why) => failed.push(json!({ "slot": rfc3339(slot), "error": why })),
        }
    }
    let status = if failed.is_empty() { StatusCode::CREATED } else { StatusCode::MULTI_STATUS };
    let body = json!({ "v": 1, "created": created, "existing": existing, "failed": failed });
    Ok((status, Json(body)).into_response())
}
