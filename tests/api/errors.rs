use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn unknown_routes_and_malformed_ids_are_problem_404s() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@example.test").await;
    assert_problem(app.get("/api/v1/nope", &alice.token).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(
        app.get("/api/v1/orgs/not-a-uuid", &alice.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        app.get("/api/v1/orgs/00000000-0000-0000-0000-000000000000/workspaces/%27%3B--", &alice.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn bad_bodies_get_clear_problems_and_change_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@example.test").await;
    let post_raw = |body: &'static str, content_type: &'static str| {
        app.http
            .post(format!("{}/api/v1/orgs", app.address))
            .bearer_auth(&alice.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    assert_problem(
        post_raw("{\"name\": ", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    assert_problem(
        post_raw("{}", "text/plain").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "unsupported_media_type",
    )
    .await;

    let res = app.post("/api/v1/orgs", &alice.token, &json!({"name": "A", "slug": "a", "owner": "me"})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "owner", "unknown fields are named");
    let res = app.post("/api/v1/orgs", &alice.token, &json!({"name": "A"})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "slug", "missing fields are named");
    let res = app.post("/api/v1/orgs", &alice.token, &json!({"name": 42, "slug": "a"})).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let huge = json!({"name": "x".repeat(200_000), "slug": "a"});
    assert_problem(
        app.post("/api/v1/orgs", &alice.token, &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;

    // SQL-looking input is just data.
    let res = app
        .post("/api/v1/orgs", &alice.token, &json!({"name": "'); drop table users; --", "slug": "sql"}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(app.raw_count("select count(*) from users", &[]).await, 1);
    assert_eq!(app.raw_count("select count(*) from organizations", &[]).await, 1);
}

#[tokio::test]
async fn responses_carry_the_request_id_and_security_headers() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(format!("{}/api/v1/health", app.address))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    assert_eq!(res.headers()["cache-control"], "no-store");

    // An id that could inject into logs is replaced.
    let res = app
        .http
        .get(format!("{}/api/v1/nope", app.address))
        .header("x-request-id", "a b\"c")
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "a b\"c");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["request_id"], id);
}
