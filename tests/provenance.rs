//! Signed provenance end to end: every attempt that produces artifacts leaves an in-toto
//! Statement with an SLSA provenance predicate in a DSSE envelope; `sluice artifact verify`
//! checks it, an independent implementation (securesystemslib, from PyPI) verifies the same
//! envelope, and an edited envelope, a foreign key and damaged content all fail the check.

mod common;

use common::*;

const PIPELINE: &str = r#"
name: prov
params:
  lr: { type: number, default: 0.1 }
steps:
  prepare:
    workdir: "{{ run.id }}"
    inputs: [raw.csv]
    process:
      shell: "sort ../raw.csv > clean.csv"
    artifacts:
      clean: clean.csv
  train:
    needs: [prepare]
    workdir: "{{ run.id }}"
    process:
      shell: "cat {{ steps.prepare.artifacts.clean.path }} > model.bin; echo lr={{ params.lr }} >> model.bin"
    artifacts:
      model: model.bin
"#;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)))
}

fn run_pipeline(sb: &Sandbox) -> (String, String) {
    std::fs::create_dir_all(sb.path("1")).unwrap();
    sb.write("raw.csv", "b,2\na,1\n");
    let spec = sb.write("prov.yaml", PIPELINE);
    let out = sb.sluice(&["run", "-q", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = json(&sb.sluice(&["artifacts", "--run", "1", "--output", "json"]));
    let digest = |name: &str| {
        list["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == name).unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    (digest("clean"), digest("model"))
}

/// The stored envelope of the attempt that produced `digest`, read through the API.
fn envelope(server: &Server, digest: &str) -> serde_json::Value {
    let doc = server.json(&format!("/api/v1/artifacts/{digest}/provenance"));
    assert_eq!(doc["provenance"].as_array().unwrap().len(), 1, "{doc}");
    doc["provenance"][0]["envelope"].clone()
}

fn statement(env: &serde_json::Value) -> serde_json::Value {
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
    serde_json::from_slice(&payload).unwrap()
}

#[test]
fn every_artifact_has_signed_slsa_provenance_that_verify_checks() {
    let sb = Sandbox::new();
    let (clean, model) = run_pipeline(&sb);

    // verify: content and signature, exit 0.
    let out = sb.sluice(&["artifact", "verify", &model, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let v = json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["content"]["ok"], true);
    assert_eq!(v["attestations"][0]["step"], "train");
    let human = sb.sluice(&["artifact", "verify", &model[..20]]);
    assert!(human.status.success());
    assert!(text(&human.stdout).contains("signed by key"), "{}", text(&human.stdout));

    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let mut server = Server::start(&sb, &dags, &[]);
    let env = envelope(&server, &model);
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    let st = statement(&env);
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(st["subject"][0]["digest"]["sha256"], model.strip_prefix("sha256:").unwrap());
    let def = &st["predicate"]["buildDefinition"];
    assert_eq!(def["externalParameters"]["pipeline"], "prov");
    assert_eq!(def["externalParameters"]["params"]["lr"], 0.1);
    assert_eq!(def["externalParameters"]["trigger"]["trigger"], "manual");
    let deps = def["resolvedDependencies"].as_array().unwrap();
    assert!(
        deps.iter().any(|d| d["name"] == "prepare.clean"
            && d["digest"]["sha256"] == clean.strip_prefix("sha256:").unwrap()),
        "the consumed artifact is a resolved dependency: {def}"
    );
    let details = &st["predicate"]["runDetails"];
    assert!(details["builder"]["id"].as_str().unwrap().starts_with("sluice://"));
    assert!(
        details["metadata"]["startedOn"].as_str().unwrap()
            <= details["metadata"]["finishedOn"].as_str().unwrap()
    );
    // The upstream step's statement names the raw file it read, by content.
    let prep = statement(&envelope(&server, &clean));
    let raw = prep["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "dataset")
        .cloned()
        .unwrap_or_else(|| panic!("no dataset among {prep}"));
    assert!(raw["uri"].as_str().unwrap().ends_with("/raw.csv"), "{raw}");

    // The API's check and the instance's public key.
    let checked = server.json(&format!("/api/v1/artifacts/{model}/verify"));
    assert_eq!(checked["ok"], true, "{checked}");
    let key = server.json("/api/v1/signing-key");
    assert_eq!(key["key_id"], checked["key_id"]);
    let public = std::fs::read_to_string(sb.data().join("keys/signing.pub")).unwrap();
    assert_eq!(key["public_pem"].as_str().unwrap(), public);

    // Through the server (it owns the folder), with the key brought by the user: the
    // envelopes are checked on this side.
    let pubfile = sb.data().join("keys/signing.pub");
    let via =
        sb.sluice(&["artifact", "verify", &model, "--key", pubfile.to_str().unwrap(), "--output", "json"]);
    assert!(via.status.success(), "{}", text(&via.stdout));
    assert_eq!(json(&via)["attestations"][0]["ok"], true);

    // An independent DSSE implementation verifies the same envelope with the public key.
    if let Some(python) =
        python_with("securesystemslib.dsse", "provenance: securesystemslib verifies the envelope")
    {
        let env_file = sb.write("model.dsse.json", &env.to_string());
        let script = r#"
import json, sys
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from securesystemslib.exceptions import VerificationError
env = Envelope.from_dict(json.load(open(sys.argv[1])))
from cryptography.hazmat.primitives.serialization import load_pem_public_key
public = load_pem_public_key(open(sys.argv[2], "rb").read())
# The envelope names its key by Sluice's key id; the key material is what is checked.
key = SSlibKey.from_crypto(public, keyid=next(iter(env.signatures)))
accepted = env.verify([key], 1)
assert len(accepted) == 1, accepted
st = json.loads(env.payload)
assert st["predicateType"] == "https://slsa.dev/provenance/v1"
env.payload = env.payload.replace(b"prov", b"PROV")
try:
    env.verify([key], 1)
    print("EDITED ENVELOPE VERIFIED")
    sys.exit(1)
except VerificationError:
    pass
print("verified", st["subject"][0]["digest"]["sha256"])
"#;
        let out = std::process::Command::new(python)
            .args(["-c", script, env_file.to_str().unwrap(), pubfile.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("verified {}", model.strip_prefix("sha256:").unwrap())));
    }
    server.stop();

    // A key that did not sign it: not verified, exit 1.
    let foreign = sb.write("foreign.pub", &"5a".repeat(32));
    let out = sb.sluice(&["artifact", "verify", &model, "--key", foreign.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("DOES NOT VERIFY"), "{}", text(&out.stdout));
}

#[test]
fn an_edited_envelope_or_damaged_content_fails_verification() {
    let sb = Sandbox::new();
    let (_, model) = run_pipeline(&sb);
    assert!(sb.sluice(&["artifact", "verify", &model]).status.success());

    // The stored statement edited (params changed, the signature kept): the check fails.
    let copy = sb.path("tampered");
    assert!(std::process::Command::new("cp").arg("-a").arg(sb.data()).arg(&copy).status().unwrap().success());
    {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let db = sled::open(copy.join("db")).unwrap();
        let tree = db.open_tree("provenance").unwrap();
        let mut edited = 0;
        for kv in tree.iter() {
            let (k, v) = kv.unwrap();
            let mut env: serde_json::Value = serde_json::from_slice(&v).unwrap();
            let mut st: serde_json::Value =
                serde_json::from_slice(&b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
            if st["subject"][0]["digest"]["sha256"] != model.strip_prefix("sha256:").unwrap() {
                continue;
            }
            st["predicate"]["buildDefinition"]["externalParameters"]["params"]["lr"] = serde_json::json!(0.9);
            env["payload"] = serde_json::json!(b64.encode(serde_json::to_vec(&st).unwrap()));
            tree.insert(k, serde_json::to_vec(&env).unwrap()).unwrap();
            edited += 1;
        }
        assert_eq!(edited, 1);
        db.flush().unwrap();
    }
    let out = sb.sluice_in(&copy, &["artifact", "verify", &model, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert!(v["attestations"][0]["error"].as_str().unwrap().contains("no signature"), "{v}");

    // A bit flipped in the stored file: the content check fails (the signature alone does not
    // make it verified).
    let hex = model.strip_prefix("sha256:").unwrap();
    let stored = sb.data().join("artifacts/sha256").join(&hex[..2]).join(&hex[2..]);
    let mut perms = std::fs::metadata(&stored).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&stored, perms).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    let out = sb.sluice(&["artifact", "verify", &model]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(said.contains("DAMAGED") && said.contains("NOT verified"), "{said}");
}
