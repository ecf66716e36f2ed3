//! The benchmark's HTTP receiver: hyper's HTTP/1.1 server and nothing else,
//! so it costs as little CPU as a receiver can. What it does depends on the
//! path: `/ok` answers 200 and records latency, `/hang` never answers,
//! `/batch` counts the changes in a batch, `/ceiling` only counts, and
//! `/large?pad=N` checks that the event's padding arrived whole (N bytes).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The marker the publisher puts in every event's data: when it was meant to
/// be published, in microseconds of [`now_us`].
pub const SENT_MARKER: &[u8] = b"\"sent_us\":";
/// Where the padding of a large event starts: `"pad":"xxx…x"` to the end of
/// its data.
pub const PAD_MARKER: &[u8] = b"\"pad\":\"";
/// The event's number in a large event.
pub const N_MARKER: &[u8] = b"\"n\":";
const CHANGE_MARKER: &[u8] = b"\"action\":";

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the benchmark started: the clock shared by the
/// publisher and the receiver (one process, so one clock).
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// What the receiver has seen.
pub struct Stats {
    /// Requests answered on `/ok`.
    pub ok: AtomicU64,
    /// Requests that arrived on `/hang`.
    pub hung: AtomicU64,
    /// Requests answered 503 on `/fail`.
    pub failed: AtomicU64,
    /// Changes counted in `/batch` bodies, and the requests that held them.
    pub changes: AtomicU64,
    pub batches: AtomicU64,
    /// Requests on `/ceiling`.
    pub ceiling: AtomicU64,
    /// Requests on `/large`; distinct (subscription, event) pairs among
    /// them; those whose padding was not whole.
    pub large: AtomicU64,
    pub distinct: AtomicU64,
    pub damaged: AtomicU64,
    /// Body bytes of every request but `/ceiling`.
    pub body_bytes: AtomicU64,
    /// When the last `/ok` or `/batch` request arrived ([`now_us`]).
    pub last_us: AtomicU64,
    /// Publish-to-receipt latency of `/ok` requests, in microseconds.
    latency: Mutex<Histogram<u64>>,
    /// The (subscription, event) pairs `/large` has seen.
    seen: Mutex<HashSet<(u64, u64)>>,
}

impl Stats {
    fn new() -> Self {
        Self {
            ok: AtomicU64::new(0),
            hung: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            ceiling: AtomicU64::new(0),
            large: AtomicU64::new(0),
            distinct: AtomicU64::new(0),
            damaged: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")),
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Takes the latency histogram, leaving an empty one.
    pub fn take_latency(&self) -> Histogram<u64> {
        let mut latency = self.latency.lock().expect("latency lock");
        let taken = latency.clone();
        latency.reset();
        taken
    }
}

/// A running receiver on 127.0.0.1.
pub struct Receiver {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        now_us();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::new());
        let shared = stats.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let stats = shared.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| handle(stats.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, stats, task })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    stats: Arc<Stats>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let param = |name: &str| {
        request.uri().query().and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| *key == name)
                .and_then(|(_, n)| n.parse::<u64>().ok())
        })
    };
    let (pad, sub) = (param("pad"), param("sub"));
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if !path.starts_with("/ceiling") {
        stats
            .body_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
    }
    if path.starts_with("/large") {
        let now = now_us();
        if pad.is_none_or(|pad| !padded(&body, pad as usize)) {
            stats.damaged.fetch_add(1, Ordering::Relaxed);
        }
        let pair = (
            sub.unwrap_or(0),
            number_after(&body, N_MARKER).unwrap_or(u64::MAX),
        );
        if stats.seen.lock().expect("seen lock").insert(pair) {
            stats.distinct.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(sent) = sent_us(&body) {
            let mut latency = stats.latency.lock().expect("latency lock");
            latency.saturating_record(now.saturating_sub(sent).max(1));
        }
        stats.large.fetch_add(1, Ordering::Relaxed);
        stats.last_us.fetch_max(now, Ordering::Relaxed);
    } else if path.starts_with("/hang") {
        stats.hung.fetch_add(1, Ordering::Relaxed);
        std::future::pending::<()>().await;
    } else if path.starts_with("/fail") {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        return Ok(response);
    } else if path.starts_with("/ceiling") {
        stats.ceiling.fetch_add(1, Ordering::Relaxed);
    } else if path.starts_with("/batch") {
        let changes = occurrences(&body, CHANGE_MARKER);
        stats.changes.fetch_add(changes, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.last_us.fetch_max(now_us(), Ordering::Relaxed);
    } else {
        let now = now_us();
        if let Some(sent) = sent_us(&body) {
            let mut latency = stats.latency.lock().expect("latency lock");
            latency.saturating_record(now.saturating_sub(sent).max(1));
        }
        stats.ok.fetch_add(1, Ordering::Relaxed);
        stats.last_us.fetch_max(now, Ordering::Relaxed);
    }
    Ok(Response::new(Full::new(Bytes::new())))
}

/// The `sent_us` number in a body, if there is one.
fn sent_us(body: &[u8]) -> Option<u64> {
    number_after(body, SENT_MARKER)
}

/// The number right after the first `marker` in `body`.
fn number_after(body: &[u8], marker: &[u8]) -> Option<u64> {
    let start = find(body, marker)? + marker.len();
    let digits = body[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&body[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

/// Whether `body` holds a padding of exactly `len` `x`s that closes its
/// data object (`"pad":"xx…x"}`).
fn padded(body: &[u8], len: usize) -> bool {
    let Some(start) = find(body, PAD_MARKER).map(|i| i + PAD_MARKER.len()) else {
        return false;
    };
    let rest = &body[start..];
    let xs = rest.iter().take_while(|&&b| b == b'x').count();
    xs == len && rest[xs..].starts_with(b"\"}")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> u64 {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_bodies() {
        let body = br#"{"type":"bench","data":{"n":7,"sent_us":123456,"pad":"x"}}"#;
        assert_eq!(sent_us(body), Some(123456));
        assert_eq!(sent_us(b"{}"), None);
        let batch = br#"{"changes":[{"action":"update","id":1},{"action":"update","id":2}]}"#;
        assert_eq!(occurrences(batch, CHANGE_MARKER), 2);
    }

    #[test]
    fn padding_must_arrive_whole() {
        let body = br#"{"type":"t","data":{"sent_us":1 ,"pad":"xxxx"}}"#;
        assert!(padded(body, 4));
        assert!(!padded(body, 3));
        assert!(!padded(br#"{"data":{"pad":"xxxx"#, 4));
        assert!(!padded(br#"{"data":{"pad":"xxyx"}}"#, 4));
    }
}
