//! The model registry's records and rules: registered models, their versions (each a set of
//! stored artifact files, with the run that made it, a snapshot of its metrics, the input
//! schema and a signed registration statement), aliases (`production`, `staging`, any name)
//! pointing at one version each, and every alias move kept with who, when, why and what
//! caused it. `gate.rs` is the pure comparison behind a `gate:` step.
//!
//! The store keeps the records (`store/registry.rs`); the driver applies the rules that need
//! the store, the audit log and the signing key (`driver/registry.rs`).

pub mod gate;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::security::keys::SigningKey;
use crate::security::provenance::{self, Envelope};

/// The version of the records below.
pub const RECORD_VERSION: u32 = 1;
/// The predicate type of a version's registration statement.
pub const REGISTRATION: &str = "https://sluice.dev/registration/v1";

fn v1() -> u32 {
    RECORD_VERSION
}

/// The alias a request that names only a model is served from (when no rollout routes it),
/// and the one rollouts and monitors take by default.
pub const SERVED_ALIAS: &str = "production";

/// A registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredModel {
    #[serde(default = "v1")]
    pub v: u32,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub created: i64,
    pub updated: i64,
    pub created_by: String,
    /// The last version number handed out (versions count from 1 and never repeat).
    pub last_version: u64,
    /// Aliases only an approver (or a `promote:` step after a passed gate and an approval in
    /// its run) may move.
    #[serde(default)]
    pub protected: BTreeSet<String>,
}

/// A stored file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionFile {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

/// The pipeline attempt a version came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceAttempt {
    pub run: u64,
    pub pipeline: String,
    pub step: String,
    pub item: u32,
    pub attempt: u32,
}

/// One input feature of a version: its name and type (`double`, `long`, `string`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// A model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    #[serde(default = "v1")]
    pub v: u32,
    pub name: String,
    pub version: u64,
    pub created: i64,
    pub updated: i64,
    /// Who registered it (an audit actor).
    pub created_by: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The version's files by path relative to its root (`model.safetensors`, `MLmodel`).
    pub files: BTreeMap<String, VersionFile>,
    /// The version's main artifact: the model file (`model` of a `train:` step), or the
    /// single file, else the first by path.
    pub artifact: String,
    /// Where it came from, as MLflow names it (`runs:/<id>/model`, `mlflow-artifacts:/...`,
    /// `sluice:runs/12/steps/train`).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<SourceAttempt>,
    /// The tracking run it came from (MLflow's `run_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_run: Option<String>,
    /// The metrics of its run when it was registered.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// The params of its run when it was registered.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The features it takes, in order (from the training metadata or MLmodel's signature).
    #[serde(default)]
    pub input_schema: Vec<Feature>,
    /// The registration statement: an in-toto Statement naming every file, signed by the
    /// instance's key.
    pub registration: Envelope,
}

/// Why an alias moved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    /// The run, and its step, that moved it (a `promote:` step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The gate that passed and the approval given in that run: `<step>` each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// The request that asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// One move of an alias, kept for ever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasMove {
    #[serde(default = "v1")]
    pub v: u32,
    pub model: String,
    pub alias: String,
    /// The version it pointed at before (none: it is new) and after (none: removed).
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub actor: String,
    pub at: i64,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub cause: Cause,
    /// Whether it was a rollback.
    #[serde(default)]
    pub rollback: bool,
    /// Its audit entry's sequence.
    pub audit: u64,
}

/// Where a version's files are seen through MLflow's artifact proxy (what its download URI
/// names).
pub fn version_folder(name: &str, version: u64) -> String {
    format!("registry/{name}/{version}")
}

/// The longest description a model or version takes (MLflow's, 5000 characters).
pub const MAX_DESCRIPTION: usize = 5000;
/// The longest reason an alias move, a rollback or an approval's decision keeps.
pub const MAX_REASON: usize = 2000;

/// Checks a description's length.
pub fn check_description(description: &str) -> Result<(), String> {
    match description.chars().count() > MAX_DESCRIPTION {
        true => Err(format!("a description is at most {MAX_DESCRIPTION} characters")),
        false => Ok(()),
    }
}

/// Checks the length of a reason (`what`: whose).
pub fn check_reason(what: &str, reason: &str) -> Result<(), String> {
    match reason.chars().count() > MAX_REASON {
        true => Err(format!("{what} is at most {MAX_REASON} characters")),
        false => Ok(()),
    }
}

/// Checks a model's name: 1 to 256 printable characters without `/`, `@` or `:` (which
/// `models:/<name>@<alias>` and paths give a meaning).
pub fn check_model_name(name: &str) -> Result<(), String> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= 256
        && !name.chars().any(|c| c.is_control() || "/@:\\".contains(c))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a model name: use 1 to 256 printable characters without `/`, `@`, `:` or `\\`",
            crate::tracking::short(name)
        ))
    }
}

/// Checks an alias: 1 to 64 letters, digits, `_` and `-`, starting with a letter, and not
/// `latest` or `v<digits>` (MLflow reads those as versions).
pub fn check_alias(alias: &str) -> Result<(), String> {
    let well_formed = alias.len() <= 64
        && alias.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let reserved = alias.eq_ignore_ascii_case("latest")
        || (alias.len() > 1
            && alias.starts_with(['v', 'V'])
            && alias[1..].bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return Err(format!(
            "`{}` is not an alias: use 1 to 64 letters, digits, `_` and `-`, starting with a letter",
            crate::tracking::short(alias)
        ));
    }
    if reserved {
        return Err(format!("`{alias}` is not an alias: `latest` and `v<number>` name versions"));
    }
    Ok(())
}

/// A version number as text (`3`, or `v3`).
pub fn parse_version(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.strip_prefix(['v', 'V'])
        .unwrap_or(t)
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("`{}` is not a version number (1, 2, ...)", crate::tracking::short(text)))
}

/// The registration statement of a version: its files as subjects, and what it is.
pub fn registration_statement(v: &ModelVersion) -> Value {
    let subject: Vec<Value> = v
        .files
        .iter()
        .map(|(path, f)| {
            let (alg, hex) = f.digest.split_once(':').unwrap_or(("sha256", &f.digest));
            json!({ "name": format!("{}/{}/{}", v.name, v.version, path), "digest": { alg: hex } })
        })
        .collect();
    json!({
        "_type": provenance::STATEMENT_TYPE,
        "subject": subject,
        "predicateType": REGISTRATION,
        "predicate": {
            "model": v.name,
            "version": v.version,
            "artifact": v.artifact,
            "source": v.source,
            "attempt": v.attempt,
            "tracking_run": v.tracking_run,
            "metrics": v.metrics,
            "input_schema": v.input_schema,
            "registered_by": v.created_by,
            "registered_at": v.created,
        },
    })
}

/// Signs a version's registration statement.
pub fn sign_registration(key: &SigningKey, v: &ModelVersion) -> Envelope {
    provenance::sign(key, &registration_statement(v))
}

/// Checks a version's registration against `public`: the signature holds, and what it signs
/// is exactly this version's statement as its record gives it now (every file by path and
/// digest, the main artifact, the source, attempt and tracking run, the metrics, the input
/// schema, who registered it and when), so no field of the record was changed since.
pub fn verify_registration(v: &ModelVersion, public: &[u8]) -> Result<(), String> {
    let signed = provenance::verify(&v.registration, public).map_err(|e| e.to_string())?;
    let now = registration_statement(v);
    if signed != now {
        let differs: Vec<&str> = ["subject", "predicateType"]
            .into_iter()
            .filter(|k| signed[k] != now[k])
            .chain(
                now["predicate"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, val)| signed["predicate"][k.as_str()] != **val)
                    .map(|(k, _)| k.as_str()),
            )
            .collect();
        return Err(format!(
            "the signed registration of {} version {} does not match its record (it differs in: {})",
            v.name,
            v.version,
            if differs.is_empty() { "its layout".to_string() } else { differs.join(", ") }
        ));
    }
    if !v.files.values().any(|f| f.digest == v.artifact) {
        return Err(format!("the main artifact {} is not one of the version's files", v.artifact));
    }
    Ok(())
}

/// The input schema in a `train:` step's metadata (`features`: every one a number).
pub fn schema_of_metadata(metadata: &Value) -> Vec<Feature> {
    metadata["features"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(Value::as_str)
                .map(|n| Feature { name: n.to_string(), kind: "double".into() })
                .collect()
        })
        .unwrap_or_default()
}

/// The input schema in an MLflow `MLmodel` file's `signature.inputs` (a JSON list of
/// `{name, type}` in a YAML string); empty when there is none.
pub fn schema_of_mlmodel(text: &str) -> Vec<Feature> {
    let Ok(docs) = yaml_rust2::YamlLoader::load_from_str(text) else { return Vec::new() };
    let Some(inputs) = docs.first().and_then(|d| d["signature"]["inputs"].as_str()) else {
        return Vec::new();
    };
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(inputs) else { return Vec::new() };
    items
        .iter()
        .filter_map(|i| {
            Some(Feature {
                name: i["name"].as_str()?.to_string(),
                kind: i["type"].as_str().unwrap_or("double").to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
