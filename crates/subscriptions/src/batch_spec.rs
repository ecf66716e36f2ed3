//! Batch settings between the API and the stored model.

use std::time::Duration;

use hookrelay_core::subscription::BatchSpec;
use hookrelay_proto::v1 as pb;
use hookrelay_template::{context, sample_event, Template};

use crate::error::ApiError;

const MAX_WINDOW: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_SIZE: u32 = 100;
const MAX_SIZE: u32 = 10_000;

fn field(name: &str) -> String {
    format!("subscription.batch.{name}")
}

/// Renders a one-string template against a sample event, as text (a
/// missing value is empty); `None` when it fails only on the sample's data
/// (real events may have what it needs), an error when it would fail on
/// every event.
fn sample_render(name: &str, source: &str) -> Result<Option<String>, ApiError> {
    let template = Template::from_json(serde_json::Value::String(source.to_owned()))
        .map_err(|e| ApiError::invalid(field(name), e.message))?;
    let event = sample_event("sample", "training.update");
    let value = template.check(&context(&event, "")).map_err(|e| {
        ApiError::invalid(
            field(name),
            format!("does not render a sample event: {}", e.message),
        )
    })?;
    Ok(value.map(|value| match value {
        serde_json::Value::String(text) => text,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }))
}

/// A change's URL points at the API resource itself: no format extension
/// (`.json`), no API key.
fn check_change_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("renders {url:?}, not a URL: {e}"))?;
    let last = parsed
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("");
    if let Some((_, extension)) = last.rsplit_once('.') {
        if !extension.is_empty() && extension.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "renders {url:?}: a change URL carries no format extension (.{extension})"
            ));
        }
    }
    for (key, _) in parsed.query_pairs() {
        let key = key.to_ascii_lowercase();
        if [
            "key",
            "api_key",
            "apikey",
            "token",
            "access_token",
            "secret",
        ]
        .contains(&key.as_str())
        {
            return Err(format!(
                "renders {url:?}: a change URL carries no API key ({key})"
            ));
        }
    }
    Ok(())
}

/// The stored batch of an API batch; `None` when unset.
pub fn from_proto(batch: Option<&pb::BatchSpec>) -> Result<Option<BatchSpec>, ApiError> {
    let Some(batch) = batch.filter(|b| **b != pb::BatchSpec::default()) else {
        return Ok(None);
    };
    let window = batch
        .window
        .and_then(|w| Duration::try_from(w).ok())
        .filter(|w| *w >= Duration::from_millis(10) && *w <= MAX_WINDOW)
        .ok_or_else(|| ApiError::invalid(field("window"), "is required, between 10ms and 1h"))?;
    let max_size = match batch.max_size {
        0 => DEFAULT_MAX_SIZE,
        n if n > MAX_SIZE => {
            return Err(ApiError::invalid(
                field("max_size"),
                format!("at most {MAX_SIZE}"),
            ))
        }
        n => n,
    };
    // A key that renders empty for an event (every field it names missing)
    // falls back to the default key there, so an empty sample key is fine.
    let key = (!batch.key.trim().is_empty()).then(|| batch.key.clone());
    if let Some(key) = &key {
        sample_render("key", key)?;
    }
    let url_template = (!batch.url_template.trim().is_empty()).then(|| batch.url_template.clone());
    if let Some(url_template) = &url_template {
        // Empty: made only of fields the sample lacks, nothing to check.
        if let Some(url) = sample_render("url_template", url_template)?.filter(|u| !u.is_empty()) {
            check_change_url(&url).map_err(|m| ApiError::invalid(field("url_template"), m))?;
        }
    }
    Ok(Some(BatchSpec {
        window,
        max_size,
        key,
        url_template,
    }))
}

pub fn to_proto(batch: &BatchSpec) -> pb::BatchSpec {
    pb::BatchSpec {
        window: prost_types::Duration::try_from(batch.window).ok(),
        max_size: batch.max_size,
        key: batch.key.clone().unwrap_or_default(),
        url_template: batch.url_template.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(edit: impl FnOnce(&mut pb::BatchSpec)) -> Result<Option<BatchSpec>, ApiError> {
        let mut batch = pb::BatchSpec {
            window: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            url_template: "http://api.springest.nl/{{ object }}s/{{ entity_id }}".into(),
            ..Default::default()
        };
        edit(&mut batch);
        from_proto(Some(&batch))
    }

    #[test]
    fn a_seed_001_batch_validates_and_round_trips() {
        let stored = spec(|_| {}).unwrap().unwrap();
        assert_eq!(stored.max_size, DEFAULT_MAX_SIZE);
        assert_eq!(from_proto(Some(&to_proto(&stored))).unwrap(), Some(stored));
        assert_eq!(from_proto(None).unwrap(), None);
    }

    #[test]
    fn paths_the_sample_lacks_and_data_errors_save() {
        for (key, url) in [
            (
                "{{ data.a.b.c }}",
                "http://api.test/{{ object }}s/{{ data.a.b.c }}",
            ),
            (
                "{{ data.items[0].sku }}",
                "http://api.test/t/{{ data.items[0].sku }}",
            ),
            ("{{ data.group | upper }}", "{{ data.url }}"),
            ("{{ data.n * 2 }}", "http://api.test/t/{{ data.n | round }}"),
        ] {
            let stored = spec(|b| {
                b.key = key.into();
                b.url_template = url.into();
            });
            assert!(stored.is_ok(), "{key} / {url}: {stored:?}");
        }
    }

    #[test]
    fn bad_batches_name_the_field() {
        type Edit = Box<dyn FnOnce(&mut pb::BatchSpec)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|b| b.window = None), "subscription.batch.window"),
            (Box::new(|b| b.max_size = 1_000_000), "subscription.batch.max_size"),
            (Box::new(|b| b.url_template = "http://api.test/{{ object }}s/{{ entity_id }}.json".into()), "subscription.batch.url_template: renders \"http://api.test/trainings/1.json\": a change URL carries no format extension"),
            (Box::new(|b| b.url_template = "http://api.test/t/{{ entity_id }}?api_key=x".into()), "subscription.batch.url_template: renders \"http://api.test/t/1?api_key=x\": a change URL carries no API key"),
            (Box::new(|b| b.key = "{{ object ".into()), "subscription.batch.key"),
            (Box::new(|b| b.key = "{{ nofn(data) }}".into()), "subscription.batch.key: does not render a sample event: unknown function"),
            (Box::new(|b| b.url_template = "http://api.test/{{ data.id | nosuchfilter }}".into()), "subscription.batch.url_template: does not render a sample event: unknown filter"),
        ];
        for (edit, expected) in cases {
            let err = spec(edit).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err} !~ {expected}");
        }
    }
}
