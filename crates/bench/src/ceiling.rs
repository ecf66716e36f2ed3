//! The bare ceiling: the same receiver driven directly by a reqwest client
//! with the same concurrency hookrelay uses, no NATS, no Redis, no signing.

use std::time::Instant;

use futures::StreamExt;

use crate::receiver::Receiver;

/// Requests per second the receiver takes from `concurrency` reqwest
/// connections posting `count` bodies of `body_len` bytes.
pub async fn measure(
    receiver: &Receiver,
    count: u64,
    concurrency: usize,
    body_len: usize,
) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = receiver.url("/ceiling");
    let body = bytes::Bytes::from(vec![b'x'; body_len]);
    let started = Instant::now();
    let failures = futures::stream::iter(0..count)
        .map(|_| {
            let request = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone());
            async move {
                match request.send().await {
                    Ok(response) if response.status().is_success() => 0u64,
                    _ => 1,
                }
            }
        })
        .buffer_unordered(concurrency)
        .fold(0, |sum, failed| async move { sum + failed })
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(failures == 0, "{failures} ceiling requests failed");
    Ok(count as f64 / elapsed)
}
