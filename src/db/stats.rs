//! What the worker's metrics read from the database: the run queue and the audit chains. Both
//! are narrow definer functions returning counts (and, for broken chains, organization ids),
//! never content.

use uuid::Uuid;

use super::{Actor, Db, DbError};

/// This region's run queue (`app.run_queue_stats()`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    pub queued: i64,
    pub running: i64,
    pub leases_expired: i64,
    pub oldest_queued_secs: f64,
    pub attempts_exhausted: i64,
}

pub async fn run_queue(db: &Db) -> Result<QueueStats, DbError> {
    let rows = super::call_as(db, Actor::default(), "select * from app.run_queue_stats()", &[]).await?;
    let row = rows.first().ok_or(DbError::NotFound)?;
    Ok(QueueStats {
        queued: row.get("queued"),
        running: row.get("running"),
        leases_expired: row.get("leases_expired"),
        oldest_queued_secs: row.get("oldest_queued_seconds"),
        attempts_exhausted: row.get("attempts_exhausted"),
    })
}

/// Every audit chain in the database, verified (`app.verify_audit_chains()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChains {
    pub chains: i64,
    pub broken: i64,
    /// The first broken chains' organizations (at most 20).
    pub broken_organizations: Vec<Uuid>,
}

pub async fn verify_audit_chains(db: &Db) -> Result<AuditChains, DbError> {
    let rows = super::call(db, "select * from app.verify_audit_chains()", &[]).await?;
    let row = rows.first().ok_or(DbError::NotFound)?;
    Ok(AuditChains {
        chains: row.get("chains"),
        broken: row.get("broken"),
        broken_organizations: row.get::<_, Option<Vec<Uuid>>>("broken_organizations").unwrap_or_default(),
    })
}
