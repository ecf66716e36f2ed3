//! Request shapes between the API and the stored model, checked by compiling
//! the template and rendering it against a sample event: refused only for
//! what would fail on every event (see `Shaper::check`).

use hookrelay_core::subscription::{BodyFormat, Envelope, Method, RequestSpec};
use hookrelay_proto::v1 as pb;
use hookrelay_template::{sample_event, sample_event_type, Shaper};

use crate::error::ApiError;

const MAX_TEMPLATE: usize = 64 * 1024;

fn field(name: &str) -> String {
    format!("subscription.request.{name}")
}

fn optional(text: &str) -> Option<String> {
    (!text.trim().is_empty()).then(|| text.to_owned())
}

/// The stored spec of an API spec, compiled and test-rendered for `tenant`
/// and the first of `event_types`.
pub fn from_proto(
    request: &pb::RequestSpec,
    tenant: &str,
    event_types: &[String],
) -> Result<RequestSpec, ApiError> {
    let method = match request.method.to_ascii_uppercase().as_str() {
        "" | "POST" => Method::Post,
        "GET" => Method::Get,
        "PUT" => Method::Put,
        other => {
            return Err(ApiError::invalid(
                field("method"),
                format!("{other:?} is not one of GET, POST, PUT"),
            ))
        }
    };
    let body_format = match pb::BodyFormat::try_from(request.body_format) {
        Ok(pb::BodyFormat::Unspecified | pb::BodyFormat::Json) => BodyFormat::Json,
        Ok(pb::BodyFormat::Raw) => BodyFormat::Raw,
        Ok(pb::BodyFormat::JsonRpc) => BodyFormat::JsonRpc,
        Ok(pb::BodyFormat::Form) => BodyFormat::Form,
        Err(_) => {
            return Err(ApiError::invalid(
                field("body_format"),
                format!("unknown value {}", request.body_format),
            ))
        }
    };
    let envelope = match pb::Envelope::try_from(request.envelope) {
        Ok(pb::Envelope::Unspecified | pb::Envelope::Standard) => Envelope::Standard,
        Ok(pb::Envelope::EntityEvent) => Envelope::EntityEvent,
        Ok(pb::Envelope::ForumEvent) => Envelope::ForumEvent,
        Ok(pb::Envelope::Custom) => Envelope::Custom,
        Ok(pb::Envelope::ChangesBatch) => Envelope::ChangesBatch,
        Err(_) => {
            return Err(ApiError::invalid(
                field("envelope"),
                format!("unknown value {}", request.envelope),
            ))
        }
    };
    if request.template.len() > MAX_TEMPLATE {
        return Err(ApiError::invalid(
            field("template"),
            format!("at most {MAX_TEMPLATE} bytes"),
        ));
    }
    let spec = RequestSpec {
        method,
        body_format,
        envelope,
        template: optional(&request.template),
        jsonrpc_method: optional(&request.jsonrpc_method),
        date_format: optional(&request.date_format),
    };
    let shaper = Shaper::new(&spec).map_err(|e| ApiError::invalid(field(e.field), e.message))?;
    let event_type = sample_event_type(event_types);
    // A path the sample lacks renders `null`; what fails only on the
    // sample's data is left to real events (reported on their attempts).
    shaper
        .check(&sample_event(tenant, &event_type))
        .map_err(|e| {
            ApiError::invalid(
                field("template"),
                format!("does not render a sample event: {e}"),
            )
        })?;
    Ok(spec)
}

/// The API view of a stored spec and headers.
pub fn to_proto(
    spec: &RequestSpec,
    headers: &std::collections::BTreeMap<String, String>,
) -> pb::RequestSpec {
    pb::RequestSpec {
        method: match spec.method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
        .into(),
        headers: headers.clone().into_iter().collect(),
        body_format: match spec.body_format {
            BodyFormat::Json => pb::BodyFormat::Json,
            BodyFormat::Raw => pb::BodyFormat::Raw,
            BodyFormat::JsonRpc => pb::BodyFormat::JsonRpc,
            BodyFormat::Form => pb::BodyFormat::Form,
        } as i32,
        envelope: match spec.envelope {
            Envelope::Standard => pb::Envelope::Standard,
            Envelope::EntityEvent => pb::Envelope::EntityEvent,
            Envelope::ChangesBatch => pb::Envelope::ChangesBatch,
            Envelope::ForumEvent => pb::Envelope::ForumEvent,
            Envelope::Custom => pb::Envelope::Custom,
        } as i32,
        template: spec.template.clone().unwrap_or_default(),
        jsonrpc_method: spec.jsonrpc_method.clone().unwrap_or_default(),
        date_format: spec.date_format.clone().unwrap_or_default(),
    }
}
