//! `sluice models` and `sluice model show|alias|rollback|diff|protect`: the model registry,
//! on the data folder (as its owner, the local OS user) or through the server that holds it
//! (with the token).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use hyper::Method;
use serde_json::{Value, json};
use sluice_engine::driver::{Actor, Engine};
use sluice_engine::registry::{Cause, parse_version};

use super::artifacts::{local, urlencode};
use super::client::{Api, runtime};
use super::table;
use crate::Output;

#[derive(clap::Subcommand)]
pub(crate) enum ModelCommand {
    /// A model's versions (newest first) and aliases; one version whole with --version; every
    /// alias move with --history.
    Show {
        name: String,
        /// One version: its files, source run, metrics, params, input schema, and whether it
        /// checks (digests, signed registration, provenance).
        #[arg(long, conflicts_with = "history")]
        version: Option<String>,
        /// Every move of the model's aliases: from, to, who, when, why, what caused it.
        #[arg(long)]
        history: bool,
    },
    /// Point an alias (`production`, `staging`, any name) at a version. The version must
    /// check; a protected alias needs an approver. The move is kept and audited.
    Alias {
        name: String,
        alias: String,
        version: String,
        /// Why, kept with the move.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Move an alias back to the version it pointed at before its last move.
    Rollback {
        name: String,
        alias: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Two versions side by side: metrics with their change, params, input schema, data.
    Diff { name: String, from: String, to: String },
    /// Protect an alias (only approvers, or a `promote:` step after a passed gate and an
    /// approval, move it), or let it go with --off.
    Protect {
        name: String,
        alias: String,
        #[arg(long)]
        off: bool,
    },
}

/// The folder's owner acting locally: the OS user, who may move protected aliases.
fn owner() -> Actor {
    Actor::new(sluice_engine::security::local_actor(), true, None)
}

/// Runs `here` on the folder, or asks the server that holds it.
fn either(
    data_dir: &Path,
    server: Option<&str>,
    here: impl FnOnce(&Engine) -> anyhow::Result<Value>,
    there: (Method, String, Option<Value>),
) -> anyhow::Result<Value> {
    match local(data_dir, server, here)? {
        Some(v) => Ok(v),
        None => {
            let api = Api::new(data_dir, server)?;
            runtime()?.block_on(api.ok(there.0, &there.1, there.2))
        }
    }
}

fn print(output: Output, v: &Value, text: impl FnOnce(&Value)) -> anyhow::Result<ExitCode> {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        text(v);
    }
    Ok(ExitCode::SUCCESS)
}

fn when(ms: &Value) -> String {
    ms.as_i64().map_or_else(|| "-".into(), super::fmt_time)
}

fn num(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), super::fmt_num)
}

pub(crate) fn list(data_dir: &Path, server: Option<&str>, output: Output) -> anyhow::Result<ExitCode> {
    let v = either(data_dir, server, |e| Ok(e.models_doc()?), (Method::GET, "/api/v1/models".into(), None))?;
    print(output, &v, |v| {
        let models = v["models"].as_array().cloned().unwrap_or_default();
        if models.is_empty() {
            eprintln!("no registered models");
            return;
        }
        let rows: Vec<Vec<String>> = models
            .iter()
            .map(|m| {
                let aliases: Vec<String> = m["aliases"]
                    .as_object()
                    .map(|a| a.iter().map(|(k, v)| format!("{k}=v{v}")).collect())
                    .unwrap_or_default();
                vec![
                    m["name"].as_str().unwrap_or("").to_string(),
                    m["latest_version"].to_string(),
                    aliases.join(" "),
                    when(&m["updated"]),
                ]
            })
            .collect();
        table(&["MODEL", "LATEST", "ALIASES", "UPDATED"], &rows);
    })
}

pub(crate) fn run(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    command: ModelCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        ModelCommand::Show { name, version: Some(version), .. } => {
            let n = parse_version(&version).map_err(anyhow::Error::msg)?;
            let path = format!("/api/v1/models/{}/versions/{n}?check=true", urlencode(&name));
            let v = either(data_dir, server, |e| Ok(e.version_doc(&name, n, true)?), (Method::GET, path, None))?;
            let ok = v["check"]["ok"] == true;
            print(output, &v, show_version)?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        ModelCommand::Show { name, history: true, .. } => {
            let path = format!("/api/v1/models/{}/history", urlencode(&name));
            let v = either(data_dir, server, |e| Ok(e.history_doc(&name, None)?), (Method::GET, path, None))?;
            print(output, &v, |v| {
                let rows: Vec<Vec<String>> = v["moves"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        let ver = |x: &Value| x.as_u64().map_or("-".into(), |n| format!("v{n}"));
                        let mut cause = Vec::new();
                        if let Some(r) = m["cause"]["run"].as_u64() {
                            cause.push(format!("run {r}"));
                        }
                        for k in ["gate", "approval"] {
                            if let Some(s) = m["cause"][k].as_str() {
                                cause.push(format!("{k} {s}"));
                            }
                        }
                        vec![
                            when(&m["at"]),
                            m["alias"].as_str().unwrap_or("").into(),
                            ver(&m["from"]),
                            ver(&m["to"]),
                            format!("{}{}", m["actor"].as_str().unwrap_or(""), if m["rollback"] == true { " (rollback)" } else { "" }),
                            m["reason"].as_str().unwrap_or("").into(),
                            cause.join(", "),
                        ]
                    })
                    .collect();
                table(&["AT", "ALIAS", "FROM", "TO", "BY", "REASON", "CAUSE"], &rows);
            })
        }
        ModelCommand::Show { name, .. } => {
            let path = format!("/api/v1/models/{}", urlencode(&name));
            let v = either(data_dir, server, |e| Ok(e.model_doc(&name)?), (Method::GET, path, None))?;
            print(output, &v, |v| {
                let protected: Vec<&str> =
                    v["model"]["protected"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                println!("{}", v["model"]["name"].as_str().unwrap_or(""));
                if !protected.is_empty() {
                    println!("protected aliases: {}", protected.join(", "));
                }
                let rows: Vec<Vec<String>> = v["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| {
                        let metrics: Vec<String> = x["metrics"]
                            .as_object()
                            .map(|m| m.iter().take(4).map(|(k, v)| format!("{k}={}", num(v))).collect())
                            .unwrap_or_default();
                        let aliases: Vec<&str> = x["aliases"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        vec![
                            format!("v{}", x["version"]),
                            aliases.join(","),
                            when(&x["created"]),
                            x["source"].as_str().unwrap_or("").into(),
                            metrics.join(" "),
                        ]
                    })
                    .collect();
                table(&["VERSION", "ALIASES", "CREATED", "SOURCE", "METRICS"], &rows);
            })
        }
        ModelCommand::Alias { name, alias, version, reason } => {
            let n = parse_version(&version).map_err(anyhow::Error::msg)?;
            let path = format!("/api/v1/models/{}/aliases/{}", urlencode(&name), urlencode(&alias));
            let body = json!({ "version": n, "reason": reason });
            let v = either(
                data_dir,
                server,
                |e| Ok(json!({ "v": 1, "move": e.registry().move_alias(&name, &alias, Some(n), &owner(), &reason, Cause::default())? })),
                (Method::POST, path, Some(body)),
            )?;
            print(output, &v, said_move)
        }
        ModelCommand::Rollback { name, alias, reason } => {
            let path = format!("/api/v1/models/{}/aliases/{}/rollback", urlencode(&name), urlencode(&alias));
            let v = either(
                data_dir,
                server,
                |e| Ok(json!({ "v": 1, "move": e.registry().rollback_alias(&name, &alias, &owner(), &reason)? })),
                (Method::POST, path, Some(json!({ "reason": reason }))),
            )?;
            print(output, &v, said_move)
        }
        ModelCommand::Diff { name, from, to } => {
            let (a, b) = (parse_version(&from).map_err(anyhow::Error::msg)?, parse_version(&to).map_err(anyhow::Error::msg)?);
            let path = format!("/api/v1/models/{}/diff?from={a}&to={b}", urlencode(&name));
            let v = either(data_dir, server, |e| Ok(e.diff_doc(&name, a, b)?), (Method::GET, path, None))?;
            print(output, &v, show_diff)
        }
        ModelCommand::Protect { name, alias, off } => {
            let path = format!("/api/v1/models/{}/aliases/{}/protect", urlencode(&name), urlencode(&alias));
            let v = either(
                data_dir,
                server,
                |e| Ok(json!({ "v": 1, "protected": e.registry().protect_alias(&name, &alias, !off, &owner())?.protected })),
                (Method::POST, path, Some(json!({ "protected": !off }))),
            )?;
            print(output, &v, |v| {
                let list: Vec<&str> = v["protected"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                println!("protected aliases of {name}: {}", if list.is_empty() { "none".into() } else { list.join(", ") });
            })
        }
    }
    .context("model")
}

fn said_move(v: &Value) {
    let m = &v["move"];
    let ver = |x: &Value| x.as_u64().map_or("nothing".into(), |n| format!("version {n}"));
    println!(
        "{}@{}: {} -> {}{}",
        m["model"].as_str().unwrap_or(""),
        m["alias"].as_str().unwrap_or(""),
        ver(&m["from"]),
        ver(&m["to"]),
        if m["rollback"] == true { " (rolled back)" } else { "" }
    );
}

fn show_version(v: &Value) {
    let x = &v["version"];
    println!("{} version {}", x["name"].as_str().unwrap_or(""), x["version"]);
    println!("  created   {} by {}", when(&x["created"]), x["created_by"].as_str().unwrap_or(""));
    println!("  source    {}", x["source"].as_str().unwrap_or(""));
    println!("  artifact  {}", x["artifact"].as_str().unwrap_or(""));
    let aliases: Vec<&str> =
        v["aliases"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !aliases.is_empty() {
        println!("  aliases   {}", aliases.join(", "));
    }
    for (path, f) in x["files"].as_object().into_iter().flatten() {
        println!("  file      {path} {} ({} bytes)", f["digest"].as_str().unwrap_or(""), f["size"]);
    }
    for (k, m) in x["metrics"].as_object().into_iter().flatten() {
        println!("  metric    {k} = {}", num(m));
    }
    for (k, p) in x["params"].as_object().into_iter().flatten() {
        println!("  param     {k} = {}", p.as_str().unwrap_or(""));
    }
    let schema: Vec<String> = x["input_schema"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| format!("{}:{}", f["name"].as_str().unwrap_or(""), f["type"].as_str().unwrap_or("")))
        .collect();
    if !schema.is_empty() {
        println!("  inputs    {}", schema.join(" "));
    }
    match v["check"]["ok"] == true {
        true => {
            let what: Vec<&str> =
                v["check"]["checked"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            println!("  check     ok ({})", what.join(", "))
        }
        false => println!("  check     FAILED: {}", v["check"]["error"].as_str().unwrap_or("")),
    }
}

fn show_diff(v: &Value) {
    println!(
        "{}: version {} -> version {}",
        v["model"].as_str().unwrap_or(""),
        v["from"]["version"],
        v["to"]["version"]
    );
    let rows: Vec<Vec<String>> = v["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let delta = match m["delta"].as_f64() {
                Some(d) if d > 0.0 => format!("+{}", num(&m["delta"])),
                Some(_) => num(&m["delta"]),
                None => "-".into(),
            };
            vec![m["key"].as_str().unwrap_or("").into(), num(&m["from"]), num(&m["to"]), delta]
        })
        .collect();
    if !rows.is_empty() {
        table(&["METRIC", "FROM", "TO", "CHANGE"], &rows);
    }
    let params: Vec<Vec<String>> = v["params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["changed"] == true)
        .map(|p| {
            let s = |x: &Value| x.as_str().unwrap_or("-").to_string();
            vec![p["key"].as_str().unwrap_or("").into(), s(&p["from"]), s(&p["to"])]
        })
        .collect();
    if !params.is_empty() {
        println!();
        table(&["PARAM", "FROM", "TO"], &params);
    }
    let data: Vec<Vec<String>> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let s = |x: &Value| x.as_str().map_or("-".into(), |h| h.chars().take(19).collect::<String>());
            vec![
                d["path"].as_str().unwrap_or("").into(),
                s(&d["from"]),
                s(&d["to"]),
                if d["changed"] == true { "changed".into() } else { "same".into() },
            ]
        })
        .collect();
    if !data.is_empty() {
        println!();
        table(&["DATA", "FROM", "TO", ""], &data);
    }
    if v["schema_changed"] == true {
        println!("\nthe input schema changed");
    }
}
