//! `sluice doctor`: what this machine can run.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;
use sluice_worker::{
    ContainerExecutor, DockerConfig, SlurmConfig, WasmConfig, WasmExecutor, cluster_info, gpu_slots,
    gpu_status, nvidia_driver,
};

use crate::Output;

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
    let slurm_config = SlurmConfig::new(config.owner.clone());
    let (docker, slurm) =
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
            (ContainerExecutor::new(config).probe().await, cluster_info(&slurm_config).await)
        });
    let wasm = WasmExecutor::new(WasmConfig::in_data_dir(&std::path::absolute(data_dir)?)).probe();
    let driver = nvidia_driver();
    let gpu = gpu_status();
    if output == Output::Json {
        let doc = json!({
            "process": {"ok": true},
            "container": match &docker {
                Ok(info) => json!({"ok": true, "host": host, "version": info.version, "api_version": info.api_version}),
                Err(e) => json!({"ok": false, "host": host, "error": e.message}),
            },
            "wasm": match &wasm {
                Ok(info) => json!({"ok": true, "wasmtime": info.wasmtime, "pooling": info.pooling, "cache": info.cache_dir}),
                Err(e) => json!({"ok": false, "error": e.message}),
            },
            "gpu": match &gpu {
                Ok(device) => json!({"ok": true, "device": device, "driver": driver, "slots": gpu_slots()}),
                Err(e) => json!({"ok": false, "error": e, "driver": driver, "trainer": "train: steps run on the CPU (device: auto) or fail (device: gpu)"}),
            },
            "slurm": match &slurm {
                Ok(info) => json!({"ok": true, "version": info.version, "partitions": info.partitions.iter().map(|(name, state, nodes, gres)| json!({
                    "name": name.trim_end_matches('*'), "default": name.ends_with('*'), "state": state, "nodes": nodes,
                    "gres": (gres != "(null)").then_some(gres),
                })).collect::<Vec<_>>()}),
                Err(e) => json!({"ok": false, "error": e}),
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
        match &wasm {
            Ok(info) => println!(
                "wasm       ok: wasmtime {}, {} allocator, module cache {}",
                info.wasmtime,
                if info.pooling { "pooling" } else { "on-demand" },
                info.cache_dir.as_ref().map_or("off".into(), |d| d.display().to_string())
            ),
            Err(e) => println!("wasm       unavailable: {}", e.message),
        }
        match &gpu {
            Ok(device) => println!(
                "gpu        ok: {device}, {} slot(s) in the GPU pool{}",
                gpu_slots(),
                driver.as_ref().map_or(String::new(), |d| format!("; {d}"))
            ),
            Err(e) => println!("gpu        unavailable: {e} (train: steps run on the CPU)"),
        }
        match &slurm {
            Ok(info) => {
                let parts: Vec<String> = info
                    .partitions
                    .iter()
                    .map(|(name, state, nodes, gres)| {
                        let gres = if gres == "(null)" { String::new() } else { format!(", {gres}") };
                        format!("{name} ({state}, {nodes} node(s){gres})")
                    })
                    .collect();
                println!("slurm      ok: Slurm {}; partitions: {}", info.version, parts.join(", "))
            }
            Err(e) => println!("slurm      unavailable: {e} (`slurm:` steps and --slurm need a cluster)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
