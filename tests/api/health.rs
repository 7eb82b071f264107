use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;

#[tokio::test]
async fn liveness_needs_no_database_and_no_token() {
    let app = TestApp::spawn().await;
    let res = app.request(reqwest::Method::GET, "/api/v1/health", None, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
}

#[tokio::test]
async fn readiness_reports_database_migrations_and_policies() {
    let app = TestApp::spawn().await;
    let res = app.request(reqwest::Method::GET, "/api/v1/health/ready", None, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["detail"], "connected as tenantry_app");
    assert_eq!(body["checks"]["migrations"]["ok"], true);
    assert_eq!(body["checks"]["policies"]["ok"], true);
}

#[tokio::test]
async fn readiness_fails_when_policies_are_weakened_or_migrations_are_behind() {
    let app = TestApp::spawn().await;
    app.rls_bypassing_admin
        .batch_execute(
            "alter table workspaces no force row level security; delete from refinery_schema_history",
        )
        .await
        .unwrap();
    let res = app.request(reqwest::Method::GET, "/api/v1/health/ready", None, None).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["database"]["ok"], true);
    assert_eq!(body["checks"]["migrations"]["ok"], false);
    assert_eq!(body["checks"]["policies"]["ok"], false);
}
