//! Encryption at rest. Two forms:
//! - files (artifact blobs): AES-256-GCM from `ring` (BoringSSL's audited, constant-time
//!   assembly: 2.5 to 3 GiB/s here, four times RustCrypto's `aes-gcm`, which is what lets a
//!   1 GiB artifact be encrypted beside its hashing at little cost). Each file has its own key,
//!   derived by HKDF-SHA256 from the folder key and a random 32-byte salt in its header; then
//!   64 KiB chunks, each sealed with its position (a 64-bit counter) and a last-chunk flag in
//!   its nonce and the header as associated data, so that a chunk changed, moved, dropped,
//!   repeated or cut off fails to open, and no header can be put on another file's chunks;
//! - values (log chunks in sled): XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`, audited
//!   by NCC Group), one sealed box with a random 24-byte nonce, bound to where it is stored by
//!   the caller's associated data (its key).
//!
//! A wrong key, a missing key, or damaged bytes are errors that say which, never garbage.

use std::io::{self, Read, Write};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

use super::hex;

/// Plaintext bytes per chunk of an encrypted file.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
/// Version 2 of the file form (1 was a STREAM over XChaCha20, never written to a folder).
const MAGIC: &[u8; 8] = b"SLCENC\x00\x02";
const SALT: usize = 32;
/// Magic, key id, the file key's salt.
pub const HEADER: usize = 8 + 8 + SALT;
/// The first byte of a sealed value.
const BOX: u8 = 0xE1;

/// A data folder's key: 32 bytes, named by an id derived from it (which is safe to show).
pub struct DataKey {
    cipher: XChaCha20Poly1305,
    /// HKDF's pseudorandom key for file keys (extracted once from the folder key).
    files: hkdf::Prk,
    id: [u8; 8],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id())
    }
}

/// Why something could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error("it is not encrypted by Sluice (no header)")]
    NotEncrypted,
    #[error("it is encrypted with the key {theirs}, not with this key ({ours})")]
    OtherKey { theirs: String, ours: String },
    #[error("chunk {chunk} does not authenticate: the bytes were changed, moved or cut")]
    Damaged { chunk: u64 },
    #[error("it ends before its last chunk: it was cut off")]
    Truncated,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<CryptError> for io::Error {
    fn from(e: CryptError) -> io::Error {
        match e {
            CryptError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

impl DataKey {
    pub fn from_bytes(raw: &[u8; 32]) -> DataKey {
        let digest =
            ring::digest::digest(&ring::digest::SHA256, &[b"sluice data key id\0".as_slice(), raw].concat());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.as_ref()[..8]);
        let files = hkdf::Salt::new(hkdf::HKDF_SHA256, b"sluice artifact files v2").extract(raw);
        DataKey { cipher: XChaCha20Poly1305::new(raw.into()), files, id }
    }

    /// A new random key, and its file text (64 hexadecimal digits and a line break).
    pub fn generate() -> (DataKey, String) {
        let mut raw = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .expect("system randomness");
        let text = format!("{}\n", hex(&raw));
        (DataKey::from_bytes(&raw), text)
    }

    /// Reads a key file: 64 hexadecimal digits (`openssl rand -hex 32`), nothing else but
    /// white space, in a file only its owner may read.
    pub fn load(path: &Path) -> Result<DataKey, String> {
        use std::os::unix::fs::PermissionsExt;
        let what = || format!("the encryption key file {}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", what()))?;
        if !meta.is_file() || meta.len() > 4096 {
            return Err(format!("{} is not a key file (a small regular file)", what()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!("{} may be read by other users (mode {mode:o}); chmod 600 it", what()));
        }
        let text =
            super::secrets::read_small_file(path).map_err(|e| format!("cannot read {}: {e}", what()))?;
        let digits = text.trim();
        let bytes: Option<Vec<u8>> = (digits.len() == 64)
            .then(|| (0..32).map(|i| u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()).collect())
            .flatten();
        let Some(bytes) = bytes else {
            return Err(format!(
                "{} must hold 64 hexadecimal digits (a 32-byte key: `sluice key generate FILE` or `openssl rand -hex 32`)",
                what()
            ));
        };
        Ok(DataKey::from_bytes(&bytes.try_into().expect("32 bytes")))
    }

    /// The key's id (16 hexadecimal digits), which names it in messages and records.
    pub fn id(&self) -> String {
        hex(&self.id)
    }

    /// The key of the file whose header carries `salt`.
    fn file_key(&self, salt: &[u8]) -> LessSafeKey {
        let info = [b"file key\0".as_slice(), salt];
        let okm = self.files.expand(&info, &AES_256_GCM).expect("an AES-256 key is a valid HKDF length");
        LessSafeKey::new(UnboundKey::from(okm))
    }

    /// A writer that encrypts what it is given into `out` (see [`Sealing`]).
    pub fn sealing<W: Write>(&self, mut out: W) -> io::Result<Sealing<W>> {
        let mut salt = [0u8; SALT];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| io::Error::other("no system randomness"))?;
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&self.id);
        header[16..].copy_from_slice(&salt);
        out.write_all(&header)?;
        Ok(Sealing {
            out,
            key: self.file_key(&salt),
            header,
            pending: Vec::with_capacity(CHUNK),
            sealed: Vec::with_capacity(16 * (CHUNK + TAG)),
            chunk: 0,
        })
    }

    /// Encrypts all of `plain` into `out`; `seen` sees the plaintext on the way (to hash it).
    /// Returns the plaintext's length.
    pub fn encrypt(
        &self,
        mut plain: impl Read,
        out: impl Write,
        mut seen: impl FnMut(&[u8]),
    ) -> io::Result<u64> {
        let mut w = self.sealing(out)?;
        let mut buf = vec![0u8; 16 * CHUNK];
        let mut total = 0u64;
        loop {
            let n = match plain.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            seen(&buf[..n]);
            w.write_all(&buf[..n])?;
            total += n as u64;
        }
        w.finish()?;
        Ok(total)
    }

    /// A reader of the plaintext of an encrypted file: every chunk is authenticated before
    /// a byte of it is handed out.
    pub fn decrypting<R: Read>(&self, mut sealed: R) -> Result<Decrypting<R>, CryptError> {
        let mut header = [0u8; HEADER];
        let got = read_full(&mut sealed, HEADER)?;
        if got.len() < 8 || &got[..8] != MAGIC {
            return Err(CryptError::NotEncrypted);
        }
        if got.len() < HEADER {
            return Err(CryptError::Truncated);
        }
        header.copy_from_slice(&got);
        if header[8..16] != self.id {
            return Err(CryptError::OtherKey { theirs: hex(&header[8..16]), ours: self.id() });
        }
        let key = self.file_key(&header[16..]);
        let ahead = read_full(&mut sealed, CHUNK + TAG)?;
        Ok(Decrypting {
            sealed,
            header,
            key,
            done: false,
            failed: None,
            ahead,
            plain: Vec::new(),
            at: 0,
            chunk: 0,
        })
    }

    /// Decrypts all of an encrypted file into `out`; returns the plaintext's length.
    pub fn decrypt(&self, sealed: impl Read, mut out: impl Write) -> Result<u64, CryptError> {
        let mut r = self.decrypting(sealed)?;
        let n = io::copy(&mut r, &mut out).map_err(unwrap_io)?;
        Ok(n)
    }

    /// One value sealed with a random nonce, bound to `aad` (where it is kept).
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .expect("system randomness");
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("XChaCha20-Poly1305 seals any length a value has");
        let mut out = Vec::with_capacity(1 + 8 + 24 + sealed.len());
        out.push(BOX);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value [`DataKey::seal`] made for the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptError> {
        if !is_sealed(sealed) {
            return Err(CryptError::NotEncrypted);
        }
        if sealed[1..9] != self.id {
            return Err(CryptError::OtherKey { theirs: hex(&sealed[1..9]), ours: self.id() });
        }
        self.cipher
            .decrypt(XNonce::from_slice(&sealed[9..33]), Payload { msg: &sealed[33..], aad })
            .map_err(|_| CryptError::Damaged { chunk: 0 })
    }
}

/// What the data folder says of its encryption: `<data>/encryption.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FolderKey {
    pub v: u32,
    /// The id of the key its step logs are sealed with.
    pub key_id: String,
    /// Set while `sluice key rotate` re-seals them with another key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotating_to: Option<String>,
}

pub fn folder_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("encryption.json")
}

/// The folder's record, if it is encrypted.
pub fn read_folder(data_dir: &Path) -> Result<Option<FolderKey>, String> {
    let path = folder_file(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is damaged: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes the folder's record durably (a new file renamed over the old one).
pub fn write_folder(data_dir: &Path, record: &FolderKey) -> Result<(), String> {
    let path = folder_file(data_dir);
    let tmp = data_dir.join("encryption.json.new");
    let write = || -> io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(record).expect("a folder record serializes"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The key an engine opening `data_dir` works with: the one `key_file` holds, checked against
/// the folder's record (a folder first opened with a key records it). A folder that is
/// encrypted and no key, another key, or a rotation left unfinished are errors that say so.
///
/// Only an engine that will write step logs (`may_start`: `run`, `serve`, `resume`) turns a
/// folder's encryption on; a key given to a command that reads a folder kept in clear is
/// not used.
pub fn open_folder(
    data_dir: &Path,
    key_file: Option<&Path>,
    may_start: bool,
) -> Result<Option<std::sync::Arc<DataKey>>, String> {
    let record = read_folder(data_dir)?;
    let key = key_file.map(DataKey::load).transpose()?;
    match (record, key) {
        (None, None) => Ok(None),
        (None, Some(_)) if !may_start => Ok(None),
        (None, Some(key)) => {
            write_folder(data_dir, &FolderKey { v: 1, key_id: key.id(), rotating_to: None })?;
            Ok(Some(std::sync::Arc::new(key)))
        }
        (Some(r), None) => Err(format!(
            "the data folder {} is encrypted (key {}): set SLUICE_ENCRYPTION_KEY_FILE to its key file (`run` and `serve` also take --encryption-key-file)",
            data_dir.display(),
            r.key_id
        )),
        (Some(r), Some(_)) if r.rotating_to.is_some() => Err(format!(
            "a rotation of the data folder's key from {} to {} was interrupted; run `sluice key rotate` again with both keys",
            r.key_id,
            r.rotating_to.unwrap_or_default()
        )),
        (Some(r), Some(key)) if r.key_id != key.id() => Err(format!(
            "the data folder {} is encrypted with the key {}, but the key given is {}",
            data_dir.display(),
            r.key_id,
            key.id()
        )),
        (Some(_), Some(key)) => Ok(Some(std::sync::Arc::new(key))),
    }
}

/// The id of the key that sealed a value, if it is a sealed value.
pub fn sealed_by(bytes: &[u8]) -> Option<String> {
    is_sealed(bytes).then(|| hex(&bytes[1..9]))
}

/// Whether `bytes` look like a value [`DataKey::seal`] made.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.len() >= 1 + 8 + 24 + TAG && bytes[0] == BOX
}

/// What an error a [`Decrypting`] reader returned says: a damaged or cut file, or plain I/O.
pub fn unwrap_io(e: io::Error) -> CryptError {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Described>()) {
        Some(Described::Damaged(chunk)) => CryptError::Damaged { chunk: *chunk },
        Some(Described::Truncated) => CryptError::Truncated,
        None => CryptError::Io(e),
    }
}

/// What a reader's error was, kept inside the `io::Error` it returns.
#[derive(Debug, Clone, Copy)]
enum Described {
    Damaged(u64),
    Truncated,
}

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Described::Damaged(c) => write!(f, "{}", CryptError::Damaged { chunk: *c }),
            Described::Truncated => write!(f, "{}", CryptError::Truncated),
        }
    }
}

impl std::error::Error for Described {}

/// The nonce of chunk `n` of a file: a last-chunk flag, then the counter (a file key seals
/// one file, so a nonce is never used twice under a key).
fn nonce(n: u64, last: bool) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[0] = u8::from(last);
    bytes[4..].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// Encrypts what is written to it, chunk by chunk; [`Sealing::finish`] seals the last chunk
/// (a writer dropped unfinished leaves a file that reads as cut off, never as whole).
pub struct Sealing<W: Write> {
    out: W,
    key: LessSafeKey,
    header: [u8; HEADER],
    /// Plaintext not sealed yet: at most a chunk, kept until it is known whether it is last.
    pending: Vec<u8>,
    /// Sealed chunks waiting to be written at once.
    sealed: Vec<u8>,
    chunk: u64,
}

impl<W: Write> Sealing<W> {
    fn seal_pending(&mut self, last: bool) -> io::Result<()> {
        let at = self.sealed.len();
        self.sealed.extend_from_slice(&self.pending);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(self.chunk, last),
                Aad::from(&self.header),
                &mut self.sealed[at..],
            )
            .map_err(|_| io::Error::other("encryption failed"))?;
        self.sealed.extend_from_slice(tag.as_ref());
        self.pending.clear();
        self.chunk += 1;
        if self.sealed.len() >= 16 * (CHUNK + TAG) || last {
            self.out.write_all(&self.sealed)?;
            self.sealed.clear();
        }
        Ok(())
    }

    /// Seals the last chunk and flushes; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal_pending(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Sealing<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let given = buf.len();
        while !buf.is_empty() {
            if self.pending.len() == CHUNK {
                self.seal_pending(false)?;
            }
            let n = buf.len().min(CHUNK - self.pending.len());
            self.pending.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
        }
        Ok(given)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Sealed chunks are written out; the pending one waits to know whether it is last.
        self.out.write_all(&self.sealed)?;
        self.sealed.clear();
        self.out.flush()
    }
}

/// The id of the key an encrypted file's header names, if `head` (its first bytes) is one.
pub fn file_sealed_by(head: &[u8]) -> Option<String> {
    (head.len() >= HEADER && &head[..8] == MAGIC).then(|| hex(&head[8..16]))
}

/// The plaintext length of an encrypted file of `sealed` bytes (`None` if no such file has
/// that length: it was cut).
pub fn plain_len(sealed: u64) -> Option<u64> {
    let body = sealed.checked_sub(HEADER as u64)?;
    let whole = (CHUNK + TAG) as u64;
    let (full, rest) = (body / whole, body % whole);
    match rest {
        0 if full > 0 => Some(full * CHUNK as u64),
        r if r >= TAG as u64 => Some(full * CHUNK as u64 + r - TAG as u64),
        _ => None,
    }
}

/// The plaintext of an encrypted file, chunk by authenticated chunk.
pub struct Decrypting<R> {
    sealed: R,
    header: [u8; HEADER],
    key: LessSafeKey,
    done: bool,
    /// Why it stopped, if it failed: said again on every later read, never an end of file.
    failed: Option<Described>,
    /// The next sealed chunk, read ahead to know whether it is the last.
    ahead: Vec<u8>,
    plain: Vec<u8>,
    at: usize,
    chunk: u64,
}

impl<R: Read> Decrypting<R> {
    fn refill(&mut self) -> io::Result<bool> {
        if let Some(why) = self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        if self.done {
            return Ok(false);
        }
        let mut current = std::mem::take(&mut self.ahead);
        if current.len() < TAG {
            self.failed = Some(Described::Truncated);
            return Err(io::Error::new(io::ErrorKind::InvalidData, Described::Truncated));
        }
        let next =
            if current.len() == CHUNK + TAG { read_full(&mut self.sealed, CHUNK + TAG)? } else { Vec::new() };
        let last = next.is_empty();
        let chunk = self.chunk;
        self.chunk += 1;
        // A failed open leaves the buffer changed: a full last chunk is kept to tell a file
        // cut at a chunk boundary from a damaged one.
        let spare = (last && current.len() == CHUNK + TAG).then(|| current.clone());
        let opened = self
            .key
            .open_in_place(nonce(chunk, last), Aad::from(&self.header), &mut current)
            .map(|p| p.len());
        match opened {
            Ok(n) => {
                current.truncate(n);
                // The buffer read ahead is the next one to fill: keep the allocation.
                self.plain = current;
                self.at = 0;
                self.ahead = next;
                self.done = last;
                Ok(true)
            }
            Err(_) => {
                // A full chunk that fails as a last one is a file cut at a chunk boundary.
                let cut = spare.is_some_and(|mut c| {
                    self.key.open_in_place(nonce(chunk, false), Aad::from(&self.header), &mut c).is_ok()
                });
                let why = if cut { Described::Truncated } else { Described::Damaged(chunk) };
                self.failed = Some(why);
                Err(io::Error::new(io::ErrorKind::InvalidData, why))
            }
        }
    }
}

impl<R: Read> Read for Decrypting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.plain.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.plain.len() - self.at);
        buf[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads until `n` bytes or the end.
fn read_full(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> DataKey {
        DataKey::from_bytes(&[b; 32])
    }

    fn sealed(k: &DataKey, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        assert_eq!(k.encrypt(plain, &mut out, |_| {}).unwrap(), plain.len() as u64);
        out
    }

    #[test]
    fn files_round_trip_at_every_size_around_a_chunk() {
        let k = key(1);
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut seen = Vec::new();
            let mut out = Vec::new();
            k.encrypt(plain.as_slice(), &mut out, |c| seen.extend_from_slice(c)).unwrap();
            assert_eq!(seen, plain, "the hook sees the plaintext");
            assert_eq!(out.len(), HEADER + len + TAG * len.div_ceil(CHUNK).max(1), "len {len}");
            assert_eq!(plain_len(out.len() as u64), Some(len as u64), "len {len}");
            assert_eq!(file_sealed_by(&out), Some(k.id()));
            let mut back = Vec::new();
            assert_eq!(k.decrypt(out.as_slice(), &mut back).unwrap(), len as u64);
            assert_eq!(back, plain, "len {len}");
            // Written in odd pieces, with flushes between, it reads the same.
            let mut w = k.sealing(Vec::new()).unwrap();
            for piece in plain.chunks(7777) {
                w.write_all(piece).unwrap();
                w.flush().unwrap();
            }
            let pieces = w.finish().unwrap();
            assert_eq!(pieces.len(), out.len());
            let mut back = Vec::new();
            k.decrypt(pieces.as_slice(), &mut back).unwrap();
            assert_eq!(back, plain, "pieces, len {len}");
        }
        assert_eq!(plain_len(HEADER as u64 + 3), None, "shorter than a tag");
        assert_eq!(file_sealed_by(b"SLCENC"), None);
        // Two encryptions of the same text differ (a fresh nonce each time).
        assert_ne!(sealed(&k, b"same"), sealed(&k, b"same"));
    }

    #[test]
    fn a_wrong_key_a_flipped_bit_a_cut_or_moved_chunk_are_each_named() {
        let k = key(1);
        let plain = vec![7u8; 3 * CHUNK + 10];
        let good = sealed(&k, &plain);
        let open = |bytes: &[u8], with: &DataKey| with.decrypt(bytes, Vec::new()).map(|_| ()).unwrap_err();

        let e = open(&good, &key(2));
        assert!(matches!(e, CryptError::OtherKey { .. }), "{e}");
        assert!(e.to_string().contains(&key(2).id()), "{e}");

        let mut flipped = good.clone();
        flipped[HEADER + CHUNK + TAG + 5] ^= 1;
        assert!(matches!(open(&flipped, &k), CryptError::Damaged { chunk: 1 }), "{}", open(&flipped, &k));

        // Cut at a chunk boundary: the last remaining chunk is not marked last.
        let cut = &good[..HEADER + 2 * (CHUNK + TAG)];
        assert!(matches!(open(cut, &k), CryptError::Truncated), "{}", open(cut, &k));
        // Cut inside a chunk.
        assert!(matches!(open(&good[..good.len() - 3], &k), CryptError::Damaged { .. }));
        assert!(matches!(open(&good[..HEADER + 4], &k), CryptError::Truncated));

        // Two chunks swapped.
        let mut swapped = good.clone();
        let (a, b) = (HEADER, HEADER + CHUNK + TAG);
        let first = good[a..b].to_vec();
        swapped[a..b].copy_from_slice(&good[b..b + CHUNK + TAG]);
        swapped[b..b + CHUNK + TAG].copy_from_slice(&first);
        assert!(matches!(open(&swapped, &k), CryptError::Damaged { chunk: 0 }));

        // The header is bound: another file's header on these chunks fails.
        let mut other = sealed(&k, &plain);
        other[HEADER..].copy_from_slice(&good[HEADER..]);
        assert!(matches!(open(&other, &k), CryptError::Damaged { chunk: 0 }));

        assert!(matches!(open(b"plain text, long enough to hold a header", &k), CryptError::NotEncrypted));
        // A reader hands out nothing of a chunk that does not authenticate.
        let mut r = k.decrypting(flipped.as_slice()).unwrap();
        let mut buf = vec![0u8; CHUNK];
        r.read_exact(&mut buf).unwrap();
        assert!(r.read(&mut buf).is_err());
    }

    #[test]
    fn values_are_bound_to_where_they_are_kept() {
        let k = key(3);
        let v = k.seal(b"log/1/2", b"hello");
        assert!(is_sealed(&v) && !v.windows(5).any(|w| w == b"hello"));
        assert_eq!(k.open(b"log/1/2", &v).unwrap(), b"hello");
        assert!(matches!(k.open(b"log/1/3", &v), Err(CryptError::Damaged { .. })), "moved");
        assert!(matches!(key(4).open(b"log/1/2", &v), Err(CryptError::OtherKey { .. })));
        let mut bad = v.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(k.open(b"log/1/2", &bad), Err(CryptError::Damaged { .. })));
        assert!(matches!(k.open(b"x", b"plain"), Err(CryptError::NotEncrypted)));
    }

    #[test]
    fn key_files_are_hex_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (k, text) = DataKey::generate();
        let f = dir.path().join("key");
        std::fs::write(&f, &text).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = DataKey::load(&f).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(DataKey::load(&f).unwrap().id(), k.id());
        std::fs::write(&f, "not a key").unwrap();
        let e = DataKey::load(&f).unwrap_err();
        assert!(e.contains("64 hexadecimal digits"), "{e}");
        assert!(DataKey::load(&dir.path().join("none")).unwrap_err().contains("cannot read"));
        assert!(!format!("{k:?}").contains(text.trim()), "Debug shows the id only");
    }
}
