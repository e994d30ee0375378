//! JSON request bodies. A body is received under its route's limit: in memory up to
//! [`IN_MEMORY_BYTES`], then spooled to an unnamed file in the data directory, so that a
//! body on its way in (or refused at its limit) holds at most that much memory however
//! large it is or however slowly it comes; its nesting is checked as it arrives (400 past
//! [`MAX_JSON_DEPTH`], without reading on). A whole body is parsed once, from its bytes;
//! after a spooled one, the heap's free memory is given back to the system.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::{BodyLimits, UploadWatch, limited};
use crate::api::error::{ApiError, ApiResult};

/// The deepest nesting of arrays and objects a JSON request body may have.
pub const MAX_JSON_DEPTH: usize = 32;

/// A body up to this size is kept in memory while it arrives; a larger one (declared or
/// streamed) goes to a file.
pub const IN_MEMORY_BYTES: usize = 256 << 10;

/// The nesting depth of a JSON text, fed as it arrives. Serde_json's own recursion limit
/// is 128 and its error does not say what the limit is.
#[derive(Debug, Default)]
struct Depth {
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Depth {
    fn feed(&mut self, bytes: &[u8]) -> ApiResult<()> {
        for &b in bytes {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth > MAX_JSON_DEPTH {
                        return Err(ApiError::bad_request(format!(
                            "JSON nested deeper than {MAX_JSON_DEPTH} levels"
                        )));
                    }
                }
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A body received whole, under its limit.
#[derive(Debug)]
pub enum Received {
    Memory(Vec<u8>),
    /// An unnamed file (gone when closed) holding `len` bytes.
    Spooled {
        file: std::fs::File,
        len: u64,
    },
}

impl Received {
    pub fn is_empty(&self) -> bool {
        match self {
            Received::Memory(b) => b.is_empty(),
            Received::Spooled { len, .. } => *len == 0,
        }
    }

    /// Parses the body (a spooled one on the blocking pool). The guard that comes with
    /// the value gives the memory of a large body back when the request is done with it.
    pub async fn parse<T: DeserializeOwned + Send + 'static>(self) -> ApiResult<(T, BodyMemory)> {
        match self {
            Received::Memory(bytes) => Ok((parse_json(&bytes)?, BodyMemory { large: false })),
            Received::Spooled { file, len } => {
                // Given back whatever the parse makes of it.
                let memory = BodyMemory { large: true };
                let value = tokio::task::spawn_blocking(move || {
                    let bytes = read_spool(file, len)?;
                    parse_json(&bytes)
                })
                .await
                .map_err(|e| ApiError::internal(format!("parse a spooled body: {e}")))??;
                Ok((value, memory))
            }
        }
    }
}

/// Receives a JSON body under `limits` (413 when declared or found too large, 408 when it
/// does not arrive in time, 400 when nested too deep or broken off), spooling it to an
/// unnamed file in `spool_dir` once it is past [`IN_MEMORY_BYTES`].
pub async fn receive(
    body: Body,
    headers: &HeaderMap,
    limits: BodyLimits,
    spool_dir: &Path,
) -> ApiResult<Received> {
    let declared = limits.check_declared(headers)?;
    let watch = UploadWatch::new(limits);
    let mut stream = Box::pin(limited(body, &watch));
    let mut sink = Sink::new(declared, spool_dir);
    let mut depth = Depth::default();
    let result = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| watch.explain(ApiError::bad_request(format!("request body: {e}"))))?;
            depth.feed(&chunk)?;
            sink.push(chunk).await?;
        }
        sink.finish()
    }
    .await;
    if result.is_err() && sink.spooled {
        // What the refused body made the service allocate (its connection's buffers).
        drop(BodyMemory { large: true });
    }
    result
}

/// Receives and parses a JSON body: [`receive`], then [`Received::parse`].
pub async fn read_json<T: DeserializeOwned + Send + 'static>(
    body: Body,
    headers: &HeaderMap,
    limits: BodyLimits,
    spool_dir: &Path,
) -> ApiResult<(T, BodyMemory)> {
    receive(body, headers, limits, spool_dir)
        .await?
        .parse()
        .await
}

/// Where a body goes as it arrives: memory, then a file.
struct Sink {
    memory: Vec<u8>,
    file: Option<std::fs::File>,
    len: u64,
    dir: PathBuf,
    spooled: bool,
}

impl Sink {
    fn new(declared: Option<u64>, dir: &Path) -> Self {
        let mut sink = Sink {
            memory: Vec::new(),
            file: None,
            len: 0,
            dir: dir.to_path_buf(),
            spooled: false,
        };
        match declared {
            Some(n) if n > IN_MEMORY_BYTES as u64 => sink.spooled = true,
            // Bounded by the check above.
            Some(n) => sink.memory.reserve_exact(n as usize),
            None => {}
        }
        sink
    }

    async fn push(&mut self, chunk: Bytes) -> ApiResult<()> {
        self.len += chunk.len() as u64;
        if !self.spooled && self.memory.len() + chunk.len() <= IN_MEMORY_BYTES {
            self.memory.extend_from_slice(&chunk);
            return Ok(());
        }
        self.spooled = true;
        let file = self.file.take();
        let dir = self.dir.clone();
        let earlier = std::mem::take(&mut self.memory);
        let file = tokio::task::spawn_blocking(move || -> ApiResult<std::fs::File> {
            let mut file = match file {
                Some(f) => f,
                None => spool_file(&dir)?,
            };
            let failed = |e: std::io::Error| {
                ApiError::internal(format!("spool a request body to {}: {e}", dir.display()))
            };
            file.write_all(&earlier).map_err(failed)?;
            file.write_all(&chunk).map_err(failed)?;
            Ok(file)
        })
        .await
        .map_err(|e| ApiError::internal(format!("spool a request body: {e}")))??;
        self.file = Some(file);
        Ok(())
    }

    fn finish(&mut self) -> ApiResult<Received> {
        match self.file.take() {
            Some(file) => Ok(Received::Spooled {
                file,
                len: self.len,
            }),
            // Declared large but short, or empty: nothing was spooled.
            None => Ok(Received::Memory(std::mem::take(&mut self.memory))),
        }
    }
}

/// An unnamed file in `dir` (`O_TMPFILE`: nothing is left behind, whatever happens),
/// or, where the filesystem cannot make one, a named one removed at once.
fn spool_file(dir: &Path) -> ApiResult<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| {
        ApiError::internal(format!(
            "create a file for a request body in {}: {e}",
            dir.display()
        ))
    };
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match unnamed {
        Ok(f) => Ok(f),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
            let path = dir.join(format!(".body-{}", uuid::Uuid::new_v4()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(failed)?;
            std::fs::remove_file(&path).map_err(failed)?;
            Ok(f)
        }
        Err(e) => Err(failed(e)),
    }
}

/// The `len` bytes of a spooled body, in one allocation of that size.
fn read_spool(mut file: std::fs::File, len: u64) -> ApiResult<Vec<u8>> {
    let failed = |e: std::io::Error| ApiError::internal(format!("read a spooled body: {e}"));
    let len = usize::try_from(len).map_err(|e| ApiError::internal(e.to_string()))?;
    file.rewind().map_err(failed)?;
    let mut bytes = Vec::with_capacity(len);
    file.take(len as u64)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    Ok(bytes)
}

/// Parses JSON with an error that names the field (`process.args: invalid type ...`),
/// refusing documents nested deeper than [`MAX_JSON_DEPTH`].
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    Depth::default().feed(body)?;
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("malformed JSON: {inner}"))
        } else {
            ApiError::bad_request(format!("{path}: {inner}"))
        }
    })
}

/// Held while a request works with what its body became; when the body was large (it
/// was spooled), dropping it gives the heap's free memory back to the system. glibc
/// keeps what a large request freed for later (its arenas only shrink from the top):
/// without this, a service that once parsed a few large bodies stays that large.
#[derive(Debug)]
pub struct BodyMemory {
    large: bool,
}

impl Drop for BodyMemory {
    fn drop(&mut self) {
        if self.large {
            trim_heap();
        }
    }
}

/// One trim at a time: the requests that end while one is pending share it.
static TRIM_PENDING: AtomicBool = AtomicBool::new(false);

/// `malloc_trim(0)` on the blocking pool (it walks every arena and can take a few ms).
fn trim_heap() {
    if TRIM_PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    let trim = || {
        TRIM_PENDING.store(false, Ordering::Release);
        // SAFETY: malloc_trim only returns free pages of glibc's heaps to the kernel,
        // under the arenas' own locks; it touches no memory that is in use.
        unsafe { libc::malloc_trim(0) };
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(trim)),
        Err(_) => trim(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::header;

    use super::*;
    use crate::api::error::Kind;

    fn limits(max_bytes: u64) -> BodyLimits {
        BodyLimits {
            max_bytes,
            what: "test",
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn json_depth() {
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        Depth::default().feed(ok.as_bytes()).unwrap();
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        let e = Depth::default().feed(deep.as_bytes()).unwrap_err();
        assert!(e.detail.contains("deeper than 32"), "{}", e.detail);
        // Brackets inside strings (escaped quotes too) do not count.
        let s = format!("{{\"a\": \"\\\"{}\"}}", "[".repeat(100));
        Depth::default().feed(s.as_bytes()).unwrap();
        // Fed in pieces (split inside a string, after a backslash), the same.
        let mut d = Depth::default();
        for piece in s.as_bytes().chunks(3) {
            d.feed(piece).unwrap();
        }
        let mut d = Depth::default();
        let e = deep.as_bytes().chunks(5).try_for_each(|p| d.feed(p));
        assert!(e.is_err());
    }

    fn chunked(parts: Vec<Vec<u8>>) -> Body {
        let stream = futures_util::stream::iter(
            parts
                .into_iter()
                .map(|p| Ok::<_, std::io::Error>(Bytes::from(p))),
        );
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn receive_limits() {
        let dir = tempfile::tempdir().unwrap();
        let h = HeaderMap::new();
        let r = receive(Body::from("0123456789"), &h, limits(10), dir.path())
            .await
            .unwrap();
        assert!(matches!(&r, Received::Memory(b) if b == b"0123456789"));
        let e = receive(Body::from("0123456789a"), &h, limits(10), dir.path())
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::PayloadTooLarge);
        assert!(
            e.detail.contains("10 bytes, the limit of test"),
            "{}",
            e.detail
        );
        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, "11".parse().unwrap());
        let e = receive(Body::empty(), &declared, limits(10), dir.path())
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::PayloadTooLarge);
        // Too deep: refused as it arrives, the rest unread.
        let mut parts = vec![b"[".repeat(40)];
        parts.push(b"]".repeat(40));
        let e = receive(chunked(parts), &h, limits(1000), dir.path())
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::BadRequest);
    }

    #[tokio::test]
    async fn large_bodies_are_spooled_and_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let text = "x".repeat(3 * IN_MEMORY_BYTES);
        let json = serde_json::to_vec(&serde_json::json!({ "a": text })).unwrap();
        let parts: Vec<Vec<u8>> = json.chunks(64 << 10).map(<[u8]>::to_vec).collect();
        let r = receive(
            chunked(parts),
            &HeaderMap::new(),
            limits(json.len() as u64),
            dir.path(),
        )
        .await
        .unwrap();
        assert!(matches!(&r, Received::Spooled { len, .. } if *len == json.len() as u64));
        // Nothing is left in the spool directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let (v, memory): (serde_json::Value, BodyMemory) = r.parse().await.unwrap();
        assert_eq!(v["a"].as_str().map(str::len), Some(text.len()));
        assert!(memory.large);
        // One byte more, streamed: 413 once the count passes the limit.
        let mut parts: Vec<Vec<u8>> = json.chunks(64 << 10).map(<[u8]>::to_vec).collect();
        parts.push(b" ".to_vec());
        let e = receive(
            chunked(parts),
            &HeaderMap::new(),
            limits(json.len() as u64),
            dir.path(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind, Kind::PayloadTooLarge);
        // A declared large body goes to a file from its first byte; a broken one is a
        // 400 saying where it broke.
        let mut declared = HeaderMap::new();
        declared.insert(
            header::CONTENT_LENGTH,
            json.len().to_string().parse().unwrap(),
        );
        let mut broken = json.clone();
        broken[1] = b'!';
        let r = receive(
            Body::from(broken),
            &declared,
            limits(json.len() as u64),
            dir.path(),
        )
        .await
        .unwrap();
        assert!(matches!(r, Received::Spooled { .. }));
        let e = r.parse::<serde_json::Value>().await.unwrap_err();
        assert_eq!(e.kind, Kind::BadRequest);
        assert!(e.detail.contains("line 1 column 2"), "{}", e.detail);
    }

    #[tokio::test]
    async fn receive_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let l = BodyLimits {
            timeout: Duration::from_millis(50),
            ..limits(10)
        };
        let stalled = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let e = receive(Body::from_stream(stalled), &HeaderMap::new(), l, dir.path())
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::Timeout);
    }
}
