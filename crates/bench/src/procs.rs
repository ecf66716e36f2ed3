//! The processes a delivery costs CPU in: the hookrelay child, and the
//! nats-server and redis-server it talks to, found in `/proc` by name and
//! by the port they listen on. Both servers are shared: whatever else uses
//! them during a run is counted too.

use std::collections::HashSet;

use procfs::net::TcpState;
use procfs::process::{FDTarget, Process};

use crate::Opts;

/// Where the CPU time of a delivery is read: hookrelay and both servers.
pub struct Meter {
    hookrelay: i32,
    nats: Peer,
    redis: Peer,
}

/// CPU seconds of each process, at one moment or over a phase; a server's
/// is the reason it could not be read instead.
#[derive(Debug, Clone)]
pub struct Cpu {
    pub hookrelay: f64,
    pub nats: Result<f64, String>,
    pub redis: Result<f64, String>,
}

impl Meter {
    /// Finds the servers `opts` names, for hookrelay running as `hookrelay`.
    pub fn new(hookrelay: i32, opts: &Opts) -> Self {
        Self {
            hookrelay,
            nats: Peer::find("nats-server", &opts.nats, 4222),
            redis: Peer::find("redis-server", &opts.redis, 6379),
        }
    }

    pub fn read(&self) -> anyhow::Result<Cpu> {
        let peer = |peer: &Peer| match &peer.pid {
            Ok(pid) => cpu_seconds(*pid)
                .map_err(|e| format!("cannot read the CPU time of {} ({pid}): {e}", peer.name)),
            Err(why) => Err(why.clone()),
        };
        Ok(Cpu {
            hookrelay: cpu_seconds(self.hookrelay)?,
            nats: peer(&self.nats),
            redis: peer(&self.redis),
        })
    }
}

impl Cpu {
    /// What was used from `before` until `self`.
    pub fn since(&self, before: &Cpu) -> Cpu {
        self.zip(before, |now, then| now - then)
    }

    /// `self` and `other` added up.
    pub fn plus(&self, other: &Cpu) -> Cpu {
        self.zip(other, |a, b| a + b)
    }

    fn zip(&self, other: &Cpu, f: fn(f64, f64) -> f64) -> Cpu {
        let both = |a: &Result<f64, String>, b: &Result<f64, String>| match (a, b) {
            (Ok(a), Ok(b)) => Ok(f(*a, *b)),
            (Err(why), _) | (_, Err(why)) => Err(why.clone()),
        };
        Cpu {
            hookrelay: f(self.hookrelay, other.hookrelay),
            nats: both(&self.nats, &other.nats),
            redis: both(&self.redis, &other.redis),
        }
    }
}

/// A server process the benchmark reads the CPU time of.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: &'static str,
    /// Its pid, or why it was not found.
    pub pid: Result<i32, String>,
}

impl Peer {
    /// The process named `comm` that listens on the port of `url`
    /// (`default_port` when the URL names none).
    pub fn find(comm: &'static str, url: &str, default_port: u16) -> Self {
        let pid = port_of(url, default_port)
            .ok_or_else(|| format!("no port in {url:?}"))
            .and_then(|port| find(comm, port));
        Self { name: comm, pid }
    }
}

/// User plus system CPU seconds `pid` has used so far.
pub fn cpu_seconds(pid: i32) -> anyhow::Result<f64> {
    let stat = Process::new(pid)?.stat()?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// The port of the first server in `url` (NATS takes a comma-separated
/// list), or `default_port`.
fn port_of(url: &str, default_port: u16) -> Option<u16> {
    let first = url.split(',').next()?.trim();
    let with_scheme = if first.contains("://") {
        first.to_owned()
    } else {
        format!("nats://{first}")
    };
    let parsed = reqwest::Url::parse(&with_scheme).ok()?;
    Some(parsed.port().unwrap_or(default_port))
}

/// The pid of the process named `comm` listening on `port`. A process
/// whose descriptors can be read and hold no such listener is not it; of
/// several left, the one whose command line mentions the port, else the
/// only one.
fn find(comm: &str, port: u16) -> Result<i32, String> {
    let listeners = listening_inodes(port);
    let processes = procfs::process::all_processes().map_err(|e| format!("reading /proc: {e}"))?;
    let mut listening = Vec::new();
    let mut unknown = Vec::new();
    for process in processes.flatten() {
        let named = process.stat().map(|s| s.comm == comm).unwrap_or(false);
        if !named {
            continue;
        }
        match process.fd() {
            Ok(fds) => {
                let listens = fds.flatten().any(|fd| match fd.target {
                    FDTarget::Socket(inode) => listeners.contains(&inode),
                    _ => false,
                });
                if listens {
                    listening.push(process);
                }
            }
            Err(_) => unknown.push(process),
        }
    }
    if listening.len() == 1 {
        return Ok(listening[0].pid);
    }
    let pool = if listening.is_empty() {
        unknown
    } else {
        listening
    };
    let port_text = port.to_string();
    let mentioning: Vec<i32> = pool
        .iter()
        .filter(|p| {
            p.cmdline().is_ok_and(|args| {
                args.iter().any(|arg| {
                    arg.split(|c: char| !c.is_ascii_digit())
                        .any(|part| part == port_text)
                })
            })
        })
        .map(|p| p.pid)
        .collect();
    match (mentioning.as_slice(), pool.as_slice()) {
        ([pid], _) => Ok(*pid),
        (_, [only]) => Ok(only.pid),
        (_, []) => Err(format!("no {comm} process listening on port {port}")),
        (_, several) => Err(format!(
            "{} {comm} processes could be the one on port {port}",
            several.len()
        )),
    }
}

/// Inodes of the TCP sockets listening on `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> HashSet<u64> {
    let v4 = procfs::net::tcp().unwrap_or_default();
    let v6 = procfs::net::tcp6().unwrap_or_default();
    v4.into_iter()
        .chain(v6)
        .filter(|e| e.state == TcpState::Listen && e.local_address.port() == port)
        .map(|e| e.inode)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_urls_or_defaults() {
        assert_eq!(port_of("nats://127.0.0.1:4222", 4222), Some(4222));
        assert_eq!(port_of("nats://a:4333,nats://b:4444", 4222), Some(4333));
        assert_eq!(port_of("127.0.0.1:5000", 4222), Some(5000));
        assert_eq!(port_of("redis://127.0.0.1/0", 6379), Some(6379));
        assert_eq!(port_of("redis://:pw@localhost:6380/1", 6379), Some(6380));
    }

    #[test]
    fn this_process_is_found_by_its_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = Process::myself().unwrap();
        let comm = me.stat().unwrap().comm;
        assert_eq!(find(&comm, port), Ok(me.pid));
        drop(listener);
        assert!(find("no-such-process", port).is_err());
    }
}
