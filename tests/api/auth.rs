use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tenantry::config::TrustedIssuer;

use crate::helpers::{AUDIENCE, TestApp, assert_problem, without_request_id};

const EXTERNAL_ISSUER: &str = "https://idp.example.test";
const RSA_KEY: &[u8] = include_bytes!("../fixtures/rsa-test-key.pem");
const OTHER_RSA_KEY: &[u8] = include_bytes!("../fixtures/rsa-other-key.pem");
const JWKS: &str = include_str!("../fixtures/rsa-test-jwks.json");

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// Asserts a 401 that reveals nothing: same body as any other refusal, with WWW-Authenticate.
async fn assert_refused(app: &TestApp, token: &str, what: &str) -> Value {
    let res = app.get("/api/v1/me", token).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what} must be refused");
    let challenge = res.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="tenantry", error="invalid_token""#), "{what}");
    let body = assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    without_request_id(body)
}

#[tokio::test]
async fn a_valid_token_provisions_the_user_once_by_issuer_and_subject() {
    let app = TestApp::spawn().await;
    let token = app.token_for("alice@example.test");

    let first: Value = app.get("/api/v1/me", &token).await.json().await.unwrap();
    let second: Value =
        app.get("/api/v1/me", &app.token_for("alice@example.test")).await.json().await.unwrap();

    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["issuer"], "tenantry");
    assert_eq!(first["subject"], "alice@example.test");
    assert_eq!(app.raw_count("select count(*) from users", &[]).await, 1);
}

#[tokio::test]
async fn the_same_email_under_another_subject_is_another_user() {
    let app = TestApp::spawn().await;
    let mut claims = app.valid_claims("subject-1");
    claims["email"] = json!("shared@example.test");
    let a: Value = app.get("/api/v1/me", &app.sign(app.eddsa_header(), &claims)).await.json().await.unwrap();
    claims["sub"] = json!("subject-2");
    let b: Value = app.get("/api/v1/me", &app.sign(app.eddsa_header(), &claims)).await.json().await.unwrap();

    assert_ne!(a["id"], b["id"], "never link identities by email");
    assert_eq!(app.raw_count("select count(*) from users where email = 'shared@example.test'", &[]).await, 2);
}

#[tokio::test]
async fn token_attacks_are_all_refused_with_the_same_answer() {
    let app = TestApp::spawn().await;
    let now = chrono::Utc::now().timestamp();
    let good = app.valid_claims("mallory@example.test");
    let mut attacks: Vec<(&str, String)> = Vec::new();

    // alg: none, unsigned.
    let header = json!({"alg": "none", "typ": "JWT", "kid": app.kid});
    attacks.push(("alg none", format!("{}.{}.", b64(&header), b64(&good))));
    // An algorithm outside the allowlist, and HS/RS confusion: HMAC keyed with our public key.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(app.kid.clone());
    attacks.push((
        "HS256 with a guessable secret",
        jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(b"secret")).unwrap(),
    ));
    let public_key = URL_SAFE_NO_PAD.decode(&app.public_x).unwrap();
    attacks.push((
        "HS256 keyed with our public key (RS/HS confusion)",
        jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(&public_key)).unwrap(),
    ));
    attacks.push((
        "HS256 keyed with our public JWK x",
        jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(app.public_x.as_bytes())).unwrap(),
    ));
    let mut rs = Header::new(Algorithm::RS256);
    rs.kid = Some(app.kid.clone());
    attacks.push((
        "RS256 on our issuer",
        jsonwebtoken::encode(&rs, &good, &EncodingKey::from_rsa_pem(RSA_KEY).unwrap()).unwrap(),
    ));

    let with = |patch: Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        app.sign(app.eddsa_header(), &claims)
    };
    attacks.push(("expired", with(json!({"exp": now - 120}))));
    attacks.push(("not yet valid", with(json!({"nbf": now + 300}))));
    attacks.push(("wrong iss", with(json!({"iss": "https://evil.example"}))));
    attacks.push(("wrong aud", with(json!({"aud": "someone-else"}))));
    attacks.push(("missing sub", with(json!({"sub": null}))));
    attacks.push(("empty sub", with(json!({"sub": ""}))));
    attacks.push(("missing exp", with(json!({"exp": null}))));
    attacks.push(("missing aud", with(json!({"aud": null}))));
    attacks.push(("missing iss", with(json!({"iss": null}))));
    attacks.push(("exp as a string", with(json!({"exp": (now + 600).to_string()}))));

    let valid = app.sign(app.eddsa_header(), &good);
    let (head, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[0] ^= 0x01;
    attacks.push(("bad signature", format!("{head}.{payload}.{}", URL_SAFE_NO_PAD.encode(&sig))));
    let mut evil = good.clone();
    evil["sub"] = json!("admin@example.test");
    attacks.push(("payload swapped under a valid signature", format!("{head}.{}.{signature}", b64(&evil))));
    let mut unknown_kid = app.eddsa_header();
    unknown_kid.kid = Some("not-our-key".into());
    attacks.push(("unknown kid", app.sign(unknown_kid, &good)));
    let mut no_kid = app.eddsa_header();
    no_kid.kid = None;
    attacks.push(("missing kid", app.sign(no_kid, &good)));
    attacks.push(("garbage", "not.a.token".into()));

    let mut bodies = Vec::new();
    for (what, token) in &attacks {
        bodies.push(assert_refused(&app, token, what).await);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "every refusal looks the same");
    // No request reached provisioning.
    assert_eq!(app.raw_count("select count(*) from users", &[]).await, 0);

    // Missing header and a non-bearer scheme.
    let res = app.request(reqwest::Method::GET, "/api/v1/me", None, None).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let res = app
        .http
        .get(format!("{}/api/v1/me", app.address))
        .header("authorization", format!("Basic {}", URL_SAFE_NO_PAD.encode("a:b")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // And the control: the untampered token works.
    assert_eq!(app.get("/api/v1/me", &valid).await.status(), StatusCode::OK);
}

/// A minimal JWKS endpoint that counts fetches, with an OpenID discovery document naming it.
async fn jwks_server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let server = actix_web::HttpServer::new(move || {
        let counter = counter.clone();
        let discovery = json!({"issuer": base, "jwks_uri": format!("{base}/jwks.json")});
        actix_web::App::new()
            .route(
                "/jwks.json",
                actix_web::web::get().to(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { actix_web::HttpResponse::Ok().content_type("application/json").body(JWKS) }
                }),
            )
            .route(
                "/.well-known/openid-configuration",
                actix_web::web::get().to(move || {
                    let doc = discovery.clone();
                    async move { actix_web::HttpResponse::Ok().json(doc) }
                }),
            )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}/jwks.json"), hits)
}

fn external_token(kid: &str, key: &[u8], claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(key).unwrap()).unwrap()
}

fn external_claims(sub: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": EXTERNAL_ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now + 300, "nbf": now, "email": "ext@example.test"})
}

#[tokio::test]
async fn a_trusted_issuers_tokens_are_verified_against_its_cached_jwks() {
    let (jwks_url, hits) = jwks_server().await;
    let app = TestApp::spawn_with(|s| {
        s.auth.jwks_min_refresh_secs = 1;
        s.auth.trusted_issuers = vec![TrustedIssuer {
            issuer: EXTERNAL_ISSUER.into(),
            jwks_url: Some(jwks_url),
            audience: None,
            algorithms: vec!["RS256".into()],
            role_mappings: vec![],
        }];
    })
    .await;

    let res = app.get("/api/v1/me", &external_token("test-rsa-1", RSA_KEY, external_claims("ext-1"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["issuer"], EXTERNAL_ISSUER);
    assert_eq!(me["subject"], "ext-1");
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A second subject reuses the cached key set.
    let res = app.get("/api/v1/me", &external_token("test-rsa-1", RSA_KEY, external_claims("ext-2"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // An unknown kid triggers one refresh once the minimum interval has passed, and within the
    // interval no more (a flood of made-up kids cannot hammer the identity provider).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_refused(
        &app,
        &external_token("rotated-key", OTHER_RSA_KEY, external_claims("ext-3")),
        "unknown kid",
    )
    .await;
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_refused(
        &app,
        &external_token("rotated-key-2", OTHER_RSA_KEY, external_claims("ext-3")),
        "unknown kid",
    )
    .await;
    assert_eq!(hits.load(Ordering::SeqCst), 2, "refresh is rate-limited");

    // Right kid, wrong key; wrong audience; an algorithm outside this issuer's allowlist.
    assert_refused(
        &app,
        &external_token("test-rsa-1", OTHER_RSA_KEY, external_claims("ext-4")),
        "bad signature",
    )
    .await;
    let mut claims = external_claims("ext-5");
    claims["aud"] = json!("other-api");
    assert_refused(&app, &external_token("test-rsa-1", RSA_KEY, claims), "wrong aud").await;
    let mut ps = Header::new(Algorithm::PS256);
    ps.kid = Some("test-rsa-1".into());
    let token =
        jsonwebtoken::encode(&ps, &external_claims("ext-6"), &EncodingKey::from_rsa_pem(RSA_KEY).unwrap())
            .unwrap();
    assert_refused(&app, &token, "PS256 not in the allowlist").await;

    assert_eq!(app.raw_count("select count(*) from users where issuer = $1", &[&EXTERNAL_ISSUER]).await, 2);
}

#[tokio::test]
async fn tokens_from_an_issuer_that_is_not_trusted_are_refused() {
    let app = TestApp::spawn().await;
    assert_refused(
        &app,
        &external_token("test-rsa-1", RSA_KEY, external_claims("ext-1")),
        "untrusted issuer",
    )
    .await;
}

#[tokio::test]
async fn a_trusted_issuer_found_by_discovery_maps_its_claims_to_roles() {
    let (jwks_url, hits) = jwks_server().await;
    let issuer = jwks_url.trim_end_matches("/jwks.json").to_owned();
    let org = uuid::Uuid::new_v4();
    let configured = issuer.clone();
    let app = TestApp::spawn_with(move |s| {
        s.auth.trusted_issuers = vec![TrustedIssuer {
            issuer: configured,
            jwks_url: None,
            audience: None,
            algorithms: vec!["RS256".into()],
            role_mappings: vec![tenantry::config::RoleMapping {
                claim: "groups".into(),
                value: "acme-admins".into(),
                organization_id: org,
                role: tenantry::domain::Role::Admin,
                tenant: None,
            }],
        }];
    })
    .await;
    app.rls_bypassing_admin
        .execute("insert into organizations (id, name, slug) values ($1, 'Acme', 'acme')", &[&org])
        .await
        .unwrap();
    // Acme lets this issuer's mappings make admins (its grant source is `issuer:<iss>`).
    app.rls_bypassing_admin
        .execute(
            "insert into provider_grants (organization_id, id, provider, role) \
             values ($1, gen_random_uuid(), 'issuer:' || $2, 'admin')",
            &[&org, &issuer],
        )
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = |groups: Value, jti: &str| json!({"iss": issuer, "aud": AUDIENCE, "sub": "svc-1", "exp": now + 300, "nbf": now, "groups": groups, "jti": jti});

    let admin = external_token("test-rsa-1", RSA_KEY, claims(json!(["acme-admins"]), "1"));
    let orgs: Value = app.get("/api/v1/orgs", &admin).await.json().await.unwrap();
    assert_eq!(orgs["items"][0]["id"], org.to_string());
    assert_eq!(orgs["items"][0]["role"], "admin");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "keys found through discovery");

    // A later token without the group takes the mapped membership away.
    let plain = external_token("test-rsa-1", RSA_KEY, claims(json!([]), "2"));
    let orgs: Value = app.get("/api/v1/orgs", &plain).await.json().await.unwrap();
    assert_eq!(orgs["items"].as_array().unwrap().len(), 0);
    assert_problem(app.get(&format!("/api/v1/orgs/{org}"), &plain).await, StatusCode::NOT_FOUND, "not_found")
        .await;
}
