//! Bearer token validation. Every token is checked against an explicit algorithm allowlist for
//! its issuer, with `exp`, `iss`, `aud` and `sub` required and `nbf` checked; leeway is capped at
//! 30 s by configuration. Our own tokens are EdDSA with our key; a trusted issuer's keys come
//! from its JWKS, cached and refreshed when an unknown `kid` shows up (at most once per
//! `jwks_min_refresh_secs`). Failures say nothing about why to the caller.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::keys::SigningKeys;
use crate::config::{AuthSettings, TrustedIssuer};

/// Why a token was refused: for logs and metrics only, never for the response.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown issuer")]
    UnknownIssuer,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("missing kid")]
    MissingKid,
    #[error("unknown kid")]
    UnknownKid,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The claims we use from a verified token.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifiedClaims {
    pub iss: String,
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// The session of one of our own session tokens.
    #[serde(default)]
    pub sid: Option<uuid::Uuid>,
    /// Every other claim (for role mappings).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A verification key and the algorithm its JWK pins, if any.
type KeyEntry = Arc<(DecodingKey, Option<Algorithm>)>;

struct IssuerKeys {
    config: TrustedIssuer,
    algorithms: Vec<Algorithm>,
    audience: String,
    keys: std::sync::RwLock<HashMap<String, KeyEntry>>,
    /// Serializes refreshes and remembers when the last one started.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
}

pub struct TokenValidator {
    local: Arc<SigningKeys>,
    local_issuer: String,
    audience: String,
    leeway: u64,
    min_refresh: Duration,
    issuers: HashMap<String, IssuerKeys>,
    http: reqwest::Client,
}

pub use crate::config::parse_asymmetric_algorithm;

#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<serde_json::Value>,
}

/// Reads `iss` from an unverified token, only to pick the keys to verify it with.
fn peek_issuer(token: &str) -> Result<String, TokenError> {
    let payload = token.split('.').nth(1).ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: IssuerOnly = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    match claims.iss {
        Some(serde_json::Value::String(iss)) => Ok(iss),
        _ => Err(TokenError::Invalid("missing iss".into())),
    }
}

impl TokenValidator {
    pub fn new(settings: &AuthSettings, local: Arc<SigningKeys>) -> anyhow::Result<TokenValidator> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        let mut issuers = HashMap::new();
        for issuer in &settings.trusted_issuers {
            anyhow::ensure!(
                issuer.issuer != settings.issuer,
                "a trusted issuer cannot use our own issuer name {}",
                settings.issuer
            );
            let algorithms = issuer
                .algorithms
                .iter()
                .map(|a| {
                    parse_asymmetric_algorithm(a).ok_or_else(|| anyhow::anyhow!("algorithm {a} not allowed"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            issuers.insert(
                issuer.issuer.clone(),
                IssuerKeys {
                    audience: issuer.audience.clone().unwrap_or_else(|| settings.audience.clone()),
                    config: issuer.clone(),
                    algorithms,
                    keys: Default::default(),
                    last_refresh: Default::default(),
                },
            );
        }
        Ok(TokenValidator {
            local,
            local_issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway_secs.min(30),
            min_refresh: Duration::from_secs(settings.jwks_min_refresh_secs),
            issuers,
            http,
        })
    }

    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    pub fn local_issuer(&self) -> &str {
        &self.local_issuer
    }

    /// The configuration of a trusted external issuer.
    pub fn trusted_issuer(&self, issuer: &str) -> Option<&TrustedIssuer> {
        self.issuers.get(issuer).map(|i| &i.config)
    }

    pub async fn validate(&self, token: &str) -> Result<VerifiedClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let issuer = peek_issuer(token)?;
        let kid = header.kid.as_deref().ok_or(TokenError::MissingKid)?;
        let (key, audience) = if issuer == self.local_issuer {
            if header.alg != Algorithm::EdDSA {
                return Err(TokenError::AlgorithmNotAllowed);
            }
            let key = self.local.find(kid).ok_or(TokenError::UnknownKid)?;
            (Arc::new((key.decoding.clone(), Some(Algorithm::EdDSA))), self.audience.as_str())
        } else {
            let keys = self.issuers.get(&issuer).ok_or(TokenError::UnknownIssuer)?;
            if !keys.algorithms.contains(&header.alg) {
                return Err(TokenError::AlgorithmNotAllowed);
            }
            (self.external_key(keys, kid).await?, keys.audience.as_str())
        };
        let (decoding_key, key_alg) = &*key;
        if key_alg.is_some_and(|a| a != header.alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[issuer.as_str()]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let data = jsonwebtoken::decode::<VerifiedClaims>(token, decoding_key, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        if data.claims.sub.is_empty() || data.claims.sub.len() > 500 {
            return Err(TokenError::Invalid("bad sub".into()));
        }
        Ok(data.claims)
    }

    async fn external_key(&self, issuer: &IssuerKeys, kid: &str) -> Result<KeyEntry, TokenError> {
        if let Some(key) = issuer.keys.read().ok().and_then(|k| k.get(kid).cloned()) {
            return Ok(key);
        }
        {
            let mut last = issuer.last_refresh.lock().await;
            // Another request may have refreshed while we waited for the lock.
            if let Some(key) = issuer.keys.read().ok().and_then(|k| k.get(kid).cloned()) {
                return Ok(key);
            }
            let due = last.is_none_or(|t| t.elapsed() >= self.min_refresh);
            if due {
                *last = Some(Instant::now());
                match self.fetch_jwks(&issuer.config).await {
                    Ok(keys) => {
                        if let Ok(mut guard) = issuer.keys.write() {
                            *guard = keys;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %issuer.config.issuer, error = %e, "JWKS refresh failed")
                    }
                }
            }
        }
        issuer.keys.read().ok().and_then(|k| k.get(kid).cloned()).ok_or(TokenError::UnknownKid)
    }

    /// The issuer's `jwks_uri`, by OpenID discovery; the document must name the same issuer.
    async fn discover_jwks_url(&self, issuer: &str) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let doc: Discovery =
            crate::telemetry::send(self.http.get(url), "jwks").await?.error_for_status()?.json().await?;
        anyhow::ensure!(doc.issuer == issuer, "discovery names another issuer: {}", doc.issuer);
        Ok(doc.jwks_uri)
    }

    async fn fetch_jwks(&self, issuer: &TrustedIssuer) -> anyhow::Result<HashMap<String, KeyEntry>> {
        let url = match &issuer.jwks_url {
            Some(url) => url.clone(),
            None => self.discover_jwks_url(&issuer.issuer).await?,
        };
        let response = crate::telemetry::send(self.http.get(url), "jwks").await?.error_for_status()?;
        anyhow::ensure!(response.content_length().is_none_or(|n| n <= 1 << 20), "JWKS document too large");
        let body = response.bytes().await?;
        anyhow::ensure!(body.len() <= 1 << 20, "JWKS document too large");
        let set: JwkSet = serde_json::from_slice(&body)?;
        let mut keys = HashMap::new();
        for jwk in set.keys {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            if matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) {
                continue; // never accept a shared secret from a key set
            }
            let alg = jwk.common.key_algorithm.and_then(|a| parse_asymmetric_algorithm(&a.to_string()));
            if let Ok(key) = DecodingKey::from_jwk(&jwk) {
                keys.insert(kid, Arc::new((key, alg)));
            }
        }
        Ok(keys)
    }
}
