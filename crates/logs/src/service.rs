//! The `hookrelay.v1.DeliveryLogs` gRPC service.

use hookrelay_core::delivery::AttemptRecord;
use hookrelay_core::subscription::Subscription;
use hookrelay_proto::auth::Caller;
use hookrelay_proto::timestamp;
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::delivery_logs_server::{DeliveryLogs, DeliveryLogsServer};
use tonic::{Request, Response, Status};

use chrono::{DateTime, Utc};

use crate::index::{AttemptIndex, Cursor, Filter, IndexError, Scope};
use crate::page_token::PageTokens;
use crate::replay::Replayer;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;

/// Serves attempts from the Redis index, replays, events and health.
#[derive(Clone)]
pub struct LogService {
    index: AttemptIndex,
    replayer: Replayer,
    bucket: async_nats::jetstream::kv::Store,
    tokens: PageTokens,
}

impl LogService {
    pub fn new(replayer: Replayer, bucket: async_nats::jetstream::kv::Store) -> Self {
        Self {
            index: replayer.index.clone(),
            tokens: PageTokens::new(&replayer.config),
            replayer,
            bucket,
        }
    }

    pub fn into_server(self) -> DeliveryLogsServer<Self> {
        DeliveryLogsServer::new(self)
    }
}

impl From<IndexError> for Status {
    fn from(error: IndexError) -> Self {
        tracing::error!(%error, "attempt index unavailable");
        Status::unavailable(error.to_string())
    }
}

/// The API view of an attempt record (ListAttempts, GetAttempt,
/// ListFailures, TailAttempts).
pub fn to_proto(record: AttemptRecord) -> pb::Attempt {
    // Records of earlier versions say them only through the response and
    // the reason.
    let status = u32::from(record.status());
    let error = record.error().to_owned();
    pb::Attempt {
        status,
        error,
        id: record.id,
        event_id: record.event_id,
        subscription_id: record.subscription_id,
        tenant: record.tenant,
        event_type: record.event_type,
        webhook_id: record.webhook_id,
        attempt: record.attempt,
        outcome: record.outcome.as_str().to_owned(),
        reason: record.reason,
        request: Some(hookrelay_proto::http_request(record.request)),
        response: record.response.map(hookrelay_proto::http_response),
        started_at: Some(timestamp(record.started_at)),
        duration_ms: record.duration_ms,
        next_attempt_at: record.next_attempt_at.map(timestamp),
        give_up_reason: record
            .give_up
            .map(|g| g.as_str().to_owned())
            .unwrap_or_default(),
        redelivery: record.redelivery,
        event_seq: record.event_seq,
        event_source: match record.source {
            hookrelay_core::delivery::Source::Event => "event",
            hookrelay_core::delivery::Source::Batch => "batch",
        }
        .to_owned(),
        trace_id: record.trace_id.unwrap_or_default(),
        schema_violation: record.schema_violation.unwrap_or_default(),
    }
}

fn time(at: &Option<prost_types::Timestamp>, field: &str) -> Result<Option<DateTime<Utc>>, Status> {
    at.as_ref()
        .map(|t| {
            DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                .ok_or_else(|| Status::invalid_argument(format!("{field}: out of range")))
        })
        .transpose()
}

fn page_limit(page_size: u32) -> Result<usize, Status> {
    match page_size {
        0 => Ok(DEFAULT_PAGE as usize),
        n if n > MAX_PAGE => Err(Status::invalid_argument(format!(
            "page_size: at most {MAX_PAGE}"
        ))),
        n => Ok(n as usize),
    }
}

/// What a page token of an attempt listing is bound to: its scope, its
/// filters and who asked.
fn binding(scope: &Scope, filter: &Filter, caller: &Caller) -> String {
    format!(
        "attempts|{scope:?}|{:?}|{:?}|{:?}|{}",
        filter.outcome,
        filter.since.map(|t| t.timestamp_millis()),
        filter.until.map(|t| t.timestamp_millis()),
        caller.tenant().unwrap_or("*")
    )
}

/// The outcome filter of a `ListAttempts` request: one hookrelay records,
/// or none.
fn outcome_filter(outcome: &str) -> Result<Option<String>, Status> {
    match outcome {
        "" => Ok(None),
        name if crate::index::layout::outcome_code(name).is_some() => Ok(Some(name.to_owned())),
        name => Err(Status::invalid_argument(format!(
            "outcome: {name:?} is not an outcome (one of {})",
            crate::index::layout::OUTCOMES
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

impl LogService {
    /// Subscription `id` of `tenant` (as [`Caller::tenant_for`] resolved
    /// it); another tenant's is NOT_FOUND, exactly like a missing one.
    async fn owned(&self, tenant: &str, id: &str) -> Result<Subscription, Status> {
        let subscription = self.read_subscription(id).await?;
        if subscription.tenant == tenant {
            Ok(subscription)
        } else {
            Err(subscription_not_found(id))
        }
    }

    async fn read_subscription(&self, id: &str) -> Result<Subscription, Status> {
        let not_found = || subscription_not_found(id);
        if id.is_empty() {
            return Err(Status::invalid_argument("subscription_id is required"));
        }
        let entry = self
            .bucket
            .entry(id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
            .ok_or_else(not_found)?;
        serde_json::from_slice(&entry.value)
            .map_err(|e| Status::internal(format!("unreadable subscription: {e}")))
    }

    /// One page of `scope`'s attempts that `caller` may see, with an
    /// opaque token for the next, valid only for this very listing.
    async fn listing(
        &self,
        caller: &Caller,
        scope: &Scope,
        filter: &Filter,
        page_size: u32,
        page_token: &str,
    ) -> Result<Response<pb::ListAttemptsResponse>, Status> {
        let limit = page_limit(page_size)?;
        let binding = binding(scope, filter, caller);
        let before = (!page_token.is_empty())
            .then(|| self.tokens.read(&binding, page_token))
            .transpose()
            .map_err(|e| Status::invalid_argument(format!("page_token: {e}")))?
            .map(|[ms, seq]| Cursor { ms, seq });
        let page = self.index.list(scope, filter, before, limit).await?;
        Ok(Response::new(pb::ListAttemptsResponse {
            // Every scope is within one tenant already; checked once more.
            attempts: page
                .records
                .into_iter()
                .filter(|record| caller.sees(&record.tenant))
                .map(to_proto)
                .collect(),
            next_page_token: page
                .next
                .map(|c| self.tokens.issue(&binding, [c.ms, c.seq]))
                .unwrap_or_default(),
        }))
    }
}

fn subscription_not_found(id: &str) -> Status {
    Status::not_found(format!("subscription {id} not found"))
}

/// Attempts as they are recorded, for `TailAttempts`.
type AttemptStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::Attempt, Status>> + Send>>;

#[tonic::async_trait]
impl DeliveryLogs for LogService {
    type TailAttemptsStream = AttemptStream;

    async fn tail_attempts(
        &self,
        request: Request<pb::TailAttemptsRequest>,
    ) -> Result<Response<AttemptStream>, Status> {
        use futures::StreamExt;
        let caller = Caller::of(&request);
        let request = request.into_inner();
        // One tenant, checked as a single subject token (a wildcard or a dot
        // would widen the subject).
        let tenant = caller.tenant_for(&request.tenant)?;
        let subscription = match request.subscription_id.as_str() {
            "" => "*".to_owned(),
            id => self.owned(&tenant, id).await?.id,
        };
        let subject = self
            .replayer
            .config
            .names()
            .attempt_subject(&tenant, &subscription);
        let client = self.replayer.js.client();
        let subscriber = client
            .subscribe(subject)
            .await
            .map_err(|e| Status::unavailable(format!("cannot follow attempts: {e}")))?;
        // Subscribed before the first attempt is awaited: none is missed
        // from the moment the call is answered.
        client
            .flush()
            .await
            .map_err(|e| Status::unavailable(format!("cannot follow attempts: {e}")))?;
        let attempts = subscriber.filter_map(move |message| {
            let record = serde_json::from_slice::<AttemptRecord>(&message.payload)
                .ok()
                .filter(|record| record.tenant == tenant);
            async move { record.map(|record| Ok(to_proto(record))) }
        });
        Ok(Response::new(Box::pin(attempts)))
    }

    async fn list_attempts(
        &self,
        request: Request<pb::ListAttemptsRequest>,
    ) -> Result<Response<pb::ListAttemptsResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        // A request naming the wrong fields is refused before any lookup.
        let tenant = caller.tenant_for(&request.tenant)?;
        let filter = Filter {
            outcome: outcome_filter(&request.outcome)?,
            since: time(&request.since, "since")?,
            until: time(&request.until, "until")?,
        };
        if let (Some(since), Some(until)) = (filter.since, filter.until) {
            if until <= since {
                return Err(Status::invalid_argument(
                    "until: must be after since (the window is [since, until))",
                ));
            }
        }
        let subscription = match request.subscription_id.as_str() {
            "" => None,
            id => Some(self.owned(&tenant, id).await?.id),
        };
        let scope = Scope::Attempts {
            tenant,
            subscription,
            event: (!request.event_id.is_empty()).then(|| request.event_id.clone()),
        };
        self.listing(
            &caller,
            &scope,
            &filter,
            request.page_size,
            &request.page_token,
        )
        .await
    }

    async fn get_attempt(
        &self,
        request: Request<pb::GetAttemptRequest>,
    ) -> Result<Response<pb::Attempt>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let tenant = caller.tenant_for(&request.tenant)?;
        let id = request.id;
        if !id.starts_with("att_") {
            return Err(Status::invalid_argument(format!(
                "id: {id:?} is not an attempt id (att_<ULID>)"
            )));
        }
        match self.index.get(&id).await? {
            Some(record) if record.tenant == tenant => Ok(Response::new(to_proto(record))),
            _ => Err(Status::not_found(format!(
                "attempt {id} not found (or older than the retention)"
            ))),
        }
    }

    async fn list_failures(
        &self,
        request: Request<pb::ListFailuresRequest>,
    ) -> Result<Response<pb::ListAttemptsResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let tenant = caller.tenant_for(&request.tenant)?;
        let scope = match request.subscription_id.as_str() {
            "" => Scope::TenantFailures(tenant),
            id => Scope::SubscriptionFailures(self.owned(&tenant, id).await?.id),
        };
        let filter = Filter {
            outcome: None,
            since: time(&request.since, "since")?,
            until: time(&request.until, "until")?,
        };
        self.listing(
            &caller,
            &scope,
            &filter,
            request.page_size,
            &request.page_token,
        )
        .await
    }

    async fn redeliver(
        &self,
        request: Request<pb::RedeliverRequest>,
    ) -> Result<Response<pb::RedeliverResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let tenant = caller.tenant_for(&request.tenant)?;
        let subscription = self.owned(&tenant, &request.subscription_id).await?;
        let webhook_id = self
            .replayer
            .redeliver(
                &subscription.tenant,
                &request.event_id,
                &request.subscription_id,
            )
            .await?;
        Ok(Response::new(pb::RedeliverResponse { webhook_id }))
    }

    async fn recover_failed(
        &self,
        request: Request<pb::RecoverFailedRequest>,
    ) -> Result<Response<pb::RecoverFailedResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let tenant = caller.tenant_for(&request.tenant)?;
        self.owned(&tenant, &request.subscription_id).await?;
        let since = time(&request.since, "since")?
            .ok_or_else(|| Status::invalid_argument("since: is required"))?;
        let until = time(&request.until, "until")?.unwrap_or_else(Utc::now);
        let event_ids = self
            .replayer
            .recover(&request.subscription_id, since, until)
            .await?;
        Ok(Response::new(pb::RecoverFailedResponse { event_ids }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let caller = Caller::of(&request);
        let mut request = request.into_inner();
        request.tenant = caller.tenant_for(&request.tenant)?;
        let (events, next_page_token) = crate::events::list(
            &self.replayer.js,
            &self.replayer.config,
            &self.tokens,
            caller.tenant().unwrap_or("*"),
            &request,
        )
        .await?;
        Ok(Response::new(pb::ListEventsResponse {
            events,
            next_page_token,
        }))
    }

    async fn get_subscription_health(
        &self,
        request: Request<pb::GetSubscriptionHealthRequest>,
    ) -> Result<Response<pb::SubscriptionHealth>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let tenant = caller.tenant_for(&request.tenant)?;
        let id = request.subscription_id;
        let enabled = self.owned(&tenant, &id).await?.enabled;
        let health = self.index.health(&id).await?;
        Ok(Response::new(crate::health::to_proto(
            &id, enabled, &health,
        )))
    }
}
