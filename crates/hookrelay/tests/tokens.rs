//! API tokens as containers are configured: JSON in `HOOKRELAY_AUTH__TOKENS`,
//! and a tokens file read again on SIGHUP, so a token rotates without a
//! restart.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hookrelay_core::config::token_sha256;
use hookrelay_proto::auth::Bearer;
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::subscriptions_client::SubscriptionsClient;
use hookrelay_test_support::servers::free_ports;
use hookrelay_test_support::{eventually, TestEnv};
use tokio::io::{AsyncBufReadExt, BufReader};

mod common;

/// What a ListSubscriptions call with `token` (and no tenant: its own)
/// answers: the number of subscriptions, or the status code.
async fn list_with(grpc: &str, token: &str) -> Result<usize, tonic::Code> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .map_err(|_| tonic::Code::Unavailable)?;
    let mut client =
        SubscriptionsClient::with_interceptor(channel, Bearer::new(Some(token)).unwrap());
    client
        .list_subscriptions(pb::ListSubscriptionsRequest::default())
        .await
        .map(|reply| reply.into_inner().subscriptions.len())
        .map_err(|status| status.code())
}

fn write_tokens(path: &Path, tokens: &[(&str, &str)]) {
    let entries: Vec<serde_json::Value> = tokens
        .iter()
        .map(|(token, tenant)| serde_json::json!({"sha256": token_sha256(token), "tenant": tenant}))
        .collect();
    std::fs::write(path, serde_json::to_vec(&entries).unwrap()).unwrap();
}

fn hang_up(process: &tokio::process::Child) {
    let pid = process.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn tokens_from_json_and_a_file_that_rotates_on_sighup() {
    let env = TestEnv::new();
    let dir = std::env::temp_dir().join(format!("hookrelay-tokens-{}", env.config.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens.json");
    write_tokens(&file, &[("globex-v1", "globex")]);
    let grpc = format!("127.0.0.1:{}", free_ports(1)[0]);
    let from_env =
        serde_json::json!([{"sha256": token_sha256("acme-token"), "tenant": "acme"}]).to_string();
    let mut process = common::role_command(
        &env,
        "subscriptions",
        &[
            ("HOOKRELAY_SERVER__GRPC_LISTEN", &grpc),
            ("HOOKRELAY_AUTH__TOKENS", &from_env),
            ("HOOKRELAY_AUTH__TOKENS_FILE", file.to_str().unwrap()),
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .expect("start hookrelay subscriptions");
    let mut log = BufReader::new(process.stderr.take().unwrap()).lines();

    eventually("the API answers", Duration::from_secs(60), || async {
        list_with(&grpc, "acme-token").await.ok()
    })
    .await;
    assert_eq!(list_with(&grpc, "globex-v1").await, Ok(0));
    assert_eq!(
        list_with(&grpc, "globex-v2").await,
        Err(tonic::Code::Unauthenticated)
    );

    // Rotated: v2 in, v1 out, the environment's token untouched.
    write_tokens(&file, &[("globex-v2", "globex")]);
    hang_up(&process);
    eventually("globex-v2 accepted", Duration::from_secs(20), || async {
        list_with(&grpc, "globex-v2").await.ok()
    })
    .await;
    assert_eq!(
        list_with(&grpc, "globex-v1").await,
        Err(tonic::Code::Unauthenticated)
    );
    assert_eq!(list_with(&grpc, "acme-token").await, Ok(0));

    // A file that no longer reads is logged, and the tokens in use stay.
    std::fs::write(&file, "[{\"sha256\": \"half a token").unwrap();
    hang_up(&process);
    let logged = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = log.next_line().await.unwrap() {
            if line.contains("keeping the API tokens in use") {
                return line;
            }
        }
        panic!("hookrelay's log ended");
    })
    .await
    .expect("the bad file is logged");
    assert!(logged.contains("auth.tokens_file"), "{logged}");
    assert!(logged.contains("tokens.json"), "{logged}");
    assert_eq!(list_with(&grpc, "globex-v2").await, Ok(0));
    assert!(process.try_wait().unwrap().is_none(), "SIGHUP stopped it");
    std::fs::remove_dir_all(&dir).unwrap();
}
