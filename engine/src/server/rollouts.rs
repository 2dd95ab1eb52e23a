//! The server's side of rollouts: starting one (refused while another rolls out the same
//! alias), a person's pause, resume, abort and promote, and the loop that ticks every running
//! rollout. Each change goes through the pure machine (`crate::rollout`); its effects are
//! carried out here: the candidate's share set in serving's routing, measurements taken from
//! the serving records, aliases moved through the registry (its rules and audit), and the
//! end announced as a `sluice.rollout` event that `on: - rollout:` matches. The state is
//! written and flushed after every change, so a restarted server routes as before and goes
//! on where it was.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::Shared;
use crate::driver::Actor;
use crate::registry::Cause;
use crate::rollout::spec::{RouteBy, Strategy};
use crate::rollout::{Effect, Input, Rollout, plan};
use crate::security::audit::Action;
use crate::serving::Route;
use crate::trigger::events::ROLLOUT_SOURCE;

/// How often running rollouts are looked at (pauses end and measurements fall due between).
const TICK: Duration = Duration::from_millis(250);

/// Why a rollout could not start or change.
#[derive(Debug)]
pub(crate) enum RolloutError {
    NotFound(String),
    Conflict(String),
    Invalid(String),
    Internal(String),
}

impl std::fmt::Display for RolloutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RolloutError::NotFound(m)
            | RolloutError::Conflict(m)
            | RolloutError::Invalid(m)
            | RolloutError::Internal(m) => f.write_str(m),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> RolloutError {
    RolloutError::Internal(e.to_string())
}

/// What starting a rollout takes.
pub(crate) struct StartRollout {
    pub model: String,
    pub version: u64,
    pub alias: String,
    pub strategy: Strategy,
    pub route_by: Option<RouteBy>,
    /// Who starts it, as the audit log names them.
    pub by: String,
    /// Whether its alias moves may move a protected alias (an approver, or a pipeline whose
    /// run passed a gate and an approval for the version).
    pub may_move_protected: bool,
    pub request: Option<String>,
}

/// Holds the server's lock on rollout changes (the loop's and requests' one at a time).
fn changing(shared: &Shared) -> std::sync::MutexGuard<'_, ()> {
    shared.rollout_changes.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts a rollout (blocking: it writes and flushes).
pub(crate) fn start(shared: &Shared, s: StartRollout) -> Result<Rollout, RolloutError> {
    let _one = changing(shared);
    let store = shared.engine.store();
    let stages = plan(&s.strategy).map_err(RolloutError::Invalid)?;
    crate::registry::check_alias(&s.alias).map_err(RolloutError::Invalid)?;
    crate::rollout::machine::check_preview(&s.strategy, &s.alias).map_err(RolloutError::Invalid)?;
    if let Some(b) = &s.route_by
        && b.header.is_some() == b.feature.is_some()
    {
        return Err(RolloutError::Invalid("`route_by` names exactly one of `header` and `feature`".into()));
    }
    store
        .model_version(&s.model, s.version)
        .map_err(internal)?
        .ok_or_else(|| RolloutError::NotFound(format!("model `{}` has no version {}", s.model, s.version)))?;
    if let Some(r) = store.active_rollout(&s.model, &s.alias).map_err(internal)? {
        return Err(RolloutError::Conflict(format!(
            "rollout {} of `{}@{}` (version {}) is still {}: abort or finish it first",
            r.id,
            r.model,
            r.alias,
            r.candidate,
            r.phase.name()
        )));
    }
    // One routing per model: a second alias of the model cannot roll out beside it.
    if let Some(route) = shared.serving.route(&s.model) {
        return Err(RolloutError::Conflict(format!(
            "rollout {} routes `{}@{}` now: one rollout per model at a time",
            route.rollout, s.model, route.alias
        )));
    }
    let stable = store.alias(&s.model, &s.alias).map_err(internal)?;
    if stable == Some(s.version) {
        return Err(RolloutError::Invalid(format!(
            "`{}@{}` already points at version {}",
            s.model, s.alias, s.version
        )));
    }
    let now = shared.engine.now_ms();
    let id = store.next_rollout_id().map_err(internal)?;
    // The candidate's analyses read what it serves from now on.
    shared.serving.reset_stats(&s.model, s.version);
    let mut r = Rollout::new(id, &s.model, &s.alias, s.version, stable, stages, now, &s.by);
    r.route_by = s.route_by;
    r.may_move_protected = s.may_move_protected;
    store
        .audit(
            Action::new(&s.by, "rollout.start", format!("model:{}@{}", s.model, s.alias))
                .after(
                    json!({ "rollout": id, "version": s.version, "stable": stable, "strategy": s.strategy }),
                )
                .request(s.request.as_deref()),
            now,
        )
        .map_err(internal)?;
    drive(shared, &mut r, now, Input::Tick)?;
    Ok(r)
}

/// A person's pause, resume, abort or promote of the rollout running on `model` (any of its
/// aliases), or of rollout `id`.
pub(crate) fn control(
    shared: &Shared,
    target: &str,
    input: Input,
    by: &str,
    request: Option<&str>,
) -> Result<Rollout, RolloutError> {
    let _one = changing(shared);
    let store = shared.engine.store();
    let mut r = find(shared, target)?;
    if r.phase.is_done() {
        return Err(RolloutError::Conflict(format!("rollout {} already {}", r.id, r.phase.name())));
    }
    let now = shared.engine.now_ms();
    let what = match &input {
        Input::Pause(_) => "rollout.pause",
        Input::Resume => "rollout.resume",
        Input::Abort(_) => "rollout.abort",
        Input::Promote => "rollout.promote",
        _ => "rollout.change",
    };
    store
        .audit(
            Action::new(by, what, format!("model:{}@{}", r.model, r.alias))
                .after(json!({ "rollout": r.id }))
                .request(request),
            now,
        )
        .map_err(internal)?;
    drive(shared, &mut r, now, input)?;
    Ok(r)
}

/// The rollout a name stands for: a number is a rollout's id; a model name its newest
/// rollout (of any alias).
pub(crate) fn find(shared: &Shared, target: &str) -> Result<Rollout, RolloutError> {
    let store = shared.engine.store();
    let found = match target.parse::<u64>() {
        Ok(id) => store.rollout(id).map_err(internal)?,
        Err(_) => store.rollouts().map_err(internal)?.into_iter().rev().find(|r| r.model == target),
    };
    found.ok_or_else(|| {
        RolloutError::NotFound(format!("there is no rollout `{target}` (a model name or a rollout id)"))
    })
}

/// Applies an input and carries out everything it leads to; writes and flushes the state.
fn drive(shared: &Shared, r: &mut Rollout, now: i64, first: Input) -> Result<(), RolloutError> {
    let mut queue: std::collections::VecDeque<Effect> = r.apply(now, first).into();
    let mut finished = None;
    while let Some(effect) = queue.pop_front() {
        match effect {
            Effect::Weight(_) => {}
            Effect::Measure(metrics) => {
                let values = metrics.iter().map(|m| (m.clone(), measure(shared, r, m))).collect();
                queue.extend(r.apply(now, Input::Measured(values)));
            }
            Effect::MoveAlias { alias, to, reason } => {
                let actor = Actor::new(format!("rollout:{}", r.id), r.may_move_protected, None);
                let cause =
                    Cause { request: Some(format!("rollout {} by {}", r.id, r.by)), ..Cause::default() };
                if let Err(e) =
                    shared.engine.registry().move_alias(&r.model, &alias, to, &actor, &reason, cause)
                {
                    // The rollout cannot do what it must: it stops, saying why (a success
                    // announced in the same batch is taken back).
                    queue.retain(|e| !matches!(e, Effect::Finished { succeeded: true, .. }));
                    queue.extend(r.alias_failed(
                        now,
                        &alias,
                        format!("the alias `{alias}` could not move: {e}"),
                    ));
                }
            }
            Effect::Finished { succeeded, reason } => finished = Some((succeeded, reason)),
        }
    }
    // Routing follows the state: while it runs, the candidate's share; once it ended, the
    // alias alone.
    let route = (!r.phase.is_done()).then(|| route_of(r));
    shared.serving.set_route(&r.model, route);
    let store = shared.engine.store();
    store.put_rollout(r).map_err(internal)?;
    if let Some((succeeded, reason)) = &finished {
        let action = if *succeeded { "rollout.succeeded" } else { "rollout.aborted" };
        store
            .audit(
                Action::new(format!("rollout:{}", r.id), action, format!("model:{}@{}", r.model, r.alias))
                    .after(json!({ "rollout": r.id, "version": r.candidate, "stable": r.stable, "reason": reason })),
                now,
            )
            .map_err(internal)?;
    }
    store.flush().map_err(internal)?;
    if let Some((succeeded, reason)) = finished {
        let payload = json!({
            "rollout": r.id,
            "model": r.model,
            "alias": r.alias,
            "version": r.candidate,
            "stable": r.stable,
            "status": if succeeded { "succeeded" } else { "aborted" },
            "reason": reason,
        });
        tracing::info!(rollout = r.id, model = %r.model, status = %payload["status"], %reason, "rollout ended");
        if let Err(e) = shared.announce(ROLLOUT_SOURCE, &payload) {
            tracing::error!(rollout = r.id, error = %e, "cannot record the rollout's end as an event");
        }
    }
    Ok(())
}

/// One metric of the candidate's serving record (or registration).
fn measure(shared: &Shared, r: &Rollout, metric: &str) -> Option<f64> {
    if let Some(key) = metric.strip_prefix("version.") {
        let v = shared.engine.store().model_version(&r.model, r.candidate).ok()??;
        return v.metrics.get(key).copied();
    }
    if metric == "psi" {
        let candidate = shared.serving.with_stats(&r.model, r.candidate, |s| s.map(|s| s.scores()))?;
        let stable = shared.serving.with_stats(&r.model, r.stable?, |s| s.map(|s| s.scores()))?;
        return score_psi(&stable, &candidate);
    }
    shared.serving.with_stats(&r.model, r.candidate, |s| {
        let s = s.filter(|s| s.requests > 0)?;
        match metric {
            "error_rate" => Some(s.error_rate()),
            "latency_p50" => s.latency(0.5),
            "latency_p99" => s.latency(0.99),
            "requests" => Some(s.requests as f64),
            "accuracy" => s.accuracy(),
            "auc" => s.auc(),
            _ => None,
        }
    })
}

/// The PSI of two sets of scores in [0, 1] over ten equal bins (empty bins filled as
/// Evidently fills them); none with fewer than 20 scores on a side.
pub(crate) fn score_psi(reference: &[f64], current: &[f64]) -> Option<f64> {
    if reference.len() < 20 || current.len() < 20 {
        return None;
    }
    let edges: Vec<f64> = (0..=10).map(|i| i as f64 / 10.0).collect();
    let shares = |v: &[f64]| {
        let mut sorted = v.to_vec();
        sorted.sort_by(f64::total_cmp);
        let counts = crate::drift::stats::histogram(&sorted, &edges);
        let mut s: Vec<f64> = counts.iter().map(|c| c / v.len() as f64).collect();
        crate::drift::stats::fill_zeros(&mut s);
        s
    };
    Some(crate::drift::stats::psi(&shares(reference), &shares(current)))
}

/// Ticks every running rollout until the server stops (`restore` has set their routing
/// before the server took requests).
pub(super) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<u32>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || tick(&s)).await;
    }
}

/// How a running rollout routes its alias.
fn route_of(r: &Rollout) -> Route {
    Route {
        rollout: r.id,
        alias: r.alias.clone(),
        stable: r.stable,
        candidate: r.candidate,
        share: r.candidate_share(),
        by: r.route_by.clone(),
    }
}

/// Routes every running rollout as it was: called once, before the server takes requests.
pub(super) fn restore(shared: &Shared) {
    let Ok(all) = shared.engine.store().rollouts() else { return };
    for r in all.into_iter().filter(|r| !r.phase.is_done()) {
        tracing::info!(rollout = r.id, model = %r.model, weight = r.candidate_share(), "resuming a rollout");
        shared.serving.set_route(&r.model, Some(route_of(&r)));
    }
}

fn tick(shared: &Shared) {
    let _one = changing(shared);
    let now = shared.engine.now_ms();
    // Every running rollout routes its model: only those are read, not every rollout kept.
    for id in shared.serving.routed() {
        let mut r = match shared.engine.store().rollout(id) {
            Ok(Some(r)) if !r.phase.is_done() => r,
            Ok(_) => continue,
            Err(e) => {
                tracing::error!(rollout = id, error = %e, "cannot read a rollout");
                continue;
            }
        };
        if r.wake_at().is_some_and(|at| at <= now)
            && let Err(e) = drive(shared, &mut r, now, Input::Tick)
        {
            tracing::error!(rollout = r.id, error = %e, "cannot advance a rollout");
        }
    }
}

/// A rollout as the API shows it.
pub(crate) fn doc(r: &Rollout) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    v["status"] = json!(r.phase.name());
    v["share"] = json!(r.candidate_share());
    v["wake_at"] = json!(r.wake_at());
    v
}

/// Runs rollouts for `rollout:` steps (the engine holds it weakly through the server).
pub(super) struct Host(pub std::sync::Weak<Shared>);

impl crate::driver::builtin::RolloutHost for Host {
    fn start(&self, q: crate::driver::builtin::RolloutRequest) -> Result<u64, String> {
        let shared = self.0.upgrade().ok_or("the server is stopping")?;
        // A retried or resumed attempt of the same step adopts what it started.
        let store = shared.engine.store();
        if let Some(r) =
            store.rollouts().map_err(|e| e.to_string())?.into_iter().rev().find(|r| {
                r.by == q.by && r.model == q.model && r.alias == q.alias && r.candidate == q.version
            })
        {
            return Ok(r.id);
        }
        let strategy: Strategy = serde_json::from_value(q.strategy)
            .map_err(|e| format!("the rollout's strategy does not fit: {e}"))?;
        let route_by: Option<RouteBy> = serde_json::from_value(q.route_by)
            .map_err(|e| format!("the rollout's `route_by` does not fit: {e}"))?;
        start(
            &shared,
            StartRollout {
                model: q.model,
                version: q.version,
                alias: q.alias,
                strategy,
                route_by,
                by: q.by,
                may_move_protected: q.may_move_protected,
                request: None,
            },
        )
        .map(|r| r.id)
        .map_err(|e| e.to_string())
    }

    fn abort(&self, id: u64, reason: &str) {
        if let Some(shared) = self.0.upgrade()
            && let Err(e) =
                control(&shared, &id.to_string(), Input::Abort(reason.to_string()), "sluice", None)
        {
            tracing::warn!(rollout = id, error = %e, "cannot abort the rollout of a stopped step");
        }
    }
}
