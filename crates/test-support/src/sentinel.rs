//! A real Redis Sentinel deployment of a test's own on loopback: one master
//! and one replica (AOF, fsync always) watched by three Sentinels (quorum
//! 2, down after 1 s), so a test can SIGKILL the master and see the
//! replica promoted. Free ports, data and logs in a temporary folder, every
//! process killed when it is dropped.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};

use crate::eventually;
use crate::servers::{free_ports, query};

/// One process of the deployment.
struct Node {
    /// `master`, `replica`, `sentinel-1`, … (its log is `<role>.log`).
    role: String,
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn spawn(role: &str, port: u16, dir: &Path, args: &[&str]) -> Self {
        let log = File::create(dir.join(format!("{role}.log"))).expect("create a log file");
        let child = Command::new("redis-server")
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("redis-server on PATH (scripts/services.sh installs it)");
        Self {
            role: role.to_owned(),
            port,
            child: Some(child),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            // SIGKILL: reaped at once.
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    /// Also when a test fails before the deployment is assembled.
    fn drop(&mut self) {
        self.kill();
    }
}

/// A master, its replica and three Sentinels monitoring it under a name of
/// its own (unique per instance, so tests never share a master name).
pub struct RedisSentinels {
    name: String,
    dir: PathBuf,
    master: Node,
    replica: Node,
    sentinels: Vec<Node>,
}

/// `field:value` lines of an `INFO` reply.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (name, value) = line.trim_end().split_once(':')?;
        (name == field).then_some(value)
    })
}

impl RedisSentinels {
    /// Starts the five processes and returns once the replica is in sync
    /// and every Sentinel knows the master, the replica and the two other
    /// Sentinels: from then on a failover can be authorised.
    pub async fn start() -> Self {
        let ports = free_ports(5);
        let name = format!(
            "hr-{}",
            Alphanumeric
                .sample_string(&mut rand::rng(), 8)
                .to_ascii_lowercase()
        );
        let dir = std::env::temp_dir().join(format!("hookrelay-sentinel-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the sentinel test folder");

        let data = |role: &str| {
            let data = dir.join(role);
            std::fs::create_dir_all(&data).expect("create a data folder");
            data.to_str().expect("UTF-8 temp path").to_owned()
        };
        let server_args = |port: u16, data: &str| -> Vec<String> {
            [
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                // The replica's first sync starts at once, not after 5 s.
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
                data,
            ]
            .map(str::to_owned)
            .to_vec()
        };

        let (master_port, replica_port) = (ports[0], ports[1]);
        let master_args = server_args(master_port, &data("master"));
        let master = Node::spawn(
            "master",
            master_port,
            &dir,
            &master_args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let mut replica_args = server_args(replica_port, &data("replica"));
        replica_args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            master_port.to_string(),
        ]);
        let replica = Node::spawn(
            "replica",
            replica_port,
            &dir,
            &replica_args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let mut set = Self {
            name,
            dir,
            master,
            replica,
            sentinels: Vec::new(),
        };

        for port in [master_port, replica_port] {
            eventually("redis-server up", Duration::from_secs(20), || async {
                query::<String>(port, &redis::cmd("PING")).await
            })
            .await;
        }
        // Sentinels learn the replica from the master's INFO, which they ask
        // for on connecting and then every 10 s: start them once it is
        // listed, so they know it at once.
        eventually("the replica in sync", Duration::from_secs(30), || async {
            let info: String = query(replica_port, redis::cmd("INFO").arg("replication")).await?;
            (info_field(&info, "master_link_status") == Some("up")).then_some(())
        })
        .await;

        for (i, port) in ports[2..].iter().enumerate() {
            let role = format!("sentinel-{}", i + 1);
            let conf = set.dir.join(format!("{role}.conf"));
            // Sentinel rewrites its config file (the peers, the epoch), so it
            // is a file of its own in a writable folder.
            std::fs::write(
                &conf,
                format!(
                    "port {port}\n\
                     bind 127.0.0.1\n\
                     dir {dir}\n\
                     sentinel resolve-hostnames no\n\
                     sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 5000\n",
                    dir = set.dir.display(),
                    name = set.name,
                ),
            )
            .expect("write the sentinel config");
            let conf = conf.to_str().expect("UTF-8 temp path").to_owned();
            let sentinel = Node::spawn(&role, *port, &set.dir, &[&conf, "--sentinel"]);
            set.sentinels.push(sentinel);
        }
        let sentinel_ports: Vec<u16> = set.sentinels.iter().map(|s| s.port).collect();
        let name = set.name.clone();
        eventually(
            "every sentinel knowing the master, its replica and the others",
            Duration::from_secs(60),
            || async {
                for &port in &sentinel_ports {
                    let master: HashMap<String, String> =
                        query(port, redis::cmd("SENTINEL").arg("MASTER").arg(&name)).await?;
                    let ready = master.get("flags").map(String::as_str) == Some("master")
                        && master.get("num-slaves").map(String::as_str) == Some("1")
                        && master.get("num-other-sentinels").map(String::as_str) == Some("2");
                    if !ready {
                        return None;
                    }
                    let replicas: Vec<HashMap<String, String>> =
                        query(port, redis::cmd("SENTINEL").arg("REPLICAS").arg(&name)).await?;
                    let replica_ok = replicas.iter().any(|r| {
                        r.get("port") == Some(&replica_port.to_string())
                            && r.get("flags").map(String::as_str) == Some("slave")
                            && r.get("master-link-status").map(String::as_str) == Some("ok")
                    });
                    if !replica_ok {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        set
    }

    /// The master's name in Sentinel (`redis.sentinel_master`).
    pub fn master_name(&self) -> &str {
        &self.name
    }

    /// The Sentinels' URLs, comma-separated, as `redis.url` takes them in
    /// sentinel mode.
    pub fn urls(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the replica as started.
    pub fn replica_port(&self) -> u16 {
        self.replica.port
    }

    /// SIGKILLs the master as started.
    pub fn kill_master(&mut self) {
        self.master.kill();
    }

    /// The master's port as the Sentinel on `sentinel` names it now.
    async fn named_master(&self, sentinel: u16) -> Option<u16> {
        let (_ip, port): (String, u16) = query(
            sentinel,
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.name),
        )
        .await?;
        Some(port)
    }

    /// Waits until every Sentinel names the replica as the master and the
    /// replica says it is one; returns its port.
    pub async fn wait_failover(&self, timeout: Duration) -> u16 {
        let replica = self.replica.port;
        eventually(
            "the sentinels failing over to the replica",
            timeout,
            || async {
                for sentinel in &self.sentinels {
                    if self.named_master(sentinel.port).await? != replica {
                        return None;
                    }
                }
                let info: String = query(replica, redis::cmd("INFO").arg("replication")).await?;
                (info_field(&info, "role") == Some("master")).then_some(replica)
            },
        )
        .await
    }

    /// The last lines of every process's log, for a failed test's output.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        let nodes = [&self.master, &self.replica]
            .into_iter()
            .chain(self.sentinels.iter());
        for node in nodes {
            let log = std::fs::read_to_string(self.dir.join(format!("{}.log", node.role)))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- {} (port {}) ---\n", node.role, node.port));
            for line in &lines[lines.len().saturating_sub(30)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "redis sentinel deployment {} in {}:\n{}",
                self.name,
                self.dir.display(),
                self.log_tails()
            );
        }
        for sentinel in &mut self.sentinels {
            sentinel.kill();
        }
        self.replica.kill();
        self.master.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
