//! MLflow's runs: create, get, update, delete and restore; log metrics, params and tags one
//! at a time or in batches; search them; a metric's history. A step attempt's tracking run
//! (its `MLFLOW_RUN_ID`) is one of these.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::{Json, http::StatusCode};
use serde_json::{Value, json};

use super::experiments::{experiment_id, view};
use super::{
    Fields, MlResult, MlflowError, blocking, int_value, key_values, max_results, may_write, metric_value,
    page, user_of,
};
use crate::server::Shared;
use crate::server::api::Principal;
use crate::store::Refusal;
use crate::tracking::search::{self, Filter};
use crate::tracking::{
    Lifecycle, MAX_BATCH, MAX_BATCH_PARAMS, MAX_BATCH_TAGS, MAX_PARAM_VALUE, MAX_TAG_VALUE, Metric,
    RECORD_VERSION, RUN_ATTRIBUTES, RunStatus, TrackingRun, check_key, check_text, short,
};

pub(crate) fn info_json(r: &TrackingRun) -> Value {
    let mut info = json!({
        "run_id": r.id,
        "run_uuid": r.id,
        "run_name": r.name,
        "experiment_id": r.experiment.to_string(),
        "user_id": r.user,
        "status": r.status.as_str(),
        "start_time": r.start,
        "artifact_uri": r.artifact_uri,
        "lifecycle_stage": r.lifecycle.as_str(),
    });
    if let Some(end) = r.end {
        info["end_time"] = json!(end);
    }
    info
}

pub(crate) fn run_json(r: &TrackingRun) -> Value {
    let metrics: Vec<Value> = r
        .metrics
        .iter()
        .map(|(k, l)| json!({ "key": k, "value": l.value, "timestamp": l.timestamp, "step": l.step }))
        .collect();
    json!({
        "info": info_json(r),
        "data": { "metrics": metrics, "params": key_values(&r.params), "tags": key_values(&r.tags) },
        "inputs": {},
    })
}

fn check_param(key: &str, value: &str) -> MlResult<()> {
    check_key("param", key).map_err(MlflowError::invalid)?;
    check_text("param", key, value, MAX_PARAM_VALUE).map_err(MlflowError::invalid)
}

fn check_tag(key: &str, value: &str) -> MlResult<()> {
    check_key("tag", key).map_err(MlflowError::invalid)?;
    check_text("tag", key, value, MAX_TAG_VALUE).map_err(MlflowError::invalid)
}

fn status_of(text: &str) -> MlResult<RunStatus> {
    let by_number = match text {
        "1" => Some(RunStatus::Running),
        "2" => Some(RunStatus::Scheduled),
        "3" => Some(RunStatus::Finished),
        "4" => Some(RunStatus::Failed),
        "5" => Some(RunStatus::Killed),
        _ => None,
    };
    by_number.or_else(|| RunStatus::parse(text)).ok_or_else(|| {
        MlflowError::invalid(format!(
            "`{}` is not a run status (RUNNING, SCHEDULED, FINISHED, FAILED, KILLED)",
            short(text)
        ))
    })
}

/// A name for a run its client did not name.
fn generated_name(id: &str) -> String {
    format!("run-{}", &id[..8.min(id.len())])
}

pub(super) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let experiment = experiment_id(&f.str("experiment_id")?.unwrap_or_else(|| "0".into()))?;
    let mut tags = BTreeMap::new();
    for (k, v) in f.pairs("tags")? {
        check_tag(&k, &v)?;
        tags.insert(k, v);
    }
    let id = crate::tracking::new_run_id().map_err(MlflowError::internal)?;
    let name =
        match f.str("run_name")?.filter(|n| !n.is_empty()).or_else(|| tags.get("mlflow.runName").cloned()) {
            Some(n) => n,
            None => generated_name(&id),
        };
    check_tag("mlflow.runName", &name)?;
    tags.insert("mlflow.runName".into(), name.clone());
    // A step's token makes runs as itself (so that it may write to them).
    let user = match who.scope {
        Some(_) => user_of(&who),
        None => f.str("user_id")?.filter(|u| !u.is_empty()).unwrap_or_else(|| user_of(&who)),
    };
    let now = shared.engine.now_ms();
    let start = f.int("start_time")?.unwrap_or(now);
    blocking(move || {
        let store = shared.engine.store();
        let run = TrackingRun {
            v: RECORD_VERSION,
            artifact_uri: format!("mlflow-artifacts:/{experiment}/{id}/artifacts"),
            id,
            experiment,
            name,
            user,
            status: RunStatus::Running,
            start,
            end: None,
            lifecycle: Lifecycle::Active,
            params: BTreeMap::new(),
            tags,
            metrics: BTreeMap::new(),
            task: None,
        };
        store.create_tracking_run(&run)?;
        store.flush()?;
        Ok(Json(json!({ "run": run_json(&run) })))
    })
    .await
}

pub(super) async fn get_one(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let id = f.run_id()?;
    blocking(move || match shared.engine.store().tracking_run(&id)? {
        Some(r) => Ok(Json(json!({ "run": run_json(&r) }))),
        None => Err(MlflowError::not_found(format!("Run with id={} not found", short(&id)))),
    })
    .await
}

/// Changes a run (refused when it is deleted, unless `deleted_too`), flushes, and answers
/// what `answer` makes of it.
async fn change<T: Send + 'static>(
    (shared, who): (Arc<Shared>, Principal),
    id: String,
    deleted_too: bool,
    f: impl FnOnce(&mut TrackingRun) -> Result<T, (Refusal, String)> + Send + 'static,
) -> MlResult<T> {
    blocking(move || {
        let store = shared.engine.store();
        let out = store.update_tracking_run(&id, |r| {
            may_write(&who, r)?;
            if r.lifecycle == Lifecycle::Deleted && !deleted_too {
                return Err((Refusal::Invalid, format!("The run {} must be in the 'active' state", r.id)));
            }
            f(r)
        })?;
        store.flush()?;
        Ok(out)
    })
    .await
}

pub(super) async fn update(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let id = f.run_id()?;
    let status = f.str("status")?.filter(|s| !s.is_empty()).map(|s| status_of(&s)).transpose()?;
    let end = f.int("end_time")?;
    let name = f.str("run_name")?.filter(|n| !n.is_empty());
    if let Some(n) = &name {
        check_tag("mlflow.runName", n)?;
    }
    let now = shared.engine.now_ms();
    let info = change((shared, who), id, false, move |r| {
        if let Some(s) = status {
            r.status = s;
            r.end = match (s.is_terminal(), end) {
                (_, Some(e)) => Some(e),
                (true, None) => Some(now),
                (false, None) => r.end,
            };
        } else if end.is_some() {
            r.end = end;
        }
        if let Some(n) = name {
            r.tags.insert("mlflow.runName".into(), n.clone());
            r.name = n;
        }
        Ok(info_json(r))
    })
    .await?;
    Ok(Json(json!({ "run_info": info })))
}

pub(super) async fn delete(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    f: Fields,
) -> MlResult<Json<Value>> {
    change((shared, who), f.run_id()?, true, |r| {
        r.lifecycle = Lifecycle::Deleted;
        Ok(())
    })
    .await?;
    Ok(Json(json!({})))
}

pub(super) async fn restore(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    f: Fields,
) -> MlResult<Json<Value>> {
    change((shared, who), f.run_id()?, true, |r| {
        r.lifecycle = Lifecycle::Active;
        Ok(())
    })
    .await?;
    Ok(Json(json!({})))
}

/// A run that exists and that `who` may write to.
fn writable_run(store: &crate::store::Store, who: &Principal, id: &str) -> MlResult<()> {
    match store.tracking_run(id)? {
        Some(r) => may_write(who, &r).map_err(|(k, m)| crate::store::StoreError::Refused(k, m).into()),
        None => Err(MlflowError::not_found(format!("Run with id={} not found", short(id)))),
    }
}

/// One metric point from `{key, value, timestamp, step}`.
fn metric(o: &serde_json::Map<String, Value>, now: i64) -> MlResult<Metric> {
    let key = match o.get("key") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => return Err(MlflowError::invalid("Missing value for required parameter 'key'")),
    };
    check_key("metric", &key).map_err(MlflowError::invalid)?;
    let value = metric_value(&key, o.get("value"))?;
    let step = int_value("step", o.get("step"))?.unwrap_or(0);
    let timestamp = int_value("timestamp", o.get("timestamp"))?.unwrap_or(now);
    Ok(Metric { value, step, timestamp, key })
}

/// Stores points in a run that is not deleted, and that `who` may write to.
async fn store_metrics(shared: Arc<Shared>, who: Principal, id: String, points: Vec<Metric>) -> MlResult<()> {
    blocking(move || {
        let store = shared.engine.store();
        writable_run(store, &who, &id)?;
        store.log_metrics(&id, &points)?;
        store.flush()?;
        Ok(())
    })
    .await
}

pub(super) async fn log_metric(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let id = f.run_id()?;
    let m = metric(&f.0, shared.engine.now_ms())?;
    store_metrics(shared, who, id, vec![m]).await?;
    Ok(Json(json!({})))
}

/// Sets params (each new, or logged before with the same value: a param never changes)
/// and tags on a run; nothing is written when one is refused.
fn set(
    r: &mut TrackingRun,
    params: &[(String, String)],
    tags: &[(String, String)],
) -> Result<(), (Refusal, String)> {
    for (k, v) in params {
        if let Some(old) = r.params.get(k)
            && old != v
        {
            return Err((
                Refusal::Invalid,
                format!(
                    "Changing param values is not allowed. Param with key='{k}' was already logged with value='{}' for run ID='{}'. Attempted logging new value '{}'.",
                    short(old),
                    r.id,
                    short(v)
                ),
            ));
        }
    }
    for (k, v) in params {
        r.params.insert(k.clone(), v.clone());
    }
    for (k, v) in tags {
        r.tags.insert(k.clone(), v.clone());
        if k == "mlflow.runName" && !v.is_empty() {
            r.name = v.clone();
        }
    }
    Ok(())
}

pub(super) async fn log_param(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let id = f.run_id()?;
    let key = f.need("key")?;
    let value = f.str("value")?.unwrap_or_default();
    check_param(&key, &value)?;
    change((shared, who), id, false, move |r| set(r, &[(key, value)], &[])).await?;
    Ok(Json(json!({})))
}

pub(super) async fn set_tag(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let id = f.run_id()?;
    let key = f.need("key")?;
    let value = f.str("value")?.unwrap_or_default();
    check_tag(&key, &value)?;
    change((shared, who), id, false, move |r| set(r, &[], &[(key, value)])).await?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_tag(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let id = f.run_id()?;
    let key = f.need("key")?;
    change((shared, who), id, false, move |r| match r.tags.remove(&key) {
        Some(_) => Ok(()),
        None => {
            Err((Refusal::NotFound, format!("No tag with name: {} in run with id {}", short(&key), r.id)))
        }
    })
    .await?;
    Ok(Json(json!({})))
}

pub(super) async fn log_batch(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let id = f.run_id()?;
    let now = shared.engine.now_ms();
    let metrics: Vec<Metric> = match f.0.get("metrics") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::Object(o) => metric(o, now),
                _ => Err(MlflowError::invalid("each of `metrics` must be an object")),
            })
            .collect::<MlResult<_>>()?,
        Some(_) => return Err(MlflowError::invalid("`metrics` must be a list")),
    };
    let params = f.pairs("params")?;
    let tags = f.pairs("tags")?;
    if params.len() > MAX_BATCH_PARAMS
        || tags.len() > MAX_BATCH_TAGS
        || metrics.len() + params.len() + tags.len() > MAX_BATCH
    {
        return Err(MlflowError::invalid(format!(
            "a batch holds at most {MAX_BATCH} entries in all, {MAX_BATCH_PARAMS} params and {MAX_BATCH_TAGS} tags (this one: {} metrics, {} params, {} tags)",
            metrics.len(),
            params.len(),
            tags.len()
        )));
    }
    for (k, v) in &params {
        check_param(k, v)?;
    }
    for (k, v) in &tags {
        check_tag(k, v)?;
    }
    // The same key twice in one batch with two values is a change too.
    let mut seen = BTreeMap::new();
    for (k, v) in &params {
        if seen.insert(k, v).is_some_and(|old| old != v) {
            return Err(MlflowError::invalid(format!(
                "the batch logs the param `{}` twice with two values",
                short(k)
            )));
        }
    }
    blocking(move || {
        let store = shared.engine.store();
        writable_run(store, &who, &id)?;
        if !params.is_empty() || !tags.is_empty() {
            store.update_tracking_run(&id, |r| {
                if r.lifecycle == Lifecycle::Deleted {
                    return Err((
                        Refusal::Invalid,
                        format!("The run {} must be in the 'active' state", r.id),
                    ));
                }
                set(r, &params, &tags)
            })?;
        }
        store.log_metrics(&id, &metrics)?;
        store.flush()?;
        Ok(Json(json!({})))
    })
    .await
}

pub(super) async fn search(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let experiments =
        f.strings("experiment_ids")?.iter().map(|e| experiment_id(e)).collect::<MlResult<Vec<u64>>>()?;
    let filter = Filter::parse(&f.str("filter")?.unwrap_or_default(), RUN_ATTRIBUTES)
        .map_err(|e| MlflowError::invalid(format!("filter: {e}")))?;
    let order = search::parse_order_by(&f.strings("order_by")?.join(", "), RUN_ATTRIBUTES)
        .map_err(|e| MlflowError::invalid(format!("order_by: {e}")))?;
    let wanted = view(f.str("run_view_type")?)?;
    let max = max_results(&f, 1000, 50_000)?;
    let token = f.str("page_token")?;
    blocking(move || {
        let runs = shared.engine.store().tracking_runs(&experiments)?;
        let mut found: Vec<&TrackingRun> =
            runs.iter().filter(|r| wanted(r.lifecycle) && filter.matches(*r)).collect();
        // MLflow's default: newest first, then by id.
        found.sort_by(|a, b| {
            search::compare(*a, *b, &order).then(b.start.cmp(&a.start)).then(a.id.cmp(&b.id))
        });
        let (shown, next) = page(found, max, token.as_deref())?;
        let mut out = json!({ "runs": shown.iter().map(|r| run_json(r)).collect::<Vec<_>>() });
        if let Some(n) = next {
            out["next_page_token"] = json!(n);
        }
        Ok(Json(out))
    })
    .await
}

pub(super) async fn history(
    State(shared): State<Arc<Shared>>,
    f: Fields,
) -> MlResult<([(axum::http::HeaderName, &'static str); 1], Vec<u8>)> {
    let id = f.run_id()?;
    let key = f.need("metric_key")?;
    let max = max_results(&f, 25_000, 100_000)?;
    let token = f.str("page_token")?;
    blocking(move || {
        let store = shared.engine.store();
        if store.tracking_run(&id)?.is_none() {
            return Err(MlflowError::not_found(format!("Run with id={} not found", short(&id))));
        }
        let points = store.metric_history(&id, Some(&key))?;
        let (shown, next) = page(points, max, token.as_deref())?;
        // Serialized straight from the points (a history may hold 100,000 of them).
        #[derive(serde::Serialize)]
        struct History<'a> {
            metrics: &'a [crate::tracking::Metric],
            #[serde(skip_serializing_if = "Option::is_none")]
            next_page_token: Option<String>,
        }
        let body = serde_json::to_vec(&History { metrics: &shown, next_page_token: next })
            .map_err(|e| MlflowError::internal(e.to_string()))?;
        Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body))
    })
    .await
}

/// MLflow 3's logged models: Sluice keeps none (models are registered from artifacts), so the
/// search the client makes while resolving a `runs:/` path finds nothing and it goes on.
pub(super) async fn logged_models(f: Fields) -> MlResult<(StatusCode, Json<Value>)> {
    for id in f.strings("experiment_ids")? {
        experiment_id(&id)?;
    }
    Ok((StatusCode::OK, Json(json!({ "models": [] }))))
}
