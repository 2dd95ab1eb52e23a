//! `sluice validate`, `sluice graph`, `sluice schema`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice_engine::compile::{compile_file, to_dot, to_mermaid};

use crate::Output;

pub(crate) fn validate(files: &[PathBuf], output: Output) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    let mut bad = 0;
    for f in files {
        match compile_file(f) {
            Ok(plan) => {
                if output == Output::Text {
                    println!("{}: ok ({} steps, version {})", f.display(), plan.ids.len(), plan.short_hash());
                }
                all.push(serde_json::json!({"file": f, "valid": true, "steps": plan.ids.len(), "version": plan.hash}));
            }
            Err(diags) => {
                bad += 1;
                for d in &diags {
                    if output == Output::Text {
                        println!("{d}");
                    }
                }
                let errors: Vec<_> = diags
                    .iter()
                    .map(|d| serde_json::json!({"line": d.location.line, "column": d.location.column, "message": d.message}))
                    .collect();
                all.push(serde_json::json!({"file": f, "valid": false, "errors": errors}));
            }
        }
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        Output::Text if bad > 0 => eprintln!("{bad} of {} files are invalid", files.len()),
        Output::Text => {}
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub(crate) fn load(file: &Path) -> anyhow::Result<sluice_engine::compile::Plan> {
    compile_file(file).map_err(|diags| {
        let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        anyhow::anyhow!("{} is not a valid pipeline:\n{}", file.display(), lines.join("\n"))
    })
}

pub(crate) fn graph(file: &Path, mermaid: bool) -> anyhow::Result<ExitCode> {
    let plan = load(file)?;
    print!("{}", if mermaid { to_mermaid(&plan) } else { to_dot(&plan) });
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn schema() -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&sluice_engine::spec::json_schema())?);
    Ok(ExitCode::SUCCESS)
}
