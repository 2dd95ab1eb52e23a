//! The model registry in the store. Trees: `models` (name -> record; `0 | name` -> the last
//! version number of a removed model of that name), `model_versions`
//! (name | 0 | version, big-endian -> record), `model_aliases` (name | 0 | alias -> version),
//! `alias_moves` (name | 0 | alias | 0 | sequence -> move, kept for ever), `registered_by`
//! (run | step id | 0 | item -> name | 0 | version: what a `register:` task made, so that a retry
//! or a crash never makes two), `gate_passes` (run | name | 0 | version -> the passing gate's
//! step and report), `approvals` (run | step -> the decision), and `mlflow_files` (an
//! artifact-proxy path -> the stored file).
//!
//! Changes are read-modify-write under one lock; they are durable with the caller's flush,
//! which also makes the audit entry written beside them durable.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{Refusal, Result, Store, StoreError, decode, encode};
use crate::registry::{AliasMove, ModelVersion, RegisteredModel, VersionFile};

#[derive(Clone)]
pub(super) struct Trees {
    models: sled::Tree,
    versions: sled::Tree,
    aliases: sled::Tree,
    moves: sled::Tree,
    registered_by: sled::Tree,
    gate_passes: sled::Tree,
    approvals: sled::Tree,
    files: sled::Tree,
    lock: Arc<Mutex<()>>,
}

impl Trees {
    pub(super) fn open(db: &sled::Db) -> Result<Trees> {
        Ok(Trees {
            models: db.open_tree("models")?,
            versions: db.open_tree("model_versions")?,
            aliases: db.open_tree("model_aliases")?,
            moves: db.open_tree("alias_moves")?,
            registered_by: db.open_tree("registered_by")?,
            gate_passes: db.open_tree("gate_passes")?,
            approvals: db.open_tree("approvals")?,
            files: db.open_tree("mlflow_files")?,
            lock: Arc::default(),
        })
    }

    pub(super) fn all(&self) -> [&sled::Tree; 8] {
        [
            &self.models,
            &self.versions,
            &self.aliases,
            &self.moves,
            &self.registered_by,
            &self.gate_passes,
            &self.approvals,
            &self.files,
        ]
    }
}

/// A file uploaded through MLflow's artifact proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyFile {
    pub v: u32,
    pub digest: String,
    pub size: u64,
    pub at: i64,
    /// Who uploaded it (an audit actor).
    pub by: String,
}

/// A decision on an approval step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub v: u32,
    pub approved: bool,
    pub by: String,
    pub at: i64,
    #[serde(default)]
    pub comment: String,
}

/// A gate that passed for a version in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatePass {
    pub v: u32,
    pub step: String,
    pub report: serde_json::Value,
}

fn key2(a: &str, b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + 1 + b.len());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b);
    k
}

fn registered_key(run: u64, step: &str, item: u32) -> Vec<u8> {
    let mut k = run.to_be_bytes().to_vec();
    k.extend_from_slice(step.as_bytes());
    k.push(0);
    k.extend_from_slice(&item.to_be_bytes());
    k
}

/// `name | 0 | version` back into its parts.
fn split_version(b: &[u8]) -> Result<(String, u64)> {
    let split = b
        .iter()
        .position(|c| *c == 0)
        .ok_or(StoreError::Corrupt { what: "registered version", detail: "no separator".into() })?;
    Ok((String::from_utf8_lossy(&b[..split]).into_owned(), version_of(&b[split + 1..])?))
}

fn refused<T>(kind: Refusal, message: String) -> Result<T> {
    Err(StoreError::Refused(kind, message))
}

fn version_of(bytes: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes).map(u64::from_be_bytes).map_err(|_| StoreError::Corrupt {
        what: "model version number",
        detail: format!("{} bytes", bytes.len()),
    })
}

impl Store {
    /// Holds the registry's lock: one change at a time.
    pub fn registry_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.registry.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn model(&self, name: &str) -> Result<Option<RegisteredModel>> {
        self.registry.models.get(name.as_bytes())?.map(|b| decode("registered model", &b)).transpose()
    }

    /// A model that must exist.
    pub fn model_needed(&self, name: &str) -> Result<RegisteredModel> {
        match self.model(name)? {
            Some(m) => Ok(m),
            None => refused(
                Refusal::NotFound,
                format!("there is no registered model `{}`", crate::tracking::short(name)),
            ),
        }
    }

    /// Every registered model, by name.
    pub fn models(&self) -> Result<Vec<RegisteredModel>> {
        self.registry
            .models
            .iter()
            .filter(|kv| kv.as_ref().map_or(true, |(k, _)| k.first() != Some(&0)))
            .map(|kv| decode("registered model", &kv?.1))
            .collect()
    }

    /// Writes a model's record (the caller holds the registry lock).
    pub fn put_model(&self, m: &RegisteredModel) -> Result<()> {
        self.writable()?;
        self.registry.models.insert(m.name.as_bytes(), encode(m)).map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// Removes a model with its versions, aliases and the proxy's copies of its files; its
    /// alias moves are kept (the history of what was in production outlives the model), and
    /// so is its last version number, so that a model made again under the name never reuses
    /// one.
    pub fn remove_model(&self, name: &str) -> Result<()> {
        self.writable()?;
        let last = self.model(name)?.map_or(0, |m| m.last_version);
        let prefix = key2(name, &[]);
        for tree in [&self.registry.versions, &self.registry.aliases] {
            for k in tree.scan_prefix(&prefix).keys() {
                tree.remove(k?).map_err(|e| self.broke(e))?;
            }
        }
        self.remove_proxy_folder(&format!("registry/{name}/"))?;
        self.registry.models.remove(name.as_bytes()).map_err(|e| self.broke(e))?;
        self.registry
            .models
            .insert(key2("", name.as_bytes()), &last.to_be_bytes())
            .map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// The last version number a removed model of this name had (0: none was removed).
    pub fn removed_model_last_version(&self, name: &str) -> Result<u64> {
        self.registry.models.get(key2("", name.as_bytes()))?.map_or(Ok(0), |b| version_of(&b))
    }

    fn remove_proxy_folder(&self, prefix: &str) -> Result<()> {
        for k in self.registry.files.scan_prefix(prefix.as_bytes()).keys() {
            self.registry.files.remove(k?).map_err(|e| self.broke(e))?;
        }
        Ok(())
    }

    pub fn model_version(&self, name: &str, version: u64) -> Result<Option<ModelVersion>> {
        self.registry
            .versions
            .get(key2(name, &version.to_be_bytes()))?
            .map(|b| decode("model version", &b))
            .transpose()
    }

    /// A version that must exist.
    pub fn model_version_needed(&self, name: &str, version: u64) -> Result<ModelVersion> {
        match self.model_version(name, version)? {
            Some(v) => Ok(v),
            None => refused(
                Refusal::NotFound,
                format!("model `{}` has no version {version}", crate::tracking::short(name)),
            ),
        }
    }

    /// A model's versions, oldest first (every model's when `name` is `None`).
    pub fn model_versions(&self, name: Option<&str>) -> Result<Vec<ModelVersion>> {
        let prefix = name.map(|n| key2(n, &[])).unwrap_or_default();
        self.registry.versions.scan_prefix(prefix).values().map(|v| decode("model version", &v?)).collect()
    }

    /// Writes a version's record (the caller holds the registry lock).
    pub fn put_model_version(&self, v: &ModelVersion) -> Result<()> {
        self.writable()?;
        self.registry
            .versions
            .insert(key2(&v.name, &v.version.to_be_bytes()), encode(v))
            .map_err(|e| self.broke(e))?;
        Ok(())
    }

    pub fn remove_model_version(&self, name: &str, version: u64) -> Result<()> {
        self.writable()?;
        self.registry.versions.remove(key2(name, &version.to_be_bytes())).map_err(|e| self.broke(e))?;
        self.remove_proxy_folder(&format!("{}/", crate::registry::version_folder(name, version)))?;
        Ok(())
    }

    /// The version an alias points at.
    pub fn alias(&self, name: &str, alias: &str) -> Result<Option<u64>> {
        self.registry.aliases.get(key2(name, alias.as_bytes()))?.map(|b| version_of(&b)).transpose()
    }

    /// A model's aliases and their versions.
    pub fn aliases(&self, name: &str) -> Result<Vec<(String, u64)>> {
        let prefix = key2(name, &[]);
        self.registry
            .aliases
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), version_of(&v)?))
            })
            .collect()
    }

    /// Points an alias at a version (none: removes it) and keeps the move (the caller holds
    /// the registry lock and writes the audit entry the move names).
    pub fn put_alias(&self, m: &AliasMove) -> Result<()> {
        self.writable()?;
        let k = key2(&m.model, m.alias.as_bytes());
        match m.to {
            Some(v) => self.registry.aliases.insert(&k, &v.to_be_bytes()).map(|_| ()),
            None => self.registry.aliases.remove(&k).map(|_| ()),
        }
        .map_err(|e| self.broke(e))?;
        let mut mk = key2(&m.model, m.alias.as_bytes());
        mk.push(0);
        mk.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        self.registry.moves.insert(mk, encode(m)).map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// The moves of a model's aliases (of one alias), oldest first.
    pub fn alias_moves(&self, name: &str, alias: Option<&str>) -> Result<Vec<AliasMove>> {
        let mut prefix = key2(name, alias.map(str::as_bytes).unwrap_or_default());
        if alias.is_some() {
            prefix.push(0);
        }
        let mut out: Vec<(u64, AliasMove)> = self
            .registry
            .moves
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let seq = k
                    .len()
                    .checked_sub(8)
                    .map_or(0, |i| u64::from_be_bytes(k[i..].try_into().expect("8 bytes")));
                Ok((seq, decode("alias move", &v)?))
            })
            .collect::<Result<_>>()?;
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, m)| m).collect())
    }

    /// The version a `register:` task (run, step id, item) made, if it made one.
    pub fn registered_by(&self, run: u64, step: &str, item: u32) -> Result<Option<(String, u64)>> {
        match self.registry.registered_by.get(registered_key(run, step, item))? {
            None => Ok(None),
            Some(b) => split_version(&b).map(Some),
        }
    }

    pub fn put_registered_by(&self, run: u64, step: &str, item: u32, name: &str, version: u64) -> Result<()> {
        self.writable()?;
        self.registry
            .registered_by
            .insert(registered_key(run, step, item), key2(name, &version.to_be_bytes()))
            .map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// The versions a run's `register:` steps made: (model, version).
    pub fn registered_in(&self, run: u64) -> Result<Vec<(String, u64)>> {
        self.registry
            .registered_by
            .scan_prefix(run.to_be_bytes())
            .values()
            .map(|v| split_version(&v?))
            .collect()
    }

    pub fn put_gate_pass(&self, run: u64, name: &str, version: u64, pass: &GatePass) -> Result<()> {
        self.writable()?;
        let mut k = run.to_be_bytes().to_vec();
        k.extend_from_slice(&key2(name, &version.to_be_bytes()));
        self.registry.gate_passes.insert(k, encode(pass)).map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// The gate that passed for a version in a run.
    pub fn gate_pass(&self, run: u64, name: &str, version: u64) -> Result<Option<GatePass>> {
        let mut k = run.to_be_bytes().to_vec();
        k.extend_from_slice(&key2(name, &version.to_be_bytes()));
        self.registry.gate_passes.get(k)?.map(|b| decode("gate pass", &b)).transpose()
    }

    pub fn put_decision(&self, run: u64, step: &str, d: &Decision) -> Result<()> {
        self.writable()?;
        let mut k = run.to_be_bytes().to_vec();
        k.extend_from_slice(step.as_bytes());
        self.registry.approvals.insert(k, encode(d)).map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// The decisions on a run's approval steps: (step, decision).
    pub fn decisions(&self, run: u64) -> Result<Vec<(String, Decision)>> {
        self.registry
            .approvals
            .scan_prefix(run.to_be_bytes())
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k[8..]).into_owned(), decode("approval", &v)?))
            })
            .collect()
    }

    pub fn put_proxy_file(&self, path: &str, f: &ProxyFile) -> Result<()> {
        self.writable()?;
        self.registry.files.insert(path.as_bytes(), encode(f)).map_err(|e| self.broke(e))?;
        Ok(())
    }

    pub fn proxy_file(&self, path: &str) -> Result<Option<ProxyFile>> {
        self.registry.files.get(path.as_bytes())?.map(|b| decode("proxy file", &b)).transpose()
    }

    /// The files under a proxy folder (`prefix` ends with `/`, or is empty), by full path.
    pub fn proxy_files(&self, prefix: &str) -> Result<Vec<(String, ProxyFile)>> {
        self.registry
            .files
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), decode("proxy file", &v)?))
            })
            .collect()
    }

    /// The files of a proxy folder as a version's files (paths relative to it).
    pub fn proxy_folder(&self, folder: &str) -> Result<std::collections::BTreeMap<String, VersionFile>> {
        let prefix = format!("{}/", folder.trim_end_matches('/'));
        Ok(self
            .proxy_files(&prefix)?
            .into_iter()
            .map(|(p, f)| (p[prefix.len()..].to_string(), VersionFile { digest: f.digest, size: f.size }))
            .collect())
    }
}
