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
    let rows: Vec<Vec<String>> = order
        .iter()
        .map(|id| {
            let (last, lo, hi, n) = &series[id];
            let task = if id.1 > 0 { format!("{}[{}]", id.0, id.1) } else { id.0.clone() };
            vec![
                task,
                id.2.clone(),
                fmt(last.value),
                last.step.to_string(),
                fmt(*lo),
                fmt(*hi),
                n.to_string(),
            ]
        })
        .collect();
    super::table(&["STEP", "KEY", "LAST", "AT STEP", "MIN", "MAX", "POINTS"], &rows);
    Ok(ExitCode::SUCCESS)
}

use super::fmt_num as fmt;

/// `sluice compare RUN RUN...`: params that differ, metrics side by side (`*` marks the best:
/// lowest for losses and errors, else highest), step durations.
pub(crate) fn compare(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    runs: &[String],
) -> anyhow::Result<ExitCode> {
    let ids: Vec<u64> = runs.iter().map(|r| parse_run_id(r)).collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(ids.len() <= 20, "compare at most 20 runs");
    let v = match super::artifacts::local(data_dir, server, |e| Ok(e.compare_doc(&ids)?))? {
        Some(v) => v,
        None => {
            let api = Api::new(data_dir, server)?;
            let list: Vec<String> = ids.iter().map(u64::to_string).collect();
            runtime()?.block_on(api.ok(
                Method::GET,
                &format!("/api/v1/compare?runs={}", list.join(",")),
                None,
            ))?
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let head: Vec<String> = ids.iter().map(|i| format!("run {i}")).collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let cells = |values: &serde_json::Value, show: &dyn Fn(&serde_json::Value) -> String| -> Vec<String> {
        values.as_array().into_iter().flatten().map(show).collect()
    };
    rows.push(
        [vec!["state".to_string()], cells(&v["runs"], &|r| r["state"].as_str().unwrap_or("").to_string())]
            .concat(),
    );
    for p in v["params"].as_array().into_iter().flatten().filter(|p| p["differs"] == true) {
        let key = format!("params.{}", p["key"].as_str().unwrap_or(""));
        rows.push([vec![key], cells(&p["values"], &|x| x.as_str().unwrap_or("-").to_string())].concat());
    }
    for m in v["metrics"].as_array().into_iter().flatten() {
        let best = m["best"].as_u64();
        let key = format!("metrics.{}", m["key"].as_str().unwrap_or(""));
        let values: Vec<String> = m["values"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, x)| match x.as_f64() {
                Some(f) if best == Some(i as u64) => format!("{} *", fmt(f)),
                Some(f) => fmt(f),
                None => "-".into(),
            })
            .collect();
        rows.push([vec![key], values].concat());
    }
    for s in v["steps"].as_array().into_iter().flatten() {
        let key = format!("step {}", s["step"].as_str().unwrap_or(""));
        rows.push(
            [
                vec![key],
                cells(&s["duration_ms"], &|d| {
                    d.as_i64().map_or("-".into(), |ms| format!("{:.2}s", ms as f64 / 1000.0))
                }),
            ]
            .concat(),
        );
    }
    let all_head: Vec<&str> = std::iter::once("").chain(head.iter().map(String::as_str)).collect();
    super::table(&all_head, &rows);
    Ok(ExitCode::SUCCESS)
}
