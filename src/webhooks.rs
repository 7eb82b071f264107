//! Payment provider webhooks: signature verification on the raw body, and what an event means
//! for us. No database here; `api::webhooks` records and applies events.
//!
//! - Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, where v1 is
//!   HMAC-SHA256(secret, "<t>.<body>"). The timestamp must be within the tolerance (both ways).
//! - Razorpay: `X-Razorpay-Signature: <hex>`, HMAC-SHA256(secret, body). Its event id comes in
//!   the unsigned `X-Razorpay-Event-Id` header, so events are deduplicated on the SHA-256 of the
//!   signed body instead: a captured body replayed under a new id is still the same event.
//!
//! Several secrets may be active at once (rotation): a signature valid under any of them is
//! accepted. Comparisons are constant-time (`hmac::verify`).

use aws_lc_rs::hmac;
use chrono::{DateTime, TimeZone, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
    #[error("no webhook secret is configured for this provider")]
    NotConfigured,
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.is_empty() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn any_secret_verifies(secrets: &[SecretString], message: &[u8], tags: &[Vec<u8>]) -> bool {
    secrets.iter().any(|secret| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
        tags.iter().any(|tag| hmac::verify(&key, message, tag).is_ok())
    })
}

/// Verifies a Stripe signature header against the raw body at `now` (unix seconds).
pub fn verify_stripe(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    tolerance_secs: u64,
    now: i64,
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", sig)) => signatures.push(decode_hex(sig).ok_or(SignatureError::Malformed)?),
            Some(_) => {} // other schemes (v0) are not accepted
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(timestamp) > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    if any_secret_verifies(secrets, &message, &signatures) { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// Verifies a Razorpay signature header against the raw body.
pub fn verify_razorpay(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let header = header.ok_or(SignatureError::Missing)?;
    let signature = decode_hex(header.trim()).ok_or(SignatureError::Malformed)?;
    if any_secret_verifies(secrets, body, &[signature]) { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// HMAC-SHA256 as lowercase hex: what providers send (used by tests and tools to sign).
pub fn sign_hex(secret: &str, message: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), message);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What an event asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A payment of an invoice of ours (with the provider's subscription it belongs to, if any).
    Payment { invoice_id: Uuid, amount_minor: i64, currency: String, subscription_ref: Option<String> },
    /// The provider's view of the subscription's status (already mapped to ours).
    SubscriptionStatus { status: &'static str, provider_ref: Option<String> },
    /// Nothing we act on.
    Ignore(&'static str),
}

/// A verified event, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub created: Option<DateTime<Utc>>,
    /// From the event's metadata (Stripe) or notes (Razorpay). Never chooses the organization
    /// (the invoice or subscription the event names does); it can only disagree.
    pub organization: Option<Uuid>,
    pub action: Action,
}

impl Event {
    /// Our invoice, or the provider's subscription reference, that this event is about.
    pub fn reference(&self) -> (Option<Uuid>, Option<&str>) {
        match &self.action {
            Action::Payment { invoice_id, .. } => (Some(*invoice_id), None),
            Action::SubscriptionStatus { provider_ref, .. } => (None, provider_ref.as_deref()),
            Action::Ignore(_) => (None, None),
        }
    }
}

/// The id a Razorpay event is deduplicated on: what its signature covers.
pub fn razorpay_event_id(body: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn uuid_at(value: &Value, pointer: &str) -> Option<Uuid> {
    value.pointer(pointer)?.as_str()?.parse().ok()
}

fn unix(value: Option<&Value>) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(value?.as_i64()?, 0).single()
}

fn stripe_status(status: &str) -> Option<&'static str> {
    Some(match status {
        "trialing" => "trialing",
        "active" => "active",
        "past_due" => "past_due",
        "unpaid" => "unpaid",
        "canceled" | "incomplete_expired" => "canceled",
        _ => return None,
    })
}

fn razorpay_status(status: &str) -> Option<&'static str> {
    Some(match status {
        "active" => "active",
        "pending" => "past_due",
        "halted" => "unpaid",
        "cancelled" | "completed" | "expired" => "canceled",
        _ => return None,
    })
}

/// Reads a Stripe event. `None` when it is not an event at all.
pub fn parse_stripe(body: &Value) -> Option<Event> {
    let id = body.get("id")?.as_str()?.to_owned();
    let event_type = body.get("type")?.as_str()?.to_owned();
    let object = body.pointer("/data/object")?;
    let organization = uuid_at(object, "/metadata/organization_id");
    let action = match event_type.as_str() {
        "invoice.paid" | "invoice.payment_succeeded" => match (
            uuid_at(object, "/metadata/invoice_id"),
            object.get("amount_paid").and_then(Value::as_i64),
            object.get("currency").and_then(Value::as_str),
        ) {
            (Some(invoice_id), Some(amount), Some(currency)) if amount > 0 => Action::Payment {
                invoice_id,
                amount_minor: amount,
                currency: currency.to_ascii_uppercase(),
                subscription_ref: object.get("subscription").and_then(Value::as_str).map(str::to_owned),
            },
            _ => Action::Ignore("no invoice_id, amount or currency"),
        },
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => {
            match object.get("status").and_then(Value::as_str).and_then(stripe_status) {
                Some(status) => Action::SubscriptionStatus {
                    status,
                    provider_ref: object.get("id").and_then(Value::as_str).map(str::to_owned),
                },
                None => Action::Ignore("a subscription status we do not track"),
            }
        }
        _ => Action::Ignore("an event type we do not act on"),
    };
    Some(Event { id, event_type, created: unix(body.get("created")), organization, action })
}

/// Reads a Razorpay event; `event_id` is `razorpay_event_id` of its body.
pub fn parse_razorpay(event_id: &str, body: &Value) -> Option<Event> {
    let event_type = body.get("event")?.as_str()?.to_owned();
    let payment = body.pointer("/payload/payment/entity");
    let subscription = body.pointer("/payload/subscription/entity");
    let notes = payment.or(subscription).and_then(|e| e.get("notes"));
    let organization = notes.and_then(|n| uuid_at(n, "/organization_id"));
    let action = match (event_type.as_str(), payment, subscription) {
        ("payment.captured", Some(p), _) => match (
            notes.and_then(|n| uuid_at(n, "/invoice_id")),
            p.get("amount").and_then(Value::as_i64),
            p.get("currency").and_then(Value::as_str),
        ) {
            (Some(invoice_id), Some(amount), Some(currency)) if amount > 0 => Action::Payment {
                invoice_id,
                amount_minor: amount,
                currency: currency.to_ascii_uppercase(),
                subscription_ref: subscription
                    .and_then(|s| s.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            },
            _ => Action::Ignore("no invoice_id, amount or currency"),
        },
        (t, _, Some(s)) if t.starts_with("subscription.") => {
            match s.get("status").and_then(Value::as_str).and_then(razorpay_status) {
                Some(status) => Action::SubscriptionStatus {
                    status,
                    provider_ref: s.get("id").and_then(Value::as_str).map(str::to_owned),
                },
                None => Action::Ignore("a subscription status we do not track"),
            }
        }
        _ => Action::Ignore("an event type we do not act on"),
    };
    Some(Event {
        id: event_id.to_owned(),
        event_type,
        created: unix(body.get("created_at")),
        organization,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter().map(|s| SecretString::from(s.to_string())).collect()
    }

    #[test]
    fn stripe_signatures_are_checked_against_every_active_secret_within_the_tolerance() {
        let body = br#"{"id":"evt_1"}"#;
        let sign = |secret: &str, t: i64| {
            let mut message = format!("{t}.").into_bytes();
            message.extend_from_slice(body);
            format!("t={t},v1={}", sign_hex(secret, &message))
        };
        let now = 1_800_000_000;
        let both = secrets(&["whsec_old", "whsec_new"]);
        assert_eq!(verify_stripe(Some(&sign("whsec_old", now)), body, &both, 300, now), Ok(()));
        assert_eq!(verify_stripe(Some(&sign("whsec_new", now - 299)), body, &both, 300, now), Ok(()));
        assert_eq!(
            verify_stripe(Some(&sign("whsec_x", now)), body, &both, 300, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_stripe(Some(&sign("whsec_new", now - 301)), body, &both, 300, now),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_stripe(Some(&sign("whsec_new", now + 301)), body, &both, 300, now),
            Err(SignatureError::Stale)
        );
        assert_eq!(verify_stripe(None, body, &both, 300, now), Err(SignatureError::Missing));
        assert_eq!(verify_stripe(Some("t=1,v1=zz"), body, &both, 300, now), Err(SignatureError::Malformed));
        assert_eq!(
            verify_stripe(Some(&format!("t={now}")), body, &both, 300, now),
            Err(SignatureError::Malformed)
        );
        let header = sign("whsec_new", now);
        assert_eq!(
            verify_stripe(Some(&header), br#"{"id":"evt_2"}"#, &both, 300, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify_stripe(Some(&header), body, &[], 300, now), Err(SignatureError::NotConfigured));
    }

    #[test]
    fn razorpay_signatures_cover_the_body() {
        let body = br#"{"event":"payment.captured"}"#;
        let both = secrets(&["rzp_old", "rzp_new"]);
        assert_eq!(verify_razorpay(Some(&sign_hex("rzp_new", body)), body, &both), Ok(()));
        assert_eq!(
            verify_razorpay(Some(&sign_hex("rzp_new", body)), b"{}", &both),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify_razorpay(Some("not hex"), body, &both), Err(SignatureError::Malformed));
        assert_eq!(verify_razorpay(None, body, &both), Err(SignatureError::Missing));
    }

    #[test]
    fn events_name_their_organization_and_what_to_do() {
        let org = Uuid::new_v4();
        let invoice = Uuid::new_v4();
        let paid = serde_json::json!({"id": "evt_1", "type": "invoice.paid", "created": 1_800_000_000,
            "data": {"object": {"amount_paid": 4900, "currency": "usd",
                                "metadata": {"organization_id": org, "invoice_id": invoice}}}});
        let event = parse_stripe(&paid).unwrap();
        assert_eq!(event.organization, Some(org));
        assert_eq!(
            event.action,
            Action::Payment {
                invoice_id: invoice,
                amount_minor: 4900,
                currency: "USD".into(),
                subscription_ref: None
            }
        );
        let updated = serde_json::json!({"id": "evt_2", "type": "customer.subscription.updated", "created": 1,
            "data": {"object": {"id": "sub_1", "status": "past_due", "metadata": {"organization_id": org}}}});
        assert_eq!(
            parse_stripe(&updated).unwrap().action,
            Action::SubscriptionStatus { status: "past_due", provider_ref: Some("sub_1".into()) }
        );
        let captured = serde_json::json!({"event": "payment.captured", "created_at": 1,
            "payload": {"payment": {"entity": {"amount": 4900, "currency": "INR",
                        "notes": {"organization_id": org, "invoice_id": invoice}}}}});
        let event = parse_razorpay("evt_r1", &captured).unwrap();
        assert_eq!(event.organization, Some(org));
        assert!(matches!(event.action, Action::Payment { amount_minor: 4900, .. }));
        assert!(parse_stripe(&serde_json::json!({"hello": "world"})).is_none());
    }
}
