//! `hookrelay healthcheck`: asks the hookrelay on this host whether it is
//! ready (`/readyz`) or alive (`/healthz`) over its admin HTTP port, so a
//! container's HEALTHCHECK needs no curl or wget in the image. The address is
//! the configured `server.http_listen` (same `--config` and `HOOKRELAY_*`
//! layering as the server), an unspecified one (0.0.0.0, [::]) asked on
//! loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use hookrelay_core::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What `hookrelay healthcheck` takes besides `--config`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Ask /healthz (the process is up) instead of /readyz (it can work:
    /// NATS, Redis and its services ready).
    #[arg(long)]
    pub live: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    pub timeout: f64,
}

/// Where to ask a server listening on `listen`: the same port, on loopback
/// when it listens on every address.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `GET http://<addr><path>`: `Ok` with the first line of the body when the
/// answer is 200, `Err` with a one-line reason otherwise.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    let url = format!("http://{addr}{path}");
    match tokio::time::timeout(timeout, get(addr, path)).await {
        Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Ok(Ok((200, body))) => Ok(format!("{url}: 200 {body}")),
        Ok(Ok((status, body))) => Err(format!("{url}: {status} {body}")),
    }
}

/// Status code and first body line of a plain HTTP/1.1 GET.
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect ({e}); is hookrelay running and listening there?"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hookrelay-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // The answers are a few bytes; read at most 8 KiB of one.
    let mut answer = Vec::new();
    stream
        .take(8192)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", truncate(status_line)))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.lines().next().unwrap_or_default().trim())
        .unwrap_or_default();
    Ok((status, truncate(body).to_owned()))
}

fn truncate(line: &str) -> &str {
    match line.char_indices().nth(200) {
        Some((end, _)) => &line[..end],
        None => line,
    }
}

/// What the binary's `healthcheck` subcommand does: loads the config like
/// the server would, probes, prints one line and returns the exit code (0
/// healthy, 1 not, or the config did not load).
pub async fn run(file: Option<&Path>, args: &Args) -> ExitCode {
    let config = match Config::load(file) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("unhealthy: config: {}", e.to_string().replace('\n', " "));
            return ExitCode::FAILURE;
        }
    };
    let path = if args.live { "/healthz" } else { "/readyz" };
    let timeout = Duration::try_from_secs_f64(args.timeout).unwrap_or(Duration::from_secs(3));
    match probe(target(config.server.http_listen), path, timeout).await {
        Ok(line) => {
            println!("healthy: {line}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_asked_on_loopback() {
        let t = |s: &str| target(s.parse().unwrap()).to_string();
        assert_eq!(t("0.0.0.0:9464"), "127.0.0.1:9464");
        assert_eq!(t("[::]:9464"), "[::1]:9464");
        assert_eq!(t("10.1.2.3:9000"), "10.1.2.3:9000");
        assert_eq!(t("127.0.0.1:1"), "127.0.0.1:1");
    }
}
