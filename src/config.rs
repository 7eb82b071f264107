//! Typed settings: defaults < `tenantry.toml` < `TENANTRY_*` environment variables (`__` nests,
//! e.g. `TENANTRY_AUTH__AUDIENCE`). Secrets are `SecretString`s and have `*_FILE` variants;
//! they are never printed, not even by `Debug`.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Development,
    Production,
}

/// What happens to a deleted organization's audit chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditRetention {
    /// Kept as it is (the default).
    Keep,
    /// Personal data removed, chain re-sealed.
    Anonymise,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `development` allows generated keys and `tenantry token`; `production` refuses both.
    pub environment: Environment,
    /// Address the HTTP server binds.
    pub listen: String,
    /// The region this instance serves; organizations homed elsewhere answer 421 here.
    pub region: crate::domain::Region,
    /// A deleted organization's audit chain: `keep` or `anonymise`.
    pub audit_on_organization_delete: AuditRetention,
    /// The app role's connection URL (NOSUPERUSER NOBYPASSRLS; never the owner).
    #[serde(serialize_with = "redacted")]
    pub database_url: Option<SecretString>,
    /// Owner/admin URL used by `migrate`, `check` and `seed` only; the server never uses it.
    #[serde(serialize_with = "redacted")]
    pub admin_database_url: Option<SecretString>,
    /// How long prepared statements live on the app role's connections: `connection` (the
    /// default: prepared once per connection) or `transaction`, for a pooler that hands each
    /// transaction a different server connection and does not carry prepared statements
    /// (PgBouncer before 1.21 in transaction pooling; see the README's "Scaling out").
    pub database_statement_cache: StatementCache,
    /// A transaction dropped mid-statement (a timeout, a client gone) cancels the statement
    /// before rolling back. PgBouncer 1.18 in transaction pooling can crash on cancel requests:
    /// turn this off there (the rollback then waits for the statement to end).
    pub database_cancel_on_drop: bool,
    /// TLS to PostgreSQL for every connection (app pool, LISTEN, admin, cancel requests), as
    /// libpq's `sslmode` / `sslrootcert` / `sslcert` / `sslkey`. Parameters in a URL override
    /// these for that URL.
    #[serde(default)]
    pub database_tls: DatabaseTls,
    /// A direct connection to PostgreSQL for LISTEN, which a transaction-pooling PgBouncer
    /// cannot carry. Defaults to `database_url`.
    #[serde(serialize_with = "redacted")]
    pub listen_database_url: Option<SecretString>,
    /// Maximum connections in the app pool.
    pub pool_size: usize,
    /// How long a request waits for a pooled connection before a 503.
    pub pool_timeout_ms: u64,
    /// HTTP worker threads (default: number of cores).
    pub workers: Option<usize>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take to produce its response (503 `timeout` after that; its
    /// transaction is rolled back). The app role's `statement_timeout` bounds single statements.
    pub request_timeout_secs: u64,
    pub log_format: LogFormat,
    /// How long an Idempotency-Key's first response is kept.
    pub idempotency_ttl_secs: u64,
    /// How often counted requests are written to `usage_counters`.
    pub usage_flush_secs: u64,
    /// The bearer token Prometheus scrapes `/metrics` with; without one there is no `/metrics`.
    #[serde(serialize_with = "redacted")]
    pub metrics_token: Option<SecretString>,
    #[serde(default)]
    pub rate_limits: RateLimitSettings,
    /// Browser origins allowed to call the API (exact, e.g. `https://app.example.com`).
    pub cors_allowed_origins: Vec<String>,
    /// Load balancers and proxies (addresses or CIDR ranges, e.g. `10.0.0.0/8`) whose
    /// `X-Forwarded-For` / `Forwarded` headers are believed. The client address (rate limits by
    /// address, the audit log's `ip`) is the nearest address in those headers that is not one of
    /// them; from anyone else the headers are ignored and the peer address is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve HTTPS (TLS 1.2+, HTTP/2) with this certificate chain and key (PEM files).
    pub tls: Option<TlsSettings>,
    pub auth: AuthSettings,
    #[serde(default)]
    pub worker: WorkerSettings,
    #[serde(default)]
    pub provider_keys: ProviderKeySettings,
    #[serde(default)]
    pub billing: BillingSettings,
    #[serde(default)]
    pub webhooks: WebhookSettings,
    /// Traces (OpenTelemetry over OTLP); off unless an endpoint is set here or in the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetrySettings,
}

/// Outbound webhooks: organizations' endpoints and their deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Endpoints an organization may have.
    pub max_endpoints_per_org: u32,
    /// Let endpoints be plain http on loopback and private addresses (tests only; refused in
    /// production).
    pub allow_private_addresses: bool,
    /// Deliveries one worker process attempts at once (0: this worker delivers none).
    pub dispatch_concurrency: usize,
    /// Attempts in flight to one endpoint, across all workers of the region: a slow endpoint
    /// holds at most this many dispatchers.
    pub max_in_flight_per_endpoint: u32,
    /// Attempts in flight for one organization, across all workers of the region.
    pub max_in_flight_per_org: u32,
    /// Longest an attempt may take, connecting and reading the answer included (1 to 60).
    pub attempt_timeout_secs: u64,
    /// An endpoint is disabled after this many failed attempts in a row...
    pub disable_after_failures: u32,
    /// ...that span at least this long (two days by default: a whole delivery's retries fail).
    pub disable_after_secs: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            max_endpoints_per_org: 20,
            allow_private_addresses: false,
            dispatch_concurrency: 16,
            max_in_flight_per_endpoint: 4,
            max_in_flight_per_org: 8,
            attempt_timeout_secs: 15,
            disable_after_failures: 10,
            disable_after_secs: 2 * 86_400,
        }
    }
}

/// libpq's `sslmode`: how a PostgreSQL connection uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS if the server offers it, else plaintext (libpq's default; refused in production).
    #[default]
    Prefer,
    /// TLS, the certificate unchecked (checked against `sslrootcert` when one is given).
    Require,
    /// TLS, the certificate signed by a trusted CA.
    VerifyCa,
    /// TLS, the certificate signed by a trusted CA and issued for the host connected to.
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// Whether a connection in this mode can end up in plaintext.
    pub fn allows_plaintext(self) -> bool {
        matches!(self, SslMode::Disable | SslMode::Prefer)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseTls {
    /// Default `prefer`, as libpq. Managed databases: `verify-full` with the provider's CA.
    pub sslmode: Option<SslMode>,
    /// PEM bundle of the CAs to trust (your provider's); `system` or unset: the system roots.
    pub sslrootcert: Option<PathBuf>,
    /// A client certificate chain (PEM), for servers that authenticate clients by certificate.
    pub sslcert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub sslkey: Option<PathBuf>,
    /// In `environment = "production"`, connections that may be plaintext (`disable`, `prefer`)
    /// are refused unless this is set (a database on the same host, a private link that encrypts).
    pub allow_plaintext: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementCache {
    #[default]
    Connection,
    Transaction,
}

/// Requests per minute (GCRA: the full minute's budget may arrive at once, then it refills).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Off only when something in front (a gateway) limits instead, or for load tests.
    pub enabled: bool,
    /// Per user or API key, across organizations.
    pub per_principal_per_minute: u32,
    /// Per organization until its plan's `requests_per_minute` is known.
    pub default_org_per_minute: u32,
    /// Per client address, for requests whose credential is absent or not yet verified (sign-in,
    /// token refresh, a key or token seen for the first time): what costs work before anyone is
    /// authenticated. Health, the OpenAPI document and signed provider webhooks are exempt.
    pub unauthenticated_per_minute: u32,
    /// A Redis shared by every instance (`rediss://` for TLS, `redis://host:6379/0` or
    /// `unix:///path`), so the budgets are the same however requests are spread. Without one,
    /// each instance limits on its own. While Redis cannot answer, each instance falls back to
    /// its own.
    #[serde(serialize_with = "redacted")]
    pub redis_url: Option<SecretString>,
    /// For `rediss://`: the CAs to trust (PEM; default: the system roots).
    pub redis_ca_file: Option<PathBuf>,
    /// For `rediss://` to a Redis that authenticates clients by certificate: chain and key (PEM).
    pub redis_client_cert_file: Option<PathBuf>,
    pub redis_client_key_file: Option<PathBuf>,
    /// How long a request waits for Redis before falling back to the local limits.
    pub redis_timeout_ms: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            enabled: true,
            per_principal_per_minute: 1200,
            default_org_per_minute: 600,
            unauthenticated_per_minute: 300,
            redis_url: None,
            redis_ca_file: None,
            redis_client_cert_file: None,
            redis_client_key_file: None,
            redis_timeout_ms: 250,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Payment webhooks: the signing secrets (several at once, to rotate without missing events).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingSettings {
    #[serde(serialize_with = "redacted_list")]
    pub stripe_webhook_secrets: Vec<SecretString>,
    /// How old (or how far in the future) a Stripe signature's timestamp may be.
    pub stripe_tolerance_secs: u64,
    #[serde(serialize_with = "redacted_list")]
    pub razorpay_webhook_secrets: Vec<SecretString>,
}

impl Default for BillingSettings {
    fn default() -> Self {
        BillingSettings {
            stripe_webhook_secrets: Vec::new(),
            stripe_tolerance_secs: 300,
            razorpay_webhook_secrets: Vec::new(),
        }
    }
}

fn redacted_list<S: serde::Serializer>(value: &[SecretString], serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq as _;
    let mut seq = serializer.serialize_seq(Some(value.len()))?;
    for _ in value {
        seq.serialize_element("[redacted]")?;
    }
    seq.end()
}

/// Bring-your-own provider keys: the master keys that wrap each organization's data key, and
/// the live check against providers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderKeySettings {
    /// Master keys as `VERSION:BASE64` entries (comma or newline separated). Overrides the file.
    #[serde(serialize_with = "redacted")]
    pub master_keys: Option<SecretString>,
    /// A file of `VERSION:BASE64` lines (mode 0600). Created with a random version 1 in
    /// development when missing; required in production.
    pub master_keys_file: PathBuf,
    pub openai_base_url: String,
    pub anthropic_base_url: String,
    /// Timeout of one live check, DNS included.
    pub live_check_timeout_ms: u64,
    /// Timeout of one `llm.chat` call from a worker.
    pub chat_timeout_ms: u64,
    /// Let live checks reach loopback and private addresses over http (tests only).
    pub allow_private_addresses: bool,
}

impl Default for ProviderKeySettings {
    fn default() -> Self {
        ProviderKeySettings {
            master_keys: None,
            master_keys_file: PathBuf::from(".tenantry/master-keys"),
            openai_base_url: "https://api.openai.com".into(),
            anthropic_base_url: "https://api.anthropic.com".into(),
            live_check_timeout_ms: 5000,
            chat_timeout_ms: 120_000,
            allow_private_addresses: false,
        }
    }
}

impl Settings {
    /// The master keys: from `provider_keys.master_keys`, else the key file (generated in
    /// development when missing).
    pub fn master_keys(&self) -> anyhow::Result<crate::crypto::MasterKeys> {
        match &self.provider_keys.master_keys {
            Some(keys) => crate::crypto::MasterKeys::parse(keys.expose_secret())
                .map_err(|e| anyhow::anyhow!("provider_keys.master_keys: {e}")),
            None => crate::crypto::MasterKeys::load_or_generate(
                &self.provider_keys.master_keys_file,
                self.environment == Environment::Development,
            ),
        }
    }
}

/// `tenantry worker`: how it drains the run queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Runs processed at once by one worker process.
    pub concurrency: usize,
    /// How long a claim lasts without renewal; a worker renews it every third of this. A run
    /// whose worker died is re-claimed after it ran out.
    pub lease_secs: u32,
    /// Claims per run before it is failed with `lease_expired`.
    pub max_attempts: u32,
    /// Longest a run may execute.
    pub run_timeout_secs: u64,
    /// How often an idle worker looks for work without a notification.
    pub poll_interval_ms: u64,
    /// Runs of one organization running at once across all workers of the region: one tenant's
    /// backlog leaves capacity to the others (claims also favour the least busy organization).
    pub max_running_per_org: u32,
    /// On SIGTERM / SIGINT a worker stops claiming and gives runs in flight this long to
    /// finish; the rest are released (queued again, the attempt given back) for another worker.
    /// Keep it below the orchestrator's grace period (Kubernetes: 30 s).
    pub shutdown_grace_secs: u64,
    /// Events older than this many days are deleted (7 to 3650); the worker prunes hourly.
    pub event_retention_days: u32,
    /// Where the worker serves `GET /metrics` (and `GET /health`), e.g. `0.0.0.0:9465`; unset:
    /// nowhere. The server's `metrics_token` rules apply: without a token, 404.
    pub metrics_listen: Option<String>,
    /// The audit watchdog: every this many seconds the worker verifies every organization's
    /// audit chain and exports the result (`tenantry_audit_chains{state}`); 0: never. Each
    /// worker verifies every chain, so with many workers a longer interval costs the same.
    pub audit_verify_interval_secs: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 4,
            lease_secs: 60,
            max_attempts: 3,
            run_timeout_secs: 600,
            poll_interval_ms: 1000,
            max_running_per_org: 4,
            shutdown_grace_secs: 20,
            event_retention_days: 30,
            metrics_listen: None,
            audit_verify_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `iss` of the tokens this server signs itself.
    pub issuer: String,
    /// `aud` every accepted token must carry (ours and trusted issuers' unless they override it).
    pub audience: String,
    /// PKCS#8 PEM Ed25519 key that signs our own tokens; generated in development when missing.
    pub signing_key_file: PathBuf,
    /// Retired signing keys, still published and accepted until their tokens expire (rotation:
    /// make a new key current, move the old one here for at least `access_token_ttl_secs`).
    pub previous_signing_key_files: Vec<PathBuf>,
    /// Lifetime of the access tokens we issue for a session.
    pub access_token_ttl_secs: u64,
    /// A session ends when it is not refreshed for this long...
    pub session_idle_timeout_secs: u64,
    /// ...and in any case this long after sign-in.
    pub session_absolute_timeout_secs: u64,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds (at most 30).
    pub leeway_secs: u64,
    /// Minimum seconds between two JWKS refreshes of one issuer (unknown `kid` triggers one).
    pub jwks_min_refresh_secs: u64,
    /// Verified tokens kept in memory (keyed by the exact token; expiry re-checked on each hit).
    pub token_cache_capacity: u64,
    /// External identity providers whose access tokens are accepted.
    pub trusted_issuers: Vec<TrustedIssuer>,
    /// Identity providers people sign in through (authorization code + PKCE).
    pub providers: Vec<ProviderSettings>,
    /// Where a sign-in may send the browser afterwards (`?redirect_to=` must be one of these).
    pub allowed_redirects: Vec<String>,
    /// How long a started sign-in may take before its `state` is refused.
    pub login_attempt_ttl_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenID Connect provider, by `issuer` (discovery).
    Oidc,
    Google,
    /// `base_url` (e.g. https://sso.example.com) and `realm`.
    Keycloak,
    /// Azure AD / Entra ID: `tenant` is a tenant id, or `organizations` / `common` (multi-tenant).
    Azure,
    /// `base_url` is the tenant domain, e.g. https://acme.eu.auth0.com.
    Auth0,
    /// `base_url` is the Okta domain; `issuer` overrides the default authorization server.
    Okta,
    /// Plain OAuth 2.0; `base_url` and `api_url` default to github.com and api.github.com.
    Github,
}

/// A role granted in an organization when a sign-in's claim holds a value (a Keycloak realm or
/// client role, an Azure app role, a group, a GitHub team as `org/team-slug`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    /// Dotted path into the id_token claims, e.g. `groups`, `realm_access.roles`,
    /// `resource_access.tenantry.roles`, `roles`; `teams` for GitHub.
    pub claim: String,
    pub value: String,
    pub organization_id: uuid::Uuid,
    pub role: crate::domain::Role,
    /// The identity-provider tenant whose tokens this rule trusts (Azure's `tid`). Required on a
    /// multi-tenant Azure provider (`organizations` / `common`), where every tenant's admin
    /// decides their own users' claims.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Claims a user (or any tenant's admin) can set to whatever they like: never a basis for a role.
const USER_CONTROLLED_CLAIMS: &[&str] = &[
    "email",
    "preferred_username",
    "name",
    "given_name",
    "family_name",
    "nickname",
    "upn",
    "unique_name",
    "login",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// The name in URLs: /api/v1/auth/{name}/login. Lowercase letters, digits, hyphens.
    pub name: String,
    pub kind: ProviderKind,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub realm: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub api_url: Option<String>,
    pub client_id: String,
    #[serde(default, serialize_with = "redacted")]
    pub client_secret: Option<SecretString>,
    /// Read the client secret from this file instead.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// This server's callback, as registered with the provider.
    pub redirect_uri: String,
    /// Extra scopes (OIDC always asks for `openid email profile`).
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub role_mappings: Vec<RoleMapping>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    pub issuer: String,
    /// The issuer's key set; when absent it is found by OpenID discovery on `issuer`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Expected `aud`; defaults to `auth.audience`.
    #[serde(default)]
    pub audience: Option<String>,
    /// Accepted algorithms; asymmetric only.
    #[serde(default = "default_external_algorithms")]
    pub algorithms: Vec<String>,
    /// Claims → organization roles, applied when a token is first seen (see `ProviderSettings`).
    #[serde(default)]
    pub role_mappings: Vec<RoleMapping>,
}

impl TrustedIssuer {
    /// What memberships granted by this issuer's mappings are recorded as.
    pub fn grant_source(&self) -> String {
        let mut source = format!("issuer:{}", self.issuer);
        source.truncate(100);
        source
    }
}

impl ProviderSettings {
    /// A provider with only the required fields set (presets fill in the rest per `kind`).
    pub fn new(name: &str, kind: ProviderKind, client_id: &str, redirect_uri: &str) -> ProviderSettings {
        ProviderSettings {
            name: name.into(),
            kind,
            display_name: None,
            issuer: None,
            base_url: None,
            realm: None,
            tenant: None,
            api_url: None,
            client_id: client_id.into(),
            client_secret: None,
            client_secret_file: None,
            redirect_uri: redirect_uri.into(),
            scopes: Vec::new(),
            role_mappings: Vec::new(),
        }
    }
}

fn default_external_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}

fn redacted<S: serde::Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_some("[redacted]"),
        None => s.serialize_none(),
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            environment: Environment::Development,
            listen: "127.0.0.1:8080".into(),
            region: crate::domain::Region::Us,
            audit_on_organization_delete: AuditRetention::Keep,
            database_url: None,
            admin_database_url: None,
            database_statement_cache: StatementCache::Connection,
            database_cancel_on_drop: true,
            listen_database_url: None,
            database_tls: DatabaseTls::default(),
            pool_size: 16,
            pool_timeout_ms: 2000,
            workers: None,
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 30,
            log_format: LogFormat::Pretty,
            idempotency_ttl_secs: 86_400,
            usage_flush_secs: 10,
            metrics_token: None,
            rate_limits: RateLimitSettings::default(),
            cors_allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            tls: None,
            auth: AuthSettings {
                issuer: "tenantry".into(),
                audience: "tenantry-api".into(),
                signing_key_file: PathBuf::from(".tenantry/signing-key.pem"),
                previous_signing_key_files: Vec::new(),
                access_token_ttl_secs: 600,
                session_idle_timeout_secs: 7 * 86_400,
                session_absolute_timeout_secs: 30 * 86_400,
                leeway_secs: 15,
                jwks_min_refresh_secs: 30,
                token_cache_capacity: 100_000,
                trusted_issuers: Vec::new(),
                providers: Vec::new(),
                allowed_redirects: Vec::new(),
                login_attempt_ttl_secs: 600,
            },
            worker: WorkerSettings::default(),
            provider_keys: ProviderKeySettings::default(),
            webhooks: WebhookSettings::default(),
            billing: BillingSettings::default(),
            telemetry: crate::telemetry::TelemetrySettings::default(),
        }
    }
}

/// Algorithms a trusted issuer may be configured with, and tokens accepted from anyone: asymmetric only, so a public key can never be used as an
/// HMAC secret (the classic RS/HS confusion).
pub fn parse_asymmetric_algorithm(name: &str) -> Option<jsonwebtoken::Algorithm> {
    match name {
        "RS256" => Some(jsonwebtoken::Algorithm::RS256),
        "RS384" => Some(jsonwebtoken::Algorithm::RS384),
        "RS512" => Some(jsonwebtoken::Algorithm::RS512),
        "PS256" => Some(jsonwebtoken::Algorithm::PS256),
        "PS384" => Some(jsonwebtoken::Algorithm::PS384),
        "PS512" => Some(jsonwebtoken::Algorithm::PS512),
        "ES256" => Some(jsonwebtoken::Algorithm::ES256),
        "ES384" => Some(jsonwebtoken::Algorithm::ES384),
        "EdDSA" => Some(jsonwebtoken::Algorithm::EdDSA),
        _ => None,
    }
}

/// `TENANTRY_*` variables read elsewhere, not settings.
const NOT_SETTINGS: &[&str] = &["config", "log"];

/// Secret settings with a `TENANTRY_<NAME>_FILE` variable (`rate_limits.redis_url`:
/// `TENANTRY_RATE_LIMITS__REDIS_URL_FILE`). The other secrets are files already:
/// `auth.signing_key_file`, `provider_keys.master_keys_file`, a provider's `client_secret_file`,
/// `tls.key_file`, `database_tls.sslkey`, `rate_limits.redis_client_key_file`.
pub const SECRET_FILES: &[&str] = &[
    "database_url",
    "admin_database_url",
    "listen_database_url",
    "metrics_token",
    "rate_limits.redis_url",
    "billing.stripe_webhook_secrets",
    "billing.razorpay_webhook_secrets",
];

/// `rate_limits.redis_url` → `TENANTRY_RATE_LIMITS__REDIS_URL_FILE`.
pub fn secret_file_variable(setting: &str) -> String {
    format!("TENANTRY_{}_FILE", setting.replace('.', "__").to_ascii_uppercase())
}

/// Whether a `TENANTRY_*` variable (lowercased, `__` as `.`) is a secret's `_FILE` variant.
fn is_secret_file_key(key: &str) -> bool {
    key.strip_suffix("_file").is_some_and(|setting| SECRET_FILES.contains(&setting))
}

/// Top-level keys, for warning about misspelt `TENANTRY_*` variables.
const KNOWN_KEYS: &[&str] = &[
    "environment",
    "listen",
    "region",
    "audit_on_organization_delete",
    "database_url",
    "database_url_file",
    "admin_database_url",
    "admin_database_url_file",
    "listen_database_url_file",
    "metrics_token_file",
    "database_statement_cache",
    "database_cancel_on_drop",
    "listen_database_url",
    "database_tls",
    "pool_size",
    "pool_timeout_ms",
    "workers",
    "max_body_bytes",
    "request_timeout_secs",
    "log_format",
    "idempotency_ttl_secs",
    "usage_flush_secs",
    "metrics_token",
    "cors_allowed_origins",
    "rate_limits",
    "trusted_proxies",
    "tls",
    "auth",
    "worker",
    "provider_keys",
    "billing",
    "webhooks",
    "telemetry",
    "config",
    "log",
];

impl Settings {
    /// Loads settings from `tenantry.toml` (or `TENANTRY_CONFIG`) and the environment.
    pub fn load() -> anyhow::Result<Settings> {
        let file = std::env::var("TENANTRY_CONFIG").unwrap_or_else(|_| "tenantry.toml".into());
        Self::from_figment(
            Figment::from(Serialized::defaults(Settings::default())).merge(Toml::file(file)).merge(
                // Unknown variables are skipped here and reported by `unknown_env_vars`.
                Env::prefixed("TENANTRY_").split("__").filter(|key| {
                    // `split` has already turned `__` into `.` by the time the filter runs.
                    let key = key.as_str().replace("__", ".").to_ascii_lowercase();
                    let top = key.split('.').next().unwrap_or_default();
                    KNOWN_KEYS.contains(&top) && !NOT_SETTINGS.contains(&top) && !is_secret_file_key(&key)
                }),
            ),
        )
    }

    fn from_figment(figment: Figment) -> anyhow::Result<Settings> {
        let mut settings: Settings =
            figment.extract().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        settings.read_secret_files(|var| std::env::var_os(var))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The `_FILE` variant of every secret setting (`SECRET_FILES`): the variable names a file
    /// holding the value, as Docker and Kubernetes mount secrets; it wins over the plain value.
    /// List settings take one value per line. Errors name the variable and path, never content.
    fn read_secret_files(&mut self, var: impl Fn(&str) -> Option<std::ffi::OsString>) -> anyhow::Result<()> {
        for setting in SECRET_FILES {
            let name = secret_file_variable(setting);
            let Some(path) = var(&name) else { continue };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!("cannot read {name}={}: {}", path.to_string_lossy(), e.kind())
            })?;
            let one = || Some(SecretString::from(text.trim().to_owned()));
            let many = || {
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| SecretString::from(l.to_owned()))
                    .collect()
            };
            match *setting {
                "database_url" => self.database_url = one(),
                "admin_database_url" => self.admin_database_url = one(),
                "listen_database_url" => self.listen_database_url = one(),
                "metrics_token" => self.metrics_token = one(),
                "rate_limits.redis_url" => self.rate_limits.redis_url = one(),
                "billing.stripe_webhook_secrets" => self.billing.stripe_webhook_secrets = many(),
                "billing.razorpay_webhook_secrets" => self.billing.razorpay_webhook_secrets = many(),
                other => unreachable!("SECRET_FILES lists {other} without a target"),
            }
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.auth.leeway_secs <= 30,
            "auth.leeway_secs must be at most 30 (TENANTRY_AUTH__LEEWAY_SECS)"
        );
        anyhow::ensure!(self.pool_size >= 1, "pool_size must be at least 1");
        anyhow::ensure!(
            (60..=3600).contains(&self.auth.access_token_ttl_secs),
            "auth.access_token_ttl_secs must be between 60 and 3600"
        );
        anyhow::ensure!(
            self.auth.session_idle_timeout_secs <= self.auth.session_absolute_timeout_secs,
            "auth.session_idle_timeout_secs cannot exceed auth.session_absolute_timeout_secs"
        );
        anyhow::ensure!(self.max_body_bytes >= 1024, "max_body_bytes must be at least 1024");
        anyhow::ensure!(self.request_timeout_secs >= 1, "request_timeout_secs must be at least 1");
        anyhow::ensure!(self.worker.concurrency >= 1, "worker.concurrency must be at least 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.telemetry.sample_ratio),
            "telemetry.sample_ratio must be between 0.0 and 1.0 (TENANTRY_TELEMETRY__SAMPLE_RATIO)"
        );
        if let Some(endpoint) = &self.telemetry.otlp_endpoint {
            let url = url::Url::parse(endpoint).map_err(|_| {
                anyhow::anyhow!("telemetry.otlp_endpoint: {endpoint:?} is not a URL (http://collector:4318)")
            })?;
            anyhow::ensure!(
                matches!(url.scheme(), "http" | "https") && url.query().is_none(),
                "telemetry.otlp_endpoint must be an http(s) base URL such as http://collector:4318"
            );
        }
        for origin in &self.cors_allowed_origins {
            let url = url::Url::parse(origin)
                .map_err(|_| anyhow::anyhow!("cors_allowed_origins: {origin:?} is not a URL"))?;
            anyhow::ensure!(
                url.origin().ascii_serialization() == *origin,
                "cors_allowed_origins: {origin:?} must be an origin only, like https://app.example.com"
            );
        }
        anyhow::ensure!(
            (3..=3600).contains(&self.worker.lease_secs),
            "worker.lease_secs must be between 3 and 3600"
        );
        anyhow::ensure!(self.worker.max_attempts >= 1, "worker.max_attempts must be at least 1");
        anyhow::ensure!(
            (7..=3650).contains(&self.worker.event_retention_days),
            "worker.event_retention_days must be between 7 and 3650"
        );
        anyhow::ensure!(
            !(self.provider_keys.allow_private_addresses && self.environment == Environment::Production),
            "provider_keys.allow_private_addresses is for tests and cannot be used in production"
        );
        anyhow::ensure!(
            !(self.webhooks.allow_private_addresses && self.environment == Environment::Production),
            "webhooks.allow_private_addresses is for tests and cannot be used in production"
        );
        anyhow::ensure!(
            (1..=1000).contains(&self.webhooks.max_endpoints_per_org),
            "webhooks.max_endpoints_per_org must be between 1 and 1000"
        );
        anyhow::ensure!(
            (1..=60).contains(&self.webhooks.attempt_timeout_secs),
            "webhooks.attempt_timeout_secs must be between 1 and 60"
        );
        anyhow::ensure!(
            self.webhooks.max_in_flight_per_endpoint >= 1
                && self.webhooks.max_in_flight_per_org >= 1
                && self.webhooks.disable_after_failures >= 1
                && self.webhooks.dispatch_concurrency <= 1000,
            "webhooks: max_in_flight_per_endpoint, max_in_flight_per_org and disable_after_failures must be at \
             least 1, dispatch_concurrency at most 1000"
        );
        let mut names = std::collections::HashSet::new();
        for p in &self.auth.providers {
            anyhow::ensure!(
                !p.name.is_empty()
                    && p.name.len() <= 50
                    && p.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "provider name {:?}: use lowercase letters, digits and hyphens",
                p.name
            );
            anyhow::ensure!(names.insert(p.name.clone()), "provider name {:?} is used twice", p.name);
        }
        let mappings = self.auth.providers.iter().flat_map(|p| &p.role_mappings);
        for m in mappings.chain(self.auth.trusted_issuers.iter().flat_map(|i| &i.role_mappings)) {
            anyhow::ensure!(
                m.role != crate::domain::Role::Custom,
                "role_mappings can grant built-in roles only (not `custom`)"
            );
            anyhow::ensure!(
                !USER_CONTROLLED_CLAIMS.contains(&m.claim.as_str()),
                "role_mappings cannot use the claim `{}`: users control it (map a group, role or team instead)",
                m.claim
            );
        }
        for p in &self.auth.providers {
            let multi_tenant = p.kind == ProviderKind::Azure
                && p.tenant.as_deref().is_some_and(|t| ["common", "organizations", "consumers"].contains(&t));
            for m in &p.role_mappings {
                anyhow::ensure!(
                    !multi_tenant || m.tenant.as_deref().is_some_and(|t| !t.is_empty()),
                    "provider {}: on a multi-tenant Azure endpoint every role mapping must name the `tenant` (tid) it trusts",
                    p.name
                );
            }
        }
        for issuer in &self.auth.trusted_issuers {
            for alg in &issuer.algorithms {
                anyhow::ensure!(
                    parse_asymmetric_algorithm(alg).is_some(),
                    "trusted issuer {}: algorithm {alg} is not an accepted asymmetric algorithm",
                    issuer.issuer
                );
            }
        }
        Ok(())
    }

    /// `TENANTRY_*` variables that match no setting: a typo here is a classic outage.
    pub fn unknown_env_vars() -> Vec<String> {
        std::env::vars()
            .filter_map(|(k, _)| k.strip_prefix("TENANTRY_").map(str::to_ascii_lowercase))
            .filter(|k| {
                let top = k.split("__").next().unwrap_or_default();
                !KNOWN_KEYS.contains(&top)
            })
            .map(|k| format!("TENANTRY_{}", k.to_ascii_uppercase()))
            .collect()
    }

    pub fn require_database_url(&self) -> anyhow::Result<&str> {
        self.database_url
            .as_ref()
            .map(|s| s.expose_secret())
            .ok_or_else(|| anyhow::anyhow!("set TENANTRY_DATABASE_URL to the app role's connection URL"))
    }

    /// Where LISTEN connects: `listen_database_url`, or else `database_url`.
    pub fn require_listen_database_url(&self) -> anyhow::Result<&str> {
        match &self.listen_database_url {
            Some(url) => Ok(url.expose_secret()),
            None => self.require_database_url(),
        }
    }

    pub fn require_admin_database_url(&self) -> anyhow::Result<&str> {
        self.admin_database_url.as_ref().map(|s| s.expose_secret()).ok_or_else(|| {
            anyhow::anyhow!("set TENANTRY_ADMIN_DATABASE_URL to an owner or superuser connection URL")
        })
    }

    /// The settings as TOML with secrets redacted (for `tenantry config`).
    pub fn redacted_toml(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_secrets() {
        let settings = Settings {
            database_url: Some(SecretString::from("postgres://app:hunter2@db/x".to_owned())),
            ..Settings::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert!(!settings.redacted_toml().contains("hunter2"));
    }

    #[test]
    fn every_secret_setting_is_read_from_its_file_variant() {
        let dir = std::env::temp_dir().join(format!("tenantry-secrets-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = std::collections::HashMap::new();
        for (i, setting) in SECRET_FILES.iter().enumerate() {
            let path = dir.join(format!("{i}"));
            std::fs::write(&path, format!("secret-{i}-a\nsecret-{i}-b\n")).unwrap();
            files.insert(secret_file_variable(setting), path.into_os_string());
        }
        let mut settings = Settings::default();
        settings.read_secret_files(|var| files.get(var).cloned()).unwrap();
        let one = |s: &Option<SecretString>| s.as_ref().unwrap().expose_secret().to_owned();
        let many = |s: &[SecretString]| s.iter().map(|s| s.expose_secret().to_owned()).collect::<Vec<_>>();
        assert_eq!(one(&settings.database_url), "secret-0-a\nsecret-0-b");
        assert_eq!(one(&settings.admin_database_url), "secret-1-a\nsecret-1-b");
        assert_eq!(one(&settings.listen_database_url), "secret-2-a\nsecret-2-b");
        assert_eq!(one(&settings.metrics_token), "secret-3-a\nsecret-3-b");
        assert_eq!(one(&settings.rate_limits.redis_url), "secret-4-a\nsecret-4-b");
        assert_eq!(many(&settings.billing.stripe_webhook_secrets), ["secret-5-a", "secret-5-b"]);
        assert_eq!(many(&settings.billing.razorpay_webhook_secrets), ["secret-6-a", "secret-6-b"]);
        let shown = format!("{settings:?}{}", settings.redacted_toml());
        assert!(!shown.contains("secret-"), "{shown}");
        assert_eq!(secret_file_variable("rate_limits.redis_url"), "TENANTRY_RATE_LIMITS__REDIS_URL_FILE");
        // A missing file names the variable and the path, nothing else.
        let missing =
            |var: &str| (var == "TENANTRY_METRICS_TOKEN_FILE").then(|| dir.join("nope").into_os_string());
        let err = Settings::default().read_secret_files(missing).unwrap_err().to_string();
        assert!(err.starts_with("cannot read TENANTRY_METRICS_TOKEN_FILE="), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn leeway_over_thirty_seconds_is_refused() {
        let figment = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Serialized::default("auth.leeway_secs", 31));
        assert!(Settings::from_figment(figment).is_err());
    }
}
