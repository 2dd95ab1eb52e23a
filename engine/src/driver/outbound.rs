//! JSON posted to other services: OpenLineage events, a monitor's alerts to Alertmanager.
//! Plain HTTP through hyper's client, 10 s at most a request.

use std::time::Duration;

/// POSTs `body` (JSON) to `uri`; an answer other than 2xx is an error.
pub(crate) async fn post_json(uri: &hyper::Uri, body: Vec<u8>) -> Result<(), String> {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::post(uri.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| format!("{uri} did not answer within 10 s"))?
        .map_err(|e| format!("cannot POST to {uri}: {e}"))?;
    if resp.status().is_success() { Ok(()) } else { Err(format!("{uri} answered {}", resp.status())) }
}
