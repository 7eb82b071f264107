//! PostgreSQL access: the app pool, the tenant transaction, migrations, the catalog check and
//! the one place where SQLSTATEs become errors. Repository code never sees a bare pool or
//! client: it receives a `TenantTx`, so no tenant query can run outside a context.

pub mod check;
pub mod citus;
pub mod deliveries;
pub mod events;
pub mod identity;
pub mod migrate;
pub mod notify;
pub mod queue;
pub mod rotation;
pub mod stats;
pub mod tenant;
pub mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;

pub use tenant::{Actor, Params, TenantTx, call, call_as};
pub use tls::Connector;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    /// The organization is suspended by a platform admin.
    #[error("organization suspended")]
    Suspended,
    /// A narrow function refused the caller (e.g. not a platform admin).
    #[error("permission denied")]
    PermissionDenied,
    /// The organization exists for this principal but lives in another region.
    #[error("organization homed in region {0}")]
    Misdirected(String),
    #[error("the principal's session or key is no longer active")]
    Unauthenticated,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The request's time limit (`request_timeout_secs`, in seconds) passed mid-statement.
    #[error("request timed out after {0} s")]
    TimedOut(u64),
    #[error("unique violation on {constraint:?}")]
    UniqueViolation { constraint: Option<String> },
    #[error("foreign key violation on {constraint:?}")]
    ForeignKeyViolation { constraint: Option<String> },
    #[error("an organization must keep at least one owner")]
    LastOwner,
    #[error("row-level security policy violation")]
    PolicyViolation,
    /// An invitation that cannot be accepted: `unknown`, `expired`, `revoked` or `used`.
    #[error("invitation {0}")]
    Invitation(&'static str),
    /// A change to something the database keeps immutable (a published workflow version).
    #[error("immutable")]
    Immutable,
    /// A state machine in the database refused a move: `run` (e.g. cancelling a finished run),
    /// `subscription` or `invoice`.
    #[error("illegal {0} transition")]
    IllegalTransition(&'static str),
    /// Content sent for an organization whose data mode is `metadata_only`.
    #[error("content not allowed in metadata_only mode")]
    ContentNotAllowed,
    /// A value PostgreSQL cannot take (a NUL byte, a time or number out of its range). The
    /// handlers validate what they accept; this is the net below them, so hostile input is a
    /// 422 and never a 500.
    #[error("value out of range or not representable: {0}")]
    InvalidValue(String),
    #[error(transparent)]
    Other(anyhow::Error),
}

/// A constraint's name as its table has it. On Citus the error comes from a shard, whose table
/// and constraints carry the shard's id (`memberships_102395`, `memberships_user_id_fkey_102395`).
fn logical_constraint(constraint: &str, table: Option<&str>) -> String {
    let shard = table.and_then(|t| t.rsplit_once('_')).map(|(_, id)| id);
    match (shard, constraint.rsplit_once('_')) {
        (Some(id), Some((name, suffix))) if suffix == id && id.bytes().all(|b| b.is_ascii_digit()) => {
            name.to_owned()
        }
        _ => constraint.to_owned(),
    }
}

/// The constraint a Citus coordinator's relayed error names in its text alone: it passes a
/// worker's message on without the error's fields (`duplicate key value violates unique
/// constraint "workspaces_name_key_102041"`), the shard's id on the name. PostgreSQL's English
/// wording; another `lc_messages` leaves the constraint unknown (a generic 409 or 404).
fn relayed_constraint(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("constraint \"")?;
    let (name, _) = rest.split_once('"')?;
    let (logical, id) = name.rsplit_once('_')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| logical.to_owned())
}

/// Custom SQLSTATE raised by `app.memberships_keep_an_owner()`.
const LAST_OWNER: &str = "TY001";

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> DbError {
        if err.is_closed() {
            return DbError::Unavailable("connection closed".into());
        }
        let Some(db) = err.as_db_error() else {
            // I/O errors talking to the server: treat as an outage, not a bug.
            return DbError::Unavailable(err.to_string());
        };
        let constraint = match db.constraint() {
            Some(c) => Some(logical_constraint(c, db.table())),
            None => relayed_constraint(db.message()),
        };
        let code = db.code();
        match code.code() {
            LAST_OWNER => return DbError::LastOwner,
            "TY020" => return DbError::ContentNotAllowed,
            "TY030" => return DbError::Immutable,
            "TY031" => return DbError::IllegalTransition("run"),
            "TY040" => return DbError::IllegalTransition("subscription"),
            "TY041" => return DbError::IllegalTransition("invoice"),
            "TY010" => return DbError::Invitation("unknown"),
            "TY011" => return DbError::Invitation("expired"),
            "TY012" => return DbError::Invitation("revoked"),
            "TY013" => return DbError::Invitation("used"),
            "TY014" => return DbError::Invitation("beyond_inviter"),
            c if c.starts_with("08") => return DbError::Unavailable(db.message().to_owned()),
            // character_not_in_repertoire (NUL), untranslatable_character,
            // datetime_field_overflow, numeric_value_out_of_range, invalid_datetime_format,
            // invalid_text_representation, string_data_right_truncation.
            "22021" | "22P05" | "22008" | "22003" | "22007" | "22P02" | "22001" => {
                return DbError::InvalidValue(db.message().to_owned());
            }
            _ => {}
        }
        if *code == SqlState::UNIQUE_VIOLATION {
            DbError::UniqueViolation { constraint }
        } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
            DbError::ForeignKeyViolation { constraint }
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE && db.message().contains("row-level security") {
            DbError::PolicyViolation
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE && db.message() == "not a platform admin" {
            DbError::PermissionDenied
        } else if [
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        ]
        .contains(code)
        {
            DbError::Unavailable(db.message().to_owned())
        } else {
            DbError::Other(anyhow::Error::new(err))
        }
    }
}

impl From<PoolError> for DbError {
    fn from(err: PoolError) -> DbError {
        match err {
            PoolError::Backend(e) => DbError::from(e),
            other => DbError::Unavailable(other.to_string()),
        }
    }
}

tokio::task_local! {
    /// The current request's deadline, and its time limit in seconds.
    static DEADLINE: (tokio::time::Instant, u64);
}

/// Runs `request` with a deadline its database work must meet (`request_timeout_secs`).
pub async fn with_deadline<F: std::future::Future>(limit_secs: u64, request: F) -> F::Output {
    let at = tokio::time::Instant::now() + Duration::from_secs(limit_secs);
    DEADLINE.scope((at, limit_secs), request).await
}

/// Awaits `work` until the current request's deadline; without one (a worker, a CLI command),
/// simply awaits it. Statements are additionally bounded by the role's `statement_timeout`.
pub(crate) async fn until_deadline<F: std::future::Future>(work: F) -> Result<F::Output, DbError> {
    match DEADLINE.try_with(|deadline| *deadline) {
        Ok((at, limit_secs)) => {
            tokio::time::timeout_at(at, work).await.map_err(|_| DbError::TimedOut(limit_secs))
        }
        Err(_) => Ok(work.await),
    }
}

/// The app pool and the region this instance serves: every tenant transaction sets the region
/// transaction-locally, and the policies admit only organizations homed there.
#[derive(Clone)]
pub struct Db {
    pub pool: Pool,
    pub region: crate::domain::Region,
    /// How statements are prepared (`database_statement_cache`).
    pub statements: crate::config::StatementCache,
    /// Whether a transaction dropped mid-statement cancels it (`database_cancel_on_drop`).
    pub cancel_on_drop: bool,
    /// The pool's TLS, which cancel requests use too.
    pub tls: tls::Tls,
    /// Time to get a connection (`tenantry_db_pool_wait_seconds`); the process's metrics
    /// registry holds it.
    pub pool_wait: prometheus::Histogram,
}

impl Db {
    /// The pool for `region` made with `connector`, preparing statements once per connection.
    pub fn new(pool: Pool, connector: &Connector, region: crate::domain::Region) -> Db {
        Db {
            pool,
            region,
            statements: crate::config::StatementCache::Connection,
            cancel_on_drop: true,
            tls: connector.tls.clone(),
            pool_wait: crate::metrics::pool_wait_histogram(),
        }
    }

    /// The same pool and statement policy, acting for another region.
    pub fn in_region(&self, region: crate::domain::Region) -> Db {
        Db { region, ..self.clone() }
    }

    /// The pool for `settings.region` made with `connector`, with the settings' statement and
    /// cancel policies.
    pub fn from_settings(pool: Pool, connector: &Connector, settings: &crate::config::Settings) -> Db {
        Db {
            pool,
            region: settings.region,
            statements: settings.database_statement_cache,
            cancel_on_drop: settings.database_cancel_on_drop,
            tls: connector.tls.clone(),
            pool_wait: crate::metrics::pool_wait_histogram(),
        }
    }

    /// A connection from the pool, its wait observed.
    pub async fn get(&self) -> Result<deadpool_postgres::Object, deadpool_postgres::PoolError> {
        let started = std::time::Instant::now();
        let client = self.pool.get().await;
        self.pool_wait.observe(started.elapsed().as_secs_f64());
        client
    }

    pub fn per_transaction(&self) -> bool {
        self.statements == crate::config::StatementCache::Transaction
    }

    /// Runs `sql` in `client`'s transaction. Per connection: a named statement from the
    /// connection's cache. Per transaction (PgBouncer before 1.21 in transaction pooling): an
    /// unnamed statement, which needs no Close. PgBouncer 1.18 hands the server connection back
    /// at the first idle ReadyForQuery, so a Close sent after COMMIT (when the rows holding a
    /// named statement are dropped) could run on, and unlink, the server of the next
    /// transaction. The parameter types an unnamed statement needs are learned once per SQL
    /// text, by preparing it inside a transaction and closing it there.
    pub async fn query_in<C>(
        &self,
        client: &C,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>
    where
        C: Session,
    {
        if self.per_transaction() {
            let types = param_types(client.plain(), sql).await?;
            tokio_postgres::GenericClient::query_typed(client.plain(), sql, &typed(params, &types)).await
        } else {
            let stmt = client.prepare_cached(sql).await?;
            client.query(&stmt, params).await
        }
    }

    /// As `query_in`, for the number of rows a statement changed.
    pub async fn execute_in<C>(
        &self,
        client: &C,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<u64, tokio_postgres::Error>
    where
        C: Session,
    {
        if self.per_transaction() {
            let types = param_types(client.plain(), sql).await?;
            tokio_postgres::GenericClient::execute_typed(client.plain(), sql, &typed(params, &types)).await
        } else {
            let stmt = client.prepare_cached(sql).await?;
            client.execute(&stmt, params).await
        }
    }
}

/// What `Db::query_in` runs on: a pooled connection, or a transaction on one.
pub trait Session: deadpool_postgres::GenericClient {
    type Plain: tokio_postgres::GenericClient;
    fn plain(&self) -> &Self::Plain;
}

impl Session for deadpool_postgres::Object {
    type Plain = tokio_postgres::Client;
    fn plain(&self) -> &tokio_postgres::Client {
        self
    }
}

impl<'a> Session for deadpool_postgres::Transaction<'a> {
    type Plain = tokio_postgres::Transaction<'a>;
    fn plain(&self) -> &tokio_postgres::Transaction<'a> {
        self
    }
}

impl std::ops::Deref for Db {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.pool
    }
}

/// The parameter types of each SQL text run as an unnamed statement. The texts are `'static`
/// (a bounded set) and their types are fixed by the schema.
type ParamTypes = std::sync::Arc<[tokio_postgres::types::Type]>;
static PARAM_TYPES: std::sync::LazyLock<
    std::sync::RwLock<std::collections::HashMap<&'static str, ParamTypes>>,
> = std::sync::LazyLock::new(Default::default);

async fn param_types(
    client: &impl tokio_postgres::GenericClient,
    sql: &'static str,
) -> Result<ParamTypes, tokio_postgres::Error> {
    if let Some(types) = PARAM_TYPES.read().unwrap_or_else(|e| e.into_inner()).get(sql) {
        return Ok(types.clone());
    }
    // Prepared and closed here, inside the caller's transaction.
    let stmt = client.prepare(sql).await?;
    let types: ParamTypes = stmt.params().into();
    drop(stmt);
    PARAM_TYPES.write().unwrap_or_else(|e| e.into_inner()).insert(sql, types.clone());
    Ok(types)
}

fn typed<'a>(
    params: Params<'a>,
    types: &[tokio_postgres::types::Type],
) -> Vec<(&'a (dyn tokio_postgres::types::ToSql + Sync), tokio_postgres::types::Type)> {
    // A count that does not match is refused by the server, as for a named statement.
    params.iter().zip(types).map(|(param, ty)| (*param, ty.clone())).collect()
}

/// The app role's pool. `Fast` recycling is safe because every checkout runs inside a
/// transaction that is committed or rolled back before the connection is returned, and the
/// context settings are transaction-local.
pub fn app_pool(connector: &Connector, max_size: usize, wait_timeout: Duration) -> anyhow::Result<Pool> {
    let mut config = connector.config.clone();
    if config.get_application_name().is_none() {
        config.application_name("tenantry");
    }
    config.connect_timeout(wait_timeout);
    let manager = Manager::from_config(
        config,
        connector.tls.clone(),
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Ok(Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(wait_timeout))
        .create_timeout(Some(wait_timeout))
        .recycle_timeout(Some(wait_timeout))
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// The app role's URL (`TENANTRY_DATABASE_URL`) with the TLS settings.
pub fn app_connector(settings: &crate::config::Settings) -> anyhow::Result<Connector> {
    Connector::new(settings.require_database_url()?, &settings.database_tls, "TENANTRY_DATABASE_URL")?
        .refuse_plaintext(settings.environment, &settings.database_tls)
}

/// Where LISTEN connects (`TENANTRY_LISTEN_DATABASE_URL`, else the app role's URL).
pub fn listen_connector(settings: &crate::config::Settings) -> anyhow::Result<Connector> {
    let what = if settings.listen_database_url.is_some() {
        "TENANTRY_LISTEN_DATABASE_URL"
    } else {
        "TENANTRY_DATABASE_URL"
    };
    Connector::new(settings.require_listen_database_url()?, &settings.database_tls, what)?
        .refuse_plaintext(settings.environment, &settings.database_tls)
}

/// The owner/admin URL (`TENANTRY_ADMIN_DATABASE_URL`) with the TLS settings.
pub fn admin_connector(settings: &crate::config::Settings) -> anyhow::Result<Connector> {
    Connector::new(
        settings.require_admin_database_url()?,
        &settings.database_tls,
        "TENANTRY_ADMIN_DATABASE_URL",
    )?
    .refuse_plaintext(settings.environment, &settings.database_tls)
}

/// A single owner/admin connection for migrate, check and seed. Never used by the server.
pub async fn admin_client(connector: &Connector) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = connector.connect().await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "admin connection ended");
        }
    });
    Ok(client)
}

impl DbError {
    /// A short, detail-free description (for readiness output).
    pub fn kind(&self) -> &'static str {
        match self {
            DbError::NotFound => "not found",
            DbError::Misdirected(_) => "misdirected",
            DbError::Suspended => "suspended",
            DbError::PermissionDenied => "permission denied",
            DbError::Unauthenticated => "unauthenticated",
            DbError::Unavailable(_) => "unavailable",
            DbError::TimedOut(_) => "timed out",
            DbError::UniqueViolation { .. } => "unique violation",
            DbError::ForeignKeyViolation { .. } => "foreign key violation",
            DbError::LastOwner => "last owner",
            DbError::PolicyViolation => "policy violation",
            DbError::Invitation(_) => "invitation",
            DbError::ContentNotAllowed => "content not allowed",
            DbError::InvalidValue(_) => "invalid value",
            DbError::Immutable => "immutable",
            DbError::IllegalTransition(_) => "illegal transition",
            DbError::Other(_) => "error",
        }
    }
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_past_the_request_deadline_is_timed_out_and_work_outside_a_request_is_not() {
        let slow = || tokio::time::sleep(Duration::from_secs(3));
        let timed = with_deadline(1, async { until_deadline(slow()).await }).await;
        assert!(matches!(timed, Err(DbError::TimedOut(1))), "{timed:?}");
        assert!(with_deadline(5, async { until_deadline(slow()).await }).await.is_ok());
        assert!(until_deadline(slow()).await.is_ok());
    }
}

#[cfg(test)]
mod constraint_name_tests {
    use super::logical_constraint;

    #[test]
    fn a_shards_constraint_is_named_as_its_table_names_it() {
        let shard = Some("memberships_102395");
        assert_eq!(logical_constraint("memberships_user_id_fkey_102395", shard), "memberships_user_id_fkey");
        assert_eq!(
            logical_constraint("memberships_user_id_fkey", Some("memberships")),
            "memberships_user_id_fkey"
        );
        // Only the shard's own id comes off, and only digits.
        assert_eq!(logical_constraint("memberships_user_id_fkey_7", shard), "memberships_user_id_fkey_7");
        assert_eq!(logical_constraint("t_a_fkey_x", Some("t_x")), "t_a_fkey_x");
        assert_eq!(logical_constraint("some_key", None), "some_key");
    }

    #[test]
    fn a_relayed_shard_error_names_its_constraint_in_its_text() {
        use super::relayed_constraint;
        let unique = r#"duplicate key value violates unique constraint "workspaces_name_key_102041""#;
        assert_eq!(relayed_constraint(unique).as_deref(), Some("workspaces_name_key"));
        let fk = r#"insert or update on table "memberships_102395" violates foreign key constraint "memberships_user_id_fkey_102395""#;
        assert_eq!(relayed_constraint(fk).as_deref(), Some("memberships_user_id_fkey"));
        // A message from one PostgreSQL (no shard id), or none at all: nothing to map.
        assert_eq!(relayed_constraint(r#"violates unique constraint "workspaces_name_key""#), None);
        assert_eq!(relayed_constraint("canceling statement due to user request"), None);
        assert_eq!(relayed_constraint(r#"constraint "unterminated"#), None);
    }
}
