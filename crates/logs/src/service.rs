//! The `hookrelay.v1.DeliveryLogs` gRPC service.

use hookrelay_core::delivery::AttemptRecord;
use hookrelay_proto::timestamp;
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::delivery_logs_server::{DeliveryLogs, DeliveryLogsServer};
use tonic::{Request, Response, Status};

use crate::index::{AttemptIndex, IndexError, Scope};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;

/// Serves attempts from the Redis index.
#[derive(Clone)]
pub struct LogService {
    index: AttemptIndex,
}

impl LogService {
    pub fn new(index: AttemptIndex) -> Self {
        Self { index }
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

/// The API view of an attempt record.
pub fn to_proto(record: AttemptRecord) -> pb::Attempt {
    pb::Attempt {
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
    }
}

#[tonic::async_trait]
impl DeliveryLogs for LogService {
    async fn list_attempts(
        &self,
        request: Request<pb::ListAttemptsRequest>,
    ) -> Result<Response<pb::ListAttemptsResponse>, Status> {
        let request = request.into_inner();
        let scopes: Vec<Scope> = [
            (!request.subscription_id.is_empty())
                .then(|| Scope::Subscription(request.subscription_id.clone())),
            (!request.event_id.is_empty()).then(|| Scope::Event(request.event_id.clone())),
            (!request.tenant.is_empty()).then(|| Scope::Tenant(request.tenant.clone())),
        ]
        .into_iter()
        .flatten()
        .collect();
        let [scope] = scopes.as_slice() else {
            return Err(Status::invalid_argument(
                "exactly one of subscription_id, event_id or tenant must be set",
            ));
        };
        let limit = match request.page_size {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "page_size: at most {MAX_PAGE}"
                )))
            }
            n => n,
        };
        let before = (!request.page_token.is_empty()).then_some(request.page_token.as_str());
        if before.is_some_and(|t| !t.starts_with("att_")) {
            return Err(Status::invalid_argument(
                "page_token: not a token returned by ListAttempts",
            ));
        }
        let (records, more) = self.index.list(scope, before, limit as usize).await?;
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => last.id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListAttemptsResponse {
            attempts: records.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_attempt(
        &self,
        request: Request<pb::GetAttemptRequest>,
    ) -> Result<Response<pb::Attempt>, Status> {
        let id = request.into_inner().id;
        if !id.starts_with("att_") {
            return Err(Status::invalid_argument(format!(
                "id: {id:?} is not an attempt id (att_<ULID>)"
            )));
        }
        match self.index.get(&id).await? {
            Some(record) => Ok(Response::new(to_proto(record))),
            None => Err(Status::not_found(format!(
                "attempt {id} not found (or older than the retention)"
            ))),
        }
    }
}
