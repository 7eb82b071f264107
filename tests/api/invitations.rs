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

#[tokio::test]
async fn many_people_are_invited_in_one_request_all_or_none() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let other = app.org_with_owner("other").await;
    let admin = app.member(&org, "admin@acme.test", "admin").await;
    let bulk = format!("/api/v1/orgs/{}/invitations/bulk", org.id);

    let people: Vec<Value> =
        (0..120).map(|i| json!({"email": format!("Person{i}@Example.com"), "role": "viewer"})).collect();
    let res = app.post(&bulk, &admin.token, &json!({"invitations": people})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let created = body["invitations"].as_array().unwrap();
    assert_eq!(created.len(), 120);
    assert_eq!(created[7]["email"], "person7@example.com", "in the order asked, addresses normalized");
    assert!(created.iter().all(|c| c["token"].as_str().unwrap().starts_with("tnty_inv_")));
    assert_eq!(
        app.raw_count("select count(*) from invitations where organization_id = $1", &[&org.id]).await,
        120
    );
    let audited = app
        .raw_count(
            "select count(*) from audit_events where organization_id = $1 and action = 'invitation.create'",
            &[&org.id],
        )
        .await;
    assert_eq!(audited, 120, "each invitation audited");
    // The tokens work: the seventh person accepts theirs.
    let invitee = app.user("person7@example.com").await;
    let res = accept(&app, created[7]["token"].as_str().unwrap(), &invitee.token).await;
    assert_eq!(res.status(), StatusCode::OK);

    // One bad item: a 422 naming it by index, and nothing created.
    let res = app
        .post(
            &bulk,
            &admin.token,
            &json!({"invitations": [
                {"email": "fine@example.com", "role": "viewer"},
                {"email": "not-an-address", "role": "viewer"},
                {"email": "x@example.com", "role": "custom"},
                {"email": "FINE@example.com", "role": "editor"},
            ]}),
        )
        .await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["invitations[1].email", "invitations[2].custom_role_id", "invitations[3].email"]);
    assert_eq!(
        app.raw_count("select count(*) from invitations where organization_id = $1", &[&org.id]).await,
        120
    );

    // One item beyond the caller's grant (an admin cannot invite an owner): 403, nothing created.
    let res = app
        .post(
            &bulk,
            &admin.token,
            &json!({"invitations": [
                {"email": "a@example.com", "role": "viewer"},
                {"email": "boss@example.com", "role": "owner"},
            ]}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(
        app.raw_count("select count(*) from invitations where organization_id = $1", &[&org.id]).await,
        120
    );
    assert_eq!(app.raw_count("select count(*) from invitations where email = 'a@example.com'", &[]).await, 0);

    // Bounded: none, or more than 500, is refused before any work.
    for n in [0, 501] {
        let people: Vec<Value> =
            (0..n).map(|i| json!({"email": format!("p{i}@example.com"), "role": "viewer"})).collect();
        let res = app.post(&bulk, &admin.token, &json!({"invitations": people})).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], "invitations");
    }
    // Another tenant's organization: the same 404 as any; an API key: people only.
    let res = app
        .post(
            &bulk,
            &other.owner.token,
            &json!({"invitations": [{"email": "q@example.com", "role": "viewer"}]}),
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let (_, key) = app.api_key(&org, &["members:manage", "members:read"]).await;
    let res =
        app.post(&bulk, &key, &json!({"invitations": [{"email": "q@example.com", "role": "viewer"}]})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "user_required").await;
    assert_eq!(
        app.raw_count("select count(*) from invitations where organization_id = $1", &[&org.id]).await,
        120
    );
}
