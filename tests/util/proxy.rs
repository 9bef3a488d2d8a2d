//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 for S3 tests: forwards each
//! request to the upstream server on a fresh connection, and fails a share of
//! them on purpose: 503 SlowDown, 500 InternalError, a connection dropped
//! before the request is forwarded, one dropped after it was forwarded (the
//! request happened, the client never hears), or a response body cut short.
//! With `stall_ms` set, every request is held that long before anything
//! else happens (a store that stops answering). With `delay_ms` set, it
//! plays a WAN: each request reaches the server that much later and each
//! response the client that much later again (a round trip of twice the
//! delay; connections are served in parallel, so it is latency, not a
//! throughput cap).
//! It keeps every request head it saw and when each piece of a request
//! body arrived (to measure a client's pace), and can play a store without
//! conditional writes (`501 NotImplemented` to `If-None-Match`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Faults injected so far, by kind.
#[derive(Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub slow_down: AtomicU64,
    pub internal_error: AtomicU64,
    pub dropped_before: AtomicU64,
    pub dropped_after: AtomicU64,
    pub truncated: AtomicU64,
    pub not_implemented: AtomicU64,
}

impl Counts {
    pub fn faults(&self) -> u64 {
        self.slow_down.load(Ordering::Relaxed)
            + self.internal_error.load(Ordering::Relaxed)
            + self.dropped_before.load(Ordering::Relaxed)
            + self.dropped_after.load(Ordering::Relaxed)
            + self.truncated.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} requests: {} SlowDown, {} InternalError, {} dropped before, \
             {} dropped after forwarding, {} truncated",
            self.requests.load(Ordering::Relaxed),
            self.slow_down.load(Ordering::Relaxed),
            self.internal_error.load(Ordering::Relaxed),
            self.dropped_before.load(Ordering::Relaxed),
            self.dropped_after.load(Ordering::Relaxed),
            self.truncated.load(Ordering::Relaxed),
        )
    }
}

/// A running proxy; it runs until the test process ends.
pub struct Proxy {
    pub endpoint: String,
    pub counts: Arc<Counts>,
    /// Percentage of requests that fail (0 heals the proxy).
    pub fail_percent: Arc<AtomicU64>,
    /// Every request head seen (request line and headers), in order.
    pub heads: Arc<Mutex<Vec<String>>>,
    /// Answer `If-None-Match` with 501, as stores without conditional
    /// writes do.
    pub reject_conditional: Arc<AtomicBool>,
    /// Hold every request this many milliseconds first (0: none).
    pub stall_ms: Arc<AtomicU64>,
    /// Latency added each way, milliseconds (0: none).
    pub delay_ms: Arc<AtomicU64>,
    /// A header line (`name: value`) added to the answer of every GET
    /// whose path contains the first string, as a store that allows what
    /// the test server refuses would send it.
    pub added_header: Arc<Mutex<Option<(String, String)>>>,
    /// Request body bytes as they arrived from clients: when, how many.
    pub arrivals: Arc<Mutex<Vec<(Instant, usize)>>>,
    /// How long an S3 restore takes, milliseconds (0: as the server does
    /// it). See [`Thawing`].
    pub thaw_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// Restores that take time, over a server that completes them at once
/// (moto): after a `POST ?restore` of an object, for `thaw_ms`, a HEAD of
/// it says `x-amz-restore: ongoing-request="true"` (the S3 API reference's
/// form) and a GET answers `403 InvalidObjectState`, as S3 does while a
/// restore is under way.
#[derive(Default)]
struct Thawing {
    /// Object path (`/bucket/key`) -> when its restore completes.
    until: std::collections::HashMap<String, Instant>,
}

/// What the proxy shares with its connection threads.
struct Shared {
    upstream: String,
    counts: Arc<Counts>,
    fail: Arc<AtomicU64>,
    heads: Arc<Mutex<Vec<String>>>,
    reject_conditional: Arc<AtomicBool>,
    stall_ms: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    added_header: Arc<Mutex<Option<(String, String)>>>,
    arrivals: Arc<Mutex<Vec<(Instant, usize)>>>,
    thaw_ms: Arc<AtomicU64>,
    thawing: Mutex<Thawing>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str, fail_percent: u64) -> Self {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("plain http upstream")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let shared = Arc::new(Shared {
            upstream,
            counts: Arc::new(Counts::default()),
            fail: Arc::new(AtomicU64::new(fail_percent)),
            heads: Arc::new(Mutex::new(Vec::new())),
            reject_conditional: Arc::new(AtomicBool::new(false)),
            stall_ms: Arc::new(AtomicU64::new(0)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            added_header: Arc::new(Mutex::new(None)),
            arrivals: Arc::new(Mutex::new(Vec::new())),
            thaw_ms: Arc::new(AtomicU64::new(0)),
            thawing: Mutex::new(Thawing::default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let proxy = Self {
            endpoint,
            counts: shared.counts.clone(),
            fail_percent: shared.fail.clone(),
            heads: shared.heads.clone(),
            reject_conditional: shared.reject_conditional.clone(),
            stall_ms: shared.stall_ms.clone(),
            delay_ms: shared.delay_ms.clone(),
            added_header: shared.added_header.clone(),
            arrivals: shared.arrivals.clone(),
            thaw_ms: shared.thaw_ms.clone(),
            stop: stop.clone(),
        };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(conn, &shared));
            }
        });
        proxy
    }

    /// The heads of the PUT requests seen so far whose path contains `part`.
    pub fn puts(&self, part: &str) -> Vec<String> {
        self.requests("PUT", part)
    }

    /// The heads of the `method` requests seen so far whose path contains
    /// `part`.
    pub fn requests(&self, method: &str, part: &str) -> Vec<String> {
        let heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        heads
            .iter()
            .filter(|h| {
                h.lines()
                    .next()
                    .is_some_and(|l| l.split(' ').next() == Some(method) && l.contains(part))
            })
            .cloned()
            .collect()
    }
}

/// The value of header `name` in `head`.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads one HTTP head (up to the blank line). `None` at a clean EOF.
fn read_head(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            return Some(head);
        }
    }
}

fn expects_continue(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.eq_ignore_ascii_case("expect") && v.trim().eq_ignore_ascii_case("100-continue")
        })
    })
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Fills `body` from `reader`, noting each piece's arrival; false if the
/// connection ends first.
fn read_body(
    reader: &mut impl Read,
    body: &mut [u8],
    arrivals: &Mutex<Vec<(Instant, usize)>>,
) -> bool {
    let mut filled = 0;
    while filled < body.len() {
        match reader.read(&mut body[filled..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                filled += n;
                let mut arrivals = arrivals.lock().unwrap_or_else(|e| e.into_inner());
                arrivals.push((Instant::now(), n));
            }
        }
    }
    true
}

/// The most bytes that arrived within any `window` (from `arrivals`, in
/// order of arrival).
pub fn busiest(arrivals: &[(Instant, usize)], window: std::time::Duration) -> usize {
    let (mut most, mut sum, mut first) = (0, 0, 0);
    for &(at, n) in arrivals {
        sum += n;
        while at.duration_since(arrivals[first].0) >= window {
            sum -= arrivals[first].1;
            first += 1;
        }
        most = most.max(sum);
    }
    most
}

/// The head with `Connection: close`, so the upstream ends its response
/// with EOF and the whole response can be read without parsing it.
fn close_after(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.split("\r\n") {
        if line.is_empty() {
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") || lower.starts_with("expect:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn error_response(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
         <Message>injected by the test proxy</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn serve(client: TcpStream, shared: &Shared) {
    let Ok(write_half) = client.try_clone() else {
        return;
    };
    let (counts, fail, upstream) = (&*shared.counts, &*shared.fail, &shared.upstream);
    let mut reader = BufReader::new(client);
    let mut writer = write_half;
    while let Some(head) = read_head(&mut reader) {
        if expects_continue(&head) && writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            return;
        }
        let mut body = vec![0; content_length(&head)];
        if !read_body(&mut reader, &mut body, &shared.arrivals) {
            return;
        }
        // Kept as it arrives: a test sees a request the proxy still holds.
        let text = String::from_utf8_lossy(&head).into_owned();
        let conditional = header(&text, "if-none-match").is_some();
        shared
            .heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text.clone());
        let stall = shared.stall_ms.load(Ordering::Relaxed);
        if stall > 0 {
            std::thread::sleep(std::time::Duration::from_millis(stall));
        }
        let delay = std::time::Duration::from_millis(shared.delay_ms.load(Ordering::Relaxed));
        std::thread::sleep(delay); // on its way to the server
        if conditional && shared.reject_conditional.load(Ordering::Relaxed) {
            counts.not_implemented.fetch_add(1, Ordering::Relaxed);
            let _ = writer.write_all(&error_response("501 Not Implemented", "NotImplemented"));
            continue;
        }
        // Request n fails if (37 n mod 100) < percent: deterministic, and
        // spread evenly. Kinds take turns (a PUT stored but never answered
        // first), so five faults already cover every kind.
        let n = counts.requests.fetch_add(1, Ordering::Relaxed);
        let faulty = n * 37 % 100 < fail.load(Ordering::Relaxed);
        let kind = if faulty {
            [3, 0, 1, 2, 4][(counts.faults() % 5) as usize]
        } else {
            0
        };
        if faulty {
            match kind {
                0 => {
                    counts.slow_down.fetch_add(1, Ordering::Relaxed);
                    let _ = writer.write_all(&error_response("503 Slow Down", "SlowDown"));
                    continue;
                }
                1 => {
                    counts.internal_error.fetch_add(1, Ordering::Relaxed);
                    let _ = writer.write_all(&error_response(
                        "500 Internal Server Error",
                        "InternalError",
                    ));
                    continue;
                }
                2 => {
                    counts.dropped_before.fetch_add(1, Ordering::Relaxed);
                    let _ = writer.shutdown(Shutdown::Both);
                    return;
                }
                _ => {}
            }
        }
        if let Some(cold) = still_thawing(shared, &text) {
            let _ = writer.write_all(&cold);
            continue;
        }
        let Some(mut response) = forward(upstream, &head, &body) else {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        };
        add_header(shared, &text, &mut response);
        thaw(shared, &text, &mut response);
        if faulty && kind == 3 {
            counts.dropped_after.fetch_add(1, Ordering::Relaxed);
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        if faulty && kind == 4 {
            counts.truncated.fetch_add(1, Ordering::Relaxed);
            let cut = response.len() - (response.len() - header_end(&response)) / 2 - 1;
            let _ = writer.write_all(&response[..cut.max(1)]);
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        std::thread::sleep(delay); // on its way back
        if writer.write_all(&response).is_err() {
            return;
        }
    }
}

/// Adds the proxy's `added_header` after the status line of `response` to
/// `request` (its head), if it is a GET of a path that asks for it.
fn add_header(shared: &Shared, request: &str, response: &mut Vec<u8>) {
    let added = shared
        .added_header
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let Some((part, line)) = added.as_ref() else {
        return;
    };
    let path = request.split(' ').nth(1).unwrap_or("");
    if !request.starts_with("GET ") || !path.split('?').next().unwrap_or("").contains(part) {
        return;
    }
    if let Some(at) = response.windows(2).position(|w| w == b"\r\n") {
        let insert = format!("\r\n{line}");
        response.splice(at..at, insert.into_bytes());
    }
}

/// The object path of `request` (its head) and its query, if any.
fn target(request: &str) -> (&str, &str) {
    let path = request.split(' ').nth(1).unwrap_or("");
    path.split_once('?').unwrap_or((path, ""))
}

/// A GET of an object whose restore is still under way: the answer S3
/// gives (see [`Thawing`]).
fn still_thawing(shared: &Shared, request: &str) -> Option<Vec<u8>> {
    if !request.starts_with("GET ") {
        return None;
    }
    let (path, _) = target(request);
    let thawing = shared.thawing.lock().unwrap_or_else(|e| e.into_inner());
    let until = thawing.until.get(path)?;
    (Instant::now() < *until).then(|| error_response("403 Forbidden", "InvalidObjectState"))
}

/// Starts the clock on a restore the server accepted (`POST ?restore`),
/// and makes a HEAD of an object still thawing say its restore is ongoing.
fn thaw(shared: &Shared, request: &str, response: &mut Vec<u8>) {
    let thaw_ms = shared.thaw_ms.load(Ordering::Relaxed);
    if thaw_ms == 0 {
        return;
    }
    let (path, query) = target(request);
    let mut thawing = shared.thawing.lock().unwrap_or_else(|e| e.into_inner());
    let accepted = response.starts_with(b"HTTP/1.1 2");
    if request.starts_with("POST ") && query.split('&').any(|q| q == "restore" || q == "restore=") {
        if accepted && !thawing.until.contains_key(path) {
            let until = Instant::now() + std::time::Duration::from_millis(thaw_ms);
            thawing.until.insert(path.to_string(), until);
        }
        return;
    }
    let ongoing = thawing.until.get(path).is_some_and(|&t| Instant::now() < t);
    if !request.starts_with("HEAD ") || !ongoing {
        return;
    }
    let end = header_end(response);
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let mut lines: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("x-amz-restore:") && !l.is_empty())
        .collect();
    lines.push("x-amz-restore: ongoing-request=\"true\"");
    let mut rewritten = lines.join("\r\n").into_bytes();
    rewritten.extend_from_slice(b"\r\n\r\n");
    rewritten.extend_from_slice(&response[end..]);
    *response = rewritten;
}

fn header_end(response: &[u8]) -> usize {
    response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4)
}

/// Sends one request upstream and returns the whole response.
fn forward(upstream: &str, head: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).ok()?;
    up.write_all(&close_after(head)).ok()?;
    up.write_all(body).ok()?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).ok()?;
    Some(response)
}
