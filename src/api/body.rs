//! Request bodies under the service's limits: at most `max_body_bytes` (413, whether the
//! client sent a `Content-Length` or streamed the body chunked), whole within
//! `body_timeout_secs` (408, for clients that trickle), and JSON no deeper than
//! [`MAX_JSON_DEPTH`] (400).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::time::Instant;

use super::error::{ApiError, ApiResult, Kind};

/// The deepest nesting of arrays and objects a JSON request body may have.
pub const MAX_JSON_DEPTH: usize = 32;

/// How a body stream was cut off, if it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Cut {
    None = 0,
    TooLarge = 1,
    TimedOut = 2,
}

/// The limits one body is read under.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: u64,
    pub timeout: Duration,
}

impl BodyLimits {
    pub fn of(cfg: &crate::service::config::Config) -> Self {
        BodyLimits {
            max_bytes: cfg.limits.max_body_bytes,
            timeout: Duration::from_secs(cfg.limits.body_timeout_secs),
        }
    }

    fn too_large(&self) -> ApiError {
        ApiError::new(
            Kind::PayloadTooLarge,
            format!("request body larger than {} bytes", self.max_bytes),
        )
    }

    fn timed_out(&self) -> ApiError {
        ApiError::new(
            Kind::Timeout,
            format!(
                "request body not received within {}s",
                self.timeout.as_secs()
            ),
        )
    }

    /// 413 at once when the declared `Content-Length` is over the limit.
    pub fn check_declared(&self, headers: &HeaderMap) -> ApiResult<()> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(n) if n > self.max_bytes => Err(self.too_large()),
            _ => Ok(()),
        }
    }
}

/// Why an upload's stream was cut off (shared with the reader on the blocking pool).
#[derive(Debug, Clone)]
pub struct UploadWatch {
    limits: BodyLimits,
    cut: Arc<AtomicU8>,
}

impl UploadWatch {
    /// The problem to answer with when the body was cut off (413 or 408), whatever error
    /// the consumer of the stream made of it.
    pub fn problem(&self) -> Option<ApiError> {
        match self.cut.load(Ordering::Acquire) {
            x if x == Cut::TooLarge as u8 => Some(self.limits.too_large()),
            x if x == Cut::TimedOut as u8 => Some(self.limits.timed_out()),
            _ => None,
        }
    }

    /// `err`, unless the body was cut off: then 413 or 408.
    pub fn explain(&self, err: ApiError) -> ApiError {
        self.problem().unwrap_or(err)
    }
}

/// The body's chunks, ending with an error once more than `max_bytes` have come or the
/// deadline has passed (and recording which in `cut`).
fn limited(
    body: Body,
    limits: BodyLimits,
    cut: Arc<AtomicU8>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let deadline = Instant::now() + limits.timeout;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    futures_util::stream::unfold(
        (Box::pin(stream), 0u64, false),
        move |(mut stream, seen, done)| {
            let cut = cut.clone();
            async move {
                if done {
                    return None;
                }
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Err(_) => {
                        cut.store(Cut::TimedOut as u8, Ordering::Release);
                        let e = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "request body timed out",
                        );
                        Some((Err(e), (stream, seen, true)))
                    }
                    Ok(None) => None,
                    Ok(Some(Err(e))) => Some((Err(e), (stream, seen, true))),
                    Ok(Some(Ok(chunk))) => {
                        let seen = seen + chunk.len() as u64;
                        if seen > limits.max_bytes {
                            cut.store(Cut::TooLarge as u8, Ordering::Release);
                            return Some((
                                Err(std::io::Error::other("request body too large")),
                                (stream, seen, true),
                            ));
                        }
                        Some((Ok(chunk), (stream, seen, false)))
                    }
                }
            }
        },
    )
}

/// Reads a whole body (for JSON) under the limits: 413 when too large, 408 when it does
/// not arrive in time, 400 when the client broke off.
pub async fn read_all(body: Body, headers: &HeaderMap, limits: BodyLimits) -> ApiResult<Bytes> {
    limits.check_declared(headers)?;
    let cut = Arc::new(AtomicU8::new(Cut::None as u8));
    let mut stream = Box::pin(limited(body, limits, cut.clone()));
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => {
                let watch = UploadWatch { limits, cut };
                return Err(watch.explain(ApiError::bad_request(format!("request body: {e}"))));
            }
        }
    }
    Ok(Bytes::from(out))
}

/// A blocking reader over a streamed body under the limits, for extraction on the
/// blocking pool, with the watch that tells afterwards whether it was cut off.
pub fn upload_reader(
    body: Body,
    headers: &HeaderMap,
    limits: BodyLimits,
) -> ApiResult<(impl std::io::Read + Send + 'static, UploadWatch)> {
    limits.check_declared(headers)?;
    let cut = Arc::new(AtomicU8::new(Cut::None as u8));
    let stream = limited(body, limits, cut.clone());
    let reader =
        tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(Box::pin(stream)));
    Ok((reader, UploadWatch { limits, cut }))
}

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`] before it is parsed (serde_json's
/// own recursion limit is 128 and its error does not say what the limit is).
/// The request's media type: `Content-Type` without parameters, lower case (empty when
/// missing).
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub fn check_json_depth(body: &[u8]) -> ApiResult<()> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ApiError::bad_request(format!(
                        "JSON nested deeper than {MAX_JSON_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth() {
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        check_json_depth(ok.as_bytes()).unwrap();
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        let e = check_json_depth(deep.as_bytes()).unwrap_err();
        assert!(e.detail.contains("deeper than 32"), "{}", e.detail);
        // Brackets inside strings (escaped quotes too) do not count.
        let s = format!("{{\"a\": \"\\\"{}\"}}", "[".repeat(100));
        check_json_depth(s.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn read_all_limits() {
        let limits = BodyLimits {
            max_bytes: 10,
            timeout: Duration::from_secs(5),
        };
        let h = HeaderMap::new();
        let b = read_all(Body::from("0123456789"), &h, limits)
            .await
            .unwrap();
        assert_eq!(&b[..], b"0123456789");
        let e = read_all(Body::from("0123456789a"), &h, limits)
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::PayloadTooLarge);
        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, "11".parse().unwrap());
        let e = read_all(Body::empty(), &declared, limits)
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::PayloadTooLarge);
    }

    #[tokio::test]
    async fn read_all_times_out() {
        let limits = BodyLimits {
            max_bytes: 10,
            timeout: Duration::from_millis(50),
        };
        let stalled = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let e = read_all(Body::from_stream(stalled), &HeaderMap::new(), limits)
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::Timeout);
    }
}
