//! Prometheus metrics, scraped at `GET /metrics` with the bearer token `metrics_token` (404
//! when none is configured: the endpoint does not exist then). Labels are route templates,
//! methods, statuses and permission names: bounded sets, never ids or other input.
//!
//! - `tenantry_http_requests_total{route,method,status}` and
//!   `tenantry_http_request_duration_seconds{route,method}`
//! - `tenantry_auth_failures_total` (401s) and `tenantry_policy_denials_total{permission}` (403s
//!   naming a permission)
//! - `tenantry_rate_limit_rejections_total{policy}` (429s: principal or organization)
//! - `tenantry_rate_limit_backend_errors_total`: shared (Redis) checks that failed and fell back
//!   to this instance's own buckets
//! - `tenantry_db_pool_connections{state}`: size, available, waiting (read at scrape time)

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
    rate_limited: IntCounterVec,
    rate_limit_backend_errors: IntCounter,
    pool: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
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
        for metric in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(auth_failures.clone()),
            Box::new(denials.clone()),
            Box::new(rate_limited.clone()),
            Box::new(rate_limit_backend_errors.clone()),
            Box::new(pool.clone()),
        ] {
            registry.register(metric).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            duration,
            auth_failures,
            denials,
            rate_limited,
            rate_limit_backend_errors,
            pool,
        }
    }

    /// Records one finished request. `route` is the matched template (`unmatched` otherwise).
    pub fn observe(
        &self,
        route: &str,
        method: &str,
        status: StatusCode,
        elapsed: Duration,
        error: Option<&ApiError>,
    ) {
        self.requests.with_label_values(&[route, method, status.as_str()]).inc();
        self.duration.with_label_values(&[route, method]).observe(elapsed.as_secs_f64());
        match error {
            Some(ApiError::Unauthorized | ApiError::InvalidRefreshToken) => self.auth_failures.inc(),
            Some(ApiError::Forbidden(permission)) => {
                self.denials.with_label_values(&[permission.as_str()]).inc()
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

    fn render(&self, state: &AppState) -> Result<String, prometheus::Error> {
        let status = state.db.status();
        self.pool.with_label_values(&["size"]).set(i64::try_from(status.size).unwrap_or(i64::MAX));
        self.pool.with_label_values(&["available"]).set(i64::try_from(status.available).unwrap_or(i64::MAX));
        self.pool.with_label_values(&["waiting"]).set(i64::try_from(status.waiting).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// `GET /metrics`: the Prometheus text format, for the configured bearer token only.
pub async fn serve(
    req: HttpRequest,
    state: web::Data<AppState>,
    edge: web::Data<super::Edge>,
) -> HttpResponse {
    let Some(expected) = state.settings.metrics_token.as_ref() else {
        return ApiError::NotFound.error_response();
    };
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Constant-time: the token is a secret.
    let matches = aws_lc_rs::constant_time::verify_slices_are_equal(
        presented.as_bytes(),
        expected.expose_secret().as_bytes(),
    )
    .is_ok();
    if !matches {
        return ApiError::Unauthorized.error_response();
    }
    match edge.metrics.render(&state) {
        Ok(body) => HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(body),
        Err(e) => ApiError::Internal(e.into()).error_response(),
    }
}
