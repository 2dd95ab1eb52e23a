//! Encryption at rest of step logs: with a key, no byte of what steps print is kept in
//! clear anywhere in the data folder (sled files included), and the step's outputs file is
//! gone; the logs read back with the key, through the CLI and the API; a missing key, another
//! key and a changed byte are each a clear error; `sluice key rotate` re-seals with a new key.

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
