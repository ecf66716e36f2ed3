//! Key names and the packed entries of the attempt index.
//!
//! Every scope (a subscription, a tenant, their final failures) has one
//! string per hour of attempt time (the ULID time of the attempt id) to
//! which each attempt appends a fixed-width entry: 3 bytes of milliseconds
//! into the hour, 6 bytes of ATTEMPTS stream sequence, 1 byte of outcome.
//! Attempt ids are found through one string per minute of `(ms into the
//! minute, sequence)` pairs, events through [`EVENT_SHARDS`] strings per
//! tenant and hour of `(event id hash, sequence)` pairs. Which sequences are
//! indexed already is one bit per sequence.

use chrono::{DateTime, Utc};
use hookrelay_core::delivery::Outcome;
use hookrelay_core::Names;

pub const HOUR_MS: u64 = 3_600_000;
pub const MINUTE_MS: u64 = 60_000;
/// Event lookups read one of this many strings per tenant and hour.
pub const EVENT_SHARDS: u64 = 64;
/// Sequences per "already indexed" bitmap.
pub const SEEN_BITS: u64 = 1 << 16;

pub const SCOPE_ENTRY: usize = 10;
pub const ID_ENTRY: usize = 8;
pub const EVENT_ENTRY: usize = 10;

/// The part of an outcome code that says the attempt was the last (gave up).
pub const GAVE_UP: u8 = 0x80;

/// One attempt in a scope's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub ms: u64,
    pub seq: u64,
    pub code: u8,
}

impl Entry {
    pub fn key(&self) -> (u64, u64) {
        (self.ms, self.seq)
    }
}

/// Where a listing continues: older than this attempt time and sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub ms: u64,
    pub seq: u64,
}

/// The millisecond time of an attempt id (`att_<ULID>`).
pub fn id_ms(id: &str) -> Option<u64> {
    let ulid = ulid::Ulid::from_string(id.strip_prefix("att_")?).ok()?;
    Some(ulid.timestamp_ms())
}

pub fn ms_of(at: DateTime<Utc>) -> u64 {
    at.timestamp_millis().max(0) as u64
}

/// One byte per outcome; a new outcome fails to compile here.
pub fn code(outcome: Outcome, gave_up: bool) -> u8 {
    let code = match outcome {
        Outcome::Success => 0,
        Outcome::HttpOther => 1,
        Outcome::Http4xx => 2,
        Outcome::Http5xx => 3,
        Outcome::Redirect => 4,
        Outcome::Timeout => 5,
        Outcome::ConnectError => 6,
        Outcome::DnsError => 7,
        Outcome::TlsError => 8,
        Outcome::Blocked => 9,
        Outcome::Disabled => 10,
        Outcome::Error => 11,
    };
    if gave_up {
        code | GAVE_UP
    } else {
        code
    }
}

/// Every outcome an attempt can have (one list, with the metrics').
pub use hookrelay_core::metrics::OUTCOMES;

/// The code of the outcome named `name` (as in `Outcome::as_str`), if any.
pub fn outcome_code(name: &str) -> Option<u8> {
    OUTCOMES
        .iter()
        .find(|o| o.as_str() == name)
        .map(|o| code(*o, false))
}

fn put_seq(out: &mut Vec<u8>, seq: u64) {
    out.extend_from_slice(&seq.to_be_bytes()[2..]);
}

fn get_seq(bytes: &[u8]) -> u64 {
    let mut full = [0u8; 8];
    full[2..].copy_from_slice(bytes);
    u64::from_be_bytes(full)
}

pub fn push_scope_entry(out: &mut Vec<u8>, entry: Entry) {
    let offset = (entry.ms % HOUR_MS) as u32;
    out.extend_from_slice(&offset.to_be_bytes()[1..]);
    put_seq(out, entry.seq);
    out.push(entry.code);
}

/// The entries of `bytes`, read from the bucket of `hour`.
pub fn scope_entries(hour: u64, bytes: &[u8]) -> impl Iterator<Item = Entry> + '_ {
    bytes.chunks_exact(SCOPE_ENTRY).map(move |e| Entry {
        ms: hour * HOUR_MS + u64::from(u32::from_be_bytes([0, e[0], e[1], e[2]])),
        seq: get_seq(&e[3..9]),
        code: e[9],
    })
}

pub fn push_id_entry(out: &mut Vec<u8>, ms: u64, seq: u64) {
    out.extend_from_slice(&((ms % MINUTE_MS) as u16).to_be_bytes());
    put_seq(out, seq);
}

/// Sequences in an id bucket recorded at `ms`.
pub fn id_seqs(ms: u64, bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let offset = ((ms % MINUTE_MS) as u16).to_be_bytes();
    bytes
        .chunks_exact(ID_ENTRY)
        .filter(move |e| e[..2] == offset)
        .map(|e| get_seq(&e[2..]))
}

/// FNV-1a: stable across versions and platforms, unlike `std`'s hasher.
fn event_hash(event_id: &str) -> u64 {
    event_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The shard of an event and the 4 bytes stored to tell events apart in it.
pub fn event_shard(event_id: &str) -> (u64, [u8; 4]) {
    let hash = event_hash(event_id);
    (hash % EVENT_SHARDS, ((hash >> 32) as u32).to_be_bytes())
}

pub fn push_event_entry(out: &mut Vec<u8>, fingerprint: [u8; 4], seq: u64) {
    out.extend_from_slice(&fingerprint);
    put_seq(out, seq);
}

pub fn event_seqs(fingerprint: [u8; 4], bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(EVENT_ENTRY)
        .filter(move |e| e[..4] == fingerprint)
        .map(|e| get_seq(&e[4..]))
}

/// The scopes kept in hourly buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucketed<'a> {
    Subscription(&'a str),
    Tenant(&'a str),
    SubscriptionFailures(&'a str),
    TenantFailures(&'a str),
}

/// Key names, all under the configured prefix; a scope's keys group by
/// `{<subscription>}` or `{<tenant>}` for Redis Cluster (a tenant's event
/// buckets with its tenant buckets).
pub struct Keys<'a>(pub &'a Names);

impl Keys<'_> {
    pub fn bucket(&self, scope: Bucketed<'_>, hour: u64) -> String {
        let (kind, owner) = match scope {
            Bucketed::Subscription(id) => ("s", id),
            Bucketed::Tenant(id) => ("t", id),
            Bucketed::SubscriptionFailures(id) => ("fs", id),
            Bucketed::TenantFailures(id) => ("ft", id),
        };
        self.0
            .redis_key(&["log", kind, &format!("{{{owner}}}"), &hour.to_string()])
    }

    pub fn ids(&self, minute: u64) -> String {
        self.0.redis_key(&["log", "id", &minute.to_string()])
    }

    /// `<prefix>:log:ev:{<tenant>}:<shard>:<hour>`: event ids are unique
    /// only within a tenant, so each tenant's are kept apart.
    pub fn event(&self, tenant: &str, shard: u64, hour: u64) -> String {
        self.0.redis_key(&[
            "log",
            "ev",
            &format!("{{{tenant}}}"),
            &shard.to_string(),
            &hour.to_string(),
        ])
    }

    /// The bitmap holding `seq`, and its bit.
    pub fn seen(&self, seq: u64) -> (String, u64) {
        (
            self.0
                .redis_key(&["log", "seen", &(seq / SEEN_BITS).to_string()]),
            seq % SEEN_BITS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let entry = Entry {
            ms: 1_722_000_123_456,
            seq: (1 << 47) + 5,
            code: code(Outcome::Http5xx, true),
        };
        let mut bytes = Vec::new();
        push_scope_entry(&mut bytes, entry);
        assert_eq!(bytes.len(), SCOPE_ENTRY);
        let read: Vec<Entry> = scope_entries(entry.ms / HOUR_MS, &bytes).collect();
        assert_eq!(read, [entry]);

        let mut ids = Vec::new();
        push_id_entry(&mut ids, entry.ms, 7);
        push_id_entry(&mut ids, entry.ms + 1, 8);
        assert_eq!(id_seqs(entry.ms, &ids).collect::<Vec<_>>(), [7]);

        let (_, fp) = event_shard("o-1");
        let mut events = Vec::new();
        push_event_entry(&mut events, fp, 9);
        push_event_entry(&mut events, event_shard("o-2").1, 10);
        assert_eq!(event_seqs(fp, &events).collect::<Vec<_>>(), [9]);
    }

    #[test]
    fn a_tenants_event_buckets_share_its_hash_tag() {
        let names = Names::new("hr");
        let keys = Keys(&names);
        assert_eq!(keys.event("acme", 5, 480_000), "hr:log:ev:{acme}:5:480000");
        assert_eq!(
            keys.bucket(Bucketed::Tenant("acme"), 480_000),
            "hr:log:t:{acme}:480000"
        );
    }

    #[test]
    fn outcomes_and_ids_parse() {
        assert_eq!(outcome_code("http_5xx"), Some(3));
        assert_eq!(outcome_code("nope"), None);
        assert_eq!(
            id_ms("att_01J00000000000000000000000"),
            Some(1_717_986_918_400)
        );
    }
}
