//! The hookrelay server: runs the subscription service, ingestor, dispatcher
//! and log service (all of them, or one, for scale-out) against NATS and
//! Redis, with the gRPC and admin HTTP endpoints.
#![forbid(unsafe_code)]

pub mod healthcheck;
mod startup;

use std::sync::Arc;
use std::time::Duration;

use hookrelay_core::health::Health;
use hookrelay_core::index::SubscriptionIndex;
use hookrelay_core::Config;
use hookrelay_dispatcher::guard::{
    AddressPolicy, Dialer, DirectDialer, Guard, Resolver, SystemResolver,
};
use hookrelay_dispatcher::{Dispatcher, RetrySchedule};
use hookrelay_ingestor::Ingestor;
use hookrelay_logs::{AttemptConsumer, AttemptIndex, LogService};
use hookrelay_subscriptions::{Store, SubscriptionService};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use startup::retry_until;

/// Which services this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Every service in one process.
    All,
    Subscriptions,
    Ingestor,
    Dispatcher,
    Logs,
}

impl Role {
    fn runs(self, role: Role) -> bool {
        self == Role::All || self == role
    }

    fn serves_grpc(self) -> bool {
        self.runs(Role::Subscriptions) || self.runs(Role::Logs)
    }

    fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Subscriptions => "subscriptions",
            Role::Ingestor => "ingestor",
            Role::Dispatcher => "dispatcher",
            Role::Logs => "logs",
        }
    }
}

/// The sockets a process serves on.
pub struct Listeners {
    /// gRPC; needed when the role serves subscriptions or logs.
    pub grpc: Option<TcpListener>,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub http: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(config: &Config, role: Role) -> std::io::Result<Self> {
        let grpc = if role.serves_grpc() {
            Some(bind(config.server.grpc_listen).await?)
        } else {
            None
        };
        Ok(Self {
            grpc,
            http: bind(config.server.http_listen).await?,
        })
    }
}

async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// A process could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Nats(#[from] hookrelay_core::nats::NatsError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Client(#[from] hookrelay_dispatcher::sender::ClientError),
    #[error("auth: no API tokens configured; set auth.admin_token_sha256 (HOOKRELAY_AUTH__ADMIN_TOKEN_SHA256) to the SHA-256 hex of a bearer token, or auth.tokens (HOOKRELAY_AUTH__TOKENS, JSON), or auth.tokens_file")]
    NoTokens,
    #[error(transparent)]
    Tokens(hookrelay_core::config::ConfigError),
    #[error("dispatcher.allow_private: {0}")]
    AllowList(String),
    #[error("the gRPC listener is required for role {0}")]
    NoGrpcListener(&'static str),
    #[error("server: {0}")]
    Serve(String),
}

/// How deliveries reach the network: the system resolver and direct
/// connections, or (tests) ones that never leave loopback.
#[derive(Clone)]
pub struct Net {
    pub resolver: Arc<dyn Resolver>,
    pub dialer: Arc<dyn Dialer>,
}

impl Default for Net {
    fn default() -> Self {
        Self {
            resolver: Arc::new(SystemResolver),
            dialer: Arc::new(DirectDialer),
        }
    }
}

/// A process that could not load its config, bind or start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] hookrelay_core::config::ConfigError),
    #[error(transparent)]
    Bind(#[from] std::io::Error),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Otlp(#[from] hookrelay_core::otlp::OtlpError),
}

/// What the `hookrelay` binary does: loads the config (`file`, then
/// `HOOKRELAY_*`), binds, and runs `role` until SIGINT/SIGTERM.
pub async fn serve(file: Option<&std::path::Path>, role: Role) -> Result<(), ServeError> {
    let config = Config::load(file)?;
    hookrelay_core::telemetry::init(&config.telemetry);
    let spans = hookrelay_core::otlp::install(&config.telemetry, role.name())?;
    let listeners = Listeners::bind(&config, role).await?;
    let shutdown = hookrelay_core::shutdown::on_signal();
    let result = run(config, role, listeners, shutdown).await;
    if let Some(spans) = spans {
        spans.shutdown().await;
    }
    result?;
    Ok(())
}

/// Runs `role` until `shutdown`, then drains in-flight work.
pub async fn run(
    config: Config,
    role: Role,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    run_with(config, role, listeners, shutdown, Net::default()).await
}

/// [`run`] with the given network access; logs `stopped` last.
pub async fn run_with(
    config: Config,
    role: Role,
    listeners: Listeners,
    shutdown: CancellationToken,
    net: Net,
) -> Result<(), StartError> {
    let result = run_until_stopped(config, role, listeners, shutdown, net).await;
    if result.is_ok() {
        tracing::info!(role = role.name(), "stopped");
    }
    result
}

async fn run_until_stopped(
    config: Config,
    role: Role,
    listeners: Listeners,
    shutdown: CancellationToken,
    net: Net,
) -> Result<(), StartError> {
    let config = Arc::new(config);
    let policy =
        AddressPolicy::new(&config.dispatcher.allow_private).map_err(StartError::AllowList)?;
    let guard = Guard::new(policy, net.resolver, net.dialer);
    let auth =
        hookrelay_proto::auth::Authenticator::new(&config.auth).map_err(StartError::Tokens)?;
    if role.serves_grpc() && auth.is_empty() {
        return Err(StartError::NoTokens);
    }
    let registry = prometheus::Registry::new();
    // CPU, memory, file descriptors of this process.
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    hookrelay_core::metrics::register_build_info(
        &registry,
        env!("CARGO_PKG_VERSION"),
        role.name(),
    )?;
    let health = Health::default();
    // hookrelay_ready, hookrelay_ready_check, hookrelay_dependency_up.
    registry.register(Box::new(health.collector()?))?;
    health.mark_dependency("redis");
    let client = hookrelay_core::nats::connect(&config, role.name()).await?;
    health.nats("nats", client.clone());
    let js = async_nats::jetstream::new(client.clone());
    let mut tasks = JoinSet::new();
    let work = shutdown.clone();

    // Served from the start, so an orchestrator sees "not ready" while NATS
    // or Redis are still out of reach; /readyz names what startup waits for
    // ("jetstream", "redis"), then "startup" for the moments after.
    let jetstream_ready = health.flag("jetstream");
    let needs_redis =
        role.runs(Role::Ingestor) || role.runs(Role::Dispatcher) || role.runs(Role::Logs);
    let http_addr = listeners
        .http
        .local_addr()
        .map_err(|e| StartError::Serve(e.to_string()))?;
    tracing::info!(addr = %http_addr, role = role.name(), "admin HTTP listening (/healthz, /readyz, /metrics)");
    let admin = tokio::spawn(hookrelay_core::health::serve(
        listeners.http,
        registry.clone(),
        health.clone(),
        shutdown.clone(),
    ));

    let Some(()) = retry_until(&shutdown, "create streams", || async {
        startup::jetstream_usable(&client, &config.nats.url).await?;
        hookrelay_core::nats::ensure_streams(&js, &config)
            .await
            .map_err(|e| e.to_string())
    })
    .await
    else {
        return Ok(());
    };
    let Some(bucket) = retry_until(&shutdown, "open subscriptions bucket", || {
        hookrelay_core::nats::subscriptions_bucket(&js, &config)
    })
    .await
    else {
        return Ok(());
    };
    let Some(tenants) = retry_until(&shutdown, "open tenants bucket", || {
        hookrelay_core::nats::tenants_bucket(&js, &config)
    })
    .await
    else {
        return Ok(());
    };

    let Some(catalog_bucket) = retry_until(&shutdown, "open event-type catalog bucket", || {
        hookrelay_core::nats::event_types_bucket(&js, &config)
    })
    .await
    else {
        return Ok(());
    };
    let catalog = hookrelay_catalog::CatalogIndex::new();
    if role.runs(Role::Ingestor) || role.runs(Role::Dispatcher) || role.runs(Role::Subscriptions) {
        catalog.spawn_watcher(catalog_bucket.clone(), work.clone());
        let loaded = catalog.clone();
        health.check("catalog index", move || loaded.is_loaded());
    }

    let index = SubscriptionIndex::new();
    if role.runs(Role::Ingestor) || role.runs(Role::Dispatcher) {
        index.spawn_watcher(bucket.clone(), work.clone());
        let loaded = index.clone();
        health.check("subscriptions index", move || loaded.is_loaded());
    }
    let started;
    let redis = if needs_redis {
        // Registered before "jetstream" turns ready: no moment reads as ready.
        let redis_ready = health.flag("redis");
        jetstream_ready.set(true);
        let Some(redis) = retry_until(&shutdown, "connect to Redis", || {
            hookrelay_core::redis::connect(&config)
        })
        .await
        else {
            return Ok(());
        };
        // Registered before "redis" turns ready: no moment reads as ready.
        started = health.flag("startup");
        startup::watch_redis(redis_ready, redis.clone(), work.clone(), &mut tasks);
        startup::upgrade_redis_keys(redis.clone(), config.names(), work.clone(), &mut tasks);
        Some(redis)
    } else {
        started = health.flag("startup");
        jetstream_ready.set(true);
        None
    };
    if role.serves_grpc() {
        startup::reload_tokens_on_hangup(auth.clone(), work.clone(), &mut tasks)?;
    }
    let transients = hookrelay_core::failure::Transients::register(&registry, &health)?;
    let ordered = redis.as_ref().map(|redis| {
        Arc::new(hookrelay_dispatcher::ordered::OrderedQueues::new(
            &config.names(),
            redis.clone(),
        ))
    });
    let dispatcher = match (role.runs(Role::Dispatcher), &redis, &ordered) {
        (true, Some(redis), Some(ordered)) => Some(Dispatcher::new(hookrelay_dispatcher::Parts {
            ordered: ordered.clone(),
            config: config.clone(),
            js: js.clone(),
            index: index.clone(),
            bucket: bucket.clone(),
            catalog: catalog.clone(),
            schedule: RetrySchedule::new(&config.names(), redis.clone()),
            sender: hookrelay_dispatcher::Sender::new(
                config.limits.max_response_body_bytes,
                guard.clone(),
            )?,
            metrics: hookrelay_dispatcher::Metrics::register(&registry)?,
            ready: health.flag("dispatcher"),
            scheduler_ready: health.flag("retry scheduler"),
            transients: transients.clone(),
        })),
        _ => None,
    };
    if let (true, Some(redis), Some(ordered)) = (role.runs(Role::Ingestor), &redis, &ordered) {
        let ingestor = Arc::new(Ingestor {
            ordered: ordered.clone(),
            ordered_blocked: Default::default(),
            config: config.clone(),
            js: js.clone(),
            index: index.clone(),
            catalog: catalog.clone(),
            catalog_bucket: catalog_bucket.clone(),
            metrics: hookrelay_ingestor::Metrics::register(&registry)?,
            ready: health.flag("ingestor"),
            batcher: hookrelay_ingestor::batch::Batcher::new(config.names(), redis.clone()),
            bucket: bucket.clone(),
            // First attempts skip DELIVERIES where the dispatcher is here.
            dispatcher: dispatcher.clone().filter(|_| config.ingestor.handoff),
            transients: transients.clone(),
            waiting: Default::default(),
        });
        tasks.spawn(ingestor.clone().run_flusher(work.clone()));
        tasks.spawn(ingestor.run(work.clone()));
    }
    if let Some(dispatcher) = dispatcher {
        tasks.spawn(dispatcher.clone().run_scheduler(work.clone()));
        tasks.spawn(dispatcher.clone().run_ordered(work.clone()));
        tasks.spawn(dispatcher.run(work.clone()));
    }
    let mut attempt_index = None;
    if let (true, Some(redis)) = (role.runs(Role::Logs), redis) {
        let index = AttemptIndex::new(
            config.names(),
            redis.clone(),
            js.clone(),
            config.logs.retention,
        );
        let fleet = hookrelay_logs::fleet::Fleet {
            config: config.clone(),
            js: js.clone(),
            bucket: bucket.clone(),
            redis,
            index: index.clone(),
            metrics: hookrelay_logs::fleet::FleetMetrics::register(&registry)?,
            every: config.logs.fleet_interval,
        };
        tasks.spawn(hookrelay_logs::fleet::run(fleet, work.clone()));
        let consumer = AttemptConsumer {
            config: config.clone(),
            js: js.clone(),
            index: index.clone(),
            metrics: hookrelay_logs::Metrics::register(&registry)?,
            ready: health.flag("logs"),
        };
        tasks.spawn(consumer.run(work.clone()));
        attempt_index = Some(index);
    }

    let mut servers = JoinSet::new();
    let mut grpc_addr = None;
    if role.serves_grpc() {
        let listener = listeners
            .grpc
            .ok_or(StartError::NoGrpcListener(role.name()))?;
        let subscriptions = role
            .runs(Role::Subscriptions)
            .then(|| {
                hookrelay_dispatcher::Sender::new(
                    config.limits.max_response_body_bytes,
                    guard.clone(),
                )
                .map(|sender| {
                    let store = Store::new(bucket.clone(), tenants.clone());
                    tasks.spawn(store.clone().keep_indexed(work.clone()));
                    let catalog = hookrelay_subscriptions::Catalog {
                        index: catalog.clone(),
                        bucket: catalog_bucket.clone(),
                    };
                    SubscriptionService::new(store, sender, catalog, &config)
                })
            })
            .transpose()?;
        let event_types = role
            .runs(Role::Subscriptions)
            .then(|| hookrelay_subscriptions::EventTypeService::new(catalog_bucket.clone()));
        let logs = attempt_index.map(|index| {
            let replayer = hookrelay_logs::Replayer {
                config: config.clone(),
                js: js.clone(),
                index,
            };
            LogService::new(replayer, bucket.clone())
        });
        let grpc = startup::grpc_router(subscriptions, event_types, logs, auth.clone(), &registry)
            .await
            .map_err(StartError::Serve)?;
        let stop = shutdown.clone();
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Serve(e.to_string()))?;
        tracing::info!(%addr, "gRPC listening");
        grpc_addr = Some(addr);
        servers.spawn(async move {
            grpc.serve_with_incoming_shutdown(
                // Without TCP_NODELAY a reply of several frames (a page of
                // subscriptions) waits ~40 ms for the peer's delayed ack.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.cancelled_owned(),
            )
            .await
            .map_err(|e| e.to_string())
        });
    }
    started.set(true);
    startup::announce_ready(
        health.clone(),
        startup::ready_line(role.name(), grpc_addr, http_addr),
        work.clone(),
        &mut tasks,
    );

    shutdown.cancelled().await;
    tracing::info!("stopping: no new work, finishing what is in flight");
    let grace = config.shutdown_grace + Duration::from_secs(1);
    let drained = tokio::time::timeout(grace, async {
        while tasks.join_next().await.is_some() {}
        while let Some(result) = servers.join_next().await {
            if let Ok(Err(error)) = result {
                tracing::warn!(%error, "gRPC server stopped with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over, exiting with work unfinished (it will be redelivered)");
    }
    let _ = admin.await;
    client.flush().await.ok();
    Ok(())
}
