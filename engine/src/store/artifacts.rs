//! Who produced which artifact: one record per (attempt, declared name, file), keyed by the
//! attempt so that a run's or a step's artifacts are one prefix scan, and an index by digest
//! for "which runs made (or used) this content". Written in the driver's batch with the
//! attempt's `Finished` event, so both are as durable as the event log; writing a record
//! again (a replayed batch) changes nothing.

use serde::{Deserialize, Serialize};

use super::{FORMAT_VERSION, Result, Store, decode, encode, run_key, task_prefix};
use crate::scheduler::{Produced, StepIx};

/// An artifact an attempt produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub v: u32,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// The declared name (`model`).
    pub name: String,
    /// The file's path relative to the step's work folder.
    pub file: String,
    pub run: u64,
    pub pipeline: String,
    pub step: String,
    /// The step's index in its run's plan (how the records are keyed; 0 in records written
    /// before it was kept).
    #[serde(default)]
    pub step_ix: StepIx,
    pub item: u32,
    pub attempt: u32,
    /// When it was stored, ms since the epoch.
    pub at: i64,
}

/// Which attempt of which task produced a set of artifacts.
#[derive(Debug, Clone, Copy)]
pub struct ProducedBy<'a> {
    pub run: u64,
    pub pipeline: &'a str,
    pub step_ix: StepIx,
    pub step: &'a str,
    pub item: u32,
    pub attempt: u32,
    pub at: i64,
}

fn record_key(run: u64, step: StepIx, item: u32, attempt: u32, a: &Produced) -> Vec<u8> {
    let mut k = task_prefix(run, step, item);
    k.extend_from_slice(&attempt.to_be_bytes());
    k.extend_from_slice(a.name.as_bytes());
    k.push(0);
    k.extend_from_slice(a.file.as_bytes());
    k
}

impl Store {
    /// Records what one attempt produced (idempotent).
    pub fn put_artifacts(&self, by: ProducedBy<'_>, produced: &[Produced]) -> Result<()> {
        self.writable()?;
        for a in produced {
            let key = record_key(by.run, by.step_ix, by.item, by.attempt, a);
            let record = ArtifactRecord {
                v: FORMAT_VERSION,
                digest: a.digest.clone(),
                size: a.size,
                media_type: a.media_type.clone(),
                name: a.name.clone(),
                file: a.file.clone(),
                run: by.run,
                pipeline: by.pipeline.to_string(),
                step: by.step.to_string(),
                step_ix: by.step_ix,
                item: by.item,
                attempt: by.attempt,
                at: by.at,
            };
            self.artifacts.insert(&key, encode(&record)).map_err(|e| self.broke(e))?;
            let mut index = a.digest.as_bytes().to_vec();
            index.push(0);
            index.extend_from_slice(&key);
            self.artifact_digests.insert(index, &[]).map_err(|e| self.broke(e))?;
        }
        Ok(())
    }

    /// Every artifact record, or a run's, in order of run, step, item and attempt.
    pub fn artifacts(&self, run: Option<u64>) -> Result<Vec<ArtifactRecord>> {
        let scan = match run {
            Some(r) => self.artifacts.scan_prefix(run_key(r)),
            None => self.artifacts.scan_prefix([]),
        };
        scan.map(|kv| decode("artifact", &kv?.1)).collect()
    }

    /// The records of the artifacts with content `digest` (each attempt that produced it).
    pub fn artifacts_with(&self, digest: &str) -> Result<Vec<ArtifactRecord>> {
        let mut prefix = digest.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.artifact_digests.scan_prefix(&prefix) {
            let (k, _) = kv?;
            if let Some(bytes) = self.artifacts.get(&k[prefix.len()..])? {
                out.push(decode("artifact", &bytes)?);
            }
        }
        Ok(out)
    }
}
