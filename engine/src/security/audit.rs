//! The audit log: every state-changing action, appended in the same sled flush as the action,
//! each entry holding the SHA-256 of the one before it (a hash chain). Checkpoints sign the
//! chain's head (sequence, hash, time) with the instance's key every N entries and at
//! shutdown; they are kept in the store and also appended to a file outside it, so that
//! cutting entries off the end is detected, not only editing them.
//!
//! An entry's hash is the SHA-256 of its stored bytes (its JSON as written), so verification
//! needs no canonical form.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the first entry's `prev` holds.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: i64,
    /// Who: `token:<name>`, `local:<os user>`, `cron:<pipeline>@<slot>`, `alert:<fingerprint>`,
    /// `event:<source>/<id>`, `engine`.
    pub actor: String,
    /// What, as `noun.verb`: `run.start`, `run.cancel`, `token.create`, `gc`, ...
    pub action: String,
    /// What it was done to: `run:12`, `pipeline:train`, `token:ci`, ...
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// The API request's id, when it came through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// SHA-256 (hex) of the previous entry's stored bytes; [`GENESIS`] for the first.
    pub prev: String,
}

/// An action to record; the store gives it its sequence, time and `prev`.
#[derive(Debug, Clone, Default)]
pub struct Action {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub request: Option<String>,
}

impl Action {
    pub fn new(actor: impl Into<String>, action: impl Into<String>, target: impl Into<String>) -> Action {
        Action { actor: actor.into(), action: action.into(), target: target.into(), ..Default::default() }
    }

    pub fn after(mut self, v: Value) -> Action {
        self.after = Some(v);
        self
    }

    pub fn before(mut self, v: Value) -> Action {
        self.before = Some(v);
        self
    }

    pub fn request(mut self, id: Option<&str>) -> Action {
        self.request = id.map(str::to_string);
        self
    }
}

/// A signed statement of the chain's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub v: u32,
    pub seq: u64,
    /// The hash of entry `seq`.
    pub hash: String,
    pub at: i64,
    pub key_id: String,
    /// ed25519 signature over [`Checkpoint::message`], base64.
    pub sig: String,
}

impl Checkpoint {
    pub fn message(seq: u64, hash: &str, at: i64) -> Vec<u8> {
        format!("sluice-audit-checkpoint/v1\n{seq}\n{hash}\n{at}\n").into_bytes()
    }

    pub fn sign(key: &super::keys::SigningKey, seq: u64, hash: &str, at: i64) -> Checkpoint {
        use base64::Engine as _;
        let sig = key.sign(&Checkpoint::message(seq, hash, at));
        Checkpoint {
            v: 1,
            seq,
            hash: hash.to_string(),
            at,
            key_id: key.key_id(),
            sig: base64::engine::general_purpose::STANDARD.encode(sig),
        }
    }

    fn verifies(&self, public: &[u8]) -> bool {
        use base64::Engine as _;
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(&self.sig) else { return false };
        super::keys::verify(public, &Checkpoint::message(self.seq, &self.hash, self.at), &sig)
    }
}

pub fn entry_hash(stored: &[u8]) -> String {
    super::sha256_hex(stored)
}

/// What `audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub entries: u64,
    pub checkpoints: usize,
    /// The newest checkpoint's sequence: entries up to it are covered by a signature.
    pub covered_to: u64,
    /// The first problem, in sequence order.
    pub problem: Option<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The first entry concerned.
    pub seq: u64,
    /// `edited`, `deleted`, `reordered`, `truncated`, `forged_checkpoint`.
    pub kind: &'static str,
    pub message: String,
}

/// What the verifier reads of an entry: where it is and what it follows.
#[derive(Deserialize)]
struct Link<'a> {
    seq: u64,
    #[serde(borrow)]
    prev: std::borrow::Cow<'a, str>,
}

/// Checks the chain (`entries`: stored key and bytes, in key order) and the checkpoints
/// (from the store and from the file outside it) against the public key.
pub fn verify(
    entries: impl Iterator<Item = (u64, Vec<u8>)>,
    checkpoints: &[Checkpoint],
    public: &[u8],
) -> Verdict {
    let mut problems: Vec<Problem> = Vec::new();
    // Only the hashes a checkpoint signed are kept: a million entries keep a handful.
    let signed: std::collections::HashSet<u64> = checkpoints.iter().map(|c| c.seq).collect();
    let mut hashes: std::collections::BTreeMap<u64, String> = Default::default();
    let mut expected = 1u64;
    let mut prev_hash = GENESIS.to_string();
    let mut count = 0u64;
    let mut last = 0u64;
    for (key, bytes) in entries {
        count += 1;
        last = key;
        let hash = entry_hash(&bytes);
        if signed.contains(&key) {
            hashes.insert(key, hash.clone());
        }
        // Only the chain's fields are read; an edit of any other is seen by the hash.
        let entry: Link<'_> = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                problems.push(Problem {
                    seq: key,
                    kind: "edited",
                    message: format!("entry {key} was edited: it no longer decodes ({e})"),
                });
                prev_hash = hash;
                expected = key + 1;
                continue;
            }
        };
        if key > expected {
            let gone = if key == expected + 1 {
                format!("{expected}")
            } else {
                format!("{expected} to {}", key - 1)
            };
            problems.push(Problem {
                seq: expected,
                kind: "deleted",
                message: format!("entries {gone} were deleted: the log goes from {} to {key}", expected - 1),
            });
        } else if entry.seq != key {
            problems.push(Problem {
                seq: key,
                kind: "reordered",
                message: format!("the log's entry {key} is entry {}: entries were reordered", entry.seq),
            });
        } else if entry.prev != prev_hash && key == expected {
            problems.push(Problem {
                seq: key.saturating_sub(1).max(1),
                kind: "edited",
                message: if key == 1 {
                    format!("entry 1 was edited: it should start the chain (prev {GENESIS})")
                } else {
                    format!(
                        "entry {} was edited: its hash is {}, but entry {key} recorded {}",
                        key - 1,
                        &prev_hash[..16],
                        &entry.prev[..entry.prev.len().min(16)]
                    )
                },
            });
        }
        prev_hash = hash;
        expected = key + 1;
    }
    let mut covered_to = 0;
    for cp in checkpoints {
        if !cp.verifies(public) {
            problems.push(Problem {
                seq: cp.seq,
                kind: "forged_checkpoint",
                message: format!("the checkpoint at entry {} is not signed by this key", cp.seq),
            });
            continue;
        }
        covered_to = covered_to.max(cp.seq);
        match hashes.get(&cp.seq) {
            None if cp.seq > last => problems.push(Problem {
                seq: last + 1,
                kind: "truncated",
                message: format!(
                    "the log was cut off: it ends at entry {last}, but a checkpoint signed entry {}",
                    cp.seq
                ),
            }),
            None => {} // reported as deleted above
            Some(h) if *h != cp.hash => problems.push(Problem {
                seq: cp.seq,
                kind: "edited",
                message: format!(
                    "entry {} was edited: it no longer has the hash its checkpoint signed",
                    cp.seq
                ),
            }),
            Some(_) => {}
        }
    }
    problems.sort_by_key(|p| p.seq);
    Verdict {
        entries: count,
        checkpoints: checkpoints.len(),
        covered_to,
        problem: problems.into_iter().next(),
    }
}

/// Reads the checkpoints appended to a file outside the store (one JSON object a line; a
/// torn last line, from a crash while appending, is skipped).
pub fn read_checkpoint_file(path: &std::path::Path) -> Result<Vec<Checkpoint>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read the audit checkpoints {}: {e}", path.display())),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(c) => out.push(c),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => return Err(format!("{}:{}: not a checkpoint: {e}", path.display(), i + 1)),
        }
    }
    Ok(out)
}

/// Which entries `sluice audit` lists.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    since_ms: Option<i64>,
    /// The first sequence to look at.
    pub since_seq: Option<u64>,
    actor: Option<String>,
    action: Option<String>,
}

impl Filter {
    /// `since`: an instant (RFC 3339), a sequence (`#120`), or a span back from now (`24h`).
    pub fn parse(
        since: Option<&str>,
        actor: Option<String>,
        action: Option<String>,
    ) -> Result<Filter, String> {
        let mut f = Filter { actor, action, ..Default::default() };
        if let Some(text) = since.map(str::trim) {
            if let Some(seq) = text.strip_prefix('#') {
                f.since_seq = Some(seq.parse().map_err(|_| format!("since: `{text}` is not `#<sequence>`"))?);
            } else if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
                f.since_ms = Some(t.timestamp_millis());
            } else if let Ok(d) = humantime::parse_duration(text) {
                let now = chrono::Utc::now().timestamp_millis();
                f.since_ms = Some(now.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64));
            } else {
                return Err(format!(
                    "since: `{text}` is neither an instant (2026-12-01T00:00:00Z), a sequence (#120) nor a span (24h)"
                ));
            }
        }
        Ok(f)
    }

    pub fn keeps(&self, e: &AuditEntry) -> bool {
        let actor_ok = self
            .actor
            .as_deref()
            .is_none_or(|a| e.actor == a || e.actor.split_once(':').is_some_and(|(_, name)| name == a));
        let action_ok =
            self.action.as_deref().is_none_or(|a| e.action == a || e.action.starts_with(&format!("{a}.")));
        actor_ok && action_ok && self.since_ms.is_none_or(|t| e.at >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::keys::SigningKey;

    fn chain(n: u64) -> Vec<(u64, Vec<u8>)> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let e = AuditEntry {
                    seq,
                    at: seq as i64,
                    actor: "local:root".into(),
                    action: "run.start".into(),
                    target: format!("run:{seq}"),
                    before: None,
                    after: None,
                    request: None,
                    prev: prev.clone(),
                };
                let bytes = serde_json::to_vec(&e).unwrap();
                prev = entry_hash(&bytes);
                (seq, bytes)
            })
            .collect()
    }

    #[test]
    fn each_kind_of_tampering_is_found_at_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(dir.path(), None).unwrap();
        let log = chain(10);
        let cp = Checkpoint::sign(&key, 10, &entry_hash(&log[9].1), 10);
        let check = |l: Vec<(u64, Vec<u8>)>| verify(l.into_iter(), std::slice::from_ref(&cp), key.public());
        let good = check(log.clone());
        assert_eq!((good.entries, good.covered_to, good.problem), (10, 10, None));

        let mut edited = log.clone();
        edited[3].1 = String::from_utf8(edited[3].1.clone()).unwrap().replace("run:4", "run:5").into_bytes();
        let p = check(edited).problem.unwrap();
        assert_eq!((p.seq, p.kind), (4, "edited"), "{}", p.message);

        let mut last_edited = log.clone();
        last_edited[9].1 =
            String::from_utf8(last_edited[9].1.clone()).unwrap().replace("root", "eve").into_bytes();
        assert_eq!(check(last_edited).problem.unwrap().kind, "edited");

        let mut deleted = log.clone();
        deleted.remove(5);
        let p = check(deleted).problem.unwrap();
        assert_eq!((p.seq, p.kind), (6, "deleted"), "{}", p.message);

        let mut reordered = log.clone();
        let (a, b) = (reordered[6].1.clone(), reordered[7].1.clone());
        reordered[6].1 = b;
        reordered[7].1 = a;
        let p = check(reordered).problem.unwrap();
        assert_eq!((p.seq, p.kind), (7, "reordered"), "{}", p.message);

        let p = check(log[..8].to_vec()).problem.unwrap();
        assert_eq!((p.seq, p.kind), (9, "truncated"), "{}", p.message);

        let mut forged = cp.clone();
        forged.seq = 9;
        let v = verify(log.clone().into_iter(), &[forged], key.public());
        assert_eq!(v.problem.unwrap().kind, "forged_checkpoint");
    }
}
