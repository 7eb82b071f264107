//! Logs and traces. Logs are `tracing` events written to stderr (JSON in production). Traces are
//! OpenTelemetry spans exported over OTLP (HTTP/protobuf) when an endpoint is configured, with
//! the W3C trace context (`traceparent`, `tracestate`) taken from incoming requests and given
//! to outgoing calls and queued runs. Off by default, and then free: no OpenTelemetry layer is
//! installed, the database spans (level debug) are disabled at their call sites, outgoing
//! calls get no span, and log lines are written as before.
//!
//! What spans carry: route templates, statuses, ids of organizations, users, keys and runs,
//! statement summaries (`SELECT workspaces`). Never a token, secret, query string, parameter
//! value or body: every attribute is named in this crate, none is copied from input.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use serde::{Deserialize, Serialize};

/// Traces. The standard `OTEL_*` variables apply too: `OTEL_EXPORTER_OTLP_HEADERS` (a vendor's
/// key), `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*` (batching),
/// `OTEL_TRACES_SAMPLER` (then `sample_ratio` is ignored), `OTEL_SDK_DISABLED`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP collector's base URL (`http://collector:4318`); spans go to
    /// `<it>/v1/traces` as protobuf. Overrides `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces kept, 0.0 to 1.0. A request whose caller sampled its trace is kept
    /// (and one whose caller did not, is not), whatever the ratio.
    pub sample_ratio: f64,
    /// `service.name` (default `tenantry` for the server, `tenantry-worker` for the worker);
    /// `OTEL_SERVICE_NAME` overrides it.
    pub service_name: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings { otlp_endpoint: None, sample_ratio: 1.0, service_name: None }
    }
}

/// Whether spans are exported (set once, by `init`).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The tracer provider, flushed and shut down when dropped (at the end of `main`), so the last
/// spans of a stopping process are sent.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: flushing spans at exit failed: {e}");
        }
    }
}

/// The OTLP traces endpoint: `telemetry.otlp_endpoint` (a base URL, `/v1/traces` appended), else
/// the standard variables (which the exporter reads itself). None: traces are off.
fn traces_endpoint(settings: &TelemetrySettings) -> Option<Option<String>> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    if let Some(base) = &settings.otlp_endpoint {
        return Some(Some(format!("{}/v1/traces", base.trim_end_matches('/'))));
    }
    (env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some())
        .then_some(None)
}

fn tracer_provider(
    settings: &TelemetrySettings,
    endpoint: Option<String>,
    default_service: &str,
) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    anyhow::ensure!(
        protocol.is_empty() || protocol == "http/protobuf",
        "OTEL_EXPORTER_OTLP_PROTOCOL={protocol:?} is not supported: tenantry exports http/protobuf"
    );
    let mut exporter =
        opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary);
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter.build()?;
    let mut resource = opentelemetry_sdk::Resource::builder()
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        let name = settings.service_name.clone().unwrap_or_else(|| default_service.to_owned());
        resource = resource.with_service_name(name);
    }
    let mut provider =
        SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build());
    if std::env::var_os("OTEL_TRACES_SAMPLER").is_none() {
        // A caller that sampled its trace is followed; a new trace is kept at this ratio.
        let ratio = settings.sample_ratio.clamp(0.0, 1.0);
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))));
    }
    Ok(provider.build())
}

/// Installs logging (JSON lines, or pretty ones for people) and tracing, when configured, for
/// this process. `default_service` is the `service.name` unless `telemetry.service_name` or
/// `OTEL_SERVICE_NAME` says otherwise.
pub fn init(
    json_logs: bool,
    settings: &TelemetrySettings,
    default_service: &str,
) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::filter::{EnvFilter, filter_fn};
    let log_filter = || {
        let filter = EnvFilter::try_from_env("TENANTRY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
        // tokio-postgres logs every statement's parameter values at debug: token hashes, sealed
        // secrets, endpoint URLs. Never, whatever TENANTRY_LOG asks for.
        filter.add_directive("tokio_postgres::query=info".parse().expect("a valid directive"))
    };
    let provider = match traces_endpoint(settings) {
        Some(endpoint) => Some(tracer_provider(settings, endpoint, default_service)?),
        None => None,
    };
    // Only this crate's spans are exported: their names and attributes are all written here.
    // Not events (log lines): a database error's text may quote a row, and logs stay in logs.
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tenantry"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(filter_fn(|meta| {
                meta.is_span()
                    && meta.target().starts_with("tenantry")
                    && *meta.level() <= tracing::Level::DEBUG
            }))
    });
    let json = json_logs.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .event_format(WithTraceIds(tracing_subscriber::fmt::format().json()))
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
    });
    let pretty = (!json_logs)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(log_filter()));
    tracing_subscriber::registry().with(traces).with(json).with(pretty).init();
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry { provider })
}

/// JSON log lines gain `trace_id` and `span_id` (of the span the event is in) while traces are
/// exported, so a log line leads to its trace and back.
struct WithTraceIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let ids = if exporting() && ctx.lookup_current().is_some() {
            let cx = Span::current().context();
            let span = cx.span();
            let context = span.span_context();
            context.is_valid().then(|| (context.trace_id(), context.span_id()))
        } else {
            None
        };
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => std::fmt::Write::write_fmt(
                &mut writer,
                format_args!("{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"),
            ),
            None => writer.write_str(&line),
        }
    }
}

/// Headers read for the trace context, by name.
pub struct HeaderSource<'a>(pub Vec<(&'a str, &'a str)>);

impl Extractor for HeaderSource<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(name, _)| name.eq_ignore_ascii_case(key)).map(|(_, value)| *value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| *name).collect()
    }
}

/// Makes `span` the child of the trace context in `headers` (`traceparent`, `tracestate`): the
/// caller's trace continues here. Malformed or absent: a new trace. Nothing when not exporting.
pub fn continue_trace(span: &Span, headers: &HeaderSource<'_>) {
    if !exporting() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(headers);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The current span's trace context as a `traceparent` value, to be stored with work that runs
/// later (a queued workflow run). None when not exporting.
pub fn traceparent() -> Option<String> {
    if !exporting() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` the child of a stored `traceparent` (see `traceparent`).
pub fn continue_stored_trace(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|_| exporting()) else { return };
    let carrier = HeaderSource(vec![("traceparent", traceparent)]);
    continue_trace(span, &carrier);
}

/// Sends an outgoing request in a client span (`peer` names who is called: `jwks`,
/// `identity_provider`, `openai`, `webhook`), with the trace context in its headers. The span
/// names the method, host and status; never the path or query, which may carry secrets.
pub async fn send(
    request: reqwest::RequestBuilder,
    peer: &'static str,
) -> reqwest::Result<reqwest::Response> {
    if !exporting() {
        return request.send().await;
    }
    let (client, request) = request.build_split();
    let mut request = request?;
    let span = tracing::info_span!(
        "outgoing request",
        otel.name = %format!("{} {peer}", request.method()),
        otel.kind = "client",
        http.request.method = %request.method(),
        server.address = request.url().host_str().unwrap_or_default(),
        server.port = request.url().port_or_known_default().unwrap_or_default(),
        peer.service = peer,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    for (name, value) in carrier {
        if let (Ok(name), Ok(value)) =
            (reqwest::header::HeaderName::try_from(name), reqwest::header::HeaderValue::try_from(value))
        {
            request.headers_mut().insert(name, value);
        }
    }
    let result = tracing::Instrument::instrument(client.execute(request), span.clone()).await;
    match &result {
        Ok(response) => {
            span.record("http.response.status_code", response.status().as_u16());
            if response.status().is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
        }
        Err(_) => {
            span.record("otel.status_code", "ERROR");
        }
    }
    result
}

/// A statement's span name: its operation and first relation or function (`SELECT workspaces`,
/// `SELECT app.claim_next_run`, `INSERT workflow_runs`). SQL is `&'static str` written in this
/// crate with every value a bound parameter, so nothing here came from a caller.
pub fn statement_summary(sql: &str) -> String {
    let words: Vec<&str> = sql
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',' || c == ';')
        .filter(|w| !w.is_empty())
        .take(400)
        .collect();
    let Some(first) = words.first() else { return "statement".into() };
    let operation = first.to_ascii_uppercase();
    let after = |keyword: &str| {
        let i = words.iter().position(|w| w.eq_ignore_ascii_case(keyword))?;
        words.get(i + 1).map(|target| format!("{operation} {target}"))
    };
    let named = match operation.as_str() {
        // `select app.fn(...)`, `select set_config(...)`: the function is what runs.
        "SELECT" => match words.get(1) {
            Some(w) if w.starts_with("app.") || *w == "set_config" => Some(format!("SELECT {w}")),
            _ => after("from"),
        },
        "WITH" => after("from"),
        "INSERT" => after("into"),
        "UPDATE" => words.get(1).map(|target| format!("UPDATE {target}")),
        "DELETE" => after("from"),
        _ => None,
    };
    named.unwrap_or(operation)
}

#[cfg(test)]
mod tests {
    use super::statement_summary;

    #[test]
    fn statements_are_named_by_operation_and_relation() {
        assert_eq!(
            statement_summary("select id, name from workspaces w where w.id = $1"),
            "SELECT workspaces"
        );
        assert_eq!(
            statement_summary("select * from app.claim_next_run($1, $2, $3, $4)"),
            "SELECT app.claim_next_run"
        );
        assert_eq!(statement_summary("insert into workflow_runs (a) values ($1)"), "INSERT workflow_runs");
        assert_eq!(statement_summary("update workflow_runs set status = $3"), "UPDATE workflow_runs");
        assert_eq!(statement_summary("delete from sessions where id = $1"), "DELETE sessions");
        assert_eq!(statement_summary("select set_config('app.x', $1, true)"), "SELECT set_config");
        assert_eq!(statement_summary("COMMIT"), "COMMIT");
        assert_eq!(statement_summary(""), "statement");
    }
}
