//! The content-addressed artifact store of a data folder: files a step declared it produces,
//! hashed (sha256, streaming) and kept once per content under `artifacts/sha256/ab/cdef…`,
//! read-only, checked against their digest on every read.
//!
//! Placing a file survives a SIGKILL at any point: it is linked (or copied) to a temporary
//! name, hashed there, made durable and only then renamed to its digest, so a file under a
//! digest is always whole. Records of who produced what are the store's (`store::artifacts`).
//!
//! In an encrypted data folder (`security::crypt`) a file is instead encrypted into the store
//! as it is hashed (on a second thread), kept as `….sealed`, and decrypted on every read; its
//! digest stays that of its plaintext. A step that reads an upstream artifact by `.path` gets
//! a plaintext copy under `artifacts/open/`, kept while an attempt that reads it runs.

mod datasets;
mod declare;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::security::crypt::{self, CryptError, DataKey};

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
    /// An encrypted artifact that does not decrypt: damaged, cut off, or another key's.
    #[error("the artifact {digest} cannot be decrypted (its file {}): {source}", path.display())]
    Sealed {
        digest: String,
        path: PathBuf,
        #[source]
        source: CryptError,
    },
    #[error(
        "the artifact {0} is encrypted and no key is given: set SLUICE_ENCRYPTION_KEY_FILE to the data folder's key file"
    )]
    NoKey(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ArtifactError {
    /// Whether the stored bytes themselves are bad (not a key, a digest or the disk): such a
    /// file is quarantined and the content placed again when a step produces it.
    pub fn is_damaged(&self) -> bool {
        match self {
            ArtifactError::Damaged { .. } => true,
            ArtifactError::Sealed { source, .. } => {
                matches!(
                    source,
                    CryptError::Damaged { .. } | CryptError::Truncated | CryptError::NotEncrypted
                )
            }
            _ => false,
        }
    }
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
    /// The folder's key: what is placed is encrypted with it.
    key: Option<Arc<DataKey>>,
}

/// The chunk hashing and copying read at once.
const CHUNK: usize = 1 << 20;
/// The suffix of an encrypted stored file.
const SEALED: &str = ".sealed";

impl Blobs {
    /// The store of the data folder `data_dir` (made when the first file is placed), kept in
    /// clear; [`Blobs::with_key`] for an encrypted folder (`Store::blobs` gives the right one).
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Blobs { root: data_dir.join("artifacts"), key: None }
    }

    /// This store encrypting what it places with `key` and decrypting what it holds with it.
    pub fn with_key(mut self, key: Option<Arc<DataKey>>) -> Self {
        self.key = key;
        self
    }

    /// Whether what this store places is encrypted.
    pub fn encrypts(&self) -> bool {
        self.key.is_some()
    }

    /// Where the content of `digest` lives when kept in clear (whether it is there or not).
    pub fn path(&self, digest: &str) -> Result<PathBuf, ArtifactError> {
        let hex = hex_of(digest)?;
        Ok(self.root.join("sha256").join(&hex[..2]).join(&hex[2..]))
    }

    fn sealed_path(&self, digest: &str) -> Result<PathBuf, ArtifactError> {
        let mut name = self.path(digest)?.into_os_string();
        name.push(SEALED);
        Ok(PathBuf::from(name))
    }

    /// The file that holds the content of `digest` (encrypted or not).
    pub fn stored_path(&self, digest: &str) -> Result<PathBuf, ArtifactError> {
        Ok(self.locate(digest)?.0)
    }

    /// The stored file of `digest` and whether it is encrypted.
    fn locate(&self, digest: &str) -> Result<(PathBuf, bool), ArtifactError> {
        let sealed = self.sealed_path(digest)?;
        if sealed.is_file() {
            return Ok((sealed, true));
        }
        let clear = self.path(digest)?;
        if clear.is_file() {
            return Ok((clear, false));
        }
        Err(ArtifactError::Missing(digest.to_string()))
    }

    /// Places the regular file `source` in the store: hard-linked when the store is on the
    /// same file system (no second copy; the file becomes read-only, as both names are one
    /// file), copied otherwise, encrypted in an encrypted folder. Content the store holds
    /// already is not added again.
    pub fn place(&self, source: &Path) -> Result<Placed, ArtifactError> {
        self.place_watched(source, &|_| {})
    }

    /// [`Blobs::place`], telling `watch` where it is (the crash tests kill the engine there).
    pub fn place_watched(&self, source: &Path, watch: &dyn Fn(Stage)) -> Result<Placed, ArtifactError> {
        let tmp = self.temporary()?;
        let placed = self.place_at(source, &tmp, watch);
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed
    }

    fn place_at(&self, source: &Path, tmp: &Path, watch: &dyn Fn(Stage)) -> Result<Placed, ArtifactError> {
        let (digest, size, sealed) = match &self.key {
            Some(key) => {
                let src = File::open(source).map_err(io("cannot open", source))?;
                let (digest, size) = seal_hashing(key, src, source, tmp)?;
                (digest, size, true)
            }
            // A link first: the bytes hashed are the bytes kept, whatever happens to
            // `source`'s name meanwhile.
            None => {
                let (digest, size) = match std::fs::hard_link(source, tmp) {
                    Ok(()) => hash_file(tmp)?,
                    Err(_) => copy_hashing(
                        &mut File::open(source).map_err(io("cannot open", source))?,
                        source,
                        tmp,
                    )?,
                };
                (digest, size, false)
            }
        };
        self.keep(tmp.to_path_buf(), digest, size, sealed, watch)
    }

    fn temporary(&self) -> Result<PathBuf, ArtifactError> {
        let tmp_dir = self.root.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(io("cannot create", &tmp_dir))?;
        Ok(tmp_dir.join(format!("{}.{}", std::process::id(), unique())))
    }

    /// Puts a hashed temporary file under its digest, durably.
    fn keep(
        &self,
        tmp: PathBuf,
        digest: String,
        size: u64,
        sealed: bool,
        watch: &dyn Fn(Stage),
    ) -> Result<Placed, ArtifactError> {
        let clear = self.path(&digest)?;
        let target = if sealed { self.sealed_path(&digest)? } else { clear.clone() };
        // Content the store holds already is put in place again all the same (a rename over
        // it): that heals a stored copy damaged since, and tells `gc` it was just placed.
        let existed = target.exists() || (sealed && clear.exists());
        let file = File::open(&tmp).map_err(io("cannot open", &tmp))?;
        let mut perms = file.metadata().map_err(io("cannot read", &tmp))?.permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&tmp, perms).map_err(io("cannot make read-only", &tmp))?;
        file.sync_all().map_err(io("cannot sync", &tmp))?;
        watch(Stage::Written);
        let parent = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        std::fs::rename(&tmp, &target).map_err(io("cannot store", &target))?;
        if sealed {
            // A copy kept in clear before the folder was encrypted goes now.
            let _ = std::fs::remove_file(&clear);
        }
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
        watch(Stage::Stored);
        Ok(Placed { digest, size, existed })
    }

    /// A reader of the content of `digest` (decrypting it in an encrypted folder; an
    /// encrypted chunk is authenticated before a byte of it is handed out) and its size. It
    /// is not checked against the digest: [`Blobs::verify`] does that.
    pub fn reader(&self, digest: &str) -> Result<(Box<dyn Read + Send>, u64), ArtifactError> {
        let (path, sealed) = self.locate(digest)?;
        let file = File::open(&path).map_err(io("cannot open", &path))?;
        let len = file.metadata().map_err(io("cannot read", &path))?.len();
        if !sealed {
            return Ok((Box::new(file), len));
        }
        let key = self.key.as_ref().ok_or_else(|| ArtifactError::NoKey(digest.to_string()))?;
        let undecryptable =
            |source| ArtifactError::Sealed { digest: digest.to_string(), path: path.clone(), source };
        let size = crypt::plain_len(len).ok_or_else(|| undecryptable(CryptError::Truncated))?;
        let r = key.decrypting(file).map_err(undecryptable)?;
        Ok((Box::new(r), size))
    }

    /// What a failed read of `digest` says: a file that does not decrypt, or I/O.
    fn read_error(digest: &str, path: &Path, e: std::io::Error) -> ArtifactError {
        match crypt::unwrap_io(e) {
            CryptError::Io(e) => {
                ArtifactError::Io { what: "cannot read", path: path.to_path_buf(), source: e }
            }
            source => ArtifactError::Sealed { digest: digest.to_string(), path: path.to_path_buf(), source },
        }
    }

    /// Checks the content under `digest` against it; returns its stored file and size.
    pub fn verify(&self, digest: &str) -> Result<(PathBuf, u64), ArtifactError> {
        let (path, sealed) = self.locate(digest)?;
        let (found, size) = if sealed {
            let (mut r, _) = self.reader(digest)?;
            hash_reader(&mut r).map_err(|e| Self::read_error(digest, &path, e))?
        } else {
            hash_file(&path)?
        };
        if found != digest {
            return Err(ArtifactError::Damaged { digest: digest.to_string(), found, path });
        }
        Ok((path, size))
    }

    /// Puts the content of `digest`, checked first, at `out` in place of what is there: a
    /// hard link to the stored file (read-only, like it) when it is kept in clear, or a
    /// checked copy (across file systems, or decrypted). How a cached step's files come back
    /// into its work folder.
    pub fn restore(&self, digest: &str, out: &Path) -> Result<u64, ArtifactError> {
        let (path, sealed) = self.locate(digest)?;
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        }
        if sealed {
            // Checked on the way; `out` is replaced only by a whole, matching copy.
            return self.copy_out(digest, out);
        }
        let (_, size) = self.verify(digest)?;
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
        let mut out: Vec<Stored> = Vec::new();
        let Ok(prefixes) = std::fs::read_dir(self.root.join("sha256")) else { return out };
        for prefix in prefixes.flatten() {
            let head = prefix.file_name().to_string_lossy().into_owned();
            let Ok(files) = std::fs::read_dir(prefix.path()) else { continue };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let (rest, sealed) = match name.strip_suffix(SEALED) {
                    Some(rest) => (rest, true),
                    None => (name.as_str(), false),
                };
                let digest = format!("{SHA256}{head}{rest}");
                if hex_of(&digest).is_err() {
                    continue;
                }
                let Ok(meta) = f.metadata() else { continue };
                use std::os::unix::fs::MetadataExt;
                out.push(Stored {
                    digest,
                    size: if sealed {
                        crypt::plain_len(meta.len()).unwrap_or(meta.len())
                    } else {
                        meta.len()
                    },
                    placed_ms: meta.ctime() * 1000 + meta.ctime_nsec() / 1_000_000,
                });
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest).then(b.placed_ms.cmp(&a.placed_ms)));
        // Kept both in clear and encrypted (a placement cut short): listed once, the newer.
        out.dedup_by(|later, first| later.digest == first.digest);
        out
    }

    /// Removes the stored file of `digest` (its records stay, saying it is gone).
    pub fn remove(&self, digest: &str) -> Result<(), ArtifactError> {
        let (path, _) = self.locate(digest)?;
        std::fs::remove_file(&path).map_err(io("cannot remove", &path))?;
        // Its other form, if a cut placement left both.
        let _ = std::fs::remove_file(self.path(digest)?);
        let _ = std::fs::remove_file(self.sealed_path(digest)?);
        Ok(())
    }

    /// Moves a stored file that failed its check to `artifacts/damaged/` (kept for a look,
    /// never read as an artifact again), so that the next placement of that content stores it
    /// whole.
    pub fn quarantine(&self, digest: &str) {
        let (Ok((path, sealed)), Ok(hex)) = (self.locate(digest), hex_of(digest)) else { return };
        let dir = self.root.join("damaged");
        if std::fs::create_dir_all(&dir).is_ok() {
            let suffix = if sealed { SEALED } else { "" };
            let _ = std::fs::rename(&path, dir.join(format!("{hex}.{}{suffix}", unique())));
        }
    }

    /// Copies the content of `digest` to `out`, checking it on the way: `out` appears, whole,
    /// only when the bytes match; otherwise nothing is written there.
    pub fn copy_out(&self, digest: &str, out: &Path) -> Result<u64, ArtifactError> {
        let (path, _) = self.locate(digest)?;
        let (mut r, _) = self.reader(digest)?;
        let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.sluice-{}",
            out.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            unique()
        ));
        let (found, size) = match copy_hashing(&mut r, &path, &tmp) {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(match e {
                    ArtifactError::Io { what: "cannot read", source, .. } => {
                        Self::read_error(digest, &path, source)
                    }
                    other => other,
                });
            }
        };
        if found != digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(ArtifactError::Damaged { digest: digest.to_string(), found, path });
        }
        std::fs::rename(&tmp, out).map_err(io("cannot write", out))?;
        Ok(size)
    }

    /// Where a step reads an artifact by path: the stored file when it is kept in clear, else
    /// a plaintext copy under `artifacts/open/<hex>/<file name>` that [`Blobs::open`] makes
    /// (the same path for the same content, so that a step's cache key does not change).
    pub fn readable_path(&self, digest: &str, file: &str) -> Result<PathBuf, ArtifactError> {
        if self.key.is_none() {
            return self.path(digest);
        }
        let hex = hex_of(digest)?;
        let name = Path::new(file).file_name().map(|n| n.to_string_lossy().into_owned());
        Ok(self.root.join("open").join(hex).join(name.unwrap_or_else(|| "artifact".into())))
    }

    /// The folder plaintext copies are made in, in an encrypted store.
    pub fn open_root(&self) -> Option<PathBuf> {
        self.key.as_ref().map(|_| self.root.join("open"))
    }

    /// Makes the plaintext copy [`Blobs::readable_path`] names, checked, read-only, and
    /// holds it while the returned lease lives (the last lease of a copy removes it). Nothing
    /// to do, and no lease, for a store kept in clear.
    pub fn open(&self, digest: &str, file: &str) -> Result<Option<OpenCopy>, ArtifactError> {
        if self.key.is_none() {
            return Ok(None);
        }
        let path = self.readable_path(digest, file)?;
        {
            let mut held = open_copies();
            if let Some(n) = held.get_mut(&path).filter(|_| path.is_file()) {
                *n += 1;
                return Ok(Some(OpenCopy { path }));
            }
        }
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        let tmp = dir.join(format!(".open-{}", unique()));
        self.copy_out(digest, &tmp)?;
        // Read-only; readable by a container's own user too (the data folder's permissions
        // keep others out).
        let mut perms = std::fs::metadata(&tmp).map_err(io("cannot read", &tmp))?.permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&tmp, perms).map_err(io("cannot make read-only", &tmp))?;
        // Put in place and counted under the lock, so that a last lease let go meanwhile
        // cannot remove it between the two.
        let mut held = open_copies();
        std::fs::rename(&tmp, &path).map_err(io("cannot write", &path))?;
        *held.entry(path.clone()).or_insert(0) += 1;
        Ok(Some(OpenCopy { path }))
    }

    /// Removes what a placement killed midway left behind (temporary files only: a file under
    /// a digest is always whole), and plaintext copies no attempt holds any more (this is
    /// called when an engine opens the folder, before any attempt starts).
    pub fn sweep_temporary(&self) {
        if let Ok(entries) = std::fs::read_dir(self.root.join("tmp")) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir_all(self.root.join("open"));
    }

    /// Re-encrypts every stored file with this store's key: files kept in clear, and files
    /// encrypted with `from` (the folder's previous key). Each file is checked against its
    /// digest on the way and replaced at once, so a rotation cut short is taken up again.
    /// Returns how many files were encrypted anew and the digests of those that could not be
    /// (damaged: left as they are, and said).
    pub fn reseal(
        &self,
        from: Option<Arc<DataKey>>,
    ) -> Result<(usize, Vec<(String, String)>), ArtifactError> {
        let Some(key) = &self.key else { return Ok((0, Vec::new())) };
        let old = Blobs { root: self.root.clone(), key: from };
        let (mut done, mut failed) = (0, Vec::new());
        for s in self.stored() {
            let (path, sealed) = self.locate(&s.digest)?;
            if sealed {
                let mut head = [0u8; crypt::HEADER];
                let n = File::open(&path)
                    .and_then(|mut f| f.read(&mut head))
                    .map_err(io("cannot read", &path))?;
                if crypt::file_sealed_by(&head[..n]).as_deref() == Some(key.id().as_str()) {
                    let _ = std::fs::remove_file(self.path(&s.digest)?);
                    continue;
                }
            }
            let tmp = self.temporary()?;
            let resealed = old.reader(&s.digest).and_then(|(r, _)| seal_hashing(key, r, &path, &tmp));
            match resealed {
                Ok((found, size)) if found == s.digest => {
                    if let Err(e) = self.keep(tmp.clone(), found, size, true, &|_| {}) {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(e);
                    }
                    done += 1;
                }
                Ok((found, _)) => {
                    let _ = std::fs::remove_file(&tmp);
                    failed.push((s.digest, format!("it hashes to {found}")));
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    failed.push((s.digest, e.to_string()));
                }
            }
        }
        Ok((done, failed))
    }
}

/// A plaintext copy of an encrypted artifact an attempt reads: removed when the last attempt
/// that holds it lets it go.
#[derive(Debug)]
pub struct OpenCopy {
    path: PathBuf,
}

impl OpenCopy {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OpenCopy {
    fn drop(&mut self) {
        let mut held = open_copies();
        if let Some(n) = held.get_mut(&self.path) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.path);
                let _ = std::fs::remove_file(&self.path);
                // Its (empty) folder stays: another copy may be being made in it now, outside
                // the lock; the next engine's sweep removes the folders.
            }
        }
    }
}

/// How many leases each plaintext copy has, in this process (one engine holds a folder).
fn open_copies() -> std::sync::MutexGuard<'static, std::collections::HashMap<PathBuf, usize>> {
    static HELD: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<PathBuf, usize>>> =
        std::sync::OnceLock::new();
    HELD.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Encrypts `src` into a new file `to` with `key` while hashing it: the hashing here, the
/// encryption and writing on a second thread, so that encrypting costs little beside hashing.
/// The file is synced. Returns the plaintext's digest and size.
fn seal_hashing(
    key: &DataKey,
    mut src: impl Read + Send,
    from: &Path,
    to: &Path,
) -> Result<(String, u64), ArtifactError> {
    use std::sync::mpsc::sync_channel;
    let dst = File::create_new(to).map_err(io("cannot create", to))?;
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(2);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(4);
    for _ in 0..4 {
        let _ = empty_tx.send(vec![0u8; CHUNK]);
    }
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> std::io::Result<()> {
            let mut w = key.sealing(std::io::BufWriter::with_capacity(CHUNK, dst))?;
            for (buf, n) in full_rx {
                w.write_all(&buf[..n])?;
                let _ = empty_tx.send(buf);
            }
            let file = w.finish()?.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
        });
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut failed = None;
        // Ends when the source does, or when the writer stops taking buffers (its error is
        // the one reported).
        while let Ok(mut buf) = empty_rx.recv() {
            let read = loop {
                match src.read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let n = match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    failed =
                        Some(ArtifactError::Io { what: "cannot read", path: from.to_path_buf(), source: e });
                    break;
                }
            };
            hasher.update(&buf[..n]);
            size += n as u64;
            if full_tx.send((buf, n)).is_err() {
                break;
            }
        }
        drop(full_tx);
        let written = writer.join();
        if let Some(e) = failed {
            return Err(e);
        }
        match written {
            Ok(Ok(())) => Ok((format!("{SHA256}{:x}", hasher.finalize()), size)),
            Ok(Err(e)) => Err(ArtifactError::Io { what: "cannot write", path: to.to_path_buf(), source: e }),
            Err(_) => Err(ArtifactError::Io {
                what: "cannot write",
                path: to.to_path_buf(),
                source: std::io::Error::other("the encrypting thread crashed"),
            }),
        }
    })
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
    hash_reader(&mut f).map_err(io("cannot read", path))
}

/// The sha256 digest and size of what `r` reads.
fn hash_reader(r: &mut dyn Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("{SHA256}{:x}", hasher.finalize()), size))
}

/// Copies what `src` (the content of `from`) reads to a new file `to`, hashing it; the copy
/// is synced.
fn copy_hashing(src: &mut dyn Read, from: &Path, to: &Path) -> Result<(String, u64), ArtifactError> {
    let mut dst = File::create_new(to).map_err(io("cannot create", to))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("cannot read", from)(e)),
        };
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
