//! `bodies`: what request bodies cost the service's memory. 16 clients at once send a
//! 64 MiB body (over every JSON route's default limit) to each JSON route, declared
//! (`Content-Length`) and then chunked; then 16 send a run of 32 MiB of files (base64,
//! under the limit: read, parsed, decoded, refused for its image). The table shows the
//! answers, the time and the growth of the service's resident memory (VmRSS, sampled
//! every 2 ms: its peak, and what is left once the answers are in). runc has no HTTP
//! service: nothing to put beside it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const OVERSIZED: usize = 64 << 20;
/// A run with the most files a run takes by default (32 MiB, 44739240 in base64).
const FULL_RUN: usize = 44_739_240 + ROUTES[0].1.len() + ROUTES[0].2.len();
const CLIENTS: usize = 16;

/// Each JSON route with the text before and after its body's one long string.
const ROUTES: [(&str, &str, &str); 3] = [
    (
        "/v1/runs",
        r#"{"image":"nope","steps":[{"name":"a","args":["true"]}],"files":[{"path":"a","encoding":"base64","content":""#,
        r#""}]}"#,
    ),
    (
        "/v1/containers",
        r#"{"image":"nope","process":{"args":["sh","-c",""#,
        r#""]}}"#,
    ),
    (
        "/v1/containers/nope/kill",
        r#"{"all":false,"signal":""#,
        r#""}"#,
    ),
];

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One request of `OVERSIZED` bytes, its body written from a thread while the answer is
/// read; the answer's status.
fn send(
    addr: &str,
    token: &str,
    route: (&str, &str, &str),
    size: usize,
    chunked: bool,
) -> Result<u16, String> {
    let (path, prefix, suffix) = route;
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {size}")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    );
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let (prefix, suffix) = (prefix.to_string(), suffix.to_string());
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(head.as_bytes())?;
        let fill = vec![b'A'; 64 << 10];
        let mut left = size - prefix.len() - suffix.len();
        let mut part = |p: &[u8]| -> std::io::Result<()> {
            if chunked {
                writer.write_all(format!("{:x}\r\n", p.len()).as_bytes())?;
                writer.write_all(p)?;
                writer.write_all(b"\r\n")
            } else {
                writer.write_all(p)
            }
        };
        part(prefix.as_bytes())?;
        while left > 0 {
            let n = left.min(fill.len());
            part(&fill[..n])?;
            left -= n;
        }
        part(suffix.as_bytes())?;
        if chunked {
            writer.write_all(b"0\r\n\r\n")?;
        }
        Ok(())
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{path}: no HTTP answer: {:?}", &text[..text.len().min(200)]))
}

pub fn run(addr: &str, token: &str, pid: u32) -> Result<(), String> {
    println!(
        "\n== bodies: {CLIENTS} clients at once send a {} MiB JSON body to each JSON route",
        OVERSIZED >> 20
    );
    println!("   (over its limit), then a run of 32 MiB of files (under it); the service's");
    println!("   VmRSS growth, peak and after");
    println!(
        "   {:<26} {:<8} {:>7} {:>12} {:>8} {:>11} {:>11}",
        "route", "body", "MiB", "answers", "time s", "peak +MiB", "after +MiB"
    );
    let mut rows: Vec<((&str, &str, &str), usize, bool)> = Vec::new();
    for route in ROUTES {
        rows.push((route, OVERSIZED, false));
        rows.push((route, OVERSIZED, true));
    }
    rows.push((ROUTES[0], FULL_RUN, false));
    for (route, size, chunked) in rows {
        let before = vm_rss_kib(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(before));
        let sampler = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(vm_rss_kib(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let started = Instant::now();
        let answers: Vec<Result<u16, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..CLIENTS)
                .map(|_| scope.spawn(|| send(addr, token, route, size, chunked)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("client panicked".into())))
                .collect()
        });
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        std::thread::sleep(Duration::from_millis(300));
        let after = vm_rss_kib(pid);
        let mut statuses = std::collections::BTreeMap::new();
        for a in answers {
            *statuses.entry(a?).or_insert(0) += 1;
        }
        let statuses: Vec<String> = statuses
            .iter()
            .map(|(status, n)| format!("{n}x{status}"))
            .collect();
        let statuses = statuses.join(",");
        let mib = |kib: u64| kib.saturating_sub(before) as f64 / 1024.0;
        let body = if chunked { "chunked" } else { "declared" };
        let peak = peak.load(Ordering::Relaxed);
        println!(
            "   {:<26} {:<8} {:>7.1} {:>12} {:>8.2} {:>11.1} {:>11.1}",
            route.0,
            body,
            size as f64 / (1 << 20) as f64,
            statuses,
            elapsed,
            mib(peak),
            mib(after)
        );
        println!(
            "RESULT scenario=bodies route={} body={body} bytes={size} answers={statuses} seconds={elapsed:.3} rss_before_mib={:.1} rss_peak_growth_mib={:.1} rss_after_growth_mib={:.1}",
            route.0,
            before as f64 / 1024.0,
            mib(peak),
            mib(after)
        );
    }
    Ok(())
}
