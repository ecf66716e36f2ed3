//! W3C Trace Context across hookrelay: a publisher's `traceparent` header on
//! the NATS message of an event is kept with the event (read back with it
//! from the stream, so retries and redeliveries keep it), and each webhook
//! request carries a `traceparent` of the same trace with a span id of its
//! own, which the attempt record keeps.

use rand::RngCore;

/// The header, as W3C Trace Context names it.
pub const HEADER: &str = "traceparent";

/// A valid `traceparent`: version, trace id, parent span id, flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// 16 lowercase hex digits, not all zero.
    pub parent_id: String,
    /// 2 hex digits (`01`: sampled).
    pub flags: String,
}

fn hex_of_len(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceParent {
    /// Parses a header value; `None` for anything W3C says to ignore
    /// (unknown layout, version `ff`, all-zero ids, uppercase hex).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let parent_id = parts.next()?;
        let flags = parts.next()?;
        // Version 00 has exactly four parts; later versions may add more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let valid = hex_of_len(version, 2)
            && version != "ff"
            && hex_of_len(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && hex_of_len(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && hex_of_len(flags, 2);
        valid.then(|| TraceParent {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// The header value of a new span of this trace (a request hookrelay
    /// sends), with a random span id.
    pub fn child(&self) -> String {
        let mut span = [0u8; 8];
        while span == [0u8; 8] {
            rand::rng().fill_bytes(&mut span);
        }
        format!("00-{}-{}-{}", self.trace_id, hex::encode(span), self.flags)
    }

    /// The header value.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

/// The valid `traceparent` among NATS message headers, if any.
pub fn from_nats_headers(headers: Option<&async_nats::HeaderMap>) -> Option<TraceParent> {
    TraceParent::parse(headers?.get(HEADER)?.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn valid_headers_parse_and_children_keep_the_trace() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(parent.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.header(), VALID);
        let child = TraceParent::parse(&parent.child()).unwrap();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_eq!(child.flags, "01");
        assert_ne!(child.parent_id, parent.parent_id);
        // A later version may carry more fields.
        assert!(TraceParent::parse(&format!("cc{}-what", &VALID[2..])).is_some());
    }

    #[test]
    fn invalid_headers_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
