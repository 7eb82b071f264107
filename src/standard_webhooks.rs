//! Signing outbound webhooks as the Standard Webhooks specification says
//! (<https://www.standardwebhooks.com>): the signed content is `{webhook-id}.{webhook-timestamp}.{body}`,
//! HMAC-SHA256 under the secret's bytes (the base64 after `whsec_`), sent as
//! `webhook-signature: v1,<base64>`, one signature per secret in use, space-separated (during a
//! rotation both the new and the previous secret sign). And the retry schedule deliveries follow.
//!
//! Nothing here logs, and errors never carry a secret.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret as _, SecretString};

/// A secret that is not `whsec_` and base64 of 24 to 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is whsec_ and base64 of 24 to 64 bytes")]
pub struct MalformedSecret;

fn key_bytes(secret: &SecretString) -> Result<zeroize::Zeroizing<Vec<u8>>, MalformedSecret> {
    let encoded = secret.expose_secret().strip_prefix("whsec_").ok_or(MalformedSecret)?;
    let bytes = zeroize::Zeroizing::new(STANDARD.decode(encoded).map_err(|_| MalformedSecret)?);
    if !(24..=64).contains(&bytes.len()) {
        return Err(MalformedSecret);
    }
    Ok(bytes)
}

/// `v1,<base64 HMAC-SHA256>` of one message under one secret.
pub fn sign(secret: &SecretString, id: &str, timestamp: i64, body: &[u8]) -> Result<String, MalformedSecret> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes(secret)?);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    Ok(format!("v1,{}", STANDARD.encode(context.sign().as_ref())))
}

/// The `webhook-signature` header: a signature under each secret, space-separated.
pub fn signature_header(
    secrets: &[&SecretString],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, MalformedSecret> {
    let signatures: Result<Vec<String>, MalformedSecret> =
        secrets.iter().map(|secret| sign(secret, id, timestamp, body)).collect();
    Ok(signatures?.join(" "))
}

/// How long after failed attempt `attempt` (1 for the first) the next one is made, before
/// jitter. Ten attempts over about three days: at once, then 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h, 14 h, 20 h and 24 h after each failure (3 days, 3 h and 35 min from the first to the
/// last).
pub const RETRY_SCHEDULE: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(20 * 3600),
    Duration::from_secs(24 * 3600),
];

/// The wait before the attempt after failed attempt `attempt` (1 for the first), with up to
/// ±10 % jitter (`unit` in [0, 1] picks where), so that deliveries that failed together do not
/// all retry together; `None` when the delivery has had all its attempts.
pub fn retry_after(attempt: u32, unit: f64) -> Option<Duration> {
    let base = RETRY_SCHEDULE.get(usize::try_from(attempt).ok()?.checked_sub(1)?)?;
    let factor = 0.9 + 0.2 * unit.clamp(0.0, 1.0);
    Some(base.mul_f64(factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    #[test]
    fn signatures_match_the_specifications_example() {
        // The example of the Standard Webhooks reference libraries (checked against the Python
        // `standardwebhooks` 1.1.0 here).
        let signed = sign(
            &secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_rotation_signs_with_both_secrets_and_a_changed_byte_changes_the_signature() {
        let (old, new) = (
            secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            secret(&format!("whsec_{}", STANDARD.encode([7u8; 32]))),
        );
        let header = signature_header(&[&new, &old], "evt_1", 1_700_000_000, b"{}").unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], sign(&old, "evt_1", 1_700_000_000, b"{}").unwrap());
        assert_ne!(parts[0], parts[1]);
        assert_ne!(sign(&new, "evt_1", 1_700_000_000, b"{ }").unwrap(), parts[0]);
        assert_ne!(sign(&new, "evt_2", 1_700_000_000, b"{}").unwrap(), parts[0]);
    }

    #[test]
    fn malformed_secrets_are_refused_without_echoing_them() {
        for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!", "whsec_", "whsec_AAAA"] {
            let err = sign(&secret(bad), "id", 1, b"").unwrap_err();
            assert_eq!(err.to_string(), "a webhook secret is whsec_ and base64 of 24 to 64 bytes", "{bad}");
        }
    }

    #[test]
    fn retries_follow_the_schedule_with_bounded_jitter_and_stop() {
        assert_eq!(retry_after(1, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(9, 0.0), Some(Duration::from_secs(24 * 3600).mul_f64(0.9)));
        assert_eq!(retry_after(2, 1.0), Some(Duration::from_secs(300).mul_f64(1.1)));
        assert_eq!(retry_after(0, 0.5), None);
        assert_eq!(retry_after(10, 0.5), None);
        let total: Duration = RETRY_SCHEDULE.iter().sum();
        assert_eq!(total.as_secs(), 3 * 86_400 + 3 * 3600 + 35 * 60 + 5);
    }
}
