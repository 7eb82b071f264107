//! Sessions and our own tokens: refresh (rotating), logout, and a person's list of sessions.
//! Sign-in itself (which starts a session) is in the identity-provider flows.

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiJson, RequestMeta};
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, total};
use super::{AppState, require_user};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::auth::events::{SecurityEvent, emit};
use crate::auth::sessions::{SessionError, TokenPair};
use crate::db::TenantTx;
use crate::{keyset, sorts};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"refresh_token": "tnty_rt_01J8Z3YQ4W8V2N6M0K5T1R7H9C.b8Jm2Kp5Lw9Rt4Vz7Yc1Nf6Gh0SdXq3"}))]
pub struct RefreshRequest {
    /// The refresh token from sign-in or from the previous refresh. It is spent by this call.
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// A short-lived JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until `access_token` expires.
    pub expires_in: i64,
    /// The next refresh token (the one presented is now spent; presenting it again ends the session).
    pub refresh_token: String,
    pub session_id: Uuid,
}

impl From<TokenPair> for TokenResponse {
    fn from(pair: TokenPair) -> Self {
        TokenResponse {
            access_token: pair.access_token,
            token_type: "Bearer".into(),
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token,
            session_id: pair.session_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    pub id: Uuid,
    /// How the session was signed in (e.g. `oidc:keycloak`, `github`).
    pub provider: String,
    pub created_at: DateTime<Utc>,
    pub last_refreshed_at: DateTime<Utc>,
    pub idle_expires_at: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// The session of the token making this request.
    pub current: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// Session id.
    pub session_id: Uuid,
}

/// Exchange a refresh token for a new access token and refresh token.
#[utoipa::path(
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Invalid, spent, expired or revoked refresh token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
#[post("/auth/token")]
#[tracing::instrument(skip_all)]
pub async fn refresh_session(
    state: web::Data<AppState>,
    body: ApiJson<RefreshRequest>,
) -> Result<web::Json<TokenResponse>, ApiError> {
    match state.sessions.refresh(&body.refresh_token).await {
        Ok(pair) => Ok(web::Json(pair.into())),
        Err(SessionError::Database(e)) => Err(e.into()),
        Err(SessionError::Signing(e)) => Err(ApiError::Internal(e)),
        Err(_) => Err(ApiError::InvalidRefreshToken),
    }
}

const REVOKE_SESSION: &str = "update sessions set revoked_at = coalesce(revoked_at, $2), \
     revoked_reason = coalesce(revoked_reason, $3) where id = $1";

/// End the session of the token making this request (its access and refresh tokens stop working).
#[utoipa::path(
    tag = "auth",
    responses(
        (status = 204, description = "Signed out"),
        (status = 400, description = "This token does not belong to a session", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys have no session", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/auth/logout")]
#[tracing::instrument(skip_all)]
pub async fn sign_out(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
) -> Result<HttpResponse, ApiError> {
    end_current_session(&state, &principal, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Ends the session the principal's credential belongs to, recorded on the platform chain (the
/// API's logout and the console's sign-out).
pub(crate) async fn end_current_session(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
) -> Result<(), ApiError> {
    let user = require_user(principal)?;
    let session = user.session_id.ok_or(ApiError::BadRequest {
        code: "no_session",
        detail: "This token does not belong to a session; nothing to sign out of.".into(),
    })?;
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    tx.execute(REVOKE_SESSION, &[&session, &state.clock.now(), &"logout"]).await?;
    record_session_event(&mut tx, user.user_id, session, "auth.logout", meta).await?;
    tx.commit().await?;
    emit(SecurityEvent::Logout { user: user.user_id, session });
    Ok(())
}

/// Records a session event on the platform chain, in the transaction that made the change.
async fn record_session_event(
    tx: &mut TenantTx,
    user: crate::domain::UserId,
    session: Uuid,
    action: &'static str,
    meta: &RequestMeta,
) -> Result<(), ApiError> {
    tx.execute(
        "select app.record_security_event('user', $1, $2, 'session', $3, 'allowed', $4, $5, $6, '{}')",
        &[user.as_uuid(), &action, &session.to_string(), &meta.ip, &meta.user_agent, &meta.request_id],
    )
    .await?;
    Ok(())
}

fn session_from_row(row: &Row, current: Option<Uuid>) -> SessionResponse {
    let id: Uuid = row.get("id");
    SessionResponse {
        id,
        provider: row.get("provider"),
        created_at: row.get("created_at"),
        last_refreshed_at: row.get("last_refreshed_at"),
        idle_expires_at: row.get("idle_expires_at"),
        absolute_expires_at: row.get("absolute_expires_at"),
        revoked_at: row.get("revoked_at"),
        revoked_reason: row.get("revoked_reason"),
        user_agent: row.get("user_agent"),
        ip: row.get("ip"),
        current: current == Some(id),
    }
}

/// The caller's sessions: `$1` limit, then the cursor's key. A person's sessions are few;
/// `sessions_user_id_idx (user_id, created_at)` finds them (ids are UUIDv7: creation order).
macro_rules! sessions {
    () => {
        "select id, provider, created_at, last_refreshed_at, idle_expires_at, absolute_expires_at, \
         revoked_at, revoked_reason, user_agent, host(ip) as ip from sessions \
         where user_id = app.current_user_id()"
    };
}
static BY_CREATED: Keyset = keyset!(1, Id, asc, sessions, sessions, "", "id", "$2", "id", "id desc", "$1");
static BY_CREATED_DESC: Keyset =
    keyset!(2, Id, desc, sessions, sessions, "", "id", "$2", "id", "id desc", "$1");
const COUNT_SESSIONS: &str = concat!("select count(*) from (", sessions!(), " limit $1) c");

sorts! {
    /// The order of a session list.
    SessionSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionFilter {
    /// `created_at` (default, in the order they were started) or `-created_at`.
    #[param(inline)]
    pub sort: Option<SessionSort>,
}

/// List the caller's sessions.
#[utoipa::path(
    tag = "me",
    params(SessionFilter, PageQuery),
    responses(
        (status = 200, description = "Sessions", body = Page<SessionResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys have no sessions", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/me/sessions")]
#[tracing::instrument(skip_all)]
pub async fn list_sessions(
    state: web::Data<AppState>,
    principal: Principal,
    filter: web::Query<SessionFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<SessionResponse>>, ApiError> {
    let user = require_user(&principal)?;
    let page = query.parse(filter.sort.unwrap_or_default().keyset())?;
    let (_, rows) =
        page.read(&state.db, principal.actor(), None, &page.with_keys(vec![page.fetch()])).await?;
    let total = total(&state.db, &principal, None, &page, COUNT_SESSIONS, &[&COUNT_FETCH]).await?;
    let items = rows.iter().map(|r| session_from_row(r, user.session_id)).collect();
    Ok(web::Json(page.page(items, total, |s| Key::Id(s.id))))
}

/// End one of the caller's sessions.
#[utoipa::path(
    tag = "me",
    params(SessionPath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys have no sessions", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such session", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/me/sessions/{session_id}")]
#[tracing::instrument(skip_all)]
pub async fn delete_session(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<SessionPath>,
) -> Result<HttpResponse, ApiError> {
    let user = require_user(&principal)?;
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    let changed =
        tx.execute(REVOKE_SESSION, &[&path.session_id, &state.clock.now(), &"revoked_by_user"]).await?;
    if changed != 1 {
        return Err(ApiError::NotFound);
    }
    record_session_event(&mut tx, user.user_id, path.session_id, "auth.session_revoke", &meta).await?;
    tx.commit().await?;
    emit(SecurityEvent::SessionRevoked { user: user.user_id, session: path.session_id });
    Ok(HttpResponse::NoContent().finish())
}

/// The public keys our access tokens are signed with (current and recently retired).
#[utoipa::path(
    tag = "auth",
    responses((status = 200, description = "A JSON Web Key Set", body = Object, content_type = "application/json")),
    security(())
)]
#[get("/.well-known/jwks.json")]
pub async fn get_jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().insert_header(("Cache-Control", "public, max-age=300")).json(state.keys.jwks())
}
