//! The shipped deployment files carry one configuration, and it loads.

use std::path::Path;

fn repo(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn kubernetes_carries_the_compose_config_and_it_is_valid() {
    let file = repo("deploy/hookrelay.toml");
    let manifest = repo("deploy/kubernetes/hookrelay.yaml");
    let start =
        manifest.find("hookrelay.toml: |\n").expect("ConfigMap key") + "hookrelay.toml: |\n".len();
    let embedded: String = manifest[start..]
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    let without_comments: String = file
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        embedded.trim(),
        without_comments.trim(),
        "ConfigMap and deploy/hookrelay.toml differ"
    );

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hookrelay.toml");
    let config = hookrelay_core::Config::load(Some(&path)).expect("deploy/hookrelay.toml loads");
    assert_eq!(config.nats.url, "nats://nats:4222");
    assert_eq!(config.server.http_listen.port(), 9464);

    let compose = repo("docker-compose.yml");
    assert!(compose.contains("./deploy/hookrelay.toml:/etc/hookrelay/hookrelay.toml:ro"));
    assert!(
        manifest.contains("/etc/hookrelay/hookrelay.toml")
            && manifest.contains("mountPath: /etc/hookrelay")
    );
}
