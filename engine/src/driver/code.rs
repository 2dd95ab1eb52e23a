//! The data folder's copies of the code files (plugin modules) that plans reference, by
//! content: `<data dir>/code/<sha256>.<ext>`. A plan keeps each file's digest as it was when
//! compiled; the copy is taken when a run is created, so deleting or editing the file after
//! that changes nothing for the run (its version covers the content it runs).

use std::io::Write;
use std::path::{Path, PathBuf};

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
        if kept.is_file() {
            return Ok(kept);
        }
        // A run created before runs kept their code: take the copy now, if the file is as it was.
        self.keep_code_file(plan, file).map_err(|e| e.to_string())
    }

    fn code_path(&self, file: &CodeFile) -> PathBuf {
        let ext = Path::new(&file.path).extension().and_then(|e| e.to_str()).unwrap_or("bin");
        self.store.dir().join("code").join(format!("{}.{ext}", file.sha256))
    }

    fn keep_code_file(&self, plan: &Plan, file: &CodeFile) -> Result<PathBuf> {
        let kept = self.code_path(file);
        if kept.is_file() {
            return Ok(kept);
        }
        let source = plan.base_dir.join(&file.path);
        let failed = |detail: String| EngineError::Code { path: source.clone(), detail };
        let bytes = std::fs::read(&source).map_err(|e| failed(format!("cannot read it: {e}")))?;
        if hex(&Sha256::digest(&bytes)) != file.sha256 {
            return Err(failed(format!(
                "it changed since the pipeline was compiled (its version has sha256 {}); compile the pipeline again",
                file.sha256
            )));
        }
        let dir = kept.parent().unwrap_or(self.store.dir());
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            // Write aside, make it durable, then put it in place: a copy is whole or absent.
            let tmp = dir.join(format!(".{}.{}", file.sha256, std::process::id()));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            let mut perms = f.metadata()?.permissions();
            perms.set_readonly(true);
            std::fs::set_permissions(&tmp, perms)?;
            std::fs::rename(&tmp, &kept)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| failed(format!("cannot keep a copy in {}: {e}", dir.display())))?;
        Ok(kept)
    }
}
