//! The attempt index against the shared NATS and Redis, each test on a
//! fresh prefix.

mod common;
mod filters;
mod index;
mod memory;
