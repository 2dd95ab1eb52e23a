//! MLflow's model registry: registered models, versions and aliases over Sluice's registry,
//! so `mlflow.register_model`, `MlflowClient.set_registered_model_alias` and
//! `models:/churn@production` work as they do against MLflow, with Sluice's rules on top
//! (every version signed and checked, protected aliases, every move kept and audited).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use serde_json::{Value, json};

use super::artifacts::proxy_folder_of;
use super::{Fields, MlResult, MlflowError, blocking, key_values, max_results, page};
use crate::driver::{Actor, NewVersion};
use crate::registry::{
    Cause, ModelVersion, RegisteredModel, check_alias, parse_version, schema_of_mlmodel, version_folder,
};
use crate::security::Permission;
use crate::server::Shared;
use crate::server::api::{Principal, RequestId};
use crate::store::Store;
use crate::tracking::search::{self, Filter, Kind, Searchable};
use crate::tracking::{MAX_TAG_VALUE, check_key, check_text, short};

fn actor(who: &Principal, request: &RequestId) -> Actor {
    Actor::new(who.actor(), who.role.allows(Permission::Approve), Some(request.0.clone()))
}

pub(crate) fn version_json(v: &ModelVersion, aliases: &[(String, u64)]) -> Value {
    let mine: Vec<&str> =
        aliases.iter().filter(|(_, at)| *at == v.version).map(|(a, _)| a.as_str()).collect();
    json!({
        "name": v.name,
        "version": v.version.to_string(),
        "creation_timestamp": v.created,
        "last_updated_timestamp": v.updated,
        "user_id": v.created_by,
        "current_stage": "None",
        "description": v.description,
        "source": v.source,
        "run_id": v.tracking_run.clone().unwrap_or_default(),
        "status": "READY",
        "status_message": "",
        "tags": key_values(&v.tags),
        "run_link": "",
        "aliases": mine,
    })
}

fn model_json(store: &Store, m: &RegisteredModel) -> MlResult<Value> {
    let aliases = store.aliases(&m.name)?;
    let latest = match m.last_version {
        0 => None,
        _ => store.model_versions(Some(&m.name))?.pop(),
    };
    Ok(json!({
        "name": m.name,
        "creation_timestamp": m.created,
        "last_updated_timestamp": m.updated,
        "user_id": m.created_by,
        "description": m.description,
        "latest_versions": latest.iter().map(|v| version_json(v, &aliases)).collect::<Vec<_>>(),
        "tags": key_values(&m.tags),
        "aliases": aliases.iter().map(|(a, v)| json!({ "alias": a, "version": v.to_string() })).collect::<Vec<_>>(),
    }))
}

fn version_of(f: &Fields) -> MlResult<u64> {
    parse_version(&f.need("version")?).map_err(MlflowError::invalid)
}

fn tags(f: &Fields) -> MlResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in f.pairs("tags")? {
        check_key("tag", &k).map_err(MlflowError::invalid)?;
        check_text("tag", &k, &v, MAX_TAG_VALUE).map_err(MlflowError::invalid)?;
        out.insert(k, v);
    }
    Ok(out)
}

pub(super) async fn create_model(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let description = f.str("description")?.unwrap_or_default();
    let tags = tags(&f)?;
    blocking(move || {
        let m = shared.engine.registry().create_model(&name, &description, tags, &actor(&who, &request))?;
        Ok(Json(json!({ "registered_model": model_json(shared.engine.store(), &m)? })))
    })
    .await
}

pub(super) async fn get_model(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    blocking(move || {
        let store = shared.engine.store();
        let m = store.model_needed(&name)?;
        Ok(Json(json!({ "registered_model": model_json(store, &m)? })))
    })
    .await
}

/// What a filter may name on registered models.
const MODEL_ATTRIBUTES: &[(&str, Kind)] =
    &[("name", Kind::Text), ("creation_timestamp", Kind::Number), ("last_updated_timestamp", Kind::Number)];

struct SearchedModel<'a>(&'a RegisteredModel);

impl Searchable for SearchedModel<'_> {
    fn metric(&self, _: &str) -> Option<f64> {
        None
    }
    fn param(&self, _: &str) -> Option<&str> {
        None
    }
    fn tag(&self, key: &str) -> Option<&str> {
        match self.0.tags.get(key) {
            Some(v) => Some(v),
            // MLflow's client adds `tag.mlflow.prompt.is_prompt != 'true'` to every search:
            // a model without the tag is no prompt.
            None if key == "mlflow.prompt.is_prompt" => Some("false"),
            None => None,
        }
    }
    fn attribute(&self, name: &str) -> Option<search::Value<'_>> {
        Some(match name {
            "name" => search::Value::Text(self.0.name.as_str().into()),
            "creation_timestamp" | "timestamp" => search::Value::Number(self.0.created as f64),
            "last_updated_timestamp" => search::Value::Number(self.0.updated as f64),
            _ => return None,
        })
    }
}

/// MLflow's registry filters name fields bare (`name LIKE 'ch%'`); Sluice's grammar wants
/// them prefixed: bare known names become `attributes.<name>`.
fn prefixed(filter: &str, names: &[&str]) -> String {
    let mut out = String::with_capacity(filter.len() + 16);
    let mut rest = filter;
    let mut quote: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        if let Some(q) = quote {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            if c == q {
                quote = None;
            }
            continue;
        }
        if c == '\'' || c == '"' || c == '`' {
            quote = Some(c);
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        let at_word_start = out.chars().last().is_none_or(|p| !(p.is_alphanumeric() || p == '_' || p == '.'));
        if at_word_start
            && let Some(n) = names.iter().find(|n| {
                rest.starts_with(**n)
                    && rest[n.len()..]
                        .chars()
                        .next()
                        .is_none_or(|x| !(x.is_alphanumeric() || x == '_' || x == '.'))
            })
        {
            out.push_str("attributes.");
            out.push_str(n);
            rest = &rest[n.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

pub(super) async fn search_models(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let names: Vec<&str> = MODEL_ATTRIBUTES.iter().map(|(n, _)| *n).collect();
    let text = prefixed(&f.str("filter")?.unwrap_or_default(), &names);
    let filter =
        Filter::parse(&text, MODEL_ATTRIBUTES).map_err(|e| MlflowError::invalid(format!("filter: {e}")))?;
    let order =
        search::parse_order_by(&prefixed(&f.strings("order_by")?.join(", "), &names), MODEL_ATTRIBUTES)
            .map_err(|e| MlflowError::invalid(format!("order_by: {e}")))?;
    let max = max_results(&f, 100, 1000)?;
    let token = f.str("page_token")?;
    blocking(move || {
        let store = shared.engine.store();
        let models = store.models()?;
        let mut found: Vec<SearchedModel<'_>> =
            models.iter().map(SearchedModel).filter(|m| filter.matches(m)).collect();
        found.sort_by(|a, b| search::compare(a, b, &order).then(a.0.name.cmp(&b.0.name)));
        let (shown, next) = page(found, max, token.as_deref())?;
        let list = shown.iter().map(|m| model_json(store, m.0)).collect::<MlResult<Vec<_>>>()?;
        let mut out = json!({ "registered_models": list });
        if let Some(n) = next {
            out["next_page_token"] = json!(n);
        }
        Ok(Json(out))
    })
    .await
}

pub(super) async fn update_model(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let description = f.str("description")?;
    blocking(move || {
        let m = shared.engine.registry().update_model(&name, &actor(&who, &request), |m| {
            if let Some(d) = description {
                m.description = d;
            }
        })?;
        Ok(Json(json!({ "registered_model": model_json(shared.engine.store(), &m)? })))
    })
    .await
}

pub(super) async fn delete_model(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    blocking(move || {
        shared.engine.registry().delete_model(&name, None, &actor(&who, &request))?;
        Ok(Json(json!({})))
    })
    .await
}

pub(super) async fn set_model_tag(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    change_tag(shared, actor(&who, &request), f, false, true).await
}

pub(super) async fn delete_model_tag(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    change_tag(shared, actor(&who, &request), f, false, false).await
}

/// Sets (`set`) or deletes a tag of a model, or of one of its versions (`of_version`).
async fn change_tag(
    shared: Arc<Shared>,
    actor: Actor,
    f: Fields,
    of_version: bool,
    set: bool,
) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let version = if of_version { Some(version_of(&f)?) } else { None };
    let key = f.need("key")?;
    let value = if set {
        let value = f.str("value")?.unwrap_or_default();
        check_key("tag", &key).map_err(MlflowError::invalid)?;
        check_text("tag", &key, &value, MAX_TAG_VALUE).map_err(MlflowError::invalid)?;
        Some(value)
    } else {
        None
    };
    blocking(move || {
        let change = |tags: &mut BTreeMap<String, String>| match value {
            Some(value) => {
                tags.insert(key, value);
            }
            None => {
                tags.remove(&key);
            }
        };
        let registry = shared.engine.registry();
        match version {
            Some(n) => registry.update_version(&name, n, &actor, |v| change(&mut v.tags)).map(drop)?,
            None => registry.update_model(&name, &actor, |m| change(&mut m.tags)).map(drop)?,
        }
        Ok(Json(json!({})))
    })
    .await
}

pub(super) async fn set_alias(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let alias = f.need("alias")?;
    check_alias(&alias).map_err(MlflowError::invalid)?;
    let version = version_of(&f)?;
    let reason = f.str("reason")?.unwrap_or_default();
    blocking(move || {
        let actor = actor(&who, &request);
        let cause = Cause { request: actor.request.clone(), ..Cause::default() };
        shared.engine.registry().move_alias(&name, &alias, Some(version), &actor, &reason, cause)?;
        Ok(Json(json!({})))
    })
    .await
}

pub(super) async fn delete_alias(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let alias = f.need("alias")?;
    blocking(move || {
        let actor = actor(&who, &request);
        let cause = Cause { request: actor.request.clone(), ..Cause::default() };
        shared.engine.registry().move_alias(&name, &alias, None, &actor, "", cause)?;
        Ok(Json(json!({})))
    })
    .await
}

pub(super) async fn get_by_alias(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let alias = f.need("alias")?;
    blocking(move || {
        let store = shared.engine.store();
        store.model_needed(&name)?;
        let Some(v) = store.alias(&name, &alias)? else {
            return Err(MlflowError::invalid(format!("Registered model alias {} not found.", short(&alias))));
        };
        let version = store.model_version_needed(&name, v)?;
        Ok(Json(json!({ "model_version": version_json(&version, &store.aliases(&name)?) })))
    })
    .await
}

/// MLflow's stages, read as aliases: `Production` is what `production` points at; `None` (or
/// no stage) the latest version.
pub(super) async fn latest_versions(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let stages = f.strings("stages")?;
    blocking(move || {
        let store = shared.engine.store();
        store.model_needed(&name)?;
        let aliases = store.aliases(&name)?;
        let versions = store.model_versions(Some(&name))?;
        let mut out = Vec::new();
        if stages.is_empty() || stages.iter().any(|s| s.eq_ignore_ascii_case("none")) {
            out.extend(versions.last().cloned());
        }
        for s in stages.iter().filter(|s| !s.eq_ignore_ascii_case("none")) {
            let wanted = s.to_ascii_lowercase();
            if let Some((_, v)) = aliases.iter().find(|(a, _)| *a == wanted)
                && let Some(found) = versions.iter().find(|x| x.version == *v)
            {
                out.push(found.clone());
            }
        }
        Ok(Json(
            json!({ "model_versions": out.iter().map(|v| version_json(v, &aliases)).collect::<Vec<_>>() }),
        ))
    })
    .await
}

/// The main file of a version made from MLflow's files: `model.*`, else the largest.
fn main_file(files: &BTreeMap<String, crate::registry::VersionFile>) -> Option<String> {
    files
        .keys()
        .find(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with("model.") && !n.ends_with(".json")))
        .cloned()
        .or_else(|| files.iter().max_by_key(|(_, f)| f.size).map(|(p, _)| p.clone()))
}

pub(super) async fn create_version(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let source = f.need("source")?;
    let run_id = f.str("run_id")?.filter(|r| !r.is_empty());
    let description = f.str("description")?.unwrap_or_default();
    let tags = tags(&f)?;
    blocking(move || {
        let store = shared.engine.store();
        store.model_needed(&name)?;
        let folder = proxy_folder_of(&source, |run| store.tracking_run(run).ok().flatten().map(|r| r.artifact_uri))?;
        // The run the files came from: the source's (`runs:/<run>/...`, `<experiment>/<run>/artifacts/...`);
        // a `run_id` that names another is refused (its metrics would be borrowed).
        let from_source = source
            .strip_prefix("runs:/")
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .or_else(|| match folder.splitn(4, '/').collect::<Vec<_>>().as_slice() {
                [_, run, "artifacts", ..] => Some(run.to_string()),
                _ => None,
            });
        let run_id = match (run_id, from_source) {
            (Some(given), Some(src)) if given != src => {
                return Err(MlflowError::invalid(format!(
                    "run_id `{}` is not the run the source's files belong to (`{}`)",
                    short(&given),
                    short(&src)
                )));
            }
            (given, src) => given.or(src),
        };
        if let Some(id) = &run_id
            && let Some(r) = store.tracking_run(id)?
            && who.scope.is_some()
        {
            super::may_write(&who, &r).map_err(|(k, m)| crate::store::StoreError::Refused(k, m))?;
        } else if who.scope.is_some() {
            return Err(MlflowError::invalid("a step's token registers only from its own run's files"));
        }
        let files = store.proxy_folder(&folder)?;
        let files = if files.is_empty() {
            // A single file rather than a folder.
            match store.proxy_file(&folder)? {
                Some(pf) => {
                    let file = folder.rsplit('/').next().unwrap_or(&folder).to_string();
                    BTreeMap::from([(file, crate::registry::VersionFile { digest: pf.digest, size: pf.size })])
                }
                None => {
                    return Err(MlflowError::invalid(format!(
                        "there are no files at `{}` in the artifact store; log the model's files to the run first",
                        short(&source)
                    )));
                }
            }
        } else {
            files
        };
        let run = match &run_id {
            Some(id) => Some(store.tracking_run(id)?.ok_or_else(|| MlflowError::not_found(format!("Run with id={} not found", short(id))))?),
            None => None,
        };
        // The input schema from MLmodel's signature, when the folder has one.
        let input_schema = match files.get("MLmodel") {
            Some(f) if f.size <= 1 << 20 => {
                let mut text = String::new();
                if let Ok((mut r, _)) = store.blobs().reader(&f.digest) {
                    let _ = std::io::Read::read_to_string(&mut r, &mut text);
                }
                schema_of_mlmodel(&text)
            }
            _ => Vec::new(),
        };
        let new = NewVersion {
            name: name.clone(),
            main: main_file(&files),
            files,
            source,
            attempt: None,
            tracking_run: run_id,
            metrics: run.as_ref().map(|r| r.metrics.iter().map(|(k, l)| (k.clone(), l.value)).collect()).unwrap_or_default(),
            params: run.as_ref().map(|r| r.params.clone()).unwrap_or_default(),
            input_schema,
            description,
            tags,
            create_model: false,
        };
        let (v, _) = shared.engine.registry().register_version(new, &actor(&who, &request), None)?;
        Ok(Json(json!({ "model_version": version_json(&v, &store.aliases(&name)?) })))
    })
    .await
}

pub(super) async fn get_version(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let version = version_of(&f)?;
    blocking(move || {
        let store = shared.engine.store();
        let v = store.model_version_needed(&name, version)?;
        Ok(Json(json!({ "model_version": version_json(&v, &store.aliases(&name)?) })))
    })
    .await
}

pub(super) async fn download_uri(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let version = version_of(&f)?;
    blocking(move || {
        shared.engine.store().model_version_needed(&name, version)?;
        Ok(Json(json!({ "artifact_uri": format!("mlflow-artifacts:/{}", version_folder(&name, version)) })))
    })
    .await
}

/// What a filter may name on versions.
const VERSION_ATTRIBUTES: &[(&str, Kind)] = &[
    ("name", Kind::Text),
    ("run_id", Kind::Text),
    ("source_path", Kind::Text),
    ("version_number", Kind::Number),
    ("creation_timestamp", Kind::Number),
    ("last_updated_timestamp", Kind::Number),
];

struct SearchedVersion<'a>(&'a ModelVersion);

impl Searchable for SearchedVersion<'_> {
    fn metric(&self, key: &str) -> Option<f64> {
        self.0.metrics.get(key).copied()
    }
    fn param(&self, key: &str) -> Option<&str> {
        self.0.params.get(key).map(String::as_str)
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.0.tags.get(key).map(String::as_str)
    }
    fn attribute(&self, name: &str) -> Option<search::Value<'_>> {
        Some(match name {
            "name" => search::Value::Text(self.0.name.as_str().into()),
            "run_id" => search::Value::Text(self.0.tracking_run.as_deref().unwrap_or("").into()),
            "source_path" => search::Value::Text(self.0.source.as_str().into()),
            "version_number" => search::Value::Number(self.0.version as f64),
            "creation_timestamp" => search::Value::Number(self.0.created as f64),
            "last_updated_timestamp" => search::Value::Number(self.0.updated as f64),
            _ => return None,
        })
    }
}

pub(super) async fn search_versions(State(shared): State<Arc<Shared>>, f: Fields) -> MlResult<Json<Value>> {
    let names: Vec<&str> = VERSION_ATTRIBUTES.iter().map(|(n, _)| *n).collect();
    let text = prefixed(&f.str("filter")?.unwrap_or_default(), &names);
    let filter =
        Filter::parse(&text, VERSION_ATTRIBUTES).map_err(|e| MlflowError::invalid(format!("filter: {e}")))?;
    let order =
        search::parse_order_by(&prefixed(&f.strings("order_by")?.join(", "), &names), VERSION_ATTRIBUTES)
            .map_err(|e| MlflowError::invalid(format!("order_by: {e}")))?;
    let max = max_results(&f, 10_000, 200_000)?;
    let token = f.str("page_token")?;
    blocking(move || {
        let store = shared.engine.store();
        let versions = store.model_versions(None)?;
        let mut found: Vec<SearchedVersion<'_>> =
            versions.iter().map(SearchedVersion).filter(|v| filter.matches(v)).collect();
        found.sort_by(|a, b| {
            search::compare(a, b, &order).then(a.0.name.cmp(&b.0.name)).then(b.0.version.cmp(&a.0.version))
        });
        let (shown, next) = page(found, max, token.as_deref())?;
        let mut aliases: BTreeMap<&str, Vec<(String, u64)>> = BTreeMap::new();
        let mut list = Vec::new();
        for v in &shown {
            if !aliases.contains_key(v.0.name.as_str()) {
                aliases.insert(&v.0.name, store.aliases(&v.0.name)?);
            }
            list.push(version_json(v.0, &aliases[v.0.name.as_str()]));
        }
        let mut out = json!({ "model_versions": list });
        if let Some(n) = next {
            out["next_page_token"] = json!(n);
        }
        Ok(Json(out))
    })
    .await
}

pub(super) async fn update_version(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let version = version_of(&f)?;
    let description = f.str("description")?;
    blocking(move || {
        let v = shared.engine.registry().update_version(&name, version, &actor(&who, &request), |v| {
            if let Some(d) = description {
                v.description = d;
            }
        })?;
        Ok(Json(json!({ "model_version": version_json(&v, &shared.engine.store().aliases(&name)?) })))
    })
    .await
}

pub(super) async fn delete_version(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    let name = f.need("name")?;
    let version = version_of(&f)?;
    blocking(move || {
        shared.engine.registry().delete_model(&name, Some(version), &actor(&who, &request))?;
        Ok(Json(json!({})))
    })
    .await
}

pub(super) async fn set_version_tag(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    change_tag(shared, actor(&who, &request), f, true, true).await
}

pub(super) async fn delete_version_tag(
    State(shared): State<Arc<Shared>>,
    Extension(who): Extension<Principal>,
    Extension(request): Extension<RequestId>,
    f: Fields,
) -> MlResult<Json<Value>> {
    change_tag(shared, actor(&who, &request), f, true, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_become_attributes_outside_quotes() {
        let names = ["name", "run_id"];
        assert_eq!(
            prefixed("name LIKE 'ch%' AND tag.`mlflow.prompt.is_prompt` != 'true'", &names),
            "attributes.name LIKE 'ch%' AND tag.`mlflow.prompt.is_prompt` != 'true'"
        );
        assert_eq!(prefixed("name = 'name'", &names), "attributes.name = 'name'");
        assert_eq!(prefixed("tags.name = 'x'", &names), "tags.name = 'x'");
        assert_eq!(prefixed("run_id IN ('a')", &names), "attributes.run_id IN ('a')");
        assert_eq!(prefixed("names = 'x'", &names), "names = 'x'");
    }
}
