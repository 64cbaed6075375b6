//! The HTTP edge every service shares: binding, middleware, fallbacks,
//! path extraction with problem+json rejections, the client's address
//! (`client`), and serving until shutdown.

mod client;
mod edge;

pub use client::{Cidr, ClientIp, TrustedProxies, X_FORWARDED_FOR};
pub use edge::{is_acceptable_request_id, NO_STORE, PRIVATE, PUBLIC_5_MIN};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use uuid::Uuid;

use crate::json::BODY_LIMIT;
use crate::problem::Problem;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The correlation id events of this request carry: the request id
/// (`x-request-id`) when it is a UUID, else a fresh UUID v7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrelationId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| Uuid::try_parse(s.trim()).ok())
            .unwrap_or_else(Uuid::now_v7);
        Ok(CorrelationId(id))
    }
}

/// Binds a listener; a taken port is an error that names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Adds the shared middleware and problem+json fallbacks to a service's router.
pub fn finish(router: Router) -> Router {
    // Install the recorder before the first request is counted.
    crate::metrics::handle();
    router
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this route does not accept that method",
            )
        })
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("request handler panicked");
            Problem::internal().into_response()
        }))
        .layer(axum::middleware::from_fn(edge::default_cache_control))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(axum::middleware::from_fn(edge::log_request))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let request_id = req
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), uri = %req.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::from_fn(edge::drop_malformed_request_id))
}

/// Serves until `shutdown` is cancelled, then drains in-flight requests,
/// with the default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, Limits::default()).await
}

/// Serves with explicit connection limits, HTTP/1.1 only (the services sit
/// behind a proxy; HTTP/2's preface and frames would escape the head
/// timeout). Each connection gets hyper's header-read timeout (a request
/// head, or the first byte of the next one on a kept-alive connection, must
/// arrive within it) and an idle timeout (no byte either way for that long
/// closes it). Connections beyond `max_connections`, or beyond
/// `max_connections_per_ip` from one address, are closed at once, so a
/// flood of slow clients is refused rather than left hanging, and one
/// client cannot take every slot. On shutdown the listener closes and open
/// connections finish their requests, bounded by `drain`. The limits
/// reach every request as an `Extension` ([`ClientIp`] and the JSON body
/// reader use them); the per-address cap spares `limits.trusted_proxies`.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::{Service, ServiceExt};

    let drain = Duration::from_secs(20);
    let router = router.layer(axum::Extension(limits.clone()));
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors or a connection reset before
                    // accept: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total", "why" => "total").increment(1);
            drop(stream);
            continue;
        };
        // A trusted proxy carries many clients' connections: only the
        // global cap applies to it.
        let peer_ip = peer.ip().to_canonical();
        let ip_slot = if limits.trusted_proxies.contains(peer_ip) {
            None
        } else {
            let Some(slot) = per_ip.clone().take(peer_ip, limits.max_connections_per_ip) else {
                metrics::counter!("http_connections_refused_total", "why" => "per_ip").increment(1);
                drop(stream);
                continue;
            };
            Some(slot)
        };
        let _ = stream.set_nodelay(true);
        let tower_service = match make_service.call(peer).await {
            Ok(s) => s,
            Err(never) => match never {},
        };
        let hyper_service =
            hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                tower_service
                    .clone()
                    .oneshot(req.map(axum::body::Body::new))
            });
        let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
        let conn = builder.serve_connection(io, hyper_service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout, bad framing).
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(ip_slot);
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => {
            tracing::warn!("in-flight requests did not finish within {drain:?}; stopping anyway");
        }
    }
    Ok(())
}

/// Open connections per client address. An entry exists only while its
/// address has a connection open, so the map never holds more entries than
/// there are open connections (bounded by `max_connections`).
#[derive(Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection's claim on its address's count, released on drop.
struct IpSlot {
    ip: std::net::IpAddr,
    owner: Arc<PerIp>,
}

impl PerIp {
    fn take(self: Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        drop(open);
        Some(IpSlot { ip, owner: self })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.owner.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Connection and request limits every service applies at its edge, and
/// the proxies it trusts, read from `{PREFIX}_HTTP_*` and
/// `{PREFIX}_TRUSTED_PROXIES` (see `config::Settings`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// The whole request head must arrive within this (`*_HTTP_HEADER_READ_TIMEOUT_MS`).
    pub header_read_timeout: Duration,
    /// The whole body must arrive within this once a handler reads it
    /// (`*_HTTP_BODY_READ_TIMEOUT_MS`); beyond it: 408.
    pub body_read_timeout: Duration,
    /// A connection with no byte moving either way for this long is closed
    /// (`*_HTTP_IDLE_TIMEOUT_MS`): idle keep-alive and stalled transfers.
    pub idle_timeout: Duration,
    /// Open connections per process (`*_HTTP_MAX_CONNECTIONS`); more are
    /// closed on accept.
    pub max_connections: usize,
    /// Open connections from one client address
    /// (`*_HTTP_MAX_CONNECTIONS_PER_IP`); more are closed on accept. It
    /// does not apply to `trusted_proxies`, which carry many clients'
    /// connections (limit per client at the proxy).
    pub max_connections_per_ip: usize,
    /// The proxies (the gateway) whose `X-Forwarded-For` names the client
    /// (`*_TRUSTED_PROXIES`, default none): see [`ClientIp`].
    pub trusted_proxies: TrustedProxies,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_ip: 128,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// A stream that fails with `TimedOut` once no byte has moved either way
/// for `timeout`; hyper then closes the connection.
struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn touch(&mut self) {
        self.deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + self.timeout);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    /// Bytes written count as activity; a write still pending past the
    /// deadline fails the connection.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.touch();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }
}

fn idle_error() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle too long")
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Middleware: a declared `Content-Length` above the body limit is a 413
/// before anything reads the body (so no `100 Continue` is sent for it).
async fn refuse_oversized(
    req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>());
    match declared {
        Some(Ok(n)) if n > BODY_LIMIT as u64 => {
            Problem::payload_too_large(BODY_LIMIT).into_response()
        }
        Some(Err(_)) => Problem::bad_request("Content-Length is not a number").into_response(),
        _ => next.run(req).await,
    }
}

/// Path parameters with a problem+json rejection: an id that cannot be
/// parsed names nothing that exists, so it is a 404.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(Problem::not_found(format!(
                "no such resource: {}",
                e.body_text()
            ))),
        }
    }
}
