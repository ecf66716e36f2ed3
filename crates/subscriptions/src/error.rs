//! Errors of the subscription API, converted to `tonic::Status` here only.

use hookrelay_proto::auth::TenantError;
use tonic::{Code, Status};

/// Why a subscription request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{field}: {message}")]
    Unimplemented { field: String, message: String },
    #[error("subscription {0} not found")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("subscription {id} is at revision {current}, not {expected}: read it again and retry")]
    StaleRevision {
        id: String,
        expected: u64,
        current: u64,
    },
    #[error("subscription {0} was changed concurrently: read it again and retry")]
    Conflict(String),
    /// Not found; the message names what.
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Exists(String),
    /// A write refused because it would break what the current state
    /// promises (a schema change that is not backward compatible).
    #[error("{0}")]
    Incompatible(String),
    /// A write based on a revision that is no longer current.
    #[error("{0}")]
    Stale(String),
    #[error("subscription store unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A request's tenant field (`field`) that cannot be acted on, by the
    /// API's one rule: another tenant's is PERMISSION_DENIED, a missing or
    /// malformed one INVALID_ARGUMENT.
    pub fn tenant(field: &str, error: TenantError) -> Self {
        match error {
            TenantError::Foreign { .. } => ApiError::PermissionDenied(error.to_string()),
            _ => ApiError::invalid(field, error.problem()),
        }
    }

    pub fn unimplemented(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Unimplemented {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let code = match &error {
            ApiError::Invalid { .. } => Code::InvalidArgument,
            ApiError::Unimplemented { .. } => Code::Unimplemented,
            ApiError::NotFound(_) | ApiError::Missing(_) => Code::NotFound,
            ApiError::Exists(_) => Code::AlreadyExists,
            ApiError::Incompatible(_) | ApiError::Stale(_) => Code::FailedPrecondition,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::ResourceExhausted(_) => Code::ResourceExhausted,
            ApiError::StaleRevision { .. } | ApiError::Conflict(_) => Code::FailedPrecondition,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        };
        if code == Code::Internal || code == Code::Unavailable {
            tracing::error!(%error, "subscription request failed");
        }
        Status::new(code, error.to_string())
    }
}
