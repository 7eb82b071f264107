//! Faults the server must absorb: a request past its time limit, a client that disconnects
//! mid-request, an exhausted pool. Each answers fast with 503 (or nothing, for a client that is
//! gone) and leaves no transaction open. (A PostgreSQL restart under load is in `make soak`.)

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, admin_url, assert_problem, connect};

/// Holds an exclusive lock on `table` in an open transaction until dropped.
async fn lock(app: &TestApp, table: &'static str) -> tokio_postgres::Client {
    let client = connect(&admin_url(&app.database)).await;
    client.batch_execute(&format!("begin; lock table {table} in access exclusive mode")).await.unwrap();
    client
}

/// The app role's transactions open in this test's database (waiting, active or idle in one).
async fn open_app_transactions(app: &TestApp) -> i64 {
    app.raw_count(
        "select count(*) from pg_stat_activity \
         where usename = 'tenantry_app' and datname = current_database() and xact_start is not null",
        &[],
    )
    .await
}

async fn until_no_open_app_transaction(app: &TestApp, within: Duration) -> Duration {
    let start = Instant::now();
    while open_app_transactions(app).await > 0 {
        assert!(start.elapsed() < within, "the app role still has a transaction open after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_request_past_its_time_limit_answers_503_and_leaves_no_transaction_open() {
    let app = TestApp::spawn_with(|s| s.request_timeout_secs = 1).await;
    let org = app.org_with_owner("acme").await;
    let path = format!("/api/v1/orgs/{}/workspaces", org.id);
    let locker = lock(&app, "workspaces").await;
    let started = Instant::now();
    let res = app.get(&path, &org.owner.token).await;
    let took = started.elapsed();
    assert_eq!(res.headers()["retry-after"], "1");
    let body = assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "timeout").await;
    assert!(body["detail"].as_str().unwrap().contains("1 s"));
    assert!(took < Duration::from_millis(2500), "answered after {took:?}");
    // The lock is still held: the statement is cancelled and rolled back at once (behind
    // PgBouncer 1.18, which cannot take cancel requests, at the role's lock_timeout of 3 s).
    until_no_open_app_transaction(&app, Duration::from_secs(5)).await;
    drop(locker);
    assert_eq!(app.get(&path, &org.owner.token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_request_leaves_no_transaction_open_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let locker = lock(&app, "workspaces").await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let gone = impatient
        .post(format!("{}/api/v1/orgs/{}/workspaces", app.address, org.id))
        .bearer_auth(&org.owner.token)
        .json(&json!({"name": "never"}))
        .send()
        .await;
    assert!(gone.unwrap_err().is_timeout());
    // Whether the server notices the disconnect or the lock wait times out first, the
    // transaction ends (lock_timeout is 3 s) and the pool gets its connection back.
    until_no_open_app_transaction(&app, Duration::from_secs(6)).await;
    drop(locker);
    assert_eq!(app.raw_count("select count(*) from workspaces", &[]).await, 0);
    app.workspace(&org, "later").await;
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_quickly_instead_of_hanging() {
    let app = TestApp::spawn_with(|s| {
        s.pool_size = 1;
        s.pool_timeout_ms = 300;
    })
    .await;
    let org = app.org_with_owner("acme").await;
    let locker = lock(&app, "workspaces").await;
    // The only connection waits on the lock ...
    let held = {
        let (app, path, token) = (
            app.http.clone(),
            format!("{}/api/v1/orgs/{}/workspaces", app.address, org.id),
            org.owner.token.clone(),
        );
        tokio::spawn(async move { app.get(path).bearer_auth(token).send().await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... so another request waits 300 ms for the pool, then gets 503.
    let started = Instant::now();
    let res = app.get("/api/v1/orgs", &org.owner.token).await;
    let took = started.elapsed();
    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(took < Duration::from_millis(1500), "answered after {took:?}");
    drop(locker);
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    assert_eq!(app.get("/api/v1/orgs", &org.owner.token).await.status(), StatusCode::OK);
}
