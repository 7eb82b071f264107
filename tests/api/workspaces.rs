use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn a_workspace_defaults_to_its_organizations_region() {
    let app = TestApp::spawn_with(|s| s.region = tenantry::domain::Region::Eu).await;
    let owner = app.user("owner@eu.test").await;
    let res = app
        .post("/api/v1/orgs", &owner.token, &json!({"name": "EU", "slug": "eu-org", "region": "eu"}))
        .await;
    let org: Value = res.json().await.unwrap();

    let res = app
        .post(
            &format!("/api/v1/orgs/{}/workspaces", org["id"].as_str().unwrap()),
            &owner.token,
            &json!({"name": "Main"}),
        )
        .await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let ws: Value = res.json().await.unwrap();
    assert_eq!(ws["region"], "eu");
    assert_eq!(ws["organization_id"], org["id"]);
    assert_eq!(app.raw_count("select count(*) from workspaces where region = 'eu'", &[]).await, 1);
}

#[tokio::test]
async fn workspaces_can_be_created_read_renamed_and_deleted() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let base = format!("/api/v1/orgs/{}/workspaces", org.id);
    let res = app.post(&base, &org.owner.token, &json!({"name": "Staging", "region": "eu"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let ws: Value = res.json().await.unwrap();
    let path = format!("{base}/{}", ws["id"].as_str().unwrap());
    assert_eq!(location, path);

    let got: Value = app.get(&path, &org.owner.token).await.json().await.unwrap();
    assert_eq!(got["name"], "Staging");
    assert_eq!(got["region"], "eu");

    let res = app.patch(&path, &org.owner.token, &json!({"name": "Prod"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.raw_count("select count(*) from workspaces where name = 'Prod'", &[]).await, 1);

    let list: Value = app.get(&base, &org.owner.token).await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    assert_eq!(app.delete(&path, &org.owner.token).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.raw_count("select count(*) from workspaces", &[]).await, 0);
    assert_problem(app.get(&path, &org.owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(app.delete(&path, &org.owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn duplicate_names_conflict_within_an_organization_only() {
    let app = TestApp::spawn().await;
    let a = app.org_with_owner("org-a").await;
    let b = app.org_with_owner("org-b").await;
    app.workspace(&a, "Production").await;

    let res = app
        .post(&format!("/api/v1/orgs/{}/workspaces", a.id), &a.owner.token, &json!({"name": "Production"}))
        .await;
    assert_problem(res, StatusCode::CONFLICT, "name_taken").await;
    let res = app
        .post(&format!("/api/v1/orgs/{}/workspaces", b.id), &b.owner.token, &json!({"name": "Production"}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn each_role_gets_exactly_its_workspace_permissions() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let member = app.member(&org, "member@acme.test", "editor").await;
    let viewer = app.member(&org, "viewer@acme.test", "viewer").await;
    let ws = app.workspace(&org, "Production").await;
    let base = format!("/api/v1/orgs/{}/workspaces", org.id);
    let path = format!("{base}/{ws}");

    assert_eq!(app.get(&path, &viewer.token).await.status(), StatusCode::OK);
    let body = assert_problem(
        app.post(&base, &viewer.token, &json!({"name": "x"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(body["permission"], "workspaces:write");
    let body = assert_problem(
        app.patch(&path, &viewer.token, &json!({"name": "x"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(body["permission"], "workspaces:write");

    assert_eq!(app.patch(&path, &member.token, &json!({"name": "Renamed"})).await.status(), StatusCode::OK);
    let body =
        assert_problem(app.delete(&path, &member.token).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "workspaces:delete");
    assert_eq!(app.raw_count("select count(*) from workspaces where name = 'Renamed'", &[]).await, 1);
}
