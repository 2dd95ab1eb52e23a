//! The content-addressed artifact store of a data folder: files a step declared it produces,
//! hashed (sha256, streaming) and kept once per content under `artifacts/sha256/ab/cdef…`,
//! read-only, checked against their digest on every read.
//!
//! Placing a file survives a SIGKILL at any point: it is linked (or copied) to a temporary
//! name, hashed there, made durable and only then renamed to its digest, so a file under a
//! digest is always whole. Records of who produced what are the store's (`store::artifacts`).

mod datasets;
mod declare;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use datasets::{DatasetVersion, HashIndex, HashStats, Hashed, hash_inputs};
pub use declare::{Declared, check_pattern, is_glob, resolve};

/// The prefix of every digest this store writes.
pub const SHA256: &str = "sha256:";

/// What can go wrong reading or placing an artifact.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("`{0}` is not an artifact digest (expected sha256: and 64 hex digits)")]
    BadDigest(String),
    #[error("there is no artifact {0} in this data folder")]
    Missing(String),
    /// The bytes under a digest hash to something else: a bit flip, an edit in place.
    #[error("the artifact {digest} is damaged: its file {} now hashes to {found}; it is not used", path.display())]
    Damaged { digest: String, found: String, path: PathBuf },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ArtifactError + 'a {
    move |source| ArtifactError::Io { what, path: path.to_path_buf(), source }
}

/// A file placed in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub digest: String,
    pub size: u64,
    /// Whether the store already held this content (nothing was added).
    pub existed: bool,
}

/// Where a placement is, for [`Blobs::place_watched`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Hashed and synced under a temporary name, not yet under its digest.
    Written,
    /// Under its digest; its record is not written yet.
    Stored,
}

/// A file the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub digest: String,
    pub size: u64,
    /// When it was placed, ms since the epoch.
    pub placed_ms: i64,
}

/// The artifact store under a data folder.
#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

/// The chunk hashing and copying read at once.
const CHUNK: usize = 1 << 20;

impl Blobs {
    /// The store of the data folder `data_dir` (made when the first file is placed).
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Blobs { root: data_dir.join("artifacts") }
    }

    /// Where the content of `digest` lives (whether it is there or not).
    pub fn path(&self, digest: &str) -> Result<PathBuf, ArtifactError> {
        let hex = hex_of(digest)?;
        Ok(self.root.join("sha256").join(&hex[..2]).join(&hex[2..]))
    }

    /// Places the regular file `source` in the store: hard-linked when the store is on the
    /// same file system (no second copy; the file becomes read-only, as both names are one
    /// file), copied otherwise. Content the store holds already is not added again.
    pub fn place(&self, source: &Path) -> Result<Placed, ArtifactError> {
        self.place_watched(source, &|_| {})
    }

    /// [`Blobs::place`], telling `watch` where it is (the crash tests kill the engine there).
    pub fn place_watched(&self, source: &Path, watch: &dyn Fn(Stage)) -> Result<Placed, ArtifactError> {
        let tmp_dir = self.root.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(io("cannot create", &tmp_dir))?;
        let tmp = tmp_dir.join(format!("{}.{}", std::process::id(), unique()));
        // A link first: the bytes hashed are the bytes kept, whatever happens to `source`'s
        // name meanwhile.
        let (digest, size) = match std::fs::hard_link(source, &tmp) {
            Ok(()) => hash_file(&tmp)?,
            Err(_) => copy_hashing(source, &tmp)?,
        };
        let target = self.path(&digest)?;
        // Content the store holds already is put in place again all the same (a rename over
        // it): that heals a stored copy damaged since, and tells `gc` it was just placed.
        let existed = target.exists();
        let file = File::open(&tmp).map_err(io("cannot open", &tmp))?;
        let mut perms = file.metadata().map_err(io("cannot read", &tmp))?.permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&tmp, perms).map_err(io("cannot make read-only", &tmp))?;
        file.sync_all().map_err(io("cannot sync", &tmp))?;
        watch(Stage::Written);
        let parent = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        std::fs::rename(&tmp, &target).map_err(io("cannot store", &target))?;
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
        watch(Stage::Stored);
        Ok(Placed { digest, size, existed })
    }

    /// Checks the content under `digest` against it; returns its path and size.
    pub fn verify(&self, digest: &str) -> Result<(PathBuf, u64), ArtifactError> {
        let path = self.path(digest)?;
        if !path.is_file() {
            return Err(ArtifactError::Missing(digest.to_string()));
        }
        let (found, size) = hash_file(&path)?;
        if found != digest {
            return Err(ArtifactError::Damaged { digest: digest.to_string(), found, path });
        }
        Ok((path, size))
    }

    /// Puts the content of `digest`, checked first, at `out` in place of what is there: a
    /// hard link to the stored file (read-only, like it), or a checked copy across file
    /// systems. How a cached step's files come back into its work folder.
    pub fn restore(&self, digest: &str, out: &Path) -> Result<u64, ArtifactError> {
        let (path, size) = self.verify(digest)?;
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        }
        match std::fs::remove_file(out) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot replace", out)(e)),
        }
        match std::fs::hard_link(&path, out) {
            Ok(()) => Ok(size),
            Err(_) => self.copy_out(digest, out),
        }
    }

    /// Every stored file: its digest, size and when it was placed (its inode's change time:
    /// placing makes the file read-only, which sets it).
    pub fn stored(&self) -> Vec<Stored> {
        let mut out = Vec::new();
        let Ok(prefixes) = std::fs::read_dir(self.root.join("sha256")) else { return out };
        for prefix in prefixes.flatten() {
            let head = prefix.file_name().to_string_lossy().into_owned();
            let Ok(files) = std::fs::read_dir(prefix.path()) else { continue };
            for f in files.flatten() {
                let rest = f.file_name().to_string_lossy().into_owned();
                let digest = format!("{SHA256}{head}{rest}");
                if hex_of(&digest).is_err() {
                    continue;
                }
                let Ok(meta) = f.metadata() else { continue };
                use std::os::unix::fs::MetadataExt;
                out.push(Stored {
                    digest,
                    size: meta.len(),
                    placed_ms: meta.ctime() * 1000 + meta.ctime_nsec() / 1_000_000,
                });
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        out
    }

    /// Removes the stored file of `digest` (its records stay, saying it is gone).
    pub fn remove(&self, digest: &str) -> Result<(), ArtifactError> {
        let path = self.path(digest)?;
        std::fs::remove_file(&path).map_err(io("cannot remove", &path))
    }

    /// Moves a stored file that failed its check to `artifacts/damaged/` (kept for a look,
    /// never read as an artifact again), so that the next placement of that content stores it
    /// whole.
    pub fn quarantine(&self, digest: &str) {
        let (Ok(path), Ok(hex)) = (self.path(digest), hex_of(digest)) else { return };
        let dir = self.root.join("damaged");
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::rename(&path, dir.join(format!("{hex}.{}", unique())));
        }
    }

    /// Copies the content of `digest` to `out`, checking it on the way: `out` appears, whole,
    /// only when the bytes match; otherwise nothing is written there.
    pub fn copy_out(&self, digest: &str, out: &Path) -> Result<u64, ArtifactError> {
        let path = self.path(digest)?;
        if !path.is_file() {
            return Err(ArtifactError::Missing(digest.to_string()));
        }
        let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.sluice-{}",
            out.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            unique()
        ));
        let (found, size) = match copy_hashing(&path, &tmp) {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if found != digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(ArtifactError::Damaged { digest: digest.to_string(), found, path });
        }
        std::fs::rename(&tmp, out).map_err(io("cannot write", out))?;
        Ok(size)
    }

    /// Removes what a placement killed midway left behind (temporary files only: a file under
    /// a digest is always whole).
    pub fn sweep_temporary(&self) {
        let Ok(entries) = std::fs::read_dir(self.root.join("tmp")) else { return };
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// `sha256:<hex>` checked for shape; returns the hex.
pub fn hex_of(digest: &str) -> Result<&str, ArtifactError> {
    let hex = digest.strip_prefix(SHA256).unwrap_or(digest);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(hex)
    } else {
        Err(ArtifactError::BadDigest(digest.to_string()))
    }
}

/// A digest as the store writes it, from the hex digits or the full form.
pub fn normalize(digest: &str) -> Result<String, ArtifactError> {
    Ok(format!("{SHA256}{}", hex_of(&digest.to_ascii_lowercase())?))
}

/// The sha256 digest and size of a file, read in chunks.
pub fn hash_file(path: &Path) -> Result<(String, u64), ArtifactError> {
    let mut f = File::open(path).map_err(io("cannot open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("{SHA256}{:x}", hasher.finalize()), size))
}

/// Copies `from` to a new file `to`, hashing what it copies; the copy is synced.
fn copy_hashing(from: &Path, to: &Path) -> Result<(String, u64), ArtifactError> {
    let mut src = File::open(from).map_err(io("cannot open", from))?;
    let mut dst = File::create_new(to).map_err(io("cannot create", to))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(io("cannot read", from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io("cannot write", to))?;
        size += n as u64;
    }
    dst.sync_all().map_err(io("cannot sync", to))?;
    Ok((format!("{SHA256}{:x}", hasher.finalize()), size))
}

/// A name no other placement of this process uses at the same time.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The media type of a file, by its name (`application/octet-stream` when unknown).
pub fn media_type(file: &str) -> String {
    let ext = Path::new(file).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        // What ML pipelines write most, which general tables miss.
        "safetensors" => "application/vnd.safetensors".into(),
        "parquet" => "application/vnd.apache.parquet".into(),
        "onnx" => "application/onnx".into(),
        "jsonl" | "ndjson" => "application/x-ndjson".into(),
        _ => mime_guess::from_ext(&ext).first_raw().unwrap_or("application/octet-stream").to_string(),
    }
}

#[cfg(test)]
mod tests;
