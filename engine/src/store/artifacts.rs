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

impl Store {
    /// Keeps the signed provenance of what one attempt produced (written before its result
    /// is logged, in the same flush or an earlier one; writing it again replaces it).
    pub fn put_provenance(
        &self,
        run: u64,
        step: StepIx,
        item: u32,
        attempt: u32,
        envelope: &crate::security::provenance::Envelope,
    ) -> Result<()> {
        self.writable()?;
        let key = super::lineage::attempt_key(run, step, item, attempt);
        self.provenance.insert(key, encode(envelope)).map_err(|e| self.broke(e))?;
        Ok(())
    }

    /// The provenance envelopes of the attempts that produced `digest`, with their records
    /// (a run that reused a cached result has none of its own: its producer's is listed).
    pub fn provenance_of(
        &self,
        digest: &str,
    ) -> Result<Vec<(ArtifactRecord, Option<crate::security::provenance::Envelope>)>> {
        let mut out = Vec::new();
        for record in self.artifacts_with(digest)? {
            if record.attempt == 0 {
                continue;
            }
            let key = super::lineage::attempt_key(record.run, record.step_ix, record.item, record.attempt);
            let envelope = self.provenance.get(key)?.map(|b| decode("provenance", &b)).transpose()?;
            out.push((record, envelope));
        }
        Ok(out)
    }
}

/// One producing attempt's signed statement about an artifact, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Attestation {
    pub run: u64,
    pub pipeline: String,
    pub step: String,
    pub item: u32,
    pub attempt: u32,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What checking an artifact found: its content against its digest, and each producing
/// attempt's provenance against a public key. `ok` only when all of it holds.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub v: u32,
    pub digest: String,
    pub ok: bool,
    /// `{ok}` or `{ok: false, error}`.
    pub content: serde_json::Value,
    /// The key the signatures were checked against (SHA-256 of its public bytes).
    pub key_id: String,
    pub attestations: Vec<Attestation>,
}

/// Checks one envelope of `record`'s attempt against `public`, and that it names `digest`.
pub fn attest(
    record: &ArtifactRecord,
    envelope: Option<&crate::security::provenance::Envelope>,
    digest: &str,
    public: &[u8],
) -> Attestation {
    use crate::security::provenance;
    let error = match envelope {
        None => Some("the attempt that produced it has no signed provenance".to_string()),
        Some(env) => match provenance::verify(env, public) {
            Err(e) => Some(e.to_string()),
            Ok(statement) if !provenance::names_subject(&statement, digest) => {
                Some(provenance::VerifyError::NotASubject(digest.to_string()).to_string())
            }
            Ok(_) => None,
        },
    };
    Attestation {
        run: record.run,
        pipeline: record.pipeline.clone(),
        step: record.step.clone(),
        item: record.item,
        attempt: record.attempt,
        ok: error.is_none(),
        error,
    }
}

impl Store {
    /// Checks the artifact `digest`: its stored bytes, and the provenance of every attempt
    /// that produced it against `public` (the instance's key, or one a user brings).
    pub fn verify_artifact(&self, digest: &str, public: &[u8]) -> Result<Verified> {
        let content = match self.blobs().verify(digest) {
            Ok(_) => serde_json::json!({ "ok": true }),
            Err(e) => serde_json::json!({ "ok": false, "error": e.to_string() }),
        };
        let attestations: Vec<Attestation> = self
            .provenance_of(digest)?
            .iter()
            .map(|(record, envelope)| attest(record, envelope.as_ref(), digest, public))
            .collect();
        let ok = content["ok"] == true && !attestations.is_empty() && attestations.iter().all(|a| a.ok);
        Ok(Verified {
            v: 1,
            digest: digest.to_string(),
            ok,
            content,
            key_id: crate::security::keys::key_id(public),
            attestations,
        })
    }
}
