//! Pipeline secrets end to end: values named by provider (`env:`, `file:`) reach steps only as
//! environment variables, and nothing Sluice keeps holds them: not the logs (stdout, stderr,
//! a value split across writes), not the outputs, not what downstream steps see, not the
//! cache, not any API response, not any file of the data folder (the sled files included).
//! Process, WASM and container steps; validation errors are located; a secret that cannot be
//! read fails the step with a sentence that names its reference.

mod common;

use common::*;

const DB: &str = "canary-db-7f3a9c1e5b2d";
const API: &str = "canary-api-42d8e6b0aa91";

fn pipeline(sb: &Sandbox, extra_steps: &str) -> String {
    let key = sb.write("api.key", &format!("{API}\n"));
    format!(
        r#"
name: secrets
secrets:
  db: env:SLUICE_TEST_DB_PASSWORD
  api: "file:{key}"
steps:
  shell:
    env:
      DB: "{{{{ secrets.db }}}}"
      API_KEY: "{{{{ secrets.api }}}}"
      URL: "postgres://app:{{{{ secrets.db }}}}@localhost/app"
      LOUD: "{{{{ secrets.db | upper }}}}"
    cache: true
    process:
      shell: |
        echo "db=$DB url=$URL loud=$LOUD"
        echo "stderr has $API_KEY" >&2
        printf '%s' "$DB" | head -c 9; printf '%s\n' "$DB" | tail -c +10
        printf '{{"db": "%s", "url": "%s", "%s": 1}}\n' "$DB" "$URL" "$API_KEY" > "$SLUICE_OUTPUTS"
    outputs: [db, url]
  after:
    needs: [shell]
    env: {{ UP: "{{{{ steps.shell.outputs.db }}}}" }}
    process:
      shell: 'echo "upstream said $UP"'
  plugin:
    env: {{ DB: "{{{{ secrets.db }}}}" }}
    wasm: {{ module: "{plugin}" }}
{extra_steps}"#,
        key = key.display(),
        plugin = repo().join("tests/plugins/env-echo.wat").display(),
    )
}

/// Every file under `dir`, recursively, that holds one of the secrets (as bytes).
fn files_holding_secrets(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                stack.push(e.path());
            } else if ty.is_file() {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                for s in [DB, API, &DB.to_uppercase()] {
                    if bytes.windows(s.len()).any(|w| w == s.as_bytes()) {
                        found.push(format!("{} holds {s}", e.path().display()));
                    }
                }
            }
        }
    }
    found
}

fn assert_clean(what: &str, body: &str) {
    assert!(
        !body.contains(DB) && !body.contains(API) && !body.contains(&DB.to_uppercase()),
        "{what} shows a secret: {body}"
    );
}

#[test]
fn secrets_reach_steps_as_env_and_nothing_sluice_keeps_holds_them() {
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let spec = dags.join("secrets.yaml");
    std::fs::write(&spec, pipeline(&sb, "")).unwrap();

    let out = sb.cmd().env("SLUICE_TEST_DB_PASSWORD", DB).args(["run", "-q"]).arg(&spec).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_clean("sluice run's output", &format!("{}{}", text(&out.stdout), text(&out.stderr)));

    // The steps saw the values; what was kept of them is masked.
    let logs = |run: &str, step: &str| {
        let out = sb.sluice(&["logs", run, step]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };
    let shell = logs("1", "shell");
    // A value built from a secret is masked whole, a transformed one (`| upper`) too.
    assert!(shell.contains("db=*** url=*** loud=***"), "{shell}");
    assert!(shell.contains("stderr has ***"), "{shell}");
    assert_eq!(shell.matches("***").count(), 5, "the split write is masked whole too: {shell}");
    let after = logs("1", "after");
    assert!(after.contains("upstream said ***"), "downstream sees the mask: {after}");
    let plugin = logs("1", "plugin");
    assert!(plugin.contains("DB=***"), "the plugin's env, echoed: {plugin}");
    let show = sb.show("1");
    assert_eq!(show["state"], "succeeded", "{show}");
    assert_eq!(step(&show, "shell")["outputs"]["db"], "***");
    assert_eq!(step(&show, "shell")["outputs"]["url"], "***");
    assert!(step(&show, "shell")["outputs"]["***"].is_number(), "keys are masked too");
    assert!(step(&show, "plugin")["outputs"]["env"].as_str().unwrap().contains("DB=***"));
    assert_clean("sluice show", &show.to_string());

    // The same pipeline under the server, triggered through the API: the cache answers the
    // shell step (its key holds the secret only as a digest), and no response shows a value.
    let mut srv = Server::start_with_env(&sb, &dags, &[], &[("SLUICE_TEST_DB_PASSWORD", DB)]);
    let (code, body) = srv.post("/api/v1/pipelines/secrets/runs", "{}");
    assert_eq!(code, 201, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    let run = run["run"]["id"].as_u64().unwrap();
    let done = srv.wait_run(run);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_clean("the wait response", &done.to_string());
    let again = srv.json(&format!("/api/v1/runs/{run}"));
    let shell_step = again["steps"].as_array().unwrap().iter().find(|s| s["id"] == "shell").unwrap().clone();
    assert!(
        shell_step.to_string().contains("cached"),
        "the second run reuses the first's result: {shell_step}"
    );
    let mut paths = vec![
        "/api/v1/runs".to_string(),
        "/api/v1/pipelines".to_string(),
        "/api/v1/pipelines/secrets".to_string(),
        "/api/v1/artifacts".to_string(),
        "/api/v1/audit".to_string(),
    ];
    for r in [1, run] {
        paths.push(format!("/api/v1/runs/{r}"));
        for s in ["shell", "after", "plugin"] {
            paths.push(format!("/api/v1/runs/{r}/steps/{s}/logs"));
            paths.push(format!("/api/v1/runs/{r}/steps/{s}/cache"));
            paths.push(format!("/api/v1/runs/{r}/steps/{s}/lineage"));
        }
    }
    for p in &paths {
        let (code, body) = srv.get(p);
        assert!(code < 500, "GET {p}: {code} {body}");
        assert_clean(p, &body);
    }
    let pipeline_doc = srv.json("/api/v1/pipelines/secrets").to_string();
    assert!(pipeline_doc.contains("env:SLUICE_TEST_DB_PASSWORD"), "references are shown: {pipeline_doc}");
    assert_eq!(srv.stop().code(), Some(0));

    let leaks = files_holding_secrets(&sb.data());
    assert!(leaks.is_empty(), "the data folder holds secrets:\n{}", leaks.join("\n"));
}

#[test]
fn container_steps_get_secrets_and_their_logs_are_masked() {
    if !docker_or_skip("container_steps_get_secrets_and_their_logs_are_masked") {
        return;
    }
    let sb = Sandbox::new();
    let container = format!(
        r#"  boxed:
    env: {{ DB: "{{{{ secrets.db }}}}", API_KEY: "{{{{ secrets.api }}}}" }}
    container:
      image: {TEST_IMAGE}
      command: [sh, -c, 'echo "in a box $DB"; echo "$API_KEY" >&2; echo "{{\"db\": \"$DB\"}}" > "$SLUICE_OUTPUTS"']
    outputs: [db]
"#
    );
    let spec = sb.write("secrets.yaml", &pipeline(&sb, &container));
    let out = sb.cmd().env("SLUICE_TEST_DB_PASSWORD", DB).args(["run", "-q"]).arg(&spec).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logs = text(&sb.sluice(&["logs", "1", "boxed"]).stdout);
    assert!(logs.contains("in a box ***") && logs.contains("***\n"), "{logs}");
    assert_clean("the container's log", &logs);
    assert_eq!(step(&sb.show("1"), "boxed")["outputs"]["db"], "***");
    let leaks = files_holding_secrets(&sb.data());
    assert!(leaks.is_empty(), "the data folder holds secrets:\n{}", leaks.join("\n"));
}

#[test]
fn a_secret_that_cannot_be_read_fails_the_step_and_names_its_reference() {
    let sb = Sandbox::new();
    let spec = sb.write("secrets.yaml", &pipeline(&sb, ""));
    // No SLUICE_TEST_DB_PASSWORD in the engine's environment.
    let out = sb.cmd().env_remove("SLUICE_TEST_DB_PASSWORD").args(["run", "-q"]).arg(&spec).output().unwrap();
    assert!(!out.status.success(), "the run fails");
    let show = sb.show("1");
    let shell = step(&show, "shell");
    assert_eq!(shell["state"], "failed", "{show}");
    let message = shell.to_string();
    assert!(
        message.contains("secret `db` (env:SLUICE_TEST_DB_PASSWORD)")
            && message.contains("the environment variable `SLUICE_TEST_DB_PASSWORD` is not set"),
        "{message}"
    );
    assert_eq!(attempts(shell), 1, "a missing secret is not retried");
    assert_eq!(step(&show, "after")["state"], "upstream_failed", "{show}");
    // The plugin step reads `db` too: it fails the same way and runs nothing.
    assert_eq!(step(&show, "plugin")["state"], "failed", "{show}");
    let plugin = step(&show, "plugin").to_string();
    assert!(plugin.contains("SLUICE_TEST_DB_PASSWORD"), "{plugin}");
    // The file secret could be read; nothing shows it.
    assert_clean("the failed run", &show.to_string());
}
