//! The HTTP listener: accepts connections under a total and a per-client cap, serves each with
//! hyper's HTTP/1 with a header read timeout, and drains them on shutdown.
//!
//! axum's own `serve` offers none of these limits: 1,100 connections that each sent a byte a
//! second used to hold every request slot. Here a client past its cap has its new connection
//! closed at once, a client that does not finish its headers within the timeout is dropped,
//! and bodies are read (with their own timeout) before a request takes a slot (`api`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Connection limits of the listener.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnLimits {
    /// Open connections in all.
    pub(super) max_connections: usize,
    /// Open connections from one client address.
    pub(super) max_per_client: usize,
    /// How long a client has to send a request's headers (also how long an idle keep-alive
    /// connection stays open).
    pub(super) header_timeout: Duration,
}

/// Open connections, by client address.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// One accepted connection's place in the counts, given back when it closes.
#[derive(Debug)]
struct Slot {
    counts: Arc<Mutex<Counts>>,
    client: IpAddr,
}

impl Slot {
    fn take(counts: &Arc<Mutex<Counts>>, client: IpAddr, limits: &ConnLimits) -> Result<Slot, &'static str> {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= limits.max_connections {
            return Err("the server has as many connections open as it takes");
        }
        let mine = c.by_client.entry(client).or_default();
        if *mine >= limits.max_per_client {
            return Err("this client has as many connections open as one client may");
        }
        *mine += 1;
        c.total += 1;
        Ok(Slot { counts: counts.clone(), client })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                c.by_client.remove(&self.client);
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` changes; then `draining` runs, the listener stays
/// open for `drain_for` (so that `/ready` can answer 503 to whoever checks), closes, and open
/// connections finish their requests.
pub(super) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnLimits,
    drain_for: Duration,
    mut stop: watch::Receiver<u32>,
    draining: impl FnOnce(),
) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let graceful = GracefulShutdown::new();
    let mut refused_logged = std::time::Instant::now() - Duration::from_secs(60);
    let mut until: Option<tokio::time::Instant> = None;
    let mut draining = Some(draining);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed(), if until.is_none() => {
                if let Some(d) = draining.take() {
                    d();
                }
                until = Some(tokio::time::Instant::now() + drain_for);
                continue;
            }
            _ = tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)), if until.is_some() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match Slot::take(&counts, peer.ip(), &limits) {
            Ok(s) => s,
            Err(why) => {
                if refused_logged.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(client = %peer.ip(), "refusing connections: {why}");
                    refused_logged = std::time::Instant::now();
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
        // Each request learns the client's address (for the failed-authentication limit).
        let client = super::api::Peer(peer.ip());
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(client);
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let watcher = graceful.watcher();
        let handshake = limits.header_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            let ended = match tls {
                None => watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await,
                // The handshake has the headers' time limit: a client that opens a
                // connection and says nothing holds its slot no longer either way.
                Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer.ip(), error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::debug!(client = %peer.ip(), "TLS handshake timed out");
                        Ok(())
                    }
                },
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_client_and_in_all_and_given_back() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let limits =
            ConnLimits { max_connections: 3, max_per_client: 2, header_timeout: Duration::from_secs(1) };
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = Slot::take(&counts, a, &limits).unwrap();
        let _a2 = Slot::take(&counts, a, &limits).unwrap();
        assert!(Slot::take(&counts, a, &limits).unwrap_err().contains("one client"));
        let _b1 = Slot::take(&counts, b, &limits).unwrap();
        assert!(
            Slot::take(&counts, b, &limits).unwrap_err().contains("as many connections open as it takes")
        );
        drop(a1);
        assert!(Slot::take(&counts, b, &limits).is_ok());
        assert_eq!(counts.lock().unwrap().total, 3 - 1, "the last slot was dropped at once");
    }
}
