//! Cluster mode: hash slots, and pipelines that span them split into one
//! pipeline per slot.

use futures::future::try_join_all;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Arg, Cmd, ErrorKind, Pipeline, RedisError, Value};

use super::durable::Wait;

/// The hash slot of `key` (CRC16 of its `{tag}` if it has a non-empty one).
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

/// Commands without a key among those hookrelay sends.
const KEYLESS: [&[u8]; 9] = [
    b"PING", b"TIME", b"INFO", b"SCRIPT", b"ECHO", b"DBSIZE", b"CLUSTER", b"CONFIG", b"WAIT",
];

/// The key a command is routed by: its first argument, or for a script
/// its first key; `None` for commands without a key.
pub(super) fn routing_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().filter_map(|arg| match arg {
        Arg::Simple(bytes) => Some(bytes),
        Arg::Cursor => None,
    });
    let name = args.next()?;
    let is = |other: &[u8]| name.eq_ignore_ascii_case(other);
    if is(b"EVAL") || is(b"EVALSHA") || is(b"FCALL") {
        let _script = args.next()?;
        let keys = args.next()?;
        return (keys != b"0").then(|| args.next()).flatten();
    }
    if KEYLESS.iter().any(|keyless| is(keyless)) {
        return None;
    }
    args.next()
}

/// A pipeline on a cluster: a transaction must stay in one slot (refused
/// here, naming its keys, before the cluster refuses it less clearly); a
/// plain pipeline goes as one pipeline per slot. With `wait`, each slot's
/// writes are followed by a `WAIT` on that slot's master.
pub(super) async fn pipeline(
    cluster: ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
    wait: Option<Wait>,
) -> redis::RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let slots: Vec<Option<u16>> = commands
        .iter()
        .map(|cmd| routing_key(cmd).map(key_slot))
        .collect();
    let mut distinct: Vec<u16> = slots.iter().flatten().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if pipeline.is_transaction() {
        if distinct.len() > 1 {
            let keys: Vec<String> = commands
                .iter()
                .filter_map(|cmd| routing_key(cmd))
                .map(|key| String::from_utf8_lossy(key).into_owned())
                .collect();
            return Err(RedisError::from((
                ErrorKind::CrossSlot,
                "a transaction spans several hash slots",
                keys.join(", "),
            )));
        }
        let mut cluster = cluster;
        let values = cluster.req_packed_commands(pipeline, offset, count).await?;
        if let (Some(wait), Some(slot)) = (wait, distinct.first()) {
            let route = SingleNodeRoutingInfo::SpecificNode(Route::new(*slot, SlotAddr::Master));
            let acked = cluster
                .route_command(&wait.cmd(), RoutingInfo::SingleNode(route))
                .await?;
            wait.check(&acked)?;
        }
        return Ok(values);
    }
    // Keyless commands ride with the first slot's pipeline.
    let mut groups: Vec<(Vec<&Cmd>, Vec<usize>)> =
        vec![(Vec::new(), Vec::new()); distinct.len().max(1)];
    for (index, (cmd, slot)) in commands.iter().zip(&slots).enumerate() {
        let group = slot.map_or(0, |slot| {
            distinct
                .binary_search(&slot)
                .expect("every slot is in distinct")
        });
        groups[group].0.push(cmd);
        groups[group].1.push(index);
    }
    let replies = try_join_all(groups.into_iter().map(|(group, indexes)| {
        let mut cluster = cluster.clone();
        async move {
            let wait = wait.filter(|_| group.iter().any(|cmd| super::durable::writes(cmd)));
            let sub = super::durable::pipeline_of(group.iter().copied(), wait);
            let mut values = cluster.req_packed_commands(&sub, 0, sub.len()).await?;
            if let Some(wait) = wait {
                let acked = values.pop().unwrap_or(Value::Nil);
                wait.check(&acked)?;
            }
            Ok::<_, RedisError>((indexes, values))
        }
    }))
    .await?;
    let mut ordered = vec![Value::Nil; commands.len()];
    for (indexes, values) in replies {
        for (index, value) in indexes.into_iter().zip(values) {
            ordered[index] = value;
        }
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from the Redis Cluster specification's examples.
        // CRC16 of "123456789" is 0x31C3, already below 16384.
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn commands_route_by_their_key() {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg("k").arg(1).arg("m");
        assert_eq!(routing_key(&zadd), Some(&b"k"[..]));
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc").arg(2).arg("first").arg("second");
        assert_eq!(routing_key(&eval), Some(&b"first"[..]));
        let mut none = redis::cmd("EVALSHA");
        none.arg("abc").arg(0).arg("x");
        assert_eq!(routing_key(&none), None);
        assert_eq!(routing_key(&redis::cmd("PING")), None);
    }
}
