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
use crate::driver::{Created, NewRun};
use crate::spec::Overlap;
use crate::store::{InboxStatus, Trigger};
use crate::trigger::cron::rfc3339;
use crate::trigger::schedule::{DEFAULT_CATCHUP_LIMIT, due};

/// How soon a schedule whose last slot could not be read is looked at again.
const CURSOR_RETRY_MS: i64 = 5_000;

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
        let now = shared.engine.now_ms();
        let catalog = shared.catalog();
        let mut next: Option<i64> = None;
        let mut work = Vec::new();
        for (name, entry) in &catalog.pipelines {
            let (Some(cron), Some(spec)) = (&entry.schedule, &entry.plan.spec.schedule) else { continue };
            let cursor = match cursors.get(name) {
                Some(c) => *c,
                None => match shared.engine.store().cursor(name) {
                    Ok(c) => c,
                    Err(e) => {
                        // Without its last slot the schedule cannot tell missed slots from new
                        // ones: it waits (and looks again) rather than drop or repeat any.
                        tracing::error!(
                            pipeline = %name,
                            error = %e,
                            "cannot read the schedule's last slot; its slots wait until it can be read (set it again with a backfill, or remove the pipeline's cursor)"
                        );
                        next =
                            Some(next.map_or(now + CURSOR_RETRY_MS, |m: i64| m.min(now + CURSOR_RETRY_MS)));
                        continue;
                    }
                },
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
                        fire(&shared, &entry, *slot, Trigger::Cron, false);
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
                        let details =
                            vec![json!({ "pipeline": name, "first": rfc3339(first), "last": rfc3339(last) })];
                        if let Err(e) = shared.record(
                            "schedule",
                            InboxStatus::Skipped,
                            reason,
                            vec![],
                            details,
                            Value::Null,
                        ) {
                            tracing::error!(pipeline = %name, error = %e, "cannot record the dropped slots");
                        }
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
            if let Err(e) = done.await {
                tracing::error!(error = %e, "firing the due slots crashed; the slots it missed fire when the server restarts (each slot claims its key, so none fires twice)");
            }
        }
        let wait = next.map(|n| Duration::from_millis((n - shared.engine.now_ms()).max(0) as u64));
        tokio::select! {
            _ = async { match wait { Some(w) => tokio::time::sleep(w).await, None => std::future::pending().await } } => {}
            _ = version.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Starts the run of one slot (blocking: it writes and flushes). `backfill` runs are never
/// skipped for overlap; they queue unless the schedule says `overlap: allow`.
pub(crate) fn fire(shared: &Shared, entry: &Entry, slot: i64, trigger: Trigger, backfill: bool) -> Fired {
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
                going.iter().map(|r| format!("{r}")).collect::<Vec<_>>().join(", ")
            );
            tracing::info!(pipeline = name, "{reason}");
            let details = vec![json!({ "pipeline": name, "slot": rfc3339(slot), "going": going })];
            if let Err(e) =
                shared.record("schedule", InboxStatus::Skipped, reason, vec![], details, Value::Null)
            {
                tracing::error!(pipeline = name, error = %e, "cannot record a skipped slot");
            }
            return Fired::Skipped(going);
        }
    }
    let given: Map<String, Value> = spec.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let params = match plan.spec.resolve_values(&given) {
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
            tracing::info!(pipeline = name, run = id, slot = %rfc3339(slot), trigger = trigger.as_str(), "started a scheduled run");
            Fired::Run(id)
        }
        Ok(Created::Held { run }) => Fired::Held(run),
        Err(LaunchError::Draining) => Fired::Failed("the server is stopping".into()),
        Err(LaunchError::Engine(e)) => {
            let reason = format!("the slot {} of `{name}` could not start a run: {e}", rfc3339(slot));
            tracing::error!(pipeline = name, "{reason}");
            if let Err(e) =
                shared.record("schedule", InboxStatus::Rejected, reason.clone(), vec![], vec![], Value::Null)
            {
                tracing::error!(pipeline = name, error = %e, "cannot record a slot that could not start");
            }
            Fired::Failed(reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use crate::driver::{Control, Engine, EngineOptions};
    use crate::server::test_shared;
    use crate::trigger::cron::parse_time;

    fn ms(s: &str) -> i64 {
        parse_time(s).unwrap()
    }

    /// Slots of the stored runs of `pipeline`, in seconds after `base`.
    fn fired(shared: &Shared, pipeline: &str, base: i64) -> Vec<i64> {
        let mut v: Vec<i64> = shared
            .engine
            .store()
            .runs()
            .unwrap()
            .into_iter()
            .filter(|r| r.pipeline == pipeline && r.trigger == Trigger::Cron)
            .map(|r| (r.cause.unwrap()["slot_ms"].as_i64().unwrap() - base) / 1000)
            .collect();
        v.sort();
        v
    }

    fn dags(dir: &std::path::Path, overlap: &str, catchup: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("tick.yaml"),
            format!(
                "name: tick\nschedule: {{cron: \"*/10 * * * * *\", overlap: {overlap}, catchup: {catchup}}}\nsteps:\n  t: {{process: {{command: [\"true\"]}}}}\n"
            ),
        )
        .unwrap();
    }

    /// Runs the schedule loop for `secs` of paused tokio time from `base`.
    async fn run_for(shared: &Arc<Shared>, stop: &watch::Sender<u32>, secs: u64) {
        let task = tokio::spawn(run(shared.clone(), stop.subscribe()));
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.send_modify(|n| *n += 1);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn slots_fire_on_time_once_and_catch_up_after_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        dags(&tmp.path().join("dags"), "allow", "latest");
        let base = ms("2026-11-22T00:00:05Z");
        let engine = Engine::open(EngineOptions::new(tmp.path().join("data"))).unwrap();
        let (shared, mut controls, stop) =
            test_shared(engine, &tmp.path().join("dags"), Arc::new(TokioClock::starting_at(base)));
        // 63 simulated seconds (ending between slots): :10 to :60, each once; the first
        // sight fires nothing from before the start.
        run_for(&shared, &stop, 63).await;
        let base0 = ms("2026-11-22T00:00:00Z");
        assert_eq!(fired(&shared, "tick", base0), [10, 20, 30, 40, 50, 60]);
        let started: Vec<Control> = std::iter::from_fn(|| controls.try_recv().ok()).collect();
        assert_eq!(started.len(), 6, "each run went to the driver");
        // Every run was created at its slot: the clock is tokio's, so exactly.
        let cursor = shared.engine.store().cursor("tick").unwrap();
        assert_eq!(cursor, Some(ms("2026-11-22T00:01:00Z")));

        // "Restart" 10 minutes later with catchup: latest: only the newest missed slot runs,
        // the ones in between are recorded as dropped.
        let engine = Arc::try_unwrap(Arc::try_unwrap(shared).ok().unwrap().engine).ok().unwrap();
        let later = ms("2026-11-22T00:11:05Z");
        let (shared, _controls, stop) =
            test_shared(engine, &tmp.path().join("dags"), Arc::new(TokioClock::starting_at(later)));
        run_for(&shared, &stop, 1).await;
        let got = fired(&shared, "tick", base0);
        assert_eq!(got.len(), 7, "{got:?}");
        assert_eq!(got[6], 660, "the latest missed slot, 00:11:00");
        let dropped = shared.engine.store().inbox(10, None, |r| r.source == "schedule").unwrap();
        assert_eq!(dropped.len(), 1);
        assert!(
            dropped[0].reason.contains("00:01:10") && dropped[0].reason.contains("00:10:50"),
            "{}",
            dropped[0].reason
        );

        // The same instant again (a crash before the cursor was stored): nothing twice.
        shared.engine.store().set_cursor("tick", ms("2026-11-22T00:10:00Z")).unwrap();
        let engine = Arc::try_unwrap(Arc::try_unwrap(shared).ok().unwrap().engine).ok().unwrap();
        let (shared, _c, stop) =
            test_shared(engine, &tmp.path().join("dags"), Arc::new(TokioClock::starting_at(later)));
        run_for(&shared, &stop, 1).await;
        assert_eq!(fired(&shared, "tick", base0).len(), 7, "the slot's key keeps it from running twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cursor_that_cannot_be_read_holds_the_schedule_back() {
        let tmp = tempfile::tempdir().unwrap();
        dags(&tmp.path().join("dags"), "allow", "all");
        let base = ms("2026-11-22T00:00:05Z");
        let engine = Engine::open(EngineOptions::new(tmp.path().join("data"))).unwrap();
        engine.store().set_cursor("tick", ms("2026-11-21T23:59:00Z")).unwrap();
        engine.store().damage_cursor("tick", b"bad").unwrap();
        let (shared, _controls, stop) =
            test_shared(engine, &tmp.path().join("dags"), Arc::new(TokioClock::starting_at(base)));
        run_for(&shared, &stop, 33).await;
        let base0 = ms("2026-11-22T00:00:00Z");
        assert!(fired(&shared, "tick", base0).is_empty(), "nothing fired while the cursor was unreadable");
        assert!(shared.engine.store().cursor("tick").is_err(), "the damaged cursor was not overwritten");
        // Repaired, the schedule catches up on every slot it held back (catchup: all).
        shared.engine.store().set_cursor("tick", ms("2026-11-21T23:59:00Z")).unwrap();
        run_for(&shared, &stop, 6).await;
        let got = fired(&shared, "tick", base0);
        assert!(got.len() >= 9 && got.contains(&-50) && got.contains(&30), "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn overlap_skip_skips_while_a_run_goes() {
        let tmp = tempfile::tempdir().unwrap();
        dags(&tmp.path().join("dags"), "skip", "none");
        let base = ms("2026-11-22T00:00:05Z");
        let engine = Engine::open(EngineOptions::new(tmp.path().join("data"))).unwrap();
        let (shared, _controls, stop) =
            test_shared(engine, &tmp.path().join("dags"), Arc::new(TokioClock::starting_at(base)));
        // No driver: the first run never ends, so later slots are skipped and say why.
        run_for(&shared, &stop, 33).await;
        assert_eq!(fired(&shared, "tick", ms("2026-11-22T00:00:00Z")), [10]);
        let skipped = shared.engine.store().inbox(10, None, |r| r.status == InboxStatus::Skipped).unwrap();
        assert_eq!(skipped.len(), 2);
        assert!(skipped[0].reason.contains("still going (overlap: skip)"), "{}", skipped[0].reason);
    }
}
