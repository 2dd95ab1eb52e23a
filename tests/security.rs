//! Tokens and roles on every route, the failed-authentication limit, and the audit log's
//! tamper evidence, against a real `sluice serve` and its real sled files.

mod common;

use common::{Sandbox, Server, text};
use serde_json::Value;

const HOOK: &str = "name: hook\nparams:\n  commit: {type: string, default: x}\non:\n  - webhook: {source: ci}\n    params: {commit: \"{{ event.after }}\"}\nsteps:\n  a:\n    process: {command: [\"true\"]}\n";

fn dags(sb: &Sandbox) -> std::path::PathBuf {
    let dir = sb.path("dags");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hook.yaml"), HOOK).unwrap();
    dir
}

/// Makes a token through the CLI (which goes through the server that holds the folder).
fn token(sb: &Sandbox, name: &str, role: &str, extra: &[&str]) -> String {
    let out = sb.sluice(&[&["token", "create", name, "--role", role], extra].concat());
    assert!(out.status.success(), "token create {name}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// A request path with its parameters filled in.
fn concrete(path: &str) -> String {
    let mut p = path
        .replace("{name}", "hook")
        .replace("{run}", "1")
        .replace("{step}", "a")
        .replace("{key}", "ci")
        .replace("{file}", "app.js")
        .replace("{alias}", "production")
        .replace("{version}", "1")
        .replace("{*path}", "0/probe/artifacts/probe.txt")
        .replace("{digest}", &format!("sha256:{}", "0".repeat(64)));
    if p.ends_with("/stream") {
        p.push_str("?timeout_s=1");
    }
    if p.ends_with("/wait") {
        p.push_str("?timeout_s=1");
    }
    if p.ends_with("/tokens/hook/revoke") {
        p = p.replace("/tokens/hook/", "/tokens/nobody/");
    }
    p
}

#[test]
fn every_route_answers_each_role_and_each_bad_token_as_its_permission_says() {
    let sb = Sandbox::new();
    let mut srv = Server::start(&sb, &dags(&sb), &["--auth-failure-limit", "100000"]);
    assert!(srv.token.starts_with("sluice_"), "the first start made an admin token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(sb.data().join("admin.token")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let roles = ["viewer", "runner", "editor", "approver", "admin", "events"];
    let tokens: Vec<(&str, String)> =
        roles.iter().map(|r| (*r, token(&sb, &format!("t-{r}"), r, &[]))).collect();
    let expired = token(&sb, "short", "admin", &["--expires", "1ms"]);
    let revoked = token(&sb, "gone", "admin", &[]);
    assert!(sb.sluice(&["token", "revoke", "gone"]).status.success());
    // A token's secret is nowhere in the data folder.
    for entry in walk(&sb.data()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let hay = String::from_utf8_lossy(&bytes);
        for (_, t) in &tokens {
            assert!(!hay.contains(t.as_str()), "a token's secret is stored in {}", entry.display());
        }
    }
    let mut forged = tokens[4].1.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");

    let doc = srv.json("/api/v1/openapi.json");
    let mut walked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let permission = op["x-sluice-permission"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} declares no permission"));
            let allowed: Vec<&str> =
                op["x-sluice-roles"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
            let url = concrete(path);
            let m = method.to_ascii_uppercase();
            // The login takes a token in its body (the admin's), as the web UI sends it.
            let body =
                if path == "/ui/login" { format!("{{\"token\": \"{}\"}}", srv.token) } else { "{}".into() };
            let call = |token: Option<&str>| srv.request_as(token, &m, &url, body.as_bytes(), &[]);
            if permission == "public" {
                let (code, _, body) = call(None);
                assert!(code < 400, "{m} {path} is public, but answered {code}: {body}");
                continue;
            }
            let (code, head, body) = call(None);
            assert_eq!(code, 401, "{m} {path} without a token: {body}");
            assert!(head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{m} {path}: {head}");
            for (what, bad) in [
                ("a forged", forged.as_str()),
                ("an expired", &expired),
                ("a revoked", &revoked),
                ("a malformed", "hello"),
            ] {
                let (code, head, body) = call(Some(bad));
                assert_eq!(code, 401, "{m} {path} with {what} token: {body}");
                assert!(
                    head.contains("invalid_token") || head.contains("invalid_request"),
                    "{m} {path}: {head}"
                );
            }
            for (role, t) in &tokens {
                let (code, _, body) = call(Some(t));
                if allowed.contains(role) {
                    assert!(
                        code != 401 && code != 403,
                        "{m} {path} as {role} (allowed) answered {code}: {body}"
                    );
                } else {
                    assert_eq!(code, 403, "{m} {path} as {role} (not allowed): {body}");
                    assert!(body.contains(permission), "{body}");
                }
            }
            walked += 1;
        }
    }
    assert!(walked >= 25, "walked {walked} routes");
    // The expired and revoked ones say why.
    let (_, _, body) = srv.request_as(Some(&expired), "GET", "/api/v1/runs", b"", &[]);
    assert!(body.contains("expired"), "{body}");
    let (_, _, body) = srv.request_as(Some(&revoked), "GET", "/api/v1/runs", b"", &[]);
    assert!(body.contains("revoked"), "{body}");
    // The CLI uses SLUICE_TOKEN: a viewer may list runs but not start one.
    let viewer = &tokens[0].1;
    let out = sb.cmd().env("SLUICE_TOKEN", viewer).args(["trigger", "hook"]).output().unwrap();
    assert!(!out.status.success() && text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    let out = sb.cmd().env("SLUICE_TOKEN", viewer).args(["status", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(srv.stop().success());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.file_name().is_some_and(|n| n != "admin.token") {
            out.push(p);
        }
    }
    out
}

#[test]
fn failed_authentications_are_limited_per_address_and_huge_headers_refused() {
    let sb = Sandbox::new();
    let mut srv = Server::start(&sb, &dags(&sb), &["--auth-failure-limit", "5"]);
    let bad = format!("sluice_{}_{}", "0".repeat(16), "A".repeat(43));
    for i in 0..5 {
        let (code, _, body) = srv.request_as(Some(&bad), "GET", "/api/v1/runs", b"", &[]);
        assert_eq!(code, 401, "attempt {i}: {body}");
    }
    let (code, head, body) = srv.request_as(Some(&bad), "GET", "/api/v1/runs", b"", &[]);
    assert_eq!(code, 429, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    // The address is held off, even with a good token, until its minute is over.
    assert_eq!(srv.get("/api/v1/runs").0, 429);
    assert_eq!(srv.get("/api/v1/health").0, 200, "health needs no token");
    // A 1 MB Authorization header is refused cleanly, and the server goes on.
    let huge = format!("Bearer {}", "x".repeat(1 << 20));
    let (code, _, _) = srv.request_as(None, "GET", "/api/v1/runs", b"", &[("Authorization", &huge)]);
    assert!(code == 431 || code == 401 || code == 429 || code == 0, "a 1 MB header answered {code}");
    assert_eq!(srv.get("/api/v1/health").0, 200);
    assert!(srv.stop().success());
}

/// Runs `sluice audit verify` on a data folder; returns (exit code, stdout).
fn verify(sb: &Sandbox, data: &std::path::Path) -> (i32, String) {
    let out = sb.sluice_in(data, &["audit", "verify"]);
    (out.status.code().unwrap_or(-1), text(&out.stdout) + &text(&out.stderr))
}

/// A copy of the data folder, its audit tree changed by `edit` (sled, opened directly).
fn tampered(sb: &Sandbox, name: &str, edit: impl FnOnce(&sled::Tree, &sled::Tree)) -> std::path::PathBuf {
    let copy = sb.path(name);
    let status = std::process::Command::new("cp").arg("-a").arg(sb.data()).arg(&copy).status().unwrap();
    assert!(status.success());
    let db = sled::open(copy.join("db")).unwrap();
    edit(&db.open_tree("audit").unwrap(), &db.open_tree("audit_checkpoints").unwrap());
    db.flush().unwrap();
    drop(db);
    copy
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

#[test]
fn the_audit_log_records_who_did_what_and_verify_finds_each_kind_of_tampering() {
    let sb = Sandbox::new();
    let mut srv = Server::start(&sb, &dags(&sb), &["--audit-every", "3"]);
    let runner = token(&sb, "ci", "runner", &[]);
    let (code, _, b) = srv.request_as(
        Some(&runner),
        "POST",
        "/api/v1/pipelines/hook/runs",
        b"{}",
        &[("X-Request-Id", "req-42")],
    );
    assert_eq!(code, 201, "{b}");
    srv.wait_run(1);
    let (code, _, b) =
        srv.request_as(Some(&runner), "POST", "/api/v1/runs/1/retry", br#"{"from": "a"}"#, &[]);
    assert_eq!(code, 201, "{b}");
    srv.wait_run(2);
    let (code, _, b) =
        srv.request_as(Some(&runner), "POST", "/api/v1/events/ci", br#"{"after": "abc"}"#, &[]);
    assert_eq!(code, 202, "{b}");
    assert_eq!(srv.post("/api/v1/gc", "{}").0, 200);
    // The audit log is the approver's and admin's to read, not the runner's.
    assert_eq!(srv.request_as(Some(&runner), "GET", "/api/v1/audit", b"", &[]).0, 403);
    let log = srv.json("/api/v1/audit");
    let entries = log["entries"].as_array().unwrap();
    let find = |action: &str| -> Vec<&Value> { entries.iter().filter(|e| e["action"] == action).collect() };
    let starts = find("run.start");
    assert_eq!(starts.len(), 3, "{log}");
    assert_eq!(starts[0]["actor"], "token:ci");
    assert_eq!(starts[0]["request"], "req-42");
    assert_eq!(starts[0]["target"], "run:1");
    assert_eq!(starts[1]["after"]["trigger"], "retry");
    assert!(starts[2]["actor"].as_str().unwrap().starts_with("event:ci/"), "{}", starts[2]);
    assert_eq!(
        find("token.create").iter().map(|e| e["actor"].as_str().unwrap()).collect::<Vec<_>>(),
        ["engine", "token:admin"]
    );
    assert_eq!(find("gc")[0]["actor"], "token:admin");
    // Each entry holds the previous one's hash.
    for pair in entries.windows(2) {
        assert_eq!(pair[1]["seq"].as_u64().unwrap(), pair[0]["seq"].as_u64().unwrap() + 1);
        assert_eq!(pair[1]["prev"].as_str().unwrap().len(), 64);
    }
    // Filters, through the server.
    let out = sb.sluice(&["audit", "--actor", "ci", "--action", "run", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 2, "{v}");
    let out = sb.sluice(&["audit", "verify"]);
    assert!(out.status.success() && text(&out.stdout).contains("intact"), "{}", text(&out.stdout));
    assert!(srv.stop().success());
    let total = entries.len() as u64;
    assert_eq!(total, 6, "two tokens, three runs, a gc");

    // Stopped: the head is signed, in the store and in the file outside it.
    let (code, out) = verify(&sb, &sb.data());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("signed up to entry {total}")), "{out}");
    let file = sb.data().join("audit/checkpoints.jsonl");
    assert!(std::fs::read_to_string(&file).unwrap().lines().count() >= 2, "every 3 entries and at shutdown");
    // A local command acts as the folder's owner.
    assert!(sb.sluice(&["token", "create", "later", "--role", "viewer"]).status.success());
    let out = sb.sluice(&["audit", "--action", "token", "--output", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["entries"].as_array().unwrap().last().unwrap()["actor"].as_str().unwrap().starts_with("local:")
    );
    let total = total + 1;

    // Edited: an entry's actor changed.
    let d = tampered(&sb, "edited", |audit, _| {
        let v = audit.get(key(3)).unwrap().unwrap();
        let s = String::from_utf8(v.to_vec()).unwrap();
        let changed = s.replacen("\"actor\":\"", "\"actor\":\"x", 1);
        audit.insert(key(3), changed.as_bytes()).unwrap();
    });
    let (code, out) = verify(&sb, &d);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("at entry 3 (edited)"), "{out}");
    // Deleted.
    let d = tampered(&sb, "deleted", |audit, _| {
        audit.remove(key(4)).unwrap();
    });
    let (code, out) = verify(&sb, &d);
    assert_eq!(code, 1);
    assert!(out.contains("at entry 4 (deleted)"), "{out}");
    // Reordered: two entries swapped.
    let d = tampered(&sb, "reordered", |audit, _| {
        let (a, b) = (audit.get(key(5)).unwrap().unwrap(), audit.get(key(6)).unwrap().unwrap());
        audit.insert(key(5), b).unwrap();
        audit.insert(key(6), a).unwrap();
    });
    let (code, out) = verify(&sb, &d);
    assert_eq!(code, 1);
    assert!(out.contains("at entry 5 (reordered)"), "{out}");
    // Cut off: the last entries and the store's checkpoints gone; the file outside keeps one.
    let d = tampered(&sb, "truncated", |audit, checkpoints| {
        for seq in (total - 2)..=total {
            audit.remove(key(seq)).unwrap();
        }
        checkpoints.clear().unwrap();
    });
    let copy_file = d.join("audit/checkpoints.jsonl");
    std::fs::copy(&file, &copy_file).unwrap();
    let (code, out) = verify(&sb, &d);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(truncated)") && out.contains(&format!("ends at entry {}", total - 3)), "{out}");
    // And the untouched folder is still intact.
    assert_eq!(verify(&sb, &sb.data()).0, 0);
}

#[test]
fn a_signing_source_takes_only_bodies_signed_with_its_secret() {
    use sluice_engine::security::webhook::sign;
    let sb = Sandbox::new();
    let dir = sb.path("dags");
    std::fs::create_dir_all(&dir).unwrap();
    let github = HOOK.replace("name: hook", "name: gh").replace("source: ci", "source: github");
    std::fs::write(dir.join("gh.yaml"), github).unwrap();
    std::fs::write(dir.join("hook.yaml"), HOOK).unwrap();
    let secret = "whsec-canary-5e1d0c";
    let file = sb.write("github.secret", &format!("{secret}\n"));

    // A secret that cannot be read stops the server before it starts, naming the reference.
    let out = sb.sluice(&[
        "serve",
        "--dags",
        dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--webhook-secret",
        "github=env:SLUICE_TEST_SURELY_UNSET_WEBHOOK",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("webhook secret of `github`") && err.contains("is not set"), "{err}");

    let spec = format!("github=file:{}", file.display());
    let srv = Server::start(&sb, &dir, &["--webhook-secret", &spec]);
    let body = br#"{"ref": "refs/heads/main", "after": "abc123"}"#;
    let post = |token: Option<&str>, headers: &[(&str, &str)], body: &[u8]| {
        let (code, _, answer) = srv.request_as(token, "POST", "/api/v1/events/github", body, headers);
        (code, answer)
    };
    let good = sign(secret.as_bytes(), body);

    // Signed with the secret: taken without any token, as the events role.
    let (code, answer) = post(None, &[("X-Hub-Signature-256", &good)], body);
    assert_eq!(code, 202, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["status"], "matched", "{answer}");
    let run = answer["runs"][0].as_u64().unwrap();
    assert_eq!(srv.wait_run(run)["params"]["commit"], "abc123");
    // Sluice's own header name works the same.
    let (code, _) = post(None, &[("X-Sluice-Signature-256", &good)], body);
    assert_eq!(code, 202);

    // Anything else is a 401 that says what is wrong: no signature (a token does not stand in
    // for it, not even the admin's), another secret, a changed body, a malformed header.
    let refused = |token: Option<&str>, headers: &[(&str, &str)], body: &[u8], want: &str| {
        let (code, answer) = post(token, headers, body);
        assert_eq!(code, 401, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["error"]["code"], want, "{answer}");
        assert!(!answer.contains(secret), "{answer}");
    };
    refused(Some(&srv.token), &[], body, "unsigned");
    refused(None, &[("X-Hub-Signature-256", &sign(b"another secret", body))], body, "invalid_signature");
    refused(
        None,
        &[("X-Hub-Signature-256", &good)],
        br#"{"ref": "refs/heads/main", "after": "evil"}"#,
        "invalid_signature",
    );
    refused(None, &[("X-Hub-Signature-256", "sha256=beef")], body, "invalid_signature");

    // A source without a secret still takes tokens.
    let (code, _, answer) = srv.request_as(Some(&srv.token), "POST", "/api/v1/events/ci", body, &[]);
    assert_eq!(code, 202, "{answer}");
    let (code, _, _) =
        srv.request_as(None, "POST", "/api/v1/events/ci", body, &[("X-Hub-Signature-256", &good)]);
    assert_eq!(code, 401, "a signature is no token for a source without a secret");
    // Only the two signed requests above started runs of gh (and the ci one started hook).
    let runs: Value = serde_json::from_str(&srv.get("/api/v1/runs?pipeline=gh").1).unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "{runs}");
    assert_eq!(srv.wait_run(runs["runs"][0]["id"].as_u64().unwrap())["params"]["commit"], "abc123");
    // The source spelled with a percent escape is the same source: still needs the signature.
    let (code, _, answer) = srv.request_as(Some(&srv.token), "POST", "/api/v1/events/%67ithub", body, &[]);
    assert_eq!(code, 401, "an escaped source name passed without a signature: {answer}");
    // Bad signatures do not lock the sender's address out: a good one still passes.
    for _ in 0..25 {
        let (code, _) = post(None, &[("X-Hub-Signature-256", "sha256=beef")], body);
        assert_eq!(code, 401);
    }
    let (code, answer) = post(None, &[("X-Hub-Signature-256", &good)], body);
    assert_eq!(code, 202, "{answer}");
    let log = std::fs::read_to_string(sb.path("serve.log")).unwrap();
    assert!(log.contains("/api/v1/events"), "the access log was read: {log}");
    assert!(!log.contains(secret), "the server's log shows the secret");
}
