//! Platform administration: only platform admins (granted by the owner with `tenantry admin`)
//! reach it; every action is audited; suspension refuses every request to the organization.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ISSUER, TestApp, admin_url, assert_problem};

fn grant(app: &TestApp, subject: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["admin", "grant", "--issuer", ISSUER, "--subject", subject, "--note", "tests"])
        .env("TENANTRY_ADMIN_DATABASE_URL", admin_url(&app.database))
        .env("TENANTRY_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn only_platform_admins_reach_admin_operations_and_each_is_audited() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let member = app.member(&org, "carol@acme.test", "editor").await;
    let workspaces = format!("/api/v1/orgs/{}/workspaces", org.id);

    // An organization's owner is not a platform admin.
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/admin/organizations".to_owned()),
        (reqwest::Method::GET, "/api/v1/admin/health".to_owned()),
        (reqwest::Method::POST, format!("/api/v1/admin/organizations/{}/suspend", org.id)),
    ] {
        let res = app.request(method, &path, Some(&org.owner.token), None).await;
        let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        assert_eq!(body["permission"], "platform:admin");
    }
    assert_eq!(
        app.raw_count("select count(*) from organizations where suspended_at is not null", &[]).await,
        0
    );

    grant(&app, "ops@platform.test");
    let ops = app.user("ops@platform.test").await;
    let list: Value = app.get("/api/v1/admin/organizations", &ops.token).await.json().await.unwrap();
    assert_eq!(list["items"][0]["id"], org.id.to_string());
    assert_eq!(list["items"][0]["members"], 2);
    let health: Value = app.get("/api/v1/admin/health", &ops.token).await.json().await.unwrap();
    assert_eq!(health["policy_violations"], json!([]));
    assert_eq!(health["migrations_applied"], health["migrations_expected"]);
    // A platform admin is not a member: tenant data stays out of reach.
    assert_problem(app.get(&workspaces, &ops.token).await, StatusCode::NOT_FOUND, "not_found").await;

    // Suspension refuses every request to the organization, for every member.
    let res = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/admin/organizations/{}/suspend", org.id),
            Some(&ops.token),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for token in [&org.owner.token, &member.token] {
        assert_problem(app.get(&workspaces, token).await, StatusCode::FORBIDDEN, "organization_suspended")
            .await;
    }
    let res = app.post(&workspaces, &org.owner.token, &json!({"name": "x"})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "organization_suspended").await;
    let res = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/admin/organizations/{}/reactivate", org.id),
            Some(&ops.token),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&workspaces, &member.token).await.status(), StatusCode::OK);

    // Moving the organization to eu: this (us) instance now answers 421 for it.
    let res = app
        .post(&format!("/api/v1/admin/organizations/{}/region", org.id), &ops.token, &json!({"region": "eu"}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let body = assert_problem(
        app.get(&workspaces, &member.token).await,
        StatusCode::MISDIRECTED_REQUEST,
        "misdirected_region",
    )
    .await;
    assert_eq!(body["region"], "eu");

    // Each action is in the organization's chain and the platform chain, by the admin.
    let audited = app
        .raw_count(
            "select count(*) from audit_events where actor_type = 'platform_admin' and actor_id = $1 \
             and action in ('organization.suspend', 'organization.reactivate', 'organization.move_region')",
            &[&ops.id],
        )
        .await;
    assert_eq!(audited, 6, "three actions, each in two chains");
    let res = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/admin/organizations/{}/suspend", uuid::Uuid::new_v4()),
            Some(&ops.token),
            None,
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}
