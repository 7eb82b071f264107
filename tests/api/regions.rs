//! Region pinning: two instances, `us` and `eu`, on one database. Each serves only the
//! organizations homed in its region; the other region's answer is 421 naming the right one,
//! with no data, and the policies enforce it below the handlers.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tenantry::domain::Region;

use crate::helpers::{TestApp, app_url, assert_problem, connect};

#[tokio::test]
async fn each_instance_serves_only_its_regions_organizations() {
    let us = TestApp::spawn().await;
    let eu = TestApp::spawn_on(us.database.clone(), |s| s.region = Region::Eu).await;
    // The same person (same key file is not shared, so: one token per instance).
    let on_us = us.user("alice@example.test").await;
    let on_eu = eu.user("alice@example.test").await;
    assert_eq!(on_us.id, on_eu.id, "one user, seen from both regions");

    let res =
        eu.post("/api/v1/orgs", &on_eu.token, &json!({"name": "Euro", "slug": "euro", "region": "eu"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let org: Value = res.json().await.unwrap();
    let org_id = org["id"].as_str().unwrap().to_owned();
    eu.post(&format!("/api/v1/orgs/{org_id}/workspaces"), &on_eu.token, &json!({"name": "Paris"})).await;

    // The us instance names the right region and returns nothing else.
    for path in [format!("/api/v1/orgs/{org_id}"), format!("/api/v1/orgs/{org_id}/workspaces")] {
        let body = assert_problem(
            us.get(&path, &on_us.token).await,
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_region",
        )
        .await;
        assert_eq!(body["region"], "eu");
        assert!(body.get("items").is_none() && body.get("name").is_none());
    }
    let res = us
        .post(&format!("/api/v1/orgs/{org_id}/workspaces"), &on_us.token, &json!({"name": "Planted"}))
        .await;
    assert_problem(res, StatusCode::MISDIRECTED_REQUEST, "misdirected_region").await;
    // Creating an eu organization on the us instance is refused the same way.
    let res =
        us.post("/api/v1/orgs", &on_us.token, &json!({"name": "X", "slug": "x-eu", "region": "eu"})).await;
    let body = assert_problem(res, StatusCode::MISDIRECTED_REQUEST, "misdirected_region").await;
    assert_eq!(body["region"], "eu");

    // A stranger still gets the plain 404: the region of an organization is not revealed to non-members.
    let stranger = us.user("stranger@example.test").await;
    assert_problem(
        us.get(&format!("/api/v1/orgs/{org_id}"), &stranger.token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // The eu instance serves it; the user's organization list (both regions) shows where it lives.
    assert_eq!(
        eu.get(&format!("/api/v1/orgs/{org_id}/workspaces"), &on_eu.token).await.status(),
        StatusCode::OK
    );
    let orgs: Value = us.get("/api/v1/orgs", &on_us.token).await.json().await.unwrap();
    assert_eq!(orgs["items"][0]["region"], "eu");
    assert_eq!(us.raw_count("select count(*) from workspaces where name = 'Planted'", &[]).await, 0);

    // Below the handlers: with the us region in context, the eu organization's rows do not exist.
    let db = connect(&app_url(&us.database)).await;
    db.batch_execute("begin").await.unwrap();
    db.execute(
        "select set_config('app.current_user_id', $1, true), set_config('app.current_organization_id', $2, true), \
         set_config('app.current_region', 'us', true)",
        &[&on_us.id.to_string(), &org_id],
    )
    .await
    .unwrap();
    db.query_one("select active from app.enter_context()", &[]).await.unwrap();
    let n: i64 = db.query_one("select count(*) from workspaces", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    db.batch_execute("rollback; begin").await.unwrap();
    db.execute(
        "select set_config('app.current_user_id', $1, true), set_config('app.current_organization_id', $2, true)",
        &[&on_us.id.to_string(), &org_id],
    )
    .await
    .unwrap();
    db.query_one("select active from app.enter_context()", &[]).await.unwrap();
    let n: i64 = db.query_one("select count(*) from workspaces", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "no region in context: nothing (fail closed)");
    db.batch_execute("rollback").await.unwrap();
}
