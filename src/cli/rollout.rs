//! `sluice rollout list|status|pause|resume|abort|promote`: rollouts run inside `sluice
//! serve` (they route its live traffic), so these commands speak to the server.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use super::artifacts::urlencode;
use super::client::{Api, runtime};
use super::{fmt_num, fmt_time, table};
use crate::Output;

#[derive(Subcommand)]
pub(crate) enum RolloutCommand {
    /// Rollouts, newest first.
    List {
        /// Only this model's.
        #[arg(long)]
        model: Option<String>,
    },
    /// A rollout (a model's newest, or by id): its stage, the candidate's share, analyses,
    /// and each version's serving record.
    Status { name: String },
    /// Hold the rollout where it is (weights stay).
    Pause {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Go on after a pause (an open one, or an inconclusive analysis).
    Resume { name: String },
    /// Stop: the candidate's share back to 0, the alias on the stable version.
    Abort {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Skip what remains: the candidate takes the alias now.
    Promote { name: String },
}

fn show(r: &Value) {
    println!(
        "rollout {} of {}@{}: version {} over {}, {} ({}% to the candidate), stage {}/{}",
        r["id"],
        r["model"].as_str().unwrap_or(""),
        r["alias"].as_str().unwrap_or(""),
        r["candidate"],
        r["stable"].as_u64().map_or("nothing".into(), |v| format!("version {v}")),
        r["status"].as_str().unwrap_or(""),
        r["share"],
        r["stage"],
        r["stages"].as_array().map_or(0, Vec::len),
    );
    if let Some(reason) = r["reason"].as_str() {
        println!("  {reason}");
    }
    let rows: Vec<Vec<String>> = r["measurements"]
        .as_array()
        .map(|m| m.iter().rev().take(10).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .rev()
        .map(|m| {
            let values = m["values"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .map(|kv| {
                            format!(
                                "{}={}",
                                kv[0].as_str().unwrap_or(""),
                                kv[1].as_f64().map_or("none".into(), fmt_num)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            vec![
                fmt_time(m["at"].as_i64().unwrap_or(0)),
                m["stage"].to_string(),
                values,
                m["verdict"].as_str().unwrap_or("").into(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table(&["MEASURED", "STAGE", "VALUES", "VERDICT"], &rows);
    }
}

pub(crate) fn run(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    command: RolloutCommand,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(data_dir, server)?;
    let rt = runtime()?;
    let path = |name: &str, verb: &str| format!("/api/v1/rollouts/{}/{verb}", urlencode(name));
    let v = match &command {
        RolloutCommand::List { model } => {
            let q = model.as_ref().map(|m| format!("?model={}", urlencode(m))).unwrap_or_default();
            rt.block_on(api.ok(Method::GET, &format!("/api/v1/rollouts{q}"), None))?
        }
        RolloutCommand::Status { name } => {
            rt.block_on(api.ok(Method::GET, &format!("/api/v1/rollouts/{}", urlencode(name)), None))?
        }
        RolloutCommand::Pause { name, reason } => {
            rt.block_on(api.ok(Method::POST, &path(name, "pause"), Some(json!({ "reason": reason }))))?
        }
        RolloutCommand::Resume { name } => {
            rt.block_on(api.ok(Method::POST, &path(name, "resume"), Some(json!({}))))?
        }
        RolloutCommand::Abort { name, reason } => {
            rt.block_on(api.ok(Method::POST, &path(name, "abort"), Some(json!({ "reason": reason }))))?
        }
        RolloutCommand::Promote { name } => {
            rt.block_on(api.ok(Method::POST, &path(name, "promote"), Some(json!({}))))?
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(list) = v["rollouts"].as_array() {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|r| {
                vec![
                    r["id"].to_string(),
                    format!("{}@{}", r["model"].as_str().unwrap_or(""), r["alias"].as_str().unwrap_or("")),
                    r["candidate"].to_string(),
                    r["stable"].as_u64().map_or("-".into(), |v| v.to_string()),
                    r["status"].as_str().unwrap_or("").into(),
                    format!("{}%", r["share"]),
                    fmt_time(r["started"].as_i64().unwrap_or(0)),
                ]
            })
            .collect();
        table(&["ID", "ALIAS", "CANDIDATE", "STABLE", "STATUS", "SHARE", "STARTED"], &rows);
    } else {
        show(&v["rollout"]);
    }
    Ok(ExitCode::SUCCESS)
}
