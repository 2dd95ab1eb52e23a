//! Events: `POST /api/v1/events/{source}` takes Alertmanager notifications (source
//! `alertmanager`) and any JSON webhook; each is stored with what became of it (matched,
//! deduplicated, accepted with nothing to start, rejected and why) and listed for operators.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::runs::blocking;
use super::{ApiError, ApiResult, read_body};
use crate::compile::valid_source;
use crate::driver::{Created, NewRun};
use crate::server::{LaunchError, Shared};
use crate::store::{InboxRecord, InboxStatus, Trigger};
use crate::trigger::events::{
    DRIFT_SOURCE, Matched, ROLLOUT_SOURCE, match_alert, match_sluice, match_webhook, parse_notification,
};

/// How much of a payload is kept with its record.
const KEEP_PAYLOAD: usize = 64 * 1024;

/// The source name of Alertmanager's webhook receiver.
pub(crate) const ALERTMANAGER: &str = "alertmanager";

pub(super) async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(source): Path<String>,
    Extension(who): Extension<super::access::Principal>,
    req: Request,
) -> ApiResult<Response> {
    // The gate checks signatures; this is the second lock on the same door.
    if shared.opts.webhook_keys.requires(&source) && !who.signed {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unsigned",
            crate::security::webhook::SignatureError::Missing.message(&source),
        ));
    }
    if source.starts_with("sluice.") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "reserved_source",
            format!("`{source}` is Sluice's own event source; only Sluice sends its events"),
        ));
    }
    if !valid_source(&source) {
        return Err(ApiError::bad_request(format!(
            "`{source}` is not an event source: use 1-64 letters, digits, `-`, `_` or `.`"
        )));
    }
    let idempotency = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect::<String>());
    let body = match read_body(req, &()).await {
        Ok(b) => b,
        Err(e) => {
            let s = shared.clone();
            let (src, msg) = (source.clone(), e.message.clone());
            let id = blocking(move || {
                let id = s
                    .record(&src, InboxStatus::Rejected, msg, vec![], vec![], Value::Null)
                    .map_err(unstored)?;
                s.engine.store().flush().map_err(unstored)?;
                Ok(id)
            })
            .await?;
            return Ok(with_event(e, id));
        }
    };
    let s = shared.clone();
    let (status, outcome) = blocking(move || intake(&s, &source, &body, idempotency.as_deref())).await?;
    Ok((status, Json(outcome)).into_response())
}

fn with_event(e: ApiError, id: u64) -> Response {
    let body = json!({ "v": 1, "event": id, "status": "rejected", "error": { "code": e.code, "message": e.message } });
    (e.status, Json(body)).into_response()
}

/// The answer when an event cannot be stored: nothing was started, so the sender should
/// send it again (Alertmanager does).
fn unstored(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "cannot store a received event; nothing was started");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unstored",
        format!("the event could not be stored ({e}); nothing was started: send it again"),
    )
}

/// Stores, matches and acts on one of Sluice's own events (a rollout's end, drift found by
/// a monitor), as an event from outside would be (blocking).
pub(crate) fn internal_event(shared: &Shared, source: &str, payload: &Value) -> Result<Value, String> {
    let body = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
    intake(shared, source, &body, None).map(|(_, v)| v).map_err(|e| e.message)
}

/// Stores, matches and acts on one event (blocking).
fn intake(
    shared: &Shared,
    source: &str,
    body: &[u8],
    idempotency: Option<&str>,
) -> ApiResult<(StatusCode, Value)> {
    let _intake = shared.intake.lock().unwrap_or_else(|p| p.into_inner());
    let store = shared.engine.store();
    let payload: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let kept = String::from_utf8_lossy(&body[..body.len().min(KEEP_PAYLOAD)]).into_owned();
            let reason = format!("the body is not valid JSON: {e}");
            let id = shared
                .record(source, InboxStatus::Rejected, reason.clone(), vec![], vec![], Value::String(kept))
                .map_err(unstored)?;
            store.flush().map_err(unstored)?;
            return Ok(reply(StatusCode::BAD_REQUEST, id, InboxStatus::Rejected, &reason, &[], &[]));
        }
    };
    let kept = if body.len() <= KEEP_PAYLOAD { payload.clone() } else { json!({ "truncated": body.len() }) };
    let id = shared
        .record(source, InboxStatus::Received, String::new(), vec![], vec![], kept)
        .map_err(unstored)?;
    let catalog = shared.catalog();
    let specs: Vec<&crate::spec::Pipeline> = catalog.pipelines.values().map(|e| &e.plan.spec).collect();
    // Per alert (or once for a webhook): the pipelines it matched.
    let mut groups: Vec<(Value, Vec<Matched>)> = Vec::new();
    if source == ALERTMANAGER {
        let n = match parse_notification(&payload) {
            Ok(n) => n,
            Err(reason) => {
                count(shared, source, InboxStatus::Rejected);
                return Ok(finish(
                    shared,
                    id,
                    StatusCode::BAD_REQUEST,
                    InboxStatus::Rejected,
                    reason,
                    vec![],
                    vec![],
                ));
            }
        };
        for a in &n.alerts {
            let about = json!({ "alert": a.name(), "status": a.status, "fingerprint": a.fingerprint() });
            groups.push((about, match_alert(specs.iter().copied(), &n, a, id)));
        }
    } else if source == ROLLOUT_SOURCE || source == DRIFT_SOURCE {
        groups.push((json!({}), match_sluice(specs.iter().copied(), source, &payload, id)));
    } else {
        groups.push((json!({}), match_webhook(specs.iter().copied(), source, &payload, idempotency, id)));
    }
    let (mut runs, mut details) = (Vec::new(), Vec::new());
    let (mut dup, mut invalid, mut draining) = (0, 0, false);
    for (about, matched) in groups {
        if matched.is_empty() {
            details.push(merge(&about, json!({ "outcome": "unmatched" })));
        }
        for m in matched {
            let d = match m {
                Matched::Invalid { pipeline, reason } => {
                    invalid += 1;
                    json!({ "pipeline": pipeline, "outcome": "invalid", "reason": reason })
                }
                Matched::Start(c) => {
                    let Some(entry) = catalog.pipelines.get(&c.pipeline) else { continue };
                    let trigger = if source == ALERTMANAGER { Trigger::Alert } else { Trigger::Event };
                    let mut new = NewRun::new(c.params, trigger);
                    new.cause = Some(c.cause);
                    new.key = c.key;
                    match shared.launch(&entry.plan, new) {
                        Ok(Created::Run(run)) => {
                            runs.push(run);
                            json!({ "pipeline": c.pipeline, "outcome": "started", "run": run })
                        }
                        Ok(Created::Held { run }) => {
                            dup += 1;
                            let reason = if source == ALERTMANAGER {
                                format!("the same alert started {run} within its cooldown")
                            } else {
                                format!("this Idempotency-Key already started {run}")
                            };
                            json!({ "pipeline": c.pipeline, "outcome": "deduplicated", "run": run, "reason": reason })
                        }
                        Err(LaunchError::Draining) => {
                            draining = true;
                            json!({ "pipeline": c.pipeline, "outcome": "refused", "reason": "the server is shutting down" })
                        }
                        Err(LaunchError::Engine(e)) => {
                            invalid += 1;
                            json!({ "pipeline": c.pipeline, "outcome": "invalid", "reason": e.to_string() })
                        }
                    }
                }
            };
            details.push(merge(&about, d));
        }
    }
    let (status, code, reason) = if !runs.is_empty() {
        let list = runs.iter().map(|r| format!("{r}")).collect::<Vec<_>>().join(", ");
        (StatusCode::ACCEPTED, InboxStatus::Matched, format!("started {list}"))
    } else if draining {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            InboxStatus::Rejected,
            "the server is shutting down; send it again".to_string(),
        )
    } else if invalid > 0 {
        let first = details.iter().find_map(|d| d["reason"].as_str()).unwrap_or_default().to_string();
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            InboxStatus::Rejected,
            format!("matched, but no run could start: {first}"),
        )
    } else if dup > 0 {
        (
            StatusCode::ACCEPTED,
            InboxStatus::Deduplicated,
            if source == ALERTMANAGER {
                "every matching alert already started a run within its cooldown".into()
            } else {
                "this Idempotency-Key already started its runs".into()
            },
        )
    } else {
        (
            StatusCode::ACCEPTED,
            InboxStatus::Accepted,
            format!("no pipeline's `on:` matches this `{source}` event"),
        )
    };
    count(shared, source, code);
    Ok(finish(shared, id, status, code, reason, runs, details))
}

/// Counts an event in the metrics, by its source when the server knows the source (Alertmanager,
/// Sluice's own, or one some pipeline's `on:` names) and as `other` when it does not, so that
/// senders cannot make labels without end. [`Shared::record`] counts the events it stores
/// settled; those stored `received` are counted when they settle.
pub(crate) fn count(shared: &Shared, source: &str, status: InboxStatus) {
    let known =
        source == ALERTMANAGER
            || source == "schedule"
            || source == ROLLOUT_SOURCE
            || source == DRIFT_SOURCE
            || shared.catalog().pipelines.values().any(|e| {
                e.plan.spec.on.iter().any(|t| t.webhook.as_ref().is_some_and(|w| w.source == source))
            });
    crate::metrics::event(if known { source } else { "other" }, status.as_str());
}

fn merge(a: &Value, b: Value) -> Value {
    let mut out = a.clone();
    if let (Some(o), Value::Object(m)) = (out.as_object_mut(), b) {
        o.extend(m);
    }
    out
}

/// Stores what became of an event and answers with it. The runs it started are stored
/// already; if its record cannot be updated, the answer still says what happened and the log
/// says the record is behind.
fn finish(
    shared: &Shared,
    id: u64,
    status: StatusCode,
    code: InboxStatus,
    reason: String,
    runs: Vec<u64>,
    details: Vec<Value>,
) -> (StatusCode, Value) {
    let store = shared.engine.store();
    let updated = store.inbox_record(id).and_then(|rec| match rec {
        Some(mut rec) => {
            rec.status = code;
            rec.reason = reason.clone();
            rec.runs = runs.clone();
            rec.details = details.clone();
            store.update_inbox(&rec)
        }
        None => Err(crate::store::StoreError::Corrupt {
            what: "inbox record",
            detail: format!("event {id} vanished while it was handled"),
        }),
    });
    if let Err(e) = updated.and_then(|_| store.flush()) {
        tracing::error!(event = id, status = code.as_str(), error = %e, "cannot store what became of an event; its record stays `received`");
    }
    reply(status, id, code, &reason, &runs, &details)
}

fn reply(
    status: StatusCode,
    id: u64,
    code: InboxStatus,
    reason: &str,
    runs: &[u64],
    details: &[Value],
) -> (StatusCode, Value) {
    (
        status,
        json!({ "v": 1, "event": id, "status": code, "reason": reason, "runs": runs, "details": details }),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventQuery {
    source: Option<String>,
    status: Option<String>,
    before: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let status: Option<InboxStatus> =
        q.status.as_deref().map(str::parse).transpose().map_err(ApiError::bad_request)?;
    let keep = |r: &InboxRecord| {
        q.source.as_ref().is_none_or(|s| &r.source == s) && status.is_none_or(|s| r.status == s)
    };
    let events = shared.engine.store().inbox(limit, q.before, keep)?;
    Ok(Json(json!({ "v": 1, "total": shared.engine.store().inbox_len(), "events": events })))
}

pub(super) async fn one(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
) -> ApiResult<Json<Value>> {
    let id: u64 = key.parse().map_err(|_| ApiError::bad_request(format!("`{key}` is not an event id")))?;
    match shared.engine.store().inbox_record(id)? {
        Some(r) => Ok(Json(json!({ "v": 1, "event": r }))),
        None => Err(ApiError::not_found(format!("there is no event {id}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::driver::{Engine, EngineOptions};
    use crate::server::test_shared;

    #[test]
    fn an_event_that_cannot_be_stored_starts_nothing_and_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let dags = tmp.path().join("dags");
        std::fs::create_dir_all(&dags).unwrap();
        std::fs::write(
            dags.join("hook.yaml"),
            "name: hook\non:\n  - webhook: {source: ci}\nsteps:\n  a: {process: {command: [\"true\"]}}\n",
        )
        .unwrap();
        let engine = Engine::open(EngineOptions::new(tmp.path().join("data"))).unwrap();
        let (shared, _controls, _stop) = test_shared(engine, &dags, Arc::new(SystemClock));
        shared.engine.store().set_failing(true);
        let e = intake(&shared, "ci", b"{}", None).unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.contains("could not be stored") && e.message.contains("injected"), "{}", e.message);
        assert!(shared.engine.store().runs().unwrap().is_empty(), "nothing was started");
        // The same event once the store works: recorded, and its run started.
        shared.engine.store().set_failing(false);
        let (status, answer) = intake(&shared, "ci", b"{}", None).unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["status"], "matched");
        assert_eq!(shared.engine.store().runs().unwrap().len(), 1);
    }
}
