//! Sign-in end to end: a real OpenID provider (node `oidc-provider`, started here) and a local
//! stand-in for GitHub's OAuth and user endpoints.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tenantry::config::{ProviderKind, ProviderSettings, RoleMapping};
use tenantry::domain::Role;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem};

/// The organization the providers' role mappings grant roles in (created by each test).
const MAPPED_ORG: Uuid = Uuid::from_u128(0x0a0a_0000_0000_0000_0000_0000_0000_0001);
const CLIENT_SECRET: &str = "tenantry-test-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The node OpenID provider; killed when dropped.
struct OpenIdProvider {
    child: Child,
    issuer: String,
}

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_provider(redirect_uri: &str) -> OpenIdProvider {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc-provider");
    assert!(
        std::path::Path::new(dir).join("node_modules").exists(),
        "run `npm ci --prefix tests/oidc-provider` (make test does)"
    );
    let port = free_port();
    let mut child = Command::new("node")
        .arg("server.mjs")
        .arg(port.to_string())
        .arg(redirect_uri)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting node (is Node.js installed?)");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Keep reading: the provider logs notices to stdout, and a closed pipe would kill it.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let issuer =
        line.trim().strip_prefix("ready ").unwrap_or_else(|| panic!("provider said {line:?}")).to_owned();
    OpenIdProvider { child, issuer }
}

fn provider_settings(name: &str, kind: ProviderKind, redirect_uri: String) -> ProviderSettings {
    ProviderSettings {
        client_secret: Some(CLIENT_SECRET.to_owned().into()),
        ..ProviderSettings::new(name, kind, "tenantry", &redirect_uri)
    }
}

struct SignInRig {
    app: TestApp,
    op: OpenIdProvider,
}

/// Our server on a known port (the provider must know the callback), the OP beside it.
async fn rig() -> SignInRig {
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/api/v1/auth/local/callback");
    let op = start_provider(&callback);
    let issuer = op.issuer.clone();
    let app = TestApp::spawn_with(|s| {
        s.listen = format!("127.0.0.1:{port}");
        let mut p = provider_settings("local", ProviderKind::Oidc, callback.clone());
        p.issuer = Some(issuer);
        p.scopes = vec!["groups".into()];
        p.role_mappings = vec![RoleMapping {
            claim: "groups".into(),
            value: "acme-admins".into(),
            organization_id: MAPPED_ORG,
            role: Role::Admin,
            tenant: None,
        }];
        s.auth.providers = vec![p];
        s.auth.allowed_redirects = vec!["http://app.example.test/signed-in".into()];
    })
    .await;
    app.rls_bypassing_admin
        .execute("insert into organizations (id, name, slug) values ($1, 'Mapped', 'mapped')", &[&MAPPED_ORG])
        .await
        .unwrap();
    consent(&app, "local", "admin").await;
    SignInRig { app, op }
}

/// The mapped organization lets `provider` grant `role` (as its owner would through the API).
async fn consent(app: &TestApp, provider: &str, role: &str) {
    app.rls_bypassing_admin
        .execute(
            "insert into provider_grants (organization_id, id, provider, role) values ($1, gen_random_uuid(), $2, $3)",
            &[&MAPPED_ORG, &provider, &role],
        )
        .await
        .unwrap();
}

/// The sign-in binding cookie each browser got from our /login, by the `state` it started.
static BINDINGS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
    std::sync::LazyLock::new(Default::default);

/// Plays the browser: starts at our /login, follows the provider's redirects (keeping its
/// cookies), and returns the callback URL the provider sends back to us, without calling it.
/// The binding cookie our /login set is kept for `callback`, by the URL's `state`.
async fn browser_to_callback(app: &TestApp, provider: &str, query: &str) -> String {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut url = format!("{}/api/v1/auth/{provider}/login?{query}", app.address);
    for _ in 0..15 {
        let res = browser.get(&url).send().await.unwrap();
        if !res.status().is_redirection() {
            let logs = crate::helpers::captured_logs();
            let cause: Vec<&str> = logs.lines().filter(|l| l.contains("unavailable")).collect();
            panic!("expected a redirect from {url}, got {}: {cause:?}", res.status());
        }
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        if url.contains(&format!("/api/v1/auth/{provider}/login")) {
            let cookie = res
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|c| c.starts_with("tenantry_signin="))
                .expect("our /login sets the binding cookie");
            assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
            let value = cookie.split(';').next().unwrap().to_owned();
            let state = query_param(&location, "state");
            BINDINGS.lock().unwrap().insert(state, value);
        }
        let next = reqwest::Url::parse(&url).unwrap().join(&location).unwrap().to_string();
        if next.contains(&format!("/api/v1/auth/{provider}/callback")) {
            return next;
        }
        url = next;
    }
    panic!("the provider never redirected back");
}

fn with_query_param(url: &str, name: &str, value: Option<&str>) -> String {
    let mut parsed = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (k, v) in &pairs {
            query.append_pair(k, v);
        }
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    parsed.to_string()
}

fn query_param(url: &str, name: &str) -> String {
    reqwest::Url::parse(url).unwrap().query_pairs().find(|(k, _)| k == name).unwrap().1.into_owned()
}

/// The provider's redirect back, followed by the browser that started the sign-in.
async fn callback(app: &TestApp, url: &str) -> reqwest::Response {
    let state = reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned());
    let cookie = state.and_then(|s| BINDINGS.lock().unwrap().get(&s).cloned());
    let mut req = app.http.get(url);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    req.send().await.unwrap()
}

/// The same redirect, followed by another browser (a victim fed the attacker's callback URL).
async fn callback_in_another_browser(app: &TestApp, url: &str) -> reqwest::Response {
    app.http.get(url).header("cookie", "tenantry_signin=someone-else").send().await.unwrap()
}

async fn next_id_token(op: &OpenIdProvider, claims: Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/__test/next-id-token", op.issuer))
        .json(&claims)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_person_signs_in_through_a_real_openid_provider_and_uses_refreshes_and_ends_the_session() {
    let SignInRig { app, op } = rig().await;
    let providers = app.public_json("/api/v1/auth/providers").await;
    assert_eq!(
        providers,
        json!([{"name": "local", "kind": "oidc", "display_name": "local", "login_url": "/api/v1/auth/local/login"}])
    );

    let url = browser_to_callback(&app, "local", "login_hint=alice").await;
    assert_eq!(query_param(&url, "iss"), op.issuer, "the provider names itself (RFC 9207)");
    let res = callback(&app, &url).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: Value = res.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();

    let me: Value = app.get("/api/v1/me", access).await.json().await.unwrap();
    assert_eq!(me["issuer"], op.issuer);
    assert_eq!(me["subject"], "alice");
    assert_eq!(me["email"], "alice@example.test", "a verified email is kept");
    assert_eq!(me["display_name"], "Alice");

    // The groups claim mapped Alice to admin of the mapped organization.
    let orgs: Value = app.get("/api/v1/orgs", access).await.json().await.unwrap();
    assert_eq!(orgs["items"][0]["id"], MAPPED_ORG.to_string());
    assert_eq!(orgs["items"][0]["role"], "admin");
    let granted: i64 = app
        .raw_count(
            "select count(*) from memberships where organization_id = $1 and granted_by_provider = 'local'",
            &[&MAPPED_ORG],
        )
        .await;
    assert_eq!(granted, 1);
    let audited = app
        .raw_count(
            "select count(*) from audit_events where organization_id = $1 and action = 'member.add' \
             and actor_type = 'system' and details->>'granted_by_provider' = 'local'",
            &[&MAPPED_ORG],
        )
        .await;
    assert_eq!(audited, 1, "the mapped membership is in the organization's audit log");

    let sessions: Value = app.get("/api/v1/me/sessions", access).await.json().await.unwrap();
    assert_eq!(sessions["items"][0]["provider"], "local");
    assert_eq!(sessions["items"][0]["current"], true);

    let res = app
        .request(
            reqwest::Method::POST,
            "/api/v1/auth/token",
            None,
            Some(&json!({"refresh_token": tokens["refresh_token"]})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let refreshed: Value = res.json().await.unwrap();
    let access = refreshed["access_token"].as_str().unwrap();
    let res = app.request(reqwest::Method::POST, "/api/v1/auth/logout", Some(access), None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get("/api/v1/me", access).await, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Signing in again is the same user, not a new one.
    let url = browser_to_callback(&app, "local", "login_hint=alice").await;
    let again: Value = callback(&app, &url).await.json().await.unwrap();
    let me2: Value =
        app.get("/api/v1/me", again["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(me2["id"], me["id"]);
    assert_eq!(app.raw_count("select count(*) from login_attempts", &[]).await, 0, "attempts are single-use");
}

#[tokio::test]
async fn a_replayed_or_unknown_state_is_refused() {
    let SignInRig { app, op: _op } = rig().await;
    let url = browser_to_callback(&app, "local", "").await;
    assert_eq!(callback(&app, &url).await.status(), StatusCode::OK);

    assert_problem(callback(&app, &url).await, StatusCode::BAD_REQUEST, "invalid_state").await;
    let forged = with_query_param(&url, "state", Some("made-up"));
    assert_problem(callback(&app, &forged).await, StatusCode::BAD_REQUEST, "invalid_state").await;
    let missing = with_query_param(&url, "state", None);
    assert_problem(callback(&app, &missing).await, StatusCode::BAD_REQUEST, "invalid_state").await;
    let failures = app
        .raw_count(
            "select count(*) from audit_events where action = 'auth.sign_in_failed' \
             and details->>'reason' = 'invalid_state' and outcome = 'failed'",
            &[],
        )
        .await;
    assert_eq!(failures, 3, "failed sign-ins are recorded");
}

#[tokio::test]
async fn a_replayed_code_is_refused() {
    let SignInRig { app, op: _op } = rig().await;
    let first = browser_to_callback(&app, "local", "").await;
    assert_eq!(callback(&app, &first).await.status(), StatusCode::OK);

    // A fresh, valid state with the spent code.
    let second = browser_to_callback(&app, "local", "").await;
    let replay = with_query_param(&second, "code", Some(&query_param(&first, "code")));
    assert_problem(callback(&app, &replay).await, StatusCode::UNAUTHORIZED, "sign_in_failed").await;
}

#[tokio::test]
async fn an_id_token_with_a_wrong_nonce_or_for_another_audience_is_refused() {
    let SignInRig { app, op } = rig().await;
    for tampered in [json!({"nonce": "not-the-one-we-sent"}), json!({"aud": "other-app"})] {
        let url = browser_to_callback(&app, "local", "").await;
        next_id_token(&op, tampered.clone()).await;
        let res = callback(&app, &url).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "sign_in_failed").await;
    }
    assert_eq!(app.raw_count("select count(*) from sessions", &[]).await, 0);
    assert_eq!(app.raw_count("select count(*) from users", &[]).await, 0);
}

#[tokio::test]
async fn an_issuer_mix_up_is_refused() {
    let SignInRig { app, op: _op } = rig().await;
    let url = browser_to_callback(&app, "local", "").await;
    let mixed_up = with_query_param(&url, "iss", Some("https://evil.example.test"));
    assert_problem(callback(&app, &mixed_up).await, StatusCode::UNAUTHORIZED, "sign_in_failed").await;

    // The provider advertises the parameter, so its absence is refused too.
    let url = browser_to_callback(&app, "local", "").await;
    let without = with_query_param(&url, "iss", None);
    assert_problem(callback(&app, &without).await, StatusCode::UNAUTHORIZED, "sign_in_failed").await;
}

#[tokio::test]
async fn a_missing_or_wrong_pkce_verifier_fails_the_code_exchange() {
    let SignInRig { app, op: _op } = rig().await;
    for verifier in ["", "wrong-verifier-wrong-verifier-wrong-verifier-0123"] {
        let url = browser_to_callback(&app, "local", "").await;
        app.rls_bypassing_admin
            .execute("update login_attempts set pkce_verifier = $1", &[&verifier])
            .await
            .unwrap();
        assert_problem(callback(&app, &url).await, StatusCode::UNAUTHORIZED, "sign_in_failed").await;
    }
}

#[tokio::test]
async fn only_registered_redirect_targets_receive_the_tokens() {
    let SignInRig { app, op: _op } = rig().await;
    let res = app
        .http
        .get(format!("{}/api/v1/auth/local/login?redirect_to=https://evil.example.test/steal", app.address))
        .send()
        .await
        .unwrap();
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "redirect_to");
    assert_eq!(app.raw_count("select count(*) from login_attempts", &[]).await, 0);

    let url = browser_to_callback(&app, "local", "redirect_to=http://app.example.test/signed-in").await;
    let res = callback(&app, &url).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = res.headers()["location"].to_str().unwrap();
    assert!(location.starts_with("http://app.example.test/signed-in#access_token="), "{location}");
    assert!(location.contains("refresh_token=tnty_rt_"));
}

#[tokio::test]
async fn an_unverified_email_never_links_to_an_existing_account() {
    let SignInRig { app, op: _op } = rig().await;
    let alice: Value = callback(&app, &browser_to_callback(&app, "local", "login_hint=alice").await)
        .await
        .json()
        .await
        .unwrap();
    // Mallory's provider account claims Alice's email, unverified.
    let mallory: Value = callback(&app, &browser_to_callback(&app, "local", "login_hint=mallory").await)
        .await
        .json()
        .await
        .unwrap();

    let a: Value = app.get("/api/v1/me", alice["access_token"].as_str().unwrap()).await.json().await.unwrap();
    let m: Value =
        app.get("/api/v1/me", mallory["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_ne!(a["id"], m["id"]);
    assert!(m["email"].is_null(), "an unverified email is not stored");
    // And Mallory got none of Alice's mapped roles.
    let orgs: Value =
        app.get("/api/v1/orgs", mallory["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(orgs["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn unknown_providers_are_404() {
    let SignInRig { app, op: _op } = rig().await;
    let res = app.http.get(format!("{}/api/v1/auth/nope/login", app.address)).send().await.unwrap();
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

/// A stand-in for github.com and api.github.com: authorize approves at once, the token
/// endpoint checks the code and the PKCE verifier, the API describes user 4242.
async fn github_stand_in(callback: String) -> (String, Arc<AtomicUsize>) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let exchanges = Arc::new(AtomicUsize::new(0));
    let counter = exchanges.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let challenges = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, String>::new()));
    let server = HttpServer::new(move || {
        let callback = callback.clone();
        let counter = counter.clone();
        let challenges = challenges.clone();
        let challenges2 = challenges.clone();
        App::new()
            .route(
                "/login/oauth/authorize",
                web::get().to(move |q: web::Query<std::collections::HashMap<String, String>>| {
                    let code = format!("code-{}", Uuid::new_v4().simple());
                    challenges.lock().unwrap().insert(code.clone(), q["code_challenge"].clone());
                    let location = format!("{}?code={code}&state={}", callback, q["state"]);
                    async move { HttpResponse::Found().insert_header(("Location", location)).finish() }
                }),
            )
            .route(
                "/login/oauth/access_token",
                web::post().to(move |form: web::Form<std::collections::HashMap<String, String>>, req: HttpRequest| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let expected = challenges2.lock().unwrap().remove(form.get("code").map(String::as_str).unwrap_or(""));
                    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
                    use base64::Engine as _;
                    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
                    let authed = req.headers().get("authorization").is_some();
                    async move {
                        if expected.as_deref() == Some(challenge.as_str()) && authed {
                            HttpResponse::Ok().json(json!({"access_token": "gho_test", "token_type": "bearer", "scope": "read:user"}))
                        } else {
                            HttpResponse::Ok().json(json!({"error": "bad_verification_code"}))
                        }
                    }
                }),
            )
            .route("/user", web::get().to(|| async { HttpResponse::Ok().json(json!({"id": 4242, "login": "octo", "name": "Octo Cat"})) }))
            .route(
                "/user/emails",
                web::get().to(|| async {
                    HttpResponse::Ok().json(json!([
                        {"email": "octo@unverified.test", "primary": false, "verified": false},
                        {"email": "octo@example.test", "primary": true, "verified": true}
                    ]))
                }),
            )
            .route(
                "/user/teams",
                web::get().to(|| async { HttpResponse::Ok().json(json!([{"slug": "platform", "organization": {"login": "acme"}}])) }),
            )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}"), exchanges)
}

#[tokio::test]
async fn github_sign_in_uses_the_numeric_id_verified_email_and_team_mapping() {
    let port = free_port();
    let callback_url = format!("http://127.0.0.1:{port}/api/v1/auth/github/callback");
    let (github, exchanges) = github_stand_in(callback_url.clone()).await;
    let app = TestApp::spawn_with(|s| {
        s.listen = format!("127.0.0.1:{port}");
        let mut p = provider_settings("github", ProviderKind::Github, callback_url.clone());
        p.base_url = Some(github.clone());
        p.api_url = Some(github.clone());
        p.role_mappings = vec![RoleMapping {
            claim: "teams".into(),
            value: "acme/platform".into(),
            organization_id: MAPPED_ORG,
            role: Role::Editor,
            tenant: None,
        }];
        s.auth.providers = vec![p];
    })
    .await;
    app.rls_bypassing_admin
        .execute("insert into organizations (id, name, slug) values ($1, 'Mapped', 'mapped')", &[&MAPPED_ORG])
        .await
        .unwrap();
    consent(&app, "github", "editor").await;

    let url = browser_to_callback(&app, "github", "").await;
    let res = callback(&app, &url).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: Value = res.json().await.unwrap();
    let me: Value =
        app.get("/api/v1/me", tokens["access_token"].as_str().unwrap()).await.json().await.unwrap();
    // The issuer is the GitHub instance signed in through (here the stand-in): user 4242 of a
    // GitHub Enterprise server is not user 4242 of github.com.
    assert_eq!(me["issuer"], github);
    assert_eq!(me["subject"], "4242");
    assert_eq!(me["email"], "octo@example.test");
    let orgs: Value =
        app.get("/api/v1/orgs", tokens["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(orgs["items"][0]["role"], "editor");
    assert_eq!(exchanges.load(Ordering::SeqCst), 1);

    // A wrong verifier is refused by the token endpoint.
    let url = browser_to_callback(&app, "github", "").await;
    app.rls_bypassing_admin.execute("update login_attempts set pkce_verifier = 'x'", &[]).await.unwrap();
    assert_problem(callback(&app, &url).await, StatusCode::UNAUTHORIZED, "sign_in_failed").await;
}

/// Login CSRF: the attacker starts a sign-in in their own browser and feeds the callback URL to a
/// victim. The victim's browser lacks the attacker's binding cookie, so nobody is signed in, and
/// the attempt is still unused for its real owner.
#[tokio::test]
async fn a_callback_from_another_browser_signs_nobody_in() {
    let SignInRig { app, op: _op } = rig().await;
    let url = browser_to_callback(&app, "local", "login_hint=mallory").await;
    assert_problem(callback_in_another_browser(&app, &url).await, StatusCode::BAD_REQUEST, "invalid_state")
        .await;
    let no_cookie = app.http.get(&url).send().await.unwrap();
    assert_problem(no_cookie, StatusCode::BAD_REQUEST, "invalid_state").await;
    assert_eq!(app.raw_count("select count(*) from sessions", &[]).await, 0, "no session was started");
    assert_eq!(callback(&app, &url).await.status(), StatusCode::OK, "the browser that started it still can");
}

/// A role mapping grants nothing in an organization that did not consent to that provider
/// granting that role, and stops granting once the consent is withdrawn.
#[tokio::test]
async fn a_mapping_grants_only_what_the_organization_consented_to() {
    let SignInRig { app, op: _op } = rig().await;
    app.rls_bypassing_admin.execute("delete from provider_grants", &[]).await.unwrap();
    let tokens: Value = callback(&app, &browser_to_callback(&app, "local", "login_hint=alice").await)
        .await
        .json()
        .await
        .unwrap();
    let orgs: Value =
        app.get("/api/v1/orgs", tokens["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(orgs["items"], json!([]), "no consent, no membership");
    // The owner consents to `local` granting viewer only: admin is still not given.
    consent(&app, "local", "viewer").await;
    callback(&app, &browser_to_callback(&app, "local", "login_hint=alice").await).await;
    assert_eq!(
        app.raw_count("select count(*) from memberships where organization_id = $1", &[&MAPPED_ORG]).await,
        0
    );
    consent(&app, "local", "admin").await;
    callback(&app, &browser_to_callback(&app, "local", "login_hint=alice").await).await;
    assert_eq!(
        app.raw_count(
            "select count(*) from memberships where organization_id = $1 and role = 'admin'",
            &[&MAPPED_ORG]
        )
        .await,
        1
    );
    // Withdrawn: the next sign-in removes the provider-granted membership.
    app.rls_bypassing_admin.execute("delete from provider_grants where role = 'admin'", &[]).await.unwrap();
    callback(&app, &browser_to_callback(&app, "local", "login_hint=alice").await).await;
    assert_eq!(
        app.raw_count("select count(*) from memberships where organization_id = $1", &[&MAPPED_ORG]).await,
        0
    );
}
