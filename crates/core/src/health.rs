//! Liveness, readiness and metrics over HTTP: `/healthz`, `/readyz`,
//! `/metrics`, served by every service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type Check = Arc<dyn Fn() -> bool + Send + Sync>;

/// Named readiness checks; ready when all pass.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<Vec<(String, Check)>>>,
}

/// A readiness flag one component sets.
#[derive(Clone, Default)]
pub struct Flag(Arc<AtomicBool>);

impl Flag {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Health {
    /// Registers a check evaluated on every `/readyz`.
    pub fn check(&self, name: impl Into<String>, check: impl Fn() -> bool + Send + Sync + 'static) {
        self.checks
            .lock()
            .expect("health lock")
            .push((name.into(), Arc::new(check)));
    }

    /// Registers a flag, initially not ready.
    pub fn flag(&self, name: impl Into<String>) -> Flag {
        let flag = Flag::default();
        let read = flag.clone();
        self.check(name, move || read.get());
        flag
    }

    /// Readiness of a NATS connection.
    pub fn nats(&self, name: impl Into<String>, client: async_nats::Client) {
        self.check(name, move || {
            client.connection_state() == async_nats::connection::State::Connected
        });
    }

    /// Whether every check passes, and the names of those that fail.
    pub fn report(&self) -> (bool, Vec<String>) {
        let checks = self.checks.lock().expect("health lock").clone();
        let failing: Vec<String> = checks
            .iter()
            .filter(|(_, c)| !c())
            .map(|(n, _)| n.clone())
            .collect();
        (failing.is_empty(), failing)
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    registry: prometheus::Registry,
}

/// Serves the admin endpoints until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    registry: prometheus::Registry,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { health, registry });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.report() {
        (true, _) => (StatusCode::OK, "ready\n".to_owned()),
        (false, failing) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", failing.join(", ")),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&state.registry.gather()) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("cannot encode metrics: {e}\n"),
        ),
    }
}
