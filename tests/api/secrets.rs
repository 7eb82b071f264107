//! Secrets never rest in plaintext. Every kind of secret the API mints (API key, invitation
//! token, refresh token, provider key) is minted with and without `Idempotency-Key`; then a
//! `pg_dump` of the database and everything the server logged are searched for each of them.
//! A replay of a request that minted a secret never shows it again.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, admin_url, assert_problem, captured_logs};

async fn post_with_key(
    app: &TestApp,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut req = app.http.post(format!("{}{path}", app.address)).bearer_auth(token).json(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    req.send().await.unwrap()
}

fn pg_dump(app: &TestApp) -> String {
    let bin = std::process::Command::new(".dev/pg.sh").arg("bindir").output().unwrap();
    let pg_dump = format!("{}/pg_dump", String::from_utf8(bin.stdout).unwrap().trim());
    let dump = std::process::Command::new(pg_dump).arg(admin_url(&app.database)).output().unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    String::from_utf8_lossy(&dump.stdout).into_owned()
}

/// The part of a credential that makes it usable (what a leak would need).
fn secret_part(credential: &str) -> &str {
    match credential.rsplit_once('_') {
        // Opaque tokens: prefix_id_secret.
        Some((_, secret)) if secret.len() == 64 => secret,
        // API keys: tnty_ + 32 hex id + 64 hex secret + 8 hex checksum.
        _ if credential.starts_with("tnty_") && credential.len() == 109 => &credential[37..101],
        _ => credential,
    }
}

#[tokio::test]
async fn no_minted_secret_is_in_a_dump_or_a_log_and_a_replay_never_shows_one_again() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("secrets").await;
    let workspace = app.workspace(&org, "W").await;
    let integrator = app.member(&org, "integrator@secrets.test", "integration_admin").await;
    let base = format!("/api/v1/orgs/{}", org.id);
    let mut minted: Vec<(String, String)> = Vec::new();

    for idempotency in [None, Some("mint-1")] {
        let label = idempotency.unwrap_or("none");
        // An API key.
        let body = json!({"name": format!("key-{label}"), "scopes": ["org:read"]});
        let res =
            post_with_key(&app, &format!("{base}/api-keys"), &integrator.token, idempotency, &body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let key: Value = res.json().await.unwrap();
        minted.push((format!("api key ({label})"), key["secret"].as_str().unwrap().to_owned()));
        // An invitation token.
        let body = json!({"email": format!("{label}@example.test"), "role": "viewer"});
        let res =
            post_with_key(&app, &format!("{base}/invitations"), &org.owner.token, idempotency, &body).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let invitation: Value = res.json().await.unwrap();
        minted.push((format!("invitation ({label})"), invitation["token"].as_str().unwrap().to_owned()));
        // A refresh token, and the one its rotation mints.
        let pair = app.sign_in(&org.owner).await;
        minted.push((format!("refresh token ({label})"), pair.refresh_token.clone()));
        let res = post_with_key(
            &app,
            "/api/v1/auth/token",
            &pair.access_token,
            idempotency,
            &json!({"refresh_token": pair.refresh_token}),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        let rotated: Value = res.json().await.unwrap();
        minted.push((
            format!("rotated refresh token ({label})"),
            rotated["refresh_token"].as_str().unwrap().to_owned(),
        ));
        minted
            .push((format!("access token ({label})"), rotated["access_token"].as_str().unwrap().to_owned()));
    }
    // A provider key (PUT: never kept for replay).
    let provider_key = app.provider_key(&org, workspace).await;
    minted.push(("provider key".into(), provider_key));

    // Replays: the request succeeded before; its secret is not shown again. Not even once the
    // caller has lost the permission that minted it.
    let body = json!({"name": "key-mint-1", "scopes": ["org:read"]});
    let res =
        post_with_key(&app, &format!("{base}/api-keys"), &integrator.token, Some("mint-1"), &body).await;
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    assert!(res.headers()["location"].to_str().unwrap().contains("/api-keys/"));
    let replay = assert_problem(res, StatusCode::CONFLICT, "idempotent_secret_withheld").await;
    assert!(replay.get("secret").is_none());
    let res = app
        .request(
            Method::PATCH,
            &format!("{base}/members/{}", integrator.id),
            Some(&org.owner.token),
            Some(&json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res =
        post_with_key(&app, &format!("{base}/api-keys"), &integrator.token, Some("mint-1"), &body).await;
    let text = res.text().await.unwrap();
    assert!(!text.contains("tnty_"), "a replay after losing api_keys:manage shows no key: {text}");
    let body = json!({"email": "mint-1@example.test", "role": "viewer"});
    let res =
        post_with_key(&app, &format!("{base}/invitations"), &org.owner.token, Some("mint-1"), &body).await;
    assert_problem(res, StatusCode::CONFLICT, "idempotent_secret_withheld").await;
    assert_eq!(
        app.raw_count(
            "select count(*) from idempotency_keys where secret_withheld and response_body is null",
            &[]
        )
        .await,
        2,
        "both idempotency records keep status and Location only"
    );

    let dump = pg_dump(&app);
    assert!(dump.contains(&org.id.to_string()), "the dump holds the organization's rows");
    let logs = captured_logs();
    for (what, credential) in &minted {
        let secret = secret_part(credential);
        assert!(secret.len() >= 32, "{what}: {secret}");
        assert!(!dump.contains(secret), "{what} is in plaintext in pg_dump");
        // bytea columns are dumped as hex: the secret's bytes must not be there either.
        let as_hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!dump.contains(&as_hex), "{what} is in pg_dump, hex-encoded");
        assert!(!logs.contains(secret), "{what} is in the logs");
    }
    assert!(minted.len() >= 11);
}
