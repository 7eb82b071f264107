//! The tenant transaction: one per request, on the app role, with the caller's identity and the
//! requested organization set transaction-locally (`set_config(..., true)`), never with a
//! session-level `SET`. BEGIN, the context and the principal check travel in one round trip.
//!
//! Rules this module enforces by construction:
//! - SQL is `&'static str`: a query cannot be assembled from runtime strings.
//! - The only way to run a query is through a `TenantTx` (or the pipelined `read`), so a query
//!   without a context cannot be written.
//! - A transaction that is dropped without commit is rolled back before its connection can be
//!   reused; a statement error poisons the transaction so it can never be committed.
//! - Every transaction checks its principal in the database (`app.enter_context()`): a
//!   revoked session or API key is refused on its next request, whatever a cache believes. The
//!   same call seals what it found, and the policies read only that sealed context.

use deadpool_postgres::Object;
use futures_util::future;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tracing::Instrument as _;
use uuid::Uuid;

use super::{Db, DbError, until_deadline};
use crate::domain::{Membership, OrgId, Role, UserId};

const SET_CONTEXT: &str = "select set_config('app.current_user_id', $1, true), \
                           set_config('app.current_organization_id', $2, true), \
                           set_config('app.current_session_id', $3, true), \
                           set_config('app.current_api_key_id', $4, true), \
                           set_config('app.current_region', $5, true), \
                           set_config('app.current_run_claim', $6, true), \
                           set_config('app.current_webhook_token', $7, true), \
                           set_config('app.current_delivery_claim', $8, true)";
const SET_ORG: &str = "select set_config('app.current_organization_id', $1, true)";
const CURRENT_PRINCIPAL: &str =
    "select active, role, permissions, home_region, suspended from app.enter_context()";

pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Who a transaction acts for: a user (with the session their token belongs to, if any), an API
/// key, or a worker holding the claim on one workflow run. It becomes the transaction-local
/// context the policies read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Actor {
    pub user: Option<UserId>,
    pub session: Option<Uuid>,
    pub api_key: Option<Uuid>,
    pub run_claim: Option<Uuid>,
    pub webhook: Option<Uuid>,
    pub delivery_claim: Option<Uuid>,
}

impl Actor {
    pub fn user(user: UserId) -> Actor {
        Actor { user: Some(user), ..Actor::default() }
    }

    /// A worker, with the claim token `app.claim_next_run()` gave it.
    pub fn worker(claim: Uuid) -> Actor {
        Actor { run_claim: Some(claim), ..Actor::default() }
    }

    /// A dispatcher, with the claim `app.claim_next_delivery()` gave it on one webhook delivery.
    pub fn dispatcher(claim: Uuid) -> Actor {
        Actor { delivery_claim: Some(claim), ..Actor::default() }
    }

    /// A payment webhook delivery, with the token it records its event under.
    pub fn webhook(token: Uuid) -> Actor {
        Actor { webhook: Some(token), ..Actor::default() }
    }

    /// The context values, as the text `set_config` takes ('' for none).
    fn context(&self, org: Option<OrgId>) -> [String; 7] {
        fn text(v: Option<impl ToString>) -> String {
            v.map(|v| v.to_string()).unwrap_or_default()
        }
        [
            text(self.user),
            text(org),
            text(self.session),
            text(self.api_key),
            text(self.run_claim),
            text(self.webhook),
            text(self.delivery_claim),
        ]
    }
}

pub struct TenantTx {
    client: Option<Object>,
    poisoned: bool,
    /// A statement was sent and its answer not yet read: if the transaction is dropped now (a
    /// timeout, a client gone), the statement is cancelled before the rollback, so the
    /// connection is not held until `statement_timeout`.
    in_flight: bool,
    org: Option<OrgId>,
    actor: Actor,
    /// The pool's statement policy (`Db::prepare`).
    db: Db,
    /// The transaction's span (level debug: disabled unless traces are exported); its
    /// statements are its children.
    span: tracing::Span,
}

/// A statement's span, named by `telemetry::statement_summary` (or `name`): never its values.
fn statement_span(parent: &tracing::Span, sql: &'static str, name: Option<&'static str>) -> tracing::Span {
    let span = tracing::debug_span!(
        parent: parent,
        "statement",
        otel.name = tracing::field::Empty,
        otel.kind = "client",
        db.system.name = "postgresql",
        db.query.summary = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let summary = crate::telemetry::statement_summary(sql);
        span.record("otel.name", name.unwrap_or(&summary));
        span.record("db.query.summary", summary.as_str());
    }
    span
}

impl TenantTx {
    /// A transaction in the caller's own scope (no organization): their user row, their
    /// memberships and sessions, organizations they belong to.
    pub async fn begin_user(pool: &Db, actor: Actor) -> Result<TenantTx, DbError> {
        let (tx, _) = Self::begin(pool, actor, None).await?;
        Ok(tx)
    }

    /// A transaction inside `org`. Not a member (or no such organization): `NotFound`, the same
    /// answer either way.
    pub async fn begin_org(pool: &Db, actor: Actor, org: OrgId) -> Result<(TenantTx, Membership), DbError> {
        let (tx, membership) = Self::begin(pool, actor, Some(org)).await?;
        let membership = membership.ok_or(DbError::NotFound)?;
        Ok((tx, membership))
    }

    async fn begin(
        pool: &Db,
        actor: Actor,
        org: Option<OrgId>,
    ) -> Result<(TenantTx, Option<Membership>), DbError> {
        let client = pool.get().await?;
        let [user, org_text, session, api_key, run_claim, webhook, delivery] = actor.context(org);
        let region = pool.region.as_str();
        let context: Params =
            &[&user, &org_text, &session, &api_key, &region, &run_claim, &webhook, &delivery];
        let (tx, (begin, context, principal)) = if pool.per_transaction() {
            let tx = TenantTx::new(client, pool, org, actor);
            // In order on the wire; each statement is unnamed (and learning its parameter
            // types prepares and closes it after BEGIN).
            let results = until_deadline(future::join3(
                tx.client().batch_execute("BEGIN").instrument(statement_span(&tx.span, "BEGIN", None)),
                pool.query_in(tx.client(), SET_CONTEXT, context).instrument(statement_span(
                    &tx.span,
                    SET_CONTEXT,
                    Some("set context"),
                )),
                one_row(pool.query_in(tx.client(), CURRENT_PRINCIPAL, &[])).instrument(statement_span(
                    &tx.span,
                    CURRENT_PRINCIPAL,
                    Some("principal check"),
                )),
            ))
            .await?;
            (tx, results)
        } else {
            // The guard first: preparing can wait on a lock, and is cancelled if dropped.
            let tx = TenantTx::new(client, pool, org, actor);
            let (set_context, principal_stmt) = until_deadline(async {
                Ok::<_, tokio_postgres::Error>((
                    tx.client().prepare_cached(SET_CONTEXT).await?,
                    tx.client().prepare_cached(CURRENT_PRINCIPAL).await?,
                ))
            })
            .await??;
            // join3 polls in order, so the three messages leave in one write: one round trip.
            let (begin, context, principal) = until_deadline(future::join3(
                tx.client().batch_execute("BEGIN").instrument(statement_span(&tx.span, "BEGIN", None)),
                tx.client().query_one(&set_context, context).instrument(statement_span(
                    &tx.span,
                    SET_CONTEXT,
                    Some("set context"),
                )),
                tx.client().query_one(&principal_stmt, &[]).instrument(statement_span(
                    &tx.span,
                    CURRENT_PRINCIPAL,
                    Some("principal check"),
                )),
            ))
            .await?;
            (tx, (begin, context.map(|_| Vec::new()), principal.map_err(DbError::from)))
        };
        let mut tx = tx;
        tx.in_flight = false;
        begin?;
        context?;
        let principal = principal?;
        let membership = standing_from_row(org, &principal)?;
        note_usage(actor, org, membership.as_ref());
        Ok((tx, membership))
    }

    /// Moves a user-scope transaction into `org` (e.g. the organization it has just created),
    /// re-checking the principal's standing there.
    pub async fn enter_org(&mut self, org: OrgId) -> Result<Membership, DbError> {
        self.in_flight = true;
        let span = self.span.clone();
        let result = until_deadline(async {
            self.db
                .query_in(self.client(), SET_ORG, &[&org.to_string()])
                .instrument(statement_span(&span, SET_ORG, Some("set context")))
                .await?;
            self.db
                .query_in(self.client(), CURRENT_PRINCIPAL, &[])
                .instrument(statement_span(&span, CURRENT_PRINCIPAL, Some("principal check")))
                .await
        })
        .await;
        let row = self.track(result)?.into_iter().next().ok_or(DbError::NotFound)?;
        self.org = Some(org);
        self.span.record("org.id", tracing::field::display(org));
        let membership = standing_from_row(Some(org), &row)?.ok_or(DbError::NotFound)?;
        note_usage(self.actor, Some(org), Some(&membership));
        Ok(membership)
    }

    fn new(client: Object, db: &Db, org: Option<OrgId>, actor: Actor) -> TenantTx {
        // Outside any span (a worker's idle claim, a dispatcher's poll) a transaction would start
        // a trace of its own every poll: it gets none.
        let span = if crate::telemetry::exporting() && tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::debug_span!(
                "tenant transaction",
                otel.name = "tenant transaction",
                db.system.name = "postgresql",
                org.id = tracing::field::Empty,
            )
        };
        if let Some(org) = org {
            span.record("org.id", tracing::field::display(org));
        }
        TenantTx { client: Some(client), poisoned: false, in_flight: true, org, actor, db: db.clone(), span }
    }

    fn client(&self) -> &Object {
        self.client.as_ref().expect("transaction already finished")
    }

    /// The organization this transaction is scoped to, if any.
    pub fn org(&self) -> Option<OrgId> {
        self.org
    }

    /// The outcome of a statement: a failure poisons the transaction. Past the request's
    /// deadline the statement is still running, so `in_flight` stays set and dropping the
    /// transaction cancels it.
    fn track<T>(&mut self, result: Result<Result<T, tokio_postgres::Error>, DbError>) -> Result<T, DbError> {
        if result.is_ok() {
            self.in_flight = false;
        }
        let result = result.and_then(|r| r.map_err(DbError::from));
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    pub async fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, DbError> {
        self.in_flight = true;
        let span = statement_span(&self.span, sql, None);
        let result = until_deadline(self.db.query_in(self.client(), sql, params)).instrument(span).await;
        self.track(result)
    }

    pub async fn query_opt(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>, DbError> {
        self.in_flight = true;
        let span = statement_span(&self.span, sql, None);
        let result = until_deadline(self.db.query_in(self.client(), sql, params)).instrument(span).await;
        at_most_one(self.track(result)?)
    }

    /// Exactly one row, or `NotFound`.
    pub async fn query_found(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row, DbError> {
        self.query_opt(sql, params).await?.ok_or(DbError::NotFound)
    }

    pub async fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, DbError> {
        self.in_flight = true;
        let span = statement_span(&self.span, sql, None);
        let result = until_deadline(self.db.execute_in(self.client(), sql, params)).instrument(span).await;
        self.track(result)
    }

    /// Commits without consuming the transaction (it is finished afterwards; using it again
    /// panics). For an early return that must still commit, such as recording a denial.
    pub async fn commit_in_place(&mut self) -> Result<(), DbError> {
        if self.poisoned {
            return Err(DbError::Other(anyhow::anyhow!("refusing to commit a failed transaction")));
        }
        self.in_flight = true;
        self.client().batch_execute("COMMIT").instrument(statement_span(&self.span, "COMMIT", None)).await?;
        self.client = None;
        Ok(())
    }

    /// Commits; deferred constraints (such as "keep an owner") report here.
    pub async fn commit(mut self) -> Result<(), DbError> {
        if self.poisoned {
            return Err(DbError::Other(anyhow::anyhow!("refusing to commit a failed transaction")));
        }
        self.in_flight = true;
        self.client().batch_execute("COMMIT").instrument(statement_span(&self.span, "COMMIT", None)).await?;
        self.client = None; // back to the pool, clean
        Ok(())
    }
}

impl Drop for TenantTx {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        // Still open: an early return, an error, or a cancelled request. Roll back before the
        // connection can serve anyone else; if that fails, the connection is discarded. A
        // statement still running is cancelled first; the cancel is delivered before the
        // ROLLBACK is sent, and an idle backend ignores one, so it cannot hit a later request.
        let cancel = (self.in_flight && self.db.cancel_on_drop).then(|| client.cancel_token());
        let tls = self.db.tls.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Some(cancel) = cancel
                        && cancel.cancel_query(tls).await.is_err()
                    {
                        let _ = Object::take(client);
                        return;
                    }
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

/// Reads `app.enter_context()`: an inactive principal (revoked session, revoked or expired
/// key) is `Unauthenticated`; otherwise its standing in `org`, if it has one there.
fn standing_from_row(org: Option<OrgId>, row: &Row) -> Result<Option<Membership>, DbError> {
    if !row.get::<_, bool>("active") {
        return Err(DbError::Unauthenticated);
    }
    if let Some(region) = row.get::<_, Option<String>>("home_region") {
        return Err(DbError::Misdirected(region));
    }
    if row.get::<_, Option<bool>>("suspended") == Some(true) {
        return Err(DbError::Suspended);
    }
    let (Some(org), Some(permissions)) = (org, row.get::<_, Option<Vec<String>>>("permissions")) else {
        return Ok(None);
    };
    let role = match row.get::<_, Option<String>>("role") {
        None => None,
        Some(text) => Some(
            Role::from_db(&text)
                .ok_or_else(|| DbError::Other(anyhow::anyhow!("unknown role in database: {text}")))?,
        ),
    };
    Ok(Some(Membership { org_id: org, role, permissions }))
}

/// A read in one round trip: BEGIN, context, principal check, the query and COMMIT are
/// pipelined and every result is checked (a pipelined COMMIT after a failed statement reports
/// success, so the statement's own result is what counts). For reads only: writes must check
/// each statement before committing.
pub async fn read(
    pool: &Db,
    actor: Actor,
    org: Option<OrgId>,
    sql: &'static str,
    params: Params<'_>,
) -> Result<(Option<Membership>, Vec<Row>), DbError> {
    read_with(pool, actor, org, sql, params, false).await
}

/// `read`, with the statement planned for its values (`plan_cache_mode = force_custom_plan`,
/// transaction-local) instead of a cached generic plan: for statements whose best plan depends
/// on which optional filters are set (`api::pagination`).
pub async fn read_custom_plan(
    pool: &Db,
    actor: Actor,
    org: Option<OrgId>,
    sql: &'static str,
    params: Params<'_>,
) -> Result<(Option<Membership>, Vec<Row>), DbError> {
    read_with(pool, actor, org, sql, params, true).await
}

const CUSTOM_PLAN: &str = "select set_config('plan_cache_mode', 'force_custom_plan', true)";

async fn read_with(
    pool: &Db,
    actor: Actor,
    org: Option<OrgId>,
    sql: &'static str,
    params: Params<'_>,
    custom_plan: bool,
) -> Result<(Option<Membership>, Vec<Row>), DbError> {
    if pool.per_transaction() {
        // The query's parameter types may have to be learned inside the transaction first, so
        // the steps go in turn: BEGIN with the context, the query, COMMIT.
        let (mut tx, membership) = TenantTx::begin(pool, actor, org).await?;
        if org.is_some() && membership.is_none() {
            return Err(DbError::NotFound);
        }
        if custom_plan {
            tx.query(CUSTOM_PLAN, &[]).await?;
        }
        let rows = tx.query(sql, params).await?;
        tx.commit().await?;
        return Ok((membership, rows));
    }
    let client = pool.get().await?;
    // The guard first: preparing can wait on a lock, and is cancelled if dropped.
    let mut tx = TenantTx::new(client, pool, org, actor);
    let (set_context, principal_stmt, query_stmt) = until_deadline(async {
        Ok::<_, tokio_postgres::Error>((
            tx.client().prepare_cached(SET_CONTEXT).await?,
            tx.client().prepare_cached(CURRENT_PRINCIPAL).await?,
            tx.client().prepare_cached(sql).await?,
        ))
    })
    .await??;
    let [user, org_text, session, api_key, run_claim, webhook, delivery] = actor.context(org);
    let region = pool.region.as_str();
    let context: Params = &[&user, &org_text, &session, &api_key, &region, &run_claim, &webhook, &delivery];
    let begin_sql =
        if custom_plan { "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan" } else { "BEGIN" };
    let ((begin, context), (principal, rows, commit)) = {
        let client = tx.client();
        let span = &tx.span;
        until_deadline(future::join(
            future::join(
                client.batch_execute(begin_sql).instrument(statement_span(span, "BEGIN", None)),
                client.query_one(&set_context, context).instrument(statement_span(
                    span,
                    SET_CONTEXT,
                    Some("set context"),
                )),
            ),
            future::join3(
                client.query_one(&principal_stmt, &[]).instrument(statement_span(
                    span,
                    CURRENT_PRINCIPAL,
                    Some("principal check"),
                )),
                client.query(&query_stmt, params).instrument(statement_span(span, sql, None)),
                client.batch_execute("COMMIT").instrument(statement_span(span, "COMMIT", None)),
            ),
        ))
        .await?
    };
    // Every answer has arrived: nothing is left to cancel if an error drops the transaction.
    tx.in_flight = false;
    begin?;
    context?;
    let principal = principal?;
    let rows = rows?;
    commit?;
    tx.client = None; // committed: back to the pool
    let membership = standing_from_row(org, &principal)?;
    if org.is_some() && membership.is_none() {
        return Err(DbError::NotFound);
    }
    note_usage(actor, org, membership.as_ref());
    Ok((membership, rows))
}

/// The one row a statement returns.
async fn one_row(
    rows: impl std::future::Future<Output = Result<Vec<Row>, tokio_postgres::Error>>,
) -> Result<Row, DbError> {
    rows.await?.into_iter().next().ok_or_else(|| DbError::Other(anyhow::anyhow!("expected a row, got none")))
}

/// At most one row, as `query_opt`.
fn at_most_one(rows: Vec<Row>) -> Result<Option<Row>, DbError> {
    if rows.len() > 1 {
        return Err(DbError::Other(anyhow::anyhow!("expected at most one row, got {}", rows.len())));
    }
    Ok(rows.into_iter().next())
}

/// One statement in a transaction of its own, with no tenant context: the narrow definer
/// functions that run before any context exists (a refresh token, an API key, a worker's
/// claim). An explicit transaction, so it also works behind a transaction-pooling PgBouncer.
pub async fn call(db: &Db, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, DbError> {
    let client = db.get().await?;
    if db.per_transaction() {
        // A `TenantTx` without context, for its guarantee: rolled back if dropped half-way.
        let mut tx = TenantTx::new(client, db, None, Actor::default());
        tx.client().batch_execute("BEGIN").await?;
        let rows = tx.query(sql, params).await?;
        tx.commit().await?;
        return Ok(rows);
    }
    let mut tx = TenantTx::new(client, db, None, Actor::default());
    let stmt = until_deadline(tx.client().prepare_cached(sql)).await??;
    // BEGIN, the statement and COMMIT in one round trip.
    let (begin, rows, commit) = {
        let client = tx.client();
        let span = &tx.span;
        until_deadline(future::join3(
            client.batch_execute("BEGIN").instrument(statement_span(span, "BEGIN", None)),
            client.query(&stmt, params).instrument(statement_span(span, sql, None)),
            client.batch_execute("COMMIT").instrument(statement_span(span, "COMMIT", None)),
        ))
        .await?
    };
    tx.in_flight = false;
    begin?;
    let rows = rows?;
    commit?;
    tx.client = None; // committed: back to the pool
    Ok(rows)
}

/// One statement in a transaction of its own, in `actor`'s context without an organization (its
/// user, and this instance's region): the definer functions that act on what the context names.
pub async fn call_as(
    db: &Db,
    actor: Actor,
    sql: &'static str,
    params: Params<'_>,
) -> Result<Vec<Row>, DbError> {
    let mut tx = TenantTx::begin_user(db, actor).await?;
    let rows = tx.query(sql, params).await?;
    tx.commit().await?;
    Ok(rows)
}

/// A person's or an API key's request admitted to an organization counts as its usage.
fn note_usage(actor: Actor, org: Option<OrgId>, membership: Option<&Membership>) {
    if let (Some(org), Some(_)) = (org, membership)
        && (actor.user.is_some() || actor.api_key.is_some())
    {
        crate::request::note_admitted(org, actor.api_key);
    }
}
