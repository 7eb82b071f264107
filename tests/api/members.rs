use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn admins_add_members_and_the_list_shows_them() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let admin = app.member(&org, "admin@acme.test", "admin").await;
    let carol = app.user("carol@acme.test").await;

    let res = app
        .post(
            &format!("/api/v1/orgs/{}/members", org.id),
            &admin.token,
            &json!({"user_id": carol.id, "role": "viewer"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["role"], "viewer");
    assert_eq!(body["email"], "carol@acme.test");

    let list: Value =
        app.get(&format!("/api/v1/orgs/{}/members", org.id), &carol.token).await.json().await.unwrap();
    let mut roles: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["email"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned()))
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        vec![
            ("admin@acme.test".into(), "admin".into()),
            ("carol@acme.test".into(), "viewer".into()),
            ("owner@acme.test".into(), "owner".into()),
        ]
    );
}

#[tokio::test]
async fn admins_cannot_grant_or_touch_the_owner_role() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let admin = app.member(&org, "admin@acme.test", "admin").await;
    let dave = app.user("dave@acme.test").await;
    let members = format!("/api/v1/orgs/{}/members", org.id);

    let res = app.post(&members, &admin.token, &json!({"user_id": dave.id, "role": "owner"})).await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "owners:manage");

    let res =
        app.patch(&format!("{members}/{}", org.owner.id), &admin.token, &json!({"role": "viewer"})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app.delete(&format!("{members}/{}", org.owner.id), &admin.token).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    assert_eq!(
        app.raw_count(
            "select count(*) from memberships where organization_id = $1 and role = 'owner'",
            &[&org.id]
        )
        .await,
        1
    );
    assert_eq!(app.raw_count("select count(*) from memberships where user_id = $1", &[&dave.id]).await, 0);
}

#[tokio::test]
async fn viewers_cannot_manage_members() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let viewer = app.member(&org, "viewer@acme.test", "viewer").await;
    let erin = app.user("erin@acme.test").await;

    let res = app
        .post(
            &format!("/api/v1/orgs/{}/members", org.id),
            &viewer.token,
            &json!({"user_id": erin.id, "role": "viewer"}),
        )
        .await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "members:manage");
    assert_eq!(app.raw_count("select count(*) from memberships where user_id = $1", &[&erin.id]).await, 0);
}

#[tokio::test]
async fn adding_an_unknown_user_or_a_member_twice_is_refused() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let carol = app.member(&org, "carol@acme.test", "editor").await;
    let members = format!("/api/v1/orgs/{}/members", org.id);

    let res = app
        .post(&members, &org.owner.token, &json!({"user_id": uuid::Uuid::new_v4(), "role": "viewer"}))
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "user_id");

    let res = app.post(&members, &org.owner.token, &json!({"user_id": carol.id, "role": "viewer"})).await;
    assert_problem(res, StatusCode::CONFLICT, "already_member").await;
    assert_eq!(
        app.raw_count(
            "select count(*) from memberships where user_id = $1 and role = 'editor'",
            &[&carol.id]
        )
        .await,
        1
    );

    let res = app.post(&members, &org.owner.token, &json!({"user_id": carol.id, "role": "god"})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "role");
}

#[tokio::test]
async fn the_last_owner_can_be_neither_demoted_nor_removed() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let me = format!("/api/v1/orgs/{}/members/{}", org.id, org.owner.id);

    let res = app.patch(&me, &org.owner.token, &json!({"role": "admin"})).await;
    assert_problem(res, StatusCode::CONFLICT, "last_owner").await;
    let res = app.delete(&me, &org.owner.token).await;
    assert_problem(res, StatusCode::CONFLICT, "last_owner").await;
    assert_eq!(
        app.raw_count(
            "select count(*) from memberships where organization_id = $1 and role = 'owner'",
            &[&org.id]
        )
        .await,
        1
    );

    // With a second owner, the first may step down.
    let second = app.member(&org, "second@acme.test", "owner").await;
    let res = app.patch(&me, &org.owner.token, &json!({"role": "admin"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.delete(&format!("/api/v1/orgs/{}/members/{}", org.id, second.id), &second.token).await;
    assert_problem(res, StatusCode::CONFLICT, "last_owner").await;
}

#[tokio::test]
async fn a_removed_member_loses_access_on_the_next_request() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let carol = app.member(&org, "carol@acme.test", "editor").await;
    let workspaces = format!("/api/v1/orgs/{}/workspaces", org.id);
    assert_eq!(app.get(&workspaces, &carol.token).await.status(), StatusCode::OK);

    let res = app.delete(&format!("/api/v1/orgs/{}/members/{}", org.id, carol.id), &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // Same token (still cached as valid): membership is read from the database every time.
    assert_problem(app.get(&workspaces, &carol.token).await, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_role_change_applies_on_the_next_request() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let carol = app.member(&org, "carol@acme.test", "editor").await;
    let workspaces = format!("/api/v1/orgs/{}/workspaces", org.id);
    assert_eq!(
        app.post(&workspaces, &carol.token, &json!({"name": "one"})).await.status(),
        StatusCode::CREATED
    );

    let res = app
        .patch(
            &format!("/api/v1/orgs/{}/members/{}", org.id, carol.id),
            &org.owner.token,
            &json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);

    let res = app.post(&workspaces, &carol.token, &json!({"name": "two"})).await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "workspaces:write");
    assert_eq!(app.raw_count("select count(*) from workspaces", &[]).await, 1);
}

#[tokio::test]
async fn a_member_restricted_to_some_workspaces_sees_and_touches_only_those() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let carol = app.member(&org, "carol@acme.test", "editor").await;
    let one = app.workspace(&org, "One").await;
    let two = app.workspace(&org, "Two").await;
    let restriction = format!("/api/v1/orgs/{}/members/{}/workspaces", org.id, carol.id);
    let base = format!("/api/v1/orgs/{}/workspaces", org.id);

    let res = app
        .request(
            reqwest::Method::PUT,
            &restriction,
            Some(&org.owner.token),
            Some(&json!({"workspace_ids": [one]})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["restricted"], true);

    let list: Value = app.get(&base, &carol.token).await.json().await.unwrap();
    let ids: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![one.to_string()]);
    assert_problem(app.get(&format!("{base}/{two}"), &carol.token).await, StatusCode::NOT_FOUND, "not_found")
        .await;
    let res = app.patch(&format!("{base}/{two}"), &carol.token, &json!({"name": "Mine now"})).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.raw_count("select count(*) from workspaces where name = 'Mine now'", &[]).await, 0);
    assert_eq!(
        app.patch(&format!("{base}/{one}"), &carol.token, &json!({"name": "One!"})).await.status(),
        StatusCode::OK
    );
    // The owner is not restricted.
    let list: Value = app.get(&base, &org.owner.token).await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);

    // Unknown workspaces are refused; an empty list lifts the restriction.
    let res = app
        .request(
            reqwest::Method::PUT,
            &restriction,
            Some(&org.owner.token),
            Some(&json!({"workspace_ids": [uuid::Uuid::new_v4()]})),
        )
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "workspace_ids");
    let res = app
        .request(
            reqwest::Method::PUT,
            &restriction,
            Some(&org.owner.token),
            Some(&json!({"workspace_ids": []})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let list: Value = app.get(&base, &carol.token).await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_members_profile_follows_their_sign_in_in_each_of_their_organizations_only() {
    let app = TestApp::spawn().await;
    let a = app.org_with_owner("profile-a").await;
    let b = app.org_with_owner("profile-b").await;
    let c = app.org_with_owner("profile-c").await;
    // One person, a member of A and B (not C).
    let subject = "person@profiles.test";
    let person = app.user(subject).await;
    for org in [&a, &b] {
        let res = app
            .post(
                &format!("/api/v1/orgs/{}/members", org.id),
                &org.owner.token,
                &json!({"user_id": person.id, "role": "viewer"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let member = |org: &crate::helpers::TestOrg| format!("/api/v1/orgs/{}/members/{}", org.id, person.id);
    let before = app.get(&member(&a), &a.owner.token).await;
    assert_eq!(before.status(), StatusCode::OK);
    let etag_before = before.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(before.json::<Value>().await.unwrap()["email"], subject);

    // They sign in again; their provider now reports another address and a name.
    let mut claims = app.valid_claims(subject);
    claims["email"] = json!("renamed@profiles.test");
    claims["name"] = json!("Renamed Person");
    let token = app.sign(app.eddsa_header(), &claims);
    assert_eq!(app.get("/api/v1/me", &token).await.status(), StatusCode::OK);

    // Both organizations show the new profile, with a new ETag; C never had a copy of it.
    for org in [&a, &b] {
        let res = app.get(&member(org), &org.owner.token).await;
        assert_eq!(res.status(), StatusCode::OK);
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            (body["email"].as_str(), body["display_name"].as_str()),
            (Some("renamed@profiles.test"), Some("Renamed Person"))
        );
        assert_ne!(etag, etag_before, "the member's ETag moves with their profile");
    }
    assert_eq!(app.get(&member(&c), &c.owner.token).await.status(), StatusCode::NOT_FOUND);
    let db = &app.rls_bypassing_admin;
    let copies: i64 = db
        .query_one("select count(*) from member_profiles where user_id = $1", &[&person.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(copies, 2, "one copy per membership");
    // Leaving an organization takes its copy with it.
    assert_eq!(app.delete(&member(&b), &b.owner.token).await.status(), StatusCode::NO_CONTENT);
    let left: Vec<uuid::Uuid> = db
        .query("select organization_id from member_profiles where user_id = $1", &[&person.id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![a.id]);
}
