//! The registry as documents: the model list, one model, one version (checked), an alias's
//! history, and two versions side by side (metrics, params, schema and the data they were
//! trained on). `sluice models`/`model ...` print them, `/api/v1/models` serves them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Engine, Result};
use crate::registry::ModelVersion;
use crate::store::{Direction, Node, Origin};

/// The document version of the answers below.
const MODELS_VERSION: u32 = 1;

fn summary(v: &ModelVersion, aliases: &[(String, u64)]) -> Value {
    let mine: Vec<&str> =
        aliases.iter().filter(|(_, at)| *at == v.version).map(|(a, _)| a.as_str()).collect();
    json!({
        "version": v.version,
        "created": v.created,
        "created_by": v.created_by,
        "artifact": v.artifact,
        "source": v.source,
        "attempt": v.attempt,
        "metrics": v.metrics,
        "aliases": mine,
    })
}

impl Engine {
    /// Every registered model: its versions' count, aliases and protected aliases.
    pub fn models_doc(&self) -> Result<Value> {
        let mut out = Vec::new();
        for m in self.store.models()? {
            let aliases: BTreeMap<String, u64> = self.store.aliases(&m.name)?.into_iter().collect();
            out.push(json!({
                "name": m.name,
                "description": m.description,
                "latest_version": m.last_version,
                "versions": self.store.model_versions(Some(&m.name))?.len(),
                "aliases": aliases,
                "protected": m.protected,
                "updated": m.updated,
            }));
        }
        Ok(json!({ "v": MODELS_VERSION, "models": out }))
    }

    /// One model: its record, versions (newest first) and aliases.
    pub fn model_doc(&self, name: &str) -> Result<Value> {
        let m = self.store.model_needed(name)?;
        let aliases = self.store.aliases(name)?;
        let versions: Vec<Value> =
            self.store.model_versions(Some(name))?.iter().rev().map(|v| summary(v, &aliases)).collect();
        Ok(json!({
            "v": MODELS_VERSION,
            "model": m,
            "aliases": aliases.iter().cloned().collect::<BTreeMap<String, u64>>(),
            "versions": versions,
        }))
    }

    /// One version, whole; with `check`, whether it checks now (its files hashed again: a
    /// large model takes a while).
    pub fn version_doc(&self, name: &str, version: u64, check: bool) -> Result<Value> {
        let v = self.store.model_version_needed(name, version)?;
        let aliases = self.store.aliases(name)?;
        let mut checked = vec!["files", "registration"];
        if v.attempt.is_some() {
            checked.push("provenance");
        }
        let check = match check {
            false => Value::Null,
            true => match self.registry().verify_version(&v)? {
                Ok(()) => json!({ "ok": true, "checked": checked }),
                Err(e) => json!({ "ok": false, "error": e }),
            },
        };
        let mine: Vec<&str> =
            aliases.iter().filter(|(_, at)| *at == version).map(|(a, _)| a.as_str()).collect();
        Ok(json!({ "v": MODELS_VERSION, "version": v, "aliases": mine, "check": check }))
    }

    /// The moves of a model's aliases (of one), oldest first.
    pub fn history_doc(&self, name: &str, alias: Option<&str>) -> Result<Value> {
        self.store.model_needed(name)?;
        Ok(json!({ "v": MODELS_VERSION, "model": name, "moves": self.store.alias_moves(name, alias)? }))
    }

    /// The files of datasets a version's main artifact was made from (path -> digest), from
    /// its lineage.
    fn trained_on(&self, v: &ModelVersion) -> Result<BTreeMap<String, String>> {
        if v.attempt.is_none() {
            return Ok(BTreeMap::new());
        }
        let g = self.store.lineage(&Origin::Digest(v.artifact.clone()), Direction::Upstream, 20)?;
        Ok(g.nodes
            .into_iter()
            .filter_map(|n| match n {
                Node::Dataset { digest, path } => Some((path, digest)),
                _ => None,
            })
            .collect())
    }

    /// Two versions side by side: metrics (with the change), params, input schema, the data
    /// they were trained on, where they came from.
    pub fn diff_doc(&self, name: &str, a: u64, b: u64) -> Result<Value> {
        let (va, vb) = (self.store.model_version_needed(name, a)?, self.store.model_version_needed(name, b)?);
        let keys: BTreeSet<&String> = va.metrics.keys().chain(vb.metrics.keys()).collect();
        let metrics: Vec<Value> = keys
            .into_iter()
            .map(|k| {
                let (x, y) = (va.metrics.get(k), vb.metrics.get(k));
                let delta = match (x, y) {
                    (Some(x), Some(y)) => json!(y - x),
                    _ => Value::Null,
                };
                json!({ "key": k, "from": x, "to": y, "delta": delta })
            })
            .collect();
        let keys: BTreeSet<&String> = va.params.keys().chain(vb.params.keys()).collect();
        let params: Vec<Value> = keys
            .into_iter()
            .map(|k| {
                let (x, y) = (va.params.get(k), vb.params.get(k));
                json!({ "key": k, "from": x, "to": y, "changed": x != y })
            })
            .collect();
        let (da, db) = (self.trained_on(&va)?, self.trained_on(&vb)?);
        let paths: BTreeSet<&String> = da.keys().chain(db.keys()).collect();
        let data: Vec<Value> = paths
            .into_iter()
            .map(|p| {
                let (x, y) = (da.get(p), db.get(p));
                json!({ "path": p, "from": x, "to": y, "changed": x != y })
            })
            .collect();
        let side = |v: &ModelVersion| {
            json!({
                "version": v.version,
                "created": v.created,
                "created_by": v.created_by,
                "source": v.source,
                "attempt": v.attempt,
                "artifact": v.artifact,
                "input_schema": v.input_schema,
            })
        };
        Ok(json!({
            "v": MODELS_VERSION,
            "model": name,
            "from": side(&va),
            "to": side(&vb),
            "metrics": metrics,
            "params": params,
            "schema_changed": va.input_schema != vb.input_schema,
            "data": data,
        }))
    }
}
