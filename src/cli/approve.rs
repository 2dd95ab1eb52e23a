//! `sluice approve RUN STEP [--reject] [--comment ...]`: decide a waiting `approval:` step,
//! through the server that holds the data folder (with the token), or on the folder itself as
//! its owner (the run goes on at the next `sluice resume`).

use std::path::Path;
use std::process::ExitCode;

use hyper::Method;
use serde_json::json;
use sluice_engine::driver::Decider;

use super::artifacts::{local, urlencode};
use super::client::{Api, runtime};
use super::parse_run_id;
use crate::Output;

pub(crate) fn approve(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    (run, step): (&str, &str),
    reject: bool,
    comment: &str,
) -> anyhow::Result<ExitCode> {
    let run = parse_run_id(run)?;
    let decided = local(data_dir, server, |e| {
        let who = Decider { actor: sluice_engine::security::local_actor(), role: None, request: None };
        let d = e.decide(run, step, !reject, comment, &who)?;
        e.apply_decision_idle(&d)?;
        Ok(json!({ "v": 1, "run": run, "step": step, "decision": d.decision, "resume": true }))
    })?;
    let v = match decided {
        Some(v) => v,
        None => {
            let api = Api::new(data_dir, server)?;
            let path = format!(
                "/api/v1/runs/{run}/steps/{}/{}",
                urlencode(step),
                if reject { "reject" } else { "approve" }
            );
            runtime()?.block_on(api.ok(Method::POST, &path, Some(json!({ "comment": comment }))))?
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let by = v["decision"]["by"].as_str().unwrap_or("");
        println!("run {run}: step `{step}` {} by {by}", if reject { "rejected" } else { "approved" });
        if v["resume"] == true {
            eprintln!("no server holds the folder: `sluice resume {run}` carries the run on");
        }
    }
    Ok(ExitCode::SUCCESS)
}
