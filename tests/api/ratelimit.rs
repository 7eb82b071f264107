//! Rate limits: per principal, and per organization at its plan's rate, with 429, Retry-After
//! and the RateLimit headers; strangers never spend an organization's budget.

use reqwest::StatusCode;

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn a_principal_over_its_rate_gets_429_with_retry_after() {
    let app = TestApp::spawn_with(|s| s.rate_limits.per_principal_per_minute = 5).await;
    let org = app.org_with_owner("acme").await; // spends part of the owner's budget
    let path = format!("/api/v1/orgs/{}/workspaces", org.id);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let res = app.get(&path, &org.owner.token).await;
        statuses.push(res.status().as_u16());
        if res.status() == StatusCode::OK {
            assert!(
                res.headers()["ratelimit-policy"].to_str().unwrap().starts_with("\"principal\";q=5;w=60")
            );
            assert!(res.headers()["ratelimit"].to_str().unwrap().contains(";r="));
        } else {
            let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=13).contains(&retry), "retry after {retry}");
            assert_eq!(res.headers()["ratelimit"].to_str().unwrap(), format!("\"principal\";r=0;t={retry}"));
            let body = assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
            assert!(body["detail"].as_str().unwrap().contains("principal"));
        }
    }
    // Some allowed, then refused from the first refusal on (5 a minute, setup included).
    let first_refusal = statuses.iter().position(|s| *s == 429).expect("a refusal");
    assert!(first_refusal >= 1, "{statuses:?}");
    assert!(statuses[first_refusal..].iter().all(|s| *s == 429), "{statuses:?}");
    // Another principal has its own budget.
    let other = app.user("other@example.test").await;
    assert_eq!(app.get("/api/v1/orgs", &other.token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_organization_is_limited_at_its_plans_rate_and_strangers_never_spend_it() {
    let app = TestApp::spawn().await;
    // The free plan allows 4 requests a minute per organization, for this test.
    app.rls_bypassing_admin
        .execute(
            "update plans set limits = jsonb_set(limits, '{requests_per_minute}', '4') where id = 'free'",
            &[],
        )
        .await
        .unwrap();
    let a = app.org_with_owner("org-a").await;
    let alice = app.member(&a, "alice@org-a.test", "viewer").await;
    let b = app.org_with_owner("org-b").await;
    let path = format!("/api/v1/orgs/{}/workspaces", a.id);
    // A stranger hammering A's organization: refused by the database, and charged nothing there.
    for _ in 0..10 {
        assert_eq!(app.get(&path, &b.owner.token).await.status(), StatusCode::NOT_FOUND);
    }
    // A's members share A's budget once the database has admitted them (their first request).
    let mut statuses = Vec::new();
    for token in [
        &a.owner.token,
        &alice.token,
        &a.owner.token,
        &alice.token,
        &a.owner.token,
        &alice.token,
        &alice.token,
    ] {
        statuses.push(app.get(&path, token).await.status().as_u16());
        tokio::time::sleep(std::time::Duration::from_millis(30)).await; // the plan's rate lookup lands
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 200).count() <= 6, "{statuses:?}");
    let res = app.get(&path, &alice.token).await;
    let body = assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(body["detail"].as_str().unwrap().contains("organization"));
    // B is untouched by A's limit.
    assert_eq!(
        app.get(&format!("/api/v1/orgs/{}/workspaces", b.id), &b.owner.token).await.status(),
        StatusCode::OK
    );
}
