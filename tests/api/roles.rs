use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn a_custom_role_grants_exactly_what_it_lists_and_changes_apply_at_once() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let role = app.custom_role(&org, "ws-editor", &["workspaces:read", "workspaces:write"]).await;
    let carol = app.user("carol@acme.test").await;
    let res = app
        .post(
            &format!("/api/v1/orgs/{}/members", org.id),
            &org.owner.token,
            &json!({"user_id": carol.id, "role": "custom", "custom_role_id": role}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let member: Value = res.json().await.unwrap();
    assert_eq!(
        (member["role"].clone(), member["custom_role_id"].clone()),
        (json!("custom"), json!(role.to_string()))
    );

    let workspaces = format!("/api/v1/orgs/{}/workspaces", org.id);
    assert_eq!(app.get(&workspaces, &carol.token).await.status(), StatusCode::OK);
    let res = app.post(&workspaces, &carol.token, &json!({"name": "Mine"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let ws: Value = res.json().await.unwrap();
    let ws_path = format!("{workspaces}/{}", ws["id"].as_str().unwrap());
    for (res, permission) in [
        (app.delete(&ws_path, &carol.token).await, "workspaces:delete"),
        (app.get(&format!("/api/v1/orgs/{}/members", org.id), &carol.token).await, "members:read"),
        (app.get(&format!("/api/v1/orgs/{}", org.id), &carol.token).await, "org:read"),
    ] {
        let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        assert_eq!(body["permission"], permission);
    }

    // The role gains workspaces:delete: Carol's next request may delete.
    let res = app
        .patch(
            &format!("/api/v1/orgs/{}/roles/{role}", org.id),
            &org.owner.token,
            &json!({"permissions": ["workspaces:read", "workspaces:write", "workspaces:delete"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.delete(&ws_path, &carol.token).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.raw_count("select count(*) from workspaces", &[]).await, 0);
}

#[tokio::test]
async fn nobody_gains_a_permission_through_a_role() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let admin = app.member(&org, "admin@acme.test", "admin").await;
    let roles = format!("/api/v1/orgs/{}/roles", org.id);

    // An admin cannot put org:delete (which admins lack) into a role...
    let res = app
        .post(&roles, &admin.token, &json!({"name": "deleter", "permissions": ["org:read", "org:delete"]}))
        .await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "org:delete");
    // ...nor hand out the owner's role that has it, to anyone, themselves included.
    let deleter = app.custom_role(&org, "deleter", &["org:read", "org:delete"]).await;
    let res = app
        .patch(
            &format!("/api/v1/orgs/{}/members/{}", org.id, admin.id),
            &admin.token,
            &json!({"role": "custom", "custom_role_id": deleter}),
        )
        .await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "org:delete");
    assert_eq!(app.raw_count("select count(*) from memberships where role = 'custom'", &[]).await, 0);

    // Unknown permissions and bad names are validation errors.
    let res =
        app.post(&roles, &org.owner.token, &json!({"name": "x", "permissions": ["root:everything"]})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "permissions[0]");
    let res =
        app.post(&roles, &org.owner.token, &json!({"name": "Bad Name", "permissions": ["org:read"]})).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res =
        app.post(&roles, &org.owner.token, &json!({"name": "deleter", "permissions": ["org:read"]})).await;
    assert_problem(res, StatusCode::CONFLICT, "name_taken").await;
}

#[tokio::test]
async fn a_role_in_use_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let role = app.custom_role(&org, "reader", &["org:read", "workspaces:read"]).await;
    let carol = app.user("carol@acme.test").await;
    let members = format!("/api/v1/orgs/{}/members", org.id);
    app.post(
        &members,
        &org.owner.token,
        &json!({"user_id": carol.id, "role": "custom", "custom_role_id": role}),
    )
    .await;
    let path = format!("/api/v1/orgs/{}/roles/{role}", org.id);

    assert_problem(app.delete(&path, &org.owner.token).await, StatusCode::CONFLICT, "role_in_use").await;
    let res =
        app.patch(&format!("{members}/{}", carol.id), &org.owner.token, &json!({"role": "viewer"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.delete(&path, &org.owner.token).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.raw_count("select count(*) from role_permissions", &[]).await,
        0,
        "its permissions go with it"
    );

    // A custom role needs its id, and a built-in role must not have one.
    let res =
        app.patch(&format!("{members}/{}", carol.id), &org.owner.token, &json!({"role": "custom"})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "custom_role_id");
}

#[tokio::test]
async fn a_refused_role_change_changes_nothing() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let admin = app.member(&org, "admin@acme.test", "admin").await;
    let role = app.custom_role(&org, "reader", &["org:read"]).await;

    // Renaming is allowed, but adding org:delete (which admins lack) is not: nothing changes.
    let res = app
        .patch(
            &format!("/api/v1/orgs/{}/roles/{role}", org.id),
            &admin.token,
            &json!({"name": "renamed", "permissions": ["org:read", "org:delete"]}),
        )
        .await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "org:delete");
    assert_eq!(app.raw_count("select count(*) from roles where name = 'reader'", &[]).await, 1);
    assert_eq!(app.raw_count("select count(*) from role_permissions", &[]).await, 1);
}
