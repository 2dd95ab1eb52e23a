//! The pipelines a server runs: every `*.yaml`, `*.yml` and `*.json` file of its DAG folder,
//! compiled. A file that fails to compile is reported and left out; the others keep running.
//! The folder is scanned again periodically, and a file whose size, time or content changed
//! is compiled again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::compile::{Diagnostic, Plan, compile_file};
use crate::trigger::cron::CronSchedule;

/// A file that could not be loaded, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invalid {
    pub file: String,
    pub errors: Vec<String>,
}

/// A loaded pipeline.
#[derive(Debug, Clone)]
pub struct Entry {
    pub plan: Arc<Plan>,
    pub schedule: Option<CronSchedule>,
}

/// What the folder holds now.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub pipelines: BTreeMap<String, Entry>,
    pub invalid: Vec<Invalid>,
}

/// A file's size and modification time, to tell whether it changed.
type Stamp = (u64, Option<SystemTime>);

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path).map(|m| (m.len(), m.modified().ok())).unwrap_or((0, None))
}

/// A file changed this recently may still be being written: what was read of it is not
/// trusted to be final, and the file is read again at the next scan.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

fn settled(s: &Stamp) -> bool {
    s.1.and_then(|t| t.elapsed().ok()).is_some_and(|age| age >= SETTLE)
}

/// One file as last seen, with the code files (plugin modules) its plan referenced: editing
/// one of those is a new DAG version too.
struct Seen {
    stamp: Stamp,
    code: Vec<(PathBuf, Stamp)>,
    result: Result<Arc<Plan>, Vec<String>>,
    /// Every file read was older than [`SETTLE`] and the file compiled: a scan may keep it as
    /// long as nothing changes. A file that does not compile is compiled again at every scan
    /// (what it lacks, a module, may appear).
    keep: bool,
}

impl Seen {
    fn unchanged(&self, now: Stamp) -> bool {
        self.keep && self.stamp == now && self.code.iter().all(|(path, was)| stamp(path) == *was)
    }
}

/// Scans the folder, keeping compiled files between scans.
pub struct Loader {
    dir: PathBuf,
    seen: HashMap<PathBuf, Seen>,
}

impl Loader {
    pub fn new(dir: &Path) -> Self {
        Loader { dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()), seen: HashMap::new() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Scans the folder; returns the new catalog when anything changed since the last scan.
    pub fn scan(&mut self) -> Option<Catalog> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the DAG folder");
                Vec::new()
            }
        };
        files.sort();
        let mut changed = files.len() != self.seen.len() || files.iter().any(|f| !self.seen.contains_key(f));
        self.seen.retain(|p, _| files.contains(p));
        for f in &files {
            let now = stamp(f);
            if self.seen.get(f).is_some_and(|s| s.unchanged(now)) {
                continue;
            }
            let result = compile_file(f)
                .map(Arc::new)
                .map_err(|diags| diags.iter().map(Diagnostic::to_string).collect::<Vec<_>>());
            let same = match (self.seen.get(f).map(|s| &s.result), &result) {
                (Some(Ok(a)), Ok(b)) => a.hash == b.hash,
                (Some(Err(a)), Err(b)) => a == b,
                _ => false,
            };
            match &result {
                Ok(p) if !same => {
                    tracing::info!(file = %f.display(), pipeline = p.name(), version = p.short_hash(), "loaded a pipeline")
                }
                Err(errors) if !same => {
                    tracing::warn!(file = %f.display(), errors = errors.len(), first = %errors[0], "a pipeline file does not compile; it is skipped")
                }
                _ => {}
            }
            changed |= !same;
            let code: Vec<(PathBuf, Stamp)> = match &result {
                Ok(p) => {
                    p.code.iter().map(|c| p.base_dir.join(&c.path)).map(|c| (c.clone(), stamp(&c))).collect()
                }
                Err(_) => Vec::new(),
            };
            let keep = result.is_ok() && settled(&now) && code.iter().all(|(_, s)| settled(s));
            self.seen.insert(f.clone(), Seen { stamp: now, code, result, keep });
        }
        changed.then(|| self.catalog())
    }

    fn catalog(&self) -> Catalog {
        let mut files: Vec<(&PathBuf, &Seen)> = self.seen.iter().collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Catalog::default();
        let mut by_name: HashMap<String, PathBuf> = HashMap::new();
        for (path, seen) in files {
            let file = path.display().to_string();
            match &seen.result {
                Err(errors) => out.invalid.push(Invalid { file, errors: errors.clone() }),
                Ok(plan) => {
                    if let Some(first) = by_name.get(plan.name()) {
                        out.invalid.push(Invalid {
                            file,
                            errors: vec![format!(
                                "the pipeline name `{}` is already used by {}; this file is skipped",
                                plan.name(),
                                first.display()
                            )],
                        });
                        continue;
                    }
                    by_name.insert(plan.name().to_string(), path.clone());
                    // Compilation checked the expression already.
                    let schedule = plan
                        .spec
                        .schedule
                        .as_ref()
                        .filter(|s| s.enabled)
                        .and_then(|s| CronSchedule::parse(&s.cron, s.timezone.as_deref()).ok());
                    out.pipelines.insert(plan.name().to_string(), Entry { plan: plan.clone(), schedule });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: a\nsteps:\n  s: {process: {command: [\"true\"]}}\n";

    #[test]
    fn bad_files_are_reported_and_changes_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        std::fs::write(dir.path().join("b.yaml"), "name: b\nsteps: {s: {process: {}}}\n").unwrap();
        std::fs::write(dir.path().join("c.yaml"), GOOD).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a pipeline").unwrap();
        let mut l = Loader::new(dir.path());
        let c = l.scan().unwrap();
        assert_eq!(c.pipelines.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(c.invalid.len(), 2);
        assert!(
            c.invalid[0].file.ends_with("b.yaml") && c.invalid[0].errors[0].contains("b.yaml:2"),
            "{c:?}"
        );
        assert!(c.invalid[1].errors[0].contains("already used by"), "{c:?}");
        assert!(l.scan().is_none(), "nothing changed");
        // Fix b, rename c's pipeline, remove nothing: both load.
        std::fs::write(dir.path().join("b.yaml"), GOOD.replace("name: a", "name: b")).unwrap();
        std::fs::write(dir.path().join("c.yaml"), GOOD.replace("name: a", "name: cee")).unwrap();
        let c = l.scan().unwrap();
        assert_eq!(c.pipelines.keys().collect::<Vec<_>>(), ["a", "b", "cee"]);
        assert!(c.invalid.is_empty());
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        assert_eq!(l.scan().unwrap().pipelines.len(), 2);
    }

    #[test]
    fn an_edited_module_is_a_new_version_of_its_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("p.wat");
        std::fs::write(&module, "(module (memory (export \"memory\") 1) (func (export \"_start\")))")
            .unwrap();
        std::fs::write(dir.path().join("w.yaml"), "name: w\nsteps:\n  s: {wasm: {module: p.wat}}\n").unwrap();
        let mut l = Loader::new(dir.path());
        let first = l.scan().unwrap().pipelines["w"].plan.hash.clone();
        assert!(l.scan().is_none(), "nothing changed");
        std::fs::write(&module, "(module (memory (export \"memory\") 1) (func (export \"_start\") nop nop))")
            .unwrap();
        let second = l.scan().expect("the module changed").pipelines["w"].plan.hash.clone();
        assert_ne!(first, second);
    }
}
