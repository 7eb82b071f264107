//! The web console's session on the HTTP level: its cookie in place of a bearer token, CSRF on
//! every write, sign-out, and what an attacker's first tries get. (The browser journey itself is
//! `tests/console/journey.py`, run by `make console`.)

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_problem};

/// A console session for `user`, started the way a pasted token starts one; its cookie header.
async fn console_cookie(app: &TestApp, user: &TestUser) -> (String, Uuid) {
    let context = tenantry::auth::sessions::SignInContext {
        provider: "test-console",
        user_agent: Some("tests"),
        ip: None,
    };
    let session = app
        .state
        .sessions
        .start_console_verified(tenantry::domain::UserId(user.id), &context)
        .await
        .expect("starting a console session");
    (format!("tenantry_console={}", session.cookie), session.session_id)
}

async fn with_cookie(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app.http.request(method, format!("{}{path}", app.address)).header("Cookie", cookie);
    if let Some(csrf) = csrf {
        req = req.header("X-CSRF-Token", csrf);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    req.send().await.unwrap()
}

async fn csrf_of(app: &TestApp, cookie: &str) -> String {
    let res = with_cookie(app, Method::GET, "/console/session", cookie, None, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["signed_in"], true, "{body}");
    body["csrf_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_cookie_acts_as_its_user_and_every_write_needs_the_csrf_token() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("console-csrf").await;
    let (cookie, session) = console_cookie(&app, &org.owner).await;

    let me: Value =
        with_cookie(&app, Method::GET, "/api/v1/me", &cookie, None, None).await.json().await.unwrap();
    assert_eq!(me["id"], org.owner.id.to_string());
    let csrf = csrf_of(&app, &cookie).await;
    assert_eq!(csrf.len(), 64);
    let info: Value =
        with_cookie(&app, Method::GET, "/console/session", &cookie, None, None).await.json().await.unwrap();
    assert_eq!(info["session_id"], session.to_string());
    assert!(!info.to_string().contains("tnty_cs_"), "the session document never carries the cookie: {info}");

    let path = format!("/api/v1/orgs/{}/workspaces", org.id);
    let body = json!({"name": "forged"});
    for token in [None, Some(""), Some("0".repeat(64).as_str()), Some(&csrf[..63])] {
        let res = with_cookie(&app, Method::POST, &path, &cookie, token, Some(&body)).await;
        assert_problem(res, StatusCode::FORBIDDEN, "csrf_rejected").await;
    }
    // Another session's token does not fit this cookie.
    let (other_cookie, _) = console_cookie(&app, &org.owner).await;
    let other_csrf = csrf_of(&app, &other_cookie).await;
    let res = with_cookie(&app, Method::POST, &path, &cookie, Some(&other_csrf), Some(&body)).await;
    assert_problem(res, StatusCode::FORBIDDEN, "csrf_rejected").await;
    let res =
        with_cookie(&app, Method::DELETE, &format!("/api/v1/orgs/{}", org.id), &cookie, None, None).await;
    assert_problem(res, StatusCode::FORBIDDEN, "csrf_rejected").await;
    assert_eq!(app.raw_count("select count(*) from workspaces where name = 'forged'", &[]).await, 0);
    assert_eq!(app.raw_count("select count(*) from organizations where id = $1", &[&org.id]).await, 1);

    let res = with_cookie(&app, Method::POST, &path, &cookie, Some(&csrf), Some(&body)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(app.raw_count("select count(*) from workspaces where name = 'forged'", &[]).await, 1);
    // A bearer request needs no CSRF token (no browser sends it on its own).
    let res = app.post(&path, &org.owner.token, &json!({"name": "bearer"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn another_tenants_objects_are_not_found_through_the_cookie_either() {
    let app = TestApp::spawn().await;
    let mine = app.org_with_owner("console-mine").await;
    let theirs = app.org_with_owner("console-theirs").await;
    let their_ws = app.workspace(&theirs, "Secret plans").await;
    let (cookie, _) = console_cookie(&app, &mine.owner).await;
    let csrf = csrf_of(&app, &cookie).await;
    let crafted = format!("/api/v1/orgs/{}/workspaces/{their_ws}", theirs.id);
    let random = format!("/api/v1/orgs/{}/workspaces/{}", Uuid::new_v4(), Uuid::new_v4());
    let mut bodies = Vec::new();
    for path in [&crafted, &random] {
        let res = with_cookie(&app, Method::GET, path, &cookie, None, None).await;
        bodies.push(crate::helpers::without_request_id(
            assert_problem(res, StatusCode::NOT_FOUND, "not_found").await,
        ));
        let res =
            with_cookie(&app, Method::PATCH, path, &cookie, Some(&csrf), Some(&json!({"name": "mine now"})))
                .await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(app.raw_count("select count(*) from workspaces where name = 'Secret plans'", &[]).await, 1);
}

#[tokio::test]
async fn signing_out_ends_the_session_in_the_database_at_once() {
    let app = TestApp::spawn().await;
    let user = app.user("console-out@example.test").await;
    let (cookie, session) = console_cookie(&app, &user).await;
    let csrf = csrf_of(&app, &cookie).await;
    // Cached as verified from here on: the sign-out must not wait for the cache.
    assert_eq!(
        with_cookie(&app, Method::GET, "/api/v1/me", &cookie, None, None).await.status(),
        StatusCode::OK
    );

    let res = with_cookie(&app, Method::POST, "/console/session/logout", &cookie, None, None).await;
    assert_problem(res, StatusCode::FORBIDDEN, "csrf_rejected").await;
    let res = app
        .http
        .post(format!("{}/console/session/logout", app.address))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", &csrf)
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::FORBIDDEN, "csrf_rejected").await;
    assert_eq!(
        app.raw_count("select count(*) from sessions where id = $1 and revoked_at is null", &[&session])
            .await,
        1
    );

    let res = with_cookie(&app, Method::POST, "/console/session/logout", &cookie, Some(&csrf), None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let removal = res.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(removal.starts_with("tenantry_console=;") && removal.contains("Max-Age=0"), "{removal}");
    let row = app
        .rls_bypassing_admin
        .query_one("select revoked_reason from sessions where id = $1", &[&session])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("logout"));
    let res = with_cookie(&app, Method::GET, "/api/v1/me", &cookie, None, None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let info: Value =
        with_cookie(&app, Method::GET, "/console/session", &cookie, None, None).await.json().await.unwrap();
    assert_eq!(info["signed_in"], false);
    let actions = app
        .raw_count(
            "select count(*) from audit_events where action = 'auth.logout' and target_id = $1",
            &[&session.to_string()],
        )
        .await;
    assert_eq!(actions, 1, "the sign-out is audited");
}

#[tokio::test]
async fn forged_expired_and_foreign_credentials_get_nothing() {
    let app = TestApp::spawn().await;
    let user = app.user("console-forge@example.test").await;
    let (cookie, session) = console_cookie(&app, &user).await;
    let value = cookie.strip_prefix("tenantry_console=").unwrap();
    let (id_part, secret) = value.strip_prefix("tnty_cs_").unwrap().split_once('_').unwrap();
    let flipped = format!("{}{}", &secret[..63], if secret.ends_with('0') { '1' } else { '0' });
    for forged in [
        "tenantry_console=".to_owned(),
        "tenantry_console=tnty_cs_".to_owned(),
        format!("tenantry_console=tnty_cs_{id_part}_{flipped}"),
        format!("tenantry_console=tnty_cs_{}_{secret}", Uuid::new_v4().simple()),
        format!("tenantry_console={}", "x".repeat(9000)),
        format!("tenantry_console=tnty_cs_{id_part}_{secret}' or '1'='1"),
        format!("__Host-tenantry_console=tnty_cs_{id_part}_{flipped}"),
    ] {
        let res = with_cookie(&app, Method::GET, "/api/v1/me", &forged, None, None).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let info: Value = with_cookie(&app, Method::GET, "/console/session", &forged, None, None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(info["signed_in"], false, "{forged:.60}");
    }
    // A session past its idle timeout is refused on its next lookup (this cookie was never used).
    let (idle_cookie, idle_session) = console_cookie(&app, &user).await;
    app.rls_bypassing_admin
        .execute(
            "update sessions set idle_expires_at = now() - interval '1 second' where id = $1",
            &[&idle_session],
        )
        .await
        .unwrap();
    let res = with_cookie(&app, Method::GET, "/api/v1/me", &idle_cookie, None, None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // A bearer token is not a console session: /console/session does not hand it a CSRF token.
    let res = app.get("/console/session", &user.token).await;
    let info: Value = res.json().await.unwrap();
    assert_eq!(info["signed_in"], false);
    assert!(info.get("csrf_token").is_none());
    // The original session still works: no forged attempt touched it.
    assert_eq!(
        with_cookie(&app, Method::GET, "/api/v1/me", &cookie, None, None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.raw_count("select count(*) from sessions where id = $1 and revoked_at is null", &[&session])
            .await,
        1
    );
}

#[tokio::test]
async fn pasting_a_token_is_for_people_in_development_and_starts_an_audited_session() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("console-paste").await;
    let url = format!("{}/console/session/token", app.address);
    let res = app.http.post(&url).json(&json!({"token": org.owner.token})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let set_cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(flag), "{flag} in {set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(!cookie.contains(&org.owner.token), "the cookie is not the token");
    let me: Value =
        with_cookie(&app, Method::GET, "/api/v1/me", &cookie, None, None).await.json().await.unwrap();
    assert_eq!(me["id"], org.owner.id.to_string());
    let signed_in = app
        .raw_count(
            "select count(*) from sessions s join audit_events e on e.target_id = s.id::text and e.action = 'auth.sign_in' \
             where s.user_id = $1 and s.provider = 'development-token' and s.console_secret_hash is not null",
            &[&org.owner.id],
        )
        .await;
    assert_eq!(signed_in, 1, "a console session, audited as a sign-in");

    // Signing in again from a browser holding a console cookie ends that cookie's session.
    let res = app
        .http
        .post(&url)
        .header("Cookie", &cookie)
        .json(&json!({"token": org.owner.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = with_cookie(&app, Method::GET, "/api/v1/me", &cookie, None, None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "the earlier session ended");
    assert_eq!(
        app.raw_count(
            "select count(*) from sessions where user_id = $1 and provider = 'development-token' and revoked_reason = 'logout'",
            &[&org.owner.id]
        )
        .await,
        1
    );

    let (_, key) = app.api_key(&org, &["workspaces:read"]).await;
    let res = app.http.post(&url).json(&json!({"token": key})).send().await.unwrap();
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    for token in ["", "not-a-token", &"a".repeat(9000)] {
        let res = app.http.post(&url).json(&json!({"token": token})).send().await.unwrap();
        assert!(
            matches!(res.status(), StatusCode::UNAUTHORIZED | StatusCode::UNPROCESSABLE_ENTITY),
            "{token:.20}"
        );
    }
    let res = app
        .http
        .post(&url)
        .body("token=x")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "a cross-site form cannot send it: {}", res.status());
    let res = app
        .http
        .post(&url)
        .header("Sec-Fetch-Site", "cross-site")
        .json(&json!({"token": org.owner.token}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::FORBIDDEN, "csrf_rejected").await;
    assert_eq!(
        app.raw_count(
            "select count(*) from sessions where user_id = $1 and provider = 'development-token'",
            &[&org.owner.id]
        )
        .await,
        2,
        "no refused attempt started a session (the two are the sign-in and the sign-in again)"
    );

    let master_keys = app.master_keys_file();
    let production = app
        .sibling(|s| {
            s.provider_keys.master_keys_file = master_keys;
            s.environment = tenantry::config::Environment::Production;
            s.database_tls.allow_plaintext = true;
        })
        .await;
    let res = production
        .http
        .post(format!("{}/console/session/token", production.address))
        .json(&json!({"token": org.owner.token}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let info = production.public_json("/console/session").await;
    assert_eq!(info["token_sign_in"], false);
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_the_api_cannot_mint_its_sessions() {
    let app = TestApp::spawn().await;
    for (path, kind) in
        [("/console/", "text/html"), ("/console/app.js", "text/javascript"), ("/console/app.css", "text/css")]
    {
        let res = app.http.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let header = |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        assert!(header("content-type").unwrap().starts_with(kind), "{path}");
        let csp = header("content-security-policy").unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(header("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
    }
    let html = app.http.get(format!("{}/console/", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("style="), "nothing inline in the page");
    let js =
        app.http.get(format!("{}/console/app.js", app.address)).send().await.unwrap().text().await.unwrap();
    for sink in
        ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "localStorage.setItem"]
    {
        assert!(!js.contains(sink), "the console's script uses no {sink}");
    }
    // The API's own sign-in cannot be pointed at the console's marker (which would skip the
    // registered-redirect check); an unknown console provider is a 404.
    let res = app
        .http
        .get(format!("{}/api/v1/auth/test/login?redirect_to=console:", app.address))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(res.status(), StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY),
        "{}",
        res.status()
    );
    let res = app.http.get(format!("{}/console/login/nope", app.address)).send().await.unwrap();
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn strangers_flooding_the_consoles_entries_are_limited_and_hostile_names_are_404() {
    let app = TestApp::spawn_with(|s| s.rate_limits.unauthenticated_per_minute = 4).await;
    let long = "p".repeat(5000);
    for path in
        ["/console/login/%3Cscript%3E", &format!("/console/login/{long}"), "/console/login/..%2F..%2Fetc"]
    {
        let res = app.http.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert!(
            matches!(res.status(), StatusCode::NOT_FOUND | StatusCode::URI_TOO_LONG),
            "{path:.40}: {}",
            res.status()
        );
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let res = app
            .http
            .post(format!("{}/console/session/token", app.address))
            .json(&json!({"token": "x"}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status());
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "a stranger's flood is cut off: {statuses:?}"
    );
    assert_eq!(
        app.raw_count("select count(*) from login_attempts", &[]).await,
        0,
        "no attempt was stored for any of it"
    );
}
