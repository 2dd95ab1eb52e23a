//! Which files a step's `artifacts:` names, in its work folder: a path or a glob, never one
//! that leads out of the folder (`..`, an absolute path, a symbolic link pointing out).

use std::path::{Component, Path, PathBuf};

/// One file a declaration matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The declared name (`model`).
    pub name: String,
    /// The file's path relative to the work folder, with `/` separators.
    pub file: String,
    /// Where it is.
    pub path: PathBuf,
}

/// Whether a declared path is a glob (`reports/*.html`) rather than one file.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

/// Why a declared path can never be inside the work folder, if it cannot.
pub fn check_pattern(pattern: &str) -> Option<String> {
    let p = Path::new(pattern);
    if pattern.is_empty() {
        return Some("is empty".into());
    }
    if p.is_absolute() {
        return Some(format!(
            "`{pattern}` is absolute; artifact paths are relative to the step's work folder"
        ));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Some(format!("`{pattern}` leads out of the step's work folder (`..`)"));
    }
    if is_glob(pattern)
        && let Err(e) = globset::Glob::new(pattern)
    {
        return Some(format!("`{pattern}` is not a valid glob: {e}"));
    }
    None
}

/// `pattern` without leading `./` (which names the folder itself, and which a glob matcher
/// would never match against a relative path).
pub(crate) fn plain(pattern: &str) -> &str {
    let mut p = pattern;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest.trim_start_matches('/');
    }
    p
}

/// The files `declared` (name, path or glob) names in `folder`, in a stable order. An error
/// names the artifact: missing, or leading out of the folder.
pub fn resolve(folder: &Path, declared: &[(String, String)]) -> Result<Vec<Declared>, String> {
    let root = folder
        .canonicalize()
        .map_err(|e| format!("cannot read the step's work folder {}: {e}", folder.display()))?;
    let mut out = Vec::new();
    for (name, pattern) in declared {
        let pattern = plain(pattern);
        if let Some(why) = check_pattern(pattern) {
            return Err(format!("artifact `{name}`: {why}"));
        }
        if !is_glob(pattern) {
            let path = inside(&root, &root.join(pattern), name)?.ok_or_else(|| {
                format!(
                    "the step declares artifact `{name}` ({pattern}) but did not write it in {}",
                    root.display()
                )
            })?;
            out.push(Declared { name: name.clone(), file: slash(Path::new(pattern)), path });
            continue;
        }
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("artifact `{name}`: `{pattern}` is not a valid glob: {e}"))?
            .compile_matcher();
        // Walk only below the pattern's plain prefix (`reports/` of `reports/*.html`).
        let prefix: PathBuf = Path::new(pattern)
            .components()
            .take_while(|c| !is_glob(&c.as_os_str().to_string_lossy()))
            .collect();
        let start = root.join(&prefix);
        let mut found = Vec::new();
        if start.is_dir() {
            for entry in walkdir::WalkDir::new(&start).follow_links(false).sort_by_file_name() {
                let entry =
                    entry.map_err(|e| format!("artifact `{name}`: cannot list {}: {e}", start.display()))?;
                if entry.file_type().is_dir() {
                    continue;
                }
                let Ok(rel) = entry.path().strip_prefix(&root) else { continue };
                if !matcher.is_match(rel) {
                    continue;
                }
                if let Some(path) = inside(&root, entry.path(), name)? {
                    found.push(Declared { name: name.clone(), file: slash(rel), path });
                }
            }
        }
        if found.is_empty() {
            return Err(format!(
                "the step declares artifact `{name}` ({pattern}) but no file in {} matches it",
                root.display()
            ));
        }
        out.extend(found);
    }
    Ok(out)
}

/// `path` as a regular file inside `root` (links followed, then checked to stay inside);
/// `None` if there is nothing there.
fn inside(root: &Path, path: &Path, name: &str) -> Result<Option<PathBuf>, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("artifact `{name}`: cannot read {}: {e}", path.display())),
    };
    let real = if meta.file_type().is_symlink() {
        match path.canonicalize() {
            Ok(r) => r,
            Err(_) => return Ok(None),
        }
    } else {
        // The folders on the way may be links too.
        path.canonicalize().map_err(|e| format!("artifact `{name}`: cannot read {}: {e}", path.display()))?
    };
    if !real.starts_with(root) {
        return Err(format!(
            "artifact `{name}`: {} leads out of the step's work folder (to {}); it is not stored",
            path.display(),
            real.display()
        ));
    }
    if !real.is_file() {
        return Err(format!("artifact `{name}`: {} is not a regular file", path.display()));
    }
    Ok(Some(real))
}

fn slash(p: &Path) -> String {
    p.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}
