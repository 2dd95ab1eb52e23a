//! Signed provenance: for each attempt that produced artifacts, an in-toto Statement (v1)
//! whose subjects are those artifacts and whose predicate is SLSA Provenance (v1), in a DSSE
//! envelope signed with the instance's ed25519 key.
//!
//! The formats are the public ones, so any DSSE verifier checks them (the tests use
//! `securesystemslib`): the signature is over DSSE's pre-authentication encoding
//! `"DSSEv1" SP len(type) SP type SP len(body) SP body`, the key id is the SHA-256 of the
//! public key's 32 bytes in hex (`keys::key_id`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::keys::{self, SigningKey};

/// The payload type of an in-toto statement in DSSE.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
/// What kind of build Sluice's predicates describe (SLSA's `buildType`: a URI naming the
/// meaning of `externalParameters` and `internalParameters`).
pub const BUILD_TYPE: &str = "https://sluice.dev/provenance/attempt/v1";

/// A DSSE envelope (its JSON form is the standard one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The statement's bytes, base64 (standard alphabet, padded).
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub keyid: String,
    pub sig: String,
}

/// DSSE's pre-authentication encoding of a payload: what is signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// An artifact a statement is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// `<step>/<declared name>/<file>`: names are for people; the digest is what binds.
    pub name: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// Something the attempt used, resolved to its content: a consumed artifact, a dataset
/// version, a code file, a container image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub uri: String,
    pub name: Option<String>,
    /// `sha256:<hex>` (or another algorithm's `alg:<hex>`).
    pub digest: String,
}

/// What an attempt was, for its predicate.
#[derive(Debug, Clone, PartialEq)]
pub struct Build {
    /// The instance's builder id (its URL, or `sluice://<host>/<data dir>`).
    pub builder: String,
    pub pipeline: String,
    /// The hash of the pipeline's version (its stored plan).
    pub dag: String,
    pub params: Map<String, Value>,
    pub step: String,
    /// The step's kind (`process`, `container`, `wasm`, `train`).
    pub kind: String,
    pub run: u64,
    pub item: u32,
    pub attempt: u32,
    /// ms since the epoch.
    pub started_ms: i64,
    pub finished_ms: i64,
    /// The run's trigger and its details (who or what started it).
    pub trigger: Value,
    pub dependencies: Vec<Dependency>,
}

fn digest_set(digest: &str) -> Value {
    match digest.split_once(':') {
        Some((alg, hex)) => json!({ alg: hex }),
        None => json!({ "sha256": digest }),
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The in-toto statement of `subjects` made by `build`.
pub fn statement(subjects: &[Subject], build: &Build) -> Value {
    let subject: Vec<Value> =
        subjects.iter().map(|s| json!({ "name": s.name, "digest": digest_set(&s.digest) })).collect();
    let resolved: Vec<Value> = build
        .dependencies
        .iter()
        .map(|d| {
            let mut v = json!({ "uri": d.uri, "digest": digest_set(&d.digest) });
            if let Some(name) = &d.name {
                v["name"] = json!(name);
            }
            v
        })
        .collect();
    json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "pipeline": build.pipeline,
                    "step": build.step,
                    "params": build.params,
                    "trigger": build.trigger,
                },
                "internalParameters": {
                    "dag": build.dag,
                    "kind": build.kind,
                },
                "resolvedDependencies": resolved,
            },
            "runDetails": {
                "builder": { "id": build.builder },
                "metadata": {
                    "invocationId": format!("{}/runs/{}/steps/{}/items/{}/attempts/{}", build.builder, build.run, build.step, build.item, build.attempt),
                    "startedOn": rfc3339(build.started_ms),
                    "finishedOn": rfc3339(build.finished_ms),
                },
            },
        },
    })
}

/// Signs `statement` into an envelope.
pub fn sign(key: &SigningKey, statement: &Value) -> Envelope {
    let payload = serde_json::to_vec(statement).expect("a JSON value serializes");
    let sig = key.sign(&pae(PAYLOAD_TYPE, &payload));
    Envelope {
        payload: STANDARD.encode(&payload),
        payload_type: PAYLOAD_TYPE.to_string(),
        signatures: vec![Signature { keyid: key.key_id(), sig: STANDARD.encode(sig) }],
    }
}

/// Why an envelope does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the envelope is not DSSE: {0}")]
    Malformed(String),
    #[error("the envelope carries `{0}`, not an in-toto statement")]
    PayloadType(String),
    #[error("no signature of the envelope is by key {key} ({signatures} signature(s) checked)")]
    NoValidSignature { key: String, signatures: usize },
    #[error("the statement does not name the artifact {0} among its subjects")]
    NotASubject(String),
}

/// Checks `envelope` against the public key `public` (32 bytes); returns its statement.
pub fn verify(envelope: &Envelope, public: &[u8]) -> Result<Value, VerifyError> {
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(VerifyError::PayloadType(envelope.payload_type.clone()));
    }
    let payload = STANDARD
        .decode(&envelope.payload)
        .map_err(|e| VerifyError::Malformed(format!("its payload is not base64: {e}")))?;
    let message = pae(&envelope.payload_type, &payload);
    let good = envelope
        .signatures
        .iter()
        .any(|s| STANDARD.decode(&s.sig).is_ok_and(|sig| keys::verify(public, &message, &sig)));
    if !good {
        return Err(VerifyError::NoValidSignature {
            key: keys::key_id(public),
            signatures: envelope.signatures.len(),
        });
    }
    let statement: Value = serde_json::from_slice(&payload)
        .map_err(|e| VerifyError::Malformed(format!("its payload is not JSON: {e}")))?;
    if statement["_type"] != STATEMENT_TYPE {
        return Err(VerifyError::Malformed(format!("its payload's _type is {}", statement["_type"])));
    }
    Ok(statement)
}

/// Whether `statement` names `digest` (`sha256:<hex>`) as a subject.
pub fn names_subject(statement: &Value, digest: &str) -> bool {
    let Some((alg, hex)) = digest.split_once(':') else { return false };
    statement["subject"].as_array().is_some_and(|s| s.iter().any(|s| s["digest"][alg].as_str() == Some(hex)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build() -> Build {
        Build {
            builder: "sluice://host/data".into(),
            pipeline: "p".into(),
            dag: "abc".into(),
            params: Map::new(),
            step: "train".into(),
            kind: "process".into(),
            run: 3,
            item: 0,
            attempt: 1,
            started_ms: 1_700_000_000_000,
            finished_ms: 1_700_000_001_500,
            trigger: json!({"trigger": "manual"}),
            dependencies: vec![Dependency {
                uri: "file:///data/x.csv".into(),
                name: Some("dataset".into()),
                digest: format!("sha256:{}", "1".repeat(64)),
            }],
        }
    }

    #[test]
    fn pae_is_dsse_v1() {
        // The example of the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn an_envelope_verifies_with_its_key_only_and_not_once_changed() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(dir.path(), None).unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        let st = statement(&[Subject { name: "train/model/m.bin".into(), digest: digest.clone() }], &build());
        assert_eq!(st["predicate"]["runDetails"]["metadata"]["startedOn"], "2023-11-14T22:13:20.000Z");
        let env = sign(&key, &st);
        let back = verify(&env, key.public()).unwrap();
        assert_eq!(back, st);
        assert!(names_subject(&back, &digest));
        assert!(!names_subject(&back, &format!("sha256:{}", "b".repeat(64))));

        let other = tempfile::tempdir().unwrap();
        let stranger = SigningKey::load_or_create(other.path(), None).unwrap();
        assert!(matches!(verify(&env, stranger.public()), Err(VerifyError::NoValidSignature { .. })));

        let mut edited = st.clone();
        edited["predicate"]["buildDefinition"]["externalParameters"]["params"] = json!({"lr": 1});
        let forged =
            Envelope { payload: STANDARD.encode(serde_json::to_vec(&edited).unwrap()), ..env.clone() };
        assert!(matches!(verify(&forged, key.public()), Err(VerifyError::NoValidSignature { .. })));

        let retyped = Envelope { payload_type: "text/plain".into(), ..env.clone() };
        assert!(matches!(verify(&retyped, key.public()), Err(VerifyError::PayloadType(_))));
        let garbled = Envelope { payload: "%%%".into(), ..env };
        assert!(matches!(verify(&garbled, key.public()), Err(VerifyError::Malformed(_))));
    }
}
