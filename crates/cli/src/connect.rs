//! Connecting to hookrelay, and turning failures into one clear line.

use std::time::Duration;

use anyhow::anyhow;
use tonic::transport::{Channel, Endpoint};

/// A gRPC channel to `server`, or an error saying how to fix the address.
pub async fn channel(server: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(server.to_owned())
        .map_err(|e| anyhow!("--server {server:?} is not a valid URL: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    endpoint.connect().await.map_err(|e| {
        let cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
        anyhow!("cannot reach hookrelay at {server}: {cause} (is `hookrelay` running? set --server or HOOKCTL_SERVER)")
    })
}

/// `<code>: <message>` of a gRPC error, e.g. `invalid argument: subscription.url: …`.
pub fn status(status: tonic::Status) -> anyhow::Error {
    let mut code = String::new();
    for c in format!("{:?}", status.code()).chars() {
        if c.is_uppercase() && !code.is_empty() {
            code.push(' ');
        }
        code.push(c.to_ascii_lowercase());
    }
    anyhow!("{code}: {}", status.message())
}

#[cfg(test)]
mod tests {
    #[test]
    fn statuses_read_as_one_line() {
        let error = super::status(tonic::Status::invalid_argument(
            "subscription.url: is required",
        ));
        assert_eq!(
            error.to_string(),
            "invalid argument: subscription.url: is required"
        );
    }
}
