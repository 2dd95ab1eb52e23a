use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use crate::security::crypt::{self, CryptError, DataKey};

use super::*;

fn blobs() -> (tempfile::TempDir, Blobs) {
    let dir = tempfile::tempdir().unwrap();
    let b = Blobs::in_data_dir(&dir.path().join("data"));
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    (dir, b)
}

#[test]
fn placing_links_hashes_and_deduplicates() {
    let (dir, b) = blobs();
    let a = dir.path().join("a.bin");
    std::fs::write(&a, b"hello").unwrap();
    let placed = b.place(&a).unwrap();
    // sha256("hello")
    assert_eq!(placed.digest, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    assert_eq!((placed.size, placed.existed), (5, false));
    let stored = b.path(&placed.digest).unwrap();
    assert!(stored.ends_with("sha256/2c/f24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"));
    // Same file system: one file under two names, read-only.
    assert_eq!(std::fs::metadata(&stored).unwrap().ino(), std::fs::metadata(&a).unwrap().ino());
    assert!(std::fs::metadata(&stored).unwrap().permissions().readonly());
    // The same content again adds nothing.
    let again = dir.path().join("b.bin");
    std::fs::write(&again, b"hello").unwrap();
    let second = b.place(&again).unwrap();
    assert_eq!(second.digest, placed.digest);
    assert!(second.existed);
    assert_eq!(std::fs::read_dir(b.root.join("tmp")).unwrap().count(), 0);
    assert_eq!(b.verify(&placed.digest).unwrap().1, 5);
}

#[test]
fn a_flipped_bit_is_found_on_every_read() {
    let (dir, b) = blobs();
    let a = dir.path().join("a.bin");
    std::fs::write(&a, vec![7u8; 4096]).unwrap();
    let placed = b.place(&a).unwrap();
    let stored = b.path(&placed.digest).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[100] ^= 1;
    let mut perms = std::fs::metadata(&stored).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&stored, perms).unwrap();
    std::fs::write(&stored, &bytes).unwrap();
    let e = b.verify(&placed.digest).unwrap_err();
    assert!(matches!(e, ArtifactError::Damaged { .. }), "{e}");
    assert!(e.to_string().contains("is damaged"), "{e}");
    let out = dir.path().join("out.bin");
    assert!(matches!(b.copy_out(&placed.digest, &out), Err(ArtifactError::Damaged { .. })));
    assert!(!out.exists(), "nothing is written from a damaged artifact");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("sluice-"))
    );
}

#[test]
fn digests_are_checked_for_shape() {
    let (_d, b) = blobs();
    assert!(matches!(b.path("sha256:../../etc/passwd"), Err(ArtifactError::BadDigest(_))));
    assert!(matches!(b.path("md5:abc"), Err(ArtifactError::BadDigest(_))));
    let hex = "2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824";
    assert_eq!(normalize(hex).unwrap(), format!("sha256:{}", hex.to_lowercase()));
    assert!(matches!(b.verify(&normalize(hex).unwrap()), Err(ArtifactError::Missing(_))));
}

fn decl(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn declarations_resolve_inside_the_folder_only() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("reports/sub")).unwrap();
    std::fs::write(work.join("model.bin"), b"m").unwrap();
    std::fs::write(work.join("reports/a.html"), b"a").unwrap();
    std::fs::write(work.join("reports/b.html"), b"b").unwrap();
    std::fs::write(work.join("reports/sub/c.html"), b"c").unwrap();
    std::fs::write(dir.path().join("secret"), b"s").unwrap();
    let got = resolve(&work, &decl(&[("model", "model.bin"), ("report", "reports/*.html")])).unwrap();
    let files: Vec<_> = got.iter().map(|d| (d.name.as_str(), d.file.as_str())).collect();
    assert_eq!(files, [("model", "model.bin"), ("report", "reports/a.html"), ("report", "reports/b.html")]);
    let deep = resolve(&work, &decl(&[("all", "reports/**/*.html")])).unwrap();
    assert_eq!(deep.len(), 3);

    let e = resolve(&work, &decl(&[("m", "missing.bin")])).unwrap_err();
    assert!(e.contains("declares artifact `m` (missing.bin) but did not write it"), "{e}");
    let e = resolve(&work, &decl(&[("r", "nothing/*.x")])).unwrap_err();
    assert!(e.contains("no file in"), "{e}");
    let e = resolve(&work, &decl(&[("m", "../secret")])).unwrap_err();
    assert!(e.contains("leads out"), "{e}");
    let e = resolve(&work, &decl(&[("m", "/etc/passwd")])).unwrap_err();
    assert!(e.contains("absolute"), "{e}");
    std::os::unix::fs::symlink(dir.path().join("secret"), work.join("link.bin")).unwrap();
    let e = resolve(&work, &decl(&[("m", "link.bin")])).unwrap_err();
    assert!(e.contains("leads out of the step's work folder"), "{e}");
    std::os::unix::fs::symlink(dir.path().join("secret"), work.join("reports/evil.html")).unwrap();
    let e = resolve(&work, &decl(&[("r", "reports/*.html")])).unwrap_err();
    assert!(e.contains("leads out"), "{e}");
    // A link that stays inside is the file it points at.
    std::os::unix::fs::symlink(work.join("model.bin"), work.join("alias.bin")).unwrap();
    let ok = resolve(&work, &decl(&[("m", "alias.bin")])).unwrap();
    assert_eq!(ok[0].path, work.canonicalize().unwrap().join("model.bin"));
}

#[test]
fn media_types_come_from_names() {
    assert_eq!(media_type("m.safetensors"), "application/vnd.safetensors");
    assert_eq!(media_type("r.html"), "text/html");
    assert_eq!(media_type("d.csv"), "text/csv");
    assert_eq!(media_type("blob"), "application/octet-stream");
}

fn sealed_blobs(dir: &Path, byte: u8) -> Blobs {
    Blobs::in_data_dir(&dir.join("data")).with_key(Some(Arc::new(DataKey::from_bytes(&[byte; 32]))))
}

fn make_writable(path: &Path) {
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).unwrap();
}

#[test]
fn an_encrypted_store_keeps_no_plaintext_and_reads_back_checked() {
    let dir = tempfile::tempdir().unwrap();
    let b = sealed_blobs(dir.path(), 9);
    let plain: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 199) as u8).chain(*b"canary-77f1").collect();
    let a = dir.path().join("model.bin");
    std::fs::write(&a, &plain).unwrap();
    let placed = b.place(&a).unwrap();
    assert_eq!(placed.digest, hash_file(&a).unwrap().0, "the digest is the plaintext's");
    assert_eq!((placed.size, placed.existed), (plain.len() as u64, false));
    let stored = b.stored_path(&placed.digest).unwrap();
    assert!(stored.to_string_lossy().ends_with(".sealed"), "{}", stored.display());
    assert!(!b.path(&placed.digest).unwrap().exists(), "no clear copy");
    let bytes = std::fs::read(&stored).unwrap();
    assert!(!bytes.windows(11).any(|w| w == b"canary-77f1"));
    assert_ne!(std::fs::metadata(&stored).unwrap().ino(), std::fs::metadata(&a).unwrap().ino());
    assert!(!std::fs::metadata(&a).unwrap().permissions().readonly(), "the step's file is left alone");
    assert_eq!(b.verify(&placed.digest).unwrap().1, plain.len() as u64);
    assert_eq!(b.stored()[0].size, plain.len() as u64, "listed by its plaintext size");

    let out = dir.path().join("out.bin");
    b.copy_out(&placed.digest, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), plain);
    let restored = dir.path().join("work/again.bin");
    b.restore(&placed.digest, &restored).unwrap();
    assert_eq!(std::fs::read(&restored).unwrap(), plain);
    let (mut r, size) = b.reader(&placed.digest).unwrap();
    let mut read = Vec::new();
    r.read_to_end(&mut read).unwrap();
    assert_eq!((read, size), (plain.clone(), plain.len() as u64));

    // Without the key, with another key: said, never garbage.
    let clear = Blobs::in_data_dir(&dir.path().join("data"));
    assert!(matches!(clear.verify(&placed.digest), Err(ArtifactError::NoKey(_))));
    let other = sealed_blobs(dir.path(), 10);
    let e = other.copy_out(&placed.digest, &dir.path().join("o2")).unwrap_err();
    assert!(matches!(&e, ArtifactError::Sealed { source: CryptError::OtherKey { .. }, .. }), "{e}");
    assert!(!e.is_damaged(), "another key is not damage");
    assert!(!dir.path().join("o2").exists());

    // A changed byte: damaged, on every read, and nothing written out.
    make_writable(&stored);
    let mut bad = bytes.clone();
    bad[crypt::HEADER + 70_000] ^= 1;
    std::fs::write(&stored, &bad).unwrap();
    let e = b.verify(&placed.digest).unwrap_err();
    assert!(e.is_damaged() && e.to_string().contains("chunk 1"), "{e}");
    let e = b.copy_out(&placed.digest, &out).unwrap_err();
    assert!(e.is_damaged(), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), plain, "the earlier copy is untouched");
    // Placing the content again heals it.
    let healed = b.place(&a).unwrap();
    assert!(healed.existed);
    b.verify(&placed.digest).unwrap();
}

#[test]
fn plaintext_copies_for_steps_live_while_an_attempt_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = sealed_blobs(dir.path(), 11);
    let a = dir.path().join("data.csv");
    std::fs::write(&a, b"x,y\n1,2\n").unwrap();
    let d = b.place(&a).unwrap().digest;
    let path = b.readable_path(&d, "sub/data.csv").unwrap();
    assert!(path.ends_with("data.csv") && path.starts_with(dir.path().join("data/artifacts/open")));
    assert!(!path.exists());
    let first = b.open(&d, "sub/data.csv").unwrap().unwrap();
    let second = b.open(&d, "sub/data.csv").unwrap().unwrap();
    assert_eq!(first.path(), path);
    assert_eq!(std::fs::read(&path).unwrap(), b"x,y\n1,2\n");
    assert!(std::fs::metadata(&path).unwrap().permissions().readonly());
    drop(first);
    assert!(path.exists(), "another attempt still holds it");
    drop(second);
    assert!(!path.exists(), "the last lease removes it");
    // Its folder stays (another copy may be being made in it); the next engine sweeps it.
    b.sweep_temporary();
    assert!(!dir.path().join("data/artifacts/open").exists(), "swept");
    // A clear store reads the stored file itself.
    let clear = Blobs::in_data_dir(&dir.path().join("clear"));
    let dc = clear.place(&a).unwrap().digest;
    assert_eq!(clear.readable_path(&dc, "data.csv").unwrap(), clear.path(&dc).unwrap());
    assert!(clear.open(&dc, "data.csv").unwrap().is_none());
    // Left by a killed engine: swept when the next one opens the folder.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"left").unwrap();
    b.sweep_temporary();
    assert!(!path.exists());
}

#[test]
fn a_rotation_encrypts_clear_files_and_re_encrypts_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let clear = Blobs::in_data_dir(&dir.path().join("data"));
    let (a, c) = (dir.path().join("a"), dir.path().join("c"));
    std::fs::write(&a, b"kept in clear before").unwrap();
    std::fs::write(&c, b"sealed with the first key").unwrap();
    let da = clear.place(&a).unwrap().digest;
    let k1 = sealed_blobs(dir.path(), 1);
    let dc = k1.place(&c).unwrap().digest;
    // Turning encryption on: clear files are encrypted.
    let (n, failed) = k1.reseal(None).unwrap();
    assert_eq!((n, failed.len()), (1, 0));
    assert!(!clear.path(&da).unwrap().exists());
    assert_eq!(k1.verify(&da).unwrap().1, 20);
    // A new key: everything is re-encrypted with it, checked; a second pass has nothing to do.
    let k2 = sealed_blobs(dir.path(), 2);
    let k1_key = Some(Arc::new(DataKey::from_bytes(&[1; 32])));
    assert_eq!(k2.reseal(k1_key.clone()).unwrap(), (2, Vec::new()));
    assert_eq!(k2.reseal(k1_key.clone()).unwrap(), (0, Vec::new()));
    k2.verify(&da).unwrap();
    k2.verify(&dc).unwrap();
    assert!(matches!(k1.verify(&dc), Err(ArtifactError::Sealed { source: CryptError::OtherKey { .. }, .. })));
    assert_eq!(k2.stored().len(), 2);
}
