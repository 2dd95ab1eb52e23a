//! A `sluice serve` child for the benches that measure it over loopback, and a keep-alive
//! HTTP/1.1 connection to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Stops the server by its pid however the bench ends (a failed assertion too).
pub(crate) struct Stop(std::process::Child);

impl From<std::process::Child> for Stop {
    fn from(child: std::process::Child) -> Stop {
        Stop(child)
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// Starts `sluice serve` (the binary cargo built for the bench) on `data_dir` with the
/// pipelines of `dags` on a free loopback port; its guard and its address.
pub(crate) fn start(data_dir: &Path, dags: &Path, extra: &[&str]) -> (Stop, String) {
    let info = data_dir.join("server.json");
    let _ = std::fs::remove_file(&info);
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "error"])
        .args(extra)
        .arg("--dags")
        .arg(dags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice serve");
    let guard = Stop(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Ok(v) =
            std::fs::read_to_string(&info).map(|t| serde_json::from_str::<Value>(&t).unwrap_or_default())
            && let Some(url) = v["url"].as_str()
        {
            break url.trim_start_matches("http://").to_string();
        }
        assert!(Instant::now() < deadline, "sluice serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    };
    (guard, addr)
}

/// A keep-alive HTTP/1.1 connection.
pub(crate) struct Conn {
    reader: BufReader<TcpStream>,
    addr: String,
}

impl Conn {
    pub(crate) fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).ok();
        Conn { reader: BufReader::new(s), addr: addr.to_string() }
    }

    pub(crate) fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.reader.get_mut().write_all(req.as_bytes()).expect("send");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status");
        let code = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let mut len = 0usize;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).unwrap();
                let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body.resize(len, 0);
            self.reader.read_exact(&mut body).expect("body");
        }
        (code, String::from_utf8_lossy(&body).into_owned())
    }
}
