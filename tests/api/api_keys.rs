use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, admin_url, assert_problem, captured_logs};

#[tokio::test]
async fn a_key_is_shown_once_and_acts_within_its_scopes_in_its_organization() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    app.workspace(&org, "Production").await;
    let base = format!("/api/v1/orgs/{}/api-keys", org.id);

    let res = app
        .post(
            &base,
            &org.owner.token,
            &json!({"name": "CI", "scopes": ["workspaces:read", "workspaces:write"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    let key = created["secret"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tnty_") && key.len() == 109, "{key}");
    assert_eq!(created["scopes"], json!(["workspaces:read", "workspaces:write"]));
    assert_eq!(created["created_by"], org.owner.id.to_string());

    let list: Value = app.get(&base, &org.owner.token).await.json().await.unwrap();
    assert_eq!(list["items"][0]["id"], created["id"]);
    assert!(list["items"][0].get("secret").is_none(), "the key is never shown again");

    // Read and write within scope; the row lands in the key's organization.
    let workspaces = format!("/api/v1/orgs/{}/workspaces", org.id);
    let page: Value = app.get(&workspaces, &key).await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let res = app.post(&workspaces, &key, &json!({"name": "Made by CI"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        app.raw_count(
            "select count(*) from workspaces where organization_id = $1 and name = 'Made by CI'",
            &[&org.id]
        )
        .await,
        1
    );

    // Outside its scopes: 403 naming the permission; user-only routes: 403.
    let body = assert_problem(
        app.delete(&format!("{workspaces}/{}", uuid::Uuid::new_v4()), &key).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(body["permission"], "workspaces:delete");
    let body = assert_problem(
        app.get(&format!("/api/v1/orgs/{}/members", org.id), &key).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(body["permission"], "members:read");
    assert_problem(app.get("/api/v1/me", &key).await, StatusCode::FORBIDDEN, "user_required").await;
    assert_problem(
        app.post(&base, &key, &json!({"name": "x", "scopes": ["workspaces:read"]})).await,
        StatusCode::FORBIDDEN,
        "user_required",
    )
    .await;
}

#[tokio::test]
async fn a_key_is_404_on_another_organizations_routes() {
    let app = TestApp::spawn().await;
    let a = app.org_with_owner("org-a").await;
    let b = app.org_with_owner("org-b").await;
    let b_workspace = app.workspace(&b, "B's").await;
    let (_, key) = app.api_key(&a, &["workspaces:read", "workspaces:write", "org:read"]).await;

    for path in [
        format!("/api/v1/orgs/{}", b.id),
        format!("/api/v1/orgs/{}/workspaces", b.id),
        format!("/api/v1/orgs/{}/workspaces/{b_workspace}", b.id),
    ] {
        assert_problem(app.get(&path, &key).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    let res = app.post(&format!("/api/v1/orgs/{}/workspaces", b.id), &key, &json!({"name": "planted"})).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.raw_count("select count(*) from workspaces where name = 'planted'", &[]).await, 0);
    assert_eq!(app.get(&format!("/api/v1/orgs/{}", a.id), &key).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn scopes_must_be_permissions_the_creator_holds() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let admin = app.member(&org, "admin@acme.test", "admin").await;
    let member = app.member(&org, "member@acme.test", "editor").await;
    let base = format!("/api/v1/orgs/{}/api-keys", org.id);

    let res = app
        .post(&base, &admin.token, &json!({"name": "k", "scopes": ["workspaces:read", "org:delete"]}))
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "scopes[1]");
    let res = app.post(&base, &admin.token, &json!({"name": "k", "scopes": []})).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = app
        .post(
            &base,
            &admin.token,
            &json!({"name": "k", "scopes": ["workspaces:read"], "expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "expires_at");

    let res = app.post(&base, &member.token, &json!({"name": "k", "scopes": ["workspaces:read"]})).await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "api_keys:manage");
    assert_eq!(app.raw_count("select count(*) from api_keys", &[]).await, 0);
}

#[tokio::test]
async fn revoked_and_expired_keys_are_refused_on_their_next_request() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let workspaces = format!("/api/v1/orgs/{}/workspaces", org.id);
    let (revoked_id, revoked) = app.api_key(&org, &["workspaces:read"]).await;
    let (expiring_id, expiring) = app.api_key(&org, &["workspaces:read"]).await;
    // Both are verified and cached by a first request.
    assert_eq!(app.get(&workspaces, &revoked).await.status(), StatusCode::OK);
    assert_eq!(app.get(&workspaces, &expiring).await.status(), StatusCode::OK);

    let res = app.delete(&format!("/api/v1/orgs/{}/api-keys/{revoked_id}", org.id), &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    app.rls_bypassing_admin
        .execute(
            "update api_keys set expires_at = now() - interval '1 second' where id = $1",
            &[&expiring_id],
        )
        .await
        .unwrap();

    assert_problem(app.get(&workspaces, &revoked).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_problem(app.get(&workspaces, &expiring).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = app
        .delete(&format!("/api/v1/orgs/{}/api-keys/{}", org.id, uuid::Uuid::new_v4()), &org.owner.token)
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn malformed_keys_and_bad_checksums_are_refused_without_a_database_lookup() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let (_, key) = app.api_key(&org, &["workspaces:read"]).await;
    let workspaces = format!("/api/v1/orgs/{}/workspaces", org.id);
    let before = app.state.auth.api_key_lookups();

    let mut typo = key.clone().into_bytes();
    typo[50] = if typo[50] == b'0' { b'1' } else { b'0' };
    let typo = String::from_utf8(typo).unwrap();
    for bad in [typo.as_str(), &key[..108], "tnty_", &format!("{key}0"), &key.to_uppercase()] {
        assert_problem(app.get(&workspaces, bad).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    assert_eq!(app.state.auth.api_key_lookups(), before, "refused before reaching the database");

    // A well-formed key with the wrong secret is looked up, and refused.
    let forged = {
        let body = format!("tnty_{}{}", &key[5..37], "ab".repeat(32));
        format!("{body}{:08x}", crc32fast::hash(body.as_bytes()))
    };
    assert_problem(app.get(&workspaces, &forged).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(app.state.auth.api_key_lookups(), before + 1);
}

#[tokio::test]
async fn the_plaintext_key_is_in_neither_the_database_nor_the_logs_and_use_is_recorded() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let (id, key) = app.api_key(&org, &["workspaces:read"]).await;
    let secret_hex = &key[37..101];
    assert_eq!(app.get(&format!("/api/v1/orgs/{}/workspaces", org.id), &key).await.status(), StatusCode::OK);
    // Also a refused attempt, which is logged.
    app.get(&format!("/api/v1/orgs/{}/workspaces", org.id), &key[..108]).await;

    let bin = std::process::Command::new(".dev/pg.sh").arg("bindir").output().unwrap();
    let pg_dump = format!("{}/pg_dump", String::from_utf8(bin.stdout).unwrap().trim());
    let dump = std::process::Command::new(pg_dump).arg(admin_url(&app.database)).output().unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains(&id.to_string()), "the dump holds the key's row");
    assert!(!dump.contains(secret_hex) && !dump.contains(&key[..60]), "no plaintext in pg_dump");

    let logs = captured_logs();
    assert!(logs.contains("api_key.created"), "security events are logged");
    assert!(!logs.contains(secret_hex), "no secret in the logs");

    // last_used_at is written off the request path; wait for it briefly.
    let mut used = 0;
    for _ in 0..50 {
        used = app
            .raw_count("select count(*) from api_keys where id = $1 and last_used_at is not null", &[&id])
            .await;
        if used == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(used, 1);
}
