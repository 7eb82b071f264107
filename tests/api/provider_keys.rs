//! Bring-your-own provider keys: stored as ciphertext only, shown masked, validated (format and a
//! live check against a stub provider), failing closed when tampered with, and re-wrapped under a
//! new master key while reads go on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestOrg, admin_url, assert_problem, captured_logs, stub_provider};

fn key_path(org: &TestOrg, workspace: Uuid, provider: &str) -> String {
    format!("/api/v1/orgs/{}/workspaces/{workspace}/provider-keys/{provider}", org.id)
}

async fn put(app: &TestApp, org: &TestOrg, path: &str, body: Value) -> reqwest::Response {
    app.request(Method::PUT, path, Some(&org.owner.token), Some(&body)).await
}

#[tokio::test]
async fn a_key_is_stored_encrypted_and_only_ever_shown_masked() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let ws = app.workspace(&org, "Production").await;
    let path = key_path(&org, ws, "openai");
    let key = "sk-proj-Zx81Jq2Lm4Np6Rt8Vw0Yb3Dc5Fe7Gh9wxYz";

    let res = put(&app, &org, &path, json!({"api_key": key})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let text = res.text().await.unwrap();
    assert!(!text.contains(key) && !text.contains("Zx81Jq2Lm4Np"), "the key is never returned: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((body["provider"].as_str(), body["masked_key"].as_str()), (Some("openai"), Some("…wxYz")));
    assert_eq!(body["last_verified_at"], Value::Null);

    let got: Value = app.get(&path, &org.owner.token).await.json().await.unwrap();
    assert_eq!(got["masked_key"], "…wxYz");
    let list: Value = app
        .get(&format!("/api/v1/orgs/{}/workspaces/{ws}/provider-keys", org.id), &org.owner.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["provider"], "openai");

    // Replaced in place: 200, still one key, a new ciphertext.
    let before: Vec<u8> =
        app.rls_bypassing_admin.query_one("select ciphertext from provider_keys", &[]).await.unwrap().get(0);
    let res = put(&app, &org, &path, json!({"api_key": "sk-proj-Another0Key1That2Is3Long4Enough9876"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["masked_key"], "…9876");
    let after: Vec<u8> =
        app.rls_bypassing_admin.query_one("select ciphertext from provider_keys", &[]).await.unwrap().get(0);
    assert_ne!(before, after);

    // Decryption where it is used: the stored key decrypts and is well-formed.
    let res = app
        .request(Method::POST, &format!("{path}/verify?live_check=false"), Some(&org.owner.token), None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let verified: Value = res.json().await.unwrap();
    assert_eq!((verified["valid"].as_bool(), verified["live_checked"].as_bool()), (Some(true), Some(false)));

    let res = app.delete(&path, &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get(&path, &org.owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.raw_count("select count(*) from provider_keys", &[]).await, 0);
}

#[tokio::test]
async fn the_database_and_pg_dump_hold_only_ciphertext() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let ws = app.workspace(&org, "Production").await;
    let key = app.provider_key(&org, ws).await;
    let middle = &key[8..30];

    let row = app
        .rls_bypassing_admin
        .query_one(
            "select p.ciphertext, p.nonce, p.key_suffix, k.wrapped_key, k.master_key_version, row_to_json(p)::text \
             from provider_keys p join organization_data_keys k on k.id = p.data_key_id",
            &[],
        )
        .await
        .unwrap();
    let ciphertext: Vec<u8> = row.get(0);
    assert_eq!(ciphertext.len(), key.len() + 16, "AES-GCM: ciphertext plus a 16-byte tag");
    assert!(!ciphertext.windows(middle.len()).any(|w| w == middle.as_bytes()));
    assert_eq!(row.get::<_, Vec<u8>>(1).len(), 12);
    assert_eq!(row.get::<_, String>(2), &key[key.len() - 4..]);
    assert_eq!(row.get::<_, Vec<u8>>(3).len(), 60, "the data key is stored wrapped");
    assert_eq!(row.get::<_, i32>(4), 1);
    assert!(!row.get::<_, String>(5).contains(middle));

    let bin = std::process::Command::new(".dev/pg.sh").arg("bindir").output().unwrap();
    let pg_dump = format!("{}/pg_dump", String::from_utf8(bin.stdout).unwrap().trim());
    let dump = std::process::Command::new(pg_dump).arg(admin_url(&app.database)).output().unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("COPY public.provider_keys"), "the dump holds the table");
    assert!(!dump.contains(&key) && !dump.contains(middle), "no plaintext key in pg_dump");
    let master = std::fs::read_to_string(app.master_keys_file()).unwrap();
    let master_b64 = master.trim().split_once(':').unwrap().1;
    assert!(!dump.contains(master_b64), "no master key in pg_dump");

    let logs = captured_logs();
    assert!(!logs.contains(&key) && !logs.contains(middle), "no key in the logs");
}

#[tokio::test]
async fn bad_keys_are_refused_clearly_and_change_nothing() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let ws = app.workspace(&org, "Production").await;
    let secret = "pk-live-9aQ3ThisLooksSecretButIsMalformed";
    for (provider, body, field) in [
        ("openai", json!({"api_key": secret}), "api_key"),
        ("openai", json!({"api_key": "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123"}), "api_key"),
        ("anthropic", json!({"api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz0123"}), "api_key"),
        ("azure_openai", json!({"api_key": "0123456789abcdef0123456789abcdef"}), "endpoint"),
        (
            "azure_openai",
            json!({"api_key": "0123456789abcdef0123456789abcdef", "endpoint": "http://acme.openai.azure.com"}),
            "endpoint",
        ),
        (
            "openai",
            json!({"api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz0123", "endpoint": "https://x.example"}),
            "endpoint",
        ),
    ] {
        let res = put(&app, &org, &key_path(&org, ws, provider), body).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{provider}");
        assert!(!problem.to_string().contains(secret), "the problem never echoes the key");
    }
    let res =
        put(&app, &org, &key_path(&org, ws, "mistral"), json!({"api_key": "sk-abcdefghijklmnopqrstuvwxyz"}))
            .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = put(
        &app,
        &org,
        &key_path(&org, Uuid::new_v4(), "openai"),
        json!({"api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz0123"}),
    )
    .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.raw_count("select count(*) from provider_keys", &[]).await, 0);
    assert_eq!(app.raw_count("select count(*) from organization_data_keys", &[]).await, 0);
}

#[tokio::test]
async fn a_tampered_or_moved_ciphertext_fails_closed() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let ws = app.workspace(&org, "Production").await;
    let other_ws = app.workspace(&org, "Staging").await;
    app.provider_key(&org, ws).await;
    app.provider_key(&org, other_ws).await;
    let verify = |w: Uuid| format!("{}/verify?live_check=false", key_path(&org, w, "openai"));
    let ok = app.request(Method::POST, &verify(ws), Some(&org.owner.token), None).await;
    assert_eq!(ok.status(), StatusCode::OK);

    // One bit flipped.
    app.rls_bypassing_admin
        .execute(
            "update provider_keys set ciphertext = set_byte(ciphertext, 3, get_byte(ciphertext, 3) # 1) where workspace_id = $1",
            &[&ws],
        )
        .await
        .unwrap();
    let res = app.request(Method::POST, &verify(ws), Some(&org.owner.token), None).await;
    assert_problem(res, StatusCode::CONFLICT, "provider_key_unreadable").await;

    // Another workspace's intact ciphertext copied over: bound to its place, so refused.
    app.rls_bypassing_admin
        .execute(
            "update provider_keys p set ciphertext = o.ciphertext, nonce = o.nonce from provider_keys o \
             where p.workspace_id = $1 and o.workspace_id = $2",
            &[&ws, &other_ws],
        )
        .await
        .unwrap();
    let res = app.request(Method::POST, &verify(ws), Some(&org.owner.token), None).await;
    assert_problem(res, StatusCode::CONFLICT, "provider_key_unreadable").await;

    // The wrapped data key altered: every key of the organization is unreadable, none leaks.
    app.rls_bypassing_admin
        .execute("update organization_data_keys set wrapped_key = set_byte(wrapped_key, 40, get_byte(wrapped_key, 40) # 1)", &[])
        .await
        .unwrap();
    let res = app.request(Method::POST, &verify(other_ws), Some(&org.owner.token), None).await;
    assert_problem(res, StatusCode::CONFLICT, "provider_key_unreadable").await;
    assert!(captured_logs().contains("provider_key.unreadable"), "logged as a security event");
}

#[tokio::test]
async fn the_live_check_asks_the_provider_without_following_redirects_or_reaching_private_hosts() {
    let good = "sk-proj-GoodKey0123456789abcdefghijkl".to_owned();
    let stub = stub_provider(good.clone()).await;
    let base = stub.url.clone();
    let app = TestApp::spawn_with(|s| {
        s.provider_keys.openai_base_url = base;
        s.provider_keys.allow_private_addresses = true;
        s.provider_keys.live_check_timeout_ms = 500;
    })
    .await;
    let org = app.org_with_owner("acme").await;
    let ws = app.workspace(&org, "Production").await;
    let path = key_path(&org, ws, "openai");

    let res = put(&app, &org, &path, json!({"api_key": good, "live_check": true})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(res.json::<Value>().await.unwrap()["last_verified_at"].is_string());
    let res = put(
        &app,
        &org,
        &path,
        json!({"api_key": "sk-proj-RevokedKey0123456789abcdefgh", "live_check": true}),
    )
    .await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "api_key");
    let res = app.request(Method::POST, &format!("{path}/verify"), Some(&org.owner.token), None).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["valid"].as_bool(), body["live_checked"].as_bool()),
        (Some(true), Some(true)),
        "the good key was kept"
    );

    // Someone without provider_keys:manage cannot make the server call out.
    let viewer = app.member(&org, "viewer@acme.test", "viewer").await;
    let before = stub.requests.load(Ordering::SeqCst);
    let res = app
        .request(Method::PUT, &path, Some(&viewer.token), Some(&json!({"api_key": good, "live_check": true})))
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(stub.requests.load(Ordering::SeqCst), before, "no request reached the provider");

    // A redirect is not followed; a silent provider times out: 502, and nothing is stored.
    for (suffix, label) in [("/redirect", "redirect"), ("/slow", "timeout")] {
        let url = format!("{}{suffix}", stub.url);
        let app = app
            .sibling(|s| {
                s.provider_keys.openai_base_url = url;
                s.provider_keys.allow_private_addresses = true;
                s.provider_keys.live_check_timeout_ms = 300;
            })
            .await;
        let other = key_path(&org, ws, "openai")
            .replace(&ws.to_string(), &app.workspace(&org, label).await.to_string());
        let res = app
            .request(
                Method::PUT,
                &other,
                Some(&org.owner.token),
                Some(&json!({"api_key": good, "live_check": true})),
            )
            .await;
        assert_problem(res, StatusCode::BAD_GATEWAY, "provider_unreachable").await;
    }
    assert_eq!(app.raw_count("select count(*) from provider_keys", &[]).await, 1);

    // Without allow_private_addresses, loopback and private targets are refused before any call.
    let strict = app.sibling(|s| s.provider_keys.openai_base_url = "https://127.0.0.1:9".into()).await;
    let res = strict
        .request(
            Method::PUT,
            &path,
            Some(&org.owner.token),
            Some(&json!({"api_key": good, "live_check": true})),
        )
        .await;
    assert_problem(res, StatusCode::BAD_GATEWAY, "provider_unreachable").await;
    let res = strict
        .request(
            Method::PUT,
            &key_path(&org, ws, "azure_openai"),
            Some(&org.owner.token),
            Some(&json!({"api_key": "0123456789abcdef0123456789abcdef", "endpoint": "https://10.0.0.7", "live_check": true})),
        )
        .await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "endpoint");
}

#[tokio::test]
async fn rotating_the_master_key_while_keys_are_read_produces_no_error() {
    // Servers on master key version 1 store keys in twenty organizations.
    let old = TestApp::spawn().await;
    let mut targets = Vec::new();
    for i in 0..20 {
        let org = old.org_with_owner(&format!("tenant-{i}")).await;
        let ws = old.workspace(&org, "Production").await;
        old.provider_key(&org, ws).await;
        targets.push((org, ws));
    }
    // Version 2 is added and deployed: this server holds both.
    let both_file = old.master_keys_file().with_file_name("master-keys-1-2");
    std::fs::copy(old.master_keys_file(), &both_file).unwrap();
    assert_eq!(tenantry::crypto::MasterKeys::add_version_to_file(&both_file).unwrap(), 2);
    let file = both_file.clone();
    let new = Arc::new(old.sibling(|s| s.provider_keys.master_keys_file = file).await);
    let targets = Arc::new(targets);

    // A load of reads that decrypt every key, while the rotation runs.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..6 {
        let (app, targets, stop) = (new.clone(), targets.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), Vec::new());
            let mut i = r;
            while !stop.load(Ordering::SeqCst) || i < r + 40 {
                let (org, ws) = &targets[i % targets.len()];
                let path = format!("{}/verify?live_check=false", key_path(org, *ws, "openai"));
                let res = app.request(Method::POST, &path, Some(&org.owner.token), None).await;
                if res.status() == StatusCode::OK && res.json::<Value>().await.unwrap()["valid"] == true {
                    ok.push(std::time::Instant::now());
                } else {
                    failed.push(i);
                }
                i += 1;
            }
            (ok, failed)
        }));
    }
    let keys = tenantry::crypto::MasterKeys::load_or_generate(&both_file, false).unwrap();
    let admin = crate::helpers::connect(&admin_url(&old.database)).await;
    // 500 more organizations' data keys (wrapped by version 1), so the rotation takes a while.
    let v1 = tenantry::crypto::MasterKeys::load_or_generate(&old.master_keys_file(), false).unwrap();
    for _ in 0..500 {
        let (org, id) = (Uuid::new_v4(), Uuid::new_v4());
        let (version, wrapped) = v1.wrap(org, id, &tenantry::crypto::DataKey::generate().unwrap()).unwrap();
        admin
            .execute(
                "with o as (insert into organizations (id, name, slug) values ($1::uuid, 'bulk', 'bulk-' || $1::uuid::text) returning id) \
                 insert into organization_data_keys (organization_id, id, wrapped_key, master_key_version) \
                 select o.id, $2, $3, $4 from o",
                &[&org, &id, &wrapped, &version],
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let rewrapped = tenantry::db::rotation::rotate_master(&admin, &keys, 1).await.unwrap();
    let finished = std::time::Instant::now();
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for reader in readers {
        let (o, f) = reader.await.unwrap();
        ok.extend(o);
        failed.extend(f);
    }
    assert_eq!(rewrapped, 520);
    assert!(failed.is_empty(), "{} reads failed during rotation", failed.len());
    let during = ok.iter().filter(|t| (started..finished).contains(*t)).count();
    assert!(during >= 50, "reads ran during the rotation ({during} of {})", ok.len());
    eprintln!(
        "rotation of 520 data keys took {:?}; {during} reads decrypted meanwhile, 0 errors",
        finished - started
    );
    assert_eq!(
        old.raw_count("select count(*) from organization_data_keys where master_key_version = 2", &[]).await,
        520
    );
    assert_eq!(tenantry::db::rotation::remaining(&admin, 2).await.unwrap(), 0);

    // Version 1 retired: a server holding only version 2 reads every key...
    let only_v2 = std::fs::read_to_string(&both_file)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("2:"))
        .collect::<String>();
    let v2_app = old.sibling(|s| s.provider_keys.master_keys = Some(only_v2.into())).await;
    for (org, ws) in targets.iter() {
        let path = format!("{}/verify?live_check=false", key_path(org, *ws, "openai"));
        assert_eq!(
            v2_app.request(Method::POST, &path, Some(&org.owner.token), None).await.status(),
            StatusCode::OK
        );
    }
    // ...and one that was never given version 2 cannot: the keys really moved.
    let (org, ws) = &targets[0];
    let path = format!("{}/verify?live_check=false", key_path(org, *ws, "openai"));
    assert_problem(
        old.request(Method::POST, &path, Some(&org.owner.token), None).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    )
    .await;
}
