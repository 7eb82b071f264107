//! Identity storage: users, sessions, refresh tokens, API keys. Each call is one of the narrow
//! definer functions in sql/05_identity.sql and sql/06_organizations.sql (they must see across
//! tenants before any context exists: a refresh token or an API key arrives without one). Each is
//! keyed by a secret its caller presents (a refresh token's, an API key's, a sign-in's) or acts on
//! the user the transaction's context names. No tenant rows are read or written here, except the
//! provider-mapped memberships organizations consented to.

use crate::db::Db;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Actor, DbError, TenantTx, call};
use crate::domain::{OrgId, UserId};

/// Maps a verified identity to a user id, creating the user on first sight; then, as that user,
/// refreshes their email and name when the provider reports new ones.
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
    let user = UserId(row.get(0));
    // As the user: only their own profile can change (and an unchanged one is not written).
    if email.is_some() || display_name.is_some() {
        super::call_as(
            pool,
            Actor::user(user),
            "select app.refresh_profile($1, $2)",
            &[&email, &display_name],
        )
        .await?;
    }
    Ok(user)
}

/// The proof that a sign-in completed: the secret behind the completion hash the callback left
/// on its login attempt. Starting the session consumes it (once, within five minutes).
pub struct SignInCompletion(pub(crate) String);

pub struct NewSession<'a> {
    pub id: Uuid,
    pub user: UserId,
    pub completion: SignInCompletion,
    pub now: DateTime<Utc>,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub credential: SessionCredential<'a>,
    pub user_agent: Option<&'a str>,
    pub ip: Option<std::net::IpAddr>,
}

/// What the holder of a session presents: rotating refresh tokens (API clients), or the one
/// secret of a console cookie (a browser).
#[derive(Clone, Copy)]
pub enum SessionCredential<'a> {
    RefreshToken { id: Uuid, hash: &'a [u8] },
    ConsoleCookie { hash: &'a [u8] },
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

/// Appends `event` to the platform chain in `tx`, so it commits with the change it describes.
pub async fn record_event(tx: &mut TenantTx, event: &PlatformEvent) -> Result<(), DbError> {
    let request_id = crate::request::current_request_id();
    tx.query(
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
    let mut tx = TenantTx::begin_user(pool, Actor::default()).await?;
    record_event(&mut tx, event).await?;
    tx.commit().await
}

/// Starts a session for the user a completed sign-in proved (the completion is consumed).
pub async fn start_session(pool: &Db, s: &NewSession<'_>, event: &PlatformEvent) -> Result<(), DbError> {
    let mut tx = TenantTx::begin_user(pool, Actor::user(s.user)).await?;
    let (c, id, now, idle, absolute) =
        (&s.completion.0, &s.id, &s.now, &s.idle_expires_at, &s.absolute_expires_at);
    match s.credential {
        SessionCredential::RefreshToken { id: token, hash } => {
            tx.query(
                "select app.start_session($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[c, id, now, idle, absolute, &token, &hash, &s.user_agent, &s.ip],
            )
            .await?
        }
        SessionCredential::ConsoleCookie { hash } => {
            tx.query(
                "select app.start_console_session($1, $2, $3, $4, $5, $6, $7, $8)",
                &[c, id, now, idle, absolute, &hash, &s.user_agent, &s.ip],
            )
            .await?
        }
    };
    record_event(&mut tx, event).await?;
    tx.commit().await
}

/// A presented console cookie's session, if its secret matches and it is live; the use extends
/// its idle timeout.
pub async fn use_console_session(
    pool: &Db,
    session: Uuid,
    hash: &[u8],
    now: DateTime<Utc>,
    idle_expires_at: DateTime<Utc>,
) -> Result<Option<(UserId, DateTime<Utc>)>, DbError> {
    let rows = call(
        pool,
        "select * from app.use_console_session($1, $2, $3, $4)",
        &[&session, &hash, &now, &idle_expires_at],
    )
    .await?;
    Ok(rows.into_iter().next().map(|row| (UserId(row.get("user_id")), row.get("absolute_expires_at"))))
}

pub struct RefreshTokenState {
    pub session_id: Uuid,
    pub user_id: UserId,
    pub spent: bool,
    pub revoked: bool,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
}

/// The state of a presented refresh token; `None` unless its secret matches.
pub async fn refresh_token_state(
    pool: &Db,
    token: Uuid,
    hash: &[u8],
) -> Result<Option<RefreshTokenState>, DbError> {
    let rows = call(pool, "select * from app.refresh_token_state($1, $2)", &[&token, &hash]).await?;
    Ok(rows.into_iter().next().map(|row| RefreshTokenState {
        session_id: row.get("session_id"),
        user_id: UserId(row.get("user_id")),
        spent: row.get("spent"),
        revoked: row.get("revoked"),
        idle_expires_at: row.get("idle_expires_at"),
        absolute_expires_at: row.get("absolute_expires_at"),
    }))
}

/// A refresh token as presented: its id and the SHA-256 of its secret.
#[derive(Debug, Clone, Copy)]
pub struct PresentedToken<'a> {
    pub id: Uuid,
    pub hash: &'a [u8],
}

/// Spends the presented token and stores `new`, recording `event` with it; false (and nothing
/// recorded) when it was already spent.
pub async fn rotate_refresh_token(
    pool: &Db,
    old: PresentedToken<'_>,
    new: Uuid,
    new_hash: &[u8],
    now: DateTime<Utc>,
    idle_expires_at: DateTime<Utc>,
    event: &PlatformEvent,
) -> Result<bool, DbError> {
    let mut tx = TenantTx::begin_user(pool, Actor::default()).await?;
    let rows = tx
        .query(
            "select app.rotate_refresh_token($1, $2, $3, $4, $5, $6)",
            &[&old.id, &old.hash, &new, &new_hash, &now, &idle_expires_at],
        )
        .await?;
    let rotated = rows.first().is_some_and(|row| row.get::<_, bool>(0));
    if rotated {
        record_event(&mut tx, event).await?;
    }
    tx.commit().await?;
    Ok(rotated)
}

/// Ends the session of a presented refresh token for a reason the user did not choose
/// (`refresh_token_reuse`, `expired`), recording `event` with it.
pub async fn end_session(
    pool: &Db,
    token: PresentedToken<'_>,
    reason: &str,
    now: DateTime<Utc>,
    event: &PlatformEvent,
) -> Result<(), DbError> {
    let mut tx = TenantTx::begin_user(pool, Actor::default()).await?;
    tx.query("select app.end_session($1, $2, $3, $4)", &[&token.id, &token.hash, &reason, &now]).await?;
    record_event(&mut tx, event).await?;
    tx.commit().await
}

pub struct StoredApiKey {
    pub org_id: OrgId,
    pub secret_hash: Vec<u8>,
    pub active: bool,
}

/// The stored key with this id and secret (SHA-256), if any.
pub async fn find_api_key(pool: &Db, key: Uuid, hash: &[u8]) -> Result<Vec<StoredApiKey>, DbError> {
    Ok(call(pool, "select * from app.find_api_key($1, $2)", &[&key, &hash])
        .await?
        .iter()
        .map(|row| StoredApiKey {
            org_id: OrgId(row.get("organization_id")),
            secret_hash: row.get("secret_hash"),
            active: row.get("active"),
        })
        .collect())
}

pub async fn touch_api_key(pool: &Db, key: Uuid, hash: &[u8]) -> Result<(), DbError> {
    call(pool, "select app.touch_api_key($1, $2)", &[&key, &hash]).await?;
    Ok(())
}

/// A started sign-in, as `/login` stored it.
pub struct LoginAttempt {
    pub provider: String,
    pub pkce_verifier: String,
    pub nonce: String,
    pub redirect_to: Option<String>,
}

/// What `/login` stores: the hashes of `state` and of the browser's binding cookie, and what the
/// callback needs to finish.
pub struct NewLoginAttempt<'a> {
    pub state_hash: &'a [u8],
    pub browser_hash: &'a [u8],
    pub provider: &'a str,
    pub issuer: Option<&'a str>,
    pub pkce_verifier: &'a str,
    pub nonce: &'a str,
    pub redirect_to: Option<&'a str>,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub async fn create_login_attempt(pool: &Db, a: &NewLoginAttempt<'_>) -> Result<(), DbError> {
    call(
        pool,
        "select app.create_login_attempt($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &a.state_hash,
            &a.browser_hash,
            &a.provider,
            &a.issuer,
            &a.pkce_verifier,
            &a.nonce,
            &a.redirect_to,
            &a.now,
            &a.expires_at,
        ],
    )
    .await?;
    Ok(())
}

/// Takes the attempt for this `state` from the browser that started it, if it has not expired
/// and was not taken before; with it, `completion` (a fresh secret the caller made, stored as
/// `completion_hash`) becomes what lets this sign-in start a session.
pub async fn take_login_attempt(
    pool: &Db,
    state_hash: &[u8],
    browser_hash: &[u8],
    completion: String,
    completion_hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<(LoginAttempt, SignInCompletion)>, DbError> {
    let rows = call(
        pool,
        "select * from app.take_login_attempt($1, $2, $3, $4)",
        &[&state_hash, &browser_hash, &completion_hash, &now],
    )
    .await?;
    Ok(rows.into_iter().next().map(|row| {
        let attempt = LoginAttempt {
            provider: row.get("provider"),
            pkce_verifier: row.get("pkce_verifier"),
            nonce: row.get("nonce"),
            redirect_to: row.get("redirect_to"),
        };
        (attempt, SignInCompletion(completion))
    }))
}

/// Applies a provider's role-mapping result for `user`, as that user (see
/// `app.sync_provider_memberships`: only where the organization consented to the provider).
pub async fn sync_provider_memberships(
    pool: &Db,
    user: UserId,
    provider: &str,
    grants: &[(Uuid, crate::domain::Role)],
) -> Result<(), DbError> {
    let orgs: Vec<Uuid> = grants.iter().map(|(org, _)| *org).collect();
    let roles: Vec<&str> = grants.iter().map(|(_, role)| role.as_str()).collect();
    super::call_as(
        pool,
        Actor::user(user),
        "select app.sync_provider_memberships($1, $2, $3)",
        &[&provider, &orgs, &roles],
    )
    .await?;
    Ok(())
}
