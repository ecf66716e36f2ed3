//! Servers a test starts for itself on loopback: free ports, and a real
//! Redis Cluster of three masters with two replicas each, whose nodes a
//! test can SIGKILL.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::eventually;

/// A TCP port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three masters with two replicas each.
const NODES: usize = 9;

/// `count` distinct free ports (each free alone is not enough: two asked
/// for in a row may be the same).
pub fn free_ports(count: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// One `redis-server` of a cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// Nine `redis-server --cluster-enabled` processes joined by
/// `redis-cli --cluster create --cluster-replicas 2`: three masters owning
/// the 16,384 slots, each with two replicas, one of which takes over within
/// about two seconds of its master's death (node timeout 1 s) and still has
/// a replica of its own (so `redis.wait_replicas = 1` keeps working after
/// a failover). AOF with fsync always.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

/// Runs `cmd` on the server at `port` within 2 s; `None` on any failure.
pub async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()?;
    tokio::time::timeout(Duration::from_secs(2), cmd.query_async(&mut conn))
        .await
        .ok()?
        .ok()
}

impl RedisCluster {
    pub async fn start() -> Self {
        // Client and bus ports, all distinct.
        let all = free_ports(2 * NODES);
        let (ports, buses) = all.split_at(NODES);
        let dir = std::env::temp_dir().join(format!("hookrelay-redis-cluster-{}", ports[0]));
        let _ = std::fs::remove_dir_all(&dir);
        let mut nodes = Vec::new();
        for (port, bus) in ports.iter().zip(buses) {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                // The bus port defaults to port + 10,000: past 65,535 for
                // half the ephemeral range.
                .args(["--cluster-port", &bus.to_string()])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                // Replicas sync at once rather than after the default 5 s.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&node_dir)
                .args(["--logfile", "redis.log"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server on PATH (scripts/services.sh installs it)");
            nodes.push(Node {
                port: *port,
                child: Some(child),
            });
        }
        let cluster = Self { nodes, dir };
        for port in ports {
            eventually("cluster node up", Duration::from_secs(20), || async {
                query::<String>(*port, &redis::cmd("PING")).await
            })
            .await;
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "2", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .expect("redis-cli on PATH");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        // Ready when every node agrees the slots are covered, every master
        // has its replica and every replica has synced (a replica that never
        // synced cannot take over).
        eventually("the Redis cluster up", Duration::from_secs(60), || async {
            for port in ports {
                let info: String = query(*port, redis::cmd("CLUSTER").arg("INFO")).await?;
                if !info.contains("cluster_state:ok")
                    || !info.contains(&format!("cluster_known_nodes:{NODES}"))
                {
                    return None;
                }
                let replication: String =
                    query(*port, redis::cmd("INFO").arg("replication")).await?;
                if replication.contains("role:slave")
                    && !replication.contains("master_link_status:up")
                {
                    return None;
                }
            }
            let masters = cluster.masters().await?;
            (masters.len() == 3 && masters.iter().all(|m| m.replicas == 2)).then_some(())
        })
        .await;
        cluster
    }

    /// The nodes' URLs, comma-separated, as `redis.url` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The masters as a live node sees them.
    pub async fn masters(&self) -> Option<Vec<Master>> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Some(text) = query::<String>(node.port, redis::cmd("CLUSTER").arg("NODES")).await
            else {
                continue;
            };
            return Some(Master::parse_all(&text));
        }
        None
    }

    /// The port of the master serving `slot` now.
    pub async fn master_of(&self, slot: u16) -> Option<u16> {
        self.masters()
            .await?
            .into_iter()
            .find(|m| m.slots.iter().any(|(lo, hi)| (*lo..=*hi).contains(&slot)))
            .map(|m| m.port)
    }

    /// How many keys each live master holds.
    pub async fn keys_per_master(&self) -> Vec<u64> {
        let mut counts = Vec::new();
        for master in self.masters().await.unwrap_or_default() {
            if !master.failed {
                counts.push(query(master.port, &redis::cmd("DBSIZE")).await.unwrap_or(0));
            }
        }
        counts
    }

    /// SIGKILLs the node on `port`.
    pub async fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }

    /// Waits until a live master serves every slot again (a replica took
    /// over from a killed master).
    pub async fn wait_covered(&self, timeout: Duration) {
        let live: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect();
        eventually("every slot served by a live master", timeout, || async {
            let masters = self.masters().await?;
            let covered: u32 = masters
                .iter()
                .filter(|m| live.contains(&m.port) && !m.failed)
                .flat_map(|m| m.slots.iter().map(|(lo, hi)| u32::from(hi - lo) + 1))
                .sum();
            let info: String = query(live[0], redis::cmd("CLUSTER").arg("INFO")).await?;
            (covered == 16_384 && info.contains("cluster_state:ok")).then_some(())
        })
        .await;
    }
}

/// A master in `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct Master {
    pub port: u16,
    pub slots: Vec<(u16, u16)>,
    pub replicas: usize,
    pub failed: bool,
}

impl Master {
    fn parse_all(nodes: &str) -> Vec<Master> {
        let lines: Vec<Vec<&str>> = nodes
            .lines()
            .map(|l| l.split_whitespace().collect())
            .filter(|f: &Vec<&str>| f.len() >= 8)
            .collect();
        let port = |address: &str| -> Option<u16> {
            address.split('@').next()?.rsplit(':').next()?.parse().ok()
        };
        lines
            .iter()
            .filter(|f| f[2].contains("master"))
            .filter_map(|f| {
                let id = f[0];
                let slots = f[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| match s.split_once('-') {
                        Some((lo, hi)) => Some((lo.parse().ok()?, hi.parse().ok()?)),
                        None => s.parse().ok().map(|one| (one, one)),
                    })
                    .collect();
                Some(Master {
                    port: port(f[1])?,
                    slots,
                    replicas: lines
                        .iter()
                        .filter(|r| r[3] == id && !r[2].contains("fail"))
                        .count(),
                    failed: f[2].contains("fail"),
                })
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                let _ = child.start_kill();
            }
        }
        // Kept after a failure: each node's redis.log says what it saw.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
