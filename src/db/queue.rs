//! The workflow run queue, seen from a worker: claim the next run, renew the claim while it
//! executes. Both are narrow definer functions; everything else a worker does runs in a
//! `TenantTx` acting as `Actor::worker(claim)`, under the run's organization's policies.

use uuid::Uuid;

use super::{Db, DbError};
use crate::domain::OrgId;

/// A run this worker now holds. The token is its only authority over the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub org: OrgId,
    pub run_id: Uuid,
    pub token: Uuid,
    pub attempt: i32,
    /// The trace context of the request that queued the run (`telemetry::traceparent`).
    pub traceparent: Option<String>,
}

/// Claims a run of this instance's region (its context), fairly across organizations (`FOR
/// UPDATE SKIP LOCKED`): none when the queue is empty or every organization with queued runs
/// already runs `max_running_per_org`.
pub async fn claim_next_run(
    db: &Db,
    worker: &str,
    settings: &crate::config::WorkerSettings,
) -> Result<Option<Claim>, DbError> {
    let lease = i32::try_from(settings.lease_secs).unwrap_or(i32::MAX);
    let attempts = i32::try_from(settings.max_attempts).unwrap_or(i32::MAX);
    let per_org = i32::try_from(settings.max_running_per_org).unwrap_or(i32::MAX);
    let rows = super::call_as(
        db,
        super::Actor::default(),
        "select * from app.claim_next_run($1, $2, $3, $4)",
        &[&worker, &lease, &attempts, &per_org],
    )
    .await?;
    Ok(rows.into_iter().next().map(|row| Claim {
        org: OrgId(row.get("organization_id")),
        run_id: row.get("run_id"),
        token: row.get("claim_token"),
        attempt: row.get("attempt"),
        traceparent: row.get("traceparent"),
    }))
}

/// Gives a claimed run back to the queue (a worker shutting down): queued again, the attempt
/// returned. False when the claim is gone already.
pub async fn release_run_claim(db: &Db, token: Uuid) -> Result<bool, DbError> {
    let rows = super::call(db, "select app.release_run_claim($1)", &[&token]).await?;
    Ok(rows.first().is_some_and(|row| row.get(0)))
}

/// Extends the claim's lease; false when the claim is gone (cancelled, or re-claimed).
pub async fn renew_run_claim(db: &Db, token: Uuid, lease_secs: u32) -> Result<bool, DbError> {
    let lease = i32::try_from(lease_secs).unwrap_or(i32::MAX);
    let rows = super::call(db, "select app.renew_run_claim($1, $2)", &[&token, &lease]).await?;
    Ok(rows.first().is_some_and(|row| row.get(0)))
}
