//! The schedule loop: sleeps until the next slot of any schedule, then asks
//! [`crate::trigger::schedule::due`] what to fire, creates those runs (each claiming the key
//! `cron:<pipeline>:<slot>`, so a slot never runs twice, even across a crash between the
//! run and the cursor), and stores the slot as handled.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::catalog::Entry;
use super::{LaunchError, Shared};
use crate::driver::{Created, NewRun, resolve_values};
use crate::spec::Overlap;
use crate::trigger::cron::rfc3339;
use crate::trigger::schedule::{DEFAULT_CATCHUP_LIMIT, due};

/// What became of one slot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fired {
    Run(u64),
    /// The slot ran already (this run).
    Held(u64),
    /// `overlap: skip` and these runs still go.
    Skipped(Vec<u64>),
    Failed(String),
}

pub(super) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<u32>) {
    let mut version = shared.catalog_version.subscribe();
    let mut cursors: HashMap<String, Option<i64>> = HashMap::new();
    loop {
        let now = shared.clock.now_ms();
        let catalog = shared.catalog();
        let mut next: Option<i64> = None;
        let mut work = Vec::new();
        for (name, entry) in &catalog.pipelines {
            let (Some(cron), Some(spec)) = (&entry.schedule, &entry.plan.spec.schedule) else { continue };
            let cursor = match cursors.get(name) {
                Some(c) => *c,
                None => shared.engine.store().cursor(name).unwrap_or_else(|e| {
                    tracing::error!(pipeline = %name, error = %e, "cannot read the schedule's last slot");
                    None
                }),
            };
            let d = due(cron, cursor, now, spec.catchup, spec.catchup_limit.unwrap_or(DEFAULT_CATCHUP_LIMIT));
            let cursor = d.cursor.or(cursor);
            cursors.insert(name.clone(), cursor);
            if let Some(n) = cron.next_after(cursor.unwrap_or(now)) {
                next = Some(next.map_or(n, |m: i64| m.min(n)));
            }
            if !d.fire.is_empty() || d.dropped.is_some() || d.cursor.is_some() {
                work.push((entry.clone(), d));
            }
        }
        if !work.is_empty() {
            let shared = shared.clone();
            let done = tokio::task::spawn_blocking(move || {
                for (entry, d) in work {
                    let name = entry.plan.name().to_string();
                    for slot in &d.fire {
                        fire(&shared, &entry, *slot, "cron", false);
                    }
                    if let Some((first, last)) = d.dropped {
                        let spec = entry.plan.spec.schedule.as_ref().expect("scheduled");
                        let reason = format!(
                            "missed slots from {} to {} of `{name}` were dropped (catchup: {})",
                            rfc3339(first),
                            rfc3339(last),
                            serde_json::to_value(spec.catchup).unwrap_or_default().as_str().unwrap_or("")
                        );
                        tracing::warn!(pipeline = %name, "{reason}");
                        let details = vec![json!({ "pipeline": name, "first": rfc3339(first), "last": rfc3339(last) })];
                        shared.record("schedule", "skipped", reason, vec![], details, Value::Null);
                    }
                    if let Some(c) = d.cursor
                        && let Err(e) = shared.engine.store().set_cursor(&name, c)
                    {
                        tracing::error!(pipeline = %name, error = %e, "cannot store the schedule's last slot");
                    }
                }
                if let Err(e) = shared.engine.store().flush() {
                    tracing::error!(error = %e, "cannot flush the schedule state");
                }
            });
            let _ = done.await;
        }
        let wait = next.map(|n| Duration::from_millis((n - shared.clock.now_ms()).max(0) as u64));
        tokio::select! {
            _ = async { match wait { Some(w) => tokio::time::sleep(w).await, None => std::future::pending().await } } => {}
            _ = version.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Starts the run of one slot (blocking: it writes and flushes). `backfill` runs are never
/// skipped for overlap; they queue unless the schedule says `overlap: allow`.
pub(crate) fn fire(shared: &Shared, entry: &Entry, slot: i64, trigger: &str, backfill: bool) -> Fired {
    let plan = &entry.plan;
    let name = plan.name();
    let Some(spec) = plan.spec.schedule.as_ref() else {
        return Fired::Failed(format!("the pipeline `{name}` has no schedule"));
    };
    let _intake = shared.intake.lock().unwrap_or_else(|p| p.into_inner());
    if !backfill && spec.overlap == Overlap::Skip {
        let going = shared.launcher().runs_of(name);
        if !going.is_empty() {
            let reason = format!(
                "the slot {} of `{name}` was skipped: {} still going (overlap: skip)",
                rfc3339(slot),
                going.iter().map(|r| format!("r{r}")).collect::<Vec<_>>().join(", ")
            );
            tracing::info!(pipeline = name, "{reason}");
            let details = vec![json!({ "pipeline": name, "slot": rfc3339(slot), "going": going })];
            shared.record("schedule", "skipped", reason, vec![], details, Value::Null);
            return Fired::Skipped(going);
        }
    }
    let given: Map<String, Value> = spec.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let params = match resolve_values(plan, &given) {
        Ok(p) => p,
        Err(errors) => return Fired::Failed(errors.join("; ")),
    };
    let mut new = NewRun::new(params, trigger);
    new.cause = Some(json!({
        "slot": rfc3339(slot),
        "slot_ms": slot,
        "cron": spec.cron,
        "timezone": spec.timezone.as_deref().unwrap_or("UTC"),
    }));
    new.key = Some((format!("cron:{name}:{slot}"), None));
    let queue = if backfill { spec.overlap != Overlap::Allow } else { spec.overlap == Overlap::Queue };
    match shared.launch_with(plan, new, queue) {
        Ok(Created::Run(id)) => {
            tracing::info!(pipeline = name, run = id, slot = %rfc3339(slot), trigger, "started a scheduled run");
            Fired::Run(id)
        }
        Ok(Created::Held { run }) => Fired::Held(run),
        Err(LaunchError::Draining) => Fired::Failed("the server is stopping".into()),
        Err(LaunchError::Engine(e)) => {
            let reason = format!("the slot {} of `{name}` could not start a run: {e}", rfc3339(slot));
            tracing::error!(pipeline = name, "{reason}");
            shared.record("schedule", "rejected", reason.clone(), vec![], vec![], Value::Null);
            Fired::Failed(reason)
        }
    }
}
