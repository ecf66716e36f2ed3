//! Generated gRPC types and services of `proto/hookrelay/v1`.

pub mod auth;

/// `hookrelay.v1`: subscriptions and delivery logs.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("hookrelay.v1");
}

/// Encoded file descriptor set of every hookrelay proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hookrelay_descriptor.bin"));

/// A protobuf timestamp of an instant.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// The API view of a request as sent.
pub fn http_request(request: hookrelay_core::delivery::RecordedRequest) -> v1::HttpRequest {
    v1::HttpRequest {
        method: request.method,
        url: request.url,
        headers: headers(request.headers),
        body: request.body.into_bytes(),
        body_size: request.body_size,
        body_sha256: request.body_sha256,
        body_truncated: request.body_truncated,
    }
}

/// The API view of a response as received.
pub fn http_response(response: hookrelay_core::delivery::RecordedResponse) -> v1::HttpResponse {
    v1::HttpResponse {
        status: response.status as u32,
        headers: headers(response.headers),
        body: response.body.into_bytes(),
        body_truncated: response.body_truncated,
    }
}

fn headers(headers: Vec<(String, String)>) -> Vec<v1::Header> {
    headers
        .into_iter()
        .map(|(name, value)| v1::Header { name, value })
        .collect()
}

/// `(service, method)` of every RPC the encoded descriptor sets declare
/// (`hookrelay.v1.Subscriptions`, `CreateSubscription`): the bounded label
/// values of the gRPC server metrics.
pub fn grpc_methods(descriptor_sets: &[&[u8]]) -> Vec<(String, String)> {
    use prost::Message as _;
    let mut methods = Vec::new();
    for set in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
            continue;
        };
        for file in set.file {
            let package = file.package.clone().unwrap_or_default();
            for service in &file.service {
                let service_name = if package.is_empty() {
                    service.name().to_owned()
                } else {
                    format!("{package}.{}", service.name())
                };
                for method in &service.method {
                    methods.push((service_name.clone(), method.name().to_owned()));
                }
            }
        }
    }
    methods
}
