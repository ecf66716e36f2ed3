//! The quickstart as a new user follows it: the README, run.sh and
//! services.sh agree, and services.sh starts, checks and stops its servers.

use std::path::{Path, PathBuf};
use std::process::Command;

use hookrelay_tests::support::servers::free_ports;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_readme_links_only_files_of_the_repository() {
    let readme = read("README.md");
    for link in readme.split("](").skip(1) {
        let target = link.split(')').next().unwrap();
        let target = target.split('#').next().unwrap();
        if target.is_empty() || target.contains("://") {
            continue;
        }
        assert!(
            !target.starts_with(".."),
            "README links {target}, outside the repository"
        );
        assert!(
            repo().join(target).exists(),
            "README links {target}, which does not exist"
        );
    }
    assert!(readme.contains("](docs/architecture.md)"));
}

#[test]
fn run_sh_builds_the_hookctl_the_walkthrough_uses() {
    let run = read("scripts/run.sh");
    assert!(
        run.contains("cargo build --release -p hookrelay -p hookrelay-cli"),
        "{run}"
    );
    assert!(run.contains("scripts/services.sh stop"), "{run}");
    let readme = read("README.md");
    assert!(
        readme.contains(r#"alias hookctl="$PWD/target/release/hookctl""#),
        "the walkthrough's hookctl is the one run.sh built"
    );
    assert!(
        !readme.contains("cargo run -q"),
        "no silent compile in the walkthrough"
    );
    assert!(
        readme.contains("scripts/services.sh stop"),
        "the README shows the stop command"
    );
}

/// run.sh's token is the admin token, which must name the tenant of every
/// call: each walkthrough command that acts on a tenant names it.
#[test]
fn the_walkthrough_names_the_tenant_of_every_command() {
    let readme = read("README.md");
    let walkthrough = readme
        .split("## A 5-minute walkthrough")
        .nth(1)
        .and_then(|rest| rest.split("```sh").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("the walkthrough's commands");
    let commands: Vec<&str> = walkthrough
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("hookctl ") && !line.starts_with("hookctl publish "))
        .collect();
    assert!(commands.len() >= 4, "{walkthrough}");
    for command in commands {
        assert!(command.contains("--tenant "), "names no tenant: {command}");
    }
    assert!(readme.contains("export HOOKCTL_TENANT=acme"));
}

fn services(dir: &Path, nats: u16, redis: u16, args: &[&str]) -> (bool, String) {
    let output = Command::new(dir.join("scripts/services.sh"))
        .args(args)
        .env("NATS_PORT", nats.to_string())
        .env("REDIS_PORT", redis.to_string())
        .output()
        .expect("run services.sh");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Stops what the sandbox's services.sh started, even when the test fails.
struct Stop(PathBuf, u16, u16);

impl Drop for Stop {
    fn drop(&mut self) {
        services(&self.0, self.1, self.2, &["stop"]);
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A copy of services.sh in a directory of its own, so its `.local/` is too.
fn sandbox() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hookrelay-services-{}-{}",
        std::process::id(),
        free_ports(1)[0]
    ));
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::copy(
        repo().join("scripts/services.sh"),
        dir.join("scripts/services.sh"),
    )
    .unwrap();
    dir
}

#[test]
fn services_sh_stops_the_servers_it_started_and_only_those() {
    let dir = sandbox();
    let ports = free_ports(3);
    let (nats, redis, foreign) = (ports[0], ports[1], ports[2]);
    let _stop = Stop(dir.clone(), nats, redis);

    let (ok, out) = services(&dir, nats, redis, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("nats:  started on 127.0.0.1:{nats}")),
        "{out}"
    );
    assert!(out.contains("scripts/services.sh stop stops it"), "{out}");
    let (ok, out) = services(&dir, nats, redis, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("(JetStream enabled)"), "{out}");
    let (_, status) = services(&dir, nats, redis, &["status"]);
    assert!(status.contains("started by services.sh"), "{status}");

    // A NATS without JetStream is refused, with what to do about it.
    let mut plain = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &foreign.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server on PATH (scripts/services.sh installs it)");
    let listening = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::net::TcpStream::connect(("127.0.0.1", foreign)).is_ok()
    });
    assert!(listening);
    let (ok, out) = services(&dir, foreign, redis, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("does not have JetStream enabled") && out.contains("-js"),
        "{out}"
    );
    let (_, status) = services(&dir, foreign, redis, &["status"]);
    assert!(status.contains("not started by services.sh"), "{status}");

    let (ok, out) = services(&dir, nats, redis, &["stop"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("nats: stopped") && out.contains("redis: stopped"),
        "{out}"
    );
    for port in [nats, redis] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still answers after stop"
        );
    }
    // The server it did not start is left alone.
    assert!(std::net::TcpStream::connect(("127.0.0.1", foreign)).is_ok());
    let (_, out) = services(&dir, nats, redis, &["stop"]);
    assert!(out.contains("nothing to stop"), "{out}");
    plain.kill().ok();
    plain.wait().ok();
}
