//! Errors of the subscription API, converted to `tonic::Status` here only.

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
            ApiError::NotFound(_) => Code::NotFound,
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
