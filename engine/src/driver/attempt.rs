//! Carrying out one attempt: its files, its request (rendered from the run's state), the
//! executor in a task of its own, and its result turned into the event the run's machine takes.

use std::path::PathBuf;
use std::sync::Arc;

use sluice_worker::{AttemptFiles, AttemptOutcome, AttemptSink, ErrorKind, ExecError, KillSwitch, LogStream};
use tracing::Instrument;

use super::render;
use super::runloop::{Done, Driver};
use super::sink::StoreSink;
use crate::compile::Plan;
use crate::scheduler::{Outcome, StepIx};
use crate::store::AttemptKey;

impl Driver<'_> {
    /// The run's folder of attempt files.
    pub(super) fn attempts_dir(&self, run: u64) -> PathBuf {
        self.engine.store().dir().join("attempts").join(run.to_string())
    }

    /// Where an attempt's files go: `<step>.<item>.<attempt>.*` in the run's attempts folder.
    /// Plain files, not a folder per attempt (unless its kind mounts one): a mkdir per attempt
    /// was the largest cost of the engine's own work per step (ext4 inode allocation).
    pub(super) fn attempt_stem(
        &self,
        run: u64,
        plan: &Plan,
        step: StepIx,
        item: u32,
        attempt: u32,
    ) -> PathBuf {
        self.attempts_dir(run).join(format!("{}.{item}.{attempt}", plan.id(step)))
    }

    pub(super) fn execute(&mut self, run: u64, step: StepIx, item: u32, attempt: u32) {
        let store = self.engine.store().clone();
        let stem = self.attempt_stem(run, &self.runs[&run].plan, step, item, attempt);
        let attempts_dir = self.attempts_dir(run);
        let a = self.runs.get_mut(&run).expect("active run");
        let run_dir = store.dir().join("work").join(run.to_string());
        let made_run_dir = if a.run_dir_made {
            Ok(())
        } else {
            std::fs::create_dir_all(&run_dir).and_then(|_| std::fs::create_dir_all(&attempts_dir))
        };
        a.run_dir_made = made_run_dir.is_ok();
        let ps = &a.plan.steps[step as usize];
        let kind = ps.kind.key();
        let files = AttemptFiles::at(run_dir, &stem, ps.kind.hooks().attempt_folder());
        let view = a.view(run);
        let item_value = a.notes.items.get(&step).and_then(|v| v.get(item as usize)).map(|v| (item, v));
        let code = |path: &str| self.engine.code_copy(&a.plan, path);
        let request = made_run_dir
            .map_err(|e| format!("cannot create the attempt folders under {}: {e}", store.dir().display()))
            .and_then(|_| render::request(&view, step, item_value, attempt, files, &code));
        let span = tracing::info_span!(
            parent: &a.span,
            "attempt",
            run,
            pipeline = a.plan.name(),
            step = a.plan.id(step),
            item,
            attempt,
            kind
        );
        let process_file = with_suffix(&stem, ".process.json");
        let sink = Arc::new(StoreSink::new(store, AttemptKey { run, step, item, attempt }, process_file));
        let request = match request {
            Ok(r) => r,
            Err(message) => {
                let _in = span.enter();
                tracing::warn!(error = %message, "cannot start the attempt");
                sink.log(LogStream::System, format!("sluice: {message}\n").as_bytes());
                let outcome = Outcome::Failed { retryable: false, message };
                let _ = self.tx.send(Done { run, step, item, attempt, outcome });
                return;
            }
        };
        let (switch, kill_rx) = KillSwitch::new();
        a.kills.insert((step, item, attempt), (switch, sink.clone()));
        let declared = a.plan.steps[step as usize].spec.outputs.clone();
        let executors = self.executors.clone();
        let tx = self.tx.clone();
        let attempt_sink = sink.clone();
        let work = tokio::spawn(
            async move {
                tracing::debug!("the attempt starts");
                let executor = executors.for_spec(&request.spec);
                executor.execute(request, attempt_sink, kill_rx).await
            }
            .instrument(span.clone()),
        );
        tokio::spawn(
            async move {
                let result = match work.await {
                    Ok(result) => result,
                    // An executor that panics loses its attempt, never the run: report it failed.
                    Err(e) => {
                        AttemptOutcome::failed(ExecError::retryable(format!("the executor crashed: {e}")))
                    }
                };
                let outcome = outcome(result, &declared);
                match &outcome {
                    Outcome::Succeeded { .. } => tracing::debug!("attempt succeeded"),
                    Outcome::Failed { message, retryable } => {
                        tracing::info!(error = %message, retryable, "attempt failed");
                        sink.log(LogStream::System, format!("sluice: {message}\n").as_bytes());
                    }
                    Outcome::TimedOut { message } => tracing::info!(error = %message, "attempt timed out"),
                    Outcome::Cancelled { message } => tracing::info!(error = %message, "attempt stopped"),
                }
                let _ = tx.send(Done { run, step, item, attempt, outcome });
            }
            .instrument(span),
        );
    }
}

/// How an executor's outcome counts for the run: its error classified, its declared outputs
/// checked.
fn outcome(result: AttemptOutcome, declared: &[String]) -> Outcome {
    match result.result {
        Ok(()) => match declared.iter().find(|d| !result.outputs.contains_key(*d)) {
            Some(missing) => Outcome::Failed {
                retryable: false,
                message: format!(
                    "the step declares output `{missing}` but did not write it to SLUICE_OUTPUTS"
                ),
            },
            None => Outcome::Succeeded { outputs: result.outputs },
        },
        Err(e) => match e.kind {
            ErrorKind::Retryable => Outcome::Failed { retryable: true, message: e.message },
            ErrorKind::Fatal => Outcome::Failed { retryable: false, message: e.message },
            ErrorKind::Timeout => Outcome::TimedOut { message: e.message },
            ErrorKind::Cancelled => Outcome::Cancelled { message: e.message },
        },
    }
}

pub(super) fn with_suffix(stem: &std::path::Path, suffix: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
