//! The HTTP edge: problem+json errors and middleware (request id, security headers).
//! Nothing below `api` depends on this module's actix types except through `ApiError`.

pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod problem;
pub mod ratelimit;

pub use problem::ApiError;

/// The organization an API path is inside (`/api/v1/orgs/{org_id}/...`, the organization itself
/// included), for the middleware that scopes by organization.
pub fn org_of_path(path: &str) -> Option<crate::domain::OrgId> {
    let rest = path.strip_prefix("/api/v1/orgs/")?;
    let id = rest.split('/').next()?;
    id.parse::<uuid::Uuid>().ok().map(crate::domain::OrgId)
}
