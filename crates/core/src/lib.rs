//! What every hookrelay service shares: configuration, telemetry, shutdown,
//! NATS and Redis connections, resource names, and the event, subscription
//! and delivery model.
#![forbid(unsafe_code)]

pub mod circuit;
pub mod config;
pub mod delivery;
pub mod event;
pub mod failure;
pub mod health;
pub mod index;
pub mod key_upgrade;
pub mod metrics;
pub mod names;
pub mod nats;
pub mod ordered;
pub mod otlp;
pub mod redis;
pub mod retry;
pub mod shutdown;
pub mod signing;
pub mod subscription;
pub mod telemetry;
pub mod trace;

pub use config::Config;
pub use names::Names;
