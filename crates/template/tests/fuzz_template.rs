//! Property test: compiling and rendering arbitrary templates against
//! arbitrary event data never panics; errors are values.

use hookrelay_template::{context, sample_event, Template};
use proptest::prelude::*;

fn pieces() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "{{ ", " }}", "{% ", " %}", "data", ".", "x", "|", "md5", "sha1", "sha256", "crc32",
            "date", "(", ")", "'%Y'", "1", "[0]", "id", "labels", "nope", " ", "\"", "\\\\", "{",
            "}", "for", "in", "if", "endif", "upper",
        ]),
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn rendering_never_panics(text in pieces(), raw in ".{0,40}", data in prop::collection::hash_map("[a-z]{1,3}", any::<i32>(), 0..4)) {
        let mut event = sample_event("acme", "user.created");
        event.data = serde_json::value::RawValue::from_string(serde_json::to_string(&data).unwrap()).unwrap();
        for source in [serde_json::Value::String(text.clone()), serde_json::json!({ "a": text, "b": [raw.clone()] })] {
            if let Ok(template) = Template::from_json(source) {
                let _ = template.render(&context(&event, "%d.%m.%Y"));
            }
        }
        let _ = Template::compile(&raw);
    }
}
