//! The web UI's login: a token given once to `POST /ui/login` becomes a session, named by a
//! random id in an `HttpOnly`, `SameSite=Strict` cookie. The token stays in this process's
//! memory only (never in the cookie, a URL, a log or the store) and is checked again on every
//! request, so that revoking or expiring it ends its sessions at once. Every request that
//! changes something with a session must carry the session's CSRF token in `X-CSRF-Token`
//! (a synchronizer token the page reads from `/ui/session`), besides the same-origin checks
//! every request passes (`guard`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use sha2::Digest;

use super::access::{Peer, Principal};
use super::{ApiError, ApiResult, JsonBody};
use crate::security::{Permission, Role};
use crate::server::Shared;

/// The cookie that names a session; under TLS with the `__Host-` prefix, so that no other
/// host of the domain can set it.
pub(crate) const COOKIE: &str = "sluice_session";
const HOST_COOKIE: &str = "__Host-sluice_session";
/// Sessions of one token at once; past it, the token's oldest goes (one token cannot push
/// everyone else's sessions out).
const PER_TOKEN: usize = 16;
/// The header that carries a session's CSRF token.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts from its login.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; past it, the oldest goes.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    token: String,
    csrf: String,
    started: Instant,
}

/// The live sessions, by the SHA-256 of their ids.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: Mutex<HashMap<[u8; 32], Session>>,
}

fn random() -> String {
    let bytes = crate::security::random::<32>().expect("the system's randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn key(id: &str) -> [u8; 32] {
    sha2::Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `token`: its id and CSRF token.
    fn open(&self, token: String) -> (String, String) {
        let (id, csrf) = (random(), random());
        let mut map = self.map();
        let now = Instant::now();
        map.retain(|_, s| now.duration_since(s.started) < LIFETIME);
        let mine: Vec<([u8; 32], Instant)> =
            map.iter().filter(|(_, s)| s.token == token).map(|(k, s)| (*k, s.started)).collect();
        if mine.len() >= PER_TOKEN
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, at)| *at)
        {
            map.remove(oldest);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(key(&id), Session { token, csrf: csrf.clone(), started: now });
        (id, csrf)
    }

    /// The token and CSRF token of a live session.
    fn get(&self, id: &str) -> Option<(String, String)> {
        let mut map = self.map();
        let k = key(id);
        let s = map.get(&k)?;
        if s.started.elapsed() >= LIFETIME {
            map.remove(&k);
            return None;
        }
        Some((s.token.clone(), s.csrf.clone()))
    }

    fn close(&self, id: &str) {
        self.map().remove(&key(id));
    }
}

/// The session id in a request's cookies: only under the name this server sets
/// ([`cookie_name`]), so that under TLS a plain `sluice_session` (which a sibling host could
/// set) never stands in for the `__Host-` one.
pub(crate) fn session_id<'a>(shared: &Shared, headers: &'a HeaderMap) -> Option<&'a str> {
    cookie(headers, cookie_name(shared))
}

/// The session cookie's name: `__Host-` prefixed under TLS.
fn cookie_name(shared: &Shared) -> &'static str {
    if shared.opts.tls.is_some() { HOST_COOKIE } else { COOKIE }
}

/// The value of cookie `name` in a request's cookies.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Who a live session stands for, its token checked again now, and its CSRF token; `None`
/// when the session or its token has ended (the session is then closed).
pub(crate) fn principal(
    shared: &Shared,
    id: &str,
) -> Result<Option<(Principal, String)>, crate::store::StoreError> {
    let Some((token, csrf)) = shared.sessions.get(id) else { return Ok(None) };
    match shared.engine.store().authenticate(&token, shared.engine.now_ms())? {
        Ok(r) => Ok(Some((Principal { name: r.name, role: r.role, signed: false, scope: None }, csrf))),
        Err(_) => {
            // Revoked or expired since the login: the session ends with it.
            shared.sessions.close(id);
            Ok(None)
        }
    }
}

/// Who a session cookie stands for, its token checked again now; for a request that changes
/// something, its CSRF token too.
pub(crate) fn authenticate(shared: &Shared, req: &Request, id: &str) -> Result<Principal, Box<Response>> {
    let expired = || {
        Box::new(
            ApiError::new(StatusCode::UNAUTHORIZED, "session_expired", "the session has ended; log in again")
                .into_response(),
        )
    };
    let (principal, csrf) = match principal(shared, id) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(expired()),
        Err(e) => {
            return Err(Box::new(ApiError::internal(format!("cannot read the tokens: {e}")).into_response()));
        }
    };
    let safe = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if !safe {
        let sent = req.headers().get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(sent, csrf.as_bytes())) {
            return Err(Box::new(
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "this request needs the session's CSRF token in `X-CSRF-Token` (from /ui/session)",
                )
                .into_response(),
            ));
        }
    }
    Ok(principal)
}

fn set_cookie(shared: &Shared, value: &str, max_age: u64) -> HeaderValue {
    let (name, secure) = (cookie_name(shared), if shared.opts.tls.is_some() { "; Secure" } else { "" });
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("a cookie of URL-safe characters")
}

/// What the page needs to know of whom it shows: the name, the role, what it may do, and the
/// CSRF token for its requests.
fn whoami(name: &str, role: Role, csrf: &str) -> serde_json::Value {
    let may: Vec<&str> = Permission::ALL.iter().filter(|p| role.allows(**p)).map(|p| p.as_str()).collect();
    json!({ "v": 1, "name": name, "role": role, "permissions": may, "csrf": csrf })
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    /// A token (`sluice token create`); kept in the server's memory for the session only.
    token: String,
}

/// `POST /ui/login {token}`: opens a session. A wrong token counts against the client's
/// address as any failed authentication does.
pub(super) async fn login(
    State(shared): State<Arc<Shared>>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Login>,
) -> ApiResult<Response> {
    // A new login ends the browser's session before it (no session id is taken over).
    if let Some(old) = session_id(&shared, &headers) {
        shared.sessions.close(old);
    }
    let client = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.0.0);
    let now = Instant::now();
    if shared.auth_failures.blocked(client, now).is_some() {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            "too many failed authentications from this address; try again in a minute",
        ));
    }
    let token = body.token.trim().to_string();
    let record = match shared.engine.store().authenticate(&token, shared.engine.now_ms()) {
        Ok(Ok(r)) => r,
        Ok(Err(refusal)) => {
            shared.auth_failures.failed(client, now);
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", refusal.as_str()));
        }
        Err(e) => return Err(ApiError::internal(format!("cannot read the tokens: {e}"))),
    };
    // The UI reads before it does anything: a token that may not read (an `events` token,
    // for webhooks) opens no browser session, which could not even log out.
    if !record.role.allows(crate::security::Permission::Read) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "a `{}` token cannot open a session in the web UI; use a viewer token or above",
                record.role.as_str()
            ),
        ));
    }
    let (id, csrf) = shared.sessions.open(token);
    let s = shared.clone();
    let name = record.name.clone();
    let audited = super::runs::blocking(move || {
        let action = crate::security::audit::Action::new(format!("token:{name}"), "session.login", "ui");
        s.engine.audit(action)?;
        Ok(s.engine.store().flush()?)
    })
    .await;
    if let Err(e) = audited {
        shared.sessions.close(&id);
        return Err(e);
    }
    let mut resp = Json(whoami(&record.name, record.role, &csrf)).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, set_cookie(&shared, &id, LIFETIME.as_secs()));
    Ok(resp)
}

/// `POST /ui/logout`: ends the session (the gate has checked its CSRF token, as for any
/// change), audited.
pub(super) async fn logout(
    State(shared): State<Arc<Shared>>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(id) = session_id(&shared, &headers) {
        shared.sessions.close(id);
    }
    let s = shared.clone();
    super::runs::blocking(move || {
        s.engine.audit(crate::security::audit::Action::new(who.actor(), "session.logout", "ui"))?;
        Ok(s.engine.store().flush()?)
    })
    .await?;
    let mut resp = Json(json!({ "v": 1, "logged_out": true })).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, set_cookie(&shared, "", 0));
    Ok(resp)
}

/// `GET /ui/session`: who the session is, or `{"name": null}` without one (the page asks
/// before it knows whether to show the login form, and a 401 would be an error in the
/// browser's console).
pub(super) async fn current(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let Some(id) = session_id(&shared, req.headers()) else {
        return Json(json!({ "v": 1, "name": null })).into_response();
    };
    // One lookup gives who it is and its CSRF token (a GET needs no CSRF check).
    match principal(&shared, id) {
        Ok(Some((who, csrf))) => Json(whoami(&who.name, who.role, &csrf)).into_response(),
        _ => Json(json!({ "v": 1, "name": null })).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_found_by_their_id_only_and_closed_for_good() {
        let s = Sessions::default();
        let (id, csrf) = s.open("sluice_secret".into());
        assert_ne!(id, csrf);
        assert_eq!(id.len(), 43, "256 random bits");
        assert_eq!(s.get(&id), Some(("sluice_secret".to_string(), csrf)));
        assert_eq!(s.get("someone-elses"), None);
        s.close(&id);
        assert_eq!(s.get(&id), None);
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; sluice_session=abc; b=2"));
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("sluice_session="));
        assert_eq!(cookie(&h, COOKIE), None);
    }
}
