//! Tokens and the audit log in the store. Trees: `tokens` (id -> record), `audit` (sequence,
//! big-endian -> the entry's bytes), `audit_checkpoints` (sequence -> checkpoint).
//!
//! An audit entry is written with the action's other writes and made durable by the same
//! flush ([`Store::flush`]); nothing here flushes on its own, except a checkpoint's copy in
//! the file outside the store.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{Result, Store, StoreError, decode, encode};
use crate::security::audit::{self, Action, AuditEntry, Checkpoint, GENESIS};
use crate::security::keys::SigningKey;
use crate::security::tokens::{self, Refusal, TokenRecord};

/// The chain's head, kept in memory (loaded at open), and when to checkpoint it.
#[derive(Debug)]
pub(super) struct AuditHead {
    seq: u64,
    hash: String,
    /// The newest sequence a checkpoint signed.
    signed: u64,
    signer: Option<Arc<Signer>>,
}

/// Signs checkpoints: every `every` entries and when asked (at shutdown).
#[derive(Debug)]
pub struct Signer {
    pub key: Arc<SigningKey>,
    pub every: u64,
    /// The file outside the store that checkpoints are appended to.
    pub file: PathBuf,
}

pub(super) fn load_head(audit: &sled::Tree, checkpoints: &sled::Tree) -> Result<Arc<Mutex<AuditHead>>> {
    let (seq, hash) = match audit.last()? {
        Some((k, v)) => (seq_of(&k), audit::entry_hash(&v)),
        None => (0, GENESIS.to_string()),
    };
    let signed = match checkpoints.last()? {
        Some((k, _)) => seq_of(&k),
        None => 0,
    };
    Ok(Arc::new(Mutex::new(AuditHead { seq, hash, signed, signer: None })))
}

fn seq_of(key: &[u8]) -> u64 {
    key.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

impl Store {
    pub fn put_token(&self, t: &TokenRecord) -> Result<()> {
        self.writable()?;
        self.tokens.insert(t.id.as_bytes(), encode(t)).map_err(|e| self.broke(e))?;
        Ok(())
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.tokens.get(id.as_bytes())?.map(|v| decode("token", &v)).transpose()
    }

    /// The whole of a request's authentication: the presented bearer token's record, read by
    /// the id it names and checked (hash compared in constant time, expiry, revocation).
    pub fn authenticate(
        &self,
        presented: &str,
        now: i64,
    ) -> Result<std::result::Result<TokenRecord, Refusal>> {
        let Some(id) = tokens::id_of(presented) else { return Ok(Err(Refusal::Invalid)) };
        let record = self.token(id)?;
        Ok(tokens::check(record.as_ref(), presented, now)
            .map(|()| record.expect("a checked token has a record")))
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let mut out: Vec<TokenRecord> =
            self.tokens.iter().values().map(|v| decode("token", &v?)).collect::<Result<_>>()?;
        out.sort_by_key(|t| t.created_at);
        Ok(out)
    }

    /// The file outside the store that checkpoints are appended to.
    pub fn audit_file(&self) -> Option<PathBuf> {
        self.head().signer.as_ref().map(|s| s.file.clone())
    }

    /// Sets who signs the audit log's checkpoints.
    pub fn set_signer(&self, signer: Signer) {
        self.head().signer = Some(Arc::new(signer));
    }

    fn head(&self) -> std::sync::MutexGuard<'_, AuditHead> {
        self.audit_head.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an action to the audit log (durable with the caller's next flush); returns its
    /// sequence.
    pub fn audit(&self, action: Action, at: i64) -> Result<u64> {
        self.writable()?;
        let mut head = self.head();
        let entry = AuditEntry {
            seq: head.seq + 1,
            at,
            actor: action.actor,
            action: action.action,
            target: action.target,
            before: action.before,
            after: action.after,
            request: action.request,
            prev: head.hash.clone(),
        };
        let bytes = encode(&entry);
        self.audit.insert(entry.seq.to_be_bytes(), bytes.as_slice()).map_err(|e| self.broke(e))?;
        head.seq = entry.seq;
        head.hash = audit::entry_hash(&bytes);
        Ok(entry.seq)
    }

    /// The chain's head (sequence, hash) as of now.
    pub(super) fn audit_head_now(&self) -> (u64, String, bool) {
        let h = self.head();
        let due = h.signer.as_ref().is_some_and(|s| s.every > 0 && h.seq >= h.signed + s.every);
        (h.seq, h.hash.clone(), due)
    }

    /// Signs the head as of `(seq, hash)`, which a flush just made durable: into the store
    /// (durable with the next flush) and appended to the file outside it (synced).
    pub(super) fn sign_head(&self, seq: u64, hash: &str, at: i64) -> Result<()> {
        let signer = {
            let h = self.head();
            if seq <= h.signed {
                return Ok(());
            }
            let Some(s) = h.signer.clone() else { return Ok(()) };
            s
        };
        let cp = Checkpoint::sign(&signer.key, seq, hash, at);
        self.audit_checkpoints.insert(seq.to_be_bytes(), encode(&cp)).map_err(|e| self.broke(e))?;
        let line = format!("{}\n", serde_json::to_string(&cp).expect("a checkpoint serializes"));
        let appended = (|| -> std::io::Result<()> {
            if let Some(dir) = signer.file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&signer.file)?;
            f.write_all(line.as_bytes())?;
            f.sync_data()
        })();
        if let Err(e) = appended {
            // The store's copy still holds it; the next checkpoint tries the file again.
            tracing::error!(file = %signer.file.display(), error = %e, "cannot append the audit checkpoint to its file");
        }
        let mut h = self.head();
        h.signed = h.signed.max(seq);
        Ok(())
    }

    /// Makes the log durable and signs its head, if it moved since the last checkpoint (at
    /// shutdown).
    pub fn checkpoint_audit(&self, at: i64) -> Result<()> {
        // A store whose write failed is not flushed again (sled's flush would never return).
        self.writable()?;
        let (seq, hash, _) = self.audit_head_now();
        if seq == 0 || seq <= self.head().signed || self.head().signer.is_none() {
            return Ok(());
        }
        self.db.flush().map_err(|e| self.broke(e))?;
        self.sign_head(seq, &hash, at)?;
        self.db.flush().map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// The log's entries, raw (sequence, stored bytes), from `from` on.
    pub fn audit_raw(&self, from: u64) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> + '_ {
        self.audit
            .range(from.to_be_bytes()..)
            .map(|kv| kv.map(|(k, v)| (seq_of(&k), v.to_vec())).map_err(StoreError::from))
    }

    pub fn audit_entries(&self, from: u64) -> Result<Vec<AuditEntry>> {
        self.audit_raw(from).map(|r| r.and_then(|(_, v)| decode("audit entry", &v))).collect()
    }

    pub fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.audit_checkpoints.iter().values().map(|v| decode("audit checkpoint", &v?)).collect()
    }

    /// The entries `filter` keeps, oldest first, at most `limit` (the newest ones).
    pub fn audit_filtered(&self, filter: &audit::Filter, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut out = std::collections::VecDeque::new();
        // One entry decoded at a time: the log can be long, the answer is at most `limit`.
        for raw in self.audit_raw(filter.since_seq.unwrap_or(1)) {
            let e: AuditEntry = decode("audit entry", &raw?.1)?;
            if filter.keeps(&e) {
                if out.len() == limit {
                    out.pop_front();
                }
                out.push_back(e);
            }
        }
        Ok(out.into())
    }

    /// Verifies the log against the checkpoints in the store and in the file outside it
    /// (`file`, else the one the signer appends to).
    pub fn verify_audit(
        &self,
        public: &[u8],
        file: Option<&std::path::Path>,
    ) -> Result<audit::Verdict, String> {
        let mut checkpoints = self.audit_checkpoints().map_err(|e| e.to_string())?;
        let file = file.map(std::path::Path::to_path_buf).or_else(|| self.audit_file());
        if let Some(f) = &file {
            for cp in audit::read_checkpoint_file(f)? {
                if !checkpoints.contains(&cp) {
                    checkpoints.push(cp);
                }
            }
        }
        let mut failed = None;
        let entries = self.audit_raw(1).map_while(|r| match r {
            Ok(kv) => Some(kv),
            Err(e) => {
                failed = Some(e.to_string());
                None
            }
        });
        let verdict = audit::verify(entries, &checkpoints, public);
        match failed {
            Some(e) => Err(format!("cannot read the audit log: {e}")),
            None => Ok(verdict),
        }
    }
}
