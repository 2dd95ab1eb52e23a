//! Lineage: what each attempt consumed (dataset versions, upstream artifacts), written when it
//! starts, and the graph queries over it and the artifact records: where an artifact came from
//! (down to the raw files, the DAG version and params), and what used a dataset version or an
//! artifact. Every hop is a prefix scan of an index, never a scan of all records.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ArtifactRecord, Result, Store, decode, encode, task_prefix};
use crate::artifacts::{DatasetVersion, HashIndex, Hashed};
use crate::scheduler::StepIx;

/// An artifact an attempt consumed: one of its upstream steps produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumedArtifact {
    pub digest: String,
    /// The producing step and the name it declared.
    pub step: String,
    pub name: String,
}

/// What one attempt read, recorded when it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumedRecord {
    pub v: u32,
    pub run: u64,
    pub pipeline: String,
    pub step: String,
    /// The step's index in its run's plan (how the records are keyed).
    pub step_ix: StepIx,
    pub item: u32,
    pub attempt: u32,
    pub at: i64,
    #[serde(default)]
    pub datasets: Vec<DatasetVersion>,
    #[serde(default)]
    pub artifacts: Vec<ConsumedArtifact>,
}

pub(super) fn attempt_key(run: u64, step: StepIx, item: u32, attempt: u32) -> Vec<u8> {
    let mut k = task_prefix(run, step, item);
    k.extend_from_slice(&attempt.to_be_bytes());
    k
}

impl HashIndex for Store {
    fn get(&self, path: &Path) -> Option<Hashed> {
        let bytes = self.hash_index.get(path.as_os_str().as_encoded_bytes()).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    fn put(&self, path: &Path, hashed: &Hashed) {
        // Only a cache: a write that fails costs a second hashing, nothing else.
        if self.writable().is_ok() {
            let _ = self.hash_index.insert(path.as_os_str().as_encoded_bytes(), encode(hashed));
        }
    }
}

/// One node of a lineage graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Node {
    Dataset { digest: String, path: String },
    Artifact { digest: String, name: String },
    Attempt { run: u64, pipeline: String, step: String, item: u32, attempt: u32 },
}

impl Node {
    /// A short stable id for DOT and Mermaid.
    pub fn label(&self) -> String {
        match self {
            Node::Dataset { digest, path } => format!("dataset {path} {}", short(digest)),
            Node::Artifact { digest, name } => format!("artifact {name} {}", short(digest)),
            Node::Attempt { run, step, item, attempt, .. } => {
                let item = if *item > 0 { format!("[{item}]") } else { String::new() };
                format!("run {run} {step}{item} #{attempt}")
            }
        }
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(7 + 12)]
}

/// A lineage graph: nodes, and edges from what was read or made to who read or made it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Lineage {
    pub v: u32,
    pub nodes: Vec<Node>,
    /// (from, to, what): `consumed` (input -> attempt) or `produced` (attempt -> artifact),
    /// by index into `nodes`.
    pub edges: Vec<(usize, usize, String)>,
    /// The runs the attempts belong to: DAG version and params, by run id.
    pub runs: BTreeMap<u64, serde_json::Value>,
}

/// Which way a lineage query walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Where it came from.
    Upstream,
    /// What used it.
    Downstream,
}

/// Where a lineage query starts.
#[derive(Debug, Clone)]
pub enum Origin {
    /// An artifact's or a dataset version's digest.
    Digest(String),
    /// Every recorded attempt of a step of a run.
    Step { run: u64, step: String },
}

struct Builder {
    g: Lineage,
    index: BTreeMap<Node, usize>,
    edges: BTreeSet<(usize, usize, String)>,
}

impl Builder {
    fn node(&mut self, n: Node) -> usize {
        if let Some(&i) = self.index.get(&n) {
            return i;
        }
        self.g.nodes.push(n.clone());
        self.index.insert(n, self.g.nodes.len() - 1);
        self.g.nodes.len() - 1
    }

    fn edge(&mut self, from: usize, to: usize, what: &str) {
        if self.edges.insert((from, to, what.to_string())) {
            self.g.edges.push((from, to, what.to_string()));
        }
    }
}

fn attempt_node(run: u64, pipeline: &str, step: &str, item: u32, attempt: u32) -> Node {
    Node::Attempt { run, pipeline: pipeline.to_string(), step: step.to_string(), item, attempt }
}

impl Store {
    /// Records what an attempt read (idempotent: the same attempt writes the same record).
    pub fn put_consumed(&self, step_ix: StepIx, record: &ConsumedRecord) -> Result<()> {
        self.writable()?;
        let key = attempt_key(record.run, step_ix, record.item, record.attempt);
        self.consumed.insert(&key, encode(record)).map_err(|e| self.broke(e))?;
        let digests = record
            .datasets
            .iter()
            .map(|d| d.digest.as_str())
            .chain(record.artifacts.iter().map(|a| a.digest.as_str()));
        for digest in digests {
            let mut index = digest.as_bytes().to_vec();
            index.push(0);
            index.extend_from_slice(&key);
            self.consumed_by.insert(index, &[]).map_err(|e| self.broke(e))?;
        }
        Ok(())
    }

    /// What the attempts that read `digest` recorded.
    pub fn consumers_of(&self, digest: &str) -> Result<Vec<(Vec<u8>, ConsumedRecord)>> {
        let mut prefix = digest.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.consumed_by.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let key = k[prefix.len()..].to_vec();
            if let Some(bytes) = self.consumed.get(&key)? {
                out.push((key, decode("consumed record", &bytes)?));
            }
        }
        Ok(out)
    }

    /// A run's records of what its attempts read.
    pub fn consumed_in(&self, run: u64) -> Result<Vec<ConsumedRecord>> {
        self.consumed.scan_prefix(run.to_be_bytes()).map(|kv| decode("consumed record", &kv?.1)).collect()
    }

    fn consumed_at(&self, key: &[u8]) -> Result<Option<ConsumedRecord>> {
        self.consumed.get(key)?.map(|b| decode("consumed record", &b)).transpose()
    }

    /// The artifacts one attempt produced (`key`: its attempt key).
    fn produced_at(&self, key: &[u8]) -> Result<Vec<ArtifactRecord>> {
        self.artifacts.scan_prefix(key).map(|kv| decode("artifact", &kv?.1)).collect()
    }

    /// The lineage graph from `origin`, `depth` hops of attempts away at most.
    pub fn lineage(&self, origin: &Origin, direction: Direction, depth: usize) -> Result<Lineage> {
        let mut b = Builder {
            g: Lineage { v: 1, ..Default::default() },
            index: BTreeMap::new(),
            edges: BTreeSet::new(),
        };
        // Work: digests (with their node) still to follow, and how many hops they are from the origin.
        let mut digests: VecDeque<(String, usize, usize)> = VecDeque::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut attempts: VecDeque<(Vec<u8>, usize, usize)> = VecDeque::new();
        match origin {
            Origin::Digest(d) => {
                let producers = self.artifacts_with(d)?;
                let node = match producers.first() {
                    Some(p) => Node::Artifact { digest: d.clone(), name: p.name.clone() },
                    None => {
                        let path = self
                            .consumers_of(d)?
                            .iter()
                            .flat_map(|(_, r)| r.datasets.iter())
                            .find(|x| &x.digest == d)
                            .map(|x| x.path.clone())
                            .unwrap_or_default();
                        Node::Dataset { digest: d.clone(), path }
                    }
                };
                let i = b.node(node);
                digests.push_back((d.clone(), i, 0));
            }
            Origin::Step { run, step } => {
                for r in self.consumed_in(*run)?.iter().filter(|r| &r.step == step) {
                    let i = b.node(attempt_node(r.run, &r.pipeline, &r.step, r.item, r.attempt));
                    attempts.push_back((attempt_key(r.run, r.step_ix, r.item, r.attempt), i, 0));
                }
            }
        }
        loop {
            if let Some((key, node, hops)) = attempts.pop_front() {
                self.follow_attempt(&mut b, &key, node, hops, direction, depth, &mut digests)?;
                continue;
            }
            let Some((digest, node, hops)) = digests.pop_front() else { break };
            if !seen.insert(digest.clone()) || hops >= depth {
                continue;
            }
            match direction {
                Direction::Upstream => {
                    for p in self.artifacts_with(&digest)? {
                        let a = b.node(attempt_node(p.run, &p.pipeline, &p.step, p.item, p.attempt));
                        b.edge(a, node, "produced");
                        attempts.push_back((attempt_key(p.run, p.step_ix, p.item, p.attempt), a, hops + 1));
                    }
                }
                Direction::Downstream => {
                    for (key, c) in self.consumers_of(&digest)? {
                        let a = b.node(attempt_node(c.run, &c.pipeline, &c.step, c.item, c.attempt));
                        b.edge(node, a, "consumed");
                        attempts.push_back((key, a, hops + 1));
                    }
                }
            }
        }
        for n in &b.g.nodes {
            if let Node::Attempt { run, .. } = n
                && !b.g.runs.contains_key(run)
                && let Ok(r) = self.run(*run)
            {
                b.g.runs.insert(*run, serde_json::json!({ "pipeline": r.pipeline, "dag": r.dag, "params": r.params, "trigger": r.trigger }));
            }
        }
        Ok(b.g)
    }

    /// From an attempt: upstream, what it read; downstream, what it made.
    #[allow(clippy::too_many_arguments)]
    fn follow_attempt(
        &self,
        b: &mut Builder,
        key: &[u8],
        node: usize,
        hops: usize,
        direction: Direction,
        depth: usize,
        digests: &mut VecDeque<(String, usize, usize)>,
    ) -> Result<()> {
        match direction {
            Direction::Upstream => {
                let Some(c) = self.consumed_at(key)? else { return Ok(()) };
                for d in &c.datasets {
                    let i = b.node(Node::Dataset { digest: d.digest.clone(), path: d.path.clone() });
                    b.edge(i, node, "consumed");
                }
                for a in &c.artifacts {
                    let i = b.node(Node::Artifact { digest: a.digest.clone(), name: a.name.clone() });
                    b.edge(i, node, "consumed");
                    if hops < depth {
                        digests.push_back((a.digest.clone(), i, hops));
                    }
                }
            }
            Direction::Downstream => {
                for p in self.produced_at(key)? {
                    let i = b.node(Node::Artifact { digest: p.digest.clone(), name: p.name.clone() });
                    b.edge(node, i, "produced");
                    if hops < depth {
                        digests.push_back((p.digest.clone(), i, hops));
                    }
                }
            }
        }
        Ok(())
    }
}
