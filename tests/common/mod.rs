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
        let mut c = Command::new(bin());
        c.arg("--data-dir").arg(self.data()).env_remove("SLUICE_FAULT").env_remove("SLUICE_HOME");
        c
    }

    pub fn sluice(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run sluice")
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
