//! `drift:`: compare a current table with a reference, column by column (see [`crate::drift`]
//! for the tests). Outputs `drifted`, `share`, `drifted_columns` and `columns` for `when:` and
//! later steps; the report is kept as two artifacts, `report` (JSON) and `report_html` (a
//! self-contained page with a histogram per column). Carried out by the engine itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_worker::{BuiltinSpec, ExecSpec};

use super::{Check, Kind, Render, Rendered, Templates};
use crate::drift::Method;

/// A `drift:` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftBlock {
    /// The reference table, CSV with a header (templated: a file relative to the pipeline's
    /// folder, or an upstream artifact's `path`).
    pub reference: String,
    /// The current table (templated, as `reference`).
    pub current: String,
    /// The columns to compare (default: every column both tables have).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// The test: `auto` (Evidently's choice per column), `ks`, `psi`, `chi2`, `wasserstein`,
    /// `jensen_shannon` or `z`.
    #[serde(default)]
    pub method: Method,
    /// Overrides the method's threshold: the p-value under which ks, chi2 and z say drift
    /// (default 0.05), the distance from which the others do (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The share of drifted columns from which the table drifts (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_share: Option<f64>,
    /// Fail the step when the table drifts (default: succeed, with the verdict in `outputs`).
    #[serde(default)]
    pub fail_on_drift: bool,
}

impl Kind for DriftBlock {
    fn check(&self, cx: &mut Check<'_>) {
        for (field, v) in [("reference", &self.reference), ("current", &self.current)] {
            if v.trim().is_empty() {
                cx.at(field, format!("`{field}` is empty"));
            }
        }
        if let Some(t) = self.threshold
            && !(t.is_finite() && t > 0.0)
        {
            cx.at("threshold", "`threshold` must be a number above 0");
        }
        if let Some(s) = self.drift_share
            && !(s > 0.0 && s <= 1.0)
        {
            cx.at("drift_share", "`drift_share` must be in (0, 1]");
        }
        for (i, c) in self.columns.iter().enumerate() {
            if c.trim().is_empty() {
                cx.at(&format!("columns/{i}"), "a column name is empty");
            }
        }
    }

    fn templates<'a>(&'a self, out: &mut Templates<'a>) {
        out.text("reference", &self.reference);
        out.text("current", &self.current);
    }

    fn refuses_workdir(&self) -> Option<&'static str> {
        Some("a `drift:` step runs inside the engine")
    }

    fn default_timeout(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(1800))
    }

    fn artifact_names(&self) -> &'static [&'static str] {
        &["report", "report_html"]
    }

    fn render(&self, cx: &Render<'_>) -> Result<Rendered, String> {
        let reference = cx.input(&self.reference)?;
        let current = cx.input(&self.current)?;
        let stem = match cx.item {
            Some((item, _)) => format!("{}-{item}.drift", cx.step),
            None => format!("{}.drift", cx.step),
        };
        let (json_file, html_file) = (format!("{stem}.json"), format!("{stem}.html"));
        let args = json!({
            "reference": reference.source,
            "current": current.source,
            "columns": self.columns,
            "method": self.method,
            "threshold": self.threshold,
            "drift_share": self.drift_share.unwrap_or(0.5),
            "fail_on_drift": self.fail_on_drift,
            "json": cx.run_dir.join(&json_file),
            "html": cx.run_dir.join(&html_file),
            "title": format!("Drift: {} / {} (run {})", cx.run.pipeline, cx.step, cx.run.id),
        });
        Ok(Rendered {
            spec: ExecSpec::Builtin(BuiltinSpec { op: "drift".into(), args }),
            inputs: vec![reference, current],
            work_folder: Some(cx.run_dir.to_path_buf()),
            artifacts: vec![("report".into(), json_file), ("report_html".into(), html_file)],
        })
    }
}
