//! Startup helpers: waiting for dependencies, Redis readiness, the gRPC router.

use std::future::Future;
use std::time::Duration;

use hookrelay_core::health::Health;
use hookrelay_core::redis::Redis;
use hookrelay_logs::LogService;
use hookrelay_proto::auth::Authenticator;
use hookrelay_proto::v1::delivery_logs_server::DeliveryLogsServer;
use hookrelay_proto::v1::subscriptions_server::SubscriptionsServer;
use hookrelay_subscriptions::SubscriptionService;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Retries `step` every second until it succeeds; `None` if shut down first.
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
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            result = step() => match result {
                Ok(value) => return Some(value),
                Err(error) => tracing::warn!(%error, "cannot {what} yet, retrying"),
            },
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(pause.failed()) => {}
        }
    }
}

/// Pings Redis every second; `/readyz` reports it down when pings fail.
pub fn watch_redis(
    health: &Health,
    redis: Redis,
    shutdown: CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let flag = health.flag("redis");
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

/// The gRPC router: the given services, gRPC health and reflection.
pub async fn grpc_router(
    subscriptions: Option<SubscriptionService>,
    logs: Option<LogService>,
    auth: Authenticator,
) -> Result<tonic::transport::server::Router, String> {
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
    if let Some(logs) = logs {
        routes.add_service(tonic::service::interceptor::InterceptedService::new(
            logs.into_server(),
            move |request| auth.check(request),
        ));
    }
    Ok(tonic::transport::Server::builder().add_routes(routes.routes()))
}
