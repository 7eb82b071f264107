//! Usage metering: requests per organization, per API key and per UTC day, counted in memory and
//! written in batches (`app.record_usage()`), never one write per request.
//!
//! What counts is a request whose caller the database admitted to the organization: the tenant
//! transaction notes it (`crate::request::note_admitted`) inside the request's scope
//! (`crate::request::with_admission`), and the middleware counts it once when the response is
//! ready. Requests by strangers naming an organization are never
//! counted against it.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{NaiveDate, Utc};
use uuid::Uuid;

use crate::db::{Db, DbError};
use crate::domain::OrgId;

/// Rows per `app.record_usage` call (the function takes at most 10,000).
const FLUSH_ROWS: usize = 5_000;

/// Counts since the last flush.
#[derive(Default)]
pub struct UsageMeter {
    counts: Mutex<HashMap<(OrgId, NaiveDate, Uuid), i64>>,
}

impl UsageMeter {
    pub fn count(&self, org: OrgId, api_key: Uuid) {
        let day = Utc::now().date_naive();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((org, day, api_key)).or_default() += 1;
    }

    /// Writes and clears the counts, in one statement. On failure they are put back, to be
    /// written with the next flush.
    pub async fn flush(&self, db: &Db) -> Result<usize, DbError> {
        let batch: Vec<_> =
            std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner())).into_iter().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        // In this instance's region (the context), a bounded number of rows per statement.
        for (i, chunk) in batch.chunks(FLUSH_ROWS).enumerate() {
            let orgs: Vec<Uuid> = chunk.iter().map(|((o, _, _), _)| o.0).collect();
            let days: Vec<NaiveDate> = chunk.iter().map(|((_, d, _), _)| *d).collect();
            let keys: Vec<Uuid> = chunk.iter().map(|((_, _, k), _)| *k).collect();
            let counts: Vec<i64> = chunk.iter().map(|(_, c)| *c).collect();
            let written = crate::db::call_as(
                db,
                crate::db::Actor::default(),
                "select app.record_usage($1, $2, $3, $4)",
                &[&orgs, &days, &keys, &counts],
            )
            .await;
            if let Err(e) = written {
                let mut pending = self.counts.lock().unwrap_or_else(|e| e.into_inner());
                for (key, count) in batch.iter().skip(i * FLUSH_ROWS) {
                    *pending.entry(*key).or_default() += count;
                }
                return Err(e);
            }
        }
        Ok(batch.len())
    }
}
