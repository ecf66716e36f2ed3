//! `hookrelay healthcheck` (the image's HEALTHCHECK and compose's) run as
//! the binary against a hookrelay running in-process: 0 when ready, 1 with a
//! one-line reason when not ready or when nothing listens.

use std::process::Output;

use hookrelay_test_support::servers::free_port;
use hookrelay_tests::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

async fn healthcheck(args: &[&str], http_listen: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    command.env_remove("HOOKRELAY_CONFIG").args(args);
    if let Some(listen) = http_listen {
        command.env("HOOKRELAY_SERVER__HTTP_LISTEN", listen);
    }
    command.output().await.expect("run hookrelay healthcheck")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn healthcheck_exits_0_when_hookrelay_is_ready() {
    let hr = Harness::start().await;
    let addr = hr.http_addr.to_string();

    let ready = healthcheck(&["healthcheck"], Some(&addr)).await;
    assert_eq!(ready.status.code(), Some(0), "{}", text(&ready));
    assert_eq!(
        text(&ready).trim(),
        format!("healthy: http://{addr}/readyz: 200 ready")
    );

    let live = healthcheck(&["healthcheck", "--live"], Some(&addr)).await;
    assert_eq!(live.status.code(), Some(0), "{}", text(&live));
    assert!(text(&live).contains("/healthz: 200 ok"), "{}", text(&live));

    // As in the containers: the config file says 0.0.0.0, asked on loopback.
    let dir = std::env::temp_dir().join(format!("hookrelay-healthcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hookrelay.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nhttp_listen = \"0.0.0.0:{}\"\n",
            hr.http_addr.port()
        ),
    )
    .unwrap();
    let from_file = healthcheck(&["--config", file.to_str().unwrap(), "healthcheck"], None).await;
    assert_eq!(from_file.status.code(), Some(0), "{}", text(&from_file));
    assert!(
        text(&from_file).contains(&format!("http://127.0.0.1:{}/readyz", hr.http_addr.port())),
        "{}",
        text(&from_file)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn healthcheck_exits_1_when_nothing_listens() {
    let addr = format!("127.0.0.1:{}", free_port());
    let output = healthcheck(&["healthcheck", "--timeout", "2"], Some(&addr)).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let said = text(&output);
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    assert!(
        said.starts_with(&format!("unhealthy: http://{addr}/readyz: cannot connect")),
        "{said}"
    );
}

#[tokio::test]
async fn healthcheck_exits_1_and_says_why_when_not_ready() {
    // What /readyz answers while Redis is out of reach.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 1024];
        let _ = socket.read(&mut request).await;
        let body = "not ready: redis\n";
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
    });
    let output = healthcheck(&["healthcheck"], Some(&addr)).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert_eq!(
        text(&output).trim(),
        format!("unhealthy: http://{addr}/readyz: 503 not ready: redis")
    );
}
