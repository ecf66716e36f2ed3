//! Names of every subject, stream, consumer, KV bucket and Redis key, all
//! derived from one prefix so installations (and parallel tests) can share
//! one NATS and one Redis.

/// The slot of the retry schedule, open circuits and the deliveries they
/// hold (releasing a circuit moves held deliveries into the schedule).
pub const SCHEDULE_SLOT: &str = "schedule";
/// The slot of batch buffers and their flush schedule.
pub const BATCHES_SLOT: &str = "batches";
/// The slot of ordered delivery's queues, locks and ready set.
pub const FIFO_SLOT: &str = "fifo";

/// Resource names of one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
    upper: String,
}

impl Names {
    /// Names for `prefix`, which must pass [`Names::check_prefix`].
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            upper: prefix.to_ascii_uppercase().replace('-', "_"),
        }
    }

    /// A prefix is lowercase ASCII letters, digits, `_` and `-`, starting with
    /// a letter, at most 32 characters.
    pub fn check_prefix(prefix: &str) -> Result<(), String> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if valid {
            Ok(())
        } else {
            Err(format!(
                "{prefix:?} must be 1-32 lowercase letters, digits, '_' or '-', starting with a letter"
            ))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.events.<tenant>.<event type>`
    pub fn event_subject(&self, tenant: &str, event_type: &str) -> String {
        format!("{}.events.{tenant}.{event_type}", self.prefix)
    }

    /// Everything publishers send: `<prefix>.events.>`.
    pub fn events_filter(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// Splits an event subject into tenant and event type.
    pub fn parse_event_subject<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".events.")?;
        let (tenant, event_type) = rest.split_once('.')?;
        (!tenant.is_empty() && !event_type.is_empty()).then_some((tenant, event_type))
    }

    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.upper)
    }

    /// `<prefix>.deliveries.<tenant>`
    pub fn delivery_subject(&self, tenant: &str) -> String {
        format!("{}.deliveries.{tenant}", self.prefix)
    }

    pub fn deliveries_filter(&self) -> String {
        format!("{}.deliveries.>", self.prefix)
    }

    pub fn deliveries_stream(&self) -> String {
        format!("{}_DELIVERIES", self.upper)
    }

    /// `<prefix>.attempts.<tenant>.<subscription id>`
    pub fn attempt_subject(&self, tenant: &str, subscription_id: &str) -> String {
        format!("{}.attempts.{tenant}.{subscription_id}", self.prefix)
    }

    pub fn attempts_filter(&self) -> String {
        format!("{}.attempts.>", self.prefix)
    }

    pub fn attempts_stream(&self) -> String {
        format!("{}_ATTEMPTS", self.upper)
    }

    /// `<prefix>.dlq.<source>`, source being `events` or `deliveries`.
    pub fn dlq_subject(&self, source: &str) -> String {
        format!("{}.dlq.{source}", self.prefix)
    }

    pub fn dlq_filter(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    pub fn dlq_stream(&self) -> String {
        format!("{}_DLQ", self.upper)
    }

    /// `<prefix>.batches.<tenant>`: flushed batches, kept for their retries.
    pub fn batch_subject(&self, tenant: &str) -> String {
        format!("{}.batches.{tenant}", self.prefix)
    }

    pub fn batches_filter(&self) -> String {
        format!("{}.batches.>", self.prefix)
    }

    pub fn batches_stream(&self) -> String {
        format!("{}_BATCHES", self.upper)
    }

    /// KV bucket holding subscriptions.
    pub fn subscriptions_bucket(&self) -> String {
        format!("{}_subscriptions", self.prefix)
    }

    /// KV bucket holding each tenant's subscription ids (one key per
    /// tenant), so a tenant is listed and counted without reading others.
    pub fn tenants_bucket(&self) -> String {
        format!("{}_tenants", self.prefix)
    }

    /// KV bucket holding the event-type catalog: `t.<tenant>.<type>`,
    /// `g.<type>` (the global catalog) and `s.<tenant>` (catalog settings).
    pub fn event_types_bucket(&self) -> String {
        format!("{}_event_types", self.prefix)
    }

    /// Durable consumer name of a service on its input stream.
    pub fn consumer(&self, service: &str) -> String {
        format!("{}_{service}", self.prefix)
    }

    /// A Redis key: `<prefix>:<parts joined by ':'>`.
    pub fn redis_key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// A Redis key in the hash slot of `tag`: `<prefix>:{<tag>}:<parts
    /// joined by ':'>`. Keys that one script or transaction touches share
    /// a tag, so a Redis Cluster keeps them on one node: a subscription id
    /// for what only that subscription's work touches, or a group name
    /// ([`SCHEDULE_SLOT`], [`BATCHES_SLOT`], [`FIFO_SLOT`]) where a script
    /// also moves a subscription into or out of a set shared by all.
    pub fn redis_tagged(&self, tag: &str, parts: &[&str]) -> String {
        let mut key = format!("{}:{{{tag}}}", self.prefix);
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// The retry schedule: due entries scored by due time.
    pub fn retries_key(&self) -> String {
        self.redis_tagged(SCHEDULE_SLOT, &["retries"])
    }

    /// Claimed retry entries, scored by lease expiry.
    pub fn retries_leased_key(&self) -> String {
        self.redis_tagged(SCHEDULE_SLOT, &["retries", "leased"])
    }

    /// A batched subscription's buffer: changes by key, their order, and
    /// the counter that orders them.
    pub fn batch_keys(&self, subscription_id: &str) -> [String; 3] {
        [
            self.redis_tagged(BATCHES_SLOT, &["batch", subscription_id, "items"]),
            self.redis_tagged(BATCHES_SLOT, &["batch", subscription_id, "order"]),
            self.redis_tagged(BATCHES_SLOT, &["batch", subscription_id, "n"]),
        ]
    }

    /// Batched subscriptions by when their buffer is to be flushed.
    pub fn batches_due_key(&self) -> String {
        self.redis_tagged(BATCHES_SLOT, &["due"])
    }

    /// Flushes under way, scored by lease expiry.
    pub fn batches_leased_key(&self) -> String {
        self.redis_tagged(BATCHES_SLOT, &["leased"])
    }

    /// Every stream this installation owns.
    pub fn streams(&self) -> [String; 8] {
        [
            self.events_stream(),
            self.batches_stream(),
            self.deliveries_stream(),
            self.attempts_stream(),
            self.dlq_stream(),
            format!("KV_{}", self.subscriptions_bucket()),
            format!("KV_{}", self.tenants_bucket()),
            format!("KV_{}", self.event_types_bucket()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_prefix_matches_the_design() {
        let names = Names::new("hookrelay");
        assert_eq!(names.events_stream(), "HOOKRELAY_EVENTS");
        assert_eq!(names.events_filter(), "hookrelay.events.>");
        assert_eq!(
            names.event_subject("acme", "course_stat.created"),
            "hookrelay.events.acme.course_stat.created"
        );
        assert_eq!(
            names.parse_event_subject("hookrelay.events.acme.course_stat.created"),
            Some(("acme", "course_stat.created"))
        );
        assert_eq!(names.parse_event_subject("hookrelay.events.acme"), None);
        assert_eq!(names.parse_event_subject("other.events.acme.x"), None);
        assert_eq!(names.redis_key(&["retries"]), "hookrelay:retries");
        assert_eq!(
            names.redis_tagged(SCHEDULE_SLOT, &["retries", "leased"]),
            "hookrelay:{schedule}:retries:leased"
        );
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(Names::check_prefix("t_01abc-x").is_ok());
        for bad in [
            "",
            "Upper",
            "has.dot",
            "1starts",
            "with space",
            &"x".repeat(33),
        ] {
            assert!(Names::check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
