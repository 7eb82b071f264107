//! Authentication: token validation, our signing key, and the `Principal` a request acts as.
//! Organization memberships are never taken from a token: the database is asked on every
//! request (see `db::tenant`), so a removed member loses access on their next request.

pub mod keys;
pub mod validator;

use std::sync::Arc;

use deadpool_postgres::Pool;

pub use validator::{TokenError, TokenValidator, parse_asymmetric_algorithm};

use crate::domain::UserId;

/// Who is calling. Built from a verified token and the user row it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token refused: {0}")]
    Token(#[from] TokenError),
    #[error("user provisioning failed: {0}")]
    Database(#[from] crate::db::DbError),
}

/// Validates bearer tokens and maps them to users, caching verified tokens: signature checks
/// are the most expensive thing a request does. The cache is keyed by the exact token string and
/// each hit re-checks expiry, so a cached token never outlives its `exp`.
pub struct Authenticator {
    validator: TokenValidator,
    cache: moka::sync::Cache<Arc<str>, Arc<(Principal, i64)>>,
    pool: Pool,
}

impl Authenticator {
    pub fn new(validator: TokenValidator, cache_capacity: u64, pool: Pool) -> Authenticator {
        let cache = moka::sync::Cache::builder()
            .max_capacity(cache_capacity)
            .time_to_live(std::time::Duration::from_secs(3600))
            .build();
        Authenticator { validator, cache, pool }
    }

    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(self.validator.leeway()).unwrap_or(0);
        if let Some(hit) = self.cache.get(token) {
            if hit.1 + leeway > now {
                return Ok(hit.0.clone());
            }
            self.cache.invalidate(token);
            return Err(TokenError::Invalid("expired".into()).into());
        }
        let claims = self.validator.validate(token).await?;
        let user_id = crate::db::provision_user(
            &self.pool,
            &claims.iss,
            &claims.sub,
            claims.email.as_deref(),
            claims.name.as_deref(),
        )
        .await?;
        let principal = Principal { user_id, issuer: claims.iss, subject: claims.sub, email: claims.email };
        self.cache.insert(Arc::from(token), Arc::new((principal.clone(), claims.exp)));
        Ok(principal)
    }
}
