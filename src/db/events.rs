//! Event retention, seen from the worker: events older than the retention are deleted through
//! the narrow definer function app.prune_events(), in batches so no transaction grows large.

use super::{Db, DbError};

const BATCH: i32 = 5000;

/// Deletes events older than `retention_days` days; returns how many.
pub async fn prune_events(db: &Db, retention_days: u32) -> Result<u64, DbError> {
    let days = i32::try_from(retention_days).unwrap_or(i32::MAX);
    let mut deleted = 0u64;
    loop {
        let rows = super::call(db, "select app.prune_events($1, $2)", &[&days, &BATCH]).await?;
        let batch: i32 = rows.first().map_or(0, |row| row.get(0));
        deleted += u64::try_from(batch).unwrap_or(0);
        if batch < BATCH {
            return Ok(deleted);
        }
    }
}
