//! Authentication and authorization of every API request: a bearer token (or, for an event
//! source given a webhook secret, a valid HMAC signature of the body) becomes a
//! [`Principal`] with a role, and the route's declared [`Permission`] (the table in
//! `api::endpoints`) decides. Failed authentications are counted per client address and
//! past a limit answered 429 until the window passes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::security::tokens::AttemptKey;
use crate::security::{Permission, Role, webhook};
use crate::server::Shared;

/// Who asks: the token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub name: String,
    pub role: Role,
    /// A signed webhook's source rather than a token.
    pub signed: bool,
    /// A step attempt's token: the tracking run it stands for. It reaches only MLflow's API,
    /// for what a training step does (`mlflow::scoped_allows`), and writes only to its own
    /// tracking run and the runs it made.
    pub scope: Option<String>,
}

impl Principal {
    /// As the audit log names it.
    pub(crate) fn actor(&self) -> String {
        match self.signed {
            true => format!("webhook:{}", self.name),
            false => format!("token:{}", self.name),
        }
    }
}

/// The connection's client address, set by the listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub IpAddr);

/// The request's id: the client's `X-Request-Id` when it is a sane one, else made here. It
/// goes back in the answer's `X-Request-Id` and into the audit log.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

/// The longest Authorization header looked at; longer ones are refused unread.
const MAX_AUTHORIZATION: usize = 4096;

/// Failed authentications per client address in a window.
#[derive(Debug)]
pub(crate) struct Failures {
    limit: u32,
    window: Duration,
    by_client: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Failures {
    pub(crate) fn new(limit: u32, window: Duration) -> Failures {
        Failures { limit, window, by_client: Mutex::new(HashMap::new()) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.by_client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the client must wait, if it failed too often lately.
    pub(super) fn blocked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.map();
        let (count, since) = map.get(&client)?;
        let left = self.window.checked_sub(now.duration_since(*since))?;
        (*count >= self.limit).then_some(left)
    }

    pub(super) fn failed(&self, client: IpAddr, now: Instant) {
        let mut map = self.map();
        if map.len() >= 10_000 {
            // Many addresses: forget those whose window has passed.
            map.retain(|_, (_, since)| now.duration_since(*since) < self.window);
        }
        let e = map.entry(client).or_insert((0, now));
        if now.duration_since(e.1) >= self.window {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

/// The permission of the route a gate stands before.
#[derive(Clone)]
pub(crate) struct Gate {
    pub shared: Arc<Shared>,
    pub permission: Permission,
    pub path: &'static str,
}

fn unauthorized(code: &'static str, message: impl Into<String>, error: Option<&str>) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"sluice\", error=\"{e}\""),
        None => "Bearer realm=\"sluice\"".to_string(),
    };
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).expect("ascii"));
    r
}

/// Decides whether the request may go on to its handler.
pub(crate) async fn authorize(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let mut resp = decide(&gate, req, next).await;
    resp.extensions_mut().insert(super::Route(gate.path.to_string()));
    resp
}

async fn decide(gate: &Gate, mut req: Request, next: Next) -> Response {
    if gate.permission == Permission::Public {
        return next.run(req).await;
    }
    let shared = &gate.shared;
    let client = req.extensions().get::<Peer>().map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0);
    let now = Instant::now();
    if let Some(wait) = shared.auth_failures.blocked(client, now) {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            format!(
                "too many failed authentications from this address; try again in {} s",
                wait.as_secs() + 1
            ),
        )
        .into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs() + 1));
        return r;
    }
    // The source as the route reads it (percent-decoded), so that `%67ithub` is `github`.
    let signed_source = (gate.permission == Permission::Ingest)
        .then(|| req.uri().path().strip_prefix("/api/v1/events/"))
        .flatten()
        .and_then(|raw| percent_encoding::percent_decode_str(raw).decode_utf8().ok())
        .map(|s| s.into_owned())
        .filter(|source| shared.opts.webhook_keys.requires(source));
    let authenticated = match signed_source {
        Some(source) => {
            let (checked, back) = check_signature(shared, &source, req).await;
            req = back;
            checked
        }
        None => match (
            req.headers().get(header::AUTHORIZATION),
            super::session::session_id(shared, req.headers()),
        ) {
            // The web UI's session (a token given to /ui/login), when no token is sent.
            (None, Some(id)) => match super::session::authenticate(shared, &req, id) {
                Ok(p) => Ok(p),
                // A session that ended is no guess at a token: not counted as a failure.
                Err(r) => return *r,
            },
            (header, _) => authenticate(shared, header),
        },
    };
    let principal = match authenticated {
        Ok(p) => p,
        Err(r) => {
            // A bad signature is not counted against the address: senders such as GitHub
            // share their addresses, and anyone could lock them out with forged deliveries
            // (guessing an HMAC key is hopeless anyway).
            if !r.headers().get(header::WWW_AUTHENTICATE).is_some_and(|v| v.as_bytes().starts_with(b"HMAC")) {
                shared.auth_failures.failed(client, now);
            }
            return *r;
        }
    };
    if principal.scope.is_some() && !super::mlflow::scoped_allows(req.method(), gate.path) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "`{}` is a step attempt's token: it reaches MLflow's tracking and registration calls only (not {} {})",
                principal.name,
                req.method(),
                gate.path
            ),
        )
        .into_response();
    }
    if !principal.role.allows(gate.permission) {
        let roles: Vec<&str> = gate.permission.roles().iter().map(|r| r.as_str()).collect();
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the token `{}` has the role {}, which may not do this (it needs the `{}` permission: {})",
                principal.name,
                principal.role,
                gate.permission.as_str(),
                roles.join(", ")
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// A request to a source that signs: its signature header checked against its body (read
/// whole already, by the guard in front), which is handed back for the handler.
async fn check_signature(
    shared: &Shared,
    source: &str,
    req: Request,
) -> (Result<Principal, Box<Response>>, Request) {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, shared.opts.body_limit).await {
        Ok(b) => b,
        Err(e) => {
            let r = ApiError::bad_request(format!("cannot read the request body: {e}")).into_response();
            return (Err(Box::new(r)), Request::from_parts(parts, axum::body::Body::empty()));
        }
    };
    let header =
        webhook::SIGNATURE_HEADERS.iter().find_map(|h| parts.headers.get(*h)).map(HeaderValue::as_bytes);
    let checked = match shared.opts.webhook_keys.verify(source, header, &bytes) {
        Ok(()) => Ok(Principal { name: source.to_string(), role: Role::Events, signed: true, scope: None }),
        Err(e) => {
            let code = match e {
                webhook::SignatureError::Missing => "unsigned",
                _ => "invalid_signature",
            };
            let mut r = ApiError::new(StatusCode::UNAUTHORIZED, code, e.message(source)).into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("HMAC-SHA256 realm=\"sluice\""));
            Err(Box::new(r))
        }
    };
    (checked, Request::from_parts(parts, axum::body::Body::from(bytes)))
}

fn authenticate(shared: &Shared, header: Option<&HeaderValue>) -> Result<Principal, Box<Response>> {
    let Some(value) = header else {
        return Err(Box::new(unauthorized(
            "unauthenticated",
            "this needs a token: send `Authorization: Bearer <token>` (`sluice token create`; the first admin token is in the data folder's admin.token)",
            None,
        )));
    };
    let invalid = |why: &str| Box::new(unauthorized("invalid_token", why.to_string(), Some("invalid_token")));
    if value.len() > MAX_AUTHORIZATION {
        return Err(invalid("the Authorization header is too long to hold a token"));
    }
    let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim) else {
        return Err(Box::new(unauthorized(
            "invalid_request",
            "the Authorization header must be `Bearer <token>`",
            Some("invalid_request"),
        )));
    };
    if AttemptKey::is_attempt_token(token) {
        return match shared.engine.attempt_token(token) {
            Ok(Some(run)) => Ok(attempt_principal(&run)),
            Ok(None) => {
                Err(invalid("the token is not valid (an attempt's token stands only while its attempt runs)"))
            }
            Err(e) => Err(Box::new(
                ApiError::internal(format!("cannot read the tracking runs: {e}")).into_response(),
            )),
        };
    }
    match shared.engine.store().authenticate(token, shared.engine.now_ms()) {
        Ok(Ok(r)) => Ok(Principal { name: r.name, role: r.role, signed: false, scope: None }),
        Ok(Err(refusal)) => Err(invalid(refusal.as_str())),
        Err(e) => Err(Box::new(ApiError::internal(format!("cannot read the tokens: {e}")).into_response())),
    }
}

/// Whether the credentials of a request still hold (a long stream checks again now and then:
/// a revoked token or an ended session ends it).
pub(crate) fn still_authenticated(shared: &Shared, headers: &axum::http::HeaderMap) -> bool {
    match (headers.get(header::AUTHORIZATION), super::session::session_id(shared, headers)) {
        (None, Some(id)) => matches!(super::session::principal(shared, id), Ok(Some(_))),
        (h, _) => authenticate(shared, h).is_ok(),
    }
}

/// The principal of a step attempt's token: named after its attempt, scoped to its tracking
/// run (an editor within that scope: it may register versions from its own run).
fn attempt_principal(run: &crate::tracking::TrackingRun) -> Principal {
    let name = match &run.task {
        Some(t) => format!("attempt:{}#{}.{}", t.pipeline, t.run, t.step),
        None => format!("attempt:{}", run.id),
    };
    Principal { name, role: Role::Editor, signed: false, scope: Some(run.id.clone()) }
}

/// Gives every request an id, and every answer its `X-Request-Id`.
pub(crate) async fn request_id(mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_string);
    let id = given.unwrap_or_else(|| {
        crate::security::random::<12>().map(|b| crate::security::hex(&b)).unwrap_or_else(|_| "-".into())
    });
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_a_client_for_the_rest_of_its_window_only() {
        let f = Failures::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let t = Instant::now();
        for _ in 0..3 {
            assert!(f.blocked(a, t).is_none());
            f.failed(a, t);
        }
        assert!(f.blocked(a, t + Duration::from_secs(1)).is_some());
        assert!(f.blocked(b, t).is_none(), "another address is not blocked");
        assert!(f.blocked(a, t + Duration::from_secs(61)).is_none(), "the window passed");
    }
}
