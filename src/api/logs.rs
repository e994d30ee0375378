//! Container logs over HTTP: whole, tailed, or followed as they are written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::error::ApiResult;
use crate::service::launcher::{EXIT_FILE, STDERR_LOG, STDOUT_LOG};

/// The log files named by `stream`.
pub fn streams(stream: Option<&str>) -> Result<Vec<&'static str>, String> {
    match stream.unwrap_or("both") {
        "stdout" => Ok(vec![STDOUT_LOG]),
        "stderr" => Ok(vec![STDERR_LOG]),
        "both" => Ok(vec![STDOUT_LOG, STDERR_LOG]),
        other => Err(format!(
            "stream: {other:?}: expected stdout, stderr or both"
        )),
    }
}

pub async fn respond(
    dir: PathBuf,
    files: Vec<&'static str>,
    follow: bool,
    tail: Option<usize>,
) -> ApiResult<Response> {
    let mut start = Vec::new();
    let mut body = Vec::new();
    for f in &files {
        let data = tokio::fs::read(dir.join(f)).await.unwrap_or_default();
        let from = match tail {
            Some(n) => tail_offset(&data, n),
            None => 0,
        };
        body.extend_from_slice(&data[from..]);
        start.push(data.len() as u64);
    }
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !follow {
        return Ok((plain, body).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    tokio::spawn(async move {
        if !body.is_empty() && tx.send(Ok(body)).await.is_err() {
            return;
        }
        follow_files(&dir, &files, start, tx).await;
    });
    let stream = tokio_stream_from(rx);
    Ok((plain, Body::from_stream(stream)).into_response())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Sends what is appended to `files` from `offsets` on, until the container has stopped
/// (its exit recorded) and everything is sent, or the client goes away.
async fn follow_files(
    dir: &Path,
    files: &[&'static str],
    mut offsets: Vec<u64>,
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    let mut pause = Duration::from_millis(10);
    loop {
        // Read the exit marker before the files: what was written before the exit is
        // then certainly read in this round.
        let finished = dir.join(EXIT_FILE).exists() || !dir.exists();
        let mut got = false;
        for (i, f) in files.iter().enumerate() {
            match read_from(&dir.join(f), offsets[i]).await {
                Ok(chunk) if !chunk.is_empty() => {
                    offsets[i] += chunk.len() as u64;
                    got = true;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                _ => {}
            }
        }
        if finished && !got {
            return;
        }
        if tx.is_closed() {
            return;
        }
        if got {
            pause = Duration::from_millis(10);
        } else {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

async fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    f.take(1 << 20).read_to_end(&mut buf).await?;
    Ok(buf)
}

/// The offset where the last `n` lines of `data` begin.
fn tail_offset(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    let end = if data.last() == Some(&b'\n') {
        data.len() - 1
    } else {
        data.len()
    };
    let mut seen = 0;
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::tail_offset;

    #[test]
    fn tail_counts_lines_from_the_end() {
        let d = b"a\nb\nc\n";
        assert_eq!(&d[tail_offset(d, 2)..], b"b\nc\n");
        assert_eq!(&d[tail_offset(d, 5)..], b"a\nb\nc\n");
        assert_eq!(&d[tail_offset(d, 0)..], b"");
        let d = b"a\nb";
        assert_eq!(&d[tail_offset(d, 1)..], b"b");
    }
}
