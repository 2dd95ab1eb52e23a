//! Helpers shared by the end-to-end tests: they drive the real `sluice` binary.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A data folder and a work folder for one test.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    pub fn cmd(&self) -> Command {
        self.cmd_in(&self.data())
    }

    /// `sluice --data-dir DATA`, free of the caller's environment (another data folder than
    /// the sandbox's own: a copy a test tampers with).
    pub fn cmd_in(&self, data: &Path) -> Command {
        let mut c = Command::new(bin());
        c.arg("--data-dir")
            .arg(data)
            .env_remove("SLUICE_FAULT")
            .env_remove("SLUICE_HOME")
            .env_remove("SLUICE_SERVER")
            .env_remove("SLUICE_TOKEN")
            .env_remove("SLUICE_SIGNING_KEY")
            .env_remove("SLUICE_AUDIT_FILE");
        c
    }

    pub fn sluice(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run sluice")
    }

    pub fn sluice_in(&self, data: &Path, args: &[&str]) -> Output {
        self.cmd_in(data).args(args).output().expect("run sluice")
    }

    /// Starts `sluice run -q SPEC`, waits for a step to write `marker` (under the data folder),
    /// sends SIGTERM, and returns how the engine ended.
    pub fn interrupt_run(&self, spec: &Path, marker: &str) -> Output {
        let child = self
            .cmd()
            .args(["run", "-q"])
            .arg(spec)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start sluice");
        wait_for_file(&self.data().join(marker), "the step never started");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        child.wait_with_output().expect("wait for sluice")
    }

    pub fn show(&self, run: &str) -> serde_json::Value {
        let out = self.sluice(&["show", run, "--output", "json"]);
        assert!(out.status.success(), "show failed: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("show prints JSON")
    }
}

/// Waits up to 30 s for a file a step writes to exist and hold something; `what` names the
/// event in the failure message.
pub fn wait_for_file(path: &Path, what: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(content) = std::fs::read_to_string(path)
            && !content.trim().is_empty()
        {
            return content;
        }
        assert!(std::time::Instant::now() < deadline, "{what} (no {})", path.display());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a command failed cleanly: the given exit code, an `error:` line, no panic.
pub fn assert_clean_error(out: &Output, code: i32, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "a panic: {err}");
}

/// How many attempts a step of a run report had (every task's).
pub fn attempts(step: &serde_json::Value) -> usize {
    step["attempts"].as_array().unwrap_or_else(|| panic!("no attempts in {step}")).len()
}

pub fn step<'a>(show: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    show["steps"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no step {id}"))
}

/// The processes of a process group still alive after giving a kill up to 2 s to land
/// (zombies waiting for a reaper do not count: they have already exited).
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    let mut alive = group_members_now(pgid);
    for _ in 0..200 {
        if alive.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        alive = group_members_now(pgid);
    }
    alive
}

pub fn group_members_now(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

/// The test image that tests/docker.sh imports.
pub const TEST_IMAGE: &str = "sluice-test/busybox:1";

/// Whether a Docker engine answers at DOCKER_HOST. Without one, container tests skip with a
/// loud message, unless SLUICE_REQUIRE_DOCKER=1 (as tests/run.sh and CI set), where they fail.
pub fn docker_or_skip(test: &str) -> bool {
    let sb = Sandbox::new();
    let out = sb.sluice(&["doctor", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    if doc["container"]["ok"] == true {
        return true;
    }
    let why = doc["container"]["error"].as_str().unwrap_or("sluice doctor failed").to_string();
    if std::env::var("SLUICE_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("{test}: SLUICE_REQUIRE_DOCKER=1 but no Docker engine answers: {why}");
    }
    // Straight to the terminal: the test harness would swallow eprintln! of a passing test.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: no Docker engine ({why}). Run `bash tests/run.sh` to start one. ***\n"
    );
    false
}

/// Whether the C plugins are built (`bash plugins/build.sh`, which the test command runs);
/// says so loudly when they are not, and fails under SLUICE_REQUIRE_PLUGINS=1.
pub fn plugins_or_skip(test: &str) -> bool {
    let missing: Vec<String> = ["csv-validate", "feature-transform"]
        .iter()
        .map(|p| repo().join("plugins/build").join(format!("{p}.wasm")))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("SLUICE_REQUIRE_PLUGINS").as_deref() == Ok("1") {
        panic!("{test}: SLUICE_REQUIRE_PLUGINS=1 but {} is missing", missing.join(", "));
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: the C plugins are not built ({}). Run `bash plugins/build.sh`. ***\n",
        missing.join(", ")
    );
    false
}

impl Sandbox {
    /// Containers this sandbox's engine left on the Docker engine.
    pub fn leftover_containers(&self) -> Vec<String> {
        let owner = format!("label=dev.sluice.owner={}", std::path::absolute(self.data()).unwrap().display());
        let out = Command::new("docker")
            .args(["ps", "-a", "--filter", &owner, "--format", "{{.Names}}"])
            .output()
            .expect("docker ps");
        text(&out.stdout).lines().map(str::to_string).collect()
    }
}

/// A `sluice serve` child process; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    pub child: std::process::Child,
    /// `127.0.0.1:port`
    pub addr: String,
    /// The admin token the server made on its first start (sent unless a request names its
    /// own Authorization).
    pub token: String,
}

impl Server {
    /// Starts `sluice serve --dags <dags> --listen 127.0.0.1:0` on the sandbox's data folder
    /// and waits until it answers.
    pub fn start(sb: &Sandbox, dags: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(sb, dags, extra, &[])
    }

    /// [`Server::start`] with these variables added to the server's environment.
    pub fn start_with_env(sb: &Sandbox, dags: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let info = sb.data().join("server.json");
        let _ = std::fs::remove_file(&info);
        let mut cmd = sb.cmd();
        cmd.envs(env.iter().copied());
        cmd.args(["serve", "--dags"]).arg(dags).args(["--listen", "127.0.0.1:0"]).args(extra);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(sb.path("serve.log")).expect("log");
        cmd.stdout(std::process::Stdio::null()).stderr(log);
        let mut child = cmd.spawn().expect("spawn sluice serve");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&info)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && v["pid"].as_u64() == Some(child.id() as u64)
            {
                let url = v["url"].as_str().unwrap();
                let addr = url.trim_start_matches("https://").trim_start_matches("http://").to_string();
                let token = std::fs::read_to_string(sb.data().join("admin.token"))
                    .map(|t| t.trim().to_string())
                    .unwrap_or_default();
                return Server { child, addr, token };
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("sluice serve exited: {st:?}; see {}", sb.path("serve.log").display());
            }
            assert!(std::time::Instant::now() < deadline, "sluice serve did not come up");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One HTTP/1.1 request over loopback; returns the status and the body (de-chunked).
    pub fn request(&self, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, String) {
        let (code, _, body) = self.request_as(Some(&self.token), method, path, body, headers);
        (code, body)
    }

    /// One request with the given token (none: no Authorization header, unless `headers`
    /// has one); returns the status, the head and the body.
    pub fn request_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, String, String) {
        let mut all: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
        if let Some(token) = token.filter(|t| !t.is_empty())
            && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            all.push(("Authorization", format!("Bearer {token}")));
        }
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        raw_request(&self.addr, method, path, body, &all).expect("connect")
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, b"", &[])
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        self.request("POST", path, body.as_bytes(), &[])
    }

    /// GET, expecting 200 and JSON.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Polls a run until it has ended.
    pub fn wait_run(&self, run: u64) -> serde_json::Value {
        loop {
            let v = self.json(&format!("/api/v1/runs/{run}/wait?timeout_s=20"));
            if v["done"] == true {
                return v;
            }
        }
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 20 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The Python that can import `module` (tests/run.sh provides a venv with the third-party
/// clients, named by SLUICE_PYTHON), or `None` after saying loudly why `test` cannot run; under
/// SLUICE_REQUIRE_PYTHON=1 it fails instead.
pub fn python_with(module: &str, test: &str) -> Option<String> {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let why = format!("{test}: `{python}` cannot import {module} (tests/run.sh provides it)");
    if std::env::var_os("SLUICE_REQUIRE_PYTHON").is_some() {
        panic!("{why}");
    }
    eprintln!("\n!!! SKIPPED: {why} !!!\n");
    None
}

/// The Alertmanager binary (Debian's `prometheus-alertmanager`, which `tests/run.sh`
/// installs), or `None` after saying loudly that the test skips; with
/// SLUICE_REQUIRE_ALERTMANAGER=1 it fails instead.
pub fn alertmanager_or_skip(test: &str) -> Option<PathBuf> {
    let found = ["prometheus-alertmanager", "alertmanager"].iter().find_map(|name| {
        std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
    });
    if found.is_some() {
        return found;
    }
    if std::env::var("SLUICE_REQUIRE_ALERTMANAGER").as_deref() == Ok("1") {
        panic!("{test}: SLUICE_REQUIRE_ALERTMANAGER=1 but no alertmanager is on PATH");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: no Alertmanager on PATH (apt-get install prometheus-alertmanager, or run `bash tests/run.sh`). ***\n"
    );
    None
}

/// The programs `names` on PATH (Debian packages that tests/run.sh installs), or `None` after
/// saying loudly that `test` skips and what to install; with `require`=1 in the environment
/// it fails instead.
pub fn tools_or_skip(test: &str, names: &[&str], require: &str, install: &str) -> Option<Vec<PathBuf>> {
    let find = |name: &str| {
        std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
    };
    let found: Option<Vec<PathBuf>> = names.iter().map(|n| find(n)).collect();
    if found.is_some() {
        return found;
    }
    let list = names.join(", ");
    if std::env::var(require).as_deref() == Ok("1") {
        panic!("{test}: {require}=1 but one of {list} is not on PATH");
    }
    eprintln!(
        "\n*** SKIPPED {test}: one of {list} is not on PATH (apt-get install {install}, or run `bash tests/run.sh`). ***\n"
    );
    None
}

/// A free port on 127.0.0.1 (bound and let go: for a program that takes a fixed port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One plain HTTP/1.1 request to `addr`; the status and body (0 and nothing when nothing
/// listens).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    raw_request(addr, method, path, body.as_bytes(), &[])
        .map_or((0, String::new()), |(code, _, body)| (code, body))
}

/// [`http`] with request headers.
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    raw_request(addr, method, path, body.as_bytes(), headers)
        .map_or((0, String::new()), |(code, _, body)| (code, body))
}

/// One HTTP/1.1 request with `Connection: close`; the status, the head and the body.
fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    let _ = s.write_all(body);
    // Read to the end of the answer: its length when it says one (some servers, such as
    // chromedriver, keep the connection open whatever the request asks), else to the close.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = length
                && raw.len() >= end + 4 + len
            {
                break;
            }
            if head.contains("transfer-encoding: chunked") && raw.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    Ok((status, head.to_string(), body))
}

/// The regular files anywhere under `dir` (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => out.push(e.path()),
                Err(_) => {}
            }
        }
    }
    out
}

/// A child process of a test (an Alertmanager), stopped by its pid when dropped: SIGTERM,
/// then SIGKILL after 10 s.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Debian's Alertmanager on `addr` (loopback) with `config`, its data and log in the
/// sandbox, and waits until it is ready; stopped by its pid when the guard drops.
pub fn start_alertmanager(sb: &Sandbox, binary: &Path, config: &str, addr: &str) -> Child {
    let config_file = sb.write("alertmanager.yml", config);
    let log = std::fs::File::create(sb.path("alertmanager.log")).unwrap();
    let child = Child(
        Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.path={}", sb.path("am-data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start alertmanager"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while http(addr, "GET", "/-/ready", "").0 != 200 {
        let log = std::fs::read_to_string(sb.path("alertmanager.log")).unwrap_or_default();
        assert!(std::time::Instant::now() < deadline, "alertmanager did not come up: {log}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child
}
