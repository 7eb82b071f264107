//! The webhook delivery queue, seen from a dispatcher: claim the next due delivery (a narrow
//! definer function, like the run queue's), and finish it with the attempt's outcome in a
//! `TenantTx` acting as `Actor::dispatcher(claim)`, so the delivery's organization's policies
//! and app.finish_delivery() decide from that context what it touches.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Actor, Db, DbError, TenantTx};
use crate::config::WebhookSettings;
use crate::domain::OrgId;

/// A delivery this dispatcher now holds. The token is its only authority over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryClaim {
    pub org: OrgId,
    pub delivery_id: Uuid,
    pub token: Uuid,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
}

/// Attempts a delivery gets before it fails: the first and one after each wait of the schedule.
pub const MAX_ATTEMPTS: i32 = crate::standard_webhooks::RETRY_SCHEDULE.len() as i32 + 1;

fn int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Claims the due delivery of this instance's region that fell due first (`now`: the
/// dispatcher's clock), skipping endpoints and organizations at their caps of attempts in flight.
pub async fn claim_next_delivery(
    db: &Db,
    worker: &str,
    settings: &WebhookSettings,
    now: DateTime<Utc>,
) -> Result<Option<DeliveryClaim>, DbError> {
    // Long enough for the attempt and its bookkeeping; a dispatcher that dies loses it after this.
    let lease = i32::try_from(settings.attempt_timeout_secs * 2 + 30).unwrap_or(i32::MAX);
    let rows = super::call_as(
        db,
        Actor::default(),
        "select * from app.claim_next_delivery($1, $2, $3, $4, $5, $6)",
        &[
            &worker,
            &lease,
            &MAX_ATTEMPTS,
            &int(settings.max_in_flight_per_endpoint),
            &int(settings.max_in_flight_per_org),
            &now,
        ],
    )
    .await?;
    Ok(rows.into_iter().next().map(|row| DeliveryClaim {
        org: OrgId(row.get("organization_id")),
        delivery_id: row.get("delivery_id"),
        token: row.get("claim_token"),
        attempt: row.get("attempt"),
    }))
}

/// What one attempt got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    /// The HTTP status, when an answer came.
    pub response_status: Option<i32>,
    /// Why there was no usable answer (never a secret or the receiver's content).
    pub error: Option<String>,
    /// The start of the answer's body (kept only for organizations in full mode).
    pub response_body: Option<String>,
}

/// Records the attempt and gives up the claim; the delivery's new status, or `None` when the
/// claim was lost meanwhile (the lease ran out and another dispatcher took it over).
pub async fn finish_delivery(
    db: &Db,
    claim: &DeliveryClaim,
    outcome: &AttemptOutcome,
    next_attempt_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    settings: &WebhookSettings,
) -> Result<Option<String>, DbError> {
    let finished = async {
        let (mut tx, _) = TenantTx::begin_org(db, Actor::dispatcher(claim.token), claim.org).await?;
        let row = tx
            .query_found(
                "select app.finish_delivery($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &outcome.started_at,
                    &outcome.duration_ms,
                    &outcome.response_status,
                    &outcome.error,
                    &outcome.response_body,
                    &next_attempt_at,
                    &now,
                    &MAX_ATTEMPTS,
                    &int(settings.disable_after_failures),
                    &int(settings.disable_after_secs),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok::<_, DbError>(row.get::<_, Option<String>>(0))
    }
    .await;
    match finished {
        // The claim no longer admits this dispatcher to the organization.
        Err(DbError::Unauthenticated | DbError::NotFound) => Ok(None),
        other => other,
    }
}
