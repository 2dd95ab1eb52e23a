//! Encryption at rest of step logs: with a key, no byte of what steps print is kept in
//! clear anywhere in the data folder (sled files included), and the step's outputs file is
//! gone; the logs read back with the key, through the CLI and the API; a missing key, another
//! key and a changed byte are each a clear error; `sluice key rotate` re-seals with a new key.
//! Artifacts likewise: stored encrypted, read back decrypted and checked by every reader (a
//! downstream step, the step cache, `artifact get`, the content API, `artifact verify`).

mod common;

use common::*;

const CANARY: &str = "enc-canary-3b9f1d77c2";

fn holds_canary(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if std::fs::read(e.path())
                .unwrap_or_default()
                .windows(CANARY.len())
                .any(|w| w == CANARY.as_bytes())
            {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

fn key(sb: &Sandbox, name: &str) -> std::path::PathBuf {
    let file = sb.path(name);
    let out = sb.sluice(&["key", "generate", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim().len(), 16, "the id is printed");
    file
}

#[test]
fn step_logs_are_kept_encrypted_and_read_back_only_with_the_key() {
    let sb = Sandbox::new();
    let k1 = key(&sb, "k1.key");
    let again = sb.sluice(&["key", "generate", k1.to_str().unwrap()]);
    assert!(!again.status.success(), "an existing key file is never overwritten");
    let spec = sb.write(
        "enc.yaml",
        &format!(
            "name: enc\nsteps:\n  talk:\n    process:\n      shell: 'c=$(printf \"%s-%s\" {a} {b}); echo out $c; echo err $c >&2; echo \"{{\\\"n\\\": 1}}\" > \"$SLUICE_OUTPUTS\"'\n    outputs: [n]\n",
            // The spec (which the store keeps) never holds the canary whole: the step makes it.
            a = &CANARY[..10],
            b = &CANARY[11..],
        ),
    );
    let with = |k: &std::path::Path, args: &[&str]| {
        sb.cmd().env("SLUICE_ENCRYPTION_KEY_FILE", k).args(args).output().unwrap()
    };
    let out = with(&k1, &["run", "-q", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let leaks = holds_canary(&sb.data());
    assert!(leaks.is_empty(), "in clear in the data folder: {leaks:?}");

    let logs = with(&k1, &["logs", "1", "talk"]);
    assert!(logs.status.success(), "{}", text(&logs.stderr));
    let shown = text(&logs.stdout);
    assert!(shown.contains(&format!("out {CANARY}")) && shown.contains(&format!("err {CANARY}")), "{shown}");
    let show: serde_json::Value =
        serde_json::from_slice(&with(&k1, &["show", "1", "--output", "json"]).stdout).unwrap();
    assert_eq!(step(&show, "talk")["outputs"]["n"], 1, "outputs still reach the run");

    // Without the key, with another key: refused, saying why (and which key is the folder's).
    let folder_id = std::fs::read_to_string(sb.data().join("encryption.json")).unwrap();
    let out = sb.cmd().env_remove("SLUICE_ENCRYPTION_KEY_FILE").args(["logs", "1", "talk"]).output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("is encrypted") && err.contains("--encryption-key-file"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let k2 = key(&sb, "k2.key");
    // A reading command given a key on a folder kept in clear does not encrypt it.
    let clear = Sandbox::new();
    let out = clear.sluice(&["run", "-q", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = clear.cmd().env("SLUICE_ENCRYPTION_KEY_FILE", &k2).args(["runs"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!clear.data().join("encryption.json").exists(), "`runs` turned encryption on");
    let out = sb
        .cmd_in(&sb.path("nowhere"))
        .env("SLUICE_ENCRYPTION_KEY_FILE", &k1)
        .args(["key", "rotate", "--new-key-file", k2.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success() && text(&out.stderr).contains("no Sluice data"), "{}", text(&out.stderr));
    assert!(!sb.path("nowhere").join("db").exists(), "a mistyped folder is not created");
    let out = with(&k2, &["logs", "1", "talk"]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("but the key given is"), "{err}");
    assert!(folder_id.contains("key_id"), "{folder_id}");

    // Through the server, with the key.
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let k1s = k1.display().to_string();
    let srv = Server::start_with_env(&sb, &dags, &[], &[("SLUICE_ENCRYPTION_KEY_FILE", &k1s)]);
    let (code, body) = srv.get("/api/v1/runs/1/steps/talk/logs");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("out {CANARY}")), "{body}");
    drop(srv);

    // A changed byte in a stored chunk is an error, never garbage.
    let copy = sb.path("tampered");
    copy_dir(&sb.data(), &copy);
    {
        let db = sled::open(copy.join("db")).unwrap();
        let logs = db.open_tree("logs").unwrap();
        let (k, v) = logs.iter().next().unwrap().unwrap();
        let mut v = v.to_vec();
        let last = v.len() - 1;
        v[last] ^= 1;
        logs.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let out =
        sb.cmd_in(&copy).env("SLUICE_ENCRYPTION_KEY_FILE", &k1).args(["logs", "1", "talk"]).output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("does not authenticate"), "{err}");

    // Rotation: afterwards the new key reads the logs and the old one is refused.
    let out = with(&k1, &["key", "rotate", "--new-key-file", k2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("re-sealed"), "{}", text(&out.stdout));
    let logs = with(&k2, &["logs", "1", "talk"]);
    assert!(text(&logs.stdout).contains(&format!("err {CANARY}")), "{}", text(&logs.stderr));
    assert!(!with(&k1, &["logs", "1", "talk"]).status.success(), "the old key no longer opens the folder");
    assert!(holds_canary(&sb.data()).is_empty());
    let again = with(&k2, &["key", "rotate", "--new-key-file", k2.to_str().unwrap()]);
    assert!(text(&again.stderr).contains("nothing to rotate"), "{}", text(&again.stderr));
    let audit = with(&k2, &["audit", "--output", "json"]);
    assert!(text(&audit.stdout).contains("key.rotate"), "{}", text(&audit.stdout));
}

#[test]
fn artifacts_are_kept_encrypted_and_every_reader_gets_them_checked() {
    let sb = Sandbox::new();
    let k1 = key(&sb, "k1.key");
    let k2 = key(&sb, "k2.key");
    // Steps work in the pipeline's folder (not the data folder): what they write there is
    // theirs; what the store keeps of it must not be in clear.
    let spec = sb.write(
        "art.yaml",
        &format!(
            r#"name: art
steps:
  make:
    cache: true
    workdir: .
    process:
      shell: 'printf "%s-%s\n" {a} {b} > model.txt; head -c 200000 /dev/urandom >> model.txt; echo made >> ran.log'
    artifacts: {{model: model.txt}}
  use:
    needs: [make]
    workdir: .
    process:
      shell: 'cat {{{{ steps.make.artifacts.model.path }}}} > seen.txt; ls -l {{{{ steps.make.artifacts.model.path }}}} | cut -c1-10 > mode.txt'
"#,
            a = &CANARY[..10],
            b = &CANARY[11..],
        ),
    );
    let with = |k: &std::path::Path, args: &[&str]| {
        sb.cmd().env("SLUICE_ENCRYPTION_KEY_FILE", k).args(args).output().unwrap()
    };
    let out = with(&k1, &["run", "-q", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let made = std::fs::read(sb.path("model.txt")).unwrap();
    assert_eq!(std::fs::read(sb.path("seen.txt")).unwrap(), made, "the consumer read the plaintext");
    assert_eq!(std::fs::read_to_string(sb.path("mode.txt")).unwrap().trim(), "-r--r--r--", "read-only");
    let open = files_under(&sb.data().join("artifacts/open"));
    assert!(open.is_empty(), "its plaintext copy went with the attempt: {open:?}");
    let leaks = holds_canary(&sb.data());
    assert!(leaks.is_empty(), "in clear in the data folder: {leaks:?}");
    let listed: serde_json::Value =
        serde_json::from_slice(&with(&k1, &["artifacts", "--output", "json"]).stdout).unwrap();
    let digest = listed["artifacts"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(listed["artifacts"][0]["size"], made.len(), "{listed}");

    // `artifact get`, `artifact verify`, `artifact show`: decrypted and checked.
    let got = sb.path("got.txt");
    let out = with(&k1, &["artifact", "get", &digest, "--output-file", got.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&got).unwrap(), made);
    let out = with(&k1, &["artifact", "verify", &digest]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let shown = text(&with(&k1, &["artifact", "show", &digest]).stdout);
    assert!(shown.contains(".sealed") && shown.contains("matches its digest"), "{shown}");

    // The step cache restores the file, decrypted, into the work folder.
    std::fs::remove_file(sb.path("model.txt")).unwrap();
    let out = with(&k1, &["run", "-q", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(sb.path("ran.log")).unwrap(), "made\n", "the cache was used");
    assert_eq!(std::fs::read(sb.path("model.txt")).unwrap(), made, "restored in clear for the step");

    // The content API streams the plaintext.
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let k1s = k1.display().to_string();
    let srv = Server::start_with_env(&sb, &dags, &[], &[("SLUICE_ENCRYPTION_KEY_FILE", &k1s)]);
    let (code, body) = srv.get(&format!("/api/v1/artifacts/{digest}/content"));
    assert_eq!(code, 200);
    assert!(body.starts_with(CANARY), "{}", &body[..40.min(body.len())]);
    let (code, body) = srv.get(&format!("/api/v1/artifacts/{digest}/verify"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"ok\":true"), "{body}");
    drop(srv);

    // A changed byte in the stored file: a clear refusal, nothing written out.
    let copy = sb.path("tampered");
    copy_dir(&sb.data(), &copy);
    let sealed = walk(&copy.join("artifacts/sha256")).into_iter().find(|p| p.ends_with(".sealed")).unwrap();
    let mut bytes = std::fs::read(&sealed).unwrap();
    bytes[100_000] ^= 1;
    let mut perms = std::fs::metadata(&sealed).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&sealed, perms).unwrap();
    std::fs::write(&sealed, bytes).unwrap();
    let bad = sb.path("bad.txt");
    let out = sb
        .cmd_in(&copy)
        .env("SLUICE_ENCRYPTION_KEY_FILE", &k1)
        .args(["artifact", "get", &digest, "--output-file", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("does not authenticate"), "{err}");
    assert!(!bad.exists());

    // Rotation re-encrypts the artifact: the new key reads it, checked.
    let out = with(&k1, &["key", "rotate", "--new-key-file", k2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 artifact files"), "{}", text(&out.stdout));
    let got2 = sb.path("got2.txt");
    let out = with(&k2, &["artifact", "get", &digest, "--output-file", got2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&got2).unwrap(), made);
    assert!(holds_canary(&sb.data()).is_empty());
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "lock" {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
