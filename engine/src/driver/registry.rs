//! The registry's rules that need the store, the audit log and the signing key: registering
//! a version (idempotent per `register:` task), checking a version (its files against their
//! digests, its signed registration, the provenance of the attempt that made it), moving an
//! alias (only to a version that checks; a protected alias only for an approver or after a
//! passed gate and an approval), rolling an alias back, and the model's lifecycle. Every
//! change is audited in the same flush as the change.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Engine, EngineError, Result};
use crate::registry::{
    AliasMove, Cause, Feature, ModelVersion, RECORD_VERSION, RegisteredModel, SourceAttempt, VersionFile,
    check_alias, check_description, check_model_name, check_reason, sign_registration, verify_registration,
};
use crate::security::audit::Action;
use crate::security::provenance::Envelope;
use crate::store::{Refusal, StoreError};

/// A version to register.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    pub name: String,
    pub files: BTreeMap<String, VersionFile>,
    /// The main artifact's path among `files` (default: the only file, else the first).
    pub main: Option<String>,
    pub source: String,
    pub attempt: Option<SourceAttempt>,
    pub tracking_run: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    pub params: BTreeMap<String, String>,
    pub input_schema: Vec<Feature>,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// Makes the model when it does not exist (a `register:` step does; MLflow's client
    /// makes it first).
    pub create_model: bool,
}

/// Who asks for a change, and whether they may move protected aliases.
#[derive(Debug, Clone)]
pub struct Actor {
    /// As the audit log names them (`token:ci`, `local:alice`, `run:12/promote`).
    pub name: String,
    pub may_move_protected: bool,
    pub request: Option<String>,
}

impl Actor {
    pub fn new(name: impl Into<String>, may_move_protected: bool, request: Option<String>) -> Self {
        Actor { name: name.into(), may_move_protected, request }
    }
}

fn refused(kind: Refusal, message: impl Into<String>) -> EngineError {
    EngineError::Store(StoreError::Refused(kind, message.into()))
}

/// The registry's operations: what they need of an engine (its store, signing key and
/// clock), cheap to make and to clone, so that built-in steps use them too.
#[derive(Clone)]
pub struct Registry {
    store: crate::store::Store,
    key: std::sync::Arc<crate::security::keys::SigningKey>,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
}

impl Engine {
    /// The registry of this engine's data folder.
    pub fn registry(&self) -> Registry {
        Registry { store: self.store.clone(), key: self.key.clone(), clock: self.clock().clone() }
    }
}

impl Registry {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn audit(&self, action: Action) -> Result<u64> {
        Ok(self.store.audit(action, self.now_ms())?)
    }

    pub fn store(&self) -> &crate::store::Store {
        &self.store
    }

    /// Makes a registered model (audited).
    pub fn create_model(
        &self,
        name: &str,
        description: &str,
        tags: BTreeMap<String, String>,
        actor: &Actor,
    ) -> Result<RegisteredModel> {
        check_model_name(name).map_err(|m| refused(Refusal::Invalid, m))?;
        let store = &self.store;
        let _guard = store.registry_lock();
        if store.model(name)?.is_some() {
            return Err(refused(Refusal::Exists, format!("a registered model named `{name}` exists")));
        }
        let m = self.new_model(name, description, tags, actor)?;
        store.flush()?;
        Ok(m)
    }

    fn new_model(
        &self,
        name: &str,
        description: &str,
        tags: BTreeMap<String, String>,
        actor: &Actor,
    ) -> Result<RegisteredModel> {
        check_description(description).map_err(|m| refused(Refusal::Invalid, m))?;
        let now = self.now_ms();
        let m = RegisteredModel {
            v: RECORD_VERSION,
            name: name.to_string(),
            description: description.to_string(),
            tags,
            created: now,
            updated: now,
            created_by: actor.name.clone(),
            // A name used before goes on from its last number: versions never repeat.
            last_version: self.store.removed_model_last_version(name)?,
            protected: Default::default(),
        };
        self.store.put_model(&m)?;
        self.audit(
            Action::new(&actor.name, "model.create", format!("model:{name}"))
                .request(actor.request.as_deref()),
        )?;
        Ok(m)
    }

    /// Registers a version: the next number of its model, signed, audited, durable. With
    /// `task`, a task that registered before gets its version back instead of a second one.
    pub fn register_version(
        &self,
        new: NewVersion,
        actor: &Actor,
        task: Option<(u64, &str, u32)>,
    ) -> Result<(ModelVersion, bool)> {
        check_model_name(&new.name).map_err(|m| refused(Refusal::Invalid, m))?;
        if new.files.is_empty() {
            return Err(refused(
                Refusal::Invalid,
                format!("a version of `{}` needs at least one file", new.name),
            ));
        }
        check_description(&new.description).map_err(|m| refused(Refusal::Invalid, m))?;
        for (k, v) in &new.metrics {
            crate::tracking::check_value(k, *v).map_err(|m| refused(Refusal::Invalid, m))?;
        }
        let store = &self.store;
        // Every file must be in the store and whole (hashed before the lock: it may be large,
        // and a stored file never changes under its digest).
        let blobs = store.blobs();
        for (path, f) in &new.files {
            blobs.verify(&f.digest).map_err(|e| {
                refused(
                    Refusal::Invalid,
                    format!("the file `{path}` ({}) cannot be registered: {e}", f.digest),
                )
            })?;
        }
        let _guard = store.registry_lock();
        if let Some((run, step, item)) = task
            && let Some((name, version)) = store.registered_by(run, step, item)?
        {
            return Ok((store.model_version_needed(&name, version)?, false));
        }
        let mut model = match store.model(&new.name)? {
            Some(m) => m,
            None if new.create_model => self.new_model(&new.name, "", BTreeMap::new(), actor)?,
            None => {
                return Err(refused(
                    Refusal::NotFound,
                    format!("there is no registered model `{}`", new.name),
                ));
            }
        };
        let main = match &new.main {
            Some(p) => new.files.get(p).ok_or_else(|| {
                refused(Refusal::Invalid, format!("the main file `{p}` is not one of the version's files"))
            })?,
            None => new.files.values().next().expect("not empty"),
        };
        let now = self.now_ms();
        let mut v = ModelVersion {
            v: RECORD_VERSION,
            name: new.name.clone(),
            version: model.last_version + 1,
            created: now,
            updated: now,
            created_by: actor.name.clone(),
            description: new.description,
            tags: new.tags,
            artifact: main.digest.clone(),
            files: new.files,
            source: new.source,
            attempt: new.attempt,
            tracking_run: new.tracking_run,
            metrics: new.metrics,
            params: new.params,
            input_schema: new.input_schema,
            registration: Envelope {
                payload: String::new(),
                payload_type: String::new(),
                signatures: Vec::new(),
            },
        };
        v.registration = sign_registration(&self.key, &v);
        model.last_version = v.version;
        model.updated = now;
        store.put_model_version(&v)?;
        store.put_model(&model)?;
        if let Some((run, step, item)) = task {
            store.put_registered_by(run, step, item, &v.name, v.version)?;
        }
        // Readable through MLflow's artifact proxy (`models:/<name>/<version>`).
        let folder = crate::registry::version_folder(&v.name, v.version);
        for (path, f) in &v.files {
            let record = crate::store::ProxyFile {
                v: 1,
                digest: f.digest.clone(),
                size: f.size,
                at: now,
                by: actor.name.clone(),
            };
            store.put_proxy_file(&format!("{folder}/{path}"), &record)?;
        }
        self.audit(
            Action::new(&actor.name, "model.register", format!("model:{}/{}", v.name, v.version))
                .after(json!({ "artifact": v.artifact, "source": v.source, "files": v.files.len() }))
                .request(actor.request.as_deref()),
        )?;
        store.flush()?;
        Ok((v, true))
    }

    /// Checks a version: every file against its digest, its registration's signature, and
    /// the signed provenance of the attempt that made its main artifact (for one a pipeline
    /// made). `Err` says what does not hold.
    pub fn verify_version(&self, v: &ModelVersion) -> Result<std::result::Result<(), String>> {
        if let Err(e) = verify_registration(v, self.key.public()) {
            return Ok(Err(format!("its registration does not verify: {e}")));
        }
        let blobs = self.store.blobs();
        for (path, f) in &v.files {
            if let Err(e) = blobs.verify(&f.digest) {
                return Ok(Err(format!("its file `{path}` does not match its digest {}: {e}", f.digest)));
            }
        }
        if v.attempt.is_some() {
            let checked = self.store.verify_artifact(&v.artifact, self.key.public())?;
            if !checked.ok {
                let why: Vec<String> = checked.attestations.iter().filter_map(|a| a.error.clone()).collect();
                return Ok(Err(format!(
                    "the provenance of its artifact {} does not verify: {}",
                    v.artifact,
                    if why.is_empty() { "no signed provenance".to_string() } else { why.join("; ") }
                )));
            }
        }
        Ok(Ok(()))
    }

    /// Points `alias` of `name` at `to` (none: removes it), recording the move. Refused for a
    /// version that does not verify, and for a protected alias unless the actor may. A move
    /// to the version the alias points at already changes and records nothing (its `audit`
    /// is 0), so that a repeated promotion, or a client's retry, leaves the history as it is.
    pub fn move_alias(
        &self,
        name: &str,
        alias: &str,
        to: Option<u64>,
        actor: &Actor,
        reason: &str,
        cause: Cause,
    ) -> Result<AliasMove> {
        check_alias(alias).map_err(|m| refused(Refusal::Invalid, m))?;
        check_reason("a move's reason", reason).map_err(|m| refused(Refusal::Invalid, m))?;
        // Checked before the lock (hashing a large model takes a while), and found unchanged
        // under it.
        let checked = match to {
            Some(v) => Some(self.checked_version(name, v)?),
            None => None,
        };
        let _guard = self.store.registry_lock();
        if let Some(v) = &checked {
            self.still(v)?;
        }
        self.move_locked(name, alias, to, actor, reason, cause, false)
    }

    /// A version that checks, or why it cannot be promoted.
    fn checked_version(&self, name: &str, v: u64) -> Result<ModelVersion> {
        let version = self.store.model_version_needed(name, v)?;
        if let Err(why) = self.verify_version(&version)? {
            return Err(refused(Refusal::Invalid, format!("{name} version {v} cannot be promoted: {why}")));
        }
        Ok(version)
    }

    /// Refuses when a version changed since it was checked (under the registry lock).
    fn still(&self, checked: &ModelVersion) -> Result<()> {
        match self.store.model_version(&checked.name, checked.version)? {
            Some(now) if now == *checked => Ok(()),
            _ => Err(refused(
                Refusal::Invalid,
                format!(
                    "{} version {} changed while it was checked; try again",
                    checked.name, checked.version
                ),
            )),
        }
    }

    /// The move itself, with the registry lock held.
    #[allow(clippy::too_many_arguments)]
    fn move_locked(
        &self,
        name: &str,
        alias: &str,
        to: Option<u64>,
        actor: &Actor,
        reason: &str,
        cause: Cause,
        rollback: bool,
    ) -> Result<AliasMove> {
        let store = &self.store;
        let model = store.model_needed(name)?;
        if model.protected.contains(alias) && !actor.may_move_protected {
            return Err(EngineError::Forbidden(format!(
                "the alias `{alias}` of `{name}` is protected: only an approver moves it, or a `promote:` step after a passed gate and an approval in its run"
            )));
        }
        if let Some(v) = to {
            store.model_version_needed(name, v)?;
        }
        let from = store.alias(name, alias)?;
        if to.is_none() && from.is_none() {
            return Err(refused(Refusal::NotFound, format!("model `{name}` has no alias `{alias}`")));
        }
        let mut m = AliasMove {
            v: RECORD_VERSION,
            model: name.to_string(),
            alias: alias.to_string(),
            from,
            to,
            actor: actor.name.clone(),
            at: self.now_ms(),
            reason: reason.to_string(),
            cause,
            rollback,
            audit: 0,
        };
        if from == to {
            return Ok(m);
        }
        let target = format!("model:{name}@{alias}");
        m.audit = self.audit(
            Action::new(&actor.name, if rollback { "model.rollback" } else { "model.alias" }, &target)
                .before(json!({ "version": from }))
                .after(json!({ "version": to, "reason": reason, "cause": m.cause }))
                .request(actor.request.as_deref()),
        )?;
        store.put_alias(&m)?;
        store.flush()?;
        Ok(m)
    }

    /// Moves an alias back to the version it pointed at before its last move (one command,
    /// recorded as a rollback); the target is read under the registry lock.
    pub fn rollback_alias(&self, name: &str, alias: &str, actor: &Actor, reason: &str) -> Result<AliasMove> {
        check_reason("a move's reason", reason).map_err(|m| refused(Refusal::Invalid, m))?;
        self.store.model_needed(name)?;
        let target = || -> Result<(u64, Option<u64>)> {
            let moves = self.store.alias_moves(name, Some(alias))?;
            let Some(last) = moves.last() else {
                return Err(refused(
                    Refusal::NotFound,
                    format!("model `{name}` has no alias `{alias}` to roll back"),
                ));
            };
            match last.from {
                Some(back) => Ok((back, last.to)),
                None => Err(refused(
                    Refusal::Invalid,
                    format!(
                        "the alias `{alias}` of `{name}` pointed at no version before its last move; nothing to go back to"
                    ),
                )),
            }
        };
        let (back, _) = target()?;
        let checked = self.checked_version(name, back)?;
        let _guard = self.store.registry_lock();
        // Moved meanwhile: go where the history says now.
        let (back, from) = target()?;
        if back != checked.version {
            return Err(refused(
                Refusal::Invalid,
                format!("the alias `{alias}` of `{name}` moved meanwhile; try again"),
            ));
        }
        self.still(&checked)?;
        let reason = if reason.is_empty() {
            format!("rollback from version {}", from.map_or("none".into(), |v| v.to_string()))
        } else {
            reason.to_string()
        };
        let cause = Cause { request: actor.request.clone(), ..Cause::default() };
        self.move_locked(name, alias, Some(back), actor, &reason, cause, true)
    }

    /// Protects an alias of a model (or lets it go), audited.
    pub fn protect_alias(
        &self,
        name: &str,
        alias: &str,
        protect: bool,
        actor: &Actor,
    ) -> Result<RegisteredModel> {
        check_alias(alias).map_err(|m| refused(Refusal::Invalid, m))?;
        let store = &self.store;
        let _guard = store.registry_lock();
        let mut model = store.model_needed(name)?;
        let changed =
            if protect { model.protected.insert(alias.to_string()) } else { model.protected.remove(alias) };
        if changed {
            model.updated = self.now_ms();
            store.put_model(&model)?;
            self.audit(
                Action::new(
                    &actor.name,
                    if protect { "model.protect" } else { "model.unprotect" },
                    format!("model:{name}@{alias}"),
                )
                .request(actor.request.as_deref()),
            )?;
            store.flush()?;
        }
        Ok(model)
    }

    /// Changes a model's description or tags (audited).
    pub fn update_model(
        &self,
        name: &str,
        actor: &Actor,
        change: impl FnOnce(&mut RegisteredModel),
    ) -> Result<RegisteredModel> {
        let store = &self.store;
        let _guard = store.registry_lock();
        let mut model = store.model_needed(name)?;
        let before = json!({ "description": model.description, "tags": model.tags });
        change(&mut model);
        check_description(&model.description).map_err(|m| refused(Refusal::Invalid, m))?;
        model.updated = self.now_ms();
        store.put_model(&model)?;
        self.audit(
            Action::new(&actor.name, "model.update", format!("model:{name}"))
                .before(before)
                .after(json!({ "description": model.description, "tags": model.tags }))
                .request(actor.request.as_deref()),
        )?;
        store.flush()?;
        Ok(model)
    }

    /// Changes a version's description or tags (audited).
    pub fn update_version(
        &self,
        name: &str,
        version: u64,
        actor: &Actor,
        change: impl FnOnce(&mut ModelVersion),
    ) -> Result<ModelVersion> {
        let store = &self.store;
        let _guard = store.registry_lock();
        let mut v = store.model_version_needed(name, version)?;
        let before = json!({ "description": v.description, "tags": v.tags });
        change(&mut v);
        check_description(&v.description).map_err(|m| refused(Refusal::Invalid, m))?;
        v.updated = self.now_ms();
        store.put_model_version(&v)?;
        self.audit(
            Action::new(&actor.name, "model.update", format!("model:{name}/{version}"))
                .before(before)
                .after(json!({ "description": v.description, "tags": v.tags }))
                .request(actor.request.as_deref()),
        )?;
        store.flush()?;
        Ok(v)
    }

    /// Deletes a version (none an alias points at), or the whole model (none of whose aliases
    /// point anywhere) with `version` `None`; audited. Their files stay in the store until gc.
    pub fn delete_model(&self, name: &str, version: Option<u64>, actor: &Actor) -> Result<()> {
        let store = &self.store;
        let _guard = store.registry_lock();
        store.model_needed(name)?;
        let aliases = store.aliases(name)?;
        match version {
            Some(v) => {
                store.model_version_needed(name, v)?;
                if let Some((a, _)) = aliases.iter().find(|(_, at)| *at == v) {
                    return Err(refused(
                        Refusal::Invalid,
                        format!("version {v} of `{name}` is what `{a}` points at; move the alias first"),
                    ));
                }
                store.remove_model_version(name, v)?;
            }
            None => {
                if let Some((a, v)) = aliases.first() {
                    return Err(refused(
                        Refusal::Invalid,
                        format!("`{name}@{a}` points at version {v}; remove its aliases first"),
                    ));
                }
                store.remove_model(name)?;
            }
        }
        let target = match version {
            Some(v) => format!("model:{name}/{v}"),
            None => format!("model:{name}"),
        };
        self.audit(Action::new(&actor.name, "model.delete", target).request(actor.request.as_deref()))?;
        store.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::EngineOptions;

    fn engine(dir: &std::path::Path) -> (Engine, VersionFile) {
        let e = Engine::open(EngineOptions::new(dir.join("data"))).unwrap();
        std::fs::write(dir.join("m.bin"), b"weights").unwrap();
        let placed = e.store().blobs().place(&dir.join("m.bin")).unwrap();
        (e, VersionFile { digest: placed.digest, size: placed.size })
    }

    fn new(file: &VersionFile) -> NewVersion {
        NewVersion {
            name: "churn".into(),
            files: [("m.bin".to_string(), file.clone())].into(),
            source: "test".into(),
            create_model: true,
            ..NewVersion::default()
        }
    }

    #[test]
    fn a_task_that_registers_again_gets_its_version_back() {
        let dir = tempfile::tempdir().unwrap();
        let (e, file) = engine(dir.path());
        let actor = Actor::new("pipeline:p#1.register", false, None);
        let r = e.registry();
        let (first, made) = r.register_version(new(&file), &actor, Some((1, "register", 0))).unwrap();
        assert!(made && first.version == 1);
        // The same task again (a retry, or an attempt after a crash): no second version.
        let (again, made) = r.register_version(new(&file), &actor, Some((1, "register", 0))).unwrap();
        assert!(!made);
        assert_eq!(again, first);
        // Another task, or none, makes a new one.
        assert_eq!(r.register_version(new(&file), &actor, Some((1, "register", 1))).unwrap().0.version, 2);
        assert_eq!(r.register_version(new(&file), &actor, None).unwrap().0.version, 3);
        assert_eq!(e.store().model("churn").unwrap().unwrap().last_version, 3);
    }

    #[test]
    fn moves_need_a_version_that_checks_and_rollback_needs_a_past() {
        let dir = tempfile::tempdir().unwrap();
        let (e, file) = engine(dir.path());
        let r = e.registry();
        let editor = Actor::new("token:ed", false, None);
        r.register_version(new(&file), &editor, None).unwrap();
        r.register_version(new(&file), &editor, None).unwrap();
        let no_past = r.move_alias("churn", "production", Some(1), &editor, "", Cause::default()).unwrap();
        assert_eq!((no_past.from, no_past.to), (None, Some(1)));
        let e1 = r.rollback_alias("churn", "production", &editor, "").unwrap_err().to_string();
        assert!(e1.contains("nothing to go back to"), "{e1}");
        r.move_alias("churn", "production", Some(2), &editor, "better", Cause::default()).unwrap();
        let back = r.rollback_alias("churn", "production", &editor, "").unwrap();
        assert_eq!((back.from, back.to, back.rollback), (Some(2), Some(1), true));
        // Protected: an editor may not, the owner may.
        r.protect_alias("churn", "production", true, &Actor::new("local:root", true, None)).unwrap();
        let e2 = r.move_alias("churn", "production", Some(2), &editor, "", Cause::default()).unwrap_err();
        assert!(matches!(e2, EngineError::Forbidden(_)), "{e2}");
        // A version whose registration was tampered with does not move anything.
        let mut v = e.store().model_version("churn", 2).unwrap().unwrap();
        v.metrics.insert("auc".into(), 0.99);
        v.artifact = format!("sha256:{}", "f".repeat(64));
        e.store().put_model_version(&v).unwrap();
        let e3 =
            r.move_alias("churn", "staging", Some(2), &editor, "", Cause::default()).unwrap_err().to_string();
        assert!(e3.contains("registration does not verify"), "{e3}");
        assert_eq!(e.store().alias("churn", "staging").unwrap(), None);
        // Every move and the protection are audited.
        let actions: Vec<String> =
            e.store().audit_entries(0).unwrap().into_iter().map(|a| a.action).collect();
        assert_eq!(actions.iter().filter(|a| *a == "model.alias").count(), 2, "{actions:?}");
        assert!(
            actions.contains(&"model.rollback".to_string()) && actions.contains(&"model.protect".to_string())
        );
    }

    #[test]
    fn descriptions_and_reasons_are_bounded_and_change_nothing_when_too_long() {
        let dir = tempfile::tempdir().unwrap();
        let (e, file) = engine(dir.path());
        let r = e.registry();
        let editor = Actor::new("token:ed", false, None);
        let long = "d".repeat(crate::registry::MAX_DESCRIPTION + 1);
        let e1 = r.create_model("m", &long, BTreeMap::new(), &editor).unwrap_err().to_string();
        assert!(e1.contains("at most 5000"), "{e1}");
        assert!(e.store().model("m").unwrap().is_none());
        r.register_version(new(&file), &editor, None).unwrap();
        let e2 = r.update_version("churn", 1, &editor, |v| v.description = long.clone()).unwrap_err();
        assert!(e2.to_string().contains("at most 5000"), "{e2}");
        assert_eq!(e.store().model_version("churn", 1).unwrap().unwrap().description, "");
        let reason = "r".repeat(crate::registry::MAX_REASON + 1);
        let e3 = r.move_alias("churn", "prod", Some(1), &editor, &reason, Cause::default()).unwrap_err();
        assert!(e3.to_string().contains("reason is at most"), "{e3}");
        assert_eq!(e.store().alias("churn", "prod").unwrap(), None);
    }
}
