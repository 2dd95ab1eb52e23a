use std::os::unix::fs::MetadataExt;

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
