//! Signed tokens: what a link or a cookie may open, with an HMAC-SHA256 over it and an expiry.
//!
//! A token is `base64url(JSON claims) . base64url(HMAC(key, purpose ‖ 0 ‖ claims))`. The purpose
//! is part of what is signed, so a token made for one use (a person's link to one request) never
//! passes as another (an operator's session), even under the same key; the inbox and the console
//! also use different keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use reanimate_core::Timestamp;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::Sha256;

/// What a token is for; part of the signed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A person's link to one request.
    RequestLink,
    /// A person's form: ties a form to the browser that loaded it (CSRF).
    Form,
    /// A short-lived operator link that starts a console session.
    OperatorLink,
    /// An operator's console session (a cookie).
    OperatorSession,
    /// The console's forms (CSRF).
    ConsoleForm,
    /// The OAuth `state` of a Connect Gmail flow.
    OAuthState,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::RequestLink => b"request-link",
            Purpose::Form => b"form",
            Purpose::OperatorLink => b"operator-link",
            Purpose::OperatorSession => b"operator-session",
            Purpose::ConsoleForm => b"console-form",
            Purpose::OAuthState => b"oauth-state",
        }
    }
}

/// Why a token was refused. The pages say no more than "this link is not valid" or "expired".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    BadSignature,
    Expired,
}

/// A key that signs and checks tokens.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(…)")
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    #[serde(rename = "x")]
    expires: u64,
    #[serde(rename = "c")]
    claims: T,
}

impl Signer {
    /// A signer with `key` (at least 32 bytes: the stack generates 64 characters).
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self, String> {
        let key = key.into();
        if key.len() < 32 {
            return Err(format!(
                "a signing key needs at least 32 bytes, this one has {}",
                key.len()
            ));
        }
        Ok(Self { key })
    }

    fn mac(&self, purpose: Purpose, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose.label());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    /// A token for `claims`, valid until `expires`.
    pub fn sign<T: Serialize>(&self, purpose: Purpose, claims: &T, expires: Timestamp) -> String {
        let payload = serde_json::to_vec(&Envelope {
            expires: expires.as_millis() / 1000,
            claims,
        })
        .unwrap_or_default();
        let tag = self.mac(purpose, &payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The claims of `token` if this key signed it for `purpose` and it has not expired at `now`.
    /// The signature is checked (in constant time) before anything else is read.
    pub fn verify<T: DeserializeOwned>(
        &self,
        purpose: Purpose,
        token: &str,
        now: Timestamp,
    ) -> Result<T, Refusal> {
        let (expires, claims) = self.verify_signature(purpose, token)?;
        if expires * 1000 <= now.as_millis() {
            return Err(Refusal::Expired);
        }
        Ok(claims)
    }

    /// The claims of `token` if this key signed it for `purpose`, expired or not (for asking
    /// for a fresh link with an expired one).
    pub fn verify_expired<T: DeserializeOwned>(
        &self,
        purpose: Purpose,
        token: &str,
    ) -> Result<T, Refusal> {
        self.verify_signature(purpose, token)
            .map(|(_, claims)| claims)
    }

    /// (expiry in seconds, claims) of a token with a good signature.
    fn verify_signature<T: DeserializeOwned>(
        &self,
        purpose: Purpose,
        token: &str,
    ) -> Result<(u64, T), Refusal> {
        let (payload, tag) = token.split_once('.').ok_or(Refusal::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Refusal::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Refusal::Malformed)?;
        self.mac(purpose, &payload)
            .verify_slice(&tag)
            .map_err(|_| Refusal::BadSignature)?;
        let envelope: Envelope<T> =
            serde_json::from_slice(&payload).map_err(|_| Refusal::Malformed)?;
        Ok((envelope.expires, envelope.claims))
    }
}

/// `len` random bytes as base64url, for nonces (form cookies, PKCE verifiers).
pub fn random_token(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("the system has no randomness: {e}"));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Equal in constant time (for comparing secrets such as CSRF tokens).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Link {
        request: String,
        person: String,
    }

    fn signer(key: &str) -> Signer {
        Signer::new(key.repeat(32)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_token_opens_what_it_was_signed_for_until_it_expires() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let later = now.plus(Duration::from_secs(3600));
        let link = Link {
            request: "a@1.0".into(),
            person: "ana@example.com".into(),
        };
        let keys = signer("k");
        let token = keys.sign(Purpose::RequestLink, &link, later);
        assert_eq!(
            keys.verify::<Link>(Purpose::RequestLink, &token, now),
            Ok(link)
        );
        // Expired at its expiry, though still known to be genuine.
        assert_eq!(
            keys.verify::<Link>(Purpose::RequestLink, &token, later),
            Err(Refusal::Expired)
        );
        assert!(
            keys.verify_expired::<Link>(Purpose::RequestLink, &token)
                .is_ok()
        );
        assert!(
            signer("j")
                .verify_expired::<Link>(Purpose::RequestLink, &token)
                .is_err()
        );
        // Another purpose, another key.
        assert_eq!(
            keys.verify::<Link>(Purpose::OperatorSession, &token, now),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            signer("j").verify::<Link>(Purpose::RequestLink, &token, now),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn a_changed_claim_or_signature_is_refused() {
        let now = Timestamp::from_millis(1_700_000_000_000);
        let keys = signer("k");
        let token = keys.sign(
            Purpose::RequestLink,
            &Link {
                request: "a@1.0".into(),
                person: "ana@example.com".into(),
            },
            now.plus(Duration::from_secs(60)),
        );
        let (payload, tag) = token.split_once('.').unwrap_or_default();
        // Someone else's address in the claims, with the original signature.
        let forged = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap_or_default())
            .unwrap_or_default()
            .replace("ana@", "bob@");
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(
            keys.verify::<Link>(Purpose::RequestLink, &forged, now),
            Err(Refusal::BadSignature)
        );
        let mut flipped = token.clone();
        let last = flipped.pop().unwrap_or('A');
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        assert!(
            keys.verify::<Link>(Purpose::RequestLink, &flipped, now)
                .is_err()
        );
        assert_eq!(
            keys.verify::<Link>(Purpose::RequestLink, "garbage", now),
            Err(Refusal::Malformed)
        );
        assert!(Signer::new("short").is_err());
    }
}
