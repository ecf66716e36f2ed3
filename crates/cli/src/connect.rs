//! Connecting to hookrelay, and turning failures into one clear line.

use std::time::Duration;

use anyhow::anyhow;
use tonic::transport::{Channel, Endpoint};

/// Where hookrelay is, the token to show it, and the tenant to act on.
#[derive(Debug, Clone)]
pub struct Server {
    pub url: String,
    pub token: Option<String>,
    /// Global `--tenant` / `HOOKCTL_TENANT`.
    pub tenant: Option<String>,
}

impl Server {
    /// The `tenant` of a request: a command's own `--tenant`, else the
    /// global one, else empty: a tenant token's own tenant (with an admin
    /// token the server then says a tenant is required).
    pub fn tenant(&self, own: Option<String>) -> String {
        own.or_else(|| self.tenant.clone()).unwrap_or_default()
    }
}

pub use hookrelay_proto::auth::Authed;

/// A gRPC channel to `server`, or an error saying how to fix the address.
pub async fn channel(server: &Server) -> anyhow::Result<Authed> {
    let bearer = hookrelay_proto::auth::Bearer::new(server.token.as_deref())?;
    let channel = connect(&server.url).await?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel, bearer,
    ))
}

/// The URL of `--server`: `host:port` (as grpcurl takes it) means
/// `http://host:port`; a URL keeps its scheme, which must be http or https.
pub fn server_url(server: &str) -> anyhow::Result<String> {
    let trimmed = server.trim();
    let url = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let problem = match url.parse::<tonic::codegen::http::Uri>() {
        Err(e) => Some(e.to_string()),
        Ok(uri) => match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(host)) if !host.is_empty() => None,
            (Some("http" | "https"), _) => Some("no host".to_owned()),
            (scheme, _) => Some(format!(
                "scheme {:?} is not http or https",
                scheme.unwrap_or_default()
            )),
        },
    };
    match problem {
        None => Ok(url),
        Some(problem) => Err(anyhow!(
            "--server {server:?} is not a hookrelay gRPC address ({problem}); give host:port or a URL, e.g. --server 127.0.0.1:50051 or --server https://hookrelay.example.com"
        )),
    }
}

async fn connect(server: &str) -> anyhow::Result<Channel> {
    let server = &server_url(server)?;
    let endpoint = Endpoint::from_shared(server.to_owned())
        .map_err(|e| anyhow!("--server {server:?} is not a valid URL: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    endpoint.connect().await.map_err(|e| {
        // The innermost cause reads best: "Connection refused (os error 111)",
        // not tonic's "transport error" or hyper's "tcp connect error".
        let mut cause: &dyn std::error::Error = &e;
        while let Some(source) = cause.source() {
            cause = source;
        }
        anyhow!("cannot reach hookrelay at {server}: {cause} (is `hookrelay` running? set --server or HOOKCTL_SERVER)")
    })
}

/// `<code>: <message>` of a gRPC error, e.g. `invalid argument: subscription.url: …`.
pub fn status(status: tonic::Status) -> anyhow::Error {
    if status.code() == tonic::Code::Unauthenticated {
        return anyhow!(
            "unauthenticated: {} (pass --token, HOOKCTL_TOKEN, or a token file: --token-file / HOOKCTL_TOKEN_FILE, default ~/.config/hookctl/token or the repository's .local/hookctl-token)",
            status.message()
        );
    }
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
    fn a_server_is_host_port_or_a_url() {
        use super::server_url;
        assert_eq!(
            server_url("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            server_url("localhost:50051").unwrap(),
            "http://localhost:50051"
        );
        assert_eq!(server_url("[::1]:50051").unwrap(), "http://[::1]:50051");
        assert_eq!(
            server_url("http://127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            server_url("https://hr.example.com").unwrap(),
            "https://hr.example.com"
        );
        for bad in ["ftp://x:1", "", "http://", "a b:1"] {
            let error = server_url(bad).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!(
                    "--server {bad:?} is not a hookrelay gRPC address ("
                )) && error.ends_with(
                    "e.g. --server 127.0.0.1:50051 or --server https://hookrelay.example.com"
                ),
                "{error}"
            );
        }
    }

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
