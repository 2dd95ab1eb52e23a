//! TLS on the API: `serve --tls-cert/--tls-key` serves HTTPS (a self-signed certificate made
//! here with rcgen), the CLI trusts the certificate its server names or `$SLUICE_CA_CERT`, a
//! client that does not trust it is refused, and plain HTTP off loopback is refused unless
//! `--insecure`.

mod common;

use common::*;

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key (0600).
fn self_signed(sb: &Sandbox) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let made = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = sb.write("cert.pem", &made.cert.pem());
    let key = sb.write("key.pem", &made.signing_key.serialize_pem());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

#[test]
fn the_api_serves_https_and_the_cli_trusts_only_what_it_is_told_to() {
    let sb = Sandbox::new();
    let (cert, key) = self_signed(&sb);
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let mut server = Server::start(
        &sb,
        &dags,
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.data().join("server.json")).unwrap()).unwrap();
    let url = info["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("https://localhost:"), "{info}");

    // The CLI goes through the server (it holds the folder), trusting the certificate the
    // server named in server.json.
    let out = sb.sluice(&["token", "list", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("admin"), "{}", text(&out.stdout));

    // By address, with the certificate given as a CA: trusted (its IP name matches).
    let port = url.rsplit(':').next().unwrap();
    let by_ip = format!("https://127.0.0.1:{port}");
    let out =
        sb.cmd().args(["--server", &by_ip, "token", "list"]).env("SLUICE_CA_CERT", &cert).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Without it, the certificate is nobody's: refused, and the error says why.
    let out = sb.cmd().args(["--server", &by_ip, "token", "list"]).output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let (code, _, _) = server.request_as(None, "GET", "/api/v1/health", b"", &[]);
    assert_eq!(code, 0, "plain HTTP was answered on the TLS port");
    assert!(server.stop().success());
}

#[test]
fn plain_http_off_loopback_is_refused_and_bad_tls_files_are_clear_errors() {
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    // Refused before anything listens (no traffic leaves loopback).
    let out = sb.sluice(&["serve", "--dags", dags.to_str().unwrap(), "--listen", "0.0.0.0:0"]);
    assert_clean_error(&out, 2, "refusing to listen on 0.0.0.0:0 without TLS");
    assert!(text(&out.stderr).contains("--insecure"), "{}", text(&out.stderr));
    assert!(!sb.data().join("server.json").exists());

    let junk = sb.write("junk.pem", "not PEM at all");
    let out = sb.sluice(&[
        "serve",
        "--dags",
        dags.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        junk.to_str().unwrap(),
        "--tls-key",
        junk.to_str().unwrap(),
    ]);
    assert_clean_error(&out, 2, "cannot read the TLS certificate");
    // A certificate needs its key.
    let out = sb.sluice(&["serve", "--dags", dags.to_str().unwrap(), "--tls-cert", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
