//! Usage metering: requests counted per organization, API key and day, in memory and written in
//! batches; never counted against an organization by someone it did not admit.

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem};

async fn flush(app: &TestApp) {
    app.state.usage.flush(&app.state.db).await.unwrap();
}

async fn counted(app: &TestApp, org: Uuid, api_key: Uuid) -> i64 {
    app.raw_count(
        "select coalesce(sum(requests), 0)::bigint from usage_counters where organization_id = $1 and api_key_id = $2",
        &[&org, &api_key],
    )
    .await
}

#[tokio::test]
async fn requests_are_counted_per_organization_key_and_day_in_batches() {
    // Flushed by hand here: the background flush would otherwise run every hour.
    let app = TestApp::spawn_with(|s| s.usage_flush_secs = 3600).await;
    let a = app.org_with_owner("org-a").await;
    let b = app.org_with_owner("org-b").await;
    let (key_id, key) = app.api_key(&a, &["workspaces:read", "billing:read"]).await;
    flush(&app).await;
    let members_before = counted(&app, a.id, Uuid::nil()).await;
    let b_before = counted(&app, b.id, Uuid::nil()).await;

    let workspaces = format!("/api/v1/orgs/{}/workspaces", a.id);
    for _ in 0..5 {
        assert_eq!(app.get(&workspaces, &a.owner.token).await.status(), StatusCode::OK);
    }
    for _ in 0..3 {
        assert_eq!(app.get(&workspaces, &key).await.status(), StatusCode::OK);
    }
    // B's owner naming A: refused, and counted nowhere.
    for _ in 0..4 {
        assert_problem(app.get(&workspaces, &b.owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_eq!(counted(&app, a.id, Uuid::nil()).await, members_before, "no write per request");

    flush(&app).await;
    assert_eq!(counted(&app, a.id, Uuid::nil()).await, members_before + 5);
    assert_eq!(counted(&app, a.id, key_id).await, 3);
    assert_eq!(counted(&app, b.id, Uuid::nil()).await, b_before);

    // Read back with the plan's limits (Free until subscribed, then Pro's).
    let usage: Value =
        app.get(&format!("/api/v1/orgs/{}/usage", a.id), &a.owner.token).await.json().await.unwrap();
    assert_eq!(usage["limits"]["requests_per_day"], 10_000);
    assert_eq!(usage["requests_today"], members_before + 8);
    let by_key = usage["days"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["api_key_id"] == key_id.to_string())
        .unwrap()
        .clone();
    assert_eq!(by_key["requests"], 3);
    app.subscription(&a).await;
    let usage: Value =
        app.get(&format!("/api/v1/orgs/{}/usage", a.id), &a.owner.token).await.json().await.unwrap();
    assert_eq!(usage["limits"]["requests_per_day"], 500_000);
    let res =
        app.get(&format!("/api/v1/orgs/{}/usage?from=2026-02-01&to=2026-01-01", a.id), &a.owner.token).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}
