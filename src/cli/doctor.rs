//! `sluice doctor`: what this machine can run.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use sluice_worker::{ContainerExecutor, DockerConfig};

use crate::Output;

/// The NVIDIA driver's version, if the kernel module is loaded.
fn nvidia_driver() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    text.lines().next().map(|l| l.trim().to_string())
}

pub(crate) fn doctor(
    data_dir: &Path,
    output: Output,
    docker_host: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut config = DockerConfig::from_env(std::path::absolute(data_dir)?.display().to_string());
    if let Some(host) = docker_host {
        config.host = host;
    }
    let host = config.host.clone();
    let docker = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async { ContainerExecutor::new(config).probe().await });
    let gpu = nvidia_driver();
    if output == Output::Json {
        let doc = json!({
            "process": {"ok": true},
            "container": match &docker {
                Ok(info) => json!({"ok": true, "host": host, "version": info.version, "api_version": info.api_version}),
                Err(e) => json!({"ok": false, "host": host, "error": e.message}),
            },
            "wasm": {"ok": false, "error": "the wasm executor is not built yet"},
            "gpu": match &gpu {
                Some(driver) => json!({"ok": true, "driver": driver}),
                None => json!({"ok": false, "error": "no NVIDIA driver is loaded"}),
            },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("process    ok");
        match &docker {
            Ok(info) => {
                println!("container  ok: Docker {} (API {}) at {host}", info.version, info.api_version)
            }
            Err(e) => println!("container  unavailable: {}", e.message),
        }
        println!("wasm       unavailable: the wasm executor is not built yet");
        match &gpu {
            Some(driver) => println!("gpu        driver found: {driver}"),
            None => {
                println!("gpu        unavailable: no NVIDIA driver is loaded (/proc/driver/nvidia/version)")
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
