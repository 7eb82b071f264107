//! Traces and the worker's metrics, from the real binaries: `tenantry serve` and `tenantry
//! worker` export to an OTLP receiver run here, which decodes what arrives with the
//! OpenTelemetry protobuf definitions. One request carrying a `traceparent` queues a run; the
//! request's spans, its statements and the worker's run must form one trace, with no token,
//! secret or input value in any attribute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::rollout::{free_port, scratch, signal, spawn_binary, wait_exit};

#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    attributes: Vec<(String, String)>,
    events: usize,
}

impl ReceivedSpan {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with an `ExportTraceServiceRequest` in protobuf.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<ReceivedSpan>>>) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().app_data(web::PayloadConfig::new(32 << 20)).route(
            "/v1/traces",
            web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let sink = sink.clone();
                async move {
                    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok());
                    assert_eq!(content_type, Some("application/x-protobuf"), "OTLP/HTTP protobuf");
                    let request =
                        ExportTraceServiceRequest::decode(body.as_ref()).expect("an OTLP trace export");
                    let mut received = sink.lock().unwrap();
                    for resource_spans in request.resource_spans {
                        let service = resource_spans
                            .resource
                            .iter()
                            .flat_map(|r| r.attributes.iter())
                            .find(|a| a.key == "service.name")
                            .map(|a| text(a.value.as_ref()))
                            .unwrap_or_default();
                        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                            received.push(ReceivedSpan {
                                service: service.clone(),
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                                name: span.name.clone(),
                                kind: span.kind,
                                events: span.events.len(),
                                attributes: span
                                    .attributes
                                    .iter()
                                    .map(|a| (a.key.clone(), text(a.value.as_ref())))
                                    .collect(),
                            });
                        }
                    }
                    HttpResponse::Ok()
                        .content_type("application/x-protobuf")
                        .body(ExportTraceServiceResponse::default().encode_to_vec())
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (address, spans)
}

/// The chain of spans from `span` up to the root of what was received.
fn ancestors<'a>(span: &'a ReceivedSpan, by_id: &HashMap<&str, &'a ReceivedSpan>) -> Vec<&'a ReceivedSpan> {
    let mut chain = vec![span];
    let mut current = span;
    while let Some(parent) = by_id.get(current.parent_span_id.as_str()) {
        chain.push(parent);
        current = parent;
        assert!(chain.len() < 64, "a cycle in parent links");
    }
    chain
}

async fn wait_for<T>(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn one_request_its_statements_and_the_run_it_queued_are_one_trace_without_secrets() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("traced").await;
    let ws = app.workspace(&org, "Traced").await;
    let (_, runs_url) =
        crate::runs::published(&app, &org, ws, "steps:\n  - id: first\n    uses: core.echo\n").await;

    let (collector, spans) = otlp_receiver().await;
    let dir = scratch();
    let otel = |service_port: u16| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("TENANTRY_METRICS_TOKEN", "scrape-secret".to_owned()),
            ("TENANTRY_LISTEN", format!("127.0.0.1:{service_port}")),
        ]
    };
    let port = free_port();
    let server = spawn_binary(&app, &dir, "serve", &otel(port));
    let address = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for("the server to listen", Duration::from_secs(30), async || {
        http.get(format!("{address}/api/v1/health")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;

    // The caller's trace: its id, and the span our request span must name as its parent.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let refused_trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let secret_input = "input-value-that-must-not-leak";
    let res = http
        .post(format!("{address}{runs_url}"))
        .bearer_auth(&org.owner.token)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .header("tracestate", "vendor=opaque")
        .json(&json!({"input": {"secret": secret_input}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let run_id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let stored: Option<String> = app
        .rls_bypassing_admin
        .query_one("select traceparent from workflow_runs where id = $1::text::uuid", &[&run_id])
        .await
        .unwrap()
        .get(0);
    let stored = stored.expect("the run keeps the request's trace context");
    assert!(stored.starts_with(&format!("00-{trace_id}-")), "{stored}");

    // A hostile trace context is ignored, never an error.
    for (traceparent, tracestate) in [
        ("00-zzzz-not-hex-01", "x".repeat(4000)),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ",,,=,=".to_owned()),
        (&*format!("00-{}-{}-01", "0".repeat(32), "0".repeat(16)), "k=v".to_owned()),
    ] {
        let res = http
            .get(format!("{address}/api/v1/health"))
            .header("traceparent", traceparent)
            .header("tracestate", tracestate)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{traceparent}");
    }
    let res = http
        .get(format!("{address}/api/v1/me"))
        .bearer_auth("not-a-token")
        .header("traceparent", format!("00-{refused_trace}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let worker_port = free_port();
    let mut worker_env = otel(free_port());
    worker_env.push(("TENANTRY_WORKER__METRICS_LISTEN", format!("127.0.0.1:{worker_port}")));
    worker_env.push(("TENANTRY_WORKER__POLL_INTERVAL_MS", "100".to_owned()));
    let worker = spawn_binary(&app, &dir, "worker", &worker_env);
    wait_for("the run to succeed", Duration::from_secs(30), async || {
        let status: String = app
            .rls_bypassing_admin
            .query_one("select status from workflow_runs where id = $1::text::uuid", &[&run_id])
            .await
            .unwrap()
            .get(0);
        (status == "succeeded").then_some(())
    })
    .await;

    // The worker's own /metrics: the server's token rules, and what it measured.
    let metrics_url = format!("http://127.0.0.1:{worker_port}/metrics");
    let res = http.get(&metrics_url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "no token, no metrics");
    let res = http.get(&metrics_url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = http.get(&metrics_url).bearer_auth("scrape-secret").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.text().await.unwrap();
    for expected in [
        "tenantry_worker_run_duration_seconds_count{outcome=\"succeeded\"} 1",
        "tenantry_worker_step_duration_seconds_count{action=\"core.echo\",outcome=\"succeeded\"} 1",
        "tenantry_worker_runs{state=\"queued\"} 0",
        "tenantry_worker_database_up 1",
        "tenantry_worker_claim_duration_seconds_count",
        "tenantry_db_pool_wait_seconds_count",
        "process_resident_memory_bytes",
        "process_open_fds",
        &format!(
            "tenantry_build_info{{commit=\"{}\",version=\"{}\"}} 1",
            commit(),
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(body.contains(expected), "worker metrics lack {expected:?}:\n{body}");
    }

    for child in [&server, &worker] {
        signal(child, "TERM");
    }
    let (status, server_logs) = wait_exit(server, Duration::from_secs(30));
    assert!(status.success(), "{server_logs}");
    let (status, worker_logs) = wait_exit(worker, Duration::from_secs(30));
    assert!(status.success(), "{worker_logs}");

    let spans = spans.lock().unwrap().clone();
    let ours: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let by_id: HashMap<&str, &ReceivedSpan> = ours.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let names: Vec<(&str, &str)> = ours.iter().map(|s| (s.service.as_str(), s.name.as_str())).collect();

    // The request continues the caller's trace, named by its route template.
    let request = ours
        .iter()
        .find(|s| s.service == "tenantry" && s.parent_span_id == caller_span)
        .unwrap_or_else(|| panic!("no server span is the caller's child: {names:?}"));
    assert_eq!(
        request.name,
        "POST /api/v1/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}/runs"
    );
    assert_eq!(request.kind, 2, "a server span");
    assert_eq!(request.attribute("http.response.status_code"), Some("202"));
    assert_eq!(request.attribute("org.id"), Some(org.id.to_string().as_str()));

    // Its tenant transaction, the principal check and the statements hang beneath it.
    let under_request =
        |span: &ReceivedSpan| ancestors(span, &by_id).iter().any(|a| a.span_id == request.span_id);
    for name in ["tenant transaction", "principal check", "set context", "INSERT workflow_runs", "COMMIT"] {
        let span = ours
            .iter()
            .find(|s| s.service == "tenantry" && s.name == name && under_request(s))
            .unwrap_or_else(|| panic!("no {name:?} span under the request: {names:?}"));
        if name != "tenant transaction" {
            assert_eq!(span.attribute("db.system.name"), Some("postgresql"), "{span:?}");
            let parent = by_id[span.parent_span_id.as_str()];
            assert_eq!(parent.name, "tenant transaction", "a statement's parent is its transaction");
        }
    }

    // The worker's run continues the same trace, beneath the request that queued it.
    let run = ours
        .iter()
        .find(|s| s.service == "tenantry-worker" && s.name == "workflow run")
        .unwrap_or_else(|| panic!("no workflow run span in the trace: {names:?}"));
    assert!(under_request(run), "the run's span descends from the request that queued it");
    assert_eq!(run.attribute("run.id"), Some(run_id.as_str()));
    assert_eq!(run.attribute("run.outcome"), Some("succeeded"));
    for name in ["step", "UPDATE workflow_runs"] {
        let span = ours
            .iter()
            .find(|s| s.service == "tenantry-worker" && s.name == name)
            .unwrap_or_else(|| panic!("no {name:?} span in the worker's part: {names:?}"));
        assert!(ancestors(span, &by_id).iter().any(|a| a.span_id == run.span_id), "{name} is under the run");
    }
    let step = ours.iter().find(|s| s.name == "step").unwrap();
    assert_eq!(step.attribute("step.action"), Some("core.echo"));

    // No attribute of any span carries the token (or its signature), the input, or the query.
    let signature = org.owner.token.rsplit('.').next().unwrap();
    for span in &spans {
        for (key, value) in &span.attributes {
            for secret in
                [org.owner.token.as_str(), signature, secret_input, "scrape-secret", "vendor=opaque"]
            {
                assert!(!value.contains(secret), "{key} of {:?} carries a secret: {value}", span.name);
            }
        }
    }
    // Log lines are not exported as span events (a database error may quote a row).
    assert!(spans.iter().all(|s| s.events == 0), "span events were exported");
    // Idle polling starts no traces: every transaction the worker exported belongs to a run.
    for span in spans.iter().filter(|s| s.service == "tenantry-worker" && s.name == "tenant transaction") {
        assert_eq!(span.trace_id, trace_id, "a worker transaction outside any run was exported: {span:?}");
    }

    // JSON log lines inside a request carry its trace and span ids (a refused token is logged).
    let traced_line = server_logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["trace_id"] == refused_trace);
    let line = traced_line.unwrap_or_else(|| panic!("no log line carries the trace id:\n{server_logs}"));
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
}

/// Without `metrics_token` the worker's `/metrics` does not exist (as the server's), and a
/// scraper's flood of guesses costs no database work; `/health` answers either way.
#[tokio::test]
async fn the_workers_metrics_need_a_configured_token() {
    let app = TestApp::spawn().await;
    let dir = scratch();
    let port = free_port();
    let worker = spawn_binary(
        &app,
        &dir,
        "worker",
        &[("TENANTRY_WORKER__METRICS_LISTEN", format!("127.0.0.1:{port}"))],
    );
    let http = reqwest::Client::new();
    let health = wait_for("the worker's health endpoint", Duration::from_secs(30), async || {
        http.get(format!("http://127.0.0.1:{port}/health")).send().await.ok()
    })
    .await;
    assert_eq!(health.status(), StatusCode::OK);
    for token in [None, Some(""), Some("guess"), Some(&*"x".repeat(8000))] {
        let mut request = http.get(format!("http://127.0.0.1:{port}/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    signal(&worker, "TERM");
    let (status, logs) = wait_exit(worker, Duration::from_secs(30));
    assert!(status.success(), "{logs}");
    assert!(!logs.contains("counting the queue"), "no scrape reached the database: {logs}");
}

/// The commit `tenantry_build_info` names (the build script's, for every target of the crate).
fn commit() -> &'static str {
    option_env!("TNTY_COMMIT").unwrap_or("unknown")
}

/// The alert rules and the dashboard name only metrics the code exports (a renamed metric
/// would silence its alert without anyone noticing).
#[test]
fn the_shipped_alerts_and_dashboard_name_only_metrics_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut source = String::new();
    for dir in ["src", "src/http", "src/db"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                source.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let mut checked = 0;
    for file in [".ops/prometheus/tenantry-alerts.yml", ".ops/grafana/tenantry-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (at, _) in text.match_indices("tenantry_") {
            let name: String =
                text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(source.contains(&format!("\"{base}\"")), "{file} names {name}, which nothing exports");
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} metric references found");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join(".ops/grafana/tenantry-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.iter().all(|p| p["targets"].as_array().is_some_and(|t| !t.is_empty())));
}
