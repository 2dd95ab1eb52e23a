//! `sluice token create|list|revoke` and `sluice audit [verify]`: on the data folder when no
//! server holds it (acting as the folder's owner, audited as the local OS user), else
//! through the server's API with the CLI's token.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use hyper::Method;
use serde_json::{Value, json};

use sluice_engine::security::audit::{AuditEntry, Filter, Verdict};
use sluice_engine::security::{Role, local_actor};
use sluice_engine::server::api::admin;

use super::artifacts::local;
use super::client::{Api, runtime};
use crate::Output;

pub(crate) fn create(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    name: &str,
    role: &str,
    expires: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    let role = Role::parse(role).map_err(anyhow::Error::msg)?;
    let made = local(data_dir, server, |e| {
        let m = admin::create(e, name, role, expires, &local_actor(), None).map_err(anyhow::Error::msg)?;
        Ok(json!({ "token": m.token, "record": m.record.public(e.now_ms()) }))
    })?;
    let v = match made {
        Some(v) => v,
        None => {
            let mut body = json!({ "name": name, "role": role.as_str() });
            if let Some(d) = expires {
                body["expires"] = json!(humantime::format_duration(d).to_string());
            }
            runtime()?.block_on(Api::new(data_dir, server)?.ok(Method::POST, "/api/v1/tokens", Some(body)))?
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let token = v["token"].as_str().context("the answer holds no token")?;
    println!("{token}");
    let expiry = match v["record"]["expires_at"].as_i64() {
        Some(ms) => format!("until {}", super::fmt_time(ms)),
        None => "with no expiry".to_string(),
    };
    eprintln!(
        "made token `{name}` with role {role}, {expiry}. This is the only time its secret is shown: keep it (SLUICE_TOKEN=...)."
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn list(data_dir: &Path, server: Option<&str>, output: Output) -> anyhow::Result<ExitCode> {
    let found = local(data_dir, server, |e| {
        let now = e.now_ms();
        Ok(e.store().tokens()?.iter().map(|t| t.public(now)).collect::<Vec<Value>>())
    })?;
    let list = match found {
        Some(l) => l,
        None => {
            let v =
                runtime()?.block_on(Api::new(data_dir, server)?.ok(Method::GET, "/api/v1/tokens", None))?;
            v["tokens"].as_array().cloned().unwrap_or_default()
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&json!({ "v": 1, "tokens": list }))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<9} {:<8} {:<20} {:<20} ID", "NAME", "ROLE", "STATE", "CREATED", "EXPIRES");
    for t in &list {
        let time = |k: &str| t[k].as_i64().map_or("-".to_string(), super::fmt_time);
        println!(
            "{:<24} {:<9} {:<8} {:<20} {:<20} {}",
            t["name"].as_str().unwrap_or("?"),
            t["role"].as_str().unwrap_or("?"),
            t["state"].as_str().unwrap_or("?"),
            time("created_at"),
            time("expires_at"),
            t["id"].as_str().unwrap_or("?"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn revoke(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let done = local(data_dir, server, |e| {
        let now = e.now_ms();
        let r = admin::revoke(e, name, &local_actor(), None).map_err(anyhow::Error::msg)?;
        Ok(r.iter().map(|t| t.public(now)).collect::<Vec<Value>>())
    })?;
    let revoked = match done {
        Some(r) => r,
        None => {
            let path = format!("/api/v1/tokens/{name}/revoke");
            let v = runtime()?.block_on(Api::new(data_dir, server)?.ok(Method::POST, &path, None))?;
            v["revoked"].as_array().cloned().unwrap_or_default()
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&json!({ "v": 1, "revoked": revoked }))?);
    } else {
        for t in &revoked {
            println!(
                "revoked token `{}` ({})",
                t["name"].as_str().unwrap_or("?"),
                t["id"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) struct AuditQuery<'a> {
    pub(crate) since: Option<&'a str>,
    pub(crate) actor: Option<&'a str>,
    pub(crate) action: Option<&'a str>,
    pub(crate) limit: usize,
}

pub(crate) fn audit(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    q: AuditQuery<'_>,
) -> anyhow::Result<ExitCode> {
    let filter = Filter::parse(q.since, q.actor.map(str::to_string), q.action.map(str::to_string))
        .map_err(anyhow::Error::msg)?;
    let entries: Vec<AuditEntry> =
        match local(data_dir, server, |e| Ok(e.store().audit_filtered(&filter, q.limit)?))? {
            Some(list) => list,
            None => {
                let mut query = vec![format!("limit={}", q.limit)];
                for (k, v) in [("since", q.since), ("actor", q.actor), ("action", q.action)] {
                    if let Some(v) = v {
                        query.push(format!("{k}={}", super::artifacts::urlencode(v)));
                    }
                }
                let path = format!("/api/v1/audit?{}", query.join("&"));
                let v = runtime()?.block_on(Api::new(data_dir, server)?.ok(Method::GET, &path, None))?;
                serde_json::from_value(v["entries"].clone()).context("the server's audit entries")?
            }
        };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&json!({ "v": 1, "entries": entries }))?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in &entries {
        let detail = match (&e.before, &e.after) {
            (Some(b), Some(a)) => format!(" {b} -> {a}"),
            (None, Some(a)) => format!(" {a}"),
            (Some(b), None) => format!(" was {b}"),
            (None, None) => String::new(),
        };
        println!(
            "{:>6} {} {:<22} {:<14} {}{detail}",
            e.seq,
            super::fmt_time(e.at),
            e.actor,
            e.action,
            e.target
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn verify(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    key: Option<&Path>,
    checkpoints: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let found = local(data_dir, server, |e| {
        let public = match key {
            Some(k) => sluice_engine::security::keys::read_public(k).map_err(anyhow::Error::msg)?,
            None => e.signing_key().public().to_vec(),
        };
        e.store().verify_audit(&public, checkpoints).map_err(anyhow::Error::msg)
    })?;
    let verdict: Verdict = match found {
        Some(v) => v,
        None => {
            if key.is_some() || checkpoints.is_some() {
                bail!(
                    "--key and --checkpoints check the data folder directly; stop the server that holds it first"
                );
            }
            let v = runtime()?.block_on(Api::new(data_dir, server)?.ok(
                Method::GET,
                "/api/v1/audit/verify",
                None,
            ))?;
            verdict_of(&v["verdict"])?
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&json!({ "v": 1, "verdict": verdict }))?);
    } else {
        match &verdict.problem {
            None => println!(
                "the audit log is intact: {} entries, {} checkpoint(s), signed up to entry {}",
                verdict.entries, verdict.checkpoints, verdict.covered_to
            ),
            Some(p) => {
                println!("the audit log was tampered with at entry {} ({}): {}", p.seq, p.kind, p.message)
            }
        }
    }
    Ok(if verdict.problem.is_none() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn verdict_of(v: &Value) -> anyhow::Result<Verdict> {
    let problem = match &v["problem"] {
        Value::Null => None,
        p => Some(sluice_engine::security::audit::Problem {
            seq: p["seq"].as_u64().unwrap_or(0),
            kind: match p["kind"].as_str().unwrap_or("") {
                "edited" => "edited",
                "deleted" => "deleted",
                "reordered" => "reordered",
                "truncated" => "truncated",
                _ => "forged_checkpoint",
            },
            message: p["message"].as_str().unwrap_or("").to_string(),
        }),
    };
    Ok(Verdict {
        entries: v["entries"].as_u64().context("the server's verdict")?,
        checkpoints: v["checkpoints"].as_u64().unwrap_or(0) as usize,
        covered_to: v["covered_to"].as_u64().unwrap_or(0),
        problem,
    })
}

/// `sluice key generate FILE`.
pub(crate) fn key_generate(file: &Path) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (key, text) = sluice_engine::security::crypt::DataKey::generate();
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file).map_err(
        |e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                anyhow::anyhow!("{} exists already; a key file is never overwritten", file.display())
            }
            _ => anyhow::anyhow!("cannot create {}: {e}", file.display()),
        },
    )?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("{}", key.id());
    eprintln!(
        "wrote the key {} to {}; keep a copy somewhere safe: what it encrypts cannot be read without it",
        key.id(),
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `sluice key rotate --new-key-file NEW`: on the folder itself, which must be free.
pub(crate) fn key_rotate(data_dir: &Path, current: Option<&Path>, new: &Path) -> anyhow::Result<ExitCode> {
    use sluice_engine::security::crypt::{self, DataKey, FolderKey};
    anyhow::ensure!(
        data_dir.join("db").exists(),
        "no Sluice data in {} (nothing to encrypt; pass --data-dir)",
        data_dir.display()
    );
    let new = DataKey::load(new).map_err(anyhow::Error::msg)?;
    let current = current.map(DataKey::load).transpose().map_err(anyhow::Error::msg)?;
    let record = crypt::read_folder(data_dir).map_err(anyhow::Error::msg)?;
    if let Some(r) = &record {
        if r.key_id == new.id() && r.rotating_to.is_none() {
            bail!("the data folder is encrypted with the key {} already; nothing to rotate", r.key_id);
        }
        let Some(c) = &current else {
            bail!(
                "the data folder is encrypted with the key {}: give it with --encryption-key-file or SLUICE_ENCRYPTION_KEY_FILE",
                r.key_id
            );
        };
        if c.id() != r.key_id {
            bail!(
                "the data folder is encrypted with the key {}, but the current key given is {}",
                r.key_id,
                c.id()
            );
        }
        if let Some(to) = r.rotating_to.as_deref().filter(|to| *to != new.id()) {
            bail!(
                "an interrupted rotation to the key {to} must be finished first: run it again with that key as --new-key-file"
            );
        }
    }
    let store = sluice_engine::store::Store::open(data_dir)?;
    let from_id = record.as_ref().map(|r| r.key_id.clone());
    // Marked first: an interrupted rotation is seen, and finished by running it again.
    let marker = match &record {
        Some(r) => FolderKey { v: 1, key_id: r.key_id.clone(), rotating_to: Some(new.id()) },
        None => FolderKey { v: 1, key_id: new.id(), rotating_to: None },
    };
    crypt::write_folder(data_dir, &marker).map_err(anyhow::Error::msg)?;
    let n = store.reseal_logs(current.as_ref(), &new)?;
    let (new, current) = (std::sync::Arc::new(new), current.map(std::sync::Arc::new));
    let blobs = sluice_engine::artifacts::Blobs::in_data_dir(data_dir).with_key(Some(new.clone()));
    let (files, failed) = blobs.reseal(current)?;
    crypt::write_folder(data_dir, &FolderKey { v: 1, key_id: new.id(), rotating_to: None })
        .map_err(anyhow::Error::msg)?;
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let action = sluice_engine::security::audit::Action::new(local_actor(), "key.rotate", "encryption")
        .before(json!({ "key": from_id }))
        .after(
            json!({ "key": new.id(), "resealed": n, "artifacts": files, "artifacts_failed": failed.len() }),
        );
    store.audit(action, at)?;
    store.flush()?;
    println!("re-sealed {n} step log chunks and {files} artifact files with the key {}", new.id());
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for (digest, why) in &failed {
        eprintln!("error: artifact {digest} was not re-encrypted: {why}");
    }
    eprintln!(
        "{} damaged artifact file(s) are left as they were; a run that produces their content again replaces them",
        failed.len()
    );
    Ok(ExitCode::from(1))
}
