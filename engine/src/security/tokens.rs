//! Bearer tokens: `sluice_<id>_<secret>`, 32 random bytes of secret. The store keeps a token's
//! record (name, role, expiry, revocation) and the SHA-256 of the whole token, never the
//! token: whoever reads the data folder cannot use what it holds. A presented token is found
//! by its id and its hash compared in constant time.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::Role;

const PREFIX: &str = "sluice_";

/// A token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub v: u32,
    /// The public part of the token, naming its record.
    pub id: String,
    pub name: String,
    pub role: Role,
    /// SHA-256 of the whole token, in hex.
    pub hash: String,
    pub created_at: i64,
    /// Who made it (an audit actor).
    pub created_by: String,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

impl TokenRecord {
    /// The record without its hash, for listings.
    pub fn public(&self, now: i64) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "state": self.state(now),
        })
    }

    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// A token just made: its record and the secret, shown once.
#[derive(Debug)]
pub struct Minted {
    pub record: TokenRecord,
    pub token: String,
}

/// Checks a token's name: 1 to 64 of letters, digits, `.`, `_`, `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a token name: use 1 to 64 letters, digits, `.`, `_` or `-`",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// Makes a new token.
pub fn mint(
    name: &str,
    role: Role,
    expires_at: Option<i64>,
    created_by: &str,
    now: i64,
) -> Result<Minted, String> {
    check_name(name)?;
    let id = super::hex(&super::random::<8>()?);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(super::random::<32>()?);
    let token = format!("{PREFIX}{id}_{secret}");
    let record = TokenRecord {
        v: 1,
        id,
        name: name.to_string(),
        role,
        hash: super::sha256_hex(token.as_bytes()),
        created_at: now,
        created_by: created_by.to_string(),
        expires_at,
        revoked_at: None,
    };
    Ok(Minted { record, token })
}

/// The id a presented token names, if it has the shape of one.
pub fn id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let fits = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() == 43;
    fits.then_some(id)
}

/// Why a presented token does not stand for anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed, unknown, or not matching its record.
    Invalid,
    Expired,
    Revoked,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Invalid => "the token is not valid",
            Refusal::Expired => "the token has expired",
            Refusal::Revoked => "the token has been revoked",
        }
    }
}

/// Checks a presented token against the record its id names.
pub fn check(record: Option<&TokenRecord>, presented: &str, now: i64) -> Result<(), Refusal> {
    let Some(record) = record else { return Err(Refusal::Invalid) };
    let hash = super::sha256_hex(presented.as_bytes());
    if !bool::from(hash.as_bytes().ct_eq(record.hash.as_bytes())) {
        return Err(Refusal::Invalid);
    }
    if record.revoked_at.is_some() {
        return Err(Refusal::Revoked);
    }
    if record.expires_at.is_some_and(|e| e <= now) {
        return Err(Refusal::Expired);
    }
    Ok(())
}

/// The key of attempt tokens: random, made by each engine process and kept only in its
/// memory. An attempt token (`sluice_attempt_<tracking run>_<HMAC-SHA256>`) names the tracking
/// run of one step attempt and stands for it while that run is running: nothing of it is
/// stored, and a restarted engine (whose attempts all start again) has a new key.
pub struct AttemptKey(ring::hmac::Key);

/// The prefix of attempt tokens.
const ATTEMPT_PREFIX: &str = "sluice_attempt_";

impl AttemptKey {
    pub fn generate() -> Result<AttemptKey, String> {
        Ok(AttemptKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &super::random::<32>()?)))
    }

    /// The token of a tracking run.
    pub fn mint(&self, run: &str) -> String {
        let tag = ring::hmac::sign(&self.0, run.as_bytes());
        format!("{ATTEMPT_PREFIX}{run}_{}", super::hex(tag.as_ref()))
    }

    /// The tracking run a presented attempt token stands for, if it was minted here
    /// (checked in constant time); `None` for anything else.
    pub fn check<'a>(&self, presented: &'a str) -> Option<&'a str> {
        let rest = presented.strip_prefix(ATTEMPT_PREFIX)?;
        let (run, tag) = rest.rsplit_once('_')?;
        if run.len() != 32 || !run.bytes().all(|b| b.is_ascii_hexdigit()) || tag.len() != 64 {
            return None;
        }
        let expected = ring::hmac::sign(&self.0, run.as_bytes());
        bool::from(super::hex(expected.as_ref()).as_bytes().ct_eq(tag.as_bytes())).then_some(run)
    }

    /// Whether a presented token has the shape of an attempt token.
    pub fn is_attempt_token(presented: &str) -> bool {
        presented.starts_with(ATTEMPT_PREFIX)
    }
}

impl std::fmt::Debug for AttemptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_tokens_check_only_under_their_key() {
        let (k, other) = (AttemptKey::generate().unwrap(), AttemptKey::generate().unwrap());
        let run = "0123456789abcdef0123456789abcdef";
        let t = k.mint(run);
        assert!(AttemptKey::is_attempt_token(&t));
        assert_eq!(k.check(&t), Some(run));
        assert_eq!(other.check(&t), None, "another engine's key");
        let forged = t.replace(run, "f123456789abcdef0123456789abcdef");
        assert_eq!(k.check(&forged), None, "another run with this run's tag");
        assert_eq!(k.check(&t[..t.len() - 1]), None);
        assert_eq!(k.check("sluice_attempt_x_y"), None);
        assert!(!format!("{k:?}").contains(&t[47..]));
    }

    #[test]
    fn a_minted_token_checks_and_its_forgeries_do_not() {
        let m = mint("ci", Role::Runner, Some(1_000), "local:root", 0).unwrap();
        assert_eq!(id_of(&m.token), Some(m.record.id.as_str()));
        assert!(!m.record.hash.contains(&m.token) && m.record.hash.len() == 64);
        assert_eq!(check(Some(&m.record), &m.token, 10), Ok(()));
        assert_eq!(check(Some(&m.record), &m.token, 1_000), Err(Refusal::Expired));
        // The same id with another secret.
        let mut forged = m.token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(id_of(&forged), Some(m.record.id.as_str()));
        assert_eq!(check(Some(&m.record), &forged, 10), Err(Refusal::Invalid));
        assert_eq!(check(None, &m.token, 10), Err(Refusal::Invalid));
        let mut revoked = m.record.clone();
        revoked.revoked_at = Some(5);
        assert_eq!(check(Some(&revoked), &m.token, 10), Err(Refusal::Revoked));
        for bad in ["", "Bearer x", "sluice_", "sluice_zz_yy", &m.token[..m.token.len() - 1]] {
            assert_eq!(id_of(bad), None, "{bad}");
        }
        assert!(mint("no spaces", Role::Viewer, None, "x", 0).is_err());
    }
}
