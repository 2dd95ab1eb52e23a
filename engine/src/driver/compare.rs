//! Pipeline runs as experiments: their metrics (each key's newest value across the run's
//! steps, and `<step>.<key>` for one step's), searched and ordered with MLflow's grammar
//! (`metrics.auc > 0.9 and params.lr = '0.01'`, `metrics.auc DESC`), and compared side by side.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Engine, Result};
use crate::store::RunRecord;
use crate::tracking::search::{self, Filter, Kind, OrderKey, SearchError, Searchable};
use crate::tracking::{Latest, param_text};

/// What a run filter may name besides metrics, params and tags.
pub const RUN_ATTRIBUTES: &[(&str, Kind)] = &[
    ("run_id", Kind::Number),
    ("pipeline", Kind::Text),
    ("status", Kind::Text),
    ("state", Kind::Text),
    ("trigger", Kind::Text),
    ("actor", Kind::Text),
    ("start_time", Kind::Number),
    ("end_time", Kind::Number),
    ("duration", Kind::Number),
];

/// A parsed run search: the filter and the order.
pub struct RunSearch {
    filter: Filter,
    order: Vec<OrderKey>,
}

impl RunSearch {
    /// Parses a filter and an order (either may be empty); errors name their column.
    pub fn parse(filter: &str, order_by: &str) -> std::result::Result<RunSearch, (String, SearchError)> {
        let f = Filter::parse(filter, RUN_ATTRIBUTES).map_err(|e| ("filter".to_string(), e))?;
        let order =
            search::parse_order_by(order_by, RUN_ATTRIBUTES).map_err(|e| ("order-by".to_string(), e))?;
        Ok(RunSearch { filter: f, order })
    }

    fn needs_metrics(&self) -> bool {
        fn uses(f: &Filter) -> bool {
            match f {
                Filter::All => false,
                Filter::Cmp(c) => matches!(c.field, search::Field::Metric(_)),
                Filter::And(fs) | Filter::Or(fs) => fs.iter().any(uses),
            }
        }
        uses(&self.filter) || self.order.iter().any(|k| matches!(k.field, search::Field::Metric(_)))
    }
}

struct Searched<'a> {
    run: &'a RunRecord,
    params: BTreeMap<String, String>,
    metrics: BTreeMap<String, f64>,
}

impl Searchable for Searched<'_> {
    fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).copied()
    }
    fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.run.tags.get(key).map(String::as_str)
    }
    fn attribute(&self, name: &str) -> Option<search::Value<'_>> {
        use search::Value::{Number, Text};
        let r = self.run;
        Some(match name {
            "run_id" => Number(r.id as f64),
            "pipeline" => Text(r.pipeline.as_str().into()),
            "status" | "state" => Text(r.state.as_str().into()),
            "trigger" => Text(r.trigger.as_str().into()),
            "actor" => Text(r.actor.as_deref()?.into()),
            "start_time" => Number(r.started_at? as f64),
            "end_time" => Number(r.finished_at? as f64),
            "duration" => Number((r.finished_at? - r.started_at?) as f64),
            _ => return None,
        })
    }
}

impl Engine {
    /// Sets tags of a run (an empty value removes one), audited; returns its tags. Kept apart
    /// from the run's record, which the driver rewrites as the run moves.
    pub fn set_run_tags(
        &self,
        run: u64,
        tags: BTreeMap<String, String>,
        actor: &str,
        request: Option<&str>,
    ) -> Result<BTreeMap<String, String>> {
        let before = self.store.run_tags(&self.store.run(run)?)?;
        let after = self.store.set_run_tags(run, tags)?;
        self.store.audit(
            crate::security::audit::Action::new(actor, "run.tag", format!("run:{run}"))
                .before(json!(before))
                .after(json!(after))
                .request(request),
            self.now_ms(),
        )?;
        self.store.flush()?;
        Ok(after)
    }

    /// Runs with their tags as they are now (those set since they started included).
    pub fn with_tags(&self, mut runs: Vec<RunRecord>) -> Result<Vec<RunRecord>> {
        for r in &mut runs {
            r.tags = self.store.run_tags(r)?;
        }
        Ok(runs)
    }

    /// A run's metrics: each key's newest value across its steps (MLflow's rule: greatest
    /// step, then time), and `<step>.<key>` for each step's own.
    pub fn run_metric_values(&self, run: u64) -> Result<BTreeMap<String, f64>> {
        let mut newest: BTreeMap<String, Latest> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for r in self.store.task_runs(run, None)? {
            let step = r.task.as_ref().map(|t| t.step.clone()).unwrap_or_default();
            for (k, l) in &r.metrics {
                out.insert(format!("{step}.{k}"), l.value);
                match newest.get(k) {
                    Some(old) if !l.supersedes(old) => {}
                    _ => {
                        newest.insert(k.clone(), *l);
                    }
                }
            }
        }
        out.extend(newest.into_iter().map(|(k, l)| (k, l.value)));
        Ok(out)
    }

    /// The runs that match `search`, in its order (newest first where it says nothing).
    pub fn search_runs(&self, runs: Vec<RunRecord>, search: &RunSearch) -> Result<Vec<RunRecord>> {
        let runs = self.with_tags(runs)?;
        let metrics = search.needs_metrics();
        let mut found = Vec::new();
        for r in &runs {
            let s = Searched {
                run: r,
                params: r.params.iter().map(|(k, v)| (k.clone(), param_text(v))).collect(),
                metrics: if metrics { self.run_metric_values(r.id)? } else { BTreeMap::new() },
            };
            if search.filter.matches(&s) {
                found.push(s);
            }
        }
        found.sort_by(|a, b| search::compare(a, b, &search.order).then(b.run.id.cmp(&a.run.id)));
        Ok(found.into_iter().map(|s| s.run.clone()).collect())
    }

    /// Runs side by side: their params (the ones that differ marked), metrics (the best of
    /// each marked: lowest for losses and errors, else highest) and step durations.
    pub fn compare_doc(&self, ids: &[u64]) -> Result<Value> {
        let mut runs = Vec::new();
        let mut metrics = Vec::new();
        let mut reports = Vec::new();
        for id in ids {
            let mut r = self.store.run(*id)?;
            r.tags = self.store.run_tags(&r)?;
            metrics.push(self.run_metric_values(*id)?);
            reports.push(self.report(*id)?);
            runs.push(r);
        }
        let head: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "pipeline": r.pipeline,
                    "state": r.state,
                    "trigger": r.trigger.as_str(),
                    "duration_ms": r.started_at.zip(r.finished_at).map(|(s, f)| f - s),
                    "tags": r.tags,
                })
            })
            .collect();
        let keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.params.keys()).collect();
        let params: Vec<Value> = keys
            .into_iter()
            .map(|k| {
                let values: Vec<Option<String>> =
                    runs.iter().map(|r| r.params.get(k).map(param_text)).collect();
                let differs = values.iter().collect::<BTreeSet<_>>().len() > 1;
                json!({ "key": k, "values": values, "differs": differs })
            })
            .collect();
        // Plain keys first (each run's newest value), then per step.
        let mut keys: Vec<&String> =
            metrics.iter().flat_map(|m| m.keys()).collect::<BTreeSet<_>>().into_iter().collect();
        keys.sort_by_key(|k| (k.contains('.'), k.to_string()));
        let metric_rows: Vec<Value> = keys
            .into_iter()
            .map(|k| {
                let values: Vec<Option<f64>> = metrics.iter().map(|m| m.get(k).copied()).collect();
                let lower = lower_is_better(k);
                let best = values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| (i, v)))
                    .reduce(|a, b| if (lower && b.1 < a.1) || (!lower && b.1 > a.1) { b } else { a })
                    .map(|(i, _)| i);
                json!({ "key": k, "values": values, "best": best, "direction": if lower { "min" } else { "max" } })
            })
            .collect();
        let steps: BTreeSet<&String> = reports.iter().flat_map(|r| r.steps.iter().map(|s| &s.id)).collect();
        let step_rows: Vec<Value> = steps
            .into_iter()
            .map(|id| {
                let durations: Vec<Option<i64>> = reports
                    .iter()
                    .map(|r| r.steps.iter().find(|s| &s.id == id).and_then(|s| s.duration_ms))
                    .collect();
                json!({ "step": id, "duration_ms": durations })
            })
            .collect();
        Ok(json!({ "v": 1, "runs": head, "params": params, "metrics": metric_rows, "steps": step_rows }))
    }
}

/// Whether a metric is better low: losses, errors, latencies.
pub fn lower_is_better(key: &str) -> bool {
    let k = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    ["loss", "error", "err", "mse", "mae", "rmse", "latency", "time", "duration", "perplexity"]
        .iter()
        .any(|w| k.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_and_errors_are_better_low() {
        assert!(lower_is_better("val_loss"));
        assert!(lower_is_better("train.rmse"));
        assert!(lower_is_better("p99_latency_ms"));
        assert!(!lower_is_better("auc"));
        assert!(!lower_is_better("mlp.accuracy"));
    }

    #[test]
    fn searches_parse_or_say_where() {
        assert!(
            RunSearch::parse("metrics.auc > 0.9 and attributes.pipeline = 'x'", "metrics.auc DESC").is_ok()
        );
        let (what, e) = RunSearch::parse("", "metrics.auc upward").err().unwrap();
        assert_eq!((what.as_str(), e.column), ("order-by", 13));
        let (what, e) = RunSearch::parse("attributes.colour = 'x'", "").err().unwrap();
        assert_eq!(what, "filter");
        assert!(e.message.contains("no attribute `colour`"), "{e}");
    }
}
