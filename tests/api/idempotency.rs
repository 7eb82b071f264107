//! Idempotency-Key on mutating POSTs: replays return the first response, a reused key with
//! another body is refused, concurrent replays create one resource, keys are per principal and
//! expire.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestOrg, TestUser, assert_problem};

async fn start_run(
    app: &TestApp,
    user: &TestUser,
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = app.http.post(format!("{}{url}", app.address)).bearer_auth(&user.token).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

async fn runs_url(app: &TestApp, org: &TestOrg) -> String {
    let ws = app.workspace(org, "Production").await;
    let workflow = app.workflow(org, ws).await;
    format!("/api/v1/orgs/{}/workspaces/{ws}/workflows/{workflow}/runs", org.id)
}

#[tokio::test]
async fn a_replay_returns_the_first_response_and_a_reused_key_with_another_body_is_refused() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let url = runs_url(&app, &org).await;
    let body = json!({"input": {"n": 1}});

    let first = start_run(&app, &org.owner, &url, Some("order-1"), &body).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers().get("location").cloned();
    let first: Value = first.json().await.unwrap();
    let replay = start_run(&app, &org.owner, &url, Some("order-1"), &body).await;
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    assert_eq!(replay.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(replay.headers().get("location").cloned(), location);
    assert_eq!(replay.json::<Value>().await.unwrap(), first, "the very same response");
    assert_eq!(app.raw_count("select count(*) from workflow_runs", &[]).await, 1);

    let res = start_run(&app, &org.owner, &url, Some("order-1"), &json!({"input": {"n": 2}})).await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(app.raw_count("select count(*) from workflow_runs", &[]).await, 1);

    // A refusal is an answer too: replayed, not re-evaluated.
    let bad = json!({"input": [1]});
    let res = start_run(&app, &org.owner, &url, Some("order-2"), &bad).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = start_run(&app, &org.owner, &url, Some("order-2"), &bad).await;
    assert_eq!(
        (res.status(), res.headers().get("idempotent-replayed").is_some()),
        (StatusCode::UNPROCESSABLE_ENTITY, true)
    );

    // Keys belong to their principal: someone else's "order-1" is theirs.
    let editor = app.member(&org, "editor@acme.test", "editor").await;
    let res = start_run(&app, &editor, &url, Some("order-1"), &json!({"input": {"n": 3}})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert!(res.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.raw_count("select count(*) from workflow_runs", &[]).await, 2);

    let res = start_run(&app, &org.owner, &url, Some("has space"), &body).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    let res = app.request(Method::POST, &url, Some(&org.owner.token), Some(&body)).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "no key: no idempotency, as before");
}

#[tokio::test]
async fn parallel_replays_create_one_resource() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let url = runs_url(&app, &org).await;
    let body = json!({"input": {"order": 42}});
    let attempts = (0..20).map(|_| start_run(&app, &org.owner, &url, Some("checkout-42"), &body));
    let responses = futures_util::future::join_all(attempts).await;
    let mut ids = std::collections::BTreeSet::new();
    for res in responses {
        match res.status() {
            StatusCode::ACCEPTED => {
                ids.insert(res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                assert_problem(res, StatusCode::CONFLICT, "idempotency_request_in_progress").await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ids.len(), 1, "every success names the same run");
    assert_eq!(app.raw_count("select count(*) from workflow_runs", &[]).await, 1);
}

#[tokio::test]
async fn keys_expire() {
    let app = TestApp::spawn_with(|s| s.idempotency_ttl_secs = 1).await;
    let org = app.org_with_owner("acme").await;
    let url = runs_url(&app, &org).await;
    let res = start_run(&app, &org.owner, &url, Some("k"), &json!({"input": {"n": 1}})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let res = start_run(&app, &org.owner, &url, Some("k"), &json!({"input": {"n": 2}})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "an expired key is free again");
    assert_eq!(app.raw_count("select count(*) from workflow_runs", &[]).await, 2);
}
