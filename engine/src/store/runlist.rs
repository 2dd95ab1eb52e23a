//! Run lists without a scan: three indexes over the runs, kept with every write of a run
//! record in one transaction: by pipeline (`pipeline \0 id`), by state (`state \0 id`) and by
//! both (`pipeline \0 state \0 id`), ids big-endian, so that reading an index backwards gives
//! the newest runs first. A page reads at most `limit` records (and a few more when another
//! filter, such as the trigger, drops some), however many runs are stored.
//!
//! A folder written before the indexes existed has them built once, when it is opened.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{Result, RunRecord, Store, StoreError, decode, encode, run_key};
use crate::scheduler::RunState;
use crate::store::Trigger;

/// Set once the indexes hold every run of the folder.
const BUILT: &[u8] = b"run_index_v1";

/// The run indexes' trees.
#[derive(Clone)]
pub(super) struct Trees {
    pub(super) by_pipeline: sled::Tree,
    pub(super) by_state: sled::Tree,
    pub(super) by_both: sled::Tree,
}

impl Trees {
    pub(super) fn open(db: &sled::Db) -> sled::Result<Trees> {
        Ok(Trees {
            by_pipeline: db.open_tree("runs_by_pipeline")?,
            by_state: db.open_tree("runs_by_state")?,
            by_both: db.open_tree("runs_by_pipeline_state")?,
        })
    }
}

fn pipeline_key(pipeline: &str, id: u64) -> Vec<u8> {
    [pipeline.as_bytes(), &[0], &run_key(id)].concat()
}

fn state_key(state: RunState, id: u64) -> Vec<u8> {
    [state.as_str().as_bytes(), &[0], &run_key(id)].concat()
}

fn both_key(pipeline: &str, state: RunState, id: u64) -> Vec<u8> {
    [pipeline.as_bytes(), &[0], state.as_str().as_bytes(), &[0], &run_key(id)].concat()
}

/// A run's three index keys (by pipeline, by state, by both), for a writer that stores a run
/// in its own transaction (`claim_run`).
pub(super) fn index_keys(run: &RunRecord) -> [Vec<u8>; 3] {
    [
        pipeline_key(&run.pipeline, run.id),
        state_key(run.state, run.id),
        both_key(&run.pipeline, run.state, run.id),
    ]
}

/// Which runs a page lists, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub pipeline: Option<String>,
    pub state: Option<RunState>,
    pub trigger: Option<Trigger>,
    /// Only runs older than this one (the cursor of the page before).
    pub before: Option<u64>,
}

impl RunFilter {
    fn keeps(&self, r: &RunRecord) -> bool {
        self.pipeline.as_ref().is_none_or(|p| &r.pipeline == p)
            && self.state.is_none_or(|s| r.state == s)
            && self.trigger.is_none_or(|t| r.trigger == t)
            && self.before.is_none_or(|b| r.id < b)
    }
}

/// One page of runs, and the cursor of the next one (the last run's id) when there are more.
#[derive(Debug)]
pub struct RunPage {
    pub runs: Vec<RunRecord>,
    pub next: Option<u64>,
}

impl Store {
    /// Writes a run record and its index entries in one transaction.
    pub fn put_run(&self, run: &RunRecord) -> Result<()> {
        self.writable()?;
        let ix = &self.run_index;
        let bytes = encode(run);
        let done: std::result::Result<(), TransactionError<StoreError>> =
            (&self.runs, &ix.by_pipeline, &ix.by_state, &ix.by_both).transaction(|(runs, p, s, b)| {
                let old = runs.insert(&run_key(run.id), bytes.as_slice())?;
                if let Some(old) = old {
                    let old: RunRecord = decode("run", &old).map_err(ConflictableTransactionError::Abort)?;
                    if old.state != run.state || old.pipeline != run.pipeline {
                        s.remove(state_key(old.state, run.id))?;
                        b.remove(both_key(&old.pipeline, old.state, run.id))?;
                    }
                    if old.pipeline != run.pipeline {
                        p.remove(pipeline_key(&old.pipeline, run.id))?;
                    }
                }
                let [kp, ks, kb] = index_keys(run);
                p.insert(kp, &[])?;
                s.insert(ks, &[])?;
                b.insert(kb, &[])?;
                Ok(())
            });
        match done {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(self.broke(e)),
        }
    }

    /// A page of runs, newest first: at most `limit` of those `filter` keeps.
    pub fn run_page(&self, filter: &RunFilter, limit: usize) -> Result<RunPage> {
        let ix = &self.run_index;
        let upper = filter.before.unwrap_or(u64::MAX);
        // The narrowest index for the filter; its keys end in the run id.
        let (tree, prefix): (&sled::Tree, Vec<u8>) = match (&filter.pipeline, filter.state) {
            (Some(p), Some(s)) => (&ix.by_both, [p.as_bytes(), &[0], s.as_str().as_bytes(), &[0]].concat()),
            (Some(p), None) => (&ix.by_pipeline, [p.as_bytes(), &[0]].concat()),
            (None, Some(s)) => (&ix.by_state, [s.as_str().as_bytes(), &[0]].concat()),
            (None, None) => (&self.runs, Vec::new()),
        };
        let end = [prefix.as_slice(), &run_key(upper)].concat();
        let mut runs = Vec::new();
        for kv in tree.range(prefix.clone()..end).rev() {
            let (k, _) = kv?;
            let Some(id) =
                k.get(k.len().saturating_sub(8)..).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
            else {
                continue;
            };
            let Some(bytes) = self.runs.get(run_key(id))? else { continue };
            let r: RunRecord = decode("run", &bytes)?;
            // The record decides: an index entry is only where to look.
            if !filter.keeps(&r) {
                continue;
            }
            if runs.len() == limit {
                let next = runs.last().map(|r: &RunRecord| r.id);
                return Ok(RunPage { runs, next });
            }
            runs.push(r);
        }
        Ok(RunPage { runs, next: None })
    }

    /// Every run `filter` keeps, newest first, read page by page through the indexes.
    pub fn runs_matching(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let mut all = Vec::new();
        let mut f = filter.clone();
        loop {
            let page = self.run_page(&f, 1000)?;
            all.extend(page.runs);
            match page.next {
                Some(n) => f.before = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// Every run in one of `states`, newest first, from the index by state.
    pub fn runs_in(&self, states: &[RunState]) -> Result<Vec<RunRecord>> {
        let mut all = Vec::new();
        for state in states {
            all.extend(self.runs_matching(&RunFilter { state: Some(*state), ..Default::default() })?);
        }
        all.sort_by_key(|r| std::cmp::Reverse(r.id));
        Ok(all)
    }

    /// Builds the indexes of a folder written before they existed (once).
    pub(super) fn build_run_index(&self) -> Result<()> {
        if self.db.get(BUILT)?.is_some() {
            return Ok(());
        }
        let ix = &self.run_index;
        let mut count = 0u64;
        for kv in self.runs.iter() {
            let (_, bytes) = kv?;
            let r: RunRecord = decode("run", &bytes)?;
            ix.by_pipeline.insert(pipeline_key(&r.pipeline, r.id), &[])?;
            ix.by_state.insert(state_key(r.state, r.id), &[])?;
            ix.by_both.insert(both_key(&r.pipeline, r.state, r.id), &[])?;
            count += 1;
        }
        self.db.insert(BUILT, &[])?;
        self.db.flush()?;
        if count > 0 {
            tracing::info!(runs = count, "indexed the folder's runs by pipeline and state");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, pipeline: &str, state: RunState, trigger: Trigger) -> RunRecord {
        RunRecord {
            v: 1,
            id,
            pipeline: pipeline.into(),
            dag: "d".into(),
            params: Default::default(),
            trigger,
            cause: None,
            state,
            steps: 1,
            created_at: id as i64,
            started_at: None,
            finished_at: None,
            cache: Default::default(),
            actor: None,
            tags: Default::default(),
        }
    }

    fn ids(p: &RunPage) -> Vec<u64> {
        p.runs.iter().map(|r| r.id).collect()
    }

    #[test]
    fn pages_follow_state_changes_and_cursors_through_every_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for id in 1..=30 {
            let pipeline = if id % 3 == 0 { "c" } else { "ab" };
            let trigger = if id % 2 == 0 { Trigger::Cron } else { Trigger::Manual };
            store.put_run(&record(id, pipeline, RunState::Pending, trigger)).unwrap();
        }
        // Runs move on: every fifth succeeds, run 7 fails.
        for id in (5..=30).step_by(5) {
            let mut r = store.run(id).unwrap();
            r.state = RunState::Running;
            store.put_run(&r).unwrap();
            r.state = RunState::Succeeded;
            store.put_run(&r).unwrap();
        }
        let mut r = store.run(7).unwrap();
        r.state = RunState::Failed;
        store.put_run(&r).unwrap();

        let all = store.run_page(&RunFilter::default(), 4).unwrap();
        assert_eq!(ids(&all), [30, 29, 28, 27]);
        assert_eq!(all.next, Some(27));
        let f = RunFilter { state: Some(RunState::Succeeded), ..Default::default() };
        assert_eq!(ids(&store.run_page(&f, 10).unwrap()), [30, 25, 20, 15, 10, 5]);
        let f =
            RunFilter { pipeline: Some("c".into()), state: Some(RunState::Succeeded), ..Default::default() };
        assert_eq!(ids(&store.run_page(&f, 10).unwrap()), [30, 15]);
        let f = RunFilter { state: Some(RunState::Pending), ..Default::default() };
        let pending = store.run_page(&f, 100).unwrap();
        assert!(!ids(&pending).contains(&25) && !ids(&pending).contains(&7), "a state left is unlisted");
        assert_eq!(pending.runs.len(), 30 - 6 - 1);
        // Paging by cursor gives every run of a pipeline once, in order.
        let mut seen = Vec::new();
        let mut f = RunFilter { pipeline: Some("ab".into()), ..Default::default() };
        loop {
            let page = store.run_page(&f, 7).unwrap();
            seen.extend(ids(&page));
            match page.next {
                Some(n) => f.before = Some(n),
                None => break,
            }
        }
        let expected: Vec<u64> = (1..=30).rev().filter(|i| i % 3 != 0).collect();
        assert_eq!(seen, expected);
        // A filter without an index (the trigger) still pages right.
        let f = RunFilter { pipeline: Some("c".into()), trigger: Some(Trigger::Cron), ..Default::default() };
        assert_eq!(ids(&store.run_page(&f, 3).unwrap()), [30, 24, 18]);
        // "a" is not a prefix match of "ab".
        let f = RunFilter { pipeline: Some("a".into()), ..Default::default() };
        assert!(store.run_page(&f, 10).unwrap().runs.is_empty());
    }

    #[test]
    fn a_run_claimed_under_a_key_is_listed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = record(1, "cron-pipeline", RunState::Pending, Trigger::Cron);
        assert!(matches!(store.claim_run(&r, "slot-1", None, 0).unwrap(), crate::store::Claim::Created));
        let f = RunFilter {
            pipeline: Some("cron-pipeline".into()),
            state: Some(RunState::Pending),
            ..Default::default()
        };
        assert_eq!(ids(&store.run_page(&f, 10).unwrap()), [1]);
        assert_eq!(store.runs_in(&[RunState::Pending]).unwrap().len(), 1, "a restart finds it");
    }

    #[test]
    fn a_folder_from_before_the_indexes_is_indexed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for id in 1..=5 {
                store.put_run(&record(id, "p", RunState::Succeeded, Trigger::Manual)).unwrap();
            }
            // As an older Sluice left it: records, no indexes.
            for t in ["runs_by_pipeline", "runs_by_state", "runs_by_pipeline_state"] {
                store.db.drop_tree(t).unwrap();
            }
            store.db.remove(BUILT).unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let f =
            RunFilter { pipeline: Some("p".into()), state: Some(RunState::Succeeded), ..Default::default() };
        assert_eq!(ids(&store.run_page(&f, 10).unwrap()), [5, 4, 3, 2, 1]);
    }
}
