//! Request bodies under the limit of their route ([`limits`]): 413 whether the client
//! sent a `Content-Length` (at once, before anything is read) or streamed the body
//! chunked (as soon as the running count passes the limit), whole within
//! `body_timeout_secs` (408, for clients that trickle). JSON bodies ([`json`]) are kept
//! in memory only while small and spooled to disk beyond that; uploads stream to their
//! extractor.

pub mod json;
pub mod limits;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::time::Instant;

use super::error::ApiError;
pub use json::{read_json, receive};
pub use limits::BodyLimits;

/// How a body stream was cut off, if it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Cut {
    None = 0,
    TooLarge = 1,
    TimedOut = 2,
}

/// Why a body's stream was cut off (shared with a reader on the blocking pool).
#[derive(Debug, Clone)]
pub struct UploadWatch {
    limits: BodyLimits,
    cut: Arc<AtomicU8>,
}

impl UploadWatch {
    fn new(limits: BodyLimits) -> Self {
        UploadWatch {
            limits,
            cut: Arc::new(AtomicU8::new(Cut::None as u8)),
        }
    }

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
/// deadline has passed (and recording which in the watch). Nothing is buffered here: a
/// chunk is counted before it is handed on.
fn limited(
    body: Body,
    watch: &UploadWatch,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static + use<> {
    let limits = watch.limits;
    let cut = watch.cut.clone();
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

/// A blocking reader over a streamed body under the limits, for extraction on the
/// blocking pool, with the watch that tells afterwards whether it was cut off.
pub fn upload_reader(
    body: Body,
    headers: &HeaderMap,
    limits: BodyLimits,
) -> Result<(impl std::io::Read + Send + 'static, UploadWatch), ApiError> {
    limits.check_declared(headers)?;
    let watch = UploadWatch::new(limits);
    let stream = limited(body, &watch);
    let reader =
        tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(Box::pin(stream)));
    Ok((reader, watch))
}

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
