//! Identity storage: users, sessions, refresh tokens, API keys. Each call is one of the narrow
//! definer functions in sql/03 (they must see across tenants before any context exists: a
//! refresh token or an API key arrives without one). No tenant rows are read or written here.

use crate::db::Db;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DbError, call};
use crate::domain::{OrgId, UserId};

/// Maps a verified identity to a user id, creating the user on first sight.
pub async fn provision_user(
    pool: &Db,
    issuer: &str,
    subject: &str,
    email: Option<&str>,
    display_name: Option<&str>,
) -> Result<UserId, DbError> {
    let email = email.filter(|e| e.len() <= 320);
    let display_name = display_name.filter(|n| n.chars().count() <= 200);
    let rows =
        call(pool, "select app.provision_user($1, $2, $3, $4)", &[&issuer, &subject, &email, &display_name])
            .await?;
    let row =
        rows.first().ok_or_else(|| DbError::Other(anyhow::anyhow!("provision_user returned no row")))?;
    Ok(UserId(row.get(0)))
}

pub struct NewSession<'a> {
    pub id: Uuid,
    pub user: UserId,
    pub provider: &'a str,
    pub now: DateTime<Utc>,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub refresh_token_id: Uuid,
    pub refresh_token_hash: &'a [u8],
    pub user_agent: Option<&'a str>,
    pub ip: Option<std::net::IpAddr>,
}

/// A security event for the platform chain of the audit log (events of no organization).
pub struct PlatformEvent {
    pub actor_type: &'static str,
    pub actor_id: Option<Uuid>,
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    pub outcome: &'static str,
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
    pub details: serde_json::Value,
}

impl PlatformEvent {
    /// An event about one of `user`'s sessions.
    pub fn session(
        user: UserId,
        session: Uuid,
        action: &'static str,
        outcome: &'static str,
    ) -> PlatformEvent {
        PlatformEvent {
            actor_type: "user",
            actor_id: Some(user.0),
            action,
            target_type: "session",
            target_id: Some(session.to_string()),
            outcome,
            ip: None,
            user_agent: None,
            details: serde_json::json!({}),
        }
    }
}

const RECORD_EVENT: &str = "select app.record_security_event($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Appends `event` to the platform chain through `client` (a transaction, so it commits with
/// the change it describes).
pub async fn record_event(
    db: &Db,
    client: &deadpool_postgres::Transaction<'_>,
    event: &PlatformEvent,
) -> Result<(), DbError> {
    let request_id = crate::http::middleware::current_request_id();
    db.query_in(
        client,
        RECORD_EVENT,
        &[
            &event.actor_type,
            &event.actor_id,
            &event.action,
            &event.target_type,
            &event.target_id,
            &event.outcome,
            &event.ip,
            &event.user_agent,
            &request_id,
            &event.details,
        ],
    )
    .await?;
    Ok(())
}

/// Records an event that accompanies no change (e.g. a failed sign-in).
pub async fn record_event_alone(pool: &Db, event: &PlatformEvent) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    record_event(pool, &tx, event).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn start_session(pool: &Db, s: &NewSession<'_>, event: &PlatformEvent) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    pool.query_in(
        &tx,
        "select app.start_session($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &s.id,
            s.user.as_uuid(),
            &s.provider,
            &s.now,
            &s.idle_expires_at,
            &s.absolute_expires_at,
            &s.refresh_token_id,
            &s.refresh_token_hash,
            &s.user_agent,
            &s.ip,
        ],
    )
    .await?;
    record_event(pool, &tx, event).await?;
    tx.commit().await?;
    Ok(())
}

pub struct RefreshTokenState {
    pub session_id: Uuid,
    pub user_id: UserId,
    pub secret_hash: Vec<u8>,
    pub spent: bool,
    pub revoked: bool,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
}

pub async fn refresh_token_state(pool: &Db, token: Uuid) -> Result<Option<RefreshTokenState>, DbError> {
    let rows = call(pool, "select * from app.refresh_token_state($1)", &[&token]).await?;
    Ok(rows.into_iter().next().map(|row| RefreshTokenState {
        session_id: row.get("session_id"),
        user_id: UserId(row.get("user_id")),
        secret_hash: row.get("secret_hash"),
        spent: row.get("spent"),
        revoked: row.get("revoked"),
        idle_expires_at: row.get("idle_expires_at"),
        absolute_expires_at: row.get("absolute_expires_at"),
    }))
}

/// Spends `old` and stores `new`, recording `event` with it; false (and nothing recorded) when
/// `old` was already spent.
pub async fn rotate_refresh_token(
    pool: &Db,
    old: Uuid,
    new: Uuid,
    new_hash: &[u8],
    now: DateTime<Utc>,
    idle_expires_at: DateTime<Utc>,
    event: &PlatformEvent,
) -> Result<bool, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = pool
        .query_in(
            &tx,
            "select app.rotate_refresh_token($1, $2, $3, $4, $5)",
            &[&old, &new, &new_hash, &now, &idle_expires_at],
        )
        .await?;
    let rotated = rows.first().is_some_and(|row| row.get::<_, bool>(0));
    if rotated {
        record_event(pool, &tx, event).await?;
    }
    tx.commit().await?;
    Ok(rotated)
}

/// Ends a session for a reason the user did not choose (`refresh_token_reuse`, `expired`),
/// recording `event` with it.
pub async fn end_session(
    pool: &Db,
    session: Uuid,
    reason: &str,
    now: DateTime<Utc>,
    event: &PlatformEvent,
) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    pool.query_in(&tx, "select app.end_session($1, $2, $3)", &[&session, &reason, &now]).await?;
    record_event(pool, &tx, event).await?;
    tx.commit().await?;
    Ok(())
}

pub struct StoredApiKey {
    pub org_id: OrgId,
    pub secret_hash: Vec<u8>,
    pub active: bool,
}

pub async fn find_api_key(pool: &Db, key: Uuid) -> Result<Vec<StoredApiKey>, DbError> {
    Ok(call(pool, "select * from app.find_api_key($1)", &[&key])
        .await?
        .iter()
        .map(|row| StoredApiKey {
            org_id: OrgId(row.get("organization_id")),
            secret_hash: row.get("secret_hash"),
            active: row.get("active"),
        })
        .collect())
}

pub async fn touch_api_key(pool: &Db, key: Uuid) -> Result<(), DbError> {
    call(pool, "select app.touch_api_key($1)", &[&key]).await?;
    Ok(())
}

/// A started sign-in, as `/login` stored it.
pub struct LoginAttempt {
    pub provider: String,
    pub pkce_verifier: String,
    pub nonce: String,
    pub redirect_to: Option<String>,
}

#[allow(clippy::too_many_arguments)]
pub async fn create_login_attempt(
    pool: &Db,
    state_hash: &[u8],
    provider: &str,
    pkce_verifier: &str,
    nonce: &str,
    redirect_to: Option<&str>,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), DbError> {
    call(
        pool,
        "select app.create_login_attempt($1, $2, $3, $4, $5, $6, $7)",
        &[&state_hash, &provider, &pkce_verifier, &nonce, &redirect_to, &now, &expires_at],
    )
    .await?;
    Ok(())
}

/// Takes (deletes) the attempt for this `state`, if it exists and has not expired.
pub async fn take_login_attempt(
    pool: &Db,
    state_hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<LoginAttempt>, DbError> {
    let rows = call(pool, "select * from app.take_login_attempt($1, $2)", &[&state_hash, &now]).await?;
    Ok(rows.into_iter().next().map(|row| LoginAttempt {
        provider: row.get("provider"),
        pkce_verifier: row.get("pkce_verifier"),
        nonce: row.get("nonce"),
        redirect_to: row.get("redirect_to"),
    }))
}

/// Applies a provider's role-mapping result for `user` (see `app.sync_provider_memberships`).
pub async fn sync_provider_memberships(
    pool: &Db,
    user: UserId,
    provider: &str,
    grants: &[(Uuid, crate::domain::Role)],
) -> Result<(), DbError> {
    let orgs: Vec<Uuid> = grants.iter().map(|(org, _)| *org).collect();
    let roles: Vec<&str> = grants.iter().map(|(_, role)| role.as_str()).collect();
    call(
        pool,
        "select app.sync_provider_memberships($1, $2, $3, $4)",
        &[user.as_uuid(), &provider, &orgs, &roles],
    )
    .await?;
    Ok(())
}
