//! Prometheus metrics, scraped at `GET /metrics` with the bearer token `metrics_token` (404
//! when none is configured: the endpoint does not exist then). Labels are route templates,
//! methods, statuses and permission names: bounded sets, never ids or other input.
//!
//! - `tenantry_http_requests_total{route,method,status}` and
//!   `tenantry_http_request_duration_seconds{route,method}`
//! - `tenantry_auth_failures_total` (401s) and `tenantry_policy_denials_total{permission}` (403s
//!   naming a permission), and `tenantry_organization_denials_total{organization_id}`: the
//!   same 403s by organization. Safe as a label: a 403 is only ever given to a caller already
//!   admitted to that organization, so the set is bounded by real organizations, never by
//!   what strangers send (a 401 has no organization label for that reason)
//! - `tenantry_rate_limit_rejections_total{policy}` (429s: principal or organization)
//! - `tenantry_rate_limit_backend_errors_total`: shared (Redis) checks that failed and fell back
//!   to this instance's own buckets
//! - `tenantry_db_pool_connections{state}`: size, available, waiting (read at scrape time)
//! - what both processes export (`crate::metrics`): `process_*`, `tenantry_build_info`,
//!   `tenantry_db_pool_wait_seconds`

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use secrecy::ExposeSecret as _;

use crate::api::ApiError;
use crate::api::AppState;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    auth_failures: IntCounter,
    denials: IntCounterVec,
    org_denials: IntCounterVec,
    rate_limited: IntCounterVec,
    rate_limit_backend_errors: IntCounter,
    pool: IntGaugeVec,
    ready: IntGaugeVec,
}

impl Metrics {
    /// The server's metrics, with the pool's wait histogram (`db::Db::pool_wait`).
    pub fn new(pool_wait: &prometheus::Histogram) -> Metrics {
        let registry = Registry::new();
        crate::metrics::register_process(&registry);
        registry.register(Box::new(pool_wait.clone())).expect("metric names are unique");
        let requests = IntCounterVec::new(
            Opts::new("tenantry_http_requests_total", "HTTP requests by route template, method and status"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new("tenantry_http_request_duration_seconds", "Time in the server per request")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            &["route", "method"],
        )
        .expect("valid metric");
        let auth_failures =
            IntCounter::new("tenantry_auth_failures_total", "Requests refused as unauthenticated (401)")
                .expect("valid metric");
        let denials = IntCounterVec::new(
            Opts::new("tenantry_policy_denials_total", "Requests refused for a missing permission (403)"),
            &["permission"],
        )
        .expect("valid metric");
        let org_denials = IntCounterVec::new(
            Opts::new(
                "tenantry_organization_denials_total",
                "Requests refused for a missing permission (403), by organization",
            ),
            &["organization_id"],
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new("tenantry_rate_limit_rejections_total", "Requests refused with 429, by limit"),
            &["policy"],
        )
        .expect("valid metric");
        let rate_limit_backend_errors = IntCounter::new(
            "tenantry_rate_limit_backend_errors_total",
            "Shared rate-limit checks that failed and fell back to in-process buckets",
        )
        .expect("valid metric");
        let pool = IntGaugeVec::new(
            Opts::new("tenantry_db_pool_connections", "The app pool: size, available and waiting"),
            &["state"],
        )
        .expect("valid metric");
        let ready = IntGaugeVec::new(
            Opts::new(
                "tenantry_ready",
                "Readiness checks at scrape time (1 ok, 0 failing): database, migrations, policies",
            ),
            &["check"],
        )
        .expect("valid metric");
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(auth_failures.clone()),
            Box::new(denials.clone()),
            Box::new(org_denials.clone()),
            Box::new(rate_limited.clone()),
            Box::new(rate_limit_backend_errors.clone()),
            Box::new(pool.clone()),
            Box::new(ready.clone()),
        ] {
            registry.register(metric).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            auth_failures,
            denials,
            org_denials,
            rate_limited,
            rate_limit_backend_errors,
            pool,
            ready,
        }
    }

    /// Records one finished request. `route` is the matched template (`unmatched` otherwise);
    /// `admitted` the organization the caller was admitted to, if any.
    pub fn observe(
        &self,
        route: &str,
        method: &str,
        status: StatusCode,
        elapsed: Duration,
        error: Option<&ApiError>,
        admitted: Option<crate::domain::OrgId>,
    ) {
        self.requests.with_label_values(&[route, method, status.as_str()]).inc();
        self.duration.with_label_values(&[route, method]).observe(elapsed.as_secs_f64());
        match error {
            Some(ApiError::Unauthorized | ApiError::InvalidRefreshToken) => self.auth_failures.inc(),
            Some(ApiError::Forbidden(permission)) => {
                self.denials.with_label_values(&[permission.as_str()]).inc();
                if let Some(org) = admitted {
                    self.org_denials.with_label_values(&[&org.to_string()]).inc();
                }
            }
            _ => {}
        }
    }

    /// Every (route template, method, status) answered so far, with its count.
    pub fn answered(&self) -> Vec<(String, String, String, u64)> {
        let mut out = Vec::new();
        for family in prometheus::core::Collector::collect(&self.requests) {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                let count = metric.get_counter().get_value() as u64;
                out.push((label("route"), label("method"), label("status"), count));
            }
        }
        out
    }

    pub fn rate_limited(&self, policy: &str) {
        self.rate_limited.with_label_values(&[policy]).inc();
    }

    pub fn rate_limit_backend_error(&self) {
        self.rate_limit_backend_errors.inc();
    }

    fn render(
        &self,
        state: &AppState,
        readiness: &crate::api::health::ReadinessResponse,
    ) -> Result<String, prometheus::Error> {
        for (check, result) in [
            ("database", &readiness.checks.database),
            ("migrations", &readiness.checks.migrations),
            ("policies", &readiness.checks.policies),
        ] {
            self.ready.with_label_values(&[check]).set(i64::from(result.ok));
        }
        let status = state.db.status();
        self.pool.with_label_values(&["size"]).set(i64::try_from(status.size).unwrap_or(i64::MAX));
        self.pool.with_label_values(&["available"]).set(i64::try_from(status.available).unwrap_or(i64::MAX));
        self.pool.with_label_values(&["waiting"]).set(i64::try_from(status.waiting).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// `GET /metrics`: the Prometheus text format, for the configured bearer token only.
pub async fn serve(
    req: HttpRequest,
    state: web::Data<AppState>,
    edge: web::Data<super::Edge>,
) -> HttpResponse {
    if let Err(refused) = admit_scraper(&req, state.settings.metrics_token.as_ref()) {
        return refused.error_response();
    }
    let readiness = crate::api::health::readiness_report(&state).await;
    match edge.metrics.render(&state, &readiness) {
        Ok(body) => HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(body),
        Err(e) => ApiError::Internal(e.into()).error_response(),
    }
}

/// The token rules of every `/metrics` (the server's and the worker's): 404 when no
/// `metrics_token` is configured (the endpoint does not exist then), 401 unless the request
/// carries it as a bearer token (compared in constant time: it is a secret).
pub fn admit_scraper(req: &HttpRequest, token: Option<&secrecy::SecretString>) -> Result<(), ApiError> {
    let Some(expected) = token else {
        return Err(ApiError::NotFound);
    };
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    aws_lc_rs::constant_time::verify_slices_are_equal(
        presented.as_bytes(),
        expected.expose_secret().as_bytes(),
    )
    .map_err(|_| ApiError::Unauthorized)
}
