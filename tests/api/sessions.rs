use chrono::Duration;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.request(
        reqwest::Method::POST,
        "/api/v1/auth/token",
        None,
        Some(&json!({"refresh_token": refresh_token})),
    )
    .await
}

/// The platform chain of the audit log (events of no organization): actions in order, and
/// whether the chain verifies.
async fn platform_events(app: &TestApp) -> (Vec<String>, bool) {
    let rows = app
        .rls_bypassing_admin
        .query("select action from audit_events where organization_id = '00000000-0000-0000-0000-000000000000' order by seq", &[])
        .await
        .unwrap();
    let broken = app
        .raw_count("select count(*) from app.audit_verify('00000000-0000-0000-0000-000000000000')", &[])
        .await;
    (rows.iter().map(|r| r.get(0)).collect(), broken == 0)
}

async fn session_row(app: &TestApp, session: uuid::Uuid) -> (Option<String>, bool) {
    let row = app
        .rls_bypassing_admin
        .query_one("select revoked_reason, revoked_at is not null from sessions where id = $1", &[&session])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_session_token_works_and_refresh_rotates_it() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@example.test").await;
    let pair = app.sign_in(&alice).await;

    let me: Value = app.get("/api/v1/me", &pair.access_token).await.json().await.unwrap();
    assert_eq!(me["id"], alice.id.to_string(), "the session token names the user directly");
    assert_eq!(app.raw_count("select count(*) from users", &[]).await, 1, "no user provisioned for it");

    let res = refresh(&app, &pair.refresh_token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let next: Value = res.json().await.unwrap();
    assert_eq!(next["token_type"], "Bearer");
    assert_eq!(next["session_id"], pair.session_id.to_string());
    assert_ne!(next["refresh_token"], pair.refresh_token.as_str());
    assert!(next["expires_in"].as_i64().unwrap() > 0);
    let access = next["access_token"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/me", access).await.status(), StatusCode::OK);

    // Only hashes are stored.
    let secret = pair.refresh_token.rsplit('_').next().unwrap().to_owned();
    let stored = app
        .raw_count("select count(*) from refresh_tokens where encode(secret_hash, 'hex') = $1", &[&secret])
        .await;
    assert_eq!(stored, 0);
    assert_eq!(app.raw_count("select count(*) from refresh_tokens", &[]).await, 2);
}

#[tokio::test]
async fn reusing_a_spent_refresh_token_revokes_the_whole_session() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@example.test").await;
    let pair = app.sign_in(&alice).await;
    let next: Value = refresh(&app, &pair.refresh_token).await.json().await.unwrap();

    // The stolen, spent token comes back.
    assert_problem(
        refresh(&app, &pair.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    assert_eq!(session_row(&app, pair.session_id).await, (Some("refresh_token_reuse".into()), true));

    // Every token of the session is dead at once: the legitimate refresh token and both access tokens.
    let res = refresh(&app, next["refresh_token"].as_str().unwrap()).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    for access in [pair.access_token.as_str(), next["access_token"].as_str().unwrap()] {
        assert_problem(app.get("/api/v1/me", access).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let (actions, intact) = platform_events(&app).await;
    assert_eq!(actions, vec!["auth.sign_in", "auth.refresh", "auth.refresh_token_reuse"]);
    assert!(intact, "the platform chain verifies");
    let actor = app
        .raw_count(
            "select count(*) from audit_events where actor_id = $1 and target_id = $2",
            &[&alice.id, &pair.session_id.to_string()],
        )
        .await;
    assert_eq!(actor, 3);
}

#[tokio::test]
async fn a_wrong_secret_or_a_malformed_token_revokes_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@example.test").await;
    let pair = app.sign_in(&alice).await;
    let (head, _) = pair.refresh_token.rsplit_once('_').unwrap();
    let guessed = format!("{head}_{}", "0".repeat(64));

    for bad in [guessed.as_str(), "tnty_rt_nope", "", &pair.access_token] {
        assert_problem(refresh(&app, bad).await, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    }
    assert_eq!(session_row(&app, pair.session_id).await, (None, false));
    assert_eq!(refresh(&app, &pair.refresh_token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_session_expires() {
    let app = TestApp::spawn_with(|s| s.auth.session_idle_timeout_secs = 3600).await;
    let alice = app.user("alice@example.test").await;
    let pair = app.sign_in(&alice).await;

    app.clock.advance(Duration::seconds(3601));

    assert_problem(
        refresh(&app, &pair.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    assert_eq!(session_row(&app, pair.session_id).await, (Some("expired".into()), true));
}

#[tokio::test]
async fn refreshing_keeps_a_session_alive_only_until_its_absolute_lifetime() {
    let app = TestApp::spawn_with(|s| {
        s.auth.session_idle_timeout_secs = 3600;
        s.auth.session_absolute_timeout_secs = 3 * 3600;
    })
    .await;
    let alice = app.user("alice@example.test").await;
    let mut token = app.sign_in(&alice).await.refresh_token;
    for _ in 0..2 {
        app.clock.advance(Duration::seconds(3000));
        let res = refresh(&app, &token).await;
        assert_eq!(res.status(), StatusCode::OK, "within the idle timeout");
        token = res.json::<Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_owned();
    }
    app.clock.advance(Duration::seconds(3000)); // 9,000 s after sign-in; the limit is 10,800
    let res = refresh(&app, &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert!(body["expires_in"].as_i64().unwrap() <= 600, "an access token never outlives its session");
    token = body["refresh_token"].as_str().unwrap().to_owned();

    app.clock.advance(Duration::seconds(3000)); // 12,000 s: past the absolute lifetime
    assert_problem(refresh(&app, &token).await, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
}

#[tokio::test]
async fn logout_ends_the_session_for_every_token_in_it() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@example.test").await;
    let pair = app.sign_in(&alice).await;

    let res = app.request(reqwest::Method::POST, "/api/v1/auth/logout", Some(&pair.access_token), None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    assert_eq!(session_row(&app, pair.session_id).await, (Some("logout".into()), true));
    assert_problem(app.get("/api/v1/me", &pair.access_token).await, StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    assert_problem(
        refresh(&app, &pair.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;

    // A token without a session has nothing to sign out of.
    let res = app.request(reqwest::Method::POST, "/api/v1/auth/logout", Some(&alice.token), None).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "no_session").await;
    assert_eq!(
        platform_events(&app).await,
        (vec!["auth.sign_in".to_owned(), "auth.logout".to_owned()], true)
    );
}

#[tokio::test]
async fn people_list_and_revoke_their_own_sessions_only() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@example.test").await;
    let bob = app.user("bob@example.test").await;
    let laptop = app.sign_in(&alice).await;
    let phone = app.sign_in(&alice).await;
    let bobs = app.sign_in(&bob).await;

    let list: Value = app.get("/api/v1/me/sessions", &laptop.access_token).await.json().await.unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "bob's session is not listed");
    let current: Vec<bool> = items.iter().map(|s| s["current"].as_bool().unwrap()).collect();
    assert_eq!(current, vec![true, false]);
    assert_eq!(items[0]["provider"], "test");

    // Bob's session id, from Alice, is just not found.
    let res = app.delete(&format!("/api/v1/me/sessions/{}", bobs.session_id), &laptop.access_token).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(session_row(&app, bobs.session_id).await, (None, false));

    let res = app.delete(&format!("/api/v1/me/sessions/{}", phone.session_id), &laptop.access_token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.get("/api/v1/me", &phone.access_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_eq!(app.get("/api/v1/me", &laptop.access_token).await.status(), StatusCode::OK);
    assert_eq!(session_row(&app, phone.session_id).await, (Some("revoked_by_user".into()), true));
}

#[tokio::test]
async fn a_removed_member_loses_access_with_a_session_token_at_once() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let carol = app.member(&org, "carol@acme.test", "editor").await;
    let session = app.sign_in(&carol).await;
    let path = format!("/api/v1/orgs/{}/workspaces", org.id);
    assert_eq!(app.get(&path, &session.access_token).await.status(), StatusCode::OK);

    app.delete(&format!("/api/v1/orgs/{}/members/{}", org.id, carol.id), &org.owner.token).await;

    assert_problem(app.get(&path, &session.access_token).await, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_jwks_publishes_current_and_retired_keys_and_both_verify() {
    // Rotation: the old key becomes "previous"; tokens it signed keep working until they expire.
    let old = TestApp::spawn().await;
    let alice = old.user("alice@example.test").await;
    let old_key_file = old.key_file.clone();
    let app = TestApp::spawn_with(|s| s.auth.previous_signing_key_files = vec![old_key_file]).await;

    let jwks = app.public_json("/.well-known/jwks.json").await;
    let kids: Vec<&str> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, vec![app.kid.as_str(), old.kid.as_str()]);
    assert!(
        jwks["keys"].as_array().unwrap().iter().all(|k| k["kty"] == "OKP" && k.get("d").is_none()),
        "public keys only"
    );

    assert_eq!(
        app.get("/api/v1/me", &alice.token).await.status(),
        StatusCode::OK,
        "a token signed by the retired key"
    );
    let fresh = app.sign_in(&app.user("bob@example.test").await).await;
    let header = jsonwebtoken::decode_header(&fresh.access_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(app.kid.as_str()), "new tokens use the current key");
}
