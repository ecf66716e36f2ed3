//! The `hookrelay.v1.Subscriptions` gRPC service.

use std::time::Duration;

use chrono::Utc;
use hookrelay_core::signing::generate_secret;
use hookrelay_core::subscription::{StoredSecret, Subscription};
use hookrelay_dispatcher::sender::Sender;
use hookrelay_proto::auth::Caller;
use hookrelay_proto::timestamp;
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::subscriptions_server::{Subscriptions, SubscriptionsServer};
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::event_types::Catalog;
use crate::store::Store;
use crate::validate::{self, Spec};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;

/// Serves subscriptions from the KV store.
#[derive(Clone)]
pub struct SubscriptionService {
    store: Store,
    sender: Sender,
    default_timeout: Duration,
    max_per_tenant: usize,
    in_flight: validate::InFlightBounds,
    catalog: Catalog,
}

impl SubscriptionService {
    /// `sender` serves SendTestEvent; `config` gives the defaults and
    /// limits subscriptions are checked against.
    pub fn new(
        store: Store,
        sender: Sender,
        catalog: Catalog,
        config: &hookrelay_core::Config,
    ) -> Self {
        Self {
            store,
            sender,
            catalog,
            default_timeout: config.dispatcher.default_timeout,
            max_per_tenant: config.limits.max_subscriptions_per_tenant,
            in_flight: validate::InFlightBounds::of(config),
        }
    }

    /// Refuses destinations the guard would refuse at delivery time.
    async fn check_destination(&self, url: &str) -> Result<(), ApiError> {
        self.sender
            .guard()
            .check_url(url)
            .await
            .map_err(|m| ApiError::invalid("subscription.url", m))
    }

    /// Where the tenant's catalog is strict, every pattern must match a
    /// catalogued type that is not archived.
    async fn check_catalogued(&self, tenant: &str, patterns: &[String]) -> Result<(), ApiError> {
        let index = self.catalog.caught_up().await?;
        if !index.settings(tenant).strict {
            return Ok(());
        }
        for (i, pattern) in patterns.iter().enumerate() {
            if !index.has_match(tenant, pattern) {
                return Err(ApiError::invalid(
                    format!("subscription.event_types[{i}]"),
                    format!(
                        "{pattern:?} matches no event type of tenant {tenant}'s catalog, which is strict: create the type first (EventTypes.CreateEventType) or make the catalog not strict"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Subscription `id` of `tenant` (as [`tenant_of`] resolved it);
    /// another tenant's is NOT_FOUND, exactly like a missing one.
    async fn owned(&self, tenant: &str, id: &str) -> Result<Subscription, ApiError> {
        if id.is_empty() {
            return Err(ApiError::invalid("id", "is required"));
        }
        let sub = self.store.get(id).await?;
        if sub.tenant == tenant {
            Ok(sub)
        } else {
            Err(ApiError::NotFound(id.to_owned()))
        }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> SubscriptionsServer<Self> {
        SubscriptionsServer::new(self)
    }
}

fn apply(sub: &mut Subscription, spec: Spec) {
    sub.tenant = spec.tenant;
    sub.name = spec.name;
    sub.description = spec.description;
    sub.url = spec.url;
    sub.event_types = spec.event_types;
    sub.label_filter = spec.label_filter;
    sub.enabled = spec.enabled;
    sub.headers = spec.headers;
    sub.request = spec.request;
    sub.success_rule = spec.success_rule;
    sub.timeout = spec.timeout;
    sub.max_in_flight = spec.max_in_flight;
    sub.retry_policy = spec.retry_policy;
    sub.circuit = spec.circuit;
    sub.rate_limit = spec.rate_limit;
    sub.ordering = spec.ordering;
    sub.batch = spec.batch;
}

/// The API view of a stored subscription (secrets never leave here).
pub fn to_proto(sub: &Subscription) -> pb::Subscription {
    use hookrelay_core::subscription::{DeliveryOrder, SuccessRule};
    pb::Subscription {
        id: sub.id.clone(),
        tenant: sub.tenant.clone(),
        name: sub.name.clone(),
        description: sub.description.clone(),
        url: sub.url.clone(),
        event_types: sub.event_types.clone(),
        label_filter: sub.label_filter.clone().into_iter().collect(),
        enabled: Some(sub.enabled),
        request: Some(crate::request_spec::to_proto(&sub.request, &sub.headers)),
        success_rule: match sub.success_rule {
            SuccessRule::Any2xx => pb::SuccessRule::Any2xx,
            SuccessRule::Status200 => pb::SuccessRule::Status200,
        } as i32,
        retry_policy: sub.retry_policy.as_ref().map(crate::retry_policy::to_proto),
        batch: sub.batch.as_ref().map(crate::batch_spec::to_proto),
        timeout: sub
            .timeout
            .and_then(|t| prost_types::Duration::try_from(t).ok()),
        max_in_flight: sub.max_in_flight.unwrap_or(0),
        ordering: match sub.ordering {
            DeliveryOrder::Any => pb::Ordering::Unspecified,
            DeliveryOrder::Fifo => pb::Ordering::Fifo,
        } as i32,
        rate_limit: sub.rate_limit.map(|r| pb::RateLimit {
            per_second: r.per_second,
            burst: r.burst,
        }),
        circuit: sub.circuit.as_ref().map(|c| pb::CircuitSpec {
            failing_after: c.failing_after.unwrap_or(0),
            open_after: c.open_after.unwrap_or(0),
            disable_after: c
                .disable_after
                .and_then(|d| prost_types::Duration::try_from(d).ok()),
        }),
        created_at: Some(timestamp(sub.created_at)),
        updated_at: Some(timestamp(sub.updated_at)),
        revision: sub.revision,
    }
}

/// The tenant a request acts on, by the API's one rule
/// ([`Caller::tenant_for`]); `field` is where the request holds it
/// (`tenant`, or `subscription.tenant`).
fn tenant_of(caller: &Caller, named: &str, field: &str) -> Result<String, ApiError> {
    caller
        .tenant_for(named)
        .map_err(|error| ApiError::tenant(field, error))
}

/// A stale `expected` (0 skips the check) is refused before any write.
fn check_revision(sub: &Subscription, expected: u64) -> Result<(), ApiError> {
    if expected != 0 && expected != sub.revision {
        return Err(ApiError::StaleRevision {
            id: sub.id.clone(),
            expected,
            current: sub.revision,
        });
    }
    Ok(())
}

fn required(sub: Option<pb::Subscription>) -> Result<pb::Subscription, ApiError> {
    sub.ok_or_else(|| ApiError::invalid("subscription", "is required"))
}

#[tonic::async_trait]
impl Subscriptions for SubscriptionService {
    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::CreateSubscriptionResponse>, Status> {
        let caller = Caller::of(&request);
        let mut input = required(request.into_inner().subscription)?;
        input.tenant = tenant_of(&caller, &input.tenant, "subscription.tenant")?;
        if !input.id.is_empty() {
            return Err(ApiError::invalid(
                "subscription.id",
                "is minted by the server; leave it empty",
            )
            .into());
        }
        let spec = validate::spec(&input)?;
        self.in_flight.check(&spec)?;
        self.check_catalogued(&spec.tenant, &spec.event_types)
            .await?;
        self.check_destination(&spec.url).await?;
        let now = Utc::now();
        let secret = generate_secret();
        let mut sub = Subscription {
            id: Store::mint_id(),
            tenant: String::new(),
            name: String::new(),
            description: String::new(),
            url: String::new(),
            event_types: Vec::new(),
            label_filter: Default::default(),
            enabled: true,
            headers: Default::default(),
            request: Default::default(),
            success_rule: Default::default(),
            timeout: None,
            max_in_flight: None,
            retry_policy: None,
            circuit: None,
            ordering: Default::default(),
            rate_limit: None,
            batch: None,
            secrets: vec![StoredSecret {
                secret: secret.clone(),
                created_at: now,
                expires_at: None,
            }],
            created_at: now,
            updated_at: now,
            revision: 0,
        };
        apply(&mut sub, spec);
        let sub = self.store.create(sub, self.max_per_tenant).await?;
        tracing::info!(subscription = %sub.id, tenant = %sub.tenant, "subscription created");
        Ok(Response::new(pb::CreateSubscriptionResponse {
            subscription: Some(to_proto(&sub)),
            secret,
        }))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let tenant = tenant_of(&caller, &request.tenant, "tenant")?;
        let sub = self.owned(&tenant, &request.id).await?;
        Ok(Response::new(to_proto(&sub)))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let tenant = tenant_of(&caller, &request.tenant, "tenant")?;
        let limit = match request.page_size {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(ApiError::invalid("page_size", format!("at most {MAX_PAGE}")).into())
            }
            n => n,
        };
        let (subs, more) = self
            .store
            .list(&tenant, &request.page_token, limit as usize)
            .await?;
        let next_page_token = match (more, subs.last()) {
            (true, Some(last)) => last.id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: subs.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<pb::UpdateSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let mut input = required(request.subscription)?;
        input.tenant = tenant_of(&caller, &input.tenant, "subscription.tenant")?;
        // Another tenant's subscription is not found, so the tenant of a
        // subscription never changes.
        let mut sub = self.owned(&input.tenant, &input.id).await?;
        check_revision(&sub, request.expected_revision)?;
        let spec = validate::spec(&input)?;
        self.in_flight.check(&spec)?;
        if spec.event_types != sub.event_types {
            self.check_catalogued(&spec.tenant, &spec.event_types)
                .await?;
        }
        if spec.url != sub.url {
            self.check_destination(&spec.url).await?;
        }
        let revision = sub.revision;
        apply(&mut sub, spec);
        sub.updated_at = Utc::now();
        let sub = self.store.update(sub, revision).await?;
        tracing::info!(subscription = %sub.id, revision = sub.revision, "subscription updated");
        Ok(Response::new(to_proto(&sub)))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let tenant = tenant_of(&caller, &request.tenant, "tenant")?;
        let sub = self.owned(&tenant, &request.id).await?;
        check_revision(&sub, request.expected_revision)?;
        self.store.delete(&sub, sub.revision).await?;
        tracing::info!(subscription = %sub.id, "subscription deleted");
        Ok(Response::new(pb::DeleteSubscriptionResponse {}))
    }

    async fn send_test_event(
        &self,
        request: Request<pb::SendTestEventRequest>,
    ) -> Result<Response<pb::SendTestEventResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let tenant = tenant_of(&caller, &request.tenant, "tenant")?;
        let sub = self.owned(&tenant, &request.id).await?;
        let catalog = self.catalog.caught_up().await?;
        let event =
            crate::test_event::event_for(&sub, &request.event_type, &request.data, catalog)?;
        let response =
            crate::test_event::send(&self.sender, self.default_timeout, &sub, &event).await?;
        tracing::info!(subscription = %sub.id, outcome = %response.outcome, "test event sent");
        Ok(Response::new(response))
    }

    async fn rotate_secret(
        &self,
        request: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::RotateSecretResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let tenant = tenant_of(&caller, &request.tenant, "tenant")?;
        let grace = match request.grace {
            None => Duration::from_secs(24 * 3600),
            Some(grace) => Duration::try_from(grace)
                .ok()
                .filter(|g| *g <= Duration::from_secs(7 * 24 * 3600))
                .ok_or_else(|| ApiError::invalid("grace", "must be between 0s and 7 days"))?,
        };
        let mut sub = self.owned(&tenant, &request.id).await?;
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(grace).expect("grace fits");
        // Earlier rotations' secrets that already stopped signing are dropped.
        sub.secrets
            .retain(|s| s.expires_at.is_none_or(|at| at > now));
        for previous in &mut sub.secrets {
            previous.expires_at = Some(
                previous
                    .expires_at
                    .map_or(expires_at, |at| at.min(expires_at)),
            );
        }
        let secret = generate_secret();
        sub.secrets.push(StoredSecret {
            secret: secret.clone(),
            created_at: now,
            expires_at: None,
        });
        sub.updated_at = now;
        let revision = sub.revision;
        let sub = self.store.update(sub, revision).await?;
        tracing::info!(subscription = %sub.id, "signing secret rotated");
        Ok(Response::new(pb::RotateSecretResponse {
            secret,
            previous_expires_at: Some(timestamp(expires_at)),
        }))
    }
}
