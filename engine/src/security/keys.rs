//! The instance's ed25519 signing key: it signs the audit log's checkpoints and the
//! provenance of artifacts. Made on first start at `<data dir>/keys/signing.key` (PKCS#8 PEM,
//! mode 0600, in a 0700 folder), with its public half beside it (`signing.pub`, SPKI PEM);
//! `--signing-key FILE` brings one instead (`openssl genpkey -algorithm ed25519` makes one).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// DER of an ed25519 SubjectPublicKeyInfo before its 32 key bytes (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// DER of an ed25519 PKCS#8 (v1) private key before its 32 seed bytes (RFC 8410), the form
/// `openssl genpkey -algorithm ed25519` writes and reads.
const PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The signing key, loaded.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pub path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {})", self.key_id(), self.path.display())
    }
}

/// Where a data folder keeps its key.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("signing.key")
}

impl SigningKey {
    /// Loads `path` (the flag's file, or the data folder's, made first when missing).
    pub fn load_or_create(data_dir: &Path, flag: Option<&Path>) -> Result<SigningKey, String> {
        if let Some(path) = flag {
            return SigningKey::load(path);
        }
        let path = default_path(data_dir);
        if !path.exists() {
            SigningKey::create(&path)?;
        }
        SigningKey::load(&path)
    }

    fn create(path: &Path) -> Result<(), String> {
        let dir = path.parent().expect("a key file has a folder");
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        let seed = super::random::<32>().map_err(|e| format!("cannot make a signing key: {e}"))?;
        let mut pkcs8 = PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|e| format!("a new key is unusable: {e}"))?;
        let private = pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", pkcs8),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        // Written whole under a temporary name, then renamed: a crash leaves no half key.
        let tmp = path.with_extension("key.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        f.write_all(private.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::write(path.with_extension("pub"), public_pem(pair.public_key().as_ref()))
            .map_err(|e| format!("cannot write the public key beside {}: {e}", path.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(())
    }

    /// Loads a PKCS#8 PEM ed25519 key; refuses one that others than its owner may read.
    pub fn load(path: &Path) -> Result<SigningKey, String> {
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot read the signing key {}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "the signing key {} may be read by others (mode {:o}); `chmod 600` it",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        let text = super::secrets::read_small_file(path)
            .map_err(|e| format!("cannot read the signing key {}: {e}", path.display()))?;
        let pem = pem::parse(text.trim())
            .map_err(|e| format!("the signing key {} is not PEM: {e}", path.display()))?;
        if pem.tag() != "PRIVATE KEY" {
            return Err(format!(
                "the signing key {} holds a `{}`, not an ed25519 `PRIVATE KEY` (PKCS#8)",
                path.display(),
                pem.tag()
            ));
        }
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pem.contents())
            .map_err(|e| format!("the signing key {} is not an ed25519 key: {e}", path.display()))?;
        Ok(SigningKey { pair, path: path.to_path_buf() })
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// The raw 32 bytes of the public key.
    pub fn public(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Names the key: the SHA-256 of its public bytes, in hex.
    pub fn key_id(&self) -> String {
        key_id(self.public())
    }

    pub fn public_pem(&self) -> String {
        public_pem(self.public())
    }
}

pub fn key_id(public: &[u8]) -> String {
    super::sha256_hex(public)
}

fn public_pem(public: &[u8]) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(public);
    pem::encode_config(
        &pem::Pem::new("PUBLIC KEY", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Reads a public key: SPKI PEM (`signing.pub`, `openssl pkey -pubout`) or 64 hex digits.
pub fn read_public(path: &Path) -> Result<Vec<u8>, String> {
    let text = super::secrets::read_small_file(path)
        .map_err(|e| format!("cannot read the public key {}: {e}", path.display()))?;
    let text = text.trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string()))
            .collect();
    }
    let pem = pem::parse(text).map_err(|e| format!("the public key {} is not PEM: {e}", path.display()))?;
    match pem.contents().strip_prefix(&SPKI_PREFIX[..]) {
        Some(key) if pem.tag() == "PUBLIC KEY" && key.len() == 32 => Ok(key.to_vec()),
        _ => Err(format!("{} does not hold an ed25519 public key", path.display())),
    }
}

/// Whether `signature` is `public`'s over `message`.
pub fn verify(public: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public).verify(message, signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_kept_private_and_signs_what_its_public_half_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::load_or_create(dir.path(), None).unwrap();
        let again = SigningKey::load_or_create(dir.path(), None).unwrap();
        assert_eq!(k.public(), again.public(), "made once");
        let path = default_path(dir.path());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sig = k.sign(b"hello");
        let public = read_public(&path.with_extension("pub")).unwrap();
        assert!(verify(&public, b"hello", &sig));
        assert!(!verify(&public, b"hellO", &sig));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(SigningKey::load(&path).unwrap_err().contains("chmod 600"));
    }
}
