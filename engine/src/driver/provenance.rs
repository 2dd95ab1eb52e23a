//! The signed provenance of an attempt's artifacts: what the attempt was (pipeline, version,
//! params, trigger, run and attempt, times) and what it used, resolved to content (consumed
//! artifacts, dataset versions, the pipeline's code files, a container's image), signed by the
//! instance's key (`security::provenance`) and kept by attempt before its result is logged.

use std::sync::Arc;

use serde_json::json;
use sluice_worker::{ExecSpec, ExecutorSet};

use super::Engine;
use super::render::RunView;
use crate::artifacts::DatasetVersion;
use crate::scheduler::{Produced, StepIx};
use crate::security::keys::SigningKey;
use crate::security::provenance::{self, Build, Dependency, Subject};
use crate::store::{ConsumedArtifact, Store};

/// What an attempt's provenance needs from its start, to sign when its artifacts are kept.
pub(super) struct Provenance {
    store: Store,
    key: Arc<SigningKey>,
    build: Build,
    step_ix: StepIx,
    /// A container step's image reference, resolved to its id on the engine when signing.
    image: Option<String>,
}

/// Names this instance in provenance: `sluice://<host name><data folder>`.
pub(super) fn builder_id(store: &Store) -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let host = HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    });
    format!("sluice://{host}{}", store.dir().display())
}

impl Provenance {
    pub(super) fn of(
        engine: &Engine,
        view: &RunView<'_>,
        (step, item, attempt): (StepIx, u32, u32),
        spec: &ExecSpec,
        consumed: &[ConsumedArtifact],
    ) -> Provenance {
        let plan = view.plan;
        let mut dependencies: Vec<Dependency> = consumed
            .iter()
            .map(|c| Dependency {
                uri: format!("sluice:runs/{}/steps/{}/artifacts/{}", view.id, c.step, c.name),
                name: Some(format!("{}.{}", c.step, c.name)),
                digest: c.digest.clone(),
            })
            .collect();
        dependencies.extend(plan.code.iter().map(|f| Dependency {
            uri: format!("file:{}", f.path),
            name: Some("code".into()),
            digest: format!("sha256:{}", f.sha256),
        }));
        let image = match spec {
            ExecSpec::Container(c) => Some(c.image.clone()),
            _ => None,
        };
        let store = engine.store().clone();
        let now = engine.now_ms();
        Provenance {
            key: engine.signing_key().clone(),
            build: Build {
                builder: builder_id(&store),
                pipeline: plan.name().to_string(),
                dag: plan.hash.clone(),
                params: view.params.clone(),
                step: plan.id(step).to_string(),
                kind: plan.steps[step as usize].kind.key().to_string(),
                run: view.id,
                item,
                attempt,
                started_ms: now,
                finished_ms: now,
                trigger: json!({ "trigger": view.trigger.as_str(), "cause": view.cause }),
                dependencies,
            },
            store,
            step_ix: step,
            image,
        }
    }

    /// Signs the statement of `produced` and keeps it; an error fails the attempt (its
    /// artifacts are not recorded without their provenance).
    pub(super) async fn sign(
        mut self,
        produced: &[Produced],
        datasets: &[DatasetVersion],
        executors: &ExecutorSet,
        now: i64,
    ) -> Result<(), String> {
        let b = &mut self.build;
        b.finished_ms = now;
        b.dependencies.extend(datasets.iter().map(|d| Dependency {
            uri: format!("file://{}", d.path),
            name: Some("dataset".into()),
            digest: d.digest.clone(),
        }));
        if let Some(image) = &self.image {
            // The image the step ran in, by content: its id on the engine (an image pulled or
            // retagged later does not change what this attempt used).
            let id = executors
                .container()
                .image_id(image)
                .await
                .map_err(|e| format!("cannot ask the Docker engine what image `{image}` is, for the artifacts' provenance: {e}"))?
                .ok_or_else(|| format!("the image `{image}` is gone from the Docker engine; the artifacts' provenance cannot name it"))?;
            b.dependencies.push(Dependency {
                uri: format!("docker:{image}"),
                name: Some("image".into()),
                digest: id,
            });
        }
        let subjects: Vec<Subject> = produced
            .iter()
            .map(|a| Subject { name: format!("{}/{}", a.name, a.file), digest: a.digest.clone() })
            .collect();
        let envelope = provenance::sign(&self.key, &provenance::statement(&subjects, &self.build));
        let (run, item, attempt) = (self.build.run, self.build.item, self.build.attempt);
        self.store
            .put_provenance(run, self.step_ix, item, attempt, &envelope)
            .map_err(|e| format!("cannot keep the provenance of the step's artifacts: {e}"))
    }
}
