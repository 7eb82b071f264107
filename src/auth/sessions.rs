//! Sessions: what a sign-in creates. A session hands out short-lived access tokens (JWTs with
//! `sid`, signed with our current key) and opaque refresh tokens that rotate on every use.
//! Presenting a spent refresh token (with the right secret) revokes the whole session: one of
//! the two holders is a thief. Idle and absolute timeouts are judged with an injectable clock.
//!
//! Refresh token format: `tnty_rt_` + token id (32 hex) + `_` + secret (64 hex).
//!
//! A console session (the web console, issue 17) has no tokens at all: one secret in the
//! browser's HttpOnly cookie, `tnty_cs_` + session id + `_` + secret, whose SHA-256 the session
//! row keeps. Refresh tokens would not do for a browser: two tabs refreshing at once look like
//! a stolen token being replayed, and would end the session.

use std::sync::Arc;

use crate::db::Db;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::api_keys::{OpaqueToken, new_opaque, parse_opaque};
use super::clock::Clock;
use super::events::{SecurityEvent, emit};
use super::keys::SigningKeys;
use crate::config::AuthSettings;
use crate::db::identity::PlatformEvent;
use crate::db::{DbError, identity};
use crate::domain::UserId;

const PREFIX: &str = "tnty_rt_";
const CONSOLE_PREFIX: &str = "tnty_cs_";
#[cfg(test)]
const LEN: usize = PREFIX.len() + 32 + 1 + 64;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Malformed, unknown, or a wrong secret: nothing to act on.
    #[error("invalid refresh token")]
    InvalidToken,
    #[error("refresh token reused; session revoked")]
    Reused,
    #[error("session expired")]
    Expired,
    #[error("session revoked")]
    Revoked,
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Signing(#[from] anyhow::Error),
}

/// What a sign-in or a refresh returns.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: String,
    pub session_id: Uuid,
}

/// Whether a credential has the shape of a console cookie (checked before any lookup).
pub fn looks_like_console_cookie(credential: &str) -> bool {
    credential.starts_with(CONSOLE_PREFIX)
}

/// A console cookie's session id and the hash of its secret; `None` for anything malformed.
pub fn parse_console_cookie(cookie: &str) -> Option<(Uuid, [u8; 32])> {
    parse_opaque(CONSOLE_PREFIX, cookie)
}

/// The CSRF token of a console session: derived from its cookie (so nothing more is stored),
/// readable by the console's script, and useless without the cookie (which the script cannot
/// read). Every state-changing request authenticated by the cookie must carry it.
pub fn console_csrf_token(cookie: &str) -> String {
    let mut input = b"tenantry console csrf\0".to_vec();
    input.extend_from_slice(cookie.as_bytes());
    super::api_keys::hex(&super::api_keys::sha256(&input))
}

/// A started console session: the cookie's value (shown to the browser only) and its lifetime.
pub struct ConsoleSession {
    pub cookie: String,
    pub session_id: Uuid,
    pub max_age_secs: i64,
}

fn new_refresh_token() -> OpaqueToken {
    new_opaque(PREFIX)
}

fn parse_refresh_token(token: &str) -> Option<(Uuid, [u8; 32])> {
    parse_opaque(PREFIX, token)
}

pub struct SessionService {
    pool: Db,
    keys: Arc<SigningKeys>,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    idle_timeout: Duration,
    absolute_timeout: Duration,
    clock: Arc<dyn Clock>,
}

/// Where a sign-in came from, recorded on the session.
pub struct SignInContext<'a> {
    pub provider: &'a str,
    pub user_agent: Option<&'a str>,
    pub ip: Option<std::net::IpAddr>,
}

fn seconds(n: u64) -> Duration {
    Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 2))
}

impl SessionService {
    pub fn new(pool: Db, keys: Arc<SigningKeys>, settings: &AuthSettings, clock: Arc<dyn Clock>) -> Self {
        SessionService {
            pool,
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            access_ttl: seconds(settings.access_token_ttl_secs),
            idle_timeout: seconds(settings.session_idle_timeout_secs),
            absolute_timeout: seconds(settings.session_absolute_timeout_secs),
            clock,
        }
    }

    /// Starts a session for a user who has just proven who they are: `completion` is what the
    /// sign-in callback got for taking its login attempt, and it is consumed here.
    pub async fn start(
        &self,
        user: UserId,
        completion: identity::SignInCompletion,
        context: &SignInContext<'_>,
    ) -> Result<TokenPair, SessionError> {
        let now = self.clock.now();
        let session = Uuid::now_v7();
        let refresh = new_refresh_token();
        let credential = identity::SessionCredential::RefreshToken { id: refresh.id, hash: &refresh.hash };
        self.open(user, session, now, completion, credential, context).await?;
        self.pair(user, session, now, now + self.absolute_timeout, refresh.plaintext)
    }

    async fn open(
        &self,
        user: UserId,
        session: Uuid,
        now: DateTime<Utc>,
        completion: identity::SignInCompletion,
        credential: identity::SessionCredential<'_>,
        context: &SignInContext<'_>,
    ) -> Result<(), SessionError> {
        let absolute = now + self.absolute_timeout;
        identity::start_session(
            &self.pool,
            &identity::NewSession {
                id: session,
                user,
                completion,
                now,
                idle_expires_at: (now + self.idle_timeout).min(absolute),
                absolute_expires_at: absolute,
                credential,
                user_agent: context.user_agent,
                ip: context.ip,
            },
            &PlatformEvent {
                ip: context.ip,
                user_agent: context.user_agent.map(str::to_owned),
                details: serde_json::json!({ "provider": context.provider }),
                ..PlatformEvent::session(user, session, "auth.sign_in", "allowed")
            },
        )
        .await?;
        emit(SecurityEvent::SignIn { user, session, provider: context.provider });
        Ok(())
    }

    /// Starts a console session (the same sign-in, the same session row and audit event), whose
    /// only credential is the cookie returned.
    pub async fn start_console(
        &self,
        user: UserId,
        completion: identity::SignInCompletion,
        context: &SignInContext<'_>,
    ) -> Result<ConsoleSession, SessionError> {
        let now = self.clock.now();
        let cookie = new_opaque(CONSOLE_PREFIX);
        let absolute = now + self.absolute_timeout;
        self.open(
            user,
            cookie.id,
            now,
            completion,
            identity::SessionCredential::ConsoleCookie { hash: &cookie.hash },
            context,
        )
        .await?;
        Ok(ConsoleSession {
            cookie: cookie.plaintext,
            session_id: cookie.id,
            max_age_secs: (absolute - now).num_seconds(),
        })
    }

    /// Starts a console session for a user the server verified itself (a development token
    /// pasted into the console's sign-in page): the server plays the identity provider, with a
    /// login attempt it starts and completes at once, so the session starts the one way the
    /// database allows, from a completed sign-in.
    pub async fn start_console_verified(
        &self,
        user: UserId,
        context: &SignInContext<'_>,
    ) -> Result<ConsoleSession, SessionError> {
        use super::api_keys::{random_bytes, sha256};
        let now = self.clock.now();
        let (state, browser) = (sha256(&random_bytes::<32>()), sha256(&random_bytes::<32>()));
        identity::create_login_attempt(
            &self.pool,
            &identity::NewLoginAttempt {
                state_hash: &state,
                browser_hash: &browser,
                provider: context.provider,
                issuer: None,
                pkce_verifier: "-",
                nonce: "-",
                redirect_to: None,
                now,
                expires_at: now + Duration::minutes(1),
            },
        )
        .await?;
        let completion = new_opaque("tnty_signin_").plaintext;
        let hash = sha256(completion.as_bytes());
        let (_, completion) =
            identity::take_login_attempt(&self.pool, &state, &browser, completion, &hash, now)
                .await?
                .ok_or(SessionError::InvalidToken)?;
        self.start_console(user, completion, context).await
    }

    /// The idle timeout a console cookie's use extends its session to, from now.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Exchanges a refresh token for a new pair, spending it.
    pub async fn refresh(&self, presented: &str) -> Result<TokenPair, SessionError> {
        let result = self.try_refresh(presented).await;
        if let Err(e) = &result {
            let reason = match e {
                SessionError::InvalidToken => "invalid_token",
                SessionError::Reused => "reused",
                SessionError::Expired => "expired",
                SessionError::Revoked => "revoked",
                SessionError::Database(_) | SessionError::Signing(_) => "error",
            };
            emit(SecurityEvent::RefreshFailed { reason });
        }
        result
    }

    async fn try_refresh(&self, presented: &str) -> Result<TokenPair, SessionError> {
        let (id, hash) = parse_refresh_token(presented).ok_or(SessionError::InvalidToken)?;
        let token = identity::PresentedToken { id, hash: &hash };
        // Only the real secret finds anything: a guessed id cannot revoke a session.
        let state =
            identity::refresh_token_state(&self.pool, id, &hash).await?.ok_or(SessionError::InvalidToken)?;
        if state.revoked {
            return Err(SessionError::Revoked);
        }
        let now = self.clock.now();
        if state.spent {
            self.end_for_reuse(token, state.user_id, state.session_id, now).await?;
            return Err(SessionError::Reused);
        }
        if now >= state.absolute_expires_at || now >= state.idle_expires_at {
            let event =
                PlatformEvent::session(state.user_id, state.session_id, "auth.session_expired", "denied");
            identity::end_session(&self.pool, token, "expired", now, &event).await?;
            emit(SecurityEvent::SessionExpired { user: state.user_id, session: state.session_id });
            return Err(SessionError::Expired);
        }
        let next = new_refresh_token();
        let idle = (now + self.idle_timeout).min(state.absolute_expires_at);
        let event = PlatformEvent::session(state.user_id, state.session_id, "auth.refresh", "allowed");
        if !identity::rotate_refresh_token(&self.pool, token, next.id, &next.hash, now, idle, &event).await? {
            // Spent between our read and our write: a concurrent use of the same token.
            self.end_for_reuse(token, state.user_id, state.session_id, now).await?;
            return Err(SessionError::Reused);
        }
        emit(SecurityEvent::SessionRefreshed { user: state.user_id, session: state.session_id });
        self.pair(state.user_id, state.session_id, now, state.absolute_expires_at, next.plaintext)
    }

    async fn end_for_reuse(
        &self,
        token: identity::PresentedToken<'_>,
        user: UserId,
        session: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), SessionError> {
        let event = PlatformEvent::session(user, session, "auth.refresh_token_reuse", "denied");
        identity::end_session(&self.pool, token, "refresh_token_reuse", now, &event).await?;
        emit(SecurityEvent::RefreshTokenReuse { user, session });
        Ok(())
    }

    fn pair(
        &self,
        user: UserId,
        session: Uuid,
        now: DateTime<Utc>,
        absolute: DateTime<Utc>,
        refresh_token: String,
    ) -> Result<TokenPair, SessionError> {
        // An access token never outlives its session.
        let expires = (now + self.access_ttl).min(absolute);
        let access_token = self.keys.current.mint_session_token(
            &self.issuer,
            &self.audience,
            user,
            session,
            now.timestamp(),
            expires.timestamp(),
        )?;
        Ok(TokenPair {
            access_token,
            expires_in: (expires - now).num_seconds(),
            refresh_token,
            session_id: session,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_round_trip_and_malformed_ones_are_refused() {
        let token = new_refresh_token();
        assert_eq!(token.plaintext.len(), LEN);
        let (id, hash) = parse_refresh_token(&token.plaintext).unwrap();
        assert_eq!(id, token.id);
        assert_eq!(hash, token.hash);
        assert!(parse_refresh_token(&token.plaintext[..LEN - 2]).is_none());
        assert!(parse_refresh_token(&token.plaintext.replace("tnty_rt_", "tnty_xx_")).is_none());
        assert!(parse_refresh_token(&format!("{}G", &token.plaintext[..LEN - 1])).is_none());
    }
}
