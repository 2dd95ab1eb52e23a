//! The step cache's records: entries by key (what a successful attempt produced, with the
//! document its key is the hash of), the newest key per pipeline, step and item (what a miss
//! is compared with), and per attempt what its lookup found, for `sluice cache explain`.
//! An entry is written in the driver's batch with the `Finished` event of the attempt it
//! comes from, so it never names an attempt the event log does not hold.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Result, Store, decode, encode};
use crate::scheduler::{CachedFrom, Produced, StepIx};

/// The version of the key document. A build that changes what goes into a key (or how)
/// raises it, so that no entry written before is taken for a match.
pub const CACHE_FORMAT: u32 = 1;

/// What a step's cache key is the sha256 of: everything the result depends on that the engine
/// can see. Paths of the data folder, the run's folder and the attempt's files are written as
/// `$DATA`, `$RUN_DIR`, `$ATTEMPT`, and the pipeline's folder as `$SPEC_DIR`, so that the key
/// of the same work is the same in every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KeyDoc {
    pub format: u32,
    /// The pipeline and step (a process sees them as `SLUICE_PIPELINE`, `SLUICE_STEP`), and a
    /// mapped step's item index (`SLUICE_ITEM`): two steps never share a result, nor two items.
    pub pipeline: String,
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
    /// The step kind (`process`, `container`, `wasm`, `train`).
    pub kind: String,
    /// The kind's rendered request (argv, image and command, module and function, the train
    /// spec).
    pub request: Value,
    /// The step's environment, rendered (values of names that look secret as their digest).
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    /// Code files the step runs (a plugin's module), by path, with their content digests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub code: BTreeMap<String, String>,
    /// The files it reads as hashed when the attempt started, by path: its `inputs:` and the
    /// files its kind reads (a container's or plugin's inputs, a training table).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub datasets: BTreeMap<String, String>,
    /// The upstream artifacts it consumes, as `step.name` (`step.name[i]` past the first).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, String>,
    /// The values its templates read: `params.x`, `steps.a.outputs.y`, `item`, `run.*`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, Value>,
    /// A container step's image as the Docker engine resolves it (its image id), not its tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// What a hit must restore: the declared outputs and artifacts.
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declares: Vec<(String, String)>,
}

impl KeyDoc {
    /// `sha256:<hex>` of the document in canonical form (object keys sorted, no spaces).
    pub fn key(&self) -> String {
        let value = canonical(serde_json::to_value(self).unwrap_or(Value::Null));
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        format!("sha256:{:x}", Sha256::digest(&bytes))
    }
}

/// A JSON value with every object's keys in sorted order.
fn canonical(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut sorted: Vec<(String, Value)> = map.into_iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(sorted.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// A result the cache holds: the attempt that produced it and what it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub v: u32,
    pub key: String,
    pub doc: KeyDoc,
    pub pipeline: String,
    pub step: String,
    pub run: u64,
    pub item: u32,
    pub attempt: u32,
    /// When it was stored, ms since the epoch.
    pub at: i64,
    #[serde(default)]
    pub outputs: Map<String, Value>,
    #[serde(default)]
    pub artifacts: Vec<Produced>,
    /// The producing run's folder as it was spelled: outputs that name it are moved to the
    /// reusing run's folder, where the artifacts are restored.
    #[serde(default)]
    pub run_dirs: Vec<String>,
}

impl CacheEntry {
    pub fn source(&self) -> CachedFrom {
        CachedFrom { run: self.run, item: self.item, attempt: self.attempt, key: self.key.clone() }
    }
}

/// What one attempt's lookup found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Verdict {
    /// Reused: the step did not run.
    Hit { from: CachedFrom, age_ms: i64 },
    /// No entry has this key; `previous` is the newest key of the same pipeline, step and
    /// item when the lookup was made (what `explain` compares with).
    Miss {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<String>,
    },
    /// An entry has this key but is older than the step's `ttl`.
    Expired { from: CachedFrom, age_ms: i64, ttl_ms: i64 },
    /// An entry has this key but its files failed their check; it was dropped.
    Damaged { from: CachedFrom, why: String },
    /// The run asked not to reuse (`--no-cache`, `--refresh`).
    Bypassed { why: String },
    /// No key could be made (an image the engine does not have yet, an unreadable file).
    Unkeyed { why: String },
}

/// One attempt's lookup, kept for `sluice cache explain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CacheProbe {
    pub v: u32,
    pub run: u64,
    pub pipeline: String,
    pub step: String,
    pub step_ix: StepIx,
    pub item: u32,
    pub attempt: u32,
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<KeyDoc>,
    pub verdict: Verdict,
}

fn latest_key(pipeline: &str, step: &str, item: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(pipeline.len() + step.len() + 6);
    k.extend_from_slice(pipeline.as_bytes());
    k.push(0);
    k.extend_from_slice(step.as_bytes());
    k.push(0);
    k.extend_from_slice(&item.to_be_bytes());
    k
}

impl Store {
    /// The entry with `key`, if the cache holds one.
    pub fn cache_entry(&self, key: &str) -> Result<Option<CacheEntry>> {
        match self.cache.get(key.as_bytes())? {
            Some(bytes) => Ok(Some(decode("cache entry", &bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores an entry (replacing one with the same key) and makes it the newest of its step.
    pub fn put_cache_entry(&self, entry: &CacheEntry) -> Result<()> {
        self.writable()?;
        self.cache.insert(entry.key.as_bytes(), encode(entry)).map_err(|e| self.broke(e))?;
        self.cache_latest
            .insert(latest_key(&entry.pipeline, &entry.step, entry.item), entry.key.as_bytes())
            .map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// Drops an entry (its files failed their check).
    pub fn drop_cache_entry(&self, key: &str) -> Result<()> {
        self.writable()?;
        self.cache.remove(key.as_bytes()).map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// How many entries the cache holds.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Every entry, in key order.
    pub fn cache_entries(&self) -> Result<Vec<CacheEntry>> {
        self.cache.iter().map(|kv| decode("cache entry", &kv?.1)).collect()
    }

    /// The key of the newest entry of a pipeline's step (and item).
    pub fn latest_cache_key(&self, pipeline: &str, step: &str, item: u32) -> Result<Option<String>> {
        Ok(self
            .cache_latest
            .get(latest_key(pipeline, step, item))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Records what an attempt's lookup found.
    pub fn put_cache_probe(&self, probe: &CacheProbe) -> Result<()> {
        self.writable()?;
        let k = super::lineage::attempt_key(probe.run, probe.step_ix, probe.item, probe.attempt);
        self.cache_probes.insert(k, encode(probe)).map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// The lookups of a step's attempts in a run, by item and attempt.
    pub fn cache_probes(&self, run: u64, step: StepIx) -> Result<Vec<CacheProbe>> {
        let mut prefix = super::run_key(run).to_vec();
        prefix.extend_from_slice(&step.to_be_bytes());
        self.cache_probes.scan_prefix(prefix).map(|kv| decode("cache lookup", &kv?.1)).collect()
    }
}
