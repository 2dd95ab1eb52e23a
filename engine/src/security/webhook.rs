//! Signed webhooks: a source that cannot send a bearer token (GitHub, GitLab, most SaaS
//! senders) signs each body with a secret it shares with Sluice, HMAC-SHA256 over the exact
//! bytes, sent as `X-Hub-Signature-256: sha256=<hex>` (GitHub's header; `X-Sluice-Signature-256`
//! is the same). A source given a secret (`sluice serve --webhook-secret SOURCE=env:VAR`)
//! takes only signed requests; the comparison is constant time (ring's `hmac::verify`).

use std::collections::BTreeMap;

use ring::hmac;

use super::secrets::Provider;

/// The headers a signature may come in, in the order they are looked at.
pub const SIGNATURE_HEADERS: [&str; 2] = ["x-hub-signature-256", "x-sluice-signature-256"];

/// The sources that must sign, with their keys. Its `Debug` names the sources only.
#[derive(Clone, Default)]
pub struct WebhookKeys {
    keys: BTreeMap<String, hmac::Key>,
}

impl std::fmt::Debug for WebhookKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookKeys").field("sources", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

/// Why a request does not pass as its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// No signature header.
    Missing,
    /// A header that is not `sha256=<64 hex digits>`.
    Malformed,
    /// A well-formed signature that does not match the body.
    Mismatch,
}

impl SignatureError {
    pub fn message(&self, source: &str) -> String {
        match self {
            SignatureError::Missing => format!(
                "the event source `{source}` takes only signed requests: send `X-Hub-Signature-256: sha256=<hex>`, the HMAC-SHA256 of the body with the source's secret"
            ),
            SignatureError::Malformed => {
                "the signature header must be `sha256=` and 64 hexadecimal digits".to_string()
            }
            SignatureError::Mismatch => {
                format!("the signature does not match the body with the secret of `{source}`")
            }
        }
    }
}

impl WebhookKeys {
    /// Reads `SOURCE=env:VAR` or `SOURCE=file:/path` specs, each secret read now. Errors name
    /// the spec's source and reference, never a value.
    pub fn from_specs<'a>(specs: impl IntoIterator<Item = &'a str>) -> Result<WebhookKeys, String> {
        let mut keys = BTreeMap::new();
        for spec in specs {
            let Some((source, reference)) = spec.split_once('=') else {
                return Err(format!("`{spec}`: write SOURCE=env:VARIABLE or SOURCE=file:/path"));
            };
            let valid = !source.is_empty()
                && source.len() <= 64
                && source.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                return Err(format!(
                    "`{source}` is not an event source: use 1-64 letters, digits, `-`, `_` or `.`"
                ));
            }
            // A reference that does not parse may be the secret itself, typed by mistake:
            // it is not repeated.
            let provider = Provider::parse(reference).map_err(|_| {
                format!(
                    "the webhook secret of `{source}`: write where it is read from, `env:VARIABLE` or `file:/absolute/path` (never the secret itself)"
                )
            })?;
            let value = provider
                .resolve()
                .map_err(|why| format!("the webhook secret of `{source}` ({reference}): {why}"))?;
            if keys.insert(source.to_string(), hmac::Key::new(hmac::HMAC_SHA256, value.as_bytes())).is_some()
            {
                return Err(format!("the event source `{source}` is given two webhook secrets"));
            }
        }
        Ok(WebhookKeys { keys })
    }

    /// A key for `source` made from `secret` (tests and benches).
    pub fn with(mut self, source: &str, secret: &[u8]) -> WebhookKeys {
        self.keys.insert(source.to_string(), hmac::Key::new(hmac::HMAC_SHA256, secret));
        self
    }

    /// Whether requests for `source` must be signed.
    pub fn requires(&self, source: &str) -> bool {
        self.keys.contains_key(source)
    }

    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Checks a request for `source` (which [`WebhookKeys::requires`] a signature): `header` is
    /// the signature header's value, if any.
    pub fn verify(&self, source: &str, header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
        let Some(key) = self.keys.get(source) else { return Err(SignatureError::Mismatch) };
        let header = header.ok_or(SignatureError::Missing)?;
        let hex = header.strip_prefix(b"sha256=").ok_or(SignatureError::Malformed)?;
        let tag = decode_hex(hex).ok_or(SignatureError::Malformed)?;
        hmac::verify(key, body, &tag).map_err(|_| SignatureError::Mismatch)
    }
}

/// The header value a sender puts on `body` with `secret`: `sha256=<hex>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), body);
    format!("sha256={}", super::hex(tag.as_ref()))
}

/// 64 hexadecimal digits (either case) as 32 bytes.
fn decode_hex(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_style_signatures_verify_and_anything_else_is_refused() {
        let keys = WebhookKeys::default().with("github", b"It's a Secret to Everybody");
        let body = b"Hello, World!";
        // The example from GitHub's documentation of X-Hub-Signature-256.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(b"It's a Secret to Everybody", body), sig);
        assert!(keys.requires("github") && !keys.requires("other"));
        assert_eq!(keys.verify("github", Some(sig.as_bytes()), body), Ok(()));
        assert_eq!(
            keys.verify("github", Some(sig.to_uppercase().replace("SHA256", "sha256").as_bytes()), body),
            Ok(())
        );
        assert_eq!(
            keys.verify("github", Some(sig.as_bytes()), b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(keys.verify("github", None, body), Err(SignatureError::Missing));
        for bad in [
            "757107ea",
            "sha256=xyz",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
            "sha256=",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
        ] {
            assert_eq!(
                keys.verify("github", Some(bad.as_bytes()), body),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        let other = WebhookKeys::default().with("github", b"another secret");
        assert_eq!(other.verify("github", Some(sig.as_bytes()), body), Err(SignatureError::Mismatch));
        assert!(!format!("{keys:?}").contains("Secret"), "Debug shows sources only: {keys:?}");
    }

    #[test]
    fn specs_are_read_once_and_errors_never_show_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gh.secret");
        std::fs::write(&f, "s3cret\n").unwrap();
        let spec = format!("github=file:{}", f.display());
        let keys = WebhookKeys::from_specs([spec.as_str()]).unwrap();
        assert_eq!(keys.sources().collect::<Vec<_>>(), ["github"]);
        assert_eq!(keys.verify("github", Some(sign(b"s3cret", b"{}").as_bytes()), b"{}"), Ok(()));
        let e = WebhookKeys::from_specs(["github"]).unwrap_err();
        assert!(e.contains("SOURCE=env:VARIABLE"), "{e}");
        let e = WebhookKeys::from_specs(["git hub=env:X"]).unwrap_err();
        assert!(e.contains("not an event source"), "{e}");
        let e = WebhookKeys::from_specs(["github=env:SLUICE_TEST_SURELY_UNSET_WEBHOOK"]).unwrap_err();
        assert!(e.contains("webhook secret of `github`") && e.contains("is not set"), "{e}");
        let e = WebhookKeys::from_specs(["github=hunter2-typed-here"]).unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("env:VARIABLE"), "{e}");
        let e = WebhookKeys::from_specs([spec.as_str(), spec.as_str()]).unwrap_err();
        assert!(e.contains("two webhook secrets"), "{e}");
    }
}
