//! Standard Webhooks signatures: `whsec_` secrets and `v1,` HMAC-SHA256.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "whsec_";

/// A secret that is not `whsec_<base64>`.
#[derive(Debug, thiserror::Error)]
#[error("secret must be \"whsec_\" followed by base64 of 24 to 64 bytes")]
pub struct SecretError;

/// A decoded signing key.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Decodes `whsec_<base64>`.
    pub fn parse(secret: &str) -> Result<Self, SecretError> {
        let encoded = secret.strip_prefix(PREFIX).ok_or(SecretError)?;
        let key = B64.decode(encoded).map_err(|_| SecretError)?;
        if key.is_empty() || key.len() > 64 {
            return Err(SecretError);
        }
        Ok(Self(key))
    }

    /// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

/// A new `whsec_` secret of 32 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", B64.encode(key))
}

/// The `webhook-signature` value: one signature per key, space-separated.
pub fn signature_header(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `webhook-id` of one event to one subscription: stable across retries
/// and redeliveries, so receivers can deduplicate.
pub fn webhook_id(event_id: &str, subscription_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(event_id.as_bytes())
        .chain_update([0u8])
        .chain_update(subscription_id.as_bytes())
        .finalize();
    format!("msg_{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        let key = SigningKey::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let signature = key.sign(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn generated_secrets_parse_and_differ() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        SigningKey::parse(&a).unwrap();
        assert!(SigningKey::parse("nope").is_err());
        assert!(SigningKey::parse("whsec_!!!").is_err());
    }

    #[test]
    fn several_keys_sign_space_separated() {
        let keys = [
            SigningKey::parse(&generate_secret()).unwrap(),
            SigningKey::parse(&generate_secret()).unwrap(),
        ];
        let header = signature_header(&keys, "id", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
    }

    #[test]
    fn webhook_ids_are_stable_per_pair() {
        assert_eq!(webhook_id("e", "s"), webhook_id("e", "s"));
        assert_ne!(webhook_id("e", "s"), webhook_id("e", "t"));
        assert_ne!(webhook_id("ab", "c"), webhook_id("a", "bc"));
        assert_eq!(webhook_id("e", "s").len(), 36);
    }
}
