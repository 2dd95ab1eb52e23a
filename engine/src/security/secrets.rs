//! Pipeline secrets: named by provider in the pipeline (`secrets: { db: "env:DB_PASSWORD",
//! key: "file:/run/keys/api" }`), resolved when an attempt starts, handed to the step only as
//! environment variables, and redacted (`***`) from everything Sluice keeps: logs, outputs,
//! messages. Their values are never stored; only the references are.

use std::path::PathBuf;

use serde_json::Value;

/// What replaces a secret's value.
pub const MASK: &str = "***";

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// An environment variable of the engine's process.
    Env(String),
    /// A file (its content without a final line break), such as a mounted Kubernetes or
    /// Docker secret.
    File(PathBuf),
}

impl Provider {
    /// Reads `env:NAME` or `file:/absolute/path`.
    pub fn parse(reference: &str) -> Result<Provider, String> {
        if let Some(name) = reference.strip_prefix("env:") {
            let ok = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !ok {
                return Err(format!(
                    "`{reference}`: `env:` takes an environment variable's name (letters, digits, `_`)"
                ));
            }
            return Ok(Provider::Env(name.to_string()));
        }
        if let Some(path) = reference.strip_prefix("file:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!("`{reference}`: `file:` takes an absolute path"));
            }
            return Ok(Provider::File(path));
        }
        Err(format!("`{reference}` names no secret provider; write `env:VARIABLE` or `file:/absolute/path`"))
    }

    /// The value, read now. The error names the reference, never a value.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            Provider::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(v),
                Ok(_) => Err(format!("the environment variable `{name}` is empty")),
                Err(std::env::VarError::NotPresent) => {
                    Err(format!("the environment variable `{name}` is not set for the engine"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("the environment variable `{name}` is not UTF-8"))
                }
            },
            Provider::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
                let value = text.strip_suffix('\n').unwrap_or(&text);
                let value = value.strip_suffix('\r').unwrap_or(value);
                if value.is_empty() {
                    return Err(format!("the secret file {} is empty", path.display()));
                }
                Ok(value.to_string())
            }
        }
    }
}

/// Replaces secret values with [`MASK`]; also over a stream cut into chunks at any byte.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is masked whole.
    values: Vec<Vec<u8>>,
}

impl Redactor {
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        let mut values: Vec<Vec<u8>> =
            values.into_iter().filter(|v| !v.is_empty()).map(String::into_bytes).collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Redactor { values }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `bytes` with every secret value masked.
    pub fn bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        'outer: while i < bytes.len() {
            for v in &self.values {
                if bytes[i..].starts_with(v) {
                    out.extend_from_slice(MASK.as_bytes());
                    i += v.len();
                    continue 'outer;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        out
    }

    pub fn text(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.bytes(text.as_bytes())).into_owned()
    }

    /// Masks every string in `value`, object keys included.
    pub fn json(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => *s = self.text(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.json(v)),
            Value::Object(map) => {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    self.json(&mut v);
                    map.insert(self.text(&k), v);
                }
            }
            _ => {}
        }
    }

    /// One chunk of a stream: `carry` holds what the last chunk left unsent. Returns what may
    /// be sent now, masked, and leaves in `carry` the end that could be the start of a secret
    /// the next chunk completes (a whole shorter secret too, while a longer one it begins may
    /// still follow), for the next chunk or [`Redactor::flush`].
    pub fn chunk(&self, carry: &mut Vec<u8>, chunk: &[u8]) -> Vec<u8> {
        carry.extend_from_slice(chunk);
        let hold = self.hold_from(carry);
        let mut out = Vec::with_capacity(carry.len());
        let mut i = 0;
        while i < hold {
            match self.values.iter().find(|v| carry[i..].starts_with(v)) {
                Some(v) => {
                    out.extend_from_slice(MASK.as_bytes());
                    i += v.len();
                }
                None => {
                    out.push(carry[i]);
                    i += 1;
                }
            }
        }
        carry.drain(..i);
        out
    }

    /// The end of a stream: what `carry` still holds, masked.
    pub fn flush(&self, carry: &mut Vec<u8>) -> Vec<u8> {
        self.bytes(&std::mem::take(carry))
    }

    /// Where the held end of `raw` begins: the first place from which what is left is a
    /// proper beginning of some secret (`raw.len()` when there is none). Before it, every
    /// match is whole and final.
    fn hold_from(&self, raw: &[u8]) -> usize {
        let longest = self.values.first().map_or(0, Vec::len);
        let first = raw.len().saturating_sub(longest.saturating_sub(1));
        (first..raw.len())
            .find(|&i| {
                let end = &raw[i..];
                self.values.iter().any(|v| v.len() > end.len() && v.starts_with(end))
            })
            .unwrap_or(raw.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_are_parsed_and_resolved_without_saying_the_value() {
        assert_eq!(Provider::parse("env:DB_PASSWORD").unwrap(), Provider::Env("DB_PASSWORD".into()));
        assert_eq!(Provider::parse("file:/run/k").unwrap(), Provider::File("/run/k".into()));
        assert!(Provider::parse("env:").unwrap_err().contains("environment variable"));
        assert!(Provider::parse("env:A-B").is_err());
        assert!(Provider::parse("file:relative").unwrap_err().contains("absolute"));
        assert!(Provider::parse("vault:x").unwrap_err().contains("names no secret provider"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "s3cret-value\n").unwrap();
        assert_eq!(Provider::File(f).resolve().unwrap(), "s3cret-value");
        let missing = Provider::Env("SLUICE_TEST_SURELY_UNSET_VARIABLE".into()).resolve().unwrap_err();
        assert!(missing.contains("is not set"), "{missing}");
    }

    #[test]
    fn values_are_masked_whole_also_across_chunks() {
        let r = Redactor::new(["hunter2".to_string(), "hunter2-long".to_string(), String::new()]);
        assert_eq!(r.text("pw=hunter2-long and hunter2."), "pw=*** and ***.");
        let mut v = serde_json::json!({"a": ["x hunter2"], "hunter2": 1, "n": 5});
        r.json(&mut v);
        assert_eq!(v, serde_json::json!({"a": ["x ***"], "***": 1, "n": 5}));
        // The stream cut at every byte: the output never contains the value.
        let text = b"start hunter2 middle hunter2-long end hunte";
        for cut in 1..text.len() {
            let mut carry = Vec::new();
            let mut out = Vec::new();
            for part in text.chunks(cut) {
                out.extend(r.chunk(&mut carry, part));
            }
            out.extend(r.flush(&mut carry));
            assert_eq!(String::from_utf8(out).unwrap(), "start *** middle *** end hunte", "cut {cut}");
        }
        assert!(Redactor::new(Vec::<String>::new()).is_empty());
    }
}
