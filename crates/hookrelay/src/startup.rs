//! Startup helpers: waiting for dependencies, Redis readiness, the gRPC router.

use std::future::Future;
use std::time::Duration;

use hookrelay_core::health::{Flag, Health};
use hookrelay_core::redis::Redis;
use hookrelay_logs::LogService;
use hookrelay_proto::auth::Authenticator;
use hookrelay_proto::v1::delivery_logs_server::DeliveryLogsServer;
use hookrelay_proto::v1::event_types_server::EventTypesServer;
use hookrelay_proto::v1::subscriptions_server::SubscriptionsServer;
use hookrelay_subscriptions::{EventTypeService, SubscriptionService};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::StartError;

/// Retries `step` with backoff (up to 5 s apart) until it succeeds; `None`
/// if shut down first. Each different error is logged once, as a warning
/// (repeats at debug level), so a log says what is wrong without a line a
/// second.
pub async fn retry_until<T, E, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut step: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = hookrelay_core::failure::Backoff::up_to(Duration::from_secs(5));
    let mut last = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            result = step() => match result {
                Ok(value) => {
                    if last.is_some() {
                        tracing::info!("{what}: done");
                    }
                    return Some(value);
                }
                Err(error) => {
                    let error = error.to_string();
                    if last.as_ref() != Some(&error) {
                        tracing::warn!("cannot {what} yet: {error} (retrying with backoff)");
                    } else {
                        tracing::debug!("cannot {what} yet: {error} (retrying with backoff)");
                    }
                    last = Some(error);
                }
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(pause.failed()) => {}
        }
    }
}

/// Whether JetStream can be used, in words an operator acts on: NATS
/// unreachable, or reachable without JetStream, rather than the client's
/// "jetstream request timed out" / "jetstream unavailable".
pub async fn jetstream_usable(client: &async_nats::Client, url: &str) -> Result<(), String> {
    use async_nats::connection::State;
    // The client connects in the background: give a first attempt time.
    for _ in 0..40 {
        if client.connection_state() == State::Connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if client.connection_state() != State::Connected {
        return Err(format!(
            "NATS at {url} is unreachable: start nats-server with JetStream (nats-server -js, or scripts/services.sh) or point nats.url (HOOKRELAY_NATS__URL) at one"
        ));
    }
    // The account info request, which only JetStream answers (the reply is
    // not parsed: its shape varies between server versions).
    let request = client.request("$JS.API.INFO", Default::default());
    match tokio::time::timeout(Duration::from_secs(5), request).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) if error.kind() == async_nats::RequestErrorKind::NoResponders => Err(format!(
            "JetStream is not enabled on the NATS server at {url}: start nats-server with -js"
        )),
        Ok(Err(error)) if error.kind() != async_nats::RequestErrorKind::TimedOut => {
            Err(format!("JetStream at {url}: {error}"))
        }
        _ => Err(format!(
            "the NATS server at {url} does not answer JetStream requests: is it reachable, and started with -js?"
        )),
    }
}

/// The line logged once every service is ready: where to reach it and
/// what to do next.
pub fn ready_line(
    role: &str,
    grpc: Option<std::net::SocketAddr>,
    http: std::net::SocketAddr,
) -> String {
    match grpc {
        Some(grpc) => format!(
            "ready ({role}): gRPC on {grpc}, e.g. `hookctl --server {grpc} subscription list --tenant acme`; /healthz, /readyz, /metrics on http://{http}; Ctrl-C stops"
        ),
        None => format!("ready ({role}): /healthz, /readyz, /metrics on http://{http}"),
    }
}

/// Logs `line` once, when every readiness check first passes.
pub fn announce_ready(
    health: Health,
    line: String,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(async move {
        loop {
            if health.report().0 {
                tracing::info!("{line}");
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
}

/// Pings Redis every second; `/readyz` reports it down (as `flag`'s name,
/// "redis") when pings fail. Sets `flag`: Redis was just reached.
pub fn watch_redis(flag: Flag, redis: Redis, shutdown: CancellationToken, tasks: &mut JoinSet<()>) {
    flag.set(true);
    tasks.spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let mut conn = redis.clone();
            let ping = tokio::time::timeout(
                Duration::from_secs(2),
                redis::cmd("PING").query_async::<String>(&mut conn),
            )
            .await;
            let up = matches!(ping, Ok(Ok(_)));
            if up != flag.get() {
                match ping {
                    Ok(Ok(_)) => tracing::info!("redis reachable again"),
                    Ok(Err(error)) => tracing::warn!(%error, "redis unreachable"),
                    Err(_) => tracing::warn!("redis unreachable: no answer to PING within 2s"),
                }
            }
            flag.set(up);
        }
    });
}

/// Reads `auth.tokens_file` again on every SIGHUP, so tokens rotate
/// without a restart; a file that no longer reads is logged and the tokens
/// in use are kept. Also keeps SIGHUP from stopping the process.
pub fn reload_tokens_on_hangup(
    auth: Authenticator,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(), StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| StartError::Serve(format!("cannot handle SIGHUP: {e}")))?;
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = hangups.recv() => {}
            }
            if auth.tokens_file().is_empty() {
                tracing::info!("SIGHUP: no auth.tokens_file to read again");
                continue;
            }
            match auth.reload() {
                Ok(tokens) => tracing::info!(
                    tokens,
                    file = auth.tokens_file(),
                    "SIGHUP: API tokens read again"
                ),
                Err(error) => tracing::error!(%error, "SIGHUP: keeping the API tokens in use"),
            }
        }
    });
    Ok(())
}

/// Carries keys of the layout before hash tags over, now and every five
/// minutes after (replicas of the old version may still write them while a
/// rolling upgrade goes on); services start meanwhile, since a moved key
/// merges into one they already use. Every key is scanned until a scan
/// finds nothing to move, then only when an old replica is seen writing
/// (`key_upgrade::KeyUpgrade`).
pub fn upgrade_redis_keys(
    redis: Redis,
    names: hookrelay_core::Names,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(async move {
        let mut upgrade = hookrelay_core::key_upgrade::KeyUpgrade::new(&names);
        loop {
            if let Err(error) = upgrade.run(&redis).await {
                tracing::warn!(%error, "cannot move redis keys to the tagged layout yet");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(300)) => {}
            }
        }
    });
}

/// The gRPC router: the given services, gRPC health and reflection, with
/// the gRPC server metrics registered on `registry`.
pub async fn grpc_router(
    subscriptions: Option<SubscriptionService>,
    event_types: Option<EventTypeService>,
    logs: Option<LogService>,
    auth: Authenticator,
    registry: &prometheus::Registry,
) -> Result<tonic::transport::server::Router, String> {
    use tonic::server::NamedService;
    let mut served = vec![
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    if subscriptions.is_some() {
        served.push(SubscriptionsServer::<SubscriptionService>::NAME);
    }
    if event_types.is_some() {
        served.push(EventTypesServer::<EventTypeService>::NAME);
    }
    if logs.is_some() {
        served.push(DeliveryLogsServer::<LogService>::NAME);
    }
    let methods = hookrelay_proto::grpc_methods(&[
        hookrelay_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])
    .into_iter()
    .filter(|(service, _)| served.contains(&service.as_str()));
    let metrics = hookrelay_core::metrics::GrpcMetrics::register(registry, methods)
        .map_err(|e| format!("gRPC metrics: {e}"))?;
    let (reporter, health) = tonic_health::server::health_reporter();
    // v1 and v1alpha: older grpcurl and Postman builds speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hookrelay_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| format!("gRPC reflection: {e}"))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| format!("gRPC reflection: {e}"))?;
    if subscriptions.is_some() {
        reporter
            .set_serving::<SubscriptionsServer<SubscriptionService>>()
            .await;
    }
    if event_types.is_some() {
        reporter
            .set_serving::<EventTypesServer<EventTypeService>>()
            .await;
    }
    if logs.is_some() {
        reporter
            .set_serving::<DeliveryLogsServer<LogService>>()
            .await;
    }
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // Health and reflection stay open; the API needs a bearer token.
    if let Some(subscriptions) = subscriptions {
        let auth = auth.clone();
        routes.add_service(tonic::service::interceptor::InterceptedService::new(
            subscriptions.into_server(),
            move |request| auth.check(request),
        ));
    }
    if let Some(event_types) = event_types {
        let auth = auth.clone();
        routes.add_service(tonic::service::interceptor::InterceptedService::new(
            event_types.into_server(),
            move |request| auth.check(request),
        ));
    }
    if let Some(logs) = logs {
        routes.add_service(tonic::service::interceptor::InterceptedService::new(
            logs.into_server(),
            move |request| auth.check(request),
        ));
    }
    let routes = tonic::service::Routes::from(metrics.layer(routes.routes().into_axum_router()));
    Ok(tonic::transport::Server::builder().add_routes(routes))
}
