//! TLS for the API (`--tls-cert`, `--tls-key`): rustls on the ring provider, TLS 1.2 and 1.3,
//! HTTP/1.1 by ALPN. Certificates and key are PEM files (a chain, leaf first; a PKCS#8, RSA or
//! SEC1 key). Without TLS the server listens on loopback only, unless told `--insecure`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate chain and key the server presents.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why TLS cannot be set up, or why the server will not listen without it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {}: {detail}", path.display())]
    Read { what: &'static str, path: PathBuf, detail: String },
    #[error("the TLS certificate {} and key {} do not make a server configuration: {detail}", cert.display(), key.display())]
    Config { cert: PathBuf, key: PathBuf, detail: String },
    #[error(
        "refusing to listen on {0} without TLS: tokens would cross the network in clear. Give --tls-cert and --tls-key, listen on a loopback address (127.0.0.1, ::1), or pass --insecure if something else encrypts the traffic (a TLS-terminating proxy on this host)"
    )]
    PlainOffLoopback(SocketAddr),
}

/// Refuses a non-loopback address without TLS unless `insecure`.
pub fn check_listen(addr: SocketAddr, tls: bool, insecure: bool) -> Result<(), TlsError> {
    if tls || insecure || addr.ip().is_loopback() { Ok(()) } else { Err(TlsError::PlainOffLoopback(addr)) }
}

/// The rustls acceptor for `files`.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Read {
        what: "key",
        path: files.key.clone(),
        detail: format!("{e} (expected a PEM private key: PKCS#8, RSA or EC)"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| TlsError::Config {
            cert: files.cert.clone(),
            key: files.key.clone(),
            detail: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The certificates of a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |detail: String| TlsError::Read { what: "certificate", path: path.to_path_buf(), detail };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(read("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_only_unless_insecure() {
        let lo: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let lo6: SocketAddr = "[::1]:80".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        assert!(check_listen(lo, false, false).is_ok());
        assert!(check_listen(lo6, false, false).is_ok());
        let err = check_listen(any, false, false).unwrap_err().to_string();
        assert!(
            err.contains("refusing to listen on 0.0.0.0:80 without TLS") && err.contains("--insecure"),
            "{err}"
        );
        assert!(check_listen(any, true, false).is_ok());
        assert!(check_listen(any, false, true).is_ok());
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let files = TlsFiles { cert: junk.clone(), key: junk.clone() };
        let err = acceptor(&files).err().expect("junk is refused").to_string();
        assert!(
            err.contains("cannot read the TLS certificate") && err.contains("no PEM certificate"),
            "{err}"
        );
        let missing = TlsFiles { cert: dir.path().join("nope.pem"), key: junk };
        assert!(acceptor(&missing).err().expect("missing is refused").to_string().contains("nope.pem"));
    }
}
