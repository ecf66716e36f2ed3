//! Page tokens: opaque, and bound to the listing that issued them (its
//! scope, filters and the caller's tenant) by a MAC, so a token is refused
//! by any other listing and says nothing about the records behind it.
//! Every replica derives the same key from the shared configuration, so a
//! token works on whichever replica the next call reaches.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Bytes of MAC kept in a token.
const MAC_LEN: usize = 16;

/// A token not issued by this listing.
#[derive(Debug, thiserror::Error)]
#[error("not a token returned by this listing (for this scope, these filters and this caller)")]
pub struct ForeignToken;

/// Issues and reads the page tokens of one installation.
#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl PageTokens {
    /// The key of the installation configured by `config`.
    pub fn new(config: &hookrelay_core::Config) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"hookrelay page tokens v1\0");
        digest.update(config.prefix.as_bytes());
        digest.update(b"\0");
        digest.update(config.auth.admin_token_sha256.as_bytes());
        for token in &config.auth.tokens {
            digest.update(b"\0");
            digest.update(token.sha256.as_bytes());
        }
        Self {
            key: digest.finalize().into(),
        }
    }

    fn mac(&self, binding: &str, position: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(binding.as_bytes());
        mac.update(b"\0");
        mac.update(position);
        let full = mac.finalize().into_bytes();
        full[..MAC_LEN].try_into().expect("long enough")
    }

    /// The token of `position` (two numbers) in the listing `binding`.
    pub fn issue(&self, binding: &str, position: [u64; 2]) -> String {
        let mut bytes = Vec::with_capacity(16 + MAC_LEN);
        bytes.extend_from_slice(&position[0].to_be_bytes());
        bytes.extend_from_slice(&position[1].to_be_bytes());
        let mac = self.mac(binding, &bytes);
        bytes.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position in `token`, if the listing `binding` issued it.
    pub fn read(&self, binding: &str, token: &str) -> Result<[u64; 2], ForeignToken> {
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| ForeignToken)?;
        if bytes.len() != 16 + MAC_LEN {
            return Err(ForeignToken);
        }
        let (position, mac) = bytes.split_at(16);
        // Constant time, as `verify_truncated_left` compares.
        let mut check = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        check.update(binding.as_bytes());
        check.update(b"\0");
        check.update(position);
        check.verify_truncated_left(mac).map_err(|_| ForeignToken)?;
        let number =
            |at: usize| u64::from_be_bytes(position[at..at + 8].try_into().expect("8 bytes"));
        Ok([number(0), number(8)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> PageTokens {
        let mut config = hookrelay_core::Config::defaults();
        config.auth.admin_token_sha256 = "ab".repeat(32);
        PageTokens::new(&config)
    }

    #[test]
    fn a_token_reads_back_only_in_its_own_listing() {
        let tokens = tokens();
        let token = tokens.issue("tenant:acme|caller:acme", [1_700_000_000_000, 42]);
        assert_eq!(
            tokens.read("tenant:acme|caller:acme", &token).unwrap(),
            [1_700_000_000_000, 42]
        );
        assert!(tokens.read("tenant:globex|caller:globex", &token).is_err());
        assert!(tokens.read("tenant:acme|caller:*", &token).is_err());
        assert!(tokens
            .read("tenant:acme|caller:acme", "1700000000000.42")
            .is_err());
        let mut forged = URL_SAFE_NO_PAD.decode(&token).unwrap();
        forged[15] ^= 1;
        assert!(tokens
            .read("tenant:acme|caller:acme", &URL_SAFE_NO_PAD.encode(forged))
            .is_err());
    }

    #[test]
    fn another_installation_refuses_the_token() {
        let token = tokens().issue("x", [1, 2]);
        let mut config = hookrelay_core::Config::defaults();
        config.auth.admin_token_sha256 = "cd".repeat(32);
        assert!(PageTokens::new(&config).read("x", &token).is_err());
    }
}
