//! The data folder's copies of the code files (plugin modules) that plans reference, by
//! content: `<data dir>/code/<sha256>/<file name>` (the file keeps its name, so a plugin's
//! argv[0] and the messages about it name the file its author wrote). A plan keeps each file's digest as it was when
//! compiled; the copy is taken when a run is created, so deleting or editing the file after
//! that changes nothing for the run (its version covers the content it runs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::{Engine, EngineError, Result};
use crate::compile::{CodeFile, Plan, hex};

impl Engine {
    /// Keeps a copy of every code file of `plan` (once per content), durably.
    pub(crate) fn keep_code(&self, plan: &Plan) -> Result<()> {
        for file in &plan.code {
            self.keep_code_file(plan, file)?;
        }
        Ok(())
    }

    /// Where the copy of a run's code file `path` (as the spec writes it) is, for an attempt.
    pub(crate) fn code_copy(&self, plan: &Plan, path: &str) -> std::result::Result<PathBuf, String> {
        let file = plan
            .code_file(path)
            .ok_or_else(|| format!("the run's plan does not list the code file `{path}`"))?;
        let kept = self.code_path(file);
        let mut seen = self.kept_code.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(&kept) || kept.is_file() {
            seen.insert(kept.clone());
            return Ok(kept);
        }
        drop(seen);
        // The copy is gone (a data folder restored without `code/`), or the run's version was
        // stored before versions kept their code (format 1: its plan was compiled again from
        // its text, so its digests are of the files as they are now). Take the copy now.
        self.keep_code_file(plan, file).map_err(|e| e.to_string())
    }

    fn code_path(&self, file: &CodeFile) -> PathBuf {
        let name = Path::new(&file.path).file_name().map_or_else(|| "code".into(), |n| n.to_owned());
        self.store.dir().join("code").join(&file.sha256).join(name)
    }

    fn keep_code_file(&self, plan: &Plan, file: &CodeFile) -> Result<PathBuf> {
        let kept = self.code_path(file);
        if kept.is_file() {
            return Ok(kept);
        }
        let source = plan.base_dir.join(&file.path);
        let failed = |detail: String| EngineError::Code { path: source.clone(), detail };
        let bytes = crate::compile::read_code(&source).map_err(failed)?;
        if hex(&Sha256::digest(&bytes)) != file.sha256 {
            return Err(failed(format!(
                "it changed since the pipeline was compiled (its version has sha256 {}); compile the pipeline again",
                file.sha256
            )));
        }
        let dir = kept.parent().unwrap_or(self.store.dir());
        let write = || -> std::io::Result<()> {
            make_dirs(dir)?;
            // Write aside under a name no other writer uses, make it durable, then put it in
            // place: a copy is whole or absent, and two runs keeping it at once both succeed.
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let tmp =
                dir.join(format!(".tmp-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            // Read-only before it is in place: whoever finds it there finds it finished.
            let written = f.write_all(&bytes).and_then(|_| f.sync_all()).and_then(|_| {
                let mut perms = f.metadata()?.permissions();
                perms.set_readonly(true);
                f.set_permissions(perms)
            });
            if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, &kept)) {
                let _ = std::fs::remove_file(&tmp); // only our own temporary file
                return Err(e);
            }
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| failed(format!("cannot keep a copy in {}: {e}", dir.display())))?;
        Ok(kept)
    }
}

/// Creates `dir` and the folders above it that are missing, syncing each parent that got a
/// new entry, so that the copy's folder outlives a power loss with the record that needs it.
fn make_dirs(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        make_dirs(parent)?;
        match std::fs::create_dir(dir) {
            Ok(()) => std::fs::File::open(parent)?.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
