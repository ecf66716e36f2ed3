//! The subscription service: create, read, list, update and delete
//! subscriptions over gRPC, stored in a JetStream KV bucket.
#![forbid(unsafe_code)]

pub mod batch_spec;
pub mod error;
pub mod event_types;
pub mod request_spec;
pub mod retry_policy;
pub mod service;
pub mod store;
pub mod test_event;
pub mod validate;

pub use event_types::{Catalog, EventTypeService};
pub use service::SubscriptionService;
pub use store::Store;
