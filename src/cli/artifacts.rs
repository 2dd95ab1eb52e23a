//! `sluice artifacts`, `sluice artifact show`, `sluice artifact get`: the data folder's
//! artifacts, read from the store, or from the server while one owns the folder.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use hyper::Method;
use serde_json::json;
use sluice_engine::artifacts;
use sluice_engine::server::api::artifacts as api;
use sluice_engine::store::ArtifactRecord;

use super::client::{Api, runtime};
use super::{fmt_time, parse_run_id};
use crate::Output;

/// What a listing is filtered by.
pub(crate) struct Filter<'a> {
    pub(crate) run: Option<&'a str>,
    pub(crate) step: Option<&'a str>,
}

/// The records through the store, or `None` when a server owns the folder (then ask it).
pub(crate) fn local<T>(
    data_dir: &Path,
    server: Option<&str>,
    read: impl FnOnce(&sluice_engine::driver::Engine) -> anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    match super::inspect::open(data_dir) {
        Err(e) if super::inspect::locked(&e) && super::client::server_url(data_dir, server).is_some() => {
            Ok(None)
        }
        Err(e) => Err(e),
        Ok(engine) => read(&engine).map(Some),
    }
}

pub(crate) fn list(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    f: Filter<'_>,
) -> anyhow::Result<ExitCode> {
    let run = f.run.map(parse_run_id).transpose()?;
    // Newest first: the store keeps them oldest first; the server answers newest first.
    let records: Vec<ArtifactRecord> = match local(data_dir, server, |e| Ok(e.store().artifacts(run)?))? {
        Some(r) => r.into_iter().rev().collect(),
        None => {
            let api = Api::new(data_dir, server)?;
            let mut path = "/api/v1/artifacts?limit=1000".to_string();
            if let Some(r) = run {
                path.push_str(&format!("&run={r}"));
            }
            if let Some(s) = f.step {
                path.push_str(&format!("&step={}", urlencode(s)));
            }
            let v = runtime()?.block_on(api.ok(Method::GET, &path, None))?;
            serde_json::from_value(v["artifacts"].clone()).context("the server's artifact list")?
        }
    };
    let records: Vec<ArtifactRecord> =
        records.into_iter().filter(|r| f.step.is_none_or(|s| r.step == s)).collect();
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&json!({ "v": 1, "artifacts": records }))?);
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        println!("no artifacts");
        return Ok(ExitCode::SUCCESS);
    }
    let width = records.iter().map(|r| r.step.len() + r.name.len() + 1).max().unwrap_or(10).max(10);
    println!("{:<7} {:<width$} {:<19} {:>10}  {:<20} FILE", "RUN", "STEP/NAME", "DIGEST", "SIZE", "STORED");
    for r in &records {
        let item = if r.item > 0 { format!("[{}]", r.item) } else { String::new() };
        println!(
            "{:<7} {:<width$} {:<19} {:>10}  {:<20} {}",
            r.run,
            format!("{}{item}/{}", r.step, r.name),
            short(&r.digest),
            r.size,
            fmt_time(r.at),
            r.file
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `sha256:` and the first 12 hex digits.
fn short(digest: &str) -> String {
    digest.chars().take(7 + 12).collect()
}

/// The full digest a user means: given in full (with or without `sha256:`), or as a prefix of
/// at least 8 hex digits that one stored artifact starts with.
pub(crate) fn resolve(records: &[ArtifactRecord], given: &str) -> anyhow::Result<String> {
    if let Ok(d) = artifacts::normalize(given) {
        return Ok(d);
    }
    let hex = given.strip_prefix(artifacts::SHA256).unwrap_or(given).to_ascii_lowercase();
    anyhow::ensure!(
        hex.len() >= 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "`{given}` is not an artifact digest (sha256:<64 hex digits>, or at least 8 of its first digits)"
    );
    let mut found: Vec<&str> = records
        .iter()
        .map(|r| r.digest.as_str())
        .filter(|d| d[artifacts::SHA256.len()..].starts_with(&hex))
        .collect();
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [one] => Ok(one.to_string()),
        [] => anyhow::bail!("no artifact's digest starts with {given}"),
        many => anyhow::bail!("{} artifacts' digests start with {given}; give more digits", many.len()),
    }
}

pub(crate) fn show(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    given: &str,
) -> anyhow::Result<ExitCode> {
    let doc = match local(data_dir, server, |e| {
        let all = e.store().artifacts(None)?;
        let digest = resolve(&all, given)?;
        let producers = e.store().artifacts_with(&digest)?;
        anyhow::ensure!(!producers.is_empty(), "there is no artifact {digest} in this data folder");
        let blobs = e.store().blobs();
        let check = api::check_of(&blobs, &digest);
        let path = blobs.stored_path(&digest)?.display().to_string();
        Ok(api::document(&digest, &producers, Some(path), check))
    })? {
        Some(doc) => doc,
        None => {
            let api = Api::new(data_dir, server)?;
            let digest = artifacts::normalize(given)
                .context("through the server, give the full digest (sha256:<64 hex digits>)")?;
            runtime()?.block_on(api.ok(Method::GET, &format!("/api/v1/artifacts/{digest}"), None))?
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("digest      {}", doc["digest"].as_str().unwrap_or(""));
    println!("size        {} bytes", doc["size"]);
    println!("media type  {}", doc["media_type"].as_str().unwrap_or(""));
    if let Some(p) = doc["path"].as_str() {
        println!("stored at   {p}");
    }
    match doc["check"]["ok"].as_bool() {
        Some(true) => println!("content     matches its digest"),
        _ => println!("content     DAMAGED: {}", doc["check"]["error"].as_str().unwrap_or("")),
    }
    println!("produced by");
    for p in doc["produced_by"].as_array().into_iter().flatten() {
        println!(
            "  run {} {} step {}{} attempt {} as `{}` ({})",
            p["run"],
            p["pipeline"].as_str().unwrap_or(""),
            p["step"].as_str().unwrap_or(""),
            if p["item"].as_u64().unwrap_or(0) > 0 { format!("[{}]", p["item"]) } else { String::new() },
            p["attempt"],
            p["name"].as_str().unwrap_or(""),
            p["file"].as_str().unwrap_or("")
        );
    }
    Ok(if doc["check"]["ok"].as_bool() == Some(true) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub(crate) fn get(
    data_dir: &Path,
    server: Option<&str>,
    given: &str,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    let done = local(data_dir, server, |e| {
        let all = e.store().artifacts(None)?;
        let digest = resolve(&all, given)?;
        let size = e.store().blobs().copy_out(&digest, out)?;
        Ok((digest, size))
    })?;
    let (digest, size) = match done {
        Some(d) => d,
        None => {
            let api = Api::new(data_dir, server)?;
            let digest = artifacts::normalize(given)
                .context("through the server, give the full digest (sha256:<64 hex digits>)")?;
            let bytes = runtime()?.block_on(api.bytes(&format!("/api/v1/artifacts/{digest}/content")))?;
            // Checked here too: what arrived is what the digest names.
            let tmp = out.with_extension("sluice-part");
            std::fs::File::create(&tmp)
                .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_all()))
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            let (found, size) = artifacts::hash_file(&tmp)?;
            if found != digest {
                let _ = std::fs::remove_file(&tmp);
                anyhow::bail!(
                    "the server sent content that hashes to {found}, not {digest}; nothing was written"
                );
            }
            std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
            (digest, size)
        }
    };
    eprintln!("wrote {} ({size} bytes, {digest} checked)", out.display());
    Ok(ExitCode::SUCCESS)
}

/// `sluice artifact verify`: the content against its digest, and each producing attempt's
/// signed provenance against the instance's key or `key`. Through a server, the envelopes are
/// fetched and checked here when a key is given (the server is then not trusted for them).
pub(crate) fn verify(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    given: &str,
    key: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let public =
        key.map(sluice_engine::security::keys::read_public).transpose().map_err(anyhow::Error::msg)?;
    let local = local(data_dir, server, |e| {
        let all = e.store().artifacts(None)?;
        let digest = resolve(&all, given)?;
        let public = public.clone().unwrap_or_else(|| e.signing_key().public().to_vec());
        Ok(serde_json::to_value(e.store().verify_artifact(&digest, &public)?)?)
    })?;
    let doc = match local {
        Some(doc) => doc,
        None => {
            let api = Api::new(data_dir, server)?;
            let digest = artifacts::normalize(given)
                .context("through the server, give the full digest (sha256:<64 hex digits>)")?;
            let rt = runtime()?;
            let mut doc =
                rt.block_on(api.ok(Method::GET, &format!("/api/v1/artifacts/{digest}/verify"), None))?;
            if let Some(public) = &public {
                let got = rt.block_on(api.ok(
                    Method::GET,
                    &format!("/api/v1/artifacts/{digest}/provenance"),
                    None,
                ))?;
                let mut attestations = Vec::new();
                for p in got["provenance"].as_array().into_iter().flatten() {
                    let record = ArtifactRecord {
                        v: 1,
                        digest: digest.clone(),
                        size: 0,
                        media_type: String::new(),
                        name: String::new(),
                        file: String::new(),
                        run: p["run"].as_u64().unwrap_or(0),
                        pipeline: p["pipeline"].as_str().unwrap_or("").to_string(),
                        step: p["step"].as_str().unwrap_or("").to_string(),
                        step_ix: 0,
                        item: p["item"].as_u64().unwrap_or(0) as u32,
                        attempt: p["attempt"].as_u64().unwrap_or(0) as u32,
                        at: 0,
                    };
                    let envelope = serde_json::from_value(p["envelope"].clone()).ok();
                    attestations.push(sluice_engine::store::attest(
                        &record,
                        envelope.as_ref(),
                        &digest,
                        public,
                    ));
                }
                let ok = doc["content"]["ok"] == true
                    && !attestations.is_empty()
                    && attestations.iter().all(|a| a.ok);
                doc["ok"] = json!(ok);
                doc["key_id"] = json!(sluice_engine::security::keys::key_id(public));
                doc["attestations"] = serde_json::to_value(&attestations)?;
            }
            doc
        }
    };
    let ok = doc["ok"] == true;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    let digest = doc["digest"].as_str().unwrap_or("");
    match doc["content"]["ok"].as_bool() {
        Some(true) => println!("content     matches {digest}"),
        _ => println!("content     DAMAGED: {}", doc["content"]["error"].as_str().unwrap_or("")),
    }
    let key_id = doc["key_id"].as_str().unwrap_or("");
    let attestations = doc["attestations"].as_array().cloned().unwrap_or_default();
    if attestations.is_empty() {
        println!("provenance  NONE: no attempt that produced it left signed provenance");
    }
    for a in &attestations {
        let item =
            if a["item"].as_u64().unwrap_or(0) > 0 { format!("[{}]", a["item"]) } else { String::new() };
        let at = format!(
            "run {} {} step {}{item} attempt {}",
            a["run"],
            a["pipeline"].as_str().unwrap_or(""),
            a["step"].as_str().unwrap_or(""),
            a["attempt"]
        );
        match a["error"].as_str() {
            None => println!("provenance  signed by key {} ({at})", short_key(key_id)),
            Some(e) => println!("provenance  DOES NOT VERIFY ({at}): {e}"),
        }
    }
    println!("{}", if ok { "verified" } else { "NOT verified" });
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn short_key(id: &str) -> &str {
    &id[..id.len().min(16)]
}

/// Everything but RFC 3986's unreserved characters (letters, digits, `-`, `_`, `.`, `~`).
const RESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A query value or path segment with everything but unreserved characters percent-encoded.
pub(crate) fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}
