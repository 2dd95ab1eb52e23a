//! `sluice drift REFERENCE CURRENT`: the drift of a table against a reference, as a `drift:`
//! step computes it, without a pipeline.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use sluice_engine::drift::{self, Method, Options};

use super::{fmt_num, table};
use crate::Output;

#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    output: Output,
    reference: &Path,
    current: &Path,
    columns: Vec<String>,
    method: &str,
    threshold: Option<f64>,
    drift_share: f64,
    html: Option<&Path>,
) -> Result<ExitCode> {
    let method = Method::parse(method).map_err(anyhow::Error::msg)?;
    let r = drift::read_csv(reference).map_err(anyhow::Error::msg)?;
    let c = drift::read_csv(current).map_err(anyhow::Error::msg)?;
    let report = drift::compare(&r, &c, &Options { columns, method, threshold, drift_share })
        .map_err(anyhow::Error::msg)?;
    if let Some(path) = html {
        let title = format!("Drift of {} against {}", current.display(), reference.display());
        std::fs::write(path, drift::html::render(&report, &title))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = report
        .columns
        .iter()
        .map(|c| {
            vec![
                c.column.clone(),
                c.kind.to_string(),
                c.method.to_string(),
                fmt_num(c.statistic),
                c.p_value.map(fmt_num).unwrap_or_else(|| "-".into()),
                fmt_num(c.threshold),
                if c.drifted { "DRIFT".into() } else { "ok".into() },
            ]
        })
        .collect();
    table(&["COLUMN", "TYPE", "TEST", "STATISTIC", "P-VALUE", "THRESHOLD", "VERDICT"], &rows);
    println!(
        "\n{}: {} of {} columns drifted (share {}; the table drifts at {})",
        if report.drifted { "DRIFT" } else { "no drift" },
        report.drifted_columns.len(),
        report.columns.len(),
        fmt_num(report.share),
        fmt_num(report.drift_share)
    );
    if !report.skipped.is_empty() {
        println!("not compared (in one table only): {}", report.skipped.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
