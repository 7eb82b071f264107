//! Sign-in through identity providers: the authorization-code flow with PKCE (S256), `state`
//! and `nonce` bound to a single-use, short-lived login attempt stored in the database.
//!
//! - OIDC providers (generic by issuer, and the Google, Keycloak, Azure AD / Entra, Auth0 and
//!   Okta presets) go through `openidconnect`: discovery, code exchange, and id_token validation
//!   (signature, `iss`, `aud`, `exp`, `nonce`). Nothing of that is written by hand here.
//! - The `iss` authorization-response parameter (RFC 9207) is checked against mix-up attacks,
//!   and required when the provider says it sends it.
//! - GitHub is plain OAuth 2.0 (`oauth2`); the identity is its numeric user id, emails only when
//!   GitHub marks them verified, teams on request for role mapping.
//! - Identities link by issuer + subject only. An email is stored only when verified and never
//!   links accounts.
//! - The HTTP client follows no redirects and has timeouts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::Db;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, LoginHint,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl, Scope, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api_keys::{random_bytes, sha256};
use super::clock::Clock;
use super::events::{SecurityEvent, emit};
use crate::config::{AuthSettings, ProviderKind, ProviderSettings, RoleMapping};
use crate::db::{DbError, identity};
use crate::domain::UserId;

const METADATA_TTL: Duration = Duration::from_secs(3600);

/// The cookie that binds a sign-in to the browser that started it (against login CSRF: a
/// callback URL of the attacker's own sign-in, fed to a victim, finds no attempt for them).
pub const BROWSER_COOKIE: &str = "tenantry_signin";

/// What a login attempt stores as its `redirect_to` when the web console started it (not a URL,
/// so no registered redirect target can be it).
pub const FOR_CONSOLE: &str = "console:";

/// The one provider-metadata field we need beyond the core set (RFC 9207).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct IssParameter {
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}
impl AdditionalProviderMetadata for IssParameter {}

type Metadata = ProviderMetadata<
    IssParameter,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("unknown provider")]
    UnknownProvider,
    #[error("redirect target not registered")]
    RedirectNotAllowed,
    /// Unknown, expired, replayed or another provider's `state`.
    #[error("invalid state")]
    InvalidState,
    /// The provider or its answer was refused (reason for logs and events only).
    #[error("sign-in refused: {0}")]
    Refused(&'static str),
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Database(#[from] DbError),
}

enum Flavor {
    Oidc {
        issuer: String,
        /// Azure's multi-tenant endpoints: the discovery issuer is a template and each id_token
        /// carries its tenant's issuer, checked against its `tid` claim.
        azure_multi_tenant: bool,
    },
    Github {
        web: String,
        api: String,
    },
}

struct Provider {
    settings: ProviderSettings,
    client_secret: Option<String>,
    flavor: Flavor,
    metadata: tokio::sync::Mutex<Option<(Instant, Arc<Metadata>)>>,
}

/// What the API lists about a provider.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProviderInfo {
    pub name: String,
    pub kind: String,
    pub display_name: String,
    /// Start here (a browser navigation): it redirects to the provider.
    pub login_url: String,
}

/// A completed sign-in: who, through what, and where to send the browser (if asked); with the
/// completion that starting the session consumes.
pub struct CompletedSignIn {
    pub user: UserId,
    pub provider: String,
    pub redirect_to: Option<String>,
    pub completion: identity::SignInCompletion,
}

/// A started sign-in: where to send the browser, and the value of the cookie that binds the
/// attempt to it (`BROWSER_COOKIE`).
pub struct StartedSignIn {
    pub url: String,
    pub browser_secret: String,
}

/// The query string a provider sends back to the callback.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackParams {
    /// The authorization code the identity provider issued.
    pub code: Option<String>,
    /// The state this server sent with the sign-in request (it binds the answer to the browser).
    pub state: Option<String>,
    /// RFC 9207: the issuer that sent this response.
    pub iss: Option<String>,
    /// The provider's error code, when the sign-in was refused or cancelled.
    pub error: Option<String>,
}

pub struct SignInProviders {
    providers: HashMap<String, Provider>,
    order: Vec<String>,
    allowed_redirects: Vec<String>,
    attempt_ttl: chrono::Duration,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

fn trim_slash(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

fn required<'a>(value: &'a Option<String>, what: &str, name: &str) -> anyhow::Result<&'a str> {
    value.as_deref().ok_or_else(|| anyhow::anyhow!("provider {name}: `{what}` is required for this kind"))
}

fn flavor_of(p: &ProviderSettings) -> anyhow::Result<Flavor> {
    let oidc = |issuer: String| Ok(Flavor::Oidc { issuer, azure_multi_tenant: false });
    match p.kind {
        ProviderKind::Oidc => oidc(required(&p.issuer, "issuer", &p.name)?.to_owned()),
        ProviderKind::Google => oidc("https://accounts.google.com".into()),
        ProviderKind::Keycloak => oidc(format!(
            "{}/realms/{}",
            trim_slash(required(&p.base_url, "base_url", &p.name)?),
            required(&p.realm, "realm", &p.name)?
        )),
        ProviderKind::Azure => {
            let tenant = required(&p.tenant, "tenant", &p.name)?;
            let multi = ["common", "organizations", "consumers"].contains(&tenant);
            Ok(Flavor::Oidc {
                issuer: format!("https://login.microsoftonline.com/{tenant}/v2.0"),
                azure_multi_tenant: multi,
            })
        }
        ProviderKind::Auth0 => oidc(format!("{}/", trim_slash(required(&p.base_url, "base_url", &p.name)?))),
        ProviderKind::Okta => match &p.issuer {
            Some(issuer) => oidc(issuer.clone()),
            None => {
                oidc(format!("{}/oauth2/default", trim_slash(required(&p.base_url, "base_url", &p.name)?)))
            }
        },
        ProviderKind::Github => Ok(Flavor::Github {
            web: trim_slash(p.base_url.as_deref().unwrap_or("https://github.com")),
            api: trim_slash(p.api_url.as_deref().unwrap_or("https://api.github.com")),
        }),
    }
}

/// Adapts our reqwest client (no redirects, timeouts) to the `oauth2`/`openidconnect` HTTP trait.
async fn send(
    client: reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, crate::providers::ReadError> {
    let (parts, body) = request.into_parts();
    let request = client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body);
    let response = crate::telemetry::send(request, "identity_provider").await?;
    let mut builder = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let bytes = crate::providers::read_bounded(response, MAX_PROVIDER_RESPONSE).await?;
    Ok(builder.body(bytes).unwrap_or_default())
}

/// The most an identity provider's answer (discovery, keys, tokens, user info) may hold.
const MAX_PROVIDER_RESPONSE: usize = 1 << 20;

/// Reads a dotted claim path (`realm_access.roles`) and tells whether it holds `value`.
fn claim_holds(claims: &Value, path: &str, value: &str) -> bool {
    let mut node = claims;
    for part in path.split('.') {
        match node.get(part) {
            Some(next) => node = next,
            None => return false,
        }
    }
    match node {
        Value::String(s) => s == value,
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(value)),
        _ => false,
    }
}

/// The memberships the rules grant for these claims: one role per organization, the highest. A
/// rule scoped to an identity-provider tenant (`tenant`, Azure's `tid`) applies only to tokens of
/// that tenant: on a multi-tenant endpoint, any tenant's admin controls their own users' claims.
pub fn mapped_memberships(rules: &[RoleMapping], claims: &Value) -> Vec<(uuid::Uuid, crate::domain::Role)> {
    use crate::domain::Role;
    let tenant = claims.get("tid").and_then(Value::as_str);
    let mut best: HashMap<uuid::Uuid, Role> = HashMap::new();
    let applies = |r: &&RoleMapping| {
        r.tenant.as_deref().is_none_or(|t| Some(t) == tenant) && claim_holds(claims, &r.claim, &r.value)
    };
    for rule in rules.iter().filter(applies) {
        let entry = best.entry(rule.organization_id).or_insert(rule.role);
        if rule.role.rank() > entry.rank() {
            *entry = rule.role;
        }
    }
    let mut out: Vec<_> = best.into_iter().collect();
    out.sort_by_key(|(org, _)| *org);
    out
}

fn payload_of(jwt: &str) -> Value {
    jwt.split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

impl SignInProviders {
    pub fn new(settings: &AuthSettings, clock: Arc<dyn Clock>) -> anyhow::Result<SignInProviders> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .user_agent("tenantry")
            .build()?;
        let mut providers = HashMap::new();
        let mut order = Vec::new();
        for p in &settings.providers {
            let client_secret = match (&p.client_secret, &p.client_secret_file) {
                (_, Some(path)) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("provider {}: reading client_secret_file: {e}", p.name))?
                        .trim()
                        .to_owned(),
                ),
                (Some(secret), None) => Some(secrecy::ExposeSecret::expose_secret(secret).to_owned()),
                (None, None) => None,
            };
            RedirectUrl::new(p.redirect_uri.clone())
                .map_err(|_| anyhow::anyhow!("provider {}: invalid redirect_uri", p.name))?;
            order.push(p.name.clone());
            providers.insert(
                p.name.clone(),
                Provider {
                    flavor: flavor_of(p)?,
                    settings: p.clone(),
                    client_secret,
                    metadata: Default::default(),
                },
            );
        }
        Ok(SignInProviders {
            providers,
            order,
            allowed_redirects: settings.allowed_redirects.clone(),
            attempt_ttl: chrono::Duration::seconds(
                i64::try_from(settings.login_attempt_ttl_secs).unwrap_or(600),
            ),
            http,
            clock,
        })
    }

    pub fn list(&self) -> Vec<ProviderInfo> {
        self.order
            .iter()
            .filter_map(|name| self.providers.get(name))
            .map(|p| ProviderInfo {
                name: p.settings.name.clone(),
                kind: serde_json::to_value(p.settings.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                display_name: p.settings.display_name.clone().unwrap_or_else(|| p.settings.name.clone()),
                login_url: format!("/api/v1/auth/{}/login", p.settings.name),
            })
            .collect()
    }

    fn provider(&self, name: &str) -> Result<&Provider, SignInError> {
        self.providers.get(name).ok_or(SignInError::UnknownProvider)
    }

    /// Discovery, cached for an hour (keys rotate; a failed fetch is retried on the next sign-in).
    async fn metadata(&self, provider: &Provider) -> Result<Arc<Metadata>, SignInError> {
        let Flavor::Oidc { issuer, azure_multi_tenant } = &provider.flavor else {
            return Err(SignInError::Refused("not an OIDC provider"));
        };
        let mut cached = provider.metadata.lock().await;
        if let Some((at, md)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(md.clone());
        }
        let http = |req| send(self.http.clone(), req);
        let issuer_url =
            IssuerUrl::new(issuer.clone()).map_err(|_| SignInError::Unavailable("bad issuer".into()))?;
        let md = if *azure_multi_tenant {
            // The document's issuer is a `{tenantid}` template, so the strict equality check of
            // `discover_async` cannot pass; fetch it and its keys directly instead.
            let url = format!("{issuer}/.well-known/openid-configuration");
            let doc: Metadata = crate::telemetry::send(self.http.get(url), "identity_provider")
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| SignInError::Unavailable(e.to_string()))?
                .json()
                .await
                .map_err(|e| SignInError::Unavailable(e.to_string()))?;
            let jwks = openidconnect::JsonWebKeySet::fetch_async(doc.jwks_uri(), &http)
                .await
                .map_err(|e| SignInError::Unavailable(e.to_string()))?;
            doc.set_jwks(jwks)
        } else {
            Metadata::discover_async(issuer_url, &http)
                .await
                // Debug keeps the transport cause (discovery carries no secrets).
                .map_err(|e| SignInError::Unavailable(format!("{e:?}")))?
        };
        let md = Arc::new(md);
        *cached = Some((Instant::now(), md.clone()));
        Ok(md)
    }

    /// Starts a sign-in: stores a login attempt bound to the browser, and returns the provider
    /// URL to redirect to with the browser's cookie value.
    pub async fn login(
        &self,
        pool: &Db,
        name: &str,
        redirect_to: Option<&str>,
        login_hint: Option<&str>,
    ) -> Result<StartedSignIn, SignInError> {
        self.provider(name)?;
        if let Some(target) = redirect_to
            && (target == FOR_CONSOLE || !self.allowed_redirects.iter().any(|allowed| allowed == target))
        {
            return Err(SignInError::RedirectNotAllowed);
        }
        self.start(pool, name, redirect_to, login_hint).await
    }

    /// Starts a sign-in for the web console: its callback starts a console session (a cookie)
    /// instead of handing out tokens.
    pub async fn login_for_console(
        &self,
        pool: &Db,
        name: &str,
        login_hint: Option<&str>,
    ) -> Result<StartedSignIn, SignInError> {
        self.start(pool, name, Some(FOR_CONSOLE), login_hint).await
    }

    async fn start(
        &self,
        pool: &Db,
        name: &str,
        redirect_to: Option<&str>,
        login_hint: Option<&str>,
    ) -> Result<StartedSignIn, SignInError> {
        let provider = self.provider(name)?;
        let state = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let nonce = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let redirect = RedirectUrl::new(provider.settings.redirect_uri.clone())
            .map_err(|_| SignInError::Refused("bad redirect_uri"))?;
        let url = match &provider.flavor {
            Flavor::Oidc { .. } => {
                let md = self.metadata(provider).await?;
                let client = CoreClient::from_provider_metadata(
                    (*md).clone(),
                    ClientId::new(provider.settings.client_id.clone()),
                    provider.client_secret.clone().map(ClientSecret::new),
                )
                .set_redirect_uri(redirect);
                let (state_for_url, nonce_for_url) = (state.clone(), nonce.clone());
                let mut request = client
                    .authorize_url(
                        CoreAuthenticationFlow::AuthorizationCode,
                        move || CsrfToken::new(state_for_url.clone()),
                        move || Nonce::new(nonce_for_url.clone()),
                    )
                    .add_scope(Scope::new("email".into()))
                    .add_scope(Scope::new("profile".into()))
                    .add_scopes(provider.settings.scopes.iter().cloned().map(Scope::new))
                    .set_pkce_challenge(challenge);
                if let Some(hint) = login_hint {
                    request = request.set_login_hint(LoginHint::new(hint.to_owned()));
                }
                request.url().0.to_string()
            }
            Flavor::Github { web, .. } => {
                let mut url = url::Url::parse(&format!("{web}/login/oauth/authorize"))
                    .map_err(|_| SignInError::Refused("bad base_url"))?;
                let mut scopes = vec!["read:user".to_owned(), "user:email".to_owned()];
                if provider.settings.role_mappings.iter().any(|m| m.claim == "teams") {
                    scopes.push("read:org".into());
                }
                scopes.extend(provider.settings.scopes.iter().cloned());
                url.query_pairs_mut()
                    .append_pair("client_id", &provider.settings.client_id)
                    .append_pair("redirect_uri", redirect.as_str())
                    .append_pair("scope", &scopes.join(" "))
                    .append_pair("state", &state)
                    .append_pair("code_challenge", challenge.as_str())
                    .append_pair("code_challenge_method", "S256")
                    .append_pair("allow_signup", "false");
                if let Some(hint) = login_hint {
                    url.query_pairs_mut().append_pair("login", hint);
                }
                url.to_string()
            }
        };
        let now = self.clock.now();
        let browser_secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let issuer = match &provider.flavor {
            Flavor::Oidc { issuer, .. } => issuer.as_str(),
            Flavor::Github { web, .. } => web.as_str(),
        };
        identity::create_login_attempt(
            pool,
            &identity::NewLoginAttempt {
                state_hash: &sha256(state.as_bytes()),
                browser_hash: &sha256(browser_secret.as_bytes()),
                provider: name,
                issuer: Some(issuer),
                pkce_verifier: verifier.secret(),
                nonce: &nonce,
                redirect_to,
                now,
                expires_at: now + self.attempt_ttl,
            },
        )
        .await?;
        Ok(StartedSignIn { url, browser_secret })
    }

    /// Completes a sign-in from the provider's redirect: checks `state` (single use), `iss`,
    /// exchanges the code with the PKCE verifier, validates the identity, applies role mappings.
    pub async fn callback(
        &self,
        pool: &Db,
        name: &str,
        params: &CallbackParams,
        browser_secret: Option<&str>,
    ) -> Result<CompletedSignIn, SignInError> {
        let result = self.try_callback(pool, name, params, browser_secret).await;
        if let Err(e) = &result {
            let reason = match e {
                SignInError::InvalidState => "invalid_state",
                SignInError::Refused(reason) => reason,
                SignInError::Unavailable(_) => "provider_unavailable",
                SignInError::UnknownProvider => "unknown_provider",
                SignInError::RedirectNotAllowed => "redirect_not_allowed",
                SignInError::Database(_) => "database",
            };
            emit(SecurityEvent::SignInFailed { provider: name, reason });
            let event = identity::PlatformEvent {
                actor_type: "system",
                actor_id: None,
                action: "auth.sign_in_failed",
                target_type: "provider",
                target_id: Some(name.to_owned()),
                outcome: "failed",
                ip: None,
                user_agent: None,
                details: serde_json::json!({ "reason": reason }),
            };
            if let Err(e) = identity::record_event_alone(pool, &event).await {
                tracing::error!(error = %e, "recording a failed sign-in failed");
            }
        }
        result
    }

    async fn try_callback(
        &self,
        pool: &Db,
        name: &str,
        params: &CallbackParams,
        browser_secret: Option<&str>,
    ) -> Result<CompletedSignIn, SignInError> {
        let provider = self.provider(name)?;
        let state = params.state.as_deref().filter(|s| s.len() <= 100).ok_or(SignInError::InvalidState)?;
        // Only from the browser that started it (its cookie), and taken whatever happens next:
        // a state works once.
        let browser = browser_secret.filter(|b| b.len() <= 100).ok_or(SignInError::InvalidState)?;
        let completion = crate::auth::api_keys::new_opaque("tnty_signin_").plaintext;
        let completion_hash = sha256(completion.as_bytes());
        let (attempt, completion) = identity::take_login_attempt(
            pool,
            &sha256(state.as_bytes()),
            &sha256(browser.as_bytes()),
            completion,
            &completion_hash,
            self.clock.now(),
        )
        .await?
        .ok_or(SignInError::InvalidState)?;
        if attempt.provider != name {
            return Err(SignInError::InvalidState);
        }
        if params.error.is_some() {
            return Err(SignInError::Refused("provider_returned_error"));
        }
        let code = params.code.clone().ok_or(SignInError::Refused("missing_code"))?;
        let (user, claims) = match &provider.flavor {
            Flavor::Oidc { azure_multi_tenant, .. } => {
                self.oidc_identity(pool, provider, *azure_multi_tenant, params, code, &attempt).await?
            }
            Flavor::Github { web, api } => {
                self.github_identity(pool, provider, web, api, code, &attempt).await?
            }
        };
        let grants = mapped_memberships(&provider.settings.role_mappings, &claims);
        if !provider.settings.role_mappings.is_empty() {
            identity::sync_provider_memberships(pool, user, name, &grants).await?;
        }
        Ok(CompletedSignIn { user, provider: name.to_owned(), redirect_to: attempt.redirect_to, completion })
    }

    async fn oidc_identity(
        &self,
        pool: &Db,
        provider: &Provider,
        azure_multi_tenant: bool,
        params: &CallbackParams,
        code: String,
        attempt: &identity::LoginAttempt,
    ) -> Result<(UserId, Value), SignInError> {
        let md = self.metadata(provider).await?;
        // RFC 9207: the response names its issuer; a different one is a mix-up attack.
        match &params.iss {
            Some(iss) if !azure_multi_tenant && iss != md.issuer().as_str() => {
                return Err(SignInError::Refused("issuer_mismatch"));
            }
            None if md.additional_metadata().authorization_response_iss_parameter_supported => {
                return Err(SignInError::Refused("missing_iss"));
            }
            _ => {}
        }
        let redirect = RedirectUrl::new(provider.settings.redirect_uri.clone())
            .map_err(|_| SignInError::Refused("bad redirect_uri"))?;
        let client = CoreClient::from_provider_metadata(
            (*md).clone(),
            ClientId::new(provider.settings.client_id.clone()),
            provider.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        let http = |req| send(self.http.clone(), req);
        let token = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|_| SignInError::Refused("no_token_endpoint"))?
            .set_pkce_verifier(PkceCodeVerifier::new(attempt.pkce_verifier.clone()))
            .request_async(&http)
            .await
            .map_err(|e| {
                tracing::info!(provider = %provider.settings.name, error = %e, "code exchange refused");
                SignInError::Refused("code_exchange_failed")
            })?;
        let id_token = token.id_token().ok_or(SignInError::Refused("no_id_token"))?;
        let verifier = client.id_token_verifier().require_issuer_match(!azure_multi_tenant);
        let claims = id_token.claims(&verifier, &Nonce::new(attempt.nonce.clone())).map_err(|e| {
            tracing::info!(provider = %provider.settings.name, error = %e, "id_token refused");
            SignInError::Refused("invalid_id_token")
        })?;
        let raw = payload_of(&id_token.to_string());
        let issuer = claims.issuer().as_str().to_owned();
        if azure_multi_tenant {
            // Each Entra tenant signs as https://login.microsoftonline.com/{tid}/v2.0.
            let tid = raw.get("tid").and_then(Value::as_str).unwrap_or_default();
            if tid.is_empty() || issuer != format!("https://login.microsoftonline.com/{tid}/v2.0") {
                return Err(SignInError::Refused("issuer_mismatch"));
            }
        }
        let email =
            claims.email().filter(|_| claims.email_verified() == Some(true)).map(|e| e.as_str().to_owned());
        let display_name = claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_owned());
        let user = identity::provision_user(
            pool,
            &issuer,
            claims.subject().as_str(),
            email.as_deref(),
            display_name.as_deref(),
        )
        .await?;
        Ok((user, raw))
    }

    async fn github_identity(
        &self,
        pool: &Db,
        provider: &Provider,
        web: &str,
        api: &str,
        code: String,
        attempt: &identity::LoginAttempt,
    ) -> Result<(UserId, Value), SignInError> {
        let bad = |_| SignInError::Refused("bad GitHub URL");
        let client =
            oauth2::basic::BasicClient::new(oauth2::ClientId::new(provider.settings.client_id.clone()))
                .set_auth_uri(oauth2::AuthUrl::new(format!("{web}/login/oauth/authorize")).map_err(bad)?)
                .set_token_uri(oauth2::TokenUrl::new(format!("{web}/login/oauth/access_token")).map_err(bad)?)
                .set_redirect_uri(
                    oauth2::RedirectUrl::new(provider.settings.redirect_uri.clone()).map_err(bad)?,
                );
        let client = match &provider.client_secret {
            Some(secret) => client.set_client_secret(oauth2::ClientSecret::new(secret.clone())),
            None => client,
        };
        let http = |req| send(self.http.clone(), req);
        let token = client
            .exchange_code(oauth2::AuthorizationCode::new(code))
            .set_pkce_verifier(oauth2::PkceCodeVerifier::new(attempt.pkce_verifier.clone()))
            .request_async(&http)
            .await
            .map_err(|e| {
                tracing::info!(provider = %provider.settings.name, error = %e, "GitHub code exchange refused");
                SignInError::Refused("code_exchange_failed")
            })?;
        let bearer = oauth2::TokenResponse::access_token(&token).secret().clone();
        let get = |path: &'static str| {
            let request = self
                .http
                .get(format!("{api}{path}"))
                .bearer_auth(&bearer)
                .header("Accept", "application/vnd.github+json");
            async move {
                crate::telemetry::send(request, "identity_provider")
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| SignInError::Unavailable(e.to_string()))
                    .map(|response| crate::providers::read_bounded(response, MAX_PROVIDER_RESPONSE))?
                    .await
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                    .ok_or_else(|| SignInError::Unavailable("unreadable GitHub answer".into()))
            }
        };
        let me = get("/user").await?;
        let id = me.get("id").and_then(Value::as_u64).ok_or(SignInError::Refused("no GitHub user id"))?;
        let emails = get("/user/emails").await.unwrap_or(Value::Null);
        let email = emails.as_array().and_then(|list| {
            list.iter()
                .find(|e| e["primary"] == true && e["verified"] == true)
                .and_then(|e| e["email"].as_str().map(str::to_owned))
        });
        let mut claims = serde_json::json!({ "login": me.get("login"), "teams": [] });
        if provider.settings.role_mappings.iter().any(|m| m.claim == "teams") {
            let teams = get("/user/teams").await?;
            let names: Vec<String> = teams
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|t| {
                            Some(format!("{}/{}", t["organization"]["login"].as_str()?, t["slug"].as_str()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            claims["teams"] = serde_json::json!(names);
        }
        let name = me.get("name").and_then(Value::as_str);
        // The issuer is the GitHub instance: user 42 of a GitHub Enterprise server is not user
        // 42 of github.com.
        let user = identity::provision_user(pool, web, &id.to_string(), email.as_deref(), name).await?;
        Ok((user, claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    #[test]
    fn role_mappings_pick_the_highest_role_per_organization() {
        let org = uuid::Uuid::new_v4();
        let other = uuid::Uuid::new_v4();
        let rule = |claim: &str, value: &str, organization_id, role| RoleMapping {
            claim: claim.into(),
            value: value.into(),
            organization_id,
            role,
            tenant: None,
        };
        let rules = vec![
            rule("groups", "staff", org, Role::Viewer),
            rule("resource_access.tenantry.roles", "admin", org, Role::Admin),
            rule("roles", "Auditor", other, Role::Viewer),
            rule("groups", "nobody", other, Role::Owner),
        ];
        let claims = serde_json::json!({
            "groups": ["staff"],
            "resource_access": {"tenantry": {"roles": ["admin"]}},
            "roles": "Auditor"
        });
        let mut expected = vec![(org, Role::Admin), (other, Role::Viewer)];
        expected.sort_by_key(|(o, _)| *o);
        assert_eq!(mapped_memberships(&rules, &claims), expected);
        assert!(mapped_memberships(&rules, &serde_json::json!({})).is_empty());
    }

    #[test]
    fn a_tenant_scoped_mapping_ignores_other_tenants_tokens() {
        let org = uuid::Uuid::new_v4();
        let rules = vec![RoleMapping {
            claim: "roles".into(),
            value: "Tenantry.Admin".into(),
            organization_id: org,
            role: Role::Admin,
            tenant: Some("11111111-1111-1111-1111-111111111111".into()),
        }];
        let ours =
            serde_json::json!({"tid": "11111111-1111-1111-1111-111111111111", "roles": ["Tenantry.Admin"]});
        let theirs =
            serde_json::json!({"tid": "22222222-2222-2222-2222-222222222222", "roles": ["Tenantry.Admin"]});
        assert_eq!(mapped_memberships(&rules, &ours), vec![(org, Role::Admin)]);
        assert!(mapped_memberships(&rules, &theirs).is_empty(), "another tenant's admin gains nothing");
        assert!(mapped_memberships(&rules, &serde_json::json!({"roles": ["Tenantry.Admin"]})).is_empty());
    }

    #[test]
    fn presets_derive_their_issuers() {
        let settings = |kind, f: &dyn Fn(&mut ProviderSettings)| {
            let mut p = ProviderSettings::new("p", kind, "c", "http://localhost/cb");
            f(&mut p);
            p
        };
        let issuer = |p: &ProviderSettings| match flavor_of(p).unwrap() {
            Flavor::Oidc { issuer, azure_multi_tenant } => (issuer, azure_multi_tenant),
            Flavor::Github { .. } => panic!("not OIDC"),
        };
        assert_eq!(issuer(&settings(ProviderKind::Google, &|_| {})).0, "https://accounts.google.com");
        let kc = settings(ProviderKind::Keycloak, &|p| {
            p.base_url = Some("https://sso.example.com/".into());
            p.realm = Some("acme".into());
        });
        assert_eq!(issuer(&kc).0, "https://sso.example.com/realms/acme");
        let azure = settings(ProviderKind::Azure, &|p| p.tenant = Some("organizations".into()));
        assert_eq!(issuer(&azure), ("https://login.microsoftonline.com/organizations/v2.0".into(), true));
        let auth0 = settings(ProviderKind::Auth0, &|p| p.base_url = Some("https://acme.eu.auth0.com".into()));
        assert_eq!(issuer(&auth0).0, "https://acme.eu.auth0.com/");
        let okta = settings(ProviderKind::Okta, &|p| p.base_url = Some("https://acme.okta.com".into()));
        assert_eq!(issuer(&okta).0, "https://acme.okta.com/oauth2/default");
        assert!(
            flavor_of(&settings(ProviderKind::Keycloak, &|_| {})).is_err(),
            "keycloak needs base_url and realm"
        );
    }
}
