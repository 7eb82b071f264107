//! Rate limits (GCRA, with `governor`), in process: per principal (user or API key) for every API
//! request, and per organization for requests into it, at the rate of the organization's plan
//! (`limits.requests_per_minute`). A refusal is 429 with `Retry-After` and the IETF `RateLimit`
//! and `RateLimit-Policy` headers; allowed requests carry them too.
//!
//! An organization's bucket is charged only for principals the database has admitted to it
//! (seen through the usage slot of an earlier request), so a stranger naming an organization can
//! never spend its budget. Its plan's rate is looked up off the request path and cached for a
//! minute.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, ResponseError, web};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use uuid::Uuid;

use crate::api::AppState;
use crate::auth::Principal;
use crate::db::Db;
use crate::domain::OrgId;
use crate::http::ApiError;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

fn keyed<K: std::hash::Hash + Eq + Clone>(per_minute: u32) -> Keyed<K> {
    let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(rate)).with_middleware::<StateInformationMiddleware>()
}

/// The outcome of one check, for the headers.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub policy: &'static str,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the next request would conform (refusals) or the bucket refills.
    pub reset_secs: u64,
}

pub struct RateLimits {
    principal_per_minute: u32,
    default_org_per_minute: u32,
    principals: Keyed<Uuid>,
    /// One limiter per plan rate (plans have few distinct rates).
    orgs: RwLock<HashMap<u32, Arc<Keyed<OrgId>>>>,
    /// Principals admitted to organizations, and organizations' plan rates.
    admitted: moka::sync::Cache<(Uuid, OrgId), ()>,
    org_rates: moka::sync::Cache<OrgId, u32>,
}

impl RateLimits {
    pub fn new(principal_per_minute: u32, default_org_per_minute: u32) -> RateLimits {
        RateLimits {
            principal_per_minute,
            default_org_per_minute,
            principals: keyed(principal_per_minute),
            orgs: RwLock::new(HashMap::new()),
            admitted: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            org_rates: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        limiter: &Keyed<K>,
        key: &K,
        policy: &'static str,
        limit: u32,
    ) -> Result<Decision, Decision> {
        match limiter.check_key(key) {
            Ok(snapshot) => Ok(Decision {
                policy,
                limit,
                remaining: snapshot.remaining_burst_capacity(),
                reset_secs: 60 / u64::from(limit.max(1)),
            }),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Decision { policy, limit, remaining: 0, reset_secs: wait.as_secs() + 1 })
            }
        }
    }

    pub fn check_principal(&self, principal: Uuid) -> Result<Decision, Decision> {
        Self::check(&self.principals, &principal, "principal", self.principal_per_minute)
    }

    /// The organization's bucket, if this principal is known to be admitted there.
    pub fn check_org(&self, principal: Uuid, org: OrgId) -> Option<Result<Decision, Decision>> {
        self.admitted.get(&(principal, org))?;
        let rate = self.org_rates.get(&org).unwrap_or(self.default_org_per_minute);
        let existing = self.orgs.read().unwrap_or_else(|e| e.into_inner()).get(&rate).cloned();
        let limiter = match existing {
            Some(limiter) => limiter,
            None => {
                let mut orgs = self.orgs.write().unwrap_or_else(|e| e.into_inner());
                orgs.entry(rate).or_insert_with(|| Arc::new(keyed(rate))).clone()
            }
        };
        Some(Self::check(&limiter, &org, "organization", rate))
    }

    /// Remembers an admitted principal; looks up the organization's plan rate when unknown.
    pub fn admitted(&self, principal: Uuid, org: OrgId, db: &Db) {
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
                match org_rate(&db, org).await {
                    Ok(Some(rate)) => rates.insert(org, rate),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "looking up a plan's rate limit failed"),
                }
            });
        }
    }

    /// Drops buckets idle long enough to be full again (bounded memory).
    pub fn retain_recent(&self) {
        self.principals.retain_recent();
        for limiter in self.orgs.read().unwrap_or_else(|e| e.into_inner()).values() {
            limiter.retain_recent();
        }
    }
}

async fn org_rate(db: &Db, org: OrgId) -> Result<Option<u32>, crate::db::DbError> {
    let client = db.get().await?;
    let stmt = client.prepare_cached("select app.organization_requests_per_minute($1)").await?;
    let rate: Option<i32> = client.query_one(&stmt, &[org.as_uuid()]).await?.get(0);
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
    let (Some(state), true) = (state, req.path().starts_with("/api/v1/")) else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    // Unauthenticated requests are not limited here (the handler refuses them).
    let Ok(principal) = Principal::from_request(req.request(), &mut Payload::None).await else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let id = principal.as_user().map(|u| u.user_id.0).or(principal.actor().api_key).unwrap_or_default();
    let limits = &state.rate_limits;
    let mut decision = match limits.check_principal(id) {
        Ok(d) => d,
        Err(d) => return Ok(refuse(req, &state, d)),
    };
    if let Some(org) = super::org_of_path(req.path()) {
        match limits.check_org(id, org) {
            Some(Ok(d)) if d.remaining < decision.remaining => decision = d,
            Some(Err(d)) => return Ok(refuse(req, &state, d)),
            _ => {}
        }
    }
    let mut res = next.call(req).await?;
    if let Some((admitted_org, _)) = crate::usage::admitted() {
        limits.admitted(id, admitted_org, &state.db);
    }
    headers(res.headers_mut(), &decision);
    Ok(res.map_into_boxed_body())
}

fn refuse(req: ServiceRequest, state: &AppState, d: Decision) -> ServiceResponse<BoxBody> {
    state.metrics.rate_limited(d.policy);
    let mut response =
        ApiError::RateLimited { policy: d.policy, retry_after_secs: d.reset_secs }.error_response();
    headers(response.headers_mut(), &d);
    req.into_response(response)
}
