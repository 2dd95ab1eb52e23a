//! The web UI in a real browser: Debian's headless Chromium, driven through chromedriver
//! (WebDriver) with fantoccini. A runner logs in with a token, triggers a run with params from
//! the generated form, watches it go live (no reload), reads a step's log; an approver logs in,
//! approves the waiting step, and sees the model's alias move. Every page is screenshotted
//! under target/ui-screenshots/, checked for unlabelled controls, and the browser's console
//! must hold no errors.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Child, Sandbox, Server, free_port, http, http_with, text};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const DEMO: &str = r#"
name: ui-demo
description: a run to watch from the browser
params:
  greeting: {type: string, default: hello, description: said by the first step}
  rows: {type: integer, default: 2}
steps:
  hello:
    process:
      shell: |
        echo "{{ params.greeting }} from the browser"
        for i in $(seq 1 {{ params.rows }}); do echo "line $i"; sleep 0.2; done
        echo '{"rows": {{ params.rows }}}' > "$SLUICE_OUTPUTS"
    outputs: [rows]
  train:
    needs: [hello]
    train: {model: logistic, data: data/bc.csv, label: diagnosis, epochs: 5, device: cpu, output: models/logistic}
  register:
    needs: [train]
    register: {model: ui-model, artifact: train}
  approve:
    needs: [register]
    approval: {role: approver, timeout: 1h, message: "promote ui-model?"}
  promote:
    needs: [approve]
    promote: {alias: production}
"#;

/// Debian's chromium and chromedriver, or a loud skip (a failure in CI).
fn chromium_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    let found = common::tools_or_skip(
        test,
        &["chromium", "chromedriver"],
        "SLUICE_REQUIRE_CHROMIUM",
        "chromium chromium-driver",
    )?;
    Some((found[0].clone(), found[1].clone()))
}

/// A headless Chromium session through a chromedriver started on loopback (stopped by its
/// pid with the guard).
struct Browser {
    client: Client,
    driver: String,
    session: String,
    /// Chromium's own pid (chromedriver says it), killed with the guard if a test fails
    /// before it closes the session.
    chromium: Option<i32>,
    _chromedriver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.chromium {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Browser {
    async fn start(sb: &Sandbox, chromium: &std::path::Path, chromedriver: &std::path::Path) -> Browser {
        let port = free_port();
        let log = std::fs::File::create(sb.path("chromedriver.log")).unwrap();
        let child = Child(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start chromedriver"),
        );
        let driver = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http(&driver, "GET", "/status", "").0 != 200 {
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", sb.path("chrome-profile").display())],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        }))
        .unwrap();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://{driver}"))
            .await
            .expect("a Chromium session");
        let session = client.session_id().await.unwrap().expect("a session id");
        let chromium = client
            .capabilities()
            .and_then(|c| c.get("goog:processID"))
            .and_then(|p| p.as_i64())
            .map(|p| p as i32);
        assert!(chromium.is_some(), "chromedriver names Chromium's pid: {:?}", client.capabilities());
        Browser { client, driver, session, chromium, _chromedriver: child }
    }

    /// The browser console's entries since the last call (chromedriver's log endpoint).
    fn console(&self) -> Vec<Value> {
        let (code, body) = http_with(
            &self.driver,
            "POST",
            &format!("/session/{}/se/log", self.session),
            r#"{"type": "browser"}"#,
            &[("Content-Type", "application/json")],
        );
        assert_eq!(code, 200, "chromedriver's log: {body}");
        serde_json::from_str::<Value>(&body).unwrap()["value"].as_array().cloned().unwrap_or_default()
    }

    /// Fails on any console error or warning from the page so far.
    fn assert_console_clean(&self, page: &str) {
        let bad: Vec<Value> = self
            .console()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
            .collect();
        assert!(bad.is_empty(), "the browser console has errors on {page}: {bad:#?}");
    }

    /// Ends the session (Chromium exits); nothing is left for the guard to kill.
    async fn close(&mut self) {
        self.client.clone().close().await.unwrap();
        self.chromium = None;
    }

    async fn text_of(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
    }

    /// Waits (up to 60 s) until the page's JS expression is true.
    async fn until(&self, what: &str, expr: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.client.execute(&format!("return !!({expr});"), vec![]).await.unwrap();
            if v == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self.text_of("main").await;
                panic!("{what}: `{expr}` never held; the page shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes a screenshot of the page, and checks that every control has a name a screen
    /// reader says and that the console is clean.
    async fn page(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = common::repo().join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        let unlabelled = self
            .client
            .execute(
                "return [...document.querySelectorAll('button, input, select, textarea, a[href], canvas')]
                   .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                                && !e.getAttribute('aria-labelledby') && !e.textContent.trim())
                   .map(e => e.outerHTML.slice(0, 120));",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, json!([]), "controls without a name on {name}");
        self.assert_console_clean(name);
    }

    async fn login(&self, url: &str, token: &str) {
        self.client.goto(url).await.unwrap();
        self.until("the login form", "document.getElementById('token')").await;
        self.page("login").await;
        let input = self.client.find(Locator::Id("token")).await.unwrap();
        input.send_keys(token).await.unwrap();
        self.client
            .find(Locator::Css("form.login button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.until("logged in", "!document.getElementById('top').hidden").await;
    }

    async fn logout(&self) {
        self.client.find(Locator::Id("logout")).await.unwrap().click().await.unwrap();
        self.until("logged out", "document.getElementById('token')").await;
    }
}

fn token(sb: &Sandbox, name: &str, role: &str) -> String {
    let out = sb.sluice(&["token", "create", name, "--role", role]);
    assert!(out.status.success(), "token create {name}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn demo_dags(sb: &Sandbox) -> PathBuf {
    let dir = sb.path("dags");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(common::repo().join("dags/data/breast_cancer_wisconsin.csv"), dir.join("data/bc.csv"))
        .unwrap();
    std::fs::write(dir.join("ui-demo.yaml"), DEMO).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_triggers_and_watches_a_run_and_an_approver_approves_it_in_chromium() {
    let Some((chromium, chromedriver)) =
        chromium_or_skip("a_runner_triggers_and_watches_a_run_and_an_approver_approves_it_in_chromium")
    else {
        return;
    };
    let sb = Sandbox::new();
    let srv = Server::start(&sb, &demo_dags(&sb), &[]);
    let alice = token(&sb, "alice", "runner");
    let bob = token(&sb, "bob", "approver");
    let mut b = Browser::start(&sb, &chromium, &chromedriver).await;
    let url = srv.url();

    // The runner logs in; the token is in no URL, and the cookie is out of the page's reach.
    b.login(&format!("{url}/"), &alice).await;
    assert!(!b.client.current_url().await.unwrap().as_str().contains(&alice));
    let js_cookie = b.client.execute("return document.cookie;", vec![]).await.unwrap();
    assert_eq!(js_cookie, json!(""), "the session cookie is HttpOnly");
    b.until(
        "the pipelines",
        "document.querySelector('main h1') && document.querySelector('main h1').textContent === 'Pipelines'",
    )
    .await;
    b.page("pipelines").await;
    // Keyboard: a new view takes the focus, Tab reaches its first control, Enter follows it.
    let focused = b.client.execute("return document.activeElement.id;", vec![]).await.unwrap();
    assert_eq!(focused, json!("main"), "the view has the focus");
    b.client.active_element().await.unwrap().send_keys("\u{E004}").await.unwrap();
    let focused = b.client.execute("return document.activeElement.textContent;", vec![]).await.unwrap();
    assert_eq!(focused, json!("ui-demo"), "Tab reaches the first pipeline");
    b.client.active_element().await.unwrap().send_keys("\u{E007}").await.unwrap();
    b.until("the graph is drawn", "document.querySelector('.graph[data-drawn=\"5\"]')").await;
    b.until("the trigger form", "document.getElementById('param-greeting')").await;
    b.page("pipeline").await;
    let greeting = b.client.find(Locator::Id("param-greeting")).await.unwrap();
    greeting.clear().await.unwrap();
    greeting.send_keys("hi-from-chromium").await.unwrap();
    let rows = b.client.find(Locator::Id("param-rows")).await.unwrap();
    rows.clear().await.unwrap();
    rows.send_keys("4").await.unwrap();
    b.client.execute("window.__sameDocument = true;", vec![]).await.unwrap();
    b.client
        .find(Locator::Css("form[aria-labelledby=trigger-title] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.until("the run's page", "location.hash.startsWith('#/runs/')").await;
    let run: u64 = b
        .client
        .execute("return location.hash.split('/')[2];", vec![])
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // It turns green step by step, without a reload, up to the approval.
    b.until(
        "the approval waits",
        "document.querySelector('tr[data-step=approve] .badge') && document.querySelector('tr[data-step=approve] .badge').textContent === 'waiting'",
    )
    .await;
    assert_eq!(
        b.client.execute("return window.__sameDocument === true;", vec![]).await.unwrap(),
        json!(true),
        "no reload"
    );
    assert_eq!(b.text_of("tr[data-step=hello] .badge").await, "succeeded");
    assert_eq!(b.text_of("tr[data-step=train] .badge").await, "succeeded");
    let report = srv.json(&format!("/api/v1/runs/{run}"));
    assert_eq!(report["params"], json!({ "greeting": "hi-from-chromium", "rows": 4 }), "typed from the form");
    // A runner may not approve: no button.
    assert!(
        b.client
            .find_all(Locator::Css(
                "tr[data-step=approve] button.primary, tr[data-step=approve] button.danger"
            ))
            .await
            .unwrap()
            .is_empty()
    );
    // The step's log.
    b.client.find(Locator::Css("tr[data-step=hello] button.link")).await.unwrap().click().await.unwrap();
    b.until("the log", "document.getElementById('step-log') && document.getElementById('step-log').textContent.includes('line 4')").await;
    assert!(b.text_of("#step-log").await.contains("hi-from-chromium from the browser"));
    b.page("run-waiting").await;

    // The approver approves from the same page; the run goes on live to the end.
    b.logout().await;
    b.login(&format!("{url}/#/runs/{run}"), &bob).await;
    b.until("the approve button", "document.querySelector('tr[data-step=approve] button.primary')").await;
    b.client.find(Locator::Css("tr[data-step=approve] button.primary")).await.unwrap().click().await.unwrap();
    b.until("the run succeeded", "document.querySelector('main h1 .badge').textContent === 'succeeded'")
        .await;
    assert_eq!(b.text_of("tr[data-step=promote] .badge").await, "succeeded");
    b.until("the timeline", "document.querySelector('svg[aria-label^=\"Timeline\"]')").await;
    b.page("run-succeeded").await;

    // The model's alias moved to the version the run registered.
    b.client.goto(&format!("{url}/#/models/ui-model")).await.unwrap();
    b.until("the aliases", "document.querySelector('tr[data-alias=production]')").await;
    assert!(b.text_of("tr[data-alias=production]").await.contains('1'));
    b.page("model").await;
    b.client.goto(&format!("{url}/#/models")).await.unwrap();
    b.until("the models", "document.querySelector('main table')").await;
    b.page("models").await;

    // The other pages, as an approver sees them.
    for (hash, name, ready) in [
        ("#/runs", "runs", "document.querySelector('main table tbody tr')"),
        ("#/schedules", "schedules", "document.querySelector('main h1')"),
        ("#/events", "events", "document.querySelector('main h1')"),
        (
            "#/audit",
            "audit",
            "[...document.querySelectorAll('main td')].some(t => t.textContent === 'session.login')",
        ),
    ] {
        b.client.goto(&format!("{url}/{hash}")).await.unwrap();
        b.until(name, ready).await;
        b.page(name).await;
    }
    // A second run to compare with: from the API, seen by the open runs page without a reload.
    b.client.goto(&format!("{url}/#/runs")).await.unwrap();
    b.until("the runs page", "document.querySelector('main table tbody tr')").await;
    let (code, body) =
        srv.post("/api/v1/pipelines/ui-demo/runs", r#"{"params": {"greeting": "again", "rows": 1}}"#);
    assert_eq!(code, 201, "{body}");
    let second = serde_json::from_str::<Value>(&body).unwrap()["run"]["id"].as_u64().unwrap();
    b.until("the new run appears live", &format!("document.querySelector('a[href=\"#/runs/{second}\"]')"))
        .await;
    b.client.goto(&format!("{url}/#/compare?runs={run},{second}")).await.unwrap();
    b.until("the comparison", "document.querySelector('tr.differs')").await;
    assert!(b.text_of("main").await.contains("greeting"));
    b.page("compare").await;
    b.logout().await;
    b.assert_console_clean("the end");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_of_ten_thousand_steps_is_drawn_in_chromium() {
    let Some((chromium, chromedriver)) = chromium_or_skip("a_dag_of_ten_thousand_steps_is_drawn_in_chromium")
    else {
        return;
    };
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    // 100 layers of 100 steps, each needing two neighbours in the layer above.
    let mut yaml = String::from("name: big\nsteps:\n");
    for layer in 0..100 {
        for j in 0..100 {
            yaml.push_str(&format!("  s{layer}_{j}:\n    process: {{command: [\"true\"]}}\n"));
            if layer > 0 {
                yaml.push_str(&format!(
                    "    needs: [s{}_{}, s{}_{}]\n",
                    layer - 1,
                    j,
                    layer - 1,
                    (j + 1) % 100
                ));
            }
        }
    }
    std::fs::write(dags.join("big.yaml"), yaml).unwrap();
    let srv = Server::start(&sb, &dags, &[]);
    let mut b = Browser::start(&sb, &chromium, &chromedriver).await;
    b.login(&format!("{}/", srv.url()), &srv.token).await;
    // A fresh load of the pipeline's page: from navigation to the graph drawn.
    b.client.goto(&format!("{}/#/pipelines/big", srv.url())).await.unwrap();
    b.client.refresh().await.unwrap();
    b.until("the big graph", "document.querySelector('.graph[data-drawn=\"10000\"]')").await;
    let drawn = b
        .client
        .execute("return performance.getEntriesByName('graph-drawn')[0].startTime;", vec![])
        .await
        .unwrap();
    // Timed by benches/ui.rs in a release build; here it must draw, and say how long it took.
    println!("10,000 steps drawn {:.0} ms after navigation (debug build)", drawn.as_f64().unwrap());
    b.page("graph-10000").await;
    // A run of it: the graph, and the first 200 steps listed with a box to find the others.
    let (code, body) = srv.post("/api/v1/pipelines/big/runs", "{}");
    assert_eq!(code, 201, "{body}");
    let run = serde_json::from_str::<Value>(&body).unwrap()["run"]["id"].as_u64().unwrap();
    b.client.goto(&format!("{}/#/runs/{run}", srv.url())).await.unwrap();
    b.until("the run's graph", "document.querySelector('.graph[data-drawn=\"10000\"]')").await;
    b.until("200 steps listed", "document.querySelectorAll('tr[data-step]').length === 200").await;
    let find = b.client.find(Locator::Id("step-find")).await.unwrap();
    find.send_keys("s99_").await.unwrap();
    b.until("the steps found", "document.querySelectorAll('tr[data-step]').length === 100").await;
    assert!(b.text_of("main").await.contains("100 of 100 matching steps"));
    b.page("run-10000").await;
    let (code, body) = srv.post(&format!("/api/v1/runs/{run}/cancel"), "{}");
    assert!(code < 300, "{body}");
    srv.wait_run(run);
    b.close().await;
}

/// The session without a browser: the cookie's attributes, CSRF on every change, a revoked
/// token ending its sessions, a wrong token counted as a failed login.
#[test]
fn a_session_needs_its_csrf_token_for_changes_and_ends_with_its_token() {
    let sb = Sandbox::new();
    let srv = Server::start(&sb, &demo_dags(&sb), &[]);
    let carol = token(&sb, "carol", "runner");
    let (code, head, body) =
        srv.request_as(None, "POST", "/ui/login", json!({ "token": carol }).to_string().as_bytes(), &[]);
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains(&carol), "the answer never holds the token: {body}");
    let cookie_line =
        head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect("a cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie_line.contains(attr), "{cookie_line}");
    }
    assert!(!cookie_line.contains(&carol), "the cookie is not the token: {cookie_line}");
    let session = cookie_line.split_once("sluice_session=").unwrap().1.split(';').next().unwrap().to_string();
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["role"], "runner");
    let csrf = me["csrf"].as_str().unwrap().to_string();
    let cookie = format!("sluice_session={session}");

    // Reading needs the cookie only; a change needs the CSRF token too.
    let (code, _, body) = srv.request_as(None, "GET", "/api/v1/runs", b"", &[("Cookie", &cookie)]);
    assert_eq!(code, 200, "{body}");
    let start = "/api/v1/pipelines/ui-demo/runs";
    let (code, _, body) = srv.request_as(None, "POST", start, b"{}", &[("Cookie", &cookie)]);
    assert_eq!(code, 403, "no CSRF token: {body}");
    assert!(body.contains("csrf"), "{body}");
    let (code, _, body) =
        srv.request_as(None, "POST", start, b"{}", &[("Cookie", &cookie), ("X-CSRF-Token", "forged")]);
    assert_eq!(code, 403, "a wrong CSRF token: {body}");
    let (code, _, body) =
        srv.request_as(None, "POST", start, b"{}", &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)]);
    assert_eq!(code, 201, "{body}");
    // The session's role holds: a runner may not read the audit log.
    let (code, _, _) = srv.request_as(None, "GET", "/api/v1/audit", b"", &[("Cookie", &cookie)]);
    assert_eq!(code, 403);
    // Another site's page cannot use the cookie.
    let (code, _, _) = srv.request_as(
        None,
        "POST",
        start,
        b"{}",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf), ("Origin", "http://evil.example")],
    );
    assert_eq!(code, 403, "a cross-origin request");

    // Revoking the token ends the session.
    assert!(sb.sluice(&["token", "revoke", "carol"]).status.success());
    let (code, _, body) = srv.request_as(None, "GET", "/api/v1/runs", b"", &[("Cookie", &cookie)]);
    assert_eq!(code, 401, "{body}");
    let (_, _, body) = srv.request_as(None, "GET", "/ui/session", b"", &[("Cookie", &cookie)]);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["name"], Value::Null);
    // A wrong token is refused, and the login is in the audit log, the token nowhere.
    let (code, _, _) = srv.request_as(None, "POST", "/ui/login", br#"{"token": "sluice_nope"}"#, &[]);
    assert_eq!(code, 401);
    let audit = srv.json("/api/v1/audit?action=session.login");
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["actor"] == "token:carol"), "{audit}");
    let log = std::fs::read_to_string(sb.path("serve.log")).unwrap();
    assert!(!log.contains(&carol) && !log.contains(&session), "the server's log holds no secret");
}
