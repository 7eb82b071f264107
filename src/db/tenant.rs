//! The tenant transaction: one per request, on the app role, with the caller's user id and the
//! requested organization set transaction-locally (`set_config(..., true)`), never with a
//! session-level `SET`. BEGIN, the context and the membership lookup travel in one round trip.
//!
//! Rules this module enforces by construction:
//! - SQL is `&'static str`: a query cannot be assembled from runtime strings.
//! - The only way to run a query is through a `TenantTx` (or the pipelined `read`), so a query
//!   without a context cannot be written.
//! - A transaction that is dropped without commit is rolled back before its connection can be
//!   reused; a statement error poisons the transaction so it can never be committed.

use deadpool_postgres::{Object, Pool};
use futures_util::future;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::DbError;
use crate::domain::{Membership, OrgId, Role, UserId};

const SET_CONTEXT: &str = "select set_config('app.current_user_id', $1, true), \
                           set_config('app.current_organization_id', $2, true)";
const CURRENT_MEMBERSHIP: &str = "select role, permissions from app.current_membership()";

pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub struct TenantTx {
    client: Option<Object>,
    poisoned: bool,
    org: Option<OrgId>,
}

impl TenantTx {
    /// A transaction in the caller's own scope (no organization): their user row, their
    /// memberships, organizations they belong to.
    pub async fn begin_user(pool: &Pool, user: UserId) -> Result<TenantTx, DbError> {
        let (tx, _) = Self::begin(pool, user, None).await?;
        Ok(tx)
    }

    /// A transaction inside `org`. Not a member (or no such organization): `NotFound`, the same
    /// answer either way.
    pub async fn begin_org(pool: &Pool, user: UserId, org: OrgId) -> Result<(TenantTx, Membership), DbError> {
        let (tx, membership) = Self::begin(pool, user, Some(org)).await?;
        let membership = membership.ok_or(DbError::NotFound)?;
        Ok((tx, membership))
    }

    async fn begin(
        pool: &Pool,
        user: UserId,
        org: Option<OrgId>,
    ) -> Result<(TenantTx, Option<Membership>), DbError> {
        let client = pool.get().await?;
        let set_context = client.prepare_cached(SET_CONTEXT).await?;
        let membership_stmt = client.prepare_cached(CURRENT_MEMBERSHIP).await?;
        let tx = TenantTx { client: Some(client), poisoned: false, org };
        let user_text = user.to_string();
        let org_text = org.map(|o| o.to_string()).unwrap_or_default();
        let membership = {
            let client = tx.client();
            // join3 polls in order, so the three messages leave in one write: one round trip.
            let (begin, context, membership) = future::join3(
                client.batch_execute("BEGIN"),
                client.query_one(&set_context, &[&user_text, &org_text]),
                async {
                    match org {
                        Some(_) => client.query_opt(&membership_stmt, &[]).await,
                        None => Ok(None),
                    }
                },
            )
            .await;
            begin?;
            context?;
            membership?
        };
        let membership = match (org, membership) {
            (Some(org), Some(row)) => Some(membership_from_row(org, &row)?),
            _ => None,
        };
        Ok((tx, membership))
    }

    fn client(&self) -> &Object {
        self.client.as_ref().expect("transaction already finished")
    }

    /// The organization this transaction is scoped to, if any.
    pub fn org(&self) -> Option<OrgId> {
        self.org
    }

    fn track<T>(&mut self, result: Result<T, tokio_postgres::Error>) -> Result<T, DbError> {
        if result.is_err() {
            self.poisoned = true;
        }
        Ok(result?)
    }

    pub async fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, DbError> {
        let result = async {
            let stmt = self.client().prepare_cached(sql).await?;
            self.client().query(&stmt, params).await
        }
        .await;
        self.track(result)
    }

    pub async fn query_opt(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>, DbError> {
        let result = async {
            let stmt = self.client().prepare_cached(sql).await?;
            self.client().query_opt(&stmt, params).await
        }
        .await;
        self.track(result)
    }

    /// Exactly one row, or `NotFound`.
    pub async fn query_found(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row, DbError> {
        self.query_opt(sql, params).await?.ok_or(DbError::NotFound)
    }

    pub async fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, DbError> {
        let result = async {
            let stmt = self.client().prepare_cached(sql).await?;
            self.client().execute(&stmt, params).await
        }
        .await;
        self.track(result)
    }

    /// Commits; deferred constraints (such as "keep an owner") report here.
    pub async fn commit(mut self) -> Result<(), DbError> {
        if self.poisoned {
            return Err(DbError::Other(anyhow::anyhow!("refusing to commit a failed transaction")));
        }
        let result = self.client().batch_execute("COMMIT").await;
        match result {
            Ok(()) => {
                self.client = None; // back to the pool, clean
                Ok(())
            }
            Err(e) => {
                // The server has ended the transaction; a ROLLBACK on drop is harmless.
                Err(e.into())
            }
        }
    }
}

impl Drop for TenantTx {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        // Still open: an early return, an error, or a cancelled request. Roll back before the
        // connection can serve anyone else; if that fails, the connection is discarded.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        let _ = Object::take(client);
                    }
                });
            }
            Err(_) => {
                let _ = Object::take(client);
            }
        }
    }
}

fn membership_from_row(org: OrgId, row: &Row) -> Result<Membership, DbError> {
    let role: String = row.get("role");
    let role = Role::from_db(&role)
        .ok_or_else(|| DbError::Other(anyhow::anyhow!("unknown role in database: {role}")))?;
    Ok(Membership { org_id: org, role, permissions: row.get("permissions") })
}

/// A read in one round trip: BEGIN, context, membership, the query and COMMIT are pipelined
/// and every result is checked (a pipelined COMMIT after a failed statement reports success,
/// so the statement's own result is what counts). For reads only: writes must check each
/// statement before committing.
pub async fn read(
    pool: &Pool,
    user: UserId,
    org: Option<OrgId>,
    sql: &'static str,
    params: Params<'_>,
) -> Result<(Option<Membership>, Vec<Row>), DbError> {
    let client = pool.get().await?;
    let set_context = client.prepare_cached(SET_CONTEXT).await?;
    let membership_stmt = client.prepare_cached(CURRENT_MEMBERSHIP).await?;
    let query_stmt = client.prepare_cached(sql).await?;
    let mut tx = TenantTx { client: Some(client), poisoned: false, org };
    let user_text = user.to_string();
    let org_text = org.map(|o| o.to_string()).unwrap_or_default();
    let (membership, rows) = {
        let client = tx.client();
        let ((begin, context), (membership, rows, commit)) = future::join(
            future::join(
                client.batch_execute("BEGIN"),
                client.query_one(&set_context, &[&user_text, &org_text]),
            ),
            future::join3(
                async {
                    match org {
                        Some(_) => client.query_opt(&membership_stmt, &[]).await,
                        None => Ok(None),
                    }
                },
                client.query(&query_stmt, params),
                client.batch_execute("COMMIT"),
            ),
        )
        .await;
        begin?;
        context?;
        let membership = membership?;
        let rows = rows?;
        commit?;
        (membership, rows)
    };
    tx.client = None; // committed: back to the pool
    let membership = match (org, membership) {
        (Some(org), Some(row)) => Some(membership_from_row(org, &row)?),
        (Some(_), None) => return Err(DbError::NotFound),
        _ => None,
    };
    Ok((membership, rows))
}
