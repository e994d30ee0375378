//! Request bodies are bounded per route before they are buffered: oversized JSON bodies,
//! declared (`Content-Length`) or streamed (chunked), 16 at once on every JSON route, are
//! refused with 413 and a problem document, and leave the service's memory where it was.
//! Bodies under a route's limit are read (in memory or spooled to disk) and parsed.
//!
//! The requests are written by hand over TCP (a thread writes the body while the answer
//! is read), because a server that answers 413 before the body is sent stops reading it:
//! an HTTP client library may then report the failed write instead of the answer.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::server::{Server, USER};
use serde_json::Value;

/// Over the default limit of every JSON route (`POST /v1/runs`: 58.7 MiB).
const OVERSIZED: usize = 64 << 20;
const CONCURRENT: usize = 16;
/// The most the service's resident memory may grow (issue: memory-bounded requests).
const MAX_GROWTH_KIB: u64 = 64 << 10;

/// A JSON body whose bulk is one long string of `fill` between `prefix` and `suffix`.
#[derive(Clone)]
struct JsonBody {
    prefix: &'static str,
    fill: u8,
    suffix: &'static str,
    size: usize,
}

/// The JSON routes, each with a body that is valid JSON of its kind (the bulk in a
/// string field) of `size` bytes, refused once read (no such image, no such container).
fn json_routes(size: usize) -> Vec<(&'static str, JsonBody)> {
    vec![
        (
            "/v1/runs",
            JsonBody {
                prefix: r#"{"image":"nope","steps":[{"name":"a","args":["true"]}],"files":[{"path":"a","encoding":"base64","content":""#,
                fill: b'A',
                suffix: r#""}]}"#,
                size,
            },
        ),
        (
            "/v1/containers",
            JsonBody {
                prefix: r#"{"image":"nope","process":{"args":["sh","-c",""#,
                fill: b' ',
                suffix: r#""]}}"#,
                size,
            },
        ),
        (
            "/v1/containers/nope/kill",
            JsonBody {
                prefix: r#"{"all":false,"signal":""#,
                fill: b'S',
                suffix: r#""}"#,
                size,
            },
        ),
    ]
}

/// One answer: status, content type, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    ctype: String,
    body: Value,
}

/// Sends `body` to `path` with a `Content-Length` or chunked, writing it from a thread
/// (until the server stops reading) while the answer is read.
fn send(addr: &str, path: &str, body: &JsonBody, chunked: bool) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.size)
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {USER}\r\nContent-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    );
    let mut writer = stream.try_clone().unwrap();
    let body = body.clone();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(head.as_bytes())?;
        let fill = vec![body.fill; 64 << 10];
        let mut parts: Vec<&[u8]> = vec![body.prefix.as_bytes()];
        let mut left = body.size - body.prefix.len() - body.suffix.len();
        while left > 0 {
            let n = left.min(fill.len());
            parts.push(&fill[..n]);
            left -= n;
        }
        parts.push(body.suffix.as_bytes());
        for p in parts.into_iter().filter(|p| !p.is_empty()) {
            if chunked {
                writer.write_all(format!("{:x}\r\n", p.len()).as_bytes())?;
                writer.write_all(p)?;
                writer.write_all(b"\r\n")?;
            } else {
                writer.write_all(p)?;
            }
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n")?;
        }
        Ok(())
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    // Until the server closes (Connection: close) or resets the connection; what came
    // before a reset is still read.
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    Answer {
        status,
        ctype,
        body,
    }
}

/// A `kB` figure of /proc/<pid>/status (0 once the process is gone).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the service's VmRSS until stopped; the highest seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(status_kib(pid, "VmRSS:")));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn assert_413(route: &str, chunked: bool, a: &Answer) {
    assert_eq!(a.status, 413, "{route}, chunked {chunked}: {a:?}");
    assert!(
        a.ctype.starts_with("application/problem+json"),
        "{route}, chunked {chunked}: {a:?}"
    );
    assert_eq!(
        a.body["type"], "urn:corral:problem:payload-too-large",
        "{route}, chunked {chunked}: {a:?}"
    );
    let detail = a.body["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("larger than"),
        "{route}, chunked {chunked}: the detail names no limit: {a:?}"
    );
}

#[test]
fn oversized_json_bodies_are_413_and_cost_no_memory() {
    let s = Server::start();
    let pid = s.pid().unwrap();
    let addr = s.addr().to_string();
    // Warm up: a small request on each route, so that what the service allocates once
    // is not counted as growth.
    for (route, body) in json_routes(4096) {
        let a = send(&addr, route, &body, false);
        assert!(matches!(a.status, 400 | 404), "{route}: {a:?}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = status_kib(pid, "VmRSS:");
    let sampler = RssSampler::start(pid);
    let started = Instant::now();
    let mut answers = Vec::new();
    for (route, body) in json_routes(OVERSIZED) {
        for chunked in [false, true] {
            let batch: Vec<Answer> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..CONCURRENT)
                    .map(|_| scope.spawn(|| send(&addr, route, &body, chunked)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            answers.extend(batch.into_iter().map(|a| (route, chunked, a)));
        }
    }
    let elapsed = started.elapsed();
    let peak = sampler.peak();
    std::thread::sleep(Duration::from_millis(500));
    let after = status_kib(pid, "VmRSS:");
    eprintln!(
        "service VmRSS: {before} kB before, peak {peak} kB (+{} kB), {after} kB after (+{} kB); {:.1}s",
        peak.saturating_sub(before),
        after.saturating_sub(before),
        elapsed.as_secs_f64()
    );
    for (route, chunked, a) in &answers {
        assert_413(route, *chunked, a);
    }
    assert!(
        peak.saturating_sub(before) < MAX_GROWTH_KIB,
        "the service's RSS grew by {} kB (from {before} kB to a peak of {peak} kB) while refusing oversized bodies",
        peak.saturating_sub(before)
    );
    assert!(
        after.saturating_sub(before) < MAX_GROWTH_KIB,
        "the service's RSS stayed {} kB above where it was ({before} kB before, {after} kB after)",
        after.saturating_sub(before)
    );
}

/// `GET /v1/info`'s `body_limits`.
fn body_limits(s: &Server) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (st, v) = rt.block_on(common::server::call(
        reqwest::Method::GET,
        &s.url("/v1/info"),
        Some(USER),
        None,
    ));
    assert_eq!(st, 200, "{v}");
    v["body_limits"].clone()
}

#[test]
fn each_route_reads_up_to_its_limit_and_no_further() {
    // Runs: 3000 bytes of files (4000 in base64) plus 4096 for the rest.
    let s = Server::start_with("[runs]\nmax_files_bytes = 3000\nmax_json_bytes = 4096\n");
    let addr = s.addr().to_string();
    let limits = body_limits(&s);
    assert_eq!(limits["runs"], 8096, "{limits}");
    assert_eq!(limits["kill"], 4096, "{limits}");
    let create = limits["create_from_image"].as_u64().unwrap();
    assert_eq!(create, (2 << 20) + (64 << 10), "{limits}");
    let routes = json_routes(0);
    let sizes = [8096usize, create as usize, 4096];
    for ((route, body), limit) in routes.into_iter().zip(sizes) {
        for chunked in [false, true] {
            // At the limit: read and parsed, then refused for what it says.
            let at = JsonBody {
                size: limit,
                ..body.clone()
            };
            let a = send(&addr, route, &at, chunked);
            assert!(
                matches!(a.status, 400 | 404),
                "{route} at its limit, chunked {chunked}: {a:?}"
            );
            // One byte more: 413, naming the limit.
            let over = JsonBody {
                size: limit + 1,
                ..body.clone()
            };
            let a = send(&addr, route, &over, chunked);
            assert_413(route, chunked, &a);
            let detail = a.body["detail"].as_str().unwrap_or("");
            assert!(
                detail.contains(&format!("larger than {limit} bytes")),
                "{route}: {a:?}"
            );
        }
    }
    // A kill without a body signals SIGTERM (here: to no container).
    let a = send(
        &addr,
        "/v1/containers/nope/kill",
        &JsonBody {
            prefix: "",
            fill: b' ',
            suffix: "",
            size: 0,
        },
        false,
    );
    assert_eq!(a.status, 404, "{a:?}");
}

#[test]
fn large_bodies_under_the_limit_are_spooled_and_parsed() {
    // The default limits: a 1 MiB file (spooled: over the 256 KiB kept in memory) in a
    // run for an image that does not exist is read whole, parsed, and refused for its
    // image; the spool leaves nothing in the data directory.
    let s = Server::start();
    let addr = s.addr().to_string();
    let (route, body) = json_routes(0).remove(0);
    let big = JsonBody {
        size: (1 << 20) + body.prefix.len() + body.suffix.len(),
        ..body
    };
    let before: Vec<_> = std::fs::read_dir(s.data())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    for chunked in [false, true] {
        let a = send(&addr, route, &big, chunked);
        assert_eq!(a.status, 400, "chunked {chunked}: {a:?}");
        let detail = a.body["detail"].as_str().unwrap_or("");
        assert!(detail.starts_with("image:"), "chunked {chunked}: {a:?}");
    }
    let after: Vec<_> = std::fs::read_dir(s.data())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after, "the spool left files behind");
}
