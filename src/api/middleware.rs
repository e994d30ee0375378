//! Cross-cutting layers: bearer authentication, request spans, concurrency limit, and
//! problem documents for errors raised outside the handlers (413, 408, 405).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, Kind};

/// Checks the bearer token (constant time, never logged) and records the caller's
/// identity for the handlers.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.tokens.authenticate(header) {
        Ok(identity) => {
            tracing::Span::current().record("caller", identity.name.as_str());
            req.extensions_mut().insert(identity);
            next.run(req).await
        }
        Err(e) => {
            let mut err = ApiError::new(Kind::Unauthorized, e.to_string());
            err.headers
                .push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            err.into_response()
        }
    }
}

/// The tracing span of a request: method, path and request id (never headers: they
/// carry the token).
pub fn span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id, caller = tracing::field::Empty)
}

/// At most `max_concurrent_requests` requests are handled at once; the others are
/// refused at once with 429 and `Retry-After` rather than queued without bound.
pub async fn limit_concurrency(
    State(sem): State<Arc<tokio::sync::Semaphore>>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = sem.try_acquire() else {
        let mut err = ApiError::new(
            Kind::TooManyRequests,
            "too many requests in flight; retry shortly",
        );
        err.headers
            .push((header::RETRY_AFTER, HeaderValue::from_static("1")));
        return err.into_response();
    };
    next.run(req).await
}

/// The longest a `POST /v1/runs` may take beyond `request_timeout_secs`.
pub const MAX_RUN_SECS: u64 = 3600;

/// The whole-request time limit (408): `request_timeout_secs`, plus the longest
/// `?timeout=` of a wait, plus `body_timeout_secs` for an upload (its body must arrive
/// first). The handlers keep the finer limits (body, create, wait) themselves.
pub async fn time_limit(
    State(limits): State<Arc<crate::service::config::Limits>>,
    req: Request,
    next: Next,
) -> Response {
    let mut secs = limits.request_timeout_secs;
    if req.uri().path().ends_with("/wait") {
        secs += super::containers::MAX_WAIT_SECS;
    }
    // A judged run takes as long as its steps (bounded by their wall-time limits, and
    // the run cleans up after itself if its client is gone).
    if req.uri().path() == "/v1/runs" {
        secs += MAX_RUN_SECS;
    }
    let upload = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("tar") || v.contains("gzip"));
    if upload {
        secs += limits.body_timeout_secs;
    }
    match tokio::time::timeout(std::time::Duration::from_secs(secs), next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            Kind::Timeout,
            format!("the request was not handled within {secs}s"),
        )
        .into_response(),
    }
}

/// Responses produced by layers and extractors (body too large, timeout, method not
/// allowed, bad JSON) become problem documents too.
pub async fn problem_for_plain_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => Kind::PayloadTooLarge,
        StatusCode::REQUEST_TIMEOUT => Kind::Timeout,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Kind::UnsupportedMediaType,
        StatusCode::NOT_FOUND => Kind::NotFound,
        StatusCode::UNAUTHORIZED => Kind::Unauthorized,
        StatusCode::SERVICE_UNAVAILABLE => Kind::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => Kind::GatewayTimeout,
        s if s.is_server_error() => Kind::Internal,
        _ => Kind::BadRequest,
    };
    let detail = match axum::body::to_bytes(resp.into_body(), 64 * 1024).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut err = ApiError::new(kind, detail);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        err.detail = "method not allowed on this path".into();
        let mut r = err.into_response();
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return r;
    }
    err.into_response()
}
