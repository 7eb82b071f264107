//! Prometheus metrics: behind their own bearer token, labelled by route template (never ids).

use reqwest::StatusCode;

use crate::helpers::{TestApp, assert_problem};

async fn scrape(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = app.http.get(format!("{}/metrics", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_requests_by_route_failures_and_denials_for_the_scraper_only() {
    let plain = TestApp::spawn().await;
    assert_problem(scrape(&plain, Some("anything")).await, StatusCode::NOT_FOUND, "not_found").await;

    let app = TestApp::spawn_with(|s| s.metrics_token = Some("scrape-secret".to_owned().into())).await;
    let org = app.org_with_owner("acme").await;
    let viewer = app.member(&org, "viewer@acme.test", "viewer").await;
    let workspaces = format!("/api/v1/orgs/{}/workspaces", org.id);
    for _ in 0..3 {
        assert_eq!(app.get(&workspaces, &org.owner.token).await.status(), StatusCode::OK);
    }
    assert_eq!(app.get(&workspaces, "not-a-token").await.status(), StatusCode::UNAUTHORIZED);
    let res = app.post(&workspaces, &viewer.token, &serde_json::json!({"name": "Nope"})).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    assert_problem(scrape(&app, None).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_problem(scrape(&app, Some("scrape-secreT")).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = scrape(&app, Some("scrape-secret")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    let ok =
        r#"tenantry_http_requests_total{method="GET",route="/api/v1/orgs/{org_id}/workspaces",status="200"}"#;
    assert_eq!(value(&text, ok), 3.0, "{text}");
    assert!(value(&text, "tenantry_auth_failures_total") >= 1.0);
    assert_eq!(value(&text, r#"tenantry_policy_denials_total{permission="workspaces:write"}"#), 1.0);
    assert!(text.contains(r#"tenantry_http_request_duration_seconds_bucket{method="GET",route="/api/v1/orgs/{org_id}/workspaces""#));
    assert!(value(&text, r#"tenantry_db_pool_connections{state="size"}"#) >= 1.0);
    // The one id in any label: the organization its admitted member was denied in.
    let by_org = format!(r#"tenantry_organization_denials_total{{organization_id="{}"}}"#, org.id);
    assert_eq!(value(&text, &by_org), 1.0, "{text}");
    assert_eq!(text.matches(&org.id.to_string()).count(), 1, "no other ids in labels: {text}");
    assert!(!text.contains(&viewer.id.to_string()) && !text.contains(&org.owner.id.to_string()));
    // What both processes export: the process, the build, the pool's waits, readiness.
    assert!(value(&text, "process_resident_memory_bytes") > 0.0, "{text}");
    assert!(value(&text, "process_open_fds") > 0.0);
    let build = format!(
        r#"tenantry_build_info{{commit="{}",version="{}"}}"#,
        option_env!("TNTY_COMMIT").unwrap_or("unknown"),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&text, &build), 1.0, "{text}");
    assert!(value(&text, "tenantry_db_pool_wait_seconds_count") >= 4.0, "{text}");
    for check in ["database", "migrations", "policies"] {
        assert_eq!(value(&text, &format!(r#"tenantry_ready{{check="{check}"}}"#)), 1.0, "{text}");
    }
}
