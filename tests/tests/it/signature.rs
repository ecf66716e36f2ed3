//! A Standard Webhooks verifier written for the tests, independent of the
//! signer, and checked against the published test vector.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Whether `header` (space-separated `v1,<sig>`) holds a valid signature of
/// `id.timestamp.body` under `secret`.
pub fn verify(secret: &str, id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let key = B64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    header.split(' ').any(|candidate| candidate == expected)
}

#[test]
fn verifier_accepts_the_published_test_vector() {
    let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    let header = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
    assert!(verify(
        secret,
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        "1649367553",
        body,
        header
    ));
    assert!(!verify(
        secret,
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        "1649367554",
        body,
        header
    ));
}
