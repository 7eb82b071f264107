//! Rate limits (GCRA), per principal (user or API key) for every API request, and per
//! organization for requests into it, at the rate of the organization's plan
//! (`limits.requests_per_minute`). A refusal is 429 with `Retry-After` and the IETF `RateLimit`
//! and `RateLimit-Policy` headers; allowed requests carry them too.
//!
//! One instance keeps its buckets in process (`governor`). Several instances share them in
//! Redis (`rate_limits.redis_url`): one Lua script checks the principal's and the
//! organization's buckets and charges both only if both conform, atomically and in one round
//! trip, on Redis's clock. If Redis fails or is slow, the instance falls back to its own buckets
//! for a few seconds (each failure counted in `tenantry_rate_limit_backend_errors_total` and
//! logged once) instead of failing requests or dropping the limits.
//!
//! An organization's bucket is charged only for principals the database has admitted to it
//! (seen through the usage slot of an earlier request), so a stranger naming an organization can
//! never spend its budget. Its plan's rate is looked up off the request path and cached for a
//! minute.
//!
//! Before anyone is authenticated, work is limited per client address
//! (`unauthenticated_per_minute`): a request whose credential is absent, or not yet verified by
//! this instance (so verifying it would cost a signature check or a lookup), is charged to its
//! address first. Sign-in starts, token refreshes and guessed keys are bounded that way; a known
//! credential costs nothing more. Health, the OpenAPI document and signed provider webhooks are
//! exempt.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, ResponseError, web};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use secrecy::ExposeSecret as _;
use uuid::Uuid;

use crate::api::ApiError;
use crate::api::AppState;
use crate::auth::Principal;
use crate::config::RateLimitSettings;
use crate::db::Db;
use crate::domain::OrgId;
use crate::http::metrics::Metrics;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

fn keyed<K: std::hash::Hash + Eq + Clone>(per_minute: u32) -> Keyed<K> {
    let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(rate)).with_middleware::<StateInformationMiddleware>()
}

/// The outcome of one check, for the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub policy: &'static str,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the next request would conform (refusals) or the bucket refills.
    pub reset_secs: u64,
}

impl Decision {
    fn allowed(policy: &'static str, limit: u32, remaining: u32) -> Decision {
        Decision { policy, limit, remaining, reset_secs: 60 / u64::from(limit.max(1)) }
    }
}

/// The buckets one request is charged to: its principal's, and its organization's when the
/// principal is admitted there.
struct Buckets {
    principal: (Uuid, u32),
    org: Option<(OrgId, u32)>,
}

pub struct RateLimits {
    principal_per_minute: u32,
    default_org_per_minute: u32,
    address_per_minute: u32,
    local: LocalBuckets,
    shared: Option<SharedBuckets>,
    /// Principals admitted to organizations, and organizations' plan rates.
    admitted: moka::sync::Cache<(Uuid, OrgId), ()>,
    org_rates: moka::sync::Cache<OrgId, u32>,
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> anyhow::Result<RateLimits> {
        let shared = settings
            .redis_url
            .as_ref()
            .map(|url| SharedBuckets::new(url.expose_secret(), settings))
            .transpose()?;
        Ok(RateLimits {
            principal_per_minute: settings.per_principal_per_minute,
            default_org_per_minute: settings.default_org_per_minute,
            address_per_minute: settings.unauthenticated_per_minute,
            local: LocalBuckets::new(settings.per_principal_per_minute, settings.unauthenticated_per_minute),
            shared,
            admitted: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            org_rates: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        })
    }

    /// Charges a request by `principal` (into `org`, if any). `Err` is a refusal; either way the
    /// decision is the tighter of the two buckets.
    pub async fn check(
        &self,
        principal: Uuid,
        org: Option<OrgId>,
        metrics: &Metrics,
    ) -> Result<Decision, Decision> {
        let buckets = Buckets {
            principal: (principal, self.principal_per_minute),
            // Only once the database has admitted this principal to the organization.
            org: org
                .filter(|org| self.admitted.contains_key(&(principal, *org)))
                .map(|org| (org, self.org_rates.get(&org).unwrap_or(self.default_org_per_minute))),
        };
        if let Some(decision) = self.shared_check(&buckets, metrics).await {
            return decision;
        }
        self.local.check(&buckets)
    }

    /// Charges unauthenticated work from `address` (see the module docs): `Err` is a refusal.
    pub async fn check_address(
        &self,
        address: std::net::IpAddr,
        metrics: &Metrics,
    ) -> Result<Decision, Decision> {
        let key = address_key(address);
        let buckets = Buckets { principal: (key, self.address_per_minute), org: None };
        let decision = match self.shared_check(&buckets, metrics).await {
            Some(decision) => decision,
            None => LocalBuckets::check_one(&self.local.addresses, &key, "address", self.address_per_minute),
        };
        let as_address = |d: Decision| Decision { policy: "address", ..d };
        decision.map(as_address).map_err(as_address)
    }

    /// The shared buckets' decision, or `None` to decide in process (none configured, or Redis
    /// failing: counted, logged once, then skipped for a few seconds).
    async fn shared_check(&self, buckets: &Buckets, metrics: &Metrics) -> Option<Result<Decision, Decision>> {
        match self.shared.as_ref()?.check(buckets).await {
            Ok(decision) => decision, // None while backing off after a failure: in process, quietly
            Err(e) => {
                metrics.rate_limit_backend_error();
                tracing::warn!(error = %e, "shared rate limits unavailable; limiting in process for 5 s");
                None
            }
        }
    }

    /// Remembers an admitted principal; looks up the organization's plan rate when unknown.
    pub fn admitted(&self, principal: Uuid, actor: crate::db::Actor, org: OrgId, db: &Db) {
        // A read on the hot path; the (costlier) insert only the first time.
        if self.admitted.contains_key(&(principal, org)) {
            return;
        }
        self.admitted.insert((principal, org), ());
        if self.org_rates.get(&org).is_none() {
            // Until the lookup lands, the default rate applies.
            self.org_rates.insert(org, self.default_org_per_minute);
            let (rates, db) = (self.org_rates.clone(), db.clone());
            tokio::spawn(async move {
                match org_rate(&db, actor, org).await {
                    Ok(Some(rate)) => rates.insert(org, rate),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "looking up a plan's rate limit failed"),
                }
            });
        }
    }

    /// Drops in-process buckets idle long enough to be full again (bounded memory). Redis
    /// buckets expire on their own.
    pub fn retain_recent(&self) {
        self.local.principals.retain_recent();
        self.local.addresses.retain_recent();
        for limiter in self.local.orgs.read().unwrap_or_else(|e| e.into_inner()).values() {
            limiter.retain_recent();
        }
    }
}

/// The bucket key of a client address: a hash, so addresses share the principals' key space
/// (in process and in Redis) without meeting a real principal's id.
fn address_key(address: std::net::IpAddr) -> Uuid {
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("address:{address}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    Uuid::from_bytes(bytes)
}

/// This instance's own buckets.
struct LocalBuckets {
    principals: Keyed<Uuid>,
    /// Client addresses' unauthenticated work, keyed like principals (see `address_key`).
    addresses: Keyed<Uuid>,
    /// One limiter per plan rate (plans have few distinct rates).
    orgs: RwLock<HashMap<u32, Arc<Keyed<OrgId>>>>,
}

impl LocalBuckets {
    fn new(principal_per_minute: u32, address_per_minute: u32) -> LocalBuckets {
        LocalBuckets {
            principals: keyed(principal_per_minute),
            addresses: keyed(address_per_minute),
            orgs: RwLock::new(HashMap::new()),
        }
    }

    fn check(&self, buckets: &Buckets) -> Result<Decision, Decision> {
        let (principal, limit) = buckets.principal;
        let mut decision = Self::check_one(&self.principals, &principal, "principal", limit)?;
        if let Some((org, rate)) = buckets.org {
            let existing = self.orgs.read().unwrap_or_else(|e| e.into_inner()).get(&rate).cloned();
            let limiter = match existing {
                Some(limiter) => limiter,
                None => {
                    let mut orgs = self.orgs.write().unwrap_or_else(|e| e.into_inner());
                    orgs.entry(rate).or_insert_with(|| Arc::new(keyed(rate))).clone()
                }
            };
            let org_decision = Self::check_one(&limiter, &org, "organization", rate)?;
            if org_decision.remaining < decision.remaining {
                decision = org_decision;
            }
        }
        Ok(decision)
    }

    fn check_one<K: std::hash::Hash + Eq + Clone>(
        limiter: &Keyed<K>,
        key: &K,
        policy: &'static str,
        limit: u32,
    ) -> Result<Decision, Decision> {
        match limiter.check_key(key) {
            Ok(snapshot) => Ok(Decision::allowed(policy, limit, snapshot.remaining_burst_capacity())),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Decision { policy, limit, remaining: 0, reset_secs: wait.as_secs() + 1 })
            }
        }
    }
}

/// GCRA over several buckets at once, on Redis's clock (instances' clocks may differ). Each key
/// holds its theoretical arrival time in microseconds. ARGV[i] is KEYS[i]'s limit per minute:
/// the whole minute's budget may arrive at once, then one request per 60/limit seconds.
/// Returns {0, remaining...} when every bucket conforms (and charges them all), or
/// {i, seconds to wait} for the first bucket that does not (and charges none).
const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats, remaining = {}, {}
for i, key in ipairs(KEYS) do
  local interval = 60000000 / tonumber(ARGV[i])
  local tat = math.max(tonumber(redis.call('GET', key) or 0), now) + interval
  local allow_at = tat - 60000000
  if allow_at > now then
    return {i, math.ceil((allow_at - now) / 1000000)}
  end
  tats[i] = tat
  remaining[i] = math.floor((now - allow_at) / interval)
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%d', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000) + 1000)
end
return {0, unpack(remaining)}
"#;

/// Buckets in Redis, shared by every instance pointed at it.
struct SharedBuckets {
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
    timeout: Duration,
    /// After a failure, Redis is skipped until this many milliseconds past `epoch`, so an
    /// outage costs one timeout per few seconds rather than one per request.
    skip_until_ms: AtomicU64,
    epoch: Instant,
}

const SHARED_BACKOFF: Duration = Duration::from_secs(5);

/// A client for `url`; `rediss://` with the configured CA bundle and client certificate.
fn redis_client(url: &str, settings: &RateLimitSettings) -> anyhow::Result<redis::Client> {
    // The URL may carry a password: say only that it is invalid.
    let invalid = || anyhow::anyhow!("rate_limits.redis_url is not a valid Redis URL");
    if !url.starts_with("rediss://") {
        anyhow::ensure!(
            settings.redis_ca_file.is_none() && settings.redis_client_cert_file.is_none(),
            "rate_limits.redis_ca_file / redis_client_cert_file need a rediss:// URL"
        );
        return redis::Client::open(url).map_err(|_| invalid());
    }
    // redis-rs builds its rustls configuration with the process's provider; tenantry uses one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("rate_limits.{what} {}: {e}", path.display()))
    };
    let root_cert = settings.redis_ca_file.as_deref().map(|p| read("redis_ca_file", p)).transpose()?;
    let client_tls = match (&settings.redis_client_cert_file, &settings.redis_client_key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("redis_client_cert_file", cert)?,
            client_key: read("redis_client_key_file", key)?,
        }),
        (None, None) => None,
        _ => anyhow::bail!("rate_limits.redis_client_cert_file and redis_client_key_file go together"),
    };
    redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls, root_cert }).map_err(|e| {
        // A bad CA or key file is named by its kind, never by content.
        if e.kind() == redis::ErrorKind::InvalidClientConfig {
            invalid()
        } else {
            anyhow::anyhow!("rate_limits: the Redis TLS files are not valid PEM ({:?})", e.kind())
        }
    })
}

impl SharedBuckets {
    fn new(url: &str, settings: &RateLimitSettings) -> anyhow::Result<SharedBuckets> {
        let timeout = Duration::from_millis(settings.redis_timeout_ms);
        let client = redis_client(url, settings)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        // Connects on first use: an instance starts (limiting in process) while Redis is down.
        let connection = redis::aio::ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("configuring the Redis connection failed: {:?}", e.kind()))?;
        Ok(SharedBuckets {
            connection,
            script: redis::Script::new(GCRA_SCRIPT),
            timeout,
            skip_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The decision; `None` while backing off after a failure; an error when Redis could not
    /// give one (then it is skipped for `SHARED_BACKOFF`).
    async fn check(&self, buckets: &Buckets) -> anyhow::Result<Option<Result<Decision, Decision>>> {
        if self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let result = self.invoke(buckets).await;
        if result.is_err() {
            let until = self.now_ms() + u64::try_from(SHARED_BACKOFF.as_millis()).unwrap_or(5000);
            self.skip_until_ms.store(until, Ordering::Relaxed);
        }
        result.map(Some)
    }

    async fn invoke(&self, buckets: &Buckets) -> anyhow::Result<Result<Decision, Decision>> {
        let mut policies = vec![("principal", buckets.principal.1)];
        let mut invocation = self.script.prepare_invoke();
        invocation.key(format!("tenantry:rl:p:{}", buckets.principal.0)).arg(buckets.principal.1.max(1));
        if let Some((org, rate)) = buckets.org {
            invocation.key(format!("tenantry:rl:o:{org}")).arg(rate.max(1));
            policies.push(("organization", rate));
        }
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within {:?}", self.timeout))?
            .map_err(|e| anyhow::anyhow!("Redis error: {:?}", e.kind()))?;
        decide(&policies, &reply)
    }
}

/// Reads the script's reply: the tightest allowed bucket, or the refusing one.
fn decide(policies: &[(&'static str, u32)], reply: &[i64]) -> anyhow::Result<Result<Decision, Decision>> {
    let unexpected = || anyhow::anyhow!("unexpected reply from the rate-limit script");
    let (&status, rest) = reply.split_first().ok_or_else(unexpected)?;
    if status > 0 {
        let index = usize::try_from(status - 1).map_err(|_| unexpected())?;
        let &(policy, limit) = policies.get(index).ok_or_else(unexpected)?;
        let wait = rest.first().copied().ok_or_else(unexpected)?;
        let reset_secs = u64::try_from(wait).unwrap_or(0).max(1);
        return Ok(Err(Decision { policy, limit, remaining: 0, reset_secs }));
    }
    if rest.len() != policies.len() {
        return Err(unexpected());
    }
    let decision = policies
        .iter()
        .zip(rest)
        .map(|(&(policy, limit), &remaining)| {
            Decision::allowed(policy, limit, u32::try_from(remaining).unwrap_or(0))
        })
        .min_by_key(|d| d.remaining)
        .ok_or_else(unexpected)?;
    Ok(Ok(decision))
}

/// The plan's rate, read as the principal just admitted to `org` (so only its own organization's).
async fn org_rate(db: &Db, actor: crate::db::Actor, org: OrgId) -> Result<Option<u32>, crate::db::DbError> {
    let (mut tx, _) = crate::db::TenantTx::begin_org(db, actor, org).await?;
    let rows = tx.query("select app.organization_requests_per_minute()", &[]).await?;
    tx.commit().await?;
    let rate: Option<i32> = rows.first().and_then(|row| row.get(0));
    Ok(rate.and_then(|r| u32::try_from(r).ok()).filter(|r| *r > 0))
}

fn headers(headers: &mut actix_web::http::header::HeaderMap, d: &Decision) {
    let policy = format!("\"{}\";q={};w=60", d.policy, d.limit);
    let state = format!("\"{}\";r={};t={}", d.policy, d.remaining, d.reset_secs);
    if let (Ok(p), Ok(s)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&state)) {
        headers.insert(HeaderName::from_static("ratelimit-policy"), p);
        headers.insert(HeaderName::from_static("ratelimit"), s);
    }
}

/// The middleware (`actix_web::middleware::from_fn(rate_limit)`).
pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned().filter(|s| s.settings.rate_limits.enabled);
    let edge = req.app_data::<web::Data<super::Edge>>().cloned();
    let (Some(state), Some(edge), true) = (state, edge, limited(req.path())) else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let limits = &edge.rate_limits;
    if costs_unauthenticated_work(&req, &state) {
        let address = crate::request::client_addr(req.request(), &state.settings.trusted_proxies);
        if let Some(address) = address
            && let Err(d) = limits.check_address(address, &edge.metrics).await
        {
            return Ok(refuse(req, &edge, d));
        }
    }
    // A refused credential goes on to the handler, which answers 401.
    let Ok(principal) = Principal::from_request(req.request(), &mut Payload::None).await else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let id = principal.as_user().map(|u| u.user_id.0).or(principal.actor().api_key).unwrap_or_default();
    let decision = match limits.check(id, super::org_of_path(req.path()), &edge.metrics).await {
        Ok(d) => d,
        Err(d) => return Ok(refuse(req, &edge, d)),
    };
    let mut res = next.call(req).await?;
    if let Some((admitted_org, _)) = crate::request::admitted() {
        limits.admitted(id, principal.actor(), admitted_org, &state.db);
    }
    headers(res.headers_mut(), &decision);
    Ok(res.map_into_boxed_body())
}

/// The paths that cost work: the API, and the console's session and sign-in entries (its static
/// files cost nothing and are not charged).
fn limited(path: &str) -> bool {
    path.starts_with("/api/v1/")
        || path.starts_with("/console/session")
        || path.starts_with("/console/login/")
}

/// Would serving this request cost work before its caller is known? No credential, or one this
/// instance has not verified yet. Health, the OpenAPI document and the (signature-checked)
/// provider webhooks are exempt.
fn costs_unauthenticated_work(req: &ServiceRequest, state: &AppState) -> bool {
    let path = req.path();
    if path.starts_with("/api/v1/health")
        || path.starts_with("/api/v1/webhooks/")
        || path == "/api/v1/openapi.json"
    {
        return false;
    }
    let credential = crate::api::extract::presented_credential(req.headers());
    credential.is_none_or(|(token, _)| !state.auth.is_verified(&token))
}

fn refuse(req: ServiceRequest, edge: &super::Edge, d: Decision) -> ServiceResponse<BoxBody> {
    edge.metrics.rate_limited(d.policy);
    let mut response =
        ApiError::RateLimited { policy: d.policy, retry_after_secs: d.reset_secs }.error_response();
    headers(response.headers_mut(), &d);
    req.into_response(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[(&str, u32)] = &[("principal", 1200), ("organization", 600)];

    #[test]
    fn the_tighter_allowed_bucket_is_reported() {
        let d = decide(BOTH, &[0, 900, 12]).unwrap().unwrap();
        assert_eq!(d, Decision { policy: "organization", limit: 600, remaining: 12, reset_secs: 0 });
        let d = decide(&BOTH[..1], &[0, 7]).unwrap().unwrap();
        assert_eq!((d.policy, d.remaining, d.reset_secs), ("principal", 7, 0));
    }

    #[test]
    fn a_refusal_names_its_bucket_and_waits_at_least_a_second() {
        let d = decide(BOTH, &[2, 3]).unwrap().unwrap_err();
        assert_eq!(d, Decision { policy: "organization", limit: 600, remaining: 0, reset_secs: 3 });
        let d = decide(BOTH, &[1, 0]).unwrap().unwrap_err();
        assert_eq!((d.policy, d.reset_secs), ("principal", 1));
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for reply in [&[][..], &[0, 1][..], &[3, 1][..], &[1][..], &[-1, 2][..]] {
            assert!(decide(BOTH, reply).is_err(), "{reply:?}");
        }
    }
}
