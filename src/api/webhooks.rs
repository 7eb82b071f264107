//! Payment webhooks from Stripe and Razorpay. A delivery is verified on its raw body before
//! anything else, then recorded and applied in one transaction under its organization's RLS
//! context (`Actor::webhook`): a redelivery, even a concurrent one, finds the event recorded and
//! does nothing; a payment posts to the ledger and marks its invoice paid; a subscription status
//! older than the one applied never moves the subscription back. An event without a usable
//! organization is kept for platform admins (`GET /admin/webhook-events`), never dropped.

use actix_web::{HttpRequest, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::pagination::{Key, KeyKind, Keyset, Page, PageQuery};
use super::{AppState, require_user};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::billing::{self, PaymentOutcome};
use crate::db::{Actor, DbError, TenantTx};
use crate::domain::OrgId;
use crate::sorts;
use crate::webhooks::{
    Action, Event, SignatureError, parse_razorpay, parse_stripe, razorpay_event_id, verify_razorpay,
    verify_stripe,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAck {
    /// `processed`, `ignored`, `duplicate` or `unroutable` (kept for platform admins).
    pub status: String,
}

fn signature_error(err: SignatureError) -> ApiError {
    match err {
        SignatureError::Missing => ApiError::BadRequest {
            code: "missing_signature",
            detail: "The provider's signature header is missing.".into(),
        },
        SignatureError::Malformed => ApiError::BadRequest {
            code: "malformed_signature",
            detail: "The provider's signature header cannot be read.".into(),
        },
        SignatureError::Stale => ApiError::InvalidSignature("its timestamp is outside the tolerance"),
        SignatureError::Mismatch => ApiError::InvalidSignature("it does not match the body"),
        // Without a secret the endpoint does not exist for this deployment.
        SignatureError::NotConfigured => ApiError::NotFound,
    }
}

fn not_an_event() -> ApiError {
    ApiError::BadRequest {
        code: "invalid_event",
        detail: "The body is not an event this provider sends.".into(),
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Receive a Stripe event (signed with `Stripe-Signature`).
#[utoipa::path(
    tag = "billing",
    request_body(content = Object, description = "A Stripe event, exactly as Stripe sent it"),
    responses(
        (status = 200, description = "Accepted (also for a redelivery)", body = WebhookAck),
        (status = 400, description = "Missing or unreadable signature, or not an event", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The signature does not verify, or is too old", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No webhook secret configured for this provider", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
#[post("/webhooks/stripe")]
pub async fn receive_stripe_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<web::Json<WebhookAck>, ApiError> {
    let settings = &state.settings.billing;
    let now = Utc::now().timestamp();
    verify_stripe(
        header(&req, "stripe-signature"),
        &body,
        &settings.stripe_webhook_secrets,
        settings.stripe_tolerance_secs,
        now,
    )
    .map_err(signature_error)?;
    let payload: Value = serde_json::from_slice(&body).map_err(|_| not_an_event())?;
    let event = parse_stripe(&payload).ok_or_else(not_an_event)?;
    process(&state, "stripe", event, payload).await
}

/// Receive a Razorpay event (signed with `X-Razorpay-Signature`; deduplicated on the signed body,
/// whatever `X-Razorpay-Event-Id` says).
#[utoipa::path(
    tag = "billing",
    request_body(content = Object, description = "A Razorpay event, exactly as Razorpay sent it"),
    responses(
        (status = 200, description = "Accepted (also for a redelivery)", body = WebhookAck),
        (status = 400, description = "Missing or unreadable signature, or not an event", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The signature does not verify", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No webhook secret configured for this provider", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
#[post("/webhooks/razorpay")]
pub async fn receive_razorpay_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<web::Json<WebhookAck>, ApiError> {
    verify_razorpay(
        header(&req, "x-razorpay-signature"),
        &body,
        &state.settings.billing.razorpay_webhook_secrets,
    )
    .map_err(signature_error)?;
    let payload: Value = serde_json::from_slice(&body).map_err(|_| not_an_event())?;
    let event = parse_razorpay(&razorpay_event_id(&body), &payload).ok_or_else(not_an_event)?;
    process(&state, "razorpay", event, payload).await
}

fn ack(status: &str) -> web::Json<WebhookAck> {
    web::Json(WebhookAck { status: status.to_owned() })
}

/// Keeps an event whose organization cannot be served here, once, and reports it.
async fn unroutable(
    state: &AppState,
    provider: &str,
    event: &Event,
    org: OrgId,
    payload: &Value,
    detail: &str,
) -> Result<web::Json<WebhookAck>, ApiError> {
    let mut tx = TenantTx::begin_user(&state.db, Actor::default()).await?;
    tx.query_found(
        "select app.record_unroutable_webhook_event($1, $2, $3, $4, $5, $6, $7)",
        &[&provider, &event.id, &event.event_type, org.as_uuid(), &event.created, payload, &detail],
    )
    .await?;
    tx.commit().await?;
    warn_unroutable(provider, event, detail);
    Ok(ack("unroutable"))
}

async fn process(
    state: &AppState,
    provider: &'static str,
    event: Event,
    payload: Value,
) -> Result<web::Json<WebhookAck>, ApiError> {
    if let Action::Ignore(_) = event.action {
        return Ok(ack("ignored")); // nothing to apply, nothing to remember
    }
    // The database decides whose event it is, from the invoice or subscription it names.
    let (invoice, provider_ref) = event.reference();
    let token = Uuid::new_v4();
    let mut tx = TenantTx::begin_user(&state.db, Actor::webhook(token)).await?;
    let row = tx
        .query_found(
            "select outcome, organization_id from app.begin_webhook_event($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &provider,
                &event.id,
                &event.event_type,
                &event.created,
                &payload,
                &token,
                &invoice,
                &provider_ref,
                &event.organization,
            ],
        )
        .await?;
    let org = match (row.get::<_, String>("outcome").as_str(), row.get::<_, Option<Uuid>>("organization_id"))
    {
        ("fresh", Some(org)) => OrgId(org),
        (outcome, _) => {
            tx.commit().await?;
            if outcome == "unroutable" {
                warn_unroutable(provider, &event, "it names nothing of an organization here");
            }
            return Ok(ack(if outcome == "unroutable" { "unroutable" } else { "duplicate" }));
        }
    };
    match tx.enter_org(org).await {
        Ok(_) => {}
        Err(DbError::NotFound | DbError::Misdirected(_) | DbError::Suspended) => {
            drop(tx); // rolls the processing record back
            let detail = "the organization does not exist here, is suspended or lives in another region";
            return unroutable(state, provider, &event, org, &payload, detail).await;
        }
        Err(e) => return Err(e.into()),
    }
    let (status, detail) = apply(&mut tx, org, provider, &event).await?;
    tx.query_found("select app.finish_webhook_event($1, $2, $3)", &[&token, &status, &detail]).await?;
    tx.commit().await?;
    Ok(ack(status))
}

fn warn_unroutable(provider: &str, event: &Event, detail: &str) {
    tracing::warn!(
        target: "tenantry::security",
        event = "billing.webhook_unroutable",
        provider,
        event.id = %event.id,
        org.id = ?event.organization,
        detail,
        "payment event kept for platform admins"
    );
}

/// Applies an event inside its organization: (outcome, why).
async fn apply(
    tx: &mut TenantTx,
    org: OrgId,
    provider: &str,
    event: &Event,
) -> Result<(&'static str, String), ApiError> {
    match &event.action {
        Action::Payment { invoice_id, amount_minor, currency, subscription_ref } => {
            let source = format!("{provider}:{}", event.id);
            // A payment of our invoice is what links the subscription to the provider's: later
            // subscription events must name that reference to be applied.
            if let Some(reference) = subscription_ref {
                tx.execute(
                    "update subscriptions set provider_ref = $3 \
                     where organization_id = $1 and provider = $2 and provider_ref is null \
                       and id = (select subscription_id from invoices where organization_id = $1 and id = $4)",
                    &[org.as_uuid(), &provider, reference, invoice_id],
                )
                .await?;
            }
            Ok(
                match billing::record_payment(tx, org, *invoice_id, *amount_minor, currency, &source).await? {
                    PaymentOutcome::Applied { invoice_paid: true } => {
                        ("processed", "payment applied; invoice paid".into())
                    }
                    PaymentOutcome::Applied { invoice_paid: false } => {
                        ("processed", "partial payment applied".into())
                    }
                    PaymentOutcome::Duplicate => ("ignored", "the invoice is already covered".into()),
                    PaymentOutcome::NoInvoice => {
                        ("ignored", "no such invoice in this organization and currency".into())
                    }
                },
            )
        }
        Action::SubscriptionStatus { status, provider_ref } => {
            // Only a newer event moves the state, and only along the state machine.
            let updated = tx
                .query_opt(
                    "update subscriptions set status = $2, provider_event_at = $3 \
                     where organization_id = $1 and provider_ref = $4 \
                       and (provider_event_at is null or $3::timestamptz is null or provider_event_at <= $3) \
                       and app.subscription_transition_allowed(status, $2) \
                     returning status",
                    &[org.as_uuid(), status, &event.created, provider_ref],
                )
                .await?;
            Ok(match updated {
                Some(_) => ("processed", format!("subscription {status}")),
                None => {
                    ("ignored", "older than the state applied, not a legal move, or no subscription".into())
                }
            })
        }
        Action::Ignore(why) => Ok(("ignored", (*why).to_owned())),
    }
}

/// Payment events, through `app.admin_list_webhook_events` (sql/07_platform_admin.sql: index
/// `webhook_events_by_received`). `$1` limit, `$2` status, then the cursor's keys: the arrival
/// time and `provider:event_id`.
static NEWEST_FIRST: Keyset = Keyset {
    code: 1,
    descending: true,
    kind: KeyKind::TimeText,
    first: "select * from app.admin_list_webhook_events($2, true, false, null, null, null, $1::bigint::int)",
    after: "select * from app.admin_list_webhook_events($2, true, false, $3, split_part($4, ':', 1), \
            substr($4, strpos($4, ':') + 1), $1::bigint::int)",
    before: "select * from app.admin_list_webhook_events($2, true, true, $3, split_part($4, ':', 1), \
             substr($4, strpos($4, ':') + 1), $1::bigint::int)",
    plain_first: "select * from app.admin_list_webhook_events($2, true, false, null, null, null, $1::bigint::int)",
    plain_after: "select * from app.admin_list_webhook_events($2, true, false, $3, split_part($4, ':', 1), \
            substr($4, strpos($4, ':') + 1), $1::bigint::int)",
    plain_before: "select * from app.admin_list_webhook_events($2, true, true, $3, split_part($4, ':', 1), \
             substr($4, strpos($4, ':') + 1), $1::bigint::int)",
};
static OLDEST_FIRST: Keyset = Keyset {
    code: 2,
    descending: false,
    kind: KeyKind::TimeText,
    first: "select * from app.admin_list_webhook_events($2, false, false, null, null, null, $1::bigint::int)",
    after: "select * from app.admin_list_webhook_events($2, false, false, $3, split_part($4, ':', 1), \
            substr($4, strpos($4, ':') + 1), $1::bigint::int)",
    before: "select * from app.admin_list_webhook_events($2, false, true, $3, split_part($4, ':', 1), \
             substr($4, strpos($4, ':') + 1), $1::bigint::int)",
    plain_first: "select * from app.admin_list_webhook_events($2, false, false, null, null, null, $1::bigint::int)",
    plain_after: "select * from app.admin_list_webhook_events($2, false, false, $3, split_part($4, ':', 1), \
            substr($4, strpos($4, ':') + 1), $1::bigint::int)",
    plain_before: "select * from app.admin_list_webhook_events($2, false, true, $3, split_part($4, ':', 1), \
             substr($4, strpos($4, ':') + 1), $1::bigint::int)",
};

sorts! {
    /// The order of the payment event list.
    WebhookEventSort {
        ReceivedAtDesc = "-received_at" => NEWEST_FIRST,
        ReceivedAt = "received_at" => OLDEST_FIRST,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookEventQuery {
    /// `unroutable` (the default), `processed`, `ignored`, or `all`.
    pub status: Option<String>,
    /// `-received_at` (default, newest first) or `received_at`.
    #[param(inline)]
    pub sort: Option<WebhookEventSort>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventRecord {
    pub provider: String,
    pub event_id: String,
    pub event_type: String,
    pub organization_id: Option<Uuid>,
    pub event_created_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub status: String,
    pub detail: Option<String>,
}

/// Payment events received, newest first; by default those that could not be applied
/// (platform admins only). Paged: none is left out.
#[utoipa::path(
    tag = "admin",
    params(WebhookEventQuery, PageQuery),
    responses(
        (status = 200, description = "Events", body = Page<WebhookEventRecord>),
        (status = 422, description = "Invalid status, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/admin/webhook-events")]
pub async fn list_webhook_events(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<WebhookEventQuery>,
    paging: web::Query<PageQuery>,
) -> Result<web::Json<Page<WebhookEventRecord>>, ApiError> {
    require_user(&principal)?;
    let page = paging.parse(query.sort.unwrap_or_default().keyset())?;
    let status = match query.status.as_deref() {
        None => Some("unroutable"),
        Some("all") => None,
        Some(s @ ("unroutable" | "processed" | "ignored")) => Some(s),
        Some(_) => {
            return Err(ApiError::invalid_field("status", "must be unroutable, processed, ignored or all"));
        }
    };
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    let rows = tx.query(page.sql(), &page.with_keys(vec![page.fetch(), &status])).await?;
    tx.commit().await?;
    let items = rows
        .iter()
        .map(|r| WebhookEventRecord {
            provider: r.get("provider"),
            event_id: r.get("event_id"),
            event_type: r.get("event_type"),
            organization_id: r.get("organization_ref"),
            event_created_at: r.get("event_created_at"),
            received_at: r.get("received_at"),
            status: r.get("status"),
            detail: r.get("detail"),
        })
        .collect();
    Ok(web::Json(page.page(items, None, |e: &WebhookEventRecord| {
        Key::TimeText(e.received_at, format!("{}:{}", e.provider, e.event_id))
    })))
}
