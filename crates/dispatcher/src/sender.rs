//! Sends one HTTP request and classifies what happened: redirects are never
//! followed, the response body is read up to a cap, every fault becomes an
//! outcome rather than an error.

use std::error::Error as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hookrelay_core::delivery::{Outcome, RecordedResponse};
use hookrelay_core::subscription::SuccessRule;

use crate::guard::Guard;

/// A request ready to send.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: Bytes,
}

/// What came back, or why nothing did.
#[derive(Debug, Clone)]
pub struct SendResult {
    pub outcome: Outcome,
    pub reason: String,
    pub response: Option<RecordedResponse>,
    pub duration: Duration,
    /// `Retry-After` of a 429 or 503, if any.
    pub retry_after: Option<Duration>,
}

impl SendResult {
    /// A result without a response: the request was never sent or answered.
    pub fn without_response(outcome: Outcome, reason: &str) -> Self {
        Self {
            outcome,
            reason: reason.to_owned(),
            response: None,
            duration: Duration::ZERO,
            retry_after: None,
        }
    }
}

/// One shared connection pool for every delivery.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    max_body: usize,
    guard: Guard,
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

impl Sender {
    pub fn new(max_body: usize, guard: Guard) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            // A proxy from the environment (HTTP(S)_PROXY) would take the
            // destination out of the guard's sight: never used.
            .no_proxy()
            .dns_resolver(Arc::new(guard.clone()))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookrelay/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            client,
            max_body,
            guard,
        })
    }

    /// The destination guard, for checks when subscriptions are saved.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Sends `request`, judging the status by `rule`.
    pub async fn send(
        &self,
        request: OutboundRequest,
        timeout: Duration,
        rule: SuccessRule,
    ) -> SendResult {
        let started = tokio::time::Instant::now();
        let mut url = match url::Url::parse(&request.url) {
            Ok(url) => url,
            Err(error) => {
                return SendResult::without_response(
                    Outcome::Error,
                    &format!("invalid URL: {error}"),
                )
            }
        };
        let mut host_header = None;
        // (stand-in name, the subscription's host): errors name the latter.
        let mut stand_in = None;
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            if let Err(reason) = self.guard.policy.check(ip) {
                return SendResult::without_response(Outcome::Blocked, &reason);
            }
            // Plain HTTP to an IP goes through the guard's resolver and dialer
            // too, under a stand-in name; the Host header keeps the original.
            if url.scheme() == "http" {
                host_header = Some(match url.port() {
                    Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                    None => url.host_str().unwrap_or_default().to_owned(),
                });
                let name = crate::guard::literal_name(ip);
                stand_in = Some((name.clone(), url.host_str().unwrap_or_default().to_owned()));
                let _ = url.set_host(Some(&name));
            }
        }
        let mut builder = self
            .client
            .request(request.method, url)
            .timeout(timeout)
            .body(request.body);
        if let Some(host) = host_header {
            builder = builder.header(http::header::HOST, host);
        }
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) => {
                let (outcome, reason) = classify_error(&error, timeout);
                let reason = unmask(reason, &stand_in);
                return SendResult {
                    outcome,
                    reason,
                    response: None,
                    duration: started.elapsed(),
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let retry_after = (status == 429 || status == 503)
            .then(|| response.headers().get(http::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let (body, body_truncated, body_error) = self.read_capped(response).await;
        let (mut outcome, mut reason) = classify_status(status, rule);
        if let Some(error) = body_error {
            let timed_out = error.is_timeout()
                || error_chain(&error)
                    .to_ascii_lowercase()
                    .contains("timed out");
            if outcome == Outcome::Success {
                // The receiver accepted it (the status says so); a body
                // read that fails or stalls does not undo that.
                reason = if timed_out {
                    format!("response body not read in time ({reason} received)")
                } else {
                    unmask(
                        format!(
                            "{reason}; response body unreadable: {}",
                            error_chain(&error)
                        ),
                        &stand_in,
                    )
                };
            } else if timed_out {
                outcome = Outcome::Timeout;
                reason = format!(
                    "{reason}; response body not read within {}",
                    humantime(timeout)
                );
            }
        }
        SendResult {
            outcome,
            reason,
            response: Some(RecordedResponse {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                body_truncated,
            }),
            duration: started.elapsed(),
            retry_after,
        }
    }

    async fn read_capped(
        &self,
        response: reqwest::Response,
    ) -> (Vec<u8>, bool, Option<reqwest::Error>) {
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    let room = self.max_body - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        return (body, true, None);
                    }
                    body.extend_from_slice(&chunk);
                }
                Err(error) => return (body, false, Some(error)),
            }
        }
        (body, false, None)
    }
}

/// The outcome of a status under a success rule.
pub fn classify_status(status: u16, rule: SuccessRule) -> (Outcome, String) {
    let outcome = if rule.accepts(status) {
        Outcome::Success
    } else {
        match status {
            300..=399 => Outcome::Redirect,
            400..=499 => Outcome::Http4xx,
            500..=599 => Outcome::Http5xx,
            _ => Outcome::HttpOther,
        }
    };
    let reason = match outcome {
        Outcome::Success => format!("status {status}"),
        Outcome::Redirect => format!("status {status}: redirects are not followed"),
        Outcome::HttpOther => format!("status {status} is not accepted by the success rule"),
        _ => format!("status {status}"),
    };
    (outcome, reason)
}

fn classify_error(error: &reqwest::Error, timeout: Duration) -> (Outcome, String) {
    if error.is_timeout() {
        return (
            Outcome::Timeout,
            format!("timed out after {}", humantime(timeout)),
        );
    }
    let chain = error_chain(error);
    let lower = chain.to_ascii_lowercase();
    if let Some(at) = chain.find(crate::guard::BLOCKED) {
        (Outcome::Blocked, chain[at..].to_owned())
    } else if lower.contains("dns error") || lower.contains("failed to lookup") {
        (Outcome::DnsError, chain)
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        (Outcome::TlsError, chain)
    } else if error.is_builder() {
        (Outcome::Error, chain)
    } else {
        // Refused, reset, or closed before a whole response (mid-headers):
        // the connection failed, whether or not it was ever established.
        (Outcome::ConnectError, chain)
    }
}

/// `reason` naming the subscription's host rather than the stand-in name
/// an IP literal is sent under.
fn unmask(reason: String, stand_in: &Option<(String, String)>) -> String {
    match stand_in {
        Some((name, host)) => reason.replace(name.as_str(), host),
        None => reason,
    }
}

/// The error and its sources, joined: reqwest's own text rarely says why.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `Retry-After` as delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ip_literals_that_embed_a_refused_address_are_blocked_before_connecting() {
        let guard = Guard::system(crate::guard::AddressPolicy::default());
        let sender = Sender::new(1024, guard).unwrap();
        for url in [
            "https://[64:ff9b::a9fe:a9fe]/latest/meta-data",
            "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
            "https://[2002:a9fe:a9fe::1]/",
            "http://[::a9fe:a9fe]/",
            "https://[::ffff:169.254.169.254]/",
            "https://169.254.169.254/",
            "https://[2001::1]/",
        ] {
            let request = OutboundRequest {
                method: http::Method::POST,
                url: url.to_owned(),
                headers: Vec::new(),
                body: Bytes::new(),
            };
            let result = sender
                .send(request, Duration::from_secs(5), SuccessRule::Any2xx)
                .await;
            assert_eq!(result.outcome, Outcome::Blocked, "{url}: {}", result.reason);
            assert!(
                result.reason.contains("destination blocked"),
                "{url}: {}",
                result.reason
            );
        }
    }

    fn loopback_sender() -> Sender {
        let policy = crate::guard::AddressPolicy::new(&["127.0.0.0/8".to_owned()]).unwrap();
        Sender::new(1024, Guard::system(policy)).unwrap()
    }

    /// A receiver on loopback that reads the request, then writes `reply`
    /// and keeps the connection open for `hold`.
    async fn misbehaving(reply: &'static [u8], hold: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            socket.write_all(reply).await.unwrap();
            tokio::time::sleep(hold).await;
        });
        format!("http://{addr}/hook")
    }

    fn post(url: &str) -> OutboundRequest {
        OutboundRequest {
            method: http::Method::POST,
            url: url.to_owned(),
            headers: Vec::new(),
            body: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn a_connection_closed_mid_headers_is_a_connect_error_naming_the_host() {
        let url = misbehaving(b"HTTP/1.1 200 OK\r\nContent-Ty", Duration::ZERO).await;
        let result = loopback_sender()
            .send(post(&url), Duration::from_secs(5), SuccessRule::Any2xx)
            .await;
        assert_eq!(result.outcome, Outcome::ConnectError, "{}", result.reason);
        assert!(!result.reason.contains(".invalid"), "{}", result.reason);
        assert!(result.reason.contains(&url), "{}", result.reason);
        assert!(result.response.is_none());
    }

    #[tokio::test]
    async fn a_2xx_whose_body_stalls_is_a_success_that_says_so() {
        let url = misbehaving(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
            Duration::from_secs(10),
        )
        .await;
        let result = loopback_sender()
            .send(post(&url), Duration::from_millis(500), SuccessRule::Any2xx)
            .await;
        assert_eq!(result.outcome, Outcome::Success, "{}", result.reason);
        assert_eq!(
            result.reason,
            "response body not read in time (status 200 received)"
        );
        assert_eq!(result.response.unwrap().body, "abc");

        // A 5xx whose body stalls is still a timeout.
        let url = misbehaving(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\nab",
            Duration::from_secs(10),
        )
        .await;
        let result = loopback_sender()
            .send(post(&url), Duration::from_millis(500), SuccessRule::Any2xx)
            .await;
        assert_eq!(result.outcome, Outcome::Timeout, "{}", result.reason);
    }

    #[test]
    fn statuses_are_classified_by_rule() {
        assert_eq!(
            classify_status(200, SuccessRule::Status200).0,
            Outcome::Success
        );
        assert_eq!(
            classify_status(204, SuccessRule::Any2xx).0,
            Outcome::Success
        );
        assert_eq!(
            classify_status(204, SuccessRule::Status200).0,
            Outcome::HttpOther
        );
        assert_eq!(
            classify_status(302, SuccessRule::Any2xx).0,
            Outcome::Redirect
        );
        assert_eq!(
            classify_status(404, SuccessRule::Any2xx).0,
            Outcome::Http4xx
        );
        assert_eq!(
            classify_status(503, SuccessRule::Any2xx).0,
            Outcome::Http5xx
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
