//! `sluice metrics RUN [STEP]`: a run's metric series, summed up per step and key (the last
//! value, its training step, the lowest and highest, how many points), or every point as JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use hyper::Method;
use sluice_engine::tracking::MetricPoint;

use super::client::{Api, runtime};
use super::parse_run_id;
use crate::Output;

pub(crate) fn show(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    run: &str,
    step: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let run = parse_run_id(run)?;
    let found = super::artifacts::local(data_dir, server, |e| Ok(e.metrics(run, step)?))?;
    let points: Vec<MetricPoint> = match found {
        Some(points) => points,
        None => {
            let api = Api::new(data_dir, server)?;
            let mut path = format!("/api/v1/runs/{run}/metrics");
            if let Some(s) = step {
                path.push_str(&format!("?step={}", super::artifacts::urlencode(s)));
            }
            let v = runtime()?.block_on(api.ok(Method::GET, &path, None))?;
            serde_json::from_value(v["metrics"].clone()).context("the server's metrics")?
        }
    };
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "v": 1, "run": run, "metrics": points }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if points.is_empty() {
        eprintln!("run {run} has no metrics{}", step.map(|s| format!(" for step `{s}`")).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    // Per task and key, in the order first seen: the last point, the range, the count.
    let mut order = Vec::new();
    type Series = (MetricPoint, f64, f64, usize);
    let mut series: BTreeMap<(String, u32, String), Series> = BTreeMap::new();
    for p in points {
        let id = (p.task.clone(), p.item, p.key.clone());
        match series.get_mut(&id) {
            Some((last, lo, hi, n)) => {
                *lo = lo.min(p.value);
                *hi = hi.max(p.value);
                *n += 1;
                *last = p;
            }
            None => {
                order.push(id.clone());
                series.insert(id, (p.clone(), p.value, p.value, 1));
            }
        }
    }
    let rows: Vec<[String; 7]> = order
        .iter()
        .map(|id| {
            let (last, lo, hi, n) = &series[id];
            let task = if id.1 > 0 { format!("{}[{}]", id.0, id.1) } else { id.0.clone() };
            [task, id.2.clone(), fmt(last.value), last.step.to_string(), fmt(*lo), fmt(*hi), n.to_string()]
        })
        .collect();
    let head = ["STEP", "KEY", "LAST", "AT STEP", "MIN", "MAX", "POINTS"];
    let widths: Vec<usize> =
        (0..7).map(|i| rows.iter().map(|r| r[i].len()).chain([head[i].len()]).max().unwrap_or(0)).collect();
    let line = |cells: [&str; 7]| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]);
    }
    Ok(ExitCode::SUCCESS)
}

/// A value as people read it: up to six significant digits.
fn fmt(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" { "0".into() } else { s.to_string() }
}
