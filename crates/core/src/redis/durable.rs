//! Writes acknowledged by replicas (`redis.wait_replicas`): Redis replicates
//! asynchronously, so a write its master acknowledged just before dying can
//! be missing from the replica that takes over. hookrelay acks a NATS
//! message once a retry, a held task or a batched change is in Redis; with
//! `wait_replicas = n` every write is followed by `WAIT n timeout` on the
//! same node, and counts as done only when n replicas have it.

use std::time::Duration;

use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Value};

/// How many replicas must have a write, and how long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub replicas: u32,
    pub timeout: Duration,
}

impl Wait {
    /// The `WAIT` that follows a write.
    pub fn cmd(&self) -> Cmd {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.replicas)
            .arg(self.timeout.as_millis().max(1) as u64);
        cmd
    }

    /// A `WAIT` reply: fewer replicas than asked is a failure the caller
    /// retries (the write stands on the master; every hookrelay write may
    /// be repeated).
    pub fn check(&self, reply: &Value) -> RedisResult<()> {
        let acked: i64 = redis::from_redis_value(reply)?;
        if acked >= i64::from(self.replicas) {
            Ok(())
        } else {
            Err(RedisError::from((
                ErrorKind::TryAgain,
                "write not acknowledged by enough replicas (redis.wait_replicas)",
                format!(
                    "{acked} of {} within {} ms",
                    self.replicas,
                    self.timeout.as_millis()
                ),
            )))
        }
    }
}

/// Commands that only read: never followed by a `WAIT`.
const READS: [&[u8]; 36] = [
    b"GET",
    b"MGET",
    b"STRLEN",
    b"GETRANGE",
    b"GETBIT",
    b"BITCOUNT",
    b"EXISTS",
    b"TYPE",
    b"TTL",
    b"PTTL",
    b"ZRANGE",
    b"ZRANGEBYSCORE",
    b"ZREVRANGE",
    b"ZREVRANGEBYSCORE",
    b"ZCARD",
    b"ZSCORE",
    b"ZCOUNT",
    b"ZRANK",
    b"HGET",
    b"HMGET",
    b"HGETALL",
    b"HLEN",
    b"HEXISTS",
    b"LRANGE",
    b"LLEN",
    b"SMEMBERS",
    b"SCARD",
    b"SISMEMBER",
    b"SCAN",
    b"KEYS",
    b"DBSIZE",
    b"PING",
    b"TIME",
    b"INFO",
    b"ECHO",
    b"WAIT",
];

/// Whether `cmd` writes a key (scripts with keys are taken to write).
/// Commands without a key (`SCRIPT LOAD`, `PING`) are never waited for:
/// the client routes them itself, to every master or any node.
pub fn writes(cmd: &Cmd) -> bool {
    if super::cluster::routing_key(cmd).is_none() {
        return false;
    }
    let Some(redis::Arg::Simple(name)) = cmd.args_iter().next() else {
        return true;
    };
    !READS.iter().any(|read| name.eq_ignore_ascii_case(read))
}

/// A plain pipeline of `commands`, followed by `wait`'s `WAIT` if any.
pub fn pipeline_of<'a>(
    commands: impl IntoIterator<Item = &'a Cmd>,
    wait: Option<Wait>,
) -> Pipeline {
    let mut pipeline = Pipeline::new();
    for cmd in commands {
        pipeline.add_command(cmd.clone());
    }
    if let Some(wait) = wait {
        pipeline.add_command(wait.cmd());
    }
    pipeline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_without_a_wait_and_short_acks_fail() {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg("k").arg(1).arg("m");
        assert!(writes(&zadd));
        let mut script = redis::cmd("EVALSHA");
        script.arg("abc").arg(1).arg("k");
        assert!(writes(&script));
        assert!(!writes(redis::cmd("SCRIPT").arg("LOAD").arg("return 1")));
        assert!(!writes(redis::cmd("zrangebyscore").arg("k")));
        let wait = Wait {
            replicas: 2,
            timeout: Duration::from_millis(500),
        };
        assert!(wait.check(&Value::Int(2)).is_ok());
        let short = wait.check(&Value::Int(1)).unwrap_err();
        assert_eq!(short.kind(), ErrorKind::TryAgain);
        assert!(
            short.to_string().contains("1 of 2 within 500 ms"),
            "{short}"
        );
        let piped = pipeline_of([&zadd], Some(wait));
        assert_eq!(piped.len(), 2);
    }
}
