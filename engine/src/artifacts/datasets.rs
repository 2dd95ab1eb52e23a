//! Dataset versions: the external files and folders a step's `inputs:` names, hashed when an
//! attempt starts. A file whose (size, mtime, inode) are what they were when it was last
//! hashed is not read again (as DVC does); any difference, and it is.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{SHA256, hash_file, is_glob};

/// One dataset version an attempt read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetVersion {
    /// The file or folder, absolute.
    pub path: String,
    /// A file's sha256; a folder's is the sha256 of its manifest (each file's digest and
    /// relative path, sorted).
    pub digest: String,
    pub size: u64,
    /// How many files it holds (1 for a file).
    pub files: u64,
}

/// What the index knows of a file it hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashed {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub digest: String,
}

/// Where hashes of unchanged files are remembered (the store's `hash_index` tree).
pub trait HashIndex {
    fn get(&self, path: &Path) -> Option<Hashed>;
    fn put(&self, path: &Path, hashed: &Hashed);
}

/// How many files were read and how many were taken from the index (for the attempt's log).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HashStats {
    pub hashed: u64,
    pub indexed: u64,
}

/// The dataset versions `patterns` (files, folders or globs; relative ones against `base`)
/// name now. A pattern that names nothing is an error naming it.
pub fn hash_inputs(
    base: &Path,
    patterns: &[String],
    index: &dyn HashIndex,
) -> Result<(Vec<DatasetVersion>, HashStats), String> {
    let mut stats = HashStats::default();
    let mut out = Vec::new();
    for pattern in patterns {
        let paths = expand(base, pattern)?;
        for path in paths {
            out.push(version(&path, index, &mut stats).map_err(|e| format!("input `{pattern}`: {e}"))?);
        }
    }
    Ok((out, stats))
}

fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let pattern = super::declare::plain(pattern);
    let full = base.join(pattern);
    // A file that exists by that name is that file, whatever its name holds (`data[1].csv`).
    if !is_glob(pattern) || full.exists() {
        if !full.exists() {
            return Err(format!("input `{pattern}` does not exist ({})", full.display()));
        }
        return Ok(vec![std::path::absolute(&full).unwrap_or(full)]);
    }
    // The folder is literal text, even when its name holds glob characters.
    let full_text = format!("{}/{pattern}", globset::escape(&base.to_string_lossy()).trim_end_matches('/'));
    let matcher = globset::GlobBuilder::new(&full_text)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("input `{pattern}` is not a valid glob: {e}"))?
        .compile_matcher();
    let prefix: PathBuf = base.join(
        Path::new(pattern)
            .components()
            .take_while(|c| !is_glob(&c.as_os_str().to_string_lossy()))
            .collect::<PathBuf>(),
    );
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(&prefix).follow_links(true).sort_by_file_name() {
        let Ok(entry) = entry else { continue };
        if matcher.is_match(entry.path()) {
            found.push(std::path::absolute(entry.path()).unwrap_or_else(|_| entry.path().to_path_buf()));
        }
    }
    if found.is_empty() {
        return Err(format!("input `{pattern}` matches nothing under {}", prefix.display()));
    }
    Ok(found)
}

fn version(path: &Path, index: &dyn HashIndex, stats: &mut HashStats) -> Result<DatasetVersion, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = path.display().to_string();
    if meta.is_file() {
        let hashed = file_digest(path, &meta, index, stats)?;
        return Ok(DatasetVersion { path: text, digest: hashed.digest, size: hashed.size, files: 1 });
    }
    let mut manifest = String::new();
    let (mut size, mut files) = (0u64, 0u64);
    for entry in walkdir::WalkDir::new(path).follow_links(true).sort_by_file_name() {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", path.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let meta = entry.metadata().map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
        let hashed = file_digest(entry.path(), &meta, index, stats)?;
        let rel = entry.path().strip_prefix(path).unwrap_or(entry.path());
        manifest.push_str(&format!("{}  {}\n", hashed.digest, rel.display()));
        size += hashed.size;
        files += 1;
    }
    let digest = format!("{SHA256}{:x}", Sha256::digest(manifest.as_bytes()));
    Ok(DatasetVersion { path: text, digest, size, files })
}

fn file_digest(
    path: &Path,
    meta: &std::fs::Metadata,
    index: &dyn HashIndex,
    stats: &mut HashStats,
) -> Result<Hashed, String> {
    let now = |m: &std::fs::Metadata| (m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec(), m.ino());
    let (size, mtime_ns, inode) = now(meta);
    if let Some(known) = index.get(path)
        && (known.size, known.mtime_ns, known.inode) == (size, mtime_ns, inode)
    {
        stats.indexed += 1;
        return Ok(known);
    }
    let (digest, read) = hash_file(path).map_err(|e| e.to_string())?;
    stats.hashed += 1;
    let hashed = Hashed { size: read, mtime_ns, inode, digest };
    // Written while hashing: the index would keep a digest the file no longer has. Written
    // within the last 2 s: a rewrite of the same size within the file system's timestamp
    // granularity would look unchanged (git's "racily clean" rule), so it is hashed next time.
    let after = std::fs::metadata(path).map(|m| now(&m)).ok();
    let settled = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64 - mtime_ns > 2_000_000_000)
        .unwrap_or(false);
    if after == Some((read, mtime_ns, inode)) && settled {
        index.put(path, &hashed);
    }
    Ok(hashed)
}
