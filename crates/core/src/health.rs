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
    /// Checks of connections to NATS and Redis, also exported as
    /// `hookrelay_dependency_up{dependency}`.
    dependencies: Arc<Mutex<Vec<String>>>,
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

    /// Exports the check `name` (a connection: `nats`, `redis`) also as
    /// `hookrelay_dependency_up{dependency=name}`, 1 while it passes; left
    /// out while no check has that name.
    pub fn mark_dependency(&self, name: impl Into<String>) {
        self.dependencies
            .lock()
            .expect("health lock")
            .push(name.into());
    }

    /// Readiness of a NATS connection, exported as a dependency.
    pub fn nats(&self, name: impl Into<String>, client: async_nats::Client) {
        let name = name.into();
        self.check(name.clone(), move || {
            client.connection_state() == async_nats::connection::State::Connected
        });
        self.mark_dependency(name);
    }

    /// Exports `hookrelay_ready`, `hookrelay_ready_check{check}` and
    /// `hookrelay_dependency_up{dependency}`, evaluated on every scrape.
    pub fn collector(&self) -> prometheus::Result<HealthCollector> {
        HealthCollector::new(self.clone())
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

/// The readiness gauges, read from the checks when scraped.
pub struct HealthCollector {
    health: Health,
    ready: prometheus::IntGauge,
    checks: prometheus::IntGaugeVec,
    dependencies: prometheus::IntGaugeVec,
    /// One scrape at a time resets and sets the gauges.
    scrape: Mutex<()>,
}

impl HealthCollector {
    fn new(health: Health) -> prometheus::Result<Self> {
        Ok(Self {
            health,
            ready: prometheus::IntGauge::new(
                "hookrelay_ready",
                "1 when /readyz answers 200 (every readiness check passes), else 0",
            )?,
            checks: prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "hookrelay_ready_check",
                    "Readiness checks of this process (the names /readyz prints): 1 passing, 0 failing",
                ),
                &["check"],
            )?,
            dependencies: prometheus::IntGaugeVec::new(
                prometheus::Opts::new(
                    "hookrelay_dependency_up",
                    "Connection state of NATS and Redis as this process sees it: 1 up, 0 down",
                ),
                &["dependency"],
            )?,
            scrape: Mutex::new(()),
        })
    }
}

impl prometheus::core::Collector for HealthCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut descs = self.ready.desc();
        descs.extend(self.checks.desc());
        descs.extend(self.dependencies.desc());
        descs
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let _scrape = self.scrape.lock().expect("health scrape lock");
        let checks = self.health.checks.lock().expect("health lock").clone();
        let dependencies = self
            .health
            .dependencies
            .lock()
            .expect("health lock")
            .clone();
        self.checks.reset();
        self.dependencies.reset();
        let mut ready = true;
        let mut up: Vec<(&str, bool)> = Vec::new();
        for (name, check) in &checks {
            let passing = check();
            ready &= passing;
            self.checks
                .with_label_values(&[name.as_str()])
                .set(passing as i64);
            if dependencies.contains(name) {
                match up.iter_mut().find(|(n, _)| n == name) {
                    Some((_, all)) => *all &= passing,
                    None => up.push((name, passing)),
                }
            }
        }
        // A dependency without a check (Redis, in a role that does not use
        // it) is left out.
        for (name, passing) in up {
            self.dependencies
                .with_label_values(&[name])
                .set(passing as i64);
        }
        self.ready.set(ready as i64);
        let mut families = self.ready.collect();
        families.extend(self.checks.collect());
        families.extend(self.dependencies.collect());
        families
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_and_dependencies_are_gauges() {
        let health = Health::default();
        let started = health.flag("startup");
        let redis = health.flag("redis");
        health.mark_dependency("redis");
        redis.set(true);
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(health.collector().unwrap()))
            .unwrap();
        let text = || {
            prometheus::TextEncoder::new()
                .encode_to_string(&registry.gather())
                .unwrap()
        };
        let now = text();
        assert!(now.contains("hookrelay_ready 0"), "{now}");
        assert!(now.contains(r#"hookrelay_ready_check{check="startup"} 0"#));
        assert!(now.contains(r#"hookrelay_ready_check{check="redis"} 1"#));
        assert!(now.contains(r#"hookrelay_dependency_up{dependency="redis"} 1"#));
        started.set(true);
        redis.set(false);
        let now = text();
        assert!(now.contains(r#"hookrelay_dependency_up{dependency="redis"} 0"#));
        redis.set(true);
        let now = text();
        assert!(now.contains("hookrelay_ready 1"), "{now}");
    }
}
