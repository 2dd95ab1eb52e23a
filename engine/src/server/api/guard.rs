//! What every request passes before routing: it must come from this server's own origin (no
//! web page elsewhere may drive a server on loopback, and DNS rebinding does not reach it by
//! a foreign name), carry JSON when it carries a body, and deliver its body within the
//! timeout and the size cap before it takes one of the request slots.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::ApiError;
use crate::server::Shared;

/// Refuses requests a browser sent on behalf of another site, requests that name this server
/// by a host it does not answer to, and bodies that are not JSON.
pub(super) async fn same_origin(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Err(e) = check_origin(req.headers(), &shared.opts.allowed_hosts) {
        return e.into_response();
    }
    // An upload to MLflow's artifact proxy carries the file's own type (a cross-site page
    // cannot send a PUT without a CORS preflight, which this server never answers).
    if !super::mlflow::artifacts::is_upload(req.method(), req.uri().path())
        && !inference_call(req.uri().path(), req.headers())
        && let Err(e) = check_content_type(req.method(), req.headers())
    {
        return e.into_response();
    }
    next.run(req).await
}

/// An Open Inference Protocol call with a bearer token: Triton's clients send their binary
/// tensors with no content type at all. A cross-site page cannot add an Authorization
/// header without a CORS preflight (which this server never answers), and `check_origin`
/// refuses other origins, so the content type is not needed to stop forgery here.
fn inference_call(path: &str, headers: &HeaderMap) -> bool {
    path.starts_with("/v2/")
        && headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "))
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "cross_origin", message)
}

/// The host part of a `Host` header value (`[::1]:8377` gives `::1`).
fn host_name(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    value
        .rsplit_once(':')
        .map_or(value, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { value })
}

fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let host = match headers.get(header::HOST).map(|h| h.to_str()) {
        // HTTP/1.0 clients may send none; no browser does.
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => return Err(ApiError::bad_request("the Host header is not text")),
    };
    if let Some(host) = host {
        let name = host_name(host);
        let known = name.parse::<std::net::IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || allowed.iter().any(|a| a.eq_ignore_ascii_case(name));
        if !known {
            return Err(forbidden(format!(
                "this server does not answer to the name `{name}`; use its address, localhost, or a name given to `sluice serve --allow-host`"
            )));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = host.is_some_and(|h| {
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(h)
        });
        if !same {
            return Err(forbidden(format!(
                "requests from the web origin `{origin}` are refused: only this server's own pages may call its API"
            )));
        }
    }
    if headers.get("sec-fetch-site").is_some_and(|v| v == "cross-site") {
        return Err(forbidden("cross-site requests are refused".into()));
    }
    Ok(())
}

/// A request with a body must say it is JSON (a browser's cross-site "simple" requests can
/// only be `text/plain`, form or multipart).
fn check_content_type(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let json = content_type.is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
    });
    if (has_body || content_type.is_some()) && !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be JSON with `Content-Type: application/json`, not `{}`",
                content_type.unwrap_or("nothing")
            ),
        ));
    }
    Ok(())
}

/// Reads the whole body, within the body timeout and the size cap, before the request goes
/// on: a slow sender holds a connection (capped per client), never a request slot.
pub(super) async fn read_whole_body(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || super::mlflow::artifacts::is_upload(req.method(), req.uri().path())
    {
        // An upload is streamed to disk by its handler, under its own limit.
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let limit = shared.opts.body_limit;
    let timeout = shared.opts.body_timeout;
    let read = tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect()).await;
    let bytes = match read {
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the request body did not arrive within {timeout:?}"),
            )
            .into_response();
        }
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than the server's limit of {limit} bytes"),
            )
            .into_response();
        }
        Ok(Err(e)) => {
            return ApiError::bad_request(format!("cannot read the request body: {e}")).into_response();
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origins_and_hosts() {
        let allowed = vec!["sluice.internal".to_string()];
        let ok = |h: &[(&'static str, &str)]| check_origin(&headers(h), &allowed).is_ok();
        assert!(ok(&[("host", "127.0.0.1:8377")]));
        assert!(ok(&[("host", "[::1]:8377")]));
        assert!(ok(&[("host", "localhost:8377"), ("origin", "http://localhost:8377")]));
        assert!(ok(&[("host", "sluice.internal")]));
        assert!(ok(&[]));
        assert!(!ok(&[("host", "evil.example:8377")]), "DNS rebinding: a foreign name");
        assert!(!ok(&[("host", "127.0.0.1:8377"), ("origin", "http://evil.example")]));
        assert!(!ok(&[("host", "127.0.0.1:8377"), ("origin", "null")]));
        assert!(!ok(&[("host", "127.0.0.1:8377"), ("origin", "http://127.0.0.1:9999")]));
        assert!(!ok(&[("host", "127.0.0.1:8377"), ("sec-fetch-site", "cross-site")]));
    }

    #[test]
    fn bodies_must_be_json() {
        let post = Method::POST;
        let ok = |h: &[(&'static str, &str)]| check_content_type(&post, &headers(h)).is_ok();
        assert!(ok(&[("content-type", "application/json"), ("content-length", "2")]));
        assert!(ok(&[("content-type", "application/json; charset=utf-8"), ("content-length", "2")]));
        assert!(ok(&[("content-type", "application/vnd.alert+json"), ("content-length", "2")]));
        assert!(ok(&[("content-length", "0")]), "an empty POST (cancel) needs no type");
        assert!(!ok(&[("content-type", "text/plain"), ("content-length", "2")]));
        assert!(!ok(&[("content-type", "text/plain")]));
        assert!(!ok(&[("content-length", "2")]));
        assert!(!ok(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("transfer-encoding", "chunked")
        ]));
        assert!(check_content_type(&Method::GET, &headers(&[("content-type", "text/plain")])).is_ok());
    }
}
