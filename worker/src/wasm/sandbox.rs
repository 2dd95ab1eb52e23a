//! A plugin's sandbox: its WASI context and the folder of its declared inputs.

use std::collections::BTreeMap;

use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::capture::Capture;
use super::{Inputs, WASM_INPUTS_DIR, WASM_WORK_DIR, WasmSpec};
use crate::error::ExecError;

/// The plugin's WASI context: its stdin document, its two output streams, the step's env,
/// and its folders. Nothing else: no network, no other files, no host environment.
pub(super) fn sandbox(
    spec: &WasmSpec,
    env: &BTreeMap<String, String>,
    inputs: &Inputs,
    stdout: &Capture,
    stderr: &Capture,
) -> Result<WasiP1Ctx, ExecError> {
    let input = serde_json::to_vec(&spec.input)
        .map_err(|e| ExecError::fatal(format!("cannot encode the input: {e}")))?;
    let mut b = WasiCtxBuilder::new();
    // Plugins already run on blocking threads: file calls need no extra hop.
    b.allow_blocking_current_thread(true);
    b.stdin(MemoryInputPipe::new(input));
    b.stdout(stdout.clone());
    b.stderr(stderr.clone());
    let name = spec.module.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    b.arg(name);
    for (k, v) in env {
        b.env(k, v);
    }
    b.preopened_dir(&spec.work_dir, WASM_WORK_DIR, FsPerms::ReadWrite).map_err(|e| {
        ExecError::fatal(format!("cannot open the work folder {}: {e:#}", spec.work_dir.display()))
    })?;
    if !inputs.files.is_empty() {
        link_inputs(inputs)?;
        b.preopened_dir(&inputs.dir, WASM_INPUTS_DIR, FsPerms::ReadOnly).map_err(|e| {
            ExecError::fatal(format!("cannot open the inputs folder {}: {e:#}", inputs.dir.display()))
        })?;
    }
    Ok(b.build_p1())
}

/// Puts the declared inputs, and nothing else, in a folder of their own: hard links where the
/// filesystem allows, copies elsewhere.
fn link_inputs(inputs: &Inputs) -> Result<(), ExecError> {
    let dir = &inputs.dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)
        .map_err(|e| ExecError::fatal(format!("cannot create the inputs folder {}: {e}", dir.display())))?;
    for input in &inputs.files {
        let target = dir.join(&input.name);
        if std::fs::hard_link(&input.source, &target).is_err() {
            std::fs::copy(&input.source, &target).map_err(|e| {
                ExecError::fatal(format!("cannot give the plugin its input {}: {e}", input.source.display()))
            })?;
        }
    }
    Ok(())
}
