//! The result document a plugin writes to stdout, read into the step's outputs.

use serde_json::{Map, Value};

use crate::error::ExecError;
use crate::executor::{AttemptSink, LogStream};

/// The result document a plugin writes to stdout.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginResult {
    #[serde(default)]
    outputs: Map<String, Value>,
    #[serde(default)]
    metrics: Option<Map<String, Value>>,
    #[serde(default)]
    status: Option<PluginStatus>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum PluginStatus {
    Ok,
    Failed,
}

/// The step's outputs from the plugin's stdout. Empty stdout: no outputs.
pub(super) fn parse_result(stdout: &[u8], sink: &dyn AttemptSink) -> Result<Map<String, Value>, ExecError> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let result: PluginResult = serde_json::from_slice(stdout).map_err(|e| {
        let shown = String::from_utf8_lossy(&stdout[..stdout.len().min(200)]).into_owned();
        ExecError::fatal(format!(
            "the plugin's stdout is not a result document ({e}); it must be one JSON object with \
             `outputs`, `metrics`, `status`, `message`; it began with: {shown:?}"
        ))
    })?;
    if let Some(message) = &result.message {
        sink.log(LogStream::System, format!("sluice: plugin says: {message}\n").as_bytes());
    }
    let mut outputs = result.outputs;
    if let Some(metrics) = result.metrics {
        let shown = serde_json::to_string(&metrics).unwrap_or_default();
        sink.log(LogStream::System, format!("sluice: metrics {shown}\n").as_bytes());
        outputs.insert("metrics".into(), Value::Object(metrics));
    }
    if result.status == Some(PluginStatus::Failed) {
        let message = result.message.unwrap_or_else(|| "no message".into());
        return Err(ExecError::fatal(format!("the plugin reported a failure: {message}")));
    }
    Ok(outputs)
}
