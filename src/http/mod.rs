//! The HTTP edge: the middleware around the handlers (request id and security headers, time
//! limit, idempotency, rate limits, metrics). It depends on `api` (the handlers' state and error
//! type); nothing in `api` or below depends on it.

pub mod compression;
pub mod idempotency;
pub mod methods;
pub mod metrics;
pub mod middleware;
pub mod ratelimit;

/// What the middleware keeps beside the handlers' `AppState`, as actix app data of its own: the
/// metrics registry and the rate limiter. Handlers never see it.
pub struct Edge {
    pub metrics: metrics::Metrics,
    pub rate_limits: std::sync::Arc<ratelimit::RateLimits>,
}

/// The organization an API path is inside (`/api/v1/orgs/{org_id}/...`, the organization itself
/// included), for the middleware that scopes by organization.
pub fn org_of_path(path: &str) -> Option<crate::domain::OrgId> {
    let rest = path.strip_prefix("/api/v1/orgs/")?;
    let id = rest.split('/').next()?;
    id.parse::<uuid::Uuid>().ok().map(crate::domain::OrgId)
}
