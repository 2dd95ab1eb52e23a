//! Every metric Sluice exports, named, described and bucketed here once; `sluice serve`
//! renders them at `GET /metrics` in Prometheus' text format.
//!
//! Recording goes through the `metrics` facade, so that the driver, the step cache and the
//! serving path record where things happen without a registry handed down through every
//! layer; `metrics-exporter-prometheus` keeps the values and writes the text (without its
//! own HTTP listener: the API serves it, behind a token like every other route), and
//! `metrics-process` adds the standard `process_*` metrics. Without an installed recorder
//! (`sluice run`, most tests) every call here does nothing.
//!
//! Label values are bounded: pipeline names (the folder's pipelines), step kinds, outcomes,
//! route templates (never a path with a run id in it), event sources the server knows,
//! models and the versions being served, features of a model. No run id, step id or
//! request id is ever a label.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const RUNS: &str = "sluice_runs_total";
const RUNS_FINISHED: &str = "sluice_runs_finished_total";
const RUN_SECONDS: &str = "sluice_run_duration_seconds";
const ATTEMPTS: &str = "sluice_attempts_total";
const STEP_SECONDS: &str = "sluice_step_duration_seconds";
const QUEUED: &str = "sluice_tasks_queued";
const RUNNING: &str = "sluice_tasks_running";
const ADMISSION_SECONDS: &str = "sluice_admission_wait_seconds";
const EVENTS: &str = "sluice_events_total";
const HTTP: &str = "sluice_http_requests_total";
const HTTP_SECONDS: &str = "sluice_http_request_duration_seconds";
const CACHE: &str = "sluice_cache_lookups_total";
const PREDICTIONS: &str = "sluice_predictions_total";
const PREDICTED_ROWS: &str = "sluice_predicted_rows_total";
const PREDICT_SECONDS: &str = "sluice_predict_duration_seconds";
const DRIFT: &str = "sluice_drift_statistic";
const DRIFTED: &str = "sluice_drift_detected";
const DRIFT_SHARE: &str = "sluice_drift_share";
const ROLLOUT_WEIGHT: &str = "sluice_rollout_weight_percent";
const PIPELINES: &str = "sluice_pipelines";
const BUILD: &str = "sluice_build_info";

/// Seconds a step or a run takes: from a cached step's milliseconds to a day's training.
const LONG: &[f64] =
    &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0];
/// Seconds a task waits for a slot.
const WAIT: &[f64] = &[0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0];
/// Seconds an API request takes until its answer's head.
const HTTP_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Seconds a prediction batch takes on the CPU.
const PREDICT: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// What a metric is: its type (a histogram with its buckets, always in seconds).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

/// A metric: its name, type and help text.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn def(name: &'static str, kind: Kind, help: &'static str) -> Def {
    Def { name, kind, help }
}

/// Every metric, once: the recorder's buckets, the help lines and the dashboard's check are
/// all read from here.
pub const DEFS: &[Def] = &[
    def(RUNS, Kind::Counter, "Runs started, by pipeline."),
    def(RUNS_FINISHED, Kind::Counter, "Runs that ended, by pipeline and final state."),
    def(
        RUN_SECONDS,
        Kind::Histogram(LONG),
        "How long runs took from start to end, by pipeline and final state.",
    ),
    def(ATTEMPTS, Kind::Counter, "Step attempts that ended, by step kind and outcome."),
    def(STEP_SECONDS, Kind::Histogram(LONG), "How long step attempts took, by step kind and outcome."),
    def(QUEUED, Kind::Gauge, "Tasks waiting for a slot (admission)."),
    def(RUNNING, Kind::Gauge, "Tasks holding a slot."),
    def(ADMISSION_SECONDS, Kind::Histogram(WAIT), "How long tasks waited for a slot."),
    def(EVENTS, Kind::Counter, "Events received, by source and what became of them."),
    def(HTTP, Kind::Counter, "API requests, by method, route template and status."),
    def(
        HTTP_SECONDS,
        Kind::Histogram(HTTP_BUCKETS),
        "API latency until the answer's head, by method and route template.",
    ),
    def(
        CACHE,
        Kind::Counter,
        "Step cache lookups, by result (hit, miss, expired, damaged, bypassed, unkeyed).",
    ),
    def(
        PREDICTIONS,
        Kind::Counter,
        "Prediction requests, by model, version and outcome (ok, invalid, failed).",
    ),
    def(PREDICTED_ROWS, Kind::Counter, "Rows predicted, by model and version."),
    def(
        PREDICT_SECONDS,
        Kind::Histogram(PREDICT),
        "How long prediction requests took, by model and version.",
    ),
    def(
        DRIFT,
        Kind::Gauge,
        "The last drift statistic a live monitor measured, by model, feature and method.",
    ),
    def(
        DRIFTED,
        Kind::Gauge,
        "Whether the live monitor found the feature drifted (1) or not (0), by model and feature.",
    ),
    def(DRIFT_SHARE, Kind::Gauge, "The share of a model's features the live monitor found drifted."),
    def(
        ROLLOUT_WEIGHT,
        Kind::Gauge,
        "The share of a model's traffic its running rollout sends to the candidate, in percent.",
    ),
    def(PIPELINES, Kind::Gauge, "Pipelines loaded from the DAG folder, by whether they are valid."),
    def(BUILD, Kind::Gauge, "Always 1; the label says which Sluice answers."),
];

/// The installed exporter: the handle that renders, and the process collector.
struct Exporter {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

static EXPORTER: OnceLock<Option<Exporter>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls are no-ops) and describes every
/// metric. Returns false when another recorder was installed first, in which case
/// [`render`] has nothing to say.
pub fn install() -> bool {
    EXPORTER
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for def in DEFS {
                if let Kind::Histogram(buckets) = def.kind {
                    builder = builder
                        .set_buckets_for_metric(Matcher::Full(def.name.to_string()), buckets)
                        .expect("the bucket lists are not empty");
                }
            }
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder; /metrics stays empty");
                    return None;
                }
            };
            describe();
            let process = metrics_process::Collector::default();
            process.describe();
            gauge!(BUILD, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(Exporter { handle, process })
        })
        .is_some()
}

/// The metrics in Prometheus' text format (empty without [`install`]).
pub fn render() -> String {
    match EXPORTER.get() {
        Some(Some(e)) => {
            e.process.collect();
            e.handle.render()
        }
        _ => String::new(),
    }
}

/// Drains histogram samples into their buckets; `serve` calls it every few seconds so that
/// memory stays bounded between scrapes.
pub fn upkeep() {
    if let Some(Some(e)) = EXPORTER.get() {
        e.handle.run_upkeep();
    }
}

fn describe() {
    for def in DEFS {
        match def.kind {
            Kind::Counter => describe_counter!(def.name, def.help),
            Kind::Gauge => describe_gauge!(def.name, def.help),
            Kind::Histogram(_) => describe_histogram!(def.name, Unit::Seconds, def.help),
        }
    }
}

/// A run started (it left the queue and runs its first steps).
pub fn run_started(pipeline: &str) {
    counter!(RUNS, "pipeline" => pipeline.to_string()).increment(1);
}

/// A run ended in `state`; `took` is from its start, when it started.
pub fn run_finished(pipeline: &str, state: &'static str, took: Option<Duration>) {
    counter!(RUNS_FINISHED, "pipeline" => pipeline.to_string(), "state" => state).increment(1);
    if let Some(took) = took {
        histogram!(RUN_SECONDS, "pipeline" => pipeline.to_string(), "state" => state)
            .record(took.as_secs_f64());
    }
}

/// A step attempt ended; `took` is from its start in this process, when it started here.
pub fn attempt_finished(kind: &'static str, outcome: &'static str, took: Option<Duration>) {
    counter!(ATTEMPTS, "kind" => kind, "outcome" => outcome).increment(1);
    if let Some(took) = took {
        histogram!(STEP_SECONDS, "kind" => kind, "outcome" => outcome).record(took.as_secs_f64());
    }
}

/// The admission queue after a batch.
pub fn tasks(queued: usize, running: u32) {
    gauge!(QUEUED).set(queued as f64);
    gauge!(RUNNING).set(f64::from(running));
}

/// A task got its slot after waiting `waited`.
pub fn admitted(waited: Duration) {
    histogram!(ADMISSION_SECONDS).record(waited.as_secs_f64());
}

/// An event arrived from `source` (a source the server knows, or `other`).
pub fn event(source: &str, outcome: &'static str) {
    counter!(EVENTS, "source" => source.to_string(), "outcome" => outcome).increment(1);
}

/// An API request was answered.
pub fn http(method: &str, route: &str, status: u16, took: Duration) {
    let method = match method {
        "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS" => method.to_string(),
        _ => "other".to_string(),
    };
    counter!(HTTP, "method" => method.clone(), "route" => route.to_string(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_SECONDS, "method" => method, "route" => route.to_string()).record(took.as_secs_f64());
}

/// A step cache lookup ended with `result`.
pub fn cache(result: &'static str) {
    counter!(CACHE, "result" => result).increment(1);
}

/// A prediction request was answered (`ok`, `invalid` input, or `failed`).
pub fn predicted(model: &str, version: u64, outcome: &'static str, rows: usize, took: Duration) {
    let version = version.to_string();
    counter!(PREDICTIONS, "model" => model.to_string(), "version" => version.clone(), "outcome" => outcome)
        .increment(1);
    if outcome == "ok" {
        counter!(PREDICTED_ROWS, "model" => model.to_string(), "version" => version.clone())
            .increment(rows as u64);
        histogram!(PREDICT_SECONDS, "model" => model.to_string(), "version" => version)
            .record(took.as_secs_f64());
    }
}

/// What a live monitor measured for one feature.
pub fn drift(model: &str, feature: &str, method: &str, statistic: f64, drifted: bool) {
    gauge!(DRIFT, "model" => model.to_string(), "feature" => feature.to_string(), "method" => method.to_string())
        .set(statistic);
    gauge!(DRIFTED, "model" => model.to_string(), "feature" => feature.to_string()).set(if drifted {
        1.0
    } else {
        0.0
    });
}

/// The share of a model's features found drifted.
pub fn drift_share(model: &str, share: f64) {
    gauge!(DRIFT_SHARE, "model" => model.to_string()).set(share);
}

/// The traffic a model's running rollout sends to its candidate, in percent (0 when no
/// rollout runs).
pub fn rollout_weight(model: &str, percent: u32) {
    gauge!(ROLLOUT_WEIGHT, "model" => model.to_string()).set(f64::from(percent));
}

/// The folder's pipelines, valid and not.
pub fn pipelines(valid: usize, invalid: usize) {
    gauge!(PIPELINES, "valid" => "true").set(valid as f64);
    gauge!(PIPELINES, "valid" => "false").set(invalid as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_drift_and_rollout_series_render_with_their_labels_and_buckets() {
        assert!(install());
        predicted("metrics-test-model", 3, "ok", 5, Duration::from_micros(700));
        predicted("metrics-test-model", 3, "invalid", 0, Duration::ZERO);
        drift("metrics-test-model", "tenure", "ks", 0.42, true);
        drift_share("metrics-test-model", 0.5);
        rollout_weight("metrics-test-model", 20);
        let text = render();
        for line in [
            "sluice_predictions_total{model=\"metrics-test-model\",version=\"3\",outcome=\"ok\"} 1",
            "sluice_predictions_total{model=\"metrics-test-model\",version=\"3\",outcome=\"invalid\"} 1",
            "sluice_predicted_rows_total{model=\"metrics-test-model\",version=\"3\"} 5",
            "sluice_predict_duration_seconds_bucket{model=\"metrics-test-model\",version=\"3\",le=\"0.001\"} 1",
            "sluice_predict_duration_seconds_bucket{model=\"metrics-test-model\",version=\"3\",le=\"0.0005\"} 0",
            "sluice_drift_statistic{model=\"metrics-test-model\",feature=\"tenure\",method=\"ks\"} 0.42",
            "sluice_drift_detected{model=\"metrics-test-model\",feature=\"tenure\"} 1",
            "sluice_drift_share{model=\"metrics-test-model\"} 0.5",
            "sluice_rollout_weight_percent{model=\"metrics-test-model\"} 20",
            "# TYPE sluice_predict_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
        assert!(text.contains("process_resident_memory_bytes"), "process metrics: {text}");
    }
}
