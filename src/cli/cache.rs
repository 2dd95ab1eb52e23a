//! `sluice cache explain RUN STEP`: why a step reused a cached result or ran; `sluice gc`:
//! retention. From the store, or through the server while one owns the folder.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use hyper::Method;
use sluice_engine::driver::{CacheExplanation, GcReport};
use sluice_engine::store::{KeyDoc, Verdict};

use super::client::{Api, runtime};
use super::parse_run_id;
use crate::Output;

pub(crate) fn explain(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    run: &str,
    step: &str,
) -> anyhow::Result<ExitCode> {
    let run = parse_run_id(run)?;
    let found = super::artifacts::local(data_dir, server, |e| Ok(e.explain_cache(run, step)?))?;
    let list: Vec<CacheExplanation> = match found {
        Some(list) => list,
        None => {
            let api = Api::new(data_dir, server)?;
            let path = format!("/api/v1/runs/{run}/steps/{step}/cache");
            let v = runtime()?.block_on(api.ok(Method::GET, &path, None))?;
            serde_json::from_value(v["tasks"].clone()).context("the server's cache explanation")?
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "v": 1, "tasks": list }))?);
        return Ok(ExitCode::SUCCESS);
    }
    for (i, e) in list.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let item = if list.len() > 1 { format!(" item {}", e.item) } else { String::new() };
        println!("run {} step {}{item} (attempt {}): {}", e.run, e.step, e.attempt, e.summary);
        if !e.changes.is_empty() {
            println!("what changed:");
            for c in &e.changes {
                println!("  - {c}");
            }
        }
        if let Some(k) = &e.key {
            println!("key {k}");
        }
        if let Some(doc) = &e.components {
            print_components(doc);
        }
        if matches!(e.verdict, Verdict::Unkeyed { .. } | Verdict::Bypassed { .. }) && e.key.is_none() {
            println!("(no key was made)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The key's components, one per line.
fn print_components(d: &KeyDoc) {
    println!("made of (cache format {}):", d.format);
    println!("  kind      {}", d.kind);
    println!("  request   {}", d.request);
    if !d.env.is_empty() {
        let env: Vec<String> = d.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  env       {}", env.join(" "));
    }
    println!("  workdir   {}", d.workdir);
    if let Some(image) = &d.image {
        println!("  image     {image}");
    }
    for (path, digest) in &d.code {
        println!("  code      {path} {digest}");
    }
    for (path, digest) in &d.datasets {
        println!("  input     {path} {digest}");
    }
    for (name, digest) in &d.artifacts {
        println!("  artifact  {name} {digest}");
    }
    for (name, value) in &d.values {
        println!("  value     {name} = {value}");
    }
}

pub(crate) fn gc(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    keep: std::time::Duration,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let local = super::artifacts::local(data_dir, server, |e| {
        let report = e.gc(keep, dry_run, std::time::Duration::ZERO)?;
        if !dry_run {
            let action =
                sluice_engine::security::audit::Action::new(sluice_engine::security::local_actor(), "gc", "artifacts")
                    .after(serde_json::to_value(&report)?);
            e.audit(action)?;
            e.store().flush()?;
        }
        Ok(report)
    })
    .with_context(|| {
        "sluice gc needs the data folder to itself, or a server that owns it: run it when the other sluice process ends, or while `sluice serve` runs"
    })?;
    let report: GcReport = match local {
        Some(r) => r,
        None => {
            let api = Api::new(data_dir, server)?;
            let keep = humantime::format_duration(keep).to_string();
            let body = serde_json::json!({ "keep": keep, "dry_run": dry_run });
            let v = runtime()?.block_on(api.ok(Method::POST, "/api/v1/gc", Some(body)))?;
            serde_json::from_value(v["gc"].clone()).context("the server's gc report")?
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "v": 1, "gc": report }))?);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if report.dry_run { "would remove" } else { "removed" };
    for item in &report.removed {
        println!("{verb} {} ({} bytes)", item.digest, item.size);
    }
    println!(
        "{verb} {} stored file(s), {} bytes; kept {} ({} bytes) that runs within {} or cache entries use; spared {} placed in the last minute; {} {} cache entr{} older than that",
        report.removed.len(),
        report.removed_bytes,
        report.kept,
        report.kept_bytes,
        humantime::format_duration(std::time::Duration::from_millis(report.keep_ms as u64)),
        report.recent,
        verb,
        report.cache_entries_removed,
        if report.cache_entries_removed == 1 { "y" } else { "ies" },
    );
    Ok(ExitCode::SUCCESS)
}
