//! MLflow's experiments: get (by id or name), create, search, rename, delete and restore,
//! and their tags. Each pipeline has the experiment of its name; clients may make others.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::{Fields, MlResult, MlflowError, blocking, key_values, max_results, page};
use crate::server::Shared;
use crate::store::Refusal;
use crate::tracking::search::{self, Filter, Kind, Searchable};
use crate::tracking::{Experiment, Lifecycle, MAX_NAME, check_key, short};

pub(crate) fn experiment_json(e: &Experiment) -> Value {
    json!({
        "experiment_id": e.id.to_string(),
        "name": e.name,
        "artifact_location": e.artifact_location,
        "lifecycle_stage": e.lifecycle.as_str(),
        "creation_time": e.created,
        "last_update_time": e.updated,
        "tags": key_values(&e.tags),
    })
}

/// An experiment id as clients send it: a decimal string.
pub(crate) fn experiment_id(text: &str) -> MlResult<u64> {
    text.trim()
        .parse()
        .map_err(|_| MlflowError::invalid(format!("`{}` is not an experiment id", short(text))))
}

fn check_name(name: &str) -> MlResult<()> {
    if name.trim().is_empty() {
        return Err(MlflowError::invalid("an experiment's name must not be empty"));
    }
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(MlflowError::invalid(format!(
            "an experiment's name is at most {MAX_NAME} printable characters"
        )));
    }
    Ok(())
}

pub(super) async fn get_by_name(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let name = f.need("experiment_name")?;
    blocking(move || match shared.engine.store().experiment_by_name(&name)? {
        Some(e) => Ok(Json(json!({ "experiment": experiment_json(&e) }))),
        None => {
            Err(MlflowError::not_found(format!("Could not find experiment with name '{}'", short(&name))))
        }
    })
    .await
}

pub(super) async fn get_one(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let id = experiment_id(&f.need("experiment_id")?)?;
    blocking(move || match shared.engine.store().experiment(id)? {
        Some(e) => Ok(Json(json!({ "experiment": experiment_json(&e) }))),
        None => Err(MlflowError::not_found(format!("No Experiment with id={id} exists"))),
    })
    .await
}

pub(super) async fn create(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    check_name(&name)?;
    let location = f.str("artifact_location")?.filter(|l| !l.is_empty());
    if let Some(l) = &location
        && !l.starts_with("mlflow-artifacts:")
    {
        // Runs' artifacts go through the proxy into the artifact store; a local path would
        // make the client write to its own disk, outside the store.
        return Err(MlflowError::invalid(format!(
            "artifact_location `{}`: Sluice keeps artifacts in its own store; leave it out (it is `mlflow-artifacts:/<id>`)",
            short(l)
        )));
    }
    let tags = tags(&f)?;
    blocking(move || {
        let store = shared.engine.store();
        let e = store.create_experiment(&name, location, tags, shared.engine.now_ms())?;
        store.flush()?;
        Ok(Json(json!({ "experiment_id": e.id.to_string() })))
    })
    .await
}

fn tags(f: &Fields) -> MlResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in f.pairs("tags")? {
        check_key("tag", &k).map_err(MlflowError::invalid)?;
        crate::tracking::check_text("tag", &k, &v, crate::tracking::MAX_TAG_VALUE)
            .map_err(MlflowError::invalid)?;
        out.insert(k, v);
    }
    Ok(out)
}

/// Changes an experiment and answers `{}`.
async fn change(
    shared: Arc<Shared>,
    f: Fields,
    change: impl FnOnce(&mut Experiment) -> Result<(), (Refusal, String)> + Send + 'static,
) -> MlResult<Json<Value>> {
    let id = experiment_id(&f.need("experiment_id")?)?;
    blocking(move || {
        let store = shared.engine.store();
        store.update_experiment(id, shared.engine.now_ms(), change)?;
        store.flush()?;
        Ok(Json(json!({})))
    })
    .await
}

/// Refuses to rename or delete a pipeline's experiment: its steps' runs go there.
fn not_a_pipelines(e: &Experiment) -> Result<(), (Refusal, String)> {
    match e.tags.get(crate::store::PIPELINE_TAG) {
        Some(p) => Err((
            Refusal::Forbidden,
            format!(
                "`{}` is the experiment of pipeline `{p}`, where its steps' runs go: it is not renamed or deleted",
                e.name
            ),
        )),
        None => Ok(()),
    }
}

pub(super) async fn update(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let name = f.need("new_name")?;
    check_name(&name)?;
    change(shared, f, move |e| {
        not_a_pipelines(e)?;
        e.name = name;
        Ok(())
    })
    .await
}

pub(super) async fn delete(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    change(shared, f, |e| {
        if e.id == crate::tracking::DEFAULT_EXPERIMENT {
            return Err((Refusal::Invalid, "the default experiment cannot be deleted".into()));
        }
        not_a_pipelines(e)?;
        e.lifecycle = Lifecycle::Deleted;
        Ok(())
    })
    .await
}

pub(super) async fn restore(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    change(shared, f, |e| {
        e.lifecycle = Lifecycle::Active;
        Ok(())
    })
    .await
}

pub(super) async fn set_tag(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let key = f.need("key")?;
    check_key("tag", &key).map_err(MlflowError::invalid)?;
    let value = f.str("value")?.unwrap_or_default();
    crate::tracking::check_text("tag", &key, &value, crate::tracking::MAX_TAG_VALUE)
        .map_err(MlflowError::invalid)?;
    change(shared, f, move |e| {
        if key == crate::store::PIPELINE_TAG {
            not_a_pipelines(e)?;
        }
        e.tags.insert(key, value);
        Ok(())
    })
    .await
}

/// What a filter may name on experiments.
const ATTRIBUTES: &[(&str, Kind)] = &[
    ("name", Kind::Text),
    ("experiment_id", Kind::Text),
    ("creation_time", Kind::Number),
    ("last_update_time", Kind::Number),
];

struct Searched<'a>(&'a Experiment, String);

impl Searchable for Searched<'_> {
    fn metric(&self, _: &str) -> Option<f64> {
        None
    }
    fn param(&self, _: &str) -> Option<&str> {
        None
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.0.tags.get(key).map(String::as_str)
    }
    fn attribute(&self, name: &str) -> Option<search::Value<'_>> {
        Some(match name {
            "name" => search::Value::Text(self.0.name.as_str().into()),
            "experiment_id" => search::Value::Text(self.1.as_str().into()),
            "creation_time" => search::Value::Number(self.0.created as f64),
            "last_update_time" => search::Value::Number(self.0.updated as f64),
            _ => return None,
        })
    }
}

/// Which lifecycle a search wants: `view_type` (or `run_view_type`).
pub(crate) fn view(text: Option<String>) -> MlResult<fn(Lifecycle) -> bool> {
    match text.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("") | Some("ACTIVE_ONLY") | Some("1") => Ok(|l| l == Lifecycle::Active),
        Some("DELETED_ONLY") | Some("2") => Ok(|l| l == Lifecycle::Deleted),
        Some("ALL") | Some("3") => Ok(|_| true),
        Some(other) => Err(MlflowError::invalid(format!(
            "`{}` is not a view type (ACTIVE_ONLY, DELETED_ONLY, ALL)",
            short(other)
        ))),
    }
}

pub(super) async fn search(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let filter = Filter::parse(&f.str("filter")?.unwrap_or_default(), ATTRIBUTES)
        .map_err(|e| MlflowError::invalid(format!("filter: {e}")))?;
    let order = search::parse_order_by(&f.strings("order_by")?.join(", "), ATTRIBUTES)
        .map_err(|e| MlflowError::invalid(format!("order_by: {e}")))?;
    let wanted = view(f.str("view_type")?)?;
    let max = max_results(&f, 1000, 50_000)?;
    let token = f.str("page_token")?;
    blocking(move || {
        let all = shared.engine.store().experiments()?;
        let mut found: Vec<Searched<'_>> = all
            .iter()
            .filter(|e| wanted(e.lifecycle))
            .map(|e| Searched(e, e.id.to_string()))
            .filter(|s| filter.matches(s))
            .collect();
        // MLflow's default: newest first.
        found.sort_by(|a, b| {
            search::compare(a, b, &order)
                .then_with(|| b.0.created.cmp(&a.0.created))
                .then(a.0.id.cmp(&b.0.id))
        });
        let ids: Vec<&Experiment> = found.iter().map(|s| s.0).collect();
        let (shown, next) = page(ids, max, token.as_deref())?;
        let mut out = json!({ "experiments": shown.iter().map(|e| experiment_json(e)).collect::<Vec<_>>() });
        if let Some(n) = next {
            out["next_page_token"] = json!(n);
        }
        Ok(Json(out))
    })
    .await
}
