//! The rollout as a pure state machine: a plan of stages made from the strategy, and
//! [`Rollout::apply`], which takes the time and one input (a tick, measurements, a person's
//! pause, resume, abort or promote) and returns what the driver must do (set the weight,
//! measure, move an alias, announce the end). No clock, no I/O: the driver
//! (`server/rollouts.rs`) persists the state after every change, so a restarted server goes
//! on where it was, and `tests.rs` checks its properties on random inputs.

use serde::{Deserialize, Serialize};

use super::spec::{Analysis, MetricCheck, Pause, Strategy};

/// A comparison in a condition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

/// `value <op> bound`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cond {
    pub op: Op,
    pub bound: f64,
}

impl Cond {
    pub fn holds(&self, v: f64) -> bool {
        match self.op {
            Op::Lt => v < self.bound,
            Op::Le => v <= self.bound,
            Op::Gt => v > self.bound,
            Op::Ge => v >= self.bound,
        }
    }

    /// `<= 0.01`, `>0.5`.
    pub fn parse(text: &str) -> Result<Cond, String> {
        let t = text.trim();
        let (op, rest) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
            .into_iter()
            .find_map(|(s, op)| t.strip_prefix(s).map(|r| (op, r)))
            .ok_or_else(|| format!("`{text}` is not a condition (write `<= 0.01`, `> 0.5`, ...)"))?;
        let bound: f64 =
            rest.trim().parse().map_err(|_| format!("`{text}`: `{}` is not a number", rest.trim()))?;
        if !bound.is_finite() {
            return Err(format!("`{text}`: the bound must be finite"));
        }
        Ok(Cond { op, bound })
    }
}

/// One metric's success and failure conditions (either may be absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub metric: String,
    pub success: Vec<Cond>,
    pub failure: Vec<Cond>,
}

/// The verdict of a measurement, or of an analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Successful,
    Failed,
    Inconclusive,
}

impl Check {
    pub fn judge(&self, value: Option<f64>) -> Verdict {
        let Some(v) = value.filter(|v| v.is_finite()) else { return Verdict::Inconclusive };
        if !self.failure.is_empty() && self.failure.iter().any(|c| c.holds(v)) {
            return Verdict::Failed;
        }
        if self.success.iter().all(|c| c.holds(v)) && !self.success.is_empty() {
            return Verdict::Successful;
        }
        if self.success.is_empty() && !self.failure.is_empty() {
            // Only a failure condition: anything else succeeds.
            return Verdict::Successful;
        }
        Verdict::Inconclusive
    }
}

/// An analysis, made ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisPlan {
    pub checks: Vec<Check>,
    pub interval_ms: i64,
    pub count: u32,
    pub failure_limit: u32,
}

/// One stage of a rollout's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The candidate's share of the traffic, in percent.
    Weight(u32),
    /// Wait this long (ms), or (none) until resumed.
    Pause(Option<i64>),
    Analysis(AnalysisPlan),
    /// Blue-green: the candidate takes the preview alias.
    Preview(String),
    /// Blue-green: wait for a person to promote.
    AwaitPromotion,
    /// Blue-green: the alias moves to the candidate at once.
    Switch,
}

fn check_of(m: &MetricCheck) -> Result<Check, String> {
    let name = m.metric.trim();
    let known = ["error_rate", "latency_p50", "latency_p99", "psi", "accuracy", "auc", "requests"];
    if !known.contains(&name) && name.strip_prefix("version.").is_none_or(|k| k.is_empty()) {
        return Err(format!("`{name}` is not a rollout metric ({}, or version.<key>)", known.join(", ")));
    }
    let mut success = Vec::new();
    let mut failure = Vec::new();
    if let Some(min) = m.min {
        success.push(Cond { op: Op::Ge, bound: min });
        failure.push(Cond { op: Op::Lt, bound: min });
    }
    if let Some(max) = m.max {
        success.push(Cond { op: Op::Le, bound: max });
        failure.push(Cond { op: Op::Gt, bound: max });
    }
    if let Some(s) = &m.success {
        success.push(Cond::parse(s)?);
    }
    if let Some(f) = &m.failure {
        failure.push(Cond::parse(f)?);
    }
    if success.is_empty() && failure.is_empty() {
        return Err(format!("metric `{name}` needs `min`, `max`, `success` or `failure`"));
    }
    if [m.min, m.max].iter().flatten().any(|b| !b.is_finite()) {
        return Err(format!("metric `{name}`: bounds must be finite"));
    }
    Ok(Check { metric: name.to_string(), success, failure })
}

fn analysis_of(a: &Analysis) -> Result<AnalysisPlan, String> {
    let mut checks = Vec::new();
    if let Some(metric) = &a.metric {
        checks.push(check_of(&MetricCheck {
            metric: metric.clone(),
            min: a.min,
            max: a.max,
            success: None,
            failure: None,
        })?);
    } else if a.min.is_some() || a.max.is_some() {
        return Err("`min` and `max` of an analysis go with its `metric`".into());
    }
    for m in &a.metrics {
        checks.push(check_of(m)?);
    }
    if checks.is_empty() {
        return Err("an analysis needs a `metric` or `metrics`".into());
    }
    if a.interval.is_some_and(|d| d.0 > MAX_WAIT || d.0.is_zero()) {
        return Err("an analysis's `interval` is more than 0 and at most 30 days".into());
    }
    let count = a.count.unwrap_or(1);
    if count > 10_000 {
        return Err("an analysis's `count` is at most 10000".into());
    }
    if count == 0 {
        return Err("an analysis's `count` must be at least 1".into());
    }
    Ok(AnalysisPlan {
        checks,
        interval_ms: a.interval.map_or(30_000, |d| d.0.as_millis() as i64),
        count,
        failure_limit: a.failure_limit.unwrap_or(0),
    })
}

/// The preview alias of a blue-green strategy, which must differ from the alias it rolls onto.
pub fn check_preview(strategy: &Strategy, alias: &str) -> Result<(), String> {
    match &strategy.blue_green {
        Some(b) if b.preview.as_deref().unwrap_or("preview") == alias => {
            Err(format!("the preview alias must differ from the alias rolled onto (`{alias}`)"))
        }
        _ => Ok(()),
    }
}

/// The longest pause or analysis interval.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// One canary step as a stage, or why it cannot run.
pub fn canary_step(s: &super::spec::CanaryStep) -> Result<Stage, String> {
    match (s.weight, &s.pause, &s.analysis) {
        (Some(w), None, None) if w <= 100 => Ok(Stage::Weight(w)),
        (Some(w), None, None) => Err(format!("weight {w} is over 100")),
        (None, Some(Pause::For(d)), None) if d.0 <= MAX_WAIT => {
            Ok(Stage::Pause(Some(d.0.as_millis() as i64)))
        }
        (None, Some(Pause::For(_)), None) => Err("a pause is at most 30 days".into()),
        (None, Some(Pause::UntilResumed(m)), None) if m.is_empty() => Ok(Stage::Pause(None)),
        (None, Some(Pause::UntilResumed(_)), None) => Err("a pause is a duration (`10m`) or `{}`".into()),
        (None, None, Some(a)) => analysis_of(a).map(Stage::Analysis),
        _ => Err("a step needs exactly one of `weight`, `pause`, `analysis`".into()),
    }
}

/// The stages of a strategy, or why it does not make sense.
pub fn plan(strategy: &Strategy) -> Result<Vec<Stage>, String> {
    match (&strategy.canary, &strategy.blue_green) {
        (Some(c), None) => {
            if c.steps.is_empty() {
                return Err("a canary needs at least one step".into());
            }
            c.steps
                .iter()
                .enumerate()
                .map(|(i, s)| canary_step(s).map_err(|e| format!("steps[{i}]: {e}")))
                .collect()
        }
        (None, Some(b)) => {
            let preview = b.preview.clone().unwrap_or_else(|| "preview".into());
            crate::registry::check_alias(&preview).map_err(|e| format!("preview: {e}"))?;
            let mut stages = vec![Stage::Preview(preview)];
            if let Some(a) = &b.pre_promotion {
                stages.push(Stage::Analysis(analysis_of(a).map_err(|e| format!("pre_promotion: {e}"))?));
            }
            if !b.auto_promote {
                stages.push(Stage::AwaitPromotion);
            }
            stages.push(Stage::Switch);
            if let Some(a) = &b.post_promotion {
                stages.push(Stage::Analysis(analysis_of(a).map_err(|e| format!("post_promotion: {e}"))?));
            }
            Ok(stages)
        }
        _ => Err("a strategy is exactly one of `canary` and `blue_green`".into()),
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    Progressing,
    Paused { reason: String },
    Succeeded,
    Aborted { reason: String },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused { .. } => "paused",
            Phase::Succeeded => "succeeded",
            Phase::Aborted { .. } => "aborted",
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Aborted { .. })
    }
}

/// The analysis in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Running {
    pub taken: u32,
    pub failed: u32,
    /// A measurement was asked for and not answered yet.
    pub waiting: bool,
    pub next_at: i64,
}

/// One measurement, kept with the rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub stage: usize,
    pub at: i64,
    pub values: Vec<(String, Option<f64>)>,
    pub verdict: Verdict,
}

/// What happens to a rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Tick,
    /// The values of the metrics the last `Measure` asked for.
    Measured(Vec<(String, Option<f64>)>),
    Pause(String),
    Resume,
    Abort(String),
    /// Skip what remains: the candidate takes the alias (a person's decision).
    Promote,
}

/// What the driver does.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The candidate's share of the traffic changed.
    Weight(u32),
    /// Measure these metrics now and answer with `Input::Measured`.
    Measure(Vec<String>),
    /// Point `alias` at a version (none: remove it).
    MoveAlias { alias: String, to: Option<u64>, reason: String },
    /// The rollout ended.
    Finished { succeeded: bool, reason: String },
}

/// A rollout of a candidate version onto an alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub v: u32,
    pub id: u64,
    pub model: String,
    pub alias: String,
    pub candidate: u64,
    /// The version the alias pointed at when the rollout began.
    pub stable: Option<u64>,
    pub stages: Vec<Stage>,
    /// The stage in progress (== stages.len() once all passed).
    pub stage: usize,
    #[serde(flatten)]
    pub phase: Phase,
    pub weight: u32,
    pub started: i64,
    pub updated: i64,
    /// When a timed pause ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<Running>,
    #[serde(default)]
    pub measurements: Vec<Measurement>,
    /// Blue-green: the alias was switched to the candidate.
    #[serde(default)]
    pub switched: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_by: Option<super::spec::RouteBy>,
    /// Who or what started it (`pipeline:churn#12.rollout`, `token:alice`).
    pub by: String,
    /// Whether its alias moves may move a protected alias (decided when it started).
    #[serde(default)]
    pub may_move_protected: bool,
}

/// Measurements kept per rollout (the oldest are dropped).
const KEPT: usize = 500;

impl Rollout {
    /// A rollout of `candidate` onto `model@alias`, which pointed at `stable`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        model: &str,
        alias: &str,
        candidate: u64,
        stable: Option<u64>,
        stages: Vec<Stage>,
        now: i64,
        by: &str,
    ) -> Self {
        Rollout {
            v: 1,
            id,
            model: model.into(),
            alias: alias.into(),
            candidate,
            stable,
            stages,
            stage: 0,
            phase: Phase::Progressing,
            weight: 0,
            started: now,
            updated: now,
            until: None,
            running: None,
            measurements: Vec::new(),
            switched: false,
            route_by: None,
            by: by.into(),
            may_move_protected: false,
        }
    }

    /// The candidate's share of the traffic, in percent, while the rollout runs: its weight,
    /// or all of it once a blue-green rollout switched.
    pub fn candidate_share(&self) -> u32 {
        if self.switched { 100 } else { self.weight }
    }

    /// When the driver should tick it next (a pause's end, the next measurement).
    pub fn wake_at(&self) -> Option<i64> {
        if self.phase != Phase::Progressing {
            return None;
        }
        match self.stages.get(self.stage) {
            Some(Stage::Pause(Some(_))) => self.until,
            Some(Stage::Analysis(_)) => self.running.as_ref().filter(|r| !r.waiting).map(|r| r.next_at),
            _ => None,
        }
    }

    /// Applies one input at `now`; returns what the driver must do, in order.
    pub fn apply(&mut self, now: i64, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.phase.is_done() {
            return out;
        }
        self.updated = now.max(self.updated);
        match input {
            Input::Tick => {}
            Input::Measured(values) => {
                let Some(Stage::Analysis(plan)) = self.stages.get(self.stage).cloned() else { return out };
                let Some(run) = self.running.as_mut().filter(|r| r.waiting) else { return out };
                run.waiting = false;
                run.taken += 1;
                let verdicts: Vec<Verdict> = plan
                    .checks
                    .iter()
                    .map(|c| c.judge(values.iter().find(|(k, _)| *k == c.metric).and_then(|(_, v)| *v)))
                    .collect();
                let verdict = if verdicts.contains(&Verdict::Failed) {
                    Verdict::Failed
                } else if verdicts.contains(&Verdict::Inconclusive) {
                    Verdict::Inconclusive
                } else {
                    Verdict::Successful
                };
                if verdict == Verdict::Failed {
                    run.failed += 1;
                }
                let (failed, taken) = (run.failed, run.taken);
                run.next_at = now.saturating_add(plan.interval_ms);
                let shown = values
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.map_or("none".into(), |v| format!("{v:.4}"))))
                    .collect::<Vec<_>>()
                    .join(", ");
                self.measurements.push(Measurement { stage: self.stage, at: now, values, verdict });
                if self.measurements.len() > KEPT {
                    self.measurements.remove(0);
                }
                if failed > plan.failure_limit {
                    return self.abort(now, format!("analysis at step {} failed: {shown}", self.stage), out);
                }
                if verdict == Verdict::Inconclusive {
                    self.phase = Phase::Paused {
                        reason: format!("analysis at step {} inconclusive: {shown}", self.stage),
                    };
                    return out;
                }
                if taken >= plan.count {
                    self.running = None;
                    self.stage += 1;
                }
            }
            Input::Pause(reason) => {
                self.phase = Phase::Paused { reason };
                return out;
            }
            Input::Resume => {
                if let Phase::Paused { .. } = self.phase {
                    self.phase = Phase::Progressing;
                    match self.stages.get(self.stage) {
                        // A person's resume ends an open-ended pause, and passes an
                        // awaited promotion.
                        Some(Stage::Pause(None)) | Some(Stage::AwaitPromotion) => self.stage += 1,
                        // After an inconclusive measurement: it counts as taken.
                        Some(Stage::Analysis(plan)) => {
                            if let Some(r) = &self.running
                                && r.taken >= plan.count
                            {
                                self.running = None;
                                self.stage += 1;
                            }
                        }
                        _ => {}
                    }
                }
            }
            Input::Abort(reason) => return self.abort(now, reason, out),
            Input::Promote => {
                // Everything that remains is skipped; the candidate takes the alias.
                self.phase = Phase::Progressing;
                self.running = None;
                self.until = None;
                self.stage = self.stages.len();
            }
        }
        self.advance(now, &mut out);
        out
    }

    /// A move of `alias` the driver could not make (the registry refused it). Before the end,
    /// the rollout aborts; when it was the final move of a success, the success is taken
    /// back: the rollout aborted, nothing to the candidate.
    pub fn alias_failed(&mut self, now: i64, alias: &str, reason: String) -> Vec<Effect> {
        match self.phase {
            Phase::Succeeded if alias == self.alias => {
                self.phase = Phase::Progressing;
                self.switched = false;
                self.abort(now, reason, Vec::new())
            }
            Phase::Succeeded | Phase::Aborted { .. } => Vec::new(),
            _ => {
                if alias == self.alias {
                    // The alias never moved.
                    self.switched = false;
                }
                self.abort(now, reason, Vec::new())
            }
        }
    }

    fn abort(&mut self, now: i64, reason: String, mut out: Vec<Effect>) -> Vec<Effect> {
        self.running = None;
        self.until = None;
        if self.weight != 0 {
            self.weight = 0;
            out.push(Effect::Weight(0));
        }
        if self.switched {
            // Blue-green after the switch: back to the stable version at once.
            out.push(Effect::MoveAlias {
                alias: self.alias.clone(),
                to: self.stable,
                reason: format!("rollout {} aborted: {reason}", self.id),
            });
            self.switched = false;
        }
        self.phase = Phase::Aborted { reason: reason.clone() };
        self.updated = now.max(self.updated);
        out.push(Effect::Finished { succeeded: false, reason });
        out
    }

    /// Goes through every stage it can pass now.
    fn advance(&mut self, now: i64, out: &mut Vec<Effect>) {
        while self.phase == Phase::Progressing {
            let Some(stage) = self.stages.get(self.stage).cloned() else {
                // Every stage passed: the candidate takes the alias.
                if !self.switched {
                    out.push(Effect::MoveAlias {
                        alias: self.alias.clone(),
                        to: Some(self.candidate),
                        reason: format!("rollout {} succeeded", self.id),
                    });
                    self.switched = true;
                }
                if self.weight != 100 {
                    self.weight = 100;
                    out.push(Effect::Weight(100));
                }
                self.phase = Phase::Succeeded;
                out.push(Effect::Finished {
                    succeeded: true,
                    reason: format!("version {} took `{}`", self.candidate, self.alias),
                });
                return;
            };
            match stage {
                Stage::Weight(w) => {
                    if self.weight != w {
                        self.weight = w;
                        out.push(Effect::Weight(w));
                    }
                    self.stage += 1;
                }
                Stage::Pause(None) => {
                    self.phase = Phase::Paused {
                        reason: format!("step {} waits for `sluice rollout resume`", self.stage),
                    };
                }
                Stage::Pause(Some(ms)) => {
                    let until = *self.until.get_or_insert(now.saturating_add(ms));
                    if now >= until {
                        self.until = None;
                        self.stage += 1;
                    } else {
                        return;
                    }
                }
                Stage::Analysis(plan) => {
                    // The first measurement comes one interval in: traffic has reached the
                    // candidate by then.
                    let run = self.running.get_or_insert(Running {
                        next_at: now.saturating_add(plan.interval_ms),
                        ..Running::default()
                    });
                    if run.waiting || now < run.next_at {
                        return;
                    }
                    run.waiting = true;
                    out.push(Effect::Measure(plan.checks.iter().map(|c| c.metric.clone()).collect()));
                    return;
                }
                Stage::Preview(alias) => {
                    out.push(Effect::MoveAlias {
                        alias,
                        to: Some(self.candidate),
                        reason: format!("rollout {}: the candidate's preview", self.id),
                    });
                    self.stage += 1;
                }
                Stage::AwaitPromotion => {
                    self.phase = Phase::Paused { reason: "waits for a person: `sluice rollout resume` switches and runs the post-promotion analysis, `promote` switches and ends".into() };
                }
                Stage::Switch => {
                    out.push(Effect::MoveAlias {
                        alias: self.alias.clone(),
                        to: Some(self.candidate),
                        reason: format!("rollout {}: switched to the candidate", self.id),
                    });
                    self.switched = true;
                    self.stage += 1;
                }
            }
        }
    }
}
