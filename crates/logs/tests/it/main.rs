//! The attempt index against the shared NATS and Redis, each test on a
//! fresh prefix.

mod common;
mod index;
mod memory;
