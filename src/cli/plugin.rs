//! `sluice plugin check`: is a file a plugin Sluice can run?

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use crate::Output;

pub(crate) fn check(files: &[PathBuf], output: Output) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    let mut bad = 0;
    for f in files {
        match sluice_worker::check_module(f) {
            Ok(report) => {
                if output == Output::Text {
                    println!(
                        "{}: ok (WASI preview 1 command; memory starts at {} KiB; imports {})",
                        f.display(),
                        report.initial_memory / 1024,
                        if report.imports.is_empty() { "nothing".into() } else { report.imports.join(", ") }
                    );
                }
                all.push(json!({"file": f, "valid": true, "imports": report.imports, "initial_memory": report.initial_memory}));
            }
            Err(e) => {
                bad += 1;
                if output == Output::Text {
                    println!("{}", e.message);
                }
                all.push(json!({"file": f, "valid": false, "error": e.message}));
            }
        }
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        Output::Text if bad > 0 => eprintln!("{bad} of {} files are not valid plugins", files.len()),
        Output::Text => {}
    }
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
