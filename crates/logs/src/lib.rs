//! The log service: indexes every attempt record from the ATTEMPTS stream in
//! Redis, serves them over gRPC, and exports the delivery metrics.
#![forbid(unsafe_code)]

pub mod consumer;
pub mod events;
pub mod fleet;
pub mod health;
pub mod index;
pub mod metrics;
pub mod page_token;
pub mod replay;
pub mod service;

pub use consumer::AttemptConsumer;
pub use index::AttemptIndex;
pub use metrics::Metrics;
pub use replay::Replayer;
pub use service::LogService;
