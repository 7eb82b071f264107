//! Request id, security headers and `Server-Timing`. The request id is kept in a task-local for
//! the duration of the request so that every problem document and log line can carry it. The
//! `Server-Timing: app;dur=<ms>` header reports the time spent in the server (authentication,
//! the database and the handler), which is what `make bench` reports as server-side latency.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;

use actix_web::Error;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use futures_util::FutureExt as _;

pub use crate::request::REQUEST_ID_HEADER;
use crate::request::current_request_id;

/// An incoming id is reused only when it is short and made of safe characters, so a client can
/// correlate logs without being able to inject anything into them.
fn accept_incoming(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| s.to_owned())
}

#[derive(Clone, Copy, Default)]
pub struct RequestContext;

impl<S, B> Transform<S, ServiceRequest> for RequestContext
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = RequestContextMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestContextMiddleware { service: Rc::new(service) }))
    }
}

pub struct RequestContextMiddleware<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for RequestContextMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let request_id = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(accept_incoming)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let service = Rc::clone(&self.service);
        let id_for_header = request_id.clone();
        let started = std::time::Instant::now();
        let state = req.app_data::<actix_web::web::Data<crate::api::AppState>>().cloned();
        let edge = req.app_data::<actix_web::web::Data<super::Edge>>().cloned();
        Box::pin(crate::request::with_request_id(request_id, async move {
            let (res, admitted) = crate::request::with_admission(service.call(req)).await;
            let mut res = res?;
            if let (Some(state), Some((org, api_key))) = (&state, admitted) {
                state.usage.count(org, api_key);
            }
            if let Some(edge) = &edge {
                let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
                let error = res.response().error().and_then(|e| e.as_error::<crate::api::ApiError>());
                edge.metrics.observe(
                    &route,
                    res.request().method().as_str(),
                    res.status(),
                    started.elapsed(),
                    error,
                    admitted.map(|(org, _)| org),
                );
            }
            let headers = res.headers_mut();
            let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            if let Ok(v) = HeaderValue::from_str(&format!("app;dur={elapsed_ms:.3}")) {
                headers.insert(HeaderName::from_static("server-timing"), v);
            }
            if let Ok(v) = HeaderValue::from_str(&id_for_header) {
                headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
            }
            for (name, value) in SECURITY_HEADERS {
                headers.insert(name.clone(), HeaderValue::from_static(value));
            }
            if !headers.contains_key(header::CACHE_CONTROL) {
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            Ok(res)
        }))
    }
}

const SECURITY_HEADERS: [(HeaderName, &str); 3] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// Root span for tracing-actix-web: the request, named by its route template. It carries the
/// request id, method, route and status, and the organization the caller was admitted to
/// (recorded at the end, once verified), never the path or query string (a sign-in callback's
/// query holds its authorization code). A `traceparent` header continues the caller's trace.
pub struct TenantryRootSpan;

impl tracing_actix_web::RootSpanBuilder for TenantryRootSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        let request_id = current_request_id();
        let route = request.match_pattern();
        let method = request.method().as_str();
        let span = tracing::info_span!(
            "request",
            otel.name = tracing::field::Empty,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            http.route = route.as_deref().unwrap_or("unmatched"),
            http.response.status_code = tracing::field::Empty,
            request_id = %request_id,
            org.id = tracing::field::Empty,
            user.id = tracing::field::Empty,
            api_key.id = tracing::field::Empty,
        );
        if crate::telemetry::exporting() {
            span.record("otel.name", format!("{method} {}", route.as_deref().unwrap_or("unmatched")));
            let headers = ["traceparent", "tracestate"]
                .into_iter()
                .filter_map(|name| Some((name, request.headers().get(name)?.to_str().ok()?)))
                .collect();
            crate::telemetry::continue_trace(&span, &crate::telemetry::HeaderSource(headers));
        }
        span
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, Error>,
    ) {
        let status = match outcome {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        if let Some((org, _)) = crate::request::admitted() {
            span.record("org.id", tracing::field::display(org));
        }
    }
}

/// The request time limit (`request_timeout_secs`). The request runs with that deadline for its
/// database work: a statement still running then is cancelled, its transaction rolled back, and
/// the caller gets 503 `timeout` like any other problem. Anything else a handler awaits (an
/// upstream provider) has its own, shorter timeout; as a last resort the handler is dropped a
/// few seconds past the deadline. Innermost of the middlewares, so an idempotency key is
/// released rather than left running.
pub async fn time_limit(
    req: ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, Error> {
    let after_secs = req
        .app_data::<actix_web::web::Data<crate::api::AppState>>()
        .map_or(30, |state| state.settings.request_timeout_secs);
    let backstop = std::time::Duration::from_secs(after_secs + 5);
    // A panic below here becomes a 500 problem instead of a dropped connection. Nothing a
    // handler shares outlives the request except through the pool, whose transactions roll
    // back when dropped, so resuming after the unwind is safe.
    let handler = std::panic::AssertUnwindSafe(next.call(req)).catch_unwind();
    let handled = crate::db::with_deadline(after_secs, tokio::time::timeout(backstop, handler)).await;
    match handled {
        Ok(Ok(res)) => res.map(ServiceResponse::map_into_boxed_body),
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(crate::api::ApiError::Internal(anyhow::anyhow!("handler panicked: {message}")).into())
        }
        // The request cannot be kept aside (routing needs it unshared), so this answer takes
        // the error path.
        Err(_) => Err(crate::api::ApiError::TimedOut { after_secs }.into()),
    }
}
