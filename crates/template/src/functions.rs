//! Template functions: hex digests (md5, sha1, sha256, crc32) of any
//! rendered value, and date formatting with the subscription's format.

use chrono::{DateTime, Utc};
use md5::Md5;
use minijinja::value::Value;
use minijinja::{Error, ErrorKind, State};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Name of the global holding the subscription's date format.
pub const DATE_FORMAT: &str = "__date_format";

/// The bytes a digest is taken of: a string as is, anything else as JSON.
fn digest_input(value: &Value) -> Result<Vec<u8>, Error> {
    if let Some(text) = value.as_str() {
        return Ok(text.as_bytes().to_vec());
    }
    serde_json::to_vec(value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot hash value: {e}"),
        )
    })
}

/// A missing value stays missing (renders as null), like any other
/// reference to a field the event does not have.
fn missing(value: &Value) -> bool {
    value.is_undefined() || value.is_none()
}

fn digest(value: Value, hash: impl FnOnce(&[u8]) -> String) -> Result<Value, Error> {
    if missing(&value) {
        return Ok(Value::UNDEFINED);
    }
    Ok(Value::from(hash(&digest_input(&value)?)))
}

pub fn md5(value: Value) -> Result<Value, Error> {
    digest(value, |bytes| hex::encode(Md5::digest(bytes)))
}

pub fn sha1(value: Value) -> Result<Value, Error> {
    digest(value, |bytes| hex::encode(Sha1::digest(bytes)))
}

pub fn sha256(value: Value) -> Result<Value, Error> {
    digest(value, |bytes| hex::encode(Sha256::digest(bytes)))
}

pub fn crc32(value: Value) -> Result<Value, Error> {
    digest(value, |bytes| format!("{:08x}", crc32fast::hash(bytes)))
}

/// `date(value, format?)`: an RFC 3339 string or Unix seconds, formatted
/// with `format`, else the subscription's date format, else RFC 3339.
pub fn date(state: &State, value: Value, format: Option<String>) -> Result<Value, Error> {
    if missing(&value) {
        return Ok(Value::UNDEFINED);
    }
    let at: DateTime<Utc> = if let Some(text) = value.as_str() {
        DateTime::parse_from_rfc3339(text)
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("date: {text:?} is not RFC 3339: {e}"),
                )
            })?
            .with_timezone(&Utc)
    } else if let Ok(seconds) = i64::try_from(value.clone()) {
        DateTime::from_timestamp(seconds, 0).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("date: {seconds} is out of range"),
            )
        })?
    } else {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("date: {value} is neither an RFC 3339 string nor Unix seconds"),
        ));
    };
    let format = format.or_else(|| {
        state
            .lookup(DATE_FORMAT)
            .and_then(|f| f.as_str().map(str::to_owned))
            .filter(|f| !f.is_empty())
    });
    match format {
        Some(format) => {
            check_date_format(&format).map_err(|m| Error::new(ErrorKind::InvalidOperation, m))?;
            Ok(Value::from(at.format(&format).to_string()))
        }
        None => Ok(Value::from(
            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )),
    }
}

/// Refuses strftime formats chrono cannot render (it would panic on them).
pub fn check_date_format(format: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(format!("{format:?} is not a valid strftime date format"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_known_values() {
        let hex = |v: Result<Value, Error>| v.unwrap().as_str().map(str::to_owned);
        let abc = || Value::from("abc");
        assert_eq!(
            hex(md5(abc())).as_deref(),
            Some("900150983cd24fb0d6963f7d28e17f72")
        );
        assert_eq!(
            hex(sha1(abc())).as_deref(),
            Some("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert_eq!(
            hex(sha256(abc())).as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(hex(crc32(abc())).as_deref(), Some("352441c2"));
        // Numbers and objects are hashed as their JSON text; missing stays missing.
        assert_eq!(hex(md5(Value::from(42))), hex(md5(Value::from("42"))));
        assert!(md5(Value::UNDEFINED).unwrap().is_undefined());
    }

    #[test]
    fn bad_date_formats_are_refused() {
        assert!(check_date_format("%d.%m.%Y %H:%M").is_ok());
        assert!(check_date_format("%Q").is_err());
    }
}
