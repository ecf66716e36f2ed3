//! Test fixtures: per-test NATS/Redis isolation, a scriptable HTTP receiver,
//! and waiting on conditions with deadlines.
#![forbid(unsafe_code)]

pub mod env;
pub mod receiver;
pub mod sentinel;
pub mod servers;

use std::future::Future;
use std::time::{Duration, Instant};

pub use env::TestEnv;
pub use receiver::{Receiver, Recorded, Reply};

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
