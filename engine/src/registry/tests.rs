use super::*;

fn version(key: &SigningKey) -> ModelVersion {
    let mut files = BTreeMap::new();
    files.insert(
        "model.safetensors".into(),
        VersionFile { digest: format!("sha256:{}", "a".repeat(64)), size: 10 },
    );
    files.insert("model.json".into(), VersionFile { digest: format!("sha256:{}", "b".repeat(64)), size: 5 });
    let mut v = ModelVersion {
        v: RECORD_VERSION,
        name: "churn".into(),
        version: 3,
        created: 1,
        updated: 1,
        created_by: "token:ci".into(),
        description: String::new(),
        tags: BTreeMap::new(),
        artifact: format!("sha256:{}", "a".repeat(64)),
        files,
        source: "sluice:runs/1/steps/train".into(),
        attempt: None,
        tracking_run: None,
        metrics: [("auc".to_string(), 0.9)].into(),
        params: BTreeMap::new(),
        input_schema: vec![Feature { name: "x".into(), kind: "double".into() }],
        registration: Envelope {
            payload: String::new(),
            payload_type: String::new(),
            signatures: Vec::new(),
        },
    };
    v.registration = sign_registration(key, &v);
    v
}

#[test]
fn a_registration_verifies_and_its_tamperings_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::load_or_create(dir.path(), None).unwrap();
    let v = version(&key);
    assert_eq!(verify_registration(&v, key.public()), Ok(()));
    // A file's digest swapped in the record.
    let mut t = v.clone();
    t.files.get_mut("model.json").unwrap().digest = format!("sha256:{}", "c".repeat(64));
    assert!(verify_registration(&t, key.public()).unwrap_err().contains("differs in: subject"));
    // Another version's statement.
    let mut t = v.clone();
    t.version = 4;
    assert!(verify_registration(&t, key.public()).is_err());
    // A file added.
    let mut t = v.clone();
    t.files.insert("extra".into(), VersionFile { digest: format!("sha256:{}", "d".repeat(64)), size: 1 });
    assert!(verify_registration(&t, key.public()).unwrap_err().contains("subject"));
    // Raised metrics (what a gate reads), a file renamed, the source changed.
    let mut t = v.clone();
    t.metrics.insert("auc".into(), 0.99);
    assert!(verify_registration(&t, key.public()).unwrap_err().contains("differs in: metrics"));
    let mut t = v.clone();
    let f = t.files.remove("model.json").unwrap();
    t.files.insert("renamed.json".into(), f);
    assert!(verify_registration(&t, key.public()).is_err());
    let mut t = v.clone();
    t.source = "elsewhere".into();
    assert!(verify_registration(&t, key.public()).unwrap_err().contains("source"));
    // Another key.
    let other_dir = tempfile::tempdir().unwrap();
    let other = SigningKey::load_or_create(other_dir.path(), None).unwrap();
    assert!(verify_registration(&v, other.public()).is_err());
}

#[test]
fn names_aliases_and_versions() {
    assert!(check_model_name("churn").is_ok());
    assert!(check_model_name("churn model v2").is_ok());
    for bad in ["", " ", "a/b", "a@b", "a:b", "..", "a\u{1}"] {
        assert!(check_model_name(bad).is_err(), "{bad:?}");
    }
    assert!(check_alias("production").is_ok());
    assert!(check_alias("champion-2").is_ok());
    for bad in ["", "latest", "v3", "V12", "2fast", "a b", "prod@x", &"a".repeat(65)] {
        assert!(check_alias(bad).is_err(), "{bad:?}");
    }
    assert!(check_alias("v2x").is_ok());
    assert_eq!(parse_version("3"), Ok(3));
    assert_eq!(parse_version("v12"), Ok(12));
    assert!(parse_version("0").is_err());
    assert!(parse_version("three").is_err());
}

#[test]
fn schemas_come_from_metadata_and_mlmodel_files() {
    let meta = serde_json::json!({ "features": ["age", "tenure"] });
    let s = schema_of_metadata(&meta);
    assert_eq!(s.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["age", "tenure"]);
    let mlmodel = "flavors:\n  python_function: {}\nsignature:\n  inputs: '[{\"name\": \"age\", \"type\": \"long\"}, {\"name\": \"income\", \"type\": \"double\"}]'\n  outputs: '[{\"type\": \"double\"}]'\n";
    let s = schema_of_mlmodel(mlmodel);
    assert_eq!(
        s,
        [
            Feature { name: "age".into(), kind: "long".into() },
            Feature { name: "income".into(), kind: "double".into() }
        ]
    );
    assert!(schema_of_mlmodel("not: [yaml").is_empty());
    assert!(schema_of_mlmodel("flavors: {}").is_empty());
}
