//! Events that start runs: Prometheus Alertmanager's webhook notifications (format version
//! 4) and generic JSON webhooks, matched against the pipelines' `on:` entries. Pure: which
//! pipelines an event starts, with which params and under which key; the server stores the
//! event and creates the runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::spec::{AlertMatch, AlertStatus, EventTrigger, Pipeline};
use crate::template;

/// How long notifications of one alert start one run, unless `cooldown` says otherwise.
pub const DEFAULT_COOLDOWN_MS: i64 = 3_600_000;

/// Whether an alert (or a whole notification) fires or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

impl std::fmt::Display for AlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AlertState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "firing" => Ok(AlertState::Firing),
            "resolved" => Ok(AlertState::Resolved),
            other => Err(serde::de::Error::custom(format!("status `{other}`, not `firing` or `resolved`"))),
        }
    }
}

/// One alert of a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertState,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: Option<String>,
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// Alertmanager's webhook body (`webhook_config`, version 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    #[serde(default)]
    pub group_key: Option<String>,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: AlertState,
    #[serde(default)]
    pub receiver: Option<String>,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL", default)]
    pub external_url: Option<String>,
    pub alerts: Vec<Alert>,
}

/// Reads an Alertmanager notification, saying what is wrong with one that is not.
pub fn parse_notification(body: &Value) -> Result<Notification, String> {
    let n: Notification = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("{path}: ") };
        format!("the body is not an Alertmanager webhook notification: {at}{}", e.into_inner())
    })?;
    if n.version != "4" {
        return Err(format!(
            "Alertmanager webhook version `{}` is not supported (only version 4)",
            n.version
        ));
    }
    Ok(n)
}

impl Alert {
    /// The alert's identity: Alertmanager's fingerprint, or a hash of its labels when the
    /// sender left it out.
    pub fn fingerprint(&self) -> String {
        match &self.fingerprint {
            Some(f) if !f.is_empty() => f.clone(),
            _ => {
                let mut h = Sha256::new();
                for (k, v) in &self.labels {
                    h.update(k.as_bytes());
                    h.update([0]);
                    h.update(v.as_bytes());
                    h.update([0]);
                }
                h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
            }
        }
    }

    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// A run an event asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub pipeline: String,
    pub params: Map<String, Value>,
    /// The key the run claims and how long the claim holds (`None`: for ever).
    pub key: Option<(String, Option<i64>)>,
    pub cause: Value,
}

/// What an event means for one pipeline whose `on:` matched it.
#[derive(Debug, Clone, PartialEq)]
pub enum Matched {
    Start(Candidate),
    /// It matched, but its params are wrong for the pipeline.
    Invalid {
        pipeline: String,
        reason: String,
    },
}

fn alert_matches(m: &AlertMatch, a: &Alert) -> bool {
    let status_ok = match m.status {
        AlertStatus::Firing => a.status == AlertState::Firing,
        AlertStatus::Resolved => a.status == AlertState::Resolved,
        AlertStatus::Any => true,
    };
    status_ok && a.name() == m.name && m.labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
}

/// The pipelines one alert of a notification starts.
pub fn match_alert<'p>(
    pipelines: impl IntoIterator<Item = &'p Pipeline>,
    n: &Notification,
    alert: &Alert,
    event_id: u64,
) -> Vec<Matched> {
    let mut out = Vec::new();
    let fp = alert.fingerprint();
    let ctx = json!({
        "alert": alert,
        "event": n,
        "labels": alert.labels,
        "annotations": alert.annotations,
    });
    for p in pipelines {
        for trigger in &p.on {
            let Some(m) = &trigger.alert else { continue };
            if !alert_matches(m, alert) {
                continue;
            }
            // Labels, then annotations, fill parameters of the same name.
            let mut given = Map::new();
            for (k, v) in alert.annotations.iter().chain(alert.labels.iter()) {
                if p.params.contains_key(k) {
                    given.insert(k.clone(), Value::String(v.clone()));
                }
            }
            let window = m.cooldown.map_or(DEFAULT_COOLDOWN_MS, |c| c.0.as_millis() as i64);
            let key = format!("alert:{}:{}:{}", p.name, alert.status, fp);
            let cause = json!({
                "event": event_id,
                "source": "alertmanager",
                "alert": alert.name(),
                "status": alert.status,
                "fingerprint": fp,
                "labels": alert.labels,
                "annotations": alert.annotations,
            });
            out.push(candidate(p, trigger, given, &ctx, Some((key, Some(window))), cause));
            break; // one run per pipeline per alert, however many entries match
        }
    }
    out
}

/// The pipelines a generic webhook event starts. `idempotency` is the request's
/// `Idempotency-Key`: a repeated key starts nothing more.
pub fn match_webhook<'p>(
    pipelines: impl IntoIterator<Item = &'p Pipeline>,
    source: &str,
    payload: &Value,
    idempotency: Option<&str>,
    event_id: u64,
) -> Vec<Matched> {
    let mut out = Vec::new();
    let ctx = json!({ "event": payload, "source": source });
    for p in pipelines {
        for trigger in &p.on {
            let Some(w) = &trigger.webhook else { continue };
            if w.source != source || !w.fields.iter().all(|(path, want)| lookup(payload, path) == Some(want))
            {
                continue;
            }
            let key = idempotency.map(|k| (format!("webhook:{}:{source}:{k}", p.name), None));
            let cause = json!({ "event": event_id, "source": source });
            out.push(candidate(p, trigger, Map::new(), &ctx, key, cause));
            break;
        }
    }
    out
}

/// The event source of a rollout's end, and of drift found by a live monitor. Only Sluice
/// sends them: the event endpoint refuses `sluice.*` from outside.
pub const ROLLOUT_SOURCE: &str = "sluice.rollout";
pub const DRIFT_SOURCE: &str = "sluice.drift";

/// The pipelines one of Sluice's own events starts (`on: - rollout: ...`, `on: - drift:
/// ...`). The payload's fields fill parameters of the same name; templates see it as
/// `rollout` or `drift`. A rollout's end starts one run per pipeline; drift of one model
/// starts one within the trigger's cooldown.
pub fn match_sluice<'p>(
    pipelines: impl IntoIterator<Item = &'p Pipeline>,
    source: &str,
    payload: &Value,
    event_id: u64,
) -> Vec<Matched> {
    let mut out = Vec::new();
    let is_rollout = source == ROLLOUT_SOURCE;
    let what = if is_rollout { "rollout" } else { "drift" };
    let ctx = json!({ what: payload, "event": payload });
    let model = payload["model"].as_str().unwrap_or_default();
    for p in pipelines {
        for trigger in &p.on {
            let key = if is_rollout {
                let Some(m) = &trigger.rollout else { continue };
                let status = payload["status"].as_str().unwrap_or_default();
                let status_ok = match m.status {
                    crate::spec::RolloutEnd::Aborted => status == "aborted",
                    crate::spec::RolloutEnd::Succeeded => status == "succeeded",
                    crate::spec::RolloutEnd::Any => true,
                };
                if m.model != model || !status_ok || m.alias.as_ref().is_some_and(|a| payload["alias"] != *a)
                {
                    continue;
                }
                (format!("rollout:{}:{}:{status}", p.name, payload["rollout"]), None)
            } else {
                let Some(m) = &trigger.drift else { continue };
                if m.model != model {
                    continue;
                }
                let window = m.cooldown.map_or(DEFAULT_COOLDOWN_MS, |c| c.0.as_millis() as i64);
                (format!("drift:{}:{model}", p.name), Some(window))
            };
            let mut given = Map::new();
            if let Some(fields) = payload.as_object() {
                for (k, v) in fields {
                    if p.params.contains_key(k) {
                        let v = match v {
                            Value::String(_) | Value::Number(_) | Value::Bool(_) => v.clone(),
                            other => Value::String(other.to_string()),
                        };
                        given.insert(k.clone(), v);
                    }
                }
            }
            let cause = json!({ "event": event_id, "source": source, what: payload });
            out.push(candidate(p, trigger, given, &ctx, Some(key), cause));
            break;
        }
    }
    out
}

/// A dotted path into JSON (`repository.name`, `commits.0.id`).
fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, part| match v {
        Value::Object(m) => m.get(part),
        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn candidate(
    pipeline: &Pipeline,
    trigger: &EventTrigger,
    mut given: Map<String, Value>,
    ctx: &Value,
    key: Option<(String, Option<i64>)>,
    cause: Value,
) -> Matched {
    let invalid = |reason: String| Matched::Invalid { pipeline: pipeline.name.clone(), reason };
    for (name, text) in &trigger.params {
        match template::render(template::environment(), text, &minijinja::Value::from_serialize(ctx)) {
            Ok(v) => {
                given.insert(name.clone(), Value::String(v));
            }
            Err(e) => return invalid(format!("the template of parameter `{name}` failed: {e}")),
        }
    }
    match pipeline.resolve_values(&given) {
        Ok(params) => Matched::Start(Candidate { pipeline: pipeline.name.clone(), params, key, cause }),
        Err(errors) => invalid(errors.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile_source;
    use crate::syntax::Format;
    use std::path::Path;

    fn plan(text: &str) -> Pipeline {
        compile_source(Path::new("p.yaml"), Path::new("."), text, Format::Yaml).unwrap().spec
    }

    const RETRAIN: &str = r#"
name: churn-retrain
params:
  model: {type: string}
  threshold: {type: number, default: 0.8}
  feature: {type: string, default: none}
on:
  - alert:
      name: FeatureDrift
      labels: {model: churn}
      cooldown: 10m
    params:
      feature: "{{ alert.labels.feature }}"
      threshold: "{{ alert.annotations.psi }}"
steps:
  a: {process: {command: ["true"]}}
"#;

    fn notification(status: &str, labels: Value) -> Value {
        json!({
            "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": status,
            "receiver": "sluice", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093",
            "alerts": [{
                "status": status, "labels": labels, "annotations": {"psi": "0.31", "summary": "drift"},
                "startsAt": "2026-11-22T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": "c0ffee"
            }]
        })
    }

    #[test]
    fn firing_alerts_start_runs_with_labels_as_params() {
        let plans = [plan(RETRAIN)];
        let body = notification(
            "firing",
            json!({"alertname": "FeatureDrift", "model": "churn", "feature": "tenure"}),
        );
        let n = parse_notification(&body).unwrap();
        let got = match_alert(&plans, &n, &n.alerts[0], 7);
        let [Matched::Start(c)] = got.as_slice() else { panic!("{got:?}") };
        assert_eq!(c.pipeline, "churn-retrain");
        assert_eq!(c.params["model"], "churn", "a label named like a parameter fills it");
        assert_eq!(c.params["feature"], "tenure");
        assert_eq!(c.params["threshold"], 0.31, "text is parsed by the parameter's type");
        assert_eq!(c.key, Some(("alert:churn-retrain:firing:c0ffee".into(), Some(600_000))));
        assert_eq!(c.cause["event"], 7);
    }

    #[test]
    fn other_alerts_and_resolved_ones_start_nothing() {
        let plans = [plan(RETRAIN)];
        for (status, labels) in [
            ("firing", json!({"alertname": "FeatureDrift", "model": "fraud"})),
            ("firing", json!({"alertname": "HighLatency", "model": "churn"})),
            ("resolved", json!({"alertname": "FeatureDrift", "model": "churn"})),
        ] {
            let n = parse_notification(&notification(status, labels)).unwrap();
            assert!(match_alert(&plans, &n, &n.alerts[0], 1).is_empty());
        }
    }

    #[test]
    fn wrong_params_are_reported_not_started() {
        let plans = [plan(RETRAIN)];
        let mut body =
            notification("firing", json!({"alertname": "FeatureDrift", "model": "churn", "feature": "age"}));
        body["alerts"][0]["annotations"]["psi"] = json!("high");
        let n = parse_notification(&body).unwrap();
        let got = match_alert(&plans, &n, &n.alerts[0], 1);
        let [Matched::Invalid { reason, .. }] = got.as_slice() else { panic!("{got:?}") };
        assert!(reason.contains("`threshold`") && reason.contains("not a number"), "{reason}");
        // A label the template reads but the alert lacks is named.
        let body = notification("firing", json!({"alertname": "FeatureDrift", "model": "churn"}));
        let n = parse_notification(&body).unwrap();
        let got = match_alert(&plans, &n, &n.alerts[0], 1);
        let [Matched::Invalid { reason, .. }] = got.as_slice() else { panic!("{got:?}") };
        assert!(reason.contains("`feature`") && reason.contains("labels.feature"), "{reason}");
    }

    #[test]
    fn malformed_notifications_say_why() {
        for (body, want) in [
            (json!({"version": "3", "status": "firing", "alerts": []}), "version `3`"),
            (json!({"status": "firing", "alerts": []}), "missing field `version`"),
            (json!({"version": "4", "status": "firing", "alerts": [{"status": "bad"}]}), "status `bad`"),
            (json!([1, 2]), "not an Alertmanager"),
        ] {
            let e = parse_notification(&body).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn webhooks_match_source_and_fields() {
        let plans = [plan(
            r#"
name: deploy
params: {commit: {type: string}}
on:
  - webhook: {source: ci, match: {ref: refs/heads/main, "repo.name": sluice}}
    params: {commit: "{{ event.after }}"}
steps:
  a: {process: {command: ["true"]}}
"#,
        )];
        let payload = json!({"ref": "refs/heads/main", "after": "abc123", "repo": {"name": "sluice"}});
        let got = match_webhook(&plans, "ci", &payload, Some("k1"), 3);
        let [Matched::Start(c)] = got.as_slice() else { panic!("{got:?}") };
        assert_eq!(c.params["commit"], "abc123");
        assert_eq!(c.key, Some(("webhook:deploy:ci:k1".into(), None)));
        assert!(match_webhook(&plans, "ci", &json!({"ref": "refs/heads/dev"}), None, 4).is_empty());
        assert!(match_webhook(&plans, "other", &payload, None, 5).is_empty());
    }
}
