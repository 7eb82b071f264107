//! Authentication: who is calling. A bearer credential is either a JWT (ours, for a session or a
//! development token, or a trusted issuer's) or an organization API key; a browser of the web
//! console presents its session's cookie instead (`sessions::looks_like_console_cookie`). Organization
//! memberships and the validity of sessions and keys are never taken from a cache: every
//! transaction asks the database (`db::tenant`), so removal and revocation apply at once.

pub mod api_keys;
pub mod clock;
pub mod events;
pub mod keys;
pub mod sessions;
pub mod signin;
pub mod validator;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::db::Db;
use uuid::Uuid;

pub use validator::{TokenError, TokenValidator, parse_asymmetric_algorithm};

use crate::db::{Actor, DbError, identity};
use crate::domain::{OrgId, UserId};
use events::{SecurityEvent, emit};

/// A person, signed in through a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPrincipal {
    pub user_id: UserId,
    /// Set for our own session tokens; the database checks the session on every request.
    pub session_id: Option<Uuid>,
    pub issuer: String,
    pub subject: String,
}

/// A service, through an organization API key: confined to that organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyPrincipal {
    pub key_id: Uuid,
    pub org_id: OrgId,
    /// SHA-256 of the presented secret: recording the key's use needs it (never the secret).
    pub secret_hash: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User(UserPrincipal),
    ApiKey(ApiKeyPrincipal),
}

impl Principal {
    /// The database context this principal acts under.
    pub fn actor(&self) -> Actor {
        match self {
            Principal::User(u) => Actor { user: Some(u.user_id), session: u.session_id, ..Actor::default() },
            Principal::ApiKey(k) => Actor { api_key: Some(k.key_id), ..Actor::default() },
        }
    }

    pub fn as_user(&self) -> Option<&UserPrincipal> {
        match self {
            Principal::User(u) => Some(u),
            Principal::ApiKey(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token refused: {0}")]
    Token(#[from] TokenError),
    #[error("API key refused: {0}")]
    ApiKey(&'static str),
    #[error("database: {0}")]
    Database(#[from] DbError),
}

/// Validates bearer credentials and maps them to principals, caching verified ones: signature
/// checks are the most expensive thing a request does. The cache is keyed by the exact string;
/// a token hit re-checks expiry, and whether a session or key is still active is checked by the
/// database in every transaction, so the cache can never extend a revoked credential.
pub struct Authenticator {
    validator: TokenValidator,
    cache: moka::sync::Cache<Arc<str>, Arc<(Principal, Option<i64>)>>,
    /// API keys whose `last_used_at` was written within the last minute.
    recently_touched: moka::sync::Cache<Uuid, ()>,
    api_key_lookups: AtomicU64,
    /// How long a console session lives without use (each lookup extends it).
    console_idle: chrono::Duration,
    pool: Db,
}

/// How long a verified console cookie is served from the cache before it is looked up (and
/// its idle timeout extended) again. Revocation does not wait for it: every transaction
/// checks the session.
const CONSOLE_RECHECK_SECS: i64 = 60;

impl Authenticator {
    pub fn new(
        validator: TokenValidator,
        cache_capacity: u64,
        console_idle: chrono::Duration,
        pool: Db,
    ) -> Authenticator {
        Authenticator {
            validator,
            cache: moka::sync::Cache::builder()
                .max_capacity(cache_capacity)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            recently_touched: moka::sync::Cache::builder()
                .max_capacity(cache_capacity)
                .time_to_live(Duration::from_secs(60))
                .build(),
            api_key_lookups: AtomicU64::new(0),
            console_idle,
            pool,
        }
    }

    /// Whether `credential` was verified here before (and is still remembered): serving it again
    /// costs no signature check and no lookup.
    pub fn is_verified(&self, credential: &str) -> bool {
        self.cache.contains_key(credential)
    }

    /// How many API keys were looked up in the database (malformed ones never are).
    pub fn api_key_lookups(&self) -> u64 {
        self.api_key_lookups.load(Ordering::Relaxed)
    }

    pub async fn authenticate(&self, credential: &str) -> Result<Principal, AuthError> {
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(self.validator.leeway()).unwrap_or(0);
        if let Some(hit) = self.cache.get(credential) {
            match hit.1 {
                Some(exp) if exp + leeway <= now => {
                    self.cache.invalidate(credential);
                    // A console cookie is only due for its next lookup.
                    if !sessions::looks_like_console_cookie(credential) {
                        return Err(TokenError::Invalid("expired".into()).into());
                    }
                }
                _ => {
                    self.note_use(&hit.0);
                    return Ok(hit.0.clone());
                }
            }
        }
        // The console's prefix first: API keys' `tnty_` is a prefix of it.
        let (principal, exp) = if sessions::looks_like_console_cookie(credential) {
            self.authenticate_console(credential).await?
        } else if api_keys::looks_like_api_key(credential) {
            (self.authenticate_api_key(credential).await?, None)
        } else {
            let (principal, exp) = self.authenticate_token(credential).await?;
            (principal, Some(exp))
        };
        self.note_use(&principal);
        self.cache.insert(Arc::from(credential), Arc::new((principal.clone(), exp)));
        Ok(principal)
    }

    async fn authenticate_token(&self, token: &str) -> Result<(Principal, i64), AuthError> {
        let claims = self.validator.validate(token).await?;
        // Our own session tokens name the user directly; anything else maps issuer + subject.
        let user_id = match claims.sid {
            Some(_) if claims.iss == self.validator.local_issuer() => {
                UserId(Uuid::try_parse(&claims.sub).map_err(|_| TokenError::Invalid("bad sub".into()))?)
            }
            _ => {
                let user = identity::provision_user(
                    &self.pool,
                    &claims.iss,
                    &claims.sub,
                    claims.email.as_deref(),
                    claims.name.as_deref(),
                )
                .await?;
                // A trusted issuer's role mappings follow its tokens (applied once per token).
                if let Some(issuer) = self.validator.trusted_issuer(&claims.iss)
                    && !issuer.role_mappings.is_empty()
                {
                    let all_claims = serde_json::Value::Object(claims.other.clone());
                    let grants = signin::mapped_memberships(&issuer.role_mappings, &all_claims);
                    identity::sync_provider_memberships(&self.pool, user, &issuer.grant_source(), &grants)
                        .await?;
                }
                user
            }
        };
        let principal = UserPrincipal {
            user_id,
            session_id: claims.sid.filter(|_| claims.iss == self.validator.local_issuer()),
            issuer: claims.iss,
            subject: claims.sub,
        };
        Ok((Principal::User(principal), claims.exp))
    }

    async fn authenticate_console(&self, cookie: &str) -> Result<(Principal, Option<i64>), AuthError> {
        // Malformed: refused before any database work.
        let (session, hash) = sessions::parse_console_cookie(cookie)
            .ok_or_else(|| TokenError::Invalid("malformed console cookie".into()))?;
        let now = chrono::Utc::now();
        let (user_id, absolute) =
            identity::use_console_session(&self.pool, session, &hash, now, now + self.console_idle)
                .await?
                .ok_or_else(|| TokenError::Invalid("unknown, revoked or expired console session".into()))?;
        let recheck = (now.timestamp() + CONSOLE_RECHECK_SECS).min(absolute.timestamp());
        let principal = UserPrincipal {
            user_id,
            session_id: Some(session),
            issuer: self.validator.local_issuer().to_owned(),
            subject: user_id.to_string(),
        };
        Ok((Principal::User(principal), Some(recheck)))
    }

    async fn authenticate_api_key(&self, credential: &str) -> Result<Principal, AuthError> {
        let refuse = |reason: &'static str| {
            emit(SecurityEvent::ApiKeyRefused { reason });
            AuthError::ApiKey(reason)
        };
        // Malformed or a bad checksum: refused before any database work.
        let presented = api_keys::parse(credential).ok_or_else(|| refuse("malformed"))?;
        self.api_key_lookups.fetch_add(1, Ordering::Relaxed);
        let stored = identity::find_api_key(&self.pool, presented.id, &presented.secret_hash).await?;
        let key = stored
            .into_iter()
            .find(|k| api_keys::hashes_equal(&k.secret_hash, &presented.secret_hash))
            .ok_or_else(|| refuse("unknown"))?;
        if !key.active {
            return Err(refuse("inactive"));
        }
        Ok(Principal::ApiKey(ApiKeyPrincipal {
            key_id: presented.id,
            org_id: key.org_id,
            secret_hash: presented.secret_hash,
        }))
    }

    /// Records an API key's use, at most once a minute, off the request's path.
    fn note_use(&self, principal: &Principal) {
        let Principal::ApiKey(key) = principal else { return };
        if self.recently_touched.contains_key(&key.key_id) {
            return;
        }
        self.recently_touched.insert(key.key_id, ());
        let pool = self.pool.clone();
        let (id, hash) = (key.key_id, key.secret_hash);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = identity::touch_api_key(&pool, id, &hash).await {
                    tracing::warn!(error = %e, "recording API key use failed");
                }
            });
        }
    }
}
