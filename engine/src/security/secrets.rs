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
                let text = read_small_file(path)
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

/// The most a secret file may hold.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Reads a secret (or key) file the way that cannot block (a FIFO) or exhaust memory: opened
/// non-blocking, a regular file (through a link is fine: mounted Kubernetes secrets are
/// links), at most [`MAX_SECRET_BYTES`].
pub(crate) fn read_small_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc_nonblock()).open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("it is not a regular file"));
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(std::io::Error::other(format!("it is larger than {MAX_SECRET_BYTES} bytes")));
    }
    let mut text = String::new();
    f.take(MAX_SECRET_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

fn libc_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

/// Replaces secret values with [`MASK`]; also over a stream cut into chunks at any byte.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<Vec<u8>>,
    /// Each value's prefix function (KMP), to find the longest end of a text that begins a
    /// value in one pass.
    prefix: Vec<Vec<usize>>,
    /// All values at once (aho-corasick), overlapping matches included.
    finder: Option<std::sync::Arc<aho_corasick::AhoCorasick>>,
}

impl Redactor {
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        let mut values: Vec<Vec<u8>> =
            values.into_iter().filter(|v| !v.is_empty()).map(String::into_bytes).collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        let finder = (!values.is_empty())
            .then(|| aho_corasick::AhoCorasick::new(&values).ok().map(std::sync::Arc::new))
            .flatten();
        let prefix = values.iter().map(|v| prefix_function(v)).collect();
        Redactor { values, prefix, finder }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The byte ranges of `raw` that some value covers (overlapping matches merged), in
    /// order.
    fn spans(&self, raw: &[u8]) -> Vec<(usize, usize)> {
        let Some(finder) = &self.finder else { return Vec::new() };
        // Overlapping matches come by where they end; merged once sorted by where they start.
        let mut spans: Vec<(usize, usize)> =
            finder.find_overlapping_iter(raw).map(|m| (m.start(), m.end())).collect();
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (a, b) in spans {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        merged
    }

    /// `raw[..upto]` with `spans` (each within it) masked.
    fn masked(raw: &[u8], spans: &[(usize, usize)], upto: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(upto);
        let mut at = 0;
        for &(a, b) in spans.iter().filter(|(a, _)| *a < upto) {
            out.extend_from_slice(&raw[at..a]);
            out.extend_from_slice(MASK.as_bytes());
            at = b;
        }
        if at < upto {
            out.extend_from_slice(&raw[at..upto]);
        }
        out
    }

    /// `bytes` with every secret value masked.
    pub fn bytes(&self, bytes: &[u8]) -> Vec<u8> {
        if self.is_empty() {
            return bytes.to_vec();
        }
        Self::masked(bytes, &self.spans(bytes), bytes.len())
    }

    pub fn text(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        String::from_utf8_lossy(&self.bytes(text.as_bytes())).into_owned()
    }

    /// Masks every string in `value`, object keys included, and every number whose digits
    /// hold a secret (it becomes the masked text).
    pub fn json(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => *s = self.text(s),
            Value::Number(n) => {
                let digits = n.to_string();
                let masked = self.text(&digits);
                if masked != digits {
                    *value = Value::String(masked);
                }
            }
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
        let spans = self.spans(carry);
        let mut cut = self.hold_from(carry);
        // A masked range that crosses the cut is sent whole.
        if let Some(&(_, b)) = spans.iter().find(|(a, b)| *a < cut && *b > cut) {
            cut = b;
        }
        let out = Self::masked(carry, &spans, cut);
        carry.drain(..cut);
        out
    }

    /// The end of a stream: what `carry` still holds, masked.
    pub fn flush(&self, carry: &mut Vec<u8>) -> Vec<u8> {
        self.bytes(&std::mem::take(carry))
    }

    /// Where the held end of `raw` begins: the first place from which what is left is a
    /// proper beginning of some secret (`raw.len()` when there is none). One pass per value
    /// over at most its length of `raw`'s end.
    fn hold_from(&self, raw: &[u8]) -> usize {
        let mut hold = raw.len();
        for (v, pi) in self.values.iter().zip(&self.prefix) {
            let tail = &raw[raw.len().saturating_sub(v.len() - 1)..];
            // The KMP state after the tail: the longest end of it that begins `v` (shorter
            // than `v`, as the tail is).
            let mut state = 0;
            for &c in tail {
                while state > 0 && v[state] != c {
                    state = pi[state - 1];
                }
                if v[state] == c {
                    state += 1;
                }
            }
            if state > 0 {
                hold = hold.min(raw.len() - state);
            }
        }
        hold
    }
}

/// `pi[i]`: the length of the longest proper prefix of `v[..=i]` that is also its suffix.
fn prefix_function(v: &[u8]) -> Vec<usize> {
    let mut pi = vec![0; v.len()];
    let mut k = 0;
    for i in 1..v.len() {
        while k > 0 && v[i] != v[k] {
            k = pi[k - 1];
        }
        if v[i] == v[k] {
            k += 1;
        }
        pi[i] = k;
    }
    pi
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

    /// `text` streamed in chunks of every size masks to `want`.
    fn assert_every_cut(r: &Redactor, text: &[u8], want: &str) {
        for cut in 1..text.len() {
            let mut carry = Vec::new();
            let mut out = Vec::new();
            for part in text.chunks(cut) {
                out.extend(r.chunk(&mut carry, part));
            }
            out.extend(r.flush(&mut carry));
            assert_eq!(String::from_utf8(out).unwrap(), want, "cut {cut}");
        }
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
        assert_every_cut(&r, text, "start *** middle *** end hunte");
        assert!(Redactor::new(Vec::<String>::new()).is_empty());
        // Overlapping values are masked as their union; numbers that hold one are masked.
        let r = Redactor::new(["abcd".to_string(), "cdef".to_string(), "4242".to_string()]);
        assert_eq!(r.text("x abcdef y"), "x *** y");
        let nested = Redactor::new(["s3cr3t".to_string(), "url://u:s3cr3t@host".to_string()]);
        assert_eq!(nested.text("a url://u:s3cr3t@host b s3cr3t"), "a *** b ***");
        let mut v = serde_json::json!({"pin": 4242, "n": 7, "big": 142420});
        r.json(&mut v);
        assert_eq!(v, serde_json::json!({"pin": "***", "n": 7, "big": "1***0"}));
        // A periodic secret cut at every byte of a text full of its beginnings.
        let r = Redactor::new(["aab".to_string()]);
        let text = b"aaaaaab aab aaaa";
        assert_every_cut(&r, text, "aaaa*** *** aaaa");
    }
}
