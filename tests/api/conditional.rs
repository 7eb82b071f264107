//! Optimistic concurrency and conditional requests: a strong ETag per resource (its row
//! version), If-Match on writes (412 on a stale tag, changing nothing), 428 for publishing an
//! edited draft without one, and 304 for a GET whose copy is current.

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestOrg, assert_problem};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(header::HeaderName, &str)],
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app.http.request(method, format!("{}{path}", app.address)).bearer_auth(token);
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.expect("request failed")
}

fn etag_of(res: &reqwest::Response) -> String {
    let tag = res.headers().get(header::ETAG).expect("an ETag").to_str().unwrap().to_owned();
    assert!(tag.starts_with('"') && tag.ends_with('"') && !tag.starts_with("W/"), "a strong tag: {tag}");
    tag
}

async fn draft(app: &TestApp, org: &TestOrg, workspace: Uuid) -> (String, String) {
    let base = format!("/api/v1/orgs/{}/workspaces/{workspace}/workflows", org.id);
    let res = app
        .post(
            &base,
            &org.owner.token,
            &json!({"name": "wf", "definition": "steps:\n  - id: a\n    uses: http.get\n"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let tag = etag_of(&res);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    (format!("{base}/{id}"), tag)
}

#[tokio::test]
async fn two_editors_of_a_draft_cannot_overwrite_each_other() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let workspace = app.workspace(&org, "Production").await;
    let (path, created) = draft(&app, &org, workspace).await;
    let token = &org.owner.token;

    // Both editors read the same version.
    let res = app.get(&path, token).await;
    assert_eq!(etag_of(&res), created, "GET shows the tag the create answered with");

    let first = json!({"definition": "steps:\n  - id: first\n    uses: http.get\n"});
    let res = send(&app, Method::PATCH, &path, token, &[(header::IF_MATCH, &created)], Some(&first)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let after_first = etag_of(&res);
    assert_ne!(after_first, created, "a change moves the version");

    // The second editor still holds the old tag: refused, nothing changed.
    let second = json!({"definition": "steps:\n  - id: second\n    uses: http.get\n"});
    let res = send(&app, Method::PATCH, &path, token, &[(header::IF_MATCH, &created)], Some(&second)).await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let body: Value = app.get(&path, token).await.json().await.unwrap();
    assert!(body["definition"].as_str().unwrap().contains("first"), "{body}");
    let drafts = app.raw_count("select count(*) from workflows where draft like '%second%'", &[]).await;
    assert_eq!(drafts, 0);

    // A list of tags matches any of them; a weak tag never satisfies If-Match; * matches.
    let list = format!("\"1\", {after_first}");
    let res =
        send(&app, Method::PATCH, &path, token, &[(header::IF_MATCH, &list)], Some(&json!({"name": "wf2"})))
            .await;
    assert_eq!(res.status(), StatusCode::OK);
    let current = etag_of(&res);
    let weak = format!("W/{current}");
    let res =
        send(&app, Method::PATCH, &path, token, &[(header::IF_MATCH, &weak)], Some(&json!({"name": "wf3"})))
            .await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let res =
        send(&app, Method::PATCH, &path, token, &[(header::IF_MATCH, "*")], Some(&json!({"name": "wf3"})))
            .await;
    assert_eq!(res.status(), StatusCode::OK);

    // A malformed precondition is refused rather than ignored.
    for bad in ["12", "\"1", "W/1"] {
        let res =
            send(&app, Method::PATCH, &path, token, &[(header::IF_MATCH, bad)], Some(&json!({"name": "x"})))
                .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "invalid_precondition").await;
    }
    let names = app.raw_count("select count(*) from workflows where name = 'x'", &[]).await;
    assert_eq!(names, 0);
}

#[tokio::test]
async fn publishing_an_edited_draft_needs_the_tag_of_the_reviewed_draft() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let workspace = app.workspace(&org, "Production").await;
    let token = &org.owner.token;

    // Created and published at once (a pipeline): no edit in between, no precondition needed.
    let (path, _) = draft(&app, &org, workspace).await;
    let res = send(&app, Method::POST, &format!("{path}/publish"), token, &[], None).await;
    assert_eq!(res.status(), StatusCode::CREATED);

    // After an edit, publishing without If-Match is 428 and publishes nothing.
    let res = app
        .patch(&path, token, &json!({"definition": "steps:\n  - id: reviewed\n    uses: http.get\n"}))
        .await;
    let reviewed = etag_of(&res);
    let res = send(&app, Method::POST, &format!("{path}/publish"), token, &[], None).await;
    assert_problem(res, StatusCode::PRECONDITION_REQUIRED, "precondition_required").await;

    // Someone edits after the review: the reviewer's tag no longer publishes.
    let res = app
        .patch(&path, token, &json!({"definition": "steps:\n  - id: unreviewed\n    uses: http.get\n"}))
        .await;
    let latest = etag_of(&res);
    let res =
        send(&app, Method::POST, &format!("{path}/publish"), token, &[(header::IF_MATCH, &reviewed)], None)
            .await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let versions = app.raw_count("select count(*) from workflow_versions", &[]).await;
    assert_eq!(versions, 1, "only the first publication");

    // With the current tag it publishes exactly what that tag names.
    let res =
        send(&app, Method::POST, &format!("{path}/publish"), token, &[(header::IF_MATCH, &latest)], None)
            .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let version: Value = res.json().await.unwrap();
    assert_eq!(version["version"], 2);
    assert!(version["definition"].as_str().unwrap().contains("unreviewed"));
    // Published: the draft is no longer "edited since", so a plain publish works again.
    let res = send(&app, Method::POST, &format!("{path}/publish"), token, &[], None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_current_copy_gets_304_and_a_stale_or_foreign_one_does_not() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let other = app.org_with_owner("other").await;
    let workspace = app.workspace(&org, "Production").await;
    let workflow = app.workflow(&org, workspace).await;
    let run = app.run(&org, workspace, workflow).await;
    let token = &org.owner.token;
    let run_path = format!("/api/v1/orgs/{}/workspaces/{workspace}/runs/{run}", org.id);

    let res = app.get(&run_path, token).await;
    let tag = etag_of(&res);
    let res = send(&app, Method::GET, &run_path, token, &[(header::IF_NONE_MATCH, &tag)], None).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag_of(&res), tag);
    assert!(res.bytes().await.unwrap().is_empty(), "no body");
    // Weak comparison for If-None-Match: W/ of the same tag is current too.
    let weak = format!("W/{tag}");
    let res = send(&app, Method::GET, &run_path, token, &[(header::IF_NONE_MATCH, &weak)], None).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);

    // The run changes (cancelled): the old tag now gets the full answer.
    let res = app.request(Method::POST, &format!("{run_path}/cancel"), Some(token), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(&app, Method::GET, &run_path, token, &[(header::IF_NONE_MATCH, &tag)], None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_ne!(etag_of(&res), tag);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "cancelled");

    // Another tenant with the right tag learns nothing: the same 404 as for a random id.
    let res =
        send(&app, Method::GET, &run_path, &other.owner.token, &[(header::IF_NONE_MATCH, "*")], None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // A 304 is still authorized: a viewer without workflows:read gets no hint either.
    let org_path = format!("/api/v1/orgs/{}", org.id);
    let res = app.get(&org_path, token).await;
    let org_tag = etag_of(&res);
    let res =
        send(&app, Method::GET, &org_path, &other.owner.token, &[(header::IF_NONE_MATCH, &org_tag)], None)
            .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn if_match_guards_deletes_and_upserts_and_a_stale_tag_changes_nothing() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let other = app.org_with_owner("other").await;
    let token = &org.owner.token;
    let workspace = app.workspace(&org, "Production").await;
    let path = format!("/api/v1/orgs/{}/workspaces/{workspace}", org.id);
    let tag = etag_of(&app.get(&path, token).await);
    let res = send(&app, Method::PATCH, &path, token, &[], Some(&json!({"name": "Renamed"}))).await;
    let renamed = etag_of(&res);

    // DELETE with the stale tag: 412 and the workspace stays.
    let res = send(&app, Method::DELETE, &path, token, &[(header::IF_MATCH, &tag)], None).await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let count = app.raw_count("select count(*) from workspaces where id = $1", &[&workspace]).await;
    assert_eq!(count, 1);
    // Another tenant's workspace with any tag is a 404, never a 412 (that would confirm it exists).
    let foreign = format!("/api/v1/orgs/{}/workspaces/{workspace}", other.id);
    let res =
        send(&app, Method::DELETE, &foreign, &other.owner.token, &[(header::IF_MATCH, &renamed)], None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res =
        send(&app, Method::DELETE, &path, &other.owner.token, &[(header::IF_MATCH, "\"1\"")], None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = send(&app, Method::DELETE, &path, token, &[(header::IF_MATCH, &renamed)], None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // A role: PATCH changing only its permissions still moves its version.
    let role = app.custom_role(&org, "support", &["members:read"]).await;
    let role_path = format!("/api/v1/orgs/{}/roles/{role}", org.id);
    let res = app.get(&role_path, token).await;
    assert_eq!(res.status(), StatusCode::OK, "the Location of a role is a real GET");
    let role_tag = etag_of(&res);
    let res = send(
        &app,
        Method::PATCH,
        &role_path,
        token,
        &[(header::IF_MATCH, &role_tag)],
        Some(&json!({"permissions": ["members:read", "workspaces:read"]})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_ne!(etag_of(&res), role_tag);
    let res = send(&app, Method::DELETE, &role_path, token, &[(header::IF_MATCH, &role_tag)], None).await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    assert_eq!(app.raw_count("select count(*) from roles where id = $1", &[&role]).await, 1);

    // A flag setting: If-None-Match: * creates only; a second create-only PUT is 412.
    let flag = "/api/v1/orgs/".to_owned() + &org.id.to_string() + "/flags/new-dashboard";
    app.rls_bypassing_admin
        .execute("insert into feature_flags (key) values ('new-dashboard') on conflict do nothing", &[])
        .await
        .unwrap();
    let config = json!({"enabled": true});
    let res = send(&app, Method::PUT, &flag, token, &[(header::IF_NONE_MATCH, "*")], Some(&config)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let flag_tag = etag_of(&res);
    let off = json!({"enabled": false});
    let res = send(&app, Method::PUT, &flag, token, &[(header::IF_NONE_MATCH, "*")], Some(&off)).await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let res = send(&app, Method::PUT, &flag, token, &[(header::IF_MATCH, "\"1\"")], Some(&off)).await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let enabled = app
        .raw_count(
            "select count(*) from organization_flags where flag_key = 'new-dashboard' and enabled",
            &[],
        )
        .await;
    assert_eq!(enabled, 1, "still as first set");
    let res = send(&app, Method::PUT, &flag, token, &[(header::IF_MATCH, &flag_tag)], Some(&off)).await;
    assert_eq!(res.status(), StatusCode::OK);

    // A member: the Location of an added member is a real GET with a tag; a stale tag is refused.
    let member = app.member(&org, "m@example.com", "viewer").await;
    let member_path = format!("/api/v1/orgs/{}/members/{}", org.id, member.id);
    let res = app.get(&member_path, token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let member_tag = etag_of(&res);
    let res = send(
        &app,
        Method::PATCH,
        &member_path,
        token,
        &[(header::IF_MATCH, &member_tag)],
        Some(&json!({"role": "editor"})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(&app, Method::DELETE, &member_path, token, &[(header::IF_MATCH, &member_tag)], None).await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let role_now: String = app
        .rls_bypassing_admin
        .query_one("select role from memberships where user_id = $1", &[&member.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(role_now, "editor");
}

#[tokio::test]
async fn every_location_a_create_answers_with_is_a_get_with_the_same_tag() {
    let app = TestApp::spawn_with(crate::helpers::with_trusted_idp).await;
    let org = app.org_with_owner("acme").await;
    let token = &org.owner.token;
    let base = format!("/api/v1/orgs/{}", org.id);
    let creates = [
        (format!("{base}/api-keys"), json!({"name": "ci", "scopes": ["workspaces:read"]})),
        (format!("{base}/invitations"), json!({"email": "new@example.com", "role": "viewer"})),
        (format!("{base}/roles"), json!({"name": "support", "permissions": ["members:read"]})),
        (format!("{base}/workspaces"), json!({"name": "Staging"})),
        (
            format!("{base}/provider-grants"),
            json!({"provider": "issuer:https://idp.example.test", "role": "viewer"}),
        ),
    ];
    for (path, body) in creates {
        let res = app.post(&path, token, &body).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{path}");
        let tag = etag_of(&res);
        let location = res.headers()[header::LOCATION].to_str().unwrap().to_owned();
        let got = app.get(&location, token).await;
        assert_eq!(got.status(), StatusCode::OK, "{location}");
        assert_eq!(etag_of(&got), tag, "{location}");
        let res = send(&app, Method::GET, &location, token, &[(header::IF_NONE_MATCH, &tag)], None).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{location}");
    }
}
