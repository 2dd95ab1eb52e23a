//! What a plugin module must look like, and `sluice plugin check`.

use std::path::Path;

use wasmtime::{Engine, ExternType, Module};

use super::runtime::{compile, human_bytes, wasi_linker};
use super::{DEFAULT_MAX_MEMORY, WASI_P1};
use crate::error::ExecError;

/// What `sluice plugin check` found in a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleReport {
    /// The WASI functions it imports.
    pub imports: Vec<String>,
    /// Its memory's initial size, in bytes.
    pub initial_memory: u64,
}

/// What a plugin module must look like: a WASI preview 1 command that imports nothing else.
pub(super) fn check_shape(module: &Module) -> Result<ModuleReport, String> {
    let mut imports = Vec::new();
    for import in module.imports() {
        if import.module() != WASI_P1 {
            return Err(format!(
                "it imports `{}::{}`, but a plugin may import only WASI preview 1 (`{WASI_P1}`)",
                import.module(),
                import.name()
            ));
        }
        if !matches!(import.ty(), ExternType::Func(_)) {
            return Err(format!("it imports `{WASI_P1}::{}`, which is not a function", import.name()));
        }
        imports.push(import.name().to_string());
    }
    let mut start = false;
    let mut initial_memory = None;
    let mut reactor = false;
    for export in module.exports() {
        match (export.name(), export.ty()) {
            ("_start", ExternType::Func(f)) => {
                if f.params().len() != 0 || f.results().len() != 0 {
                    return Err(
                        "it exports `_start` with parameters or results; it must take and give nothing"
                            .into(),
                    );
                }
                start = true;
            }
            ("_start", _) => return Err("it exports `_start`, but not as a function".into()),
            ("memory", ExternType::Memory(m)) => initial_memory = Some(m.minimum() * 65536),
            ("_initialize", ExternType::Func(_)) => reactor = true,
            _ => {}
        }
    }
    if !start {
        return Err(if reactor {
            "it is a WASI reactor (it exports `_initialize`); a plugin must be a command that exports `_start`"
                .into()
        } else {
            "it does not export `_start`; a plugin must be a WASI command".into()
        });
    }
    let Some(initial_memory) = initial_memory else {
        return Err("it does not export its memory as `memory`, which WASI needs".into());
    };
    Ok(ModuleReport { imports, initial_memory })
}

/// Checks that a file is a plugin Sluice can run: valid WebAssembly (binary or text), a WASI
/// preview 1 command (exports `_start` and `memory`), importing only WASI functions that exist.
pub fn check_module(path: &Path) -> Result<ModuleReport, ExecError> {
    let engine = Engine::default();
    let module = compile(&engine, path)?;
    let report = check_shape(&module).map_err(|e| ExecError::fatal(format!("{}: {e}", path.display())))?;
    wasi_linker(&engine)?
        .instantiate_pre(&module)
        .map_err(|e| ExecError::fatal(format!("{}: {e:#}", path.display())))?;
    if report.initial_memory > DEFAULT_MAX_MEMORY {
        return Err(ExecError::fatal(format!(
            "{}: its memory starts at {}, over the default limit of {}; its steps must raise `wasm.max_memory`",
            path.display(),
            human_bytes(report.initial_memory),
            human_bytes(DEFAULT_MAX_MEMORY)
        )));
    }
    Ok(report)
}
