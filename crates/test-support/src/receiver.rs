//! A real HTTP receiver on 127.0.0.1:0 that records every request and answers
//! as scripted: a status, headers, a body, a delay, one reply at a time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request's body had arrived.
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    /// `data.n` of a JSON body: the number of the tests' numbered events.
    pub fn event_number(&self) -> u64 {
        let body: serde_json::Value = serde_json::from_slice(&self.body).expect("JSON body");
        body["data"]["n"].as_u64().expect("data.n")
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Chooses a reply from the request and every earlier request.
pub type Responder = Box<dyn Fn(&Recorded, &[Recorded]) -> Reply + Send>;

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
    responder: Option<Responder>,
    in_flight: usize,
    max_in_flight: usize,
}

struct Shared {
    inner: Mutex<Inner>,
    arrived: Notify,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    /// Starts answering 200 to everything.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1").await
    }

    /// Starts on another loopback address (Linux routes all of 127.0.0.0/8).
    pub async fn start_on(ip: &str) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            arrived: Notify::new(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            shared,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next unanswered request with `reply` (in order).
    pub fn push(&self, reply: Reply) {
        self.shared.inner.lock().unwrap().script.push_back(reply);
    }

    /// Answers with `reply` once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        self.shared.inner.lock().unwrap().default = Some(reply);
    }

    /// Answers by `responder` once the script is used up (before the default).
    pub fn respond_with(
        &self,
        responder: impl Fn(&Recorded, &[Recorded]) -> Reply + Send + 'static,
    ) {
        self.shared.inner.lock().unwrap().responder = Some(Box::new(responder));
    }

    /// [`Recorded::event_number`] of every request, in arrival order.
    pub fn event_numbers(&self) -> Vec<u64> {
        self.requests().iter().map(Recorded::event_number).collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.inner.lock().unwrap().requests.clone()
    }

    /// Requests whose path is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// The most requests it was serving at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.inner.lock().unwrap().max_in_flight
    }

    /// Waits until `n` requests arrived; panics with what did arrive after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let requests = self.requests();
            if requests.len() >= n {
                return requests;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                let requests = self.requests();
                if requests.len() >= n {
                    return requests;
                }
                panic!(
                    "receiver got {} of {n} requests within {timeout:?}: {:?}",
                    requests.len(),
                    requests
                        .iter()
                        .map(|r| (&r.method, &r.path))
                        .collect::<Vec<_>>()
                );
            }
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let reply = {
        let mut inner = shared.inner.lock().unwrap();
        let recorded = Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body,
            at: Instant::now(),
        };
        inner.in_flight += 1;
        inner.max_in_flight = inner.max_in_flight.max(inner.in_flight);
        let reply = inner
            .script
            .pop_front()
            .or_else(|| {
                inner
                    .responder
                    .as_ref()
                    .map(|r| r(&recorded, &inner.requests))
            })
            .or_else(|| inner.default.clone())
            .unwrap_or_else(|| Reply::status(200));
        inner.requests.push(recorded);
        reply
    };
    shared.arrived.notify_waiters();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    shared.inner.lock().unwrap().in_flight -= 1;
    let mut response = (
        StatusCode::from_u16(reply.status).expect("valid status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    response
}
