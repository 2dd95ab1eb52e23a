//! Live drift monitors (`monitor:` in a pipeline): every interval, the window of a model's
//! most recent served inputs is compared with the training data its version was registered
//! with (the quantiles per feature the `train:` step kept), with the tests of a `drift:`
//! step. Drift becomes a `sluice.drift` event (the inbox, `on: - drift:`, cooldown and dedup
//! of alerts) and, where a monitor names an Alertmanager, an alert posted to it, whose
//! webhook can come back to start a retraining.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::Shared;
use crate::drift::{Options, Table};
use crate::spec::MonitorSpec;
use crate::trigger::events::DRIFT_SOURCE;

const TICK: Duration = Duration::from_secs(1);
const DEFAULT_WINDOW: u32 = 500;
const DEFAULT_INTERVAL_MS: i64 = 60_000;
const DEFAULT_COOLDOWN_MS: i64 = 3_600_000;
/// The alert a monitor posts to Alertmanager.
pub(crate) const ALERT_NAME: &str = "SluiceModelDrift";

/// What a monitor remembers between checks.
#[derive(Debug, Default, Clone)]
struct Watch {
    last_check: i64,
    /// When drift was last said.
    said: Option<i64>,
}

pub(super) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<u32>) {
    let mut watches: HashMap<(String, String), Watch> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
        let now = shared.engine.now_ms();
        let catalog = shared.catalog();
        for (pipeline, entry) in &catalog.pipelines {
            for m in &entry.plan.spec.monitor {
                let key = (pipeline.clone(), m.model.clone());
                let w = watches.entry(key).or_default();
                let interval = m.interval.map_or(DEFAULT_INTERVAL_MS, |d| d.0.as_millis() as i64);
                if now - w.last_check < interval {
                    continue;
                }
                w.last_check = now;
                let (s, spec) = (shared.clone(), m.clone());
                let Ok(Some(report)) = tokio::task::spawn_blocking(move || check(&s, &spec)).await else {
                    continue;
                };
                // Said at most once a cooldown, even when the verdict flaps.
                if report["drifted"] != true {
                    continue;
                }
                let cooldown = m.cooldown.map_or(DEFAULT_COOLDOWN_MS, |d| d.0.as_millis() as i64);
                if w.said.is_some_and(|at| now - at < cooldown) {
                    continue;
                }
                w.said = Some(now);
                say(&shared, m, &report, now).await;
            }
        }
    }
}

/// One check: the report, or none when there is nothing to compare yet.
fn check(shared: &Shared, m: &MonitorSpec) -> Option<Value> {
    let alias = m.alias.as_deref().unwrap_or(crate::serving::SERVED_ALIAS);
    let version = shared.engine.store().alias(&m.model, alias).ok()??;
    let loaded = match shared.serving.load(&m.model, version) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(model = %m.model, version, error = %e, "the drift monitor cannot load the served version");
            return None;
        }
    };
    let features = &loaded.model.features;
    let Some(reference) = &loaded.model.reference else {
        shared.serving.set_drift(&m.model, json!({ "model": m.model, "version": version, "error": "the version keeps no training quantiles to compare with (it was not trained by a `train:` step of this Sluice)" }));
        return None;
    };
    let window = m.window.unwrap_or(DEFAULT_WINDOW) as usize;
    let rows = shared.serving.recent_rows(&m.model, version, window)?;
    let column = |j: usize, rows: &[Vec<f32>]| rows.iter().map(|r| r[j] as f64).collect::<Vec<f64>>();
    let reference = Table::numeric(
        features
            .iter()
            .zip(reference)
            .map(|(f, q)| (f.clone(), q.iter().map(|x| *x as f64).collect()))
            .collect(),
    );
    let current =
        Table::numeric(features.iter().enumerate().map(|(j, f)| (f.clone(), column(j, &rows))).collect());
    let opts = Options {
        columns: Vec::new(),
        method: m.method,
        threshold: m.threshold,
        drift_share: m.drift_share.unwrap_or(0.5),
    };
    let report = match crate::drift::compare(&reference, &current, &opts) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(model = %m.model, error = %e, "the drift monitor cannot compare");
            return None;
        }
    };
    for c in &report.columns {
        crate::metrics::drift(&m.model, &c.column, c.method, c.statistic, c.drifted);
    }
    crate::metrics::drift_share(&m.model, report.share);
    let columns: Vec<Value> = report
        .columns
        .iter()
        .map(|c| json!({ "column": c.column, "method": c.method, "statistic": c.statistic, "p_value": c.p_value, "drifted": c.drifted }))
        .collect();
    let doc = json!({
        "model": m.model,
        "alias": alias,
        "version": version,
        "window": window,
        "method": report.method,
        "share": report.share,
        "drift_share": report.drift_share,
        "drifted": report.drifted,
        "drifted_columns": report.drifted_columns,
        "columns": columns,
        "at": shared.engine.now_ms(),
    });
    shared.serving.set_drift(&m.model, doc.clone());
    Some(doc)
}

/// Says that a model drifted: an event, and an alert where the monitor names an Alertmanager.
async fn say(shared: &Arc<Shared>, m: &MonitorSpec, report: &Value, now: i64) {
    tracing::warn!(model = %m.model, share = %report["share"], columns = %report["drifted_columns"], "a served model's inputs drifted");
    let mut payload = report.clone();
    payload["drifted_columns"] = json!(
        report["drifted_columns"]
            .as_array()
            .map(|c| c.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    );
    let s = shared.clone();
    let event = payload.clone();
    match tokio::task::spawn_blocking(move || s.announce(DRIFT_SOURCE, &event)).await {
        Ok(Err(e)) => tracing::error!(model = %m.model, error = %e, "cannot record the drift as an event"),
        Err(e) => tracing::error!(model = %m.model, error = %e, "recording the drift crashed"),
        Ok(Ok(_)) => {}
    }
    let Some(url) = &m.alertmanager else { return };
    let at = chrono::DateTime::from_timestamp_millis(now).map(|t| t.to_rfc3339()).unwrap_or_default();
    let alert = json!([{
        "labels": {
            "alertname": ALERT_NAME,
            "model": m.model,
            "alias": payload["alias"],
            "version": payload["version"].to_string(),
            "severity": "warning",
        },
        "annotations": {
            "summary": format!("the inputs of {} drifted: {}", m.model, payload["drifted_columns"].as_str().unwrap_or("")),
            "drifted_columns": payload["drifted_columns"],
            "share": payload["share"].to_string(),
            "method": payload["method"],
        },
        "startsAt": at,
    }]);
    let target = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
    let Ok(uri) = target.parse::<hyper::Uri>() else {
        tracing::error!(%target, "the monitor's Alertmanager URL does not parse");
        return;
    };
    if let Err(e) =
        crate::driver::outbound::post_json(&uri, serde_json::to_vec(&alert).unwrap_or_default()).await
    {
        tracing::error!(model = %m.model, error = %e, "cannot post the drift alert to Alertmanager");
    }
}
