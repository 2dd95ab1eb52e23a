//! `sluice runs`, `sluice show`, `sluice logs`: reading the store (when no server owns it).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use sluice_engine::driver::{Engine, EngineOptions};

use super::{fmt_ms, fmt_time, parse_run_id};
use crate::Output;

pub(crate) fn open(data_dir: &Path) -> anyhow::Result<Engine> {
    anyhow::ensure!(
        data_dir.join("db").exists(),
        "no Sluice data in {} (run a pipeline first, or pass --data-dir)",
        data_dir.display()
    );
    Ok(Engine::open(EngineOptions::new(data_dir))?)
}

/// Whether opening the store failed because another process (a server) holds it.
pub(crate) fn locked(e: &anyhow::Error) -> bool {
    use sluice_engine::driver::EngineError;
    use sluice_engine::store::StoreError;
    matches!(e.downcast_ref::<EngineError>(), Some(EngineError::Store(StoreError::Locked(_))))
}

/// The engine on the data folder, or `None` when a server holds it (then ask the server).
fn open_or_server(data_dir: &Path, server: Option<&str>) -> anyhow::Result<Option<Engine>> {
    match open(data_dir) {
        Err(e) if locked(&e) && super::client::server_url(data_dir, server).is_some() => Ok(None),
        other => other.map(Some),
    }
}

pub(crate) fn runs(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    limit: usize,
    (filter, order_by): (Option<&str>, Option<&str>),
) -> anyhow::Result<ExitCode> {
    // Checked here first, so that the error points at the column either way.
    let search = sluice_engine::driver::RunSearch::parse(filter.unwrap_or(""), order_by.unwrap_or(""))
        .map_err(|(what, e)| {
            let text = if what == "filter" { filter.unwrap_or("") } else { order_by.unwrap_or("") };
            anyhow::anyhow!("--{what}: {e}\n  {text}\n  {}^", " ".repeat(e.column.saturating_sub(1)))
        })?;
    let searched = filter.is_some() || order_by.is_some();
    let runs: Vec<sluice_engine::store::RunRecord> = match open_or_server(data_dir, server)? {
        Some(engine) => {
            let found = if searched {
                engine.search_runs(engine.store().runs()?, &search)?
            } else {
                engine.store().run_page(&Default::default(), limit)?.runs
            };
            engine.with_tags(found.into_iter().take(limit).collect())?
        }
        None => super::client::runs(data_dir, server, limit, (filter, order_by))?,
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<7} {:<24} {:<12} {:<20} {:>9}", "RUN", "PIPELINE", "STATE", "CREATED", "DURATION");
    for r in runs {
        let took = match (r.started_at, r.finished_at) {
            (Some(s), Some(f)) => fmt_ms(f - s),
            _ => "-".into(),
        };
        println!(
            "{:<7} {:<24} {:<12} {:<20} {:>9}",
            format!("{}", r.id),
            r.pipeline,
            r.state.to_string(),
            fmt_time(r.created_at),
            took
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice show`: the run's report, read from the store (replaying its event log); while a
/// server owns the data folder, from the server (the same document).
pub(crate) fn show(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    run: &str,
) -> anyhow::Result<ExitCode> {
    let id = parse_run_id(run)?;
    let engine = match open(data_dir) {
        Err(e) if locked(&e) && super::client::server_url(data_dir, server).is_some() => {
            return super::client::status(data_dir, server, output, run);
        }
        other => other?,
    };
    let report = engine.report(id)?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => super::report::print(&report),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn logs(
    data_dir: &Path,
    server: Option<&str>,
    run: &str,
    step: &str,
    attempt: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let id = parse_run_id(run)?;
    let Some(engine) = open_or_server(data_dir, server)? else {
        let bytes = super::client::logs(data_dir, server, id, step, attempt)?;
        std::io::stdout().lock().write_all(&bytes)?;
        return Ok(ExitCode::SUCCESS);
    };
    let record = engine.store().run(id)?;
    let plan = engine.plan_of(&record)?;
    let Some(ix) = plan.step_ix(step) else {
        anyhow::bail!(
            "run {id} ({}) has no step `{step}`; its steps are {}",
            record.pipeline,
            plan.ids.join(", ")
        );
    };
    let chunks = engine.store().logs(id, ix)?;
    let chunks: Vec<_> = chunks.into_iter().filter(|c| attempt.is_none_or(|a| a == c.attempt)).collect();
    let several =
        chunks.iter().map(|c| (c.item, c.attempt)).collect::<std::collections::BTreeSet<_>>().len() > 1;
    let mut out = std::io::stdout().lock();
    let mut current = None;
    for c in chunks {
        if several && current != Some((c.item, c.attempt)) {
            current = Some((c.item, c.attempt));
            writeln!(out, "--- item {} attempt {} ---", c.item, c.attempt)?;
        }
        out.write_all(&c.data)?;
    }
    Ok(ExitCode::SUCCESS)
}
