use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

async fn accept(app: &TestApp, token: &str, bearer: &str) -> reqwest::Response {
    app.post("/api/v1/invitations/accept", bearer, &json!({"token": token})).await
}

#[tokio::test]
async fn an_invited_person_signs_in_accepts_once_and_becomes_a_member() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let res = app
        .post(
            &format!("/api/v1/orgs/{}/invitations", org.id),
            &org.owner.token,
            &json!({"email": " New.Hire@Example.TEST ", "role": "editor"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let invitation: Value = res.json().await.unwrap();
    assert_eq!(invitation["email"], "new.hire@example.test");
    assert_eq!(invitation["role"], "editor");
    let token = invitation["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tnty_inv_"));
    let secret = token.rsplit('_').next().unwrap().to_owned();
    assert_eq!(
        app.raw_count("select count(*) from invitations where encode(token_hash, 'hex') = $1", &[&secret])
            .await,
        0,
        "only a hash of the token is stored"
    );

    let newcomer = app.user("new.hire@example.test").await;
    let res = accept(&app, &token, &newcomer.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let accepted: Value = res.json().await.unwrap();
    assert_eq!(accepted["organization_id"], org.id.to_string());
    assert_eq!(
        app.raw_count(
            "select count(*) from memberships where organization_id = $1 and user_id = $2 and role = 'editor'",
            &[&org.id, &newcomer.id]
        )
        .await,
        1
    );
    let workspaces = format!("/api/v1/orgs/{}/workspaces", org.id);
    assert_eq!(app.get(&workspaces, &newcomer.token).await.status(), StatusCode::OK);

    // Single use: again, or by someone else, it is spent.
    assert_problem(accept(&app, &token, &newcomer.token).await, StatusCode::CONFLICT, "invitation_used")
        .await;
    let other = app.user("other@example.test").await;
    assert_problem(accept(&app, &token, &other.token).await, StatusCode::CONFLICT, "invitation_used").await;
    assert_eq!(app.raw_count("select count(*) from memberships where user_id = $1", &[&other.id]).await, 0);

    let audited = app
        .raw_count(
            "select count(*) from audit_events where organization_id = $1 and action in ('invitation.create', 'invitation.accept')",
            &[&org.id],
        )
        .await;
    assert_eq!(audited, 2);
}

#[tokio::test]
async fn expired_revoked_and_unknown_invitations_fail_clearly() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let alice = app.user("alice@example.test").await;

    let (expired_id, expired) = app.invitation(&org, "a@example.test", "viewer").await;
    app.rls_bypassing_admin
        .execute(
            "update invitations set expires_at = now() - interval '1 minute' where id = $1",
            &[&expired_id],
        )
        .await
        .unwrap();
    assert_problem(accept(&app, &expired, &alice.token).await, StatusCode::GONE, "invitation_expired").await;

    let (revoked_id, revoked) = app.invitation(&org, "b@example.test", "viewer").await;
    let res =
        app.delete(&format!("/api/v1/orgs/{}/invitations/{revoked_id}", org.id), &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(accept(&app, &revoked, &alice.token).await, StatusCode::GONE, "invitation_revoked").await;

    let (_, valid) = app.invitation(&org, "c@example.test", "viewer").await;
    let (head, _) = valid.rsplit_once('_').unwrap();
    let wrong_secret = format!("{head}_{}", "0".repeat(64));
    for bad in [wrong_secret.as_str(), "tnty_inv_garbage", ""] {
        assert_problem(accept(&app, bad, &alice.token).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_eq!(app.raw_count("select count(*) from memberships where user_id = $1", &[&alice.id]).await, 0);

    // Already a member: refused, and the invitation stays unused.
    let res = accept(&app, &valid, &org.owner.token).await;
    assert_problem(res, StatusCode::CONFLICT, "already_member").await;
    assert_eq!(app.raw_count("select count(*) from invitations where accepted_at is not null", &[]).await, 0);
}

#[tokio::test]
async fn inviting_needs_the_permissions_the_role_would_grant() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let admin = app.member(&org, "admin@acme.test", "admin").await;
    let invitations = format!("/api/v1/orgs/{}/invitations", org.id);

    let res =
        app.post(&invitations, &admin.token, &json!({"email": "boss@example.test", "role": "owner"})).await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "owners:manage");
    let res = app.post(&invitations, &admin.token, &json!({"email": "not-an-email", "role": "viewer"})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "email");
    assert_eq!(app.raw_count("select count(*) from invitations", &[]).await, 0);

    // An API key cannot accept (there is no person to make a member).
    let (_, token) = app.invitation(&org, "x@example.test", "viewer").await;
    let (_, key) = app.api_key(&org, &["org:read"]).await;
    assert_problem(accept(&app, &token, &key).await, StatusCode::FORBIDDEN, "user_required").await;
}
