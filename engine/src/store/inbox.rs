//! What the server keeps about triggers: received events (the inbox), the keys runs claim so
//! that a slot or an alert starts one run (marks), and each schedule's last handled slot.

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::records::{InboxRecord, Mark, RunRecord};
use super::{Result, Store, StoreError, decode, encode, run_key};

/// The last inbox id handed out, in the default tree.
const NEXT_INBOX_KEY: &[u8] = b"next_inbox_id";

/// What became of a run that claims a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The run was stored and holds the key now.
    Created,
    /// Another run holds the key (within the window): nothing was stored.
    Held { run: u64 },
}

impl Store {
    /// Stores a received event under a new id (set on the record) and returns the id. Not
    /// flushed: the caller flushes with whatever else the event caused.
    pub fn put_inbox(&self, record: &mut InboxRecord) -> Result<u64> {
        self.writable()?;
        self.injected()?;
        let stored = self
            .inbox
            .last()?
            .and_then(|(k, _)| k.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let next = self
            .db
            .update_and_fetch(NEXT_INBOX_KEY, |old| {
                let last = old.and_then(|b| b.try_into().ok().map(u64::from_be_bytes)).unwrap_or(0);
                Some(last.max(stored).saturating_add(1).to_be_bytes().to_vec())
            })
            .map_err(|e| self.broke(e))?;
        let id = next.and_then(|b| b.as_ref().try_into().ok().map(u64::from_be_bytes)).unwrap_or(stored + 1);
        record.id = id;
        self.inbox.insert(run_key(id), encode(record)).map_err(|e| self.broke(e))?;
        Ok(id)
    }

    /// Rewrites a stored inbox record (its outcome became known).
    pub fn update_inbox(&self, record: &InboxRecord) -> Result<()> {
        self.writable()?;
        self.inbox.insert(run_key(record.id), encode(record)).map_err(|e| self.broke(e))?;
        Ok(())
    }

    pub fn inbox_record(&self, id: u64) -> Result<Option<InboxRecord>> {
        self.inbox.get(run_key(id))?.map(|b| decode("inbox record", &b)).transpose()
    }

    /// Received events, newest first: at most `limit` with an id below `before`, keeping
    /// those `keep` accepts.
    pub fn inbox(
        &self,
        limit: usize,
        before: Option<u64>,
        keep: impl Fn(&InboxRecord) -> bool,
    ) -> Result<Vec<InboxRecord>> {
        let end = run_key(before.unwrap_or(u64::MAX));
        let mut out = Vec::new();
        for kv in self.inbox.range(..end).rev() {
            let r: InboxRecord = decode("inbox record", &kv?.1)?;
            if keep(&r) {
                out.push(r);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    /// Stores `run` unless another run holds `key` and claimed it less than `window_ms` ago
    /// (`None`: for ever). Run and key are written in one transaction, so after a crash
    /// either both are there or neither is. Not flushed.
    pub fn claim_run(&self, run: &RunRecord, key: &str, window_ms: Option<i64>, now: i64) -> Result<Claim> {
        self.writable()?;
        let value = encode(run);
        let mark = encode(&Mark { v: super::FORMAT_VERSION, run: run.id, at: now });
        let ix = &self.run_index;
        let [kp, ks, kb] = super::runlist::index_keys(run);
        let trees = (&self.runs, &self.marks, &ix.by_pipeline, &ix.by_state, &ix.by_both);
        let result = trees.transaction(|(runs, marks, by_pipeline, by_state, by_both)| {
            if let Some(old) = marks.get(key.as_bytes())? {
                let old: Mark = serde_json::from_slice(&old).map_err(|e| {
                    ConflictableTransactionError::Abort(StoreError::Corrupt {
                        what: "run key",
                        detail: e.to_string(),
                    })
                })?;
                if window_ms.is_none_or(|w| now.saturating_sub(old.at) < w) {
                    return Ok(Claim::Held { run: old.run });
                }
            }
            runs.insert(&run_key(run.id), value.as_slice())?;
            marks.insert(key.as_bytes(), mark.as_slice())?;
            // Listed at once, as `put_run` lists a run (store/runlist.rs).
            by_pipeline.insert(kp.as_slice(), &[])?;
            by_state.insert(ks.as_slice(), &[])?;
            by_both.insert(kb.as_slice(), &[])?;
            Ok(Claim::Created)
        });
        result.map_err(|e| match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => self.broke(e),
        })
    }

    /// The run holding `key`, if any.
    pub fn mark(&self, key: &str) -> Result<Option<Mark>> {
        self.marks.get(key.as_bytes())?.map(|b| decode("run key", &b)).transpose()
    }

    /// The last slot a schedule handled (fired, skipped or dropped), in ms since the epoch.
    pub fn cursor(&self, schedule: &str) -> Result<Option<i64>> {
        let Some(bytes) = self.cursors.get(schedule.as_bytes())? else { return Ok(None) };
        let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            what: "schedule cursor",
            detail: format!("the last slot of `{schedule}` is {} bytes, not 8", bytes.len()),
        })?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }

    /// Overwrites a cursor with raw bytes (tests of a damaged store).
    #[cfg(test)]
    pub(crate) fn damage_cursor(&self, schedule: &str, bytes: &[u8]) -> Result<()> {
        self.cursors.insert(schedule.as_bytes(), bytes).map_err(|e| self.broke(e))?;
        Ok(())
    }

    pub fn set_cursor(&self, schedule: &str, at: i64) -> Result<()> {
        self.writable()?;
        self.cursors.insert(schedule.as_bytes(), &at.to_be_bytes()).map_err(|e| self.broke(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Trigger;

    #[test]
    fn claims_hold_for_their_window_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let r1 = RunRecord::new(1, "p", "h", Default::default(), Trigger::Cron, 1, 0);
            assert_eq!(s.claim_run(&r1, "cron:p:100", None, 1000).unwrap(), Claim::Created);
            let r2 = RunRecord::new(2, "p", "h", Default::default(), Trigger::Cron, 1, 0);
            assert_eq!(s.claim_run(&r2, "cron:p:100", None, 5000).unwrap(), Claim::Held { run: 1 });
            assert!(s.run(2).is_err(), "a run that lost its claim is not stored");
            // A window: held inside it, free after it.
            assert_eq!(s.claim_run(&r2, "alert:p:fp", Some(100), 1000).unwrap(), Claim::Created);
            let r3 = RunRecord::new(3, "p", "h", Default::default(), Trigger::Event, 1, 0);
            assert_eq!(s.claim_run(&r3, "alert:p:fp", Some(100), 1050).unwrap(), Claim::Held { run: 2 });
            assert_eq!(s.claim_run(&r3, "alert:p:fp", Some(100), 1100).unwrap(), Claim::Created);
            s.set_cursor("p", 42).unwrap();
            let mut rec = InboxRecord {
                v: 1,
                id: 0,
                source: "x".into(),
                received_at: 1,
                status: crate::store::InboxStatus::Accepted,
                reason: "r".into(),
                runs: vec![],
                details: vec![],
                payload: serde_json::Value::Null,
            };
            assert_eq!(s.put_inbox(&mut rec).unwrap(), 1);
            assert_eq!(s.put_inbox(&mut rec).unwrap(), 2);
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.mark("cron:p:100").unwrap().unwrap().run, 1);
        assert_eq!(s.mark("alert:p:fp").unwrap().unwrap().run, 3);
        assert_eq!(s.cursor("p").unwrap(), Some(42));
        assert_eq!(s.cursor("q").unwrap(), None);
        let listed = s.inbox(10, None, |_| true).unwrap();
        assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(s.inbox(10, Some(2), |_| true).unwrap().len(), 1);
    }
}
