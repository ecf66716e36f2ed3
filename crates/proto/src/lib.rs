//! Generated gRPC types and services of `proto/hookrelay/v1`.

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
