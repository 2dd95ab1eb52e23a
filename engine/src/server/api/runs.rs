//! Runs: start one, list and filter them, a run's steps/attempts/outputs, wait for the end,
//! cancel, retry from a step, and step logs (whole, or followed while the run goes).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, JsonBody, Principal, RequestId, run_id};
use crate::driver::{Control, Created, NewRun, Notice, RunReport};
use crate::scheduler::RunState;
use crate::security::audit::Action;
use crate::server::Shared;
use crate::store::Trigger;

/// The body of `POST /api/v1/pipelines/{name}/runs`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRun {
    /// Parameter values by name; text is parsed by the parameter's type.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Reuse no cached result and store none (`sluice run --no-cache`).
    #[serde(default)]
    pub no_cache: bool,
    /// Steps that run even when the cache holds their result (`--refresh STEP`).
    #[serde(default)]
    pub refresh: Vec<String>,
    /// The run's tags, searched as `tags.<key>`.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

/// Checks a run's tags (MLflow's key rule, values at most 8000 characters).
pub(crate) fn check_tags(tags: &std::collections::BTreeMap<String, String>) -> ApiResult<()> {
    for (k, v) in tags {
        crate::tracking::check_key("tag", k).map_err(ApiError::bad_request)?;
        crate::tracking::check_text("tag", k, v, crate::tracking::MAX_TAG_VALUE)
            .map_err(ApiError::bad_request)?;
    }
    Ok(())
}

/// The body of `POST /api/v1/runs/{run}/retry`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryRun {
    /// The step to run again, with every step after it; the others keep their results.
    pub from: String,
}

/// Blocking work (sled flushes, event-log replays) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request crashed: {e}")))?
}

pub(super) async fn start(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<StartRun>,
) -> ApiResult<Response> {
    let catalog = shared.catalog();
    let Some(entry) = catalog.pipelines.get(&name) else {
        return Err(unknown_pipeline(&shared, &name));
    };
    let plan = entry.plan.clone();
    let params = plan
        .spec
        .resolve_values(&body.params)
        .map_err(|errors| ApiError::new(StatusCode::BAD_REQUEST, "invalid_params", errors.join("; ")))?;
    if let Some(step) = body.refresh.iter().find(|s| !plan.index.contains_key(*s)) {
        return Err(ApiError::bad_request(format!("refresh: pipeline `{name}` has no step `{step}`")));
    }
    if body.no_cache && !body.refresh.is_empty() {
        return Err(ApiError::bad_request("give no_cache or refresh, not both"));
    }
    check_tags(&body.tags)?;
    let mut new = NewRun::new(params, Trigger::Api);
    new.tags = body.tags;
    new.actor = Some(who.actor());
    new.request = Some(request.0);
    new.cache = crate::store::RunCache { off: body.no_cache, refresh: body.refresh };
    let s = shared.clone();
    let created = blocking(move || Ok(s.launch(&plan, new)?)).await?;
    let Created::Run(id) = created else { return Err(ApiError::internal("a run without a key was held")) };
    let record = shared.engine.store().run(id)?;
    Ok((StatusCode::CREATED, Json(json!({ "v": 1, "run": record }))).into_response())
}

pub(super) fn unknown_pipeline(shared: &Shared, name: &str) -> ApiError {
    let c = shared.catalog();
    let known: Vec<&str> = c.pipelines.keys().map(String::as_str).collect();
    let broken = c
        .invalid
        .iter()
        .find(|i| i.file.ends_with(&format!("/{name}.yaml")) || i.file.ends_with(&format!("/{name}.json")));
    let mut msg = format!("there is no pipeline `{name}` (the server runs: {})", known.join(", "));
    if let Some(b) = broken {
        msg.push_str(&format!("; {} does not compile: {}", b.file, b.errors.join("; ")));
    }
    ApiError::not_found(msg)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunQuery {
    pipeline: Option<String>,
    state: Option<String>,
    trigger: Option<String>,
    /// Only runs with an id below this one (paging).
    before: Option<String>,
    /// The `next` of the page before (the same as `before`).
    cursor: Option<String>,
    limit: Option<usize>,
    /// MLflow's search grammar: `metrics.auc > 0.9 and params.lr = '0.01'`.
    filter: Option<String>,
    /// `metrics.auc DESC, attributes.start_time`.
    order_by: Option<String>,
}

pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<RunQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let state: Option<RunState> =
        q.state.as_deref().map(str::parse).transpose().map_err(ApiError::bad_request)?;
    let trigger: Option<Trigger> =
        q.trigger.as_deref().map(str::parse).transpose().map_err(ApiError::bad_request)?;
    let before = q.cursor.as_deref().or(q.before.as_deref()).map(run_id).transpose()?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!("`limit` must be from 1 to 1000, not {limit}")));
    }
    let search = crate::driver::RunSearch::parse(
        q.filter.as_deref().unwrap_or(""),
        q.order_by.as_deref().unwrap_or(""),
    )
    .map_err(|(what, e)| ApiError::new(StatusCode::BAD_REQUEST, "bad_search", format!("{what}: {e}")))?;
    let searched = q.filter.is_some() || q.order_by.is_some();
    let filter = crate::store::RunFilter { pipeline: q.pipeline.clone(), state, trigger, before };
    blocking(move || {
        let store = shared.engine.store();
        if !searched {
            // The indexes by pipeline and state: a page reads about `limit` records.
            let page = store.run_page(&filter, limit)?;
            let runs = shared.engine.with_tags(page.runs)?;
            return Ok(Json(json!({ "v": 1, "runs": runs, "next": page.next.map(|n| n.to_string()) })));
        }
        // A search over metrics, params and tags reads every run the filter keeps.
        let runs = shared.engine.search_runs(store.runs_matching(&filter)?, &search)?;
        let more = runs.len() > limit;
        let runs = shared.engine.with_tags(runs.into_iter().take(limit).collect())?;
        // Sorted by what the search orders by, a page has no id cursor.
        let next = (more && q.order_by.is_none()).then(|| runs.last().map(|r| r.id.to_string())).flatten();
        Ok(Json(json!({ "v": 1, "runs": runs, "next": next })))
    })
    .await
}

pub(super) async fn one(
    State(shared): State<Arc<Shared>>,
    Path(run): Path<String>,
) -> ApiResult<Json<RunReport>> {
    let id = run_id(&run)?;
    let s = shared.clone();
    Ok(Json(blocking(move || Ok(s.engine.report(id)?)).await?))
}

/// The answer of `wait`: the run's report, and whether the run has ended.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Waited {
    /// The run ended (or stopped with the server); false when the wait timed out first.
    pub done: bool,
    #[serde(flatten)]
    pub report: RunReport,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WaitQuery {
    /// The longest wait in seconds (default 30, at most 300).
    timeout_s: Option<u64>,
}

/// Answers when the run has ended (or stopped with the server), or after the timeout, with
/// the run's report; `done` says which.
pub(super) async fn wait(
    State(shared): State<Arc<Shared>>,
    Path(run): Path<String>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Waited>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id = run_id(&run)?;
    let timeout = Duration::from_secs(q.timeout_s.unwrap_or(30).min(300));
    let mut notices = shared.notices.subscribe();
    // A live server resumes every interrupted run it finds (at start), so `interrupted`
    // means "ended" only once this server itself is stopping.
    let draining = || shared.draining.load(std::sync::atomic::Ordering::SeqCst);
    let ended = |s: RunState| s.is_terminal() || (s == RunState::Interrupted && draining());
    let mut stopping = shared.stopping.clone();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    // The store once (subscribed first, so no change is missed), then only notices of this
    // run; the store again only when notices were lost.
    let mut look = true;
    loop {
        if look && ended(shared.engine.store().run(id)?.state) {
            break;
        }
        look = false;
        tokio::select! {
            n = notices.recv() => match n {
                Ok(Notice::Run { run, state }) if run == id && ended(state) => break,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => look = true,
                Err(_) => break,
            },
            _ = &mut deadline => break,
            _ = stopping.changed() => break,
        }
    }
    let s = shared.clone();
    let report = blocking(move || Ok(s.engine.report(id)?)).await?;
    Ok(Json(Waited { done: ended(report.state), report }))
}

pub(super) async fn cancel(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    Path(run): Path<String>,
) -> ApiResult<Response> {
    let id = run_id(&run)?;
    let record = shared.engine.store().run(id)?;
    if record.state.is_terminal() {
        return Err(ApiError::conflict(format!("run {id} has already ended ({})", record.state)));
    }
    let s = shared.clone();
    let state = record.state;
    blocking(move || {
        let action = Action::new(who.actor(), "run.cancel", format!("run:{id}"))
            .before(json!({ "state": state }))
            .request(Some(&request.0));
        s.engine.audit(action)?;
        s.engine.store().flush()?;
        Ok(())
    })
    .await?;
    shared.launcher().unqueue(id);
    let _ = shared.controls.send(Control::Cancel(id));
    let body = json!({ "v": 1, "run": id, "state": record.state, "cancel": "requested" });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

pub(super) async fn retry(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    Path(run): Path<String>,
    JsonBody(body): JsonBody<RetryRun>,
) -> ApiResult<Response> {
    let id = run_id(&run)?;
    let s = shared.clone();
    let created = blocking(move || {
        let record = s.engine.store().run(id)?;
        let plan = s.engine.plan_of(&record)?;
        if plan.step_ix(&body.from).is_none() {
            return Err(ApiError::not_found(format!(
                "run {id}'s pipeline `{}` has no step `{}` (it has {})",
                plan.name(),
                body.from,
                plan.ids.join(", ")
            )));
        }
        let (plan, record, prelude) = s.engine.retry_prelude(id, &body.from)?;
        let reused = prelude.len();
        let mut new = NewRun::new(record.params, Trigger::Retry);
        new.actor = Some(who.actor());
        new.request = Some(request.0);
        new.cause = Some(json!({ "retry_of": id, "from": body.from, "reused_steps": reused }));
        new.prelude = prelude;
        Ok(s.launch(&plan, new)?)
    })
    .await?;
    let Created::Run(new_id) = created else { return Err(ApiError::internal("a retry was held")) };
    let record = shared.engine.store().run(new_id)?;
    Ok((StatusCode::CREATED, Json(json!({ "v": 1, "run": record }))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    /// Keep the answer open and stream new output until the run ends.
    #[serde(default)]
    follow: bool,
    attempt: Option<u32>,
}

pub(super) async fn logs(
    State(shared): State<Arc<Shared>>,
    Path((run, step)): Path<(String, String)>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let id = run_id(&run)?;
    let record = shared.engine.store().run(id)?;
    let plan = shared.engine.plan_of(&record)?;
    let Some(ix) = plan.step_ix(&step) else {
        return Err(ApiError::not_found(format!(
            "run {id}'s pipeline has no step `{step}` (it has {})",
            plan.ids.join(", ")
        )));
    };
    let store = shared.engine.store().clone();
    let attempt = q.attempt;
    // Only the chunks after those already sent are decoded and copied.
    let read = move |from: usize| -> Result<(usize, Vec<u8>), crate::store::StoreError> {
        let chunks = store.logs_from(id, ix, from)?;
        let n = from + chunks.len();
        let text = chunks
            .into_iter()
            .filter(|c| attempt.is_none_or(|a| c.attempt == a))
            .flat_map(|c| c.data)
            .collect();
        Ok((n, text))
    };
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if let Some(a) = attempt {
        let s = shared.clone();
        let report = blocking(move || Ok(s.engine.report(id)?)).await?;
        let known =
            report.steps.get(ix as usize).is_some_and(|st| st.attempts.iter().any(|x| x.attempt == a));
        if !known && !q.follow {
            return Err(ApiError::not_found(format!("step `{step}` of run {id} has no attempt {a}")));
        }
    }
    if !q.follow {
        let (_, text) = read(0)?;
        return Ok((text_plain, text).into_response());
    }
    // Follow: poll the store for new chunks until the run has ended and all is sent. A log
    // that cannot be read ends the stream with an error (the client sees it cut off).
    let shared2 = shared.clone();
    let stream = futures_util::stream::unfold((0usize, false), move |(sent, last)| {
        let read = read.clone();
        let shared = shared2.clone();
        async move {
            if last {
                return None;
            }
            let mut sent = sent;
            loop {
                let state = match shared.engine.store().run(id) {
                    Ok(r) => r.state,
                    Err(e) => return Some((Err(broken(id, e)), (sent, true))),
                };
                // Interrupted runs are resumed by a live server; the stream ends with it.
                let over = state.is_terminal() || shared.draining.load(std::sync::atomic::Ordering::SeqCst);
                let (n, text) = match read(sent) {
                    Ok(r) => r,
                    Err(e) => return Some((Err(broken(id, e)), (sent, true))),
                };
                sent = n;
                if !text.is_empty() || over {
                    return Some((Ok::<Bytes, std::io::Error>(Bytes::from(text)), (sent, over)));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    Ok((text_plain, Body::from_stream(stream)).into_response())
}

/// A followed log that cannot be read any more.
fn broken(run: u64, e: crate::store::StoreError) -> std::io::Error {
    tracing::error!(run, error = %e, "cannot read a followed step log; the stream ends");
    std::io::Error::other(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::driver::{Engine, EngineOptions};
    use crate::server::test_shared;

    #[tokio::test]
    async fn a_log_that_cannot_be_read_is_an_error_not_an_empty_log() {
        let tmp = tempfile::tempdir().unwrap();
        let dags = tmp.path().join("dags");
        std::fs::create_dir_all(&dags).unwrap();
        std::fs::write(dags.join("p.yaml"), "name: p\nsteps:\n  a: {process: {command: [\"true\"]}}\n")
            .unwrap();
        let engine = Engine::open(EngineOptions::new(tmp.path().join("data"))).unwrap();
        let (shared, _controls, _stop) = test_shared(engine, &dags, Arc::new(SystemClock));
        let plan = shared.catalog().pipelines["p"].plan.clone();
        let id = shared.engine.create_run(&plan, Default::default(), Trigger::Api).unwrap();
        let query = || Ok(Query(LogQuery { follow: false, attempt: None }));
        let path = || Path((id.to_string(), "a".to_string()));
        assert!(logs(State(shared.clone()), path(), query()).await.is_ok(), "an empty log reads as empty");
        shared.engine.store().damage_log(id, 0).unwrap();
        let e = logs(State(shared.clone()), path(), query()).await.unwrap_err();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e.message.contains("log chunk could not be decoded"), "{}", e.message);
    }
}

/// The body of `POST /api/v1/runs/{run}/steps/{step}/approve` (and `reject`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decide {
    /// Why, kept with the decision and in the audit log.
    #[serde(default)]
    pub comment: String,
}

async fn decide(
    shared: Arc<Shared>,
    who: Principal,
    request: RequestId,
    (run, step): (String, String),
    approved: bool,
    body: Decide,
) -> ApiResult<Json<Value>> {
    let run = run_id(&run)?;
    let (decided, shared) = blocking(move || {
        let decider =
            crate::driver::Decider { actor: who.actor(), role: Some(who.role), request: Some(request.0) };
        Ok((shared.engine.decide(run, &step, approved, &body.comment, &decider)?, shared))
    })
    .await?;
    let decision = decided.decision.clone();
    let step = decided.step_id.clone();
    // The driver applies it and records it in the same batch; the answer comes once durable.
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared.controls.send(Control::Decide(Box::new(decided), tx)).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the engine is stopping; decide again once it is back",
        )
    })?;
    match rx.await {
        Ok(Ok(())) => Ok(Json(json!({ "v": 1, "run": run, "step": step, "decision": decision }))),
        Ok(Err(why)) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", why)),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the engine stopped before the decision was recorded; decide again once it is back",
        )),
    }
}

pub(super) async fn approve(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    Path(at): Path<(String, String)>,
    JsonBody(body): JsonBody<Decide>,
) -> ApiResult<Json<Value>> {
    decide(shared, who, request, at, true, body).await
}

pub(super) async fn reject(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    Path(at): Path<(String, String)>,
    JsonBody(body): JsonBody<Decide>,
) -> ApiResult<Json<Value>> {
    decide(shared, who, request, at, false, body).await
}

/// The query of `GET /api/v1/compare`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CompareQuery {
    /// Run ids, comma-separated: `12,14,15`.
    runs: String,
}

pub(super) async fn compare(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<CompareQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let ids = q
        .runs
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| run_id(s.trim()))
        .collect::<ApiResult<Vec<u64>>>()?;
    if !(1..=20).contains(&ids.len()) {
        return Err(ApiError::bad_request("compare 1 to 20 runs: `?runs=12,14`"));
    }
    blocking(move || Ok(Json(shared.engine.compare_doc(&ids)?))).await
}

/// The body of `POST /api/v1/runs/{run}/tags`: tags to set (an empty value removes one).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetTags {
    pub tags: std::collections::BTreeMap<String, String>,
}

pub(super) async fn set_tags(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    Path(run): Path<String>,
    JsonBody(body): JsonBody<SetTags>,
) -> ApiResult<Json<Value>> {
    let run = run_id(&run)?;
    check_tags(&body.tags)?;
    blocking(move || {
        let tags = shared.engine.set_run_tags(run, body.tags, &who.actor(), Some(&request.0))?;
        Ok(Json(json!({ "v": 1, "run": run, "tags": tags })))
    })
    .await
}
