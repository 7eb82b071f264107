//! The HTTP edge: problem+json errors and middleware (request id, security headers).
//! Nothing below `api` depends on this module's actix types except through `ApiError`.

pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod problem;
pub mod ratelimit;

pub use problem::ApiError;
